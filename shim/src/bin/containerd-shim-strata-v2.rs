//! The containerd shim binary; everything lives in the `strata_shim` library.

fn main() {
    // First, while this process has one thread: it may be the native tier's creating helper.
    if strata_native::creator::is_asked() {
        strata_shim::log_to_containerd();
        strata_native::creator::run(&[std::sync::Arc::new(strata_sentry::ExecFilter)]);
    }
    if let Err(e) = strata_shim::shim_main() {
        eprintln!("containerd-shim-strata-v2: {e:#}");
        std::process::exit(1);
    }
}
