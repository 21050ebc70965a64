//! Loading and running a wasm task: the work of the runner, which runs in the task's own
//! container (see [`crate::hook`]).
//!
//! 1. [`link`], in the creating helper with the host's view: reads the module or component
//!    (a file of the rootfs, or an image layer), compiles it through the compiled-module
//!    cache, checks the export and links WASI. Its errors are the create's errors.
//! 2. [`Linked::prepare`], in the container's process after its root is the container's: the
//!    WASI context (stdio, args, env, the preopened directories as the container sees them)
//!    and the store with its memory limit.
//! 3. [`run_to_exit`]: runs it. The exit status is `proc_exit`'s code (0 when the entry
//!    returns), 134 for a trap (with the trap on stderr, as the wasmtime CLI does), 143 for
//!    SIGTERM and 130 for SIGINT (epoch interruption stops even a tight loop; a module blocked
//!    in a host call is ended after a grace period), 137 for SIGKILL.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wasmtime::component::ResourceTable;
use wasmtime::{Engine, Linker, ResourceLimiter, Store, Trap};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::sync::CommandPre;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::cache::{self, Compiled};

/// The exit status of a trap, as the wasmtime CLI reports it (128 + SIGABRT).
pub const TRAP_EXIT: i32 = 134;
/// How long a module blocked in a host call has, after SIGTERM, before the default action.
const TERM_GRACE: Duration = Duration::from_millis(500);

/// A directory the module sees.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Preopen {
    /// The directory as the runner opens it: a path in the container (its root is the
    /// container's by then).
    pub path: PathBuf,
    pub guest: String,
    pub readonly: bool,
    /// Whether the kernel refuses writes there (a read-only root or mount of the container):
    /// the module then gets write permission and the kernel answers a write with EROFS.
    /// Otherwise a read-only preopen has no write permission (wasmtime-wasi answers EPERM).
    pub read_only_mount: bool,
}

/// Where the module's bytes come from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A file of the container's root filesystem (its host path).
    File(PathBuf),
    /// The first WebAssembly layer of the container's image, read by the runner's
    /// [`ImageFetcher`] (the shim binary's, which knows containerd).
    Image(ImageRef),
}

/// The container whose image holds the module, as the runtime that started the shim names
/// it. Opaque to this crate: only the [`ImageFetcher`] interprets it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageRef {
    /// The runtime's API address (containerd's gRPC socket).
    pub address: String,
    pub namespace: String,
    pub container: String,
    /// What `process.args[0]` named (without `#export`) and, for a bare name, the `PATH` it
    /// was looked up in ([`crate::module::NotFound::described`]), for error messages; may be
    /// empty.
    pub wanted: String,
}

/// A module read from an image.
#[derive(Debug, Clone)]
pub struct ImageLayer {
    pub bytes: Vec<u8>,
    /// The image's name.
    pub image: String,
    /// Says which layer it was, for error messages (`layer sha256:... of image NAME`).
    pub describe: String,
}

/// Reads the module of an [`ImageRef`]; the error says what is missing.
pub type ImageFetcher = fn(&ImageRef) -> Result<ImageLayer, String>;

/// What of the network a task may use: the network of its container's network namespace (the
/// pod's, or a new empty one), never more. Set by the `strata.dev/wasm.network` annotation or
/// `[wasm] network` ([`crate::task`]).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// No socket: `wasi:sockets` answers `access-denied` (TCP, UDP) and
    /// `permanent-resolver-failure` (name lookup) without a system call, and the runner's
    /// seccomp filter refuses every socket call besides.
    #[default]
    None,
    /// TCP and UDP to and from any address of the namespace, and name lookup through the
    /// container's `/etc/resolv.conf` and `/etc/hosts`, as the wasmtime CLI's
    /// `-S inherit-network,allow-ip-name-lookup`.
    Inherit,
}

impl Network {
    /// The annotation's and the configuration's words.
    pub fn parse(word: &str) -> Option<Network> {
        match word {
            "none" => Some(Network::None),
            "inherit" => Some(Network::Inherit),
            _ => None,
        }
    }

    pub fn allowed(self) -> bool {
        self == Network::Inherit
    }
}

