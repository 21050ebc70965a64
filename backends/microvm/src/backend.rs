//! The microvm tier's [`Backend`]: one VM per pod ([`PodVm`], the pod's [`Sandbox`]), its
//! containers created and driven by the guest agent.
//!
//! - `create_sandbox` boots the VM (the configured driver), waits until the agent answers
//!   within `boot_timeout_secs`, and starts a thread that turns the agent's OOM notices into
//!   events. A VM that does not come up is stopped and leaves nothing.
//! - `create` binds the container's rootfs and mount sources into the pod's shared directory
//!   ([`crate::guest_spec`]), asks the agent to create it with its stdio streamed over vsock,
//!   and copies the streams to and from containerd's FIFOs.
//! - `start` starts it and a thread that waits (in bounded `Wait` calls) for its exit.
//! - The sandbox's `shutdown` (the pod's last container is gone) asks the agent to power the
//!   VM off, then stops the VM's processes whatever the guest does.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata_agent_protocol::client::{Agent, ClientError};
use strata_agent_protocol::proto::agent::{
    ConfigureNetworkRequest, Interface, Route as AgentRoute, Stdio as AgentStdio,
};
use strata_agent_protocol::AGENT_VSOCK_PORT;

use crate::network::{pod_netns, PodNetwork};
use strata_backend::{
    chain, sanitize, Backend, BackendEvent, BackendKind, CreateOpts, Error, EventSink, ExecOpts,
    Result, Sandbox, SandboxOpts, Stats, StdioPaths,
};

use crate::hypervisor::{Accel, Hypervisor, Vm, VmSpec};
use crate::settings::Settings;
use crate::{guest_spec, Error as VmError};

/// Deadline of one agent call.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one `Wait` call may block before it is asked again.
const WAIT_SLICE: Duration = Duration::from_secs(10);
/// How long the guest may take to power off before its processes are killed.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long one boot-time try to reach the agent may take.
const CONNECT_TRY: Duration = Duration::from_secs(3);
/// How often the pod's watchdog looks at its VM.
const HEALTH_EVERY: Duration = Duration::from_secs(2);

fn agent_err(what: &str, e: ClientError) -> Error {
    let code = match &e {
        ClientError::Call {
            source: ttrpc::Error::RpcStatus(s),
            ..
        } => Some(s.code()),
        _ => None,
    };
    // The agent's own message as it wrote it (a status's Debug form would escape its quotes).
    let msg = match &e {
        ClientError::Call {
            source: ttrpc::Error::RpcStatus(s),
            ..
        } => format!("{what}: {}", s.message()),
        _ => format!("{what}: {}", chain(&e)),
    };
    match code {
        Some(ttrpc::Code::NOT_FOUND) => Error::NotFound(msg),
        Some(ttrpc::Code::INVALID_ARGUMENT) => Error::InvalidArgument(msg),
        Some(ttrpc::Code::FAILED_PRECONDITION) => Error::FailedPrecondition(msg),
        Some(ttrpc::Code::ALREADY_EXISTS) => Error::AlreadyExists(msg),
        _ => Error::Other(msg),
    }
}

/// Whether a blocking call only ran out of time: the agent's "not yet", or the client's own
/// timeout when the answer was late (a busy or emulated guest).
fn is_deadline(e: &ClientError) -> bool {
    match e {
        ClientError::Call {
            source: ttrpc::Error::RpcStatus(s),
            ..
        } => s.code() == ttrpc::Code::DEADLINE_EXCEEDED,
        ClientError::Call {
            source: ttrpc::Error::Others(m),
            ..
        } => m.starts_with("Receive packet from Receiver timeout"),
        _ => false,
    }
}

fn vm_err(e: VmError) -> Error {
    match e {
        VmError::NoAccelerator(m) => Error::Unavailable {
            backend: BackendKind::Microvm,
            reason: m,
        },
        VmError::MissingTool { .. } | VmError::MissingImage { .. } => Error::Unavailable {
            backend: BackendKind::Microvm,
            reason: e.to_string(),
        },
        other => Error::Other(other.to_string()),
    }
}

/// A pod's VM: the pod's sandbox.
pub struct PodVm {
    id: String,
    vm: Box<dyn Vm>,
    agent: Arc<Agent>,
    state: PathBuf,
    shared: PathBuf,
    cgroups: Vec<PathBuf>,
    stopped: AtomicBool,
    /// The guest PID of the sandbox container's init, once started (0 before).
    init_pid: AtomicU32,
    /// Held while [`PodVm::fail`] tears the pod down.
    tearing_down: Mutex<()>,
    /// The pod network's redirects in the pod's network namespace, if it has one.
    network: Mutex<Option<PodNetwork>>,
}

impl PodVm {
    fn stop(&self) -> Result<()> {
        if self.stopped.swap(true, Ordering::SeqCst) {
            // Failed meanwhile ([`PodVm::fail`]): its tear-down may still run on the watchdog's
            // thread; the pod is gone only when that is done (the shim may exit next).
            drop(self.tearing_down.lock());
            return Ok(());
        }
        // The guest powers off after answering; the driver kills whatever remains.
        let _ = self.agent.shutdown_within(SHUTDOWN_GRACE);
        self.tear_down(SHUTDOWN_GRACE)
    }

