//! The supervisor: receives each container's seccomp notification fds on a socket its
//! processes inherit (the pre-exec hook sends one from the init and one from every exec'd
//! process), and answers every trapped call on a thread of that container's own, so that one
//! container's flood of calls cannot hold up another's.
//!
//! Rules kept throughout:
//! - An argument behind a pointer is read once (`process_vm_readv`), then the notification
//!   id is checked to be still valid (the pid might have been reused by another task); what
//!   else is read through the pid (credentials, root, cwd) is read before that check.
//! - A decision that rests on such an argument ends in CONTINUE only where the kernel itself
//!   enforces, on the object the call really reaches, a rule at least as strict: exec, which
//!   the kernel must do itself (Landlock's execute rule; see `exec` below), and an open that
//!   creates nothing within a tree that the task's Landlock domain, compiled from the policy,
//!   grants as the policy does (`kernel_backed`; docs/sentry.md, "Kernel-enforced opens").
//!   Other opens are done here, resolved inside the container's root (`paths`) with the
//!   workload's own credentials, and the descriptor is injected
//!   (SECCOMP_IOCTL_NOTIF_ADDFD, SEND flag); IP connect and bind are done here on a
//!   duplicate of the workload's socket.

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{self, SockaddrLike, SockaddrStorage};
use nix::sys::stat::SFlag;

use crate::audit::{AuditLog, Record};
use crate::confine::Tree;
use crate::cpu_cgroup::CpuCgroups;
use crate::filter;
use crate::names;
use crate::policy::{normalize, Access, ExtraAction, Policy};
use crate::sys::{self, Creds, Notif};

mod paths;
mod task;

use paths::{absolute, is_procfs, open_dir, readlink, resolve, Resolved};
use task::{field, keep_root, read_bytes, read_cstr, task, task_and_root, Need, Task};

/// Calls a container may have in flight on worker threads (blocking connects, FIFO opens).
const MAX_WORKERS: usize = 32;
/// Symlinks followed in one path, as the kernel's limit.
const MAX_LINKS: usize = 40;
const PROC_SUPER_MAGIC: i64 = 0x9fa0;
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const X32_SYSCALL_BIT: libc::c_long = 0x4000_0000;

/// What `uname` tells the workload.
#[derive(Debug, Clone)]
pub struct Uts {
    pub nodename: String,
    pub domainname: String,
}

/// The release `uname` reports instead of the host's.
pub const EMULATED_RELEASE: &str = "5.15.0-strata";
pub const EMULATED_VERSION: &str = "#1 SMP PREEMPT_DYNAMIC Strata sentry";

/// One container's supervision state, shared by its threads.
pub struct Ctx {
    pub id: String,
    pub policy: Policy,
    pub audit: AuditLog,
    pub uts: Uts,
    stop: AtomicBool,
    workers: AtomicUsize,
    names: HashMap<i32, String>,
    own_userns: Option<PathBuf>,
    /// Whether the container's tasks live in a user namespace other than the shim's, found
    /// on the first trapped call. It cannot change: every task under a container's filters
    /// got the filter after joining the container's namespaces, and the filter refuses
    /// `unshare`, `setns` and `clone` with namespace flags (and `clone3`).
    foreign_userns: std::sync::OnceLock<bool>,
    /// Whether the tasks' root directory may be kept open between calls: every `chroot` that
    /// could succeed reaches a supervisor thread (see `filter::Applied`), and none has yet
    /// (nor a call of another ABI, whose numbers this supervisor does not decode).
    keep_root: AtomicBool,
    /// The container's CPU cgroups, which its supervisor threads join (found on the first
    /// trapped call; None inside: nothing to join).
    cpu_cgroups: std::sync::OnceLock<Option<CpuCgroups>>,
}

impl Ctx {
    pub fn new(
        id: String,
        policy: Policy,
        audit: AuditLog,
        uts: Uts,
        applied: filter::Applied,
    ) -> Ctx {
        let mut names = HashMap::new();
        for n in filter::managed().chain([filter::ROOT_CHANGING]) {
            if let Ok(nr) = libseccomp::ScmpSyscall::from_name(n) {
                names.insert(i32::from(nr), n.to_string());
            }
        }
        for (n, (nr, _)) in &policy.extra {
            names.insert(*nr, n.clone());
        }
        Ctx {
            id,
            policy,
            audit,
            uts,
            stop: AtomicBool::new(false),
            workers: AtomicUsize::new(0),
            names,
            own_userns: std::fs::read_link("/proc/self/ns/user").ok(),
            foreign_userns: std::sync::OnceLock::new(),
            keep_root: AtomicBool::new(applied.root_watched),
            cpu_cgroups: std::sync::OnceLock::new(),
        }
    }

    /// Moves the supervisor threads out of the container's CPU cgroups for good, before
    /// those are removed (see [`CpuCgroups::release`]).
    pub fn release_cpu_cgroups(&self) {
        if let Some(Some(g)) = self.cpu_cgroups.get() {
            g.release();
        }
    }

    /// The calling supervisor thread joins the CPU cgroups of the container, which the
    /// trapped task `pid` (of notification `id` on `fd`) is in.
    fn join_cpu_cgroups(&self, fd: RawFd, id: u64, pid: u32) {
        if self.cpu_cgroups.get().is_none() {
            let groups = CpuCgroups::of(pid);
            // Read through the pid: only the trapped task's own if it still waits.
            if !sys::id_valid(fd, id) {
                return;
            }
            let _ = self.cpu_cgroups.set(groups);
        }
        if let Some(Some(g)) = self.cpu_cgroups.get() {
            if !g.join() {
                tracing::debug!(id = %self.id, "supervisor thread not in the container's CPU cgroups");
            }
        }
    }

    fn name(&self, nr: i32) -> String {
        self.names
            .get(&nr)
            .cloned()
            .unwrap_or_else(|| format!("syscall_{nr}"))
    }
}

/// The socket a container's processes send their notification fds on, and the thread
/// receiving them.
pub struct Listener {
    ctx: Arc<Ctx>,
    thread: Option<JoinHandle<()>>,
    /// The end the container's processes inherit and send their notification fd on; kept
    /// open for the container's life.
    _exec_theirs: OwnedFd,
    /// Closed (dropped) to wake the receiving thread at once when stopping.
    wake: Option<OwnedFd>,
}

impl Listener {
    /// Receives on `exec_ours` from now on: the init sends its fd when it starts.
    pub fn start(exec_ours: OwnedFd, exec_theirs: OwnedFd, ctx: Arc<Ctx>) -> io::Result<Listener> {
        let c = ctx.clone();
        let (wake_r, wake_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(io::Error::from)?;
        let thread = std::thread::Builder::new()
            .name(format!("sentry-accept-{}", short(&ctx.id)))
            .spawn(move || accept_loop(exec_ours, wake_r, c))?;
        Ok(Listener {
            ctx,
            thread: Some(thread),
            _exec_theirs: exec_theirs,
            wake: Some(wake_w),
        })
    }

    pub fn ctx(&self) -> &Arc<Ctx> {
        &self.ctx
    }

    /// Stops accepting and tells the supervisor threads to end.
    pub fn stop(&mut self) {
        self.ctx.stop.store(true, Ordering::SeqCst);
        self.ctx.release_cpu_cgroups();
        self.wake.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop();
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(8)]
}

fn spawn_supervisor(ctx: &Arc<Ctx>, fd: OwnedFd, kernel: Vec<Tree>) {
    let c = ctx.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("sentry-{}", short(&ctx.id)))
        .spawn(move || supervise(Arc::new(fd), c, kernel));
    if let Err(e) = spawned {
        // The fd is dropped with the closure: the workload's trapped calls fail (ENOSYS),
        // never run unchecked.
        tracing::error!(id = %ctx.id, error = %e, "cannot start a supervisor thread");
    }
}

fn accept_loop(exec_ours: OwnedFd, wake: OwnedFd, ctx: Arc<Ctx>) {
    while !ctx.stop.load(Ordering::SeqCst) {
        let mut fds = [
            PollFd::new(exec_ours.as_fd(), PollFlags::POLLIN),
            PollFd::new(wake.as_fd(), PollFlags::POLLIN),
        ];
        if poll(&mut fds, PollTimeout::from(1000u16)).unwrap_or(0) <= 0 {
            continue;
        }
        if fds[1].revents().is_some_and(|r| !r.is_empty()) {
            break;
        }
        if fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLIN))
        {
            match receive_fd(exec_ours.as_raw_fd()) {
                Ok((fd, kernel)) => spawn_supervisor(&ctx, fd, kernel),
                Err(e) => {
                    tracing::warn!(id = %ctx.id, error = %e, "bad message from a container process")
                }
            }
        }
    }
}

