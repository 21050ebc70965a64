//! The agent's container calls end to end, with the agent run as a host process on a Unix socket
//! (same code as in the guest): two containers at once from OCI bundles of busybox, stdio both
//! ways (stdin from a file, stdout to a file), an exec'd process, a signal, exit statuses through
//! Wait, delete. Needs root (namespaces, cgroups) and a static busybox.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{bundle, can_run_containers, ctx, scratch, Calls, HostAgent};
use strata_guest_agent::client::Agent;
use strata_guest_agent::proto::agent::{StartRequest, Stdio};

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

#[test]
fn two_containers_exec_signal_wait_delete() {
    if !can_run_containers() {
        return;
    }
    let dir = scratch("ct");
    let mut host = HostAgent::start(&dir);
    let agent = Agent::connect_unix(&host.sock, Duration::from_secs(30)).unwrap();
    let c = Calls(&agent);

    // c1: reads stdin, writes it back with its hostname, exits 3.
    let b1 = bundle(&dir, "c1", &["/bin/sh", "-c", "cat; hostname; exit 3"]);
    c.create("c1", &b1, io(&dir, "c1", Some("input from the host\n")));
    // c2: sleeps until killed (as PID 1 of its namespace it ignores SIGTERM, so SIGKILL).
    let b2 = bundle(&dir, "c2", &["/bin/sleep", "1000"]);
    c.create("c2", &b2, io(&dir, "c2", None));
    assert!(c.start("c2", "") > 0);
    assert!(c.start("c1", "") > 0);
    assert_eq!(c.wait("c1", ""), 3);
    let out = std::fs::read_to_string(dir.join("c1.out")).unwrap();
    assert_eq!(out, "input from the host\nc1\n");

    // An exec'd process in the running c2.
    c.exec("c2", "e1", "echo exec in $(hostname)", io(&dir, "e1", None));
    c.start("c2", "e1");
    assert_eq!(c.wait("c2", "e1"), 0);
    assert_eq!(
        std::fs::read_to_string(dir.join("e1.out")).unwrap(),
        "exec in c2\n"
    );

    c.kill("c2", 9);
    assert_eq!(c.wait("c2", ""), 128 + 9);

    for id in ["c1", "c2"] {
        c.delete(id);
    }
    // Deleted means gone.
    let e = agent
        .raw()
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
    assert!(host.child.wait().unwrap().success());
    let _ = std::fs::remove_dir_all(&dir);
}
