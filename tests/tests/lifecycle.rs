//! The lifecycle conformance suite, through `ctr` and containerd's API: exit codes, stdio,
//! terminals, exec, signals, pause/resume, pids, stats, resource updates, OOM and the events
//! containerd publishes. Every test ends by checking that nothing of its containers is left.
//!
//! Runs against `io.containerd.strata.v2`, or runc with `STRATA_TEST_RUNTIME=runc`.

use std::time::Duration;

use serde_json::json;
use strata_tests::cgroups;
use strata_tests::daemon::{self, ContainerdVersion};
use strata_tests::events::Events;
use strata_tests::pty::PtyChild;
use strata_tests::wasi::{self, Workload, WorkloadRun};
use strata_tests::{api, harness, Runtime, Tier};

/// Waits that follow a step already done. The first output of a `ctr run` waits
/// `h.ctr_timeout()` instead: on microvm that run boots the pod's VM (emulated in CI).
const SECS: fn(u64) -> Duration = Duration::from_secs;

/// Shell that waits (up to 5 s) for the terminal to get its size: `ctr` sends the first
/// resize only after the task has started. (busybox `stty size` exits 0 even when it fails.)
const WAIT_SIZE: &str =
    "i=0; while [ -z \"$(stty size 2>/dev/null)\" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done";

#[test]
fn exit_codes_pass_through() {
    let h = harness!();
    for &code in wasi::exit_codes(h) {
        let c = h.container("exit");
        let out = c.run_workload(&Workload::new().exit(code));
        assert_eq!(out.code, code, "{out}\n{}", c.log());
        c.assert_no_leaks();
    }
}

#[test]
fn stdout_and_stderr_are_separate() {
    let h = harness!();
    let c = h.container("stdio");
    let out = c.run_workload(
        &Workload::new()
            .out("to-out\n")
            .err("to-err\n")
            .out("more-out\n"),
    );
    assert!(out.success(), "{out}");
    assert_eq!(out.stdout, "to-out\nmore-out\n", "{out}");
    assert_eq!(out.stderr, "to-err\n", "{out}");
    c.assert_no_leaks();
}

#[test]
fn large_output_arrives_whole() {
    let h = harness!();
    let c = h.container("bigout");
    // 1 MiB of 'a', then the exit: nothing may be lost between the workload's last write and
    // its exit.
    let out = c.run_workload(&Workload::new().fill(1_048_576, 'a').out("END"));
    assert!(out.success(), "{}", out.stderr);
    assert_eq!(
        out.stdout.len(),
        1_048_576 + 3,
        "stdout was cut: {} bytes",
        out.stdout.len()
    );
    assert!(out.stdout.ends_with("aEND"));
    assert!(out.stdout[..1_048_576].bytes().all(|b| b == b'a'));
    c.assert_no_leaks();
}

#[test]
fn stdin_reaches_the_container_and_closes() {
    let h = harness!();
    let c = h.container("stdin");
    // `ctr run` forwards the end of stdin only once the task exists; so write after the
    // container says it is ready.
    let mut bg = c.spawn_workload(&[], &Workload::new().out("ready\n").cat().out("\ndone\n"));
    assert!(
        bg.wait_stdout("ready", h.ctr_timeout()),
        "no ready: {}",
        bg.stderr()
    );
    bg.write_stdin(b"hello\nworld").unwrap();
    bg.close_stdin();
    let out = bg.wait(SECS(30));
    assert!(out.success(), "cat did not see the end of stdin: {out}");
    assert_eq!(out.stdout, "ready\nhello\nworld\ndone\n", "{out}");
    c.assert_no_leaks();
}

#[test]
fn large_stdin_arrives_whole() {
    let h = harness!();
    let c = h.container("bigin");
    let mut bg = c.spawn_workload(&[], &Workload::new().out("ready\n").count_stdin());
    assert!(
        bg.wait_stdout("ready", h.ctr_timeout()),
        "no ready: {}",
        bg.stderr()
    );
    let data = vec![b'x'; 1 << 20];
    bg.write_stdin(&data).unwrap();
    bg.close_stdin();
    let out = bg.wait(SECS(60));
    assert!(out.success(), "{out}");
    assert_eq!(
        out.stdout.split_whitespace().nth(1),
        Some("1048576"),
        "{out}"
    );
    c.assert_no_leaks();
}

