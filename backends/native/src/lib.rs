//! Strata's `native` tier: a container made of Linux namespaces, cgroups (v1, v2 and the
//! hybrid of both), capabilities, seccomp, masked paths and the default device set, created
//! by youki's `libcontainer` from the OCI spec, in the manner of runc and crun.
//!
//! This crate never execs runc and knows nothing of containerd or ttrpc. Containers are kept
//! under a state root (`/run/strata/native/<namespace>` by default) so that a later shim
//! process, or the `delete` action after a killed shim, can find and remove them.
#![deny(unsafe_code)]

mod bundle;
mod cgroup;
mod container;
pub mod creator;
mod executor;
mod netns;
pub mod oom;
mod program;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use strata_backend::{Backend, BackendKind, CreateOpts, Error, EventSink, ExecOpts, Result, Stats};

pub use cgroup::Cgroup;
pub use container::{creates_namespace, Container};
pub use executor::{default_home, install_seccomp, PreExec, Role};
pub use program::find as find_program;

/// Where native containers keep their state unless configured otherwise.
pub const DEFAULT_STATE_ROOT: &str = "/run/strata/native";

/// The native tier.
pub struct NativeBackend {
    state_root: PathBuf,
    events: EventSink,
    containers: Mutex<HashMap<String, Arc<Container>>>,
    executor: executor::NativeExecutor,
}

impl NativeBackend {
    /// A backend keeping state under `state_root` and reporting exits and OOMs to `events`.
    pub fn new(state_root: impl Into<PathBuf>, events: EventSink) -> Self {
        NativeBackend {
            state_root: state_root.into(),
            events,
            containers: Mutex::new(HashMap::new()),
            executor: executor::NativeExecutor::default(),
        }
    }

    /// Runs `hook` in every container process (init and exec) right before the user's
    /// program is exec'd. For tiers built on this one (the sentry).
    pub fn with_pre_exec(mut self, hook: Arc<dyn PreExec>) -> Self {
        self.executor.pre_exec = Some(hook);
        self
    }

    /// Starts `exe` as the creating helper instead of this process's own binary: a binary
    /// whose `main` calls [`creator::run`] with the hook this backend names (the wasm tier's
    /// runner, which runs the workload in the container's process).
    pub fn with_creator(mut self, exe: impl Into<PathBuf>) -> Self {
        self.executor.creator_exe = Some(exe.into());
        self
    }

    fn get(&self, id: &str) -> Result<Arc<Container>> {
        self.containers
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("container {id}")))
    }

    fn root_for(&self, namespace: &str) -> PathBuf {
        self.state_root.join(sanitize(namespace))
    }

    /// Removes whatever a container left behind when its shim died: kills its processes,
    /// removes its cgroup and its state. Used by the shim's `delete` action.
    pub fn cleanup_orphan(state_root: &Path, namespace: &str, id: &str) -> Result<()> {
        container::cleanup_orphan(&state_root.join(sanitize(namespace)), id)
    }
}

pub use strata_backend::sanitize;

impl Backend for NativeBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Native
    }

    fn create(&self, opts: CreateOpts) -> Result<u32> {
        let id = opts.id.clone();
        {
            let map = self.containers.lock().unwrap();
            if map.contains_key(&id) {
                return Err(Error::AlreadyExists(format!("container {id}")));
            }
        }
        let root = self.root_for(&opts.namespace);
        let c = Container::create(&root, opts, self.events.clone(), self.executor.clone())?;
        let pid = c.init_pid();
        let mut map = self.containers.lock().unwrap();
        if map.contains_key(&id) {
            drop(map);
            let _ = c.destroy();
            return Err(Error::AlreadyExists(format!("container {id}")));
        }
        map.insert(id, c);
        Ok(pid)
    }

    fn start(&self, id: &str, exec_id: Option<&str>) -> Result<u32> {
        let c = self.get(id)?;
        match exec_id {
            None => c.start(),
            Some(e) => c.start_exec(e),
        }
    }

    fn exec(&self, opts: ExecOpts) -> Result<()> {
        self.get(&opts.container_id)?.add_exec(opts)
    }

    fn kill(&self, id: &str, exec_id: Option<&str>, signal: i32, all: bool) -> Result<()> {
        self.get(id)?.kill(exec_id, signal, all)
    }

    fn delete(&self, id: &str, exec_id: Option<&str>) -> Result<()> {
        let c = self.get(id)?;
        match exec_id {
            Some(e) => c.delete_exec(e),
            None => {
                c.destroy()?;
                self.containers.lock().unwrap().remove(id);
                Ok(())
            }
        }
    }

    fn pids(&self, id: &str) -> Result<Vec<u32>> {
        self.get(id)?.cgroup().pids()
    }

    fn pause(&self, id: &str) -> Result<()> {
        self.get(id)?.cgroup().freeze(true)
    }

    fn resume(&self, id: &str) -> Result<()> {
        self.get(id)?.cgroup().freeze(false)
    }

    fn stats(&self, id: &str) -> Result<Stats> {
        self.get(id)?.cgroup().stats()
    }

    fn update(&self, id: &str, resources: &oci_spec::runtime::LinuxResources) -> Result<()> {
        self.get(id)?.cgroup().update(resources)
    }

    fn resize_pty(&self, id: &str, exec_id: Option<&str>, width: u32, height: u32) -> Result<()> {
        self.get(id)?
            .with_io(exec_id, |io| io.resize(width, height))
    }

    fn close_stdin(&self, id: &str, exec_id: Option<&str>) -> Result<()> {
        self.get(id)?.with_io(exec_id, |io| {
            io.close_stdin();
            Ok(())
        })
    }
}

/// The native tier in the shim's registry.
pub struct NativeTier;

/// The registry's entry for this tier.
pub static TIER: NativeTier = NativeTier;

impl strata_backend::Tier for NativeTier {
    fn kind(&self) -> BackendKind {
        BackendKind::Native
    }

    fn build(&self, ctx: &strata_backend::TierContext) -> Result<Arc<dyn Backend>> {
        Ok(Arc::new(NativeBackend::new(
            ctx.state_root.clone(),
            ctx.sink.clone(),
        )))
    }

    fn cleanup_orphan(&self, orphan: &strata_backend::Orphan<'_>) -> Result<()> {
        NativeBackend::cleanup_orphan(orphan.state_root, orphan.namespace, orphan.id)
    }
}