/// Reads a container process's message with its notification fd attached (SCM_RIGHTS): the
/// fd, and the trees its Landlock domain grants as compiled from the policy (`exec` alone: none;
/// `exec <JSON>`: those, see `confine::Applied`). The message comes from the pre-exec hook,
/// before the user's program runs; no task can install a second notifying filter of its own
/// (the kernel allows one listener per filter chain), so no message of a workload's comes
/// with a valid fd.
fn receive_fd(sock: RawFd) -> io::Result<(OwnedFd, Vec<Tree>)> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut cmsg = nix::cmsg_space!([RawFd; 2]);
    let mut iov = [io::IoSliceMut::new(&mut buf)];
    let msg = socket::recvmsg::<()>(
        sock,
        &mut iov,
        Some(&mut cmsg),
        socket::MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for c in msg.cmsgs()? {
        if let socket::ControlMessageOwned::ScmRights(r) = c {
            fds.extend(r);
        }
    }
    let len = msg.bytes;
    let mut owned: Vec<OwnedFd> = fds.into_iter().map(sys::own_fd).collect();
    if owned.len() != 1 {
        return Err(io::Error::other(format!(
            "expected one seccomp fd, got {}",
            owned.len()
        )));
    }
    let fd = owned.remove(0);
    // Anything but a well-formed list leaves every open to the supervisor.
    let kernel = buf[..len]
        .strip_prefix(b"exec ")
        .and_then(|j| serde_json::from_slice(j).ok())
        .unwrap_or_default();
    Ok((fd, kernel))
}

fn supervise(fd: Arc<OwnedFd>, ctx: Arc<Ctx>, kernel: Vec<Tree>) {
    // Own umask for this thread: files are created with each workload's umask.
    if let Err(e) = sys::unshare_fs() {
        tracing::error!(id = %ctx.id, error = %e, "unshare(CLONE_FS) in the supervisor; closing the filter (fail closed)");
        return;
    }
    // Best effort: older kernels lack it, and the answers are the same without it.
    let _ = sys::set_sync_wakeup(fd.as_raw_fd());
    // Best effort too: only the order in which the task and its supervisor run changes.
    let _ = sys::batch_policy();
    tracing::info!(id = %ctx.id, kernel_trees = kernel.len(), "supervising");
    let mut joined = false;
    loop {
        if ctx.stop.load(Ordering::SeqCst) {
            break;
        }
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        // Audit records wait in a batch while calls keep coming; written once idle.
        let pending = ctx.audit.pending();
        match poll(
            &mut fds,
            PollTimeout::from(if pending { 50u16 } else { 500 }),
        ) {
            Ok(0) => {
                // Idle: the thread's own capabilities back (see sys::AsWorkload).
                let _ = sys::unpark();
                if pending {
                    ctx.audit.flush();
                }
                continue;
            }
            Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => {
                tracing::error!(id = %ctx.id, error = %e, "poll on the seccomp fd");
                break;
            }
        }
        let rev = fds[0].revents().unwrap_or(PollFlags::empty());
        if !rev.contains(PollFlags::POLLIN) {
            if rev.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL) {
                break; // no task uses this filter any more
            }
            continue;
        }
        let n = match sys::recv(fd.as_raw_fd()) {
            Ok(n) => n,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::EINTR)) => {
                continue
            }
            Err(e) => {
                tracing::error!(id = %ctx.id, error = %e, "SECCOMP_IOCTL_NOTIF_RECV");
                break;
            }
        };
        if !joined {
            ctx.join_cpu_cgroups(fd.as_raw_fd(), n.id, n.pid);
            joined = ctx.cpu_cgroups.get().is_some();
        }
        handle(&ctx, &fd, &kernel, n);
    }
    ctx.audit.flush();
    tracing::debug!(id = %ctx.id, "supervisor done");
}

/// Reasons that are the call's own failure (as the kernel would have answered), not a
/// refusal by policy: audited as `error`, not `deny`.
const ERROR_REASONS: &[&str] = &[
    "open failed",
    "resolution failed",
    "no such file",
    "not a regular file",
    "unreadable path",
    "unreadable address",
    "unreadable open_how",
    "bad open_how size",
    "bad openat2 flags or mode",
    "the task cannot take the descriptor",
    "bad address",
    "bad utsname buffer",
    "cannot place a relative path",
    "not a socket of the task",
    "bind failed",
    "connect failed",
    "too many blocking calls in flight",
    "exec path changed during the check",
];

/// How a trapped call is answered.
enum Outcome {
    Errno(i32, &'static str),
    Continue,
    Value(i64),
    /// An opened file, whether close-on-exec, and whether the task may be held on the
    /// supervisor's CPU while it takes it (not for procfs files, which tell a task its CPUs).
    Fd(OwnedFd, bool, bool),
    /// An emulated file's content (see `emulated_file`), injected as an fd.
    Emulated(OwnedFd, bool),
    /// Answered by a worker thread.
    Deferred,
    /// The task is gone; nothing to answer.
    Gone,
}

struct Call<'a> {
    ctx: &'a Arc<Ctx>,
    fd: &'a Arc<OwnedFd>,
    /// The trees the calling task's Landlock domain grants as the policy does (see
    /// `kernel_backed`); empty where it grants none, or more than the policy allows.
    kernel: &'a [Tree],
    n: Notif,
    args: BTreeMap<String, String>,
}

impl Call<'_> {
    fn arg(&mut self, k: &str, v: impl Into<String>) {
        self.args.insert(k.to_string(), v.into());
    }

    fn valid(&self) -> bool {
        sys::id_valid(self.fd.as_raw_fd(), self.n.id)
    }

    /// The answer when the task could not be read: none if it is gone, else a refusal
    /// (never leave a task waiting).
    fn unreadable(&self) -> Outcome {
        if self.valid() {
            Outcome::Errno(libc::EACCES, "cannot read the task")
        } else {
            Outcome::Gone
        }
    }
}

fn handle(ctx: &Arc<Ctx>, fd: &Arc<OwnedFd>, kernel: &[Tree], n: Notif) {
    let mut call = Call {
        ctx,
        fd,
        kernel,
        n,
        args: BTreeMap::new(),
    };
    let nr = n.data.nr as libc::c_long;
    let a = n.data.args;
    if n.data.arch != AUDIT_ARCH_X86_64 || nr & X32_SYSCALL_BIT != 0 {
        // Numbers of another ABI are not decoded here: one might be a chroot.
        ctx.keep_root.store(false, Ordering::SeqCst);
    }
    if !matches!(
        nr,
        libc::SYS_open
            | libc::SYS_openat
            | libc::SYS_openat2
            | libc::SYS_creat
            | libc::SYS_sched_getaffinity
    ) {
        // Everything but an open runs with the supervisor's own capabilities.
        let _ = sys::unpark();
    }
    let outcome = match nr {
        libc::SYS_open => open_call(&mut call, libc::AT_FDCWD, a[0], a[1] as i32, a[2] as u32, 0),
        libc::SYS_creat => open_call(
            &mut call,
            libc::AT_FDCWD,
            a[0],
            libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC,
            a[1] as u32,
            0,
        ),
        libc::SYS_openat => open_call(&mut call, a[0] as i32, a[1], a[2] as i32, a[3] as u32, 0),
        libc::SYS_openat2 => openat2_call(&mut call),
        libc::SYS_execve => exec_call(&mut call, libc::AT_FDCWD, a[0], 0),
        libc::SYS_execveat => exec_call(&mut call, a[0] as i32, a[1], a[4] as i32),
        libc::SYS_socket => socket_call(&mut call),
        libc::SYS_connect | libc::SYS_bind => addr_call(&mut call, nr == libc::SYS_bind),
        libc::SYS_listen => listen_call(&mut call),
        libc::SYS_uname => uname_call(&mut call),
        // Nothing to decide: trapped so that it runs after this thread has let go of a task
        // it held on its CPU for the previous answer (filter::TRAPPED).
        libc::SYS_sched_getaffinity => Outcome::Continue,
        libc::SYS_personality => {
            call.arg("persona", format!("{:#x}", a[0] as u32));
            match a[0] as u32 {
                0 | 8 | 0x20008 | 0xffff_ffff => Outcome::Continue,
                _ => Outcome::Errno(libc::EPERM, "personality change"),
            }
        }
        libc::SYS_clone => {
            call.arg("flags", format!("{:#x}", a[0]));
            Outcome::Errno(libc::EPERM, "clone flags refused")
        }
        libc::SYS_chroot if !matches!(extra(ctx, n.data.nr), Some(ExtraAction::Deny)) => {
            // Let through (the decision rests on no argument: the spec's profile, or the
            // policy, allows every chroot); from now on the tasks' roots may differ, so each
            // call opens its task's root afresh.
            ctx.keep_root.store(false, Ordering::SeqCst);
            Outcome::Continue
        }
        _ => match extra(ctx, n.data.nr) {
            Some(ExtraAction::Audit) => Outcome::Continue,
            Some(ExtraAction::Deny) => Outcome::Errno(libc::EPERM, "denied by policy"),
            None => Outcome::Errno(libc::EPERM, "refused by the sentry"),
        },
    };
    finish(call, outcome);
    // Whatever the answer, nothing of this call outlives it.
    AFTER_ANSWER.with(|a| a.borrow_mut().clear());
}

