//! The sentry tier through containerd: an escape suite run inside the container (each attempt
//! must fail under sentry; the same suite under native is printed for comparison and recorded
//! in docs/sentry.md), ordinary work, the audit log, policy selection, and fail-closed when
//! the supervisor dies.
//!
//! The escape attempts are a small static C program (compiled here with `cc -static`) placed in
//! the container's own copy of the busybox rootfs, as youki's contest does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use strata_tests::harness::{Container, CTR_TIMEOUT};
use strata_tests::{cmd, harness, on_ci, skip, strata_only, Harness};

const ESCAPE_C: &str = r#"#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/io_uring.h>
#include <linux/openat2.h>
#include <linux/perf_event.h>
#include <linux/userfaultfd.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <grp.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>
#include <netinet/in.h>
#include <pthread.h>

/* Each attempt prints "NAME allowed" or "NAME denied <errno name>". */
static void report(const char *name, long rc) {
    if (rc >= 0) printf("%s allowed\n", name);
    else printf("%s denied %s\n", name, strerrorname_np(errno) ? strerrorname_np(errno) : "?");
    fflush(stdout);
}

static int child_fn(void *arg) { (void)arg; return 0; }

static long read_file(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    char buf[256];
    long n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n < 0) return -1;
    buf[n] = 0;
    /* Reaching the host's marker is the escape; anything else is the container's own file. */
    if (strstr(buf, "strata-host-secret")) return 0;
    errno = ENOENT;
    return -1;
}

/* TOCTOU: two threads flip the path between an allowed and a denied file while the main
   thread opens it N times; every descriptor obtained must be the allowed file (the same
   device and inode), or the null device a masked denied file shows (counted as denied, and
   as masked): anything else is a violation.
   toctou [ALLOWED DENIED N] (default: /etc/passwd, /proc/kallsyms, 20000). */
static volatile int stop_flip;
static char flip_buf[256];
static const char *flip_a = "/etc/passwd", *flip_k = "/proc/kallsyms";
static void *flipper(void *arg) {
    (void)arg;
    volatile char *b = flip_buf;
    size_t la = strlen(flip_a) + 1, lk = strlen(flip_k) + 1;
    while (!stop_flip) {
        for (size_t i = 0; i < la; i++) b[i] = flip_a[i];
        for (volatile int d = 0; d < 20000; d++) {}
        for (size_t i = 0; i < lk; i++) b[i] = flip_k[i];
        for (volatile int d = 0; d < 20000; d++) {}
    }
    return NULL;
}

static int toctou(int argc, char **argv) {
    long rounds = 20000;
    if (argc >= 5) {
        flip_a = argv[2];
        flip_k = argv[3];
        rounds = atol(argv[4]);
    }
    pthread_t t[2];
    snprintf(flip_buf, sizeof flip_buf, "%s", flip_a);
    for (int i = 0; i < 2; i++) {
        int e = pthread_create(&t[i], NULL, flipper, NULL);
        if (e != 0) {
            printf("toctou pthread_create failed: %s\n", strerror(e));
            return 1;
        }
    }
    struct stat want;
    if (stat(flip_a, &want) != 0) {
        printf("toctou stat %s failed: %s\n", flip_a, strerror(errno));
        return 1;
    }
    long ok = 0, denied = 0, masked = 0, violations = 0, other = 0;
    for (long i = 0; i < rounds; i++) {
        int fd = open(flip_buf, O_RDONLY);
        if (fd < 0) {
            if (errno == EACCES) denied++; else other++;
            continue;
        }
        struct stat st;
        if (fstat(fd, &st) != 0) {
            other++;
        } else if (st.st_dev == want.st_dev && st.st_ino == want.st_ino) {
            ok++;
        } else if (S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 3)) {
            denied++;
            masked++;
        } else {
            char link[64], p[256];
            snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
            ssize_t n = readlink(link, p, sizeof p - 1);
            p[n > 0 ? n : 0] = 0;
            if (violations++ < 5) fprintf(stderr, "opened %s\n", p);
        }
        close(fd);
    }
    stop_flip = 1;
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    printf("toctou ok=%ld denied=%ld masked=%ld violations=%ld other=%ld\n", ok, denied, masked,
           violations, other);
    return 0;
}

/* openat2 flag TOCTOU: a thread flips open_how.flags between O_PATH and O_RDWR while the
   main thread opens TARGET (a file the policy lets be read, not written) with openat2
   ROUNDS times. A descriptor that is not O_PATH is a violation: the file was opened for
   writing although the policy refuses it. */
static struct open_how flip_how;
static void *how_flipper(void *x) {
    (void)x;
    volatile unsigned long long *flags = &flip_how.flags;
    while (!stop_flip) {
        *flags = O_PATH;
        for (volatile int d = 0; d < 20000; d++) {}
        *flags = O_RDWR;
        for (volatile int d = 0; d < 20000; d++) {}
    }
    return NULL;
}

static int openat2_toctou(const char *target, long rounds) {
    pthread_t t[2];
    flip_how.flags = O_PATH;
    for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, how_flipper, NULL);
    long opath = 0, refused = 0, enosys = 0, violations = 0, other = 0;
    for (long i = 0; i < rounds; i++) {
        int fd = syscall(SYS_openat2, AT_FDCWD, target, &flip_how, sizeof flip_how);
        if (fd < 0) {
            if (errno == EACCES) refused++; else if (errno == ENOSYS) enosys++; else other++;
            continue;
        }
        if (fcntl(fd, F_GETFL) & O_PATH) opath++;
        else if (violations++ < 5) fprintf(stderr, "opened %s for writing\n", target);
        close(fd);
    }
    stop_flip = 1;
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    printf("openat2toctou opath=%ld refused=%ld enosys=%ld violations=%ld other=%ld\n",
           opath, refused, enosys, violations, other);
    return 0;
}

/* Exec TOCTOU: a thread flips the exec path between an allowed program and a copy of this one
   in /tmp (not allowed) while the main thread execs it. The supervisor can only check the path
   before the kernel reads it again; Landlock must refuse the copy whenever the flip lands in
   between. Each try is a fresh process; counts go through a shared page. */
static char exec_buf[64];
static void *exec_flipper(void *arg) {
    (void)arg;
    volatile char *b = exec_buf;
    static const char a[] = "/bin/busybox", k[] = "/tmp/evil";
    for (;;) {
        for (size_t i = 0; i < sizeof a; i++) b[i] = a[i];
        for (volatile int d = 0; d < 3000; d++) {}
        for (size_t i = 0; i < sizeof k; i++) b[i] = k[i];
        for (volatile int d = 0; d < 3000; d++) {}
    }
    return NULL;
}

static int exec_toctou(void) {
    int in = open("/usr/local/bin/escape", O_RDONLY), out = open("/tmp/evil", O_WRONLY | O_CREAT | O_TRUNC, 0755);
    char buf[65536];
    ssize_t n;
    while (in >= 0 && out >= 0 && (n = read(in, buf, sizeof buf)) > 0) write(out, buf, n);
    close(in); close(out);
    volatile int *eacces = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    long evil = 0, allowed = 0, never = 0;
    for (int i = 0; i < 150; i++) {
        pid_t c = fork();
        if (c == 0) {
            memcpy(exec_buf, "/bin/busybox", 13);
            pthread_t t;
            pthread_create(&t, NULL, exec_flipper, NULL);
            char *args[] = { "x", "ident", NULL };
            for (int j = 0; j < 8; j++) {
                execv(exec_buf, args);
                if (errno == EACCES) __atomic_add_fetch(eacces, 1, __ATOMIC_SEQ_CST);
            }
            _exit(100);
        }
        int st = 0;
        waitpid(c, &st, 0);
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0) evil++;
        else if (WIFEXITED(st) && WEXITSTATUS(st) == 127) allowed++;
        else never++;
    }
    char line[128];
    int len = snprintf(line, sizeof line, "exectoctou evil=%ld allowed=%ld never=%ld eacces=%d\n",
                       evil, allowed, never, *eacces);
    fputs(line, stdout);
    int f = open("/tmp/exectoctou.out", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    write(f, line, len);
    close(f);
    return 0;
}

/* chroot: the same path read before and after chroot("/srv/r") (the supervisor keeps the
   container's root open between calls, and must give it up once a chroot goes through). */
static void read_marker(char *out, size_t n) {
    int fd = open("/srv/marker", O_RDONLY);
    long got = fd < 0 ? -1 : read(fd, out, n - 1);
    if (got < 0) snprintf(out, n, "error-%s", strerrorname_np(errno) ? strerrorname_np(errno) : "?");
    else { out[got] = 0; out[strcspn(out, "\n")] = 0; }
    if (fd >= 0) close(fd);
}

static int chroot_open(void) {
    char before[64], after[64];
    read_marker(before, sizeof before);
    if (chroot("/srv/r") != 0 || chdir("/") != 0) {
        printf("chroot failed %s\n", strerrorname_np(errno) ? strerrorname_np(errno) : "?");
        return 1;
    }
    read_marker(after, sizeof after);
    printf("chroot before=%s after=%s\n", before, after);
    return 0;
}

/* Opens as the credentials of one task change under one supervisor thread (which stays at a
 * root workload's capabilities between opens): root, then not dumpable, then uid 1000, then
 * a file of its own. /tmp/creds-root is root's, mode 0600; run in /tmp. */
static long open_read(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    char buf[64];
    long n = read(fd, buf, sizeof buf);
    close(fd);
    return n < 0 ? -1 : 0;
}

static int creds_open(void) {
    report("root_reads_root_file", open_read("/tmp/creds-root"));
    report("root_reads_relative", open_read("creds-root"));
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    report("nondumpable_reads_root_file", open_read("/tmp/creds-root"));
    report("nondumpable_reads_relative", open_read("creds-root"));
    prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
    if (setgroups(0, NULL) != 0 || setresgid(1000, 1000, 1000) != 0 || setresuid(1000, 1000, 1000) != 0) {
        report("setresuid", -1);
        return 1;
    }
    report("user_reads_root_file", open_read("/tmp/creds-root"));
    report("user_reads_passwd", open_read("/etc/passwd"));
    int fd = open("/tmp/creds-user", O_CREAT | O_WRONLY | O_TRUNC, 0600);
    report("user_creates_file", fd);
    if (fd >= 0) { write(fd, "mine\n", 5); close(fd); }
    report("user_reads_own_file", open_read("/tmp/creds-user"));
    struct stat st;
    if (stat("/tmp/creds-user", &st) == 0) printf("owner=%u\n", st.st_uid);
    return 0;
}

/* What the task sees of its own CPUs right after each of many opens: the supervisor holds a
 * trapped task on its CPU while it hands the descriptor over; the task must never see that. */
