//! Faults around a running container: containerd restarted under it (every tier and runc), and,
//! for a pod in a VM, a guest kernel that panics and a guest agent that stops answering.
//!
//! The restart takes containerd away from every test of this binary, so it holds [`DAEMON`]
//! exclusively; the other tests hold it shared.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use strata_tests::cmd::poll;
use strata_tests::harness;
use strata_tests::harness::{
    microvm_driver, microvm_test_table, not_applicable, Container, Harness,
};
use strata_tests::wasi::{self, Workload, WorkloadRun};

static DAEMON: RwLock<()> = RwLock::new(());

#[test]
fn containerd_restarted_under_a_running_container_keeps_it() {
    let h = harness!();
    let _only = DAEMON.write().unwrap_or_else(|p| p.into_inner());
    let c = h.container("ctrd-restart");
    c.start_workload(&[], &Workload::new().sleep());
    assert!(
        c.wait_status("RUNNING", Duration::from_secs(30)),
        "{}",
        c.log()
    );
    let shim = c.shim_pid();

    h.restart_containerd().expect("restarting containerd");

    // The same shim serves the task to the new containerd.
    assert!(
        c.wait_status("RUNNING", Duration::from_secs(30)),
        "the task is not RUNNING after containerd's restart: {:?}\n{}",
        c.status(),
        c.log()
    );
    assert_eq!(c.shim_pid(), shim, "the shim was replaced");
    if !wasi::runs_wasm(h) {
        // A WASI task takes no exec (tiers::WASM); on every other target exec works as before.
        let out = c.exec("after-restart", &["/bin/sh", "-c", "echo still-here"]);
        assert!(
            out.success(),
            "exec after containerd's restart: {out}\n{}",
            c.log()
        );
        assert_eq!(out.stdout, "still-here\n", "{out}");
    }
    let out = c.kill("SIGKILL");
    assert!(out.success(), "kill after containerd's restart: {out}");
    assert!(
        c.wait_status("STOPPED", Duration::from_secs(30)),
        "{}",
        c.log()
    );
    c.remove_and_check();
}

/// A `[microvm]` configuration for the fault tests: the suite's, plus a guest kernel that
/// panics on an NMI (QEMU's `inject-nmi` reaches the guest as an unrecovered NMI), a health
/// check that gives up after 6 s, and a `state_dir` of its own (not the default, which is all
/// a dead shim's clean-up could know without the pod's record in the bundle).
fn fault_config(h: &Harness) -> PathBuf {
    let path = h.info.state.join("strata-microvm-faults.toml");
    if !path.exists() {
        let shipped = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/strata-microvm.toml"),
        )
        .expect("reading configs/strata-microvm.toml");
        std::fs::write(
            &path,
            format!(
                "{shipped}\n{}kernel_params = \"sysctl.kernel.panic_on_unrecovered_nmi=1\"\nagent_dead_after_secs = 6\nstate_dir = {:?}\n",
                microvm_test_table(),
                fault_state_dir(h)
            ),
        )
        .expect("writing the fault configuration");
    }
    path
}

fn fault_state_dir(h: &Harness) -> PathBuf {
    h.info.state.join("microvm")
}

/// Whether the suite runs pods in VMs; else the test is reported not applicable.
fn runs_in_a_vm(h: &Harness, test: &str) -> bool {
    if h.processes_on_the_host() {
        not_applicable(
            test,
            "no guest kernel or agent: the target runs containers as host processes",
        );
        return false;
    }
    true
}

/// Starts a pod of one sleeping container under [`fault_config`].
fn start_pod<'h>(h: &'h Harness, name: &str) -> Container<'h> {
    let c = h.container(name);
    let config = fault_config(h);
    c.start(
        &["--runtime-config-path", &config.display().to_string()],
        &["/bin/sleep", "600"],
    );
    assert!(
        c.wait_status("RUNNING", Duration::from_secs(60)),
        "{}",
        c.log()
    );
    c
}

