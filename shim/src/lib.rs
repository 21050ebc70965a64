//! `containerd-shim-strata-v2`: the containerd shim v2 that runs each pod in the isolation
//! tier it needs. This crate owns everything containerd: the `start`/`delete` actions, the
//! ttrpc task service, events, pod grouping, configuration and the choice of backend.
//! Backends (`backends/*`) never see ttrpc; this crate never creates a container itself.
#![deny(unsafe_code)]

pub mod bootstrap;
#[allow(unsafe_code)] // host probes: fork, seccomp and landlock syscalls, in check::sys
pub mod check;
pub mod config;
pub mod events;
#[allow(unsafe_code)] // setns(2) between fork and exec, to run the node's containerd and systemctl
pub mod install;
pub mod metrics;
pub mod rootfs;
pub mod serve;
pub mod service;
pub mod tiers;
pub mod wasm_image;

/// containerd's runtime type for this shim.
pub const RUNTIME_TYPE: &str = "io.containerd.strata.v2";

/// For the native tier's creating helper (started by the shim from its own binary, in the
/// shim's directory): logs to containerd's log FIFO as the shim does, so that libcontainer's
/// warnings land where the shim's do.
pub fn log_to_containerd() {
    serve::setup_logging(false, None);
}

/// Entry point of `containerd-shim-strata-v2`.
pub fn shim_main() -> anyhow::Result<()> {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let flags = containerd_shim::parse(&args[1..]).map_err(|e| anyhow::anyhow!("{e}"))?;
    if flags.version {
        println!("containerd-shim-strata-v2 {}", env!("CARGO_PKG_VERSION"));
        return Ok(());
    }
    if flags.namespace.is_empty() && !flags.info {
        anyhow::bail!("-namespace is required");
    }
    match flags.action.as_str() {
        "start" => bootstrap::start(&flags),
        "delete" => bootstrap::delete(&flags),
        "" => serve::serve(&flags),
        other => anyhow::bail!("unknown action {other:?}: expected start, delete or none"),
    }
}
