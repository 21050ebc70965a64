//! The runner's two extra descriptors: placing them at fds 3 and 4 in the child, taking them
//! over in the runner. The only `unsafe` of the crate besides the cache's deserialize.
#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::process::Command;

/// The control pipe's read end in the runner.
pub const CONTROL_FD: i32 = 3;
/// The status pipe's write end in the runner.
pub const STATUS_FD: i32 = 4;

/// Arranges for `control` and `status` to be fds 3 and 4 of the child `cmd` spawns; the
/// returned duplicates must stay open until spawn has returned.
pub fn pass_pipes(
    cmd: &mut Command,
    control: &OwnedFd,
    status: &OwnedFd,
) -> std::io::Result<Vec<OwnedFd>> {
    strata_backend::spawn::pass_fds(
        cmd,
        &[(control.as_fd(), CONTROL_FD), (status.as_fd(), STATUS_FD)],
    )
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
