//! Strata's `wasm` tier: a WebAssembly module (WASI preview 1) or component (WASI preview 2,
//! `wasi:cli/command`) run by wasmtime, in the manner of runwasi's containerd-shim-wasmtime.
//!
//! Each task is a container of the native tier whose init runs the module in place of an
//! exec'd program ([`hook`]): the wasm sandbox inside the container's namespaces, cgroup,
//! user, seccomp profile, with no capabilities and `no_new_privs`. The module is
//! `process.args[0]` inside the rootfs, optionally `#export`, or the image's WebAssembly
//! layer; compiled code is cached by module digest and engine configuration ([`cache`]).
//!
//! This crate knows nothing of containerd or ttrpc. It must never execute a compiled
//! artifact whose digest it has not checked.
#![deny(unsafe_code)]

pub mod cache;
pub mod filter;
pub mod hook;
pub mod http;
mod listen;
pub mod module;
mod rofs;
pub mod runner;
mod shadow;
mod sys;
mod task;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use strata_backend::{Backend, BackendKind, CreateOpts, Error, EventSink, ExecOpts, Result, Stats};
use strata_native::NativeBackend;

pub use hook::WasmHook;
pub use module::entrypoint_is_elf;
pub use runner::{ImageFetcher, ImageLayer, ImageRef, Network};
pub use task::NETWORK_ANNOTATION;

/// The wasm tier.
pub struct WasmBackend {
    native: NativeBackend,
    cache_dir: Option<PathBuf>,
    containerd: Option<String>,
    network: Network,
}

fn unsupported(op: &'static str) -> Error {
    Error::Unsupported {
        backend: BackendKind::Wasm,
        op,
    }
}

/// A wasm task has its init and nothing else: any exec id names no process.
fn init_only(id: &str, exec_id: Option<&str>) -> Result<()> {
    match exec_id {
        Some(e) => Err(Error::NotFound(format!("exec {e} in container {id}"))),
        None => Ok(()),
    }
}

impl WasmBackend {
    /// A backend whose tasks are native containers under `state_root`, made by `runner`: a
    /// binary whose `main` runs `strata_native::creator::run` with a [`WasmHook`] when asked
    /// (`strata-wasm-runner`).
    pub fn new(
        runner: impl Into<PathBuf>,
        state_root: impl Into<PathBuf>,
        events: EventSink,
    ) -> Self {
        WasmBackend {
            native: NativeBackend::new(state_root, events)
                .with_pre_exec(Arc::new(WasmHook::new(None)))
                .with_creator(runner),
            cache_dir: cache::dir_from_env(),
            containerd: None,
            network: Network::None,
        }
    }

    /// The runtime's API address (containerd's gRPC socket): a task whose module is not a
    /// file of its rootfs then runs the first WebAssembly layer of its image, which the
    /// runner reads from there (its [`WasmHook`]'s fetcher).
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

    /// The network of a task whose spec has no [`NETWORK_ANNOTATION`] (without this: none).
    pub fn with_network(mut self, network: Network) -> Self {
        self.network = network;
        self
    }
}

impl Backend for WasmBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Wasm
    }

    fn create(&self, opts: CreateOpts) -> Result<u32> {
        if opts.stdio.terminal {
            return Err(unsupported("a terminal (run without -t)"));
        }
        let cfg = task::task_config(
            &opts,
            self.cache_dir.clone(),
            self.containerd.as_deref(),
            self.network,
        )?;
        if matches!(cfg.source, runner::Source::Image(_)) {
            root_for_an_image_module(&opts.bundle, &opts.spec)?;
        }
        hook::write_task(&opts.bundle, &cfg)
            .map_err(|e| Error::io("write the wasm task into the bundle", e))?;
        let bundle = opts.bundle.clone();
        self.native.create(opts).inspect_err(|_| {
            let _ = std::fs::remove_file(bundle.join(hook::TASK_FILE));
        })
    }

    fn start(&self, id: &str, exec_id: Option<&str>) -> Result<u32> {
        if exec_id.is_some() {
            return Err(unsupported("exec"));
        }
        self.native.start(id, None)
    }

    fn exec(&self, _opts: ExecOpts) -> Result<()> {
        Err(unsupported(
            "exec (a WebAssembly task is one module instance)",
        ))
    }

    fn kill(&self, id: &str, exec_id: Option<&str>, signal: i32, all: bool) -> Result<()> {
        init_only(id, exec_id)?;
        self.native.kill(id, None, signal, all)
    }

    fn delete(&self, id: &str, exec_id: Option<&str>) -> Result<()> {
        init_only(id, exec_id)?;
        self.native.delete(id, None)
    }

    fn pids(&self, id: &str) -> Result<Vec<u32>> {
        self.native.pids(id)
    }

    fn pause(&self, id: &str) -> Result<()> {
        self.native.pause(id)
    }

    fn resume(&self, id: &str) -> Result<()> {
        self.native.resume(id)
    }

    fn stats(&self, id: &str) -> Result<Stats> {
        self.native.stats(id)
    }

    fn update(&self, id: &str, resources: &oci_spec::runtime::LinuxResources) -> Result<()> {
        // The cgroup's limits change; the module's linear-memory cap stays what create set.
        self.native.update(id, resources)
    }

    fn resize_pty(&self, _id: &str, _exec_id: Option<&str>, _w: u32, _h: u32) -> Result<()> {
        Err(unsupported("a terminal"))
    }

    fn close_stdin(&self, id: &str, exec_id: Option<&str>) -> Result<()> {
        init_only(id, exec_id)?;
        self.native.close_stdin(id, None)
    }
}

