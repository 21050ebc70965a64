//! Process creation from a single-threaded copy of the shim.
//!
//! libcontainer makes the container's processes with a raw clone3(2). Unlike glibc's fork(3),
//! a raw clone does not take glibc's malloc locks around the copy, and the shim has several
//! threads: a clone made while another thread held the lock of a malloc arena gives a child
//! that blocks for ever the first time it frees memory of that arena. It happened here, about
//! once in four runs of the test suite: one of 50 parallel `ctr run` hung with libcontainer's
//! intermediate process asleep in a futex. (systemd removed every thread from PID 1 for the
//! same reason; Kata's agent stopped forking from its threaded process.)
//!
//! So the shim forks through glibc first, which leaves the copy a consistent heap, and the
//! copy, which has one thread, lets libcontainer clone. The container's processes are its
//! children. It exits as soon as libcontainer returns, and they pass to the shim, which is a
//! child subreaper, exactly as when the shim cloned them itself. The copy touches nothing of
//! the shim's but libcontainer and the log (written without a lock; see serve.rs).

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use strata_backend::reaper::Reaper;
use strata_backend::{Error, Result};

/// The longest error the child reports: well within a pipe's buffer, so that its single
/// write never blocks, since nobody reads before it has exited.
const MAX_MESSAGE: usize = 16 * 1024;

/// Runs `f` in a forked, single-threaded copy of this process and returns what it returned:
/// a pid of a process it created, or its error. `what` names the work in errors.
pub(crate) fn in_child(
    what: &str,
    f: impl FnOnce() -> std::result::Result<u32, String>,
) -> Result<u32> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
        .map_err(|e| Error::io(format!("{what}: pipe"), e.into()))?;
    // The reaper must not take the child's status (nor libcontainer's intermediate's, which
    // the child waits for): held until we have waited for the child.
    let _guard = Reaper::global().fork_guard();
    #[allow(unsafe_code)]
    // SAFETY: glibc's fork makes its own state (malloc above all) consistent in the child.
    // The child runs only `f` (libcontainer's creation, which the shim ran before on a
    // raw clone of itself, a stricter setting than this) and leaves with `_exit`, running
    // no destructor and no exit handler of the copied process.
    let child = unsafe { libc::fork() };
    match child {
        -1 => Err(Error::io(
            format!("{what}: fork"),
            std::io::Error::last_os_error(),
        )),
        0 => {
            drop(r);
            let outcome = f();
            report(w, outcome);
            #[allow(unsafe_code)]
            // SAFETY: ends the child without running anything of the parent's copy.
            unsafe {
                libc::_exit(0)
            }
        }
        pid => {
            drop(w);
            let status = loop {
                match waitpid(Pid::from_raw(pid), None) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    other => break other,
                }
            };
            // The container's processes hold the write end until they exec (close-on-exec):
            // read what is there now, which is all the child wrote, never waiting for more.
            let message = read_now(r);
            parse(what, &message, status)
        }
    }
}

fn report(w: OwnedFd, outcome: std::result::Result<u32, String>) {
    let mut msg = match outcome {
        Ok(pid) => format!("ok {pid}"),
        Err(e) => format!("err {e}"),
    };
    if msg.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !msg.is_char_boundary(end) {
            end -= 1;
        }
        msg.truncate(end);
    }
    let _ = nix::unistd::write(&w, msg.as_bytes());
}

fn read_now(r: OwnedFd) -> String {
    let _ = fcntl(r.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
    let mut file = std::fs::File::from(r);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match file.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

fn parse(what: &str, message: &str, status: nix::Result<WaitStatus>) -> Result<u32> {
    if let Some(pid) = message.strip_prefix("ok ") {
        return pid
            .parse()
            .map_err(|_| Error::Other(format!("{what}: the creating process said {message:?}")));
    }
    if let Some(err) = message.strip_prefix("err ") {
        return Err(Error::InvalidArgument(format!("{what}: {err}")));
    }
    let how = match status {
        Ok(WaitStatus::Signaled(_, sig, _)) => format!("was killed by {sig}"),
        Ok(WaitStatus::Exited(_, code)) => format!("exited with {code} without a word"),
        Ok(other) => format!("ended as {other:?}"),
        Err(e) => format!("could not be waited for: {e}"),
    };
    Err(Error::Other(format!("{what}: the creating process {how}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_what_the_child_returned() {
        let me = std::process::id();
        // The child is another process: its pid differs and its writes stay its own.
        let child_pid = in_child("test", || Ok(std::process::id())).unwrap();
        assert_ne!(child_pid, me);
        let err = in_child("test", || Err("no such thing".into())).unwrap_err();
        assert!(err.to_string().contains("test: no such thing"), "{err}");
    }

    #[test]
    fn a_child_that_dies_is_an_error() {
        let err = in_child("test", || {
            // SAFETY: the child kills itself before reporting anything.
            #[allow(unsafe_code)]
            unsafe {
                libc::raise(libc::SIGKILL)
            };
            Ok(1)
        })
        .unwrap_err();
        assert!(err.to_string().contains("killed by SIGKILL"), "{err}");
    }

    #[test]
    fn a_heap_busy_in_other_threads_never_wedges_the_child() {
        // Other threads free this thread's large chunks (which takes the lock of this
        // thread's malloc arena) while it forks, and each child then allocates large chunks
        // from that arena. A raw clone wedges a child here within a few hundred rounds (tried:
        // swap the fork for syscall(SYS_clone, SIGCHLD, 0)); glibc's fork never does.
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::mpsc;
        let done = std::sync::Arc::new(AtomicBool::new(false));
        let watchdog = done.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_secs(120));
            if !watchdog.load(Ordering::SeqCst) {
                eprintln!("a forked child wedged: its heap was inconsistent");
                std::process::abort();
            }
        });
        let mut senders = Vec::new();
        let mut threads = Vec::new();
        for _ in 0..2 {
            let (tx, rx) = mpsc::channel::<Vec<u8>>();
            senders.push(tx);
            threads.push(std::thread::spawn(move || {
                for v in rx {
                    drop(v)
                }
            }));
        }
        for round in 0..500 {
            for n in 0..64 {
                let _ = senders[n % 2].send(vec![round as u8; 2048 + n * 16]);
            }
            let got = in_child("test", || {
                let v: Vec<Vec<u8>> = (0..64).map(|n| vec![1u8; 4096 + n * 64]).collect();
                Ok(v.len() as u32)
            })
            .unwrap();
            assert_eq!(got, 64);
        }
        done.store(true, Ordering::SeqCst);
        drop(senders);
        for t in threads {
            t.join().unwrap();
        }
    }
}
