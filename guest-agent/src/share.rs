//! The pod's virtio-fs share: the host shares one directory per pod with the guest, named by
//! the tag `strata.share=<tag>` on the kernel command line gives; PID 1 mounts it at
//! [`SHARE_DIR`], where each container's bundle is `<id>/config.json` and `<id>/rootfs/`
//! (already writable on the host side), and `CreateContainer` takes `SHARE_DIR/<id>`.
//!
//! A failed mount does not stop the agent: it is printed on the console and kept, and a
//! `CreateContainer` of a bundle under the share answers `FAILED_PRECONDITION` with it.

use std::path::Path;
use std::sync::Mutex;

use nix::mount::{mount, MsFlags};
use strata_backend::Error;

/// Where the share is mounted in the guest.
pub const SHARE_DIR: &str = "/run/strata/shared";

/// Why the share is not mounted, when PID 1 tried and failed.
static FAILURE: Mutex<Option<String>> = Mutex::new(None);

/// The share's tag on the kernel command line (`strata.share=TAG`), if any.
pub fn tag(cmdline: &str) -> Option<&str> {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("strata.share="))
        .filter(|t| !t.is_empty())
}

/// Mounts the virtio-fs share tagged `tag` at [`SHARE_DIR`]; on failure, returns (and keeps)
/// the reason.
pub fn mount_share(tag: &str) -> Result<(), String> {
    let r = std::fs::create_dir_all(SHARE_DIR)
        .map_err(|e| format!("creating {SHARE_DIR}: {e}"))
        .and_then(|()| {
            mount(
                Some(tag),
                SHARE_DIR,
                Some("virtiofs"),
                MsFlags::empty(),
                None::<&str>,
            )
            .map_err(|e| format!("mounting the virtio-fs share {tag:?} on {SHARE_DIR}: {e}"))
        });
    if let Err(e) = &r {
        *FAILURE.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.clone());
    }
    r
}

/// Whether a virtio-fs file system is mounted at [`SHARE_DIR`].
pub fn mounted() -> bool {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.get(1) == Some(&SHARE_DIR) && f.get(2) == Some(&"virtiofs")
    })
}

/// A bundle under [`SHARE_DIR`] needs the share mounted: `FailedPrecondition` saying why it is
/// not. Other bundles pass.
pub fn check_bundle(bundle: &Path) -> Result<(), Error> {
    if !bundle.starts_with(SHARE_DIR) || mounted() {
        return Ok(());
    }
    let why = FAILURE
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .unwrap_or_else(|| "no strata.share=<tag> on the kernel command line".into());
    Err(Error::FailedPrecondition(format!(
        "bundle {}: the pod's virtio-fs share is not mounted at {SHARE_DIR} ({why})",
        bundle.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_from_the_command_line() {
        assert_eq!(
            tag("console=ttyS0 strata.share=strata quiet"),
            Some("strata")
        );
        assert_eq!(tag("strata.share=pod-1"), Some("pod-1"));
        assert_eq!(tag("strata.share= quiet"), None);
        assert_eq!(tag("strata.shared=x strata.selftest=agent"), None);
        assert_eq!(tag(""), None);
    }

    #[test]
    fn bundles_outside_the_share_need_no_share() {
        assert!(check_bundle(Path::new("/run/strata/bundles/b/bundle")).is_ok());
        assert!(check_bundle(Path::new("/tmp/x")).is_ok());
        // "/run/strata/sharedX" is not under the share.
        assert!(check_bundle(Path::new("/run/strata/sharedX/c")).is_ok());
        if !mounted() {
            let e = check_bundle(Path::new("/run/strata/shared/c1")).unwrap_err();
            assert!(matches!(e, Error::FailedPrecondition(_)), "{e}");
            assert!(e.to_string().contains("not mounted"), "{e}");
        }
    }
}
