//! The full machine: Strata's VMM boots the guest kernel (scripts/build-guest-kernel) with the
//! agent's initramfs (scripts/build-initramfs) and a busybox bundle as an erofs (or ext4) image
//! on a read-only virtio-blk disk (`strata_vmm::rootfs`); the host reaches the agent through
//! the hybrid vsock socket (`CONNECT 1024`), exchanges the protocol version over ttrpc, pings it,
//! mounts the bundle disk (`MountBundle`), creates and starts a busybox container with its stdout
//! and stderr streamed over vsock, checks its output, exit status and stats, deletes it, and shuts
//! the VM down through the agent, which must end as a clean reset.
//!
//! This needs hardware KVM (kvm_intel or kvm_amd): on PVM an unmodified Linux stops with an
//! emulation failure, so the test is skipped there, saying so. `STRATA_FORCE_LINUX_GUEST=1`
//! runs it anyway (to see how it fails). A missing kernel is a skip, and on CI a failure
//! (`strata_backend::testing`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use strata_agent_protocol::client::Agent;
use strata_agent_protocol::proto::agent::Stdio as AgentStdio;
use strata_vmm::devices::virtio::block::DiskConfig;
use strata_vmm::devices::virtio::vsock::VsockConfig;
use strata_vmm::{Exit, Machine, MachineConfig};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A static busybox, or None.
fn static_busybox() -> Option<&'static Path> {
    let b = Path::new("/bin/busybox");
    let ldd = Command::new("ldd").arg(b).output().ok()?;
    (b.exists() && !String::from_utf8_lossy(&ldd.stdout).contains("=>")).then_some(b)
}

/// A busybox OCI bundle (config.json, rootfs/) under `dir`, running `script` with `sh -c`.
fn busybox_bundle(dir: &Path, busybox: &Path, script: &str) -> PathBuf {
    let bundle = dir.join("bundle");
    let bin = bundle.join("rootfs/bin");
    std::fs::create_dir_all(&bin).unwrap();
    for d in ["proc", "dev", "tmp"] {
        std::fs::create_dir_all(bundle.join("rootfs").join(d)).unwrap();
    }
    std::fs::copy(busybox, bin.join("busybox")).unwrap();
    for applet in ["sh", "echo", "hostname", "cat"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
    }
    let spec = format!(
        r#"{{"ociVersion":"1.0.2",
  "process":{{"terminal":false,"user":{{"uid":0,"gid":0}},
    "args":["/bin/sh","-c",{script:?}],
    "env":["PATH=/bin"],"cwd":"/","noNewPrivileges":true}},
  "root":{{"path":"rootfs","readonly":false}},
  "hostname":"kvm-guest",
  "mounts":[{{"destination":"/proc","type":"proc","source":"proc"}},
    {{"destination":"/dev","type":"tmpfs","source":"tmpfs","options":["nosuid","mode=755"]}}],
  "linux":{{"namespaces":[{{"type":"pid"}},{{"type":"ipc"}},{{"type":"uts"}},{{"type":"mount"}}]}}}}"#
    );
    std::fs::write(bundle.join("config.json"), spec).unwrap();
    bundle
}

fn hardware_kvm() -> bool {
    Path::new("/sys/module/kvm_intel").exists() || Path::new("/sys/module/kvm_amd").exists()
}

