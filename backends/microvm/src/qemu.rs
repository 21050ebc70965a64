//! The QEMU driver: `qemu-system-x86_64 -M microvm` with two vhost-user devices served by
//! rust-vmm's daemons, each its own process:
//!
//! - `vhost-device-vsock` (guest CID [`GUEST_CID`]) with a hybrid Unix socket
//!   ([`VSOCK_SOCKET`]): the host connects, sends `CONNECT <port>\n`, reads `OK <port>\n`;
//! - `virtiofsd` sharing [`VmSpec::shared_dir`] as the virtio-fs tag [`SHARE_TAG`]
//!   (`--cache never`, its own namespace sandbox), which the agent mounts at
//!   [`crate::hypervisor::GUEST_SHARE_DIR`];
//! - QEMU itself: KVM where `/dev/kvm` is hardware-backed, TCG only where
//!   [`VmSpec::allow_tcg`] allows it; the console goes to [`CONSOLE_LOG`]; `-no-reboot`, so a
//!   guest reboot or power-off (and `panic=1`) ends QEMU.
//!
//! Everything lives in the VM's state directory: sockets, logs, the console, and
//! [`VM_RECORD_FILE`], which names every process by pid and start time as soon as it exists so
//! that [`cleanup_orphan`] can end them after the shim was killed. The driver never waits for
//! its children with `waitpid` alone: the shim's reaper may reap them first. A process is
//! "alive" while `/proc/PID/stat` shows its recorded start time and it is not a zombie.

mod qmp;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::hypervisor::{SHARE_TAG, VM_RECORD_FILE};
use crate::process;
use crate::share::{self, Shared};
use crate::tools::{self, Tool};
use crate::{Accel, Error, Hypervisor, Vm, VmRecord, VmSpec};

/// The guest's console (COM1), in the state directory.
pub const CONSOLE_LOG: &str = "console.log";
/// The hybrid vsock socket, in the state directory.
pub const VSOCK_SOCKET: &str = "vsock.sock";
/// The guest's vsock CID (each VM has its own vhost-device-vsock, so every guest can be 3).
pub const GUEST_CID: u32 = 3;
/// The vhost-user socket of vhost-device-vsock.
const VHOST_VSOCK_SOCKET: &str = "vhost-vsock.sock";
/// The vhost-user socket of virtiofsd (which also writes `virtiofs.sock.pid`).
const VIRTIOFS_SOCKET: &str = "virtiofs.sock";
/// QEMU's QMP socket: QEMU answers on it once the machine is built and running.
const QMP_SOCKET: &str = "qmp.sock";
/// Holds the shared directory's path when the driver bound it onto itself (for
/// [`cleanup_orphan`]).
const SHARED_MOUNT_FILE: &str = "shared-mount";
/// How long the helpers' sockets and QEMU's machine may take to appear.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long killed processes may take to disappear.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);
/// Lines of the console (and of a helper's log) quoted in errors.
const TAIL_LINES: usize = 20;
/// `sun_path` holds 108 bytes with the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// Helper names: also the base names of their logs in the state directory.
const VSOCK_NAME: &str = "vhost-device-vsock";
const VIRTIOFSD_NAME: &str = "virtiofsd";
const QEMU_NAME: &str = "qemu";

/// The QEMU driver. The paths, when set, come from the configuration; unset ones are found by
/// [`tools::find`].
#[derive(Debug, Clone, Default)]
pub struct Qemu {
    pub qemu: Option<PathBuf>,
    pub virtiofsd: Option<PathBuf>,
    pub vhost_vsock: Option<PathBuf>,
}

/// Whether `/dev/kvm` is backed by hardware virtualisation (`kvm_intel` or `kvm_amd` loaded),
/// on which QEMU can run an unmodified Linux guest. (PVM's `/dev/kvm` cannot.)
pub fn hardware_kvm() -> bool {
    Path::new("/dev/kvm").exists()
        && (Path::new("/sys/module/kvm_intel").exists()
            || Path::new("/sys/module/kvm_amd").exists())
}

