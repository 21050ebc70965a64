//! Strata's `wasm` tier: a WebAssembly module (WASI preview 1) or component (WASI preview 2,
//! `wasi:cli/command`) run by wasmtime, in the manner of runwasi's containerd-shim-wasmtime.
//!
//! Each task runs in its own process (the shim binary re-executed as a runner, see
//! [`runner`]) in its own cgroup, so its memory is accounted, the spec's limits apply, and
//! a kill is a real signal. The module is `process.args[0]` inside the rootfs, optionally
//! `#export`; compiled code is cached by module digest and engine configuration ([`cache`]).
//!
//! This crate knows nothing of containerd or ttrpc. It must never execute a compiled
//! artifact whose digest it has not checked, and never let a task outlive its shim.
#![deny(unsafe_code)]

pub mod cache;
pub mod module;
mod readonly;
mod rofs;
pub mod runner;
mod sys;
mod task;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use strata_backend::{Backend, BackendKind, CreateOpts, Error, EventSink, ExecOpts, Result, Stats};

pub use module::entrypoint_is_elf;
pub use runner::{run_if_runner, run_if_runner_with, ImageFetcher, ImageLayer, ImageRef};

/// Removes what a task left when its shim died: its runner (killed by its closed control
/// pipe, or here) and its cgroup. Used by the shim's `delete` action.
pub fn cleanup_orphan(bundle: &std::path::Path, namespace: &str, id: &str) {
    let Ok(text) = std::fs::read(bundle.join("config.json")) else {
        return;
    };
    let Ok(spec) = serde_json::from_slice::<oci_spec::runtime::Spec>(&text) else {
        return;
    };
    strata_native::Cgroup::new(task::spec_cgroup_path(&spec, namespace, id), id).kill_and_remove();
}
use task::Task;

/// The wasm tier.
pub struct WasmBackend {
    runner: PathBuf,
    events: EventSink,
    tasks: Mutex<HashMap<String, Arc<Task>>>,
    cache_dir: Option<PathBuf>,
    containerd: Option<String>,
}

fn unsupported(op: &'static str) -> Error {
    Error::Unsupported {
        backend: BackendKind::Wasm,
        op,
    }
}

impl WasmBackend {
    /// A backend whose tasks run in `runner`: a binary whose `main` calls
    /// [`run_if_runner`] first (`strata-wasm-runner`).
    pub fn new(runner: impl Into<PathBuf>, events: EventSink) -> Self {
        WasmBackend {
            runner: runner.into(),
            events,
            tasks: Mutex::new(HashMap::new()),
            cache_dir: cache::dir_from_env(),
            containerd: None,
        }
    }

    /// The runtime's API address (containerd's gRPC socket): a task whose module is not a
    /// file of its rootfs then runs the first WebAssembly layer of its image, which the
    /// runner reads from there ([`runner::run_if_runner_with`]).
    pub fn with_containerd_address(mut self, address: Option<String>) -> Self {
        self.containerd = address.filter(|a| !a.is_empty());
        self
    }

    /// Where compiled modules are cached (None: no cache). Without this, the environment's
    /// `STRATA_WASM_CACHE_DIR`, else the default directory.
    pub fn with_cache_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.cache_dir = dir;
        self
    }

    fn get(&self, id: &str) -> Result<Arc<Task>> {
        self.tasks
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("container {id}")))
    }
}

