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
//! implementation (cap-std), each with its reason. The socket calls of `wasi:sockets` are
//! allowed only where the task's policy allows the network ([`NETWORK`]); `socket` itself then
//! for IPv4, IPv6 and netlink only (glibc's name lookup may ask the kernel for the local
//! addresses through a netlink socket to sort its answers).

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

/// What a task whose policy allows the network ([`crate::runner::Network::Inherit`]) may call
/// besides [`ALLOWED`]: wasmtime-wasi's TCP and UDP sockets (tokio's, non-blocking) and the
/// name lookup (glibc's `getaddrinfo`, run on a tokio blocking thread, which reads
/// `/etc/hosts` and `/etc/resolv.conf` with the calls of [`ALLOWED`]). Recorded under
/// `strace -f` from a component that resolves a name through `/etc/hosts` and one through DNS,
/// connects and writes; the rest from wasmtime-wasi's `wasi:sockets` implementation. glibc's
/// attempt at nscd's unix socket is refused (ENOSYS), and it goes on without it.
pub const NETWORK: &[(&str, &str)] = &[
    (
        "connect",
        "recorded: start-connect (non-blocking), the resolver's UDP socket",
    ),
    ("bind", "tcp and udp bind"),
    ("listen", "tcp listen"),
    ("accept4", "tcp accept"),
    ("accept", "tcp accept where accept4 is not used"),
    (
        "getsockname",
        "recorded: the socket's local address after create and connect",
    ),
    ("getpeername", "remote-address"),
    (
        "getsockopt",
        "recorded: the outcome of a non-blocking connect (SO_ERROR)",
    ),
    (
        "setsockopt",
        "recorded: the resolver's IP_RECVERR; the socket options of wasi:sockets",
    ),
    (
        "shutdown",
        "recorded: the socket's end when its streams are dropped",
    ),
    ("sendmsg", "udp send"),
    ("recvmsg", "udp receive"),
    (
        "sendmmsg",
        "recorded: the resolver's A and AAAA queries at once",
    ),
    ("recvmmsg", "udp receive"),
    (
        "uname",
        "recorded: the resolver's default domain (gethostname) after reading resolv.conf",
    ),
];

/// What a task serving HTTP ([`crate::http`]) may call besides [`ALLOWED`]: its listener is
/// bound before the filter, so only what accepting and answering connections takes (reading
/// and writing them is `recvfrom`/`sendto` of [`ALLOWED`]). Recorded under `strace -f` from
/// the HTTP test's component served to 20 concurrent and keep-alive requests.
pub const SERVING: &[(&str, &str)] = &[
    ("accept4", "recorded: a client's connection"),
    ("accept", "a client's connection where accept4 is not used"),
    ("setsockopt", "TCP_NODELAY on an accepted connection"),
    ("shutdown", "recorded: closing a connection"),
];

/// The address families `socket` may create where the network is allowed.
const SOCKET_FAMILIES: &[(u64, &str)] = &[
    (
        libc::AF_INET as u64,
        "IPv4: tcp and udp sockets, the resolver",
    ),
    (libc::AF_INET6 as u64, "IPv6: tcp and udp sockets"),
    (
        libc::AF_NETLINK as u64,
        "glibc's getaddrinfo reads the local addresses over netlink to sort several answers",
    ),
];

/// The filter as an OCI seccomp profile; with `network`, also [`NETWORK`] and `socket` for
/// [`SOCKET_FAMILIES`]; `serving` HTTP, also [`SERVING`].
pub fn profile(network: bool, serving: bool) -> LinuxSeccomp {
    let mut names: Vec<&str> = ALLOWED.iter().map(|(n, _)| *n).collect();
    let mut rules = Vec::new();
    let add = |names: &mut Vec<&'static str>, list: &[(&'static str, &str)]| {
        for (n, _) in list {
            if !names.contains(n) {
                names.push(n);
            }
        }
    };
    if serving {
        add(&mut names, SERVING);
    }
    if network {
        add(&mut names, NETWORK);
        for (family, _) in SOCKET_FAMILIES {
            rules.push(serde_json::json!({
                "names": ["socket"],
                "action": "SCMP_ACT_ALLOW",
                "args": [{ "index": 0, "value": family, "op": "SCMP_CMP_EQ" }],
            }));
        }
    }
    rules.insert(
        0,
        serde_json::json!({ "names": names, "action": "SCMP_ACT_ALLOW" }),
    );
    serde_json::from_value(serde_json::json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": REFUSED_ERRNO,
        "syscalls": rules,
    }))
    .expect("the runner's seccomp profile is valid OCI")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every call the profile allows without looking at its arguments.
    fn allowed_names(p: &LinuxSeccomp) -> Vec<String> {
        p.syscalls()
            .iter()
            .flatten()
            .filter(|s| s.args().as_ref().is_none_or(|a| a.is_empty()))
            .flat_map(|s| s.names().clone())
            .collect()
    }

    #[test]
    fn every_call_is_listed_once_with_a_reason() {
        let mut seen = std::collections::HashSet::new();
        for (name, why) in ALLOWED.iter().chain(NETWORK) {
            assert!(seen.insert(name), "{name} listed twice");
            assert!(!why.is_empty(), "{name} has no reason");
        }
        for (name, why) in SERVING {
            assert!(
                !ALLOWED.iter().any(|(n, _)| n == name),
                "{name} listed twice"
            );
            assert!(!why.is_empty(), "{name} has no reason");
            // Serving binds before the filter: no new socket, connect or bind.
            assert!(!["socket", "connect", "bind", "listen"].contains(name));
        }
        for never in [
            "socket",
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
        for (network, serving) in [(false, false), (true, false), (false, true), (true, true)] {
            let p = profile(network, serving);
            assert_eq!(p.default_errno_ret(), Some(REFUSED_ERRNO));
            let names = allowed_names(&p);
            let mut want: Vec<&str> = ALLOWED.iter().map(|(n, _)| *n).collect();
            for (on, list) in [(serving, SERVING), (network, NETWORK)] {
                for (n, _) in list.iter().filter(|_| on) {
                    if !want.contains(n) {
                        want.push(n);
                    }
                }
            }
            assert_eq!(names, want);
            // socket only ever with its family checked.
            assert!(!names.iter().any(|n| n == "socket"));
        }
    }

    #[test]
    fn socket_calls_pass_only_where_the_network_is_allowed() {
        let closed = profile(false, false);
        let open = profile(true, false);
        let socket_rules = |p: &LinuxSeccomp| -> Vec<u64> {
            p.syscalls()
                .iter()
                .flatten()
                .filter(|s| s.names().iter().any(|n| n == "socket"))
                .map(|s| s.args().as_ref().unwrap()[0].value())
                .collect()
        };
        for (name, _) in NETWORK {
            assert!(!allowed_names(&closed).iter().any(|n| n == name), "{name}");
            assert!(allowed_names(&open).iter().any(|n| n == name), "{name}");
        }
        assert!(socket_rules(&closed).is_empty());
        let families = socket_rules(&open);
        assert_eq!(families, [2, 10, 16], "AF_INET, AF_INET6, AF_NETLINK only");
    }
}
