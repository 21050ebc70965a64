//! The raw kernel interfaces the supervisor needs and no crate wraps: the seccomp
//! user-notification ioctls (seccomp_unotify(2)), `openat2`, `pidfd_open`/`pidfd_getfd`,
//! `PIDFD_GET_INFO`, `kcmp`, another thread's capabilities (`capget`), and per-thread
//! credentials (fsuid, fsgid, groups, effective capabilities).
//!
//! Every `unsafe` block of the crate is here.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// `struct seccomp_data`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct SeccompData {
    pub nr: i32,
    pub arch: u32,
    pub instruction_pointer: u64,
    pub args: [u64; 6],
}

/// `struct seccomp_notif`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct Notif {
    pub id: u64,
    pub pid: u32,
    pub flags: u32,
    pub data: SeccompData,
}

#[repr(C)]
#[derive(Default)]
struct NotifResp {
    id: u64,
    val: i64,
    error: i32,
    flags: u32,
}

#[repr(C)]
#[derive(Default)]
struct NotifAddfd {
    id: u64,
    flags: u32,
    srcfd: u32,
    newfd: u32,
    newfd_flags: u32,
}

const fn ioc(dir: u64, nr: u64, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | ((b'!' as u64) << 8) | nr
}
const IOC_WRITE: u64 = 1;
const IOC_READ: u64 = 2;
const NOTIF_RECV: u64 = ioc(IOC_READ | IOC_WRITE, 0, std::mem::size_of::<Notif>());
const NOTIF_SEND: u64 = ioc(IOC_READ | IOC_WRITE, 1, std::mem::size_of::<NotifResp>());
const NOTIF_ID_VALID: u64 = ioc(IOC_WRITE, 2, std::mem::size_of::<u64>());
const NOTIF_ADDFD: u64 = ioc(IOC_WRITE, 3, std::mem::size_of::<NotifAddfd>());
const NOTIF_SET_FLAGS: u64 = ioc(IOC_WRITE, 4, std::mem::size_of::<u64>());
const USER_NOTIF_FLAG_CONTINUE: u32 = 1;
const USER_NOTIF_FD_SYNC_WAKE_UP: u64 = 1;
const ADDFD_FLAG_SEND: u32 = 2;

fn check(rc: libc::c_long) -> io::Result<libc::c_long> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// SECCOMP_IOCTL_NOTIF_RECV: the next trapped call (blocks; poll the fd first).
pub fn recv(fd: RawFd) -> io::Result<Notif> {
    let mut n = Notif::default();
    // SAFETY: NOTIF_RECV writes one `struct seccomp_notif` into `n`, which is zeroed as the
    // kernel requires and has the kernel's layout and size (encoded in the request number).
    check(unsafe { libc::ioctl(fd, NOTIF_RECV as _, &mut n as *mut Notif) } as libc::c_long)?;
    Ok(n)
}

/// SECCOMP_IOCTL_NOTIF_SET_FLAGS with SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (Linux 6.6): the
/// trapped task and the supervisor hand the CPU to each other (a synchronous wake-up on the
/// current CPU) instead of waking each other across CPUs, which dominates the round trip of
/// a trapped call. Older kernels answer EINVAL; the supervisor works without it.
pub fn set_sync_wakeup(fd: RawFd) -> io::Result<()> {
    // SAFETY: NOTIF_SET_FLAGS takes the flags by value (a u64 argument), no pointer.
    let rc = unsafe { libc::ioctl(fd, NOTIF_SET_FLAGS as _, USER_NOTIF_FD_SYNC_WAKE_UP) };
    check(rc as libc::c_long)?;
    Ok(())
}

/// SECCOMP_IOCTL_NOTIF_ID_VALID: whether the trapped task still waits for this answer.
pub fn id_valid(fd: RawFd, id: u64) -> bool {
    let mut id = id;
    // SAFETY: the ioctl reads one u64 from the pointer, a live local.
    unsafe { libc::ioctl(fd, NOTIF_ID_VALID as _, &mut id as *mut u64) == 0 }
}

fn send(fd: RawFd, resp: &mut NotifResp) -> io::Result<()> {
    // SAFETY: NOTIF_SEND reads one `struct seccomp_notif_resp` of the kernel's layout.
    check(unsafe { libc::ioctl(fd, NOTIF_SEND as _, resp as *mut NotifResp) } as libc::c_long)?;
    Ok(())
}

/// Answers the call with `-errno`.
pub fn respond_errno(fd: RawFd, id: u64, errno: i32) -> io::Result<()> {
    send(
        fd,
        &mut NotifResp {
            id,
            error: -errno,
            ..Default::default()
        },
    )
}

/// Answers the call with a return value.
pub fn respond_value(fd: RawFd, id: u64, val: i64) -> io::Result<()> {
    send(
        fd,
        &mut NotifResp {
            id,
            val,
            ..Default::default()
        },
    )
}

/// Lets the kernel run the call itself. Only for decisions that rest on no pointer argument
/// (or, for exec, see the supervisor's exec check).
pub fn respond_continue(fd: RawFd, id: u64) -> io::Result<()> {
    send(
        fd,
        &mut NotifResp {
            id,
            flags: USER_NOTIF_FLAG_CONTINUE,
            ..Default::default()
        },
    )
}