/// KVM where it can run the guest, else TCG if `allow_tcg`, else [`Error::NoAccelerator`].
pub fn choose_accel(allow_tcg: bool) -> Result<Accel, Error> {
    if hardware_kvm() {
        Ok(Accel::Kvm)
    } else if allow_tcg {
        Ok(Accel::Tcg)
    } else {
        Err(Error::NoAccelerator(format!(
            "no hardware virtualisation here ({}); QEMU could only emulate the guest (TCG), \
             which is no security boundary and is allowed only by `allow_tcg = true` in the \
             `[microvm]` section of the configuration",
            if Path::new("/dev/kvm").exists() {
                "/dev/kvm exists, but neither kvm_intel nor kvm_amd is loaded"
            } else {
                "no /dev/kvm"
            }
        )))
    }
}

/// The guest kernel's command line: console on COM1, a reboot ends the VM, a panic reboots
/// after a second, the virtio-fs tag for the agent, then `extra`.
pub fn kernel_cmdline(extra: &str) -> String {
    let mut s = format!("console=ttyS0 reboot=k panic=1 strata.share={SHARE_TAG}");
    if !extra.trim().is_empty() {
        s.push(' ');
        s.push_str(extra.trim());
    }
    s
}

/// QEMU's option syntax: a comma inside a value is doubled.
fn opt_escape(p: &Path) -> String {
    p.display().to_string().replace(',', ",,")
}

/// The files of one VM's state directory.
struct Paths {
    dir: PathBuf,
    vhost_vsock: PathBuf,
    vsock: PathBuf,
    virtiofs: PathBuf,
    qmp: PathBuf,
    console: PathBuf,
    record: PathBuf,
    shared_mount: PathBuf,
}

