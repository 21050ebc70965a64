//! Path resolution for the supervisor: where a task's path leads inside the container's root,
//! resolved so that what is judged is what is then opened. Every component but the last is
//! resolved by the kernel (`openat2` with `RESOLVE_IN_ROOT` on a descriptor of the tasks'
//! root), the last one here (symlinks followed by their text, at most [`MAX_LINKS`]), so that
//! the caller judges it and opens it with `O_NOFOLLOW` on the directory's descriptor, with no
//! window for a symlink swap. `/proc/self` and friends are rewritten to the task's own pid.
//! No container is needed to test it: a directory stands for the root (tests below).

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use nix::fcntl::AtFlags;
use nix::sys::stat::SFlag;

use super::{Task, MAX_LINKS, PROC_SUPER_MAGIC};
use crate::names;
use crate::policy::normalize;
use crate::sys;

pub(super) fn readlink(p: &str) -> Result<String, i32> {
    std::fs::read_link(p)
        .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
        .map(|l| names::from_vec(l.into_os_string().into_vec()))
}

/// The container path a descriptor of the supervisor refers to. The container's root is out
/// of the supervisor's reach, so the kernel prints it relative to the container's root.
pub(super) fn fd_path(fd: &OwnedFd) -> Result<String, i32> {
    readlink(&format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// The absolute container path the task means by (`dirfd`, `path`).
pub(super) fn absolute(t: &Task, dirfd: i32, path: &str) -> Result<String, i32> {
    if path.starts_with('/') {
        return Ok(path.to_string());
    }
    let base = if dirfd == libc::AT_FDCWD {
        readlink(&format!("/proc/{}/cwd", t.pid))?
    } else {
        readlink(&format!("/proc/{}/fd/{dirfd}", t.pid)).map_err(|_| libc::EBADF)?
    };
    if !base.starts_with('/') {
        return Err(libc::ENOTDIR);
    }
    if base.ends_with(" (deleted)") {
        return Err(libc::ENOENT);
    }
    if path.is_empty() {
        return Ok(base);
    }
    Ok(format!("{}/{path}", base.trim_end_matches('/')))
}

/// `/proc/self` and `/proc/thread-self` name the supervisor when it resolves them: rewrite
/// them to the task's own pid in its pid namespace.
pub(super) fn rewrite_self(t: &Task, path: &str) -> String {
    let norm = normalize(path);
    let mut it = norm.splitn(4, '/').skip(1);
    if it.next() != Some("proc") {
        return path.to_string();
    }
    let who = match it.next() {
        Some("self") => t.ns_tgid.to_string(),
        Some("thread-self") => format!("{}/task/{}", t.ns_tgid, t.ns_tid),
        // A symlink to `self/net`, and a directory on the way: the kernel would follow it
        // to the supervisor's own (or, outside the task's pid namespace, no) process.
        Some("net") => {
            return match it.next() {
                Some(rest) => format!("/proc/{}/net/{rest}", t.ns_tgid),
                None => format!("/proc/{}/net", t.ns_tgid),
            }
        }
        _ => return path.to_string(),
    };
    match it.next() {
        Some(rest) => format!("/proc/{who}/{rest}"),
        None => format!("/proc/{who}"),
    }
}

/// The task's own `/proc/<pid>/root` and `/proc/<pid>/cwd` magic links (its pid, or its
/// own thread under `task/`, after [`rewrite_self`]) followed as the kernel follows them: to
/// the task's root (the container's `/`, where the supervisor resolves) and to its working
/// directory. Not when the link is the last component and is not to be followed (`O_NOFOLLOW`
/// meets the link itself, as before). Another process's links stay as they are: the kernel
/// checks ptrace access to that process, and under the sentry Landlock's rule too, which the
/// supervisor cannot ask for it (the walk then stops at the magic link: ELOOP).
pub(super) fn own_links(t: &Task, path: &str, follow: bool) -> Result<String, i32> {
    let norm = normalize(path);
    let comps: Vec<&str> = norm.split('/').filter(|c| !c.is_empty()).collect();
    let own = t.ns_tgid.to_string();
    let tid = t.ns_tid.to_string();
    let at = match comps.as_slice() {
        ["proc", p, "root" | "cwd", ..] if *p == own => 2,
        ["proc", p, "task", x, "root" | "cwd", ..] if *p == own && *x == tid => 4,
        _ => return Ok(path.to_string()),
    };
    let rest = &comps[at + 1..];
    if rest.is_empty() && !follow {
        return Ok(path.to_string());
    }
    let base = if comps[at] == "root" {
        "/".to_string()
    } else {
        let cwd = readlink(&format!("/proc/{}/cwd", t.pid))?;
        if !cwd.starts_with('/') || cwd.ends_with(" (deleted)") {
            return Err(libc::ENOENT);
        }
        cwd
    };
    Ok(if rest.is_empty() {
        base
    } else {
        format!("{}/{}", base.trim_end_matches('/'), rest.join("/"))
    })
}

/// [`rewrite_self`] and [`own_links`] until neither changes the path
/// (`/proc/self/root/proc/self/root/...`), at most [`MAX_LINKS`] times (then ELOOP).
fn task_path(t: &Task, path: &str, follow: bool) -> Result<String, i32> {
    let mut path = path.to_string();
    for _ in 0..MAX_LINKS {
        let next = own_links(t, &rewrite_self(t, &path), follow)?;
        if next == path {
            return Ok(path);
        }
        path = next;
    }
    Err(libc::ELOOP)
}

pub(super) fn is_procfs(fd: &OwnedFd) -> bool {
    nix::sys::statfs::fstatfs(fd)
        .map(|s| s.filesystem_type().0 == PROC_SUPER_MAGIC)
        .unwrap_or(false)
}

/// Where a path ends after resolution: a directory of the container and a name in it.
pub(super) enum Resolved {
    At {
        dir: OwnedFd,
        name: String,
        real: String,
        /// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)` as resolution saw it (None: no such
        /// file, or `name` is `.`). Only for decisions taken before opening: what is
        /// opened is checked again on its descriptor.
        stat: Option<libc::stat>,
    },
    /// A `/proc/<own pid>/fd/N` magic link: reopen the task's own descriptor.
    OwnFd { host: String, real: String },
}

/// Resolves `path` (absolute, in the container) inside the container's root: every
/// component but the last by the kernel (openat2 with RESOLVE_IN_ROOT), the last one here
/// so that the caller can open it with O_NOFOLLOW (no race on symlinks) and judge it first.
pub(super) fn resolve(t: &Task, root: &OwnedFd, path: &str, follow: bool) -> Result<Resolved, i32> {
    let mut path = task_path(t, path, follow)?;
    for _ in 0..MAX_LINKS {
        let trimmed = path.trim_end_matches('/');
        let (dir, name) = match trimmed.rfind('/') {
            Some(i) => (&trimmed[..i], &trimmed[i + 1..]),
            None => ("", trimmed),
        };
        let (dir, name) = if matches!(name, "" | "." | "..") {
            (if trimmed.is_empty() { "/" } else { trimmed }, ".")
        } else {
            (if dir.is_empty() { "/" } else { dir }, name)
        };
        let (dfd, dreal) = open_dir(root, dir)?;
        let real = if name == "." {
            dreal.clone()
        } else {
            normalize(&format!("{dreal}/{name}"))
        };
        let mut stat = None;
        let cname = names::to_c(name)?;
        if name != "." {
            if let Ok(st) = nix::sys::stat::fstatat(
                Some(dfd.as_raw_fd()),
                cname.as_c_str(),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            ) {
                stat = Some(st);
                if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK && follow
                {
                    if is_procfs(&dfd) {
                        // A magic link. The task's own descriptors are reopened through
                        // the host's procfs (the kernel's rules for reopening apply); other
                        // magic links are followed by their text, inside the container.
                        let parts: Vec<&str> = dreal.split('/').collect();
                        let own = |p: &str| p == t.ns_tgid.to_string();
                        let fd_dir = match parts.as_slice() {
                            ["", "proc", p, "fd"] if own(p) => Some(format!("/proc/{}/fd", t.tgid)),
                            ["", "proc", p, "task", tid, "fd"] if own(p) => {
                                let host_tid = if *tid == t.ns_tid.to_string() {
                                    t.pid
                                } else {
                                    return Err(libc::EACCES);
                                };
                                Some(format!("/proc/{}/task/{host_tid}/fd", t.tgid))
                            }
                            ["", "proc", _, "fd"] | ["", "proc", _, "task", _, "fd"] => {
                                return Err(libc::EACCES)
                            }
                            _ => None,
                        };
                        if let Some(d) = fd_dir {
                            let host = format!("{d}/{name}");
                            let target = readlink(&host)?;
                            return Ok(Resolved::OwnFd { host, real: target });
                        }
                    }
                    let target = nix::fcntl::readlinkat(Some(dfd.as_raw_fd()), cname.as_c_str())
                        .map_err(|e| e as i32)?;
                    let target = names::from_bytes(target.as_bytes());
                    let target = if target.starts_with('/') {
                        target
                    } else {
                        format!("{dreal}/{target}")
                    };
                    path = task_path(t, &target, follow)?;
                    continue;
                }
            }
        }
        return Ok(Resolved::At {
            dir: dfd,
            name: name.to_string(),
            real,
            stat,
        });
    }
    Err(libc::ELOOP)
}

/// Opens directory `dir` (absolute, in the container) inside the container's root: a
/// descriptor of it and the container path it has. Without a symlink on the way (the common
/// case, tried first: RESOLVE_NO_SYMLINKS) that path is `dir` itself, normalised (`..` taken
/// lexically is what the kernel did, every component being a real directory); otherwise the
/// kernel follows the symlinks (RESOLVE_IN_ROOT keeps them inside the root) and the path is
/// read back from the descriptor.
pub(super) fn open_dir(root: &OwnedFd, dir: &str) -> Result<(OwnedFd, String), i32> {
    let cdir = names::to_c(dir)?;
    let open = |resolve| {
        sys::openat2(
            root.as_raw_fd(),
            &cdir,
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            0,
            sys::RESOLVE_IN_ROOT | resolve,
        )
        .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
    };
    match open(sys::RESOLVE_NO_SYMLINKS) {
        Ok(fd) => Ok((fd, normalize(dir))),
        Err(libc::ELOOP) => {
            let fd = open(sys::RESOLVE_NO_MAGICLINKS)?;
            let real = fd_path(&fd)?;
            Ok((fd, real))
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;
    use std::path::PathBuf;

    use super::*;
    use crate::sys::Creds;

    fn task() -> Task {
        Task {
            pid: 4000,
            tgid: 4000,
            ns_tgid: 7,
            ns_tid: 9,
            ppid: 1,
            threads: 1,
            creds: Creds::default(),
        }
    }

    /// A directory standing for a container's root (with `/etc/f` in it), removed on drop.
    struct Root {
        path: PathBuf,
        fd: OwnedFd,
    }

    impl Root {
        fn new(name: &str) -> Root {
            let path =
                std::env::temp_dir().join(format!("strata-paths-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(path.join("etc")).unwrap();
            std::fs::write(path.join("etc/f"), "f").unwrap();
            let fd = std::fs::File::open(&path).unwrap().into();
            Root { path, fd }
        }

        fn resolve(&self, p: &str, follow: bool) -> Result<(String, Option<u32>), i32> {
            match resolve(&task(), &self.fd, p, follow)? {
                Resolved::At { real, stat, .. } => {
                    Ok((real, stat.map(|s| s.st_mode & libc::S_IFMT)))
                }
                Resolved::OwnFd { .. } => panic!("{p}: not an own descriptor"),
            }
        }
    }

    impl Drop for Root {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }

    const REG: Option<u32> = Some(libc::S_IFREG);

    #[test]
    fn self_is_rewritten() {
        let t = task();
        assert_eq!(rewrite_self(&t, "/proc/self/status"), "/proc/7/status");
        assert_eq!(
            rewrite_self(&t, "/proc/thread-self/comm"),
            "/proc/7/task/9/comm"
        );
        assert_eq!(rewrite_self(&t, "/proc/self"), "/proc/7");
        assert_eq!(rewrite_self(&t, "/proc/selfish"), "/proc/selfish");
        assert_eq!(rewrite_self(&t, "/proc/net/tcp"), "/proc/7/net/tcp");
        assert_eq!(rewrite_self(&t, "/proc/net"), "/proc/7/net");
        assert_eq!(rewrite_self(&t, "/proc/network"), "/proc/network");
        assert_eq!(rewrite_self(&t, "/etc/self"), "/etc/self");
    }

    #[test]
    fn the_tasks_own_root_and_cwd_links_are_followed() {
        let t = task();
        let me = std::process::id();
        let t_here = Task { pid: me, ..task() };
        assert_eq!(
            own_links(&t, "/proc/7/root/etc/f", true),
            Ok("/etc/f".into())
        );
        assert_eq!(
            own_links(&t, "/proc/7/root/etc/f", false),
            Ok("/etc/f".into())
        );
        assert_eq!(own_links(&t, "/proc/7/root", true), Ok("/".into()));
        // The link itself, not followed: left for O_NOFOLLOW to meet.
        assert_eq!(
            own_links(&t, "/proc/7/root", false),
            Ok("/proc/7/root".into())
        );
        assert_eq!(
            own_links(&t, "/proc/7/task/9/root/x", true),
            Ok("/x".into())
        );
        // Another thread's, another process's, and names that only look alike: unchanged.
        assert_eq!(
            own_links(&t, "/proc/7/task/8/root/x", true),
            Ok("/proc/7/task/8/root/x".into())
        );
        assert_eq!(
            own_links(&t, "/proc/1/root/etc/f", true),
            Ok("/proc/1/root/etc/f".into())
        );
        assert_eq!(
            own_links(&t, "/proc/7/rooted", true),
            Ok("/proc/7/rooted".into())
        );
        assert_eq!(
            own_links(&t, "/srv/proc/7/root", true),
            Ok("/srv/proc/7/root".into())
        );
        // cwd: the working directory as the host's procfs names it (here, this test's).
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            own_links(&t_here, "/proc/7/cwd/a/b", true),
            Ok(format!(
                "{}/a/b",
                cwd.display().to_string().trim_end_matches('/')
            ))
        );
        // And through resolve, from a root without any /proc: /proc/self/root/etc/f is /etc/f.
        let r = Root::new("ownroot");
        assert_eq!(
            r.resolve("/proc/self/root/etc/f", true),
            Ok(("/etc/f".into(), REG))
        );
        assert_eq!(
            r.resolve("/proc/thread-self/root/etc/f", true),
            Ok(("/etc/f".into(), REG))
        );
    }

    #[test]
    fn plain_missing_and_dot_dot_above_the_root() {
        let r = Root::new("plain");
        assert_eq!(r.resolve("/etc/f", true), Ok(("/etc/f".into(), REG)));
        assert_eq!(r.resolve("/etc/none", true), Ok(("/etc/none".into(), None)));
        assert_eq!(r.resolve("/none/f", true), Err(libc::ENOENT));
        // `..` never leaves the root, as for the task's own walk.
        assert_eq!(r.resolve("/../../etc/f", true), Ok(("/etc/f".into(), REG)));
        assert_eq!(
            r.resolve("/etc/../../../etc/f", true),
            Ok(("/etc/f".into(), REG))
        );
        assert_eq!(r.resolve("/etc/", true).map(|x| x.0), Ok("/etc".into()));
        assert_eq!(r.resolve("/", true).map(|x| x.0), Ok("/".into()));
    }

    #[test]
    fn symlinks_are_followed_inside_the_root_and_loops_end() {
        let r = Root::new("links");
        symlink("/etc/f", r.path.join("abs")).unwrap();
        symlink("../../../../../etc/f", r.path.join("etc/up")).unwrap();
        symlink("/etc/passwd", r.path.join("host")).unwrap();
        symlink("b", r.path.join("a")).unwrap();
        symlink("a", r.path.join("b")).unwrap();
        symlink("etc", r.path.join("ldir")).unwrap();
        assert_eq!(r.resolve("/abs", true), Ok(("/etc/f".into(), REG)));
        assert_eq!(r.resolve("/etc/up", true), Ok(("/etc/f".into(), REG)));
        // An absolute target is the container's path, never the host's /etc/passwd.
        assert_eq!(r.resolve("/host", true), Ok(("/etc/passwd".into(), None)));
        // Not followed: the link itself is judged (and opened with O_NOFOLLOW).
        assert_eq!(
            r.resolve("/abs", false),
            Ok(("/abs".into(), Some(libc::S_IFLNK)))
        );
        assert_eq!(r.resolve("/a", true), Err(libc::ELOOP));
        assert_eq!(r.resolve("/a/x", true), Err(libc::ELOOP));
        // A link on the way is the kernel's to follow (RESOLVE_IN_ROOT); the path is read
        // back from the descriptor, here relative to the supervisor's own root (inside a
        // container, to the container's).
        let (real, st) = r.resolve("/ldir/f", true).unwrap();
        assert!(real.ends_with("/etc/f"), "{real}");
        assert_eq!(st, REG);
    }

    #[test]
    fn long_paths_nul_and_names_that_are_not_utf8() {
        let r = Root::new("names");
        let long = format!("/{}", "a/".repeat(3000));
        assert_eq!(r.resolve(&long, true), Err(libc::ENAMETOOLONG));
        assert!(r.resolve("/etc/f\0/x", true).is_err());
        std::fs::write(
            r.path
                .join("etc")
                .join(std::ffi::OsStr::from_bytes(b"caf\xe9")),
            "x",
        )
        .unwrap();
        let name = names::from_bytes(b"/etc/caf\xe9");
        assert_eq!(r.resolve(&name, true), Ok((name.clone(), REG)));
        assert_eq!(
            r.resolve(&names::from_bytes(b"/etc/caf\xff"), true),
            Ok((names::from_bytes(b"/etc/caf\xff"), None))
        );
    }

    /// Another thread swaps symlinks (a file link, and a directory link on the way) between
    /// targets inside the root and targets meant to lead out of it (absolute host paths,
    /// `..` runs) while paths through them are resolved and opened the caller's way
    /// (`O_NOFOLLOW` on the returned directory): no open ever reaches the file outside.
    #[test]
    fn a_symlink_swapped_during_resolution_never_leads_out_of_the_root() {
        use std::os::unix::fs::MetadataExt;
        use std::sync::atomic::{AtomicBool, Ordering};
        let r = Root::new("swap");
        let outside = r
            .path
            .with_file_name(format!("strata-paths-outside-{}", std::process::id()));
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("f"), "secret").unwrap();
        let secret_ino = std::fs::metadata(outside.join("f")).unwrap().ino();
        let out = outside.display().to_string();
        let up = format!("../../../../..{out}");
        let file_targets = ["/etc/f".to_string(), format!("{out}/f"), format!("{up}/f")];
        let dir_targets = ["/etc".to_string(), out.clone(), up.clone()];
        let stop = AtomicBool::new(false);
        let opened = std::thread::scope(|s| {
            s.spawn(|| {
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    for (link, targets) in [("flink", &file_targets), ("dlink", &dir_targets)] {
                        let tmp = r.path.join(format!("{link}.tmp"));
                        let _ = std::fs::remove_file(&tmp);
                        symlink(&targets[i % targets.len()], &tmp).unwrap();
                        std::fs::rename(&tmp, r.path.join(link)).unwrap();
                    }
                    i += 1;
                }
            });
            // Stops the swapper however this loop ends (a failed assertion included), or the
            // scope would wait for it for ever.
            struct Stop<'a>(&'a AtomicBool);
            impl Drop for Stop<'_> {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::Relaxed);
                }
            }
            let _stop = Stop(&stop);
            let mut opened = 0;
            for _ in 0..20_000 {
                for p in ["/flink", "/dlink/f"] {
                    let Ok(Resolved::At { dir, name, .. }) = resolve(&task(), &r.fd, p, true)
                    else {
                        continue;
                    };
                    let Ok(cname) = names::to_c(&name) else {
                        continue;
                    };
                    let Ok(fd) = nix::fcntl::openat(
                        Some(dir.as_raw_fd()),
                        cname.as_c_str(),
                        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_NOFOLLOW,
                        nix::sys::stat::Mode::empty(),
                    ) else {
                        continue;
                    };
                    let st = nix::sys::stat::fstat(fd).unwrap();
                    let _ = nix::unistd::close(fd);
                    assert_ne!(
                        st.st_ino, secret_ino,
                        "{p} reached the file outside the root"
                    );
                    opened += 1;
                }
            }
            opened
        });
        let _ = std::fs::remove_dir_all(&outside);
        // The swaps must not have starved the test: some opens went through (to /etc/f).
        assert!(opened > 100, "only {opened} opens got through");
    }
}
