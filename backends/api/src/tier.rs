//! The tier registry's entries and the pod-level sandbox seam.
//!
//! Each tier's crate exports one [`Tier`]: its kind, how its [`Backend`] is built from the
//! configuration, and how `delete` cleans up after a shim that died. The shim keeps one list of
//! them and asks it, instead of matching on tier names.
//!
//! A [`Sandbox`] is a pod's shared state on its tier, as Kata's runtime-rs separates `Sandbox`
//! from containers: for microvm the VM, for the other tiers nothing. The shim creates it with
//! the pod's sandbox container (for a container outside any pod, with that container), passes
//! its id in every [`CreateOpts::sandbox_id`] of the pod, and shuts it down when the pod's
//! last container is deleted.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::{Backend, BackendKind, EventSink, Result};

/// What the shim hands a tier to build its backend (once per shim process).
#[derive(Clone)]
pub struct TierContext {
    /// Where native containers keep their state (`state_root` of the configuration).
    pub state_root: PathBuf,
    /// Where exits and OOM notices go.
    pub sink: EventSink,
    /// The tier's own table of the configuration (`[wasm]`, `[microvm]`), if present.
    pub settings: Option<toml::Value>,
    /// The directory of the shim's binary: helper programs are installed beside it.
    pub shim_dir: PathBuf,
    /// containerd's gRPC address (the shim's `-address`), when known.
    pub containerd_address: Option<String>,
}

/// A dead shim's container, as containerd's `delete` names it.
pub struct Orphan<'a> {
    pub bundle: &'a Path,
    pub namespace: &'a str,
    pub id: &'a str,
    /// The native state root the container was created under.
    pub state_root: &'a Path,
    /// The tier the shim recorded for the container, if its record survived.
    pub tier: Option<BackendKind>,
}

/// One tier, as the registry knows it.
pub trait Tier: Sync {
    fn kind(&self) -> BackendKind;
    /// Checks the tier's table of the configuration; the message says what is wrong.
    fn validate(&self, settings: &toml::Value) -> std::result::Result<(), String> {
        let _ = settings;
        Ok(())
    }
    /// Builds the tier's backend.
    fn build(&self, ctx: &TierContext) -> Result<Arc<dyn Backend>>;
    /// Removes what a container of this tier left when its shim died (processes, cgroups,
    /// state, VMs). Called for every tier: a tier that finds nothing of its own does nothing.
    fn cleanup_orphan(&self, orphan: &Orphan<'_>) -> Result<()>;
}

/// The pod-level sandbox created by [`Backend::create_sandbox`].
pub trait Sandbox: Send + Sync {
    /// The pod's id (its sandbox container's id).
    fn id(&self) -> &str;
    /// Ends the sandbox and everything in it (for microvm: shuts the VM down, and kills it if
    /// it does not go). Idempotent.
    fn shutdown(&self) -> Result<()>;
}

/// What a pod's sandbox is created from: its sandbox container (or, outside a pod, the one
/// container).
#[derive(Debug, Clone)]
pub struct SandboxOpts {
    pub sandbox_id: String,
    pub bundle: PathBuf,
    pub spec: oci_spec::runtime::Spec,
    pub namespace: String,
}

/// The sandbox of a tier that keeps no pod-level state.
pub struct NoSandbox(pub String);

impl Sandbox for NoSandbox {
    fn id(&self) -> &str {
        &self.0
    }
    fn shutdown(&self) -> Result<()> {
        Ok(())
    }
}