/// SECCOMP_IOCTL_NOTIF_ADDFD with SECCOMP_ADDFD_FLAG_SEND: installs a copy of `src` in the
/// trapped task and answers the call with the new descriptor's number, atomically.
pub fn addfd_send(fd: RawFd, id: u64, src: &OwnedFd, cloexec: bool) -> io::Result<i32> {
    let mut a = NotifAddfd {
        id,
        flags: ADDFD_FLAG_SEND,
        srcfd: src.as_raw_fd() as u32,
        newfd: 0,
        newfd_flags: if cloexec { libc::O_CLOEXEC as u32 } else { 0 },
    };
    // SAFETY: NOTIF_ADDFD reads one `struct seccomp_notif_addfd` of the kernel's layout.
    let rc = check(
        unsafe { libc::ioctl(fd, NOTIF_ADDFD as _, &mut a as *mut NotifAddfd) } as libc::c_long,
    )?;
    Ok(rc as i32)
}

/// A trapped thread held on the supervisor's CPU while it takes a descriptor (see
/// [`Pinned::to_this_cpu`]).
pub struct Pinned {
    tid: u32,
    cpu: usize,
}

impl Pinned {
    /// Restricts thread `tid`, which waits in a trapped call, to the CPU the calling thread
    /// runs on, if nothing restricts it now (its CPUs are all the online ones). For
    /// SECCOMP_IOCTL_NOTIF_ADDFD: the kernel wakes the task for the descriptor with a plain
    /// wake-up (the synchronous one of [`set_sync_wakeup`] covers only the other answers), so
    /// the scheduler places it on an idle CPU, and the supervisor, which waits for the task
    /// to take the descriptor, is woken there in turn: two wake-ups of a halted CPU, about
    /// 30 µs on a virtual machine whose idle CPUs halt at once. Held on this CPU, the task
    /// runs when the supervisor waits (docs/sentry.md, "Cost of a trapped open").
    ///
    /// A thread that something restricts (its own affinity, a cpuset) is left alone. Dropping
    /// the guard lets the thread run on every CPU again, unless its CPUs were changed
    /// meanwhile (by another thread of the workload), which then stand.
    pub fn to_this_cpu(tid: u32) -> Option<Pinned> {
        let all = online_cpus()?;
        let now = get_affinity(tid)?;
        if !cpu_sets_equal(&now, all) {
            return None;
        }
        // SAFETY: no arguments; answers from the vDSO or the rseq area.
        let cpu = usize::try_from(unsafe { libc::sched_getcpu() }).ok()?;
        set_affinity(tid, &only_cpu(cpu)).then_some(Pinned { tid, cpu })
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        let Some(now) = get_affinity(self.tid) else {
            return; // gone
        };
        if cpu_sets_equal(&now, &only_cpu(self.cpu)) {
            // Every CPU: the kernel keeps what the thread's cpuset allows, which is what an
            // unrestricted thread has.
            static EVERY: std::sync::OnceLock<libc::cpu_set_t> = std::sync::OnceLock::new();
            let every = EVERY.get_or_init(|| {
                let mut every = empty_cpu_set();
                for cpu in 0..libc::CPU_SETSIZE as usize {
                    // SAFETY: below CPU_SETSIZE.
                    unsafe { libc::CPU_SET(cpu, &mut every) };
                }
                every
            });
            set_affinity(self.tid, every);
        }
    }
}

fn empty_cpu_set() -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty set.
    unsafe { std::mem::zeroed() }
}

/// The set of CPU `cpu` alone.
fn only_cpu(cpu: usize) -> libc::cpu_set_t {
    let mut set = empty_cpu_set();
    // SAFETY: a plain bit array; CPU_SET ignores a number at or above CPU_SETSIZE.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    set
}

fn cpu_sets_equal(a: &libc::cpu_set_t, b: &libc::cpu_set_t) -> bool {
    // SAFETY: both are plain bit arrays of the same size.
    unsafe { libc::CPU_EQUAL(a, b) }
}

fn get_affinity(tid: u32) -> Option<libc::cpu_set_t> {
    let mut set = empty_cpu_set();
    // SAFETY: the kernel writes at most size_of::<cpu_set_t>() bytes into `set`.
    let rc = unsafe {
        libc::sched_getaffinity(tid as libc::pid_t, std::mem::size_of_val(&set), &mut set)
    };
    (rc == 0).then_some(set)
}

fn set_affinity(tid: u32, set: &libc::cpu_set_t) -> bool {
    // SAFETY: the kernel reads size_of::<cpu_set_t>() bytes from `set`.
    unsafe { libc::sched_setaffinity(tid as libc::pid_t, std::mem::size_of_val(set), set) == 0 }
}

/// The online CPUs (`/sys/devices/system/cpu/online`, read once), as a set.
fn online_cpus() -> Option<&'static libc::cpu_set_t> {
    static ONLINE: std::sync::OnceLock<Option<libc::cpu_set_t>> = std::sync::OnceLock::new();
    ONLINE
        .get_or_init(|| {
            let text = std::fs::read_to_string("/sys/devices/system/cpu/online").ok()?;
            parse_cpu_list(text.trim())
        })
        .as_ref()
}

