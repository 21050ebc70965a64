//! Landlock for the workload: a second, kernel-enforced wall behind the supervisor's path
//! rules, installed by the sentry's pre-exec hook in every container process (init and exec'd
//! ones) right before its filter, inside the container's mount namespace.
//!
//! What it protects, plainly: the supervisor performs the workload's opens itself, in the shim,
//! which Landlock does not restrict (and a descriptor the supervisor injects carries no Landlock
//! restriction either). Landlock restricts what the workload still does *itself* with paths:
//! the kernel's own open of an exec'd file and its ELF interpreter (after the supervisor's
//! CONTINUE), `mkdir`, `unlink`, `rmdir`, `rename`, `link`, `symlink`, `mknod`, `truncate`,
//! and binding Unix sockets. It does not restrict `stat`, `readlink`, `chdir`, `chmod`, `chown`
//! or `utimes`. See docs/sentry.md.
//!
//! The rules (union along the path, as Landlock combines them):
//! - the container's `/`: read, and write unless `root.readonly`;
//! - each mount of the spec: read, and write unless mounted `ro`;
//! - execute: beneath the policy's exec allowlist and the usual ELF-interpreter directories,
//!   or everywhere in recording mode (the supervisor still judges every exec).
//!
//! Creating device nodes goes with write (as under runc, where `CAP_MKNOD` lets `mknod`
//! succeed and the device cgroup refuses the open): every open is the supervisor's, which
//! opens only the default devices. Not handled (left to the supervisor and the device
//! cgroup): device ioctls, and TCP ports (the supervisor judges addresses, which Landlock
//! cannot).
//!
//! Anything outside the container's root and mounts (another mount namespace reached through
//! `/proc/<pid>/root` or `/proc/<pid>/cwd`, a directory descriptor leaked in) gets nothing.
//!
//! **Compiled from the policy** (issue 13): where [`compile`] can, the rules above are replaced
//! by the policy's own: read (and write) on each tree the policy allows uniformly
//! ([`Policy::kernel_trees`]), execute and read-file on the exec allowlist and the loader
//! directories that the policy allows to read uniformly, nothing else (no device nodes made
//! anywhere). Every right Landlock then grants is one the policy grants on every path beneath,
//! so the supervisor may leave an open of those trees to the kernel (answer it CONTINUE):
//! whatever the task's path buffer says by the time the kernel reads it, what the kernel
//! reaches with that access is allowed by the policy (docs/sentry.md, "Kernel-enforced
//! opens"). The hook tells the supervisor which of these trees it really granted, with a
//! fully enforced ruleset, in the message that carries its notification fd.

use landlock::{
    Access, AccessFs, BitFlags, PathBeneath, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus, ABI,
};
use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use libcontainer::oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use crate::policy::{Access as PolicyAccess, Policy};

/// Annotation: the exec allowlist (JSON array of container paths), or `"*"` for everywhere.
pub const EXEC_ANNOTATION: &str = "strata.dev/sentry-landlock-exec";

/// The newest ABI whose rights this module asks for; older kernels get what they support
/// (best effort), newer ones add nothing these rules use.
pub const TARGET_ABI: ABI = ABI::V7;

/// Where ELF interpreters (`ld-linux*.so`) live: the kernel opens them for exec too.
const LOADER_DIRS: &[&str] = &[
    "/lib",
    "/lib64",
    "/lib32",
    "/usr/lib",
    "/usr/lib64",
    "/usr/lib32",
];

fn handled() -> BitFlags<AccessFs> {
    AccessFs::from_all(TARGET_ABI) & !AccessFs::IoctlDev
}

fn read() -> BitFlags<AccessFs> {
    AccessFs::ReadFile | AccessFs::ReadDir
}

fn write() -> BitFlags<AccessFs> {
    AccessFs::from_write(TARGET_ABI) & !AccessFs::IoctlDev
}

/// Annotation: the kernel decides every open (`Policy::kernel_opens`), so the filter traps
/// none, and a process that Landlock does not restrict must not start (the hook fails it).
pub const KERNEL_OPENS_ANNOTATION: &str = "strata.dev/sentry-kernel-opens";