    /// The pod cannot go on (its VM ended on its own, or its agent stopped answering): the VM
    /// and its helpers are killed without asking the agent, and every container's wait ends
    /// with the VM (137). Containerd's deletes then find nothing left to do in it.
    fn fail(&self, why: &str) {
        let _tearing_down = self.tearing_down.lock();
        if self.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        tracing::error!(
            sandbox = %self.id,
            "{why}: the pod's VM is stopped and its containers are reported killed"
        );
        // One record per console line, each naming the pod, as a log search by pod finds them.
        for line in self.vm.console_tail().lines() {
            tracing::error!(sandbox = %self.id, "guest console: {line}");
        }
        let _ = self.tear_down(Duration::ZERO);
    }

    /// Whether the VM has ended without being stopped (a guest panic, a killed QEMU); if so,
    /// the pod is failed, once, with the console's last lines in the log.
    fn ended_on_its_own(&self) -> bool {
        if self.vm.is_running() {
            return false;
        }
        self.fail("the pod's VM ended on its own (see the console's last lines)");
        true
    }

    fn tear_down(&self, grace: Duration) -> Result<()> {
        let r = self.vm.stop(grace);
        if let Some(mut net) = self
            .network
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            net.detach();
        }
        let _ = crate::share::release(&self.shared);
        // The pod's directory (`vm/` and `shared/`), then its namespace's if that was the last.
        if let Some(dir) = self.state.parent() {
            let _ = std::fs::remove_dir_all(dir);
            if let Some(ns) = dir.parent() {
                let _ = std::fs::remove_dir(ns);
            }
        }
        crate::process::remove_cgroups(&self.cgroups);
        tracing::info!(sandbox = %self.id, "VM stopped");
        r.map_err(vm_err)
    }
}

impl Sandbox for PodVm {
    fn id(&self) -> &str {
        &self.id
    }
    fn shutdown(&self) -> Result<()> {
        self.stop()
    }
}

/// Copies between containerd's FIFOs and a process's streams.
struct Io {
    stdin_closed: Arc<AtomicBool>,
    copiers: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Io {
    fn new() -> Io {
        Io {
            stdin_closed: Arc::new(AtomicBool::new(false)),
            copiers: Mutex::new(Vec::new()),
        }
    }

    /// Ends stdin after what containerd already wrote into the FIFO: the copier drains the
    /// FIFO, then shuts the stream for writing (the process reads end-of-file).
    fn close_stdin(&self) {
        self.stdin_closed.store(true, Ordering::SeqCst);
    }

    /// Waits for stdout/stderr to be copied out (they end when the process's holders close
    /// them; the VM's end also ends them).
    fn drain(&self) {
        let handles: Vec<_> = self.copiers.lock().unwrap().drain(..).collect();
        for h in handles {
            let _ = h.join();
        }
    }
}

fn open_fifo_rw(path: &str) -> std::io::Result<File> {
    OpenOptions::new().read(true).write(true).open(path)
}

/// Connects the process's streams announced in `ports` and starts the copies.
fn attach(
    agent: &Agent,
    paths: &StdioPaths,
    ports: (u32, u32, u32),
    io: &Io,
) -> std::result::Result<(), String> {
    let (stdin_port, stdout_port, stderr_port) = ports;
    let mut out = Vec::new();
    for (port, path) in [(stdout_port, &paths.stdout), (stderr_port, &paths.stderr)] {
        if port == 0 || path.is_empty() {
            continue;
        }
        let stream = agent
            .open_stream(port)
            .map_err(|e| format!("connecting stream port {port}: {}", chain(&e)))?;
        // A FIFO as ctr and CRI give, or a file (`ctr run --log-uri file://...`).
        let sink = strata_backend::stdio::open_output(path)
            .map_err(|e| chain(&e))?
            .map(File::from)
            .ok_or_else(|| format!("no output at {path:?}"))?;
        out.push((stream, sink));
    }
    let stdin = if stdin_port != 0 && !paths.stdin.is_empty() {
        let stream = agent
            .open_stream(stdin_port)
            .map_err(|e| format!("connecting stdin port {stdin_port}: {}", chain(&e)))?;
        let fifo =
            open_fifo_rw(&paths.stdin).map_err(|e| format!("opening {}: {e}", paths.stdin))?;
        Some((stream, fifo))
    } else {
        None
    };
    for (mut stream, mut fifo) in out {
        let h = std::thread::spawn(move || {
            let _ = std::io::copy(&mut stream, &mut fifo);
        });
        io.copiers.lock().unwrap().push(h);
    }
    if let Some((mut stream, mut fifo)) = stdin {
        let closed = io.stdin_closed.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 16 * 1024];
            loop {
                // Poll, so that CloseIO ends this thread although the FIFO (opened read-write,
                // as containerd's writer may come and go) never reads end-of-file. Once it is
                // closed, what is still in the FIFO is copied (no wait), then the stream ends.
                let closing = closed.load(Ordering::SeqCst);
                let wait = if closing { 0u16 } else { 200u16 };
                let mut fds = [nix::poll::PollFd::new(
                    fifo.as_fd(),
                    nix::poll::PollFlags::POLLIN,
                )];
                match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(wait)) {
                    Ok(0) if closing => break,
                    Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
                    Err(_) => break,
                    Ok(_) => {}
                }
                match fifo.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if stream.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = stream.close_write();
        });
    }
    Ok(())
}

fn stream_request(paths: &StdioPaths) -> AgentStdio {
    AgentStdio {
        terminal: paths.terminal,
        stream_stdin: !paths.stdin.is_empty(),
        stream_stdout: !paths.stdout.is_empty(),
        // With a terminal, the pty carries both.
        stream_stderr: !paths.stderr.is_empty() && !paths.terminal,
        ..Default::default()
    }
}

