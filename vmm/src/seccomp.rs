//! Seccomp filters for the VMM's own threads, as data: one allow-list per thread role
//! (after Firecracker). A vCPU thread needs KVM_RUN and what its device exits do (console
//! writes, disk I/O, vsock sockets, eventfds, tap writes); the vsock worker needs epoll and its
//! sockets; the net worker only waits on its epoll and reads the tap and its eventfd.
//! Anything else kills the process: a guest that gained control of a VMM thread gets no
//! `open`, `execve`, `ptrace` or new mappings of files.
//!
//! Filters are built with libseccomp and loaded per thread (no TSYNC): the caller's own threads
//! (the shim) are not affected.

use libseccomp::{ScmpAction, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};

/// `KVM_RUN`.
const KVM_RUN: u64 = 0xae80;
/// `KVM_GET_REGS` (`_IOR(KVMIO, 0x81, struct kvm_regs)`): read on an emulation failure, to report
/// where the guest stopped.
const KVM_GET_REGS: u64 = 0x8090_ae81;
/// `FIONBIO` (std's `set_nonblocking` on sockets).
const FIONBIO: u64 = 0x5421;

/// The role a filter is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadRole {
    /// A vCPU thread.
    Vcpu,
    /// The vsock device's host-side thread.
    VsockWorker,
    /// The net device's rx thread.
    NetWorker,
    /// The virtio-fs device's vhost-user thread.
    FsWorker,
}

/// Errors building or loading a filter.
#[derive(Debug, thiserror::Error)]
#[error("seccomp filter for the {role:?} thread: {reason}")]
pub struct SeccompError {
    pub role: ThreadRole,
    pub reason: String,
}

/// System calls every VMM thread makes: memory, locks, signals, time, thread exit.
const COMMON: &[&str] = &[
    "brk",
    "mmap",
    "munmap",
    "mremap",
    "madvise",
    "mprotect",
    "futex",
    "sched_yield",
    "rt_sigreturn",
    "rt_sigprocmask",
    "sigaltstack",
    "clock_gettime",
    "clock_nanosleep",
    "nanosleep",
    "getrandom",
    "exit",
    "exit_group",
    "rseq",
    "set_robust_list",
    "read",
    "write",
    "writev",
    "readv",
    "close",
    "fcntl",
    "sched_getaffinity",
    "getpid",
    "gettid",
    "tgkill",
];

/// What a vCPU thread adds: disk I/O, and the sockets of guest-initiated vsock connections.
const VCPU: &[&str] = &[
    "pread64",
    "pwrite64",
    "preadv",
    "pwritev",
    "fsync",
    "fdatasync",
    "lseek",
    "socket",
    "connect",
    "sendto",
    "recvfrom",
    "sendmsg",
    "recvmsg",
    "shutdown",
];

/// What the vsock worker adds: epoll and accepting host connections.
const VSOCK_WORKER: &[&str] = &[
    "epoll_create1",
    "epoll_wait",
    "epoll_pwait",
    "epoll_ctl",
    "accept4",
    "accept",
    "sendto",
    "recvfrom",
    "sendmsg",
    "recvmsg",
    "shutdown",
    "unlink",
];

/// What the net worker adds: waiting on the epoll made before the thread started (reads of the
/// tap and its eventfd, and the irqfd write, are in [`COMMON`]).
const NET_WORKER: &[&str] = &["epoll_wait", "epoll_pwait", "epoll_ctl"];

/// What the virtio-fs worker adds: its epoll, and vhost-user messages (with descriptors) on
/// the socket connected before the filter was loaded.
const FS_WORKER: &[&str] = &[
    "epoll_wait",
    "epoll_pwait",
    "epoll_ctl",
    "sendmsg",
    "recvmsg",
];

/// The allow-list for `role`.
pub fn allowed_syscalls(role: ThreadRole) -> Vec<&'static str> {
    let extra = match role {
        ThreadRole::Vcpu => VCPU,
        ThreadRole::VsockWorker => VSOCK_WORKER,
        ThreadRole::NetWorker => NET_WORKER,
        ThreadRole::FsWorker => FS_WORKER,
    };
    COMMON.iter().chain(extra).copied().collect()
}

/// Builds the filter for `role`; a syscall outside it is answered with `violation`.
pub fn build(role: ThreadRole, violation: ScmpAction) -> Result<ScmpFilterContext, SeccompError> {
    let err = |reason: String| SeccompError { role, reason };
    let mut f = ScmpFilterContext::new(violation).map_err(|e| err(e.to_string()))?;
    for name in allowed_syscalls(role) {
        // A name this libseccomp does not know (an old one) is skipped, not fatal.
        let Ok(sc) = ScmpSyscall::from_name(name) else {
            continue;
        };
        f.add_rule(ScmpAction::Allow, sc)
            .map_err(|e| err(format!("{name}: {e}")))?;
    }
    let ioctl = ScmpSyscall::from_name("ioctl").map_err(|e| err(e.to_string()))?;
    let mut requests = if matches!(role, ThreadRole::NetWorker | ThreadRole::FsWorker) {
        vec![]
    } else {
        vec![FIONBIO]
    };
    if role == ThreadRole::Vcpu {
        requests.push(KVM_RUN);
        requests.push(KVM_GET_REGS);
    }
    for req in requests {
        f.add_rule_conditional(
            ScmpAction::Allow,
            ioctl,
            &[ScmpArgCompare::new(1, ScmpCompareOp::Equal, req)],
        )
        .map_err(|e| err(format!("ioctl {req:#x}: {e}")))?;
    }
    Ok(f)
}

/// Loads the filter for `role` into the calling thread. A violation kills the process.
pub fn apply(role: ThreadRole) -> Result<(), SeccompError> {
    build(role, ScmpAction::KillProcess)?
        .load()
        .map_err(|e| SeccompError {
            role,
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_build_and_exclude_dangerous_calls() {
        for role in [
            ThreadRole::Vcpu,
            ThreadRole::VsockWorker,
            ThreadRole::NetWorker,
            ThreadRole::FsWorker,
        ] {
            build(role, ScmpAction::KillProcess).unwrap();
            let allowed = allowed_syscalls(role);
            for bad in [
                "execve", "openat", "open", "ptrace", "fork", "clone3", "mount", "ioctl",
            ] {
                assert!(!allowed.contains(&bad), "{role:?} allows {bad}");
            }
        }
    }

    #[test]
    fn fs_worker_only_talks_on_its_connected_socket() {
        let allowed = allowed_syscalls(ThreadRole::FsWorker);
        for bad in [
            "socket",
            "connect",
            "accept4",
            "epoll_create1",
            "unlink",
            "memfd_create",
        ] {
            assert!(!allowed.contains(&bad), "the fs worker allows {bad}");
        }
        for need in ["sendmsg", "recvmsg", "epoll_wait"] {
            assert!(allowed.contains(&need), "the fs worker needs {need}");
        }
    }

    #[test]
    fn net_worker_makes_no_sockets_and_no_epolls() {
        let allowed = allowed_syscalls(ThreadRole::NetWorker);
        for bad in [
            "socket",
            "connect",
            "accept4",
            "sendto",
            "sendmsg",
            "recvmsg",
            "epoll_create1",
            "unlink",
            "pwrite64",
        ] {
            assert!(!allowed.contains(&bad), "the net worker allows {bad}");
        }
        for need in ["read", "write", "epoll_wait", "futex"] {
            assert!(allowed.contains(&need), "the net worker needs {need}");
        }
    }
}
