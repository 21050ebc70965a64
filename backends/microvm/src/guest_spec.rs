//! A container's bundle as the guest sees it: the host's OCI spec rewritten for the guest, its
//! root filesystem and bind-mount sources bound into the pod's shared directory.
//!
//! Layout of the shared directory (virtio-fs, [`crate::hypervisor::GUEST_SHARE_DIR`] in the
//! guest): `<id>/config.json`, `<id>/rootfs/` (the host's rootfs mount, bound), and
//! `<id>/mounts/<n>` (the source of the spec's n-th bind mount, bound: CRI's `/etc/hosts`,
//! `/etc/resolv.conf`, `/dev/termination-log`, volumes).

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType, Spec};

use crate::hypervisor::GUEST_SHARE_DIR;
use crate::Error;

/// The container's directory in the shared directory.
pub fn host_dir(shared: &Path, id: &str) -> PathBuf {
    shared.join(id)
}

/// The bundle directory the agent is given.
pub fn guest_bundle(id: &str) -> String {
    format!("{GUEST_SHARE_DIR}/{id}")
}

fn bind(src: &Path, dst: &Path) -> Result<(), Error> {
    if src.is_dir() {
        std::fs::create_dir_all(dst)
            .map_err(|e| Error::io(format!("create {}", dst.display()), e))?;
    } else {
        if let Some(p) = dst.parent() {
            std::fs::create_dir_all(p)
                .map_err(|e| Error::io(format!("create {}", p.display()), e))?;
        }
        std::fs::write(dst, b"").map_err(|e| Error::io(format!("create {}", dst.display()), e))?;
    }
    mount(
        Some(src),
        dst,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| {
        Error::io(
            format!("bind {} onto {}", src.display(), dst.display()),
            e.into(),
        )
    })
}

