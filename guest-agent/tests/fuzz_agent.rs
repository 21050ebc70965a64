//! Malformed messages to the agent (proptest): raw garbage, ttrpc frames with bogus headers and
//! lengths, requests naming unknown services or methods with random payloads, and well-formed
//! requests with random contents. After every case the agent (a host process on a Unix socket,
//! the same code as on vsock) must still answer Ping within its deadline: no crash, no hang.
//! (The host side against a malicious agent is `agent::malformed_agent_replies_are_errors`.)

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use protobuf::Message;
use strata_guest_agent::client::Agent;
use strata_guest_agent::proto::agent::{
    CloseStdinRequest, CreateContainerRequest, ExecRequest, KillRequest, PauseRequest, PidsRequest,
    ResizePtyRequest, ResumeRequest, StartRequest, StatsRequest, Stdio, UpdateRequest, WaitRequest,
};

const SERVICE: &str = "strata.agent.v1.Agent";
/// Every method but Shutdown (which is allowed to end the agent).
const METHODS: &[&str] = &[
    "Version",
    "Ping",
    "MountBundle",
    "CreateContainer",
    "Start",
    "Exec",
    "Kill",
    "Wait",
    "Delete",
    "Stats",
    "OomEvent",
    "Pause",
    "Resume",
    "Pids",
    "Update",
    "ResizePty",
    "CloseStdin",
];

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn field_bytes(tag: u8, b: &[u8], out: &mut Vec<u8>) {
    out.push(tag);
    varint(b.len() as u64, out);
    out.extend_from_slice(b);
}

/// A ttrpc Request message (service, method, payload, timeout) in a frame.
fn request(stream: u32, service: &str, method: &str, payload: &[u8], timeout_ns: u64) -> Vec<u8> {
    let mut body = Vec::new();
    field_bytes(0x0a, service.as_bytes(), &mut body);
    field_bytes(0x12, method.as_bytes(), &mut body);
    field_bytes(0x1a, payload, &mut body);
    body.push(0x20);
    varint(timeout_ns, &mut body);
    frame(body.len() as u32, stream, 1, 0, &body)
}

fn frame(len: u32, stream: u32, kind: u8, flags: u8, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(10 + body.len());
    f.extend_from_slice(&len.to_be_bytes());
    f.extend_from_slice(&stream.to_be_bytes());
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(body);
    f
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z0-9/._-]{1,24}",
        Just("../../etc".to_string()),
        Just("/".to_string()),
        any::<String>(),
    ]
}

/// A well-formed request with random contents: (method, payload).
fn typed_request() -> impl Strategy<Value = (&'static str, Vec<u8>)> {
    let stdio = || {
        (any::<[bool; 4]>(), text()).prop_map(|(b, p)| Stdio {
            stdout: if b[3] { p } else { String::new() },
            stream_stdin: b[0],
            stream_stdout: b[1],
            stream_stderr: b[2],
            terminal: b[3] && b[0],
            ..Default::default()
        })
    };
    prop_oneof![
        (text(), text(), stdio()).prop_map(|(id, bundle, io)| (
            "CreateContainer",
            CreateContainerRequest {
                id,
                bundle,
                stdio: Some(io).into(),
                ..Default::default()
            }
            .write_to_bytes()
            .unwrap()
        )),
        (text(), text(), text(), stdio()).prop_map(|(id, exec_id, process_json, io)| (
            "Exec",
            ExecRequest {
                id,
                exec_id,
                process_json,
                stdio: Some(io).into(),
                ..Default::default()
            }
            .write_to_bytes()
            .unwrap()
        )),
        (text(), any::<u32>(), any::<bool>()).prop_map(|(id, signal, all)| (
            "Kill",
            KillRequest {
                id,
                signal,
                all,
                ..Default::default()
            }
            .write_to_bytes()
            .unwrap()
        )),
        (text(), text()).prop_map(|(id, exec_id)| (
            "Start",
            StartRequest {
                id,
                exec_id,
                ..Default::default()
            }
            .write_to_bytes()
            .unwrap()
        )),
        (text(), text()).prop_map(|(id, exec_id)| (
            "Wait",
            WaitRequest {
                id,
                exec_id,
                ..Default::default()
            }
            .write_to_bytes()
            .unwrap()
        )),
        text().prop_map(|id| (
            "Stats",
            StatsRequest {
                id,
                ..Default::default()
            }
            .write_to_bytes()
            .unwrap()
        )),
        text().prop_map(|id| (
            "Pause",
            PauseRequest {
                id,
                ..Default::default()
            }
            .write_to_bytes()
            .unwrap()
        )),
        text().prop_map(|id| (
            "Resume",
            ResumeRequest {
                id,
                ..Default::default()
            }
            .write_to_bytes()
            .unwrap()
        )),
        text().prop_map(|id| (
            "Pids",
            PidsRequest {
                id,
                ..Default::default()
            }
            .write_to_bytes()
            .unwrap()
        )),
        (text(), resources()).prop_map(|(id, resources_json)| (
            "Update",
            UpdateRequest {
                id,
                resources_json,
                ..Default::default()
            }
            .write_to_bytes()
            .unwrap()
        )),
        (text(), text(), any::<u32>(), any::<u32>()).prop_map(|(id, exec_id, width, height)| (
            "ResizePty",
            ResizePtyRequest {
                id,
                exec_id,
                width,
                height,
                ..Default::default()
            }
            .write_to_bytes()
            .unwrap()
        )),
        (text(), text()).prop_map(|(id, exec_id)| (
            "CloseStdin",
            CloseStdinRequest {
                id,
                exec_id,
                ..Default::default()
            }
            .write_to_bytes()
            .unwrap()
        )),
    ]
}

