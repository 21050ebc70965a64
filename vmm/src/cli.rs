//! `strata vm run`: boots a machine with its console on stdout and returns the exit status.
//! The `strata` binary parses the command line and calls [`vm_run`].

use std::path::PathBuf;
use std::time::Duration;

use crate::devices::virtio::block::DiskConfig;
use crate::devices::virtio::fs::FsConfig;
use crate::devices::virtio::net::NetConfig;
use crate::devices::virtio::vsock::VsockConfig;
use crate::machine::{Exit, Machine, MachineConfig, DEFAULT_CMDLINE};
use crate::Error;

/// The arguments of `strata vm run`.
#[derive(Clone, Debug)]
pub struct VmRunArgs {
    /// An ELF vmlinux with a PVH note, or a 64-bit bzImage.
    pub kernel: PathBuf,
    /// An initramfs.
    pub initrd: Option<PathBuf>,
    /// The kernel command line; [`DEFAULT_CMDLINE`] if not given.
    pub cmdline: Option<String>,
    /// Guest memory in MiB.
    pub mem_mib: u32,
    /// vCPUs.
    pub vcpus: u8,
    /// Disks, each `PATH` or `PATH:ro`, in order (`/dev/vda`, `/dev/vdb`, ...).
    pub disks: Vec<String>,
    /// The host Unix socket of the vsock device.
    pub vsock: Option<PathBuf>,
    /// Network devices, each `FD,MAC` or `tap=FD,mac=MAC` (`--net`): a tap descriptor this
    /// process inherited, opened with `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`, and the guest's MAC.
    pub nets: Vec<String>,
    /// virtio-fs devices, each `TAG=SOCKET` (`--fs`): the vhost-user socket of a back end
    /// (virtiofsd) that is already listening; the guest mounts the tag.
    pub fs: Vec<String>,
    /// The guest's vsock CID.
    pub guest_cid: u64,
    /// Give up (and report the console's tail) after this long.
    pub timeout: Option<Duration>,
    /// Forward stdin to the guest console.
    pub console_input: bool,
}

impl VmRunArgs {
    /// Defaults: 128 MiB, one vCPU, CID 3, no timeout.
    pub fn new(kernel: impl Into<PathBuf>) -> Self {
        VmRunArgs {
            kernel: kernel.into(),
            initrd: None,
            cmdline: None,
            mem_mib: 128,
            vcpus: 1,
            disks: Vec::new(),
            vsock: None,
            nets: Vec::new(),
            fs: Vec::new(),
            guest_cid: 3,
            timeout: None,
            console_input: true,
        }
    }

    /// The machine these arguments describe, its console echoed to stdout. A malformed `--net`
    /// is an error here; a descriptor that is not a tap, when the machine starts.
    pub fn machine_config(&self) -> Result<MachineConfig, Error> {
        let mut cfg = MachineConfig::new(&self.kernel);
        cfg.initrd = self.initrd.clone();
        cfg.cmdline = self
            .cmdline
            .clone()
            .unwrap_or_else(|| DEFAULT_CMDLINE.to_string());
        cfg.mem_mib = self.mem_mib;
        cfg.vcpus = self.vcpus;
        cfg.disks = self.disks.iter().map(|d| DiskConfig::parse(d)).collect();
        cfg.vsock = self.vsock.clone().map(|uds_path| VsockConfig {
            guest_cid: self.guest_cid,
            uds_path,
        });
        cfg.nets = self
            .nets
            .iter()
            .map(|n| NetConfig::parse(n))
            .collect::<Result<_, _>>()?;
        cfg.fs = self
            .fs
            .iter()
            .map(|f| FsConfig::parse(f))
            .collect::<Result<_, _>>()?;
        cfg.console_echo = Some(Box::new(std::io::stdout()));
        Ok(cfg)
    }
}

/// Boots the machine and waits for it. `Ok(0)` when the guest shut down cleanly; an error (with
/// the console's tail where there is one) otherwise.
pub fn vm_run(args: &VmRunArgs) -> Result<i32, Error> {
    let mut machine = Machine::start(args.machine_config()?)?;
    if args.console_input {
        let input = machine.console_input();
        // Detached: it ends with stdin's EOF or with the process.
        let _ = std::thread::Builder::new()
            .name("strata-stdin".into())
            .spawn(move || forward_stdin(input));
    }
    match machine.wait(args.timeout)? {
        Exit::Reset => Ok(0),
    }
}

fn forward_stdin(input: crate::machine::ConsoleInput) {
    use std::io::Read;
    let mut buf = [0u8; 64];
    let mut stdin = std::io::stdin();
    while let Ok(n) = stdin.read(&mut buf) {
        if n == 0 {
            return;
        }
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            let sent = input.send(rest);
            rest = &rest[sent..];
            if sent == 0 {
                // The guest has not drained the FIFO yet.
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}
