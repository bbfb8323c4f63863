//! The one ONNX Runtime environment of the process. `ort` allows one per process and loads one
//! core library (`ort::init_from`); every worker thread's sessions share both. For CUDA the
//! provider's dependencies are preloaded by absolute path first, in dependency order, because
//! the running process's library search path cannot be changed (as onnxruntime's Python
//! package does in `preload_dlls`).

use std::ffi::c_int;
use std::sync::{Mutex, OnceLock};

use crate::ffi::Result;

struct Loaded {
    library: String,
    env: ort::environment::Environment,
}

static ENV: OnceLock<Loaded> = OnceLock::new();
static INIT_LOCK: Mutex<()> = Mutex::new(());

/// Loads `library` as the ONNX Runtime core, once per process. A later call must name the same
/// library (all workers of one server do); preloads are dlopened before it, in order.
pub fn init(library: &str, preload: &[String]) -> Result<&'static str> {
    let _guard = INIT_LOCK.lock().map_err(|_| "runtime init lock poisoned")?;
    if let Some(loaded) = ENV.get() {
        if loaded.library != library {
            return Err(format!("ONNX Runtime is already loaded from {} in this process; cannot also load {library}", loaded.library));
        }
        return Ok(&loaded.library);
    }
    for path in preload {
        preload_library(path)?;
    }
    let builder = ort::init_from(library).map_err(|e| format!("cannot load ONNX Runtime from {library}: {e}"))?;
    let env = builder.with_name("tinyllava-serve").with_telemetry(false).build().map_err(|e| format!("cannot create the ONNX Runtime environment: {e}"))?;
    let loaded = ENV.get_or_init(|| Loaded { library: library.to_string(), env });
    Ok(&loaded.library)
}

pub fn environment() -> Result<&'static ort::environment::Environment> {
    ENV.get().map(|l| &l.env).ok_or_else(|| "the native runtime is not initialised (call init first)".into())
}

/// dlopens a library and keeps it loaded for the life of the process, so that a later library
/// that needs it by soname finds it already loaded.
pub fn preload_library(path: &str) -> Result<()> {
    // SAFETY: loading a shared library runs its initialisers; the CUDA libraries we preload
    // have no preconditions on that. The handle is leaked on purpose (never unloaded).
    let lib = unsafe { libloading::Library::new(path) }.map_err(|e| format!("cannot load {path}: {e}"))?;
    std::mem::forget(lib);
    Ok(())
}

/// The CUDA driver's version (e.g. 13000 for CUDA 13.0), read through libcuda.so.1, which the
/// NVIDIA driver installs (it is not part of any wheel).
pub fn cuda_driver_version() -> Result<i32> {
    // SAFETY: libcuda's initialisers have no preconditions; cuDriverGetVersion(int*) is the
    // documented driver API signature and needs no cuInit.
    unsafe {
        let lib = libloading::Library::new("libcuda.so.1").map_err(|e| format!("libcuda.so.1 (the NVIDIA driver) cannot be loaded: {e}"))?;
        let get: libloading::Symbol<unsafe extern "C" fn(*mut c_int) -> c_int> =
            lib.get(b"cuDriverGetVersion\0").map_err(|e| format!("libcuda.so.1: {e}"))?;
        let mut version: c_int = 0;
        let code = get(&mut version);
        if code != 0 {
            return Err(format!("cuDriverGetVersion failed with CUDA driver error {code}"));
        }
        Ok(version)
    }
}
