//! `strata.selftest=agent`: the agent checks its own protocol inside the guest, over real
//! AF_VSOCK through the guest kernel's vsock loopback (CID 1), for hosts whose QEMU has no
//! vhost-vsock. A client in the same process connects as the host would, and reports on the
//! console:
//!
//! - that port 1024, served as always, refuses the guest's own CID (1) at once;
//! - when the agent, served again with the self-test's one exception (the local CID admitted on
//!   port 1024 and the stream ports), first answered (guest uptime);
//! - with `strata.bundle=/dev/vdX`: a container with all three stdio streams over vsock, its
//!   stats, an OOM notice from a second container limited to 16 MiB, and a third for the calls
//!   of protocol 4 (pids, pause and resume, update, a terminal with a resize, CloseStdin, kill
//!   all) on the guest's cgroup v2;
//! - with the pod's virtio-fs share mounted (`strata.share=TAG`): every bundle on it
//!   (`/run/strata/shared/<id>`) run with its output streamed.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::client::{Agent, ClientError, StdioStream};
use crate::proto::agent::Stdio;
use crate::service::Serving;
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

type Res<T> = Result<T, String>;

/// A client error as the console shows it: what failed, and the chain.
fn e(what: &'static str) -> impl Fn(ClientError) -> String {
    move |err| format!("{what}: {}", chain(&err))
}