/// A kernel CPU list ("0-3,6,8-9") as a set.
fn parse_cpu_list(list: &str) -> Option<libc::cpu_set_t> {
    let mut set = empty_cpu_set();
    for part in list.split(',') {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<usize>().ok()?, b.parse::<usize>().ok()?),
            None => {
                let n = part.parse::<usize>().ok()?;
                (n, n)
            }
        };
        if lo > hi || hi >= libc::CPU_SETSIZE as usize {
            return None;
        }
        for cpu in lo..=hi {
            // SAFETY: below CPU_SETSIZE, checked above.
            unsafe { libc::CPU_SET(cpu, &mut set) };
        }
    }
    Some(set)
}

/// Takes ownership of a descriptor just received with SCM_RIGHTS.
pub fn own_fd(fd: RawFd) -> OwnedFd {
    // SAFETY: the kernel installed `fd` in this process for this message only; nothing else
    // knows the number, so this is its one owner.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// `struct open_how`.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

pub const RESOLVE_NO_XDEV: u64 = 0x01;
pub const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
pub const RESOLVE_NO_SYMLINKS: u64 = 0x04;
pub const RESOLVE_BENEATH: u64 = 0x08;
pub const RESOLVE_IN_ROOT: u64 = 0x10;
pub const RESOLVE_CACHED: u64 = 0x20;

/// openat2(2).
pub fn openat2(
    dirfd: RawFd,
    path: &CStr,
    flags: i32,
    mode: u32,
    resolve: u64,
) -> io::Result<OwnedFd> {
    let how = OpenHow {
        flags: flags as u32 as u64,
        mode: mode as u64,
        resolve,
    };
    // With RESOLVE_IN_ROOT (or BENEATH) the kernel answers EAGAIN when a rename or mount
    // anywhere raced with a `..` of the walk, and the caller is to try again (openat2(2)):
    // a few times, then the error stands (a file lease with O_NONBLOCK answers EAGAIN too).
    let confined = resolve & RESOLVE_IN_ROOT != 0;
    let mut tries = 0;
    let fd = loop {
        // SAFETY: `path` is NUL-terminated, `how` a live `struct open_how` whose size is passed.
        match check(unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dirfd,
                path.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        }) {
            Err(e) if confined && e.raw_os_error() == Some(libc::EAGAIN) && tries < 16 => {
                tries += 1;
            }
            r => break r?,
        }
    };
    // SAFETY: openat2 returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// pidfd_open(2).
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain integer arguments.
    let fd = check(unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) })?;
    // SAFETY: a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// pidfd_open(2) with PIDFD_THREAD (Linux 6.9): a pidfd of one thread, `tid`, that stays
/// bound to that thread (its struct pid), whatever later reuses the number. (Close-on-exec,
/// as every pidfd.)
pub fn pidfd_open_thread(tid: u32) -> io::Result<OwnedFd> {
    const PIDFD_THREAD: libc::c_uint = libc::O_EXCL as libc::c_uint;
    // SAFETY: plain integer arguments.
    let fd =
        check(unsafe { libc::syscall(libc::SYS_pidfd_open, tid as libc::pid_t, PIDFD_THREAD) })?;
    // SAFETY: a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `struct pidfd_info` as first published (PIDFD_INFO_SIZE_VER0, Linux 6.13).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct PidfdInfo {
    pub mask: u64,
    pub cgroupid: u64,
    pub pid: u32,
    pub tgid: u32,
    pub ppid: u32,
    pub ruid: u32,
    pub rgid: u32,
    pub euid: u32,
    pub egid: u32,
    pub suid: u32,
    pub sgid: u32,
    pub fsuid: u32,
    pub fsgid: u32,
    pub exit_code: i32,
}

const PIDFD_GET_INFO: u64 =
    (3 << 30) | ((std::mem::size_of::<PidfdInfo>() as u64) << 16) | (0xff << 8) | 11;
const PIDFD_INFO_PID: u64 = 1;
const PIDFD_INFO_CREDS: u64 = 2;

/// PIDFD_GET_INFO (Linux 6.13): the ids (in the supervisor's pid namespace) and credentials
/// (in its user namespace) of the task behind `pidfd`. Fails (ESRCH) once that task is gone:
/// never another task's, whatever reuses its number.
pub fn pidfd_info(pidfd: &OwnedFd) -> io::Result<PidfdInfo> {
    let mut info = PidfdInfo {
        mask: PIDFD_INFO_PID | PIDFD_INFO_CREDS,
        ..Default::default()
    };
    // SAFETY: PIDFD_GET_INFO reads the request mask from and writes one `struct pidfd_info`
    // of the size encoded in the request number into `info`, a live local of that layout.
    check(unsafe {
        libc::ioctl(
            pidfd.as_raw_fd(),
            PIDFD_GET_INFO as _,
            &mut info as *mut PidfdInfo,
        )
    } as libc::c_long)?;
    if info.mask & (PIDFD_INFO_PID | PIDFD_INFO_CREDS) != PIDFD_INFO_PID | PIDFD_INFO_CREDS
        || info.pid == 0
    {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    Ok(info)
}

/// pidfd_getfd(2): a duplicate of descriptor `target` of the process behind `pidfd`.
pub fn pidfd_getfd(pidfd: &OwnedFd, target: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain integer arguments.
    let fd = check(unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), target, 0) })?;
    // SAFETY: a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Whether two tasks share one address space (kcmp(2) KCMP_VM).
