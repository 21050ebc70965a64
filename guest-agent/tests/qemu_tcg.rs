//! The guest image under QEMU TCG (`-M microvm`): the kernel built by scripts/build-guest-kernel
//! boots through its PVH entry, the agent starts as PID 1 from the initramfs built by
//! scripts/build-initramfs and mounts its file systems. With vhost-vsock on the host the test
//! speaks the agent protocol over vsock and shuts the VM down through it; without, the agent's
//! self-test (`strata.selftest=1`) reports PID 1 and its mounts and powers off.
//!
//! Skipped, saying why, when QEMU or the cached kernel is missing (the kernel build takes
//! minutes: run scripts/build-guest-kernel first). With STRATA_REQUIRE_GUEST_IMAGE=1 a missing
//! prerequisite is a failure.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn skip(why: &str) {
    if std::env::var("STRATA_REQUIRE_GUEST_IMAGE").as_deref() == Ok("1") {
        panic!("guest image test cannot run: {why}");
    }
    eprintln!("SKIPPED: {why}");
}

#[test]
fn guest_image_boots_under_qemu_tcg() {
    let Ok(qemu) = which("qemu-system-x86_64") else {
        return skip("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)");
    };
    let out = Command::new(root().join("scripts/build-guest-kernel"))
        .arg("--cached")
        .output()
        .unwrap();
    if !out.status.success() {
        return skip("the guest kernel is not built yet (scripts/build-guest-kernel)");
    }
    let kernel = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    let dir = std::env::temp_dir().join(format!("strata-qemu-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let initrd = dir.join("initramfs.cpio.gz");
    let st = Command::new(root().join("scripts/build-initramfs"))
        .arg(&initrd)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "build-initramfs failed");

    let vsock = Path::new("/dev/vhost-vsock").exists();
    let cid = 3 + (std::process::id() % 10_000);
    let mut cmd = Command::new(qemu);
    cmd.args([
        "-M",
        "microvm,rtc=off,acpi=off",
        "-accel",
        "tcg",
        "-cpu",
        "max",
        "-m",
        "256",
    ])
    .args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"])
    .args(["-serial", "stdio"])
    .arg("-kernel")
    .arg(&kernel)
    .arg("-initrd")
    .arg(&initrd)
    .arg("-append");
    if vsock {
        cmd.arg("console=ttyS0 reboot=k panic=-1 quiet");
        cmd.args(["-device", &format!("vhost-vsock-device,guest-cid={cid}")]);
    } else {
        // No vhost-vsock on this host: the agent reports its state and powers off.
        cmd.arg("console=ttyS0 reboot=k panic=-1 quiet strata.selftest=1");
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stdout.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });

    if vsock {
        talk_over_vsock(cid);
    }
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if t0.elapsed() > Duration::from_secs(180) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let console = reader.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        status.is_some(),
        "QEMU did not exit within 180 s; console:\n{console}"
    );
    assert!(
        console.contains("strata-guest-agent"),
        "the agent never spoke; console:\n{console}"
    );
    assert!(!console.contains("Kernel panic"), "console:\n{console}");
    if vsock {
        assert!(
            console.contains("serving on vsock port 1024"),
            "console:\n{console}"
        );
    } else {
        assert!(
            console.contains("selftest pid=1 mounts=proc,sysfs,devtmpfs,tmpfs,cgroup2"),
            "console:\n{console}"
        );
    }
}

