//! PID 1's duties: the basic mounts and powering the VM off (the pod's share is
//! [`crate::share`]). (Orphans are reaped by
//! `strata-backend`'s reaper, which the service starts.)

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::mount::{mount, MsFlags};
use nix::sys::reboot::{reboot, RebootMode};

/// Errors of PID 1's set-up.
#[derive(Debug, thiserror::Error)]
pub enum Pid1Error {
    #[error("mounting {what} on {target}")]
    Mount {
        what: &'static str,
        target: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("creating {0}")]
    Mkdir(&'static str, #[source] std::io::Error),
}

/// (source, target, fstype, flags, data)
const MOUNTS: &[(&str, &str, &str, u64, &str)] = &[
    ("proc", "/proc", "proc", 0, ""),
    ("sysfs", "/sys", "sysfs", 0, ""),
    ("devtmpfs", "/dev", "devtmpfs", 0, "mode=0755"),
    ("tmpfs", "/run", "tmpfs", 0, "mode=0755"),
    ("cgroup2", "/sys/fs/cgroup", "cgroup2", 0, ""),
];

/// Mounts /proc, /sys, /dev, /run and cgroup2. A file system already mounted (EBUSY) is fine.
pub fn mount_basics() -> Result<(), Pid1Error> {
    for &(what, target, fstype, flags, data) in MOUNTS {
        std::fs::create_dir_all(target).map_err(|e| Pid1Error::Mkdir(target, e))?;
        let data = if data.is_empty() { None } else { Some(data) };
        match mount(
            Some(what),
            Path::new(target),
            Some(fstype),
            MsFlags::from_bits_truncate(flags) | MsFlags::MS_NOSUID,
            data,
        ) {
            Ok(()) | Err(nix::Error::EBUSY) => {}
            Err(source) => {
                return Err(Pid1Error::Mount {
                    what,
                    target,
                    source,
                })
            }
        }
    }
    Ok(())
}

/// Which of the basic mounts are in place, by file-system type.
pub fn mounted_basics() -> Vec<&'static str> {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    MOUNTS
        .iter()
        .filter(|(_, target, fstype, _, _)| {
            mounts.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.get(1) == Some(target) && f.get(2) == Some(fstype)
            })
        })
        .map(|(_, _, fstype, _, _)| *fstype)
        .collect()
}

/// The mounts `Ping` reports: the basic ones in place, then "virtiofs" if the pod's share is
/// mounted ([`crate::share`]).
pub fn mounts() -> Vec<&'static str> {
    let mut m = mounted_basics();
    if crate::share::mounted() {
        m.push("virtiofs");
    }
    m
}

/// A one-line report of PID 1's state: its PID and which of the basic mounts are in place
/// (`strata.selftest=1` on the kernel command line prints it and powers off).
pub fn selftest() -> String {
    format!(
        "selftest pid={} mounts={}",
        std::process::id(),
        mounts().join(",")
    )
}

/// Moves PID 1 off the initramfs onto a tmpfs copy of it (what `switch_root` does), because
/// `pivot_root(2)`, which container runtimes use, refuses to run from the initramfs (rootfs).
/// Returns false, changing nothing, when `/` is not the initramfs.
pub fn leave_initramfs() -> Result<bool, Pid1Error> {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let root_fs = mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.get(1) == Some(&"/"))
        .map(|f| f.get(2).copied().unwrap_or(""))
        .next_back()
        .unwrap_or("");
    if root_fs != "rootfs" && root_fs != "ramfs" {
        return Ok(false);
    }
    const NEW: &str = "/newroot";
    std::fs::create_dir_all(NEW).map_err(|e| Pid1Error::Mkdir(NEW, e))?;
    mount(
        Some("tmpfs"),
        NEW,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("mode=0755"),
    )
    .map_err(|source| Pid1Error::Mount {
        what: "tmpfs",
        target: NEW,
        source,
    })?;
    copy_tree(Path::new("/"), Path::new(NEW)).map_err(|e| Pid1Error::Mkdir(NEW, e))?;
    let step = |what: &'static str| {
        move |source| Pid1Error::Mount {
            what,
            target: "/",
            source,
        }
    };
    nix::unistd::chdir(NEW).map_err(step("chdir"))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>).map_err(step("move"))?;
    nix::unistd::chroot(".").map_err(step("chroot"))?;
    nix::unistd::chdir("/").map_err(step("chdir"))?;
    Ok(true)
}

/// Copies the initramfs' own files (not the mounted /proc, /sys, /dev, /run, nor the target).
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let src = e.path();
        if from == Path::new("/")
            && ["/proc", "/sys", "/dev", "/run", "/newroot"]
                .iter()
                .any(|p| src == Path::new(p))
        {
            std::fs::create_dir_all(to.join(e.file_name()))?;
            continue;
        }
        let dst = to.join(e.file_name());
        let md = std::fs::symlink_metadata(&src)?;
        if md.file_type().is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dst)?;
        } else if md.is_dir() {
            std::fs::create_dir_all(&dst)?;
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(md.mode()))?;
            copy_tree(&src, &dst)?;
        } else if md.is_file() {
            std::fs::copy(&src, &dst)?;
        }
    }
    Ok(())
}

/// Syncs and restarts the machine, which Strata's VMM (with `reboot=k`) takes as a clean
/// shutdown.
pub fn power_off() -> ! {
    nix::unistd::sync();
    let _ = reboot(RebootMode::RB_AUTOBOOT);
    // reboot(2) does not return on success.
    std::process::exit(1)
}
