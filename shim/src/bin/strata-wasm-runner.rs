//! The wasm tier's runner (backends/wasm/src/hook.rs): the native tier's creating helper for
//! wasm tasks, whose container's init runs the module. The shim starts it, one per task; it
//! is a binary of its own so that the shim, which every container has one of, does not map
//! wasmtime's code (nor the containerd client that reads a module from an image's wasm
//! layer, `strata_shim::wasm_image`).

use std::sync::Arc;

fn main() {
    if strata_native::creator::is_asked() {
        strata_native::creator::run(&[Arc::new(strata_wasm::WasmHook::new(Some(
            strata_shim::wasm_image::fetch,
        )))]);
    }
    eprintln!(
        "strata-wasm-runner: started by containerd-shim-strata-v2 for a wasm task, not by hand"
    );
    std::process::exit(2);
}