static int affinity_after_open(void) {
    cpu_set_t set;
    sched_getaffinity(0, sizeof set, &set);
    int want = CPU_COUNT(&set), changed = 0;
    for (int i = 0; i < 5000; i++) {
        int fd = open("/etc/passwd", O_RDONLY);
        if (fd >= 0) close(fd);
        sched_getaffinity(0, sizeof set, &set);
        if (CPU_COUNT(&set) != want) changed++;
    }
    /* Nor in its status file, read through the descriptor that very open gave it. */
    char first[128] = "", buf[4096];
    int status_changed = 0;
    for (int i = 0; i < 1000; i++) {
        int fd = open("/proc/self/status", O_RDONLY);
        if (fd < 0) { status_changed++; continue; }
        long n = read(fd, buf, sizeof buf - 1);
        close(fd);
        buf[n > 0 ? n : 0] = 0;
        char *l = strstr(buf, "Cpus_allowed_list:");
        char line[128] = "";
        if (l) sscanf(l, "Cpus_allowed_list: %127s", line);
        if (i == 0) strcpy(first, line);
        if (strcmp(line, first) != 0) status_changed++;
    }
    printf("cpus %d changed %d status %s changed %d\n", want, changed, first, status_changed);
    return 0;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "affinity") == 0) return affinity_after_open();
    if (argc > 1 && strcmp(argv[1], "creds") == 0) return creds_open();
    if (argc > 1 && strcmp(argv[1], "toctou") == 0) return toctou(argc, argv);
    if (argc > 3 && strcmp(argv[1], "openat2toctou") == 0) return openat2_toctou(argv[2], atol(argv[3]));
    if (argc > 1 && strcmp(argv[1], "unspec") == 0) {
        /* A UDP socket connected on loopback, then dissolved with AF_UNSPEC, then connected
           outside loopback (refused by a loopback policy). */
        int u = socket(AF_INET, SOCK_DGRAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(9)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        report("udp_connect_loopback", connect(u, (struct sockaddr *)&a, sizeof a));
        struct sockaddr unspec = {.sa_family = AF_UNSPEC};
        report("udp_connect_unspec", connect(u, &unspec, sizeof unspec));
        struct sockaddr_in peer;
        socklen_t pl = sizeof peer;
        report("udp_no_peer_after_unspec", getpeername(u, (struct sockaddr *)&peer, &pl) == 0 ? -1 : 0);
        struct sockaddr_in far = {.sin_family = AF_INET, .sin_port = htons(9)};
        far.sin_addr.s_addr = htonl(0xc0000201); /* 192.0.2.1 */
        report("udp_connect_outside", connect(u, (struct sockaddr *)&far, sizeof far));
        return 0;
    }
    if (argc > 1 && strcmp(argv[1], "chroot") == 0) return chroot_open();
    if (argc > 1 && strcmp(argv[1], "exectoctou") == 0) return exec_toctou();
    if (argc > 1 && strcmp(argv[1], "ident") == 0) { puts("probe-ident"); return 0; }
    const char *marker = argc > 1 ? argv[1] : "/tmp/strata-host-secret";
    char path[512];
    long rc;

    snprintf(path, sizeof path, "/proc/1/root%s", marker);
    report("proc1_root_host_file", read_file(path));
    snprintf(path, sizeof path, "/../../../../..%s", marker);
    report("dotdot_host_file", read_file(path));
    unlink("/tmp/escape-link");
    symlink("/../../../../../..", "/tmp/escape-link");
    snprintf(path, sizeof path, "/tmp/escape-link%s", marker);
    report("symlink_host_file", read_file(path));

    report("mount_tmpfs", mount("none", "/mnt", "tmpfs", 0, NULL));
    report("unshare_user", unshare(CLONE_NEWUSER));
    report("unshare_net", unshare(CLONE_NEWNET));

    pid_t child = fork();
    if (child == 0) {
        long r = ptrace(PTRACE_TRACEME, 0, 0, 0);
        _exit(r == 0 ? 0 : 10 + (errno & 0x7f));
    }
    int st = 0;
    waitpid(child, &st, 0);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0) report("ptrace_traceme", 0);
    else { errno = WIFEXITED(st) ? WEXITSTATUS(st) - 10 : EINTR; report("ptrace_traceme", -1); }

    rc = syscall(SYS_add_key, "user", "strata", "x", 1, -2 /* KEY_SPEC_PROCESS_KEYRING */);
    report("keyctl_add_key", rc);
    union bpf_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.map_type = BPF_MAP_TYPE_ARRAY;
    attr.key_size = 4; attr.value_size = 4; attr.max_entries = 1;
    report("bpf_map_create", syscall(SYS_bpf, BPF_MAP_CREATE, &attr, sizeof attr));
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    report("io_uring_setup", syscall(SYS_io_uring_setup, 4, &p));
    struct perf_event_attr pe;
    memset(&pe, 0, sizeof pe);
    pe.type = PERF_TYPE_SOFTWARE; pe.size = sizeof pe; pe.config = PERF_COUNT_SW_TASK_CLOCK;
    pe.exclude_kernel = 1; pe.exclude_hv = 1;
    report("perf_event_open", syscall(SYS_perf_event_open, &pe, 0, -1, -1, 0));
    report("userfaultfd", syscall(SYS_userfaultfd, O_CLOEXEC | UFFD_USER_MODE_ONLY));
    report("init_module", syscall(SYS_init_module, "\0", 1, ""));
    report("raw_socket", socket(AF_INET, SOCK_RAW, IPPROTO_ICMP));
    report("packet_socket", socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL)));
    report("vsock_socket", socket(40 /* AF_VSOCK */, SOCK_STREAM, 0));
    report("alg_socket", socket(AF_ALG, SOCK_SEQPACKET, 0));
    report("netlink_audit_socket", socket(AF_NETLINK, SOCK_RAW, 9 /* NETLINK_AUDIT */));
    report("dev_mem", open("/dev/mem", O_RDONLY));
    unlink("/tmp/mem");
    rc = mknod("/tmp/mem", S_IFCHR | 0600, makedev(1, 1));
    report("mknod_dev_mem_open", rc < 0 ? rc : open("/tmp/mem", O_RDONLY));
    report("kexec_load", syscall(SYS_kexec_load, 0, 0, NULL, 0));
    report("open_by_handle_at", syscall(SYS_open_by_handle_at, AT_FDCWD, NULL, 0));
    char buf[8];
    struct iovec l = { buf, sizeof buf }, r = { buf, sizeof buf };
    report("process_vm_readv", syscall(SYS_process_vm_readv, getpid(), &l, 1, &r, 1, 0));
    report("personality_change", syscall(SYS_personality, 0x0400000 /* ADDR_NO_RANDOMIZE */));
    /* A second process sharing this one's memory (CLONE_VM without CLONE_THREAD/VFORK). */
    static char stack[64 * 1024];
    rc = clone(child_fn, stack + sizeof stack, CLONE_VM | SIGCHLD, NULL);
    if (rc > 0) waitpid(rc, NULL, 0);
    report("clone_vm_process", rc);
    /* Control: ordinary work must still run. */
    report("control_open_etc", open("/etc/passwd", O_RDONLY));
    report("control_socket_unix", socket(AF_UNIX, SOCK_STREAM, 0));
    return 0;
}
"#;

/// Attempts that the default policy leaves to the kernel, as runc does, with the reason: the
/// sentry must answer them as native does.
const KERNEL_DECIDES: &[(&str, &str)] = &[(
    "raw_socket",
    "raw IP sockets (ping) are the kernel's to allow: CAP_NET_RAW, which containerd's default set holds; a policy without network.raw refuses them",
)];

/// Attempts every tier may or may not stop; under sentry all must fail (but those in
/// [`KERNEL_DECIDES`], under the default policy).
const ATTEMPTS: &[&str] = &[
    "proc1_root_host_file",
    "dotdot_host_file",
    "symlink_host_file",
    "mount_tmpfs",
    "unshare_user",
    "unshare_net",
    "ptrace_traceme",
    "keyctl_add_key",
    "bpf_map_create",
    "io_uring_setup",
    "perf_event_open",
    "userfaultfd",
    "init_module",
    "raw_socket",
    "packet_socket",
    "vsock_socket",
    "alg_socket",
    "netlink_audit_socket",
    "dev_mem",
    "mknod_dev_mem_open",
    "kexec_load",
    "open_by_handle_at",
    "process_vm_readv",
    "personality_change",
    "clone_vm_process",
];

const SENTRY: &str = "strata.dev/backend=sentry";
/// A Strata configuration with sentry the only backend.
const SENTRY_ONLY: &str = "default_backend = \"sentry\"\nallowed_backends = [\"sentry\"]\n";

/// The escape program, built once per test binary. `None`: no C compiler (skipped; on CI a
/// failure).
fn escape_binary(h: &Harness, test: &str) -> Option<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let r = BIN.get_or_init(|| {
        cmd::build_static_c(
            &h.info.state.join("sentry-probe"),
            "escape",
            ESCAPE_C,
            &["-pthread"],
        )
    });
    match r {
        Ok(p) => Some(p.clone()),
        Err(e) => {
            skip(test, e);
            None
        }
    }
}

/// A tight policy for the tests of what a policy refuses (the default policy before it was
/// made to run what runc runs): the rootfs read-only but for the usual scratch and state
/// directories, the default device nodes only, exec from the standard bin directories only, IP
/// on loopback only.
const CONFINED: &str = r#"[files]
read = ["/"]
read_write = [
  "/tmp", "/var/tmp", "/run", "/var/run", "/var/log", "/var/cache", "/var/lib",
  "/root", "/home", "/srv", "/data", "/dev/shm", "/dev/pts",
  "/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty", "/dev/ptmx",
]
deny = [
  "/dev",                       # only the device nodes above
  "/proc/kcore", "/proc/kmsg", "/proc/sysrq-trigger", "/proc/kallsyms", "/proc/keys",
  "/proc/timer_list", "/proc/sched_debug", "/proc/config.gz",
  "/proc/*/mem", "/proc/*/task/*/mem", "/proc/*/map_files",
  "/sys/firmware", "/sys/kernel", "/sys/fs/bpf", "/sys/module",
]

# Programs the workload may execute (prefixes of the resolved file's path).
[exec]
allow = ["/bin", "/sbin", "/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin", "/usr/libexec",
         "/pause"]  # the CRI pod sandbox's pause binary

# none: no IP sockets at all; loopback: connect and bind on 127.0.0.0/8 and ::1 only;
# cidr: loopback plus the `connect` and `bind` lists ("CIDR" or "CIDR:PORT").
[network]
mode = "loopback"
"#;

/// The annotation that picks [`CONFINED`].
const CONFINED_POLICY: &str = "strata.dev/sentry-policy=confined";

/// A Strata configuration (sentry only) whose pods may pick [`CONFINED`]; its path.
fn confined_config(h: &Harness) -> String {
    static CFG: OnceLock<PathBuf> = OnceLock::new();
    CFG.get_or_init(|| {
        runtime_config(
            h,
            "sentry-confined",
            SENTRY_ONLY,
            &[
                (
                    "sentry.toml",
                    "allowed_policies = [\"default\", \"confined\"]\n",
                ),
                ("confined.toml", CONFINED),
            ],
        )
    })
    .to_str()
    .unwrap()
    .to_string()
}

/// The default policy with `[audit] opens = true`: every open trapped, judged and performed
/// by the supervisor (and audited), where the default policy leaves opens to the kernel
/// (docs/sentry.md, "Opens the kernel decides"). The tests of the supervisor's own open path
/// run under it.
const AUDITED: &str = concat!(
    include_str!("../../configs/sentry/default.toml"),
    "\n[audit]\nopens = true\n"
);

/// Puts `spec` under [`AUDITED`]; the `ctr` flags that name the configuration allowing it.
fn audited(h: &Harness, spec: &mut serde_json::Value) -> [String; 2] {
    spec["annotations"]["strata.dev/sentry-policy"] = "audited".into();
    audited_flags(h)
}

/// The `ctr run` flags that put a container on the sentry under [`AUDITED`].
fn audited_run_flags(h: &Harness) -> Vec<String> {
    let [path_flag, path] = audited_flags(h);
    vec![
        "--annotation".into(),
        SENTRY.into(),
        path_flag,
        path,
        "--annotation".into(),
        "strata.dev/sentry-policy=audited".into(),
    ]
}

/// The `ctr` flag naming a configuration whose pods may pick [`AUDITED`] (as `audited`).
fn audited_flags(h: &Harness) -> [String; 2] {
    static CFG: OnceLock<PathBuf> = OnceLock::new();
    let cfg = CFG.get_or_init(|| {
        runtime_config(
            h,
            "sentry-audited",
            SENTRY_ONLY,
            &[
                (
                    "sentry.toml",
                    "allowed_policies = [\"default\", \"audited\"]\n",
                ),
                ("audited.toml", AUDITED),
            ],
        )
    });
    ["--runtime-config-path".into(), cfg.display().to_string()]
}

/// The shared harness and the escape program; returns from the test (skipped) when the suite
/// does not run against Strata or the program cannot be built.
macro_rules! harness_with_probe {
    ($test:expr) => {{
        let h = harness!();
        strata_only!(h);
        let Some(probe) = escape_binary(h, $test) else {
            return;
        };
        (h, probe)
    }};
}

/// A spec on the container's own rootfs copy, on `backend`.
fn spec_on(c: &Container<'_>, args: &[&str], backend: &str) -> serde_json::Value {
    let mut spec = c.spec(args);
    spec["annotations"] = serde_json::json!({ "strata.dev/backend": backend });
    spec
}

/// The container's own rootfs copy a spec names.
fn rootfs(spec: &serde_json::Value) -> PathBuf {
    PathBuf::from(spec["root"]["path"].as_str().unwrap())
}

