//! Reading a container's cgroup limits and usage from the host side, on cgroup v1, v2 or a
//! hybrid of both, and from containerd's metrics.

use std::fs;
use std::path::PathBuf;

use serde_json::Value;

/// The host path of `pid`'s cgroup for `controller` (v1), or its unified (v2) cgroup when no
/// v1 hierarchy holds that controller.
pub fn cgroup_dir(pid: u32, controller: &str) -> Option<PathBuf> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let mut unified = None;
    for line in text.lines() {
        let mut f = line.splitn(3, ':');
        let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
        if ctrls.is_empty() {
            unified = Some(path.to_string());
        } else if ctrls.split(',').any(|c| c == controller) {
            // Hierarchies that hold several controllers are mounted as e.g. cpu,cpuacct.
            for mount in [controller.to_string(), ctrls.to_string()] {
                let dir = PathBuf::from("/sys/fs/cgroup")
                    .join(&mount)
                    .join(path.trim_start_matches('/'));
                if dir.is_dir() {
                    return Some(dir);
                }
            }
        }
    }
    let path = unified?;
    for base in ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"] {
        let dir = PathBuf::from(base).join(path.trim_start_matches('/'));
        let enabled = fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
        if dir.is_dir() && enabled.split_whitespace().any(|c| c == controller) {
            return Some(dir);
        }
    }
    None
}

/// Reads the first of `files` that exists in `pid`'s `controller` cgroup.
pub fn read(pid: u32, controller: &str, files: &[&str]) -> Option<String> {
    let dir = cgroup_dir(pid, controller)?;
    files
        .iter()
        .find_map(|f| fs::read_to_string(dir.join(f)).ok())
        .map(|s| s.trim().to_string())
}

/// The memory limit of `pid`'s cgroup in bytes (None when unlimited or unknown).
pub fn memory_limit(pid: u32) -> Option<u64> {
    read(pid, "memory", &["memory.limit_in_bytes", "memory.max"])?
        .parse()
        .ok()
}

fn num(v: &Value) -> Option<u64> {
    v.as_u64()
}

/// Memory in use, from containerd's v1 (`memory.usage.usage`) or v2 (`memory.usage`) metrics.
pub fn metric_memory_usage(m: &Value) -> Option<u64> {
    num(&m["memory"]["usage"]["usage"]).or_else(|| num(&m["memory"]["usage"]))
}

/// The memory limit, from v1 (`memory.usage.limit`) or v2 (`memory.usage_limit`) metrics.
pub fn metric_memory_limit(m: &Value) -> Option<u64> {
    num(&m["memory"]["usage"]["limit"]).or_else(|| num(&m["memory"]["usage_limit"]))
}

/// The number of processes (`pids.current`, the same in v1 and v2).
pub fn metric_pids(m: &Value) -> Option<u64> {
    num(&m["pids"]["current"])
}

/// CPU time used in nanoseconds (v1 `cpu.usage.total`) or microseconds ×1000 (v2
/// `cpu.usage_usec`).
pub fn metric_cpu_ns(m: &Value) -> Option<u64> {
    num(&m["cpu"]["usage"]["total"]).or_else(|| num(&m["cpu"]["usage_usec"]).map(|u| u * 1000))
}