struct Process {
    io: Io,
}

struct Container {
    pod: Arc<PodVm>,
    /// The host pid reported for the container's processes: the VMM's.
    host_pid: u32,
    procs: Mutex<HashMap<String, Arc<Process>>>,
    /// The spec's OCI hooks, run on the host (`strata_backend::hooks`), and what their state
    /// says.
    hooks: Option<oci_spec::runtime::Hooks>,
    bundle: std::path::PathBuf,
    annotations: Option<HashMap<String, String>>,
}

impl Container {
    /// Runs the spec's hooks of one kind (`which` picks them) on the host with the
    /// container's state; poststart and poststop failures are only logged, as the OCI
    /// runtime spec says.
    fn run_hooks(
        &self,
        id: &str,
        kind: &str,
        status: &str,
        which: fn(&oci_spec::runtime::Hooks) -> &Option<Vec<oci_spec::runtime::Hook>>,
    ) -> Result<()> {
        let Some(hooks) = self.hooks.as_ref().and_then(|h| which(h).as_ref()) else {
            return Ok(());
        };
        let state = strata_backend::hooks::state_json(
            id,
            status,
            self.host_pid,
            &self.bundle,
            self.annotations.as_ref(),
        );
        match strata_backend::hooks::run(hooks, &state) {
            Ok(()) => Ok(()),
            Err(e) if matches!(kind, "poststart" | "poststop") => {
                tracing::warn!(id, kind, error = %e, "OCI hook failed");
                Ok(())
            }
            Err(e) => Err(Error::FailedPrecondition(format!("{kind} {e}"))),
        }
    }
}

/// The pods' VMs by sandbox id.
type Pods = Arc<Mutex<HashMap<String, Arc<PodVm>>>>;

/// The microvm tier.
pub struct MicrovmBackend {
    settings: Settings,
    hypervisor: Box<dyn Hypervisor>,
    events: EventSink,
    pods: Pods,
    containers: Mutex<HashMap<String, Arc<Container>>>,
}

impl MicrovmBackend {
    pub fn new(settings: Settings, hypervisor: Box<dyn Hypervisor>, events: EventSink) -> Self {
        MicrovmBackend {
            settings,
            hypervisor,
            events,
            pods: Pods::default(),
            containers: Mutex::new(HashMap::new()),
        }
    }