/// Everything the runner needs, written by the shim into the bundle ([`crate::hook`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskConfig {
    pub id: String,
    /// The `.wasm` file or the image layer; module or component is told by its header.
    pub source: Source,
    /// The export to call instead of `_start` (modules only).
    pub export: Option<String>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub preopens: Vec<Preopen>,
    /// Caps the sum of linear memories and tables (bytes).
    pub memory_limit: Option<u64>,
    pub cache_dir: Option<PathBuf>,
    #[serde(default)]
    pub network: Network,
    /// Addresses to listen on for a preview 1 module (`strata.dev/wasm.tcplisten`), bound
    /// before the task gives up its capabilities and preopened at descriptors 3, 4, ...
    /// ([`crate::listen`]).
    #[serde(default)]
    pub tcplisten: Vec<String>,
}

/// The settings of every engine: Cranelift, epoch interruption for kills, the component model.
pub(crate) fn config() -> wasmtime::Config {
    let mut c = wasmtime::Config::new();
    c.epoch_interruption(true);
    c.wasm_component_model(true);
    c
}

/// The engine every task uses (a served HTTP component then moves to [`crate::http::engine`]).
/// The same settings run synchronous calls (modules, commands) and asynchronous ones (HTTP
/// proxies).
pub fn engine() -> wasmtime::Result<Engine> {
    Engine::new(&config())
}

/// Caps what the module can allocate: linear memories, and tables at a pointer per element,
/// summed over the store.
#[derive(Debug, Default)]
pub struct Limits {
    max_bytes: Option<usize>,
    used: usize,
}

impl Limits {
    pub fn new(max_bytes: Option<u64>) -> Self {
        Limits {
            max_bytes: max_bytes.map(|m| usize::try_from(m).unwrap_or(usize::MAX)),
            used: 0,
        }
    }

    fn grow(&mut self, by: usize) -> bool {
        match self.max_bytes {
            Some(max) if self.used.saturating_add(by) > max => false,
            _ => {
                self.used = self.used.saturating_add(by);
                true
            }
        }
    }
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.grow(desired.saturating_sub(current)))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let elems = desired.saturating_sub(current);
        Ok(self.grow(elems.saturating_mul(std::mem::size_of::<usize>())))
    }
}

/// A preview 1 module's store data.
pub struct P1State {
    wasi: WasiP1Ctx,
    limits: Limits,
    pub(crate) originals: crate::shadow::Instances,
    pub(crate) sockets: crate::listen::Sockets,
}

/// A preview 2 component's store data.
pub struct P2State {
    ctx: WasiCtx,
    table: ResourceTable,
    limits: Limits,
}

impl WasiView for P2State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

/// A task ready to run: compiled, linked, its WASI context built.
pub enum Prepared {
    Module {
        store: Store<P1State>,
        pre: wasmtime::InstancePre<P1State>,
        export: String,
    },
    Component {
        store: Store<P2State>,
        pre: CommandPre<P2State>,
    },
    /// A `wasi:http/proxy` component, served until the task is stopped.
    Proxy(Box<(crate::http::Server, TaskConfig)>),
}

/// How a run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    /// Stopped by epoch interruption (SIGTERM or SIGINT).
    Interrupted,
    /// A trap or another runtime error; the message is for stderr.
    Trapped(String),
}

/// The WASI context of `cfg`. With `kernel_ro`, a read-only preopen that is a read-only mount
/// gets write permission, so that a write fails in the kernel (EROFS, which [`crate::rofs`]
/// passes on as `rofs`); otherwise it has none (wasmtime-wasi answers `perm`).
/// `holders` more read-only openings of the first preopened directory come first: they hold
/// the numbers of a preview 1 module's listening sockets ([`crate::listen`]).
pub(crate) fn wasi_builder(
    cfg: &TaskConfig,
    kernel_ro: bool,
    holders: usize,
) -> wasmtime::Result<WasiCtxBuilder> {
    let mut b = WasiCtxBuilder::new();
    b.inherit_stdio().args(&cfg.args).envs(&cfg.env);
    // wasmtime-wasi's default already allows no socket address and no name lookup; with no
    // network, TCP and UDP sockets are not even made.
    let net = cfg.network.allowed();
    b.allow_tcp(net).allow_udp(net).allow_ip_name_lookup(net);
    if net {
        b.inherit_network();
    }
    let held = cfg.preopens.iter().take(1).cycle().take(holders);
    for p in held {
        b.preopened_dir(&p.path, &p.guest, FsPerms::ReadOnly)
            .map_err(|e| wasmtime::format_err!("cannot open {}: {e}", p.path.display()))?;
    }
    for p in &cfg.preopens {
        let perms = if p.readonly && !(kernel_ro && p.read_only_mount) {
            FsPerms::ReadOnly
        } else {
            FsPerms::ReadWrite
        };
        b.preopened_dir(&p.path, &p.guest, perms).map_err(|e| {
            wasmtime::format_err!(
                "cannot open {} for the module as {}: {e}",
                p.path.display(),
                p.guest
            )
        })?;
    }
    Ok(b)
}

