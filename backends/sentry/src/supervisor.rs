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
//!   the kernel must do itself (Landlock's execute rule; module `exec`), and an open that
//!   creates nothing within a tree that the task's Landlock domain, compiled from the policy,
//!   grants as the policy does (`open::kernel_backed`; docs/sentry.md, "Kernel-enforced
//!   opens"). Other opens are done here (`open`), resolved inside the container's root
//!   (`paths`) with the workload's own credentials, and the descriptor is injected
//!   (SECCOMP_IOCTL_NOTIF_ADDFD, SEND flag); IP connect and bind are done here on a
//!   duplicate of the workload's socket (`net`).
//!
//! This file is the listener and the dispatch; the task is read in `task`, and each call
//! family has its module.

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

mod exec;
mod net;
mod open;
pub(crate) use open::{emulated_text, EMULATED_PATHS};
mod paths;
mod task;
mod uname;

use exec::exec_call;
use net::{addr_call, listen_call, socket_call};
use open::{open_call, openat2_call, O_PATH_FLAGS};
use paths::{absolute, fd_path, is_procfs, open_dir, readlink, resolve, rewrite_self, Resolved};
use task::{field, keep_root, read_bytes, read_cstr, task, task_and_root, Need, Task};
use uname::uname_call;

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
    /// The container's own policy (what its filter and Landlock rules were made from); the
    /// supervisor decides by [`Ctx::policy`].
    pub policy: Policy,
    /// The built-in recording policy, which decides while `strata policy record` records.
    recording_policy: Policy,
    recording: AtomicBool,
    /// The file whose existence asks for recording (`strata policy record`), if any.
    record_control: Option<PathBuf>,
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
            recording_policy: Policy::recording(),
            recording: AtomicBool::new(false),
            record_control: None,
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

    /// Recording is asked for by the existence of `path` (see [`Ctx::follow_record_control`]).
    pub fn with_record_control(mut self, path: PathBuf) -> Ctx {
        self.record_control = Some(path);
        self
    }

    /// The policy that decides calls now: the recording policy while `strata policy record`
    /// records, else the container's own.
    pub fn policy(&self) -> &Policy {
        if self.recording.load(Ordering::Relaxed) {
            &self.recording_policy
        } else {
            &self.policy
        }
    }

    /// Starts or ends recording as the control file asks (`strata policy record [--stop]`).
    /// Recording decides every call that still reaches the supervisor by the recording policy
    /// and audits it without rate limit; what the kernel enforces from the container's start
    /// (its filter's untrapped calls, its Landlock rules) stays as it was. Each switch is a
    /// `start` record naming the policy that decides from then on, written at once: the
    /// command waits for it.
    pub fn follow_record_control(&self) {
        let Some(control) = &self.record_control else {
            return;
        };
        if self.policy.record {
            return;
        }
        let want = control.exists();
        if want == self.recording.load(Ordering::SeqCst) {
            return;
        }
        self.recording.store(want, Ordering::SeqCst);
        let now = if want {
            &self.recording_policy
        } else {
            &self.policy
        };
        self.audit
            .set_limits(now.audit_max_bytes, now.audit_per_second);
        self.audit.record(crate::audit::Record {
            syscall: "-".into(),
            decision: "start".into(),
            args: [
                ("policy".to_string(), now.name.clone()),
                (
                    "switched_by".to_string(),
                    if want {
                        "strata policy record".to_string()
                    } else {
                        "strata policy record --stop".to_string()
                    },
                ),
            ]
            .into(),
            ..Default::default()
        });
        self.audit.flush();
        tracing::info!(id = %self.id, policy = %now.name, "sentry: the supervisor decides by another policy");
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
    /// Where tenants find the keeper's request socket (keeper.rs): `/dev/null` until the
    /// init's hook sends the socket, which then takes its number. Kept open for the
    /// container's life; closing it tells the keeper to take no more requests.
    keeper_slot: Option<OwnedFd>,
    /// Set once the keeper's socket is in its slot.
    keeper_ready: Arc<AtomicBool>,
    /// Closed (dropped) to wake the receiving thread at once when stopping.
    wake: Option<OwnedFd>,
}

