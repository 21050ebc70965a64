//! The agent's container calls end to end, with the agent run as a host process on a Unix socket
//! (same code as in the guest): two containers at once from OCI bundles of busybox, stdio both
//! ways (stdin from a file, stdout to a file), an exec'd process, a signal, exit statuses through
//! Wait, delete; pause and resume, pids, update, kill of all processes, and the end of a
//! container's other processes when its init exits. Needs root (namespaces, cgroups) and a
//! static busybox.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{
    bundle, bundle_edited, can_run_containers, ctx, eventually, scratch, Calls, HostAgent,
};
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

/// The memory limit of `pid`'s cgroup, read from the cgroup file system (v1 or v2) itself.
fn memory_limit_of(pid: u32) -> u64 {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let v1 = cgroups
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':').skip(1);
            f.next().zip(f.next())
        })
        .find(|(ctrls, _)| ctrls.split(',').any(|c| c == "memory"));
    let text = match v1 {
        Some((_, path)) => {
            std::fs::read_to_string(format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes"))
        }
        None => {
            let path = cgroups.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
            std::fs::read_to_string(format!("/sys/fs/cgroup{path}/memory.max"))
        }
    };
    text.unwrap().trim().parse().unwrap_or(u64::MAX)
}

#[test]
fn pause_resume_pids_update_and_kill_all() {
    if !can_run_containers() {
        return;
    }
    let dir = scratch("pause");
    // Its own name per run: a run that failed half-way leaves no cgroup (with the limit set
    // below) for the next to find.
    let id = &format!("ticker-{}", std::process::id());
    let mut host = HostAgent::start(&dir);
    let agent = Agent::connect_unix(&host.sock, Duration::from_secs(30)).unwrap();
    let c = Calls(&agent);

    // Ticks into /tmp/ticks twenty times a second beside two sleeps; as PID 1 of its namespace
    // the shell ignores SIGTERM, its children do not: the shell's wait returns when they die.
    let b = bundle(
        &dir,
        id,
        &[
            "/bin/sh",
            "-c",
            "sleep 1000 & sleep 1000 & \
             while [ ! -e /tmp/stop ]; do echo x >> /tmp/ticks; sleep 0.05; done; \
             wait; echo waited > /tmp/done",
        ],
    );
    let ticks_file = b.join("rootfs/tmp/ticks");
    let ticks = || std::fs::metadata(&ticks_file).map(|m| m.len()).unwrap_or(0);
    c.create(id, &b, Stdio::default());
    let init = c.start(id, "");

    // Pids: the shell and both sleeps (and now and then a short sleep of the loop).
    let mut pids = Vec::new();
    assert!(
        eventually(Duration::from_secs(10), || {
            pids = agent.pids(id).unwrap();
            pids.contains(&init) && pids.len() >= 3
        }),
        "pids {pids:?}, init {init}"
    );
    assert!(agent.pids("nope").is_err());

    // Paused: no tick for half a second; resumed: ticking again.
    assert!(eventually(Duration::from_secs(10), || ticks() > 0));
    agent.pause(id).unwrap();
    let paused_at = ticks();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(ticks(), paused_at, "ticked while paused");
    agent.resume(id).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || ticks() > paused_at),
        "no tick after resume"
    );

    // A memory limit by Update, as the cgroup itself shows it and as Stats does.
    assert_ne!(memory_limit_of(init), 96 << 20);
    agent
        .update(id, r#"{"memory": {"limit": 100663296}}"#)
        .unwrap();
    assert_eq!(memory_limit_of(init), 96 << 20);
    assert_eq!(agent.stats(id).unwrap().memory_limit, 96 << 20);
    let bad = agent.update(id, "{not json").unwrap_err();
    assert!(bad.to_string().contains("Update"), "{bad}");

    // An exec'd sleep as well; SIGTERM to all: the sleeps die of it, the shell's wait returns.
    c.exec(id, "e1", "sleep 1000", Stdio::default());
    c.start(id, "e1");
    std::fs::write(b.join("rootfs/tmp/stop"), "").unwrap();
    agent.kill(id, "", 15, true).unwrap();
    assert_eq!(c.wait(id, "e1"), 128 + 15);
    assert_eq!(c.wait(id, ""), 0);
    assert_eq!(
        std::fs::read_to_string(b.join("rootfs/tmp/done")).unwrap(),
        "waited\n"
    );
    c.delete(id);
    agent.shutdown().unwrap();
    assert!(host.child.wait().unwrap().success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_exit_of_init_ends_the_rest_of_the_container() {
    if !can_run_containers() {
        return;
    }
    let dir = scratch("init-exit");
    let mut host = HostAgent::start(&dir);
    let agent = Agent::connect_unix(&host.sock, Duration::from_secs(30)).unwrap();
    let c = Calls(&agent);
    let script = ["/bin/sh", "-c", "sleep 1000 & echo $! > /tmp/bg; sleep 2"];
    // With a PID namespace of its own (the kernel ends it with its init) and in the agent's
    // (the agent kills what is left in its cgroup).
    let own = bundle(&dir, "own-pidns", &script);
    let shared = bundle_edited(&dir, "shared-pidns", &script, |spec| {
        spec["linux"]["namespaces"] =
            serde_json::json!([{"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]);
    });
    for (id, b) in [("own-pidns", &own), ("shared-pidns", &shared)] {
        c.create(id, b, Stdio::default());
        c.start(id, "");
        assert!(
            eventually(Duration::from_secs(10), || agent.pids(id).unwrap().len()
                >= 2),
            "{id}: the background sleep never showed"
        );
        assert_eq!(c.wait(id, ""), 0, "{id}");
        let mut left = Vec::new();
        assert!(
            eventually(Duration::from_secs(5), || {
                left = agent.pids(id).unwrap();
                left.is_empty()
            }),
            "{id}: left after its init exited: {left:?}"
        );
        if id == "shared-pidns" {
            // Its PID is the agent's: that process is gone.
            let bg: i32 = std::fs::read_to_string(b.join("rootfs/tmp/bg"))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            assert!(
                eventually(Duration::from_secs(5), || !std::path::Path::new(&format!(
                    "/proc/{bg}"
                ))
                .exists()),
                "the background sleep {bg} outlived its init"
            );
        }
        c.delete(id);
    }
    agent.shutdown().unwrap();
    assert!(host.child.wait().unwrap().success());
    let _ = std::fs::remove_dir_all(&dir);
}
