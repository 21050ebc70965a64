//! One wasm task as the shim holds it: its runner process, cgroup, streams and pipes.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use strata_backend::reaper::Reaper;
use strata_backend::stdio::ProcessIo;
use strata_backend::{BackendEvent, BackendKind, CreateOpts, Error, EventSink, Result};

use crate::module;
use crate::runner::{ImageRef, Preopen, Source, TaskConfig, RUNNER_ENV, START};
use strata_native::oom::{self, OomWatch};
use strata_native::Cgroup;

/// How long the runner may take to load and compile a module before create gives up.
const PREPARE_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Default)]
struct ExitState {
    status: Option<u32>,
    /// Set once create succeeded: from then on the exit is reported as an event.
    announced: bool,
}

/// Exit bookkeeping shared with the reaper's callback.
#[derive(Default)]
struct Shared {
    st: Mutex<ExitState>,
    cv: Condvar,
}

impl Shared {
    fn wait(&self, timeout: Duration) -> Option<u32> {
        let deadline = Instant::now() + timeout;
        let mut st = self.st.lock().unwrap();
        while st.status.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            st = self.cv.wait_timeout(st, left).unwrap().0;
        }
        st.status
    }

    fn exited(&self) -> bool {
        self.st.lock().unwrap().status.is_some()
    }
}

/// A wasm task.
pub struct Task {
    pub id: String,
    pub pid: u32,
    pub cgroup: Cgroup,
    pub io: Arc<ProcessIo>,
    control: Mutex<Option<File>>,
    shared: Arc<Shared>,
    started: AtomicBool,
    oom: Mutex<Option<OomWatch>>,
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::InvalidArgument(msg.into())
}

/// Builds the runner's configuration from the spec; every error here names what to fix.
///
/// The module is `process.args[0]` in the rootfs. When that names no file there (or the spec
/// has no args) and `containerd` (the runtime's API address) is known, it is the first
/// WebAssembly layer of the container's image instead, which the runner reads.
pub fn task_config(
    opts: &CreateOpts,
    cache_dir: Option<PathBuf>,
    containerd: Option<&str>,
) -> Result<TaskConfig> {
    let spec = &opts.spec;
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| invalid("the OCI spec has no process"))?;
    let args = process.args().clone().unwrap_or_default();
    let (path, export) = match args.first() {
        Some(arg0) => module::split_entrypoint(arg0),
        None => ("", None),
    };
    let root = module::rootfs_of(&opts.bundle, spec);
    let cwd = process.cwd().to_string_lossy().into_owned();
    let spec_env = process.env().clone().unwrap_or_default();
    // The same lookup as the ELF check that sent the container here (`entrypoint_is_elf`).
    let found = (!path.is_empty())
        .then(|| module::find_entrypoint(&root, &cwd, path, module::search_path(&spec_env)));
    let source =
        match (found, containerd) {
            (Some(Ok(host)), _) => {
                let mut header = Vec::with_capacity(8);
                File::open(&host)
                    .and_then(|f| f.take(8).read_to_end(&mut header))
                    .map_err(|e| Error::io(format!("read the module {path}"), e))?;
                module::kind_of(&header).map_err(|e| invalid(format!("the module {path}: {e}")))?;
                Source::File(host)
            }
            (missing, Some(address)) => Source::Image(ImageRef {
                address: address.to_string(),
                namespace: opts.namespace.clone(),
                container: opts.id.clone(),
                wanted: missing
                    .and_then(|m| m.err())
                    .map(|e| e.described())
                    .unwrap_or_default(),
            }),
            (None, None) => return Err(invalid(
                "the OCI spec's process has no args: args[0] must name the module, e.g. /app.wasm",
            )),
            (Some(Err(e)), None) => return Err(invalid(e.to_string())),
        };
    let mut wasm_args = args.clone();
    if let Some(a0) = wasm_args.first_mut() {
        *a0 = path.to_string();
    }
    let env = spec_env
        .into_iter()
        .map(|e| match e.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (e, String::new()),
        })
        .collect();
    let readonly_root = spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false);
    let mut preopens = vec![Preopen {
        host: root.clone(),
        guest: "/".into(),
        readonly: readonly_root,
        read_only_mount: false,
    }];
    if cwd != "/" && !cwd.is_empty() {
        if let Some(dir) = module::resolve_in_root(&root, "/", &cwd).filter(|p| p.is_dir()) {
            preopens.push(Preopen {
                host: dir,
                guest: ".".into(),
                readonly: readonly_root,
                read_only_mount: false,
            });
        }
    }
    for m in spec.mounts().clone().unwrap_or_default() {
        let options = m.options().clone().unwrap_or_default();
        let is_bind = m.typ().as_deref() == Some("bind")
            || options.iter().any(|o| o == "bind" || o == "rbind");
        let Some(source) = m.source().clone() else {
            continue;
        };
        // Directories only: WASI preopens are directories (a file bind mount such as CRI's
        // /etc/hosts is not reachable by the module).
        if !is_bind || !source.is_dir() {
            continue;
        }
        preopens.push(Preopen {
            host: source,
            guest: m.destination().to_string_lossy().into_owned(),
            readonly: options.iter().any(|o| o == "ro"),
            read_only_mount: false,
        });
    }
    let memory_limit = spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.memory().as_ref())
        .and_then(|m| m.limit())
        .filter(|l| *l > 0)
        .map(|l| l as u64);
    Ok(TaskConfig {
        id: opts.id.clone(),
        source,
        export: export.map(str::to_string),
        args: wasm_args,
        env,
        preopens,
        memory_limit,
        cache_dir,
    })
}