pub fn same_vm(a: u32, b: u32) -> io::Result<bool> {
    const KCMP_VM: i32 = 1;
    // SAFETY: plain integer arguments.
    let rc = check(unsafe { libc::syscall(libc::SYS_kcmp, a as i32, b as i32, KCMP_VM, 0, 0) })?;
    Ok(rc == 0)
}

/// Puts the calling thread in SCHED_BATCH: the same share of the CPU as SCHED_OTHER, but a
/// wake-up never preempts the running task. A supervisor thread is woken twice per trapped
/// open by the task it serves (the task has taken the descriptor; then its next trapped
/// call): with this, the task goes on to its next call first and the supervisor finishes
/// the previous answer when the task waits again, one context switch fewer per open (about
/// 1.3 us here, docs/sentry.md).
pub fn batch_policy() -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; the kernel reads one sched_param.
    check(unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } as libc::c_long)?;
    Ok(())
}

/// unshare(CLONE_FS) for the calling thread: its own umask, so that a supervisor thread can
/// take each workload's umask for the files it creates.
pub fn unshare_fs() -> io::Result<()> {
    // SAFETY: plain integer argument; affects only the calling thread's fs_struct.
    check(unsafe { libc::unshare(libc::CLONE_FS) } as libc::c_long)?;
    Ok(())
}

/// Sets the calling thread's umask (after [`unshare_fs`]).
pub fn set_umask(mask: u32) {
    // SAFETY: plain integer argument.
    unsafe { libc::umask(mask as libc::mode_t) };
}

/// What [`fork_quiet`] and [`fork`] return.
pub enum Forked {
    /// In the new process.
    Child,
    /// In the calling process: the new one's pid.
    Parent(u32),
}

/// A fork whose end raises no signal in the parent (clone(2) with exit signal 0): the
/// parent's `wait` sees it only with `__WALL` or `__WCLONE`. For a process forked from a
/// container's init (the keeper), so that the workload's own `wait` never meets it.
/// Only in a single-threaded process (the container's init in its pre-exec hook).
pub fn fork_quiet() -> io::Result<Forked> {
    // SAFETY: clone with no flags and a null stack is fork without the exit signal; the
    // caller is single-threaded, so the child's copy of memory holds no lock another
    // thread held.
    let pid = check(unsafe {
        libc::syscall(
            libc::SYS_clone,
            0 as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    })?;
    Ok(if pid == 0 {
        Forked::Child
    } else {
        Forked::Parent(pid as u32)
    })
}

/// fork(2), only in a single-threaded process (the keeper).
pub fn fork() -> io::Result<Forked> {
    // SAFETY: the caller is single-threaded (see above).
    match unsafe { nix::unistd::fork() }.map_err(io::Error::from)? {
        nix::unistd::ForkResult::Child => Ok(Forked::Child),
        nix::unistd::ForkResult::Parent { child } => Ok(Forked::Parent(child.as_raw() as u32)),
    }
}

/// pidfd_send_signal(2).
pub fn pidfd_send_signal(pidfd: &OwnedFd, sig: i32) -> io::Result<()> {
    // SAFETY: a valid pidfd, a signal number, a null siginfo and no flags.
    check(unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    })?;
    Ok(())
}

/// Makes the terminal on `fd` the controlling terminal of the calling session leader
/// (TIOCSCTTY, without stealing it from another session).
pub fn set_controlling_tty(fd: RawFd) -> io::Result<()> {
    // SAFETY: TIOCSCTTY takes an integer argument.
    check(unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) } as libc::c_long)?;
    Ok(())
}

/// Gives up the calling process's controlling terminal, on `fd` (TIOCNOTTY).
pub fn release_controlling_tty(fd: RawFd) -> io::Result<()> {
    // SAFETY: TIOCNOTTY takes no argument.
    check(unsafe { libc::ioctl(fd, libc::TIOCNOTTY) } as libc::c_long)?;
    Ok(())
}

/// Moves `fd` to the lowest free number at or above `min`, close-on-exec, and owns it.
pub fn dup_above(fd: &impl std::os::fd::AsFd, min: RawFd) -> io::Result<OwnedFd> {
    let n = nix::fcntl::fcntl(
        fd.as_fd().as_raw_fd(),
        nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(min),
    )
    .map_err(io::Error::from)?;
    Ok(own_fd(n))
}

/// Puts (a duplicate of) `fd` at number `slot`, close-on-exec, closing what was there, in
/// one step (dup3): a process handed `slot` meanwhile gets the old file or the new, never a
/// closed number.
pub fn replace_fd(fd: &OwnedFd, slot: RawFd) -> io::Result<()> {
    // SAFETY: `slot` is a descriptor the caller owns and keeps owning (its OwnedFd now names
    // the duplicate); plain integer arguments.
    check(unsafe { libc::dup3(fd.as_raw_fd(), slot, libc::O_CLOEXEC) } as libc::c_long)?;
    Ok(())
}

