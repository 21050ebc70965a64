//! The supervisor threads of a container run in the container's own CPU cgroups.
//!
//! A trapped call hands the CPU from the workload to its supervisor thread and back, several
//! times per call. When the two sit in different `cpu` cgroups, every such hand-over crosses
//! group scheduling entities, and on this host's kernel a trapped open then cost about 11 µs
//! more (docs/sentry.md, "Cost of a trapped open"). In the container's group, the
//! supervisor's time is also what it should be: the container's, counted in its `cpuacct`
//! usage and held to its CPU quota, as gVisor's Sentry runs inside its pod's cgroup. A
//! workload that floods trapped calls spends its own CPU share, not the shim's.
//!
//! Only cgroup v1 moves single threads into a group (its `tasks` file); in cgroup v2 a thread
//! can only change groups inside a threaded subtree, so there the supervisor stays where the
//! shim is. Only `cpu` and `cpuacct` are joined: memory stays charged to the shim, and the
//! container's process listing and kill-all (the `devices` hierarchy, libcgroups) never see
//! the shim.
//!
//! Before the native tier removes the container's cgroups, [`CpuCgroups::release`] moves
//! every thread that joined back to the shim's groups (a group with tasks cannot be removed).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The container's `cpu`/`cpuacct` group directories and the shim's own, one pair per
/// hierarchy the two differ in.
pub struct CpuCgroups {
    /// (container's directory, shim's directory) per hierarchy.
    dirs: Vec<(PathBuf, PathBuf)>,
    /// Threads that joined, and whether [`CpuCgroups::release`] has run (then none may join).
    joined: Mutex<(Vec<u32>, bool)>,
}

/// A v1 hierarchy of the CPU controllers: where it is mounted and which part of it.
struct Mount {
    controllers: Vec<String>,
    /// The hierarchy's path that is mounted at `point` (`/` but in nested set-ups).
    root: String,
    point: PathBuf,
}

impl CpuCgroups {
    /// The groups of task `pid` (the container's) against the calling thread's (the shim's),
    /// or None if there is nothing to join: cgroup v2 only, or the same groups.
    pub fn of(pid: u32) -> Option<CpuCgroups> {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        let mounts = parse_mounts(&mounts);
        let theirs = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let ours = std::fs::read_to_string("/proc/thread-self/cgroup").ok()?;
        let dirs = pair_dirs(&mounts, &theirs, &ours);
        (!dirs.is_empty()).then(|| CpuCgroups {
            dirs,
            joined: Mutex::new((Vec::new(), false)),
        })
    }

    /// Moves the calling thread into the container's groups. False if it did not (released
    /// already, or a group refused it); a thread that joined only some stays accounted there.
    pub fn join(&self) -> bool {
        let tid = gettid();
        let mut j = self.joined.lock().unwrap_or_else(|e| e.into_inner());
        if j.1 {
            return false;
        }
        let mut all = true;
        for (theirs, _) in &self.dirs {
            all &= write_tid(theirs, tid);
        }
        j.0.push(tid);
        all
    }

    /// Moves the calling thread back to the shim's groups (a worker thread, which inherited
    /// the container's from the supervisor that started it and may outlive the container).
    pub fn leave(&self) {
        let tid = gettid();
        for (_, ours) in &self.dirs {
            write_tid(ours, tid);
        }
    }

    /// Moves every thread that joined back to the shim's groups, and lets none join any more.
    pub fn release(&self) {
        let mut j = self.joined.lock().unwrap_or_else(|e| e.into_inner());
        j.1 = true;
        for tid in j.0.drain(..) {
            for (_, ours) in &self.dirs {
                // A thread that has ended is gone from the group already (ESRCH).
                write_tid(ours, tid);
            }
        }
    }
}

fn gettid() -> u32 {
    // The raw call: glibc's gettid() is not resolved in the shim's static build.
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as u32 }
}

fn write_tid(dir: &Path, tid: u32) -> bool {
    std::fs::write(dir.join("tasks"), tid.to_string()).is_ok()
}

/// The v1 hierarchies holding `cpu` or `cpuacct`, from `/proc/self/mountinfo`.
fn parse_mounts(mountinfo: &str) -> Vec<Mount> {
    let mut out: Vec<Mount> = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if r.first() != Some(&"cgroup") || l.len() < 5 || r.len() < 3 {
            continue;
        }
        let controllers: Vec<String> = r[2]
            .split(',')
            .filter(|o| matches!(*o, "cpu" | "cpuacct"))
            .map(String::from)
            .collect();
        // One mount per hierarchy is enough (bind mounts of it repeat the options).
        if controllers.is_empty() || out.iter().any(|m| m.controllers == controllers) {
            continue;
        }
        out.push(Mount {
            controllers,
            root: unescape(l[3]),
            point: PathBuf::from(unescape(l[4])),
        });
    }
    out
}