#[test]
fn tty_run() {
    let h = harness!();
    let c = h.container("tty");
    let cmd = c.run_command(
        &["-t"],
        &["sh", "-c", &format!("{WAIT_SIZE}; tty; stty size; test -t 0 && echo stdin-tty; read l; echo \"got:$l\"; exit 7")],
    );
    let mut pty = PtyChild::spawn(cmd, 40, 100).unwrap();
    pty.wait_for("stdin-tty", h.ctr_timeout()).unwrap();
    pty.write(b"typed\r").unwrap();
    let (code, screen) = pty.wait(SECS(30));
    assert_eq!(
        code,
        7,
        "exit status through the terminal; screen:\n{screen}\n{}",
        c.log()
    );
    assert!(screen.contains("/dev/pts/"), "tty: {screen}");
    assert!(
        screen.contains("40 100"),
        "initial window size not passed: {screen}"
    );
    assert!(screen.contains("got:typed"), "input not passed: {screen}");
    c.assert_no_leaks();
}

/// `/dev/tty` is the process's controlling terminal, as programs that prompt (`read </dev/tty`,
/// `sudo`, `ssh`, git's credential prompt) use it: written to and read from.
#[test]
fn tty_device_is_the_controlling_terminal() {
    let h = harness!();
    let c = h.container("devtty");
    let cmd = c.run_command(
        &["-t"],
        &[
            "sh",
            "-c",
            "echo via-dev-tty >/dev/tty; echo rc=$?; read l </dev/tty; echo \"got:$l\"; exit 5",
        ],
    );
    let mut pty = PtyChild::spawn(cmd, 40, 100).unwrap();
    pty.wait_for("rc=", h.ctr_timeout()).unwrap();
    pty.write(b"typed\r").unwrap();
    let (code, screen) = pty.wait(SECS(30));
    assert_eq!(code, 5, "screen:\n{screen}\n{}", c.log());
    assert!(
        screen.contains("via-dev-tty") && screen.contains("rc=0") && screen.contains("got:typed"),
        "/dev/tty: {screen}"
    );
    c.assert_no_leaks();
}

#[test]
fn tty_resize() {
    let h = harness!();
    let c = h.container("resize");
    let script = "stty size; i=0; while [ \"$(stty size)\" = '40 100' ] && [ $i -lt 200 ]; do \
                  sleep 0.1; i=$((i+1)); done; echo \"now $(stty size)\"";
    let script = format!("{WAIT_SIZE}; {script}");
    let pty = PtyChild::spawn(c.run_command(&["-t"], &["sh", "-c", &script]), 40, 100).unwrap();
    pty.wait_for("40 100", h.ctr_timeout()).unwrap();
    pty.resize(50, 132).unwrap();
    let (code, screen) = pty.wait(SECS(40));
    assert_eq!(code, 0, "{screen}");
    assert!(
        screen.contains("now 50 132"),
        "window resize not passed: {screen}\n{}",
        c.log()
    );
    c.assert_no_leaks();
}

#[test]
fn exec_runs_in_the_container() {
    let h = harness!();
    let c = h.container("exec");
    c.start(&[], &["sh", "-c", "echo marker > /tmp/m; exec sleep 1000"]);
    let out = c.exec("e1", &["sh", "-c", "cat /tmp/m; echo oops >&2; exit 5"]);
    assert_eq!(out.code, 5, "{out}");
    assert_eq!(
        out.stdout, "marker\n",
        "exec must see the container's files: {out}"
    );
    assert_eq!(out.stderr, "oops\n", "{out}");
    // Same pid namespace: the init process is pid 1 there.
    let out = c.exec("e2", &["sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '"]);
    assert_eq!(out.stdout.trim(), "sleep 1000", "{out}");
    // An exec'd process killed by a signal reports 128+signal.
    let out = c.exec("e3", &["sh", "-c", "kill -9 $$"]);
    assert_eq!(out.code, 137, "{out}");
    // Its stdin.
    let mut bg = strata_tests::cmd::Background::spawn(c.exec_command(
        "e4",
        &[],
        &["sh", "-c", "echo ready; cat"],
    ))
    .unwrap();
    assert!(bg.wait_stdout("ready", SECS(30)), "{}", bg.stderr());
    bg.write_stdin(b"through exec").unwrap();
    bg.close_stdin();
    let out = bg.wait(SECS(30));
    assert_eq!(out.stdout, "ready\nthrough exec", "{out}");
    assert_eq!(
        c.status().as_deref(),
        Some("RUNNING"),
        "execs must not disturb the init process"
    );
    c.remove_and_check();
}