/// Sets `sig`'s disposition back to the default.
pub fn default_disposition(sig: nix::sys::signal::Signal) -> io::Result<()> {
    // SAFETY: SIG_DFL runs no code of ours in signal context.
    unsafe { nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigDfl) }
        .map(|_| ())
        .map_err(io::Error::from)
}

/// Ignores `sig` (SIG_IGN).
pub fn ignore_disposition(sig: nix::sys::signal::Signal) -> io::Result<()> {
    // SAFETY: SIG_IGN runs no code of ours in signal context.
    unsafe { nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigIgn) }
        .map(|_| ())
        .map_err(io::Error::from)
}

/// Borrows descriptor `fd`, which the caller keeps open for the borrow's use (a standard
/// stream, or one an owned handle of the caller's holds).
pub fn borrow<'a>(fd: RawFd) -> std::os::fd::BorrowedFd<'a> {
    // SAFETY: the caller keeps `fd` open while the borrow is used (see above).
    unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
}

/// Closes descriptor `fd` of this process, which nothing owns (an inherited one, or a
/// standard stream).
pub fn close_raw(fd: RawFd) {
    // SAFETY: the caller names a descriptor no owned handle of this process holds.
    unsafe { libc::close(fd) };
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_V3: u32 = 0x2008_0522;

fn capget() -> io::Result<[CapData; 2]> {
    capget_of(0)
}

fn capget_of(pid: i32) -> io::Result<[CapData; 2]> {
    let mut h = CapHeader {
        version: CAP_V3,
        pid,
    };
    let mut d = [CapData::default(); 2];
    // SAFETY: version 3 capget writes two `cap_user_data` structs into `d`.
    check(unsafe { libc::syscall(libc::SYS_capget, &mut h as *mut CapHeader, d.as_mut_ptr()) })?;
    Ok(d)
}

/// The effective capabilities of thread `tid` (capget(2) on another task: no access check,
/// no procfs).
pub fn effective_caps(tid: u32) -> io::Result<u64> {
    let d = capget_of(tid as i32)?;
    Ok(u64::from(d[0].effective) | (u64::from(d[1].effective) << 32))
}

fn set_groups(groups: &[u32]) -> io::Result<()> {
    // SAFETY: the raw syscall (not glibc's, which would change every thread) reads
    // `groups.len()` gids from a live slice.
    check(unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) })?;
    Ok(())
}

fn set_fsuid(uid: u32) {
    // SAFETY: plain integer argument; per-thread.
    unsafe { libc::syscall(libc::SYS_setfsuid, uid) };
}

fn set_fsgid(gid: u32) {
    // SAFETY: plain integer argument; per-thread.
    unsafe { libc::syscall(libc::SYS_setfsgid, gid) };
}

/// The credentials a file operation is done with, taken from the trapped task.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Creds {
    pub fsuid: u32,
    pub fsgid: u32,
    pub groups: Vec<u32>,
    pub cap_eff: u64,
    /// The umask, for calls that create files (`None`: not read, the call creates nothing).
    pub umask: Option<u32>,
}

/// A supervisor thread's own capability sets, read once (only the effective set is ever
/// changed, and always back to the permitted set), and the supplementary groups and umask
/// the thread has now, so that taking on a workload's credentials costs no reads and no
/// call that would change nothing.
struct ThreadCreds {
    caps: [CapData; 2],
    groups: Vec<u32>,
    umask: Option<u32>,
    /// The effective capabilities the thread was left with by the last workload's call (see
    /// [`AsWorkload`]), or None when it has its own.
    parked: Option<u64>,
}

impl ThreadCreds {
    /// Sets the thread's umask to `mask` (a creating call's) unless it has it already.
    fn take_umask(&mut self, mask: Option<u32>) {
        if let Some(mask) = mask.filter(|m| self.umask != Some(*m)) {
            set_umask(mask);
            self.umask = Some(mask);
        }
    }
}

thread_local! {
    static THREAD: std::cell::RefCell<Option<ThreadCreds>> = const { std::cell::RefCell::new(None) };
}

fn with_thread<T>(f: impl FnOnce(&mut ThreadCreds) -> io::Result<T>) -> io::Result<T> {
    THREAD.with(|t| {
        let mut t = t.borrow_mut();
        if t.is_none() {
            *t = Some(ThreadCreds {
                caps: capget()?,
                groups: nix::unistd::getgroups()
                    .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
                    .map_err(io::Error::from)?,
                umask: None,
                parked: None,
            });
        }
        f(t.as_mut().expect("set above"))
    })
}

fn capset_effective(caps: &[CapData; 2], eff: u64) -> io::Result<()> {
    let mut d = *caps;
    d[0].effective = (eff as u32) & d[0].permitted;
    d[1].effective = ((eff >> 32) as u32) & d[1].permitted;
    let mut h = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    // SAFETY: version 3 capset reads two `cap_user_data` structs; the raw syscall affects
    // only the calling thread.
    check(unsafe { libc::syscall(libc::SYS_capset, &mut h as *mut CapHeader, d.as_ptr()) })?;
    Ok(())
}