/// Reads the module's bytes: the file, or the image layer through `fetch`. Returns the bytes
/// and how to name them in messages; fills in args[0] (the image's name) when the spec had
/// no args.
pub fn load(
    cfg: &mut TaskConfig,
    fetch: Option<ImageFetcher>,
) -> wasmtime::Result<(Vec<u8>, String)> {
    match &cfg.source {
        Source::File(path) => {
            let wasm = std::fs::read(path)
                .map_err(|e| wasmtime::format_err!("cannot read {}: {e}", path.display()))?;
            Ok((wasm, path.display().to_string()))
        }
        Source::Image(r) => {
            let fetch = fetch.ok_or_else(|| {
                wasmtime::format_err!("this runner cannot read modules from images")
            })?;
            let layer = fetch(r).map_err(|e| wasmtime::format_err!("{e}"))?;
            if cfg.args.is_empty() {
                cfg.args.push(layer.image.clone());
            }
            Ok((layer.bytes, layer.describe))
        }
    }
}

/// A module or component compiled, checked and linked against WASI: everything but the
/// WASI context and the store, which [`Linked::prepare`] makes where the task runs.
pub enum Linked {
    Module {
        pre: wasmtime::InstancePre<P1State>,
        export: String,
        /// The addresses to listen on, then (after [`Linked::bind`]) the listeners.
        listen: Vec<String>,
        listeners: Vec<std::net::TcpListener>,
    },
    Component {
        pre: CommandPre<P2State>,
    },
    /// A `wasi:http/proxy` component, linked with wasmtime-wasi-http's asynchronous host.
    Proxy(crate::http::Server),
}

/// Compiles (or loads from the cache), checks and links the task (step 1). `name` says what
/// the bytes are in messages. Errors say what is wrong with the module.
pub fn link(
    engine: &Engine,
    cfg: &TaskConfig,
    wasm: &[u8],
    name: &str,
) -> wasmtime::Result<(Linked, cache::Outcome)> {
    let kind = crate::module::kind_of(wasm).map_err(|e| wasmtime::format_err!("{name}: {e}"))?;
    let (compiled, outcome) = cache::load_or_compile(engine, kind, wasm, cfg.cache_dir.as_deref())
        .map_err(|e| wasmtime::format_err!("invalid WebAssembly in {name}: {e:#}"))?;
    let linked = match compiled {
        Compiled::Module(module) => {
            let export = cfg.export.clone().unwrap_or_else(|| "_start".into());
            check_export(&module, &export, name, cfg)?;
            let mut linker: Linker<P1State> = Linker::new(engine);
            wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s| &mut s.wasi)?;
            // Preview 1 numbers the preopens from 3, in order, after the listening sockets.
            let ro_fds: Vec<i32> = (3 + cfg.tcplisten.len() as i32..)
                .zip(&cfg.preopens)
                .filter(|(_, p)| p.readonly && p.read_only_mount)
                .map(|(fd, _)| fd)
                .collect();
            crate::rofs::shadow(&mut linker, &ro_fds)?;
            if !cfg.tcplisten.is_empty() {
                crate::listen::shadow(&mut linker)?;
            }
            let pre = linker.instantiate_pre(&module).map_err(|e| {
                wasmtime::format_err!(
                    "{} imports what WASI preview 1 does not provide: {e:#}",
                    name
                )
            })?;
            Linked::Module {
                pre,
                export,
                listen: cfg.tcplisten.clone(),
                listeners: Vec::new(),
            }
        }
        Compiled::Component(component) => {
            if !cfg.tcplisten.is_empty() {
                wasmtime::bail!(
                    "{} is a component: {} preopens listening sockets for preview 1 modules; \
                     a component listens through wasi:sockets (strata.dev/wasm.network=inherit)",
                    name,
                    crate::listen::ANNOTATION
                );
            }
            if let Some(e) = &cfg.export {
                wasmtime::bail!(
                    "`#{e}` names an export, but {} is a component: components run through wasi:cli/run",
                    name
                );
            }
            if crate::http::is_proxy(engine, &component) {
                // Served, not run: loaded again (the cache entry just made or found) into the
                // server's pooling engine.
                let pooled = crate::http::engine()?;
                let (compiled, _) =
                    cache::load_or_compile(&pooled, kind, wasm, cfg.cache_dir.as_deref()).map_err(
                        |e| wasmtime::format_err!("invalid WebAssembly in {name}: {e:#}"),
                    )?;
                let Compiled::Component(component) = compiled else {
                    wasmtime::bail!("{name} is not a component");
                };
                let server = crate::http::Server::link(&pooled, &component, cfg, name)?;
                return Ok((Linked::Proxy(server), outcome));
            }
            let mut linker = wasmtime::component::Linker::<P2State>::new(engine);
            wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
            let pre = linker
                .instantiate_pre(&component)
                .and_then(CommandPre::new)
                .map_err(|e| {
                    wasmtime::format_err!(
                        "{} is not a wasi:cli/command component this host can run: {e:#}",
                        name
                    )
                })?;
            Linked::Component { pre }
        }
    };
    Ok((linked, outcome))
}