thread_local! {
    /// What an answer leaves to undo once it is sent (the workload's credentials, the
    /// directory an open went through): the task waits for the answer, not for this.
    static AFTER_ANSWER: std::cell::RefCell<Vec<Box<dyn std::any::Any>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Keeps `x` (and its drop) until the answer of the call being handled is sent.
fn after_answer(x: impl std::any::Any) {
    AFTER_ANSWER.with(|a| a.borrow_mut().push(Box::new(x)));
}

/// The policy's own decision on call `nr` (`[syscalls]`), if it lists it.
fn extra(ctx: &Ctx, nr: i32) -> Option<ExtraAction> {
    ctx.policy
        .extra
        .values()
        .find(|(x, _)| *x == nr)
        .map(|(_, a)| *a)
}

fn finish(call: Call<'_>, outcome: Outcome) {
    let raw = call.fd.as_raw_fd();
    let id = call.n.id;
    let (decision, errno, reason) = match &outcome {
        Outcome::Errno(e, r) if ERROR_REASONS.contains(r) => ("error", Some(*e), *r),
        Outcome::Errno(e, r) => ("deny", Some(*e), *r),
        Outcome::Continue | Outcome::Value(_) | Outcome::Fd(..) => ("allow", None, ""),
        Outcome::Emulated(..) => ("emulate", None, ""),
        Outcome::Deferred => return,
        Outcome::Gone => ("gone", None, "task gone before the answer"),
    };
    let adds_fd = matches!(outcome, Outcome::Fd(..) | Outcome::Emulated(..));
    let sent = match outcome {
        Outcome::Errno(e, _) => sys::respond_errno(raw, id, e),
        Outcome::Continue => sys::respond_continue(raw, id),
        Outcome::Value(v) => sys::respond_value(raw, id, v),
        Outcome::Fd(f, cloexec, hold) => {
            let _pinned = hold.then(|| sys::Pinned::to_this_cpu(call.n.pid));
            sys::addfd_send(raw, id, &f, cloexec).map(|_| ())
        }
        Outcome::Emulated(f, cloexec) => sys::addfd_send(raw, id, &f, cloexec).map(|_| ()),
        Outcome::Deferred | Outcome::Gone => Ok(()),
    };
    // Now that the task runs again: restore the supervisor's credentials, close what the
    // open left (see `after_answer`).
    AFTER_ANSWER.with(|a| a.borrow_mut().clear());
    let (mut decision, mut errno, mut reason) = (decision, errno, reason);
    match sent.as_ref().map_err(|e| e.raw_os_error()) {
        // The task is gone (or its call was interrupted): nobody waits for an answer.
        Ok(()) | Err(Some(libc::ENOENT)) => {}
        Err(Some(e)) if adds_fd => {
            // The task could not install the descriptor (EMFILE at its RLIMIT_NOFILE, ...):
            // the kernel has put the call back to be answered, and waits. The open fails
            // with that errno, as it would have in the kernel.
            let _ = sys::respond_errno(raw, id, e);
            (decision, errno, reason) = ("error", Some(e), "the task cannot take the descriptor");
        }
        Err(_) => {
            if let Err(e) = &sent {
                tracing::debug!(id = %call.ctx.id, error = %e, "answering a trapped call");
            }
        }
    }
    let decision = if call.n.data.nr as libc::c_long == libc::SYS_uname {
        "emulate"
    } else {
        decision
    };
    call.ctx.audit.record(Record {
        pid: call.n.pid,
        syscall: call.ctx.name(call.n.data.nr),
        args: call.args,
        decision: decision.into(),
        errno,
        reason: reason.into(),
        ..Default::default()
    });
}

/// Runs `f` on a worker thread (for calls that may block), answering from there.
fn defer(call: Call<'_>, f: impl FnOnce() -> Outcome + Send + 'static) -> Outcome {
    // A new thread starts with this one's credentials, and takes them for its own.
    let _ = sys::unpark();
    let ctx = call.ctx.clone();
    if ctx.workers.fetch_add(1, Ordering::SeqCst) >= MAX_WORKERS {
        ctx.workers.fetch_sub(1, Ordering::SeqCst);
        finish(
            call,
            Outcome::Errno(libc::EAGAIN, "too many blocking calls in flight"),
        );
        return Outcome::Deferred;
    }
    let fd = call.fd.clone();
    let raw = fd.as_raw_fd();
    let n = call.n;
    let args = call.args;
    let spawned = std::thread::Builder::new()
        .name(format!("sentry-w-{}", short(&ctx.id)))
        .spawn({
            let ctx = ctx.clone();
            move || {
                // Started from a supervisor thread, in the container's CPU cgroups: a call
                // that blocks may outlast the container, whose groups must then be empty.
                if let Some(Some(g)) = ctx.cpu_cgroups.get() {
                    g.leave();
                }
                let _ = sys::unshare_fs();
                let outcome = f();
                let c = Call {
                    ctx: &ctx,
                    fd: &fd,
                    kernel: &[],
                    n,
                    args,
                };
                finish(c, outcome);
                ctx.workers.fetch_sub(1, Ordering::SeqCst);
            }
        });
    if spawned.is_err() {
        ctx.workers.fetch_sub(1, Ordering::SeqCst);
        let _ = sys::respond_errno(raw, n.id, libc::EAGAIN);
    }
    Outcome::Deferred
}

const CAP_NET_BIND_SERVICE: u32 = 10;
const SOCK_PACKET: i32 = 10;

/// Opens a host path (absolute: `/proc/...`) as [`openat`] does.
fn open_path(path: &str, flags: OFlag, mode: u32) -> Result<OwnedFd, Errno> {
    openat_raw(libc::AT_FDCWD, path, flags, mode)
}

/// open(2) ignores flags it does not know and the mode without O_CREAT; openat2(2) refuses
/// both, so pass only what open(2) would act on.
fn openat(dir: &OwnedFd, name: &str, flags: OFlag, mode: u32) -> Result<OwnedFd, Errno> {
    openat_raw(dir.as_raw_fd(), name, flags, mode)
}

/// The open(2) flags the kernel knows; others are ignored by open(2), refused by openat2(2).
const KNOWN_OPEN_FLAGS: libc::c_int = libc::O_ACCMODE
    | libc::O_CREAT
    | libc::O_EXCL
    | libc::O_NOCTTY
    | libc::O_TRUNC
    | libc::O_APPEND
    | libc::O_NONBLOCK
    | libc::O_DSYNC
    | libc::O_SYNC
    | libc::O_ASYNC
    | libc::O_DIRECT
    | libc::O_LARGEFILE
    | libc::O_DIRECTORY
    | libc::O_NOFOLLOW
    | libc::O_NOATIME
    | libc::O_CLOEXEC
    | libc::O_PATH
    | libc::O_TMPFILE;

fn openat_raw(dir: RawFd, name: &str, flags: OFlag, mode: u32) -> Result<OwnedFd, Errno> {
    let c = names::to_c(name).map_err(Errno::from_raw)?;
    let known = KNOWN_OPEN_FLAGS;
    let mut flags = flags.bits() & known;
    if flags & libc::O_PATH != 0 {
        // open(2) keeps only these with O_PATH; openat2(2) refuses the others (EINVAL).
        flags &= O_PATH_FLAGS;
    }
    let mode = if flags & libc::O_CREAT != 0 || flags & libc::O_TMPFILE == libc::O_TMPFILE {
        mode & 0o7777
    } else {
        0
    };
    sys::openat2(dir, &c, flags, mode, 0)
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
}

fn bind_or_connect(sock: &OwnedFd, sa: SocketAddr, bind: bool) -> Result<(), Errno> {
    let fd = sock.as_raw_fd();
    match sa {
        SocketAddr::V4(a) => {
            let a = socket::SockaddrIn::from(a);
            if bind {
                socket::bind(fd, &a)
            } else {
                socket::connect(fd, &a)
            }
        }
        SocketAddr::V6(a) => {
            let a = socket::SockaddrIn6::from(a);
            if bind {
                socket::bind(fd, &a)
            } else {
                socket::connect(fd, &a)
            }
        }
    }
}

/// Device nodes a workload may open through the supervisor (the supervisor is not in the
/// container's device cgroup, so it must check them itself): null, zero, full, random,
/// urandom, tty, console, ptmx, and the pty slaves.
fn device_allowed(rdev: u64) -> bool {
    let (maj, min) = (libc::major(rdev), libc::minor(rdev));
    matches!(
        (maj, min),
        (1, 3) | (1, 5) | (1, 7) | (1, 8) | (1, 9) | (5, 0) | (5, 1) | (5, 2)
    ) || (136..=143).contains(&maj)
}

// ----- calls -----------------------------------------------------------------------------

fn flags_text(flags: i32) -> String {
    let mut s = match flags & libc::O_ACCMODE {
        libc::O_RDONLY => "O_RDONLY",
        libc::O_WRONLY => "O_WRONLY",
        _ => "O_RDWR",
    }
    .to_string();
    for (f, n) in [
        (libc::O_CREAT, "O_CREAT"),
        (libc::O_TRUNC, "O_TRUNC"),
        (libc::O_APPEND, "O_APPEND"),
        (libc::O_EXCL, "O_EXCL"),
        (libc::O_DIRECTORY, "O_DIRECTORY"),
        (libc::O_PATH, "O_PATH"),
        (libc::O_NOFOLLOW, "O_NOFOLLOW"),
    ] {
        if flags & f == f {
            s.push('|');
            s.push_str(n);
        }
    }
    s
}

fn openat2_call(call: &mut Call<'_>) -> Outcome {
    let a = call.n.data.args;
    let size = a[3] as usize;
    if !(24..=4096).contains(&size) {
        return Outcome::Errno(libc::EINVAL, "bad open_how size");
    }
    let how = match read_bytes(call.n.pid, a[2], 24) {
        Ok(b) => b,
        Err(e) => return Outcome::Errno(e, "unreadable open_how"),
    };
    let word = |i: usize| u64::from_ne_bytes(how[i * 8..i * 8 + 8].try_into().unwrap());
    // openat2(2)'s own checks, which open(2) does not make (it ignores what it does not know).
    let (flags, mode) = (word(0), word(1));
    let known = KNOWN_OPEN_FLAGS as u64;
    let creates = flags & libc::O_CREAT as u64 != 0
        || flags & libc::O_TMPFILE as u64 == libc::O_TMPFILE as u64;
    if flags & !known != 0
        || (flags & libc::O_PATH as u64 != 0 && flags & !(O_PATH_FLAGS as u64) != 0)
        || (!creates && mode != 0)
        || mode & !0o7777 != 0
    {
        return Outcome::Errno(libc::EINVAL, "bad openat2 flags or mode");
    }
    if word(2) != 0 {
        // The task's own RESOLVE_* flags would have to be combined with RESOLVE_IN_ROOT.
        return Outcome::Errno(libc::EOPNOTSUPP, "openat2 resolve flags are not emulated");
    }
    open_call(call, a[0] as i32, a[1], word(0) as i32, word(1) as u32, 0)
}

/// The flags open(2) keeps beside `O_PATH` (it drops the others; openat2(2) refuses them).
const O_PATH_FLAGS: i32 = libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;

fn open_call(call: &mut Call<'_>, dirfd: i32, ptr: u64, flags: i32, mode: u32, _r: u64) -> Outcome {
    call.arg("flags", flags_text(flags));
    // As open(2): with O_PATH the access mode, O_CREAT, O_TRUNC... mean nothing.
    let flags = if flags & libc::O_PATH != 0 {
        flags & O_PATH_FLAGS
    } else {
        flags
    };
    let creates =
        flags & (libc::O_CREAT | libc::O_TRUNC) != 0 || flags & libc::O_TMPFILE == libc::O_TMPFILE;
    let need = if creates { Need::All } else { Need::Creds };
    // A thread parked at the last workload's capabilities (sys::AsWorkload) may be refused
    // a read (a task that is not dumpable): then again with its own.
    let (t, root, abs) = match read_open_call(call, need, dirfd, ptr) {
        Err(_) if sys::is_parked() && sys::unpark().is_ok() => {
            match read_open_call(call, need, dirfd, ptr) {
                Ok(x) => x,
                Err(o) => return o,
            }
        }
        Ok(x) => x,
        Err(o) => return o,
    };
    keep_root(call.ctx, &root);
    let write = flags & libc::O_ACCMODE != libc::O_RDONLY || creates;
    let creds = match sys::AsWorkload::enter_parking(&t.creds) {
        Ok(g) => g,
        Err(_) => return Outcome::Errno(libc::EACCES, "cannot take the workload's credentials"),
    };
    // A trailing slash asks for a directory, as the kernel reads it: O_CREAT is then EISDIR,
    // a file ENOTDIR, and a symlink is followed even with O_NOFOLLOW.
    let dir_only = abs.ends_with('/');
    if dir_only && flags & libc::O_CREAT != 0 {
        return Outcome::Errno(libc::EISDIR, "open failed");
    }
    let flags = if dir_only {
        flags | libc::O_DIRECTORY
    } else {
        flags
    };
    let follow = flags & libc::O_NOFOLLOW == 0 || dir_only;
    let resolved = match resolve(&t, &root, &abs, follow) {
        Ok(r) => r,
        Err(e) => return Outcome::Errno(e, "resolution failed"),
    };
    let real = match &resolved {
        Resolved::At { real, .. } | Resolved::OwnFd { real, .. } => real.clone(),
    };
    if real != normalize(&abs) || call.ctx.policy.record {
        call.arg("resolved", real.clone());
    }
    // Reopening a descriptor the task holds (`/dev/stdout`, `/proc/self/fd/N`) gives it nothing
    // new as long as it asks for no more access than the descriptor has: judged by that, on
    // the very file description (a duplicate taken now, which the open then goes through), not
    // by path rules (its path may be outside the container, as containerd's FIFOs are).
    let mut held = None;
    let mut only_null = false;
    if let Resolved::OwnFd { host, .. } = &resolved {
        call.arg("own_fd", "true");
        match own_fd_for(&t, host, flags, write) {
            Ok(d) => held = Some(d),
            Err(e) => return Outcome::Errno(e, "reopen for more than the descriptor allows"),
        }
    } else {
        let access = call.ctx.policy.file_access(&real);
        let ok = match access {
            Access::Deny => false,
            Access::Read => !write,
            Access::ReadWrite => true,
        };
        if !ok {
            match refused_open(&resolved, flags) {
                Refused::Missing => return Outcome::Errno(libc::ENOENT, "no such file"),
                // Checked again on what is opened: the name may change meanwhile.
                Refused::NullDevice => only_null = true,
                Refused::ByPolicy => return Outcome::Errno(libc::EACCES, "path rule"),
            }
        }
    }
    if flags & libc::O_PATH != 0 {
        // The kernel opens it (its own answers: EMFILE, ELOOP, ENOTDIR...), because a
        // descriptor opened with O_PATH cannot be handed over (SECCOMP_IOCTL_NOTIF_ADDFD
        // refuses one: EBADF) and carries no access to data: reading or writing through it
        // needs a reopen, by /proc/self/fd/N (trapped, and refused for more access than the
        // descriptor has: none) or by a path (trapped and judged). What it gives beyond that
        // is metadata (fstat), which the untrapped stat gives as well. So a task that changes
        // its path after this check gains nothing the policy refuses (docs/sentry.md).
        return Outcome::Continue;
    }
    // Only where the flags the kernel will use are the ones judged: `openat2` reads its
    // `open_how` again after CONTINUE. And never a creating open: making a file is a right
    // the compiled ruleset grants wherever the spec allows (confine::other_write_rights).
    if !creates
        && call.n.data.nr as libc::c_long != libc::SYS_openat2
        && kernel_backed(call.kernel, &resolved, write)
    {
        // Left to the kernel: the task's own open, under its Landlock domain, which grants
        // this access only on trees where the policy allows it on every path beneath. Whatever
        // the path buffer says when the kernel reads it again, the object the kernel reaches
        // with this access is one the policy allows (docs/sentry.md, "Kernel-enforced opens").
        call.arg("kernel", "landlock");
        after_answer((creds, resolved));
        return Outcome::Continue;
    }
    if let Some(text) = emulated_file(&real, flags) {
        return match memfd_with(&real, &text) {
            Ok(f) => Outcome::Emulated(f, flags & libc::O_CLOEXEC != 0),
            Err(e) => Outcome::Errno(e as i32, "open failed"),
        };
    }
    // The supervisor is outside the container's device cgroup: judge device nodes before
    // opening them (and again after, on what was opened).
    if let Resolved::At { stat: Some(st), .. } = &resolved {
        let fmt = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        if (fmt == SFlag::S_IFCHR || fmt == SFlag::S_IFBLK)
            && !device_allowed(st.st_rdev)
            && flags & libc::O_PATH == 0
        {
            return Outcome::Errno(libc::EPERM, "device not allowed");
        }
    }
    let cloexec = flags & libc::O_CLOEXEC != 0;
    // Never block the supervisor (FIFOs), never acquire a terminal for the shim.
    let nonblock = flags & libc::O_NONBLOCK != 0;
    let oflags = OFlag::from_bits_truncate(
        (flags | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK) & !libc::O_NOFOLLOW,
    );
    if let Resolved::At { stat: Some(st), .. } = &resolved {
        if !nonblock
            && flags & libc::O_ACCMODE == libc::O_RDONLY
            && SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFIFO
        {
            // A blocking read-open of a FIFO waits for a writer in the kernel; opened without
            // waiting, the reader would see end-of-file before the writer came (and the
            // writer then wait for a reader forever). Wait for one on a worker thread.
            return fifo_wait(
                call,
                resolved,
                None,
                oflags & !OFlag::O_NONBLOCK,
                mode,
                t.creds.clone(),
                cloexec,
            );
        }
    }
    let opened = match &resolved {
        Resolved::At {
            dir, name, real, ..
        } => {
            let nofollow = if name == "." {
                OFlag::empty()
            } else {
                OFlag::O_NOFOLLOW
            };
            if is_namespaced_sysctl(real, dir) {
                // The kernel answers these from the opener's namespaces: open it from the
                // task's (its net, IPC and UTS), not the shim's. The directory too: one that
                // is a namespace's own (fs/mqueue, net/...) is found only from inside it.
                let dir_path = match real.rsplit_once('/') {
                    Some((p, _)) if name != "." => p,
                    _ => real.as_str(),
                };
                let root: &OwnedFd = &root;
                match sys::pidfd_open(t.tgid).and_then(|pidfd| {
                    sys::in_namespaces_of(&pidfd, || {
                        let (d, _) =
                            open_dir(root, dir_path).map_err(io::Error::from_raw_os_error)?;
                        openat(&d, name, oflags | nofollow, mode).map_err(io::Error::from)
                    })
                }) {
                    Ok(f) => Ok(f),
                    Err(e) => Err(Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))),
                }
            } else {
                openat(dir, name, oflags | nofollow, mode)
            }
        }
        Resolved::OwnFd { host, .. } => match &held {
            Some(d) => open_path(&format!("/proc/self/fd/{}", d.as_raw_fd()), oflags, mode),
            None => open_path(host, oflags, mode),
        },
    };
    let file = match opened {
        Ok(f) => f,
        Err(Errno::ENXIO) if !nonblock && flags & libc::O_ACCMODE == libc::O_WRONLY => {
            // A FIFO with no reader yet: wait for one on a worker thread.
            return fifo_wait(
                call,
                resolved,
                held.take(),
                oflags & !OFlag::O_NONBLOCK,
                mode,
                t.creds.clone(),
                cloexec,
            );
        }
        Err(e) => return Outcome::Errno(e as i32, "open failed"),
    };
    if only_null && !is_null_device(&file) {
        return Outcome::Errno(libc::EACCES, "path rule");
    }
    let hold = match check_opened(&file, flags, nonblock) {
        Ok(dev) => dev.is_none_or(|d| !on_procfs(d, &file)),
        Err(e) => return Outcome::Errno(e, "device not allowed"),
    };
    // No second validity check: SECCOMP_IOCTL_NOTIF_ADDFD fails for a task that is gone.
    after_answer((creds, resolved, held));
    Outcome::Fd(file, cloexec, hold)
}

