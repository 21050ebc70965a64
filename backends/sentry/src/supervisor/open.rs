//! Opens (`open`, `openat`, `openat2`, `creat`): judged on the resolved path, then left to
//! the kernel where Landlock backs the policy (`kernel_backed`), answered with an emulated
//! file, or performed here with the workload's credentials and handed over with `ADDFD`.

use super::*;

pub(super) fn flags_text(flags: i32) -> String {
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

pub(super) fn openat2_call(call: &mut Call<'_>) -> Outcome {
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
    if flags & libc::O_PATH as u64 != 0 {
        // Never CONTINUE an openat2: the kernel reads `open_how` again, so a thread of the
        // task could turn O_PATH into O_RDONLY after the check. And an O_PATH descriptor
        // cannot be handed over (ADDFD refuses it). So the answer of a kernel without
        // openat2, on which every user of it falls back to openat (whose flags are in
        // registers) or open.
        call.arg("flags", flags_text(flags as i32));
        return Outcome::Errno(libc::ENOSYS, "openat2 with O_PATH");
    }
    if word(2) != 0 {
        return resolving_open(call, a[0] as i32, a[1], flags as i32, mode as u32, word(2));
    }
    open_call(call, a[0] as i32, a[1], word(0) as i32, word(1) as u32, 0)
}

/// `openat2` with the task's own `RESOLVE_*` flags. The kernel makes the lookup as it would
/// for the task (from a duplicate of the task's directory descriptor or its working
/// directory, on a thread whose root is the task's, with the task's credentials and flags;
/// `O_PATH`, so that nothing is opened yet), so its answers are the kernel's: EXDEV for a
/// path leaving `RESOLVE_BENEATH`, ELOOP for a symlink under `RESOLVE_NO_SYMLINKS`... What it
/// found (for a file to be made: the directory it goes in) is then judged and opened as every
/// open is, by the container path the kernel gives for it, and must be the same file (else
/// EAGAIN, which openat2(2) gives for a rename that raced a lookup). Magic links on the way
/// are not followed outside `RESOLVE_BENEATH`/`RESOLVE_IN_ROOT` (which refuse them anyway):
/// meeting one there is answered as a kernel without openat2 (ENOSYS), so that the task
/// falls back to openat, which follows its own.
fn resolving_open(
    call: &mut Call<'_>,
    dirfd: i32,
    ptr: u64,
    flags: i32,
    mode: u32,
    resolve: u64,
) -> Outcome {
    use sys::{
        RESOLVE_BENEATH, RESOLVE_CACHED, RESOLVE_IN_ROOT, RESOLVE_NO_MAGICLINKS,
        RESOLVE_NO_SYMLINKS, RESOLVE_NO_XDEV,
    };
    call.arg("flags", flags_text(flags));
    call.arg("resolve", format!("{resolve:#x}"));
    let known = RESOLVE_NO_XDEV
        | RESOLVE_NO_MAGICLINKS
        | RESOLVE_NO_SYMLINKS
        | RESOLVE_BENEATH
        | RESOLVE_IN_ROOT
        | RESOLVE_CACHED;
    if resolve & !known != 0 || (resolve & RESOLVE_BENEATH != 0 && resolve & RESOLVE_IN_ROOT != 0) {
        return Outcome::Errno(libc::EINVAL, "bad openat2 resolve flags");
    }
    let tmpfile = flags & libc::O_TMPFILE == libc::O_TMPFILE;
    let creates = flags & libc::O_CREAT != 0 || tmpfile;
    if resolve & RESOLVE_CACHED != 0 && (creates || flags & libc::O_TRUNC != 0) {
        return Outcome::Errno(libc::EAGAIN, "RESOLVE_CACHED with a creating open");
    }
    // Uncached is always a right answer to RESOLVE_CACHED (the kernel's, when the lookup is
    // not in its cache, is EAGAIN).
    let resolve = resolve & !RESOLVE_CACHED;
    let scoped = resolve & (RESOLVE_BENEATH | RESOLVE_IN_ROOT) != 0;
    let lookup_resolve = if scoped {
        resolve
    } else {
        resolve | RESOLVE_NO_MAGICLINKS
    };
    // Host work first (the task's descriptors, its procfs), with the thread's own capabilities.
    let _ = sys::unpark();
    let need = if creates { Need::All } else { Need::Creds };
    let (t, root, path) = match read_task_path(call, need, ptr) {
        Ok(x) => x,
        Err(o) => return o,
    };
    let start = if dirfd == libc::AT_FDCWD {
        open_path(
            &format!("/proc/{}/cwd", t.pid),
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            0,
        )
        .map_err(|e| e as i32)
    } else {
        sys::pidfd_open(t.tgid)
            .and_then(|p| sys::pidfd_getfd(&p, dirfd))
            .map_err(|_| libc::EBADF)
    };
    let start = match start {
        Ok(f) => f,
        Err(e) => return Outcome::Errno(e, "the task's directory"),
    };
    if !call.valid() {
        return Outcome::Gone;
    }
    // `/proc/self` would name the lookup thread, which is in no pid namespace of the task's.
    let text = if path.starts_with('/') && !scoped {
        rewrite_self(&t, &path)
    } else {
        path.clone()
    };
    let lookup = |p: &str, extra: i32| -> Result<(OwnedFd, String), i32> {
        let cp = names::to_c(p)?;
        let fd = sys::in_root_of(&root, &t.creds, || {
            sys::openat2(
                start.as_raw_fd(),
                &cp,
                libc::O_PATH | libc::O_CLOEXEC | extra,
                0,
                lookup_resolve,
            )
        })
        .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
        let real = fd_path(&fd)?;
        Ok((fd, real))
    };
    // An ELOOP the task's own flags would not have given (RESOLVE_NO_SYMLINKS refuses magic
    // links too): a magic link, or a real loop, which openat then reports.
    let magic = |e: i32| {
        e == libc::ELOOP && !scoped && resolve & (RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS) == 0
    };
    let mut text = text;
    let mut found = lookup(&text, flags & (libc::O_NOFOLLOW | libc::O_DIRECTORY));
    if flags & libc::O_CREAT != 0 && !tmpfile {
        // A dangling symlink as the name: the kernel follows it (and any it leads to,
        // MAX_LINKS at most) and makes the last target, under the same resolve flags; O_EXCL
        // refuses it.
        let mut hops = 0;
        while matches!(found, Err(libc::ENOENT)) {
            let Some(target) = lookup(&text, libc::O_NOFOLLOW)
                .ok()
                .and_then(|(fd, _)| symlink_target(&fd))
            else {
                break;
            };
            if flags & libc::O_EXCL != 0 {
                return Outcome::Errno(libc::EEXIST, "O_EXCL on a symlink");
            }
            hops += 1;
            if hops > MAX_LINKS {
                return Outcome::Errno(libc::ELOOP, "too many symlinks");
            }
            text = link_destination(&text, &target);
            found = lookup(&text, flags & libc::O_DIRECTORY);
        }
    }
    let (abs, expect) = match found {
        Ok((fd, real)) => match nix::sys::stat::fstat(fd.as_raw_fd()) {
            Ok(st) => (real, Some((st.st_dev, st.st_ino))),
            Err(e) => return Outcome::Errno(e as i32, "openat2 lookup"),
        },
        Err(libc::ENOENT) if flags & libc::O_CREAT != 0 && !tmpfile => {
            // A file to make: its directory found as the task's walk would find it, the name
            // made there (a name that is no plain one exists, or fails as the kernel's would).
            let trimmed = text.trim_end_matches('/');
            if trimmed.len() != text.len() {
                return Outcome::Errno(libc::EISDIR, "open failed");
            }
            let (dir, name) = match trimmed.rsplit_once('/') {
                Some(("", n)) => ("/", n),
                Some((d, n)) => (d, n),
                None => (".", trimmed),
            };
            match lookup(dir, libc::O_DIRECTORY) {
                Ok((_, real)) => (format!("{}/{name}", real.trim_end_matches('/')), None),
                Err(e) if magic(e) => return Outcome::Errno(libc::ENOSYS, "magic link"),
                Err(e) => return Outcome::Errno(e, "openat2 lookup"),
            }
        }
        Err(e) if magic(e) => {
            return Outcome::Errno(libc::ENOSYS, "a magic link under openat2 resolve flags")
        }
        Err(e) => return Outcome::Errno(e, "openat2 lookup"),
    };
    if abs != path {
        call.arg("resolved", abs.clone());
    }
    // What was found is opened without following anything more: the lookup followed what
    // the task's flags let it follow.
    open_in_root(call, t, root, abs, flags | libc::O_NOFOLLOW, mode, expect)
}

/// The target of the symlink `fd` (an `O_PATH | O_NOFOLLOW` descriptor), or None when it is
/// not one.
fn symlink_target(fd: &OwnedFd) -> Option<String> {
    let st = nix::sys::stat::fstat(fd.as_raw_fd()).ok()?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFLNK {
        return None;
    }
    let target = nix::fcntl::readlinkat(Some(fd.as_raw_fd()), "").ok()?;
    target.into_string().ok()
}

/// Where a symlink at `link` (a path as the task wrote it) with `target` leads: an absolute
/// target as it is (the lookup's resolve flags say from where it counts), a relative one from
/// the link's directory.
fn link_destination(link: &str, target: &str) -> String {
    if target.starts_with('/') {
        return target.to_string();
    }
    match link.trim_end_matches('/').rsplit_once('/') {
        Some(("", _)) => format!("/{target}"),
        Some((dir, _)) => format!("{dir}/{target}"),
        None => target.to_string(),
    }
}

/// The flags open(2) keeps beside `O_PATH` (it drops the others; openat2(2) refuses them).
pub(super) const O_PATH_FLAGS: i32 =
    libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;

pub(super) fn open_call(
    call: &mut Call<'_>,
    dirfd: i32,
    ptr: u64,
    flags: i32,
    mode: u32,
    _r: u64,
) -> Outcome {
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
    open_in_root(call, t, root, abs, flags, mode, None)
}

/// An open of `abs` (a container path) for task `t` whose root is `root`, with `flags`,
/// judged and performed as every open is. With `expect`, the file opened must be that one
/// (device, inode), else EAGAIN.
fn open_in_root(
    call: &mut Call<'_>,
    t: Task,
    root: Rc<OwnedFd>,
    abs: String,
    flags: i32,
    mode: u32,
    expect: Option<(u64, u64)>,
) -> Outcome {
    let creates =
        flags & (libc::O_CREAT | libc::O_TRUNC) != 0 || flags & libc::O_TMPFILE == libc::O_TMPFILE;
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
    // `/dev/tty` is the opener's controlling terminal: the task's, which the supervisor (with
    // none) would answer ENXIO for. Opened by its own name in the container, judged so.
    let resolved = match &resolved {
        Resolved::At { stat: Some(st), .. } if is_dev_tty(st) && flags & libc::O_PATH == 0 => {
            let pts = match controlling_tty(&t) {
                Ok(p) => p,
                Err(e) => return Outcome::Errno(e, "no controlling terminal"),
            };
            call.arg("tty", pts.clone());
            match resolve(&t, &root, &pts, true) {
                Ok(r) => r,
                Err(e) => return Outcome::Errno(e, "resolution failed"),
            }
        }
        _ => resolved,
    };
    let real = match &resolved {
        Resolved::At { real, .. } | Resolved::OwnFd { real, .. } => real.clone(),
    };
    if real != normalize(&abs) || call.ctx.policy().record {
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
        let access = call.ctx.policy().file_access(&real);
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
    if let Some((dev, ino)) = expect {
        match nix::sys::stat::fstat(file.as_raw_fd()) {
            Ok(st) if st.st_dev == dev && st.st_ino == ino => {}
            _ => return Outcome::Errno(libc::EAGAIN, "renamed while looked up"),
        }
    }
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
pub(super) fn kernel_backed(kernel: &[Tree], resolved: &Resolved, write: bool) -> bool {
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
pub(super) fn within(p: &str, tree: &str) -> bool {
    tree == "/" || p == tree || (p.starts_with(tree) && p.as_bytes().get(tree.len()) == Some(&b'/'))
}

/// Whether `real` (in directory `dir`) is a file of `/proc/sys` on a procfs: its value may be
/// the opener's namespace's (network, IPC, UTS), so it is opened from the task's.
pub(super) fn is_namespaced_sysctl(real: &str, dir: &OwnedFd) -> bool {
    real.starts_with("/proc/sys/") && is_procfs(dir)
}

pub(super) fn is_null_device(file: &OwnedFd) -> bool {
    nix::sys::stat::fstat(file.as_raw_fd()).is_ok_and(|st| {
        SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFCHR
            && st.st_rdev == libc::makedev(1, 3)
    })
}

/// How an open that the path rules refuse is answered.
pub(super) enum Refused {
    /// No such file (and no O_CREAT): the kernel's ENOENT, not the policy's EACCES (`stat`,
    /// which is not trapped, tells as much).
    Missing,
    /// The null device, which a runtime binds over a masked path (`/proc/kcore`,
    /// `/proc/timer_list`...): it holds nothing to refuse, and is opened as under runc.
    NullDevice,
    /// The policy's EACCES.
    ByPolicy,
}

pub(super) fn refused_open(resolved: &Resolved, flags: i32) -> Refused {
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
/// The calling task, its root and the path it passes (audited); ENOENT for an empty path.
fn read_task_path(
    call: &mut Call<'_>,
    need: Need,
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
    Ok((t, root, path))
}

pub(super) fn read_open_call(
    call: &mut Call<'_>,
    need: Need,
    dirfd: i32,
    ptr: u64,
) -> Result<(Task, Rc<OwnedFd>, String), Outcome> {
    let (t, root, path) = read_task_path(call, need, ptr)?;
    let abs = match absolute(&t, dirfd, &path) {
        Ok(p) => p,
        Err(e) => return Err(Outcome::Errno(e, "cannot place a relative path")),
    };
    if !call.valid() {
        return Err(Outcome::Gone);
    }
    Ok((t, root, abs))
}

/// Whether `st` is the `/dev/tty` device (5:0).
fn is_dev_tty(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == libc::makedev(5, 0)
}

/// The container path of task `t`'s controlling terminal (its `tty_nr`, `/proc/<pid>/stat`
/// field 7): a pseudo-terminal of the container's `devpts` (majors 136-143), which is where a
/// runtime makes a container's terminal. ENXIO without one, as the kernel's `/dev/tty` says.
pub(super) fn controlling_tty(t: &Task) -> Result<String, i32> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", t.pid)).map_err(|_| libc::ESRCH)?;
    let tty_nr: u64 = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(4))
        .and_then(|f| f.parse().ok())
        .ok_or(libc::ESRCH)?;
    let (major, minor) = (
        (tty_nr >> 8) & 0xfff,
        (tty_nr & 0xff) | ((tty_nr >> 12) & 0xfff00),
    );
    match major {
        136..=143 => Ok(format!("/dev/pts/{}", (major - 136) * 256 + minor)),
        _ => Err(libc::ENXIO),
    }
}

/// A duplicate of the task's descriptor that `host` (`/proc/<tgid>[/task/<tid>]/fd/<n>`)
/// names, if it allows what `flags` ask for.
pub(super) fn own_fd_for(t: &Task, host: &str, flags: i32, write: bool) -> Result<OwnedFd, i32> {
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
pub(super) fn check_opened(file: &OwnedFd, flags: i32, nonblock: bool) -> Result<Option<u64>, i32> {
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
pub(super) fn on_procfs(dev: u64, file: &OwnedFd) -> bool {
    thread_local! {
        static PROCFS: std::cell::RefCell<HashMap<u64, bool>> = std::cell::RefCell::new(HashMap::new());
    }
    PROCFS.with(|m| *m.borrow_mut().entry(dev).or_insert_with(|| is_procfs(file)))
}

/// Finishes an open of a FIFO that must wait for its other end on a worker thread. `held`:
/// the duplicate of the task's own descriptor a reopen was judged on (the open goes through
/// it, as on the supervisor's thread, not through `/proc/<pid>/fd/N` again).
pub(super) fn fifo_wait(
    call: &mut Call<'_>,
    resolved: Resolved,
    held: Option<OwnedFd>,
    oflags: OFlag,
    mode: u32,
    creds: Creds,
    cloexec: bool,
) -> Outcome {
    defer(call, move || {
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

/// Files that would reveal the host's kernel (release, build, boot command line), each
/// shown with [`emulated_text`] instead, as `uname` is. Where the supervisor performs opens,
/// a plain read-only open of one gets a sealed memfd with that content ([`emulated_file`]);
/// where the kernel decides opens, the shim mounts a read-only file with it over each
/// (`SentryBackend::mount_emulated`).
pub(crate) const EMULATED_PATHS: [&str; 4] = [
    "/proc/version",
    "/proc/sys/kernel/osrelease",
    "/proc/sys/kernel/version",
    "/proc/cmdline",
];

/// What the sentry shows for the emulated file at `path` (one of [`EMULATED_PATHS`]).
pub(crate) fn emulated_text(path: &str) -> Option<String> {
    match path {
        "/proc/version" => Some(format!(
            "Linux version {EMULATED_RELEASE} (strata@sentry) (gcc) {EMULATED_VERSION}\n"
        )),
        "/proc/sys/kernel/osrelease" => Some(format!("{EMULATED_RELEASE}\n")),
        "/proc/sys/kernel/version" => Some(format!("{EMULATED_VERSION}\n")),
        "/proc/cmdline" => Some(format!("BOOT_IMAGE=/boot/vmlinuz-{EMULATED_RELEASE} ro\n")),
        _ => None,
    }
}

/// The emulated content for an open of `real` with `flags`, if it is one of
/// [`EMULATED_PATHS`] and a plain read-only open. Other opens of them go to the kernel as
/// usual (which refuses writes).
pub(super) fn emulated_file(real: &str, flags: i32) -> Option<String> {
    let plain_read = flags & libc::O_ACCMODE == libc::O_RDONLY
        && flags & (libc::O_PATH | libc::O_CREAT | libc::O_TRUNC | libc::O_DIRECTORY) == 0;
    if !plain_read {
        return None;
    }
    emulated_text(real)
}

/// A read-only descriptor of a sealed memfd holding `text`.
pub(super) fn memfd_with(name: &str, text: &str) -> Result<OwnedFd, Errno> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_emulated_path_has_its_text() {
        for p in EMULATED_PATHS {
            assert!(
                emulated_text(p)
                    .is_some_and(|t| t.contains(EMULATED_RELEASE) || t.contains(EMULATED_VERSION)),
                "{p}"
            );
            assert_eq!(emulated_file(p, libc::O_RDONLY), emulated_text(p));
            assert_eq!(emulated_file(p, libc::O_WRONLY), None);
        }
        assert_eq!(emulated_text("/proc/meminfo"), None);
    }

    #[test]
    fn a_symlink_leads_from_its_own_directory_or_from_a_root() {
        assert_eq!(link_destination("a/b/link", "t"), "a/b/t");
        assert_eq!(link_destination("link", "t"), "t");
        assert_eq!(link_destination("/link", "t"), "/t");
        assert_eq!(link_destination("/d/link", "../t"), "/d/../t");
        assert_eq!(link_destination("a/link", "/abs/t"), "/abs/t");
    }

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
}
