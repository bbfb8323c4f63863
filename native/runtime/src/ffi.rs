//! Thin owners over the raw ONNX Runtime C API (`ort::api()`): statuses turned into errors,
//! tensors over memory we own, memory infos and IO bindings released on drop.
//!
//! We bind through the raw API rather than ort's safe `IoBinding`: its `bind_input` on a
//! tensor ort does not own deadlocks (it clones under a lock it already holds), and we bind
//! borrowed views of our own buffers on every step.

use std::ffi::{c_void, CStr, CString};
use std::ptr::{self, NonNull};

use ort::sys::{self, ONNXTensorElementDataType as Onnx};

pub type Result<T> = std::result::Result<T, String>;

pub fn api() -> &'static sys::OrtApi {
    ort::api()
}

/// Turns an OrtStatus into Ok or the error message ORT wrote, releasing the status.
pub fn check(status: sys::OrtStatusPtr) -> Result<()> {
    let p = status.0;
    if p.is_null() {
        return Ok(());
    }
    // SAFETY: a non-null OrtStatus returned by an API call is valid until ReleaseStatus; the
    // message is a NUL-terminated string owned by the status, copied before the release.
    unsafe {
        let msg = CStr::from_ptr((api().GetErrorMessage)(p)).to_string_lossy().into_owned();
        (api().ReleaseStatus)(p);
        Err(msg)
    }
}

/// Element types the runtime moves between JS and ORT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Elem {
    F32,
    F16,
    I64,
    I32,
}

impl Elem {
    pub fn bytes(self) -> usize {
        match self {
            Elem::F32 | Elem::I32 => 4,
            Elem::F16 => 2,
            Elem::I64 => 8,
        }
    }
    pub fn onnx(self) -> Onnx {
        match self {
            Elem::F32 => Onnx::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT,
            Elem::F16 => Onnx::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16,
            Elem::I64 => Onnx::ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64,
            Elem::I32 => Onnx::ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32,
        }
    }
    pub fn from_onnx(t: Onnx) -> Option<Elem> {
        match t {
            Onnx::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT => Some(Elem::F32),
            Onnx::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16 => Some(Elem::F16),
            Onnx::ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64 => Some(Elem::I64),
            Onnx::ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32 => Some(Elem::I32),
            _ => None,
        }
    }
    /// The names onnxruntime-common uses for tensor types.
    pub fn js_name(self) -> &'static str {
        match self {
            Elem::F32 => "float32",
            Elem::F16 => "float16",
            Elem::I64 => "int64",
            Elem::I32 => "int32",
        }
    }
    pub fn from_js_name(name: &str) -> Result<Elem> {
        match name {
            "float32" => Ok(Elem::F32),
            "float16" => Ok(Elem::F16),
            "int64" => Ok(Elem::I64),
            "int32" => Ok(Elem::I32),
            other => Err(format!("unsupported tensor type {other:?} (float32, float16, int64 or int32)")),
        }
    }
}

pub fn element_count(dims: &[i64]) -> Result<usize> {
    dims.iter().try_fold(1usize, |n, &d| {
        if d < 0 {
            Err(format!("negative dimension in shape {dims:?}"))
        } else {
            n.checked_mul(d as usize).ok_or_else(|| format!("shape {dims:?} is too large"))
        }
    })
}

/// Where a tensor's memory lives, as ORT describes it.
pub struct MemInfo(NonNull<sys::OrtMemoryInfo>);

impl MemInfo {
    pub fn cpu() -> Result<MemInfo> {
        let mut out = ptr::null_mut();
        // SAFETY: `out` is a valid out-pointer; ORT writes an owned OrtMemoryInfo on success.
        check(unsafe { (api().CreateCpuMemoryInfo)(sys::OrtAllocatorType::OrtDeviceAllocator, sys::OrtMemType::OrtMemTypeDefault, &mut out) })?;
        NonNull::new(out).map(MemInfo).ok_or_else(|| "CreateCpuMemoryInfo returned null".into())
    }
    pub fn cuda(device_id: i32) -> Result<MemInfo> {
        let mut out = ptr::null_mut();
        // SAFETY: the name is a static NUL-terminated string; `out` is a valid out-pointer.
        check(unsafe {
            (api().CreateMemoryInfo)(c"Cuda".as_ptr(), sys::OrtAllocatorType::OrtDeviceAllocator, device_id, sys::OrtMemType::OrtMemTypeDefault, &mut out)
        })?;
        NonNull::new(out).map(MemInfo).ok_or_else(|| "CreateMemoryInfo returned null".into())
    }
    pub fn ptr(&self) -> *const sys::OrtMemoryInfo {
        self.0.as_ptr()
    }
}