#[test]
fn exec_with_tty() {
    let h = harness!();
    let c = h.container("exectty");
    c.start(&[], &["sleep", "1000"]);
    let cmd = c.exec_command(
        "t1",
        &["-t"],
        &["sh", "-c", &format!("{WAIT_SIZE}; tty; stty size; exit 3")],
    );
    let pty = PtyChild::spawn(cmd, 30, 90).unwrap();
    let (code, screen) = pty.wait(SECS(30));
    assert_eq!(code, 3, "{screen}\n{}", c.log());
    assert!(screen.contains("/dev/pts/"), "{screen}");
    assert!(screen.contains("30 90"), "{screen}");
    c.remove_and_check();
}

#[test]
fn sigterm_reaches_the_workload() {
    let h = harness!();
    let c = h.container("sigterm");
    // A process catches it and exits its own way; a WASI module has no signal handlers, so
    // there the signal reaching the module is its end by that signal (143).
    let (w, want) = if wasi::catches_signals(h) {
        (
            Workload::new().on_sigterm("got-term\n", 42),
            (42, "got-term"),
        )
    } else {
        (Workload::new(), (143, ""))
    };
    let mut bg = c.spawn_workload(&[], &w.out("ready\n").sleep());
    assert!(bg.wait_stdout("ready", SECS(30)), "{}", bg.stderr());
    // `ctr task kill` sends SIGTERM by default.
    let k = h.ctr_run(&["task", "kill", &c.id]);
    assert!(k.success(), "{k}");
    let out = bg.wait(SECS(30));
    assert_eq!(out.code, want.0, "{out}");
    assert!(out.stdout.contains(want.1), "{out}");
    c.assert_no_leaks();
}

#[test]
fn sigkill_gives_137() {
    let h = harness!();
    let c = h.container("sigkill");
    let mut bg = c.spawn_workload(&[], &Workload::new().out("ready\n").sleep());
    assert!(bg.wait_stdout("ready", h.ctr_timeout()), "{}", bg.stderr());
    let k = c.kill("SIGKILL");
    assert!(k.success(), "{k}");
    let out = bg.wait(SECS(30));
    assert_eq!(out.code, 137, "{out}");
    c.assert_no_leaks();
}

#[test]
fn kill_an_exec_process() {
    let h = harness!();
    let c = h.container("killexec");
    c.start(&[], &["sleep", "1000"]);
    let mut bg = strata_tests::cmd::Background::spawn(c.exec_command(
        "sleeper",
        &[],
        &["sh", "-c", "echo ready; exec sleep 1000"],
    ))
    .unwrap();
    assert!(bg.wait_stdout("ready", h.ctr_timeout()), "{}", bg.stderr());
    let k = h.ctr_run(&[
        "task",
        "kill",
        "--exec-id",
        "sleeper",
        "-s",
        "SIGTERM",
        &c.id,
    ]);
    assert!(k.success(), "{k}");
    let out = bg.wait(SECS(30));
    assert_eq!(out.code, 143, "an exec'd process dead by SIGTERM: {out}");
    assert_eq!(c.status().as_deref(), Some("RUNNING"));
    c.remove_and_check();
}

#[test]
fn pause_freezes_and_resume_thaws() {
    let h = harness!();
    let c = h.container("pause");
    let mut bg = c.spawn_workload(&[], &Workload::new().count(50));
    assert!(bg.wait_stdout("3\n", h.ctr_timeout()), "{}", bg.stderr());
    let p = h.ctr_run(&["task", "pause", &c.id]);
    assert!(p.success(), "{p}");
    assert_eq!(c.status().as_deref(), Some("PAUSED"));
    std::thread::sleep(Duration::from_millis(300));
    let frozen = bg.stdout().lines().count();
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        bg.stdout().lines().count(),
        frozen,
        "the workload kept running while paused"
    );
    let r = h.ctr_run(&["task", "resume", &c.id]);
    assert!(r.success(), "{r}");
    assert_eq!(c.status().as_deref(), Some("RUNNING"));
    assert!(
        strata_tests::cmd::poll(SECS(10), || (bg.stdout().lines().count() > frozen + 2)
            .then_some(()))
        .is_some(),
        "the workload did not go on after resume"
    );
    assert!(c.kill("SIGKILL").success());
    assert_eq!(bg.wait(SECS(30)).code, 137);
    c.assert_no_leaks();
}

