//! tinyllava_runtime: a Node addon over the ONNX Runtime C API for tinyllava-serve's `native`
//! runtime (src/runtime/native-backend.ts wraps it; docs/architecture.md explains the design).
//!
//! It loads the same libonnxruntime.so.1 onnxruntime-node ships, or the onnxruntime-gpu wheel's
//! for CUDA (`init`), owns the sessions (`NativeSession`), and keeps the KV cache in native or
//! device memory (`NativeDecoder`), binding inputs and outputs with IO binding so that a
//! decode step returns nothing to JS but the logits rows.
//!
//! Every entry point returns errors as JS exceptions and catches panics (`catch_unwind`), so
//! nothing aborts the process across the FFI boundary. Objects are used from the one thread
//! (a worker) that made them.

mod decoder;
mod device;
mod env;
mod ffi;
mod kv;
mod session;

use std::rc::Rc;

use napi::bindgen_prelude::{Float32Array, Int32Array, Uint8Array};
use napi::{Error, Result, Status};
use napi_derive::napi;

use crate::decoder::{Counters, Decoder, Form, Row, Settings};
use crate::device::Device;
use crate::ffi::Elem;
use crate::kv::{KvError, Usage};
use crate::session::{Graph, SessionSettings};

fn err(msg: impl Into<String>) -> Error {
    Error::new(Status::GenericFailure, msg.into())
}

/// KvCacheFullError on the JS side: the wrapper recognises this status (its code 'QueueFull').
fn kv_err(e: KvError) -> Error {
    match e {
        KvError::Full(m) => Error::new(Status::QueueFull, m),
        KvError::Other(m) => err(m),
    }
}

/// Loads ONNX Runtime from `library` (absolute path), after dlopening each of `preload` in
/// order; once per process (later calls must name the same library). Returns the library.
#[napi(catch_unwind)]
pub fn init(library: String, preload: Vec<String>) -> Result<String> {
    env::init(&library, &preload).map(str::to_string).map_err(err)
}

/// dlopens one library by path and keeps it loaded (diagnostics load the CUDA libraries one by one).
#[napi(catch_unwind)]
pub fn preload_library(path: String) -> Result<()> {
    env::preload_library(&path).map_err(err)
}

/// The NVIDIA driver's CUDA version (13000 = 13.0), or an error saying libcuda.so.1 is missing.
#[napi(catch_unwind)]
pub fn cuda_driver_version() -> Result<i32> {
    env::cuda_driver_version().map_err(err)
}

#[napi(object)]
pub struct SessionOptions {
    /// 0: ORT's default (one per core).
    pub intra_op_threads: u32,
    /// disabled | basic | extended | layout | all
    pub graph_optimization_level: String,
    pub allow_spinning: bool,
    /// cpu | cuda
    pub execution_provider: String,
    pub device_id: u32,
    /// CUDA only: the libcudart the server preloaded (device memory for the KV cache).
    pub cuda_runtime: Option<String>,
}

#[napi(object)]
pub struct IoInfo {
    pub name: String,
    /// float32 | float16 | int64 | int32, or null for a type the runtime does not move.
    pub element_type: Option<String>,
    /// -1 for a dynamic dimension.
    pub dims: Vec<i64>,
}

/// A host tensor; `data` holds its bytes (a view of the typed array's memory on the way in).
#[napi(object)]
pub struct HostTensor {
    pub name: String,
    pub element_type: String,
    pub dims: Vec<i64>,
    pub data: Uint8Array,
}

/// One graph in one ORT session.
#[napi]
pub struct NativeSession {
    graph: Rc<Graph>,
}

#[napi]
impl NativeSession {
    #[napi(constructor, catch_unwind)]
    pub fn new(path: String, options: SessionOptions) -> Result<Self> {
        let device = match options.execution_provider.as_str() {
            "cuda" => {
                let cudart = options.cuda_runtime.as_deref().ok_or_else(|| err("the CUDA execution provider needs the path of libcudart (cudaRuntime)"))?;
                Device::cuda(cudart, options.device_id as i32).map_err(err)?
            }
            _ => Device::cpu().map_err(err)?,
        };
        let settings = SessionSettings {
            intra_op_threads: options.intra_op_threads,
            graph_optimization_level: options.graph_optimization_level,
            allow_spinning: options.allow_spinning,
            execution_provider: options.execution_provider,
            device_id: options.device_id as i32,
        };
        let graph = Graph::load(&path, &settings, device).map_err(err)?;
        Ok(NativeSession { graph: Rc::new(graph) })
    }

    /// Where the session's tensors live: cpu, or cuda:<device>.
    #[napi(getter)]
    pub fn device(&self) -> String {
        self.graph.device.name()
    }

    #[napi(getter)]
    pub fn inputs(&self) -> Vec<IoInfo> {
        io_infos(&self.graph.inputs)
    }

    #[napi(getter)]
    pub fn outputs(&self) -> Vec<IoInfo> {
        io_infos(&self.graph.outputs)
    }

