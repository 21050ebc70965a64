//! `strata.selftest=agent`: the agent checks its own protocol inside the guest, over real
//! AF_VSOCK through the guest kernel's vsock loopback (CID 1), for hosts whose QEMU has no
//! vhost-vsock. The agent serves on port 1024 as usual (accepting the local CID for stdio
//! streams, which it refuses otherwise); a client in the same process connects as the host
//! would, and reports on the console: when the agent first answered (guest uptime), and with
//! `strata.bundle=/dev/vdX` a container with all three stdio streams over vsock, its stats, and
//! an OOM notice from a second container limited to 16 MiB.

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::client::{Agent, ClientError};
use crate::proto::agent::Stdio;
use crate::service::serve_with;
use crate::streams::StreamTransport;
use crate::{chain, vsock, AGENT_VSOCK_PORT};

/// Seconds since the guest booted.
pub fn uptime() -> f64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Each call's deadline (TCG is slow).
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs the self-test, printing `strata-guest-agent: ...` lines; `bundle_disk` is the disk
/// (`/dev/vdX`) holding a bundle image (config.json, rootfs/).
pub fn run(bundle_disk: Option<&str>) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = serve_with(
            &format!("vsock://-1:{AGENT_VSOCK_PORT}"),
            Path::new("/run/strata/containers"),
            StreamTransport::Vsock { allow_local: true },
            Some(tx),
        );
        if let Err(e) = r {
            println!("strata-guest-agent: serving failed: {e}");
        }
    });
    let _ = rx.recv_timeout(Duration::from_secs(60));
    let addr = format!("vsock://{}:{AGENT_VSOCK_PORT}", vsock::CID_LOCAL);
    let t0 = Instant::now();
    let agent = loop {
        match Agent::connect(&addr, CALL_TIMEOUT) {
            Ok(a) => break a,
            Err(e) if t0.elapsed() > Duration::from_secs(30) => {
                println!("strata-guest-agent: no answer over vsock: {e}");
                return;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    println!(
        "strata-guest-agent: agent ready, answered over vsock at {:.3} s of guest uptime",
        uptime()
    );
    if let Some(dev) = bundle_disk {
        match containers(&agent, dev) {
            Ok(()) => println!("strata-guest-agent: vsock self-test passed"),
            Err(e) => println!("strata-guest-agent: vsock self-test failed: {e}"),
        }
    }
    let _ = agent.shutdown();
}

type Res<T> = Result<T, String>;

fn containers(agent: &Agent, dev: &str) -> Res<()> {
    // The bundle disk, mounted the way the host asks for it.
    let mounted = agent
        .mount_bundle(dev, "selftest")
        .map_err(|err| format!("mount bundle: {}", chain(&err)))?;
    println!(
        "strata-guest-agent: bundle {dev} ({}) mounted at {}",
        mounted.fs_type, mounted.bundle
    );
    let bundle = Path::new(&mounted.bundle);
    let e = |what: &'static str| move |err: ClientError| format!("{what}: {}", chain(&err));
    let streamed = Stdio {
        stream_stdin: true,
        stream_stdout: true,
        stream_stderr: true,
        ..Default::default()
    };
    // The bundle's own process, with stdio over vsock; the host's part is played here.
    let ports = agent
        .create_container("streams", &mounted.bundle, streamed)
        .map_err(e("create"))?
        .stdio_ports
        .unwrap_or_default();
    let open = |p| {
        agent
            .open_stream(p)
            .map_err(|err| format!("stream {p}: {err}"))
    };
    let mut stdin = open(ports.stdin)?;
    let mut stdout = open(ports.stdout)?;
    let mut stderr = open(ports.stderr)?;
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    agent.start("streams", "").map_err(e("start"))?;
    // While it waits for stdin: its cgroup's figures.
    let s = agent
        .stats("streams")
        .map_err(|err| format!("stats: {}", chain(&err)))?;
    println!(
        "strata-guest-agent: stats cgroup=v{} memory_usage={} memory_limit={} cpu_usage_ns={} pids={}",
        s.cgroup_version, s.memory_usage, s.memory_limit, s.cpu_usage_total_ns, s.pids_current
    );
    if s.cgroup_version != 2
        || s.memory_usage == 0
        || s.memory_limit != u64::MAX
        || s.cpu_usage_total_ns == 0
        || s.pids_current == 0
    {
        return Err(format!("implausible stats: {s:?}"));
    }
    stdin
        .write_all(b"sent over vsock\n")
        .and_then(|_| stdin.close_write())
        .map_err(|err| format!("stdin: {err}"))?;
    let mut out = Vec::new();
    stdout
        .read_to_end(&mut out)
        .map_err(|err| format!("stdout: {err}"))?;
    let err_out = err_reader.join().unwrap_or_default();
    let status = agent.wait("streams", "", CALL_TIMEOUT).map_err(e("wait"))?;
    println!(
        "strata-guest-agent: streams stdout={:?} stderr={:?} status={status}",
        String::from_utf8_lossy(&out),
        String::from_utf8_lossy(&err_out)
    );

    // A second container on the same rootfs, 16 MiB of memory, allocating 64 MiB.
    let mut spec: serde_json::Value = std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or("reading the bundle's config.json")?;
    spec["root"]["path"] = bundle.join("rootfs").display().to_string().into();
    spec["process"]["args"] = serde_json::json!([
        "/bin/dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=64M",
        "count=1"
    ]);
    spec["linux"]["resources"] = serde_json::json!({"memory": {"limit": 16 << 20}});
    let oom_bundle = Path::new("/run/strata/oom-bundle");
    std::fs::create_dir_all(oom_bundle)
        .and_then(|_| std::fs::write(oom_bundle.join("config.json"), spec.to_string()))
        .map_err(|err| format!("writing the OOM bundle: {err}"))?;
    agent
        .create_container("oom", &oom_bundle.display().to_string(), Stdio::default())
        .map_err(e("create oom"))?;
    agent.start("oom", "").map_err(e("start oom"))?;
    let status = agent.wait("oom", "", CALL_TIMEOUT).map_err(e("wait oom"))?;
    let notice = agent
        .oom_event(Duration::from_secs(30))
        .map_err(|err| err.to_string())?;
    println!("strata-guest-agent: oom notice={notice:?} status={status}");
    let s = agent
        .stats("oom")
        .map_err(|err| format!("stats oom: {}", chain(&err)))?;
    println!(
        "strata-guest-agent: oom stats memory_limit={} oom_kills={} failcnt={}",
        s.memory_limit, s.memory_oom_kills, s.memory_failcnt
    );
    if s.memory_limit != 16 << 20 || s.memory_oom_kills == 0 {
        return Err(format!("the OOM container's stats: {s:?}"));
    }
    Ok(())
}