/// The task's cgroup path: the spec's, else one of Strata's own.
fn cgroup_path(opts: &CreateOpts) -> PathBuf {
    spec_cgroup_path(&opts.spec, &opts.namespace, &opts.id)
}

/// The cgroup path a task of this spec gets.
pub fn spec_cgroup_path(spec: &oci_spec::runtime::Spec, namespace: &str, id: &str) -> PathBuf {
    let p = spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().clone())
        .unwrap_or_else(|| PathBuf::from(format!("/strata/{namespace}/{id}")));
    if p.is_absolute() {
        p
    } else {
        Path::new("/").join(p)
    }
}

/// Reads the runner's one status line, waiting at most `timeout`.
fn read_status(status: &File, timeout: Duration) -> std::result::Result<String, String> {
    let deadline = Instant::now() + timeout;
    let mut line = Vec::new();
    let mut f = status;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "the wasm runner did not finish loading the module within {} s",
                timeout.as_secs()
            ));
        }
        let ms = u16::try_from(left.as_millis().min(10_000)).unwrap_or(10_000);
        let mut fds = [nix::poll::PollFd::new(
            status.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(format!("waiting for the wasm runner: {e}")),
        }
        let mut buf = [0u8; 4096];
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                line.extend_from_slice(&buf[..n]);
                if line.contains(&b'\n') {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading from the wasm runner: {e}")),
        }
    }
    let text = String::from_utf8_lossy(&line);
    let text = text.lines().next().unwrap_or("").to_string();
    if text.is_empty() {
        return Err("the wasm runner exited before it was ready".into());
    }
    Ok(text)
}

