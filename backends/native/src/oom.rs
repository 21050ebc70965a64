//! Watching a memory cgroup for OOM kills.
//!
//! cgroup v1: an eventfd registered on `memory.oom_control` through `cgroup.event_control`.
//! cgroup v2: the `oom_kill` counter of `memory.events`, re-read when inotify says it changed.
//! The watcher ends when the cgroup goes away.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

/// Stops the watcher thread when dropped or told to.
pub struct OomWatch {
    stop: Arc<AtomicBool>,
}

impl OomWatch {
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl Drop for OomWatch {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts watching `dir`; `notify` is called once per OOM kill.
pub fn watch(
    dir: PathBuf,
    v2: bool,
    notify: impl Fn() + Send + 'static,
) -> std::io::Result<OomWatch> {
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    if v2 {
        let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        ino.add_watch(&dir.join("memory.events"), AddWatchFlags::IN_MODIFY)?;
        let mut last = read_oom_kills(&dir).unwrap_or(0);
        std::thread::Builder::new()
            .name("oom-v2".into())
            .spawn(move || {
                while !stop2.load(Ordering::SeqCst) && dir.exists() {
                    let mut fds = [nix::poll::PollFd::new(
                        ino.as_fd(),
                        nix::poll::PollFlags::POLLIN,
                    )];
                    let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(200u16));
                    let _ = ino.read_events();
                    if let Some(n) = read_oom_kills(&dir) {
                        for _ in last..n {
                            notify();
                        }
                        last = last.max(n);
                    }
                }
            })?;
    } else {
        let efd = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        let control = File::open(dir.join("memory.oom_control"))?;
        let mut ev = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("cgroup.event_control"))?;
        // One write: the kernel parses each write(2) to event_control on its own.
        ev.write_all(format!("{} {}", efd.as_raw_fd(), control.as_raw_fd()).as_bytes())?;
        tracing::debug!(dir = %dir.display(), "watching for OOM kills (cgroup v1)");
        std::thread::Builder::new()
            .name("oom-v1".into())
            .spawn(move || {
                let _control = control;
                let mut f = File::from(std::os::fd::OwnedFd::from(efd));
                while !stop2.load(Ordering::SeqCst) {
                    let mut fds = [nix::poll::PollFd::new(
                        f.as_fd(),
                        nix::poll::PollFlags::POLLIN,
                    )];
                    let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(200u16));
                    let mut buf = [0u8; 8];
                    if f.read_exact(&mut buf).is_ok() {
                        // The eventfd also fires when the cgroup is removed.
                        if !dir.exists() {
                            break;
                        }
                        notify();
                    } else if !dir.exists() {
                        break;
                    } else {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            })?;
    }
    Ok(OomWatch { stop })
}

fn read_oom_kills(dir: &Path) -> Option<u64> {
    let s = std::fs::read_to_string(dir.join("memory.events")).ok()?;
    parse_oom_kills(&s)
}

fn parse_oom_kills(s: &str) -> Option<u64> {
    s.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_memory_events() {
        let s = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 3\noom_group_kill 0\n";
        assert_eq!(super::parse_oom_kills(s), Some(3));
        assert_eq!(super::parse_oom_kills("low 0\n"), None);
    }
}
