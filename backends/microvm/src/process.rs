//! The VM's host processes: spawned (never threads of the shim) into the pod's cgroup, named by
//! pid and start time, signalled only while that start time still matches.
//!
//! The unsafe code here is two calls with no Rust equivalent in the crates the tier uses: the
//! `pre_exec` hook that moves a child into its cgroup before it runs anything, and
//! `pidfd_open`/`pidfd_send_signal`, which signal exactly the process whose start time was
//! checked (a pid reused between the check and the signal is never hit).
#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::{Error, VmRecord};

/// Removes the pod's cgroups once the VM's processes are gone: a cgroup stays busy until their
/// zombies are reaped too (by the shim's reaper, or whoever inherited a dead shim's), so a few
/// tries, for at most 5 s.
pub fn remove_cgroups(cgroups: &[PathBuf]) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut left: Vec<&PathBuf> = cgroups.iter().collect();
    while !left.is_empty() {
        left.retain(|cg| {
            matches!(std::fs::remove_dir(cg), Err(e) if e.kind() != std::io::ErrorKind::NotFound)
        });
        if left.is_empty() || std::time::Instant::now() >= until {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    for cg in left {
        tracing::warn!(cgroup = %cg.display(), "the pod's cgroup could not be removed");
    }
}

/// The most cgroup directories a VM process joins (one per v1 controller hierarchy).
const MAX_CGROUPS: usize = 8;

/// A spawn request for the [`spawner`] thread.
type SpawnRequest = (
    Command,
    Vec<PathBuf>,
    std::sync::mpsc::Sender<std::io::Result<Child>>,
);

/// The thread that spawns every VM process of this process. It never ends, so the children's
/// parent-death signal (which the kernel ties to the thread that forked them) fires only when
/// the whole process (the shim) dies: a shim that is SIGKILLed, or torn down with its containerd
/// without any `delete`, takes its VMs with it instead of leaving them running unseen.
fn spawner() -> &'static std::sync::Mutex<std::sync::mpsc::Sender<SpawnRequest>> {
    static SPAWNER: std::sync::OnceLock<std::sync::Mutex<std::sync::mpsc::Sender<SpawnRequest>>> =
        std::sync::OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("strata-vm-spawner".into())
            .spawn(move || {
                for (mut cmd, cgroup, reply) in rx {
                    let _ = reply.send(spawn_here(&mut cmd, &cgroup));
                }
            })
            .expect("starting the VM spawner thread");
        std::sync::Mutex::new(tx)
    })
}

/// Spawns `cmd` in a session of its own (a signal to the shim's process group does not reach
/// it), in each of `cgroups`: the child writes `0` to `<dir>/cgroup.procs` before `exec`, so
/// nothing of the program runs outside them. The child gets SIGKILL when this process
/// dies (forked by the [`spawner`] thread, which lives as long as the process).
pub fn spawn(cmd: Command, cgroups: &[PathBuf]) -> std::io::Result<Child> {
    let (tx, rx) = std::sync::mpsc::channel();
    spawner()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send((cmd, cgroups.to_vec(), tx))
        .map_err(|_| std::io::Error::other("the VM spawner thread is gone"))?;
    rx.recv()
        .map_err(|_| std::io::Error::other("the VM spawner thread is gone"))?
}

