//! The shim under stress: killed with SIGKILL mid-run, and 50 containers started at once.

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use strata_tests::cmd::poll;
use strata_tests::harness;
use strata_tests::wasi::{self, Workload, WorkloadRun};

#[test]
fn shim_killed_mid_run_is_cleaned_up() {
    let h = harness!();
    let c = h.container("shimkill");
    // A child beside the init where the workload is a process (a WASI module is one).
    let children = if wasi::runs_wasm(h) { 0 } else { 1 };
    // In a pod network (a wasm task has none): under microvm the namespace then holds the
    // VM's tap and redirects, which the dead shim's clean-up must remove.
    let net = (!wasi::runs_wasm(h))
        .then(|| strata_tests::netns::TestNet::new().expect("making a test network"));
    let ns = net
        .as_ref()
        .map(|n| format!("network:{}", n.path().display()));
    let flags: Vec<&str> = ns.iter().flat_map(|f| ["--with-ns", f.as_str()]).collect();
    c.start_workload(&flags, &Workload::new().children(children).sleep());
    // Start returns once the init may exec; on a loaded machine the shell forks later.
    let workload = poll(Duration::from_secs(20), || {
        // (Beside the sentry's keeper, which must go too.)
        c.pids()
            .ok()
            .filter(|p| h.workload_pids(p).len() == 1 + children)
    });
    let workload =
        workload.unwrap_or_else(|| panic!("expected {} processes: {:?}", 1 + children, c.pids()));
    // In a VM those pids are the guest's: what must go on the host is the VM (QEMU and its
    // helpers), which holds them.
    let workload = if h.processes_on_the_host() {
        workload
    } else {
        let vm = c.host_pids();
        assert!(vm.len() >= 3, "expected QEMU and its helpers: {vm:?}");
        vm
    };

    kill(Pid::from_raw(c.shim_pid() as i32), Signal::SIGKILL).unwrap();

    // containerd notices, runs `shim delete`, and forgets the task.
    let gone = poll(Duration::from_secs(30), || {
        (c.status().as_deref() != Some("RUNNING")).then_some(())
    });
    assert!(
        gone.is_some(),
        "containerd still reports the task RUNNING\n{}",
        c.log()
    );
    let _ = h.ctr_run(&["task", "rm", "-f", &c.id]);
    let ls = h.ctr_run(&["task", "ls"]);
    assert!(ls.success(), "ctr task ls after the shim died: {ls}");
    let rm = h.ctr_run(&["containers", "rm", &c.id]);
    assert!(
        rm.success(),
        "ctr c rm after the shim died: {rm}\n{}",
        c.log()
    );
    for pid in workload {
        let alive = poll(Duration::from_secs(20), || {
            (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(())
        });
        assert!(
            alive.is_some(),
            "workload process {pid} outlived its shim's clean-up"
        );
    }
    c.assert_no_leaks();
    if let Some(net) = &net {
        assert_eq!(
            net.leftovers(),
            Vec::<String>::new(),
            "left in the pod's network namespace after the shim's clean-up"
        );
    }
    // containerd still works.
    let c2 = h.container("aftershimkill");
    let out = c2.run_workload(&Workload::new().out("still-fine\n"));
    assert_eq!(out.stdout, "still-fine\n", "{out}");
    c2.assert_no_leaks();
}

#[test]
fn fifty_containers_in_parallel() {
    let h = harness!();
    // Each microvm container is a VM of its own, emulated here (QEMU TCG on 2 cores): 5 at once.
    let n = if h.processes_on_the_host() { 50 } else { 5 };
    let containers: Vec<_> = (0..n).map(|i| h.container(&format!("par{i}"))).collect();
    let outputs: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = containers
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let w = Workload::new()
                    .out(&format!("hello-{i}\n"))
                    .exit(i as i32 % 7);
                s.spawn(move || c.run_workload(&w))
            })
            .collect();
        handles.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let mut failures = Vec::new();
    for (i, out) in outputs.iter().enumerate() {
        if out.code != (i % 7) as i32 || out.stdout != format!("hello-{i}\n") {
            failures.push(format!("{}: {out}", containers[i].id));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {n} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let slowest = outputs.iter().map(|o| o.elapsed).max().unwrap();
    eprintln!("{n} parallel containers: slowest {slowest:.2?}");
    let ids: Vec<&str> = containers.iter().map(|c| c.id.as_str()).collect();
    h.assert_no_leaks(&ids);
}
