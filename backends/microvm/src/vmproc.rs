//! The host processes of one VM, whatever the driver: the device daemons (virtiofsd, and
//! vhost-device-vsock for QEMU) and the VMM (QEMU, or Strata's own as `strata vm run`), each a
//! separate process in the pod's cgroup, never a thread of the shim.
//!
//! Everything lives in the VM's state directory: sockets, logs, the console, and
//! [`VM_RECORD_FILE`], which names every process by pid and start time as soon as it exists so
//! that [`cleanup_orphan`] can end them after the shim was killed. A driver never waits for its
//! children with `waitpid` alone: the shim's reaper may reap them first. A process is "alive"
//! while `/proc/PID/stat` shows its recorded start time and it is not a zombie.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::hypervisor::VM_RECORD_FILE;
use crate::process;
use crate::share::{self, Shared};
use crate::{Accel, Error, Vm, VmRecord, VmSpec};

/// The guest's console (COM1), in the state directory.
pub const CONSOLE_LOG: &str = "console.log";
/// The hybrid vsock socket, in the state directory.
pub const VSOCK_SOCKET: &str = "vsock.sock";
/// The vhost-user socket of vhost-device-vsock (QEMU driver).
pub const VHOST_VSOCK_SOCKET: &str = "vhost-vsock.sock";
/// The vhost-user socket of virtiofsd (which also writes `virtiofs.sock.pid`).
pub const VIRTIOFS_SOCKET: &str = "virtiofs.sock";
/// QEMU's QMP socket.
pub const QMP_SOCKET: &str = "qmp.sock";
/// Holds the shared directory's path when the driver bound it onto itself (for
/// [`cleanup_orphan`]).
const SHARED_MOUNT_FILE: &str = "shared-mount";
/// How long the helpers' sockets and the VMM's machine may take to appear.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long killed processes may take to disappear.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);
/// Lines of the console (and of a helper's log) quoted in errors.
pub const TAIL_LINES: usize = 20;
/// `sun_path` holds 108 bytes with the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// Helper names: also the base names of their logs in the state directory.
pub const VSOCK_NAME: &str = "vhost-device-vsock";
pub const VIRTIOFSD_NAME: &str = "virtiofsd";
pub const QEMU_NAME: &str = "qemu";
pub const STRATA_VMM_NAME: &str = "strata-vmm";

/// What a started process is to the VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A device daemon.
    Daemon,
    /// The VMM, which writes the console itself ([`CONSOLE_LOG`]).
    Vmm,
    /// The VMM, which echoes the console on its standard output.
    VmmConsoleOnStdout,
}

/// What both drivers check before starting anything: the guest image exists, and the
/// directories the caller made.
pub fn check_spec(spec: &VmSpec) -> Result<(), Error> {
    for (what, path) in [("kernel", &spec.kernel), ("initramfs", &spec.initrd)] {
        if !path.is_file() {
            return Err(Error::MissingImage {
                what,
                path: path.clone(),
            });
        }
    }
    for (what, dir) in [
        ("shared directory", &spec.shared_dir),
        ("state directory", &spec.state_dir),
    ] {
        if !dir.is_dir() {
            return Err(Error::Other(format!(
                "the VM's {what} {} does not exist",
                dir.display()
            )));
        }
    }
    Ok(())
}

/// Starts a VM of `driver` for `spec` in its state directory, emptied first of anything a
/// driver leaves: `launch` starts the processes into the [`Parts`] it is given. A launch that
/// fails is undone ([`Parts::fail`]: processes killed, the share released, the files removed
/// but the console); one that succeeds is the running [`ProcessVm`].
pub fn start(
    spec: &VmSpec,
    driver: &'static str,
    accel: Accel,
    launch: impl FnOnce(&mut Parts) -> Result<(), String>,
) -> Result<Box<dyn Vm>, Error> {
    let paths = Paths::new(&spec.state_dir)?;
    for f in paths.leftovers().iter().chain([&paths.console]) {
        let _ = std::fs::remove_file(f);
    }
    let mut parts = Parts {
        paths,
        cgroups: spec.cgroups.clone(),
        daemons: Vec::new(),
        vmm: None,
        descendants: Vec::new(),
        shared: None,
    };
    let t0 = Instant::now();
    if let Err(reason) = launch(&mut parts) {
        return Err(parts.fail(reason));
    }
    tracing::info!(
        vm = %spec.id,
        driver,
        %accel,
        pids = ?parts.record().processes,
        elapsed_ms = t0.elapsed().as_millis() as u64,
        "microVM started"
    );
    let vsock = parts.paths.vsock.clone();
    Ok(Box::new(ProcessVm::new(driver, accel, vsock, parts)))
}