/// Whether an open the policy allowed may be left to the kernel: the calling task's Landlock
/// domain grants the access on a tree that holds the resolved path (for safety, the trees of
/// `kernel` are enough, whatever path is judged: Landlock judges the object the kernel really
/// reaches; the path only picks the opens the kernel will then allow, so that an open the
/// policy allows is not refused by Landlock: a symlink leading out of the tree is resolved
/// here first). Never for a device node (the supervisor's device list, which is stricter than
/// a privileged container's device cgroup) nor for a reopen of the task's own descriptor.
fn kernel_backed(kernel: &[Tree], resolved: &Resolved, write: bool) -> bool {
    if kernel.is_empty() {
        return false;
    }
    let Resolved::At { real, stat, .. } = resolved else {
        return false;
    };
    if let Some(st) = stat {
        let fmt = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        if fmt == SFlag::S_IFCHR || fmt == SFlag::S_IFBLK {
            return false;
        }
    }
    kernel
        .iter()
        .any(|t| (t.write || !write) && within(real, &t.path))
}

/// Whether the normalised path `p` is `tree` or beneath it.
fn within(p: &str, tree: &str) -> bool {
    tree == "/" || p == tree || (p.starts_with(tree) && p.as_bytes().get(tree.len()) == Some(&b'/'))
}

