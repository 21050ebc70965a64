//! A container's figures read straight from its cgroup v2 directory, for the guest.
//!
//! libcgroups' v2 statistics also read `cpu.pressure` and the hugetlb page sizes from
//! `/sys/kernel/mm/hugepages`: the guest kernel has no hugetlbfs (nor any use for it), so there
//! `Stats` went through this module instead, which reads only the files the reply carries:
//! `memory.current`, `memory.max`, `memory.peak` (kernels from 5.19), `memory.stat`,
//! `memory.events`, `cpu.stat`, `pids.current`, `pids.max` and `io.stat`. A missing controller
//! file gives 0, as libcgroups does; a cgroup directory that is gone is `NotFound`.
//!
//! Used where `/sys/fs/cgroup` is a cgroup2 mount (the guest); elsewhere (a host-process agent
//! on a v1 or hybrid host) the native backend's libcgroups path answers.

use std::path::{Path, PathBuf};

use strata_backend::{Error, Stats};

/// The cgroup2 mount point.
pub const CGROUP2_ROOT: &str = "/sys/fs/cgroup";

/// Whether `/sys/fs/cgroup` is a cgroup2 mount (the unified hierarchy).
pub fn unified() -> bool {
    nix::sys::statfs::statfs(CGROUP2_ROOT)
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

/// The cgroup v2 directory of process `pid`: `/proc/<pid>/cgroup`'s `0::<path>` under `root`.
pub fn dir_of(pid: u32, root: &Path) -> Option<PathBuf> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let rel = s.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(root.join(rel.trim().trim_start_matches('/')))
}

fn read(dir: &Path, file: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(file)).ok()
}

/// A single-value file; "max" is `max`; absent or unparsable is 0.
fn single(dir: &Path, file: &str, max: u64) -> u64 {
    match read(dir, file).as_deref().map(str::trim) {
        Some("max") => max,
        Some(v) => v.parse().unwrap_or(0),
        None => 0,
    }
}

/// `key value` lines (`memory.stat`, `memory.events`, `cpu.stat`): the value of `key`, or 0.
fn keyed(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == key).then(|| v.trim().parse().ok()).flatten()
        })
        .unwrap_or(0)
}

/// `io.stat`: `MAJ:MIN rbytes=N wbytes=N ...` per device; the sums of `field`.
fn io_sum(text: &str, field: &str) -> u64 {
    text.split_whitespace()
        .filter_map(|kv| kv.strip_prefix(field)?.strip_prefix('='))
        .filter_map(|v| v.parse::<u64>().ok())
        .fold(0, u64::saturating_add)
}

/// The figures of the cgroup v2 directory `dir`. Unlimited memory is `u64::MAX`, an unlimited
/// pids count 0 (both as libcgroups reports them); `memory_failcnt` is `memory.events`' `max`
/// (times usage hit the limit), `memory_max_usage` `memory.peak` (0 before 5.19).
pub fn read_v2(dir: &Path) -> Result<Stats, Error> {
    if !dir.is_dir() {
        return Err(Error::NotFound(format!("cgroup {}", dir.display())));
    }
    let mem_stat = read(dir, "memory.stat").unwrap_or_default();
    let mem_events = read(dir, "memory.events").unwrap_or_default();
    let cpu = read(dir, "cpu.stat").unwrap_or_default();
    let io = read(dir, "io.stat").unwrap_or_default();
    let us = |k| keyed(&cpu, k).saturating_mul(1000);
    Ok(Stats {
        cgroup_version: 2,
        memory_usage: single(dir, "memory.current", 0),
        memory_limit: single(dir, "memory.max", u64::MAX),
        memory_max_usage: single(dir, "memory.peak", 0),
        memory_failcnt: keyed(&mem_events, "max"),
        memory_cache: keyed(&mem_stat, "file"),
        memory_rss: keyed(&mem_stat, "anon"),
        memory_oom_kills: keyed(&mem_events, "oom_kill"),
        cpu_usage_total_ns: us("usage_usec"),
        cpu_usage_user_ns: us("user_usec"),
        cpu_usage_kernel_ns: us("system_usec"),
        cpu_periods: keyed(&cpu, "nr_periods"),
        cpu_throttled_periods: keyed(&cpu, "nr_throttled"),
        cpu_throttled_ns: us("throttled_usec"),
        pids_current: single(dir, "pids.current", 0),
        pids_limit: single(dir, "pids.max", 0),
        io_read_bytes: io_sum(&io, "rbytes"),
        io_write_bytes: io_sum(&io, "wbytes"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cgroup directory as the guest kernel (6.1) writes it.
    #[test]
    fn reads_the_v2_files() {
        let d = std::env::temp_dir().join(format!("strata-cg2-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        for (f, s) in [
            ("memory.current", "1228800\n"),
            ("memory.max", "16777216\n"),
            (
                "memory.stat",
                "anon 409600\nfile 733184\nkernel_stack 16384\n",
            ),
            (
                "memory.events",
                "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\n",
            ),
            (
                "cpu.stat",
                "usage_usec 5213\nuser_usec 1200\nsystem_usec 4013\nnr_periods 7\n\
                 nr_throttled 2\nthrottled_usec 900\n",
            ),
            ("pids.current", "2\n"),
            ("pids.max", "max\n"),
            (
                "io.stat",
                "254:0 rbytes=4096 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n\
                 254:16 rbytes=8192 wbytes=512 rios=2 wios=1 dbytes=0 dios=0\n",
            ),
        ] {
            std::fs::write(d.join(f), s).unwrap();
        }
        let s = read_v2(&d).unwrap();
        let _ = std::fs::remove_dir_all(&d);
        assert_eq!(s.cgroup_version, 2);
        assert_eq!(s.memory_usage, 1228800);
        assert_eq!(s.memory_limit, 16 << 20);
        assert_eq!(s.memory_max_usage, 0, "no memory.peak on 6.1");
        assert_eq!((s.memory_rss, s.memory_cache), (409600, 733184));
        assert_eq!((s.memory_failcnt, s.memory_oom_kills), (12, 1));
        assert_eq!(
            (
                s.cpu_usage_total_ns,
                s.cpu_usage_user_ns,
                s.cpu_usage_kernel_ns
            ),
            (5_213_000, 1_200_000, 4_013_000)
        );
        assert_eq!(
            (s.cpu_periods, s.cpu_throttled_periods, s.cpu_throttled_ns),
            (7, 2, 900_000)
        );
        assert_eq!((s.pids_current, s.pids_limit), (2, 0));
        assert_eq!((s.io_read_bytes, s.io_write_bytes), (12288, 512));
    }

    #[test]
    fn unlimited_memory_and_a_missing_cgroup() {
        let d = std::env::temp_dir().join(format!("strata-cg2-max-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("memory.max"), "max\n").unwrap();
        let s = read_v2(&d).unwrap();
        let _ = std::fs::remove_dir_all(&d);
        assert_eq!(s.memory_limit, u64::MAX);
        assert_eq!(s.memory_usage, 0, "no controller file: 0");
        assert!(matches!(read_v2(&d), Err(Error::NotFound(_))));
    }

    #[test]
    fn own_cgroup_directory() {
        // Whatever the host's layout, a v2 line names a path under the root given.
        if let Some(p) = dir_of(std::process::id(), Path::new("/x")) {
            assert!(p.starts_with("/x"), "{}", p.display());
        }
    }
}