/// Connects to the agent over vsock (retrying while the guest boots), exchanges versions,
/// pings, and asks for a shutdown.
fn talk_over_vsock(cid: u32) {
    use strata_guest_agent::client::Agent;
    let t0 = Instant::now();
    let agent = loop {
        match Agent::connect(&format!("vsock://{cid}:1024"), Duration::from_secs(10)) {
            Ok(a) => break a,
            Err(e) => {
                assert!(
                    t0.elapsed() < Duration::from_secs(150),
                    "the agent never answered: {e}"
                );
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    };
    let p = agent.ping().unwrap();
    assert_eq!(p.pid, 1);
    assert_eq!(p.mounts, ["proc", "sysfs", "devtmpfs", "tmpfs", "cgroup2"]);
    agent.shutdown().unwrap();
}

fn which(name: &str) -> Result<PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
        .ok_or(())
}

/// The agent's first container: a busybox rootfs as an ext4 image on a virtio-blk device; the
/// agent mounts it read-only with an overlay, and runs a shell in new namespaces chrooted there.
#[test]
fn container_runs_on_a_virtio_blk_rootfs_under_qemu_tcg() {
    let Ok(qemu) = which("qemu-system-x86_64") else {
        return skip("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)");
    };
    let out = Command::new(root().join("scripts/build-guest-kernel"))
        .arg("--cached")
        .output()
        .unwrap();
    if !out.status.success() {
        return skip("the guest kernel is not built yet (scripts/build-guest-kernel)");
    }
    let busybox = Path::new("/bin/busybox");
    let ldd = Command::new("ldd").arg(busybox).output();
    if !busybox.exists()
        || ldd
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("=>"))
            .unwrap_or(true)
    {
        return skip("no static /bin/busybox (apt-get install busybox-static)");
    }
    let kernel = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    let dir = std::env::temp_dir().join(format!("strata-qemu-ct-{}", std::process::id()));
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::copy(busybox, rootfs.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).unwrap();
    let img = dir.join("rootfs.ext4");
    let st = Command::new("mke2fs")
        .args(["-F", "-q", "-t", "ext4", "-d"])
        .arg(&rootfs)
        .arg(&img)
        .arg("16M")
        .status()
        .unwrap();
    assert!(st.success());
    let initrd = dir.join("initramfs.cpio.gz");
    let st = Command::new(root().join("scripts/build-initramfs"))
        .arg(&initrd)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "build-initramfs failed");

    let out = Command::new(qemu)
        .args(["-M", "microvm,rtc=off,acpi=off", "-accel", "tcg", "-cpu", "max", "-m", "256"])
        .args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"])
        .args(["-serial", "stdio"])
        .arg("-kernel")
        .arg(&kernel)
        .arg("-initrd")
        .arg(&initrd)
        .arg("-drive")
        .arg(format!("id=rootfs,file={},format=raw,if=none,readonly=on", img.display()))
        .args(["-device", "virtio-blk-device,drive=rootfs"])
        .arg("-append")
        .arg(
            "console=ttyS0 reboot=k panic=-1 quiet strata.selftest=1 strata.rootfs=/dev/vda \
             strata.run=/bin/sh,-c,echo${IFS}hello${IFS}from${IFS}the${IFS}container;hostname;echo${IFS}pid=$$;touch${IFS}/written",
        )
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let console = String::from_utf8_lossy(&out.stdout).into_owned();
    let _ = std::fs::remove_dir_all(&dir);
    for want in [
        "hello from the container",
        "strata-container",
        "pid=1",
        "container exited with status 0",
    ] {
        assert!(
            console.contains(want),
            "missing {want:?}; console:\n{console}"
        );
    }
}