/// Runs the self-test, printing `strata-guest-agent: ...` lines; `bundle_disk` is the disk
/// (`/dev/vdX`) holding a bundle image (config.json, rootfs/).
pub fn run(bundle_disk: Option<&str>) {
    let addr = format!("vsock://-1:{AGENT_VSOCK_PORT}");
    let state = Path::new("/run/strata/containers");
    let mut failures = Vec::new();
    match refuses_the_guest(&addr, state) {
        Ok(took) => println!(
            "strata-guest-agent: port {AGENT_VSOCK_PORT} refused the guest's own CID ({}) in {} ms",
            vsock::CID_LOCAL,
            took.as_millis()
        ),
        Err(err) => failures.push(err),
    }
    let serving = match Serving::start(&addr, state, StreamTransport::Vsock { allow_local: true }) {
        Ok(s) => s,
        Err(err) => {
            println!("strata-guest-agent: serving failed: {}", chain(&err));
            return;
        }
    };
    let local = format!("vsock://{}:{AGENT_VSOCK_PORT}", vsock::CID_LOCAL);
    let t0 = Instant::now();
    let agent = loop {
        match Agent::connect(&local, CALL_TIMEOUT) {
            Ok(a) => break a,
            Err(err) if t0.elapsed() > Duration::from_secs(30) => {
                println!("strata-guest-agent: no answer over vsock: {err}");
                serving.stop();
                return;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    println!(
        "strata-guest-agent: agent ready, answered over vsock at {:.3} s of guest uptime",
        uptime()
    );
    let mut ran = false;
    if let Some(dev) = bundle_disk {
        ran = true;
        if let Err(err) = containers(&agent, dev).and_then(|b| protocol_4(&agent, &b)) {
            failures.push(err);
        }
    }
    if crate::share::mounted() {
        ran = true;
        if let Err(err) = shared(&agent) {
            failures.push(err);
        }
    }
    match failures.first() {
        Some(err) => println!("strata-guest-agent: vsock self-test failed: {err}"),
        None if ran => println!("strata-guest-agent: vsock self-test passed"),
        None => {}
    }
    let _ = agent.shutdown();
    serving.until_shutdown();
}

/// Serves port 1024 as the agent always does and connects from the guest itself: the
/// connection must be closed before it answers anything. How long the refusal took.
fn refuses_the_guest(addr: &str, state: &Path) -> Res<Duration> {
    let serving = Serving::start(addr, state, StreamTransport::Vsock { allow_local: false })
        .map_err(|err| format!("serving for the refusal check: {}", chain(&err)))?;
    let local = format!("vsock://{}:{AGENT_VSOCK_PORT}", vsock::CID_LOCAL);
    let t0 = Instant::now();
    let r = Agent::connect(&local, Duration::from_secs(10));
    let took = t0.elapsed();
    serving.stop();
    match r {
        Ok(_) => Err(format!(
            "port {AGENT_VSOCK_PORT} answered the guest's own CID outside the self-test"
        )),
        // Connected, then closed before Version was answered: refused by the agent (not a
        // port nobody listens on, which fails at connect).
        Err(ClientError::Call { .. }) if took < Duration::from_secs(5) => Ok(took),
        Err(err) => Err(format!(
            "the refusal of the guest's own CID took {took:?}: {}",
            chain(&err)
        )),
    }
}

/// Reads `s` until what came contains `want` (or the stream ends, or `within` passes).
fn read_until(s: &mut StdioStream, want: &str, within: Duration) -> Res<String> {
    let t0 = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    while !String::from_utf8_lossy(&got).contains(want) {
        if t0.elapsed() > within {
            return Err(format!(
                "no {want:?} within {within:?}; got {:?}",
                String::from_utf8_lossy(&got)
            ));
        }
        match s.read(&mut buf) {
            Ok(0) => {
                return Err(format!(
                    "the stream ended without {want:?}; got {:?}",
                    String::from_utf8_lossy(&got)
                ))
            }
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    Ok(String::from_utf8_lossy(&got).into_owned())
}

/// Polls `f` every 50 ms until it is true, at most `within`.
fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    loop {
        if f() {
            return true;
        }
        if t0.elapsed() > within {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A bundle at `/run/strata/<name>-bundle` on `bundle`'s rootfs, its config.json edited by
/// `edit`.
fn derived_bundle(
    bundle: &Path,
    name: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) -> Res<PathBuf> {
    let mut spec: serde_json::Value = std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or("reading the bundle's config.json")?;
    spec["root"]["path"] = bundle.join("rootfs").display().to_string().into();
    edit(&mut spec);
    let dir = PathBuf::from(format!("/run/strata/{name}-bundle"));
    std::fs::create_dir_all(&dir)
        .and_then(|_| std::fs::write(dir.join("config.json"), spec.to_string()))
        .map_err(|err| format!("writing the {name} bundle: {err}"))?;
    Ok(dir)
}

/// The bundle disk through `MountBundle`, a container with its three streams over vsock and
/// its stats, and an OOM-killed second one. The mounted bundle.
fn containers(agent: &Agent, dev: &str) -> Res<PathBuf> {
    // The bundle disk, mounted the way the host asks for it.
    let mounted = agent
        .mount_bundle(dev, "selftest")
        .map_err(e("mount bundle"))?;
    println!(
        "strata-guest-agent: bundle {dev} ({}) mounted at {}",
        mounted.fs_type, mounted.bundle
    );
    let bundle = PathBuf::from(&mounted.bundle);
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
    let s = agent.stats("streams").map_err(e("stats"))?;
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
    let oom_bundle = derived_bundle(&bundle, "oom", |spec| {
        spec["process"]["args"] = serde_json::json!([
            "/bin/dd",
            "if=/dev/zero",
            "of=/dev/null",
            "bs=64M",
            "count=1"
        ]);
        spec["linux"]["resources"] = serde_json::json!({"memory": {"limit": 16 << 20}});
    })?;
    agent
        .create_container("oom", &oom_bundle.display().to_string(), Stdio::default())
        .map_err(e("create oom"))?;
    agent.start("oom", "").map_err(e("start oom"))?;
    let status = agent.wait("oom", "", CALL_TIMEOUT).map_err(e("wait oom"))?;
    let notice = agent
        .oom_event(Duration::from_secs(30))
        .map_err(|err| err.to_string())?;
    println!("strata-guest-agent: oom notice={notice:?} status={status}");
    let s = agent.stats("oom").map_err(e("stats oom"))?;
    println!(
        "strata-guest-agent: oom stats memory_limit={} oom_kills={} failcnt={}",
        s.memory_limit, s.memory_oom_kills, s.memory_failcnt
    );
    if s.memory_limit != 16 << 20 || s.memory_oom_kills == 0 {
        return Err(format!("the OOM container's stats: {s:?}"));
    }
    Ok(bundle)
}

/// Protocol 4's calls on a container of `bundle`'s rootfs that ticks into /tmp/ticks ten times
/// a second beside a long sleep: pids, pause (no tick for 1.5 s) and resume, a memory limit by
/// update, an exec'd terminal (tty, a resize seen by stty), CloseStdin of a non-streamed
/// stdin, kill of all.
fn protocol_4(agent: &Agent, bundle: &Path) -> Res<()> {
    let b = derived_bundle(bundle, "v4", |spec| {
        spec["process"]["args"] = serde_json::json!([
            "/bin/sh",
            "-c",
            "sleep 1000 & while :; do echo x >> /tmp/ticks; sleep 0.1; done"
        ]);
        if let Some(m) = spec["mounts"].as_array_mut() {
            m.push(serde_json::json!({
                "destination": "/dev/pts", "type": "devpts", "source": "devpts",
                "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]
            }));
        }
    })?;
    let ticks_file = bundle.join("rootfs/tmp/ticks");
    let ticks = || std::fs::metadata(&ticks_file).map(|m| m.len()).unwrap_or(0);
    agent
        .create_container("v4", &b.display().to_string(), Stdio::default())
        .map_err(e("create v4"))?;
    let init = agent.start("v4", "").map_err(e("start v4"))?;

    let mut pids = Vec::new();
    let listed = eventually(Duration::from_secs(30), || {
        pids = agent.pids("v4").unwrap_or_default();
        pids.contains(&init) && pids.len() >= 2
    });
    if !listed {
        return Err(format!("pids of v4: {pids:?} (init {init})"));
    }
    if !eventually(Duration::from_secs(30), || ticks() > 0) {
        return Err("v4 never ticked".into());
    }
    agent.pause("v4").map_err(e("pause"))?;
    let paused_at = ticks();
    std::thread::sleep(Duration::from_millis(1500));
    let after = ticks();
    agent.resume("v4").map_err(e("resume"))?;
    if after != paused_at {
        return Err(format!("v4 ticked while paused: {paused_at} -> {after}"));
    }
    if !eventually(Duration::from_secs(30), || ticks() > after) {
        return Err("v4 did not tick again after resume".into());
    }
    println!(
        "strata-guest-agent: v4 pids={} paused at {paused_at} bytes of ticks for 1.5 s, resumed",
        pids.len()
    );

    agent
        .update("v4", r#"{"memory": {"limit": 67108864}}"#)
        .map_err(e("update"))?;
    let limit = agent.stats("v4").map_err(e("stats v4"))?.memory_limit;
    println!("strata-guest-agent: v4 updated memory_limit={limit}");
    if limit != 64 << 20 {
        return Err(format!("memory limit after update: {limit}"));
    }

    let process = |terminal: bool, script: &str| {
        serde_json::json!({
            "terminal": terminal,
            "user": {"uid": 0, "gid": 0},
            "args": ["/bin/sh", "-c", script],
            "env": ["PATH=/bin", "TERM=xterm"],
            "cwd": "/"
        })
        .to_string()
    };
    let term = Stdio {
        terminal: true,
        stream_stdin: true,
        stream_stdout: true,
        ..Default::default()
    };
    let ports = agent
        .exec("v4", "tty", &process(true, "tty; read x; stty size"), term)
        .map_err(e("exec tty"))?;
    let mut stdin = agent.open_stream(ports.stdin).map_err(e("tty stdin"))?;
    let mut stdout = agent.open_stream(ports.stdout).map_err(e("tty stdout"))?;
    agent.start("v4", "tty").map_err(e("start tty"))?;
    let tty = read_until(&mut stdout, "/dev/pts/", Duration::from_secs(60))?;
    agent
        .resize_pty("v4", "tty", 100, 40)
        .map_err(e("resize"))?;
    stdin
        .write_all(b"\n")
        .map_err(|err| format!("tty stdin: {err}"))?;
    let size = read_until(&mut stdout, "40 100", Duration::from_secs(60))?;
    let status = agent
        .wait("v4", "tty", CALL_TIMEOUT)
        .map_err(e("wait tty"))?;
    println!(
        "strata-guest-agent: v4 terminal {:?} then {:?} status={status}",
        tty.trim(),
        size.lines().last().unwrap_or("").trim()
    );

    // stdin from a FIFO whose writer stays open: only CloseStdin ends it.
    let fifo = Path::new("/run/strata/v4-stdin");
    let _ = std::fs::remove_file(fifo);
    nix::unistd::mkfifo(fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(|err| format!("mkfifo: {err}"))?;
    let from_fifo = Stdio {
        stdin: fifo.display().to_string(),
        ..Default::default()
    };
    agent
        .exec(
            "v4",
            "cat",
            &process(false, "cat > /tmp/cat.out"),
            from_fifo,
        )
        .map_err(e("exec cat"))?;
    agent.start("v4", "cat").map_err(e("start cat"))?;
    let mut writer = std::fs::OpenOptions::new()
        .write(true)
        .open(fifo)
        .map_err(|err| format!("opening the FIFO: {err}"))?;
    writer
        .write_all(b"before CloseStdin\n")
        .map_err(|err| format!("writing the FIFO: {err}"))?;
    agent.close_stdin("v4", "cat").map_err(e("close stdin"))?;
    let status = agent
        .wait("v4", "cat", CALL_TIMEOUT)
        .map_err(e("wait cat"))?;
    drop(writer);
    let out = std::fs::read_to_string(bundle.join("rootfs/tmp/cat.out")).unwrap_or_default();
    println!("strata-guest-agent: v4 cat after CloseStdin status={status} read={out:?}");
    if status != 0 || out != "before CloseStdin\n" {
        return Err(format!("cat after CloseStdin: {status}, {out:?}"));
    }

    agent.kill("v4", "", 9, true).map_err(e("kill all"))?;
    let status = agent.wait("v4", "", CALL_TIMEOUT).map_err(e("wait v4"))?;
    let mut left = Vec::new();
    let gone = eventually(Duration::from_secs(10), || {
        left = agent.pids("v4").unwrap_or_default();
        left.is_empty()
    });
    println!("strata-guest-agent: v4 killed (all) status={status} left={left:?}");
    if status != 137 || !gone {
        return Err(format!("kill all: status {status}, left {left:?}"));
    }
    agent.delete("v4", "").map_err(e("delete v4"))
}

/// Every bundle on the pod's virtio-fs share: created from `/run/strata/shared/<id>`, its
/// output streamed, waited for, deleted.
fn shared(agent: &Agent) -> Res<()> {
    let mounts = agent.ping().map_err(e("ping"))?.mounts;
    println!("strata-guest-agent: mounts {}", mounts.join(","));
    if !mounts.iter().any(|m| m == "virtiofs") {
        return Err(format!("Ping's mounts lack virtiofs: {mounts:?}"));
    }
    let mut ids: Vec<String> = std::fs::read_dir(crate::share::SHARE_DIR)
        .map_err(|err| format!("reading the share: {err}"))?
        .filter_map(|d| d.ok())
        .filter(|d| d.path().join("config.json").is_file())
        .filter_map(|d| d.file_name().into_string().ok())
        .collect();
    ids.sort();
    for id in ids {
        let bundle = format!("{}/{id}", crate::share::SHARE_DIR);
        let io = Stdio {
            stream_stdout: true,
            stream_stderr: true,
            ..Default::default()
        };
        let ports = agent
            .create_container(&id, &bundle, io)
            .map_err(e("create from the share"))?
            .stdio_ports
            .unwrap_or_default();
        let mut stdout = agent.open_stream(ports.stdout).map_err(e("stdout"))?;
        let mut stderr = agent.open_stream(ports.stderr).map_err(e("stderr"))?;
        let err_reader = std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = stderr.read_to_end(&mut v);
            v
        });
        agent.start(&id, "").map_err(e("start from the share"))?;
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        let err_out = err_reader.join().unwrap_or_default();
        let status = agent.wait(&id, "", CALL_TIMEOUT).map_err(e("wait"))?;
        println!(
            "strata-guest-agent: shared bundle {id} stdout={:?} stderr={:?} status={status}",
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&err_out)
        );
        agent.delete(&id, "").map_err(e("delete"))?;
    }
    Ok(())
}
