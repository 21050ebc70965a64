//! Strata's integration-test harness: a private containerd (own socket, root, state directory
//! and namespace) started from Debian's `containerd`, a busybox OCI image built locally from
//! Debian's `busybox-static` and imported with `ctr images import`, containers with unique ids,
//! and the checks that a removed container left nothing behind.
//!
//! The same harness drives Strata (`io.containerd.strata.v2`) or, as the baseline that
//! validates the harness itself, runc (`STRATA_TEST_RUNTIME=runc`); the demo and the benchmark
//! are built on it too.
//!
//! It must never touch a system containerd or anything outside its own directories, namespace
//! and cgroups, and it must leave nothing behind, however the test process ends.

#![forbid(unsafe_code)]

/// This package's directory (`tests/` of the repository): the one cargo names when it runs
/// the tests (`CARGO_MANIFEST_DIR` at run time), else the one it was built from. A build
/// shared between clones (one `CARGO_TARGET_DIR`) may have been compiled in another clone,
/// since removed: its compile-time path must not be trusted first.
pub fn package_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .filter(|d| d.join("Cargo.toml").is_file())
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

pub mod api;
pub mod bench;
pub mod cgroups;
pub mod cmd;
pub mod component;
pub mod cri;
pub mod critest;
pub mod daemon;
pub mod events;
pub mod harness;
pub mod http;
pub mod image;
pub mod leaks;
pub mod netns;
pub mod pty;
pub mod registry;
pub mod tiers;
pub mod wasi;

pub use cmd::Output;
pub use daemon::{DaemonInfo, DaemonOptions};
pub use harness::{
    not_applicable, on_ci, skip, tier_gate, Container, Harness, HarnessError, Runtime, Tier,
};