/// Binds the pod's shared directory where virtiofsd can serve it, and starts virtiofsd on
/// [`VIRTIOFS_SOCKET`] (`--cache never`, its own namespace sandbox); the VMM gives it to the
/// guest as [`crate::hypervisor::SHARE_TAG`].
pub fn start_virtiofsd(parts: &mut Parts, virtiofsd: &Path, shared: &Path) -> Result<(), String> {
    let shared = share::make_shared(shared).map_err(|e| e.to_string())?;
    if let Shared::Bound(dir) = &shared {
        std::fs::write(
            &parts.paths.shared_mount,
            dir.as_os_str().as_encoded_bytes(),
        )
        .map_err(|e| format!("{}: {e}", parts.paths.shared_mount.display()))?;
    }
    let shared_dir = shared.path().to_path_buf();
    parts.shared = Some(shared);
    let mut cmd = Command::new(virtiofsd);
    cmd.arg("--socket-path")
        .arg(&parts.paths.virtiofs)
        .arg("--shared-dir")
        .arg(&shared_dir)
        .args(["--cache", "never", "--sandbox", "namespace"]);
    parts.spawn(VIRTIOFSD_NAME, cmd, Role::Daemon)
}

/// Records the helpers' own children (virtiofsd's sandbox), once the VMM runs.
pub fn record_descendants(parts: &mut Parts) -> Result<(), String> {
    let mut kids = Vec::new();
    for h in parts.helpers() {
        kids.extend(process::descendants(h.pid));
    }
    parts.descendants = kids;
    parts.write_record().map_err(|e| e.to_string())
}

/// The files of one VM's state directory.
pub struct Paths {
    pub dir: PathBuf,
    pub vhost_vsock: PathBuf,
    pub vsock: PathBuf,
    pub virtiofs: PathBuf,
    pub qmp: PathBuf,
    pub console: PathBuf,
    pub record: PathBuf,
    pub shared_mount: PathBuf,
}

impl Paths {
    pub fn new(dir: &Path) -> Result<Paths, Error> {
        let p = Paths {
            dir: dir.to_path_buf(),
            vhost_vsock: dir.join(VHOST_VSOCK_SOCKET),
            vsock: dir.join(VSOCK_SOCKET),
            virtiofs: dir.join(VIRTIOFS_SOCKET),
            qmp: dir.join(QMP_SOCKET),
            console: dir.join(CONSOLE_LOG),
            record: dir.join(VM_RECORD_FILE),
            shared_mount: dir.join(SHARED_MOUNT_FILE),
        };
        for s in [&p.vhost_vsock, &p.vsock, &p.virtiofs, &p.qmp] {
            let len = s.as_os_str().len();
            if len > MAX_SOCKET_PATH {
                return Err(Error::Other(format!(
                    "the socket path {} is {len} bytes, more than a Unix socket can have \
                     ({MAX_SOCKET_PATH}): choose a shorter VM state directory",
                    s.display()
                )));
            }
        }
        Ok(p)
    }

    /// Everything the driver may have left in the directory but the console log.
    pub fn leftovers(&self) -> Vec<PathBuf> {
        let mut v = vec![
            self.vhost_vsock.clone(),
            self.vsock.clone(),
            self.virtiofs.clone(),
            self.dir.join(format!("{VIRTIOFS_SOCKET}.pid")),
            self.qmp.clone(),
            self.record.clone(),
            strata_backend::files::temporary_for(&self.record),
            self.shared_mount.clone(),
        ];
        for name in [VSOCK_NAME, VIRTIOFSD_NAME, QEMU_NAME, STRATA_VMM_NAME] {
            v.push(self.dir.join(format!("{name}.log")));
        }
        v
    }
}

/// A process the driver started.
pub struct Helper {
    pub name: &'static str,
    pub child: Child,
    pub pid: u32,
    pub start_time: u64,
    pub log: PathBuf,
}

impl Helper {
    pub fn alive(&mut self) -> bool {
        // Reap it if it is ours to reap (the shim's reaper may have done so already).
        let _ = self.child.try_wait();
        process::is_alive(self.pid, self.start_time)
    }

    /// How it ended, when this process could still learn it.
    fn exit(&mut self) -> String {
        match self.child.try_wait() {
            Ok(Some(s)) => format!("{} exited ({s})", self.name),
            _ => format!("{} exited", self.name),
        }
    }
}

