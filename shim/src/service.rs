//! The shim v2 task service: containerd's 17 task RPCs over the backends.
//!
//! The service keeps, per container, the state containerd asks about (pid, status, exit
//! status and time) and raises the task events; backends do the work and report exits and
//! OOM kills through an [`EventSink`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::Duration;

use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim::protos::protobuf::well_known_types::empty::Empty;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::shim::shim::*;
use containerd_shim::protos::shim_sync::Task;
use containerd_shim::protos::topics::*;
use containerd_shim::protos::ttrpc::{self, Code, TtrpcContext};
use containerd_shim::protos::types::task::{ProcessInfo, Status};
use containerd_shim::ExitSignal;
use strata_backend::{
    counters, Backend, BackendEvent, BackendKind, CreateOpts, Error, EventSink, ExecOpts, Sandbox,
    SandboxOpts, StdioPaths, TierContext,
};

use crate::bootstrap::{
    BundleRecord, RuntimeOptionsRecord, BUNDLE_RECORD_FILE, RUNTIME_OPTIONS_FILE,
};
use crate::config::{Config, CONTAINER_TYPE_ANNOTATION, SANDBOX_ID_ANNOTATION};
use crate::events::Events;

/// The current time as a protobuf timestamp.
pub fn now() -> Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
        ..Default::default()
    }
}

/// Maps a backend error to the ttrpc code containerd and kubelet act on.
pub fn to_ttrpc(e: Error) -> ttrpc::Error {
    let code = match &e {
        Error::NotFound(_) => Code::NOT_FOUND,
        Error::AlreadyExists(_) => Code::ALREADY_EXISTS,
        Error::InvalidArgument(_) => Code::INVALID_ARGUMENT,
        Error::FailedPrecondition(_) => Code::FAILED_PRECONDITION,
        Error::Unsupported { .. } | Error::Unavailable { .. } => Code::UNIMPLEMENTED,
        Error::Io { .. } | Error::Other(_) => Code::UNKNOWN,
    };
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, e.to_string()))
}

fn err(code: Code, msg: impl ToString) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, msg))
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Created,
    Running,
    Stopped,
}

struct ProcState {
    pid: u32,
    phase: Phase,
    exit_status: u32,
    exited_at: Option<Timestamp>,
}

/// A process as containerd sees it.
struct Proc {
    stdio: StdioPaths,
    st: Mutex<ProcState>,
    exited: Condvar,
}

/// The exit status of an exec whose start failed (as `sh` reports a command it cannot run).
const EXEC_START_FAILED: u32 = 127;

impl Proc {
    /// Marks the process ended with `status` unless it already has, and wakes its waiters.
    fn finish(&self, status: u32) {
        let mut st = self.st.lock().unwrap();
        if st.phase != Phase::Stopped {
            st.phase = Phase::Stopped;
            st.exit_status = status;
            st.exited_at = Some(now());
        }
        drop(st);
        self.exited.notify_all();
    }

    fn new(stdio: StdioPaths, pid: u32) -> Arc<Proc> {
        Arc::new(Proc {
            stdio,
            st: Mutex::new(ProcState {
                pid,
                phase: Phase::Created,
                exit_status: 0,
                exited_at: None,
            }),
            exited: Condvar::new(),
        })
    }
}

/// A container held by this shim.
struct Ctr {
    id: String,
    bundle: PathBuf,
    kind: BackendKind,
    backend: Arc<dyn Backend>,
    /// The pod's sandbox this container belongs to (its own id outside a pod).
    sandbox_id: String,
    /// Held across Start (and its event) and across exit handling, so that /tasks/start
    /// is always queued before /tasks/exit.
    lifecycle: Mutex<()>,
    init: Arc<Proc>,
    execs: Mutex<HashMap<String, Arc<Proc>>>,
    paused: Mutex<bool>,
}

impl Ctr {
    fn proc(&self, exec_id: &str) -> ttrpc::Result<Arc<Proc>> {
        if exec_id.is_empty() {
            return Ok(self.init.clone());
        }
        self.execs
            .lock()
            .unwrap()
            .get(exec_id)
            .cloned()
            .ok_or_else(|| {
                err(
                    Code::NOT_FOUND,
                    format!("exec {exec_id} in container {} not found", self.id),
                )
            })
    }
}

