//! One ONNX graph loaded into a session with the settings the js backend uses (intra-op threads,
//! graph optimisation level, spinning, execution provider), its input/output names and types,
//! and a host-tensor run for the graphs whose outputs the caller needs anyway (vision encoder,
//! connector, embed_tokens as a graph of its own).

use std::cell::RefCell;
use std::ffi::CString;
use std::rc::Rc;

use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::ValueType;

use crate::device::Device;
use crate::ffi::{self, Binding, Elem, Result, Value};

#[derive(Clone, Debug)]
pub struct Io {
    pub name: String,
    pub cname: CString,
    /// None for element types the runtime does not move (it never binds those).
    pub elem: Option<Elem>,
    /// -1 for a dynamic dimension.
    pub dims: Vec<i64>,
}

pub struct SessionSettings {
    pub intra_op_threads: u32,
    pub graph_optimization_level: String,
    pub allow_spinning: bool,
    pub execution_provider: String,
    pub device_id: i32,
}

pub struct Graph {
    pub path: String,
    pub inputs: Vec<Io>,
    pub outputs: Vec<Io>,
    pub device: Rc<Device>,
    session: Session,
    binding: RefCell<Option<Binding>>,
}

fn io_list(outlets: &[ort::value::Outlet]) -> Result<Vec<Io>> {
    outlets
        .iter()
        .map(|o| {
            let (elem, dims) = match o.dtype() {
                ValueType::Tensor { ty, shape, .. } => (elem_of(*ty), shape.iter().copied().collect()),
                _ => (None, Vec::new()),
            };
            Ok(Io { name: o.name().to_string(), cname: ffi::cstring(o.name())?, elem, dims })
        })
        .collect()
}

fn elem_of(t: ort::value::TensorElementType) -> Option<Elem> {
    use ort::value::TensorElementType as T;
    match t {
        T::Float32 => Some(Elem::F32),
        T::Float16 => Some(Elem::F16),
        T::Int64 => Some(Elem::I64),
        T::Int32 => Some(Elem::I32),
        _ => None,
    }
}

fn optimization_level(name: &str) -> Result<GraphOptimizationLevel> {
    Ok(match name {
        "disabled" => GraphOptimizationLevel::Disable,
        "basic" => GraphOptimizationLevel::Level1,
        "extended" => GraphOptimizationLevel::Level2,
        "layout" => GraphOptimizationLevel::Level3,
        "all" => GraphOptimizationLevel::All,
        other => return Err(format!("unknown graph optimisation level {other:?}")),
    })
}

impl Graph {
    pub fn load(path: &str, s: &SessionSettings, device: Rc<Device>) -> Result<Graph> {
        let env = crate::env::environment()?;
        let e = |e: ort::Error<ort::session::builder::SessionBuilder>| e.to_string();
        let mut builder = Session::builder(env)
            .map_err(|e| e.to_string())?
            .with_optimization_level(optimization_level(&s.graph_optimization_level)?)
            .map_err(e)?
            .with_inter_threads(1)
            .map_err(e)?
            .with_intra_op_spinning(s.allow_spinning)
            .map_err(e)?;
        if s.intra_op_threads > 0 {
            builder = builder.with_intra_threads(s.intra_op_threads as usize).map_err(e)?;
        }
        match s.execution_provider.as_str() {
            "cpu" => {}
            "cuda" => {
                // error_on_failure: without it a CUDA registration that fails falls back to CPU silently.
                let cuda = ort::ep::CUDA::default().with_device_id(s.device_id).build().error_on_failure();
                builder = builder.with_execution_providers([cuda]).map_err(|e| format!("the CUDA execution provider cannot start: {e}"))?;
            }
            other => return Err(format!("unknown execution provider {other:?}")),
        }
        let session = builder.commit_from_file(path).map_err(|e| e.to_string())?;
        let inputs = io_list(session.inputs())?;
        let outputs = io_list(session.outputs())?;
        Ok(Graph { path: path.to_string(), inputs, outputs, device, session, binding: RefCell::new(None) })
    }

    pub fn input(&self, name: &str) -> Option<&Io> {
        self.inputs.iter().find(|i| i.name == name)
    }

    pub fn output(&self, name: &str) -> Option<&Io> {
        self.outputs.iter().find(|i| i.name == name)
    }

    /// Runs with a fresh binding set up by `bind` (the session's one binding, cleared first).
    pub fn run_bound<T>(&self, bind: impl FnOnce(&mut Binding) -> Result<()>, read: impl FnOnce(&Binding) -> Result<T>) -> Result<T> {
        let mut slot = self.binding.try_borrow_mut().map_err(|_| "internal: a session run is already in progress")?;
        if slot.is_none() {
            // SAFETY: the session lives as long as `self`, and Graph's Drop releases the
            // binding before the session.
            *slot = Some(unsafe { Binding::new(ort::AsPointer::ptr(&self.session) as *mut _)? });
        }
        let binding = slot.as_mut().expect("binding created above");
        binding.clear();
        let result = bind(binding).and_then(|_| binding.run()).and_then(|_| read(binding));
        binding.clear(); // drop ORT's references to this run's values before their memory goes
        result.map_err(|e| format!("{}: {e}", self.path))
    }

    /// Runs on host tensors and returns every output as host bytes.
    pub fn run_host(&self, feeds: &[(String, Elem, Vec<i64>, &[u8])]) -> Result<Vec<(String, Elem, Vec<i64>, Vec<u8>)>> {
        let mem = &self.device.host;
        let mut values = Vec::with_capacity(feeds.len());
        for (name, elem, dims, data) in feeds {
            let io = self.input(name).ok_or_else(|| format!("the graph has no input {name:?}"))?;
            if io.elem != Some(*elem) {
                return Err(format!("input {name:?} must be {}, got {}", io.elem.map_or("an unsupported type", Elem::js_name), elem.js_name()));
            }
            let want = ffi::element_count(dims)? * elem.bytes();
            if data.len() != want {
                return Err(format!("input {name:?} has {} bytes for shape {dims:?} ({want} expected)", data.len()));
            }
            // SAFETY: `data` holds exactly the tensor's bytes (checked above) and outlives the
            // run below; ORT only reads inputs.
            values.push((io.cname.clone(), unsafe { Value::over(mem, data.as_ptr() as *mut _, *elem, dims)? }));
        }
        let outputs: Vec<(String, CString)> = self.outputs.iter().map(|o| (o.name.clone(), o.cname.clone())).collect();
        self.run_bound(
            |b| {
                for (name, v) in &values {
                    b.input(name, v)?;
                }
                for (_, name) in &outputs {
                    b.output_to(name, mem)?;
                }
                Ok(())
            },
            |b| {
                let values = b.outputs()?;
                values
                    .iter()
                    .zip(&outputs)
                    .map(|(v, (name, _))| {
                        let (elem, dims) = v.tensor_info()?;
                        let bytes = ffi::element_count(&dims)? * elem.bytes();
                        let p = v.data_ptr()?;
                        // SAFETY: a host output tensor of `dims` holds exactly `bytes` bytes at `p`
                        // while the value is alive (it is, until `values` drops).
                        let data = if bytes == 0 { Vec::new() } else { unsafe { std::slice::from_raw_parts(p as *const u8, bytes) }.to_vec() };
                        Ok((name.clone(), elem, dims, data))
                    })
                    .collect()
            },
        )
    }
}

impl Drop for Graph {
    fn drop(&mut self) {
        // The binding refers to the session: release it first.
        self.binding.get_mut().take();
    }
}
