//! Reading the calling task: its credentials (through its own pidfd and `capget`, or its
//! status file), its memory (`process_vm_readv`: paths, `open_how`, socket addresses) and its
//! root directory, kept open while no task can change it. Everything here is read before the
//! caller checks the notification's validity once, which ties the pid to the trapped task.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::rc::Rc;
use std::sync::atomic::Ordering;

use nix::errno::Errno;
use nix::fcntl::OFlag;

use super::{open_path, Ctx};
use crate::names;
use crate::sys::{self, Creds};

/// What the supervisor needs to know of the calling task.
pub(super) struct Task {
    pub(super) pid: u32,
    pub(super) tgid: u32,
    pub(super) ns_tgid: u32,
    pub(super) ns_tid: u32,
    pub(super) ppid: u32,
    pub(super) threads: u32,
    pub(super) creds: Creds,
}

pub(super) fn field<'a>(status: &'a str, name: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
        .map(str::trim)
}

pub(super) fn nums(s: Option<&str>) -> Vec<u32> {
    s.unwrap_or_default()
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect()
}

/// Tasks a supervisor thread keeps track of at most (beyond, it forgets them all).
const KNOWN_TASKS: usize = 64;

/// A thread the supervisor thread has seen, for as long as it lives: a pidfd of it
/// (PIDFD_THREAD), which PIDFD_GET_INFO answers for that very thread and no other (ESRCH once
/// it is gone, whatever reuses its number), its status file (also bound to it: procfs
/// generates it afresh at each read from offset 0, and once the thread is gone it reads
/// ESRCH), and what stays the same for as long as its number names it: its process and its
/// numbers in its own pid namespace. (Even an exec from another thread of its process, which
/// hands that thread the leader's number, keeps them: the numbers belong to the number's
/// kernel pid, and the process stays the same.)
struct Known {
    /// None before Linux 6.13 (PIDFD_GET_INFO): then the status file alone tells.
    pidfd: Option<OwnedFd>,
    status: File,
    tgid: u32,
    ns_tgid: u32,
    ns_tid: u32,
}

thread_local! {
    static KNOWN: std::cell::RefCell<HashMap<u32, Known>> = std::cell::RefCell::new(HashMap::new());
}

/// A status file, read with one `pread` into a buffer that has room for it.
pub(super) fn read_status(f: &File) -> Result<String, i32> {
    let mut buf = vec![0u8; 4096];
    loop {
        let n = f.read_at(&mut buf, 0).map_err(|_| libc::ESRCH)?;
        if n == 0 {
            return Err(libc::ESRCH);
        }
        if n < buf.len() {
            // procfs hands the whole file to one read that has room for it.
            buf.truncate(n);
            return String::from_utf8(buf).map_err(|_| libc::ESRCH);
        }
        buf.resize(buf.len() * 2, 0);
    }
}

/// Effective capabilities that make a task's supplementary groups irrelevant to an open that
/// creates and truncates nothing: CAP_DAC_OVERRIDE (every permission check on files and
/// directories but execute), CAP_FOWNER and CAP_FSETID.
const GROUPS_IRRELEVANT: u64 = (1 << 1) | (1 << 3) | (1 << 4);

/// How much of a task's state a call needs.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Need {
    /// Its credentials for a call that creates and truncates nothing (opens, sockets): fsuid
    /// and fsgid (PIDFD_GET_INFO) and effective capabilities (capget), none of them through
    /// procfs. Its supplementary groups only when those capabilities leave them relevant;
    /// otherwise the open is done with none, which can only ever allow less than the task's
    /// own groups would.
    Creds,
    /// Everything its status file says (groups, umask, threads, parent): creating opens, exec.
    All,
}

/// What the supervisor needs to know of the calling thread `pid`, read through the
/// thread's own pidfd and status file, opened (and checked alive after) on its first call.
/// The caller still checks the notification afterwards, which ties `pid` to the trapped task.
pub(super) fn task(ctx: &Ctx, pid: u32, need: Need) -> Result<Task, i32> {
    KNOWN.with(|known| {
        let mut known = known.borrow_mut();
        // Still the thread seen before? Its pidfd answers, or (before PIDFD_GET_INFO) its
        // status file still reads.
        let (mut info, mut status) = (None, None);
        if let Some(k) = known.get(&pid) {
            match &k.pidfd {
                Some(p) => {
                    info = sys::pidfd_info(p)
                        .ok()
                        .filter(|i| i.pid == pid && i.tgid == k.tgid)
                }
                None => status = read_status(&k.status).ok(),
            }
            if info.is_none() && status.is_none() {
                known.remove(&pid); // gone: the number may name another thread now
            }
        }
        if !known.contains_key(&pid) {
            let file = File::open(format!("/proc/{pid}/status")).map_err(|_| libc::ESRCH)?;
            let pidfd = sys::pidfd_open_thread(pid).ok();
            let text = read_status(&file)?;
            let last = |k: &str| nums(field(&text, k)).last().copied().unwrap_or(0);
            let mut k = Known {
                pidfd: None,
                status: file,
                tgid: last("Tgid"),
                ns_tgid: last("NStgid"),
                ns_tid: last("NSpid"),
            };
            if let Some(p) = pidfd {
                match sys::pidfd_info(&p) {
                    // Alive after the read, so the status read was this thread's.
                    Ok(i) if i.pid == pid && i.tgid == k.tgid => {
                        info = Some(i);
                        k.pidfd = Some(p);
                    }
                    Ok(_) => return Err(libc::ESRCH),
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Err(libc::ESRCH),
                    Err(_) => {} // a kernel without PIDFD_GET_INFO: the status file alone
                }
            }
            status = Some(text);
            if known.len() >= KNOWN_TASKS {
                known.clear();
            }
            known.insert(pid, k);
        }
        let k = &known[&pid];
        // Capabilities of another user namespace mean nothing on the host: use none.
        let foreign = *ctx.foreign_userns.get_or_init(|| {
            std::fs::read_link(format!("/proc/{pid}/ns/user")).ok() != ctx.own_userns
        });
        let mut t = Task {
            pid,
            tgid: k.tgid,
            ns_tgid: k.ns_tgid,
            ns_tid: k.ns_tid,
            ppid: 0,
            threads: 0,
            creds: Creds::default(),
        };
        if let Some(i) = info {
            t.ppid = i.ppid;
            t.creds.fsuid = i.fsuid;
            t.creds.fsgid = i.fsgid;
            if !foreign {
                t.creds.cap_eff = sys::effective_caps(pid).map_err(|_| libc::ESRCH)?;
            }
            if need == Need::Creds && t.creds.cap_eff & GROUPS_IRRELEVANT == GROUPS_IRRELEVANT {
                return Ok(t);
            }
        }
        let status = match status {
            Some(s) => s,
            None => read_status(&k.status)?,
        };
        let uid = nums(field(&status, "Uid"));
        let gid = nums(field(&status, "Gid"));
        let last = |k: &str| nums(field(&status, k)).last().copied().unwrap_or(0);
        t.threads = last("Threads");
        t.ppid = last("PPid");
        t.creds.fsuid = uid.get(3).copied().ok_or(libc::ESRCH)?;
        t.creds.fsgid = gid.get(3).copied().ok_or(libc::ESRCH)?;
        t.creds.groups = nums(field(&status, "Groups"));
        t.creds.cap_eff = if foreign {
            0
        } else {
            u64::from_str_radix(field(&status, "CapEff").unwrap_or("0"), 16).unwrap_or(0)
        };
        t.creds.umask =
            Some(u32::from_str_radix(field(&status, "Umask").unwrap_or("022"), 8).unwrap_or(0o022));
        Ok(t)
    })
}

