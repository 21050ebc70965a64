//! The runner's own seccomp filter, installed in the container's init right before the module
//! is set up and run, on top of whatever profile the spec gave the container.
//!
//! Only what wasmtime, wasmtime-wasi and the runner call is allowed; anything else fails with
//! ENOSYS (so that a library falls back, as glibc does from `clone3` to `clone`), and a module
//! that got out of wasmtime's sandbox finds no `socket`, `execve`, `mount`, `ptrace`,
//! `unshare`, `setns`, `bpf`, `io_uring_*`, `userfaultfd`, `keyctl`, set-id or capability call.
//!
//! Derived from a recorded run: the wasm and lifecycle suites on the wasm tier under
//! `strace -f --decode-pids=pidns` (59 runners), every call of each runner's init after its
//! hook set `no_new_privs` and of every thread it started. The WASI file-system calls that
//! run exercised only in part are listed from wasmtime-wasi's `wasi:filesystem`
//! implementation (cap-std), each with its reason. Network calls come with the tier's
//! network support, allowed only where the task's policy allows the network.

use oci_spec::runtime::LinuxSeccomp;

/// ENOSYS: what a call the filter refuses returns.
const REFUSED_ERRNO: u32 = 38;

/// `(system call, why the runner makes it)`. "recorded": seen in the recorded run.
pub const ALLOWED: &[(&str, &str)] = &[
    // Memory: the allocator, linear memories (reserved, then made accessible as they grow),
    // guard pages, compiled code, copy-on-write memory images.
    ("mmap", "recorded: allocator, linear memories, code"),
    ("munmap", "recorded: freeing memories and stacks"),
    ("mprotect", "recorded: memory.grow, code made executable"),
    ("madvise", "recorded: resetting freed memory"),
    ("mremap", "allocator (realloc of large blocks)"),
    ("brk", "recorded: allocator"),
    (
        "memfd_create",
        "recorded: wasmtime's memory images of data segments",
    ),
    // Threads: tokio's workers (wasmtime-wasi's blocking I/O), the signal watcher.
    ("clone3", "recorded: thread creation"),
    ("clone", "glibc's fallback where clone3 is refused"),
    ("set_robust_list", "recorded: every new thread"),
    ("rseq", "recorded: every new thread"),
    (
        "futex",
        "recorded: locks, condition variables, thread joins",
    ),
    ("exit", "recorded: a thread ends"),
    ("exit_group", "recorded: the task ends"),
    ("gettid", "recorded: thread start, signals"),
    ("getpid", "recorded: std's process id (the init's own)"),
    ("prctl", "recorded: thread names (PR_SET_NAME)"),
    ("sched_getaffinity", "recorded: tokio sizes its pool"),
    ("sched_yield", "spin loops in locks"),
    (
        "sigaltstack",
        "recorded: wasmtime's per-thread signal stack for traps",
    ),
    // Signals: traps, SIGTERM/SIGINT (epoch interruption), their default action.
    ("rt_sigaction", "recorded: trap and SIGTERM handlers"),
    ("rt_sigprocmask", "recorded: thread start, signal delivery"),
    (
        "rt_sigreturn",
        "recorded: return from a handler (traps, SIGTERM)",
    ),
    (
        "tgkill",
        "raising the signal that stopped the task (its default action)",
    ),
    // I/O: stdio, tokio's reactor, the signal watcher's socket pair.
    ("read", "recorded: stdin, files"),
    ("write", "recorded: stdout, stderr, files"),
    ("readv", "vectored fd_read"),
    ("writev", "vectored fd_write"),
    ("pread64", "recorded: fd_pread"),
    ("pwrite64", "recorded: fd_pwrite"),
    ("preadv", "vectored fd_pread"),
    ("pwritev", "vectored fd_pwrite"),
    ("lseek", "recorded: fd_seek, fd_tell"),
    ("close", "recorded"),
    (
        "fcntl",
        "recorded: descriptor flags (fd_fdstat_set_flags, non-blocking stdio)",
    ),
    ("ioctl", "recorded: terminal checks and FIONBIO on stdio"),
    ("epoll_create1", "recorded: tokio's reactor"),
    ("epoll_ctl", "recorded: tokio's reactor"),
    ("epoll_wait", "recorded: tokio's reactor"),
    (
        "epoll_pwait",
        "tokio's reactor, where epoll_wait is not used",
    ),
    ("eventfd2", "recorded: tokio's waker"),
    ("socketpair", "recorded: the signal watcher's self-pipe"),
    (
        "sendto",
        "recorded: the signal handler writes to the self-pipe",
    ),
    (
        "recvfrom",
        "recorded: the signal watcher reads the self-pipe",
    ),
    ("poll", "poll_oneoff on descriptors"),
    ("ppoll", "poll_oneoff on descriptors"),
    // Time and randomness.
    (
        "clock_nanosleep",
        "recorded: poll_oneoff's clock subscriptions, the grace period",
    ),
    ("nanosleep", "sleeping"),
    ("clock_gettime", "clocks where the vDSO does not answer"),
    ("clock_getres", "clock_res_get"),
    ("gettimeofday", "clocks where the vDSO does not answer"),
    ("getrandom", "recorded: random_get, hash seeds"),
    // wasi:filesystem (preview 1 and 2), through cap-std inside the preopened directories.
    ("openat", "recorded: path_open, the preopens"),
    (
        "openat2",
        "recorded: path_open resolved beneath its directory (RESOLVE_BENEATH)",
    ),
    ("statx", "recorded: fd_filestat_get, path_filestat_get"),
    ("newfstatat", "path_filestat_get where statx is not used"),
    ("fstat", "fd_filestat_get where statx is not used"),
    ("getdents64", "fd_readdir"),
    ("mkdirat", "path_create_directory"),
    ("unlinkat", "path_unlink_file, path_remove_directory"),
    ("renameat", "path_rename"),
    ("renameat2", "path_rename"),
    ("linkat", "path_link"),
    ("symlinkat", "path_symlink"),
    ("readlinkat", "path_readlink, symlinks met in resolution"),
    (
        "utimensat",
        "path_filestat_set_times, fd_filestat_set_times",
    ),
    ("ftruncate", "fd_filestat_set_size"),
    ("fallocate", "fd_allocate"),
    ("fadvise64", "fd_advise"),
    ("fsync", "fd_sync"),
    ("fdatasync", "fd_datasync"),
    ("fstatfs", "cap-std's checks of a descriptor's file system"),
];

