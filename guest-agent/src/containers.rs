//! The agent's containers: the protocol's container calls on the native backend's code
//! (`strata-native`, youki's libcontainer), run inside the guest. Exits reach `Wait` and OOM
//! kills reach `OomEvent` through the backend's event sink; every child of the agent is reaped
//! by `strata-backend`'s reaper. Streamed stdio is [`crate::streams`].
//!
//! When a container's init exits, the rest of its processes (its cgroup's) are killed before
//! `Wait` reports the exit, as runc's shim does: the kernel does it already for a container
//! with a PID namespace of its own, not for one that shares the guest's.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use strata_backend::{Backend, BackendEvent, CreateOpts, Error, ExecOpts, Stats, StdioPaths};
use strata_native::NativeBackend;

use crate::proto::agent::{Stdio, StdioPorts};
use crate::streams::{ProcessStreams, StreamTransport};

/// OOM notices kept until the host takes them; older ones are dropped beyond this.
const MAX_OOM_NOTICES: usize = 256;

/// The agent's containers namespace (one agent per VM, one namespace).
const NAMESPACE: &str = "strata-guest";

type Key = (String, String);

/// Exits seen, by (container id, exec id or "").
#[derive(Default)]
struct Exits {
    done: Mutex<HashMap<Key, u32>>,
    changed: Condvar,
}

/// OOM kills seen, by container id, oldest first.
#[derive(Default)]
struct Ooms {
    queue: Mutex<VecDeque<String>>,
    changed: Condvar,
}

/// How long `CloseStdin` waits for a streamed stdin's copier to pass on what it already read.
const STDIN_DRAIN: Duration = Duration::from_secs(2);

/// The native backend plus the exits and OOM kills it reported and the processes' streams.
pub struct Containers {
    backend: Arc<NativeBackend>,
    exits: Arc<Exits>,
    ooms: Arc<Ooms>,
    transport: StreamTransport,
    streams: Mutex<HashMap<Key, ProcessStreams>>,
    /// Each container's cgroup v2 directory, where `/sys/fs/cgroup` is cgroup2 (the guest):
    /// `Stats` reads it directly ([`crate::cgroup_stats`]).
    cgroups: Mutex<HashMap<String, PathBuf>>,
}

/// The backend's stdio for a process: a stream the host does not give is `/dev/null`, as
/// runc's shim gives it, never the agent's own (in the guest, PID 1's `/dev/console`: a
/// container must not read or write the VM's serial console, nor take it for a terminal). A
/// process with a terminal has the pty as all three.
fn stdio(s: Option<&Stdio>) -> StdioPaths {
    let s = s.cloned().unwrap_or_default();
    let or_null = |p: String| {
        if p.is_empty() && !s.terminal {
            DEV_NULL.to_string()
        } else {
            p
        }
    };
    StdioPaths {
        stdin: or_null(s.stdin.clone()),
        stdout: or_null(s.stdout.clone()),
        stderr: or_null(s.stderr.clone()),
        terminal: s.terminal,
    }
}

const DEV_NULL: &str = "/dev/null";

/// How long `Start` waits for the process to be its program ([`wait_for_exec`]).
const EXEC_WAIT: Duration = Duration::from_secs(2);

/// Waits until process `pid` runs its own program, no longer the agent's binary (the helper
/// that set it up), or is gone, for at most `limit`. `Start` answers only then: a signal
/// sent right after it (CRI's `StopContainer` just after `StartContainer`) would otherwise
/// reach a container init that has not exec'd yet and has no handler installed, which the
/// kernel discards for a PID namespace's init, so the stop waited for its SIGKILL. Under
/// emulation that window is hundreds of milliseconds; on the host (runc, the native tier)
/// it is short enough that nobody sees it.
fn wait_for_exec(pid: u32, limit: Duration) {
    use std::os::unix::fs::MetadataExt;
    let id = |p: &str| std::fs::metadata(p).map(|m| (m.dev(), m.ino()));
    let Ok(agent) = id("/proc/self/exe") else {
        return;
    };
    let until = Instant::now() + limit;
    while Instant::now() < until {
        match id(&format!("/proc/{pid}/exe")) {
            Ok(exe) if exe == agent => std::thread::sleep(Duration::from_millis(5)),
            _ => return,
        }
    }
}

