//! Stdio as streams over the agent's transport, stats and OOM notices, CloseStdin (a stdin path
//! and a streamed stdin), a terminal over the streams with its window resized, with the agent
//! run as a host process on a Unix socket (the same code serves vsock ports in the guest: port P
//! is the socket `agent.sock_P` here). Needs root and a static busybox.

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
    let term_stderr = Stdio {
        terminal: true,
        stream_stdout: true,
        stream_stderr: true,
        ..Default::default()
    };
    let e = agent
        .create_container("c3", &b3.display().to_string(), term_stderr)
        .unwrap_err();
    assert!(e.to_string().contains("CreateContainer"), "{e}");
    assert!(format!("{e:?}").contains("no stderr of its own"), "{e:?}");

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

/// Reads `s` until what came contains `want`; all of it.
fn read_until(s: &mut StdioStream, want: &str) -> String {
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains(want) {
        let n = s.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "ended without {want:?}: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn close_stdin_ends_a_stdin_path_and_a_streamed_stdin() {
    if !can_run_containers() {
        return;
    }
    // Container ids of their own: the agents of this file's tests share the native state and
    // cgroup names, and an init's exit kills what is left in its container's cgroup.
    let dir = scratch("close-stdin");
    let mut host = HostAgent::start(&dir);
    let agent = Agent::connect_unix(&host.sock, Duration::from_secs(30)).unwrap();
    let c = Calls(&agent);

    // stdin from a FIFO whose writer stays open (as containerd's): only CloseStdin ends cat.
    let fifo = dir.join("cs1.stdin");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let out = dir.join("cs1.out");
    let b1 = bundle(&dir, "cs1", &["/bin/cat"]);
    let io = Stdio {
        stdin: fifo.display().to_string(),
        stdout: out.display().to_string(),
        ..Default::default()
    };
    c.create("cs1", &b1, io);
    c.start("cs1", "");
    let mut writer = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    writer.write_all(b"through the FIFO\n").unwrap();
    agent.close_stdin("cs1", "").unwrap();
    assert_eq!(c.wait("cs1", ""), 0);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "through the FIFO\n");
    drop(writer);

    // A streamed stdin the host keeps open: CloseStdin ends it after what was sent. In an
    // exec'd cat, so the container lives on.
    let b2 = bundle(&dir, "cs2", &["/bin/sleep", "1000"]);
    c.create("cs2", &b2, Stdio::default());
    c.start("cs2", "");
    let ports = c.exec("cs2", "cat", "cat", streamed(true));
    let mut stdin = agent.open_stream(ports.stdin).unwrap();
    let stdout = drain(agent.open_stream(ports.stdout).unwrap());
    let _stderr = drain(agent.open_stream(ports.stderr).unwrap());
    c.start("cs2", "cat");
    stdin.write_all(b"over the stream\n").unwrap();
    agent.close_stdin("cs2", "cat").unwrap();
    assert_eq!(c.wait("cs2", "cat"), 0);
    assert_eq!(stdout.join().unwrap(), b"over the stream\n");
    assert!(agent.close_stdin("cs2", "nope").is_err());
    assert!(agent.close_stdin("nope", "").is_err());

    c.kill("cs2", 9);
    assert_eq!(c.wait("cs2", ""), 137);
    c.delete("cs1");
    c.delete("cs2");
    agent.shutdown().unwrap();
    assert!(host.child.wait().unwrap().success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_terminal_over_the_streams_with_its_window_resized() {
    if !can_run_containers() {
        return;
    }
    let dir = scratch("terminal");
    let mut host = HostAgent::start(&dir);
    let agent = Agent::connect_unix(&host.sock, Duration::from_secs(30)).unwrap();
    let c = Calls(&agent);
    let term = || Stdio {
        terminal: true,
        stream_stdin: true,
        stream_stdout: true,
        ..Default::default()
    };
    // The init with a terminal: tty names a pty; after the resize stty sees the new size.
    let script = "tty; read line; echo got $line; stty size; sleep 1000";
    let b = terminal_bundle(&dir, "t1", &["/bin/sh", "-c", script]);
    let ports = c.create("t1", &b, term());
    assert!(ports.stdin > 0 && ports.stdout > 0, "{ports:?}");
    assert_eq!(ports.stderr, 0, "a terminal has no stderr");
    let mut stdin = agent.open_stream(ports.stdin).unwrap();
    let mut stdout = agent.open_stream(ports.stdout).unwrap();
    c.start("t1", "");
    let first = read_until(&mut stdout, "/dev/pts/");
    assert!(first.contains("/dev/pts/"), "{first:?}");
    agent.resize_pty("t1", "", 100, 40).unwrap();
    stdin.write_all(b"typed\n").unwrap();
    let rest = read_until(&mut stdout, "40 100");
    assert!(rest.contains("got typed"), "{rest:?}");

    // An exec'd process with a terminal of its own, in the same container.
    let ports = c.exec("t1", "e1", "tty; read line; stty size", term());
    let mut e_stdin = agent.open_stream(ports.stdin).unwrap();
    let mut e_stdout = agent.open_stream(ports.stdout).unwrap();
    c.start("t1", "e1");
    let tty = read_until(&mut e_stdout, "/dev/pts/");
    agent.resize_pty("t1", "e1", 132, 50).unwrap();
    e_stdin.write_all(b"\n").unwrap();
    read_until(&mut e_stdout, "50 132");
    assert_eq!(c.wait("t1", "e1"), 0);
    // Its output ends with the process.
    let mut tail = Vec::new();
    e_stdout
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    e_stdout.read_to_end(&mut tail).unwrap();
    assert!(tty.contains("/dev/pts/"), "{tty:?}");

    // No terminal, no resize.
    let b2 = bundle(&dir, "plain", &["/bin/sleep", "1000"]);
    c.create("plain", &b2, Stdio::default());
    let e = agent.resize_pty("plain", "", 80, 25).unwrap_err();
    assert!(format!("{e:?}").contains("no terminal"), "{e:?}");
    let e = agent.resize_pty("t1", "", 70_000, 25).unwrap_err();
    assert!(format!("{e:?}").contains("65535"), "{e:?}");

    c.kill("t1", 9);
    assert_eq!(c.wait("t1", ""), 137);
    c.delete("t1");
    c.delete("plain");
    agent.shutdown().unwrap();
    assert!(host.child.wait().unwrap().success());
    let _ = std::fs::remove_dir_all(&dir);
}