/// Annotation: the ruleset compiled from the policy ([`Compiled`], JSON), where there is one;
/// it then replaces the rules from the spec.
pub const COMPILED_ANNOTATION: &str = "strata.dev/sentry-landlock-compiled";

/// A tree that a compiled ruleset grants: read, and write too if `write`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    pub path: String,
    pub write: bool,
}

/// A ruleset compiled from a policy: every right in it is one the policy grants on every path
/// beneath the rule's path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compiled {
    /// Read (and write) trees.
    pub trees: Vec<Tree>,
    /// Execute and read-file: the exec allowlist and the loader directories the policy lets
    /// be read.
    pub exec: Vec<String>,
}

/// The policy as a Landlock ruleset that grants nothing the policy refuses, if it can be one:
/// not for the recording policy, nor for one whose exec allowlist reaches beyond the trees it
/// lets be read uniformly (the default policy's `/`: the kernel's exec needs read-file on the
/// program, so such a ruleset would grant reads the policy refuses, docs/sentry.md).
pub fn compile(policy: &Policy) -> Option<Compiled> {
    let exec = policy.exec_prefixes()?;
    if exec.iter().any(|p| policy.kernel_access(p).is_none()) {
        return None;
    }
    let trees = policy
        .kernel_trees()
        .into_iter()
        .map(|(path, a)| Tree {
            path,
            write: a == PolicyAccess::ReadWrite,
        })
        .collect();
    let loaders = LOADER_DIRS
        .iter()
        .filter(|d| policy.kernel_access(d).is_some())
        .map(|d| d.to_string());
    Some(Compiled {
        trees,
        exec: exec.into_iter().chain(loaders).collect(),
    })
}

/// The rights an open that creates nothing uses: these a compiled ruleset grants only as the
/// policy does (reading, writing and truncating a file; listing a directory).
fn open_rights() -> BitFlags<AccessFs> {
    read() | AccessFs::WriteFile | AccessFs::Truncate
}

/// Write rights that no such open uses (making files, directories, symlinks, FIFOs and
/// sockets, removing, renaming and linking): a compiled ruleset keeps them where the spec's
/// rules put them, so that `mkdir`, `unlink`, `mv`... work as before (moving a file into a
/// directory needs the right to make one there). So an open that creates (`O_CREAT`) is never
/// left to the kernel. Device nodes are never made under a compiled ruleset.
fn other_write_rights() -> BitFlags<AccessFs> {
    write() & !open_rights() & !(AccessFs::MakeChar | AccessFs::MakeBlock)
}

/// The compiled ruleset for `spec` as (container path, access): the policy's trees and exec
/// directories, and the spec's rules for the rights no open uses.
fn compiled_rules(c: &Compiled, spec: &Spec) -> Vec<(String, BitFlags<AccessFs>)> {
    let tree = |t: &Tree| {
        if t.write {
            read() | (write() & !(AccessFs::MakeChar | AccessFs::MakeBlock))
        } else {
            read()
        }
    };
    let others = rules(spec, Some(&[]))
        .into_iter()
        .map(|(p, a)| (p, a & other_write_rights()))
        .filter(|(_, a)| !a.is_empty());
    c.trees
        .iter()
        .map(|t| (t.path.clone(), tree(t)))
        .chain(
            c.exec
                .iter()
                .map(|p| (p.clone(), AccessFs::Execute | AccessFs::ReadFile)),
        )
        .chain(others)
        .collect()
}

/// `path` opened for a rule (`O_PATH`); with `no_symlinks`, only if no symlink is on the way:
/// a compiled rule must stand on the path the policy names, not wherever a link in the image
/// points.
fn open_rule_path(path: &str, no_symlinks: bool) -> Option<OwnedFd> {
    let c = CString::new(path).ok()?;
    let resolve = if no_symlinks {
        crate::sys::RESOLVE_NO_SYMLINKS
    } else {
        0
    };
    crate::sys::openat2(
        libc::AT_FDCWD,
        &c,
        libc::O_PATH | libc::O_CLOEXEC,
        0,
        resolve,
    )
    .ok()
}

/// The exec allowlist as the hook reads it back from the annotation: `None` for everywhere.
pub fn exec_annotation(allow: Option<&[String]>) -> String {
    match allow {
        None => "\"*\"".into(),
        Some(a) => serde_json::to_string(a).unwrap_or_else(|_| "[]".into()),
    }
}

