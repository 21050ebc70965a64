//! The containerd shim binary; everything lives in the `strata_shim` library.

fn main() {
    if let Err(e) = strata_shim::shim_main() {
        eprintln!("containerd-shim-strata-v2: {e:#}");
        std::process::exit(1);
    }
}
