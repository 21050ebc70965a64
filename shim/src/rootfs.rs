//! Mounting the container's root filesystem (the snapshot containerd hands over) into the
//! bundle, and taking it down again.

use std::path::Path;

use containerd_shim::protos::types::mount::Mount;
use strata_backend::Error;

/// Mounts each of containerd's mounts on `<bundle>/rootfs`.
pub fn mount(bundle: &Path, mounts: &[Mount]) -> Result<(), Error> {
    let target = bundle.join("rootfs");
    if mounts.is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(&target).map_err(|e| Error::io("create rootfs mount point", e))?;
    for m in mounts {
        if let Err(e) = containerd_shim::mount::mount_rootfs(
            Some(m.type_.as_str()).filter(|s| !s.is_empty()),
            Some(m.source.as_str()).filter(|s| !s.is_empty()),
            &m.options,
            &target,
        ) {
            unmount(bundle);
            return Err(Error::InvalidArgument(format!(
                "mount rootfs ({} from {}): {e}",
                m.type_, m.source
            )));
        }
    }
    Ok(())
}

/// Unmounts `<bundle>/rootfs` (all layers); a rootfs that is not mounted is left alone.
pub fn unmount(bundle: &Path) {
    let target = bundle.join("rootfs");
    for _ in 0..16 {
        match nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(_) => break,
        }
    }
}