/// The export must be a function taking nothing and returning nothing or an i32.
fn check_export(
    module: &wasmtime::Module,
    export: &str,
    name: &str,
    cfg: &TaskConfig,
) -> wasmtime::Result<()> {
    match module.get_export(export) {
        Some(wasmtime::ExternType::Func(ty)) => {
            let ok = ty.params().len() == 0
                && (ty.results().len() == 0
                    || (ty.results().len() == 1
                        && matches!(ty.results().next(), Some(wasmtime::ValType::I32))));
            if !ok {
                wasmtime::bail!(
                    "export `{export}` of {} takes parameters or returns more than an i32: Strata calls it with none",
                    name
                );
            }
            Ok(())
        }
        Some(_) => wasmtime::bail!("export `{export}` of {name} is not a function"),
        None => {
            let funcs: Vec<String> = module
                .exports()
                .filter(|e| matches!(e.ty(), wasmtime::ExternType::Func(_)))
                .map(|e| e.name().to_string())
                .take(10)
                .collect();
            wasmtime::bail!(
                "{} has no export `{export}` (exported functions: {}); name one with `{}#NAME`",
                name,
                if funcs.is_empty() {
                    "none".into()
                } else {
                    funcs.join(", ")
                },
                cfg.args.first().map(String::as_str).unwrap_or("/app.wasm"),
            );
        }
    }
}