/// Whether `real` (in directory `dir`) is a file of `/proc/sys` on a procfs: its value may be
/// the opener's namespace's (network, IPC, UTS), so it is opened from the task's.
fn is_namespaced_sysctl(real: &str, dir: &OwnedFd) -> bool {
    real.starts_with("/proc/sys/") && is_procfs(dir)
}

fn is_null_device(file: &OwnedFd) -> bool {
    nix::sys::stat::fstat(file.as_raw_fd()).is_ok_and(|st| {
        SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFCHR
            && st.st_rdev == libc::makedev(1, 3)
    })
}

/// How an open that the path rules refuse is answered.
enum Refused {
    /// No such file (and no O_CREAT): the kernel's ENOENT, not the policy's EACCES (`stat`,
    /// which is not trapped, tells as much).
    Missing,
    /// The null device, which a runtime binds over a masked path (`/proc/kcore`,
    /// `/proc/timer_list`...): it holds nothing to refuse, and is opened as under runc.
    NullDevice,
    /// The policy's EACCES.
    ByPolicy,
}

fn refused_open(resolved: &Resolved, flags: i32) -> Refused {
    let Resolved::At {
        dir, name, stat, ..
    } = resolved
    else {
        return Refused::ByPolicy;
    };
    match stat {
        None if name != "." && flags & libc::O_CREAT == 0 => {
            let Ok(cname) = names::to_c(name) else {
                return Refused::ByPolicy;
            };
            // Looked at again for the errno: with the workload's credentials, a directory
            // it cannot search is its EACCES.
            match nix::sys::stat::fstatat(
                Some(dir.as_raw_fd()),
                cname.as_c_str(),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            ) {
                Err(Errno::ENOENT) => Refused::Missing,
                _ => Refused::ByPolicy,
            }
        }
        Some(st)
            if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFCHR
                && st.st_rdev == libc::makedev(1, 3) =>
        {
            // What is opened is checked again on its descriptor (device_allowed).
            Refused::NullDevice
        }
        _ => Refused::ByPolicy,
    }
}

