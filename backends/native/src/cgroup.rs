//! The container's cgroup, through libcgroups: v1, v2 and the v1/v2 hybrid alike.

use std::path::{Path, PathBuf};

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
    /// kills land even in a paused container.
    pub fn signal_all(&self, sig: nix::sys::signal::Signal) {
        for pid in self.pids().unwrap_or_default() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
        }
        if sig == nix::sys::signal::Signal::SIGKILL {
            let _ = self.freeze(false);
        }
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

    pub fn pids(&self) -> Result<Vec<u32>> {
        let pids = self
            .manager()?
            .get_all_pids()
            .map_err(|e| cg_err("list cgroup processes", e))?;
        Ok(pids.into_iter().map(|p| p.as_raw() as u32).collect())
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

    /// Removes the cgroup (after its processes are gone).
    pub fn remove(&self) -> Result<()> {
        self.manager()?
            .remove()
            .map_err(|e| cg_err("remove cgroup", e))
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