/// A pod's sandbox and its containers (the sandbox container among them).
struct Pod {
    sandbox: Arc<dyn Sandbox>,
    members: std::collections::HashSet<String>,
}

struct Inner {
    namespace: String,
    events: Events,
    containers: Mutex<HashMap<String, Arc<Ctr>>>,
    /// One backend per tier, built from the registry on first use.
    backends: Mutex<HashMap<BackendKind, Arc<dyn Backend>>>,
    /// The pods' sandboxes, by sandbox id, with the containers that belong to them.
    pods: Mutex<HashMap<String, Pod>>,
    /// containerd's gRPC address (the `-address` flag), for the wasm tier's image layers.
    containerd_address: OnceLock<String>,
    exit: Arc<ExitSignal>,
}

/// containerd's task service, over Strata's backends.
#[derive(Clone)]
pub struct TaskService {
    inner: Arc<Inner>,
}

/// The pod sandbox a container names in CRI's annotations, when CRI marked it as of type
/// `kind`: "container" for a pod's member, "sandbox" for the pod's own (pause) container.
fn sandbox_of<'a>(annotations: &'a HashMap<String, String>, kind: &str) -> Option<&'a str> {
    (annotations
        .get(CONTAINER_TYPE_ANNOTATION)
        .map(String::as_str)
        == Some(kind))
    .then(|| annotations.get(SANDBOX_ID_ANNOTATION).map(String::as_str))
    .flatten()
}

/// Whether container `id` is a pod's sandbox (pause) container as CRI creates it: of type
/// "sandbox" and naming itself as its sandbox.
fn is_pod_sandbox(id: &str, annotations: &HashMap<String, String>) -> bool {
    sandbox_of(annotations, "sandbox") == Some(id)
}

fn opt(exec_id: &str) -> Option<&str> {
    if exec_id.is_empty() {
        None
    } else {
        Some(exec_id)
    }
}

impl TaskService {
    pub fn new(namespace: String, events: Events, exit: Arc<ExitSignal>) -> TaskService {
        TaskService {
            inner: Arc::new(Inner {
                namespace,
                events,
                containers: Mutex::new(HashMap::new()),
                backends: Mutex::new(HashMap::new()),
                pods: Mutex::new(HashMap::new()),
                containerd_address: OnceLock::new(),
                exit,
            }),
        }
    }

    /// containerd's gRPC address: a wasm task whose module is not in its rootfs runs its
    /// image's WebAssembly layer, which the runner reads from containerd's content store.
    pub fn set_containerd_address(&self, address: String) {
        let _ = self.inner.containerd_address.set(address);
    }

    /// Waits for queued events to reach containerd (before the shim exits).
    pub fn flush_events(&self) {
        self.inner.events.flush();
    }

    fn sink(&self) -> EventSink {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        Arc::new(move |ev| {
            if let Some(inner) = weak.upgrade() {
                Inner::on_backend_event(&inner, ev);
            }
        })
    }

    /// The tier's backend, built from the registry the first time a container needs it.
    fn backend(&self, kind: BackendKind, cfg: &Config) -> Result<Arc<dyn Backend>, Error> {
        let mut backends = self.inner.backends.lock().unwrap();
        if let Some(b) = backends.get(&kind) {
            return Ok(b.clone());
        }
        let tier = crate::tiers::tier(kind).ok_or_else(|| Error::Unavailable {
            backend: kind,
            reason: "this build of Strata does not include it".into(),
        })?;
        let exe = std::env::current_exe()
            .map_err(|e| Error::io("locate the shim binary (tier helpers live beside it)", e))?;
        let ctx = TierContext {
            state_root: cfg.native_state_root(),
            sink: self.sink(),
            settings: cfg.tier_settings(kind),
            shim_dir: exe.parent().map(PathBuf::from).unwrap_or_default(),
            containerd_address: self.inner.containerd_address.get().cloned(),
        };
        let b = tier.build(&ctx)?;
        backends.insert(kind, b.clone());
        Ok(b)
    }