/// What an open needs to know of the trapped task: its credentials, its root, and the
/// absolute path it asks for. Everything read through the pid (credentials, root, path,
/// working directory) is read before the one validity check, so that all of it is known to
/// be the trapped task's.
fn read_open_call(
    call: &mut Call<'_>,
    need: Need,
    dirfd: i32,
    ptr: u64,
) -> Result<(Task, Rc<OwnedFd>, String), Outcome> {
    let pid = call.n.pid;
    let Ok((t, root)) = task_and_root(call.ctx, pid, need) else {
        return Err(call.unreadable());
    };
    let path = match read_cstr(pid, ptr) {
        Ok(p) => p,
        Err(e) => return Err(Outcome::Errno(e, "unreadable path")),
    };
    call.arg("path", path.clone());
    if path.is_empty() {
        return Err(Outcome::Errno(libc::ENOENT, "no such file"));
    }
    let abs = match absolute(&t, dirfd, &path) {
        Ok(p) => p,
        Err(e) => return Err(Outcome::Errno(e, "cannot place a relative path")),
    };
    if !call.valid() {
        return Err(Outcome::Gone);
    }
    Ok((t, root, abs))
}

/// A duplicate of the task's descriptor that `host` (`/proc/<tgid>[/task/<tid>]/fd/<n>`)
/// names, if it allows what `flags` ask for.
fn own_fd_for(t: &Task, host: &str, flags: i32, write: bool) -> Result<OwnedFd, i32> {
    let n: i32 = host
        .rsplit_once("/fd/")
        .and_then(|(_, n)| n.parse().ok())
        .ok_or(libc::EBADF)?;
    let pidfd = sys::pidfd_open(t.tgid).map_err(|_| libc::ESRCH)?;
    let dup = sys::pidfd_getfd(&pidfd, n).map_err(|_| libc::EBADF)?;
    let held =
        nix::fcntl::fcntl(dup.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL).map_err(|e| e as i32)?;
    if flags & libc::O_PATH != 0 {
        return Ok(dup);
    }
    let acc = held & libc::O_ACCMODE;
    let readable = held & libc::O_PATH == 0 && (acc == libc::O_RDONLY || acc == libc::O_RDWR);
    let writable = held & libc::O_PATH == 0 && (acc == libc::O_WRONLY || acc == libc::O_RDWR);
    let want_read = flags & libc::O_ACCMODE != libc::O_WRONLY;
    if (want_read && !readable) || (write && !writable) {
        return Err(libc::EACCES);
    }
    Ok(dup)
}

/// Refuses device nodes outside the default set; restores blocking mode. The device number
/// of the file's filesystem, when it was looked at (not for `O_PATH`).
fn check_opened(file: &OwnedFd, flags: i32, nonblock: bool) -> Result<Option<u64>, i32> {
    let mut dev = None;
    if flags & libc::O_PATH == 0 {
        let st = nix::sys::stat::fstat(file.as_raw_fd()).map_err(|e| e as i32)?;
        let fmt = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        if (fmt == SFlag::S_IFCHR || fmt == SFlag::S_IFBLK) && !device_allowed(st.st_rdev) {
            return Err(libc::EPERM);
        }
        dev = Some(st.st_dev);
    }
    if !nonblock && flags & libc::O_PATH == 0 {
        // F_SETFL acts on O_APPEND, O_ASYNC, O_DIRECT, O_NOATIME and O_NONBLOCK only; the
        // file was opened with the workload's own, so they are its status flags (no F_GETFL).
        let fl = OFlag::from_bits_truncate(flags) & !OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(file.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(fl))
            .map_err(|e| e as i32)?;
    }
    Ok(dev)
}

/// Whether filesystem `dev`, which `file` is on, is a procfs (asked once per filesystem).
fn on_procfs(dev: u64, file: &OwnedFd) -> bool {
    thread_local! {
        static PROCFS: std::cell::RefCell<HashMap<u64, bool>> = std::cell::RefCell::new(HashMap::new());
    }
    PROCFS.with(|m| *m.borrow_mut().entry(dev).or_insert_with(|| is_procfs(file)))
}

/// Finishes an open of a FIFO that must wait for its other end on a worker thread. `held`:
/// the duplicate of the task's own descriptor a reopen was judged on (the open goes through
/// it, as on the supervisor's thread, not through `/proc/<pid>/fd/N` again).
fn fifo_wait(
    call: &mut Call<'_>,
    resolved: Resolved,
    held: Option<OwnedFd>,
    oflags: OFlag,
    mode: u32,
    creds: Creds,
    cloexec: bool,
) -> Outcome {
    let c = Call {
        ctx: call.ctx,
        fd: call.fd,
        kernel: call.kernel,
        n: call.n,
        args: std::mem::take(&mut call.args),
    };
    defer(c, move || {
        let _g = match sys::AsWorkload::enter(&creds) {
            Ok(g) => g,
            Err(_) => {
                return Outcome::Errno(libc::EACCES, "cannot take the workload's credentials")
            }
        };
        let r = match &resolved {
            Resolved::At { dir, name, .. } => openat(dir, name, oflags | OFlag::O_NOFOLLOW, mode),
            Resolved::OwnFd { host, .. } => match &held {
                Some(d) => open_path(&format!("/proc/self/fd/{}", d.as_raw_fd()), oflags, mode),
                None => open_path(host, oflags, mode),
            },
        };
        match r {
            Ok(f) => match check_opened(&f, oflags.bits(), true) {
                // A worker's answer: not held (see `sys::Pinned`).
                Ok(_) => Outcome::Fd(f, cloexec, false),
                Err(e) => Outcome::Errno(e, "device not allowed"),
            },
            Err(e) => Outcome::Errno(e as i32, "open failed"),
        }
    })
}

/// Whether no other task can rewrite the task's memory between the check and the kernel's
/// own read of the exec path: one thread, memory not shared with a multi-threaded parent
/// (vfork), and the path not in a shared mapping.
fn private_memory(t: &Task, addr: u64) -> bool {
    if t.threads != 1 {
        return false;
    }
    if sys::same_vm(t.pid, t.ppid).unwrap_or(true) {
        let parent_threads = std::fs::read_to_string(format!("/proc/{}/status", t.ppid))
            .ok()
            .and_then(|s| field(&s, "Threads").and_then(|v| v.parse::<u32>().ok()));
        if parent_threads != Some(1) {
            return false;
        }
    }
    let Ok(maps) = std::fs::read_to_string(format!("/proc/{}/maps", t.pid)) else {
        return false;
    };
    for l in maps.lines() {
        let mut f = l.split_whitespace();
        let (Some(range), Some(perms)) = (f.next(), f.next()) else {
            continue;
        };
        let Some((lo, hi)) = range.split_once('-') else {
            continue;
        };
        let (Ok(lo), Ok(hi)) = (u64::from_str_radix(lo, 16), u64::from_str_radix(hi, 16)) else {
            continue;
        };
        if (lo..hi).contains(&addr) {
            return perms.as_bytes().get(3) == Some(&b'p');
        }
    }
    false
}

