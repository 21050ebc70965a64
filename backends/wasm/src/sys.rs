//! The runner's two extra descriptors: placing them at fds 3 and 4 in the child, taking them
//! over in the runner. The only `unsafe` of the crate besides the cache's deserialize.
#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// The control pipe's read end in the runner.
pub const CONTROL_FD: i32 = 3;
/// The status pipe's write end in the runner.
pub const STATUS_FD: i32 = 4;

/// Arranges for `control` and `status` to be fds 3 and 4 of the child `cmd` spawns.
///
/// Both are first duplicated above 9 (close-on-exec), so that neither can be one of the
/// target numbers when the child's `dup2` runs.
pub fn pass_pipes(
    cmd: &mut Command,
    control: &OwnedFd,
    status: &OwnedFd,
) -> std::io::Result<(OwnedFd, OwnedFd)> {
    let hi = |fd: &OwnedFd| -> std::io::Result<OwnedFd> {
        let raw = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(10))?;
        // SAFETY: F_DUPFD_CLOEXEC just returned this new descriptor; nothing else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(raw) })
    };
    let (c, s) = (hi(control)?, hi(status)?);
    let (craw, sraw) = (c.as_raw_fd(), s.as_raw_fd());
    // SAFETY: the closure runs in the forked child before exec and calls only dup2, which is
    // async-signal-safe; it touches no memory of the parent's other threads. Both source
    // descriptors are >= 10 and stay open in the parent until after spawn returns (the
    // caller keeps the returned handles), so they are valid in the child.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(craw, CONTROL_FD) < 0 || libc::dup2(sraw, STATUS_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok((c, s))
}

/// In the runner: takes ownership of fds 3 and 4 (close-on-exec set, so a module can never
/// hand them on).
pub fn runner_pipes() -> (File, File) {
    for fd in [CONTROL_FD, STATUS_FD] {
        let _ = nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
    }
    // SAFETY: the shim spawned this process with its control and status pipes at fds 3 and
    // 4 (`pass_pipes`); this runs first thing in the runner, before anything else could open
    // or own those numbers, and is called once.
    unsafe { (File::from_raw_fd(CONTROL_FD), File::from_raw_fd(STATUS_FD)) }
}
