//! The agent protocol end to end with the agent run as a host process on a Unix socket (same
//! code as on vsock): version exchange, a refused version, Ping, MountBundle's refusals,
//! Shutdown ending the process.
//! And the host side against a malicious agent: garbage replies are errors within the deadline.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{scratch, HostAgent};
use proptest::prelude::*;
use strata_guest_agent::client::{Agent, ClientError};
use strata_guest_agent::proto::agent::VersionRequest;

#[test]
fn agent_over_unix_socket() {
    let dir = scratch("unix");
    let mut host = HostAgent::start(&dir);
    let sock = host.sock.clone();
    let timeout = Duration::from_secs(10);

    // A host speaking another version is told so.
    let raw = ttrpc::Client::connect(&format!("unix://{}", sock.display())).unwrap();
    let raw = strata_guest_agent::proto::agent_ttrpc::AgentClient::new(raw);
    let r = raw
        .version(
            ttrpc::context::with_timeout(timeout.as_nanos() as i64),
            &VersionRequest {
                host_version: 99,
                ..Default::default()
            },
        )
        .unwrap();
    assert!(!r.compatible);
    assert_eq!(r.agent_version, strata_guest_agent::PROTOCOL_VERSION);

    let agent = Agent::connect_unix(&sock, timeout).unwrap();
    let p = agent.ping().unwrap();
    assert_eq!(p.pid, host.child.id());
    assert!(p.uptime_ms < 60_000);
    // Two clients at once.
    let second = Agent::connect(&format!("unix://{}", sock.display()), timeout).unwrap();
    assert_eq!(second.ping().unwrap().pid, host.child.id());

    // MountBundle: arguments checked first; then a host-process agent refuses to mount
    // anything (this host's own /dev/vda must stay untouched). Mounting is tested in the guest
    // (qemu_tcg::streams_stats_and_oom_over_vsock_inside_the_guest_under_qemu_tcg).
    let code = |device: &str, name: &str| match agent.mount_bundle(device, name) {
        Err(ClientError::Call {
            source: ttrpc::Error::RpcStatus(s),
            ..
        }) => s.code(),
        other => panic!(
            "MountBundle({device:?}, {name:?}): {:?}",
            other.map(|r| r.bundle)
        ),
    };
    assert_eq!(code("/dev/sda", "b"), ttrpc::Code::INVALID_ARGUMENT);
    assert_eq!(code("/dev/vda1", "b"), ttrpc::Code::INVALID_ARGUMENT);
    assert_eq!(code("/dev/vda", "../b"), ttrpc::Code::INVALID_ARGUMENT);
    assert_eq!(code("/dev/vda", ""), ttrpc::Code::INVALID_ARGUMENT);
    assert_eq!(code("/dev/vda", "b"), ttrpc::Code::FAILED_PRECONDITION);
    assert!(!dir.join("bundles").exists(), "nothing created");
    agent.shutdown().unwrap();
    let status = host.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!sock.exists(), "socket removed on shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A fake agent that answers any request with `reply` (then keeps the connection open).
fn fake_agent(sock: PathBuf, reply: Vec<u8>) -> std::thread::JoinHandle<()> {
    let l = UnixListener::bind(&sock).unwrap();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = l.accept() {
            let mut buf = [0u8; 4096];
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = s.read(&mut buf);
            let _ = s.write_all(&reply);
            // Hold the connection a little past the client's 1 s deadline (or until it closes).
            let _ = s.set_read_timeout(Some(Duration::from_millis(1300)));
            while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// Garbage, or a frame header claiming a huge or bogus message, is an error within the
    /// deadline: no panic, no hang, no allocation of what the header claims.
    #[test]
    fn malformed_agent_replies_are_errors(
        garbage in proptest::collection::vec(any::<u8>(), 0..256),
        claimed_len in prop_oneof![Just(u32::MAX), Just(4 << 20), any::<u32>()],
        framed in any::<bool>(),
    ) {
        let dir = scratch("fuzz");
        let sock = dir.join("fake.sock");
        let mut reply = Vec::new();
        if framed {
            // ttrpc frame header: length, stream id 1 (the first request's), type 2 (response).
            reply.extend_from_slice(&claimed_len.to_be_bytes());
            reply.extend_from_slice(&1u32.to_be_bytes());
            reply.push(2);
            reply.push(0);
        }
        reply.extend_from_slice(&garbage);
        let server = fake_agent(sock.clone(), reply);
        let t0 = Instant::now();
        let r = Agent::connect_unix(&sock, Duration::from_secs(1));
        prop_assert!(t0.elapsed() < Duration::from_secs(5), "took {:?}", t0.elapsed());
        prop_assert!(matches!(r, Err(ClientError::Call { .. }) | Err(ClientError::Client(_))), "{:?}", r.err());
        let _ = server.join();
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The hybrid-vsock client path: a stand-in for the VMM's vsock socket answers `CONNECT 1024`
/// with `OK <port>` and then relays bytes to the agent; a refusal is a clear error.
#[test]
fn hybrid_vsock_client_path() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::net::UnixStream;

    let dir = scratch("hybrid");
    let mut host = HostAgent::start(&dir);
    let agent_sock = host.sock.clone();
    let vsock = dir.join("v.sock");
    let l = UnixListener::bind(&vsock).unwrap();
    let relay_to = agent_sock.clone();
    let relay = std::thread::spawn(move || {
        for (i, conn) in l.incoming().take(2).enumerate() {
            let s = conn.unwrap();
            let mut line = String::new();
            BufReader::new(&s).read_line(&mut line).unwrap();
            let mut w = s.try_clone().unwrap();
            if i == 0 {
                assert_eq!(line, "CONNECT 1024\n");
                w.write_all(b"OK 1073741824\n").unwrap();
                let up = UnixStream::connect(&relay_to).unwrap();
                let (mut a, mut b) = (s.try_clone().unwrap(), up.try_clone().unwrap());
                let t = std::thread::spawn(move || std::io::copy(&mut a, &mut b));
                let (mut c, mut d) = (up, w);
                let _ = std::io::copy(&mut c, &mut d);
                let _ = t.join();
            } else {
                w.write_all(b"NO SUCH PORT\n").unwrap();
            }
        }
    });
    let agent = Agent::connect_hybrid_vsock(&vsock, 1024, Duration::from_secs(10)).unwrap();
    assert_eq!(agent.ping().unwrap().pid, host.child.id());
    agent.shutdown().unwrap();
    assert!(host.child.wait().unwrap().success());
    drop(agent);
    match Agent::connect_hybrid_vsock(&vsock, 1024, Duration::from_secs(10)) {
        Err(ClientError::VsockRefused { port: 1024, reply }) => assert_eq!(reply, "NO SUCH PORT"),
        other => panic!("expected a refusal, got {:?}", other.err()),
    }
    relay.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
