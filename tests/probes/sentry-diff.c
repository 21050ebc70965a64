/* The sentry's differential probe (tests/tests/sentry_diff.rs): file, directory, descriptor,
 * process, signal, socket and limit calls with their edge cases, one line per case, run on
 * the native and the sentry tier through containerd and compared line for line. Each line is
 * "CASE ok [DETAIL]" or "CASE err ERRNO-NAME": what the kernel answered, never a pid, an
 * inode, a time or an address, so that two runs of the same kernel print the same lines.
 *
 *   sentry-diff rw DIR   every case, working in DIR (created; on a writable root)
 *   sentry-diff ro       writes on a read-only root (ctr run --read-only)
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/openat2.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *en(int e) {
    const char *n = strerrorname_np(e);
    return n ? n : "?";
}

/* A call's return value: "ok N" (N only where it is meaningful) or "err ERRNO". */
static void rc(const char *name, long r, int show) {
    if (r < 0) printf("%s err %s\n", name, en(errno));
    else if (show) printf("%s ok %ld\n", name, r);
    else printf("%s ok\n", name);
    fflush(stdout);
}

/* An open: its descriptor number (the lowest free one, as the kernel picks it), then closed. */
static void op(const char *name, int fd) {
    rc(name, fd, 1);
    if (fd >= 0) close(fd);
}

static void line(const char *name, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void line(const char *name, const char *fmt, ...) {
    va_list ap;
    printf("%s ", name);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
}

static char wd[256];
/* WD/REL, in one of four buffers taken in turn, so that a call may take two. */
static const char *p(const char *rel) {
    static char bufs[4][8192];
    static int next;
    char *b = bufs[next++ % 4];
    snprintf(b, sizeof bufs[0], "%s/%s", wd, rel);
    return b;
}

static void put(const char *path, const char *text, int mode) {
    int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, mode);
    if (fd >= 0) {
        if (write(fd, text, strlen(text)) < 0) perror("write");
        close(fd);
    }
}

/* The first bytes of a file, or its errno. */
static void head(const char *name, const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) { line(name, "err %s", en(errno)); return; }
    char buf[64] = {0};
    long n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n < 0) { line(name, "read-err %s", en(errno)); return; }
    for (long i = 0; i < n; i++) if (buf[i] == '\n' || buf[i] == ' ') buf[i] = '_';
    line(name, "ok %ld %.16s", n, buf);
}

/* Entries of a directory (not . and ..), sorted names joined, or the errno of opening it. */
static int cmp(const void *a, const void *b) { return strcmp(*(char **)a, *(char **)b); }
static void ls(const char *name, const char *path) {
    DIR *d = opendir(path);
    if (!d) { line(name, "err %s", en(errno)); return; }
    char *names[512];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 512)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) names[n++] = strdup(e->d_name);
    closedir(d);
    qsort(names, n, sizeof *names, cmp);
    printf("%s ok %d", name, n);
    for (int i = 0; i < n && i < 40; i++) {
        printf(" ");
        for (unsigned char *c = (unsigned char *)names[i]; *c; c++)
            if (*c < 0x21 || *c > 0x7e) printf("\\x%02x", *c); else putchar(*c);
        free(names[i]);
    }
    printf("\n");
    fflush(stdout);
}