impl Drop for MemInfo {
    fn drop(&mut self) {
        // SAFETY: we own the memory info and release it once.
        unsafe { (api().ReleaseMemoryInfo)(self.0.as_ptr()) }
    }
}

/// An OrtValue; when made by `Value::over`, a tensor view of memory that we own and that must
/// outlive the value and every run it is bound to (the callers keep the buffers alive).
pub struct Value(NonNull<sys::OrtValue>);

impl Value {
    /// A tensor of `dims` over `bytes` bytes at `data` in the memory `mem` describes.
    ///
    /// # Safety
    /// `data` must point to at least `element_count(dims) * elem.bytes()` bytes in that memory,
    /// valid (and not moved) for as long as ORT may read or write through the value.
    pub unsafe fn over(mem: &MemInfo, data: *mut c_void, elem: Elem, dims: &[i64]) -> Result<Value> {
        let bytes = element_count(dims)? * elem.bytes();
        // ORT refuses a null pointer even for an empty tensor; it never dereferences it then.
        let data = if data.is_null() { NonNull::<u64>::dangling().as_ptr().cast() } else { data };
        let mut out = ptr::null_mut();
        // SAFETY: the caller guarantees the memory; dims/out are valid for the call.
        check(unsafe { (api().CreateTensorWithDataAsOrtValue)(mem.ptr(), data, bytes, dims.as_ptr(), dims.len(), elem.onnx(), &mut out) })?;
        NonNull::new(out).map(Value).ok_or_else(|| "CreateTensorWithDataAsOrtValue returned null".into())
    }
    /// Takes ownership of a value ORT handed out.
    pub fn from_raw(p: *mut sys::OrtValue) -> Result<Value> {
        NonNull::new(p).map(Value).ok_or_else(|| "ORT returned a null value".into())
    }
    pub fn ptr(&self) -> *mut sys::OrtValue {
        self.0.as_ptr()
    }
    /// Element type and shape of a tensor value.
    pub fn tensor_info(&self) -> Result<(Elem, Vec<i64>)> {
        let mut info = ptr::null_mut();
        // SAFETY: the value is a live OrtValue; the info is released below.
        check(unsafe { (api().GetTensorTypeAndShape)(self.ptr(), &mut info) })?;
        let result = (|| {
            let mut ty = Onnx::ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
            let mut n = 0usize;
            // SAFETY: `info` is a live OrtTensorTypeAndShapeInfo; the dims buffer holds n values.
            unsafe {
                check((api().GetTensorElementType)(info, &mut ty))?;
                check((api().GetDimensionsCount)(info, &mut n))?;
                let mut dims = vec![0i64; n];
                check((api().GetDimensions)(info, dims.as_mut_ptr(), n))?;
                let elem = Elem::from_onnx(ty).ok_or_else(|| format!("unsupported output element type {ty:?}"))?;
                Ok((elem, dims))
            }
        })();
        // SAFETY: released once, after its last use.
        unsafe { (api().ReleaseTensorTypeAndShapeInfo)(info) };
        result
    }
    pub fn data_ptr(&self) -> Result<*mut c_void> {
        let mut p = ptr::null_mut();
        // SAFETY: the value is a live tensor; ORT writes the address of its data.
        check(unsafe { (api().GetTensorMutableData)(self.ptr(), &mut p) })?;
        Ok(p)
    }
}

impl Drop for Value {
    fn drop(&mut self) {
        // SAFETY: we own this reference to the value and release it once.
        unsafe { (api().ReleaseValue)(self.0.as_ptr()) }
    }
}