/// Reads up to `buf.len()` bytes of the task's memory at `addr` with one
/// `process_vm_readv` (no descriptor to open: the same access check as `/proc/<pid>/mem`,
/// a third of the system calls). Stops at the first unmapped page.
pub(super) fn read_mem(pid: u32, addr: u64, buf: &mut [u8]) -> Result<usize, i32> {
    let local = [io::IoSliceMut::new(buf)];
    let remote = [nix::sys::uio::RemoteIoVec {
        base: addr as usize,
        len: local[0].len(),
    }];
    let pid = nix::unistd::Pid::from_raw(pid as i32);
    let mut local = local;
    match nix::sys::uio::process_vm_readv(pid, &mut local, &remote) {
        Ok(n) => Ok(n),
        Err(Errno::ESRCH) => Err(libc::ESRCH),
        Err(_) => Err(libc::EFAULT),
    }
}

/// Reads a NUL-terminated string (a path) from the task's memory.
pub(super) fn read_cstr(pid: u32, addr: u64) -> Result<String, i32> {
    if addr == 0 {
        return Err(libc::EFAULT);
    }
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut off = addr;
    while out.len() < libc::PATH_MAX as usize {
        // Never past the page: the next one may be unmapped while this one ends the string.
        let room = 4096 - (off % 4096) as usize;
        let got = read_mem(pid, off, &mut chunk[..room])?;
        if got == 0 {
            return Err(libc::EFAULT);
        }
        if let Some(end) = chunk[..got].iter().position(|b| *b == 0) {
            out.extend_from_slice(&chunk[..end]);
            return Ok(names::from_vec(out));
        }
        out.extend_from_slice(&chunk[..got]);
        off += got as u64;
    }
    Err(libc::ENAMETOOLONG)
}

pub(super) fn read_bytes(pid: u32, addr: u64, len: usize) -> Result<Vec<u8>, i32> {
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        match read_mem(pid, addr + done as u64, &mut buf[done..])? {
            0 => return Err(libc::EFAULT),
            n => done += n,
        }
    }
    Ok(buf)
}

thread_local! {
    /// The root directory of the tasks under this thread's filter, kept while
    /// `Ctx::keep_root` holds: every task under one filter descends from the one that installed
    /// it, in the container's root, and none can change its root unseen.
    static ROOT: std::cell::RefCell<Option<Rc<OwnedFd>>> = const { std::cell::RefCell::new(None) };
}

/// The task's credentials and a descriptor of its root, in that order.
pub(super) fn task_and_root(ctx: &Ctx, pid: u32, need: Need) -> Result<(Task, Rc<OwnedFd>), i32> {
    Ok((task(ctx, pid, need)?, root_of(ctx, pid)?))
}

/// The task's root: the one kept, or `/proc/<pid>/root` opened (kept only by [`keep_root`]
/// once the call is known to be the task's).
pub(super) fn root_of(ctx: &Ctx, pid: u32) -> Result<Rc<OwnedFd>, i32> {
    if ctx.keep_root.load(Ordering::SeqCst) {
        if let Some(r) = ROOT.with(|r| r.borrow().clone()) {
            return Ok(r);
        }
    } else {
        ROOT.with(|r| r.borrow_mut().take());
    }
    open_path(
        &format!("/proc/{pid}/root"),
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        0,
    )
    .map(Rc::new)
    .map_err(|_| libc::ESRCH)
}

/// Keeps `root`, opened through the pid of a call since found valid (so the trapped task's
/// own), if roots may be kept.
pub(super) fn keep_root(ctx: &Ctx, root: &Rc<OwnedFd>) {
    if ctx.keep_root.load(Ordering::SeqCst) {
        ROOT.with(|r| {
            r.borrow_mut().get_or_insert_with(|| root.clone());
        });
    }
}