impl Linked {
    /// Binds the listening sockets of a proxy component or of a module given
    /// `strata.dev/wasm.tcplisten` (in the container's network namespace, before the task
    /// gives up its capabilities); whether the task serves on them.
    pub fn bind(&mut self) -> Result<bool, String> {
        match self {
            Linked::Proxy(server) => server.bind().map(|()| true),
            Linked::Module {
                listen, listeners, ..
            } if !listen.is_empty() => {
                *listeners = crate::listen::bind(listen)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// The WASI context and the store (step 2): opens the preopened directories, so it runs
    /// where the task runs, with the container's view of the file system.
    pub fn prepare(self, engine: &Engine, cfg: &TaskConfig) -> wasmtime::Result<Prepared> {
        let limits = Limits::new(cfg.memory_limit);
        Ok(match self {
            Linked::Module {
                pre,
                export,
                listeners,
                ..
            } => {
                let dirs = !cfg.preopens.is_empty();
                let holders = crate::listen::holders(listeners.len(), cfg.preopens.len());
                let wasi = wasi_builder(cfg, true, holders)?.build_p1();
                let mut store = Store::new(
                    engine,
                    P1State {
                        wasi,
                        limits,
                        originals: Default::default(),
                        sockets: crate::listen::Sockets::new(listeners, dirs),
                    },
                );
                store.limiter(|s| &mut s.limits);
                Prepared::Module { store, pre, export }
            }
            Linked::Component { pre } => {
                // wasmtime-wasi's preview 2 also answers EROFS with `io`; a component keeps
                // preopens without write permission (`not-permitted`).
                let ctx = wasi_builder(cfg, false, 0)?.build();
                let mut store = Store::new(
                    engine,
                    P2State {
                        ctx,
                        table: ResourceTable::new(),
                        limits,
                    },
                );
                store.limiter(|s| &mut s.limits);
                Prepared::Component { store, pre }
            }
            // Each request gets its own WASI context and store.
            Linked::Proxy(server) => Prepared::Proxy(Box::new((server, cfg.clone()))),
        })
    }
}

fn classify(e: wasmtime::Error) -> Exit {
    if let Some(exit) = e.downcast_ref::<I32Exit>() {
        return Exit::Code(exit.0);
    }
    if matches!(e.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
        return Exit::Interrupted;
    }
    Exit::Trapped(format!("{e:?}"))
}

impl Prepared {
    /// Runs the task to its end (step 3).
    pub fn run(self) -> Exit {
        match self {
            Prepared::Module {
                mut store,
                pre,
                export,
            } => {
                store.set_epoch_deadline(1);
                let instance = match pre.instantiate(&mut store) {
                    Ok(i) => i,
                    Err(e) => return classify(e),
                };
                if export != "_start" {
                    if let Ok(init) = instance.get_typed_func::<(), ()>(&mut store, "_initialize") {
                        if let Err(e) = init.call(&mut store, ()) {
                            return classify(e);
                        }
                    }
                }
                if let Ok(f) = instance.get_typed_func::<(), i32>(&mut store, &export) {
                    return match f.call(&mut store, ()) {
                        Ok(code) => Exit::Code(code),
                        Err(e) => classify(e),
                    };
                }
                match instance
                    .get_typed_func::<(), ()>(&mut store, &export)
                    .and_then(|f| f.call(&mut store, ()))
                {
                    Ok(()) => Exit::Code(0),
                    Err(e) => classify(e),
                }
            }
            Prepared::Component { mut store, pre } => {
                store.set_epoch_deadline(1);
                let cmd = match pre.instantiate(&mut store) {
                    Ok(c) => c,
                    Err(e) => return classify(e),
                };
                match cmd.wasi_cli_run().call_run(&mut store) {
                    Ok(Ok(())) => Exit::Code(0),
                    Ok(Err(())) => Exit::Code(1),
                    Err(e) => classify(e),
                }
            }
            Prepared::Proxy(task) => match task.0.serve(&task.1) {
                Ok(()) => Exit::Code(0),
                Err(e) => Exit::Trapped(e),
            },
        }
    }
}

/// Runs a prepared task to its end in this process (step 3) and returns the process's exit
/// status. SIGTERM and SIGINT stop it ([`watch_signals`]).
pub fn run_to_exit(engine: &Engine, prepared: Prepared) -> i32 {
    let interrupted_by = Arc::new(AtomicI32::new(0));
    // A served component's requests run in the server's own engine, whose epoch a signal moves.
    let engine = match &prepared {
        Prepared::Proxy(task) => task.0.engine(),
        _ => engine,
    };
    watch_signals(engine, interrupted_by.clone());
    let exit = prepared.run();
    let _ = std::io::stdout().flush();
    match exit {
        Exit::Code(c) => c,
        Exit::Interrupted => {
            let _ = std::io::stderr().flush();
            // Die of the signal that stopped it (SIGTERM or SIGINT), so containerd sees
            // 128 + that signal, as for a process that does not catch it. As the init of a
            // PID namespace, which no default action ends, exit with that status instead.
            let sig = match interrupted_by.load(Ordering::SeqCst) {
                0 => signal_hook::consts::SIGTERM,
                sig => sig,
            };
            die_of(sig)
        }
        Exit::Trapped(msg) => {
            eprintln!("Error: {msg}");
            TRAP_EXIT
        }
    }
}

/// Ends this process by `sig`'s default action, as a process that does not catch it; returns
/// the exit status that gives (128 + `sig`) where that action would not end it: the init of a
/// PID namespace, which the kernel spares (signal-hook's emulation would then abort).
fn die_of(sig: i32) -> i32 {
    if std::process::id() != 1 {
        let _ = signal_hook::low_level::emulate_default_handler(sig);
    }
    128 + sig
}

/// SIGTERM and SIGINT stop the module at its next epoch check; a module that does not reach
/// one within [`TERM_GRACE`] (blocked in a host call) gets the signal's default action, or
/// as a PID namespace's init the exit status that action would give.
/// The signal is stored in `interrupted_by` before the epoch moves.
fn watch_signals(engine: &Engine, interrupted_by: Arc<AtomicI32>) {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGTERM, SIGINT]) else {
        return;
    };
    let engine = engine.clone();
    let _ = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                interrupted_by.store(sig, Ordering::SeqCst);
                engine.increment_epoch();
                std::thread::sleep(TERM_GRACE);
                let _ = std::io::stdout().flush();
                std::process::exit(die_of(sig));
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loads, links and prepares a task whose module is a file, all in this process.
    fn prepare(engine: &Engine, cfg: &TaskConfig) -> wasmtime::Result<(Prepared, cache::Outcome)> {
        let mut cfg = cfg.clone();
        let (wasm, name) = load(&mut cfg, None)?;
        let (linked, outcome) = link(engine, &cfg, &wasm, &name)?;
        Ok((linked.prepare(engine, &cfg)?, outcome))
    }

    fn cfg(dir: &std::path::Path, wat: &str) -> TaskConfig {
        let module = dir.join("m.wasm");
        std::fs::write(&module, wat::parse_str(wat).unwrap()).unwrap();
        TaskConfig {
            id: "t".into(),
            source: Source::File(module),
            export: None,
            args: vec!["/m.wasm".into()],
            env: vec![],
            preopens: vec![],
            memory_limit: None,
            cache_dir: None,
            network: Network::None,
            tcplisten: vec![],
        }
    }

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("strata-wasm-run-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    const EXIT7: &str = r#"(module
        (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
        (memory (export "memory") 1)
        (func (export "_start") (call $exit (i32.const 7)))
        (func (export "other") (result i32) (i32.const 9)))"#;

    #[test]
    fn exit_codes_and_exports() {
        let d = tmpdir("exit");
        let e = engine().unwrap();
        let mut c = cfg(&d, EXIT7);
        assert_eq!(prepare(&e, &c).unwrap().0.run(), Exit::Code(7));
        c.export = Some("other".into());
        assert_eq!(prepare(&e, &c).unwrap().0.run(), Exit::Code(9));
        c.export = Some("nope".into());
        let err = prepare(&e, &c).err().unwrap().to_string();
        assert!(
            err.contains("no export `nope`") && err.contains("_start, other"),
            "{err}"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn trap_and_unknown_import() {
        let d = tmpdir("trap");
        let e = engine().unwrap();
        let c = cfg(&d, r#"(module (func (export "_start") unreachable))"#);
        match prepare(&e, &c).unwrap().0.run() {
            Exit::Trapped(m) => assert!(m.contains("unreachable"), "{m}"),
            other => panic!("{other:?}"),
        }
        let c = cfg(
            &d,
            r#"(module (import "env" "launch_missiles" (func)) (func (export "_start")))"#,
        );
        let err = format!("{:#}", prepare(&e, &c).err().unwrap());
        assert!(err.contains("launch_missiles"), "{err}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn memory_limit_caps_growth() {
        let d = tmpdir("mem");
        let e = engine().unwrap();
        // Grows one page at a time until memory.grow fails; exits with the pages it holds.
        let mut c = cfg(
            &d,
            r#"(module
            (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
            (memory (export "memory") 1)
            (func (export "_start")
              (loop $l (br_if $l (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
              (call $exit (memory.size))))"#,
        );
        c.memory_limit = Some(4 << 20);
        assert_eq!(prepare(&e, &c).unwrap().0.run(), Exit::Code(64));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn epoch_stops_a_tight_loop() {
        let d = tmpdir("loop");
        let e = engine().unwrap();
        let c = cfg(&d, r#"(module (func (export "_start") (loop $l (br $l))))"#);
        let p = prepare(&e, &c).unwrap().0;
        let e2 = e.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            e2.increment_epoch();
        });
        assert_eq!(p.run(), Exit::Interrupted);
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// A wasi:cli/command component with no imports: its `run` returns ok or err.
    pub fn command_component(ok: bool) -> Vec<u8> {
        wat::parse_str(format!(
            r#"(component
              (core module $m (func (export "run") (result i32) i32.const {}))
              (core instance $i (instantiate $m))
              (func $run (result (result)) (canon lift (core func $i "run")))
              (instance $inst (export "run" (func $run)))
              (export "wasi:cli/run@0.2.0" (instance $inst)))"#,
            if ok { 0 } else { 1 }
        ))
        .unwrap()
    }

    #[test]
    fn component_runs_through_wasi_cli_run() {
        let d = tmpdir("component");
        let e = engine().unwrap();
        for (ok, want) in [(true, 0), (false, 1)] {
            let c = cfg(&d, "(module)");
            std::fs::write(d.join("m.wasm"), command_component(ok)).unwrap();
            assert_eq!(prepare(&e, &c).unwrap().0.run(), Exit::Code(want));
        }
        let mut c = cfg(&d, "(module)");
        std::fs::write(d.join("m.wasm"), command_component(true)).unwrap();
        c.export = Some("x".into());
        assert!(prepare(&e, &c)
            .err()
            .unwrap()
            .to_string()
            .contains("component"));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
