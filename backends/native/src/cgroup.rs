//! The container's cgroup, through libcgroups: v1, v2 and the v1/v2 hybrid alike.
//!
//! What every task's end does (list and kill its processes, thaw, remove the cgroup) goes
//! straight to the cgroup files instead, through the hierarchies' mount points read once per
//! process ([`hierarchies`]): a libcgroups manager finds them anew each time it is made, by
//! parsing `/proc/self/mountinfo` once per controller (about twenty times on a v1 host), and
//! a task's delete made four of them.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libcgroups::common::{
    create_cgroup_manager, get_cgroup_setup, AnyCgroupManager, CgroupConfig, CgroupManager,
    CgroupSetup, ControllerOpt, FreezerState,
};
use strata_backend::{Error, Result, Stats};

/// One container's cgroup.
pub struct Cgroup {
    path: PathBuf,
    id: String,
}

fn cg_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Other(format!("{what}: {e}"))
}

impl Cgroup {
    pub fn new(path: PathBuf, id: &str) -> Self {
        Cgroup {
            path,
            id: id.to_string(),
        }
    }

    /// The cgroup path relative to each hierarchy's root.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn manager(&self) -> Result<AnyCgroupManager> {
        create_cgroup_manager(CgroupConfig {
            cgroup_path: self.path.clone(),
            systemd_cgroup: false,
            container_name: self.id.clone(),
        })
        .map_err(|e| cg_err("open cgroup", e))
    }

    /// Moves `pid` into the cgroup (created if missing) and applies `resources`: for tiers
    /// whose task is a process of their own rather than a libcontainer container (wasm).
    pub fn enter(
        &self,
        pid: u32,
        resources: Option<&oci_spec::runtime::LinuxResources>,
    ) -> Result<()> {
        // One manager for both steps: opening one discovers every hierarchy's mount anew
        // (procfs reads per controller), the larger part of a wasm task's start.
        let m = self.manager()?;
        m.add_task(nix::unistd::Pid::from_raw(pid as i32))
            .map_err(|e| cg_err("move the task into its cgroup", e))?;
        if let Some(resources) = resources {
            m.apply(&ControllerOpt {
                resources,
                disable_oom_killer: false,
                oom_score_adj: None,
                freezer_state: None,
            })
            .map_err(|e| cg_err("update cgroup resources", e))?;
        }
        Ok(())
    }

    /// Sends `sig` to every process in the cgroup; for SIGKILL also thaws it, so that the
    /// kills land even in a paused container. Another signal is sent with the cgroup frozen
    /// (as runc's `kill --all` does), unless it was paused already, then thawed: no process
    /// runs while the list is walked, so none reacts to the signal (an init that exits, and
    /// whose exit SIGKILLs the rest) before every one of them has it, and none forks a child
    /// that the walk misses.
    pub fn signal_all(&self, sig: nix::sys::signal::Signal) {
        let kill = sig == nix::sys::signal::Signal::SIGKILL;
        let froze = !kill && !self.is_frozen() && self.freeze(true).is_ok();
        for pid in self.pids().unwrap_or_default() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
        }
        if kill || froze {
            self.thaw();
        }
    }

    /// Whether the cgroup is frozen or freezing (v1 `freezer.state`, v2 `cgroup.freeze`).
    fn is_frozen(&self) -> bool {
        self.dirs().iter().any(|dir| {
            let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
            matches!(read("freezer.state").trim(), "FROZEN" | "FREEZING")
                || read("cgroup.freeze").trim() == "1"
        })
    }

    /// SIGKILLs every process in the cgroup (see [`Cgroup::signal_all`]).
    pub fn kill_all(&self) {
        self.signal_all(nix::sys::signal::Signal::SIGKILL);
    }

    /// Removes the cgroup, retrying (for a second at most) while its killed processes die.
    /// False if it is still there.
    pub fn remove_retrying(&self) -> bool {
        for _ in 0..50 {
            if self.remove().is_ok() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        false
    }

    /// Kills every process in the cgroup, then removes it.
    pub fn kill_and_remove(&self) {
        self.kill_all();
        let _ = self.remove_retrying();
    }

    /// Every process in the cgroup and the cgroups below it.
    pub fn pids(&self) -> Result<Vec<u32>> {
        let Some(dir) = self.dirs().into_iter().next() else {
            return Ok(Vec::new());
        };
        let mut pids = Vec::new();
        collect_pids(&dir, &mut pids).map_err(|e| cg_err("list cgroup processes", e))?;
        Ok(pids)
    }

    /// This cgroup's directory in each hierarchy where it exists, the one to list processes
    /// from first ([`hierarchies`]).
    fn dirs(&self) -> Vec<PathBuf> {
        let rel = self.path.strip_prefix("/").unwrap_or(&self.path);
        hierarchies()
            .iter()
            .map(|h| h.mount.join(rel))
            .filter(|d| d.is_dir())
            .collect()
    }

    /// Thaws the cgroup if it is frozen (v1 freezer or v2 `cgroup.freeze`).
    fn thaw(&self) {
        for dir in self.dirs() {
            for (file, value) in [("freezer.state", "THAWED"), ("cgroup.freeze", "0")] {
                let f = dir.join(file);
                if f.exists() {
                    let _ = std::fs::write(&f, value);
                }
            }
        }
    }

    pub fn freeze(&self, frozen: bool) -> Result<()> {
        let state = if frozen {
            FreezerState::Frozen
        } else {
            FreezerState::Thawed
        };
        self.manager()?
            .freeze(state)
            .map_err(|e| cg_err(if frozen { "freeze" } else { "thaw" }, e))
    }

    pub fn update(&self, resources: &oci_spec::runtime::LinuxResources) -> Result<()> {
        let opt = ControllerOpt {
            resources,
            disable_oom_killer: false,
            oom_score_adj: None,
            freezer_state: None,
        };
        self.manager()?
            .apply(&opt)
            .map_err(|e| cg_err("update cgroup resources", e))
    }

    pub fn stats(&self) -> Result<Stats> {
        let s = self
            .manager()?
            .stats()
            .map_err(|e| cg_err("read cgroup statistics", e))?;
        let version = match get_cgroup_setup() {
            Ok(CgroupSetup::Unified) => 2,
            _ => 1,
        };
        let mut out = Stats {
            cgroup_version: version,
            memory_usage: s.memory.memory.usage,
            memory_limit: s.memory.memory.limit,
            memory_max_usage: s.memory.memory.max_usage,
            memory_failcnt: s.memory.memory.fail_count,
            memory_cache: s.memory.cache,
            memory_rss: s
                .memory
                .stats
                .get("rss")
                .or(s.memory.stats.get("anon"))
                .copied()
                .unwrap_or(0),
            memory_oom_kills: s.memory.stats.get("oom_kill").copied().unwrap_or(0),
            cpu_usage_total_ns: s.cpu.usage.usage_total,
            cpu_usage_user_ns: s.cpu.usage.usage_user,
            cpu_usage_kernel_ns: s.cpu.usage.usage_kernel,
            cpu_periods: s.cpu.throttling.periods,
            cpu_throttled_periods: s.cpu.throttling.throttled_periods,
            cpu_throttled_ns: s.cpu.throttling.throttled_time,
            pids_current: s.pids.current,
            pids_limit: s.pids.limit,
            ..Default::default()
        };
        for d in &s.blkio.service_bytes {
            match d.op_type.as_deref().map(str::to_ascii_lowercase).as_deref() {
                Some("read") => out.io_read_bytes += d.value,
                Some("write") => out.io_write_bytes += d.value,
                _ => {}
            }
        }
        Ok(out)
    }

    /// Removes the cgroup in every hierarchy (after its processes are gone: a process still
    /// in it is SIGKILLed, and the removal fails until it is gone, as libcgroups' does).
    pub fn remove(&self) -> Result<()> {
        for dir in self.dirs() {
            for pid in read_pids(&dir).unwrap_or_default() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            match std::fs::remove_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(cg_err(&format!("remove cgroup {}", dir.display()), e)),
            }
        }
        Ok(())
    }

    /// Where the memory controller of this cgroup lives, and whether it is v2.
    pub fn memory_dir(&self) -> Option<(PathBuf, bool)> {
        let rel = self.path.strip_prefix("/").unwrap_or(&self.path);
        match get_cgroup_setup().ok()? {
            CgroupSetup::Unified => Some((Path::new("/sys/fs/cgroup").join(rel), true)),
            _ => Some((Path::new("/sys/fs/cgroup/memory").join(rel), false)),
        }
    }
}