/// mountinfo writes space, tab, newline and backslash as octal escapes.
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(c) => {
                out.push(c as char);
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// For each CPU hierarchy where the two `/proc/<pid>/cgroup` texts name different groups,
/// both groups' directories.
fn pair_dirs(mounts: &[Mount], theirs: &str, ours: &str) -> Vec<(PathBuf, PathBuf)> {
    let group = |text: &str, m: &Mount| -> Option<PathBuf> {
        text.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctrl, path) = (f.next()?, f.next()?, f.next()?);
            let ctrl: Vec<&str> = ctrl.split(',').collect();
            if !m.controllers.iter().all(|c| ctrl.contains(&c.as_str())) {
                return None;
            }
            // The group's path below the part of the hierarchy that is mounted.
            let below = if m.root == "/" {
                path
            } else {
                path.strip_prefix(m.root.as_str())?
            };
            let below = below.trim_start_matches('/');
            if below.split('/').any(|c| c == "..") {
                return None;
            }
            Some(m.point.join(below))
        })
    };
    mounts
        .iter()
        .filter_map(|m| Some((group(theirs, m)?, group(ours, m)?)))
        .filter(|(a, b)| a != b)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
25 1 0:22 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
26 25 0:23 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
27 25 0:24 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
28 25 0:25 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
29 25 0:26 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
30 1 0:23 / /mnt/cpu\\040again rw,relatime - cgroup cgroup rw,cpu
";

    #[test]
    fn container_and_shim_groups_per_hierarchy() {
        let mounts = parse_mounts(MOUNTINFO);
        assert_eq!(
            mounts.len(),
            2,
            "cpu and cpuacct once each, no memory, no v2"
        );
        let theirs = "4:memory:/ns/c1\n2:cpuacct:/ns/c1\n1:cpu:/ns/c1\n0::/\n";
        let ours = "4:memory:/shim\n2:cpuacct:/\n1:cpu:/\n0::/\n";
        assert_eq!(
            pair_dirs(&mounts, theirs, ours),
            vec![
                (
                    "/sys/fs/cgroup/cpu/ns/c1".into(),
                    "/sys/fs/cgroup/cpu/".into()
                ),
                (
                    "/sys/fs/cgroup/cpuacct/ns/c1".into(),
                    "/sys/fs/cgroup/cpuacct/".into()
                ),
            ]
        );
        // The same groups: nothing to join.
        assert!(pair_dirs(&mounts, ours, ours).is_empty());
        // cgroup v2 only: nothing to join.
        assert!(pair_dirs(&mounts, "0::/ns/c1\n", "0::/\n").is_empty());
    }

    #[test]
    fn co_mounted_and_nested_hierarchies() {
        let info =
            "26 25 0:23 /outer /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n";
        let mounts = parse_mounts(info);
        assert_eq!(mounts.len(), 1);
        let theirs = "1:cpu,cpuacct:/outer/ns/c1\n";
        let ours = "1:cpu,cpuacct:/outer\n";
        assert_eq!(
            pair_dirs(&mounts, theirs, ours),
            vec![(
                "/sys/fs/cgroup/cpu,cpuacct/ns/c1".into(),
                "/sys/fs/cgroup/cpu,cpuacct/".into()
            )]
        );
        // Outside the mounted part, or climbing out of it: not joined.
        assert!(pair_dirs(&mounts, "1:cpu,cpuacct:/other\n", ours).is_empty());
        assert!(pair_dirs(&mounts, "1:cpu,cpuacct:/outer/../x\n", ours).is_empty());
        assert_eq!(unescape("/a\\040b\\"), "/a b\\");
    }

    /// A thread joins a real v1 `cpu` group, is listed in it, and is moved back by `release`;
    /// the group can then be removed. Needs root and a cgroup v1 `cpu` hierarchy.
    #[test]
    fn a_thread_joins_and_is_released() {
        let mounts = parse_mounts(&std::fs::read_to_string("/proc/self/mountinfo").unwrap());
        let Some(cpu) = mounts
            .iter()
            .find(|m| m.controllers == ["cpu"] && m.root == "/")
        else {
            eprintln!(
                "skipped: no cgroup v1 cpu hierarchy here (cgroup v2 moves no single threads)"
            );
            return;
        };
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root to make a cgroup");
            return;
        }
        let name = format!("strata-sentry-test-{}", std::process::id());
        let dir = cpu.point.join(&name);
        std::fs::create_dir(&dir).unwrap();
        // A process in the new group stands in for the container's task.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        std::fs::write(dir.join("cgroup.procs"), child.id().to_string()).unwrap();
        let groups = CpuCgroups::of(child.id()).expect("different cpu groups");
        assert!(groups.dirs.iter().any(|(t, _)| t == &dir));
        let tasks = || std::fs::read_to_string(dir.join("tasks")).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let g = std::sync::Arc::new(groups);
        let g2 = g.clone();
        let t = std::thread::spawn(move || {
            assert!(g2.join());
            tx.send(gettid()).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(300));
        });
        let tid = rx.recv().unwrap();
        assert!(
            tasks().lines().any(|l| l == tid.to_string()),
            "joined: {}",
            tasks()
        );
        g.release();
        assert!(
            !tasks().lines().any(|l| l == tid.to_string()),
            "released: {}",
            tasks()
        );
        assert!(!g.join(), "no joining after release");
        t.join().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        std::fs::remove_dir(&dir).expect("an empty group is removed");
    }
}