/// The processes of one VM and what else the driver set up for it.
pub struct Parts {
    pub paths: Paths,
    pub cgroups: Vec<PathBuf>,
    /// The device daemons (vhost-device-vsock, virtiofsd), in start order.
    pub daemons: Vec<Helper>,
    /// The VMM itself (QEMU, or `strata vm run`).
    pub vmm: Option<Helper>,
    /// The helpers' own children (virtiofsd's sandbox), found once the VMM runs.
    pub descendants: Vec<(u32, u64)>,
    pub shared: Option<Shared>,
}

impl Parts {
    /// The VMM first: when it fails, the daemons it was connected to end too, and its own
    /// failure is the one to report.
    pub fn helpers(&mut self) -> impl Iterator<Item = &mut Helper> {
        self.vmm.as_mut().into_iter().chain(self.daemons.iter_mut())
    }

    pub fn record(&self) -> VmRecord {
        VmRecord {
            processes: self
                .vmm
                .iter()
                .chain(&self.daemons)
                .map(|h| (h.pid, h.start_time))
                .chain(self.descendants.iter().copied())
                .collect(),
            cgroups: self.cgroups.clone(),
        }
    }

    pub fn write_record(&self) -> Result<(), Error> {
        process::write_record(&self.paths.record, &self.record())
    }

    /// Starts `cmd` in the VM's cgroups, its output in `<name>.log` (its stdout in
    /// [`CONSOLE_LOG`] for [`Role::VmmConsoleOnStdout`]), and records it.
    pub fn spawn(
        &mut self,
        name: &'static str,
        mut cmd: Command,
        role: Role,
    ) -> Result<(), String> {
        let (log, file) = process::log_file(&self.paths.dir, name).map_err(|e| e.to_string())?;
        let out = if role == Role::VmmConsoleOnStdout {
            std::fs::File::create(&self.paths.console)
        } else {
            file.try_clone()
        }
        .map_err(|e| format!("{}: {e}", log.display()))?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(file);
        let program = cmd.get_program().to_string_lossy().into_owned();
        let child = process::spawn(cmd, &self.cgroups)
            .map_err(|e| format!("starting {name} ({program}): {e}"))?;
        let pid = child.id();
        // A child that already died has no stat; its start time does not matter then.
        let start_time = process::start_time(pid).unwrap_or(0);
        let helper = Helper {
            name,
            child,
            pid,
            start_time,
            log,
        };
        if role != Role::Daemon {
            self.vmm = Some(helper);
        } else {
            self.daemons.push(helper);
        }
        self.write_record().map_err(|e| e.to_string())
    }

    /// An error naming the first helper that is no longer running, if any.
    pub fn check_alive(&mut self) -> Result<(), String> {
        for h in self.helpers() {
            if !h.alive() {
                return Err(h.exit());
            }
        }
        Ok(())
    }

