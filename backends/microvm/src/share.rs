//! The pod's shared directory as a mount point of its own with shared propagation, as Kata does
//! with its `kataShared` directory.
//!
//! virtiofsd serves the directory from a mount namespace of its own (its sandbox makes every
//! mount a slave, then clones the shared directory's tree). The host bind-mounts each
//! container's rootfs into the directory after virtiofsd started; those mounts reach
//! virtiofsd's namespace, and so the guest, only if the directory is a shared mount whose
//! peer group virtiofsd's copy is a slave of. A directory on a private mount (this machine's
//! root is one) is therefore bound onto itself and made `rshared` first.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::Error;

/// How [`make_shared`] left the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shared {
    /// Bound onto itself here: [`release`] unmounts it (and everything mounted under it).
    Bound(PathBuf),
    /// Already a mount point: made `rshared`, left mounted.
    Existing(PathBuf),
}

impl Shared {
    pub fn path(&self) -> &Path {
        match self {
            Shared::Bound(p) | Shared::Existing(p) => p,
        }
    }
}

/// Makes `dir` a mount point with shared propagation (recursively).
pub fn make_shared(dir: &Path) -> Result<Shared, Error> {
    let dir = std::fs::canonicalize(dir)
        .map_err(|e| Error::io(format!("the shared directory {}", dir.display()), e))?;
    let what = |op: &str| format!("{op} the shared directory {}", dir.display());
    let existing = is_mount_point(&dir)?;
    if !existing {
        mount(
            Some(&dir),
            &dir,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| Error::io(what("binding onto itself"), e.into()))?;
    }
    if let Err(e) = mount(
        None::<&str>,
        &dir,
        None::<&str>,
        MsFlags::MS_SHARED | MsFlags::MS_REC,
        None::<&str>,
    ) {
        if !existing {
            let _ = umount2(&dir, MntFlags::MNT_DETACH);
        }
        return Err(Error::io(what("making rshared"), e.into()));
    }
    Ok(if existing {
        Shared::Existing(dir)
    } else {
        Shared::Bound(dir)
    })
}

/// Undoes [`make_shared`]'s bind (lazily: what the host mounted under it goes with it).
pub fn release(dir: &Path) -> Result<(), Error> {
    match umount2(dir, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(Error::io(
            format!("unmounting the shared directory {}", dir.display()),
            e.into(),
        )),
    }
}

/// Whether some mount's mount point is `dir` (canonical) in this mount namespace.
fn is_mount_point(dir: &Path) -> Result<bool, Error> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| Error::io("reading /proc/self/mountinfo", e))?;
    Ok(info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|p| Path::new(&unescape(p)) == dir))
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape(r"/a\040b\134c"), "/a b\\c");
        assert_eq!(unescape(r"/plain"), "/plain");
        assert_eq!(unescape(r"/end\04"), r"/end\04");
    }

    /// The propagation itself, through virtiofsd into a guest, is tests/qemu.rs's.
    #[test]
    fn a_directory_is_bound_shared_and_released() {
        if !nix::unistd::geteuid().is_root() {
            return strata_backend::testing::skip("share", "mounting needs root");
        }
        let dir = std::env::temp_dir().join(format!("strata-share-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let dir = std::fs::canonicalize(&dir).unwrap();
        let shared = make_shared(&dir).unwrap();
        assert_eq!(shared, Shared::Bound(dir.clone()));
        let line = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .find(|l| l.split(' ').nth(4) == dir.to_str())
            .map(str::to_string)
            .unwrap();
        assert!(line.contains(" shared:"), "{line}");
        // A second call finds the mount point and leaves it to its owner.
        assert_eq!(make_shared(&dir).unwrap(), Shared::Existing(dir.clone()));
        release(&dir).unwrap();
        assert!(!is_mount_point(&dir).unwrap());
        release(&dir).unwrap();
        std::fs::remove_dir(&dir).unwrap();
    }
}
