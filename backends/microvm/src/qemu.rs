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
//! The processes, their record and their clean-up are [`crate::vmproc`]'s, shared with Strata's
//! own VMM ([`crate::strata_vmm`]).

mod qmp;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::hypervisor::SHARE_TAG;
use crate::process;
use crate::tools::{self, Tool};
use crate::vmproc::{self, Parts, Paths, Role, QEMU_NAME, START_TIMEOUT, VSOCK_NAME};
use crate::{Accel, Error, Hypervisor, Vm, VmSpec};

pub use crate::vmproc::{cleanup_orphan, CONSOLE_LOG, VSOCK_SOCKET};

/// The guest's vsock CID (each VM has its own vhost-device-vsock, so every guest can be 3).
pub const GUEST_CID: u32 = 3;

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

/// Why `/dev/kvm` cannot run an unmodified Linux guest here, or None where it is hardware.
pub fn no_hardware_kvm() -> Option<&'static str> {
    if hardware_kvm() {
        None
    } else if !Path::new("/dev/kvm").exists() {
        Some("there is no /dev/kvm")
    } else if Path::new("/sys/module/kvm_pvm").exists() {
        Some("/dev/kvm is PVM (kvm_pvm), which runs no unmodified Linux guest")
    } else {
        Some("/dev/kvm exists, but neither kvm_intel nor kvm_amd is loaded")
    }
}

/// KVM where it can run the guest, else TCG if `allow_tcg`, else [`Error::NoAccelerator`].
pub fn choose_accel(allow_tcg: bool) -> Result<Accel, Error> {
    match no_hardware_kvm() {
        None => Ok(Accel::Kvm),
        Some(_) if allow_tcg => Ok(Accel::Tcg),
        Some(why) => Err(Error::NoAccelerator(format!(
            "no hardware virtualisation here ({why}); QEMU could only emulate the guest (TCG), \
             which is no security boundary and is allowed only by `allow_tcg = true` in the \
             `[microvm]` section of the configuration"
        ))),
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
        vmproc::start_virtiofsd(parts, &virtiofsd, &spec.shared_dir)?;
        let mut cmd = Command::new(&vhost_vsock);
        cmd.arg("--guest-cid")
            .arg(GUEST_CID.to_string())
            .arg("--socket")
            .arg(&parts.paths.vhost_vsock)
            .arg("--uds-path")
            .arg(&parts.paths.vsock);
        parts.spawn(VSOCK_NAME, cmd, Role::Daemon)?;

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
        parts.spawn(QEMU_NAME, cmd, Role::Vmm)?;
        wait_running(parts, deadline)?;
        vmproc::record_descendants(parts)
    }
}

/// Waits until QEMU reports over QMP that the machine runs.
fn wait_running(parts: &mut Parts, deadline: Instant) -> Result<(), String> {
    loop {
        parts.check_alive()?;
        let last = match qmp::query_status(&parts.paths.qmp, Duration::from_secs(2)) {
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

impl Hypervisor for Qemu {
    fn name(&self) -> &'static str {
        "qemu"
    }

    fn start(&self, spec: &VmSpec) -> Result<Box<dyn Vm>, Error> {
        let accel = choose_accel(spec.allow_tcg)?;
        vmproc::check_spec(spec)?;
        let bins = [
            tools::find(Tool::Qemu, self.qemu.as_deref())?,
            tools::find(Tool::Virtiofsd, self.virtiofsd.as_deref())?,
            tools::find(Tool::VhostVsock, self.vhost_vsock.as_deref())?,
        ];
        vmproc::start(spec, "qemu", accel, |parts| {
            self.launch(spec, accel, bins, parts)
        })
    }
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
