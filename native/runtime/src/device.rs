//! The memory the KV cache and the decoder's scratch tensors live in: host memory for the CPU
//! execution provider, CUDA device memory for the CUDA one. Device memory is managed through
//! the CUDA runtime library the CUDA provider itself uses (libcudart, preloaded with the other
//! CUDA libraries before the provider loads), so that we never link against CUDA at build time.

use std::alloc::{self, Layout};
use std::ffi::{c_char, c_int, c_void, CStr};
use std::rc::Rc;

use crate::ffi::{MemInfo, Result};

const ALIGN: usize = 64;

type CudaError = c_int;
const MEMCPY_HOST_TO_DEVICE: c_int = 1;
const MEMCPY_DEVICE_TO_DEVICE: c_int = 3;

/// The few CUDA runtime entry points we use, resolved once from libcudart.
struct CudaRuntime {
    _lib: libloading::Library,
    set_device: unsafe extern "C" fn(c_int) -> CudaError,
    malloc: unsafe extern "C" fn(*mut *mut c_void, usize) -> CudaError,
    free: unsafe extern "C" fn(*mut c_void) -> CudaError,
    memset: unsafe extern "C" fn(*mut c_void, c_int, usize) -> CudaError,
    memcpy: unsafe extern "C" fn(*mut c_void, *const c_void, usize, c_int) -> CudaError,
    memcpy_2d: unsafe extern "C" fn(*mut c_void, usize, *const c_void, usize, usize, usize, c_int) -> CudaError,
    synchronize: unsafe extern "C" fn() -> CudaError,
    error_string: unsafe extern "C" fn(CudaError) -> *const c_char,
}

impl CudaRuntime {
    fn load(library: &str) -> Result<CudaRuntime> {
        // SAFETY: loading libcudart runs its initialisers, which have no preconditions; the
        // symbols are resolved with the C signatures of the CUDA runtime API (cuda_runtime_api.h),
        // and the library is kept in the struct so the function pointers stay valid.
        unsafe {
            let lib = libloading::Library::new(library).map_err(|e| format!("cannot load the CUDA runtime {library}: {e}"))?;
            macro_rules! sym {
                ($name:literal) => {
                    *lib.get($name).map_err(|e| format!("{library}: {e}"))?
                };
            }
            Ok(CudaRuntime {
                set_device: sym!(b"cudaSetDevice\0"),
                malloc: sym!(b"cudaMalloc\0"),
                free: sym!(b"cudaFree\0"),
                memset: sym!(b"cudaMemset\0"),
                memcpy: sym!(b"cudaMemcpy\0"),
                memcpy_2d: sym!(b"cudaMemcpy2D\0"),
                synchronize: sym!(b"cudaDeviceSynchronize\0"),
                error_string: sym!(b"cudaGetErrorString\0"),
                _lib: lib,
            })
        }
    }

    fn check(&self, what: &str, code: CudaError) -> Result<()> {
        if code == 0 {
            return Ok(());
        }
        // SAFETY: cudaGetErrorString returns a static NUL-terminated string for any code.
        let msg = unsafe { CStr::from_ptr((self.error_string)(code)) }.to_string_lossy();
        Err(format!("{what} failed: {msg} (CUDA error {code})"))
    }
}

enum Kind {
    Cpu,
    Cuda { rt: CudaRuntime, device_id: i32 },
}

pub struct Device {
    kind: Kind,
    /// How ORT sees this device's memory (bound KV and scratch tensors).
    pub mem: MemInfo,
    /// Host memory (inputs built on the host, logits read back).
    pub host: MemInfo,
}

/// One strided copy: `rows` runs of `width` bytes, `src_pitch`/`dst_pitch` bytes apart.
#[derive(Clone, Copy)]
pub struct Copy2d {
    pub src: *const u8,
    pub src_pitch: usize,
    pub dst: *mut u8,
    pub dst_pitch: usize,
    pub width: usize,
    pub rows: usize,
}

impl Device {
    pub fn cpu() -> Result<Rc<Device>> {
        Ok(Rc::new(Device { kind: Kind::Cpu, mem: MemInfo::cpu()?, host: MemInfo::cpu()? }))
    }

    pub fn cuda(cudart: &str, device_id: i32) -> Result<Rc<Device>> {
        let rt = CudaRuntime::load(cudart)?;
        // SAFETY: plain CUDA runtime call with a device index.
        rt.check("cudaSetDevice", unsafe { (rt.set_device)(device_id) })?;
        Ok(Rc::new(Device { kind: Kind::Cuda { rt, device_id }, mem: MemInfo::cuda(device_id)?, host: MemInfo::cpu()? }))
    }

    pub fn is_host(&self) -> bool {
        matches!(self.kind, Kind::Cpu)
    }

    pub fn name(&self) -> String {
        match &self.kind {
            Kind::Cpu => "cpu".into(),
            Kind::Cuda { device_id, .. } => format!("cuda:{device_id}"),
        }
    }

