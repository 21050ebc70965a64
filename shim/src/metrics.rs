//! A backend's [`Stats`] in containerd's cgroup metrics types (v1 or v2), packed as `Any`
//! with the type URLs `ctr task metrics` and the CRI plugin look up.

use containerd_shim::protos::cgroups::metrics as v1;
use containerd_shim::protos::cgroups_v2::metrics as v2;
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::Message;
use strata_backend::Stats;

/// Packs `s` as `io.containerd.cgroups.v1.Metrics` or `io.containerd.cgroups.v2.Metrics`.
pub fn to_any(s: &Stats) -> Result<Any, containerd_shim::protos::protobuf::Error> {
    let (type_url, value) = if s.cgroup_version == 2 {
        (
            "io.containerd.cgroups.v2.Metrics",
            to_v2(s).write_to_bytes()?,
        )
    } else {
        (
            "io.containerd.cgroups.v1.Metrics",
            to_v1(s).write_to_bytes()?,
        )
    };
    Ok(Any {
        type_url: type_url.to_string(),
        value,
        ..Default::default()
    })
}

pub fn to_v1(s: &Stats) -> v1::Metrics {
    let mut m = v1::Metrics::new();
    m.pids = Some(v1::PidsStat {
        current: s.pids_current,
        limit: s.pids_limit,
        ..Default::default()
    })
    .into();
    m.cpu = Some(v1::CPUStat {
        usage: Some(v1::CPUUsage {
            total: s.cpu_usage_total_ns,
            kernel: s.cpu_usage_kernel_ns,
            user: s.cpu_usage_user_ns,
            ..Default::default()
        })
        .into(),
        throttling: Some(v1::Throttle {
            periods: s.cpu_periods,
            throttled_periods: s.cpu_throttled_periods,
            throttled_time: s.cpu_throttled_ns,
            ..Default::default()
        })
        .into(),
        ..Default::default()
    })
    .into();
    m.memory = Some(v1::MemoryStat {
        cache: s.memory_cache,
        rss: s.memory_rss,
        usage: Some(v1::MemoryEntry {
            limit: s.memory_limit,
            usage: s.memory_usage,
            max: s.memory_max_usage,
            failcnt: s.memory_failcnt,
            ..Default::default()
        })
        .into(),
        ..Default::default()
    })
    .into();
    m.memory_oom_control = Some(v1::MemoryOomControl {
        oom_kill: s.memory_oom_kills,
        ..Default::default()
    })
    .into();
    let entry = |op: &str, value| v1::BlkIOEntry {
        op: op.to_string(),
        value,
        ..Default::default()
    };
    m.blkio = Some(v1::BlkIOStat {
        io_service_bytes_recursive: vec![
            entry("Read", s.io_read_bytes),
            entry("Write", s.io_write_bytes),
        ],
        ..Default::default()
    })
    .into();
    m
}

pub fn to_v2(s: &Stats) -> v2::Metrics {
    let mut m = v2::Metrics::new();
    m.pids = Some(v2::PidsStat {
        current: s.pids_current,
        limit: s.pids_limit,
        ..Default::default()
    })
    .into();
    m.cpu = Some(v2::CPUStat {
        usage_usec: s.cpu_usage_total_ns / 1000,
        user_usec: s.cpu_usage_user_ns / 1000,
        system_usec: s.cpu_usage_kernel_ns / 1000,
        nr_periods: s.cpu_periods,
        nr_throttled: s.cpu_throttled_periods,
        throttled_usec: s.cpu_throttled_ns / 1000,
        ..Default::default()
    })
    .into();
    m.memory = Some(v2::MemoryStat {
        usage: s.memory_usage,
        usage_limit: s.memory_limit,
        max_usage: s.memory_max_usage,
        anon: s.memory_rss,
        file: s.memory_cache,
        ..Default::default()
    })
    .into();
    m.memory_events = Some(v2::MemoryEvents {
        oom_kill: s.memory_oom_kills,
        ..Default::default()
    })
    .into();
    m.io = Some(v2::IOStat {
        usage: vec![v2::IOEntry {
            rbytes: s.io_read_bytes,
            wbytes: s.io_write_bytes,
            ..Default::default()
        }],
        ..Default::default()
    })
    .into();
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_metrics_type_by_cgroup_version() {
        let s = Stats {
            cgroup_version: 1,
            memory_usage: 4096,
            memory_limit: 1 << 20,
            pids_current: 3,
            ..Default::default()
        };
        let a = to_any(&s).unwrap();
        assert_eq!(a.type_url, "io.containerd.cgroups.v1.Metrics");
        let m = v1::Metrics::parse_from_bytes(&a.value).unwrap();
        assert_eq!(m.memory.usage.usage, 4096);
        assert_eq!(m.memory.usage.limit, 1 << 20);
        assert_eq!(m.pids.current, 3);
        let a = to_any(&Stats {
            cgroup_version: 2,
            cpu_usage_total_ns: 5_000,
            ..s
        })
        .unwrap();
        assert_eq!(a.type_url, "io.containerd.cgroups.v2.Metrics");
        let m = v2::Metrics::parse_from_bytes(&a.value).unwrap();
        assert_eq!(m.cpu.usage_usec, 5);
        assert_eq!(m.memory.usage_limit, 1 << 20);
    }
}