    /// Runs on host tensors; returns every output (bytes copied into new JS buffers).
    #[napi(catch_unwind)]
    pub fn run(&self, feeds: Vec<HostTensor>) -> Result<Vec<HostTensor>> {
        let mut parsed = Vec::with_capacity(feeds.len());
        for f in &feeds {
            parsed.push((f.name.clone(), Elem::from_js_name(&f.element_type).map_err(err)?, f.dims.clone(), &f.data[..]));
        }
        let outputs = self.graph.run_host(&parsed).map_err(err)?;
        Ok(outputs
            .into_iter()
            .map(|(name, elem, dims, data)| HostTensor { name, element_type: elem.js_name().into(), dims, data: Uint8Array::new(data) })
            .collect())
    }
}

fn io_infos(ios: &[session::Io]) -> Vec<IoInfo> {
    ios.iter().map(|io| IoInfo { name: io.name.clone(), element_type: io.elem.map(|e| e.js_name().into()), dims: io.dims.clone() }).collect()
}

#[napi(object)]
pub struct DecoderSettings {
    pub num_layers: u32,
    pub num_kv_heads: u32,
    pub head_dim: u32,
    pub hidden_size: u32,
    pub vocab_size: u32,
    pub kv_cache_bytes: f64,
}

#[napi(object)]
pub struct StepRow {
    pub seq_id: u32,
    /// New token ids (embedded natively), or
    pub ids: Option<Int32Array>,
    /// [count, D] ready embeddings (prefill with images).
    pub embeds: Option<Float32Array>,
}

/// The decoder with its KV cache: sequences, their reservations, batched steps.
#[napi]
pub struct NativeDecoder {
    inner: Decoder,
}

#[napi]
impl NativeDecoder {
    #[napi(constructor, catch_unwind)]
    pub fn new(decoder: &NativeSession, embed_tokens: &NativeSession, settings: DecoderSettings) -> Result<Self> {
        if !(settings.kv_cache_bytes >= 0.0 && settings.kv_cache_bytes <= 2f64.powi(53)) {
            return Err(err(format!("kvCacheBytes {} is not a byte count", settings.kv_cache_bytes)));
        }
        let s = Settings {
            layers: settings.num_layers as usize,
            kv_heads: settings.num_kv_heads as usize,
            head_dim: settings.head_dim as usize,
            hidden: settings.hidden_size as usize,
            vocab: settings.vocab_size as usize,
            capacity_bytes: settings.kv_cache_bytes as usize,
        };
        Ok(NativeDecoder { inner: Decoder::new(decoder.graph.clone(), embed_tokens.graph.clone(), s).map_err(err)? })
    }

    /// standard | shared_kv (read from the graph's inputs).
    #[napi(getter)]
    pub fn form(&self) -> String {
        match self.inner.form {
            Form::Standard => "standard".into(),
            Form::SharedKv { .. } => "shared_kv".into(),
        }
    }

    #[napi(getter)]
    pub fn kv_element_type(&self) -> String {
        self.inner.arena.layout.elem.js_name().into()
    }

    #[napi(getter)]
    pub fn bytes_per_position(&self) -> u32 {
        self.inner.arena.bytes_per_position() as u32
    }

    #[napi(catch_unwind)]
    pub fn allocate(&mut self, seq_id: u32, max_positions: u32) -> Result<()> {
        self.inner.arena.allocate(seq_id, max_positions as usize).map_err(kv_err)
    }

    #[napi(catch_unwind)]
    pub fn has(&self, seq_id: u32) -> bool {
        self.inner.arena.has(seq_id)
    }

    #[napi(catch_unwind)]
    pub fn length(&self, seq_id: u32) -> Result<u32> {
        self.inner.arena.length(seq_id).map(|n| n as u32).map_err(kv_err)
    }

    #[napi(catch_unwind)]
    pub fn free(&mut self, seq_id: u32) {
        self.inner.arena.free(seq_id)
    }

    #[napi(catch_unwind)]
    pub fn usage(&self) -> Usage {
        self.inner.arena.usage()
    }

    /// Copies positions [start, start+count) of a sequence out of it; returns a handle.
    #[napi(catch_unwind)]
    pub fn save_block(&mut self, seq_id: u32, start: u32, count: u32) -> Result<u32> {
        self.inner.arena.save_block(seq_id, start as usize, count as usize).map_err(kv_err)
    }

    /// Appends a stored block at the sequence's current length (within its reservation).
    #[napi(catch_unwind)]
    pub fn load_block(&mut self, seq_id: u32, handle: u32) -> Result<()> {
        self.inner.arena.load_block(seq_id, handle).map_err(kv_err)
    }

    #[napi(catch_unwind)]
    pub fn drop_block(&mut self, handle: u32) -> Result<()> {
        self.inner.arena.drop_block(handle).map_err(kv_err)
    }

    /// One batched step; `logits` ([B, V], request order) receives each row's last logits.
    #[napi(catch_unwind)]
    pub fn step(&mut self, rows: Vec<StepRow>, mut logits: Float32Array) -> Result<()> {
        let parsed: Vec<Row> = rows.iter().map(|r| Row { seq: r.seq_id, ids: r.ids.as_deref(), embeds: r.embeds.as_deref() }).collect();
        // SAFETY: this call runs on the JS thread that owns the array, and no JS runs until it
        // returns, so nothing else reads or writes the array while ORT writes into it.
        let out = unsafe { logits.as_mut() };
        self.inner.step(&parsed, out).map_err(kv_err)
    }

    #[napi(catch_unwind)]
    pub fn counters(&self) -> Counters {
        self.inner.counters
    }
}
