//! Finding the helper binaries of the drivers, and the guest image the scripts build.
//!
//! A helper is looked for in this order: the path the configuration names (and nowhere else
//! when it names one), [`TOOLS_BIN`] (where `scripts/install-deps` builds rust-vmm's
//! `vhost-device-vsock` and `virtiofsd`), the tool's own extra places (`/usr/libexec` for
//! distribution builds of virtiofsd), then `PATH`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Error;

/// Where `scripts/install-deps` installs the helpers it builds with `cargo install`.
pub const TOOLS_BIN: &str = "/var/cache/strata/tools/bin";
/// Where `scripts/build-initramfs` writes the guest's initramfs by default.
pub const GUEST_INITRAMFS: &str = "/var/cache/strata/guest-initramfs/initramfs.cpio.gz";

/// A helper binary of a driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// `qemu-system-x86_64` (Debian's `qemu-system-x86`).
    Qemu,
    /// `virtiofsd`, the vhost-user virtio-fs device.
    Virtiofsd,
    /// `vhost-device-vsock`, the vhost-user vsock device with a hybrid Unix socket.
    VhostVsock,
    /// `strata`, whose `vm run` is Strata's own VMM (the strata driver).
    Strata,
}

impl Tool {
    /// The binary's file name.
    pub fn name(self) -> &'static str {
        match self {
            Tool::Qemu => "qemu-system-x86_64",
            Tool::Virtiofsd => "virtiofsd",
            Tool::VhostVsock => "vhost-device-vsock",
            Tool::Strata => "strata",
        }
    }

    /// Directories searched after [`TOOLS_BIN`] and before `PATH`.
    fn extra_dirs(self) -> &'static [&'static str] {
        match self {
            Tool::Virtiofsd => &["/usr/libexec"],
            Tool::Qemu | Tool::VhostVsock | Tool::Strata => &[],
        }
    }

    fn hint(self) -> &'static str {
        match self {
            Tool::Qemu => "scripts/install-deps installs it (Debian's qemu-system-x86)",
            Tool::Virtiofsd => {
                "scripts/install-deps installs it (cargo install virtiofsd into /var/cache/strata/tools)"
            }
            Tool::VhostVsock => {
                "scripts/install-deps installs it (cargo install vhost-device-vsock into /var/cache/strata/tools)"
            }
            Tool::Strata => "it is built with the shim (cargo build --bins) and installed beside it",
        }
    }
}

/// The path of `tool`: `explicit` if given (it must exist), else the first of [`TOOLS_BIN`],
/// the tool's extra directories and `PATH` that holds it.
pub fn find(tool: Tool, explicit: Option<&Path>) -> Result<PathBuf, Error> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = [PathBuf::from(TOOLS_BIN)]
        .into_iter()
        .chain(tool.extra_dirs().iter().map(PathBuf::from))
        .chain(std::env::split_paths(&path))
        .collect();
    find_in(tool, explicit, &dirs)
}

fn find_in(tool: Tool, explicit: Option<&Path>, dirs: &[PathBuf]) -> Result<PathBuf, Error> {
    let missing = |looked: String| Error::MissingTool {
        name: tool.name(),
        looked,
        hint: tool.hint(),
    };
    if let Some(p) = explicit {
        return if is_executable(p) {
            Ok(p.to_path_buf())
        } else {
            Err(missing(format!("the configuration names {}", p.display())))
        };
    }
    dirs.iter()
        .map(|d| d.join(tool.name()))
        .find(|p| is_executable(p))
        .ok_or_else(|| {
            let looked: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
            missing(format!("looked in {}", looked.join(":")))
        })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The guest kernel that `scripts/build-guest-kernel` built for the fragment of the source tree
/// at `repo` (its `--cached` mode: the cache is keyed by the fragment's hash and the kernel
/// source's version), or None when it is not built yet.
pub fn built_guest_kernel(repo: &Path) -> Option<PathBuf> {
    let out = Command::new(repo.join("scripts/build-guest-kernel"))
        .arg("--cached")
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let path = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    path.is_file().then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explicit_path_is_used_alone() {
        let e = find(Tool::Qemu, Some(Path::new("/nonexistent/qemu"))).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("/nonexistent/qemu"), "{msg}");
        assert!(msg.contains("scripts/install-deps"), "{msg}");
        assert_eq!(
            find(Tool::Qemu, Some(Path::new("/bin/sh"))).unwrap(),
            Path::new("/bin/sh")
        );
    }

    #[test]
    fn directories_are_searched_in_order_and_a_miss_says_where_and_how() {
        let base = std::env::temp_dir().join(format!("strata-tools-{}", std::process::id()));
        let (a, b) = (base.join("a"), base.join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let dirs = [a.clone(), b.clone()];
        let msg = find_in(Tool::VhostVsock, None, &dirs)
            .unwrap_err()
            .to_string();
        assert!(msg.starts_with("vhost-device-vsock not found"), "{msg}");
        assert!(
            msg.contains(&format!("{}:{}", a.display(), b.display())),
            "{msg}"
        );
        assert!(msg.contains("scripts/install-deps"), "{msg}");

        // Not executable: skipped; executable in both: the first wins.
        use std::os::unix::fs::PermissionsExt;
        let write = |dir: &Path, mode| {
            let p = dir.join("virtiofsd");
            std::fs::write(&p, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p
        };
        write(&a, 0o644);
        let in_b = write(&b, 0o755);
        assert_eq!(find_in(Tool::Virtiofsd, None, &dirs).unwrap(), in_b);
        let in_a = write(&a, 0o755);
        assert_eq!(find_in(Tool::Virtiofsd, None, &dirs).unwrap(), in_a);
        std::fs::remove_dir_all(&base).unwrap();
    }
}
