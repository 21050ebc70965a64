//! Descriptors handed to a spawned child at the numbers it expects.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Arranges for each `(fd, number)` of `fds` to be descriptor `number` in the child `cmd`
/// spawns, open across its exec whatever close-on-exec flag `fd` has here. Returns the
/// duplicates the child's `dup2` reads from: keep them until `spawn` has returned.
///
/// The duplicates are made close-on-exec above every target number (and above 9), so that
/// no `dup2` in the child can overwrite a source another one still has to read.
pub fn pass_fds(
    cmd: &mut Command,
    fds: &[(BorrowedFd<'_>, RawFd)],
) -> std::io::Result<Vec<OwnedFd>> {
    let floor = fds.iter().map(|(_, n)| n + 1).max().unwrap_or(0).max(10);
    let held = fds
        .iter()
        .map(|(fd, _)| {
            let raw =
                nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(floor))?;
            // SAFETY: F_DUPFD_CLOEXEC just returned this new descriptor; nothing else owns it.
            Ok(unsafe { OwnedFd::from_raw_fd(raw) })
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    let plan: Vec<(RawFd, RawFd)> = held
        .iter()
        .zip(fds)
        .map(|(h, (_, n))| (h.as_raw_fd(), *n))
        .collect();
    // SAFETY: the closure runs in the forked child before exec and calls only dup2, which is
    // async-signal-safe, on its own copy of the descriptor table; `plan` was allocated before
    // the fork and is only read. Every source is above every target, and the caller keeps
    // the sources open until spawn has returned, so they are valid in the child.
    unsafe {
        cmd.pre_exec(move || {
            for &(src, dst) in &plan {
                if libc::dup2(src, dst) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    Ok(held)
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::fd::AsFd;
    use std::process::Command;

    use super::*;

    #[test]
    fn the_child_finds_each_descriptor_at_its_number() {
        // A close-on-exec pipe at fd 5 in the child, and one kept at its own number.
        let (r1, w1) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let (r2, w2) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let same = w2.as_raw_fd();
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            // dash reads only one digit in `>&N`: a descriptor of 10 or more (the test
            // binary's other tests hold files open) is reached through /proc instead.
            .arg(format!("echo five >&5; echo same >/proc/self/fd/{same}"));
        let held = pass_fds(&mut cmd, &[(w1.as_fd(), 5), (w2.as_fd(), same)]).unwrap();
        // The reaper test in this binary reaps every child (waitpid(-1)): held off, as in
        // the shim, until this one is waited for.
        let guard = crate::reaper::Reaper::global().fork_guard();
        let status = cmd.status().unwrap();
        drop(guard);
        drop((held, w1, w2, cmd));
        assert!(status.success());
        let read = |r: OwnedFd| {
            let mut s = String::new();
            std::fs::File::from(r).read_to_string(&mut s).unwrap();
            s
        };
        assert_eq!(read(r1), "five\n");
        assert_eq!(read(r2), "same\n");
    }
}