/// The pod's VM state directory: where its hybrid vsock socket is (QEMU's vhost-device-vsock
/// has it as `--uds-path`, Strata's VMM as `--vsock`).
fn vm_dir(c: &Container) -> PathBuf {
    let vm = c.host_pids();
    vm.iter()
        .filter_map(|p| std::fs::read(format!("/proc/{p}/cmdline")).ok())
        .flat_map(|c| {
            c.split(|&b| b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
        })
        .find(|a| a.ends_with("/vsock.sock"))
        .and_then(|a| Path::new(&a).parent().map(Path::to_path_buf))
        .unwrap_or_else(|| panic!("no vsock socket in the command lines of {vm:?}"))
}

/// The pod's VMM process: QEMU, or Strata's VMM (`strata vm run`).
fn vmm_pid(c: &Container) -> u32 {
    c.host_pids()
        .into_iter()
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm"))
                .is_ok_and(|c| c.starts_with("qemu") || c.trim() == "strata")
        })
        .expect("the pod's VMM")
}

/// One QMP command on a fresh connection (after the greeting and `qmp_capabilities`).
fn qmp(socket: &Path, command: &str) -> String {
    let s = UnixStream::connect(socket).expect("connecting to QMP");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).expect("QMP greeting");
    for cmd in ["qmp_capabilities", command] {
        writeln!(w, "{{\"execute\": \"{cmd}\"}}").unwrap();
        line.clear();
        r.read_line(&mut line).expect("QMP answer");
    }
    line
}

/// The pod is gone from the host, the task is STOPPED with SIGKILL's status, the log says
/// why; removing it leaves nothing.
fn assert_pod_failed(c: &Container, why: &str) {
    let stopped = c.wait_status("STOPPED", Duration::from_secs(60));
    assert!(
        stopped,
        "the task is {:?}, not STOPPED\n{}",
        c.status(),
        c.log()
    );
    let ls = c.h.ctr_run(&["task", "ls"]);
    let vm_left = poll(Duration::from_secs(20), || {
        c.host_pids().is_empty().then_some(())
    });
    assert!(vm_left.is_some(), "VM processes left: {:?}", c.host_pids());
    let log = c.h.log_lines(&c.id, 200);
    assert!(
        log.contains(why),
        "the log does not say {why:?}:\n{log}\n{ls}"
    );
    let out = c.h.ctr_run(&["task", "rm", &c.id]);
    assert!(
        out.success() || out.stderr.contains("exit code 137"),
        "{out}"
    );
    c.remove_and_check();
}

#[test]
fn a_guest_kernel_panic_ends_the_pod_and_leaves_nothing() {
    let h = harness!();
    let test = "a_guest_kernel_panic_ends_the_pod_and_leaves_nothing";
    if !runs_in_a_vm(h, test) {
        return;
    }
    if microvm_driver() == "strata" {
        // The guest's panic is injected as an NMI through QEMU's monitor.
        not_applicable(test, "Strata's VMM has no monitor to inject an NMI through");
        return;
    }
    let _shared = DAEMON.read().unwrap_or_else(|p| p.into_inner());
    let c = start_pod(h, "guest-panic");
    let answer = qmp(&vm_dir(&c).join("qmp.sock"), "inject-nmi");
    assert!(answer.contains("return"), "QMP inject-nmi: {answer}");
    assert_pod_failed(&c, "Kernel panic");
}

#[test]
fn a_guest_agent_that_stops_answering_ends_the_pod() {
    let h = harness!();
    if !runs_in_a_vm(h, "a_guest_agent_that_stops_answering_ends_the_pod") {
        return;
    }
    let _shared = DAEMON.read().unwrap_or_else(|p| p.into_inner());
    let c = start_pod(h, "agent-hang");
    // The whole guest stops, so its agent answers nothing (and no guest process can answer
    // for it); the watchdog must give up on it, not wait for ever.
    kill(Pid::from_raw(vmm_pid(&c) as i32), Signal::SIGSTOP).unwrap();
    // A call meanwhile fails rather than hangs.
    let out = c.exec("while-hung", &["/bin/true"]);
    assert!(!out.success(), "exec into a hung guest succeeded: {out}");
    assert_pod_failed(&c, "answered no health check");
}