fn exec_id(e: &str) -> Option<&str> {
    (!e.is_empty()).then_some(e)
}

/// Maps the backend's errors to ttrpc status codes, as the shim does.
pub fn to_ttrpc(e: Error) -> ttrpc::Error {
    use ttrpc::Code;
    let code = match &e {
        Error::NotFound(_) => Code::NOT_FOUND,
        Error::AlreadyExists(_) => Code::ALREADY_EXISTS,
        Error::InvalidArgument(_) => Code::INVALID_ARGUMENT,
        Error::FailedPrecondition(_) => Code::FAILED_PRECONDITION,
        Error::Unsupported { .. } => Code::UNIMPLEMENTED,
        _ => Code::UNKNOWN,
    };
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, e.to_string()))
}

impl Containers {
    /// A backend keeping its state under `state_root`, streams on vsock from the host only.
    pub fn new(state_root: impl Into<PathBuf>) -> Self {
        Self::with_transport(state_root, StreamTransport::Vsock { allow_local: false })
    }

    /// A backend keeping its state under `state_root`, stdio streams on `transport`.
    pub fn with_transport(state_root: impl Into<PathBuf>, transport: StreamTransport) -> Self {
        let exits = Arc::new(Exits::default());
        let ooms = Arc::new(Ooms::default());
        let (sink_exits, sink_ooms) = (exits.clone(), ooms.clone());
        // The sink is the backend's, so it reaches the backend through a weak reference.
        let backend_ref: Arc<OnceLock<Weak<NativeBackend>>> = Arc::default();
        let sink_backend = backend_ref.clone();
        let sink: strata_backend::EventSink = Arc::new(move |ev| match ev {
            BackendEvent::Exited {
                container_id,
                exec_id,
                status,
                ..
            } => {
                if exec_id.is_none() {
                    // The init is gone: so goes the rest of the container (the sink runs on
                    // a thread of its own, not the reaper's).
                    if let Some(b) = sink_backend.get().and_then(Weak::upgrade) {
                        let _ = b.kill(&container_id, None, libc::SIGKILL, true);
                    }
                }
                let mut done = sink_exits.done.lock().unwrap_or_else(|p| p.into_inner());
                done.insert((container_id, exec_id.unwrap_or_default()), status);
                sink_exits.changed.notify_all();
            }
            BackendEvent::Oom { container_id } => {
                let mut q = sink_ooms.queue.lock().unwrap_or_else(|p| p.into_inner());
                if q.len() == MAX_OOM_NOTICES {
                    q.pop_front();
                }
                q.push_back(container_id);
                sink_ooms.changed.notify_all();
            }
        });
        let backend = Arc::new(NativeBackend::new(state_root, sink));
        let _ = backend_ref.set(Arc::downgrade(&backend));
        Containers {
            backend,
            exits,
            ooms,
            transport,
            streams: Mutex::new(HashMap::new()),
            cgroups: Mutex::new(HashMap::new()),
        }
    }

