//! The seam between Strata's shim and its isolation tiers.
//!
//! Every backend (`native`, `sentry`, `microvm`, `wasm`) implements [`Backend`], a small
//! lifecycle trait in the spirit of runwasi's `Instance` and youki's `CgroupManager`. The shim
//! picks exactly one backend per container from configuration and annotation; it never tries
//! backends in turn.
//!
//! This crate must never know containerd or ttrpc: the shim maps [`Error`] to ttrpc codes and
//! [`Stats`] to containerd's metrics types.

pub mod counters;
pub mod error;
pub mod files;
pub mod hooks;
pub mod reaper;
pub mod spawn;
pub mod stdio;
pub mod testing;
pub mod tier;
pub mod types;

pub use error::{Error, Result};
pub use tier::{NoSandbox, Orphan, Sandbox, SandboxOpts, Tier, TierContext};
pub use types::*;

/// The lifecycle of containers and their exec'd processes on one isolation tier.
///
/// `exec_id` is `None` for a container's init process. Process exits and OOM notices are not
/// returned from here: the backend reports them through the [`EventSink`] it was built with.
pub trait Backend: Send + Sync {
    /// Which tier this is.
    fn kind(&self) -> BackendKind;
    /// Creates the pod-level sandbox before the pod's first container (see [`tier`]); the
    /// default keeps no pod state.
    fn create_sandbox(&self, opts: &SandboxOpts) -> Result<std::sync::Arc<dyn Sandbox>> {
        Ok(std::sync::Arc::new(NoSandbox(opts.sandbox_id.clone())))
    }
    /// Creates the container (its init process exists but has not run the user's program).
    /// Returns the init process's host pid (0 if the tier has none visible on the host).
    fn create(&self, opts: CreateOpts) -> Result<u32>;
    /// Starts the init process (`exec_id` None) or a prepared exec process.
    fn start(&self, id: &str, exec_id: Option<&str>) -> Result<u32>;
    /// Prepares an additional process in a running container; [`Backend::start`] runs it.
    fn exec(&self, opts: ExecOpts) -> Result<()>;
    /// Sends `signal` to one process, or with `all` to every process of the container.
    fn kill(&self, id: &str, exec_id: Option<&str>, signal: i32, all: bool) -> Result<()>;
    /// Releases what the process (or, for `None`, the whole container) holds.
    fn delete(&self, id: &str, exec_id: Option<&str>) -> Result<()>;
    /// Host pids of every process in the container.
    fn pids(&self, id: &str) -> Result<Vec<u32>>;
    /// Freezes every process of the container.
    fn pause(&self, id: &str) -> Result<()>;
    /// Thaws the container.
    fn resume(&self, id: &str) -> Result<()>;
    /// Resource usage of the container.
    fn stats(&self, id: &str) -> Result<Stats>;
    /// Applies new resource limits.
    fn update(&self, id: &str, resources: &oci_spec::runtime::LinuxResources) -> Result<()>;
    /// Sets the window size of a process's terminal.
    fn resize_pty(&self, id: &str, exec_id: Option<&str>, width: u32, height: u32) -> Result<()>;
    /// Closes a process's stdin so that it reads end-of-file.
    fn close_stdin(&self, id: &str, exec_id: Option<&str>) -> Result<()>;
}

/// A name made safe to be one path component (namespaces, ids): every character but ASCII
/// letters, digits, `-`, `_` and `.` becomes `_`.
pub fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// An error and its sources, `: `-separated.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