impl Paths {
    fn new(dir: &Path) -> Result<Paths, Error> {
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
    fn leftovers(&self) -> Vec<PathBuf> {
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
        for name in [VSOCK_NAME, VIRTIOFSD_NAME, QEMU_NAME] {
            v.push(self.dir.join(format!("{name}.log")));
        }
        v
    }
}

/// A process the driver started.
struct Helper {
    name: &'static str,
    child: Child,
    pid: u32,
    start_time: u64,
    log: PathBuf,
}

impl Helper {
    fn alive(&mut self) -> bool {
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
struct Parts {
    paths: Paths,
    cgroups: Vec<PathBuf>,
    /// vhost-device-vsock and virtiofsd, in start order.
    daemons: Vec<Helper>,
    qemu: Option<Helper>,
    /// The helpers' own children (virtiofsd's sandbox), found once QEMU runs.
    descendants: Vec<(u32, u64)>,
    shared: Option<Shared>,
}

impl Parts {
    /// QEMU first: when it fails, the daemons it was connected to end too, and its own
    /// failure is the one to report.
    fn helpers(&mut self) -> impl Iterator<Item = &mut Helper> {
        self.qemu
            .as_mut()
            .into_iter()
            .chain(self.daemons.iter_mut())
    }

    fn record(&self) -> VmRecord {
        VmRecord {
            processes: self
                .qemu
                .iter()
                .chain(&self.daemons)
                .map(|h| (h.pid, h.start_time))
                .chain(self.descendants.iter().copied())
                .collect(),
            cgroups: self.cgroups.clone(),
        }
    }

    fn write_record(&self) -> Result<(), Error> {
        process::write_record(&self.paths.record, &self.record())
    }

    fn spawn(&mut self, name: &'static str, mut cmd: Command) -> Result<(), String> {
        let (log, file) = process::log_file(&self.paths.dir, name).map_err(|e| e.to_string())?;
        let err = file
            .try_clone()
            .map_err(|e| format!("{}: {e}", log.display()))?;
        cmd.stdin(Stdio::null()).stdout(file).stderr(err);
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
        if name == QEMU_NAME {
            self.qemu = Some(helper);
        } else {
            self.daemons.push(helper);
        }
        self.write_record().map_err(|e| e.to_string())
    }

    /// An error naming the first helper that is no longer running, if any.
    fn check_alive(&mut self) -> Result<(), String> {
        for h in self.helpers() {
            if !h.alive() {
                return Err(h.exit());
            }
        }
        Ok(())
    }

    /// Waits until every path exists, while every helper runs.
    fn wait_for_files(&mut self, files: &[&Path], deadline: Instant) -> Result<(), String> {
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

    /// Waits until QEMU reports over QMP that the machine runs.
    fn wait_running(&mut self, deadline: Instant) -> Result<(), String> {
        loop {
            self.check_alive()?;
            let last = match qmp::query_status(&self.paths.qmp, Duration::from_secs(2)) {
                Ok(s) if s == "running" => return Ok(()),
                Ok(s) => format!("status {s}"),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(format!(
                    "QEMU did not report a running machine within {} s (QMP: {last})",
                    START_TIMEOUT.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Every process, each with its children, killed; returns those still alive after
    /// [`KILL_TIMEOUT`]. QEMU first, SIGTERM then SIGKILL after `grace`.
    fn kill(&mut self, grace: Duration) -> Vec<(u32, u64)> {
        if let Some(q) = self.qemu.as_mut() {
            if q.alive() && !grace.is_zero() {
                process::signal(q.pid, q.start_time, Signal::SIGTERM);
                let deadline = Instant::now() + grace;
                while q.alive() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        let mut procs: Vec<(u32, u64)> = self.record().processes;
        // QEMU first: the daemons then see their peer go, not the other way round.
        procs.sort_by_key(|&(p, _)| Some(p) != self.qemu.as_ref().map(|q| q.pid));
        let left = process::kill_all(&procs, KILL_TIMEOUT);
        for h in self.helpers() {
            let _ = h.child.try_wait();
        }
        left
    }

    /// Undoes the shared directory's bind.
    fn release_shared(&mut self) -> Result<(), Error> {
        if let Some(Shared::Bound(dir)) = self.shared.take() {
            share::release(&dir)?;
        }
        Ok(())
    }

    /// After a failed start: everything killed, the helpers' logs quoted in the error, every
    /// file but the console log removed.
    fn fail(mut self, reason: String) -> Error {
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

impl Qemu {
    /// QEMU's command line for `spec` under `accel` (without the program).
    fn qemu_args(spec: &VmSpec, accel: Accel, paths: &Paths) -> Vec<String> {
        let mem = spec.memory_mib;
        let mut a: Vec<String> = Vec::new();
        let mut push = |xs: &[&str]| a.extend(xs.iter().map(|s| s.to_string()));
        push(&["-name", &format!("strata-{}", spec.id.replace(',', ",,"))]);
        push(&["-M", "microvm,rtc=off,acpi=off,memory-backend=mem"]);
        match accel {
            Accel::Kvm => push(&["-accel", "kvm", "-cpu", "host"]),
            Accel::Tcg => push(&["-accel", "tcg", "-cpu", "max"]),
        }
        push(&[
            "-object",
            &format!("memory-backend-memfd,id=mem,size={mem}M,share=on"),
            "-m",
            &format!("{mem}M"),
            "-smp",
            &spec.vcpus.max(1).to_string(),
        ]);
        push(&["-kernel", &spec.kernel.display().to_string()]);
        push(&["-initrd", &spec.initrd.display().to_string()]);
        push(&["-append", &kernel_cmdline(&spec.extra_cmdline)]);
        push(&["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"]);
        push(&["-serial", &format!("file:{}", paths.console.display())]);
        push(&[
            "-chardev",
            &format!("socket,id=vs,path={}", opt_escape(&paths.vhost_vsock)),
            "-device",
            "vhost-user-vsock-device,chardev=vs",
        ]);
        push(&[
            "-chardev",
            &format!("socket,id=fs,path={}", opt_escape(&paths.virtiofs)),
            "-device",
            &format!("vhost-user-fs-device,chardev=fs,tag={SHARE_TAG}"),
        ]);
        for (n, (fd, mac)) in spec.taps.iter().enumerate() {
            push(&[
                "-netdev",
                &format!("tap,id=net{n},fd={fd}"),
                "-device",
                &format!("virtio-net-device,netdev=net{n},mac={mac}"),
            ]);
        }
        push(&[
            "-qmp",
            &format!("unix:{},server=on,wait=off", opt_escape(&paths.qmp)),
        ]);
        a
    }

    fn launch(
        &self,
        spec: &VmSpec,
        accel: Accel,
        bins: [PathBuf; 3],
        parts: &mut Parts,
    ) -> Result<(), String> {
        let [qemu, virtiofsd, vhost_vsock] = bins;
        let deadline = Instant::now() + START_TIMEOUT;
        let shared = share::make_shared(&spec.shared_dir).map_err(|e| e.to_string())?;
        if let Shared::Bound(dir) = &shared {
            std::fs::write(
                &parts.paths.shared_mount,
                dir.as_os_str().as_encoded_bytes(),
            )
            .map_err(|e| format!("{}: {e}", parts.paths.shared_mount.display()))?;
        }
        let shared_dir = shared.path().to_path_buf();
        parts.shared = Some(shared);

        let mut cmd = Command::new(&vhost_vsock);
        cmd.arg("--guest-cid")
            .arg(GUEST_CID.to_string())
            .arg("--socket")
            .arg(&parts.paths.vhost_vsock)
            .arg("--uds-path")
            .arg(&parts.paths.vsock);
        parts.spawn(VSOCK_NAME, cmd)?;

        let mut cmd = Command::new(&virtiofsd);
        cmd.arg("--socket-path")
            .arg(&parts.paths.virtiofs)
            .arg("--shared-dir")
            .arg(&shared_dir)
            .args(["--cache", "never", "--sandbox", "namespace"]);
        parts.spawn(VIRTIOFSD_NAME, cmd)?;

        let sockets = [
            parts.paths.vhost_vsock.clone(),
            parts.paths.vsock.clone(),
            parts.paths.virtiofs.clone(),
        ];
        let sockets: Vec<&Path> = sockets.iter().map(PathBuf::as_path).collect();
        parts.wait_for_files(&sockets, deadline)?;

        let mut cmd = Command::new(&qemu);
        cmd.args(Self::qemu_args(spec, accel, &parts.paths));
        process::inherit_fds(&mut cmd, spec.taps.iter().map(|(fd, _)| *fd).collect());
        parts.spawn(QEMU_NAME, cmd)?;
        parts.wait_running(deadline)?;

        let mut kids = Vec::new();
        for h in parts.helpers() {
            kids.extend(process::descendants(h.pid));
        }
        parts.descendants = kids;
        parts.write_record().map_err(|e| e.to_string())
    }
}

impl Hypervisor for Qemu {
    fn name(&self) -> &'static str {
        "qemu"
    }

    fn start(&self, spec: &VmSpec) -> Result<Box<dyn Vm>, Error> {
        let accel = choose_accel(spec.allow_tcg)?;
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
        let bins = [
            tools::find(Tool::Qemu, self.qemu.as_deref())?,
            tools::find(Tool::Virtiofsd, self.virtiofsd.as_deref())?,
            tools::find(Tool::VhostVsock, self.vhost_vsock.as_deref())?,
        ];
        let paths = Paths::new(&spec.state_dir)?;
        for f in paths.leftovers().iter().chain([&paths.console]) {
            let _ = std::fs::remove_file(f);
        }
        let mut parts = Parts {
            paths,
            cgroups: spec.cgroups.clone(),
            daemons: Vec::new(),
            qemu: None,
            descendants: Vec::new(),
            shared: None,
        };
        let t0 = Instant::now();
        if let Err(reason) = self.launch(spec, accel, bins, &mut parts) {
            return Err(parts.fail(reason));
        }
        tracing::info!(
            vm = %spec.id,
            %accel,
            pids = ?parts.record().processes,
            elapsed_ms = t0.elapsed().as_millis() as u64,
            "QEMU microVM started"
        );
        Ok(Box::new(QemuVm {
            state_dir: spec.state_dir.clone(),
            vsock: parts.paths.vsock.clone(),
            console: parts.paths.console.clone(),
            accel,
            parts: Mutex::new(Some(parts)),
        }))
    }
}

/// A VM run by [`Qemu`]. Dropping it without [`Vm::stop`] leaves it running (as a killed shim
/// would): [`cleanup_orphan`] ends it from its state directory.
pub struct QemuVm {
    state_dir: PathBuf,
    vsock: PathBuf,
    console: PathBuf,
    accel: Accel,
    /// None once stopped.
    parts: Mutex<Option<Parts>>,
}

impl Vm for QemuVm {
    fn vsock_socket(&self) -> &Path {
        &self.vsock
    }

    fn driver(&self) -> &'static str {
        "qemu"
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
            .and_then(|p| p.qemu.as_mut())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &Path) -> VmSpec {
        VmSpec {
            id: "pod,1".into(),
            state_dir: dir.into(),
            kernel: "/k".into(),
            initrd: "/i".into(),
            vcpus: 2,
            memory_mib: 256,
            shared_dir: "/s".into(),
            cgroups: Vec::new(),
            allow_tcg: true,
            extra_cmdline: " quiet ".into(),
            taps: vec![(7, "02:00:00:00:00:01".into())],
        }
    }

    #[test]
    fn command_line() {
        let dir = Path::new("/run/strata/a,b");
        let paths = Paths::new(dir).unwrap();
        let a = Qemu::qemu_args(&spec(dir), Accel::Tcg, &paths).join(" ");
        for want in [
            "-name strata-pod,,1",
            "-M microvm,rtc=off,acpi=off,memory-backend=mem -accel tcg -cpu max",
            "-object memory-backend-memfd,id=mem,size=256M,share=on -m 256M -smp 2",
            "-kernel /k -initrd /i",
            "-append console=ttyS0 reboot=k panic=1 strata.share=strata quiet",
            "-no-reboot",
            "-serial file:/run/strata/a,b/console.log",
            "socket,id=vs,path=/run/strata/a,,b/vhost-vsock.sock -device vhost-user-vsock-device,chardev=vs",
            "socket,id=fs,path=/run/strata/a,,b/virtiofs.sock -device vhost-user-fs-device,chardev=fs,tag=strata",
            "-qmp unix:/run/strata/a,,b/qmp.sock,server=on,wait=off",
            "-netdev tap,id=net0,fd=7 -device virtio-net-device,netdev=net0,mac=02:00:00:00:00:01",
        ] {
            assert!(a.contains(want), "{want:?} not in {a}");
        }
        let k = Qemu::qemu_args(&spec(dir), Accel::Kvm, &paths).join(" ");
        assert!(k.contains("-accel kvm -cpu host"), "{k}");
        assert_eq!(
            kernel_cmdline(""),
            "console=ttyS0 reboot=k panic=1 strata.share=strata"
        );
    }

    #[test]
    fn a_long_state_dir_is_refused_before_anything_starts() {
        let long = PathBuf::from(format!("/run/{}", "x".repeat(100)));
        let e = Paths::new(&long).err().unwrap().to_string();
        assert!(e.contains("shorter VM state directory"), "{e}");
    }

    #[test]
    fn tcg_needs_allow_tcg_where_kvm_is_not_hardware() {
        if hardware_kvm() {
            assert_eq!(choose_accel(false).unwrap(), Accel::Kvm);
        } else {
            assert_eq!(choose_accel(true).unwrap(), Accel::Tcg);
            let e = choose_accel(false).unwrap_err();
            assert!(matches!(e, Error::NoAccelerator(_)));
            assert!(e.to_string().contains("allow_tcg"), "{e}");
        }
    }
}
