//! The containerd shim binary; everything lives in the `strata_shim` library.

fn main() {
    // A wasm task's own process (backends/wasm): runs the module and exits, never the shim.
    strata_wasm::run_if_runner();
    if let Err(e) = strata_shim::shim_main() {
        eprintln!("containerd-shim-strata-v2: {e:#}");
        std::process::exit(1);
    }
}
