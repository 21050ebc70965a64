//! The agent as a host process on a Unix socket (same code as on vsock): version exchange,
//! a request, a refused version, shutdown ending the process.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn agent_over_unix_socket() {
    let dir = std::env::temp_dir().join(format!("strata-agent-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("agent.sock");
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata-guest-agent"))
        .arg("--listen-unix")
        .arg(&sock)
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let connect = || loop {
        match UnixStream::connect(&sock) {
            Ok(s) => {
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                return s;
            }
            Err(_) if t0.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("agent socket never appeared: {e}"),
        }
    };

    let mut s = connect();
    s.write_all(b"STRATA-AGENT 7\n").unwrap();
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).unwrap();
    assert_eq!(line, "ERR unsupported version STRATA-AGENT 7\n");

    let mut s = connect();
    let mut r = BufReader::new(s.try_clone().unwrap());
    s.write_all(b"STRATA-AGENT 1\nPING\nSHUTDOWN\n").unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        got.push(l);
    }
    assert_eq!(got, ["STRATA-AGENT 1\n", "PONG\n", "OK\n"]);
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!sock.exists(), "socket removed on shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}