static void files(void) {
    op("open_existing", open("/etc/passwd", O_RDONLY));
    op("open_missing", open(p("missing"), O_RDONLY));
    op("open_missing_dir", open(p("nodir/x"), O_RDONLY));
    op("open_missing_wronly", open(p("missing"), O_WRONLY));
    op("open_empty_path", open("", O_RDONLY));
    op("creat_excl", open(p("f"), O_CREAT | O_EXCL | O_WRONLY, 0644));
    op("creat_excl_again", open(p("f"), O_CREAT | O_EXCL | O_WRONLY, 0644));
    put(p("f"), "hello\n", 0644);
    head("read_back", p("f"));
    op("o_directory_on_file", open(p("f"), O_RDONLY | O_DIRECTORY));
    op("dir_wronly", open(wd, O_WRONLY));
    op("dir_rdonly", open(wd, O_RDONLY));
    op("o_creat_o_directory", open(p("nd"), O_CREAT | O_DIRECTORY | O_RDONLY, 0644));
    op("trailing_slash_file", open(p("f/"), O_RDONLY));
    op("trailing_slash_dir", open(p("."), O_RDONLY));
    op("dot", open(".", O_RDONLY | O_DIRECTORY));
    op("dotdot", open("..", O_RDONLY | O_DIRECTORY));
    op("dotdot_above_root", open("/../../etc/passwd", O_RDONLY));

    /* O_PATH */
    int fd = open(p("f"), O_PATH);
    rc("o_path_file", fd, 1);
    if (fd >= 0) {
        struct stat st;
        rc("o_path_fstat", fstat(fd, &st), 0);
        char c;
        rc("o_path_read", read(fd, &c, 1), 0);
        line("o_path_flags", "%s", (fcntl(fd, F_GETFL) & O_PATH) ? "O_PATH" : "-");
        close(fd);
    }
    op("o_path_wronly_creat", open(p("opath-new"), O_PATH | O_WRONLY | O_CREAT, 0644));
    rc("o_path_did_not_create", access(p("opath-new"), F_OK), 0);
    op("o_path_dir", open(wd, O_PATH | O_DIRECTORY));
    op("o_path_dev_null", open("/dev/null", O_PATH));
    symlink(p("f"), p("ln"));
    fd = open(p("ln"), O_PATH | O_NOFOLLOW);
    rc("o_path_nofollow_symlink", fd, 1);
    if (fd >= 0) {
        struct stat st;
        fstatat(fd, "", &st, AT_EMPTY_PATH);
        line("o_path_nofollow_is_link", "%d", S_ISLNK(st.st_mode));
        close(fd);
    }
    op("o_nofollow_symlink", open(p("ln"), O_RDONLY | O_NOFOLLOW));
    op("follow_symlink", open(p("ln"), O_RDONLY));
    symlink(p("nowhere"), p("dangle"));
    op("dangling_symlink", open(p("dangle"), O_RDONLY));
    op("dangling_symlink_creat", open(p("dangle"), O_CREAT | O_WRONLY, 0644));
    rc("dangling_target_created", access(p("nowhere"), F_OK), 0);
    op("dangling_symlink_creat_excl", open(p("dangle"), O_CREAT | O_EXCL | O_WRONLY, 0644));
    symlink("loop", p("loop"));
    op("symlink_loop", open(p("loop"), O_RDONLY));
    symlink("../../../../../../etc/passwd", p("up"));
    op("relative_symlink_above_root", open(p("up"), O_RDONLY));

    /* Flags and modes */
    fd = open(p("f"), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    rc("cloexec_nonblock", fd, 1);
    if (fd >= 0) {
        line("cloexec_flag", "%d", fcntl(fd, F_GETFD) & FD_CLOEXEC);
        int fl = fcntl(fd, F_GETFL);
        line("status_flags", "acc=%d nonblock=%d", fl & O_ACCMODE, !!(fl & O_NONBLOCK));
        close(fd);
    }
    fd = open(p("f"), O_RDWR);
    if (fd >= 0) {
        int fl = fcntl(fd, F_GETFL);
        line("rdwr_flags", "acc=%d nonblock=%d cloexec=%d", fl & O_ACCMODE, !!(fl & O_NONBLOCK),
             fcntl(fd, F_GETFD) & FD_CLOEXEC);
        close(fd);
    }
    fd = open(p("f"), O_WRONLY | O_APPEND);
    if (fd >= 0) {
        rc("append_write", write(fd, "x", 1), 1);
        line("append_pos", "%ld", (long)lseek(fd, 0, SEEK_CUR));
        close(fd);
    }
    fd = open(p("f"), O_WRONLY | O_TRUNC);
    if (fd >= 0) {
        struct stat st;
        fstat(fd, &st);
        line("trunc_size", "%ld", (long)st.st_size);
        close(fd);
    }
    op("rdonly_trunc", open(p("f"), O_RDONLY | O_TRUNC));
    fd = open(wd, O_TMPFILE | O_RDWR, 0600);
    rc("o_tmpfile", fd, 1);
    if (fd >= 0) close(fd);
    op("creat_call", creat(p("c"), 0600));
    mode_t old = umask(077);
    fd = open(p("masked"), O_CREAT | O_WRONLY, 0666);
    if (fd >= 0) {
        struct stat st;
        fstat(fd, &st);
        line("umask_077_mode", "%o", st.st_mode & 0777);
        close(fd);
    }
    umask(old);
    fd = open(p("m"), O_CREAT | O_WRONLY, 04755);
    if (fd >= 0) {
        struct stat st;
        fstat(fd, &st);
        line("creat_mode_suid", "%o", st.st_mode & 07777);
        close(fd);
    }

    /* Names */
    char name[300];
    memset(name, 'n', 255);
    name[255] = 0;
    op("name_255", open(p(name), O_CREAT | O_WRONLY, 0644));
    unlink(p(name));
    memset(name, 'n', 256);
    name[256] = 0;
    op("name_256", open(p(name), O_CREAT | O_WRONLY, 0644));
    char longp[5000];
    memset(longp, 'a', sizeof longp - 1);
    longp[0] = '/';
    longp[sizeof longp - 1] = 0;
    op("path_over_path_max", open(longp, O_RDONLY));
    op("non_utf8_create", open(p("bad\xff\xfe"), O_CREAT | O_WRONLY, 0644));
    op("non_utf8_open", open(p("bad\xff\xfe"), O_RDONLY));
    op("non_utf8_truncated_seq", open(p("cut\xc3"), O_CREAT | O_WRONLY, 0644));
    mkdir(p("dir\x80"), 0755);
    op("non_utf8_dir_component", open(p("dir\x80/in"), O_CREAT | O_WRONLY, 0644));
    op("private_use_name", open(p("pua\xf4\x8f\xbd\x81"), O_CREAT | O_WRONLY, 0644));
    op("private_use_name_escaped_form_missing", open(p("pua\xf4\x8f\xbd"), O_RDONLY));
    ls("non_utf8_listing", wd);
    rc("non_utf8_unlink", unlink(p("bad\xff\xfe")), 0);

    /* openat and directory descriptors */
    int dfd = open(wd, O_RDONLY | O_DIRECTORY);
    op("openat_relative", openat(dfd, "f", O_RDONLY));
    op("openat_relative_missing", openat(dfd, "missing", O_RDONLY));
    op("openat_dotdot", openat(dfd, "..", O_RDONLY));
    op("openat_absolute_ignores_dirfd", openat(dfd, "/etc/passwd", O_RDONLY));
    op("openat_bad_dirfd", openat(999, "f", O_RDONLY));
    int ffd = open(p("f"), O_RDONLY);
    op("openat_file_dirfd", openat(ffd, "x", O_RDONLY));
    op("openat_empty_path", openat(dfd, "", O_RDONLY));
    close(ffd);
    rc("chdir", chdir(wd), 0);
    op("relative_cwd", open("f", O_RDONLY));
    op("relative_cwd_subdir_missing", open("nope/f", O_RDONLY));
    close(dfd);

    /* openat2 */
    struct open_how how = {.flags = O_RDONLY};
    op("openat2_plain", syscall(SYS_openat2, AT_FDCWD, p("f"), &how, sizeof how));
    struct open_how bad = {.flags = O_RDONLY, .mode = 0644};
    op("openat2_mode_without_creat", syscall(SYS_openat2, AT_FDCWD, p("f"), &bad, sizeof bad));
    struct open_how pathrw = {.flags = O_PATH | O_RDWR};
    op("openat2_o_path_rdwr", syscall(SYS_openat2, AT_FDCWD, p("f"), &pathrw, sizeof pathrw));
    op("openat2_small_size", syscall(SYS_openat2, AT_FDCWD, p("f"), &how, 8));
    struct open_how opath = {.flags = O_PATH};
    op("openat2_o_path", syscall(SYS_openat2, AT_FDCWD, p("f"), &opath, sizeof opath));

    /* openat2 with RESOLVE_* flags: the kernel's lookup rules, relative to a directory */
    mkdir(p("r2"), 0755);
    put(p("r2/in"), "inside\n", 0644);
    put(p("r2/etc-passwd"), "r2's own\n", 0644);
    symlink("in", p("r2/rel-link"));
    symlink("/in", p("r2/abs-link"));
    symlink("../f", p("r2/up-link"));
    /* Dangling symlinks as the name of a creating open: the kernel makes the target. */
    symlink("made-by-link", p("r2/dangle-rel"));
    symlink("/made-abs", p("r2/dangle-abs"));
    symlink("../made-up", p("r2/dangle-up"));
    symlink("dangle-next", p("r2/dangle-chain"));
    symlink("made-chain", p("r2/dangle-next"));
    symlink("made-excl", p("r2/dangle-excl"));
    int r2 = open(p("r2"), O_RDONLY | O_DIRECTORY);
    struct { const char *name; int dir; const char *path; unsigned long long flags, resolve; } rs[] = {
        {"openat2_beneath_inside", r2, "in", O_RDONLY, RESOLVE_BENEATH},
        {"openat2_beneath_dotdot", r2, "../f", O_RDONLY, RESOLVE_BENEATH},
        {"openat2_beneath_dot_dotdot_in", r2, "./../r2/in", O_RDONLY, RESOLVE_BENEATH},
        {"openat2_beneath_absolute", r2, "/etc/passwd", O_RDONLY, RESOLVE_BENEATH},
        {"openat2_beneath_rel_link", r2, "rel-link", O_RDONLY, RESOLVE_BENEATH},
        {"openat2_beneath_up_link", r2, "up-link", O_RDONLY, RESOLVE_BENEATH},
        {"openat2_beneath_missing", r2, "none", O_RDONLY, RESOLVE_BENEATH},
        {"openat2_beneath_dir", r2, ".", O_RDONLY | O_DIRECTORY, RESOLVE_BENEATH},
        {"openat2_in_root_absolute", r2, "/in", O_RDONLY, RESOLVE_IN_ROOT},
        {"openat2_in_root_abs_link", r2, "abs-link", O_RDONLY, RESOLVE_IN_ROOT},
        {"openat2_in_root_dotdot", r2, "../../../in", O_RDONLY, RESOLVE_IN_ROOT},
        {"openat2_in_root_etc", r2, "/etc-passwd", O_RDONLY, RESOLVE_IN_ROOT},
        {"openat2_no_symlinks", AT_FDCWD, p("r2/rel-link"), O_RDONLY, RESOLVE_NO_SYMLINKS},
        {"openat2_no_symlinks_plain", AT_FDCWD, p("r2/in"), O_RDONLY, RESOLVE_NO_SYMLINKS},
        {"openat2_no_symlinks_nofollow", AT_FDCWD, p("r2/rel-link"), O_RDONLY | O_NOFOLLOW, RESOLVE_NO_SYMLINKS},
        {"openat2_no_magiclinks_exe", AT_FDCWD, "/proc/self/exe", O_RDONLY, RESOLVE_NO_MAGICLINKS},
        {"openat2_no_magiclinks_plain", AT_FDCWD, "/etc/passwd", O_RDONLY, RESOLVE_NO_MAGICLINKS},
        {"openat2_no_xdev_proc", AT_FDCWD, "/proc/self/status", O_RDONLY, RESOLVE_NO_XDEV},
        {"openat2_no_xdev_same", r2, "in", O_RDONLY, RESOLVE_NO_XDEV},
        {"openat2_no_xdev_relative_dotdot", r2, "../f", O_RDONLY, RESOLVE_NO_XDEV},
        {"openat2_beneath_and_in_root", r2, "in", O_RDONLY, RESOLVE_BENEATH | RESOLVE_IN_ROOT},
        {"openat2_unknown_resolve", r2, "in", O_RDONLY, 0x4000},
        {"openat2_beneath_create", r2, "made", O_CREAT | O_WRONLY, RESOLVE_BENEATH},
        {"openat2_beneath_create_again", r2, "made", O_CREAT | O_EXCL | O_WRONLY, RESOLVE_BENEATH},
        {"openat2_beneath_create_escape", r2, "../made2", O_CREAT | O_WRONLY, RESOLVE_BENEATH},
        {"openat2_in_root_create_abs", r2, "/made3", O_CREAT | O_WRONLY, RESOLVE_IN_ROOT},
        {"openat2_beneath_create_trailing_slash", r2, "made4/", O_CREAT | O_WRONLY, RESOLVE_BENEATH},
        {"openat2_cached_create", r2, "made5", O_CREAT | O_WRONLY, RESOLVE_CACHED},
        {"openat2_beneath_creat_dangling", r2, "dangle-rel", O_CREAT | O_WRONLY, RESOLVE_BENEATH},
        {"openat2_beneath_creat_dangling_up", r2, "dangle-up", O_CREAT | O_WRONLY, RESOLVE_BENEATH},
        {"openat2_beneath_creat_dangling_abs", r2, "dangle-abs", O_CREAT | O_WRONLY, RESOLVE_BENEATH},
        {"openat2_in_root_creat_dangling_abs", r2, "dangle-abs", O_CREAT | O_WRONLY, RESOLVE_IN_ROOT},
        {"openat2_no_xdev_creat_dangling_chain", r2, "dangle-chain", O_CREAT | O_WRONLY, RESOLVE_NO_XDEV},
        {"openat2_beneath_creat_excl_dangling", r2, "dangle-excl", O_CREAT | O_EXCL | O_WRONLY, RESOLVE_BENEATH},
        {"openat2_no_symlinks_creat_dangling", r2, "dangle-excl", O_CREAT | O_WRONLY, RESOLVE_NO_SYMLINKS},
        {"openat2_o_path_beneath", r2, "in", O_PATH, RESOLVE_BENEATH},
        {"openat2_bad_dirfd", 999, "in", O_RDONLY, RESOLVE_BENEATH},
        {"openat2_file_dirfd", -1, "in", O_RDONLY, RESOLVE_BENEATH},
    };
    int filefd = open(p("f"), O_RDONLY);
    for (unsigned i = 0; i < sizeof rs / sizeof rs[0]; i++) {
        struct open_how h = {.flags = rs[i].flags, .resolve = rs[i].resolve};
        if (rs[i].flags & O_CREAT) h.mode = 0644;
        int d = rs[i].dir == -1 ? filefd : rs[i].dir;
        long r = syscall(SYS_openat2, d, rs[i].path, &h, sizeof h);
        if (r < 0) { line(rs[i].name, "err %s", en(errno)); continue; }
        char buf[32] = {0};
        long n = (rs[i].flags & (O_WRONLY | O_PATH | O_DIRECTORY)) ? 0 : read((int)r, buf, sizeof buf - 1);
        for (long k = 0; k < n; k++) if (buf[k] == '\n' || buf[k] == ' ') buf[k] = '_';
        line(rs[i].name, "ok %ld %s", r, n > 0 ? buf : "-");
        close((int)r);
    }
    close(filefd);
    rc("openat2_dangling_made_rel", faccessat(r2, "made-by-link", F_OK, 0), 0);
    rc("openat2_dangling_made_abs_in_root", faccessat(r2, "made-abs", F_OK, 0), 0);
    rc("openat2_dangling_made_chain", faccessat(r2, "made-chain", F_OK, 0), 0);
    rc("openat2_dangling_not_made_excl", faccessat(r2, "made-excl", F_OK, 0), 0);
    close(r2);

    /* Paths through one's own procfs magic links (root, cwd), and another process's */
    char via[8192];
    snprintf(via, sizeof via, "/proc/self/root%s", p("f"));
    head("proc_self_root_file", via);
    snprintf(via, sizeof via, "/proc/thread-self/root%s", p("f"));
    head("proc_thread_self_root_file", via);
    snprintf(via, sizeof via, "/proc/%d/root%s", (int)getpid(), p("f"));
    head("proc_own_pid_root_file", via);
    head("proc_self_cwd_file", "/proc/self/cwd/f");
    head("proc_self_root_missing", "/proc/self/root/no/such/file");
    ls("proc_self_root_twice_dir", "/proc/self/root/proc/self/root/etc");
    op("proc_self_root_nofollow", open("/proc/self/root", O_RDONLY | O_NOFOLLOW));
    op("proc_self_root_o_path_nofollow", open("/proc/self/root", O_PATH | O_NOFOLLOW));
    op("proc_self_cwd_dir", open("/proc/self/cwd", O_RDONLY | O_DIRECTORY));

    /* Reopening one's own descriptors */
    fd = open(p("f"), O_RDONLY);
    char self[64];
    snprintf(self, sizeof self, "/proc/self/fd/%d", fd);
    op("reopen_own_fd_read", open(self, O_RDONLY));
    op("reopen_own_fd_write", open(self, O_WRONLY));
    close(fd);
    op("reopen_closed_fd", open(self, O_RDONLY));
    op("dev_fd_dir", open("/dev/fd/", O_RDONLY | O_DIRECTORY));
    pid_t other = fork();
    if (other == 0) { pause(); _exit(0); }
    snprintf(self, sizeof self, "/proc/%d/fd/1", other);
    op("proc_other_process_fd", open(self, O_WRONLY));
    kill(other, SIGKILL);
    waitpid(other, NULL, 0);

    /* Devices */
    fd = open("/dev/full", O_WRONLY);
    if (fd >= 0) { rc("dev_full_write", write(fd, "x", 1), 1); close(fd); }
    fd = open("/dev/null", O_RDWR);
    if (fd >= 0) { rc("dev_null_write", write(fd, "x", 1), 1); close(fd); }
    head("dev_zero", "/dev/zero");
    op("dev_mem", open("/dev/mem", O_RDONLY));
    op("dev_kmsg", open("/dev/kmsg", O_RDONLY));
    rc("mknod_null", mknod(p("null"), S_IFCHR | 0666, makedev(1, 3)), 0);
    op("mknod_null_open", open(p("null"), O_RDWR));
    rc("mknod_mem", mknod(p("mem"), S_IFCHR | 0600, makedev(1, 1)), 0);
    op("mknod_mem_open", open(p("mem"), O_RDONLY));
    op("mknod_mem_open_path", open(p("mem"), O_PATH));
    rc("mkfifo", mkfifo(p("fifo"), 0600), 0);
    op("fifo_nonblock_read", open(p("fifo"), O_RDONLY | O_NONBLOCK));
    op("fifo_nonblock_write_no_reader", open(p("fifo"), O_WRONLY | O_NONBLOCK));
    ls("dev_listing", "/dev");
    /* Reopening one's own write end of a FIFO whose reader has gone: the reopen waits for
       the next reader (whenever it comes), then writes to it. */
    mkfifo(p("fifo2"), 0600);
    pid_t rd = fork();
    if (rd == 0) { open(p("fifo2"), O_RDONLY); _exit(0); }
    int wfd = open(p("fifo2"), O_WRONLY);
    waitpid(rd, NULL, 0);
    rd = fork();
    if (rd == 0) {
        usleep(200000);
        int r = open(p("fifo2"), O_RDONLY);
        char b[8] = {0};
        long n = read(r, b, 7);
        line("fifo_reopen_own_write_end_read", "%ld %s", n, b);
        _exit(0);
    }
    char own[64];
    snprintf(own, sizeof own, "/proc/self/fd/%d", wfd);
    int again = open(own, O_WRONLY);
    rc("fifo_reopen_own_write_end", again, 1);
    if (again >= 0) { if (write(again, "through", 7) != 7) perror("write"); close(again); }
    waitpid(rd, NULL, 0);
    close(wfd);

    /* Permissions */
    put(p("root-only"), "secret\n", 0600);
    chmod(wd, 0755);
    pid_t c = fork();
    if (c == 0) {
        if (setgroups(0, NULL) || setgid(1000) || setuid(1000)) _exit(90);
        op("user_open_root_only", open(p("root-only"), O_RDONLY));
        op("user_creat_in_root_dir", open(p("user-new"), O_CREAT | O_WRONLY, 0644));
        op("user_open_world_readable", open(p("f"), O_RDONLY));
        op("user_open_etc_passwd_write", open("/etc/passwd", O_WRONLY));
        fd = open("/tmp/user-file", O_CREAT | O_WRONLY | O_EXCL, 0640);
        rc("user_creat_in_tmp", fd, 1);
        if (fd >= 0) {
            struct stat st;
            fstat(fd, &st);
            line("user_file_owner", "%u:%u %o", st.st_uid, st.st_gid, st.st_mode & 0777);
            close(fd);
            unlink("/tmp/user-file");
        }
        rc("user_raw_socket", socket(AF_INET, SOCK_RAW, IPPROTO_ICMP), 0);
        int s = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(80)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        rc("user_bind_port_80", bind(s, (struct sockaddr *)&a, sizeof a), 0);
        close(s);
        rc("user_mknod", mknod("/tmp/user-null", S_IFCHR | 0666, makedev(1, 3)), 0);
        fflush(stdout);
        _exit(0);
    }
    int st;
    waitpid(c, &st, 0);
    line("user_child_status", "%d", WEXITSTATUS(st));

    /* Masked and kernel files */
    head("proc_kcore", "/proc/kcore");
    head("proc_timer_list", "/proc/timer_list");
    head("proc_keys", "/proc/keys");
    head("proc_sched_debug", "/proc/sched_debug");
    head("proc_kallsyms", "/proc/kallsyms");
    ls("sys_firmware", "/sys/firmware");
    op("sys_kernel_notes", open("/sys/kernel/notes", O_RDONLY));
    op("proc_sys_write", open("/proc/sys/kernel/hostname", O_WRONLY));
    op("proc_self_mem", open("/proc/self/mem", O_RDONLY));
    head("proc_self_comm", "/proc/self/comm");
    op("proc_self_status", open("/proc/self/status", O_RDONLY));
    op("proc_thread_self_comm", open("/proc/thread-self/comm", O_RDONLY));
    head("proc_version", "/proc/version");
    struct utsname u;
    uname(&u);
    line("uname", "%s %s", u.sysname, u.release);
}

static void dirs(void) {
    rc("mkdir", mkdir(p("d"), 0755), 0);
    rc("mkdir_again", mkdir(p("d"), 0755), 0);
    rc("mkdir_missing_parent", mkdir(p("x/y"), 0755), 0);
    put(p("d/in"), "x", 0644);
    rc("rmdir_nonempty", rmdir(p("d")), 0);
    rc("rmdir_file", rmdir(p("f")), 0);
    rc("unlink_dir", unlink(p("d")), 0);
    rc("rename_file", rename(p("c"), p("c2")), 0);
    rc("rename_missing", rename(p("c"), p("c3")), 0);
    mkdir(p("e"), 0755);
    put(p("e/in"), "x", 0644);
    rc("rename_dir_onto_nonempty", rename(p("d"), p("e")), 0);
    rc("link", link(p("f"), p("hard")), 0);
    rc("link_exists", link(p("f"), p("hard")), 0);
    rc("symlink_exists", symlink("x", p("hard")), 0);
    rc("unlink_missing", unlink(p("missing")), 0);
    rc("truncate", truncate(p("f"), 3), 0);
    rc("truncate_dir", truncate(wd, 0), 0);
    int fd = open(p("d"), O_RDONLY | O_DIRECTORY);
    rc("fchdir", fchdir(fd), 0);
    close(fd);
    op("after_fchdir", open("in", O_RDONLY));
    chdir(wd);
    ls("listing", p("d"));
}

static void fds(void) {
    int fd = open(p("f"), O_RDONLY);
    rc("dup", dup(fd), 1);
    rc("dup2_100", dup2(fd, 100), 1);
    rc("f_dupfd_50", fcntl(fd, F_DUPFD, 50), 1);
    rc("f_dupfd_cloexec", fcntl(fd, F_DUPFD_CLOEXEC, 60), 1);
    rc("close_bad", close(999), 0);
    char c;
    rc("write_on_rdonly", write(fd, "x", 1), 0);
    close(fd);
    close(100);
    close(50);
    close(60);
    for (int i = 3; i < 10; i++) close(i);
    int pf[2];
    rc("pipe", pipe(pf), 0);
    line("pipe_fds", "%d %d", pf[0], pf[1]);
    rc("read_on_write_end", read(pf[1], &c, 1), 0);
    close(pf[0]);
    close(pf[1]);
    op("lowest_free_after_close", open("/dev/null", O_RDONLY));
    /* A hole: the next open takes it. */
    int a = open("/dev/null", O_RDONLY), b = open("/dev/null", O_RDONLY);
    close(a);
    op("fills_the_hole", open("/etc/passwd", O_RDONLY));
    close(b);
}

static void procs(void) {
    line("getpid", "%d", getpid());
    pid_t c = fork();
    if (c == 0) _exit(7);
    int st;
    waitpid(c, &st, 0);
    line("child_exit", "%d", WEXITSTATUS(st));
    char *argv[] = {"x", NULL};
    char *envp[] = {NULL};
    rc("execve_missing", execve(p("missing"), argv, envp), 0);
    rc("execve_no_exec_bit", execve(p("f"), argv, envp), 0);
    rc("execve_dir", execve(wd, argv, envp), 0);
    put(p("noelf"), "just text\n", 0755);
    rc("execve_no_format", execve(p("noelf"), argv, envp), 0);
    put(p("script"), "#!/bin/sh\nexit 3\n", 0755);
    put(p("badshebang"), "#!/nonexistent/interp\n", 0755);
    rc("execve_bad_interpreter", execve(p("badshebang"), argv, envp), 0);
    rc("execve_null_path", syscall(SYS_execve, NULL, argv, envp), 0);
    /* Programs that start: in /usr/lib (outside the usual bin directories), in the working
       directory, by a relative path, and a script. */
    const char *progs[][2] = {
        {"exec_usr_lib", "/usr/lib/strata-diff-true"},
        {"exec_workdir", "prog"},
        {"exec_relative", "./prog"},
        {"exec_script", "script"},
        {"exec_symlink", "prog-link"},
    };
    /* A copy of busybox (the image's) under each name. */
    mkdir("/usr", 0755);
    mkdir("/usr/lib", 0755);
    int in = open("/bin/busybox", O_RDONLY);
    int out = open("/usr/lib/strata-diff-true", O_CREAT | O_WRONLY | O_TRUNC, 0755);
    int out2 = open(p("prog"), O_CREAT | O_WRONLY | O_TRUNC, 0755);
    char buf[65536];
    long n;
    while ((n = read(in, buf, sizeof buf)) > 0) {
        if (out >= 0 && write(out, buf, n) != n) break;
        if (out2 >= 0 && write(out2, buf, n) != n) break;
    }
    close(in);
    close(out);
    close(out2);
    symlink("prog", p("prog-link"));
    for (unsigned i = 0; i < sizeof progs / sizeof progs[0]; i++) {
        pid_t k = fork();
        if (k == 0) {
            const char *path = progs[i][1];
            char *av[] = {(char *)"true", NULL};
            if (strcmp(progs[i][0], "exec_script") == 0) av[0] = (char *)"script";
            char full[600];
            if (path[0] != '/' && path[0] != '.') { snprintf(full, sizeof full, "%s/%s", wd, path); path = full; }
            execve(path, av, envp);
            _exit(100 + errno);
        }
        waitpid(k, &st, 0);
        line(progs[i][0], "%d", WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st));
    }
    /* execveat with AT_EMPTY_PATH on a descriptor of the program */
    pid_t k = fork();
    if (k == 0) {
        int fd = open(p("prog"), O_RDONLY);
        char *av[] = {(char *)"true", NULL};
        syscall(SYS_execveat, fd, "", av, envp, AT_EMPTY_PATH);
        _exit(100 + errno);
    }
    waitpid(k, &st, 0);
    line("execveat_empty_path", "%d", WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st));
}