/// A spec on the container's own rootfs copy with the escape program at /usr/local/bin/escape.
fn spec_with_probe(
    c: &Container<'_>,
    probe: &Path,
    args: &[&str],
    backend: &str,
) -> serde_json::Value {
    let spec = spec_on(c, args, backend);
    let root = rootfs(&spec);
    std::fs::create_dir_all(root.join("usr/local/bin")).unwrap();
    std::fs::create_dir_all(root.join("mnt")).unwrap();
    std::fs::copy(probe, root.join("usr/local/bin/escape")).unwrap();
    spec
}

/// The value of `key=N` in a line of the escape program's results.
fn count(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|f| f.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{key} missing: {line}"))
}

/// A Strata configuration file `strata.toml` with `strata` in a directory `name` of the
/// harness's state, and beside it in `sentry/` each `(file, text)` of `sentry`; the file's path.
fn runtime_config(h: &Harness, name: &str, strata: &str, sentry: &[(&str, &str)]) -> PathBuf {
    let dir = h.info.state.join(name);
    std::fs::create_dir_all(dir.join("sentry")).unwrap();
    for (file, text) in sentry {
        std::fs::write(dir.join("sentry").join(file), text).unwrap();
    }
    let cfg = dir.join("strata.toml");
    std::fs::write(&cfg, strata).unwrap();
    cfg
}

/// `strata ARGS` (the CLI installed beside the shim), which must succeed.
fn strata_cli(h: &Harness, args: &[&str]) -> strata_tests::Output {
    let mut cmdl = std::process::Command::new(h.shim_dir.join("strata"));
    cmdl.args(args);
    let out = cmd::run(cmdl, None, CTR_TIMEOUT).unwrap();
    assert!(out.success(), "{out}");
    out
}