    /// The sandbox a new container joins: its pod's (CRI's sandbox-id annotation on an
    /// ordinary container), else its own, created here on `backend` (the pod's tier).
    fn join_sandbox(
        &self,
        id: &str,
        annotations: &HashMap<String, String>,
        backend: &Arc<dyn Backend>,
        opts: impl FnOnce() -> SandboxOpts,
    ) -> Result<String, Error> {
        if let Some(sandbox_id) = sandbox_of(annotations, "container") {
            if let Some(pod) = self.inner.pods.lock().unwrap().get_mut(sandbox_id) {
                pod.members.insert(id.to_string());
                return Ok(sandbox_id.to_string());
            }
        }
        let sandbox = backend.create_sandbox(&opts())?;
        self.inner.pods.lock().unwrap().insert(
            id.to_string(),
            Pod {
                sandbox,
                members: [id.to_string()].into(),
            },
        );
        Ok(id.to_string())
    }

    /// Takes `id` out of its pod; the pod's last container ends the sandbox.
    fn leave_sandbox(&self, id: &str, sandbox_id: &str) {
        let gone = {
            let mut pods = self.inner.pods.lock().unwrap();
            let Some(pod) = pods.get_mut(sandbox_id) else {
                return;
            };
            pod.members.remove(id);
            if pod.members.is_empty() {
                pods.remove(sandbox_id)
            } else {
                None
            }
        };
        if let Some(pod) = gone {
            match pod.sandbox.shutdown() {
                Ok(()) => tracing::info!(sandbox = %sandbox_id, "sandbox ended"),
                Err(e) => tracing::warn!(sandbox = %sandbox_id, error = %e, "ending the sandbox"),
            }
        }
    }

    fn ctr(&self, id: &str) -> ttrpc::Result<Arc<Ctr>> {
        self.inner
            .containers
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .ok_or_else(|| err(Code::NOT_FOUND, format!("container {id} not found")))
    }

    /// The tier of the pod this container belongs to, if its sandbox runs in this shim.
    fn pod_backend(&self, annotations: &HashMap<String, String>) -> Option<BackendKind> {
        let sandbox = sandbox_of(annotations, "container")?;
        self.inner
            .containers
            .lock()
            .unwrap()
            .get(sandbox)
            .map(|c| c.kind)
    }

