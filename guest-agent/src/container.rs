//! Running a command in a rootfs that reached the guest as a block device: the image is mounted
//! read-only, made writable with an overlay on tmpfs, and the command runs chrooted in fresh
//! mount, UTS, IPC and PID namespaces. This is the agent's first, minimal container (its
//! self-test); OCI containers go through [`crate::containers`], on the same overlay.
//!
//! No `fork` in this crate: the namespaced part runs in a re-executed agent
//! (`--container-init ROOT ARGV...`), which unshares, chroots and spawns the command as PID 1 of
//! its new PID namespace.

use std::path::Path;
use std::process::Command;

use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};

/// Errors preparing or running the container.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("mounting {what} on {target}")]
    Mount {
        what: String,
        target: String,
        #[source]
        source: nix::Error,
    },
    #[error("reading the image on {device}")]
    Image {
        device: String,
        #[source]
        source: std::io::Error,
    },
    #[error("creating {path}")]
    Mkdir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{step}")]
    Namespaces {
        step: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("running {cmd}")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
}

const LOWER: &str = "/run/strata/lower";
const RW: &str = "/run/strata/rw";
const ROOTFS: &str = "/run/strata/rootfs";

fn mkdir(p: &str) -> Result<(), ContainerError> {
    std::fs::create_dir_all(p).map_err(|source| ContainerError::Mkdir {
        path: p.to_string(),
        source,
    })
}

fn do_mount(
    src: &str,
    target: &str,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), ContainerError> {
    mount(Some(src), target, Some(fstype), flags, data).map_err(|source| ContainerError::Mount {
        what: format!("{src} ({fstype})"),
        target: target.to_string(),
        source,
    })
}

/// The file system on `device`, by its superblock's magic: erofs (0xe0f5e1e2 at 1024) or ext4
/// (0xef53 at 1080).
pub fn detect_fs(device: &str) -> Result<&'static str, ContainerError> {
    use std::io::Read;
    let mut sb = [0u8; 1084];
    let read = std::fs::File::open(device).and_then(|mut f| f.read_exact(&mut sb));
    read.map_err(|source| ContainerError::Image {
        device: device.to_string(),
        source,
    })?;
    if sb[1024..1028] == 0xe0f5_e1e2u32.to_le_bytes() {
        Ok("erofs")
    } else if sb[1080..1082] == 0xef53u16.to_le_bytes() {
        Ok("ext4")
    } else {
        Err(ContainerError::Image {
            device: device.to_string(),
            source: std::io::Error::other("neither an erofs nor an ext4 image"),
        })
    }
}

/// Mounts `device` (erofs or ext4) read-only and an overlay on tmpfs over it; returns the
/// writable root. Writes land in the tmpfs upper layer, never on the image.
pub fn prepare_rootfs(device: &str) -> Result<&'static str, ContainerError> {
    mount_overlay(device, Path::new(LOWER), Path::new(RW), Path::new(ROOTFS))?;
    Ok(ROOTFS)
}

/// Mounts `device` (erofs or ext4, by its magic) read-only on `lower`, a tmpfs on `rw`, and an
/// overlay of the two on `merged` (each directory created if missing); returns the file system
/// type of the image.
pub fn mount_overlay(
    device: &str,
    lower: &Path,
    rw: &Path,
    merged: &Path,
) -> Result<&'static str, ContainerError> {
    let (l, r, m) = (
        lower.display().to_string(),
        rw.display().to_string(),
        merged.display().to_string(),
    );
    for d in [&l, &r, &m] {
        mkdir(d)?;
    }
    let fstype = detect_fs(device)?;
    do_mount(device, &l, fstype, MsFlags::MS_RDONLY, None)?;
    do_mount("tmpfs", &r, "tmpfs", MsFlags::empty(), Some("mode=0755"))?;
    mkdir(&format!("{r}/upper"))?;
    mkdir(&format!("{r}/work"))?;
    let opts = format!("lowerdir={l},upperdir={r}/upper,workdir={r}/work");
    do_mount("overlay", &m, "overlay", MsFlags::empty(), Some(&opts))?;
    Ok(fstype)
}

/// Runs `argv` in `root` through a re-executed agent; returns its exit code (128 + signal if
/// killed).
pub fn run(root: &str, argv: &[String]) -> Result<i32, ContainerError> {
    let status = Command::new("/proc/self/exe")
        .arg("--container-init")
        .arg(root)
        .args(argv)
        .status()
        .map_err(|source| ContainerError::Spawn {
            cmd: argv.join(" "),
            source,
        })?;
    Ok(exit_code(status))
}

fn exit_code(s: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))
}

/// `--container-init ROOT ARGV...`: new namespaces, chroot, spawn, wait.
pub fn container_init(root: &Path, argv: &[String]) -> Result<i32, ContainerError> {
    let ns = |step, source| ContainerError::Namespaces { step, source };
    unshare(
        CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWIPC
            | CloneFlags::CLONE_NEWPID,
    )
    .map_err(|e| ns("unshare", e))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| ns("making mounts private", e))?;
    nix::unistd::sethostname("strata-container").map_err(|e| ns("sethostname", e))?;
    nix::unistd::chroot(root).map_err(|e| ns("chroot", e))?;
    nix::unistd::chdir("/").map_err(|e| ns("chdir", e))?;
    let Some((cmd, args)) = argv.split_first() else {
        return Ok(0);
    };
    let status = Command::new(cmd)
        .args(args)
        .env_clear()
        .env("PATH", "/bin:/sbin:/usr/bin:/usr/sbin")
        .status()
        .map_err(|source| ContainerError::Spawn {
            cmd: argv.join(" "),
            source,
        })?;
    Ok(exit_code(status))
}