    /// Creates the container; returns its init's PID and the ports of its streamed stdio.
    pub fn create(
        &self,
        id: &str,
        bundle: &str,
        io: Option<&Stdio>,
    ) -> Result<(u32, StdioPorts), Error> {
        let bundle = PathBuf::from(bundle);
        crate::share::check_bundle(&bundle)?;
        let mut spec = oci_spec::runtime::Spec::load(bundle.join("config.json")).map_err(|e| {
            Error::InvalidArgument(format!("{}/config.json: {e}", bundle.display()))
        })?;
        if crate::network::apply_pod_sysctls(&mut spec)? {
            // libcontainer reads the bundle's config.json itself.
            let path = bundle.join("config.json");
            let tmp = bundle.join(".config.json.agent");
            spec.save(&tmp)
                .map_err(|e| Error::Other(format!("writing {}: {e}", tmp.display())))?;
            std::fs::rename(&tmp, &path)
                .map_err(|e| Error::io(format!("replacing {}", path.display()), e))?;
        }
        self.forget(id, "");
        let (streams, io) = self.open_streams(io)?;
        let pid = self.backend.create(CreateOpts {
            id: id.to_string(),
            bundle,
            spec,
            stdio: stdio(io.as_ref()),
            namespace: NAMESPACE.to_string(),
            config_path: None,
            sandbox_id: id.to_string(),
        })?;
        // The init is in its cgroup by now: remember where, for Stats.
        let dir = crate::cgroup_stats::unified()
            .then(|| crate::cgroup_stats::dir_of(pid, Path::new(crate::cgroup_stats::CGROUP2_ROOT)))
            .flatten();
        let mut cgroups = self.cgroups.lock().unwrap_or_else(|p| p.into_inner());
        match dir {
            Some(d) => cgroups.insert(id.to_string(), d),
            None => cgroups.remove(id),
        };
        drop(cgroups);
        Ok((pid, self.keep_streams(id, "", streams)))
    }

    /// The streams `io` asks for, and the stdio to give the backend.
    fn open_streams(
        &self,
        io: Option<&Stdio>,
    ) -> Result<(Option<ProcessStreams>, Option<Stdio>), Error> {
        Ok(match ProcessStreams::open(&self.transport, io)? {
            Some((ps, paths)) => (Some(ps), Some(paths)),
            None => (None, io.cloned()),
        })
    }

    fn keep_streams(&self, id: &str, exec: &str, streams: Option<ProcessStreams>) -> StdioPorts {
        let Some(ps) = streams else {
            return StdioPorts::default();
        };
        let ports = ps.ports.clone();
        self.streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((id.to_string(), exec.to_string()), ps);
        ports
    }

    pub fn start(&self, id: &str, exec: &str) -> Result<u32, Error> {
        let started = self.backend.start(id, exec_id(exec));
        // The backend holds its own ends of the streams by now (an exec's terminal is attached
        // at its start); a start that failed holds none, and the host's copiers must see the
        // end of the streams, else its `ctr exec` waits for output for ever.
        if let Some(ps) = self
            .streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(&(id.to_string(), exec.to_string()))
        {
            ps.opened();
        }
        if let Ok(pid) = started {
            wait_for_exec(pid, EXEC_WAIT);
        }
        started
    }

    pub fn exec(
        &self,
        id: &str,
        exec: &str,
        process_json: &str,
        io: Option<&Stdio>,
    ) -> Result<StdioPorts, Error> {
        let process: oci_spec::runtime::Process = serde_json::from_str(process_json)
            .map_err(|e| Error::InvalidArgument(format!("process: {e}")))?;
        if exec.is_empty() {
            return Err(Error::InvalidArgument("an exec needs an exec id".into()));
        }
        self.forget(id, exec);
        let (streams, io) = self.open_streams(io)?;
        self.backend.exec(ExecOpts {
            container_id: id.to_string(),
            exec_id: exec.to_string(),
            process,
            stdio: stdio(io.as_ref()),
        })?;
        Ok(self.keep_streams(id, exec, streams))
    }

    /// The container's cgroup figures: read from its cgroup v2 directory where the agent
    /// found one (the guest, whose kernel has no hugetlbfs for libcgroups' v2 statistics), else
    /// through the native backend (libcgroups: v1 or hybrid hosts).
    pub fn stats(&self, id: &str) -> Result<Stats, Error> {
        let dir = self
            .cgroups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned();
        match dir {
            Some(d) => crate::cgroup_stats::read_v2(&d),
            None => self.backend.stats(id),
        }
    }