#[test]
fn pids_lists_every_process() {
    let h = harness!();
    let c = h.container("pids");
    c.start(&[], &["sh", "-c", "sleep 1000 & sleep 1001 & wait"]);
    let init = c.pid().expect("ctr task ls gives the pid");
    // Three pids, and the two children past their exec (a forked shell shows the parent's
    // command line until it execs `sleep`).
    let cmdlines = |pids: &[u32]| -> Vec<String> {
        let mut cmds: Vec<String> = pids
            .iter()
            .map(|p| {
                std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                    .unwrap_or_default()
                    .replace('\0', " ")
            })
            .collect();
        cmds.sort();
        cmds
    };
    if !h.processes_on_the_host() {
        // In a VM the pids are the guest's (as Kata's): three of them, none the host's to read.
        let p = strata_tests::cmd::poll(SECS(30), || c.pids().ok().filter(|p| p.len() == 3));
        assert!(
            p.is_some(),
            "expected 3 pids, got {:?}\n{}",
            c.pids(),
            c.log()
        );
        c.remove_and_check();
        return;
    }
    // Beside the workload's: the sentry's keeper, one process (docs/sentry.md).
    let keepers = usize::from(h.runtime == Runtime::Strata && h.tier == Tier::Sentry);
    let pids = strata_tests::cmd::poll(SECS(10), || {
        let all = c.pids().ok()?;
        let p = h.workload_pids(&all);
        (p.len() == 3
            && all.len() == 3 + keepers
            && cmdlines(&p)
                .iter()
                .filter(|c| c.starts_with("sleep"))
                .count()
                == 2)
            .then_some(p)
    })
    .unwrap_or_else(|| panic!("expected 3 pids, got {:?}\n{}", c.pids(), c.log()));
    assert!(pids.contains(&init), "init {init} missing from {pids:?}");
    let cmds = cmdlines(&pids);
    assert_eq!(
        cmds,
        [
            "sh -c sleep 1000 & sleep 1001 & wait ",
            "sleep 1000 ",
            "sleep 1001 "
        ],
        "{pids:?}"
    );
    c.remove_and_check();
}

#[test]
fn stats_report_usage() {
    let h = harness!();
    let c = h.container("stats");
    // Two children beside the init where the workload is a process (a WASI module is one).
    let children = if wasi::runs_wasm(h) { 0 } else { 2 };
    c.start_workload(
        &["--memory-limit", "134217728"],
        &Workload::new().children(children).busy(20000).sleep(),
    );
    // pids.current counts tasks: the threads of every process of the container. In a VM the
    // pids are the guest's, whose /proc the host cannot read (the host's own /proc/<pid> is
    // another process, or none); there each of the workload's processes has one thread.
    let on_host = h.processes_on_the_host();
    let threads = |pids: Vec<u32>| -> u64 {
        if !on_host {
            return pids.len() as u64;
        }
        pids.iter()
            .map(|p| std::fs::read_dir(format!("/proc/{p}/task")).map_or(0, |d| d.count() as u64))
            .sum()
    };
    let m = strata_tests::cmd::poll(SECS(10), || {
        // Every process listed, the sentry's keeper too, is in pids.current.
        let pids = c
            .pids()
            .ok()
            .filter(|p| h.workload_pids(p).len() == 1 + children)?;
        let m = c.metrics().ok()?;
        (cgroups::metric_pids(&m) == Some(threads(pids))).then_some(m)
    })
    .unwrap_or_else(|| {
        panic!(
            "pids.current never reached the container's {} processes' threads: {:?} {:?}\n{}",
            1 + children,
            c.pids(),
            c.metrics(),
            c.log()
        )
    });
    let usage = cgroups::metric_memory_usage(&m).expect("memory usage in the metrics");
    assert!(
        usage > 100 * 1024 && usage < 134_217_728,
        "memory usage {usage}: {m}"
    );
    assert_eq!(cgroups::metric_memory_limit(&m), Some(134_217_728), "{m}");
    assert!(
        cgroups::metric_cpu_ns(&m).unwrap_or(0) > 0,
        "no cpu time: {m}"
    );
    c.remove_and_check();
}