/// One session's IO binding, reused across runs (cleared before each).
pub struct Binding {
    ptr: NonNull<sys::OrtIoBinding>,
    session: *mut sys::OrtSession,
    run_options: NonNull<sys::OrtRunOptions>,
}

impl Binding {
    /// # Safety
    /// `session` must be a live OrtSession that outlives the binding.
    pub unsafe fn new(session: *mut sys::OrtSession) -> Result<Binding> {
        let mut out = ptr::null_mut();
        let mut options = ptr::null_mut();
        // SAFETY: the caller guarantees the session; out-pointers are valid.
        unsafe {
            check((api().CreateIoBinding)(session, &mut out))?;
            let ptr = NonNull::new(out).ok_or("CreateIoBinding returned null")?;
            if let Err(e) = check((api().CreateRunOptions)(&mut options)) {
                (api().ReleaseIoBinding)(ptr.as_ptr());
                return Err(e);
            }
            let run_options = NonNull::new(options).ok_or("CreateRunOptions returned null")?;
            Ok(Binding { ptr, session, run_options })
        }
    }

    pub fn clear(&mut self) {
        // SAFETY: the binding is live; clearing drops ORT's references to earlier values.
        unsafe {
            (api().ClearBoundInputs)(self.ptr.as_ptr());
            (api().ClearBoundOutputs)(self.ptr.as_ptr());
        }
    }

    /// Binds an input; ORT keeps its own reference to the value (not to its memory's owner).
    pub fn input(&mut self, name: &CStr, value: &Value) -> Result<()> {
        // SAFETY: binding, name and value are live for the call.
        check(unsafe { (api().BindInput)(self.ptr.as_ptr(), name.as_ptr(), value.ptr()) }).map_err(|e| format!("binding input {name:?}: {e}"))
    }

    pub fn output(&mut self, name: &CStr, value: &Value) -> Result<()> {
        // SAFETY: as for `input`.
        check(unsafe { (api().BindOutput)(self.ptr.as_ptr(), name.as_ptr(), value.ptr()) }).map_err(|e| format!("binding output {name:?}: {e}"))
    }

    /// Lets ORT allocate the output in `mem` (read back with `outputs`).
    pub fn output_to(&mut self, name: &CStr, mem: &MemInfo) -> Result<()> {
        // SAFETY: binding, name and memory info are live for the call.
        check(unsafe { (api().BindOutputToDevice)(self.ptr.as_ptr(), name.as_ptr(), mem.ptr()) }).map_err(|e| format!("binding output {name:?}: {e}"))
    }

    pub fn run(&mut self) -> Result<()> {
        // SAFETY: session and binding are live; every bound value's memory is kept alive by the
        // caller until the run returns (Value::over's contract).
        check(unsafe { (api().RunWithBinding)(self.session, self.run_options.as_ptr(), self.ptr.as_ptr()) })
    }

    /// The bound outputs, in binding order, as owned values.
    pub fn outputs(&self) -> Result<Vec<Value>> {
        let mut allocator = ptr::null_mut();
        let mut values: *mut *mut sys::OrtValue = ptr::null_mut();
        let mut count = 0usize;
        // SAFETY: the default allocator is process-wide and never released; ORT allocates the
        // array of `count` owned values with it, which we free after taking the values.
        unsafe {
            check((api().GetAllocatorWithDefaultOptions)(&mut allocator))?;
            check((api().GetBoundOutputValues)(self.ptr.as_ptr(), allocator, &mut values, &mut count))?;
            if values.is_null() {
                return Ok(Vec::new());
            }
            let owned = (0..count).map(|i| Value::from_raw(*values.add(i))).collect::<Result<Vec<_>>>();
            check((api().AllocatorFree)(allocator, values.cast()))?;
            owned
        }
    }
}

impl Drop for Binding {
    fn drop(&mut self) {
        // SAFETY: owned, released once.
        unsafe {
            (api().ReleaseIoBinding)(self.ptr.as_ptr());
            (api().ReleaseRunOptions)(self.run_options.as_ptr());
        }
    }
}

pub fn cstring(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| format!("name {s:?} contains a NUL byte"))
}