/// An OCI container inside the guest: a bundle (config.json + busybox rootfs) on a virtio-blk
/// device; the agent, moved off the initramfs, creates and runs it with the native backend's
/// code (libcontainer) and reports its exit status.
#[test]
fn oci_container_runs_inside_the_guest_under_qemu_tcg() {
    let Ok(qemu) = which("qemu-system-x86_64") else {
        return skip("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)");
    };
    let out = Command::new(root().join("scripts/build-guest-kernel"))
        .arg("--cached")
        .output()
        .unwrap();
    if !out.status.success() {
        return skip("the guest kernel is not built yet (scripts/build-guest-kernel)");
    }
    let busybox = Path::new("/bin/busybox");
    let ldd = Command::new("ldd").arg(busybox).output();
    if !busybox.exists()
        || ldd
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("=>"))
            .unwrap_or(true)
    {
        return skip("no static /bin/busybox (apt-get install busybox-static)");
    }
    let kernel = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    let dir = std::env::temp_dir().join(format!("strata-qemu-oci-{}", std::process::id()));
    let bundle = dir.join("bundle");
    let bin = bundle.join("rootfs/bin");
    std::fs::create_dir_all(&bin).unwrap();
    for d in ["proc", "dev", "tmp"] {
        std::fs::create_dir_all(bundle.join("rootfs").join(d)).unwrap();
    }
    std::fs::copy(busybox, bin.join("busybox")).unwrap();
    for applet in ["sh", "echo", "hostname"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
    }
    let spec = r#"{"ociVersion":"1.0.2",
  "process":{"terminal":false,"user":{"uid":0,"gid":0},
    "args":["/bin/sh","-c","echo hello from an OCI container; hostname; echo pid=$$"],
    "env":["PATH=/bin"],"cwd":"/","noNewPrivileges":true},
  "root":{"path":"rootfs","readonly":false},
  "hostname":"oci-guest",
  "mounts":[{"destination":"/proc","type":"proc","source":"proc"},
    {"destination":"/dev","type":"tmpfs","source":"tmpfs","options":["nosuid","mode=755"]}],
  "linux":{"namespaces":[{"type":"pid"},{"type":"ipc"},{"type":"uts"},{"type":"mount"}]}}"#;
    std::fs::write(bundle.join("config.json"), spec).unwrap();
    let img = dir.join("bundle.ext4");
    let st = Command::new("mke2fs")
        .args(["-F", "-q", "-t", "ext4", "-d"])
        .arg(&bundle)
        .arg(&img)
        .arg("16M")
        .status()
        .unwrap();
    assert!(st.success());
    let initrd = dir.join("initramfs.cpio.gz");
    let st = Command::new(root().join("scripts/build-initramfs"))
        .arg(&initrd)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "build-initramfs failed");
    let out = Command::new(qemu)
        .args([
            "-M",
            "microvm,rtc=off,acpi=off",
            "-accel",
            "tcg",
            "-cpu",
            "max",
            "-m",
            "256",
        ])
        .args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"])
        .args(["-serial", "stdio"])
        .arg("-kernel")
        .arg(&kernel)
        .arg("-initrd")
        .arg(&initrd)
        .arg("-drive")
        .arg(format!(
            "id=bundle,file={},format=raw,if=none,readonly=on",
            img.display()
        ))
        .args(["-device", "virtio-blk-device,drive=bundle"])
        .args([
            "-append",
            "console=ttyS0 reboot=k panic=-1 quiet strata.selftest=1 strata.bundle=/dev/vda",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let console = String::from_utf8_lossy(&out.stdout).into_owned();
    let _ = std::fs::remove_dir_all(&dir);
    for want in [
        "hello from an OCI container",
        "oci-guest",
        "pid=1",
        "OCI container exited with status 0",
    ] {
        assert!(
            console.contains(want),
            "missing {want:?}; console:\n{console}"
        );
    }
}

/// A rootfs image as the tier builds it: erofs from the rootfs directory, through the
/// content-keyed cache (the second build is a cache hit). The guest mounts the read-only erofs
/// disk with an overlay on tmpfs: the container changes a file of the image and creates another,
/// reads both back, and the image itself stays as it was.
#[test]
fn erofs_rootfs_is_writable_through_the_overlay_under_qemu_tcg() {
    let Ok(qemu) = which("qemu-system-x86_64") else {
        return skip("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)");
    };
    if which("mkfs.erofs").is_err() {
        return skip("mkfs.erofs is not installed (scripts/install-deps installs erofs-utils)");
    }
    let out = Command::new(root().join("scripts/build-guest-kernel"))
        .arg("--cached")
        .output()
        .unwrap();
    if !out.status.success() {
        return skip("the guest kernel is not built yet (scripts/build-guest-kernel)");
    }
    let busybox = Path::new("/bin/busybox");
    let ldd = Command::new("ldd").arg(busybox).output();
    if !busybox.exists()
        || ldd
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("=>"))
            .unwrap_or(true)
    {
        return skip("no static /bin/busybox (apt-get install busybox-static)");
    }
    let kernel = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    let dir = std::env::temp_dir().join(format!("strata-qemu-erofs-{}", std::process::id()));
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::copy(busybox, rootfs.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).unwrap();
    std::fs::write(rootfs.join("etc/hostname"), "from-the-image\n").unwrap();
    let cache = dir.join("cache");
    let img = strata_microvm::rootfs::build_erofs(&rootfs, &cache).unwrap();
    assert!(!img.reused);
    let again = strata_microvm::rootfs::build_erofs(&rootfs, &cache).unwrap();
    assert!(
        again.reused,
        "the second build of the same rootfs is a cache hit"
    );
    let before = std::fs::read(&img.path).unwrap();

    let initrd = dir.join("initramfs.cpio.gz");
    let st = Command::new(root().join("scripts/build-initramfs"))
        .arg(&initrd)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "build-initramfs failed");
    let script = [
        "/bin/busybox cat /etc/hostname",
        "echo changed-in-the-overlay>/etc/hostname",
        "echo created-in-the-overlay>/new-file",
        "/bin/busybox cat /etc/hostname /new-file",
    ]
    .join(";")
    .replace(' ', "${IFS}");
    let out = Command::new(qemu)
        .args([
            "-M",
            "microvm,rtc=off,acpi=off",
            "-accel",
            "tcg",
            "-cpu",
            "max",
            "-m",
            "256",
        ])
        .args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"])
        .args(["-serial", "stdio"])
        .arg("-kernel")
        .arg(&kernel)
        .arg("-initrd")
        .arg(&initrd)
        .arg("-drive")
        .arg(format!(
            "id=rootfs,file={},format=raw,if=none,readonly=on",
            img.path.display()
        ))
        .args(["-device", "virtio-blk-device,drive=rootfs"])
        .arg("-append")
        .arg(format!(
            "console=ttyS0 reboot=k panic=-1 quiet strata.selftest=1 strata.rootfs=/dev/vda \
             strata.run=/bin/sh,-c,{script}"
        ))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let console = String::from_utf8_lossy(&out.stdout).into_owned();
    let after = std::fs::read(&img.path).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    for want in [
        "rootfs /dev/vda is erofs, overlay on tmpfs",
        "from-the-image",
        "changed-in-the-overlay\r\ncreated-in-the-overlay",
        "container exited with status 0",
    ] {
        assert!(
            console.contains(want),
            "missing {want:?}; console:\n{console}"
        );
    }
    assert!(before == after, "the image was written");
}