    fn ctr(&self, id: &str) -> Result<Arc<Container>> {
        self.containers
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("container {id}")))
    }

    fn pod_dir(&self, namespace: &str, sandbox_id: &str) -> PathBuf {
        pod_dir(&self.settings.state_dir, namespace, sandbox_id)
    }

    fn boot(&self, opts: &SandboxOpts) -> Result<Arc<PodVm>> {
        let annotations = opts.spec.annotations().clone().unwrap_or_default();
        let (vcpus, memory_mib) = self
            .settings
            .sizing(&annotations)
            .map_err(Error::InvalidArgument)?;
        for (what, path) in [
            ("kernel", &self.settings.kernel),
            ("initramfs", &self.settings.initrd),
        ] {
            if !path.is_file() {
                return Err(Error::Unavailable {
                    backend: BackendKind::Microvm,
                    reason: format!(
                        "the guest {what} {} does not exist (set [microvm] {} in the \
                         configuration; scripts/build-guest-kernel and scripts/build-initramfs \
                         build them)",
                        path.display(),
                        if what == "kernel" { "kernel" } else { "initrd" }
                    ),
                });
            }
        }
        if shares_the_hosts_network(&opts.spec) {
            return Err(Error::InvalidArgument(
                "the pod asks for the node's network (hostNetwork, `ctr run --net-host`: no \
                 network namespace in its spec), which a VM cannot share: run it on another \
                 RuntimeClass, or give it a network namespace"
                    .into(),
            ));
        }
        let dir = self.pod_dir(&opts.namespace, &opts.sandbox_id);
        if dir.exists() {
            return Err(Error::AlreadyExists(format!(
                "a VM for pod {} ({})",
                opts.sandbox_id,
                dir.display()
            )));
        }
        let state = dir.join("vm");
        let shared = dir.join("shared");
        for d in [&state, &shared] {
            std::fs::create_dir_all(d)
                .map_err(|e| Error::io(format!("create {}", d.display()), e))?;
        }
        let _ = std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700));
        // Where the pod lives, for `cleanup_orphan` after a shim SIGKILL: the dead shim's
        // configuration (its `state_dir`) is not known to containerd's `delete`.
        let _ = std::fs::write(
            opts.bundle.join(POD_DIR_RECORD),
            dir.as_os_str().as_encoded_bytes(),
        );
        let cgroups = pod_cgroups(&opts.spec);
        if let Some(limit) = pod_memory_limit(&cgroups) {
            let guest = u64::from(memory_mib) << 20;
            if limit < guest {
                crate::process::remove_cgroups(&cgroups);
                let _ = std::fs::remove_dir_all(&dir);
                if let Some(ns) = dir.parent() {
                    let _ = std::fs::remove_dir(ns);
                }
                return Err(Error::InvalidArgument(format!(
                    "the pod's memory limit ({} MiB, its cgroup's) is below its VM's guest memory \
                     ({memory_mib} MiB), so the host would OOM-kill the VM: give the pod more \
                     memory, or its RuntimeClass an overhead that covers the VM (docs/microvm.md, \
                     \"Sizing a pod\")",
                    limit >> 20
                )));
            }
        }
        let mut network = match pod_netns(&opts.spec).map(|ns| crate::network::attach(&ns, &dir)) {
            Some(Ok(n)) => n,
            Some(Err(e)) => {
                let _ = std::fs::remove_dir_all(&dir);
                if let Some(ns) = dir.parent() {
                    let _ = std::fs::remove_dir(ns);
                }
                crate::process::remove_cgroups(&cgroups);
                return Err(Error::Other(format!("the pod network: {e}")));
            }
            None => None,
        };
        let spec = VmSpec {
            id: opts.sandbox_id.clone(),
            state_dir: state.clone(),
            kernel: self.settings.kernel.clone(),
            initrd: self.settings.initrd.clone(),
            vcpus,
            memory_mib,
            shared_dir: shared.clone(),
            cgroups: cgroups.clone(),
            allow_tcg: self.settings.allow_tcg,
            extra_cmdline: self.settings.kernel_params.clone(),
            taps: network.as_ref().map(PodNetwork::taps).unwrap_or_default(),
        };
        let cleanup = |network: &mut Option<PodNetwork>| {
            if let Some(net) = network.as_mut() {
                net.detach();
            }
            let _ = crate::share::release(&shared);
            let _ = std::fs::remove_dir_all(&dir);
            if let Some(ns) = dir.parent() {
                let _ = std::fs::remove_dir(ns);
            }
            crate::process::remove_cgroups(&cgroups);
        };
        let t0 = Instant::now();
        let vm = match self.hypervisor.start(&spec) {
            Ok(vm) => vm,
            Err(e) => {
                cleanup(&mut network);
                return Err(vm_err(e));
            }
        };
        // The VMM holds its own descriptors: a tap now goes away with it.
        if let Some(net) = network.as_mut() {
            net.release_taps();
        }
        if vm.accel() == Accel::Tcg {
            tracing::warn!(
                sandbox = %opts.sandbox_id,
                "pod VM runs under QEMU TCG (emulation): no security boundary; allowed by [microvm] allow_tcg"
            );
        }
        let deadline = t0 + self.settings.boot_timeout();
        let agent = loop {
            // No CONNECT before the guest says its agent serves (AGENT_SERVING_MARKER says
            // why); then each try with a short deadline, so that a CONNECT sent just before
            // the agent listens does not hold the boot for a call's deadline.
            let failed = if vm.agent_announced() {
                match Agent::connect_hybrid_vsock(vm.vsock_socket(), AGENT_VSOCK_PORT, CONNECT_TRY)
                {
                    Ok(a) => break a.with_call_timeout(CALL_TIMEOUT),
                    Err(e) => chain(&e),
                }
            } else {
                "the guest console never showed the agent serving".to_string()
            };
            let why = if !vm.is_running() {
                Some(format!(
                    "the VM stopped before its agent answered ({failed})"
                ))
            } else if Instant::now() >= deadline {
                Some(format!(
                    "its agent did not answer within {} s ({failed})",
                    self.settings.boot_timeout_secs
                ))
            } else {
                None
            };
            if let Some(reason) = why {
                let tail = vm.console_tail();
                let _ = vm.stop(Duration::ZERO);
                cleanup(&mut network);
                return Err(Error::Other(
                    VmError::Boot {
                        reason,
                        console_tail: tail,
                    }
                    .to_string(),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if let Some(net) = &network {
            if let Err(e) = agent.configure_network(&network_request(net)) {
                let _ = vm.stop(Duration::ZERO);
                cleanup(&mut network);
                return Err(agent_err("configuring the pod network in the VM", e));
            }
        }
        let boot = t0.elapsed();
        tracing::info!(
            sandbox = %opts.sandbox_id,
            driver = vm.driver(),
            accel = %vm.accel(),
            vcpus,
            memory_mib,
            boot_ms = boot.as_millis() as u64,
            "VM booted, agent answers"
        );
        let accel = vm.accel().to_string();
        let labels = [("driver", vm.driver()), ("accel", accel.as_str())];
        strata_backend::counters::add("strata_microvm_boots_total", &labels, 1.0);
        strata_backend::counters::add(
            "strata_microvm_boot_seconds_total",
            &labels,
            boot.as_secs_f64(),
        );
        let pod = Arc::new(PodVm {
            id: opts.sandbox_id.clone(),
            vm,
            agent: Arc::new(agent),
            state,
            shared,
            cgroups,
            stopped: AtomicBool::new(false),
            init_pid: AtomicU32::new(0),
            tearing_down: Mutex::new(()),
            network: Mutex::new(network),
        });
        self.watch_oom(&pod);
        self.watch_health(&pod);
        Ok(pod)
    }

    /// The pod's watchdog: a VM that ends on its own (a guest panic, a killed QEMU) or an agent
    /// that answers no `Ping` for `agent_dead_after_secs` fails the pod ([`PodVm::fail`]), so
    /// that no container waits for ever on a guest that is gone or hung.
    fn watch_health(&self, pod: &Arc<PodVm>) {
        let weak = Arc::downgrade(pod);
        let dead_after = self.settings.agent_dead_after();
        // A ping a sixth of the allowed silence apart (10 s for the default 60 s), at least
        // HEALTH_EVERY: the agent's channel carries the pod's calls and streams.
        let ping_every = dead_after.map(|d| (d / 6).max(HEALTH_EVERY));
        std::thread::spawn(move || {
            let mut answered = Instant::now();
            let mut pinged = Instant::now();
            loop {
                std::thread::sleep(HEALTH_EVERY);
                let Some(pod) = weak.upgrade() else { return };
                if pod.stopped.load(Ordering::SeqCst) {
                    return;
                }
                if pod.ended_on_its_own() {
                    return;
                }
                let (Some(dead_after), Some(ping_every)) = (dead_after, ping_every) else {
                    continue;
                };
                if pinged.elapsed() < ping_every {
                    continue;
                }
                pinged = Instant::now();
                match pod
                    .agent
                    .ping_within(HEALTH_EVERY.max(Duration::from_secs(5)))
                {
                    Ok(_) => answered = Instant::now(),
                    Err(e) if answered.elapsed() >= dead_after => {
                        // Stopped meanwhile (the pod's delete): not a failure.
                        if !pod.stopped.load(Ordering::SeqCst) {
                            pod.fail(&format!(
                                "the guest agent answered no health check for {} s (last: {})",
                                dead_after.as_secs(),
                                chain(&e)
                            ));
                        }
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(sandbox = %pod.id, error = %chain(&e), "guest agent health check")
                    }
                }
            }
        });
    }

    /// The agent's OOM notices, as events, until the VM stops.
    fn watch_oom(&self, pod: &Arc<PodVm>) {
        let weak = Arc::downgrade(pod);
        let events = self.events.clone();
        std::thread::spawn(move || loop {
            let Some(pod) = weak.upgrade() else { return };
            if pod.stopped.load(Ordering::SeqCst) {
                return;
            }
            let agent = pod.agent.clone();
            drop(pod);
            match agent.oom_event(Duration::from_secs(2)) {
                Ok(Some(id)) => events(BackendEvent::Oom { container_id: id }),
                Ok(None) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        });
    }

    /// Waits (in slices) for the process to exit and reports it.
    fn watch_exit(
        &self,
        id: &str,
        exec_id: Option<&str>,
        ctr: &Arc<Container>,
        proc: Arc<Process>,
    ) {
        let events = self.events.clone();
        let agent = ctr.pod.agent.clone();
        let pod = ctr.pod.clone();
        let pid = ctr.host_pid;
        let id = id.to_string();
        let exec = exec_id.map(str::to_string);
        std::thread::spawn(move || {
            let e = exec.clone().unwrap_or_default();
            let status = loop {
                match agent.wait(&id, &e, WAIT_SLICE) {
                    Ok(s) => break s,
                    Err(err) if is_deadline(&err) => continue,
                    Err(err) => {
                        if pod.stopped.load(Ordering::SeqCst) || pod.ended_on_its_own() {
                            // The VM is gone: so is the process.
                            break 128 + libc::SIGKILL as u32;
                        }
                        tracing::warn!(id = %id, error = %chain(&err), "waiting for a process in the VM");
                        std::thread::sleep(Duration::from_millis(500));
                    }
                }
            };
            proc.io.drain();
            events(BackendEvent::Exited {
                container_id: id,
                exec_id: exec,
                pid,
                status,
            });
        });
    }
}

/// A pod's directory: `<state>/<namespace>/<id>`, the id shortened to a digest when it is
/// long (CRI's are 64 characters), since the sockets inside must fit `sun_path` (107 bytes).
fn pod_dir(state_root: &Path, namespace: &str, sandbox_id: &str) -> PathBuf {
    let id = sanitize(sandbox_id);
    let id = if id.len() > 24 {
        use sha2::Digest;
        let d = sha2::Sha256::digest(sandbox_id.as_bytes());
        d[..8].iter().map(|b| format!("{b:02x}")).collect()
    } else {
        id
    };
    state_root.join(sanitize(namespace)).join(id)
}

/// What the agent needs of the pod network: the links' MAC addresses, MTUs, addresses, and
/// the routes.
fn network_request(net: &PodNetwork) -> ConfigureNetworkRequest {
    ConfigureNetworkRequest {
        interfaces: net
            .links
            .iter()
            .map(|l| Interface {
                mac: l.mac.clone(),
                mtu: l.mtu,
                addresses: l.addresses.clone(),
                ..Default::default()
            })
            .collect(),
        routes: net
            .routes
            .iter()
            .map(|r| AgentRoute {
                destination: r.destination.clone(),
                gateway: r.gateway.clone(),
                mac: r.mac.clone(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// Whether the spec runs in the host's network namespace: it lists no network namespace.
fn shares_the_hosts_network(spec: &oci_spec::runtime::Spec) -> bool {
    !spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| {
            ns.iter()
                .any(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Network)
        })
}

/// The lowest memory limit over the VM's memory cgroup and its ancestors (the kubelet limits
/// the pod's cgroup, a parent of the sandbox container's), if any is set.
fn pod_memory_limit(cgroups: &[PathBuf]) -> Option<u64> {
    let root = Path::new("/sys/fs/cgroup");
    let (dir, file, top) = cgroups.iter().find_map(|d| {
        if d.starts_with(root.join("memory")) {
            Some((d, "memory.limit_in_bytes", root.join("memory")))
        } else if root.join("cgroup.controllers").exists() && d.starts_with(root) {
            Some((d, "memory.max", root.to_path_buf()))
        } else {
            None
        }
    })?;
    dir.ancestors()
        .take_while(|a| a.starts_with(&top) && *a != top.as_path())
        .filter_map(|a| std::fs::read_to_string(a.join(file)).ok())
        .filter_map(|v| v.trim().parse::<u64>().ok())
        // v1's "no limit" is the largest page-aligned i64.
        .filter(|&v| v < 1 << 62)
        .min()
}

/// The v1 hierarchies a pod's VM joins on a v1 or hybrid host: what accounts for and limits a
/// VM's host processes (cpuset is left out: a new cpuset cgroup has no CPUs until set).
const V1_CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];

/// The host cgroups the VM's processes join: the sandbox container's cgroup path, in the
/// unified hierarchy on a cgroup v2 host, else in each v1 hierarchy of [`V1_CONTROLLERS`] this
/// host mounts (a hybrid host's unified hierarchy has no controllers). A cgroupfs path (`/a/b`)
/// is taken as it is; a systemd one (`slice:prefix:name`, what containerd passes under the
/// systemd cgroup driver) becomes the directory systemd gives that unit
/// ([`systemd_cgroup_dir`]), made through cgroupfs (no systemd is asked: Strata's shim does
/// not talk to systemd).
fn pod_cgroups(spec: &oci_spec::runtime::Spec) -> Vec<PathBuf> {
    let Some(path) = spec.linux().as_ref().and_then(|l| l.cgroups_path().clone()) else {
        return Vec::new();
    };
    let rel = match path.strip_prefix("/") {
        Ok(rel)
            if rel
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_))) =>
        {
            rel.to_path_buf()
        }
        Ok(_) => {
            tracing::warn!(path = %path.display(), "a cgroup path with '..': the VM joins no pod cgroup");
            return Vec::new();
        }
        Err(_) => match path.to_str().map(systemd_cgroup_dir) {
            Some(Ok(dir)) => dir,
            Some(Err(why)) => {
                tracing::warn!(path = %path.display(), %why, "the VM joins no pod cgroup");
                return Vec::new();
            }
            None => return Vec::new(),
        },
    };
    let root = Path::new("/sys/fs/cgroup");
    let roots: Vec<PathBuf> = if root.join("cgroup.controllers").exists() {
        vec![root.to_path_buf()]
    } else {
        V1_CONTROLLERS
            .iter()
            .map(|c| root.join(c))
            .filter(|d| d.join("cgroup.procs").exists())
            .collect()
    };
    roots
        .into_iter()
        .map(|r| r.join(&rel))
        .filter(|d| std::fs::create_dir_all(d).is_ok())
        .collect()
}

/// The cgroup directory (relative to a hierarchy's root) that systemd gives the unit of a
/// systemd-style cgroup path `slice:prefix:name`, as runc's systemd driver computes it: the
/// slice expanded into its parents (`kubepods-besteffort-pod1.slice` is
/// `kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice`; an empty slice is
/// `system.slice`, `-.slice` the root), then the unit `prefix-name.scope` (or `name` itself when
/// it is a slice).
pub fn systemd_cgroup_dir(path: &str) -> std::result::Result<PathBuf, String> {
    let parts: Vec<&str> = path.split(':').collect();
    let [slice, prefix, name] = parts[..] else {
        return Err(format!("{path:?} is not slice:prefix:name"));
    };
    let slice = if slice.is_empty() {
        "system.slice"
    } else {
        slice
    };
    let Some(stem) = slice.strip_suffix(".slice") else {
        return Err(format!("{slice:?} is not a slice (it must end in .slice)"));
    };
    if stem.contains('/') || name.is_empty() || name.contains('/') || prefix.contains('/') {
        return Err(format!("{path:?} holds a '/' or no name"));
    }
    let mut dir = PathBuf::new();
    if stem != "-" {
        let mut so_far = String::new();
        for part in stem.split('-') {
            if part.is_empty() {
                return Err(format!("{slice:?} has an empty component"));
            }
            if !so_far.is_empty() {
                so_far.push('-');
            }
            so_far.push_str(part);
            dir.push(format!("{so_far}.slice"));
        }
    }
    if name.ends_with(".slice") {
        dir.push(name);
    } else if prefix.is_empty() {
        dir.push(format!("{name}.scope"));
    } else {
        dir.push(format!("{prefix}-{name}.scope"));
    }
    Ok(dir)
}

impl Backend for MicrovmBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Microvm
    }

    fn create_sandbox(&self, opts: &SandboxOpts) -> Result<Arc<dyn Sandbox>> {
        let pod = self.boot(opts)?;
        self.pods
            .lock()
            .unwrap()
            .insert(opts.sandbox_id.clone(), pod.clone());
        Ok(Arc::new(SandboxHandle {
            pod,
            pods: self.pods.clone(),
        }))
    }

    fn create(&self, opts: CreateOpts) -> Result<u32> {
        if self.containers.lock().unwrap().contains_key(&opts.id) {
            return Err(Error::AlreadyExists(format!("container {}", opts.id)));
        }
        let pod = self
            .pods
            .lock()
            .unwrap()
            .get(&opts.sandbox_id)
            .cloned()
            .ok_or_else(|| {
                Error::FailedPrecondition(format!(
                    "the VM of pod {} is not running in this shim",
                    opts.sandbox_id
                ))
            })?;
        // The pod's other containers join the namespaces of its sandbox container's init.
        let pod_init =
            Some(pod.init_pid.load(Ordering::SeqCst)).filter(|&p| p != 0 && opts.id != pod.id);
        guest_spec::prepare(&pod.shared, &opts.id, &opts.bundle, &opts.spec, pod_init).map_err(
            |e| Error::InvalidArgument(format!("preparing {} for the VM: {e}", opts.id)),
        )?;
        let created = pod.agent.create_container(
            &opts.id,
            &guest_spec::guest_bundle(&opts.id),
            stream_request(&opts.stdio),
        );
        let resp = match created {
            Ok(r) => r,
            Err(e) => {
                guest_spec::remove(&pod.shared, &opts.id);
                return Err(agent_err(&format!("creating {} in the VM", opts.id), e));
            }
        };
        let ports = resp.stdio_ports.clone().unwrap_or_default();
        let ports = (ports.stdin, ports.stdout, ports.stderr);
        let io = Io::new();
        if let Err(e) = attach(&pod.agent, &opts.stdio, ports, &io) {
            let _ = pod.agent.delete(&opts.id, "");
            guest_spec::remove(&pod.shared, &opts.id);
            return Err(Error::Other(format!("stdio of {}: {e}", opts.id)));
        }
        let host_pid = pod.vm.host_pids().first().copied().unwrap_or(0);
        let init = Arc::new(Process { io });
        let ctr = Arc::new(Container {
            pod,
            host_pid,
            procs: Mutex::new(HashMap::from([(String::new(), init)])),
            hooks: opts.spec.hooks().clone(),
            bundle: opts.bundle.clone(),
            annotations: opts.spec.annotations().clone(),
        });
        // createRuntime and prestart (deprecated, the same moment): on the host, once the
        // container exists; a failure fails the create and removes it.
        #[allow(deprecated)]
        let created = ctr
            .run_hooks(&opts.id, "createRuntime", "created", |h| h.create_runtime())
            .and_then(|()| ctr.run_hooks(&opts.id, "prestart", "created", |h| h.prestart()));
        if let Err(e) = created {
            let _ = ctr.pod.agent.delete(&opts.id, "");
            guest_spec::remove(&ctr.pod.shared, &opts.id);
            return Err(e);
        }
        self.containers.lock().unwrap().insert(opts.id, ctr);
        Ok(host_pid)
    }

    fn start(&self, id: &str, exec_id: Option<&str>) -> Result<u32> {
        let ctr = self.ctr(id)?;
        let key = exec_id.unwrap_or_default();
        let proc = ctr
            .procs
            .lock()
            .unwrap()
            .get(key)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("exec {key} in container {id}")))?;
        let guest_pid = ctr
            .pod
            .agent
            .start(id, key)
            .map_err(|e| agent_err(&format!("starting {id} in the VM"), e))?;
        if exec_id.is_none() && id == ctr.pod.id {
            ctr.pod.init_pid.store(guest_pid, Ordering::SeqCst);
        }
        self.watch_exit(id, exec_id, &ctr, proc);
        if exec_id.is_none() {
            ctr.run_hooks(id, "poststart", "running", |h| h.poststart())?;
        }
        Ok(ctr.host_pid)
    }

    fn exec(&self, opts: ExecOpts) -> Result<()> {
        let ctr = self.ctr(&opts.container_id)?;
        if ctr.procs.lock().unwrap().contains_key(&opts.exec_id) {
            return Err(Error::AlreadyExists(format!(
                "exec {} in container {}",
                opts.exec_id, opts.container_id
            )));
        }
        let json = serde_json::to_string(&opts.process)
            .map_err(|e| Error::InvalidArgument(format!("exec process: {e}")))?;
        let ports = ctr
            .pod
            .agent
            .exec(
                &opts.container_id,
                &opts.exec_id,
                &json,
                stream_request(&opts.stdio),
            )
            .map_err(|e| agent_err(&format!("exec in {}", opts.container_id), e))?;
        let ports = (ports.stdin, ports.stdout, ports.stderr);
        let io = Io::new();
        if let Err(e) = attach(&ctr.pod.agent, &opts.stdio, ports, &io) {
            let _ = ctr.pod.agent.delete(&opts.container_id, &opts.exec_id);
            return Err(Error::Other(format!("stdio of exec {}: {e}", opts.exec_id)));
        }
        ctr.procs
            .lock()
            .unwrap()
            .insert(opts.exec_id, Arc::new(Process { io }));
        Ok(())
    }

    fn kill(&self, id: &str, exec_id: Option<&str>, signal: i32, all: bool) -> Result<()> {
        let ctr = self.ctr(id)?;
        ctr.pod
            .agent
            .kill(id, exec_id.unwrap_or_default(), signal as u32, all)
            .map_err(|e| agent_err(&format!("kill in {id}"), e))
    }

    fn delete(&self, id: &str, exec_id: Option<&str>) -> Result<()> {
        let ctr = self.ctr(id)?;
        let key = exec_id.unwrap_or_default();
        let r = ctr.pod.agent.delete(id, key);
        if let Some(p) = ctr.procs.lock().unwrap().remove(key) {
            p.io.close_stdin();
        }
        if exec_id.is_none() {
            for (_, p) in ctr.procs.lock().unwrap().drain() {
                p.io.close_stdin();
            }
            guest_spec::remove(&ctr.pod.shared, id);
            self.containers.lock().unwrap().remove(id);
            ctr.run_hooks(id, "poststop", "stopped", |h| h.poststop())?;
        }
        match r {
            Ok(()) => Ok(()),
            // The VM is gone (its pod ended): nothing is left to delete in it.
            Err(_) if ctr.pod.stopped.load(Ordering::SeqCst) || !ctr.pod.vm.is_running() => Ok(()),
            Err(e) => match agent_err(&format!("delete {id} in the VM"), e) {
                Error::NotFound(_) => Ok(()),
                other => Err(other),
            },
        }
    }

    fn pids(&self, id: &str) -> Result<Vec<u32>> {
        let ctr = self.ctr(id)?;
        ctr.pod
            .agent
            .pids(id)
            .map_err(|e| agent_err(&format!("pids of {id}"), e))
    }

    fn pause(&self, id: &str) -> Result<()> {
        let ctr = self.ctr(id)?;
        ctr.pod
            .agent
            .pause(id)
            .map_err(|e| agent_err(&format!("pause {id}"), e))
    }

    fn resume(&self, id: &str) -> Result<()> {
        let ctr = self.ctr(id)?;
        ctr.pod
            .agent
            .resume(id)
            .map_err(|e| agent_err(&format!("resume {id}"), e))
    }

    fn stats(&self, id: &str) -> Result<Stats> {
        let ctr = self.ctr(id)?;
        let s = ctr
            .pod
            .agent
            .stats(id)
            .map_err(|e| agent_err(&format!("stats of {id}"), e))?;
        Ok(Stats::from(&s))
    }

    fn update(&self, id: &str, resources: &oci_spec::runtime::LinuxResources) -> Result<()> {
        let ctr = self.ctr(id)?;
        let json = serde_json::to_string(resources)
            .map_err(|e| Error::InvalidArgument(format!("resources: {e}")))?;
        ctr.pod
            .agent
            .update(id, &json)
            .map_err(|e| agent_err(&format!("update {id}"), e))
    }

    fn resize_pty(&self, id: &str, exec_id: Option<&str>, width: u32, height: u32) -> Result<()> {
        let ctr = self.ctr(id)?;
        ctr.pod
            .agent
            .resize_pty(id, exec_id.unwrap_or_default(), width, height)
            .map_err(|e| agent_err(&format!("resize the terminal of {id}"), e))
    }

    fn close_stdin(&self, id: &str, exec_id: Option<&str>) -> Result<()> {
        let ctr = self.ctr(id)?;
        let key = exec_id.unwrap_or_default();
        let proc = ctr.procs.lock().unwrap().get(key).cloned();
        match proc {
            Some(p) => {
                p.io.close_stdin();
                Ok(())
            }
            None => Err(Error::NotFound(format!("process {key} in container {id}"))),
        }
    }
}

