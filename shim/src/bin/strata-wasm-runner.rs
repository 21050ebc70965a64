//! The process a wasm task runs in (backends/wasm/src/runner.rs). The shim starts it, one per
//! task, next to itself; it is a binary of its own so that the shim, which every container
//! has one of, does not map wasmtime's code (nor the containerd client that reads a module
//! from an image's wasm layer, `strata_shim::wasm_image`).

fn main() {
    strata_wasm::run_if_runner_with(strata_shim::wasm_image::fetch);
    eprintln!(
        "strata-wasm-runner: started by containerd-shim-strata-v2 for a wasm task, not by hand"
    );
    std::process::exit(2);
}