/// The agent protocol over real AF_VSOCK inside the guest: QEMU here has no vhost-vsock, so the
/// agent's self-test (`strata.selftest=agent`) plays the host through the guest kernel's vsock
/// loopback. The bundle disk is mounted through `MountBundle`; a container's stdin, stdout and
/// stderr go over vsock streams (stdin closed for end-of-file), its `Stats` are cgroup v2
/// figures the agent checks, and a second container with a 16 MiB limit that allocates 64 MiB
/// is OOM-killed, noticed, and its stats show the limit and the kill.
#[test]
fn streams_stats_and_oom_over_vsock_inside_the_guest_under_qemu_tcg() {
    let Ok(qemu) = which("qemu-system-x86_64") else {
        return skip("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)");
    };
    let out = Command::new(root().join("scripts/build-guest-kernel"))
        .arg("--cached")
        .output()
        .unwrap();
    if !out.status.success() {
        return skip("the guest kernel is not built yet (scripts/build-guest-kernel)");
    }
    let busybox = Path::new("/bin/busybox");
    let ldd = Command::new("ldd").arg(busybox).output();
    if !busybox.exists()
        || ldd
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("=>"))
            .unwrap_or(true)
    {
        return skip("no static /bin/busybox (apt-get install busybox-static)");
    }
    let kernel = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    let dir = std::env::temp_dir().join(format!("strata-qemu-vsock-{}", std::process::id()));
    let bundle = dir.join("bundle");
    let bin = bundle.join("rootfs/bin");
    std::fs::create_dir_all(&bin).unwrap();
    for d in ["proc", "dev", "tmp"] {
        std::fs::create_dir_all(bundle.join("rootfs").join(d)).unwrap();
    }
    std::fs::copy(busybox, bin.join("busybox")).unwrap();
    for applet in ["sh", "cat", "echo", "dd"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
    }
    let spec = r#"{"ociVersion":"1.0.2",
  "process":{"terminal":false,"user":{"uid":0,"gid":0},
    "args":["/bin/sh","-c","cat; echo to-stderr >&2; exit 3"],
    "env":["PATH=/bin"],"cwd":"/","noNewPrivileges":true},
  "root":{"path":"rootfs","readonly":false},
  "hostname":"vsock-guest",
  "mounts":[{"destination":"/proc","type":"proc","source":"proc"},
    {"destination":"/dev","type":"tmpfs","source":"tmpfs","options":["nosuid","mode=755"]}],
  "linux":{"namespaces":[{"type":"pid"},{"type":"ipc"},{"type":"uts"},{"type":"mount"}]}}"#;
    std::fs::write(bundle.join("config.json"), spec).unwrap();
    let img = strata_microvm::rootfs::build_ext4(&bundle, &dir.join("cache")).unwrap();
    let initrd = dir.join("initramfs.cpio.gz");
    let st = Command::new(root().join("scripts/build-initramfs"))
        .arg(&initrd)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "build-initramfs failed");
    let out = Command::new(qemu)
        .args([
            "-M",
            "microvm,rtc=off,acpi=off",
            "-accel",
            "tcg",
            "-cpu",
            "max",
            "-m",
            "256",
        ])
        .args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"])
        .args(["-serial", "stdio"])
        .arg("-kernel")
        .arg(&kernel)
        .arg("-initrd")
        .arg(&initrd)
        .arg("-drive")
        .arg(format!(
            "id=bundle,file={},format=raw,if=none,readonly=on",
            img.path.display()
        ))
        .args(["-device", "virtio-blk-device,drive=bundle"])
        .args([
            "-append",
            "console=ttyS0 reboot=k panic=-1 quiet strata.selftest=agent strata.bundle=/dev/vda",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let console = String::from_utf8_lossy(&out.stdout).into_owned();
    for l in console
        .lines()
        .filter(|l| l.contains("strata-guest-agent:"))
    {
        eprintln!("{l}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    for want in [
        "agent ready, answered over vsock at",
        "bundle /dev/vda (ext4) mounted at /run/strata/bundles/selftest/bundle",
        r#"streams stdout="sent over vsock\n" stderr="to-stderr\n" status=3"#,
        // The agent checks the figures itself (v2, usage, no limit, CPU time, pids) and fails
        // the self-test otherwise; the line shows they came back.
        "stats cgroup=v2 memory_usage=",
        r#"oom notice=Some("oom") status=137"#,
        "oom stats memory_limit=16777216 oom_kills=1",
        "vsock self-test passed",
    ] {
        assert!(
            console.contains(want),
            "missing {want:?}; console:\n{console}"
        );
    }
}
