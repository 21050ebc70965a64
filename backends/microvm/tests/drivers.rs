//! The drivers for real, with the guest kernel from scripts/build-guest-kernel and the agent's
//! initramfs from scripts/build-initramfs:
//!
//! - QEMU `-M microvm` (TCG here: this host's /dev/kvm is PVM), vhost-device-vsock and
//!   virtiofsd as separate processes;
//! - Strata's own VMM (`strata vm run`, the `strata` binary of this build) with virtiofsd. Where
//!   /dev/kvm is hardware it boots the guest to its agent. Here (PVM) it is refused with the
//!   reason, and its process handling is tested with the hardware check off: virtiofsd and the
//!   VMM start, the VMM's virtio-fs front end connects, the guest kernel starts and stops at its
//!   first `int3` (PVM cannot emulate it), and nothing is left, whether stopped or orphaned.
//!
//! Skipped, saying why, without root, the helpers (scripts/install-deps) or the cached kernel
//! (scripts/build-guest-kernel); on CI a skip is a failure (`strata_backend::testing`).
//! The tests run one at a time: each checks that the test process has no child left.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use strata_agent_protocol::client::Agent;
use strata_agent_protocol::proto::agent::Stdio;
use strata_microvm::hypervisor::{GUEST_SHARE_DIR, VM_RECORD_FILE};
use strata_microvm::qemu::{cleanup_orphan, hardware_kvm, Qemu, CONSOLE_LOG};
use strata_microvm::strata_vmm::{unsupported_here, StrataVmm};
use strata_microvm::tools::{self, Tool};
use strata_microvm::{process, Accel, Error, Hypervisor, Vm, VmRecord, VmSpec};

/// How long the agent may take to answer under TCG.
const AGENT_DEADLINE: Duration = Duration::from_secs(120);

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf()
}

fn skip(test: &str, why: &str) {
    strata_backend::testing::skip(&format!("microvm drivers::{test}"), why);
}

/// The agent's initramfs, built once per test run from this tree.
fn initramfs() -> Result<PathBuf, String> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("microvm-qemu-initramfs.cpio.gz");
            let st = Command::new(repo().join("scripts/build-initramfs"))
                .arg(&out)
                .stdout(std::process::Stdio::null())
                .status()
                .map_err(|e| format!("scripts/build-initramfs: {e}"))?;
            if st.success() {
                Ok(out)
            } else {
                Err(format!("scripts/build-initramfs failed ({st})"))
            }
        })
        .clone()
}