#[test]
fn a_killed_shims_vm_under_another_state_dir_is_cleaned_up() {
    let h = harness!();
    if !runs_in_a_vm(h, "a_killed_shims_vm_under_another_state_dir_is_cleaned_up") {
        return;
    }
    let _shared = DAEMON.read().unwrap_or_else(|p| p.into_inner());
    let c = start_pod(h, "shimkill-dir");
    let vm = c.host_pids();
    assert!(vm.len() >= 3, "expected the VMM and its helpers: {vm:?}");
    let pod_dir = vm_dir(&c).parent().unwrap().to_path_buf();
    assert!(
        pod_dir.starts_with(fault_state_dir(h)),
        "{}",
        pod_dir.display()
    );
    kill(Pid::from_raw(c.shim_pid() as i32), Signal::SIGKILL).unwrap();
    let gone = poll(Duration::from_secs(30), || {
        (c.status().as_deref() != Some("RUNNING")).then_some(())
    });
    assert!(gone.is_some(), "the task is still RUNNING\n{}", c.log());
    let _ = c.h.ctr_run(&["task", "rm", "-f", &c.id]);
    let rm = c.h.ctr_run(&["containers", "rm", &c.id]);
    assert!(rm.success(), "{rm}\n{}", c.log());
    let left = poll(Duration::from_secs(20), || {
        vm.iter()
            .all(|p| !Path::new(&format!("/proc/{p}")).exists())
            .then_some(())
    });
    assert!(
        left.is_some(),
        "VM processes outlived their shim's clean-up: {vm:?}"
    );
    assert!(!pod_dir.exists(), "{} is left", pod_dir.display());
    c.assert_no_leaks();
}

/// `driver = "strata"` where /dev/kvm cannot run a Linux guest (PVM here): `ctr run` fails with
/// the reason, and nothing of the pod is left (no VM process, state directory, mount or
/// cgroup). Where /dev/kvm is hardware, the shared suites run under that driver instead
/// (`STRATA_TEST_MICROVM_DRIVER=strata`).
#[test]
fn the_strata_driver_refuses_a_pod_where_kvm_is_not_hardware() {
    let h = harness!();
    let test = "faults::the_strata_driver_refuses_a_pod_where_kvm_is_not_hardware";
    if !runs_in_a_vm(h, test) {
        return;
    }
    let Some(why) = strata_microvm::strata_vmm::unsupported_here() else {
        not_applicable(
            test,
            "/dev/kvm is hardware-backed here: the strata driver boots pods",
        );
        return;
    };
    let _shared = DAEMON.read().unwrap_or_else(|p| p.into_inner());
    let config = h.info.state.join("strata-microvm-strata-driver.toml");
    let fault = std::fs::read_to_string(fault_config(h)).unwrap();
    std::fs::write(
        &config,
        fault.replacen("driver = \"qemu\"", "driver = \"strata\"", 1),
    )
    .unwrap();
    let c = h.container("strata-driver");
    let out = c.try_start(
        &["--runtime-config-path", &config.display().to_string()],
        &["/bin/true"],
    );
    assert!(!out.success(), "the pod started: {out}");
    assert!(
        out.stderr.contains("needs hardware virtualisation"),
        "ctr does not say why: {out}\n{}",
        c.log()
    );
    assert!(out.stderr.contains(why.split(';').next().unwrap()), "{out}");
    let left: Vec<_> = std::fs::read_dir(fault_state_dir(h))
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(
        !left.iter().any(|p| p.to_string_lossy().contains(&c.id)),
        "VM state left: {left:?}"
    );
    c.remove_and_check();
}