#[test]
fn update_memory_limit() {
    let h = harness!();
    let c = h.container("update");
    // The init waits for the end of its stdin, then allocates 64 MiB: after the update to
    // 48 MiB that must be OOM-killed, on every tier (on wasm the module's linear-memory cap
    // stays the create's 256 MiB: only the updated cgroup can stop it).
    let mut bg = c.spawn_workload(
        &["--memory-limit", "268435456"],
        &Workload::new()
            .out("ready\n")
            .count_stdin()
            .alloc(64 << 20)
            .out("survived\n"),
    );
    assert!(bg.wait_stdout("ready", h.ctr_timeout()), "{}", bg.stderr());
    let pid = c.pid().unwrap();
    // In a VM the container's cgroup is the guest's: the metrics below show its limit.
    let host_cgroup = h.processes_on_the_host();
    if host_cgroup {
        assert_eq!(cgroups::memory_limit(pid), Some(268_435_456));
    }
    // Where the container takes execs (a wasm task does not), they show the new limit too:
    // 16 MiB allocates under any of the limits below; 64 MiB does not fit in 48 MiB.
    let execs = wasi::has_exec(h);
    // An exec that allocates `mib` MiB in one buffer: its exit code.
    let dd = |exec_id: &str, mib: u32| {
        let bs = format!("bs={mib}M");
        c.exec(
            exec_id,
            &["dd", "if=/dev/zero", "of=/dev/null", &bs, "count=1"],
        )
    };
    if execs {
        assert_eq!(dd("before", 64).code, 0);
    }
    let answer = api::update_resources(h, &c.id, &json!({ "memory": { "limit": 50_331_648 } }))
        .expect("talking to containerd");
    assert!(answer.is_ok(), "Update failed: {answer:?}\n{}", c.log());
    if host_cgroup {
        assert_eq!(
            cgroups::memory_limit(pid),
            Some(50_331_648),
            "the cgroup limit did not change"
        );
    }
    let m = c.metrics().unwrap();
    assert_eq!(cgroups::metric_memory_limit(&m), Some(50_331_648), "{m}");
    if execs {
        assert_eq!(dd("small", 16).code, 0);
        let big = dd("big", 64);
        assert_eq!(
            big.code, 137,
            "64 MiB under a 48 MiB limit must be OOM-killed: {big}"
        );
    }
    bg.close_stdin();
    let out = bg.wait(SECS(30));
    assert_eq!(
        out.code, 137,
        "the init's 64 MiB under the updated 48 MiB limit must be OOM-killed: {out}"
    );
    assert!(!out.stdout.contains("survived"), "{out}");
    c.remove_and_check();
}

#[test]
fn oom_kill_is_reported() {
    let h = harness!();
    let events = Events::watch(h);
    let c = h.container("oom");
    // 64 MiB touched under a 32 MiB limit. On wasm the module's linear memory is capped at
    // the limit too, but the engine's own pages count in the cgroup: the kernel kills first.
    let out = c.run_workload_with(
        &["--memory-limit", "33554432"],
        &Workload::new().alloc(64 << 20),
        None,
    );
    assert_eq!(out.code, 137, "{out}");
    assert!(
        events.wait_for(&c.id, "/tasks/oom", SECS(10)),
        "no /tasks/oom event; events:\n{}\n{}",
        events.dump(),
        c.log()
    );
    c.assert_no_leaks();
}