/// The rules for `spec`, as (container path, access).
fn rules(spec: &Spec, exec: Option<&[String]>) -> Vec<(String, BitFlags<AccessFs>)> {
    let ro_root = spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false);
    let mut out = vec![(
        "/".to_string(),
        if ro_root { read() } else { read() | write() },
    )];
    for m in spec.mounts().iter().flatten() {
        let ro = m
            .options()
            .iter()
            .flatten()
            .any(|o| o == "ro" || o == "rro");
        let dest = m.destination().to_string_lossy().into_owned();
        out.push((dest, if ro { read() } else { read() | write() }));
    }
    match exec {
        None => out.push(("/".into(), AccessFs::Execute.into())),
        Some(list) => {
            for p in list
                .iter()
                .map(String::as_str)
                .chain(LOADER_DIRS.iter().copied())
            {
                out.push((p.to_string(), AccessFs::Execute | AccessFs::ReadFile));
            }
        }
    }
    out
}

/// Rules for the standard streams this process holds that are FIFOs or regular files: the
/// right to reopen each (`/dev/stdout`, `/proc/self/fd/1`) for no more than the descriptor
/// allows, read or write (and truncate a regular file), as the supervisor reopens a task's own
/// descriptors where it performs opens. containerd's FIFOs lie outside the container's root,
/// where nothing else is granted; a pipe or socket needs no rule (Landlock does not judge
/// opens of them), and a terminal is the container's own `/dev/pts`.
fn stdio_rules(streams: [BorrowedFd<'_>; 3]) -> Vec<(BorrowedFd<'_>, BitFlags<AccessFs>)> {
    let mut out = Vec::new();
    for fd in streams {
        let Ok(st) = nix::sys::stat::fstat(fd.as_raw_fd()) else {
            continue;
        };
        let fmt = st.st_mode & libc::S_IFMT;
        if fmt != libc::S_IFIFO && fmt != libc::S_IFREG {
            continue;
        }
        // An anonymous pipe is a FIFO too, on the kernel's internal pipefs, which takes no
        // rule (EBADFD).
        const PIPEFS_MAGIC: i64 = 0x5049_5045;
        if nix::sys::statfs::fstatfs(fd).map_or(true, |f| f.filesystem_type().0 == PIPEFS_MAGIC) {
            continue;
        }
        let Ok(fl) = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL) else {
            continue;
        };
        if fl & libc::O_PATH != 0 {
            continue;
        }
        let write = if fmt == libc::S_IFREG {
            AccessFs::WriteFile | AccessFs::Truncate
        } else {
            AccessFs::WriteFile.into()
        };
        let access = match fl & libc::O_ACCMODE {
            libc::O_RDONLY => AccessFs::ReadFile.into(),
            libc::O_WRONLY => write,
            _ => write | AccessFs::ReadFile,
        };
        out.push((fd, access));
    }
    out
}

/// What the hook installed.
pub struct Applied {
    /// The trees of a compiled ruleset that this process really got (their paths existed,
    /// with no symlink on the way), when the ruleset is fully enforced: the opens the
    /// supervisor may leave to the kernel. `None` otherwise.
    pub kernel_trees: Option<Vec<Tree>>,
    /// Whether Landlock restricts this process at all (fully or partly: a kernel whose ABI
    /// lacks some right still confines reads and writes to the container's root and mounts,
    /// and keeps other domains' `/proc/<pid>/root` out).
    pub enforced: bool,
}