/// connect(2) of socket `fd` to an `AF_UNSPEC` address: dissolves a datagram socket's
/// association (and fails as the kernel decides for others). No address is reached.
pub fn connect_unspec(fd: RawFd) -> io::Result<()> {
    // SAFETY: an all-zero sockaddr is a valid `struct sockaddr` with family AF_UNSPEC (0).
    let sa: libc::sockaddr = unsafe { std::mem::zeroed() };
    // SAFETY: `sa` is a live sockaddr of the size passed; connect reads no more than that.
    check(unsafe {
        libc::connect(
            fd,
            &sa as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr>() as libc::socklen_t,
        )
    } as libc::c_long)?;
    Ok(())
}

/// Runs `f` on a short-lived thread that has joined the network, IPC and UTS namespaces of the
/// task `pidfd` refers to, with the credentials the calling thread has (a workload's, taken
/// with [`AsWorkload`]): for the files of `/proc/sys` that the kernel answers from the
/// opener's own namespaces (`net.*`, `kernel.shm*`, `fs.mqueue.*`, `kernel.hostname`...),
/// which the supervisor's thread would read and write in the shim's. The thread takes its
/// permitted capabilities back for `setns` only, and is gone when `f` returns: no other call
/// ever runs in the workload's namespaces.
pub fn in_namespaces_of<T: Send>(
    pidfd: &OwnedFd,
    f: impl FnOnce() -> io::Result<T> + Send,
) -> io::Result<T> {
    on_moved_thread(
        || {
            let flags = libc::CLONE_NEWNET | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
            // SAFETY: setns(2) on a pidfd with namespace flags changes only this thread's
            // namespaces (network, IPC and UTS may differ between threads).
            check(unsafe { libc::setns(pidfd.as_raw_fd(), flags) } as libc::c_long).map(drop)
        },
        f,
    )
}

/// Runs `f` on a short-lived thread whose root directory is `root` (a task's root: the
/// container's `/`), with the workload's credentials `c` for `f` itself: for a lookup the
/// kernel must make exactly as it would for the task (`openat2` with the task's own
/// `RESOLVE_*` flags, where `..` stops at the task's root and absolute paths start there).
/// The thread takes its permitted capabilities for `chroot` only, and is gone when `f`
/// returns: no other call of the supervisor ever runs in the container's root.
pub fn in_root_of<T: Send>(
    root: &OwnedFd,
    c: &Creds,
    f: impl FnOnce() -> io::Result<T> + Send,
) -> io::Result<T> {
    on_moved_thread(
        || {
            // SAFETY: unshare(CLONE_FS) gives this thread its own root and working directory.
            check(unsafe { libc::unshare(libc::CLONE_FS) } as libc::c_long)?;
            // SAFETY: fchdir on a live descriptor changes only this thread's (own) cwd.
            check(unsafe { libc::fchdir(root.as_raw_fd()) } as libc::c_long)?;
            // SAFETY: a NUL-terminated literal; changes only this thread's (own) root.
            check(unsafe { libc::chroot(c".".as_ptr()) } as libc::c_long).map(drop)
        },
        || {
            let _as = AsWorkload::enter(c)?;
            f()
        },
    )
}

/// Runs `move_it` on a new thread with every permitted capability effective, then `f` there
/// with the effective capabilities the calling thread had; the thread ends with `f`. The new
/// thread has the calling thread's credentials (fsuid, fsgid, groups, a workload's effective
/// capabilities), not its thread-local record of them.
fn on_moved_thread<T: Send>(
    move_it: impl FnOnce() -> io::Result<()> + Send,
    f: impl FnOnce() -> io::Result<T> + Send,
) -> io::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let caps = capget()?;
            let eff = u64::from(caps[0].effective) | (u64::from(caps[1].effective) << 32);
            capset_effective(&caps, u64::MAX)?;
            move_it()?;
            capset_effective(&caps, eff)?;
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("supervisor helper thread panicked")))
    })
}

/// A detached, read-only (and `nosuid`, `nodev`, `noexec`) copy of the mount of the file at
/// `source`: `open_tree(2)` with `OPEN_TREE_CLONE`, then `mount_setattr(2)`. Attached in a
/// container's mount namespace by [`attach_in_namespace`].
pub fn read_only_tree(source: &CStr) -> io::Result<OwnedFd> {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    const MOUNT_ATTR_RDONLY: u64 = 0x1;
    const MOUNT_ATTR_NOSUID: u64 = 0x2;
    const MOUNT_ATTR_NODEV: u64 = 0x4;
    const MOUNT_ATTR_NOEXEC: u64 = 0x8;
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    // SAFETY: a NUL-terminated path; the flags ask for a new descriptor only.
    let fd = check(unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            source.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    })?;
    // SAFETY: a new descriptor that nothing else owns.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: `attr` is a live `struct mount_attr` of the size passed; the empty path with
    // AT_EMPTY_PATH names the detached tree itself.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })?;
    Ok(tree)
}

