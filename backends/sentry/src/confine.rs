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

use landlock::{
    Access, AccessFs, BitFlags, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus, ABI,
};
use libcontainer::oci_spec::runtime::Spec;

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

/// Restricts this process (and what it execs) to the container's root and mounts. Paths that
/// do not exist in this container are skipped; a kernel without Landlock leaves the process
/// unrestricted (`strata check` says so).
pub fn apply(spec: &Spec) -> Result<RulesetStatus, String> {
    let ann = spec.annotations().clone().unwrap_or_default();
    let exec: Option<Vec<String>> = match ann.get(EXEC_ANNOTATION).map(String::as_str) {
        Some("\"*\"") => None,
        Some(v) => Some(
            serde_json::from_str(v).map_err(|e| format!("sentry: bad {EXEC_ANNOTATION}: {e}"))?,
        ),
        None => return Err(format!("sentry: no {EXEC_ANNOTATION} for this process")),
    };
    let mut ruleset = Ruleset::default()
        .handle_access(handled())
        .and_then(|r| r.create())
        .map_err(|e| format!("sentry: Landlock ruleset: {e}"))?;
    for (path, access) in rules(spec, exec.as_deref()) {
        let Ok(fd) = PathFd::new(&path) else {
            continue;
        };
        ruleset = ruleset
            .add_rule(PathBeneath::new(fd, access))
            .map_err(|e| format!("sentry: Landlock rule for {path}: {e}"))?;
    }
    let status = ruleset
        .restrict_self()
        .map_err(|e| format!("sentry: Landlock restrict_self: {e}"))?;
    Ok(status.ruleset)
}

#[cfg(test)]
mod tests {
    use super::*;

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
