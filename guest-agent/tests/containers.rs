//! The agent's container calls end to end, with the agent run as a host process on a Unix socket
//! (same code as in the guest): two containers at once from OCI bundles of busybox, stdio both
//! ways (stdin from a file, stdout to a file), an exec'd process, a signal, exit statuses through
//! Wait, delete. Needs root (namespaces, cgroups) and a static busybox.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{bundle, skip};
use strata_guest_agent::client::Agent;
use strata_guest_agent::proto::agent::{
    CreateContainerRequest, DeleteRequest, ExecRequest, KillRequest, StartRequest, Stdio,
    WaitRequest,
};

fn io(dir: &Path, name: &str, stdin: Option<&str>) -> Stdio {
    let s = |p: PathBuf| p.display().to_string();
    let input = stdin.map(|data| {
        let p = dir.join(format!("{name}.in"));
        std::fs::write(&p, data).unwrap();
        s(p)
    });
    Stdio {
        stdin: input.unwrap_or_default(),
        stdout: s(dir.join(format!("{name}.out"))),
        stderr: s(dir.join(format!("{name}.err"))),
        ..Default::default()
    }
}

fn ctx() -> ttrpc::context::Context {
    ttrpc::context::with_timeout(Duration::from_secs(30).as_nanos() as i64)
}

#[test]
fn two_containers_exec_signal_wait_delete() {
    if !nix::unistd::geteuid().is_root() && skip("needs root") {
        return;
    }
    let static_busybox = Command::new("ldd")
        .arg("/bin/busybox")
        .output()
        .map(|o| !String::from_utf8_lossy(&o.stdout).contains("=>"))
        .unwrap_or(false);
    if !static_busybox && skip("no static /bin/busybox (apt-get install busybox-static)") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("strata-agent-ct-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("agent.sock");
    let child = Command::new(env!("CARGO_BIN_EXE_strata-guest-agent"))
        .arg("--listen-unix")
        .arg(&sock)
        .arg("--state")
        .arg(dir.join("state"))
        .spawn()
        .unwrap();
    // A failing assertion must not leave the agent (and its containers) running.
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            if self.0.try_wait().ok().flatten().is_none() {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
    }
    let mut child = Reap(child);
    let t0 = Instant::now();
    while !sock.exists() {
        assert!(t0.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(20));
    }
    let agent = Agent::connect_unix(&sock, Duration::from_secs(30)).unwrap();
    let c = agent.raw();

    // c1: reads stdin, writes it back with its hostname, exits 3.
    let b1 = bundle(&dir, "c1", &["/bin/sh", "-c", "cat; hostname; exit 3"]);
    c.create_container(
        ctx(),
        &CreateContainerRequest {
            id: "c1".into(),
            bundle: b1.display().to_string(),
            stdio: Some(io(&dir, "c1", Some("input from the host\n"))).into(),
            ..Default::default()
        },
    )
    .unwrap();
    // c2: sleeps until killed (as PID 1 of its namespace it ignores SIGTERM, so SIGKILL).
    let b2 = bundle(&dir, "c2", &["/bin/sleep", "1000"]);
    c.create_container(
        ctx(),
        &CreateContainerRequest {
            id: "c2".into(),
            bundle: b2.display().to_string(),
            stdio: Some(io(&dir, "c2", None)).into(),
            ..Default::default()
        },
    )
    .unwrap();
    let start = |id: &str, exec: &str| {
        c.start(
            ctx(),
            &StartRequest {
                id: id.into(),
                exec_id: exec.into(),
                ..Default::default()
            },
        )
        .unwrap()
        .pid
    };
    let wait = |id: &str, exec: &str| {
        c.wait(
            ctx(),
            &WaitRequest {
                id: id.into(),
                exec_id: exec.into(),
                ..Default::default()
            },
        )
        .unwrap()
        .exit_status
    };
    assert!(start("c2", "") > 0);
    assert!(start("c1", "") > 0);
    assert_eq!(wait("c1", ""), 3);
    let out = std::fs::read_to_string(dir.join("c1.out")).unwrap();
    assert_eq!(out, "input from the host\nc1\n");

    // An exec'd process in the running c2.
    let process = serde_json::json!({
        "terminal": false,
        "user": {"uid": 0, "gid": 0},
        "args": ["/bin/sh", "-c", "echo exec in $(hostname)"],
        "env": ["PATH=/bin"],
        "cwd": "/"
    });
    c.exec(
        ctx(),
        &ExecRequest {
            id: "c2".into(),
            exec_id: "e1".into(),
            process_json: process.to_string(),
            stdio: Some(io(&dir, "e1", None)).into(),
            ..Default::default()
        },
    )
    .unwrap();
    start("c2", "e1");
    assert_eq!(wait("c2", "e1"), 0);
    assert_eq!(
        std::fs::read_to_string(dir.join("e1.out")).unwrap(),
        "exec in c2\n"
    );

    c.kill(
        ctx(),
        &KillRequest {
            id: "c2".into(),
            signal: 9,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(wait("c2", ""), 128 + 9);

    for id in ["c1", "c2"] {
        c.delete(
            ctx(),
            &DeleteRequest {
                id: id.into(),
                ..Default::default()
            },
        )
        .unwrap();
    }
    // Deleted means gone.
    let e = c
        .start(
            ctx(),
            &StartRequest {
                id: "c1".into(),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(
        e.to_string().contains("NotFound") || e.to_string().contains("not found"),
        "{e}"
    );

    agent.shutdown().unwrap();
    assert!(child.0.wait().unwrap().success());
    let _ = std::fs::remove_dir_all(&dir);
}