    /// The next OOM notice (a container id); `None` if `deadline` passed first.
    pub fn next_oom(&self, deadline: Option<Instant>) -> Option<String> {
        let mut q = self.ooms.queue.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(id) = q.pop_front() {
                return Some(id);
            }
            match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    q = self
                        .ooms
                        .changed
                        .wait_timeout(q, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                None => q = self.ooms.changed.wait(q).unwrap_or_else(|p| p.into_inner()),
            }
        }
    }

    pub fn pause(&self, id: &str) -> Result<(), Error> {
        self.backend.pause(id)
    }

    pub fn resume(&self, id: &str) -> Result<(), Error> {
        self.backend.resume(id)
    }

    /// The PIDs of the container's processes (its cgroup's), in the agent's PID namespace.
    pub fn pids(&self, id: &str) -> Result<Vec<u32>, Error> {
        self.backend.pids(id)
    }

    /// Applies `resources_json`, an OCI LinuxResources as JSON, to the container's cgroup.
    pub fn update(&self, id: &str, resources_json: &str) -> Result<(), Error> {
        let resources: oci_spec::runtime::LinuxResources = serde_json::from_str(resources_json)
            .map_err(|e| Error::InvalidArgument(format!("resources: {e}")))?;
        self.backend.update(id, &resources)
    }

    /// Sets the window size of the process's terminal.
    pub fn resize_pty(&self, id: &str, exec: &str, width: u32, height: u32) -> Result<(), Error> {
        if width > u32::from(u16::MAX) || height > u32::from(u16::MAX) {
            return Err(Error::InvalidArgument(format!(
                "window size {width}x{height}: at most 65535 each way"
            )));
        }
        self.backend.resize_pty(id, exec_id(exec), width, height)
    }

    /// Ends the process's stdin once what already reached the agent is through: a streamed
    /// stdin's copier first (it ends the backend's pipe), then the backend's.
    pub fn close_stdin(&self, id: &str, exec: &str) -> Result<(), Error> {
        let end = self
            .streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(id.to_string(), exec.to_string()))
            .and_then(ProcessStreams::stdin);
        if let Some(end) = end {
            end.close(STDIN_DRAIN);
        }
        self.backend.close_stdin(id, exec_id(exec))
    }

    pub fn kill(&self, id: &str, exec: &str, signal: u32, all: bool) -> Result<(), Error> {
        let signal = i32::try_from(signal)
            .map_err(|_| Error::InvalidArgument(format!("signal {signal}")))?;
        self.backend.kill(id, exec_id(exec), signal, all)
    }

    /// Blocks until the process exited; `Ok(None)` if `deadline` passed first. A container the
    /// agent does not hold is `NotFound` at once, not a wait until the deadline.
    pub fn wait(
        &self,
        id: &str,
        exec: &str,
        deadline: Option<std::time::Instant>,
    ) -> Result<Option<u32>, Error> {
        let key = (id.to_string(), exec.to_string());
        let known = |done: &HashMap<Key, u32>| {
            done.contains_key(&key) || !matches!(self.backend.pids(id), Err(Error::NotFound(_)))
        };
        let mut done = self.exits.done.lock().unwrap_or_else(|p| p.into_inner());
        if !known(&done) {
            return Err(Error::NotFound(format!("container {id}")));
        }
        loop {
            if let Some(s) = done.get(&key) {
                return Ok(Some(*s));
            }
            match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        return Ok(None);
                    }
                    done = self
                        .exits
                        .changed
                        .wait_timeout(done, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                None => {
                    done = self
                        .exits
                        .changed
                        .wait(done)
                        .unwrap_or_else(|p| p.into_inner())
                }
            }
        }
    }

    pub fn delete(&self, id: &str, exec: &str) -> Result<(), Error> {
        self.backend.delete(id, exec_id(exec))?;
        self.forget(id, exec);
        if exec.is_empty() {
            self.cgroups
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(id);
        }
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        if exec.is_empty() {
            // The container goes: so do its execs' streams.
            streams.retain(|(c, _), _| c != id);
        } else {
            streams.remove(&(id.to_string(), exec.to_string()));
        }
        Ok(())
    }

    fn forget(&self, id: &str, exec: &str) {
        self.exits
            .done
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(id.to_string(), exec.to_string()));
    }
}
