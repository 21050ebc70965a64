//! The one place in a shim process that calls `waitpid`.
//!
//! The shim is a child subreaper, so every container process (and every orphan they leave)
//! is reaped here and its status handed to whoever subscribed to that pid. Code that forks a
//! child and waits for it itself (the native tier waits for its creating helper)
//! holds a [`ForkGuard`] meanwhile: the reaper does not call `waitpid(-1)` while a guard lives,
//! so it cannot steal that child's status.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use signal_hook::consts::SIGCHLD;
use signal_hook::iterator::Signals;

type Callback = Box<dyn FnOnce(u32) + Send>;
type Hook = Box<dyn Fn(i32, u32) + Send + Sync>;

/// How many statuses of pids nobody subscribed to are kept (orphans, early exits).
const UNCLAIMED_KEPT: usize = 4096;

#[derive(Default)]
struct State {
    guards: usize,
    waiters: HashMap<i32, Callback>,
    unclaimed: HashMap<i32, u32>,
    unclaimed_order: VecDeque<i32>,
}

/// Reaps children and dispatches their exit statuses.
pub struct Reaper {
    state: Mutex<State>,
    idle: Condvar,
    unclaimed_hook: OnceLock<Hook>,
}

/// While alive, the reaper leaves children alone.
pub struct ForkGuard {
    reaper: &'static Reaper,
}

static REAPER: OnceLock<Reaper> = OnceLock::new();

/// Converts a wait status to containerd's exit status: the code, or 128+signal.
pub fn exit_status(ws: WaitStatus) -> Option<(i32, u32)> {
    match ws {
        WaitStatus::Exited(pid, code) => Some((pid.as_raw(), code as u32)),
        WaitStatus::Signaled(pid, sig, _) => Some((pid.as_raw(), 128 + sig as u32)),
        _ => None,
    }
}

impl Reaper {
    /// The process-wide reaper, started on first use: makes this process a child subreaper
    /// and starts the thread that waits for SIGCHLD.
    pub fn global() -> &'static Reaper {
        REAPER.get_or_init(|| {
            // Failing to become a subreaper only loses orphans; report it, do not abort.
            if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
                tracing::warn!(error = %e, "cannot become a child subreaper");
            }
            let reaper = Reaper {
                state: Mutex::new(State::default()),
                idle: Condvar::new(),
                unclaimed_hook: OnceLock::new(),
            };
            std::thread::Builder::new()
                .name("reaper".into())
                .spawn(|| Reaper::global().run())
                .expect("spawn reaper thread");
            reaper
        })
    }

    /// Holds the reaper off while the caller forks and waits for its own child.
    pub fn fork_guard(&'static self) -> ForkGuard {
        self.state.lock().unwrap().guards += 1;
        ForkGuard { reaper: self }
    }

    /// Calls `f` with the exit status of `pid` once it has exited (at once if it already has).
    pub fn subscribe(&self, pid: i32, f: impl FnOnce(u32) + Send + 'static) {
        let mut st = self.state.lock().unwrap();
        if let Some(status) = st.unclaimed.remove(&pid) {
            st.unclaimed_order.retain(|p| *p != pid);
            drop(st);
            f(status);
            return;
        }
        st.waiters.insert(pid, Box::new(f));
    }

    /// Also tells `hook` of every status nobody subscribed to: for library code that forks
    /// and waits through a monitor of its own (containerd-shim's `mount_rootfs`). Set once.
    pub fn set_unclaimed_hook(&self, hook: impl Fn(i32, u32) + Send + Sync + 'static) {
        let _ = self.unclaimed_hook.set(Box::new(hook));
    }

    /// Forgets a subscription (the process was handed elsewhere).
    pub fn unsubscribe(&self, pid: i32) {
        self.state.lock().unwrap().waiters.remove(&pid);
    }

    fn run(&'static self) {
        let mut signals = match Signals::new([SIGCHLD]) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot watch SIGCHLD; exits will not be reported");
                return;
            }
        };
        loop {
            self.reap_all();
            // Blocks until at least one SIGCHLD arrived since the last pass.
            let _ = signals.wait().count();
        }
    }

    fn reap_all(&'static self) {
        let mut st = self.state.lock().unwrap();
        loop {
            // Checked before every waitpid: a caller may have taken a guard while the lock was
            // dropped for a callback, and its child must be left for it to wait for (CI saw
            // a spawned `sh` reaped away from its own waiter that way).
            while st.guards > 0 {
                st = self.idle.wait(st).unwrap();
            }
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(ws) => {
                    let Some((pid, status)) = exit_status(ws) else {
                        continue;
                    };
                    if let Some(cb) = st.waiters.remove(&pid) {
                        drop(st);
                        cb(status);
                        st = self.state.lock().unwrap();
                    } else {
                        if let Some(hook) = self.unclaimed_hook.get() {
                            hook(pid, status);
                        }
                        st.unclaimed.insert(pid, status);
                        st.unclaimed_order.push_back(pid);
                        while st.unclaimed_order.len() > UNCLAIMED_KEPT {
                            if let Some(old) = st.unclaimed_order.pop_front() {
                                st.unclaimed.remove(&old);
                            }
                        }
                    }
                }
            }
        }
    }
}

impl Drop for ForkGuard {
    fn drop(&mut self) {
        let mut st = self.reaper.state.lock().unwrap();
        st.guards -= 1;
        if st.guards == 0 {
            self.reaper.idle.notify_all();
        }
        drop(st);
        // A child may have exited while we held the reaper off: wake it.
        let _ = nix::sys::signal::raise(nix::sys::signal::SIGCHLD);
    }
}

/// Shared handle type for code that stores the reaper.
pub type ReaperRef = Arc<Reaper>;

#[cfg(test)]
mod tests {
    use std::process::Command;
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    #[test]
    #[allow(clippy::zombie_processes)] // the reaper under test waits for them
    fn reports_exit_code_and_signal() {
        let reaper = Reaper::global();
        let (tx, rx) = mpsc::channel();
        let _g = reaper.fork_guard();
        let child = Command::new("sh").args(["-c", "exit 7"]).spawn().unwrap();
        let tx2 = tx.clone();
        reaper.subscribe(child.id() as i32, move |s| tx2.send(("exit", s)).unwrap());
        let child2 = Command::new("sh")
            .args(["-c", "kill -9 $$"])
            .spawn()
            .unwrap();
        reaper.subscribe(child2.id() as i32, move |s| tx.send(("kill", s)).unwrap());
        drop(_g);
        let mut got: Vec<_> = (0..2)
            .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap())
            .collect();
        got.sort();
        assert_eq!(got, vec![("exit", 7), ("kill", 137)]);
    }
}