/// Attaches each detached tree (from [`read_only_tree`]) over its path in the mount namespace
/// `ns` (an open `/proc/<pid>/ns/mnt`), from a short-lived thread that enters that namespace
/// (with its own root and working directory, the namespace's) and is gone when done: no other
/// call of the shim runs there. A path that is not there is skipped (ENOENT); any other
/// failure is the answer. The indices of the trees attached.
pub fn attach_in_namespace(ns: &OwnedFd, trees: &[(OwnedFd, CString)]) -> io::Result<Vec<usize>> {
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
    on_moved_thread(
        || {
            // SAFETY: unshare(CLONE_FS) gives this thread its own root and working directory,
            // which setns(CLONE_NEWNS) requires and then sets to the namespace's root.
            check(unsafe { libc::unshare(libc::CLONE_FS) } as libc::c_long)?;
            // SAFETY: setns(2) on a mount namespace descriptor; only this thread moves.
            check(unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNS) } as libc::c_long)
                .map(drop)
        },
        || {
            let mut done = Vec::new();
            for (i, (tree, target)) in trees.iter().enumerate() {
                // SAFETY: a live detached tree and a NUL-terminated target path; a trailing
                // symlink in the target is not followed (no MOVE_MOUNT_T_SYMLINKS).
                let r = check(unsafe {
                    libc::syscall(
                        libc::SYS_move_mount,
                        tree.as_raw_fd(),
                        c"".as_ptr(),
                        libc::AT_FDCWD,
                        target.as_ptr(),
                        MOVE_MOUNT_F_EMPTY_PATH,
                    )
                });
                match r {
                    Ok(_) => done.push(i),
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(done)
        },
    )
}

/// While alive, the calling thread acts with a workload's credentials.
///
/// Leaving restores the effective capabilities, fsuid 0 and fsgid 0; the supplementary
/// groups and the umask stay the workload's until another workload's differ: the supervisor's
/// own work (procfs, its state directory) runs as root with every capability, for which
/// neither makes a difference.
///
/// Except, with [`AsWorkload::enter_parking`] (opens), for a workload with fsuid and fsgid 0
/// (root in the container, the common case), whose effective capabilities are a subset of
/// the supervisor's and the only difference: then the thread stays *parked* at them after
/// leaving, so that the next call from a task
/// with the same credentials needs no `capset` at all (two fewer per open, about 3 us here).
/// A parked thread still reads tasks (root's reads of root's tasks need no capability but
/// for non-dumpable ones, which the caller retries after [`unpark`]) and writes its audit
/// log (a file it holds open, in a directory root owns); everything else the supervisor
/// does starts with [`unpark`], as does taking on any other credentials.
pub struct AsWorkload {
    caps: [CapData; 2],
    fsuid: u32,
    fsgid: u32,
    parked: bool,
}

/// Whether the calling thread is parked at a workload's capabilities (see [`AsWorkload`]).
pub fn is_parked() -> bool {
    THREAD.with(|t| t.borrow().as_ref().is_some_and(|t| t.parked.is_some()))
}

/// Gives the calling thread its own effective capabilities back if it is parked.
pub fn unpark() -> io::Result<()> {
    THREAD.with(|t| {
        let mut t = t.borrow_mut();
        match t.as_mut() {
            Some(t) if t.parked.is_some() => {
                capset_effective(&t.caps, u64::MAX)?;
                t.parked = None;
                Ok(())
            }
            _ => Ok(()),
        }
    })
}

impl AsWorkload {
    /// Takes on `c`: groups, fsgid, fsuid, umask (each only if it differs from what the
    /// thread has), then effective capabilities; restored when dropped.
    pub fn enter(c: &Creds) -> io::Result<AsWorkload> {
        Self::take(c, false)
    }

    /// As [`AsWorkload::enter`], but a root workload's capabilities stay after the guard is
    /// dropped (parked, see above), and are not even set again if the thread is parked at
    /// them already.
    pub fn enter_parking(c: &Creds) -> io::Result<AsWorkload> {
        Self::take(c, true)
    }

    fn take(c: &Creds, parking: bool) -> io::Result<AsWorkload> {
        let park = parking && c.fsuid == 0 && c.fsgid == 0;
        // Parked at these very capabilities, with these groups: only the umask may differ.
        let settled = with_thread(|t| {
            if !(park && t.parked == Some(c.cap_eff) && t.groups == c.groups) {
                return Ok(None);
            }
            t.take_umask(c.umask);
            Ok(Some(t.caps))
        })?;
        if let Some(caps) = settled {
            return Ok(AsWorkload {
                caps,
                fsuid: 0,
                fsgid: 0,
                parked: true,
            });
        }
        // Groups, fsuid and fsgid are changed with the thread's own capabilities.
        unpark()?;
        let caps = with_thread(|t| {
            if c.groups != t.groups {
                set_groups(&c.groups)?;
                t.groups.clone_from(&c.groups);
            }
            t.take_umask(c.umask);
            Ok(t.caps)
        })?;
        if c.fsgid != 0 {
            set_fsgid(c.fsgid);
        }
        if c.fsuid != 0 {
            set_fsuid(c.fsuid);
        }
        let guard = AsWorkload {
            caps,
            fsuid: c.fsuid,
            fsgid: c.fsgid,
            parked: park,
        };
        capset_effective(&guard.caps, c.cap_eff)?;
        if park {
            with_thread(|t| {
                t.parked = Some(c.cap_eff);
                Ok(())
            })?;
        }
        Ok(guard)
    }
}

