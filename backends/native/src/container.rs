//! One native container: its libcontainer handle, its processes and their streams.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libcontainer::container::Container as LcContainer;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use strata_backend::reaper::Reaper;
use strata_backend::stdio::{ConsoleSocket, ProcessIo};
use strata_backend::{BackendEvent, CreateOpts, Error, EventSink, ExecOpts, Result, StdioPaths};

use crate::cgroup::Cgroup;
use crate::creator::{self, Kind, Request};
use crate::executor::NativeExecutor;
use crate::oom::{self, OomWatch};

/// How long to wait for the container's init to hand over its terminal.
const CONSOLE_TIMEOUT: Duration = Duration::from_secs(10);

static CONSOLE_SEQ: AtomicU64 = AtomicU64::new(0);

/// A process of the container (its init or an exec).
struct Proc {
    pid: AtomicU32,
    exited: AtomicBool,
    io: Arc<ProcessIo>,
    stdio: StdioPaths,
}

impl Proc {
    fn new(io: ProcessIo, stdio: StdioPaths) -> Self {
        Proc {
            pid: AtomicU32::new(0),
            exited: AtomicBool::new(false),
            io: Arc::new(io),
            stdio,
        }
    }
}

struct Exec {
    proc: Arc<Proc>,
    process_file: PathBuf,
    started: AtomicBool,
}

/// A native container.
pub struct Container {
    id: String,
    root: PathBuf,
    lc: Mutex<LcContainer>,
    cgroup: Cgroup,
    init: Arc<Proc>,
    execs: Mutex<HashMap<String, Arc<Exec>>>,
    events: EventSink,
    oom: Mutex<Option<OomWatch>>,
    executor: NativeExecutor,
    /// What the creating helper hands to exec'd processes as well (see `creator`).
    keep_fds: Vec<i32>,
}

fn lc_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Other(format!("{what}: {e}"))
}