    /// `bytes` of zeroed memory on this device.
    pub fn alloc_zeroed(self: &Rc<Self>, bytes: usize) -> Result<Buffer> {
        if bytes == 0 {
            return Ok(Buffer { ptr: std::ptr::null_mut(), bytes: 0, device: self.clone() });
        }
        let ptr = match &self.kind {
            Kind::Cpu => {
                let layout = Layout::from_size_align(bytes, ALIGN).map_err(|e| e.to_string())?;
                // SAFETY: the layout has a non-zero size; the result is checked for null.
                let p = unsafe { alloc::alloc_zeroed(layout) };
                if p.is_null() {
                    return Err(format!("out of host memory allocating {bytes} bytes"));
                }
                p
            }
            Kind::Cuda { rt, .. } => {
                let mut p = std::ptr::null_mut();
                // SAFETY: plain CUDA runtime calls; `p` is a valid out-pointer, and the memset
                // covers exactly the bytes just allocated.
                unsafe {
                    rt.check("cudaMalloc", (rt.malloc)(&mut p, bytes)).map_err(|e| format!("{e} allocating {bytes} bytes of device memory"))?;
                    if let Err(e) = rt.check("cudaMemset", (rt.memset)(p, 0, bytes)) {
                        (rt.free)(p);
                        return Err(e);
                    }
                }
                p.cast()
            }
        };
        Ok(Buffer { ptr, bytes, device: self.clone() })
    }

    /// Copies within this device's memory.
    pub fn copy(&self, ops: &[Copy2d]) -> Result<()> {
        match &self.kind {
            Kind::Cpu => {
                for op in ops {
                    for r in 0..op.rows {
                        // SAFETY: the callers build each op from offsets inside live buffers of
                        // this device, computed from the buffers' shapes, and source and
                        // destination never overlap (different buffers, or disjoint rows).
                        unsafe { std::ptr::copy_nonoverlapping(op.src.add(r * op.src_pitch), op.dst.add(r * op.dst_pitch), op.width) };
                    }
                }
                Ok(())
            }
            Kind::Cuda { rt, .. } => {
                // The provider's kernels run on its own stream; wait for them before copying.
                // SAFETY: plain CUDA runtime calls on device pointers inside live buffers.
                unsafe {
                    rt.check("cudaDeviceSynchronize", (rt.synchronize)())?;
                    for op in ops {
                        rt.check(
                            "cudaMemcpy2D",
                            (rt.memcpy_2d)(op.dst.cast(), op.dst_pitch, op.src.cast(), op.src_pitch, op.width, op.rows, MEMCPY_DEVICE_TO_DEVICE),
                        )?;
                    }
                    rt.check("cudaDeviceSynchronize", (rt.synchronize)())
                }
            }
        }
    }

    /// Copies host bytes to `dst` on this device.
    ///
    /// # Safety
    /// `dst` must point to at least `src.len()` bytes inside a live buffer of this device.
    pub unsafe fn upload(&self, dst: *mut u8, src: &[u8]) -> Result<()> {
        match &self.kind {
            // SAFETY: the caller guarantees `dst`; `src` is a distinct host slice.
            Kind::Cpu => unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len()) },
            // SAFETY: as above, on the device.
            Kind::Cuda { rt, .. } => unsafe { rt.check("cudaMemcpy", (rt.memcpy)(dst.cast(), src.as_ptr().cast(), src.len(), MEMCPY_HOST_TO_DEVICE))? },
        }
        Ok(())
    }

    fn release(&self, ptr: *mut u8, bytes: usize) {
        match &self.kind {
            // SAFETY: `ptr` came from alloc_zeroed with this exact layout.
            Kind::Cpu => unsafe { alloc::dealloc(ptr, Layout::from_size_align_unchecked(bytes, ALIGN)) },
            Kind::Cuda { rt, .. } => {
                // SAFETY: `ptr` came from cudaMalloc; a failure here can only be reported, not handled.
                let code = unsafe { (rt.free)(ptr.cast()) };
                if code != 0 {
                    eprintln!("tinyllava_runtime: cudaFree failed with CUDA error {code}");
                }
            }
        }
    }
}

/// Memory on one device, freed on drop. `ptr` is null for an empty buffer.
pub struct Buffer {
    pub ptr: *mut u8,
    pub bytes: usize,
    device: Rc<Device>,
}

impl Buffer {
    /// The address `offset` bytes in (checked against the buffer's size).
    pub fn at(&self, offset: usize, len: usize) -> Result<*mut u8> {
        if offset.checked_add(len).is_none_or(|end| end > self.bytes) {
            return Err(format!("internal: range {offset}+{len} outside a buffer of {} bytes", self.bytes));
        }
        // SAFETY: in bounds (checked above); a zero-length range at offset 0 of an empty buffer
        // stays the null pointer, which nothing dereferences.
        Ok(if self.ptr.is_null() { self.ptr } else { unsafe { self.ptr.add(offset) } })
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if !self.ptr.is_null() {
            self.device.release(self.ptr, self.bytes);
        }
    }
}

/// Views a slice of plain numbers as bytes (host inputs are plain Vecs: ORT's CPU kernels need
/// no more than natural alignment).
pub fn as_bytes<T: Copy>(v: &[T]) -> &[u8] {
    // SAFETY: T is a plain number type (f32, i32, i64); viewing its bytes is always valid.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast(), std::mem::size_of_val(v)) }
}