impl Drop for AsWorkload {
    fn drop(&mut self) {
        if self.parked {
            return; // stays at the workload's capabilities (see above)
        }
        // Effective capabilities back first: setfsuid/setfsgid need them.
        let _ = capset_effective(&self.caps, u64::MAX);
        if self.fsuid != 0 {
            set_fsuid(0);
        }
        if self.fsgid != 0 {
            set_fsgid(0);
        }
    }
}

/// The host's Landlock ABI version (`landlock_create_ruleset(NULL, 0,
/// LANDLOCK_CREATE_RULESET_VERSION)`), or `None` without Landlock.
pub fn landlock_abi() -> Option<u32> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_ulong = 1;
    // SAFETY: with the VERSION flag the kernel reads no attribute (NULL, size 0) and only
    // returns a number.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    u32::try_from(v).ok().filter(|v| *v > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has(set: &libc::cpu_set_t, cpu: usize) -> bool {
        // SAFETY: a plain bit array; CPU_ISSET checks the bound.
        unsafe { libc::CPU_ISSET(cpu, set) }
    }

    fn count(set: &libc::cpu_set_t) -> i32 {
        // SAFETY: a plain bit array.
        unsafe { libc::CPU_COUNT(set) }
    }

    /// A lookup on the thread `in_root_of` makes: absolute paths, `..` and absolute symlinks
    /// stay in the given root, as for a task chrooted there; the calling thread's root and
    /// credentials are unchanged after. Needs root (chroot); skipped otherwise.
    #[test]
    fn lookups_in_a_tasks_root_stay_in_it() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: in_root_of needs root (chroot)");
            return;
        }
        let dir = std::env::temp_dir().join(format!("strata-in-root-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("in"), "in").unwrap();
        std::os::unix::fs::symlink("/in", dir.join("sub/abs")).unwrap();
        let root: OwnedFd = std::fs::File::open(&dir).unwrap().into();
        let sub: OwnedFd = std::fs::File::open(dir.join("sub")).unwrap().into();
        let creds = Creds {
            groups: nix::unistd::getgroups()
                .unwrap()
                .into_iter()
                .map(|g| g.as_raw())
                .collect(),
            cap_eff: u64::MAX,
            ..Default::default()
        };
        let look = |at: &OwnedFd, p: &std::ffi::CStr, resolve: u64| {
            in_root_of(&root, &creds, || {
                openat2(
                    at.as_raw_fd(),
                    p,
                    libc::O_PATH | libc::O_CLOEXEC,
                    0,
                    resolve,
                )
            })
            .map(|fd| std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap())
            .map_err(|e| e.raw_os_error().unwrap())
        };
        let want = Ok(dir.join("in"));
        assert_eq!(look(&sub, c"/in", 0), want);
        assert_eq!(look(&sub, c"../../../../in", 0), want);
        assert_eq!(look(&sub, c"abs", 0), want);
        assert_eq!(look(&sub, c"abs", RESOLVE_NO_SYMLINKS), Err(libc::ELOOP));
        assert_eq!(look(&sub, c"../in", RESOLVE_BENEATH), Err(libc::EXDEV));
        assert_eq!(look(&sub, c"/etc/passwd", 0), Err(libc::ENOENT));
        // The calling thread's own root is the host's still.
        assert!(std::path::Path::new("/proc/self/status").exists());
        drop((root, sub));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cpu_lists() {
        let set = parse_cpu_list("0-2,5").unwrap();
        assert!(has(&set, 0) && has(&set, 1) && has(&set, 2) && has(&set, 5));
        assert!(!has(&set, 3) && !has(&set, 4) && !has(&set, 6));
        assert!(parse_cpu_list("3-1").is_none());
        assert!(parse_cpu_list("x").is_none());
        assert!(parse_cpu_list("0-99999").is_none());
    }

    /// A waiting process is held on this CPU while pinned and runs everywhere again after;
    /// one whose CPUs are restricted is left alone.
    #[test]
    fn pinning_a_waiting_task() {
        let all = *online_cpus().expect("online CPUs");
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        {
            let pinned = Pinned::to_this_cpu(pid).expect("an unrestricted task is pinned");
            let now = get_affinity(pid).unwrap();
            assert_eq!(count(&now), 1);
            assert!(has(&now, pinned.cpu));
        }
        assert!(cpu_sets_equal(&get_affinity(pid).unwrap(), &all));
        if count(&all) > 1 {
            // Restricted by itself (here: by us) to one CPU: left as it is.
            let one = only_cpu(0);
            assert!(set_affinity(pid, &one));
            assert!(Pinned::to_this_cpu(pid).is_none());
            assert!(cpu_sets_equal(&get_affinity(pid).unwrap(), &one));
            // Changed while pinned: the change stands.
            assert!(set_affinity(pid, &all));
            let pinned = Pinned::to_this_cpu(pid).unwrap();
            let other = only_cpu(if pinned.cpu == 0 { 1 } else { 0 });
            assert!(set_affinity(pid, &other));
            drop(pinned);
            assert!(cpu_sets_equal(&get_affinity(pid).unwrap(), &other));
        } else {
            eprintln!("one CPU online: the restricted cases need two");
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