fn console_path(root: &Path) -> PathBuf {
    root.join(format!(
        "console-{}-{}.sock",
        std::process::id(),
        CONSOLE_SEQ.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Reports the exit of `proc` once the reaper sees it.
fn watch_exit(proc: &Arc<Proc>, events: &EventSink, id: &str, exec_id: Option<&str>) {
    let pid = proc.pid.load(Ordering::SeqCst);
    let proc = proc.clone();
    let events = events.clone();
    let id = id.to_string();
    let exec_id = exec_id.map(str::to_string);
    Reaper::global().subscribe(pid as i32, move |status| {
        // Draining a terminal may take a moment: not on the reaper's thread.
        let _ = std::thread::Builder::new()
            .name("exit".into())
            .spawn(move || {
                proc.io.finish();
                proc.exited.store(true, Ordering::SeqCst);
                events(BackendEvent::Exited {
                    container_id: id,
                    exec_id,
                    pid,
                    status,
                });
            });
    });
}

impl Container {
    /// Creates the container: namespaces, rootfs, cgroup; the init waits for [`Container::start`].
    pub fn create(
        root: &Path,
        opts: CreateOpts,
        events: EventSink,
        executor: NativeExecutor,
    ) -> Result<Arc<Container>> {
        std::fs::create_dir_all(root)
            .map_err(|e| Error::io(format!("create state directory {}", root.display()), e))?;
        if root.join(&opts.id).exists() {
            return Err(Error::AlreadyExists(format!("container {}", opts.id)));
        }
        crate::bundle::prepare(&opts.bundle, &opts.spec)?;
        let console = if opts.stdio.terminal {
            Some(ConsoleSocket::bind(&console_path(root))?)
        } else {
            None
        };
        let io = if opts.stdio.terminal {
            ProcessIo::default()
        } else {
            ProcessIo::pipes(&opts.stdio)?
        };
        let req = Request::new(
            &opts.id,
            root,
            console.as_ref().map(|c| c.path().to_path_buf()),
            &executor,
            Kind::Init {
                bundle: opts.bundle.clone(),
            },
        );
        let keep = executor
            .pre_exec
            .as_ref()
            .map(|h| h.inherited_fds(&opts.spec))
            .unwrap_or_default();
        let what = format!("create container {}", opts.id);
        let built = creator::create(&what, &executor, &req, &io, &keep).and_then(|pid| {
            let lc = LcContainer::load(root.join(&opts.id))
                .map_err(|e| lc_err("load the created container's state", e))?;
            Ok((pid, lc))
        });
        let (pid, lc) = match built {
            Ok(built) => built,
            Err(e) => {
                // libcontainer removes what it made; make sure of it.
                let _ = cleanup_orphan(root, &opts.id);
                return Err(e);
            }
        };
        if pid != 0 && creates_namespace(&opts.spec, oci_spec::runtime::LinuxNamespaceType::Network)
        {
            if let Err(e) = crate::netns::loopback_up(pid) {
                let _ = cleanup_orphan(root, &opts.id);
                return Err(e);
            }
        }
        // libcontainer's tenant builder gives exec'd processes no seccomp filter: the
        // executor installs the container's profile in them itself.
        let mut exec_executor = executor.clone();
        exec_executor.exec_seccomp = opts
            .spec
            .linux()
            .as_ref()
            .and_then(|l| l.seccomp().clone())
            .filter(|s| !crate::executor::has_notify(s));
        let cgroup_path = lc
            .spec()
            .map(|s| s.cgroup_path)
            .unwrap_or_else(|_| PathBuf::from(format!("/strata/{}", opts.id)));
        let init = Arc::new(Proc::new(io, opts.stdio.clone()));
        init.pid.store(pid, Ordering::SeqCst);
        let c = Arc::new(Container {
            id: opts.id.clone(),
            root: root.to_path_buf(),
            lc: Mutex::new(lc),
            cgroup: Cgroup::new(cgroup_path, &opts.id),
            init,
            execs: Mutex::new(HashMap::new()),
            events: events.clone(),
            oom: Mutex::new(None),
            executor: exec_executor,
            keep_fds: keep,
        });
        if let Some(console) = console {
            let attached = console
                .receive(CONSOLE_TIMEOUT)
                .and_then(|master| c.init.io.attach_console(master, &opts.stdio));
            if let Err(e) = attached {
                let _ = c.destroy();
                return Err(e);
            }
        }
        watch_exit(&c.init, &events, &c.id, None);
        if let Some((dir, v2)) = c.cgroup.memory_dir() {
            let ev = events.clone();
            let id = c.id.clone();
            match oom::watch(dir, v2, move || {
                ev(BackendEvent::Oom {
                    container_id: id.clone(),
                })
            }) {
                Ok(w) => *c.oom.lock().unwrap() = Some(w),
                Err(e) => tracing::warn!(id = %c.id, error = %e, "cannot watch for OOM kills"),
            }
        }
        Ok(c)
    }

    pub fn init_pid(&self) -> u32 {
        self.init.pid.load(Ordering::SeqCst)
    }

    pub fn cgroup(&self) -> &Cgroup {
        &self.cgroup
    }

    /// Lets the init process exec the user's program.
    pub fn start(&self) -> Result<u32> {
        let mut lc = self.lc.lock().unwrap();
        let _guard = Reaper::global().fork_guard();
        lc.start().map_err(|e| {
            Error::FailedPrecondition(format!("start container {}: {}", self.id, error_chain(&e)))
        })?;
        Ok(self.init_pid())
    }

    pub fn add_exec(&self, opts: ExecOpts) -> Result<()> {
        let mut execs = self.execs.lock().unwrap();
        if execs.contains_key(&opts.exec_id) {
            return Err(Error::AlreadyExists(format!(
                "exec {} in container {}",
                opts.exec_id, self.id
            )));
        }
        if self.init.exited.load(Ordering::SeqCst) {
            return Err(Error::FailedPrecondition(format!(
                "container {} is not running",
                self.id
            )));
        }
        let process_file = self
            .root
            .join(&self.id)
            .join(format!("exec-{}.json", sanitize_file(&opts.exec_id)));
        let json = serde_json::to_vec(&opts.process)
            .map_err(|e| Error::InvalidArgument(format!("exec process: {e}")))?;
        std::fs::write(&process_file, json).map_err(|e| Error::io("write exec process spec", e))?;
        let io = if opts.stdio.terminal {
            ProcessIo::default()
        } else {
            ProcessIo::pipes(&opts.stdio)?
        };
        execs.insert(
            opts.exec_id.clone(),
            Arc::new(Exec {
                proc: Arc::new(Proc::new(io, opts.stdio)),
                process_file,
                started: AtomicBool::new(false),
            }),
        );
        Ok(())
    }

    fn exec(&self, exec_id: &str) -> Result<Arc<Exec>> {
        self.execs
            .lock()
            .unwrap()
            .get(exec_id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("exec {exec_id} in container {}", self.id)))
    }

    pub fn start_exec(&self, exec_id: &str) -> Result<u32> {
        let exec = self.exec(exec_id)?;
        if exec.started.swap(true, Ordering::SeqCst) {
            return Err(Error::FailedPrecondition(format!(
                "exec {exec_id} already started"
            )));
        }
        let console = if exec.proc.stdio.terminal {
            Some(ConsoleSocket::bind(&console_path(&self.root))?)
        } else {
            None
        };
        let req = Request::new(
            &self.id,
            &self.root,
            console.as_ref().map(|c| c.path().to_path_buf()),
            &self.executor,
            Kind::Tenant {
                process_file: exec.process_file.clone(),
            },
        );
        let pid = creator::create(
            &format!("exec {exec_id} in container {}", self.id),
            &self.executor,
            &req,
            &exec.proc.io,
            &self.keep_fds,
        )
        .inspect_err(|_| {
            // Nothing runs: the exec can be deleted (as with runc), not "still running".
            exec.proc.exited.store(true, Ordering::SeqCst);
        })?;
        exec.proc.pid.store(pid, Ordering::SeqCst);
        if let Some(console) = console {
            console
                .receive(CONSOLE_TIMEOUT)
                .and_then(|m| exec.proc.io.attach_console(m, &exec.proc.stdio))?;
        }
        watch_exit(&exec.proc, &self.events, &self.id, Some(exec_id));
        Ok(pid)
    }

    pub fn delete_exec(&self, exec_id: &str) -> Result<()> {
        let exec = self.exec(exec_id)?;
        if exec.started.load(Ordering::SeqCst) && !exec.proc.exited.load(Ordering::SeqCst) {
            return Err(Error::FailedPrecondition(format!(
                "exec {exec_id} is still running"
            )));
        }
        let _ = std::fs::remove_file(&exec.process_file);
        self.execs.lock().unwrap().remove(exec_id);
        Ok(())
    }

    pub fn kill(&self, exec_id: Option<&str>, signal: i32, all: bool) -> Result<()> {
        let sig = Signal::try_from(signal)
            .map_err(|_| Error::InvalidArgument(format!("unknown signal {signal}")))?;
        if all && exec_id.is_none() {
            self.cgroup.signal_all(sig);
            return Ok(());
        }
        let proc = match exec_id {
            None => self.init.clone(),
            Some(e) => self.exec(e)?.proc.clone(),
        };
        let pid = proc.pid.load(Ordering::SeqCst);
        if pid == 0 || proc.exited.load(Ordering::SeqCst) {
            return Err(Error::NotFound("process already finished".into()));
        }
        match kill(Pid::from_raw(pid as i32), sig) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(e) => Err(Error::io(format!("signal process {pid}"), e.into())),
        }
    }

    pub fn with_io(
        &self,
        exec_id: Option<&str>,
        f: impl FnOnce(&ProcessIo) -> Result<()>,
    ) -> Result<()> {
        match exec_id {
            None => f(&self.init.io),
            Some(e) => f(&self.exec(e)?.proc.io),
        }
    }

    /// Kills whatever still runs and removes the cgroup and the state.
    pub fn destroy(&self) -> Result<()> {
        if let Some(w) = self.oom.lock().unwrap().take() {
            w.stop();
        }
        self.cgroup.kill_all();
        let init = self.init_pid();
        if init != 0 && !self.init.exited.load(Ordering::SeqCst) {
            let _ = kill(Pid::from_raw(init as i32), Signal::SIGKILL);
            // Give the reaper a moment so that the exit is reported before the state goes.
            for _ in 0..200 {
                if self.init.exited.load(Ordering::SeqCst) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let mut lc = self.lc.lock().unwrap();
        // libcontainer's delete makes a cgroup manager of its own, which finds every
        // hierarchy anew (cgroup.rs): most of a task's delete. A stopped container with no
        // poststop hook and no Intel RDT state needs nothing of it but the cgroup and the
        // state directory removed, which is done here either way.
        let plain = self.init.exited.load(Ordering::SeqCst)
            && lc.intel_rdt_dir().is_none()
            && lc.spec().is_ok_and(|c| {
                c.hooks
                    .as_ref()
                    .and_then(|h| h.poststop().as_ref())
                    .is_none_or(|p| p.is_empty())
            });
        if !plain {
            let res = {
                let _guard = Reaper::global().fork_guard();
                lc.delete(true)
            };
            if let Err(e) = res {
                tracing::warn!(id = %self.id, error = %error_chain(&e), "libcontainer delete failed; cleaning up by hand");
            }
        }
        drop(lc);
        // Processes that kill_all just killed may still be on their way out.
        let _ = self.cgroup.remove_retrying();
        let _ = std::fs::remove_dir_all(self.root.join(&self.id));
        Ok(())
    }
}

fn sanitize_file(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Whether the runtime creates a namespace of type `typ` for the container (the spec lists
/// it with no path to join): for the network namespace, its loopback is then ours to bring
/// up.
pub fn creates_namespace(
    spec: &oci_spec::runtime::Spec,
    typ: oci_spec::runtime::LinuxNamespaceType,
) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|nss| nss.iter().any(|n| n.typ() == typ && n.path().is_none()))
}

/// The error and its sources, joined.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// Removes a container found on disk with no live shim: kill, cgroup, state.
pub fn cleanup_orphan(root: &Path, id: &str) -> Result<()> {
    let dir = root.join(id);
    if !dir.exists() {
        return Ok(());
    }
    match LcContainer::load(dir.clone()) {
        Ok(mut lc) => {
            let cg = lc.spec().ok().map(|s| Cgroup::new(s.cgroup_path, id));
            if let Some(cg) = &cg {
                cg.kill_all();
            }
            if let Some(pid) = lc.pid() {
                let _ = kill(pid, Signal::SIGKILL);
            }
            if let Err(e) = lc.delete(true) {
                tracing::warn!(%id, error = %error_chain(&e), "libcontainer delete of an orphan failed");
            }
            if let Some(cg) = cg {
                let _ = cg.remove_retrying();
            }
        }
        Err(e) => {
            tracing::warn!(%id, error = %error_chain(&e), "cannot load orphan container state")
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