    /// Waits until every path exists, while every helper runs.
    pub fn wait_for_files(&mut self, files: &[&Path], deadline: Instant) -> Result<(), String> {
        loop {
            self.check_alive()?;
            if files.iter().all(|f| f.exists()) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let missing: Vec<String> = files
                    .iter()
                    .filter(|f| !f.exists())
                    .map(|f| f.display().to_string())
                    .collect();
                return Err(format!(
                    "{} did not appear within {} s",
                    missing.join(", "),
                    START_TIMEOUT.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Every process, each with its children, killed; returns those still alive after
    /// [`KILL_TIMEOUT`]. The VMM first, SIGTERM then SIGKILL after `grace`.
    pub fn kill(&mut self, grace: Duration) -> Vec<(u32, u64)> {
        if let Some(q) = self.vmm.as_mut() {
            if q.alive() && !grace.is_zero() {
                process::signal(q.pid, q.start_time, Signal::SIGTERM);
                let deadline = Instant::now() + grace;
                while q.alive() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        let mut procs: Vec<(u32, u64)> = self.record().processes;
        // The VMM first: the daemons then see their peer go, not the other way round.
        procs.sort_by_key(|&(p, _)| Some(p) != self.vmm.as_ref().map(|q| q.pid));
        let left = process::kill_all(&procs, KILL_TIMEOUT);
        for h in self.helpers() {
            let _ = h.child.try_wait();
        }
        left
    }

    /// Undoes the shared directory's bind.
    pub fn release_shared(&mut self) -> Result<(), Error> {
        if let Some(Shared::Bound(dir)) = self.shared.take() {
            share::release(&dir)?;
        }
        Ok(())
    }

    /// After a failed start: everything killed, the helpers' logs quoted in the error, every
    /// file but the console log removed.
    pub fn fail(mut self, reason: String) -> Error {
        let left = self.kill(Duration::ZERO);
        let mut reason = reason;
        if !left.is_empty() {
            reason.push_str(&format!("; processes {left:?} did not end"));
        }
        if let Err(e) = self.release_shared() {
            reason.push_str(&format!("; {e}"));
        }
        for h in self.helpers() {
            let t = process::tail(&h.log, 5);
            if !t.trim().is_empty() {
                reason.push_str(&format!("\n{} says:\n{t}", h.name));
            }
        }
        for f in self.paths.leftovers() {
            let _ = std::fs::remove_file(f);
        }
        Error::Boot {
            reason,
            console_tail: process::tail(&self.paths.console, TAIL_LINES),
        }
    }
}

/// A VM run as host processes by a driver. Dropping it without [`Vm::stop`] leaves it running
/// (as a killed shim would): [`cleanup_orphan`] ends it from its state directory.
pub struct ProcessVm {
    pub driver: &'static str,
    state_dir: PathBuf,
    vsock: PathBuf,
    console: PathBuf,
    accel: Accel,
    /// None once stopped.
    parts: Mutex<Option<Parts>>,
}

impl ProcessVm {
    /// The running VM of `parts`, its console in [`CONSOLE_LOG`], its agent behind `vsock`.
    pub fn new(driver: &'static str, accel: Accel, vsock: PathBuf, parts: Parts) -> ProcessVm {
        ProcessVm {
            driver,
            state_dir: parts.paths.dir.clone(),
            vsock,
            console: parts.paths.console.clone(),
            accel,
            parts: Mutex::new(Some(parts)),
        }
    }
}

impl Vm for ProcessVm {
    fn vsock_socket(&self) -> &Path {
        &self.vsock
    }

    fn driver(&self) -> &'static str {
        self.driver
    }

    fn accel(&self) -> Accel {
        self.accel
    }

    fn host_pids(&self) -> Vec<u32> {
        let parts = self.parts.lock().unwrap_or_else(|e| e.into_inner());
        parts.as_ref().map_or_else(Vec::new, |p| {
            p.record()
                .processes
                .into_iter()
                .filter(|&(pid, t)| process::is_alive(pid, t))
                .map(|(pid, _)| pid)
                .collect()
        })
    }

    fn is_running(&self) -> bool {
        let mut parts = self.parts.lock().unwrap_or_else(|e| e.into_inner());
        parts
            .as_mut()
            .and_then(|p| p.vmm.as_mut())
            .is_some_and(Helper::alive)
    }

    fn console_tail(&self) -> String {
        process::tail(&self.console, TAIL_LINES)
    }

    fn agent_announced(&self) -> bool {
        // The console holds the kernel's boot messages and the agent's lines: a few KiB.
        std::fs::read(&self.console).is_ok_and(|text| {
            let marker = strata_agent_protocol::AGENT_SERVING_MARKER.as_bytes();
            text.windows(marker.len()).any(|w| w == marker)
        })
    }

    fn stop(&self, grace: Duration) -> Result<(), Error> {
        let mut guard = self.parts.lock().unwrap_or_else(|e| e.into_inner());
        let Some(parts) = guard.as_mut() else {
            return Ok(());
        };
        let left = parts.kill(grace);
        if !left.is_empty() {
            return Err(Error::Other(format!(
                "the VM's processes {left:?} did not end after SIGKILL"
            )));
        }
        parts.release_shared()?;
        remove_state_dir(&self.state_dir)?;
        *guard = None;
        Ok(())
    }
}

fn remove_state_dir(dir: &Path) -> Result<(), Error> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(
            format!("removing the VM state directory {}", dir.display()),
            e,
        )),
    }
}

/// Ends what a VM's state directory records (after its shim was killed): every recorded
/// process whose start time still matches, and its children, is SIGKILLed; the shared
/// directory's bind is undone; the directory is removed. A directory that is gone, or holds no
/// record, is only removed. Works for any driver that writes [`VM_RECORD_FILE`].
pub fn cleanup_orphan(state_dir: &Path) -> Result<(), Error> {
    if !state_dir.exists() {
        return Ok(());
    }
    let record = process::read_record(&state_dir.join(VM_RECORD_FILE))?;
    if let Some(rec) = record {
        let left = process::kill_all(&rec.processes, KILL_TIMEOUT);
        if !left.is_empty() {
            return Err(Error::Other(format!(
                "the VM's processes {left:?} (from {}) did not end after SIGKILL",
                state_dir.join(VM_RECORD_FILE).display()
            )));
        }
        process::remove_cgroups(&rec.cgroups);
    }
    let marker = state_dir.join(SHARED_MOUNT_FILE);
    if let Ok(dir) = std::fs::read(&marker) {
        use std::os::unix::ffi::OsStringExt;
        share::release(Path::new(&std::ffi::OsString::from_vec(dir)))?;
    }
    remove_state_dir(state_dir)
}