/// A scratch directory with `state/` (0700) and `shared/`; on drop, anything mounted under it
/// is detached and it is removed.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let base = PathBuf::from(format!("/tmp/strata-mq-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("state")).unwrap();
        std::fs::set_permissions(base.join("state"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        std::fs::create_dir_all(base.join("shared")).unwrap();
        Scratch(base)
    }
    fn state(&self) -> PathBuf {
        self.0.join("state")
    }
    fn shared(&self) -> PathBuf {
        self.0.join("shared")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for m in mount_points_under(&self.0).into_iter().rev() {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn mount_points_under(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect()
}

/// What every boot needs: root, the helpers, the kernel, the initramfs. None after a skip.
fn guest(test: &str) -> Option<(PathBuf, PathBuf)> {
    if !nix::unistd::geteuid().is_root() {
        skip(test, "needs root (the shared directory is a mount point)");
        return None;
    }
    for t in [Tool::Qemu, Tool::Virtiofsd, Tool::VhostVsock] {
        if let Err(e) = tools::find(t, None) {
            skip(test, &e.to_string());
            return None;
        }
    }
    let Some(kernel) = tools::built_guest_kernel(&repo()) else {
        skip(
            test,
            "the guest kernel is not built yet for this fragment (scripts/build-guest-kernel)",
        );
        return None;
    };
    match initramfs() {
        Ok(initrd) => Some((kernel, initrd)),
        Err(e) => panic!("{e}"),
    }
}

fn spec(s: &Scratch, kernel: &Path, initrd: &Path) -> VmSpec {
    VmSpec {
        id: "test-pod".into(),
        state_dir: s.state(),
        kernel: kernel.into(),
        initrd: initrd.into(),
        vcpus: 1,
        memory_mib: 256,
        shared_dir: s.shared(),
        cgroups: Vec::new(),
        allow_tcg: true,
        extra_cmdline: "quiet".into(),
        taps: Vec::new(),
    }
}

fn record(state: &Path) -> VmRecord {
    process::read_record(&state.join(VM_RECORD_FILE))
        .unwrap()
        .expect("vm.json exists while the VM runs")
}

fn assert_all_gone(rec: &VmRecord) {
    for &(pid, t) in &rec.processes {
        assert!(!process::is_alive(pid, t), "pid {pid} is still running");
    }
    let kids = process::descendants(std::process::id());
    assert!(
        kids.is_empty(),
        "the test process has children left: {kids:?}"
    );
}

/// A `kB` field of /proc/PID/status.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Connects to the agent through the hybrid vsock socket, retrying while the guest boots.
fn wait_for_agent(vm: &dyn Vm) -> (Agent, Duration) {
    let t0 = Instant::now();
    loop {
        match Agent::connect_hybrid_vsock(vm.vsock_socket(), 1024, Duration::from_secs(10)) {
            Ok(a) => return (a, t0.elapsed()),
            Err(e) => {
                assert!(
                    vm.is_running(),
                    "QEMU ended before the agent answered ({e}); console:\n{}",
                    vm.console_tail()
                );
                assert!(
                    t0.elapsed() < AGENT_DEADLINE,
                    "the agent did not answer within {AGENT_DEADLINE:?}: {e}; console:\n{}",
                    vm.console_tail()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// A bundle (config.json and a busybox rootfs) at `dir`, running `args`.
fn busybox_bundle(dir: &Path, args: &[&str]) {
    let bin = dir.join("rootfs/bin");
    std::fs::create_dir_all(&bin).unwrap();
    for d in ["proc", "dev", "tmp"] {
        std::fs::create_dir_all(dir.join("rootfs").join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", bin.join("busybox")).unwrap();
    for applet in ["sh", "cat"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
    }
    let spec = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {"terminal": false, "user": {"uid": 0, "gid": 0}, "args": args,
                    "env": ["PATH=/bin"], "cwd": "/", "noNewPrivileges": true},
        "root": {"path": "rootfs", "readonly": false},
        "hostname": "shared",
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "uts"}]}
    });
    std::fs::write(dir.join("config.json"), spec.to_string()).unwrap();
}

/// Boot, the agent's `Ping` over hybrid vsock (vhost-device-vsock), a bind mount made in the
/// shared directory after the start seen by virtiofsd (and, where the agent mounts the share,
/// by a container in the guest), then `stop`: no process, socket or state left.
#[test]
fn boots_answers_over_hybrid_vsock_and_stops_clean() {
    let _serial = serial();
    let test = "boots_answers_over_hybrid_vsock_and_stops_clean";
    let Some((kernel, initrd)) = guest(test) else {
        return;
    };
    let s = Scratch::new("boot");
    let spec = spec(&s, &kernel, &initrd);
    let t0 = Instant::now();
    let vm = Qemu::default().start(&spec).unwrap();
    let started = t0.elapsed();
    assert_eq!(vm.driver(), "qemu");
    assert_eq!(
        vm.accel(),
        if hardware_kvm() {
            Accel::Kvm
        } else {
            Accel::Tcg
        }
    );
    assert!(vm.is_running());
    assert_eq!(vm.vsock_socket(), s.state().join("vsock.sock"));
    assert!(vm.vsock_socket().exists());
    let rec = record(&s.state());
    let pids = vm.host_pids();
    let names: Vec<String> = pids.iter().map(|&p| comm(p)).collect();
    for want in ["qemu-system-x86", "vhost-device-vs", "virtiofsd"] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
    assert_eq!(pids.len(), rec.processes.len(), "{pids:?} vs {rec:?}");

    // The tier's pattern: a container's rootfs bound into the share after virtiofsd started.
    let outside = s.0.join("outside");
    busybox_bundle(&outside, &["/bin/cat", "/marker"]);
    std::fs::write(outside.join("rootfs/marker"), "seen through virtio-fs\n").unwrap();
    let late = s.shared().join("ctr");
    std::fs::create_dir(&late).unwrap();
    nix::mount::mount(
        Some(&outside),
        &late,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .unwrap();
    // virtiofsd serves from its own mount namespace, rooted at the share.
    let seen_by_virtiofsd = rec.processes.iter().any(|&(pid, _)| {
        std::fs::read_to_string(format!("/proc/{pid}/root/ctr/rootfs/marker")).is_ok()
    });
    assert!(
        seen_by_virtiofsd,
        "a bind mount made after the start did not reach virtiofsd's mount namespace"
    );

    let (agent, waited) = wait_for_agent(vm.as_ref());
    let ping = agent.ping().unwrap();
    assert_eq!(ping.pid, 1);
    eprintln!(
        "qemu test: start() {:.2} s, agent answered {:.2} s after QEMU start (agent up {:.2} s); mounts {:?}",
        started.as_secs_f64(),
        (started + waited).as_secs_f64(),
        ping.uptime_ms as f64 / 1000.0,
        ping.mounts
    );
    for &pid in &pids {
        // Guest RAM is the shared memfd (RssShmem); the process's own memory is RssAnon.
        let f = |k| status_kib(pid, k).unwrap_or(0);
        eprintln!(
            "qemu test: {} (pid {pid}) RSS {} kB (anon {}, file {}, shmem {})",
            comm(pid),
            f("VmRSS"),
            f("RssAnon"),
            f("RssFile"),
            f("RssShmem")
        );
    }

    if ping.mounts.iter().any(|m| m == "virtiofs") {
        let r = agent
            .create_container(
                "ctr",
                &format!("{GUEST_SHARE_DIR}/ctr"),
                Stdio {
                    stream_stdout: true,
                    ..Default::default()
                },
            )
            .unwrap();
        let mut out = agent.open_stream(r.stdio_ports.stdout).unwrap();
        agent.start("ctr", "").unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut out, &mut text).unwrap();
        assert_eq!(agent.wait("ctr", "", Duration::from_secs(60)).unwrap(), 0);
        assert_eq!(text, "seen through virtio-fs\n");
        agent.delete("ctr", "").unwrap();
    } else {
        eprintln!(
            "qemu test: this agent does not mount the share ({:?}): the guest side of virtio-fs is not checked",
            ping.mounts
        );
    }
    drop(agent);

    let t1 = Instant::now();
    vm.stop(Duration::from_secs(5)).unwrap();
    eprintln!("qemu test: stop() {:.2} s", t1.elapsed().as_secs_f64());
    assert!(!vm.is_running());
    assert!(vm.host_pids().is_empty());
    assert_all_gone(&rec);
    assert!(!s.state().exists(), "the state directory is left");
    assert!(
        mount_points_under(&s.0).is_empty(),
        "mounts left: {:?}",
        mount_points_under(&s.0)
    );
    vm.stop(Duration::from_secs(5)).unwrap();
}

/// Failures before and after processes exist: each a clear error, nothing left running, only
/// the console log in the state directory.
#[test]
fn bad_starts_fail_clearly_and_leave_nothing() {
    let _serial = serial();
    let test = "bad_starts_fail_clearly_and_leave_nothing";
    let Some((kernel, initrd)) = guest(test) else {
        return;
    };
    let s = Scratch::new("bad");
    let only_console = |s: &Scratch| {
        let left: Vec<String> = std::fs::read_dir(s.state())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != CONSOLE_LOG)
            .collect();
        assert!(left.is_empty(), "left in the state directory: {left:?}");
        assert!(mount_points_under(&s.0).is_empty());
        let kids = process::descendants(std::process::id());
        assert!(kids.is_empty(), "processes left: {kids:?}");
    };

    // A missing kernel: refused before anything starts.
    let mut sp = spec(&s, &s.0.join("no-such-vmlinux"), &initrd);
    let e = Qemu::default().start(&sp).err().unwrap();
    assert!(
        matches!(e, Error::MissingImage { what: "kernel", .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("no-such-vmlinux"), "{e}");
    only_console(&s);

    // A kernel QEMU cannot load: the helpers were running, QEMU fails; its words are in the error.
    let bogus = s.0.join("bogus-vmlinux");
    std::fs::write(&bogus, vec![0u8; 4096]).unwrap();
    sp.kernel = bogus;
    let e = Qemu::default().start(&sp).err().unwrap();
    let msg = e.to_string();
    eprintln!("qemu test: a bogus kernel: {msg}");
    assert!(matches!(e, Error::Boot { .. }), "{e:?}");
    assert!(msg.contains("qemu exited"), "{msg}");
    assert!(msg.contains("qemu says"), "{msg}");
    only_console(&s);

    // A helper that is not where the configuration says.
    sp.kernel = kernel.clone();
    let e = Qemu {
        virtiofsd: Some("/nonexistent/virtiofsd".into()),
        ..Default::default()
    }
    .start(&sp)
    .err()
    .unwrap();
    assert!(
        matches!(
            e,
            Error::MissingTool {
                name: "virtiofsd",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("scripts/install-deps"), "{e}");
    only_console(&s);

    // TCG not allowed.
    sp.allow_tcg = false;
    if hardware_kvm() {
        strata_backend::testing::not_applicable(
            test,
            "/dev/kvm is hardware-backed here: allow_tcg = false still boots with KVM",
        );
    } else {
        let e = Qemu::default().start(&sp).err().unwrap();
        eprintln!("qemu test: allow_tcg = false: {e}");
        assert!(matches!(e, Error::NoAccelerator(_)), "{e:?}");
        assert!(e.to_string().contains("allow_tcg"), "{e}");
        only_console(&s);
    }
}

/// A VM dropped without `stop` (its shim was SIGKILLed): `cleanup_orphan` ends every recorded
/// process from the state directory alone and removes it. The processes were in the given
/// cgroup from their start.
#[test]
fn cleanup_orphan_ends_a_vm_whose_shim_was_killed() {
    let _serial = serial();
    let test = "cleanup_orphan_ends_a_vm_whose_shim_was_killed";
    let Some((kernel, initrd)) = guest(test) else {
        return;
    };
    let s = Scratch::new("orphan");
    let mut spec = spec(&s, &kernel, &initrd);
    // The pod's cgroups as the tier picks them: the unified hierarchy on a cgroup v2 host,
    // else one directory per v1 controller (this machine is hybrid: memory and pids here).
    let name = format!("strata-mq-{}", std::process::id());
    let root = Path::new("/sys/fs/cgroup");
    let cgroups: Vec<PathBuf> = if root.join("cgroup.controllers").exists() {
        vec![root.join(&name)]
    } else {
        ["memory", "pids"]
            .iter()
            .map(|c| root.join(c))
            .filter(|d| d.join("cgroup.procs").exists())
            .map(|d| d.join(&name))
            .collect()
    };
    for cg in &cgroups {
        std::fs::create_dir_all(cg).unwrap();
    }
    spec.cgroups = cgroups.clone();
    let vm = Qemu::default().start(&spec).unwrap();
    let rec = record(&s.state());
    assert_eq!(rec.cgroups, spec.cgroups);
    if cgroups.is_empty() {
        eprintln!("qemu test: no cgroup hierarchy here: cgroup placement not checked");
    }
    for &(pid, _) in &rec.processes {
        let lines = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        let joined = lines
            .lines()
            .filter(|l| l.ends_with(&format!("/{name}")))
            .count();
        assert_eq!(
            joined,
            cgroups.len(),
            "pid {pid} ({}) is not in every one of {cgroups:?}: {lines}",
            comm(pid)
        );
    }
    drop(vm);
    for &(pid, t) in &rec.processes {
        assert!(process::is_alive(pid, t), "pid {pid} ended with its handle");
    }

    cleanup_orphan(&s.state()).unwrap();
    assert_all_gone(&rec);
    assert!(!s.state().exists());
    assert!(mount_points_under(&s.0).is_empty());
    cleanup_orphan(&s.state()).unwrap();
    // The dropped handles' processes are this test's zombies now; a cgroup holding zombies
    // cannot be removed (kernel 6.18), so reap them as a killed shim's reaper would.
    for &(pid, _) in &rec.processes {
        let _ = nix::sys::wait::waitpid(
            nix::unistd::Pid::from_raw(pid as i32),
            Some(nix::sys::wait::WaitPidFlag::WNOHANG),
        );
    }
    // `cleanup_orphan` removes them once the zombies are reaped (a dead shim's are reaped by
    // whoever inherits them at once); here it may have given up first, as the test reaps late.
    for cg in &cgroups {
        match std::fs::remove_dir(cg) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("{}: {e}", cg.display()),
        }
    }
}

/// The `strata` binary of this build (cargo puts a profile's binaries beside `deps/`), or None
/// after a skip.
fn strata_binary(test: &str) -> Option<PathBuf> {
    let bin = std::env::current_exe()
        .ok()?
        .parent()?
        .parent()?
        .join("strata");
    if bin.is_file() {
        return Some(bin);
    }
    skip(
        test,
        &format!(
            "{} is not built (cargo build --workspace --bins)",
            bin.display()
        ),
    );
    None
}

fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < within, "{what} within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Where /dev/kvm is not hardware, the strata driver refuses the pod with the reason and
/// starts nothing.
#[test]
fn strata_driver_refuses_where_kvm_is_not_hardware() {
    let _serial = serial();
    let test = "strata_driver_refuses_where_kvm_is_not_hardware";
    let Some((kernel, initrd)) = guest(test) else {
        return;
    };
    if hardware_kvm() {
        strata_backend::testing::not_applicable(test, "/dev/kvm is hardware-backed here");
        return;
    }
    let s = Scratch::new("strata-refused");
    let e = StrataVmm::default()
        .start(&spec(&s, &kernel, &initrd))
        .err()
        .unwrap();
    eprintln!("strata driver here: {e}");
    assert!(matches!(e, Error::NoAccelerator(_)), "{e:?}");
    assert_eq!(
        Some(e.to_string()),
        unsupported_here().map(|w| format!("{}", Error::NoAccelerator(w)))
    );
    assert!(e.to_string().contains("driver = \"qemu\""), "{e}");
    assert_eq!(std::fs::read_dir(s.state()).unwrap().count(), 0);
    assert!(process::descendants(std::process::id()).is_empty());
}

/// The strata driver's VM: virtiofsd and `strata vm run` in the VM's record, the console in
/// the state directory, the VMM's virtio-fs connected to virtiofsd; on hardware KVM the agent
/// answers; here the guest kernel stops at its first `int3` and the VMM ends with the reason.
/// `stop` then leaves nothing.
#[test]
fn strata_driver_runs_its_processes_and_stop_leaves_nothing() {
    let _serial = serial();
    let test = "strata_driver_runs_its_processes_and_stop_leaves_nothing";
    let Some((kernel, initrd)) = guest(test) else {
        return;
    };
    let Some(strata) = strata_binary(test) else {
        return;
    };
    let s = Scratch::new("strata-run");
    let driver = StrataVmm {
        strata: Some(strata),
        virtiofsd: None,
        require_hardware_kvm: false,
    };
    // Not quiet: the kernel's first lines show that it runs.
    let mut sp = spec(&s, &kernel, &initrd);
    sp.extra_cmdline = String::new();
    let vm = driver.start(&sp).unwrap();
    assert_eq!(vm.driver(), "strata");
    assert_eq!(vm.accel(), Accel::Kvm);
    assert_eq!(vm.vsock_socket(), s.state().join("vsock.sock"));
    let rec = record(&s.state());
    let names: Vec<String> = rec.processes.iter().map(|&(p, _)| comm(p)).collect();
    for want in ["strata", "virtiofsd"] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
    // The kernel runs: the machine was built, its virtio-fs device connected to virtiofsd.
    wait_until(
        "the guest kernel on the console",
        Duration::from_secs(60),
        || {
            std::fs::read_to_string(s.state().join(CONSOLE_LOG))
                .is_ok_and(|c| c.contains("Linux version"))
        },
    );
    let virtiofsd_log = std::fs::read_to_string(s.state().join("virtiofsd.log")).unwrap();
    assert!(
        virtiofsd_log.contains("Client connected"),
        "virtiofsd saw no front end: {virtiofsd_log}"
    );
    if hardware_kvm() {
        let (agent, waited) = wait_for_agent(vm.as_ref());
        assert_eq!(agent.ping().unwrap().pid, 1);
        eprintln!("strata driver: the agent answered after {waited:?}");
    } else {
        wait_until(
            "the VMM's end at the guest's first int3",
            Duration::from_secs(120),
            || !vm.is_running(),
        );
        let log = std::fs::read_to_string(s.state().join("strata-vmm.log")).unwrap();
        assert!(log.contains("emulation failure"), "{log}");
        assert!(
            vm.console_tail().contains("x86/fpu"),
            "{}",
            vm.console_tail()
        );
    }
    vm.stop(Duration::from_secs(5)).unwrap();
    assert_all_gone(&rec);
    assert!(!s.state().exists(), "the state directory is left");
    assert!(mount_points_under(&s.0).is_empty());
}

/// A strata-driver VM dropped without `stop` (its shim was SIGKILLed): `cleanup_orphan` ends it
/// from its state directory alone.
#[test]
fn strata_driver_cleanup_orphan_ends_a_vm_whose_shim_was_killed() {
    let _serial = serial();
    let test = "strata_driver_cleanup_orphan_ends_a_vm_whose_shim_was_killed";
    let Some((kernel, initrd)) = guest(test) else {
        return;
    };
    let Some(strata) = strata_binary(test) else {
        return;
    };
    let s = Scratch::new("strata-orphan");
    let driver = StrataVmm {
        strata: Some(strata),
        virtiofsd: None,
        require_hardware_kvm: false,
    };
    let vm = driver.start(&spec(&s, &kernel, &initrd)).unwrap();
    let rec = record(&s.state());
    drop(vm);
    cleanup_orphan(&s.state()).unwrap();
    for &(pid, _) in &rec.processes {
        let _ = nix::sys::wait::waitpid(
            nix::unistd::Pid::from_raw(pid as i32),
            Some(nix::sys::wait::WaitPidFlag::WNOHANG),
        );
    }
    assert_all_gone(&rec);
    assert!(!s.state().exists());
    assert!(mount_points_under(&s.0).is_empty());
}
