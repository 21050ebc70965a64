//! Read-only directories the kernel enforces: in a mount namespace of the runner's own, each
//! read-only preopen's directory is bind-mounted read-only over itself (its submounts too).
//! The module then gets the directory with write permission and a write there fails in the
//! kernel with EROFS ("Read-only file system"), as under runc, instead of wasmtime-wasi's
//! EPERM for a preopen without write rights.
//!
//! It must never change the host's mounts: the namespace's mounts are made slaves before
//! anything is mounted, so nothing propagates out (the host's unmounts still propagate in).

use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::statvfs::{statvfs, FsFlags};

/// Makes every directory of `dirs` (host paths) read-only for this process and its future
/// children only. Must run while the process has one thread (`unshare(CLONE_NEWNS)` implies
/// `CLONE_FS`). On an error some of them may be read-only already, in this namespace only.
pub fn make_read_only(dirs: &[&Path]) -> Result<(), String> {
    if dirs.is_empty() {
        return Ok(());
    }
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| format!("unshare(CLONE_NEWNS): {e}"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(|e| format!("making the runner's mounts slaves: {e}"))?;
    for dir in dirs {
        mount(
            Some(*dir),
            *dir,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| format!("bind-mounting {}: {e}", dir.display()))?;
        let mut points = vec![dir.to_path_buf()];
        points.extend(submounts(dir)?);
        for point in points {
            remount_read_only(&point)?;
        }
    }
    Ok(())
}

/// Remounts the bind mount at `point` read-only, keeping its nosuid, nodev and noexec.
fn remount_read_only(point: &Path) -> Result<(), String> {
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    if let Ok(st) = statvfs(point) {
        let kept = [
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        ];
        for (has, keep) in kept {
            if st.flags().contains(has) {
                flags |= keep;
            }
        }
    }
    mount(None::<&str>, point, None::<&str>, flags, None::<&str>)
        .map_err(|e| format!("remounting {} read-only: {e}", point.display()))
}

/// The mount points strictly below `dir` in this namespace.
fn submounts(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("reading /proc/self/mountinfo: {e}"))?;
    Ok(mount_points(&text)
        .filter(|p| p != dir && p.starts_with(dir))
        .collect())
}

/// The mount points (fifth field, octal escapes undone) of a mountinfo text.
fn mount_points(mountinfo: &str) -> impl Iterator<Item = PathBuf> + '_ {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape(p)))
}

/// Undoes mountinfo's `\NNN` octal escapes (space, tab, newline, backslash).
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let n = b[i + 1..i + 4]
                .iter()
                .fold(0u32, |n, d| n * 8 + u32::from(d - b'0'));
            out.push(u8::try_from(n).unwrap_or(b'?'));
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
    fn mountinfo_points_are_unescaped() {
        let text = "22 1 0:21 / / rw shared:1 - ext4 /dev/sda1 rw\n\
                    40 22 0:40 / /run/a\\040b rw shared:2 - tmpfs tmpfs rw\n";
        let points: Vec<PathBuf> = mount_points(text).collect();
        assert_eq!(points, [PathBuf::from("/"), PathBuf::from("/run/a b")]);
        assert_eq!(unescape("x\\134y\\011"), "x\\y\t");
    }
}
