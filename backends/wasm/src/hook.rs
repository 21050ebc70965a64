//! The runner inside the task's container, as runwasi runs wasmtime inside a libcontainer
//! container: the wasm sandbox is the first wall, the container the second.
//!
//! A wasm task is a native-tier container (`strata_native`: its own mount namespace with the
//! rootfs as its root, PID, IPC and UTS namespaces, the pod's network namespace or a new empty
//! one, the spec's user and groups, masked and read-only paths, cgroup, seccomp profile) whose
//! init runs the module in place of an exec'd program. The native tier starts the runner
//! binary (`strata-wasm-runner`) as its creating helper, with this hook:
//!
//! - [`PreExec::before_create`], in the helper, with the host's view and one thread: reads the
//!   [`TaskConfig`] the shim wrote into the bundle, the module (a file of the rootfs, or its
//!   image's layer from containerd), compiles it through the compiled-module cache (a host
//!   directory the container never sees), checks and links it. Its errors fail the create.
//!   libcontainer then clones the helper: the container's init inherits the linked module in
//!   memory, and no file of the runner, the engine or the cache need exist in the container.
//! - [`PreExec::before_exec`], in the container's init after its set-up and the start: gives up
//!   every capability, sets `no_new_privs`, installs the runner's own seccomp filter
//!   ([`crate::filter`]), opens the preopened directories as the container sees them, runs the
//!   module and exits with its status.

use std::path::Path;
use std::sync::Mutex;

use oci_spec::runtime::Spec;
use strata_native::PreExec;
use wasmtime::Engine;

use crate::runner::{self, ImageFetcher, Linked, TaskConfig};

/// The hook's name ([`PreExec::name`]).
pub const HOOK_NAME: &str = "wasm";
/// The task's configuration in the bundle, written by the shim.
pub const TASK_FILE: &str = "strata-wasm-task.json";

/// The wasm tier's hook; the runner binary hands it to `strata_native::creator::run`.
pub struct WasmHook {
    fetch: Option<ImageFetcher>,
}

impl WasmHook {
    /// `fetch` reads modules from images ([`runner::Source::Image`]); without it such a task
    /// fails its create.
    pub fn new(fetch: Option<ImageFetcher>) -> Self {
        WasmHook { fetch }
    }
}

/// What the helper made, which the container's init inherits.
struct Ready {
    engine: Engine,
    linked: Linked,
    cfg: TaskConfig,
}

static READY: Mutex<Option<Ready>> = Mutex::new(None);

/// Reads the task's configuration from the bundle.
pub fn read_task(bundle: &Path) -> Result<TaskConfig, String> {
    let path = bundle.join(TASK_FILE);
    let text =
        std::fs::read(&path).map_err(|e| format!("read the wasm task {}: {e}", path.display()))?;
    serde_json::from_slice(&text)
        .map_err(|e| format!("malformed wasm task {}: {e}", path.display()))
}

/// Writes the task's configuration into the bundle (the shim, before the create).
pub fn write_task(bundle: &Path, cfg: &TaskConfig) -> std::io::Result<()> {
    let json = serde_json::to_vec(cfg).map_err(std::io::Error::other)?;
    std::fs::write(bundle.join(TASK_FILE), json)
}

/// The number of threads of this process, from `/proc/self/status`.
fn threads() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
}

impl PreExec for WasmHook {
    fn name(&self) -> &'static str {
        HOOK_NAME
    }

    fn runs_the_workload(&self) -> bool {
        true
    }

    fn process_name(&self, container_id: &str) -> Option<String> {
        Some(format!("strata-wasm:{container_id}"))
    }

    fn before_create(&self, bundle: &Path) -> Result<(), String> {
        let mut cfg = read_task(bundle)?;
        let engine = runner::engine().map_err(|e| format!("wasmtime engine: {e:#}"))?;
        let (wasm, name) = runner::load(&mut cfg, self.fetch).map_err(|e| format!("{e:#}"))?;
        let (linked, outcome) =
            runner::link(&engine, &cfg, &wasm, &name).map_err(|e| format!("{e:#}"))?;
        tracing::debug!(id = %cfg.id, ?outcome, "wasm module linked");
        // libcontainer clones this process next: a second thread's locks would be the clone's
        // (creator.rs). Neither the engine (no parallel compilation) nor the image reader (a
        // current-thread runtime) leaves one; make sure.
        if let Some(n) = threads().filter(|n| *n > 1) {
            return Err(format!(
                "the wasm runner has {n} threads after loading the module; it must have one \
                 before the container is made"
            ));
        }
        *READY.lock().unwrap() = Some(Ready {
            engine,
            linked,
            cfg,
        });
        Ok(())
    }

    fn before_exec(&self, _spec: &Spec, _role: strata_native::Role) -> Result<(), String> {
        let Ready {
            engine,
            mut linked,
            cfg,
        } = READY
            .lock()
            .unwrap()
            .take()
            .ok_or("the wasm runner has no module (its create did not load one)")?;
        // What fails from here on fails the started task: its stderr says why (the status is
        // the native tier's for a failed start, 255).
        let said = |e: String| {
            eprintln!("strata-wasm: {e}");
            e
        };
        // A proxy component's listener, bound while the capabilities are still there.
        let serving = linked.bind().map_err(said)?;
        crate::sys::drop_all_capabilities()?;
        nix::sys::prctl::set_no_new_privs().map_err(|e| format!("set no_new_privs: {e}"))?;
        strata_native::install_seccomp(&crate::filter::profile(cfg.network.allowed(), serving))
            .map_err(|e| format!("install the runner's seccomp filter: {e}"))?;
        let prepared = linked
            .prepare(&engine, &cfg)
            .map_err(|e| said(format!("{e:#}")))?;
        let code = runner::run_to_exit(&engine, prepared);
        std::process::exit(code);
    }
}
