//! Strata's own VMM as the tier's driver (`[microvm] driver = "strata"`): `strata vm run` (the
//! `strata` binary, found beside the shim) is the VMM process, with its own hybrid vsock device
//! on [`VSOCK_SOCKET`] and its virtio-fs device as a vhost-user front end to virtiofsd, which
//! serves the pod's shared directory exactly as it does for QEMU. The guest gets the same
//! kernel, agent, command line and taps; the VMM's threads run under their own seccomp filters.
//!
//! Hardware KVM only: the VMM has no emulator. Where `/dev/kvm` is not backed by `kvm_intel` or
//! `kvm_amd` (PVM here), a pod is refused with the reason before anything starts, and the QEMU
//! driver is the one to use.
//!
//! The processes, their record and their clean-up are [`crate::vmproc`]'s, shared with QEMU's.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::hypervisor::SHARE_TAG;
use crate::process;
use crate::qemu::{kernel_cmdline, no_hardware_kvm};
use crate::tools::{self, Tool};
use crate::vmproc::{self, Parts, Paths, Role, START_TIMEOUT, STRATA_VMM_NAME};
use crate::{Accel, Error, Hypervisor, Vm, VmSpec};

pub use crate::vmproc::{CONSOLE_LOG, VSOCK_SOCKET};

/// The guest's vsock CID.
pub const GUEST_CID: u32 = 3;
/// What Strata's VMM adds to the command line: no PCI, the minimal i8042 (Firecracker's).
const MACHINE_CMDLINE: &str = "pci=off i8042.noaux i8042.nomux i8042.dumbkbd";

/// The driver. The paths, when set, come from the configuration.
#[derive(Debug, Clone)]
pub struct StrataVmm {
    /// The `strata` binary; unset: the one beside the running executable, then
    /// [`tools::find`].
    pub strata: Option<PathBuf>,
    pub virtiofsd: Option<PathBuf>,
    /// Refuse where `/dev/kvm` is not hardware-backed (true but in tests of the process
    /// handling on a PVM host, where the guest kernel stops at its first `int3`).
    pub require_hardware_kvm: bool,
}

impl Default for StrataVmm {
    fn default() -> Self {
        StrataVmm {
            strata: None,
            virtiofsd: None,
            require_hardware_kvm: true,
        }
    }
}

/// Why the driver cannot boot a Linux guest here, if it cannot.
pub fn unsupported_here() -> Option<String> {
    no_hardware_kvm().map(|what| {
        format!(
            "the strata driver needs hardware virtualisation (kvm_intel or kvm_amd) and {what}; \
             use driver = \"qemu\" in the [microvm] section of the configuration"
        )
    })
}

/// The `strata` binary: `explicit`, else beside the running executable (the shim and `strata`
/// are installed together), else [`tools::find`].
fn find_strata(explicit: Option<&Path>) -> Result<PathBuf, Error> {
    if explicit.is_none() {
        if let Some(p) = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(|d| d.join(Tool::Strata.name())))
            .filter(|p| p.is_file())
        {
            return Ok(p);
        }
    }
    tools::find(Tool::Strata, explicit)
}

impl StrataVmm {
    /// `strata`'s arguments for `spec` (without the program).
    fn vmm_args(spec: &VmSpec, paths: &Paths) -> Vec<String> {
        let mut a: Vec<String> = vec!["vm".into(), "run".into()];
        let mut push = |k: &str, v: String| {
            a.push(k.into());
            a.push(v);
        };
        push("--kernel", spec.kernel.display().to_string());
        push("--initrd", spec.initrd.display().to_string());
        let extra = format!("{MACHINE_CMDLINE} {}", spec.extra_cmdline.trim());
        push("--cmdline", kernel_cmdline(extra.trim()));
        push("--mem", spec.memory_mib.to_string());
        push("--vcpus", spec.vcpus.clamp(1, 255).to_string());
        push("--vsock", paths.vsock.display().to_string());
        push("--fs", format!("{SHARE_TAG}={}", paths.virtiofs.display()));
        for (fd, mac) in &spec.taps {
            push("--net", format!("{fd},{mac}"));
        }
        a
    }

    fn launch(&self, spec: &VmSpec, bins: [PathBuf; 2], parts: &mut Parts) -> Result<(), String> {
        let [strata, virtiofsd] = bins;
        let deadline = Instant::now() + START_TIMEOUT;
        vmproc::start_virtiofsd(parts, &virtiofsd, &spec.shared_dir)?;
        let virtiofs = parts.paths.virtiofs.clone();
        parts.wait_for_files(&[&virtiofs], deadline)?;

        let mut cmd = Command::new(&strata);
        cmd.args(Self::vmm_args(spec, &parts.paths));
        process::inherit_fds(&mut cmd, spec.taps.iter().map(|(fd, _)| *fd).collect());
        parts.spawn(STRATA_VMM_NAME, cmd, Role::VmmConsoleOnStdout)?;
        // The VMM binds the vsock socket once its devices are built (virtio-fs connected),
        // right before its vCPUs start.
        let vsock = parts.paths.vsock.clone();
        parts.wait_for_files(&[&vsock], deadline)?;
        vmproc::record_descendants(parts)
    }
}

impl Hypervisor for StrataVmm {
    fn name(&self) -> &'static str {
        "strata"
    }

    fn start(&self, spec: &VmSpec) -> Result<Box<dyn Vm>, Error> {
        if self.require_hardware_kvm {
            if let Some(why) = unsupported_here() {
                return Err(Error::NoAccelerator(why));
            }
        }
        vmproc::check_spec(spec)?;
        let bins = [
            find_strata(self.strata.as_deref())?,
            tools::find(Tool::Virtiofsd, self.virtiofsd.as_deref())?,
        ];
        vmproc::start(spec, "strata", Accel::Kvm, |parts| {
            self.launch(spec, bins, parts)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line() {
        let dir = Path::new("/run/strata/p");
        let paths = Paths::new(dir).unwrap();
        let spec = VmSpec {
            id: "pod".into(),
            state_dir: dir.into(),
            kernel: "/k".into(),
            initrd: "/i".into(),
            vcpus: 2,
            memory_mib: 256,
            shared_dir: "/s".into(),
            cgroups: Vec::new(),
            allow_tcg: false,
            extra_cmdline: " quiet ".into(),
            taps: vec![(7, "02:00:00:00:00:01".into())],
        };
        let a = StrataVmm::vmm_args(&spec, &paths).join(" ");
        for want in [
            "vm run --kernel /k --initrd /i",
            "--cmdline console=ttyS0 reboot=k panic=1 strata.share=strata pci=off i8042.noaux i8042.nomux i8042.dumbkbd quiet",
            "--mem 256 --vcpus 2",
            "--vsock /run/strata/p/vsock.sock",
            "--fs strata=/run/strata/p/virtiofs.sock",
            "--net 7,02:00:00:00:00:01",
        ] {
            assert!(a.contains(want), "{want:?} not in {a}");
        }
    }

    #[test]
    fn refused_with_the_reason_where_kvm_is_not_hardware() {
        match unsupported_here() {
            None => assert!(no_hardware_kvm().is_none()),
            Some(why) => {
                assert!(why.contains("hardware virtualisation"), "{why}");
                assert!(why.contains("driver = \"qemu\""), "{why}");
            }
        }
    }
}