impl Listener {
    /// Receives on `exec_ours` from now on: the init sends its fd when it starts.
    pub fn start(
        exec_ours: OwnedFd,
        exec_theirs: OwnedFd,
        keeper_slot: Option<OwnedFd>,
        ctx: Arc<Ctx>,
    ) -> io::Result<Listener> {
        let c = ctx.clone();
        let slot = keeper_slot.as_ref().map(|s| s.as_raw_fd());
        let keeper_ready = Arc::new(AtomicBool::new(false));
        let ready = keeper_ready.clone();
        let (wake_r, wake_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(io::Error::from)?;
        let thread = std::thread::Builder::new()
            .name(format!("sentry-accept-{}", short(&ctx.id)))
            .spawn(move || accept_loop(exec_ours, wake_r, slot, ready, c))?;
        Ok(Listener {
            ctx,
            thread: Some(thread),
            _exec_theirs: exec_theirs,
            keeper_slot,
            keeper_ready,
            wake: Some(wake_w),
        })
    }

    pub fn ctx(&self) -> &Arc<Ctx> {
        &self.ctx
    }

    /// Whether the container has a keeper (keeper.rs), and the flag set once its socket is in
    /// the slot that exec'd processes inherit.
    pub fn keeper_ready(&self) -> Option<Arc<AtomicBool>> {
        self.keeper_slot.as_ref().map(|_| self.keeper_ready.clone())
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

fn accept_loop(
    exec_ours: OwnedFd,
    wake: OwnedFd,
    keeper_slot: Option<RawFd>,
    keeper_ready: Arc<AtomicBool>,
    ctx: Arc<Ctx>,
) {
    let mut keeper_slot = keeper_slot;
    while !ctx.stop.load(Ordering::SeqCst) {
        ctx.follow_record_control();
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
                Ok(Message::Keeper(fd)) => match keeper_slot.take() {
                    // Only the first: the init's hook sends it once.
                    Some(slot) => match sys::replace_fd(&fd, slot) {
                        Ok(()) => keeper_ready.store(true, Ordering::SeqCst),
                        Err(e) => {
                            tracing::error!(id = %ctx.id, error = %e, "cannot put the keeper's socket in its slot; execs will fail")
                        }
                    },
                    None => tracing::warn!(id = %ctx.id, "a second keeper socket, ignored"),
                },
                Ok(Message::Exec(fd, kernel)) => spawn_supervisor(&ctx, fd, kernel),
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
enum Message {
    /// A notification fd, and the trees its process's Landlock domain grants.
    Exec(OwnedFd, Vec<Tree>),
    /// The keeper's request socket, from the init's hook (keeper.rs).
    Keeper(OwnedFd),
}

fn receive_fd(sock: RawFd) -> io::Result<Message> {
    let (buf, mut owned) = crate::fdpass::receive(sock, 64 * 1024)?;
    if owned.len() != 1 {
        return Err(io::Error::other(format!(
            "expected one seccomp fd, got {}",
            owned.len()
        )));
    }
    let fd = owned.remove(0);
    if buf == crate::keeper::KEEPER_MESSAGE {
        return Ok(Message::Keeper(fd));
    }
    // Anything but a well-formed list leaves every open to the supervisor.
    let kernel = buf
        .strip_prefix(b"exec ")
        .and_then(|j| serde_json::from_slice(j).ok())
        .unwrap_or_default();
    Ok(Message::Exec(fd, kernel))
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

/// The policy's own decision on call `nr` (`[syscalls]`), if it lists it; while recording,
/// a listed call is let through and audited.
fn extra(ctx: &Ctx, nr: i32) -> Option<ExtraAction> {
    let listed = ctx
        .policy
        .extra
        .values()
        .find(|(x, _)| *x == nr)
        .map(|(_, a)| *a);
    if ctx.recording.load(Ordering::Relaxed) {
        listed.map(|_| ExtraAction::Audit)
    } else {
        listed
    }
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

/// Runs `f` on a worker thread (for calls that may block), answering from there; the call's
/// audit arguments go with it.
fn defer(call: &mut Call<'_>, f: impl FnOnce() -> Outcome + Send + 'static) -> Outcome {
    let call = Call {
        ctx: call.ctx,
        fd: call.fd,
        kernel: call.kernel,
        n: call.n,
        args: std::mem::take(&mut call.args),
    };
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

/// The device nodes a workload may open (major, minor): null, zero, full, random, urandom,
/// tty, console, ptmx, `/dev/net/tun`; and the pty slaves ([`PTY_MAJORS`]). The supervisor
/// checks them itself (it is not in the container's device cgroup); where the kernel decides
/// opens, the container's device cgroup allows these and nothing else
/// (`SentryBackend::prepare`). The list is libcontainer's own default, which its cgroup set-up
/// always adds (as runc's does), `/dev/net/tun` included: so both ways of deciding opens agree.
pub(crate) const DEFAULT_DEVICES: &[(u32, u32)] = &[
    (1, 3),
    (1, 5),
    (1, 7),
    (1, 8),
    (1, 9),
    (5, 0),
    (5, 1),
    (5, 2),
    (10, 200),
];
/// The pseudo-terminal slaves' majors (any minor).
pub(crate) const PTY_MAJORS: std::ops::RangeInclusive<u32> = 136..=143;

fn device_allowed(rdev: u64) -> bool {
    let (maj, min) = (libc::major(rdev), libc::minor(rdev));
    DEFAULT_DEVICES.contains(&(maj, min)) || PTY_MAJORS.contains(&maj)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices() {
        assert!(device_allowed(libc::makedev(1, 3)));
        assert!(!device_allowed(libc::makedev(1, 1))); // /dev/mem
        assert!(!device_allowed(libc::makedev(8, 0))); // /dev/sda
        assert!(device_allowed(libc::makedev(136, 4)));
        assert!(device_allowed(libc::makedev(10, 200))); // /dev/net/tun, libcontainer's default
        assert!(!device_allowed(libc::makedev(10, 229))); // /dev/fuse
    }
}