fn exec_call(call: &mut Call<'_>, dirfd: i32, ptr: u64, flags: i32) -> Outcome {
    let pid = call.n.pid;
    let path = if flags & libc::AT_EMPTY_PATH != 0 && ptr != 0 {
        read_cstr(pid, ptr).unwrap_or_default()
    } else {
        match read_cstr(pid, ptr) {
            Ok(p) => p,
            Err(e) => return Outcome::Errno(e, "unreadable path"),
        }
    };
    call.arg("path", path.clone());
    if !call.valid() {
        return Outcome::Gone;
    }
    let Ok((t, root)) = task_and_root(call.ctx, pid, Need::All) else {
        return call.unreadable();
    };
    let real = if path.is_empty() && flags & libc::AT_EMPTY_PATH != 0 {
        match readlink(&format!("/proc/{pid}/fd/{dirfd}")) {
            Ok(p) if p.starts_with('/') => normalize(&p),
            _ => return Outcome::Errno(libc::EACCES, "exec of a descriptor that is no file"),
        }
    } else {
        let abs = match absolute(&t, dirfd, &path) {
            Ok(p) => p,
            Err(e) => return Outcome::Errno(e, "cannot place a relative path"),
        };
        let _creds = match sys::AsWorkload::enter(&t.creds) {
            Ok(g) => g,
            Err(_) => {
                return Outcome::Errno(libc::EACCES, "cannot take the workload's credentials")
            }
        };
        let follow = flags & libc::AT_SYMLINK_NOFOLLOW == 0;
        match resolve(&t, &root, &abs, follow) {
            Ok(Resolved::At {
                dir, name, real, ..
            }) => {
                let cname = match names::to_c(&name) {
                    Ok(c) => c,
                    Err(e) => return Outcome::Errno(e, "resolution failed"),
                };
                match nix::sys::stat::fstatat(
                    Some(dir.as_raw_fd()),
                    cname.as_c_str(),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                ) {
                    Ok(st)
                        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT
                            == SFlag::S_IFREG =>
                    {
                        real
                    }
                    Ok(_) => return Outcome::Errno(libc::EACCES, "not a regular file"),
                    Err(e) => return Outcome::Errno(e as i32, "no such file"),
                }
            }
            Ok(Resolved::OwnFd { .. }) => {
                return Outcome::Errno(libc::EACCES, "exec through /proc/self/fd")
            }
            Err(e) => return Outcome::Errno(e, "resolution failed"),
        }
    };
    if real != normalize(&path) || call.ctx.policy.record {
        call.arg("resolved", real.clone());
    }
    if !call.ctx.policy.exec_allowed(&real) {
        return Outcome::Errno(libc::EACCES, "not in the exec allowlist");
    }
    let private = private_memory(&t, ptr);
    if !private {
        call.arg("shared_memory", "true");
        if call.ctx.policy.require_private_memory {
            return Outcome::Errno(libc::EPERM, "exec path in memory another task can write");
        }
    }
    // The kernel reads the path again after CONTINUE: it must still say the same.
    if read_cstr(pid, ptr).unwrap_or_default() != path || !call.valid() {
        return Outcome::Errno(libc::EAGAIN, "exec path changed during the check");
    }
    Outcome::Continue
}

fn socket_call(call: &mut Call<'_>) -> Outcome {
    let a = call.n.data.args;
    let (domain, ty, proto) = (a[0] as i32, a[1] as i32 & 0xf, a[2] as i32);
    call.arg("family", family_name(domain));
    call.arg("type", ty.to_string());
    call.arg("protocol", proto.to_string());
    let p = &call.ctx.policy;
    match domain {
        libc::AF_UNIX => Outcome::Continue,
        libc::AF_NETLINK if proto == libc::NETLINK_ROUTE => Outcome::Continue,
        libc::AF_INET | libc::AF_INET6 => {
            if !p.ip_allowed() {
                Outcome::Errno(libc::EACCES, "network mode none")
            } else if (ty == libc::SOCK_RAW || ty == SOCK_PACKET) && !p.raw_sockets {
                Outcome::Errno(libc::EACCES, "raw sockets refused")
            } else {
                Outcome::Continue
            }
        }
        _ => Outcome::Errno(libc::EACCES, "socket family refused"),
    }
}

fn family_name(d: i32) -> String {
    match d {
        libc::AF_UNIX => "AF_UNIX".into(),
        libc::AF_INET => "AF_INET".into(),
        libc::AF_INET6 => "AF_INET6".into(),
        libc::AF_NETLINK => "AF_NETLINK".into(),
        libc::AF_PACKET => "AF_PACKET".into(),
        libc::AF_VSOCK => "AF_VSOCK".into(),
        libc::AF_ALG => "AF_ALG".into(),
        d => format!("family_{d}"),
    }
}

/// A duplicate of the task's socket `fd` and its family.
fn task_socket(t: &Task, fd: i32) -> Result<(OwnedFd, i32), i32> {
    let pidfd = sys::pidfd_open(t.tgid).map_err(|_| libc::ESRCH)?;
    let sock = sys::pidfd_getfd(&pidfd, fd).map_err(|_| libc::EBADF)?;
    let addr: SockaddrStorage =
        socket::getsockname(sock.as_raw_fd()).map_err(|_| libc::ENOTSOCK)?;
    let fam = addr.family().map(|f| f as i32).unwrap_or(libc::AF_UNSPEC);
    Ok((sock, fam))
}

fn parse_sockaddr(b: &[u8]) -> Result<Option<SocketAddr>, i32> {
    if b.len() < 2 {
        return Err(libc::EINVAL);
    }
    let fam = u16::from_ne_bytes([b[0], b[1]]) as i32;
    match fam {
        libc::AF_UNSPEC => Ok(None),
        libc::AF_INET if b.len() >= 16 => {
            let port = u16::from_be_bytes([b[2], b[3]]);
            let ip = Ipv4Addr::new(b[4], b[5], b[6], b[7]);
            Ok(Some(SocketAddr::V4(SocketAddrV4::new(ip, port))))
        }
        libc::AF_INET6 if b.len() >= 28 => {
            let port = u16::from_be_bytes([b[2], b[3]]);
            let flow = u32::from_be_bytes(b[4..8].try_into().unwrap());
            let ip: [u8; 16] = b[8..24].try_into().unwrap();
            let scope = u32::from_ne_bytes(b[24..28].try_into().unwrap());
            Ok(Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(ip),
                port,
                flow,
                scope,
            ))))
        }
        libc::AF_INET | libc::AF_INET6 => Err(libc::EINVAL),
        _ => Err(libc::EAFNOSUPPORT),
    }
}

fn addr_call(call: &mut Call<'_>, bind: bool) -> Outcome {
    let a = call.n.data.args;
    let pid = call.n.pid;
    let t = match task(call.ctx, pid, Need::Creds) {
        Ok(t) => t,
        Err(_) => return call.unreadable(),
    };
    let (sock, fam) = match task_socket(&t, a[0] as i32) {
        Ok(s) => s,
        Err(e) => return Outcome::Errno(e, "not a socket of the task"),
    };
    call.arg("family", family_name(fam));
    if fam != libc::AF_INET && fam != libc::AF_INET6 {
        // The decision rests on the socket's family only, not on the address: the kernel
        // resolves Unix and netlink addresses in the workload's own namespaces.
        return Outcome::Continue;
    }
    let len = (a[2] as usize).min(128);
    let bytes = match read_bytes(pid, a[1], len) {
        Ok(b) => b,
        Err(e) => return Outcome::Errno(e, "unreadable address"),
    };
    if !call.valid() {
        return Outcome::Gone;
    }
    if call.ctx.policy.any_address() {
        // No decision rests on the address (read for the audit only): the kernel does the
        // call in the workload's own network namespace, with its own answers (capability
        // checks, EINPROGRESS, ECONNREFUSED, AF_UNSPEC, a bad length...).
        if let Ok(Some(sa)) = parse_sockaddr(&bytes) {
            call.arg("addr", sa.to_string());
        }
        return Outcome::Continue;
    }
    let sa = match parse_sockaddr(&bytes) {
        Ok(Some(sa)) => sa,
        Ok(None) if !bind => {
            // AF_UNSPEC: dissolves a datagram socket's association, reaching no address.
            // Done on the duplicate (the same socket), so that the family judged is the one
            // the kernel acts on.
            return match sys::connect_unspec(sock.as_raw_fd()) {
                Ok(()) => Outcome::Value(0),
                Err(e) => Outcome::Errno(e.raw_os_error().unwrap_or(libc::EIO), "connect failed"),
            };
        }
        Ok(None) => return Outcome::Errno(libc::EAFNOSUPPORT, "bind to AF_UNSPEC"),
        Err(e) => return Outcome::Errno(e, "bad address"),
    };
    call.arg("addr", sa.to_string());
    let p = &call.ctx.policy;
    if bind {
        if !p.bind_allowed(&sa) {
            return Outcome::Errno(libc::EACCES, "bind address refused by policy");
        }
        if sa.port() != 0 && sa.port() < 1024 && t.creds.cap_eff & (1 << CAP_NET_BIND_SERVICE) == 0
        {
            return Outcome::Errno(libc::EACCES, "privileged port without CAP_NET_BIND_SERVICE");
        }
        return match bind_or_connect(&sock, sa, true) {
            Ok(()) => Outcome::Value(0),
            Err(e) => Outcome::Errno(e as i32, "bind failed"),
        };
    }
    if !p.connect_allowed(&sa) {
        return Outcome::Errno(libc::EACCES, "connect address refused by policy");
    }
    let blocking = nix::fcntl::fcntl(sock.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)
        .map(|f| OFlag::from_bits_truncate(f) & OFlag::O_NONBLOCK == OFlag::empty())
        .unwrap_or(true);
    let connect = move || match bind_or_connect(&sock, sa, false) {
        Ok(()) => Outcome::Value(0),
        Err(e) => Outcome::Errno(e as i32, "connect failed"),
    };
    if blocking {
        let c = Call {
            ctx: call.ctx,
            fd: call.fd,
            kernel: call.kernel,
            n: call.n,
            args: std::mem::take(&mut call.args),
        };
        return defer(c, connect);
    }
    connect()
}

