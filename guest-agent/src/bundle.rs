//! `MountBundle`: an OCI bundle (config.json and rootfs/) that reached the guest as a virtio-blk
//! disk, an erofs or ext4 image as `strata_vmm::rootfs` builds it. The image is mounted
//! read-only with an overlay on tmpfs over it (writes never reach the image), under
//! `<bundles>/<name>/bundle`, which `CreateContainer` then takes as its bundle.
//!
//! Only the guest's PID 1 mounts: an agent run as a host process (the tests) refuses, so that no
//! request can mount the host's own disks. Device names are `/dev/vd` and one or two letters.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::mount::{umount2, MntFlags};
use strata_backend::Error;

use crate::chain;
use crate::container::mount_overlay;

/// Serialises mounts, so that two requests for one name cannot both pass the existence check.
static MOUNTING: Mutex<()> = Mutex::new(());

/// A bundle name: 1 to 64 of `[A-Za-z0-9_.-]`, not `.` or `..`.
fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// `/dev/vd` and one or two lowercase letters (virtio-blk disks, in command-line order).
fn valid_device(device: &str) -> bool {
    device
        .strip_prefix("/dev/vd")
        .is_some_and(|s| (1..=2).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_lowercase()))
}

/// Mounts the bundle on `device` as `<under>/<name>/bundle`; returns that directory and the
/// image's file system ("erofs" or "ext4"). Nothing is left mounted or created on failure.
pub fn mount(device: &str, name: &str, under: &Path) -> Result<(PathBuf, &'static str), Error> {
    if !valid_name(name) {
        return Err(Error::InvalidArgument(format!(
            "bundle name {name:?}: 1 to 64 of A-Z a-z 0-9 _ . -"
        )));
    }
    if !valid_device(device) {
        return Err(Error::InvalidArgument(format!(
            "device {device:?}: a virtio-blk disk, /dev/vdX"
        )));
    }
    if std::process::id() != 1 {
        return Err(Error::FailedPrecondition(
            "MountBundle is served by the guest's PID 1 only: an agent run as a host process \
             does not mount disks"
                .into(),
        ));
    }
    use std::os::unix::fs::FileTypeExt;
    match std::fs::metadata(device) {
        Ok(m) if m.file_type().is_block_device() => {}
        Ok(_) => {
            return Err(Error::InvalidArgument(format!(
                "{device} is not a block device"
            )))
        }
        Err(_) => return Err(Error::NotFound(format!("disk {device}"))),
    }
    let _guard = MOUNTING.lock().unwrap_or_else(|p| p.into_inner());
    let dir = under.join(name);
    if dir.exists() {
        return Err(Error::AlreadyExists(format!("bundle {name}")));
    }
    let (lower, rw, merged) = (dir.join("lower"), dir.join("rw"), dir.join("bundle"));
    let undo = || {
        for m in [&merged, &rw, &lower] {
            let _ = umount2(m.as_path(), MntFlags::MNT_DETACH);
        }
        let _ = std::fs::remove_dir_all(&dir);
    };
    let fstype = match mount_overlay(device, &lower, &rw, &merged) {
        Ok(t) => t,
        Err(e) => {
            undo();
            return Err(Error::Other(format!("mounting {device}: {}", chain(&e))));
        }
    };
    if !merged.join("config.json").is_file() {
        undo();
        return Err(Error::InvalidArgument(format!(
            "the {fstype} image on {device} is not a bundle (no config.json at its root)"
        )));
    }
    Ok((merged, fstype))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_devices() {
        for ok in ["busybox", "a", "pod-1_c.2"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "../x", "a b", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
        for ok in ["/dev/vda", "/dev/vdz", "/dev/vdab"] {
            assert!(valid_device(ok), "{ok}");
        }
        for bad in [
            "/dev/vd",
            "/dev/vda1",
            "/dev/sda",
            "/dev/vdA",
            "/dev/vdabc",
            "/dev/vd/../sda",
            "vda",
            "/etc/passwd",
        ] {
            assert!(!valid_device(bad), "{bad}");
        }
    }
}