/// A module read from its image's layer may come with no root filesystem at all: the
/// bundle's empty `rootfs` directory, no snapshot mounted on it. The container's set-up makes
/// its mount points there (`/proc`, `/dev`, ...), which would keep containerd from removing the
/// bundle; so such a root is a small tmpfs, which the shim unmounts with the rootfs at delete
/// (also after a shim death).
fn root_for_an_image_module(bundle: &Path, spec: &oci_spec::runtime::Spec) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let root = module::rootfs_of(bundle, spec);
    if root != bundle.join("rootfs") {
        return Ok(());
    }
    let same_device = |a: &Path, b: &Path| -> Option<bool> {
        Some(std::fs::metadata(a).ok()?.dev() == std::fs::metadata(b).ok()?.dev())
    };
    let empty = std::fs::read_dir(&root).is_ok_and(|mut d| d.next().is_none());
    if !empty || same_device(&root, bundle) != Some(true) {
        return Ok(());
    }
    nix::mount::mount(
        Some("strata-wasm-root"),
        &root,
        Some("tmpfs"),
        nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
        Some("mode=755,size=1m"),
    )
    .map_err(|e| Error::io("mount a root for the image's module", e.into()))
}

/// Removes what a task left when its shim died: the native tier's container (its
/// processes, cgroup and state). Used by the shim's `delete` action.
pub fn cleanup_orphan(state_root: &Path, namespace: &str, id: &str) -> Result<()> {
    NativeBackend::cleanup_orphan(state_root, namespace, id)
}

/// `[wasm]` of the configuration.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Where compiled modules are cached; `"off"` disables the cache. Unset: the
    /// environment's `STRATA_WASM_CACHE_DIR`, else `/var/cache/strata/wasm`.
    pub cache_dir: Option<PathBuf>,
    /// The network of a task whose spec has no `strata.dev/wasm.network` annotation:
    /// `"none"` (unset) or `"inherit"` ([`Network`]).
    pub network: Option<String>,
}

impl Settings {
    /// Reads `[wasm]`; the message says what is wrong.
    pub fn from_table(value: &toml::Value) -> std::result::Result<Settings, String> {
        let s: Settings = value
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| format!("[wasm]: {}", e.message()))?;
        s.network()?;
        Ok(s)
    }

    /// `network`, read.
    pub fn network(&self) -> std::result::Result<Network, String> {
        match &self.network {
            None => Ok(Network::None),
            Some(w) => Network::parse(w)
                .ok_or_else(|| format!("[wasm] network = {w:?}: it is \"none\" or \"inherit\"")),
        }
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
        let mut b = WasmBackend::new(runner, ctx.state_root.clone(), ctx.sink.clone())
            .with_containerd_address(ctx.containerd_address.clone())
            .with_network(settings.network().map_err(Error::InvalidArgument)?);
        if let Some(dir) = settings.cache_dir {
            b = b.with_cache_dir((dir.as_os_str() != "off").then_some(dir));
        }
        Ok(Arc::new(b))
    }

    fn cleanup_orphan(&self, orphan: &strata_backend::Orphan<'_>) -> Result<()> {
        if orphan.tier == Some(BackendKind::Wasm) {
            cleanup_orphan(orphan.state_root, orphan.namespace, orphan.id)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configured_network_is_none_or_inherit() {
        let read = |t: &str| Settings::from_table(&toml::from_str::<toml::Value>(t).unwrap());
        assert_eq!(read("").unwrap().network(), Ok(Network::None));
        assert_eq!(
            read("network = \"none\"").unwrap().network(),
            Ok(Network::None)
        );
        assert_eq!(
            read("network = \"inherit\"").unwrap().network(),
            Ok(Network::Inherit)
        );
        let err = read("network = \"host\"").unwrap_err();
        assert!(
            err.contains("[wasm] network") && err.contains("inherit"),
            "{err}"
        );
    }
}
