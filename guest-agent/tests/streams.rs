//! Stdio as streams over the agent's transport, stats and OOM notices, with the agent run as a
//! host process on a Unix socket (the same code serves vsock ports in the guest: port P is the
//! socket `agent.sock_P` here). Needs root and a static busybox.

mod common;

use std::io::{Read, Write};
use std::thread::JoinHandle;
use std::time::Duration;

use common::*;
use strata_guest_agent::client::{Agent, StdioStream};
use strata_guest_agent::proto::agent::{CreateContainerRequest, Stdio, StdioPorts};

fn streamed(stdin: bool) -> Stdio {
    Stdio {
        stream_stdin: stdin,
        stream_stdout: true,
        stream_stderr: true,
        ..Default::default()
    }
}

/// Reads a stream to its end in a thread.
fn drain(mut s: StdioStream) -> JoinHandle<Vec<u8>> {
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    std::thread::spawn(move || {
        let mut v = Vec::new();
        s.read_to_end(&mut v).unwrap();
        v
    })
}

#[test]
fn stdio_streams_both_ways_with_stdin_eof() {
    if !can_run_containers() {
        return;
    }
    let dir = scratch("streams");
    let mut host = HostAgent::start(&dir);
    let agent = Agent::connect_unix(&host.sock, Duration::from_secs(30)).unwrap();
    let c = Calls(&agent);

    // c1 echoes its stdin until end-of-file, then writes to stderr and exits 4.
    let b1 = bundle(
        &dir,
        "c1",
        &["/bin/sh", "-c", "cat; echo to-stderr >&2; exit 4"],
    );
    let ports = c.create("c1", &b1, streamed(true));
    assert!(
        ports.stdin > 0 && ports.stdout > 0 && ports.stderr > 0,
        "{ports:?}"
    );
    let mut stdin = agent.open_stream(ports.stdin).unwrap();
    let stdout = drain(agent.open_stream(ports.stdout).unwrap());
    let stderr = drain(agent.open_stream(ports.stderr).unwrap());
    c.start("c1", "");
    // More than a pipe's and a socket's buffers, so both directions must flow at once.
    let input: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    stdin.write_all(&input).unwrap();
    // Closing stdin is the process's end-of-file: cat returns.
    stdin.close_write().unwrap();
    assert_eq!(c.wait("c1", ""), 4);
    let out = stdout.join().unwrap();
    assert_eq!(out.len(), input.len());
    assert!(out == input, "stdout differs from what went in");
    assert_eq!(stderr.join().unwrap(), b"to-stderr\n");

    // An exec'd process with streamed stdio in a running container; stats of that container.
    let b2 = bundle(&dir, "c2", &["/bin/sleep", "1000"]);
    let none = c.create("c2", &b2, Stdio::default());
    assert_eq!(none, StdioPorts::default(), "nothing streamed, no ports");
    c.start("c2", "");
    let ports = c.exec(
        "c2",
        "e1",
        "tr a-z A-Z; echo exec-stderr >&2",
        streamed(true),
    );
    let mut stdin = agent.open_stream(ports.stdin).unwrap();
    let stdout = drain(agent.open_stream(ports.stdout).unwrap());
    let stderr = drain(agent.open_stream(ports.stderr).unwrap());
    c.start("c2", "e1");
    stdin.write_all(b"input of the exec\n").unwrap();
    stdin.close_write().unwrap();
    assert_eq!(c.wait("c2", "e1"), 0);
    assert_eq!(stdout.join().unwrap(), b"INPUT OF THE EXEC\n");
    assert_eq!(stderr.join().unwrap(), b"exec-stderr\n");

    let s = agent.stats("c2").unwrap();
    assert!(s.cgroup_version == 1 || s.cgroup_version == 2, "{s:?}");
    assert!(s.pids_current >= 1, "{s:?}");
    assert!(s.memory_usage > 0, "{s:?}");
    assert!(agent.stats("nope").is_err());

    // A stream and a path for the same stream is refused; so is a terminal with streams.
    let bad = Stdio {
        stdout: dir.join("x.out").display().to_string(),
        stream_stdout: true,
        ..Default::default()
    };
    let b3 = bundle(&dir, "c3", &["/bin/true"]);
    let e = agent
        .raw()
        .create_container(
            ctx(),
            &CreateContainerRequest {
                id: "c3".into(),
                bundle: b3.display().to_string(),
                stdio: Some(bad).into(),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(e.to_string().contains("cannot also have a path"), "{e}");

    // Ports nobody connected to are closed when their container goes.
    let b4 = bundle(&dir, "c4", &["/bin/echo", "unread"]);
    let ports = c.create("c4", &b4, streamed(false));
    let port_path = format!("{}_{}", host.sock.display(), ports.stdout);
    assert!(std::path::Path::new(&port_path).exists());
    c.start("c4", "");
    assert_eq!(c.wait("c4", ""), 0);
    c.delete("c4");
    let t0 = std::time::Instant::now();
    while std::path::Path::new(&port_path).exists() {
        assert!(t0.elapsed() < Duration::from_secs(5), "{port_path} left");
        std::thread::sleep(Duration::from_millis(20));
    }

    c.kill("c2", 9);
    assert_eq!(c.wait("c2", ""), 137);
    c.delete("c1");
    c.delete("c2");
    agent.shutdown().unwrap();
    assert!(host.child.wait().unwrap().success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn oom_kill_in_a_container_is_a_notice() {
    if !can_run_containers() {
        return;
    }
    let dir = scratch("oom");
    let mut host = HostAgent::start(&dir);
    let agent = Agent::connect_unix(&host.sock, Duration::from_secs(30)).unwrap();
    let c = Calls(&agent);
    // No notice yet: the call comes back empty at its deadline.
    assert_eq!(agent.oom_event(Duration::from_millis(200)).unwrap(), None);

    // 32 MiB of memory; dd's 128 MiB buffer, filled from /dev/zero, goes past it.
    let b = bundle_with(
        &dir,
        "hog",
        &[
            "/bin/dd",
            "if=/dev/zero",
            "of=/dev/null",
            "bs=128M",
            "count=1",
        ],
        serde_json::json!({"memory": {"limit": 32 << 20, "swap": 32 << 20}}),
    );
    c.create("hog", &b, Stdio::default());
    let s = agent.stats("hog").unwrap();
    assert_eq!(s.memory_limit, 32 << 20, "{s:?}");
    c.start("hog", "");
    assert_eq!(c.wait("hog", ""), 128 + 9, "killed by the OOM killer");
    assert_eq!(
        agent.oom_event(Duration::from_secs(10)).unwrap().as_deref(),
        Some("hog")
    );
    c.delete("hog");
    agent.shutdown().unwrap();
    assert!(host.child.wait().unwrap().success());
    let _ = std::fs::remove_dir_all(&dir);
}