impl Backend for WasmBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Wasm
    }

    fn create(&self, opts: CreateOpts) -> Result<u32> {
        if self.tasks.lock().unwrap().contains_key(&opts.id) {
            return Err(Error::AlreadyExists(format!("container {}", opts.id)));
        }
        let task = Task::create(
            &opts,
            &self.runner,
            self.events.clone(),
            self.cache_dir.clone(),
            self.containerd.as_deref(),
        )?;
        let pid = task.pid;
        let mut tasks = self.tasks.lock().unwrap();
        if tasks.contains_key(&opts.id) {
            drop(tasks);
            task.destroy();
            return Err(Error::AlreadyExists(format!("container {}", opts.id)));
        }
        tasks.insert(opts.id, task);
        Ok(pid)
    }

    fn start(&self, id: &str, exec_id: Option<&str>) -> Result<u32> {
        if exec_id.is_some() {
            return Err(unsupported("exec"));
        }
        self.get(id)?.start()
    }

    fn exec(&self, _opts: ExecOpts) -> Result<()> {
        Err(unsupported(
            "exec (a WebAssembly task is one module instance)",
        ))
    }

    fn kill(&self, id: &str, exec_id: Option<&str>, signal: i32, all: bool) -> Result<()> {
        let task = self.get(id)?;
        if let Some(e) = exec_id {
            return Err(Error::NotFound(format!("exec {e} in container {id}")));
        }
        task.signal(signal, all)
    }

    fn delete(&self, id: &str, exec_id: Option<&str>) -> Result<()> {
        if let Some(e) = exec_id {
            return Err(Error::NotFound(format!("exec {e} in container {id}")));
        }
        let task = self.get(id)?;
        task.destroy();
        self.tasks.lock().unwrap().remove(id);
        Ok(())
    }

    fn pids(&self, id: &str) -> Result<Vec<u32>> {
        let task = self.get(id)?;
        match task.cgroup.pids() {
            Ok(p) => Ok(p),
            Err(_) if !task.exited() => Ok(vec![task.pid]),
            Err(e) => Err(e),
        }
    }

    fn pause(&self, id: &str) -> Result<()> {
        self.get(id)?.cgroup.freeze(true)
    }

    fn resume(&self, id: &str) -> Result<()> {
        self.get(id)?.cgroup.freeze(false)
    }

    fn stats(&self, id: &str) -> Result<Stats> {
        self.get(id)?.cgroup.stats()
    }

    fn update(&self, id: &str, resources: &oci_spec::runtime::LinuxResources) -> Result<()> {
        // The cgroup's limits change; the module's linear-memory cap stays what create set.
        self.get(id)?.cgroup.update(resources)
    }

    fn resize_pty(&self, _id: &str, _exec_id: Option<&str>, _w: u32, _h: u32) -> Result<()> {
        Err(unsupported("a terminal"))
    }

    fn close_stdin(&self, id: &str, exec_id: Option<&str>) -> Result<()> {
        if let Some(e) = exec_id {
            return Err(Error::NotFound(format!("exec {e} in container {id}")));
        }
        self.get(id)?.io.close_stdin();
        Ok(())
    }
}

/// `[wasm]` of the configuration.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Where compiled modules are cached; `"off"` disables the cache. Unset: the
    /// environment's `STRATA_WASM_CACHE_DIR`, else `/var/cache/strata/wasm`.
    pub cache_dir: Option<PathBuf>,
}

impl Settings {
    /// Reads `[wasm]`; the message says what is wrong.
    pub fn from_table(value: &toml::Value) -> std::result::Result<Settings, String> {
        value
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| format!("[wasm]: {}", e.message()))
    }
}

/// The wasm tier in the shim's registry.
pub struct WasmTier;

/// The registry's entry for this tier.
pub static TIER: WasmTier = WasmTier;

/// The runner binary's name; it is installed next to the shim.
pub const RUNNER_BINARY: &str = "strata-wasm-runner";

impl strata_backend::Tier for WasmTier {
    fn kind(&self) -> BackendKind {
        BackendKind::Wasm
    }

    fn validate(&self, settings: &toml::Value) -> std::result::Result<(), String> {
        Settings::from_table(settings).map(|_| ())
    }

    /// Tasks run in [`RUNNER_BINARY`], next to the shim.
    fn build(&self, ctx: &strata_backend::TierContext) -> Result<Arc<dyn Backend>> {
        let settings = match &ctx.settings {
            Some(v) => Settings::from_table(v).map_err(Error::InvalidArgument)?,
            None => Settings::default(),
        };
        let runner = ctx.shim_dir.join(RUNNER_BINARY);
        if !runner.is_file() {
            return Err(Error::Unavailable {
                backend: BackendKind::Wasm,
                reason: format!(
                    "{} is missing: install {RUNNER_BINARY} next to the shim",
                    runner.display()
                ),
            });
        }
        let mut b = WasmBackend::new(runner, ctx.sink.clone())
            .with_containerd_address(ctx.containerd_address.clone());
        if let Some(dir) = settings.cache_dir {
            b = b.with_cache_dir((dir.as_os_str() != "off").then_some(dir));
        }
        Ok(Arc::new(b))
    }

    fn cleanup_orphan(&self, orphan: &strata_backend::Orphan<'_>) -> Result<()> {
        if orphan.tier == Some(BackendKind::Wasm) {
            cleanup_orphan(orphan.bundle, orphan.namespace, orphan.id);
        }
        Ok(())
    }
}