fn listen_call(call: &mut Call<'_>) -> Outcome {
    let t = match task(call.ctx, call.n.pid, Need::Creds) {
        Ok(t) => t,
        Err(_) => return call.unreadable(),
    };
    let (sock, fam) = match task_socket(&t, call.n.data.args[0] as i32) {
        Ok(s) => s,
        Err(e) => return Outcome::Errno(e, "not a socket of the task"),
    };
    call.arg("family", family_name(fam));
    if fam != libc::AF_INET && fam != libc::AF_INET6 {
        return Outcome::Continue;
    }
    let bound: Option<SocketAddr> = socket::getsockname::<SockaddrStorage>(sock.as_raw_fd())
        .ok()
        .and_then(|s| {
            s.as_sockaddr_in()
                .map(|a| SocketAddr::V4(SocketAddrV4::new(a.ip(), a.port())))
                .or_else(|| {
                    s.as_sockaddr_in6()
                        .map(|a| SocketAddr::V6(SocketAddrV6::new(a.ip(), a.port(), 0, 0)))
                })
        });
    match bound {
        Some(sa) => {
            call.arg("addr", sa.to_string());
            // Unbound, listen() binds the wildcard address: the policy must allow that.
            if call.ctx.policy.any_address() || call.ctx.policy.bind_allowed(&sa) {
                Outcome::Continue
            } else {
                Outcome::Errno(libc::EACCES, "listen address refused by policy")
            }
        }
        None => Outcome::Errno(libc::EACCES, "unknown socket address"),
    }
}

/// Files that would reveal the host's kernel (release, build, boot command line), answered
/// like `uname`: a plain read-only open gets a sealed memfd with the emulated content. Other
/// opens of them go to the kernel as usual (which refuses writes).
fn emulated_file(real: &str, flags: i32) -> Option<String> {
    let plain_read = flags & libc::O_ACCMODE == libc::O_RDONLY
        && flags & (libc::O_PATH | libc::O_CREAT | libc::O_TRUNC | libc::O_DIRECTORY) == 0;
    if !plain_read {
        return None;
    }
    match real {
        "/proc/version" => Some(format!(
            "Linux version {EMULATED_RELEASE} (strata@sentry) (gcc) {EMULATED_VERSION}\n"
        )),
        "/proc/sys/kernel/osrelease" => Some(format!("{EMULATED_RELEASE}\n")),
        "/proc/sys/kernel/version" => Some(format!("{EMULATED_VERSION}\n")),
        "/proc/cmdline" => Some(format!("BOOT_IMAGE=/boot/vmlinuz-{EMULATED_RELEASE} ro\n")),
        _ => None,
    }
}

/// A read-only descriptor of a sealed memfd holding `text`.
fn memfd_with(name: &str, text: &str) -> Result<OwnedFd, Errno> {
    use nix::fcntl::{fcntl, FcntlArg, SealFlag};
    use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
    let cname =
        CString::new(format!("strata{}", name.replace('/', "-"))).map_err(|_| Errno::EINVAL)?;
    let fd = memfd_create(
        &cname,
        MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING,
    )?;
    nix::unistd::write(&fd, text.as_bytes())?;
    fcntl(
        fd.as_raw_fd(),
        FcntlArg::F_ADD_SEALS(
            SealFlag::F_SEAL_SEAL
                | SealFlag::F_SEAL_SHRINK
                | SealFlag::F_SEAL_GROW
                | SealFlag::F_SEAL_WRITE,
        ),
    )?;
    // Reopened read-only (and at offset 0), as an open of the real file would be.
    open_path(
        &format!("/proc/self/fd/{}", fd.as_raw_fd()),
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        0,
    )
}

fn uname_call(call: &mut Call<'_>) -> Outcome {
    let field = |s: &str| {
        let mut b = [0u8; 65];
        let n = s.len().min(64);
        b[..n].copy_from_slice(&s.as_bytes()[..n]);
        b
    };
    let mut buf = Vec::with_capacity(6 * 65);
    for s in [
        "Linux",
        &call.ctx.uts.nodename,
        EMULATED_RELEASE,
        EMULATED_VERSION,
        std::env::consts::ARCH,
        &call.ctx.uts.domainname,
    ] {
        buf.extend_from_slice(&field(s));
    }
    let pid = nix::unistd::Pid::from_raw(call.n.pid as i32);
    let local = [io::IoSlice::new(&buf)];
    let remote = [nix::sys::uio::RemoteIoVec {
        base: call.n.data.args[0] as usize,
        len: buf.len(),
    }];
    if !call.valid() {
        return Outcome::Gone;
    }
    match nix::sys::uio::process_vm_writev(pid, &local, &remote) {
        Ok(n) if n == buf.len() => Outcome::Value(0),
        _ => Outcome::Errno(libc::EFAULT, "bad utsname buffer"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_opens_within_a_granted_tree_are_left_to_the_kernel() {
        let at = |real: &str, mode: Option<u32>| Resolved::At {
            dir: open_path("/", OFlag::O_PATH | OFlag::O_CLOEXEC, 0).unwrap(),
            name: ".".into(),
            real: real.into(),
            stat: mode.map(|m| {
                // SAFETY: libc::stat is plain old data; all zeroes is a valid value.
                let mut st: libc::stat = unsafe { std::mem::zeroed() };
                st.st_mode = m;
                st
            }),
        };
        let trees = vec![
            Tree {
                path: "/srv/ok".into(),
                write: false,
            },
            Tree {
                path: "/tmp".into(),
                write: true,
            },
        ];
        let file = Some(libc::S_IFREG | 0o644);
        assert!(kernel_backed(&trees, &at("/srv/ok", file), false));
        assert!(kernel_backed(&trees, &at("/srv/ok/a/b", file), false));
        assert!(!kernel_backed(&trees, &at("/srv/ok", file), true));
        assert!(!kernel_backed(&trees, &at("/srv/okay", file), false));
        assert!(!kernel_backed(&trees, &at("/srv", file), false));
        assert!(kernel_backed(&trees, &at("/tmp/new", None), true));
        assert!(!kernel_backed(
            &trees,
            &at("/tmp/dev", Some(libc::S_IFCHR)),
            false
        ));
        assert!(!kernel_backed(
            &trees,
            &at("/tmp/dev", Some(libc::S_IFBLK)),
            true
        ));
        assert!(!kernel_backed(&[], &at("/tmp/x", file), false));
        let own = Resolved::OwnFd {
            host: "/proc/self/fd/0".into(),
            real: "/tmp/x".into(),
        };
        assert!(!kernel_backed(&trees, &own, false));
    }

    #[test]
    fn sockaddrs() {
        let mut b = vec![0u8; 16];
        b[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        b[2..4].copy_from_slice(&8080u16.to_be_bytes());
        b[4..8].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(
            parse_sockaddr(&b).unwrap(),
            Some("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(parse_sockaddr(&b[..8]), Err(libc::EINVAL));
    }

    #[test]
    fn devices() {
        assert!(device_allowed(libc::makedev(1, 3)));
        assert!(!device_allowed(libc::makedev(1, 1))); // /dev/mem
        assert!(!device_allowed(libc::makedev(8, 0))); // /dev/sda
        assert!(device_allowed(libc::makedev(136, 4)));
    }
}