impl Task {
    /// Spawns the runner, puts it in its cgroup, hands it its configuration and waits until
    /// it has loaded and linked the module. The module does not run before [`Task::start`].
    pub fn create(
        opts: &CreateOpts,
        runner: &Path,
        events: EventSink,
        cache_dir: Option<PathBuf>,
        containerd: Option<&str>,
    ) -> Result<Arc<Task>> {
        if opts.stdio.terminal {
            return Err(Error::Unsupported {
                backend: BackendKind::Wasm,
                op: "a terminal (run without -t)",
            });
        }
        let cfg = task_config(opts, cache_dir, containerd)?;
        let json = serde_json::to_vec(&cfg)
            .map_err(|e| Error::Other(format!("task configuration: {e}")))?;
        let io = Arc::new(ProcessIo::pipes(&opts.stdio)?);
        let (control_r, control_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let (status_r, status_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;

        let mut cmd = Command::new(runner);
        cmd.env_clear()
            .env(RUNNER_ENV, "1")
            .current_dir("/")
            .arg0(format!("strata-wasm:{}", opts.id));
        for (i, which) in [0usize, 1, 2].into_iter().enumerate() {
            let s = io
                .take_fd(which)
                .map(Stdio::from)
                .unwrap_or_else(Stdio::null);
            match i {
                0 => cmd.stdin(s),
                1 => cmd.stdout(s),
                _ => cmd.stderr(s),
            };
        }
        let held = crate::sys::pass_pipes(&mut cmd, &control_r, &status_w)
            .map_err(|e| Error::io("prepare the wasm runner's pipes", e))?;
        let shared = Arc::new(Shared::default());
        let pid = {
            let _guard = Reaper::global().fork_guard();
            let child = cmd
                .spawn()
                .map_err(|e| Error::io(format!("start the wasm runner {}", runner.display()), e))?;
            let pid = child.id();
            let (shared, io, events, id) =
                (shared.clone(), io.clone(), events.clone(), opts.id.clone());
            Reaper::global().subscribe(pid as i32, move |status| {
                let _ = std::thread::Builder::new()
                    .name("exit".into())
                    .spawn(move || {
                        io.finish();
                        let announce = {
                            let mut st = shared.st.lock().unwrap();
                            st.status = Some(status);
                            st.announced
                        };
                        shared.cv.notify_all();
                        if announce {
                            events(BackendEvent::Exited {
                                container_id: id,
                                exec_id: None,
                                pid,
                                status,
                            });
                        }
                    });
            });
            pid
        };
        drop((held, control_r, status_w, cmd));
        let task = Arc::new(Task {
            id: opts.id.clone(),
            pid,
            cgroup: Cgroup::new(cgroup_path(opts), &opts.id),
            io,
            control: Mutex::new(Some(File::from(control_w))),
            shared,
            started: AtomicBool::new(false),
            oom: Mutex::new(None),
        });
        match task.handshake(opts, &json, File::from(status_r)) {
            Ok(()) => {
                // The runner's memory cgroup: its OOM kills become /tasks/oom.
                if let Some((dir, v2)) = task.cgroup.memory_dir() {
                    let id = task.id.clone();
                    match oom::watch(dir, v2, move || {
                        events(BackendEvent::Oom {
                            container_id: id.clone(),
                        })
                    }) {
                        Ok(w) => *task.oom.lock().unwrap() = Some(w),
                        Err(e) => {
                            tracing::warn!(id = %task.id, error = %e, "cannot watch for OOM kills")
                        }
                    }
                }
                Ok(task)
            }
            Err(e) => {
                task.destroy();
                Err(e)
            }
        }
    }

    fn handshake(&self, opts: &CreateOpts, json: &[u8], status: File) -> Result<()> {
        let resources = opts
            .spec
            .linux()
            .as_ref()
            .and_then(|l| l.resources().as_ref());
        self.cgroup.enter(self.pid, resources)?;
        {
            let mut guard = self.control.lock().unwrap();
            let control = guard
                .as_mut()
                .ok_or_else(|| Error::Other("control pipe closed".into()))?;
            let mut msg = (json.len() as u32).to_le_bytes().to_vec();
            msg.extend_from_slice(json);
            control
                .write_all(&msg)
                .map_err(|e| Error::io("send the task configuration to the wasm runner", e))?;
        }
        let line = read_status(&status, PREPARE_TIMEOUT).map_err(Error::Other)?;
        if let Some(msg) = line.strip_prefix("error: ") {
            return Err(Error::InvalidArgument(msg.to_string()));
        }
        if !line.starts_with("ok") {
            return Err(Error::Other(format!("the wasm runner said {line:?}")));
        }
        tracing::debug!(id = %self.id, cache = %line.trim_start_matches("ok "), "wasm task ready");
        let mut st = self.shared.st.lock().unwrap();
        if st.status.is_some() {
            return Err(Error::Other(
                "the wasm runner died before the task started".into(),
            ));
        }
        st.announced = true;
        Ok(())
    }

    /// Lets the runner call the module.
    pub fn start(&self) -> Result<u32> {
        if self.started.swap(true, Ordering::SeqCst) {
            return Err(Error::FailedPrecondition(format!(
                "task {} already started",
                self.id
            )));
        }
        let mut guard = self.control.lock().unwrap();
        let control = guard.as_mut().ok_or_else(|| {
            Error::FailedPrecondition(format!("task {} is being deleted", self.id))
        })?;
        control.write_all(&[START]).map_err(|e| {
            Error::FailedPrecondition(format!(
                "start task {}: the wasm runner is gone ({e})",
                self.id
            ))
        })?;
        Ok(self.pid)
    }

    pub fn exited(&self) -> bool {
        self.shared.exited()
    }

    pub fn signal(&self, signal: i32, all: bool) -> Result<()> {
        let sig = Signal::try_from(signal)
            .map_err(|_| Error::InvalidArgument(format!("unknown signal {signal}")))?;
        if all {
            self.cgroup.signal_all(sig);
        }
        if self.exited() {
            if all {
                return Ok(());
            }
            return Err(Error::NotFound("process already finished".into()));
        }
        match kill(Pid::from_raw(self.pid as i32), sig) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(e) => Err(Error::io(format!("signal process {}", self.pid), e.into())),
        }
    }

    /// Kills the runner if it still runs, waits for its exit, removes the cgroup.
    pub fn destroy(&self) {
        if let Some(w) = self.oom.lock().unwrap().take() {
            w.stop();
        }
        if !self.exited() {
            let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
            let _ = self.cgroup.freeze(false);
        }
        *self.control.lock().unwrap() = None;
        if self.shared.wait(Duration::from_secs(5)).is_none() {
            tracing::warn!(id = %self.id, pid = self.pid, "wasm runner did not exit after SIGKILL");
        }
        self.io.finish();
        if !self.cgroup.remove_retrying() {
            tracing::warn!(id = %self.id, "cannot remove the wasm task's cgroup");
        }
    }
}