/// The filter as an OCI seccomp profile.
pub fn profile() -> LinuxSeccomp {
    let names: Vec<&str> = ALLOWED.iter().map(|(n, _)| *n).collect();
    serde_json::from_value(serde_json::json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": REFUSED_ERRNO,
        "syscalls": [{ "names": names, "action": "SCMP_ACT_ALLOW" }],
    }))
    .expect("the runner's seccomp profile is valid OCI")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_call_is_listed_once_with_a_reason() {
        let mut seen = std::collections::HashSet::new();
        for (name, why) in ALLOWED {
            assert!(seen.insert(name), "{name} listed twice");
            assert!(!why.is_empty(), "{name} has no reason");
        }
        for never in [
            "socket",
            "connect",
            "bind",
            "execve",
            "execveat",
            "mount",
            "ptrace",
            "unshare",
            "setns",
            "bpf",
            "io_uring_setup",
            "userfaultfd",
            "keyctl",
            "setuid",
            "capset",
            "process_vm_writev",
            "kill",
            "chroot",
            "pivot_root",
        ] {
            assert!(!seen.contains(&never), "{never} must not be allowed");
        }
        let p = profile();
        assert_eq!(p.default_errno_ret(), Some(REFUSED_ERRNO));
        assert_eq!(
            p.syscalls().as_ref().map(|s| s[0].names().len()),
            Some(ALLOWED.len())
        );
    }
}