/// An Update's resources: JSON of the right shape with wild numbers, or anything.
fn resources() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<(i64, i64, u64)>().prop_map(|(limit, swap, shares)| format!(
            r#"{{"memory": {{"limit": {limit}, "swap": {swap}}}, "cpu": {{"shares": {shares}}}}}"#
        )),
        Just("{}".to_string()),
        any::<String>(),
    ]
}

#[derive(Debug, Clone)]
enum Case {
    Garbage(Vec<u8>),
    BadFrame {
        len: u32,
        stream: u32,
        kind: u8,
        flags: u8,
        body: Vec<u8>,
    },
    UnknownMethod {
        service: String,
        method: String,
        payload: Vec<u8>,
    },
    RandomPayload {
        method: &'static str,
        payload: Vec<u8>,
    },
    Typed {
        method: &'static str,
        payload: Vec<u8>,
    },
}

fn case() -> impl Strategy<Value = Case> {
    let bytes = || proptest::collection::vec(any::<u8>(), 0..512);
    prop_oneof![
        bytes().prop_map(Case::Garbage),
        (
            prop_oneof![
                Just(u32::MAX),
                Just(4 << 20),
                Just((4 << 20) + 1),
                any::<u32>(),
                0..64u32
            ],
            any::<u32>(),
            any::<u8>(),
            any::<u8>(),
            bytes()
        )
            .prop_map(|(len, stream, kind, flags, body)| Case::BadFrame {
                len,
                stream,
                kind,
                flags,
                body
            }),
        (
            prop_oneof![Just(SERVICE.to_string()), any::<String>()],
            any::<String>(),
            bytes()
        )
            .prop_map(|(service, method, payload)| Case::UnknownMethod {
                service,
                method,
                payload
            }),
        (proptest::sample::select(METHODS), bytes())
            .prop_map(|(method, payload)| Case::RandomPayload { method, payload }),
        typed_request().prop_map(|(method, payload)| Case::Typed { method, payload }),
    ]
}

fn send(sock: &std::path::Path, c: &Case) {
    let bytes = match c {
        Case::Garbage(b) => b.clone(),
        Case::BadFrame {
            len,
            stream,
            kind,
            flags,
            body,
        } => frame(*len, *stream, *kind, *flags, body),
        Case::UnknownMethod {
            service,
            method,
            payload,
        } => request(1, service, method, payload, 1_000_000_000),
        Case::RandomPayload { method, payload } | Case::Typed { method, payload } => {
            request(1, SERVICE, method, payload, 1_000_000_000)
        }
    };
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    // The agent may close on us mid-write: fine.
    let _ = s.write_all(&bytes);
    let mut buf = [0u8; 4096];
    let _ = s.read(&mut buf);
}

#[test]
fn malformed_messages_never_crash_or_hang_the_agent() {
    if !can_run_containers() {
        return;
    }
    let dir = scratch("fuzz-agent");
    let mut host = HostAgent::start(&dir);
    let mut runner = TestRunner::new(Config {
        cases: 200,
        failure_persistence: None,
        ..Config::default()
    });
    let sock = host.sock.clone();
    let pid = host.child.id();
    let result = runner.run(&case(), |c| {
        send(&sock, &c);
        let t0 = Instant::now();
        let agent = Agent::connect_unix(&sock, Duration::from_secs(5));
        prop_assert!(agent.is_ok(), "after {:?}: {:?}", c, agent.err());
        let p = agent.unwrap().ping();
        prop_assert!(p.is_ok(), "after {:?}: {:?}", c, p.err());
        prop_assert_eq!(p.unwrap().pid, pid);
        prop_assert!(t0.elapsed() < Duration::from_secs(5));
        Ok(())
    });
    assert!(
        host.child.try_wait().unwrap().is_none(),
        "the agent exited: {:?}",
        host.child.try_wait()
    );
    result.unwrap();
    Agent::connect_unix(&host.sock, Duration::from_secs(5))
        .unwrap()
        .shutdown()
        .unwrap();
    assert!(host.child.wait().unwrap().success());
    let _ = std::fs::remove_dir_all(&dir);
}