/// Restricts this process (and what it execs) to the container's root and mounts, or to the
/// policy's compiled ruleset where the spec carries one. Paths that do not exist in this
/// container are skipped; a kernel without Landlock leaves the process unrestricted (`strata
/// check` says so).
pub fn apply(spec: &Spec) -> Result<Applied, String> {
    let ann = spec.annotations().clone().unwrap_or_default();
    let exec: Option<Vec<String>> = match ann.get(EXEC_ANNOTATION).map(String::as_str) {
        Some("\"*\"") => None,
        Some(v) => Some(
            serde_json::from_str(v).map_err(|e| format!("sentry: bad {EXEC_ANNOTATION}: {e}"))?,
        ),
        None => return Err(format!("sentry: no {EXEC_ANNOTATION} for this process")),
    };
    let compiled: Option<Compiled> = match ann.get(COMPILED_ANNOTATION) {
        Some(v) => Some(
            serde_json::from_str(v)
                .map_err(|e| format!("sentry: bad {COMPILED_ANNOTATION}: {e}"))?,
        ),
        None => None,
    };
    let mut ruleset = Ruleset::default()
        .handle_access(handled())
        .and_then(|r| r.create())
        .map_err(|e| format!("sentry: Landlock ruleset: {e}"))?;
    let mut granted = Vec::new();
    let rules = match &compiled {
        Some(c) => compiled_rules(c, spec),
        None => rules(spec, exec.as_deref()),
    };
    for (path, access) in rules {
        let Some(fd) = open_rule_path(&path, compiled.is_some()) else {
            continue;
        };
        // A rule on a file takes file rights only: the crate would narrow the others itself,
        // and then count the ruleset as only partly enforced.
        let is_dir = nix::sys::stat::fstat(fd.as_raw_fd())
            .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR);
        let access = if is_dir {
            access
        } else {
            access & AccessFs::from_file(TARGET_ABI)
        };
        if access.is_empty() {
            continue;
        }
        ruleset = ruleset
            .add_rule(PathBeneath::new(&fd, access))
            .map_err(|e| format!("sentry: Landlock rule for {path}: {e}"))?;
        if let Some(t) = compiled
            .as_ref()
            .and_then(|c| c.trees.iter().find(|t| t.path == path))
        {
            if !granted.contains(t) {
                granted.push(t.clone());
            }
        }
    }
    if ann.contains_key(KERNEL_OPENS_ANNOTATION) {
        use std::os::fd::AsFd;
        let (stdin, stdout, stderr) = (std::io::stdin(), std::io::stdout(), std::io::stderr());
        for (fd, access) in stdio_rules([stdin.as_fd(), stdout.as_fd(), stderr.as_fd()]) {
            ruleset = ruleset
                .add_rule(PathBeneath::new(fd, access))
                .map_err(|e| format!("sentry: Landlock rule for descriptor {fd:?}: {e}"))?;
        }
    }
    let status = ruleset
        .restrict_self()
        .map_err(|e| format!("sentry: Landlock restrict_self: {e}"))?;
    let kernel_trees =
        (compiled.is_some() && status.ruleset == RulesetStatus::FullyEnforced).then_some(granted);
    Ok(Applied {
        kernel_trees,
        enforced: status.ruleset != RulesetStatus::NotEnforced,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use landlock::PathFd;

    use super::*;

    fn policy(text: &str) -> Policy {
        Policy::parse(text, "t", Path::new("t.toml")).unwrap()
    }

    #[test]
    fn a_policy_compiles_only_where_landlock_grants_nothing_it_refuses() {
        // Exec from anywhere (default, recording): read-file would be needed on `/`.
        assert_eq!(compile(&Policy::builtin_default()), None);
        assert_eq!(compile(&Policy::recording()), None);
        // The shipped strict policy compiles.
        let strict = policy(include_str!("../../../configs/sentry/strict.toml"));
        let c = compile(&strict).unwrap();
        assert!(c.trees.contains(&Tree {
            path: "/usr".into(),
            write: false
        }));
        assert_eq!(&c.exec[..2], ["/bin", "/usr/bin"]);
        // Exec from a directory the policy does not let be read uniformly: none either.
        let p = policy(
            "[files]\nread = [\"/usr\"]\ndeny = [\"/usr/bin/secret\"]\n\
             [exec]\nallow = [\"/usr/bin\"]\n",
        );
        assert_eq!(compile(&p), None);
        let p = policy(
            "[files]\nread = [\"/usr\", \"/lib\", \"/srv\", \"/proc/self\"]\n\
             read_write = [\"/tmp\", \"/dev/null\", \"/srv/cache\"]\n\
             deny = [\"/proc/*/mem\"]\n[exec]\nallow = [\"/usr/bin\"]\n",
        );
        let c = compile(&p).unwrap();
        let t = |path: &str, write| Tree {
            path: path.into(),
            write,
        };
        // /srv holds a wider rule: only /srv/cache; /proc and /dev never.
        assert_eq!(
            c.trees,
            vec![
                t("/lib", false),
                t("/srv/cache", true),
                t("/tmp", true),
                t("/usr", false)
            ]
        );
        // The loader directories the policy lets be read, and no other.
        assert_eq!(
            c.exec,
            vec!["/usr/bin", "/lib", "/usr/lib", "/usr/lib64", "/usr/lib32"]
        );
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": { "path": "rootfs" },
            "mounts": [
                { "destination": "/proc", "type": "proc", "source": "proc", "options": [] },
                { "destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["ro"] },
            ],
        }))
        .unwrap();
        let r = compiled_rules(&c, &spec);
        let get = |p: &str| {
            r.iter()
                .filter(|(q, _)| q == p)
                .fold(BitFlags::EMPTY, |a, (_, x)| a | *x)
        };
        assert_eq!(get("/usr"), read());
        assert!(get("/tmp").contains(AccessFs::WriteFile | AccessFs::Truncate | AccessFs::MakeReg));
        assert!(!get("/tmp").intersects(AccessFs::MakeChar | AccessFs::MakeBlock));
        assert_eq!(get("/usr/bin"), AccessFs::Execute | AccessFs::ReadFile);
        // The writable root and mounts keep the rights no open uses (mkdir, unlink...).
        assert_eq!(get("/"), other_write_rights());
        assert_eq!(get("/proc"), other_write_rights());
        assert_eq!(get("/sys"), BitFlags::EMPTY);
        assert!(get("/").contains(
            AccessFs::MakeDir | AccessFs::MakeReg | AccessFs::RemoveFile | AccessFs::Refer
        ));
        assert!(!get("/").intersects(AccessFs::WriteFile | AccessFs::Truncate));
        // Every right an open uses stands on a tree the policy allows that access uniformly.
        for (path, access) in &r {
            if access.intersects(read()) {
                assert!(p.kernel_access(path).is_some(), "{path}");
            }
            if access.intersects(open_rights() & !read()) {
                assert_eq!(
                    p.kernel_access(path),
                    Some(PolicyAccess::ReadWrite),
                    "{path}"
                );
            }
        }
        // The annotation round-trips.
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<Compiled>(&json).unwrap(), c);
    }

    #[test]
    fn rules_follow_the_spec() {
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": { "path": "rootfs", "readonly": true },
            "mounts": [
                { "destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid"] },
                { "destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["ro", "nosuid"] },
            ],
        }))
        .unwrap();
        let allow = vec!["/bin".to_string()];
        let r = rules(&spec, Some(&allow));
        let get = |p: &str| {
            r.iter()
                .filter(|(q, _)| q == p)
                .fold(BitFlags::EMPTY, |a, (_, x)| a | *x)
        };
        assert_eq!(get("/"), read());
        assert_eq!(get("/tmp"), read() | write());
        assert_eq!(get("/sys"), read());
        assert!(get("/bin").contains(AccessFs::Execute));
        assert!(!get("/").contains(AccessFs::Execute));
        assert!(write().contains(AccessFs::MakeChar));
        assert!(!write().contains(AccessFs::IoctlDev));
        assert!(!handled().contains(AccessFs::IoctlDev));
        let r = rules(&spec, None);
        assert!(r
            .iter()
            .any(|(p, a)| p == "/" && a.contains(AccessFs::Execute)));
    }

    #[test]
    fn a_file_mount_takes_directory_rights_without_error() {
        // CRI bind-mounts files (/etc/hosts, /etc/resolv.conf): the directory rights they
        // get from the mount rule are narrowed, not refused. Nothing is restricted here.
        let file = std::env::temp_dir().join(format!("strata-confine-{}", std::process::id()));
        std::fs::write(&file, "x").unwrap();
        let ruleset = Ruleset::default()
            .handle_access(handled())
            .and_then(|r| r.create())
            .unwrap();
        let added = ruleset.add_rule(PathBeneath::new(
            PathFd::new(&file).unwrap(),
            read() | write(),
        ));
        std::fs::remove_file(&file).unwrap();
        assert!(added.is_ok(), "{:?}", added.err());
    }
}