fn spawn_here(cmd: &mut Command, cgroups: &[PathBuf]) -> std::io::Result<Child> {
    // std opens with O_CLOEXEC: the descriptors do not outlive the exec.
    let procs = cgroups
        .iter()
        .take(MAX_CGROUPS)
        .map(|dir| {
            let path = dir.join("cgroup.procs");
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| {
                    std::io::Error::new(e.kind(), format!("opening {}: {e}", path.display()))
                })
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    // A fixed array: the child may not allocate.
    let mut fds = [-1; MAX_CGROUPS];
    for (slot, f) in fds.iter_mut().zip(&procs) {
        *slot = f.as_raw_fd();
    }
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the hook runs in the forked child before exec and calls only async-signal-safe
    // functions (setsid, prctl, write) on memory that is valid in the child (a static byte string and
    // a descriptor the parent keeps open until spawn returns); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent died before the signal was armed: do not start an orphan.
            if libc::getppid() != parent {
                return Err(std::io::Error::other(
                    "the shim exited while starting the VM",
                ));
            }
            for &fd in fds.iter().filter(|&&fd| fd >= 0) {
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn();
    drop(procs);
    child
}

/// Lets the child that `cmd` starts inherit `fds` (the caller's, open until it is spawned),
/// at the same numbers: their close-on-exec flag is cleared in the child only.
pub fn inherit_fds(cmd: &mut Command, fds: Vec<RawFd>) {
    // SAFETY: fcntl is async-signal-safe; the vector was allocated before the fork and is
    // only read in the child.
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &fds {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// `/proc/PID/stat`: the state letter (field 3) and the start time in clock ticks (field 22).
fn stat(pid: u32) -> Option<(char, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces and ')'.
    let rest = &s[s.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

/// The parent pid of `pid` (field 4 of `/proc/PID/stat`).
fn parent(pid: u32) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s[s.rfind(')')? + 1..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The start time of `pid` in clock ticks since boot, if it exists.
pub fn start_time(pid: u32) -> Option<u64> {
    stat(pid).map(|(_, t)| t)
}

/// Whether the process `pid` that started at `start_time` still runs (a zombie does not).
pub fn is_alive(pid: u32, start_time: u64) -> bool {
    matches!(stat(pid), Some((state, t)) if t == start_time && !matches!(state, 'Z' | 'X'))
}

/// Every living descendant of `pid` (children, their children...), with start times.
pub fn descendants(pid: u32) -> Vec<(u32, u64)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let all: Vec<(u32, u32)> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| Some((p, parent(p)?)))
        .collect();
    let mut out: Vec<u32> = Vec::new();
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for &(c, _) in all.iter().filter(|(_, pp)| *pp == p) {
            if !out.contains(&c) {
                out.push(c);
                frontier.push(c);
            }
        }
    }
    out.into_iter()
        .filter_map(|p| match stat(p) {
            Some((s, t)) if !matches!(s, 'Z' | 'X') => Some((p, t)),
            _ => None,
        })
        .collect()
}

/// Sends `sig` to `pid` if it is still the process that started at `start_time`. Returns
/// whether it was signalled (false: it is gone or the pid now names another process).
pub fn signal(pid: u32, start_time: u64, sig: Signal) -> bool {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1; no memory
    // is passed.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if raw < 0 {
        return false;
    }
    // SAFETY: `raw` is a descriptor pidfd_open just returned, owned by nothing else.
    let pidfd = unsafe { OwnedFd::from_raw_fd(raw as i32) };
    // The descriptor names the process that had `pid` when it was opened; if that process
    // still has the recorded start time now, it is the recorded one.
    if !is_alive(pid, start_time) {
        return false;
    }
    // SAFETY: pidfd_send_signal with a valid pidfd, a signal number, a null siginfo (allowed:
    // the kernel fills it as kill(2) does) and no flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig as libc::c_int,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    r == 0
}

/// Waits until none of `procs` is alive; false if some still are at `timeout`.
pub fn wait_gone(procs: &[(u32, u64)], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !procs.iter().any(|&(p, t)| is_alive(p, t)) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Writes `record` to `path` atomically (a temporary file renamed over it).
pub fn write_record(path: &Path, record: &VmRecord) -> Result<(), Error> {
    let json = serde_json::to_vec_pretty(record)
        .map_err(|e| Error::Other(format!("encoding {}: {e}", path.display())))?;
    strata_backend::files::write_atomically(path, &json, 0o644)
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// Reads a record written by [`write_record`]; None if there is none.
pub fn read_record(path: &Path) -> Result<Option<VmRecord>, Error> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| Error::Other(format!("{} is not a VM record: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
    }
}

/// SIGKILLs every process of `procs` that is still the recorded one, and their descendants,
/// and waits (at most `timeout`) until they are gone. Returns those still alive.
pub fn kill_all(procs: &[(u32, u64)], timeout: Duration) -> Vec<(u32, u64)> {
    let mut all: Vec<(u32, u64)> = Vec::new();
    for &(p, t) in procs {
        if is_alive(p, t) {
            all.extend(descendants(p));
        }
        all.push((p, t));
    }
    for &(p, t) in &all {
        signal(p, t, Signal::SIGKILL);
    }
    wait_gone(&all, timeout);
    all.into_iter().filter(|&(p, t)| is_alive(p, t)).collect()
}

/// The log file of a helper: `<dir>/<name>.log`, created empty.
pub fn log_file(dir: &Path, name: &str) -> Result<(PathBuf, File), Error> {
    let path = dir.join(format!("{name}.log"));
    let f =
        File::create(&path).map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
    Ok((path, f))
}

/// The last `lines` lines of the file at `path` (at most its last 64 KiB are read).
pub fn tail(path: &Path, lines: usize) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).replace('\r', "");
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_is_named_by_start_time_and_killed_with_its_children() {
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", "sleep 60 & sleep 60; wait"]);
        let mut child = spawn(cmd, &[]).unwrap();
        let pid = child.id();
        let t = start_time(pid).unwrap();
        assert!(is_alive(pid, t));
        assert!(
            !signal(pid, t + 1, Signal::SIGKILL),
            "a wrong start time is never signalled"
        );
        // The shell's children appear once it has run.
        let deadline = Instant::now() + Duration::from_secs(5);
        let kids = loop {
            let d = descendants(pid);
            if d.len() == 2 || Instant::now() > deadline {
                break d;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(kids.len(), 2, "{kids:?}");
        // Its own session.
        let sid = nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(pid as i32))).unwrap();
        assert_eq!(sid.as_raw() as u32, pid);
        assert!(kill_all(&[(pid, t)], Duration::from_secs(5)).is_empty());
        child.wait().unwrap();
        assert!(!is_alive(pid, t));
        for (k, kt) in kids {
            assert!(!is_alive(k, kt));
        }
    }

    #[test]
    fn records_round_trip_and_tails_are_bounded() {
        let dir = std::env::temp_dir().join(format!("strata-process-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vm.json");
        assert!(read_record(&path).unwrap().is_none());
        let rec = VmRecord {
            processes: vec![(1, 2), (3, 4)],
            cgroups: vec!["/sys/fs/cgroup/x".into()],
        };
        write_record(&path, &rec).unwrap();
        let back = read_record(&path).unwrap().unwrap();
        assert_eq!(back.processes, rec.processes);
        assert_eq!(back.cgroups, rec.cgroups);

        let log = dir.join("console.log");
        let text: String = (0..100).map(|i| format!("line {i}\r\n")).collect();
        std::fs::write(&log, text).unwrap();
        let t = tail(&log, 3);
        assert_eq!(t, "line 97\nline 98\nline 99");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