/// A mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    pub mount: PathBuf,
    /// Its controllers (none for v2's unified hierarchy or a named v1 one).
    pub controllers: Vec<String>,
}

/// The controllers of cgroup v1 (a mount's other options are not).
const V1_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "net_prio",
    "blkio",
    "perf_event",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
];

/// The controllers whose hierarchy lists a process best, first: where a container's
/// processes always are.
const LIST_FROM: &[&str] = &["pids", "freezer", "memory", "cpu", "devices"];

/// The cgroup hierarchies of this host, read from `/proc/self/mountinfo` once per process:
/// on a v2 host the unified one; on a v1 or hybrid host every v1 hierarchy with controllers
/// (the one to list processes from first) and the unified one of a hybrid host last.
pub fn hierarchies() -> &'static [Hierarchy] {
    static H: OnceLock<Vec<Hierarchy>> = OnceLock::new();
    H.get_or_init(|| {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let unified = matches!(get_cgroup_setup(), Ok(CgroupSetup::Unified));
        parse_hierarchies(&info, unified)
    })
}

/// [`hierarchies`] from the text of a mountinfo file.
fn parse_hierarchies(mountinfo: &str, unified: bool) -> Vec<Hierarchy> {
    let mut v1 = Vec::new();
    let mut v2 = Vec::new();
    for line in mountinfo.lines() {
        // ID PARENT MAJ:MIN ROOT MOUNT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mount = left.split(' ').nth(4);
        let mut r = right.split(' ');
        let (fstype, _source, superopts) = (r.next(), r.next(), r.next().unwrap_or(""));
        let Some(mount) = mount else { continue };
        let mount = PathBuf::from(mount.replace("\\040", " "));
        match fstype {
            Some("cgroup2") => v2.push(Hierarchy {
                mount,
                controllers: Vec::new(),
            }),
            Some("cgroup") => {
                let controllers: Vec<String> = superopts
                    .split(',')
                    .filter(|o| V1_CONTROLLERS.contains(o))
                    .map(str::to_string)
                    .collect();
                if !controllers.is_empty() && !v1.iter().any(|h: &Hierarchy| h.mount == mount) {
                    v1.push(Hierarchy { mount, controllers });
                }
            }
            _ => {}
        }
    }
    if unified {
        return v2.into_iter().take(1).collect();
    }
    let rank = |h: &Hierarchy| {
        LIST_FROM
            .iter()
            .position(|c| h.controllers.iter().any(|x| x == c))
            .unwrap_or(LIST_FROM.len())
    };
    v1.sort_by_key(rank);
    v1.extend(v2.into_iter().take(1));
    v1
}