fn parse(out: &str) -> BTreeMap<String, String> {
    out.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A host file the escape attempts try to read; never readable from inside a container.
fn host_marker(h: &Harness) -> PathBuf {
    let p = h.info.state.join("strata-host-secret");
    std::fs::write(&p, "strata-host-secret\n").unwrap();
    p
}

#[test]
fn escape_suite_fails_under_sentry_and_is_compared_with_native() {
    let (h, probe) = harness_with_probe!("escape_suite");
    let marker = host_marker(h);
    let marker = marker.to_str().unwrap();
    let mut results = BTreeMap::new();
    for backend in ["native", "sentry"] {
        let c = h.container(&format!("escape-{backend}"));
        let spec = spec_with_probe(&c, &probe, &["/usr/local/bin/escape", marker], backend);
        let out = c.run_spec(&spec, &[]);
        assert!(
            out.success(),
            "{backend}: the escape program did not run: {out}"
        );
        results.insert(backend, parse(&out.stdout));
        c.remove_and_check();
    }
    eprintln!("{:<24} {:<22} sentry", "attempt", "native");
    for a in ATTEMPTS {
        eprintln!(
            "{a:<24} {:<22} {}",
            results["native"].get(*a).map(String::as_str).unwrap_or("-"),
            results["sentry"].get(*a).map(String::as_str).unwrap_or("-")
        );
    }
    let sentry = &results["sentry"];
    let escaped: Vec<_> = ATTEMPTS
        .iter()
        .filter(|a| !KERNEL_DECIDES.iter().any(|(k, _)| k == *a))
        .filter(|a| !sentry.get(**a).is_some_and(|v| v.starts_with("denied")))
        .collect();
    for (a, why) in KERNEL_DECIDES {
        assert_eq!(
            sentry.get(*a),
            results["native"].get(*a),
            "{a} must be answered as native ({why})"
        );
    }
    assert!(
        escaped.is_empty(),
        "not stopped by sentry: {escaped:?}\n{sentry:?}"
    );
    // Ordinary calls in the same program still work.
    for control in ["control_open_etc", "control_socket_unix"] {
        assert_eq!(
            sentry.get(control).map(String::as_str),
            Some("allowed"),
            "{sentry:?}"
        );
    }
    // The suite discriminates: the plain tier lets some of these through here.
    let native_allowed = ATTEMPTS
        .iter()
        .filter(|a| results["native"].get(**a).is_some_and(|v| v == "allowed"))
        .count();
    assert!(
        native_allowed > 0,
        "native stopped everything too: is the probe testing anything? {:?}",
        results["native"]
    );
}

#[test]
fn ordinary_work_runs_under_sentry() {
    let h = harness!();
    strata_only!(h);
    let c = h.container("sentry-work");
    let out = c.run_with(
        &["--annotation", SENTRY],
        &[
            "sh",
            "-c",
            "echo c a b | tr ' ' '\\n' | sort | head -2 | tr '\\n' ' '; echo; \
             mkdir -p /root/d && echo data > /root/d/f && cat /root/d/f && rm /root/d/f; \
             cat /proc/self/status | grep -c Seccomp_filters; ls /etc >/dev/null && echo ls-ok; \
             echo pipe | cat /dev/stdin; uname -r; cat /proc/version; \
             cat /proc/sys/kernel/osrelease; cat /proc/sys/kernel/version; cat /proc/cmdline; \
             echo x > /proc/version; echo write=$?; uname -n; cat /proc/sys/kernel/hostname",
        ],
        None,
    );
    assert!(out.success(), "{out}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[..5], ["a b ", "data", "1", "ls-ok", "pipe"], "{out}");
    // The emulated uname tells the container's real host name (the spec sets none here, so
    // its UTS namespace started as a copy of the host's).
    assert!(
        lines.len() == 13 && !lines[11].is_empty() && lines[11] == lines[12],
        "uname -n must be the container's host name: {out}"
    );
    assert_eq!(
        lines[5], "5.15.0-strata",
        "uname must not reveal the host's release: {out}"
    );
    // Nor the files that tell it: served from the supervisor's memfd.
    let host = nix::sys::utsname::uname().unwrap();
    let host_release = host.release().to_str().unwrap();
    assert!(
        lines[6].starts_with("Linux version 5.15.0-strata ")
            && lines[7] == "5.15.0-strata"
            && lines[8] == "#1 SMP PREEMPT_DYNAMIC Strata sentry"
            && lines[9].contains("5.15.0-strata")
            && !out.stdout.contains(host_release),
        "/proc/version and friends must not reveal the host's release {host_release}: {out}"
    );
    assert_eq!(lines[10], "write=1", "{out}");
    c.assert_no_leaks();
}

#[test]
fn exec_outside_the_allowlist_and_denied_paths_fail() {
    let h = harness!();
    strata_only!(h);
    let c = h.container("sentry-deny");
    let cfg = confined_config(h);
    let out = c.run_with(
        &[
            "--runtime-config-path",
            &cfg,
            "--annotation",
            SENTRY,
            "--annotation",
            CONFINED_POLICY,
        ],
        &[
            "sh",
            "-c",
            "cp /bin/busybox /tmp/bb && /tmp/bb echo escaped; echo exec=$?; \
             cat /proc/kallsyms >/dev/null; echo kallsyms=$?; echo x > /etc/passwd; echo etc=$?; \
             /bin/echo allowed",
        ],
        None,
    );
    assert!(
        out.stdout.contains("exec=126") && !out.stdout.contains("escaped"),
        "{out}"
    );
    assert!(
        out.stdout.contains("kallsyms=1") && out.stdout.contains("etc=1"),
        "{out}"
    );
    assert!(out.stdout.contains("allowed\n"), "{out}");
    c.assert_no_leaks();
}

#[test]
fn loopback_server_and_client_under_a_loopback_policy() {
    let h = harness!();
    strata_only!(h);
    let c = h.container("sentry-net");
    let cfg = confined_config(h);
    // Host network: ctr gives a fresh network namespace no loopback; the policy allows
    // loopback only (the default policy gives the pod's network: sentry_diff.rs).
    let port = 20000 + std::process::id() % 20000;
    let script = format!(
        "mkdir -p /tmp/www && echo page > /tmp/www/index.html && \
         httpd -p 127.0.0.1:{port} -h /tmp/www && sleep 0.3 && \
         wget -q -O - http://127.0.0.1:{port}/index.html; \
         nc -w 1 192.0.2.1 80 </dev/null; echo ext=$?; httpd -p {} -h /tmp/www; echo wild=$?; \
         kill $(pidof httpd)",
        port + 1
    );
    let out = c.run_with(
        &[
            "--runtime-config-path",
            &cfg,
            "--annotation",
            SENTRY,
            "--annotation",
            CONFINED_POLICY,
            "--net-host",
        ],
        &["sh", "-c", &script],
        None,
    );
    assert!(
        out.stdout.starts_with("page\n"),
        "loopback server and client: {out}"
    );
    assert!(
        out.stdout.contains("ext=1") && out.stderr.contains("Permission denied"),
        "{out}"
    );
    assert!(
        out.stdout.contains("wild=1"),
        "binding the wildcard address must fail: {out}"
    );
    c.assert_no_leaks();
}

/// `connect(AF_UNSPEC)` on a UDP socket (dissolving its association, reaching no address) is
/// done as the kernel does it under a policy that judges addresses (it was EAFNOSUPPORT), while
/// a connect outside loopback stays refused.
#[test]
fn udp_disconnect_under_a_loopback_policy() {
    let (h, probe) = harness_with_probe!("unspec");
    let c = h.container("sentry-unspec");
    let mut spec = spec_with_probe(&c, &probe, &["/usr/local/bin/escape", "unspec"], "sentry");
    spec["annotations"]["strata.dev/sentry-policy"] = "confined".into();
    let cfg = confined_config(h);
    let out = c.run_spec(&spec, &["--runtime-config-path", &cfg]);
    assert!(out.success(), "{out}");
    let r = parse(&out.stdout);
    assert_eq!(
        r.get("udp_connect_loopback").map(String::as_str),
        Some("allowed"),
        "{out}"
    );
    assert_eq!(
        r.get("udp_connect_unspec").map(String::as_str),
        Some("allowed"),
        "{out}"
    );
    assert_eq!(
        r.get("udp_no_peer_after_unspec").map(String::as_str),
        Some("allowed"),
        "{out}"
    );
    assert_eq!(
        r.get("udp_connect_outside").map(String::as_str),
        Some("denied EACCES"),
        "{out}"
    );
    c.remove_and_check();
}

/// The audit records of `id` once `done` holds of them, or as they are after 10 s: the
/// supervisor may still hold the last records in its batch for a moment.
fn audit_records_when(
    h: &Harness,
    id: &str,
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let start = std::time::Instant::now();
    let mut recs = audit_records(h, id);
    while !done(&recs) && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
        recs = audit_records(h, id);
    }
    recs
}

fn audit_records(h: &Harness, id: &str) -> Vec<serde_json::Value> {
    let p = PathBuf::from("/run/strata/sentry")
        .join(&h.info.namespace)
        .join(id)
        .join("audit.jsonl");
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad audit line {l:?}: {e}")))
        .collect()
}

#[test]
fn trapped_and_denied_calls_are_audited_including_execs() {
    let h = harness!();
    strata_only!(h);
    let c = h.container("sentry-audit");
    let flags = audited_run_flags(h);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    c.start(&flags, &["sleep", "300"]);
    // An exec process: libcontainer sends a second notification fd for it.
    let out = c.exec(
        "a1",
        &[
            "sh",
            "-c",
            "cat /proc/kallsyms; mount -t tmpfs none /mnt; cat /etc/passwd >/dev/null; echo done",
        ],
    );
    assert!(out.stdout.contains("done"), "{out}");
    let has_in = |recs: &[serde_json::Value], sc: &str, decision: &str, path: Option<&str>| {
        recs.iter().any(|r| {
            r["syscall"] == sc
                && r["decision"] == decision
                && path.is_none_or(|p| r["args"]["path"] == p)
        })
    };
    // On a loaded machine the init's own exec may be decided after the exec'd process ran:
    // wait (bounded) for the records before judging them.
    let recs = audit_records_when(h, &c.id, |recs| {
        has_in(recs, "execve", "allow", Some("/bin/sleep"))
            && has_in(recs, "openat", "allow", Some("/etc/passwd"))
    });
    let has = |sc: &str, decision: &str, path: Option<&str>| has_in(&recs, sc, decision, path);
    assert!(has("execve", "allow", Some("/bin/sleep")), "{recs:?}");
    // The exec'd process runs under the filter too (busybox sh runs applets as /proc/self/exe).
    assert!(has("execve", "allow", Some("/bin/sh")), "{recs:?}");
    assert!(has("execve", "allow", Some("/proc/self/exe")), "{recs:?}");
    assert!(has("openat", "deny", Some("/proc/kallsyms")), "{recs:?}");
    assert!(has("mount", "deny", None), "{recs:?}");
    assert!(has("openat", "allow", Some("/etc/passwd")), "{recs:?}");
    let out = strata_cli(h, &["audit", "-n", &h.info.namespace, &c.id]);
    assert!(
        out.stdout.contains("openat /proc/kallsyms") && out.stdout.contains("mount"),
        "{out}"
    );
    c.remove_and_check();
    assert!(
        !PathBuf::from("/run/strata/sentry")
            .join(&h.info.namespace)
            .join(&c.id)
            .exists(),
        "the sentry directory outlived the container"
    );
}

/// Under the default policy no open is trapped (docs/sentry.md, "Opens the kernel decides"):
/// the kernel opens for the workload, under its Landlock domain, in a mount namespace where the
/// policy's denied files are masked and the files that tell the host's kernel are the
/// emulated ones (read-only), with a device cgroup that holds the supervisor's device list
/// even in a privileged container. Shown from a process started by `ctr task exec` (which must
/// see the same), in a privileged container on both tiers: native makes and reads a
/// `/dev/kmsg` node and reads the host's kernel files, the sentry does not; a process's own memory opens on both (the
/// kernel's ptrace check); the audit log records no open.
#[test]
fn opens_under_the_default_policy_are_the_kernels() {
    let h = harness!();
    strata_only!(h);
    let script = "cat /proc/version; uname -r; cat /proc/sys/kernel/osrelease; \
        echo kallsyms=$(wc -c </proc/kallsyms); echo syskernel=$(ls /sys/kernel | wc -l); \
        (echo x >/proc/version) 2>/dev/null; echo write_version=$?; \
        (exec 5</proc/self/mem) && echo own_mem=open; \
        echo reopen >/dev/stdout; \
        i=0; while [ $i -lt 300 ]; do read x </etc/passwd; i=$((i+1)); done; echo reads=$i; \
        (mknod /tmp/kmsg c 1 11 && exec 7</tmp/kmsg) 2>&1; echo kmsg=$?";
    let mut outs = Vec::new();
    for backend in ["native", "sentry"] {
        let c = h.container(&format!("kernel-opens-{backend}"));
        let tier = format!("strata.dev/backend={backend}");
        c.start(&["--annotation", &tier, "--privileged"], &["sleep", "300"]);
        let out = c.exec("k1", &["sh", "-c", script]);
        eprintln!("{backend}: {out}");
        if backend == "sentry" {
            // The supervisor writes its records once idle: wait (bounded) for the exec's.
            let recs = audit_records_when(h, &c.id, |recs| {
                recs.iter()
                    .any(|r| r["syscall"] == "execve" && r["args"]["path"] == "/bin/sh")
            });
            let start = recs.iter().find(|r| r["decision"] == "start");
            assert_eq!(
                start.map(|r| r["args"]["opens"].clone()),
                Some(serde_json::json!("kernel")),
                "{recs:?}"
            );
            let opens: Vec<_> = recs
                .iter()
                .filter(|r| {
                    ["open", "openat", "openat2", "creat"]
                        .contains(&r["syscall"].as_str().unwrap_or(""))
                })
                .collect();
            assert!(opens.is_empty(), "opens were trapped: {opens:?}");
            // The exec'd shell's own exec was trapped: the filter is there.
            assert!(
                recs.iter()
                    .any(|r| r["syscall"] == "execve" && r["args"]["path"] == "/bin/sh"),
                "{recs:?}"
            );
        }
        c.remove_and_check();
        outs.push(out.stdout);
    }
    let (native, sentry) = (&outs[0], &outs[1]);
    let release = "5.15.0-strata"; // strata_sentry::EMULATED_RELEASE
                                   // Native shows the host's kernel and reads /dev/mem: the checks below discriminate.
    assert!(!native.contains(release), "{native}");
    assert!(native.contains("kmsg=0"), "{native}");
    assert!(!native.contains("kallsyms=0\n"), "{native}");
    for line in [
        format!("Linux version {release} "),
        format!("\n{release}\n{release}\n"),
        "kallsyms=0\n".to_string(),
        "syskernel=0\n".to_string(),
        "write_version=1\n".to_string(),
        "reads=300\n".to_string(),
    ] {
        assert!(sentry.contains(&line), "sentry: no {line:?}\n{sentry}");
    }
    for both in ["own_mem=open\n", "reopen\n"] {
        assert!(
            native.contains(both) && sentry.contains(both),
            "{both:?}: {native}\n{sentry}"
        );
    }
    // The device cgroup refuses making a node for /dev/kmsg (EPERM, as the supervisor
    // answers an open of one where it performs opens).
    assert!(sentry.contains("kmsg=1"), "{sentry}");
    assert!(sentry.contains("Operation not permitted"), "{sentry}");
}

/// The device cgroup of a sentry container holds the supervisor's device list, which backs
/// the opens the kernel decides, and a task update (containerd's Tasks.Update) whose resources
/// allow every device does not widen it (the sentry leaves device rules as created, as runc's
/// `update` does): `/dev/fuse` (10:229, outside every default list) cannot be made and opened
/// before or after it. On native the update lets it open, so the update really asks for it.
#[test]
fn an_update_never_widens_the_device_list() {
    let h = harness!();
    strata_only!(h);
    let resources = serde_json::json!({ "devices": [{ "allow": true, "access": "rwm" }] });
    let probe = "(mknod /tmp/fuse$0 c 10 229 && exec 7</tmp/fuse$0) 2>&1; echo fuse=$?";
    for backend in ["native", "sentry"] {
        let c = h.container(&format!("devices-{backend}"));
        let tier = format!("strata.dev/backend={backend}");
        c.start(&["--annotation", &tier], &["sleep", "300"]);
        let before = c.exec("d1", &["sh", "-c", probe, "a"]);
        let update = strata_tests::api::update_resources(h, &c.id, &resources).unwrap();
        assert!(update.is_ok(), "{backend}: Update failed: {update:?}");
        let after = c.exec("d2", &["sh", "-c", probe, "b"]);
        eprintln!("{backend}: before {before}\nafter {after}");
        assert!(before.stdout.contains("fuse=1"), "{backend}: {before}");
        let after_want = if backend == "native" {
            "fuse=0"
        } else {
            "fuse=1"
        };
        assert!(after.stdout.contains(after_want), "{backend}: {after}");
        if backend == "sentry" {
            assert!(
                after.stdout.contains("Operation not permitted"),
                "{backend}: {after}"
            );
        }
        c.remove_and_check();
    }
}

#[test]
fn a_pod_picks_a_policy_only_within_the_configuration() {
    let h = harness!();
    strata_only!(h);
    let cfg = runtime_config(
        h,
        "sentry-policy-test",
        SENTRY_ONLY,
        &[
            (
                "sentry.toml",
                "default_policy = \"default\"\nallowed_policies = [\"default\", \"noetc\", \"broken\"]\n",
            ),
            (
                "noetc.toml",
                "[files]\nread = [\"/\"]\ndeny = [\"/etc\"]\nread_write = [\"/dev/null\"]\n[exec]\nallow = [\"/bin\"]\n",
            ),
            ("broken.toml", "[files]\nread = [\"relative\"]\n"),
        ],
    );
    let cfg_flag = cfg.to_str().unwrap();
    let run = |name: &str, policy: Option<&str>| {
        let c = h.container(name);
        // The configuration allows the sentry only: the harness's tier annotation (native
        // unless STRATA_TEST_TIER says otherwise) is overridden by a later one.
        let mut flags = vec![
            "--runtime-config-path",
            cfg_flag,
            "--annotation",
            "strata.dev/backend=sentry",
        ];
        let ann;
        if let Some(p) = policy {
            ann = format!("strata.dev/sentry-policy={p}");
            flags.extend(["--annotation", ann.as_str()]);
        }
        let out = c.run_with(
            &flags,
            &["sh", "-c", "cat /etc/passwd >/dev/null && echo read-etc"],
            None,
        );
        c.remove_and_check();
        out
    };
    let out = run("pol-default", None);
    assert!(out.stdout.contains("read-etc"), "{out}");
    let out = run("pol-noetc", Some("noetc"));
    assert!(
        !out.stdout.contains("read-etc") && out.stderr.contains("Permission denied"),
        "{out}"
    );
    let out = run("pol-strict", Some("strict"));
    assert!(!out.success(), "{out}");
    assert!(
        out.stderr.contains("not allowed") && out.stderr.contains("default, noetc, broken"),
        "{out}"
    );
    let out = run("pol-broken", Some("broken"));
    assert!(
        !out.success() && out.stderr.contains("broken.toml") && out.stderr.contains("absolute"),
        "{out}"
    );
}

#[test]
fn supervisor_death_fails_closed() {
    let h = harness!();
    strata_only!(h);
    // containerd's clean-up of a dead shim kills the workload within milliseconds; on a
    // loaded machine the workload may not run in that window at all. Try a few times; one
    // observed failure is enough to check the property, and every try checks it.
    for attempt in 0..5 {
        if supervisor_death_attempt(h, attempt) {
            return;
        }
    }
    if on_ci() {
        panic!("in 5 tries the workload was always killed before it tried an open without its supervisor");
    }
}

/// One try: true when the workload saw its trapped calls fail after the shim died.
fn supervisor_death_attempt(h: &strata_tests::Harness, attempt: u32) -> bool {
    let c = h.container(&format!("sentry-failclosed{attempt}"));
    let spec = spec_on(
        &c,
        &[
            "sh",
            "-c",
            "exec 3>>/tmp/log; i=0; while [ $i -lt 300000 ]; do \
             if read x </etc/hostname 2>/dev/null; then echo ok >&3; else echo fail >&3; fi; \
             i=$((i+1)); done",
        ],
        "sentry",
    );
    let mut spec = spec;
    let flags = audited(h, &mut spec);
    std::fs::write(rootfs(&spec).join("etc/hostname"), "h\n").unwrap();
    let log = rootfs(&spec).join("tmp/log");
    start_spec_detached(h, &c, &spec, &[&flags[0], &flags[1]]);
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        cmd::poll(Duration::from_secs(20), || read()
            .contains("ok")
            .then_some(()))
        .is_some(),
        "the loop never opened a file: {}",
        read()
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(c.shim_pid() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let failed = cmd::poll(Duration::from_secs(20), || {
        read().contains("fail").then_some(())
    });
    let text = read();
    c.remove();
    eprintln!(
        "fail-closed try {attempt}: workload saw a failure: {}",
        failed.is_some()
    );
    // Never may an open succeed after one failed.
    if failed.is_some() {
        let after = text.split_once("fail").map(|(_, r)| r).unwrap_or("");
        assert!(
            !after.contains("ok"),
            "an open succeeded after the supervisor died"
        );
    }
    c.assert_no_leaks();
    failed.is_some()
}

/// The race test of issue 13, which any answer but the supervisor's own open (a CONTINUE the
/// kernel does not back with a rule at least as strict) would fail: two threads flip the path
/// buffer of an open between an allowed file and a file the policy denies, as fast as they
/// can, while the main thread opens it 100,000 times; no descriptor may refer to the denied
/// file. Once inside one allowed tree (`/srv/ok` and `/srv/secret`, denied by a policy that
/// allows the rest of the root read-write), once in `/proc` (`/proc/1/status` and
/// `/proc/kallsyms`, the default policy). Checked against a deliberately wrong build (every
/// allowed open answered CONTINUE): 3,940 of the 100,000 opens of the first case reached the
/// denied file, and the test failed there. Then twice under a policy that compiles into
/// Landlock (`confine::compile`), whose opens of `/srv/ok` are left to the kernel (CONTINUE,
/// seen in the audit log): flipped with `/srv/secret` beside it and with `/proc/kallsyms`.
/// Checked against a wrong build whose compiled ruleset also granted read on `/`: 5,945 and
/// 19,278 opens of the first (two runs), 14,495 of the second reached the denied file.
#[test]
fn toctou_rewriting_the_path_never_opens_a_denied_file() {
    let (h, probe) = harness_with_probe!("toctou");
    let cfg = runtime_config(
        h,
        "sentry-race",
        SENTRY_ONLY,
        &[
            (
                "sentry.toml",
                "allowed_policies = [\"default\", \"racy\", \"kernel\", \"audited\"]\n",
            ),
            ("audited.toml", AUDITED),
            (
                "racy.toml",
                "[files]\nread_write = [\"/\"]\ndeny = [\"/srv/secret\"]\n\
                 [exec]\nallow = [\"/\"]\n[network]\nmode = \"pod\"\n",
            ),
            // Compiled into Landlock (confine::compile): /srv/ok is a uniform tree, so its
            // opens are left to the kernel (CONTINUE); /srv and /proc are not.
            (
                "kernel.toml",
                "[files]\nread = [\"/srv/ok\", \"/usr\", \"/bin\", \"/etc\", \"/proc/self\"]\n\
                 read_write = [\"/tmp\"]\ndeny = [\"/srv/secret\", \"/proc/*/mem\"]\n\
                 [exec]\nallow = [\"/usr/local/bin\", \"/bin\"]\n[network]\nmode = \"none\"\n",
            ),
        ],
    );
    let cfg = cfg.to_str().unwrap();
    for (name, policy, allowed, denied) in [
        ("tree", "racy", "/srv/ok", "/srv/secret"),
        // The supervisor's own opens of /proc (every open trapped to be audited).
        ("proc", "audited", "/proc/1/status", "/proc/kallsyms"),
        // No open trapped at all: /proc/kallsyms is masked in the container's mount
        // namespace, so the kernel opens the null device for it.
        (
            "proc-untrapped",
            "default",
            "/proc/1/status",
            "/proc/kallsyms",
        ),
        // The allowed file's opens answered CONTINUE, the denied one beside it and in /proc.
        ("kernel-tree", "kernel", "/srv/ok", "/srv/secret"),
        ("kernel-proc", "kernel", "/srv/ok", "/proc/kallsyms"),
    ] {
        let c = h.container(&format!("sentry-toctou-{name}"));
        let mut spec = spec_with_probe(
            &c,
            &probe,
            &["/usr/local/bin/escape", "toctou", allowed, denied, "100000"],
            "sentry",
        );
        spec["annotations"]["strata.dev/sentry-policy"] = policy.into();
        let root = rootfs(&spec);
        std::fs::create_dir_all(root.join("srv")).unwrap();
        std::fs::write(root.join("srv/ok"), "ok\n").unwrap();
        std::fs::write(root.join("srv/secret"), "secret\n").unwrap();
        // The kernel-enforced path must really be taken: watch the audit log while the
        // container runs (`ctr run --rm` deletes it with the container).
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watch = {
            let (stop, log) = (
                stop.clone(),
                PathBuf::from("/run/strata/sentry")
                    .join(&h.info.namespace)
                    .join(&c.id)
                    .join("audit.jsonl"),
            );
            std::thread::spawn(move || {
                let mut seen = (false, false);
                loop {
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    seen.0 |= text.contains("\"kernel\":\"landlock\"");
                    seen.1 |= text.contains("\"opens\":\"kernel\"");
                    if seen.0 || stop.load(std::sync::atomic::Ordering::SeqCst) {
                        return seen;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        let out = c.run_spec(&spec, &["--runtime-config-path", cfg]);
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let (left_to_kernel, untrapped) = watch.join().unwrap();
        assert!(out.success(), "{name}: {out}");
        assert_eq!(
            left_to_kernel,
            policy == "kernel",
            "{name}: opens left to the kernel one by one under policy {policy}"
        );
        assert_eq!(
            untrapped,
            policy == "default",
            "{name}: opens untrapped under policy {policy}"
        );
        let line = out
            .stdout
            .lines()
            .find(|l| l.starts_with("toctou "))
            .unwrap_or_else(|| panic!("{name}: no result from the probe: {out}"));
        let n = |k: &str| count(line, k);
        eprintln!("{name}: {line}");
        assert_eq!(
            n("violations"),
            0,
            "{name}: a denied file was opened: {out}"
        );
        // The race was really run: both the allowed and the denied path were seen.
        assert!(n("ok") > 0 && n("denied") > 0, "{name}: {line}");
        // Untrapped, the denied file is the mask; trapped, the supervisor's EACCES.
        assert_eq!(n("masked") > 0, policy == "default", "{name}: {line}");
        assert_eq!(
            n("ok") + n("denied") + n("other"),
            100_000,
            "{name}: {line}"
        );
        c.remove_and_check();
    }
}

/// The same race on `openat2`'s flags, which the kernel reads again after CONTINUE: two
/// threads flip `open_how.flags` between `O_PATH` and `O_RDWR` while the main thread opens
/// `/srv/ro` 100,000 times, a file the policy lets be read but not written (its Landlock
/// rules, from the spec's writable root, let it be written). No descriptor may be one opened
/// for writing. Against the build that answered `openat2` with `O_PATH` CONTINUE (session
/// 12), this found violations (docs/sentry.md).
#[test]
fn toctou_flipping_openat2_flags_never_opens_a_denied_file() {
    let (h, probe) = harness_with_probe!("openat2_toctou");
    let cfg = runtime_config(
        h,
        "sentry-openat2-race",
        SENTRY_ONLY,
        &[
            (
                "sentry.toml",
                "allowed_policies = [\"default\", \"readonly\"]\n",
            ),
            (
                "readonly.toml",
                "[files]\nread = [\"/\"]\nread_write = [\"/tmp\", \"/dev/null\"]\n\
                 [exec]\nallow = [\"/\"]\n[network]\nmode = \"none\"\n",
            ),
        ],
    );
    let c = h.container("sentry-openat2-toctou");
    let mut spec = spec_with_probe(
        &c,
        &probe,
        &[
            "/usr/local/bin/escape",
            "openat2toctou",
            "/srv/ro",
            "100000",
        ],
        "sentry",
    );
    spec["annotations"]["strata.dev/sentry-policy"] = "readonly".into();
    let root = rootfs(&spec);
    std::fs::create_dir_all(root.join("srv")).unwrap();
    std::fs::write(root.join("srv/ro"), "read only\n").unwrap();
    let out = c.run_spec(&spec, &["--runtime-config-path", cfg.to_str().unwrap()]);
    assert!(out.success(), "{out}");
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("openat2toctou "))
        .unwrap_or_else(|| panic!("no result from the probe: {out}"));
    eprintln!("{line}");
    let n = |k: &str| count(line, k);
    assert_eq!(
        n("violations"),
        0,
        "a read-only file was opened for writing: {out}"
    );
    // Both flags were seen by the supervisor: O_PATH answered ENOSYS, O_RDWR refused.
    assert!(n("enosys") > 0 && n("refused") > 0, "{line}");
    assert_eq!(
        n("opath") + n("refused") + n("enosys") + n("other"),
        100_000,
        "{line}"
    );
    c.remove_and_check();
}

/// The audit log of a container that runs with `ctr run --rm` (which deletes it with the
/// container), read over and over while it runs: the last text read, once `stop` is set.
fn audit_while_running(
    h: &Harness,
    id: &str,
) -> (
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    std::thread::JoinHandle<String>,
) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let log = PathBuf::from("/run/strata/sentry")
        .join(&h.info.namespace)
        .join(id)
        .join("audit.jsonl");
    let s = stop.clone();
    let watch = std::thread::spawn(move || {
        let mut last = String::new();
        loop {
            if let Ok(t) = std::fs::read_to_string(&log) {
                if !t.is_empty() {
                    last = t;
                }
            }
            if s.load(std::sync::atomic::Ordering::SeqCst) {
                return last;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    (stop, watch)
}

/// Under a policy that compiles into Landlock (confine::compile), ordinary work runs as the
/// policy says, and the opens that read or write within its uniform trees are left to the
/// kernel (audited `kernel: landlock`), while the rest stays with the supervisor: a creating
/// open, a symlink out of a tree (to `/opt`, which the policy lets be read but not uniformly,
/// so Landlock has no rule there and would refuse it), `/dev/null`.
/// `mkdir` and `mv` (rights no open uses) still work; a write into a read-only tree and a
/// denied file beside a tree are refused.
#[test]
fn opens_in_trees_a_policy_compiles_are_left_to_the_kernel() {
    let h = harness!();
    strata_only!(h);
    let cfg = runtime_config(
        h,
        "sentry-kernel",
        SENTRY_ONLY,
        &[
            (
                "sentry.toml",
                "allowed_policies = [\"default\", \"kernel\"]\n",
            ),
            (
                "kernel.toml",
                "[files]\nread = [\"/srv/ok\", \"/bin\", \"/usr\", \"/etc\", \"/opt\"]\n\
                 read_write = [\"/tmp\", \"/dev/null\"]\n\
                 deny = [\"/srv/secret\", \"/opt/secret\"]\n\
                 [exec]\nallow = [\"/bin\"]\n[network]\nmode = \"none\"\n",
            ),
        ],
    );
    let c = h.container("sentry-kernel-opens");
    let script = "cat /srv/ok/a; echo read=$?; \
         cat /srv/ok/link; \
         (echo x > /srv/ok/a) 2>/dev/null; echo write=$?; \
         cat /srv/secret 2>/dev/null; echo secret=$?; \
         echo t > /tmp/t && cat /tmp/t && mkdir /tmp/d && mv /tmp/t /tmp/d/t && cat /tmp/d/t; \
         ls /srv/ok | tr '\\n' ' '; echo; echo done; sleep 1";
    let mut spec = spec_on(&c, &["sh", "-c", script], "sentry");
    spec["annotations"]["strata.dev/sentry-policy"] = "kernel".into();
    let root = rootfs(&spec);
    std::fs::create_dir_all(root.join("srv/ok")).unwrap();
    std::fs::write(root.join("srv/ok/a"), "content-a\n").unwrap();
    std::fs::write(root.join("srv/secret"), "secret\n").unwrap();
    std::fs::create_dir_all(root.join("opt")).unwrap();
    std::fs::write(root.join("opt/file"), "opt-file\n").unwrap();
    std::os::unix::fs::symlink("/opt/file", root.join("srv/ok/link")).unwrap();
    let (stop, watch) = audit_while_running(h, &c.id);
    let out = c.run_spec(&spec, &["--runtime-config-path", cfg.to_str().unwrap()]);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let log = watch.join().unwrap();
    assert!(out.success(), "{out}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "content-a",
            "read=0",
            "opt-file",
            "write=1",
            "secret=1",
            "t",
            "t",
            "a link ",
            "done"
        ],
        "{out}"
    );
    let recs: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let kernel = |path: &str| {
        recs.iter().any(|r| {
            r["args"]["path"] == path
                && r["decision"] == "allow"
                && r["args"]["kernel"] == "landlock"
        })
    };
    let supervisor = |path: &str| {
        recs.iter().any(|r| {
            r["args"]["path"] == path && r["decision"] == "allow" && r["args"]["kernel"].is_null()
        })
    };
    assert!(kernel("/srv/ok/a"), "{log}");
    assert!(kernel("/tmp/d/t"), "{log}");
    assert!(kernel("/srv/ok"), "{log}");
    assert!(supervisor("/srv/ok/link"), "{log}");
    assert!(supervisor("/tmp/t"), "{log}");
    assert!(supervisor("/dev/null"), "{log}");
    c.remove_and_check();
}

#[test]
fn opens_after_a_chroot_resolve_in_the_new_root() {
    // The supervisor keeps the container's root open between calls; a chroot that goes through
    // must make it open each task's root afresh.
    let (h, probe) = harness_with_probe!("chroot");
    let c = h.container("sentry-chroot");
    let mut spec = spec_with_probe(&c, &probe, &["/usr/local/bin/escape", "chroot"], "sentry");
    let flags = audited(h, &mut spec);
    let root = rootfs(&spec);
    std::fs::create_dir_all(root.join("srv/r/srv")).unwrap();
    std::fs::write(root.join("srv/marker"), "outer\n").unwrap();
    std::fs::write(root.join("srv/r/srv/marker"), "inner\n").unwrap();
    let out = c.run_spec(&spec, &[&flags[0], &flags[1]]);
    assert!(out.success(), "{out}");
    assert!(
        out.stdout
            .lines()
            .any(|l| l == "chroot before=outer after=inner"),
        "{out}"
    );
    c.remove_and_check();
}

/// A host process the container may read through `/proc/<pid>/root` (same uid, no
/// capabilities at all, so the kernel's ptrace check lets a container root in), killed on drop.
struct CaplessHostProcess(std::process::Child);

impl CaplessHostProcess {
    fn spawn() -> CaplessHostProcess {
        let child = std::process::Command::new("setpriv")
            .args([
                "--bounding-set=-all",
                "--inh-caps=-all",
                "--ambient-caps=-all",
                "sleep",
                "300",
            ])
            .spawn()
            .expect("setpriv (util-linux) runs sleep without capabilities");
        CaplessHostProcess(child)
    }
}

impl Drop for CaplessHostProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A Strata configuration whose sentry policy `wrong` allows every path read-write and exec
/// from a directory whose path also exists on the host (`host`), for the Landlock tests below.
fn wrong_policy_config(h: &Harness, name: &str, host: &Path) -> PathBuf {
    runtime_config(
        h,
        name,
        "default_backend = \"sentry\"\nallowed_backends = [\"native\", \"sentry\"]\n",
        &[
            (
                "sentry.toml",
                "default_policy = \"wrong\"\nallowed_policies = [\"wrong\"]\n",
            ),
            (
                "wrong.toml",
                &format!(
                    "[files]\nread_write = [\"/\"]\n[exec]\nallow = [\"/bin\", \"/usr/bin\", \"{}/bin\"]\n",
                    host.display()
                ),
            ),
        ],
    )
}

/// The attempts to leave the container through `/proc/<pid>/root` of the host process `pid`
/// (reach `host`, `mkdir`, `symlink`, `rm`, exec of `host/bin/tool`), then ordinary work.
fn escape_through_proc_root(pid: u32, host: &Path) -> String {
    let p = format!("/proc/{pid}/root{}", host.display());
    format!(
        "cd {p} && echo reached; mkdir {p}/made-dir; echo mkdir=$?; \
         ln -s x {p}/made-link; echo symlink=$?; rm {p}/victim; echo rm=$?; \
         cd {p}/bin && ./tool ident; echo exec=$?; cd /; \
         echo c a b | tr ' ' '\\n' | sort | tr '\\n' ' '; echo; \
         mkdir -p /root/d && echo data > /root/d/f && mv /root/d/f /tmp/f && cat /tmp/f && \
         rm /tmp/f && ln -s /tmp /root/l && rm /root/l && echo work-ok"
    )
}

/// A fresh `host` directory (the probe as `bin/tool`, a `victim` file) and a spec on
/// `backend` that shares the host's pid namespace and holds busybox at the same path as
/// `host/bin/tool` (busybox knows no `ident`).
fn spec_beside_host(
    c: &Container<'_>,
    probe: &Path,
    host: &Path,
    args: &[&str],
    backend: &str,
) -> serde_json::Value {
    let _ = std::fs::remove_dir_all(host);
    std::fs::create_dir_all(host.join("bin")).unwrap();
    std::fs::copy(probe, host.join("bin/tool")).unwrap();
    std::fs::write(host.join("victim"), "v").unwrap();
    let mut spec = spec_on(c, args, backend);
    if let Some(ns) = spec["linux"]["namespaces"].as_array_mut() {
        ns.retain(|n| n["type"] != "pid");
    }
    let root = rootfs(&spec);
    let inside = root.join(host.strip_prefix("/").unwrap()).join("bin");
    std::fs::create_dir_all(&inside).unwrap();
    std::fs::copy(root.join("bin/busybox"), inside.join("tool")).unwrap();
    spec
}

/// Which of the attempts of [`escape_through_proc_root`] reached the host: reached, mkdir,
/// symlink, rm, host exec.
/// On native every attempt of [`escape_through_proc_root`] reaches the host (the path leads
/// outside); on the sentry none does (`who` made them).
fn assert_escapes_only_on_native(
    backend: &str,
    escaped: &[bool; 5],
    out: &strata_tests::Output,
    who: &str,
) {
    if backend == "native" {
        assert!(
            escaped.iter().all(|e| *e),
            "native must show that the path leads outside: {escaped:?}\n{out}"
        );
    } else {
        assert!(
            escaped.iter().all(|e| !*e),
            "Landlock let {who} outside its rootfs: {escaped:?}\n{out}"
        );
    }
}

fn escaped_to(host: &Path, out: &strata_tests::Output) -> [bool; 5] {
    [
        out.stdout.contains("reached"),
        host.join("made-dir").exists(),
        host.join("made-link").symlink_metadata().is_ok(),
        !host.join("victim").exists(),
        out.stdout.contains("probe-ident"),
    ]
}

/// Landlock behind the supervisor. A container sharing the host's pid namespace can reach the
/// host's filesystem through `/proc/<pid>/root` of a host process it may read, with calls the
/// supervisor never sees (`chdir`, `mkdir`, `symlink`, `unlink`) and with an exec the
/// supervisor judges by the path it reads back from `/proc/<pid>/cwd`, a path that exists in
/// the container too, on a policy that wrongly allows everything: native lets every attempt
/// through (so the path really leads outside), sentry stops them all, and ordinary work still
/// runs.
#[test]
fn landlock_stops_what_a_wrong_policy_lets_through() {
    let (h, probe) = harness_with_probe!("landlock");
    let host = h.info.state.join("landlock-host");
    let cfg = wrong_policy_config(h, "landlock-policy", &host);
    let helper = CaplessHostProcess::spawn();
    let script = escape_through_proc_root(helper.0.id(), &host);
    for backend in ["native", "sentry"] {
        let c = h.container(&format!("landlock-{backend}"));
        let spec = spec_beside_host(&c, &probe, &host, &["sh", "-c", &script], backend);
        let out = c.run_spec(&spec, &["--runtime-config-path", cfg.to_str().unwrap()]);
        let escaped = escaped_to(&host, &out);
        eprintln!("{backend}: reached, mkdir, symlink, rm, host exec = {escaped:?}");
        assert_escapes_only_on_native(backend, &escaped, &out, "the workload");
        if backend != "native" {
            assert!(
                out.stdout.contains("a b c \n") && out.stdout.contains("work-ok"),
                "ordinary work under Landlock: {out}"
            );
        }
        c.remove_and_check();
    }
    drop(helper);
    let _ = std::fs::remove_dir_all(&host);
}

/// A process started by `ctr task exec` in a running sentry container is confined as its init
/// is: it runs under the sentry's own filter with no_new_privs (libcontainer gives an exec'd
/// process no seccomp profile: the pre-exec hook installs it), and under Landlock, which keeps
/// it inside the container's rootfs and mounts where the policy is wrong: the attempts of
/// `landlock_stops_what_a_wrong_policy_lets_through`, made from an exec'd process, all reach
/// the host on native and all fail on the sentry, where its ordinary work still runs.
#[test]
fn an_exec_is_confined_as_its_init_is() {
    let (h, probe) = harness_with_probe!("landlock-exec");
    let host = h.info.state.join("landlock-exec-host");
    let cfg = wrong_policy_config(h, "landlock-exec-policy", &host);
    let helper = CaplessHostProcess::spawn();
    let script = format!(
        "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status | tr -d '\\t'; /bin/cat /dev/null; {}",
        escape_through_proc_root(helper.0.id(), &host)
    );
    for backend in ["native", "sentry"] {
        let c = h.container(&format!("landlock-exec-{backend}"));
        let spec = spec_beside_host(&c, &probe, &host, &["sleep", "300"], backend);
        start_spec_detached(
            h,
            &c,
            &spec,
            &["--runtime-config-path", cfg.to_str().unwrap()],
        );
        let out = c.exec("escape", &["sh", "-c", &script]);
        let escaped = escaped_to(&host, &out);
        eprintln!("{backend} exec: reached, mkdir, symlink, rm, host exec = {escaped:?}");
        assert_escapes_only_on_native(backend, &escaped, &out, "an exec'd process");
        if backend != "native" {
            assert!(
                out.stdout.contains("Seccomp:2\n") && out.stdout.contains("NoNewPrivs:1\n"),
                "the exec'd process must run under the sentry's filter: {out}"
            );
            assert!(
                out.stdout.contains("a b c \n") && out.stdout.contains("work-ok"),
                "ordinary work of an exec'd process under Landlock: {out}"
            );
            // The supervisor saw the exec'd process's calls: its filter is the sentry's.
            let mentions = |recs: &[serde_json::Value], needle: &str| {
                recs.iter().any(|r| r.to_string().contains(needle))
            };
            // (Its opens are the kernel's under this policy: its exec of /bin/cat is trapped.)
            let recs = audit_records_when(h, &c.id, |recs| mentions(recs, "\"/bin/cat\""));
            assert!(
                mentions(&recs, "\"/bin/cat\""),
                "the exec'd process's exec of /bin/cat is not in the audit log: {recs:?}"
            );
        }
        c.remove_and_check();
    }
    drop(helper);
    let _ = std::fs::remove_dir_all(&host);
}

/// `ctr run -d --config SPEC`, with `flags`.
fn start_spec_detached(h: &Harness, c: &Container<'_>, spec: &serde_json::Value, flags: &[&str]) {
    let path = h.info.state.join(format!("{}.json", c.id));
    std::fs::write(&path, serde_json::to_vec(spec).unwrap()).unwrap();
    let mut cmdl = h.ctr();
    cmdl.args(["run", "-d", "--runtime", &c.runtime, "--fifo-dir"])
        .arg(h.fifo_dir());
    cmdl.args(flags).arg("--config").arg(&path).arg(&c.id);
    let out = cmd::run(cmdl, None, CTR_TIMEOUT).unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(out.success(), "{out}");
}

/// `ctr run -d --config SPEC`, with `flags`; waits until the task has stopped.
fn run_spec_detached(h: &Harness, c: &Container<'_>, spec: &serde_json::Value, flags: &[&str]) {
    start_spec_detached(h, c, spec, flags);
    assert!(
        c.wait_status("STOPPED", Duration::from_secs(30)),
        "{} did not finish: {:?}",
        c.id,
        c.status()
    );
}

/// Recording mode: a run under the built-in `record` policy, `strata policy generate` on its
/// audit log, then the same workload enforced under the generated policy (it runs), and a
/// different one (a file and a program the recording never used: refused and audited).
#[test]
fn a_recorded_run_yields_a_policy_that_a_later_run_enforces() {
    let (h, probe) = harness_with_probe!("record");
    let cfg = runtime_config(
        h,
        "record-policy",
        SENTRY_ONLY,
        &[(
            "sentry.toml",
            "allowed_policies = [\"default\", \"record\", \"recorded\"]\n",
        )],
    );
    let cfg_flags = ["--runtime-config-path", cfg.to_str().unwrap()];
    let work = "cat /etc/passwd >/dev/null && echo hi > /tmp/out && cat /tmp/out >/dev/stderr && \
                uname -r >/dev/null && wc -l < /etc/group >/dev/null && echo work-ok";
    let spec_for = |c: &Container<'_>, script: &str, policy: &str| {
        let mut spec = spec_with_probe(c, &probe, &["sh", "-c", script], "sentry");
        std::fs::write(
            rootfs(&spec).join("etc/unrecorded"),
            "not in the recording\n",
        )
        .unwrap();
        spec["annotations"]["strata.dev/sentry-policy"] = policy.into();
        spec
    };

    let c = h.container("record");
    run_spec_detached(h, &c, &spec_for(&c, work, "record"), &cfg_flags);
    let mentions = |recs: &[serde_json::Value], needle: &str| {
        recs.iter().any(|r| r.to_string().contains(needle))
    };
    let recs = audit_records_when(h, &c.id, |recs| mentions(recs, "/tmp/out"));
    assert!(mentions(&recs, "/tmp/out"), "{recs:?}");
    let generated = cfg.with_file_name("sentry").join("recorded.toml");
    strata_cli(
        h,
        &[
            "policy",
            "generate",
            "-n",
            &h.info.namespace,
            &c.id,
            "-o",
            generated.to_str().unwrap(),
        ],
    );
    c.remove_and_check();
    let policy = std::fs::read_to_string(&generated).unwrap();
    eprintln!("{policy}");
    assert!(
        policy.contains("\"/etc/passwd\"")
            && policy.contains("\"/tmp/out\"")
            && policy.contains("\"/bin/busybox\"")
            && policy.contains("mode = \"none\"")
            && !policy.contains("\"/etc\"")
            && !policy.contains("unrecorded"),
        "{policy}"
    );

    // The same workload, enforced.
    let c = h.container("recorded-same");
    let out = c.run_spec(&spec_for(&c, work, "recorded"), &cfg_flags);
    assert!(out.success() && out.stdout.contains("work-ok"), "{out}");
    c.remove_and_check();

    // Another workload: a file and a program the recording never touched.
    let c = h.container("recorded-other");
    let other = "cat /etc/unrecorded; echo read=$?; /usr/local/bin/escape ident; echo exec=$?";
    run_spec_detached(h, &c, &spec_for(&c, other, "recorded"), &cfg_flags);
    let recs = audit_records_when(h, &c.id, |recs| mentions(recs, "/usr/local/bin/escape"));
    assert!(mentions(&recs, "/usr/local/bin/escape"), "{recs:?}");
    let recs = audit_records(h, &c.id);
    let denied = |sc: &str, path: &str| {
        recs.iter().any(|r| {
            r["syscall"] == sc
                && r["decision"] == "deny"
                && (r["args"]["path"] == path || r["args"]["resolved"] == path)
        })
    };
    assert!(denied("openat", "/etc/unrecorded"), "{recs:?}");
    assert!(denied("execve", "/usr/local/bin/escape"), "{recs:?}");
    assert!(
        recs.iter()
            .any(|r| r["decision"] == "start" && r["args"]["policy"] == "recorded"),
        "{recs:?}"
    );
    c.remove_and_check();
}

/// `strata policy record` on a running container: a workload under a tight policy keeps
/// trying to read a file the policy refuses. Recording lets the read through (and audits it,
/// under a `start` record naming the recording policy), `strata policy generate` then lists
/// the file, and `--stop` gives the container's own policy back: the read is refused again.
/// Asking for a container that does not exist fails, naming it, and writes nothing.
#[test]
fn recording_a_running_container_then_stopping_it() {
    let (h, probe) = harness_with_probe!("record_running");
    let cfg = runtime_config(
        h,
        "record-running",
        SENTRY_ONLY,
        &[
            (
                "sentry.toml",
                "allowed_policies = [\"default\", \"tight\"]\n",
            ),
            (
                "tight.toml",
                "[files]\nread = [\"/\"]\nread_write = [\"/tmp\", \"/dev/null\"]\n\
                 deny = [\"/srv/secret\"]\n[exec]\nallow = [\"/bin\", \"/usr/bin\"]\n\
                 [network]\nmode = \"none\"\n",
            ),
        ],
    );
    let cfg_flags = ["--runtime-config-path", cfg.to_str().unwrap()];
    let c = h.container("record-running");
    let script = "while :; do if cat /srv/secret >/tmp/got 2>/dev/null; then \
                  echo read >/tmp/flag; else rm -f /tmp/flag; fi; sleep 0.2; done";
    let mut spec = spec_with_probe(&c, &probe, &["sh", "-c", script], "sentry");
    let root = rootfs(&spec);
    std::fs::create_dir_all(root.join("srv")).unwrap();
    std::fs::write(root.join("srv/secret"), "the secret\n").unwrap();
    spec["annotations"]["strata.dev/sentry-policy"] = "tight".into();
    start_spec_detached(h, &c, &spec, &cfg_flags);
    let secret_reads = |recs: &[serde_json::Value], decision: &str| {
        recs.iter()
            .filter(|r| {
                r["decision"] == decision
                    && (r["args"]["path"] == "/srv/secret"
                        || r["args"]["resolved"] == "/srv/secret")
            })
            .count()
    };
    let recs = audit_records_when(h, &c.id, |r| secret_reads(r, "deny") > 0);
    assert!(secret_reads(&recs, "deny") > 0, "{recs:?}");
    assert!(!root.join("tmp/flag").exists());

    let ns = h.info.namespace.clone();
    let out = strata_cli(h, &["policy", "record", "-n", &ns, &c.id]);
    assert!(out.stdout.contains("recording"), "{out}");
    let recs = audit_records_when(h, &c.id, |r| secret_reads(r, "allow") > 0);
    assert!(secret_reads(&recs, "allow") > 0, "{recs:?}");
    assert!(
        recs.iter().any(|r| r["decision"] == "start"
            && r["args"]["policy"] == "record"
            && r["args"]["switched_by"] == "strata policy record"),
        "{recs:?}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !root.join("tmp/flag").exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        std::fs::read_to_string(root.join("tmp/got")).unwrap_or_default(),
        "the secret\n",
        "{}",
        c.log()
    );
    // Asked again: says so, changes nothing.
    let again = strata_cli(h, &["policy", "record", "-n", &ns, &c.id]);
    assert!(again.stdout.contains("already recording"), "{again}");

    let out = strata_cli(h, &["policy", "generate", "-n", &ns, &c.id]);
    assert!(out.stdout.contains("\"/srv/secret\""), "{out}");
    assert!(!out.stderr.contains("not from a run under"), "{out}");

    let out = strata_cli(h, &["policy", "record", "--stop", "-n", &ns, &c.id]);
    assert!(out.stdout.contains("recording ended"), "{out}");
    let allowed = secret_reads(&audit_records(h, &c.id), "allow");
    let denied = secret_reads(&audit_records(h, &c.id), "deny");
    let recs = audit_records_when(h, &c.id, |r| secret_reads(r, "deny") > denied);
    assert!(secret_reads(&recs, "deny") > denied, "{recs:?}");
    assert!(
        recs.iter().any(|r| r["decision"] == "start"
            && r["args"]["policy"] == "tight"
            && r["args"]["switched_by"] == "strata policy record --stop"),
        "{recs:?}"
    );
    // Records after the last switch: only refusals of the secret.
    let last = recs.iter().rposition(|r| r["decision"] == "start").unwrap();
    assert_eq!(secret_reads(&recs[last..], "allow"), 0, "{recs:?}");
    assert!(allowed > 0);
    let dir = PathBuf::from("/run/strata/sentry").join(&ns).join(&c.id);
    assert!(!dir.join("record").exists());

    // Bad input: a container that is not there.
    let mut cmdl = std::process::Command::new(h.shim_dir.join("strata"));
    cmdl.args(["policy", "record", "-n", &ns, "no-such-container"]);
    let out = cmd::run(cmdl, None, CTR_TIMEOUT).unwrap();
    assert!(
        !out.success()
            && out
                .stderr
                .contains("\"no-such-container\" is not a sentry container"),
        "{out}"
    );
    assert!(!PathBuf::from("/run/strata/sentry")
        .join(&ns)
        .join("no-such-container")
        .exists());
    c.kill("SIGKILL");
    c.remove_and_check();
}

/// The exec TOCTOU window the supervisor cannot close for a multi-threaded caller (docs/sentry.md)
/// is closed by Landlock: a thread flips the exec path between `/bin/busybox` (allowed) and a
/// copy of the probe in `/tmp` (not allowed) while the main thread execs it, many times over.
/// The copy never runs. Refusals the supervisor did not make (more EACCES seen by the workload
/// than exec refusals in the audit log) are the kernel's, i.e. Landlock's.
#[test]
fn landlock_closes_the_exec_toctou_window() {
    let (h, probe) = harness_with_probe!("exec_toctou");
    let c = h.container("sentry-exectoctou");
    let mut spec = spec_with_probe(
        &c,
        &probe,
        &["/usr/local/bin/escape", "exectoctou"],
        "sentry",
    );
    // An exec allowlist that leaves /tmp out (the default policy allows every program).
    spec["annotations"]["strata.dev/sentry-policy"] = "confined".into();
    let root = PathBuf::from(spec["root"]["path"].as_str().unwrap());
    let cfg = confined_config(h);
    run_spec_detached(h, &c, &spec, &["--runtime-config-path", &cfg]);
    let line = std::fs::read_to_string(root.join("tmp/exectoctou.out"))
        .unwrap_or_else(|e| panic!("no result from the probe ({e}): {}", c.log()));
    let n = |k: &str| count(&line, k);
    // The supervisor refuses what it reads as /tmp/evil; count its refusals (the log is
    // written in batches: wait for the last exec records).
    let refused_by_supervisor = || {
        audit_records(h, &c.id)
            .iter()
            .filter(|r| r["syscall"] == "execve" && r["errno"] == libc::EACCES)
            .count() as u64
    };
    let mut supervisor = refused_by_supervisor();
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(300));
        let now = refused_by_supervisor();
        if now == supervisor {
            break;
        }
        supervisor = now;
    }
    let suppressed = audit_records(h, &c.id)
        .iter()
        .any(|r| r["decision"] == "suppressed");
    eprintln!(
        "{} refused by the supervisor: {supervisor}, so by Landlock: {}{}",
        line.trim(),
        n("eacces").saturating_sub(supervisor),
        if suppressed {
            " (audit records were dropped: an upper bound)"
        } else {
            ""
        }
    );
    assert_eq!(n("evil"), 0, "the copy outside the allowlist ran: {line}");
    assert!(n("allowed") > 0, "the allowed program never ran: {line}");
    // The race was really run: some swaps landed after the supervisor's last look (about 50
    // of 150 processes here), and the kernel refused them.
    if !suppressed {
        assert!(
            n("eacces") > supervisor,
            "no refusal was Landlock's: the window was never hit ({line}, {supervisor} by the supervisor)"
        );
    }
    c.remove_and_check();
}

/// The supervisor threads work in the container's own CPU cgroups (cgroup v1 `cpu` and
/// `cpuacct`, which place single threads): the container's CPU share pays for its trapped
/// calls, and hand-overs between workload and supervisor stay within one scheduling group.
/// Removing the container moves them out first: its cgroups go, nothing is left.
#[test]
fn supervisor_threads_work_in_the_containers_cpu_cgroup() {
    let h = harness!();
    strata_only!(h);
    let c = h.container("sentry-cpucg");
    let spec = spec_on(
        &c,
        &["sh", "-c", "while true; do read x </etc/passwd; done"],
        "sentry",
    );
    let mut spec = spec;
    let flags = audited(h, &mut spec);
    start_spec_detached(h, &c, &spec, &[&flags[0], &flags[1]]);
    let pid = c.pid().expect("the task's pid");
    let cpu_line = |path: String| -> Option<String> {
        std::fs::read_to_string(path).ok()?.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctrl, group) = (f.next()?, f.next()?, f.next()?);
            ctrl.split(',')
                .any(|x| x == "cpu")
                .then(|| group.to_string())
        })
    };
    let Some(container_group) = cpu_line(format!("/proc/{pid}/cgroup")) else {
        c.remove_and_check();
        // Not a missing feature of this machine's set-up but another cgroup version: the
        // supervisor rightly stays in the shim's group there.
        skip(
            "supervisor_threads_work_in_the_containers_cpu_cgroup",
            "cgroup v2 only: a single thread cannot change groups there",
        );
        return;
    };
    let shim = c.shim_pid();
    let name = format!("sentry-{}", &c.id[..8.min(c.id.len())]);
    let supervisor_groups = || -> Vec<String> {
        std::fs::read_dir(format!("/proc/{shim}/task"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|t| {
                std::fs::read_to_string(t.path().join("comm")).is_ok_and(|n| n.trim() == name)
            })
            .filter_map(|t| cpu_line(t.path().join("cgroup").display().to_string()))
            .collect()
    };
    let joined = cmd::poll(Duration::from_secs(10), || {
        let g = supervisor_groups();
        (!g.is_empty() && g.iter().all(|x| *x == container_group)).then_some(g)
    });
    let shim_group = cpu_line(format!("/proc/{shim}/cgroup"));
    let seen = supervisor_groups();
    c.remove_and_check();
    assert!(
        joined.is_some(),
        "supervisor threads {name} in cpu groups {seen:?}, the container's is {container_group}"
    );
    assert_ne!(
        shim_group.as_deref(),
        Some(container_group.as_str()),
        "the shim itself stays out"
    );
}

/// A supervisor thread stays at a root workload's capabilities between opens (`AsWorkload`
/// parking, docs/sentry.md): opens keep the calling task's own credentials as they change
/// under one thread. Root reads root's 0600 file; so does root that is no longer dumpable (the
/// supervisor's reads of it need its own capabilities again); after `setresuid(1000)` the
/// same file is refused, `/etc/passwd` reads, and a file created belongs to 1000.
#[test]
fn opens_keep_each_tasks_credentials_as_they_change() {
    let (h, probe) = harness_with_probe!("opens_keep_each_tasks_credentials_as_they_change");
    let c = h.container("sentry-creds");
    let mut spec = spec_with_probe(&c, &probe, &["/usr/local/bin/escape", "creds"], "sentry");
    spec["process"]["cwd"] = serde_json::json!("/tmp");
    let root = rootfs(&spec);
    std::fs::create_dir_all(root.join("tmp")).unwrap();
    let secret = root.join("tmp/creds-root");
    std::fs::write(&secret, "secret\n").unwrap();
    std::os::unix::fs::chown(&secret, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    std::fs::set_permissions(
        root.join("tmp"),
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .unwrap();
    let flags = audited(h, &mut spec);
    let out = c.run_spec(&spec, &[&flags[0], &flags[1]]);
    let r = parse(&out.stdout);
    let expect = [
        ("root_reads_root_file", "allowed"),
        ("root_reads_relative", "allowed"),
        ("nondumpable_reads_root_file", "allowed"),
        ("nondumpable_reads_relative", "allowed"),
        ("user_reads_root_file", "denied EACCES"),
        ("user_reads_passwd", "allowed"),
        ("user_creates_file", "allowed"),
        ("user_reads_own_file", "allowed"),
    ];
    for (k, v) in expect {
        assert_eq!(r.get(k).map(String::as_str), Some(v), "{k}: {out}");
    }
    assert!(out.stdout.contains("owner=1000"), "{out}");
    c.assert_no_leaks();
}

/// A container flooding trapped calls (four loops of opens, half of them refused by a path
/// rule and audited) neither starves another container's supervisor (the other container's
/// 500 opens finish while the flood goes on) nor grows its audit log beyond the rate limit
/// (default: a burst of 2000 records, then 200 a second; the rest only counted, in
/// `suppressed` records).
#[test]
fn a_flood_of_trapped_calls_neither_starves_another_container_nor_grows_its_log() {
    let h = harness!();
    strata_only!(h);
    let flood = h.container("sentry-flood");
    let spec = spec_on(
        &flood,
        &[
            "sh",
            "-c",
            "for j in 1 2 3 4; do \
             (while true; do read x </proc/kcore 2>/dev/null; read y </etc/passwd; done) & \
             done; wait",
        ],
        "sentry",
    );
    let mut spec = spec;
    let flags = audited(h, &mut spec);
    start_spec_detached(h, &flood, &spec, &[&flags[0], &flags[1]]);
    // The flood is on once the rate limit has started dropping records.
    let recs = audit_records_when(h, &flood.id, |r| {
        r.iter().any(|x| x["decision"] == "suppressed")
    });
    assert!(
        recs.iter().any(|x| x["decision"] == "suppressed"),
        "the flood never reached the rate limit: {} records",
        recs.len()
    );
    let other = h.container("sentry-flooded");
    let run_flags = audited_run_flags(h);
    let run_flags: Vec<&str> = run_flags.iter().map(String::as_str).collect();
    let out = other.run_with(
        &run_flags,
        &[
            "sh",
            "-c",
            "i=0; while [ $i -lt 500 ]; do read x </etc/passwd; i=$((i+1)); done; echo done $i",
        ],
        None,
    );
    let flooding = flood.status();
    assert!(out.success() && out.stdout.contains("done 500"), "{out}");
    assert_eq!(
        flooding.as_deref(),
        Some("RUNNING"),
        "the flood ended before the other container's opens"
    );
    let _ = h.ctr_run(&["task", "kill", "-a", "-s", "SIGKILL", &flood.id]);
    assert!(flood.wait_status("STOPPED", Duration::from_secs(20)));
    let recs = audit_records(h, &flood.id);
    flood.remove_and_check();
    other.assert_no_leaks();
    let ts: Vec<f64> = recs.iter().filter_map(|r| r["ts"].as_f64()).collect();
    let secs =
        ts.iter().cloned().fold(f64::MIN, f64::max) - ts.iter().cloned().fold(f64::MAX, f64::min);
    let kept = recs
        .iter()
        .filter(|r| r["decision"] != "suppressed")
        .count() as f64;
    let dropped: u64 = recs
        .iter()
        .filter(|r| r["decision"] == "suppressed")
        .filter_map(|r| r["count"].as_u64())
        .sum();
    eprintln!("flood: {kept} records kept, {dropped} dropped, over {secs:.1} s");
    assert!(
        kept <= 2000.0 + 200.0 * (secs + 1.0),
        "{kept} records in {secs:.1} s: the rate limit (2000 burst, 200/s) did not hold"
    );
    assert!(dropped > 0, "nothing was dropped");
}

/// The supervisor holds a trapped task on its own CPU while it hands over an opened
/// descriptor (docs/sentry.md, "Cost of a trapped open"). The task never sees it: its CPUs,
/// read right after each of 5000 opens, are always all of them, and so are those its status
/// file gives, read through the descriptor that very open returned.
#[test]
fn a_task_never_sees_itself_held_on_one_cpu() {
    let (h, probe) = harness_with_probe!("a_task_never_sees_itself_held_on_one_cpu");
    let c = h.container("sentry-affinity");
    let mut spec = spec_with_probe(&c, &probe, &["/usr/local/bin/escape", "affinity"], "sentry");
    let flags = audited(h, &mut spec);
    let out = c.run_spec(&spec, &[&flags[0], &flags[1]]);
    assert!(out.success(), "{out}");
    let online = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let all = if online == 1 {
        "0".to_string()
    } else {
        format!("0-{}", online - 1)
    };
    assert!(
        out.stdout
            .contains(&format!("cpus {online} changed 0 status {all} changed 0")),
        "expected all {online} CPUs after every open, and in /proc/self/status: {out}"
    );
    c.assert_no_leaks();
}

/// One Landlock domain per container (docs/sentry.md, "One domain per container: the
/// keeper"): a process started by `ctr task exec` is forked inside the init's domain, so
/// Landlock's ptrace rule lets it reach the init's `/proc/<pid>` links and another exec'd
/// process's, as on native, and it runs with exactly the credentials, limits and environment
/// libcontainer gives an exec'd process. Compared line for line with native, for an init of
/// uid 1000 with supplementary groups and a narrow capability set (ambient included) and
/// execs as that user, as root and as another user; exit codes and signals to the exec pass
/// through, and killing an exec leaves nothing of it running.
#[test]
fn execd_processes_join_the_inits_landlock_domain_with_their_own_credentials() {
    let h = harness!();
    strata_only!(h);
    let report = "grep -E '^(Uid|Gid|Groups|Umask|CapInh|CapPrm|CapEff|CapBnd|CapAmb):' \
                  /proc/self/status | tr -d '\\t'; echo HOME=$HOME; echo nofile=$(ulimit -n); \
                  echo cwd=$(pwd)";
    // What reaching another process of the container takes: its /proc/<pid> links.
    let reach = |pid: &str| {
        format!(
            "readlink /proc/{pid}/exe || echo no-exe; ls /proc/{pid}/fd >/dev/null 2>&1 && \
             echo fd-listed; readlink /proc/{pid}/fd/1 >/dev/null && echo fd-read || \
             echo no-fd; cd /proc/{pid}/root && echo root-entered || echo no-root"
        )
    };
    let mut seen: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for backend in ["native", "sentry"] {
        let c = h.container(&format!("domain-{backend}"));
        let init = format!("({report}) > /tmp/init-report; exec sleep 300");
        let mut spec = spec_on(&c, &["sh", "-c", &init], backend);
        spec["process"]["user"] =
            serde_json::json!({ "uid": 1000, "gid": 1000, "additionalGids": [10, 20] });
        let caps = serde_json::json!(["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
        spec["process"]["capabilities"] = serde_json::json!({
            "bounding": caps, "effective": caps, "permitted": caps,
            "inheritable": ["CAP_NET_BIND_SERVICE"], "ambient": ["CAP_NET_BIND_SERVICE"]
        });
        spec["process"]["rlimits"] =
            serde_json::json!([{ "type": "RLIMIT_NOFILE", "hard": 2048, "soft": 1000 }]);
        spec["process"]["cwd"] = serde_json::json!("/tmp");
        start_spec_detached(h, &c, &spec, &[]);
        let mut record = BTreeMap::new();
        let init_report = cmd::poll(Duration::from_secs(20), || {
            let out = c.exec("read-init", &["cat", "/tmp/init-report"]);
            (out.success() && out.stdout.contains("nofile=")).then_some(out.stdout)
        })
        .unwrap_or_else(|| panic!("{backend}: the init wrote no report"));
        record.insert("init".to_string(), init_report);
        for (name, flags) in [
            ("exec", vec![]),
            ("exec as root", vec!["--user", "0"]),
            ("exec as 2000", vec!["--user", "2000:2000"]),
        ] {
            let id = name.replace(' ', "-");
            let out = c.exec_with(&id, &flags, &["sh", "-c", report], None);
            assert!(out.success(), "{backend} {name}: {out}");
            record.insert(name.to_string(), out.stdout);
            let out = c.exec_with(
                &format!("{id}-reach"),
                &flags,
                &["sh", "-c", &reach("1")],
                None,
            );
            record.insert(format!("{name} reaches the init"), out.stdout);
        }
        // Another exec'd process, reached from an exec.
        let long = cmd::Background::spawn(c.exec_command("long", &[], &["sleep", "301"]))
            .expect("starting ctr task exec");
        let find = "ps -o pid,args | grep '[s]leep 301' | awk '{print $1}'";
        let pid = cmd::poll(Duration::from_secs(20), || {
            let out = c.exec("find-long", &["sh", "-c", find]);
            let pid = out.stdout.trim().to_string();
            (!pid.is_empty()).then_some(pid)
        })
        .unwrap_or_else(|| panic!("{backend}: the long exec never ran"));
        let out = c.exec("reach-long", &["sh", "-c", &reach(&pid)]);
        record.insert("exec reaches another exec".into(), out.stdout);
        // Exit codes and signals pass through.
        let out = c.exec("seven", &["sh", "-c", "exit 7"]);
        record.insert("exit 7".into(), format!("{:?}", out.code));
        let out = c.exec("killed", &["sh", "-c", "kill -KILL $$"]);
        record.insert("killed by SIGKILL".into(), format!("{:?}", out.code));
        let kill = h.ctr_run(&["task", "kill", "-s", "SIGTERM", "--exec-id", "long", &c.id]);
        assert!(kill.success(), "{backend}: {kill}");
        let out = long.wait(Duration::from_secs(20));
        record.insert("SIGTERM to the exec".into(), format!("{:?}", out.code));
        // SIGKILL to an exec (on the sentry: its proxy) leaves nothing of it running.
        let victim = cmd::Background::spawn(c.exec_command("victim", &[], &["sleep", "302"]))
            .expect("starting ctr task exec");
        let running = |c: &Container<'_>| {
            c.exec("ps", &["sh", "-c", "ps -o args | grep -c '[s]leep 302'"])
                .stdout
                .trim()
                .to_string()
        };
        assert!(
            cmd::poll(Duration::from_secs(20), || (running(&c) == "1")
                .then_some(()))
            .is_some(),
            "{backend}: the victim exec never ran"
        );
        let kill = h.ctr_run(&[
            "task",
            "kill",
            "-s",
            "SIGKILL",
            "--exec-id",
            "victim",
            &c.id,
        ]);
        assert!(kill.success(), "{backend}: {kill}");
        let _ = victim.wait(Duration::from_secs(20));
        let gone = cmd::poll(Duration::from_secs(10), || {
            (running(&c) == "0").then_some(())
        });
        record.insert(
            "SIGKILL to the exec ends it".into(),
            format!("{}", gone.is_some()),
        );
        eprintln!("{backend}: {record:#?}");
        seen.insert(backend.to_string(), record);
        c.remove_and_check();
    }
    let (native, sentry) = (&seen["native"], &seen["sentry"]);
    for (what, n) in native {
        assert_eq!(
            Some(n),
            sentry.get(what),
            "{what}: native and sentry differ"
        );
    }
    // And the comparison is not empty: the execs of the init's user reached it.
    assert!(
        native["exec reaches the init"].contains("fd-read")
            && native["exec reaches another exec"].contains("root-entered"),
        "{native:#?}"
    );
    assert!(
        native["exec as 2000 reaches the init"].contains("no-fd"),
        "{native:#?}"
    );
}