#[test]
fn events_in_containerd_order() {
    let h = harness!();
    let events = Events::watch(h);
    let c = h.container("events");
    c.start_workload(&[], &Workload::new().sleep());
    // An exec's events where the container takes execs (a wasm task does not).
    let execs = wasi::has_exec(h);
    if execs {
        assert!(c.exec("x1", &["true"]).success());
    }
    assert!(h.ctr_run(&["task", "pause", &c.id]).success());
    assert!(h.ctr_run(&["task", "resume", &c.id]).success());
    assert!(c.kill("SIGKILL").success());
    assert!(c.wait_status("STOPPED", SECS(10)), "{:?}", c.status());
    assert!(h.ctr_run(&["task", "rm", &c.id]).success());
    // containerd 2.1.9's runc shim publishes /tasks/delete asynchronously and is shut down
    // right after the delete: now and then (2 runs in 7 here, twice in a row once) the event
    // is lost with it. The baseline tolerates that runc race; Strata must always send it.
    let runc_may_drop_delete =
        h.runtime == Runtime::Runc && daemon::containerd_version() == ContainerdVersion::V2_1;
    let deleted = events.wait_for(&c.id, "/tasks/delete", SECS(10));
    assert!(deleted || runc_may_drop_delete, "{}", events.dump());
    let topics: Vec<String> = events
        .topics(&c.id)
        .into_iter()
        .filter(|t| t.starts_with("/tasks/"))
        .collect();
    let exec_events: &[&str] = if execs {
        &["/tasks/exec-added", "/tasks/exec-started", "/tasks/exit"]
    } else {
        &[]
    };
    let mut want: Vec<&str> = ["/tasks/create", "/tasks/start"]
        .iter()
        .chain(exec_events)
        .chain(&[
            "/tasks/paused",
            "/tasks/resumed",
            "/tasks/exit",
            "/tasks/delete",
        ])
        .copied()
        .collect();
    if !deleted {
        want.pop();
    }
    assert_eq!(topics, want, "all events:\n{}", events.dump());
    let exits: Vec<String> = events
        .for_id(&c.id)
        .into_iter()
        .filter(|e| e.topic == "/tasks/exit")
        .map(|e| e.payload)
        .collect();
    if execs {
        assert!(
            exits[0].contains("\"id\":\"x1\""),
            "the first exit is the exec's: {exits:?}"
        );
    }
    assert!(
        exits.last().unwrap().contains("\"exit_status\":137"),
        "{exits:?}"
    );
    c.remove_and_check();
}

/// The node's counters (`/run/strata/metrics/strata.prom`, Prometheus text for a node
/// exporter's textfile collector) count this tier's starts, a failed create by its reason, and
/// the tier's own events: trapped calls on sentry, VM boots and their time on microvm. Other
/// tests add to the same counters at the same time, so each is checked to have grown by at
/// least what this test did.
#[test]
fn node_counters_count_starts_failures_and_tier_events() {
    let h = harness!();
    strata_tests::strata_only!(h);
    let file = std::path::Path::new(strata_backend::counters::DEFAULT_DIR)
        .join(strata_backend::counters::FILE);
    let read =
        || strata_backend::counters::parse(&std::fs::read_to_string(&file).unwrap_or_default());
    let get =
        |m: &std::collections::BTreeMap<String, f64>, k: &str| m.get(k).copied().unwrap_or(0.0);
    let before = read();

    let c = h.container("counted");
    let out = c.run_workload(&Workload::new().out("counted\n"));
    assert!(out.success(), "{out}");
    c.assert_no_leaks();
    let c = h.container("countbad");
    let out = c.run_with(
        &["--annotation", "strata.dev/backend=bogus"],
        &["true"],
        None,
    );
    assert_ne!(out.code, 0, "{out}");
    c.assert_no_leaks();

    let after = read();
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    let tier = h.tier.name();
    let started = format!("strata_tasks_started_total{{tier=\"{tier}\"}}");
    assert!(
        get(&after, &started) >= get(&before, &started) + 1.0,
        "{started} did not grow:\n{text}"
    );
    let failed = "strata_create_failures_total{tier=\"unknown\",reason=\"invalid_argument\"}";
    assert!(
        get(&after, failed) >= get(&before, failed) + 1.0,
        "{failed} did not grow:\n{text}"
    );
    assert!(
        text.contains("# TYPE strata_tasks_started_total counter"),
        "{text}"
    );
    let grew = |prefix: &str| {
        after
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .any(|(k, v)| *v > get(&before, k))
    };
    match h.tier.name() {
        "sentry" => assert!(
            grew("strata_sentry_trapped_calls_total{decision="),
            "no trapped calls counted:\n{text}"
        ),
        "microvm" => {
            assert!(
                grew("strata_microvm_boots_total{driver=\"qemu\""),
                "no boot counted:\n{text}"
            );
            assert!(
                grew("strata_microvm_boot_seconds_total{driver=\"qemu\""),
                "no boot time counted:\n{text}"
            );
        }
        _ => {}
    }
}