#[test]
fn linux_guest_with_agent_over_vsock() {
    if !kvm_available() {
        return;
    }
    let forced = std::env::var("STRATA_FORCE_LINUX_GUEST").as_deref() == Ok("1");
    if !hardware_kvm() && !forced {
        let what = if Path::new("/sys/module/kvm_pvm").exists() {
            "PVM (kvm_pvm)"
        } else {
            "not hardware-backed (no kvm_intel/kvm_amd)"
        };
        strata_backend::testing::not_applicable(
            "linux_guest_with_agent_over_vsock",
            &format!("/dev/kvm is {what}; an unmodified Linux guest cannot run on it (the guest image is tested under QEMU TCG instead)"),
        );
        return;
    }
    let out = Command::new(root().join("scripts/build-guest-kernel"))
        .arg("--cached")
        .output()
        .unwrap();
    if !out.status.success() {
        strata_backend::testing::skip(
            "guest_linux",
            "the guest kernel is not built yet (scripts/build-guest-kernel)",
        );
        return;
    }
    let kernel = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    let Some(busybox) = static_busybox() else {
        strata_backend::testing::skip(
            "linux_guest_with_agent_over_vsock",
            "no static /bin/busybox (apt-get install busybox-static)",
        );
        return;
    };
    let dir = TempDir::new("linux");
    let bundle = busybox_bundle(
        &dir.0,
        busybox,
        "echo hello from busybox in a microVM; hostname; echo pid=$$; echo to-stderr >&2",
    );
    // The image as the tier builds it: erofs where mkfs.erofs is installed, else ext4.
    let cache = dir.path("images");
    let image = match strata_vmm::rootfs::build_erofs(&bundle, &cache) {
        Ok(i) => i,
        Err(_) => strata_vmm::rootfs::build_ext4(&bundle, &cache).unwrap(),
    };
    let initrd = dir.path("initramfs.cpio.gz");
    let st = Command::new(root().join("scripts/build-initramfs"))
        .arg(&initrd)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "build-initramfs failed");

    let uds = dir.path("agent.sock");
    let mut cfg = MachineConfig::new(&kernel);
    cfg.initrd = Some(initrd);
    cfg.mem_mib = 256;
    cfg.vcpus = 2;
    cfg.cmdline = format!("{} quiet", strata_vmm::machine::DEFAULT_CMDLINE);
    cfg.vsock = Some(VsockConfig {
        guest_cid: 3,
        uds_path: uds.clone(),
    });
    cfg.disks = vec![DiskConfig {
        path: image.path.clone(),
        read_only: true,
    }];
    let t0 = Instant::now();
    let mut m = Machine::start(cfg).unwrap();
    let console = m.console();

    // The agent is ready when it answers the version exchange.
    let deadline = Instant::now() + Duration::from_secs(60);
    let agent = loop {
        match Agent::connect_hybrid_vsock(&uds, 1024, Duration::from_secs(10)) {
            Ok(a) => break a,
            Err(e) => assert!(
                Instant::now() < deadline,
                "the agent never answered on vsock ({e}); console:\n{}",
                console.contents()
            ),
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let ready = t0.elapsed();
    let p = agent.ping().unwrap();
    assert_eq!(p.pid, 1);
    assert_eq!(p.mounts, ["proc", "sysfs", "devtmpfs", "tmpfs", "cgroup2"]);

    // The busybox container from the bundle disk, stdout and stderr over vsock streams.
    let mounted = agent.mount_bundle("/dev/vda", "busybox").unwrap();
    assert!(mounted.fs_type == "erofs" || mounted.fs_type == "ext4");
    let created = agent
        .create_container(
            "busybox",
            &mounted.bundle,
            AgentStdio {
                stream_stdout: true,
                stream_stderr: true,
                ..Default::default()
            },
        )
        .unwrap();
    let ports = created.stdio_ports.unwrap_or_default();
    assert_eq!(ports.stdin, 0, "stdin not streamed");
    let mut stdout = agent.open_stream(ports.stdout).unwrap();
    let mut stderr = agent.open_stream(ports.stderr).unwrap();
    for s in [&stdout, &stderr] {
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    }
    agent.start("busybox", "").unwrap();
    let (mut out, mut err) = (String::new(), String::new());
    use std::io::Read;
    stdout.read_to_string(&mut out).unwrap();
    stderr.read_to_string(&mut err).unwrap();
    let status = agent.wait("busybox", "", Duration::from_secs(30)).unwrap();
    assert_eq!(
        out,
        "hello from busybox in a microVM\nkvm-guest\npid=1\n",
        "console:\n{}",
        console.contents()
    );
    assert_eq!(err, "to-stderr\n");
    assert_eq!(status, 0);
    let stats = agent.stats("busybox").unwrap();
    assert_eq!(stats.cgroup_version, 2);
    assert!(stats.cpu_usage_total_ns > 0, "{stats:?}");
    agent.delete("busybox", "").unwrap();
    let container_done = t0.elapsed();

    agent.shutdown().unwrap();
    let exit = m.wait(Some(Duration::from_secs(30)));
    assert_eq!(
        exit.unwrap(),
        Exit::Reset,
        "console:\n{}",
        console.contents()
    );
    eprintln!("VMM start to agent answering on vsock: {ready:?}");
    eprintln!("VMM start to busybox container output read and deleted: {container_done:?}");
}

/// On PVM, the real guest kernel runs through Strata's boot path until its first kernel-mode
/// `int3` (the alternatives self-test), which PVM cannot emulate for an unmodified kernel. Up to
/// there it exercises what the tiny guests cannot: PVH entry into a real Linux, the e820 map, the
/// MP table (both CPUs, the IOAPIC, the timer routed through IOAPIC pin 0) and the console. The
/// VMM must report the failure with the guest's RIP and the console tail.
#[test]
fn linux_on_pvm_boots_until_its_first_int3() {
    if !kvm_available() {
        return;
    }
    if !Path::new("/sys/module/kvm_pvm").exists() {
        strata_backend::testing::not_applicable(
            "linux_on_pvm_boots_until_its_first_int3",
            "/dev/kvm is not PVM; linux_guest_with_agent_over_vsock covers this host",
        );
        return;
    }
    let out = Command::new(root().join("scripts/build-guest-kernel"))
        .arg("--cached")
        .output()
        .unwrap();
    if !out.status.success() {
        strata_backend::testing::skip(
            "guest_linux",
            "the guest kernel is not built yet (scripts/build-guest-kernel)",
        );
        return;
    }
    let kernel = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    let mut cfg = MachineConfig::new(&kernel);
    cfg.vcpus = 2;
    cfg.mem_mib = 128;
    // PVM offers XSAVE in CPUID that it cannot emulate; keep Linux on FXSAVE.
    cfg.cmdline = format!("{} noxsave", strata_vmm::machine::DEFAULT_CMDLINE);
    let dir = TempDir::new("linux-pvm");
    let uds = dir.path("agent.sock");
    cfg.vsock = Some(VsockConfig {
        guest_cid: 3,
        uds_path: uds.clone(),
    });
    let mut m = Machine::start(cfg).unwrap();
    // What the shim will do: wait for the agent through the hybrid vsock socket. Here the kernel
    // dies first, and that (not a timeout) must be the answer.
    let r = m.wait_until(Duration::from_secs(180), || {
        Agent::connect_hybrid_vsock(&uds, 1024, Duration::from_secs(2))
    });
    let console = m.console().contents();
    for want in [
        "Linux version 6.1",
        "BIOS-e820: [mem 0x0000000000100000-0x0000000007ffffff] usable",
        "found SMP MP-table at [mem 0x0009fc00-0x0009fc0f]",
        "IOAPIC[0]: apic_id 3, version 17, address 0xfec00000, GSI 0-23",
        "Processors: 2",
        "..TIMER: vector=0x30 apic1=0 pin1=0",
    ] {
        assert!(
            console.contains(want),
            "missing {want:?}; console:\n{console}"
        );
    }
    assert!(!console.contains("Oops"), "console:\n{console}");
    match r {
        Err(strata_vmm::Error::VcpuFailed {
            reason,
            console_tail,
            ..
        }) => {
            assert!(
                reason.contains("emulation failure) at guest rip 0xffffffff8"),
                "{reason}"
            );
            assert!(!console_tail.is_empty());
        }
        Ok(_) => {} // a PVM that learnt to emulate int3 gets to the agent: fine
        Err(e) => panic!("unexpected end: {e}"),
    }
}