/// The processes listed in `dir`'s `cgroup.procs`.
fn read_pids(dir: &Path) -> std::io::Result<Vec<u32>> {
    Ok(std::fs::read_to_string(dir.join("cgroup.procs"))?
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect())
}

/// The processes of `dir` and of the cgroups below it.
fn collect_pids(dir: &Path, out: &mut Vec<u32>) -> std::io::Result<()> {
    out.extend(read_pids(dir)?);
    for e in std::fs::read_dir(dir)?.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            collect_pids(&e.path(), out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = "\
25 30 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
27 25 0:24 / /sys/fs/cgroup/systemd rw,nosuid - cgroup cgroup rw,xattr,name=systemd
28 25 0:25 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
29 25 0:26 / /sys/fs/cgroup/devices rw,nosuid - cgroup cgroup rw,devices
30 25 0:27 / /sys/fs/cgroup/pids rw,nosuid - cgroup cgroup rw,pids
31 25 0:28 / /sys/fs/cgroup/cpuset rw,nosuid - cgroup cgroup rw,cpuset,clone_children,noprefix
32 25 0:29 / /run/my\\040dir rw - ext4 /dev/vda rw
";

    #[test]
    fn hierarchies_come_from_mountinfo() {
        let h = parse_hierarchies(V1, false);
        let mounts: Vec<&str> = h.iter().map(|h| h.mount.to_str().unwrap()).collect();
        // pids first (to list processes from), the named systemd hierarchy left out, the
        // hybrid's unified one last.
        assert_eq!(
            mounts,
            [
                "/sys/fs/cgroup/pids",
                "/sys/fs/cgroup/cpu,cpuacct",
                "/sys/fs/cgroup/devices",
                "/sys/fs/cgroup/cpuset",
                "/sys/fs/cgroup/unified"
            ]
        );
        assert_eq!(h[1].controllers, ["cpu", "cpuacct"]);
        assert_eq!(h[3].controllers, ["cpuset"]);
        let v2 = "40 1 0:30 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            parse_hierarchies(v2, true),
            [Hierarchy {
                mount: "/sys/fs/cgroup".into(),
                controllers: vec![]
            }]
        );
    }

    /// The hierarchies of this host are found as libcgroups finds them.
    #[test]
    fn this_hosts_hierarchies_hold_our_own_cgroup() {
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let h = hierarchies();
        assert!(!h.is_empty(), "no cgroup hierarchy found");
        for hier in h {
            assert!(hier.mount.is_dir(), "{hier:?}");
        }
        // This process is listed in its own cgroup of the first hierarchy.
        let first = &h[0];
        let rel = own
            .lines()
            .find_map(|l| {
                let mut f = l.splitn(3, ':');
                let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
                let mine = if first.controllers.is_empty() {
                    ctrls.is_empty()
                } else {
                    ctrls
                        .split(',')
                        .any(|c| first.controllers.iter().any(|x| x == c))
                };
                mine.then(|| path.trim_start_matches('/').to_string())
            })
            .expect("our own cgroup in the first hierarchy");
        let pids = read_pids(&first.mount.join(rel)).unwrap();
        assert!(pids.contains(&std::process::id()), "{pids:?}");
    }
}