/// Unmounts everything under the container's directory (deepest first) and removes it.
pub fn remove(shared: &Path, id: &str) {
    let dir = host_dir(shared, id);
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = format!("{}/", dir.display());
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    points.dedup();
    for p in points {
        let _ = umount2(p, MntFlags::MNT_DETACH);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Binds the container's rootfs and bind-mount sources into the shared directory and writes
/// the guest's config.json there. On failure nothing stays mounted.
pub fn prepare(
    shared: &Path,
    id: &str,
    bundle: &Path,
    spec: &Spec,
    pod_init: Option<u32>,
) -> Result<(), Error> {
    let r = prepare_inner(shared, id, bundle, spec, pod_init);
    if r.is_err() {
        remove(shared, id);
    }
    r
}

fn prepare_inner(
    shared: &Path,
    id: &str,
    bundle: &Path,
    spec: &Spec,
    pod_init: Option<u32>,
) -> Result<(), Error> {
    let dir = host_dir(shared, id);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    let root = spec
        .root()
        .as_ref()
        .map(|r| r.path().clone())
        .unwrap_or_else(|| PathBuf::from("rootfs"));
    let root = if root.is_absolute() {
        root
    } else {
        bundle.join(root)
    };
    bind(&root, &dir.join("rootfs"))?;
    let guest = rewrite(spec, id, pod_init, |n, src| {
        let dst = dir.join("mounts").join(n.to_string());
        bind(src, &dst)?;
        Ok(format!("{}/mounts/{n}", guest_bundle(id)))
    })?;
    let text = serde_json::to_vec_pretty(&guest)
        .map_err(|e| Error::Other(format!("serialising the guest's spec: {e}")))?;
    std::fs::write(dir.join("config.json"), text)
        .map_err(|e| Error::io(format!("write {}/config.json", dir.display()), e))
}

/// The spec for the guest: rootfs `rootfs` in the bundle, bind sources moved into the share
/// (`share(n, host source) -> guest path`), no host namespace paths, hooks (the shim runs them on
/// the host, `strata_backend::hooks`), AppArmor or SELinux labels (they name the host's), and a
/// cgroup path of the guest's.
///
/// A namespace the host names by path is the pod's (CRI: the pause container's PID, IPC and
/// UTS namespaces, the pod's network namespace). With `pod_init`, the guest PID of the pod's
/// sandbox container's init, a container joins that init's namespace of the same kind in the
/// guest, as its containers share them on the host; without it (the sandbox container itself),
/// the namespace is a new one in the guest: the VM is the pod's boundary. The pod's network
/// namespace is the exception: every container of the pod uses the guest's root one, which
/// holds the pod's interfaces.
pub fn rewrite(
    spec: &Spec,
    id: &str,
    pod_init: Option<u32>,
    mut share: impl FnMut(usize, &Path) -> Result<String, Error>,
) -> Result<Spec, Error> {
    let mut g = spec.clone();
    if let Some(root) = g.root_mut() {
        root.set_path(PathBuf::from("rootfs"));
    }
    g.set_hooks(None);
    if let Some(p) = g.process_mut() {
        p.set_apparmor_profile(None);
        p.set_selinux_label(None);
    }
    if let Some(mounts) = g.mounts_mut() {
        for (n, m) in mounts.iter_mut().enumerate() {
            let is_bind = m.typ().as_deref() == Some("bind")
                || m.options()
                    .as_ref()
                    .is_some_and(|o| o.iter().any(|o| o == "bind" || o == "rbind"));
            if !is_bind {
                continue;
            }
            let Some(src) = m.source().clone() else {
                continue;
            };
            if !src.exists() {
                return Err(Error::Other(format!(
                    "mount source {} of {} does not exist",
                    src.display(),
                    m.destination().display()
                )));
            }
            let guest = share(n, &src)?;
            m.set_source(Some(PathBuf::from(guest)));
        }
    }
    if let Some(linux) = g.linux_mut() {
        linux.set_cgroups_path(Some(PathBuf::from(format!("/strata/{id}"))));
        linux.set_mount_label(None);
        if let Some(ns) = linux.namespaces().clone() {
            let ns: Vec<LinuxNamespace> =
                ns.into_iter()
                    // The pod's network namespace is the guest's own, where the agent set up
                    // the pod's interfaces (crate::network): no new one in the guest.
                    .filter(|n| !(n.typ() == LinuxNamespaceType::Network && n.path().is_some()))
                    .map(|mut n| {
                        if n.path().is_some() {
                            n.set_path(pod_init.zip(proc_ns_name(n.typ())).map(|(pid, name)| {
                                PathBuf::from(format!("/proc/{pid}/ns/{name}"))
                            }));
                        }
                        n
                    })
                    .collect();
            linux.set_namespaces(Some(ns));
        }
    }
    Ok(g)
}

/// The `/proc/PID/ns/` entry of the namespaces a pod's containers share; `None` for the
/// others (mount, user, cgroup, time: a container's own in the guest).
fn proc_ns_name(t: LinuxNamespaceType) -> Option<&'static str> {
    match t {
        LinuxNamespaceType::Pid => Some("pid"),
        LinuxNamespaceType::Network => Some("net"),
        LinuxNamespaceType::Ipc => Some("ipc"),
        LinuxNamespaceType::Uts => Some("uts"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrite_moves_bind_sources_and_drops_host_paths() {
        let text = r#"{
            "ociVersion": "1.0.2",
            "root": {"path": "/run/containerd/x/rootfs"},
            "process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}, "apparmorProfile": "cri-default"},
            "hooks": {"prestart": [{"path": "/usr/bin/hook"}]},
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/etc/hosts", "type": "bind", "source": "/etc/hosts", "options": ["rbind", "ro"]}
            ],
            "linux": {
                "cgroupsPath": "kubepods-besteffort:cri-containerd:abc",
                "namespaces": [{"type": "network", "path": "/var/run/netns/cni-1"}, {"type": "pid"}]
            }
        }"#;
        let spec: Spec = serde_json::from_str(text).unwrap();
        let mut shared = Vec::new();
        let g = rewrite(&spec, "c1", None, |n, src| {
            shared.push((n, src.to_path_buf()));
            Ok(format!("/run/strata/shared/c1/mounts/{n}"))
        })
        .unwrap();
        assert_eq!(shared, vec![(1, PathBuf::from("/etc/hosts"))]);
        let mounts = g.mounts().as_ref().unwrap();
        assert_eq!(mounts[0].source().as_deref(), Some(Path::new("proc")));
        assert_eq!(
            mounts[1].source().as_deref(),
            Some(Path::new("/run/strata/shared/c1/mounts/1"))
        );
        assert_eq!(g.root().as_ref().unwrap().path(), Path::new("rootfs"));
        assert!(g.hooks().is_none());
        assert!(g.process().as_ref().unwrap().apparmor_profile().is_none());
        let linux = g.linux().as_ref().unwrap();
        assert_eq!(
            linux.cgroups_path().as_deref(),
            Some(Path::new("/strata/c1"))
        );
        assert!(linux
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .all(|n| n.path().is_none() && n.typ() != LinuxNamespaceType::Network));
    }

    #[test]
    fn a_pod_container_joins_the_sandbox_init_namespaces_in_the_guest() {
        let text = r#"{"ociVersion": "1.0.2", "linux": {"namespaces": [
            {"type": "pid", "path": "/proc/4242/ns/pid"},
            {"type": "ipc", "path": "/proc/4242/ns/ipc"},
            {"type": "uts", "path": "/proc/4242/ns/uts"},
            {"type": "mount"},
            {"type": "network", "path": "/var/run/netns/cni-1"},
            {"type": "cgroup", "path": "/proc/4242/ns/cgroup"}]}}"#;
        let spec: Spec = serde_json::from_str(text).unwrap();
        let g = rewrite(&spec, "c2", Some(17), |_, _| Ok(String::new())).unwrap();
        let paths: Vec<_> = g
            .linux()
            .as_ref()
            .unwrap()
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .map(|n| n.path().as_ref().map(|p| p.display().to_string()))
            .collect();
        assert_eq!(
            paths,
            vec![
                Some("/proc/17/ns/pid".into()),
                Some("/proc/17/ns/ipc".into()),
                Some("/proc/17/ns/uts".into()),
                None,
                None,
            ]
        );
    }

    #[test]
    fn a_missing_bind_source_is_an_error() {
        let text = r#"{"ociVersion": "1.0.2", "mounts": [
            {"destination": "/data", "type": "bind", "source": "/nonexistent/strata-test"}]}"#;
        let spec: Spec = serde_json::from_str(text).unwrap();
        let e = rewrite(&spec, "c", None, |_, _| Ok(String::new())).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/strata-test"), "{e}");
    }
}