static volatile sig_atomic_t got;
static void on_usr1(int s) { got = s; }

static void signals(void) {
    struct sigaction sa = {.sa_handler = on_usr1};
    sigaction(SIGUSR1, &sa, NULL);
    raise(SIGUSR1);
    line("handler_ran", "%d", got == SIGUSR1);
    rc("kill_self_0", kill(getpid(), 0), 0);
    rc("kill_missing_pid", kill(99999, 0), 0);
    pid_t c = fork();
    if (c == 0) { pause(); _exit(0); }
    rc("kill_child_term", kill(c, SIGTERM), 0);
    int st;
    waitpid(c, &st, 0);
    line("child_signaled", "%d %d", WIFSIGNALED(st), WTERMSIG(st));
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR2);
    sigprocmask(SIG_BLOCK, &set, NULL);
    raise(SIGUSR2);
    sigset_t pend;
    sigpending(&pend);
    line("pending_usr2", "%d", sigismember(&pend, SIGUSR2));
    int sig;
    sigwait(&set, &sig);
    line("sigwait", "%d", sig);
}

static void sockets(void) {
    int sv[2];
    rc("socketpair_unix", socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    char buf[16] = {0};
    if (write(sv[0], "ping", 4) == 4 && read(sv[1], buf, 4) == 4) line("socketpair_io", "%s", buf);
    close(sv[0]);
    close(sv[1]);

    int l = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    snprintf(un.sun_path, sizeof un.sun_path, "%s/sock", wd);
    rc("unix_bind", bind(l, (struct sockaddr *)&un, sizeof un), 0);
    rc("unix_bind_again", bind(socket(AF_UNIX, SOCK_STREAM, 0), (struct sockaddr *)&un, sizeof un), 0);
    rc("unix_listen", listen(l, 4), 0);
    int cl = socket(AF_UNIX, SOCK_STREAM, 0);
    rc("unix_connect", connect(cl, (struct sockaddr *)&un, sizeof un), 0);
    int ac = accept(l, NULL, NULL);
    rc("unix_accept", ac < 0 ? -1 : 0, 0);
    close(ac); close(cl); close(l);
    struct sockaddr_un none = {.sun_family = AF_UNIX};
    snprintf(none.sun_path, sizeof none.sun_path, "%s/no-sock", wd);
    cl = socket(AF_UNIX, SOCK_STREAM, 0);
    rc("unix_connect_missing", connect(cl, (struct sockaddr *)&none, sizeof none), 0);
    close(cl);

    /* TCP on loopback */
    l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    rc("tcp_bind_any_port", bind(l, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t al = sizeof a;
    getsockname(l, (struct sockaddr *)&a, &al);
    line("tcp_port_given", "%d", ntohs(a.sin_port) > 0);
    rc("tcp_listen", listen(l, 4), 0);
    cl = socket(AF_INET, SOCK_STREAM, 0);
    rc("tcp_connect", connect(cl, (struct sockaddr *)&a, sizeof a), 0);
    ac = accept(l, NULL, NULL);
    if (ac >= 0 && write(cl, "pong", 4) == 4 && read(ac, buf, 4) == 4) line("tcp_io", "%.4s", buf);
    close(ac); close(cl);
    int l2 = socket(AF_INET, SOCK_STREAM, 0);
    rc("tcp_bind_in_use", bind(l2, (struct sockaddr *)&a, sizeof a), 0);
    close(l2); close(l);
    struct sockaddr_in closed = {.sin_family = AF_INET, .sin_port = htons(1)};
    closed.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cl = socket(AF_INET, SOCK_STREAM, 0);
    rc("tcp_connect_refused", connect(cl, (struct sockaddr *)&closed, sizeof closed), 0);
    close(cl);
    cl = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    rc("tcp_connect_nonblock_refused", connect(cl, (struct sockaddr *)&closed, sizeof closed), 0);
    close(cl);
    struct sockaddr_in far = {.sin_family = AF_INET, .sin_port = htons(443)};
    inet_pton(AF_INET, "198.18.255.1", &far.sin_addr);
    cl = socket(AF_INET, SOCK_STREAM, 0);
    rc("tcp_connect_unreachable", connect(cl, (struct sockaddr *)&far, sizeof far), 0);
    close(cl);
    l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in wild = {.sin_family = AF_INET};
    rc("tcp_bind_wildcard", bind(l, (struct sockaddr *)&wild, sizeof wild), 0);
    rc("tcp_listen_wildcard", listen(l, 1), 0);
    close(l);
    l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in p80 = {.sin_family = AF_INET, .sin_port = htons(80)};
    p80.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    rc("tcp_bind_port_80_root", bind(l, (struct sockaddr *)&p80, sizeof p80), 0);
    close(l);
    l = socket(AF_INET, SOCK_STREAM, 0);
    rc("tcp_listen_unbound", listen(l, 1), 0);
    close(l);
    struct sockaddr_in foreign = {.sin_family = AF_INET};
    inet_pton(AF_INET, "198.18.255.1", &foreign.sin_addr);
    l = socket(AF_INET, SOCK_STREAM, 0);
    rc("tcp_bind_foreign_address", bind(l, (struct sockaddr *)&foreign, sizeof foreign), 0);
    close(l);
    l = socket(AF_INET, SOCK_STREAM, 0);
    rc("bind_short_len", bind(l, (struct sockaddr *)&a, 4), 0);
    close(l);
    int f = open(p("f"), O_RDONLY);
    rc("connect_not_a_socket", connect(f, (struct sockaddr *)&a, sizeof a), 0);
    close(f);
    rc("connect_bad_fd", connect(999, (struct sockaddr *)&a, sizeof a), 0);

    /* UDP */
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in ua = {.sin_family = AF_INET};
    ua.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    rc("udp_bind", bind(u, (struct sockaddr *)&ua, sizeof ua), 0);
    al = sizeof ua;
    getsockname(u, (struct sockaddr *)&ua, &al);
    rc("udp_sendto_self", sendto(u, "u", 1, 0, (struct sockaddr *)&ua, sizeof ua), 1);
    rc("udp_recv", recv(u, buf, sizeof buf, 0), 1);
    rc("udp_connect", connect(u, (struct sockaddr *)&ua, sizeof ua), 0);
    struct sockaddr unspec = {.sa_family = AF_UNSPEC};
    rc("udp_connect_unspec", connect(u, &unspec, sizeof unspec), 0);
    close(u);

    /* IPv6 */
    int s6 = socket(AF_INET6, SOCK_STREAM, 0);
    rc("tcp6_socket", s6, 0);
    struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    rc("tcp6_bind_loopback", bind(s6, (struct sockaddr *)&a6, sizeof a6), 0);
    close(s6);

    /* A listening port shows in /proc/net/tcp (a symlink to self/net: the task's own). */
    l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in lp = {.sin_family = AF_INET, .sin_port = htons(7781)};
    lp.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(l, (struct sockaddr *)&lp, sizeof lp);
    listen(l, 1);
    int nt = open("/proc/net/tcp", O_RDONLY);
    if (nt < 0) {
        line("proc_net_tcp_lists_the_port", "err %s", en(errno));
    } else {
        static char tcp[65536];
        long got = 0, r;
        while ((r = read(nt, tcp + got, sizeof tcp - 1 - got)) > 0) got += r;
        tcp[got] = 0;
        line("proc_net_tcp_lists_the_port", "%d", strstr(tcp, "0100007F:1E65") != NULL);
        close(nt);
    }
    close(l);
    op("proc_net_dir", open("/proc/net", O_RDONLY | O_DIRECTORY));
    head("proc_mounts", "/proc/mounts");

    /* Families and types */
    int r = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
    rc("raw_icmp_socket", r, 0);
    close(r);
    r = socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP);
    rc("ping_socket", r, 0);
    close(r);
    r = socket(AF_NETLINK, SOCK_RAW, 0);
    rc("netlink_route_socket", r, 0);
    close(r);
    r = socket(AF_PACKET, SOCK_RAW, 0);
    rc("packet_socket", r, 0);
    close(r);
    r = socket(AF_VSOCK, SOCK_STREAM, 0);
    rc("vsock_socket", r, 0);
    close(r);
    r = socket(AF_NETLINK, SOCK_RAW, 9 /* NETLINK_AUDIT */);
    rc("netlink_audit_socket", r, 0);
    close(r);
    rc("bad_family_socket", socket(12345, SOCK_STREAM, 0), 0);
    rc("bad_type_socket", socket(AF_INET, 99, 0), 0);
}

/* Ordinary tools (busybox), one line each: "sh_NAME rc=STATUS OUTPUT". */
static void shell(void) {
    static const char *cmds[][2] = {
        {"sh_cp_missing_source", "cp /wd/missing /wd/copy"},
        {"sh_cp", "cp /etc/passwd /wd/copy && cmp /etc/passwd /wd/copy"},
        {"sh_touch_in_root", "touch /test.go && rm /test.go"},
        {"sh_touch_in_app", "mkdir -p /app && touch /app/x && ls /app"},
        {"sh_mkdir_p", "mkdir -p /wd/a/b/c && ls -d /wd/a/b/c"},
        {"sh_mv_across_dirs", "mv /wd/copy /wd/a/b/c/ && ls /wd/a/b/c"},
        {"sh_rm_r", "rm -r /wd/a && ls /wd/a"},
        {"sh_ls_dev", "ls /dev | wc -l"},
        {"sh_ls_etc", "ls /etc | wc -l"},
        {"sh_cat_missing", "cat /nonexistent"},
        {"sh_redirect_missing_dir", "echo x > /nodir/file"},
        {"sh_redirect_to_dir", "echo x > /wd"},
        {"sh_read_fd_3", "exec 3</etc/passwd; wc -l <&3 >/dev/null"},
        {"sh_pipeline", "echo c a b | tr ' ' '\\n' | sort | head -1"},
        {"sh_ping_loopback", "ping -c 1 -W 2 127.0.0.1 >/dev/null"},
        {"sh_nc_refused", "nc 127.0.0.1 1 </dev/null"},
        {"sh_exec_usr_lib_script", "mkdir -p /usr/lib && printf '#!/bin/sh\\necho ran\\n' >/usr/lib/strata-t && chmod +x /usr/lib/strata-t && /usr/lib/strata-t"},
        {"sh_exec_tmp", "mkdir -p /tmp && cp /bin/busybox /tmp/echo && /tmp/echo ran"},
        {"sh_exec_not_executable", "/etc/passwd"},
        {"sh_command_not_found", "no-such-command"},
        {"sh_id", "id"},
        {"sh_hostname_matches_uts", "test \"$(hostname)\" = \"$(cat /proc/sys/kernel/hostname)\""},
        {"sh_df_root", "df / >/dev/null"},
        {"sh_ulimit_n", "ulimit -n"},
        {"sh_kill_0", "kill -0 1"},
        {"sh_sleep_kill", "sleep 5 & kill $!; wait $!"},
        {"sh_mknod_and_use", "mknod /wd/n c 1 3 && echo x > /wd/n && cat /wd/n"},
        {"sh_mkfifo_writer_first", "mkfifo /wd/ff && (echo through >/wd/ff &) && cat /wd/ff"},
        {"sh_mkfifo_reader_first", "mkfifo /wd/fg && (cat /wd/fg > /wd/fg.out &) && echo through >/wd/fg && sleep 0.5; cat /wd/fg.out"},
        {"sh_chmod_chown", "touch /wd/o && chown 1000:1000 /wd/o && chmod 600 /wd/o && ls -ln /wd/o | cut -c1-20"},
        {"sh_su_nobody_reads", "su -s /bin/sh nobody -c 'cat /wd/root-only' 2>&1 | sed 's/.*: //'"},
        {"sh_proc_self_exe", "readlink /proc/self/exe"},
        {"sh_ls_proc_1_fd", "ls /proc/1/fd >/dev/null"},
        {"sh_devfd", "cat /dev/fd/0 </etc/hostname >/dev/null"},
    };
    for (unsigned i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        char cmd[2048];
        snprintf(cmd, sizeof cmd,
                 "out=$( (%s) 2>&1 ); rc=$?; echo \"%s rc=$rc $(echo \"$out\" | tr '\\n' ' ')\"",
                 cmds[i][1], cmds[i][0]);
        fflush(stdout);
        pid_t c = fork();
        if (c == 0) {
            execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
            _exit(127);
        }
        waitpid(c, NULL, 0);
    }
}

static void limits(void) {
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    line("nofile_limit", "%lu %lu", (unsigned long)rl.rlim_cur, (unsigned long)rl.rlim_max);
    pid_t c = fork();
    if (c == 0) {
        struct rlimit low = {.rlim_cur = 32, .rlim_max = rl.rlim_max};
        setrlimit(RLIMIT_NOFILE, &low);
        int n = 0, fd;
        while ((fd = open("/etc/passwd", O_RDONLY)) >= 0 && n < 100) n++;
        line("open_until_emfile", "opened=%d %s", n, fd < 0 ? en(errno) : "no-limit");
        op("o_path_at_limit", open("/etc/passwd", O_PATH));
        op("proc_file_at_limit", open("/proc/self/status", O_RDONLY));
        rc("socket_at_limit", socket(AF_UNIX, SOCK_STREAM, 0), 0);
        op("emulated_file_at_limit", open("/proc/version", O_RDONLY));
        close(3);
        op("one_free_again", open("/etc/passwd", O_RDONLY));
        fflush(stdout);
        _exit(0);
    }
    int st;
    waitpid(c, &st, 0);
    c = fork();
    if (c == 0) {
        struct rlimit fs = {.rlim_cur = 1000, .rlim_max = 1000};
        setrlimit(RLIMIT_FSIZE, &fs);
        signal(SIGXFSZ, SIG_IGN);
        int fd = open(p("big"), O_CREAT | O_WRONLY | O_TRUNC, 0644);
        static char z[2000];
        rc("fsize_first_write", write(fd, z, sizeof z), 1);
        rc("fsize_second_write", write(fd, z, sizeof z), 1);
        fflush(stdout);
        _exit(0);
    }
    waitpid(c, &st, 0);
}

/* On a read-only root: writes fail with EROFS, reads work. */
static void readonly(void) {
    op("ro_read", open("/etc/passwd", O_RDONLY));
    op("ro_write_existing", open("/etc/passwd", O_WRONLY));
    op("ro_creat", open("/ro-new", O_CREAT | O_WRONLY, 0644));
    op("ro_creat_missing_dir", open("/nodir/ro-new", O_CREAT | O_WRONLY, 0644));
    op("ro_trunc", open("/etc/passwd", O_RDONLY | O_TRUNC));
    op("ro_o_tmpfile", open("/", O_TMPFILE | O_RDWR, 0600));
    rc("ro_mkdir", mkdir("/ro-dir", 0755), 0);
    rc("ro_unlink", unlink("/etc/passwd"), 0);
    rc("ro_symlink", symlink("x", "/ro-link"), 0);
    rc("ro_mknod", mknod("/ro-null", S_IFCHR | 0666, makedev(1, 3)), 0);
    rc("ro_truncate", truncate("/etc/passwd", 0), 0);
    op("ro_dev_null_write", open("/dev/null", O_WRONLY));
    op("ro_open_missing", open("/missing", O_RDONLY));
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc >= 2 && strcmp(argv[1], "ro") == 0) {
        readonly();
        printf("end\n");
        return 0;
    }
    if (argc < 3) {
        fprintf(stderr, "usage: sentry-diff rw DIR | ro\n");
        return 2;
    }
    snprintf(wd, sizeof wd, "%s", argv[2]);
    if (mkdir(wd, 0755) && errno != EEXIST) {
        fprintf(stderr, "mkdir %s: %s\n", wd, strerror(errno));
        return 2;
    }
    chmod(wd, 0755);
    files();
    dirs();
    fds();
    procs();
    signals();
    sockets();
    shell();
    limits();
    printf("end\n");
    return 0;
}