/// The sandbox the shim holds: ends the VM and forgets it.
struct SandboxHandle {
    pod: Arc<PodVm>,
    pods: Pods,
}

impl Sandbox for SandboxHandle {
    fn id(&self) -> &str {
        &self.pod.id
    }
    fn shutdown(&self) -> Result<()> {
        self.pods.lock().unwrap().remove(&self.pod.id);
        self.pod.stop()
    }
}

/// The file in the sandbox container's bundle that names the pod's directory.
const POD_DIR_RECORD: &str = "strata-microvm-pod";

/// Removes what a dead shim's pod left: the VM's processes, the shared directory's mounts,
/// the state directory. The directory is the one the bundle's record names (any `state_dir`),
/// else the one under `state_root`.
pub fn cleanup_orphan(bundle: &Path, state_root: &Path, namespace: &str, sandbox_id: &str) {
    let recorded = std::fs::read_to_string(bundle.join(POD_DIR_RECORD))
        .ok()
        .map(PathBuf::from)
        // Only a pod directory of this pod: a record cannot send the clean-up elsewhere.
        .filter(|d| {
            d.is_absolute()
                && d.parent().and_then(Path::file_name) == Some(std::ffi::OsStr::new(namespace))
                && d.file_name() == pod_dir(Path::new("/"), namespace, sandbox_id).file_name()
        });
    let dir = recorded.unwrap_or_else(|| pod_dir(state_root, namespace, sandbox_id));
    let _ = std::fs::remove_file(bundle.join(POD_DIR_RECORD));
    if !dir.exists() {
        return;
    }
    if let Err(e) = crate::qemu::cleanup_orphan(&dir.join("vm")) {
        tracing::warn!(sandbox = %sandbox_id, error = %e, "ending a dead shim's VM");
    }
    crate::network::cleanup_orphan(&dir);
    let shared = dir.join("shared");
    if let Ok(entries) = std::fs::read_dir(&shared) {
        for e in entries.flatten() {
            guest_spec::remove(&shared, &e.file_name().to_string_lossy());
        }
    }
    let _ = crate::share::release(&shared);
    let _ = std::fs::remove_dir_all(&dir);
    if let Some(ns) = dir.parent() {
        let _ = std::fs::remove_dir(ns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_paths_become_the_directories_systemd_gives_them() {
        let ok = |p: &str| systemd_cgroup_dir(p).unwrap().display().to_string();
        assert_eq!(
            ok("kubepods-besteffort-pod1a2b.slice:cri-containerd:abc"),
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1a2b.slice/cri-containerd-abc.scope"
        );
        assert_eq!(ok(":docker:x"), "system.slice/docker-x.scope");
        assert_eq!(ok("-.slice:p:x"), "p-x.scope");
        assert_eq!(ok("user.slice::x"), "user.slice/x.scope");
        assert_eq!(ok("a-b.slice:p:c.slice"), "a.slice/a-b.slice/c.slice");
        for bad in [
            "/kubepods/pod1/abc",
            "kubepods.slice:cri-containerd",
            "kubepods:cri-containerd:abc",
            "a--b.slice:p:x",
            "a.slice:p:",
            "a.slice:p:x/y",
            "a.slice:p:x:y",
        ] {
            assert!(systemd_cgroup_dir(bad).is_err(), "{bad} accepted");
        }
    }
}