    /// Creates the task; `tier` is set as soon as the container's tier is known (for the
    /// failure counter).
    fn do_create(
        &self,
        req: &CreateTaskRequest,
        tier: &mut Option<BackendKind>,
    ) -> Result<CreateTaskResponse, Error> {
        if self.inner.containers.lock().unwrap().contains_key(&req.id) {
            return Err(Error::AlreadyExists(format!("container {}", req.id)));
        }
        if !req.checkpoint.is_empty() {
            return Err(Error::Unsupported {
                backend: BackendKind::Native,
                op: "restore from checkpoint",
            });
        }
        let bundle = PathBuf::from(&req.bundle);
        let spec_path = bundle.join("config.json");
        let text = std::fs::read(&spec_path).map_err(|e| {
            Error::InvalidArgument(format!("cannot read OCI spec {}: {e}", spec_path.display()))
        })?;
        // serde_json's message says what and where (oci-spec's own says only "serde failed").
        let spec: oci_spec::runtime::Spec = serde_json::from_slice(&text).map_err(|e| {
            Error::InvalidArgument(format!("malformed OCI spec {}: {e}", spec_path.display()))
        })?;

        // The config: the runtime options of this request, else those `start` recorded.
        let config_path = req
            .options
            .as_ref()
            .and_then(crate::bootstrap::config_path_from_options)
            .or_else(|| {
                std::fs::read(bundle.join(RUNTIME_OPTIONS_FILE))
                    .ok()
                    .and_then(|b| serde_json::from_slice::<RuntimeOptionsRecord>(&b).ok())
                    .and_then(|r| r.config_path)
            });
        let cfg = Config::load(config_path.as_deref().map(std::path::Path::new))
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        counters::set_dir(Some(cfg.metrics.dir.clone()).filter(|d| !d.as_os_str().is_empty()));
        let annotations = spec.annotations().clone().unwrap_or_default();
        let chosen = cfg
            .choose(&annotations)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let kind = match self.pod_backend(&annotations) {
            // Containers inherit their pod's tier, unless they are not WebAssembly at all.
            Some(pod) => pod,
            None => chosen,
        };
        *tier = Some(kind);
        let pod_backend = self.backend(kind, &cfg)?;

        crate::rootfs::mount(&bundle, &req.rootfs)?;
        if let Some(root) = spec.root() {
            let path = bundle.join(root.path());
            if !path.is_dir() {
                crate::rootfs::unmount(&bundle);
                return Err(Error::InvalidArgument(format!(
                    "the container's root filesystem {} does not exist",
                    path.display()
                )));
            }
        }
        // In a wasm pod, a container whose entrypoint is an ELF binary runs natively only if it
        // is the pod's sandbox (pause) container or the configuration allows native; `kind`
        // stays the pod's tier for its other containers.
        let backend = if kind == BackendKind::Wasm && strata_wasm::entrypoint_is_elf(&bundle, &spec)
        {
            let program = spec
                .process()
                .as_ref()
                .and_then(|p| p.args().as_ref())
                .and_then(|a| a.first())
                .map(String::as_str)
                .unwrap_or_default();
            let native = cfg
                .tier_of_elf_in_wasm(program, is_pod_sandbox(&req.id, &annotations))
                .map_err(|e| Error::InvalidArgument(e.to_string()));
            match native.and_then(|kind| self.backend(kind, &cfg)) {
                Ok(b) => b,
                Err(e) => {
                    crate::rootfs::unmount(&bundle);
                    return Err(e);
                }
            }
        } else {
            pod_backend.clone()
        };
        let record = BundleRecord {
            backend: kind.to_string(),
            state_root: cfg.native_state_root(),
        };
        let _ = std::fs::write(
            bundle.join(BUNDLE_RECORD_FILE),
            serde_json::to_vec(&record).unwrap_or_default(),
        );
        let stdio = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let sandbox_id =
            match self.join_sandbox(&req.id, &annotations, &pod_backend, || SandboxOpts {
                sandbox_id: req.id.clone(),
                bundle: bundle.clone(),
                spec: spec.clone(),
                namespace: self.inner.namespace.clone(),
            }) {
                Ok(sandbox_id) => sandbox_id,
                Err(e) => {
                    crate::rootfs::unmount(&bundle);
                    let _ = std::fs::remove_file(bundle.join(BUNDLE_RECORD_FILE));
                    return Err(e);
                }
            };
        let created = backend.create(CreateOpts {
            id: req.id.clone(),
            bundle: bundle.clone(),
            spec,
            stdio: stdio.clone(),
            namespace: self.inner.namespace.clone(),
            config_path: config_path.as_deref().map(PathBuf::from),
            sandbox_id: sandbox_id.clone(),
        });
        let pid = match created {
            Ok(pid) => pid,
            Err(e) => {
                self.leave_sandbox(&req.id, &sandbox_id);
                crate::rootfs::unmount(&bundle);
                let _ = std::fs::remove_file(bundle.join(BUNDLE_RECORD_FILE));
                return Err(e);
            }
        };
        let ctr = Arc::new(Ctr {
            id: req.id.clone(),
            bundle,
            kind,
            backend,
            sandbox_id,
            lifecycle: Mutex::new(()),
            init: Proc::new(stdio, pid),
            execs: Mutex::new(HashMap::new()),
            paused: Mutex::new(false),
        });
        self.inner
            .containers
            .lock()
            .unwrap()
            .insert(req.id.clone(), ctr);
        tracing::info!(id = %req.id, backend = %kind, pid, "created");
        self.inner.events.send(
            TASK_CREATE_EVENT_TOPIC,
            TaskCreate {
                container_id: req.id.clone(),
                bundle: req.bundle.clone(),
                rootfs: req.rootfs.clone(),
                io: Some(TaskIO {
                    stdin: req.stdin.clone(),
                    stdout: req.stdout.clone(),
                    stderr: req.stderr.clone(),
                    terminal: req.terminal,
                    ..Default::default()
                })
                .into(),
                pid,
                ..Default::default()
            },
        );
        Ok(CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }
}

impl Inner {
    fn on_backend_event(inner: &Arc<Inner>, ev: BackendEvent) {
        match ev {
            BackendEvent::Exited {
                container_id,
                exec_id,
                pid,
                status,
            } => {
                let Some(ctr) = inner.containers.lock().unwrap().get(&container_id).cloned() else {
                    return;
                };
                let _l = ctr.lifecycle.lock().unwrap();
                let proc = match &exec_id {
                    None => Some(ctr.init.clone()),
                    Some(e) => ctr.execs.lock().unwrap().get(e).cloned(),
                };
                let Some(proc) = proc else { return };
                let at = now();
                {
                    let mut st = proc.st.lock().unwrap();
                    st.phase = Phase::Stopped;
                    st.exit_status = status;
                    st.exited_at = Some(at.clone());
                }
                proc.exited.notify_all();
                tracing::info!(id = %container_id, exec = ?exec_id, pid, status, "exited");
                inner.events.send(
                    TASK_EXIT_EVENT_TOPIC,
                    TaskExit {
                        container_id: container_id.clone(),
                        id: exec_id.unwrap_or(container_id),
                        pid,
                        exit_status: status,
                        exited_at: Some(at).into(),
                        ..Default::default()
                    },
                );
            }
            BackendEvent::Oom { container_id } => {
                let ctr = inner.containers.lock().unwrap().get(&container_id).cloned();
                // After /tasks/start, like the exit.
                let _l = ctr.as_ref().map(|c| c.lifecycle.lock().unwrap());
                tracing::info!(id = %container_id, "OOM kill");
                inner.events.send(
                    TASK_OOM_EVENT_TOPIC,
                    TaskOOM {
                        container_id,
                        ..Default::default()
                    },
                );
            }
        }
    }
}

impl Task for TaskService {
    fn state(&self, _ctx: &TtrpcContext, req: StateRequest) -> ttrpc::Result<StateResponse> {
        let ctr = self.ctr(&req.id)?;
        let proc = ctr.proc(&req.exec_id)?;
        let st = proc.st.lock().unwrap();
        let status = match st.phase {
            Phase::Created => Status::CREATED,
            Phase::Running if *ctr.paused.lock().unwrap() => Status::PAUSED,
            Phase::Running => Status::RUNNING,
            Phase::Stopped => Status::STOPPED,
        };
        Ok(StateResponse {
            id: req.id.clone(),
            bundle: ctr.bundle.to_string_lossy().into_owned(),
            pid: st.pid,
            status: status.into(),
            stdin: proc.stdio.stdin.clone(),
            stdout: proc.stdio.stdout.clone(),
            stderr: proc.stdio.stderr.clone(),
            terminal: proc.stdio.terminal,
            exit_status: st.exit_status,
            exited_at: st.exited_at.clone().into(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        })
    }

    fn create(
        &self,
        _ctx: &TtrpcContext,
        req: CreateTaskRequest,
    ) -> ttrpc::Result<CreateTaskResponse> {
        let mut tier = None;
        self.do_create(&req, &mut tier).map_err(|e| {
            tracing::warn!(id = %req.id, error = %e, "create failed");
            let tier = tier.map_or("unknown", BackendKind::as_str);
            counters::add(
                "strata_create_failures_total",
                &[("tier", tier), ("reason", e.kind())],
                1.0,
            );
            to_ttrpc(e)
        })
    }

    fn start(&self, _ctx: &TtrpcContext, req: StartRequest) -> ttrpc::Result<StartResponse> {
        let ctr = self.ctr(&req.id)?;
        let proc = ctr.proc(&req.exec_id)?;
        let _l = ctr.lifecycle.lock().unwrap();
        let pid = match ctr.backend.start(&req.id, opt(&req.exec_id)) {
            Ok(pid) => pid,
            Err(e) => {
                // An exec that never ran has ended: its Wait (containerd asks before Start)
                // must return, or it would hold a ttrpc worker forever.
                if !req.exec_id.is_empty() {
                    proc.finish(EXEC_START_FAILED);
                }
                return Err(to_ttrpc(e));
            }
        };
        {
            let mut st = proc.st.lock().unwrap();
            st.pid = pid;
            if st.phase == Phase::Created {
                st.phase = Phase::Running;
            }
        }
        if req.exec_id.is_empty() {
            counters::add(
                "strata_tasks_started_total",
                &[("tier", ctr.kind.as_str())],
                1.0,
            );
            self.inner.events.send(
                TASK_START_EVENT_TOPIC,
                TaskStart {
                    container_id: req.id.clone(),
                    pid,
                    ..Default::default()
                },
            );
        } else {
            self.inner.events.send(
                TASK_EXEC_STARTED_EVENT_TOPIC,
                TaskExecStarted {
                    container_id: req.id.clone(),
                    exec_id: req.exec_id.clone(),
                    pid,
                    ..Default::default()
                },
            );
        }
        Ok(StartResponse {
            pid,
            ..Default::default()
        })
    }

    fn delete(&self, _ctx: &TtrpcContext, req: DeleteRequest) -> ttrpc::Result<DeleteResponse> {
        let ctr = self.ctr(&req.id)?;
        let proc = ctr.proc(&req.exec_id)?;
        let (pid, phase) = {
            let st = proc.st.lock().unwrap();
            (st.pid, st.phase)
        };
        if phase == Phase::Running {
            return Err(err(
                Code::FAILED_PRECONDITION,
                format!(
                    "cannot delete running process {} of {}: kill it first",
                    pid, req.id
                ),
            ));
        }
        ctr.backend
            .delete(&req.id, opt(&req.exec_id))
            .map_err(to_ttrpc)?;
        let (exit_status, exited_at) = {
            let st = proc.st.lock().unwrap();
            match &st.exited_at {
                Some(at) => (st.exit_status, at.clone()),
                // Created but never started: the backend killed it.
                None => (128 + libc::SIGKILL as u32, now()),
            }
        };
        if req.exec_id.is_empty() {
            // Whatever still waits on this container's processes gets an answer.
            ctr.init.finish(exit_status);
            for p in ctr.execs.lock().unwrap().values() {
                p.finish(128 + libc::SIGKILL as u32);
            }
            self.leave_sandbox(&req.id, &ctr.sandbox_id);
            crate::rootfs::unmount(&ctr.bundle);
            crate::bootstrap::forget_bundle(&ctr.bundle);
            self.inner.containers.lock().unwrap().remove(&req.id);
            self.inner.events.send(
                TASK_DELETE_EVENT_TOPIC,
                TaskDelete {
                    container_id: req.id.clone(),
                    pid,
                    exit_status,
                    exited_at: Some(exited_at.clone()).into(),
                    id: req.id.clone(),
                    ..Default::default()
                },
            );
            tracing::info!(id = %req.id, "deleted");
        } else {
            ctr.execs.lock().unwrap().remove(&req.exec_id);
        }
        Ok(DeleteResponse {
            pid,
            exit_status,
            exited_at: Some(exited_at).into(),
            ..Default::default()
        })
    }

    fn pids(&self, _ctx: &TtrpcContext, req: PidsRequest) -> ttrpc::Result<PidsResponse> {
        let ctr = self.ctr(&req.id)?;
        let pids = ctr.backend.pids(&req.id).map_err(to_ttrpc)?;
        Ok(PidsResponse {
            processes: pids
                .into_iter()
                .map(|pid| ProcessInfo {
                    pid,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    fn pause(&self, _ctx: &TtrpcContext, req: PauseRequest) -> ttrpc::Result<Empty> {
        let ctr = self.ctr(&req.id)?;
        ctr.backend.pause(&req.id).map_err(to_ttrpc)?;
        *ctr.paused.lock().unwrap() = true;
        self.inner.events.send(
            TASK_PAUSED_EVENT_TOPIC,
            TaskPaused {
                container_id: req.id.clone(),
                ..Default::default()
            },
        );
        Ok(Empty::new())
    }

    fn resume(&self, _ctx: &TtrpcContext, req: ResumeRequest) -> ttrpc::Result<Empty> {
        let ctr = self.ctr(&req.id)?;
        ctr.backend.resume(&req.id).map_err(to_ttrpc)?;
        *ctr.paused.lock().unwrap() = false;
        self.inner.events.send(
            TASK_RESUMED_EVENT_TOPIC,
            TaskResumed {
                container_id: req.id.clone(),
                ..Default::default()
            },
        );
        Ok(Empty::new())
    }

    fn checkpoint(&self, _ctx: &TtrpcContext, req: CheckpointTaskRequest) -> ttrpc::Result<Empty> {
        let ctr = self.ctr(&req.id)?;
        Err(err(
            Code::UNIMPLEMENTED,
            format!(
                "checkpoint is not supported by Strata's {} backend",
                ctr.kind
            ),
        ))
    }

    fn kill(&self, _ctx: &TtrpcContext, req: KillRequest) -> ttrpc::Result<Empty> {
        let ctr = self.ctr(&req.id)?;
        ctr.backend
            .kill(&req.id, opt(&req.exec_id), req.signal as i32, req.all)
            .map_err(to_ttrpc)?;
        Ok(Empty::new())
    }

    fn exec(&self, _ctx: &TtrpcContext, req: ExecProcessRequest) -> ttrpc::Result<Empty> {
        let ctr = self.ctr(&req.id)?;
        if ctr.execs.lock().unwrap().contains_key(&req.exec_id) {
            return Err(err(
                Code::ALREADY_EXISTS,
                format!("exec {} already exists", req.exec_id),
            ));
        }
        let spec = req.spec.as_ref().ok_or_else(|| {
            err(
                Code::INVALID_ARGUMENT,
                "exec request carries no process spec",
            )
        })?;
        let process: oci_spec::runtime::Process =
            serde_json::from_slice(&spec.value).map_err(|e| {
                err(
                    Code::INVALID_ARGUMENT,
                    format!("malformed exec process spec: {e}"),
                )
            })?;
        let stdio = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        ctr.backend
            .exec(ExecOpts {
                container_id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                process,
                stdio: stdio.clone(),
            })
            .map_err(to_ttrpc)?;
        ctr.execs
            .lock()
            .unwrap()
            .insert(req.exec_id.clone(), Proc::new(stdio, 0));
        self.inner.events.send(
            TASK_EXEC_ADDED_EVENT_TOPIC,
            TaskExecAdded {
                container_id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                ..Default::default()
            },
        );
        Ok(Empty::new())
    }

    fn resize_pty(&self, _ctx: &TtrpcContext, req: ResizePtyRequest) -> ttrpc::Result<Empty> {
        let ctr = self.ctr(&req.id)?;
        ctr.backend
            .resize_pty(&req.id, opt(&req.exec_id), req.width, req.height)
            .map_err(to_ttrpc)?;
        Ok(Empty::new())
    }

    fn close_io(&self, _ctx: &TtrpcContext, req: CloseIORequest) -> ttrpc::Result<Empty> {
        let ctr = self.ctr(&req.id)?;
        if req.stdin {
            ctr.backend
                .close_stdin(&req.id, opt(&req.exec_id))
                .map_err(to_ttrpc)?;
        }
        Ok(Empty::new())
    }

    fn update(&self, _ctx: &TtrpcContext, req: UpdateTaskRequest) -> ttrpc::Result<Empty> {
        let ctr = self.ctr(&req.id)?;
        let any = req
            .resources
            .as_ref()
            .ok_or_else(|| err(Code::INVALID_ARGUMENT, "update carries no resources"))?;
        let resources: oci_spec::runtime::LinuxResources = serde_json::from_slice(&any.value)
            .map_err(|e| err(Code::INVALID_ARGUMENT, format!("malformed resources: {e}")))?;
        ctr.backend.update(&req.id, &resources).map_err(to_ttrpc)?;
        Ok(Empty::new())
    }

    fn wait(&self, _ctx: &TtrpcContext, req: WaitRequest) -> ttrpc::Result<WaitResponse> {
        let ctr = self.ctr(&req.id)?;
        let proc = ctr.proc(&req.exec_id)?;
        let mut st = proc.st.lock().unwrap();
        while st.phase != Phase::Stopped {
            st = proc
                .exited
                .wait_timeout(st, Duration::from_secs(60))
                .unwrap()
                .0;
        }
        Ok(WaitResponse {
            exit_status: st.exit_status,
            exited_at: st.exited_at.clone().into(),
            ..Default::default()
        })
    }

    fn stats(&self, _ctx: &TtrpcContext, req: StatsRequest) -> ttrpc::Result<StatsResponse> {
        let ctr = self.ctr(&req.id)?;
        let stats = ctr.backend.stats(&req.id).map_err(to_ttrpc)?;
        let any = crate::metrics::to_any(&stats)
            .map_err(|e| err(Code::INTERNAL, format!("encode metrics: {e}")))?;
        Ok(StatsResponse {
            stats: Some(any).into(),
            ..Default::default()
        })
    }

    fn connect(&self, _ctx: &TtrpcContext, req: ConnectRequest) -> ttrpc::Result<ConnectResponse> {
        let task_pid = self
            .ctr(&req.id)
            .map(|c| c.init.st.lock().unwrap().pid)
            .unwrap_or(0);
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            ..Default::default()
        })
    }

    fn shutdown(&self, _ctx: &TtrpcContext, _req: ShutdownRequest) -> ttrpc::Result<Empty> {
        if self.inner.containers.lock().unwrap().is_empty() {
            self.inner.exit.signal();
        }
        Ok(Empty::new())
    }
}
