//! The guest image under QEMU TCG (`-M microvm`): the kernel built by scripts/build-guest-kernel
//! boots through its PVH entry, the agent starts as PID 1 from the initramfs built by
//! scripts/build-initramfs and mounts its file systems. With vhost-vsock on the host the test
//! speaks the agent protocol over vsock and shuts the VM down through it; without, the agent's
//! self-test (`strata.selftest=1`) reports PID 1 and its mounts and powers off.
//!
//! Skipped, saying why, when QEMU or the cached kernel is missing (the kernel build takes
//! minutes: run scripts/build-guest-kernel first). On CI a missing prerequisite is a failure
//! (`strata_backend::testing`).

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::bundle;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn skip(why: &str) {
    strata_backend::testing::skip("guest image (qemu_tcg)", why);
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

/// True if /bin/busybox is static; else a skip.
fn static_busybox() -> bool {
    let busybox = Path::new("/bin/busybox");
    let ldd = Command::new("ldd").arg(busybox).output();
    if !busybox.exists()
        || ldd
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("=>"))
            .unwrap_or(true)
    {
        skip("no static /bin/busybox (apt-get install busybox-static)");
        return false;
    }
    true
}

/// QEMU, the cached guest kernel, and the agent's initramfs built in a scratch directory (removed
/// on drop).
struct Guest {
    qemu: PathBuf,
    kernel: PathBuf,
    initrd: PathBuf,
    dir: PathBuf,
}

impl Guest {
    /// None, after a skip, when QEMU or the cached kernel is missing.
    fn new(tag: &str) -> Option<Guest> {
        let Ok(qemu) = which("qemu-system-x86_64") else {
            skip("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)");
            return None;
        };
        let out = Command::new(root().join("scripts/build-guest-kernel"))
            .arg("--cached")
            .output()
            .unwrap();
        if !out.status.success() {
            skip("the guest kernel is not built yet (scripts/build-guest-kernel)");
            return None;
        }
        let kernel = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
        let dir = std::env::temp_dir().join(format!("strata-qemu-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let initrd = dir.join("initramfs.cpio.gz");
        let st = Command::new(root().join("scripts/build-initramfs"))
            .arg(&initrd)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "build-initramfs failed");
        Some(Guest {
            qemu,
            kernel,
            initrd,
            dir,
        })
    }

    /// A microVM under TCG with 256 MiB, the console on stdout, the kernel and the initramfs.
    fn qemu(&self) -> Command {
        let mut cmd = Command::new(&self.qemu);
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
        .arg(&self.kernel)
        .arg("-initrd")
        .arg(&self.initrd)
        .stdin(Stdio::null());
        cmd
    }

    /// Runs the VM to its end with `image` as a read-only virtio-blk disk (/dev/vda) and
    /// `append` as the kernel command line; the console.
    fn run_with_disk(&self, image: &Path, append: &str) -> String {
        let out = self
            .qemu()
            .arg("-drive")
            .arg(format!(
                "id=disk,file={},format=raw,if=none,readonly=on",
                image.display()
            ))
            .args(["-device", "virtio-blk-device,drive=disk"])
            .args(["-append", append])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `dir/rootfs` with the static busybox as /bin/busybox and /bin/sh.
fn busybox_rootfs(dir: &Path) -> PathBuf {
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).unwrap();
    rootfs
}

/// A 16 MiB ext4 image of `tree` at `img`.
fn mke2fs(tree: &Path, img: &Path) {
    let st = Command::new("mke2fs")
        .args(["-F", "-q", "-t", "ext4", "-d"])
        .arg(tree)
        .arg(img)
        .arg("16M")
        .status()
        .unwrap();
    assert!(st.success());
}

fn assert_console_has(console: &str, wants: &[&str]) {
    for want in wants {
        assert!(
            console.contains(want),
            "missing {want:?}; console:\n{console}"
        );
    }
}

#[test]
fn guest_image_boots_under_qemu_tcg() {
    let Some(g) = Guest::new("boot") else {
        return;
    };
    let vsock = Path::new("/dev/vhost-vsock").exists();
    let cid = 3 + (std::process::id() % 10_000);
    let mut cmd = g.qemu();
    cmd.arg("-append");
    if vsock {
        cmd.arg("console=ttyS0 reboot=k panic=-1 quiet");
        cmd.args(["-device", &format!("vhost-vsock-device,guest-cid={cid}")]);
    } else {
        // No vhost-vsock on this host: the agent reports its state and powers off.
        cmd.arg("console=ttyS0 reboot=k panic=-1 quiet strata.selftest=1");
    }
    let mut child = cmd
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

/// The agent's first container: a busybox rootfs as an ext4 image on a virtio-blk device; the
/// agent mounts it read-only with an overlay, and runs a shell in new namespaces chrooted there.
#[test]
fn container_runs_on_a_virtio_blk_rootfs_under_qemu_tcg() {
    if !static_busybox() {
        return;
    }
    let Some(g) = Guest::new("ct") else {
        return;
    };
    let rootfs = busybox_rootfs(&g.dir);
    let img = g.dir.join("rootfs.ext4");
    mke2fs(&rootfs, &img);
    let console = g.run_with_disk(
        &img,
        "console=ttyS0 reboot=k panic=-1 quiet strata.selftest=1 strata.rootfs=/dev/vda \
         strata.run=/bin/sh,-c,echo${IFS}hello${IFS}from${IFS}the${IFS}container;hostname;echo${IFS}pid=$$;touch${IFS}/written",
    );
    assert_console_has(
        &console,
        &[
            "hello from the container",
            "strata-container",
            "pid=1",
            "container exited with status 0",
        ],
    );
}

/// An OCI container inside the guest: a bundle (config.json + busybox rootfs) on a virtio-blk
/// device; the agent, moved off the initramfs, creates and runs it with the native backend's
/// code (libcontainer) and reports its exit status.
#[test]
fn oci_container_runs_inside_the_guest_under_qemu_tcg() {
    if !static_busybox() {
        return;
    }
    let Some(g) = Guest::new("oci") else {
        return;
    };
    let b = bundle(
        &g.dir,
        "oci-guest",
        &[
            "/bin/sh",
            "-c",
            "echo hello from an OCI container; hostname; echo pid=$$",
        ],
    );
    let img = g.dir.join("bundle.ext4");
    mke2fs(&b, &img);
    let console = g.run_with_disk(
        &img,
        "console=ttyS0 reboot=k panic=-1 quiet strata.selftest=1 strata.bundle=/dev/vda",
    );
    assert_console_has(
        &console,
        &[
            "hello from an OCI container",
            "oci-guest",
            "pid=1",
            "OCI container exited with status 0",
        ],
    );
}

/// A rootfs image as the tier builds it: erofs from the rootfs directory, through the
/// content-keyed cache (the second build is a cache hit). The guest mounts the read-only erofs
/// disk with an overlay on tmpfs: the container changes a file of the image and creates another,
/// reads both back, and the image itself stays as it was.
#[test]
fn erofs_rootfs_is_writable_through_the_overlay_under_qemu_tcg() {
    if which("mkfs.erofs").is_err() {
        return skip("mkfs.erofs is not installed (scripts/install-deps installs erofs-utils)");
    }
    if !static_busybox() {
        return;
    }
    let Some(g) = Guest::new("erofs") else {
        return;
    };
    let rootfs = busybox_rootfs(&g.dir);
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(rootfs.join("etc/hostname"), "from-the-image\n").unwrap();
    let cache = g.dir.join("cache");
    let img = strata_vmm::rootfs::build_erofs(&rootfs, &cache).unwrap();
    assert!(!img.reused);
    let again = strata_vmm::rootfs::build_erofs(&rootfs, &cache).unwrap();
    assert!(
        again.reused,
        "the second build of the same rootfs is a cache hit"
    );
    let before = std::fs::read(&img.path).unwrap();

    let script = [
        "/bin/busybox cat /etc/hostname",
        "echo changed-in-the-overlay>/etc/hostname",
        "echo created-in-the-overlay>/new-file",
        "/bin/busybox cat /etc/hostname /new-file",
    ]
    .join(";")
    .replace(' ', "${IFS}");
    let console = g.run_with_disk(
        &img.path,
        &format!(
            "console=ttyS0 reboot=k panic=-1 quiet strata.selftest=1 strata.rootfs=/dev/vda \
             strata.run=/bin/sh,-c,{script}"
        ),
    );
    let after = std::fs::read(&img.path).unwrap();
    assert_console_has(
        &console,
        &[
            "rootfs /dev/vda is erofs, overlay on tmpfs",
            "from-the-image",
            "changed-in-the-overlay\r\ncreated-in-the-overlay",
            "container exited with status 0",
        ],
    );
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
    if !static_busybox() {
        return;
    }
    let Some(g) = Guest::new("vsock") else {
        return;
    };
    let b = bundle(
        &g.dir,
        "vsock-guest",
        &["/bin/sh", "-c", "cat; echo to-stderr >&2; exit 3"],
    );
    let img = strata_vmm::rootfs::build_ext4(&b, &g.dir.join("cache")).unwrap();
    let console = g.run_with_disk(
        &img.path,
        "console=ttyS0 reboot=k panic=-1 quiet strata.selftest=agent strata.bundle=/dev/vda",
    );
    for l in console
        .lines()
        .filter(|l| l.contains("strata-guest-agent:"))
    {
        eprintln!("{l}");
    }
    assert_console_has(
        &console,
        &[
            "agent ready, answered over vsock at",
            "bundle /dev/vda (ext4) mounted at /run/strata/bundles/selftest/bundle",
            r#"streams stdout="sent over vsock\n" stderr="to-stderr\n" status=3"#,
            // The agent checks the figures itself (v2, usage, no limit, CPU time, pids) and fails
            // the self-test otherwise; the line shows they came back.
            "stats cgroup=v2 memory_usage=",
            r#"oom notice=Some("oom") status=137"#,
            "oom stats memory_limit=16777216 oom_kills=1",
            "vsock self-test passed",
        ],
    );
}

/// virtiofsd (the Rust one, as scripts/install-deps installs it), or a skip.
fn virtiofsd() -> Option<PathBuf> {
    let cached = Path::new("/var/cache/strata/tools/bin/virtiofsd");
    let found = if cached.is_file() {
        Some(cached.to_path_buf())
    } else {
        which("virtiofsd").ok()
    };
    if found.is_none() {
        skip("virtiofsd is not installed (scripts/install-deps)");
    }
    found
}

/// The pod's virtio-fs share (`strata.share=strata`): virtiofsd shares a directory holding a
/// bundle (`c1/config.json`, `c1/rootfs/`) as the microvm tier lays it out; PID 1 mounts it at
/// /run/strata/shared and reports "virtiofs" in Ping's mounts, and the self-test creates the
/// container from `/run/strata/shared/c1` (libcontainer's rootfs on virtio-fs), its output over
/// vsock. What the container writes in its rootfs reaches the host's directory. Port 1024 first
/// refuses the guest's own CID, as it does outside the self-test.
#[test]
fn a_bundle_on_the_virtiofs_share_runs_inside_the_guest_under_qemu_tcg() {
    if !static_busybox() {
        return;
    }
    let Some(virtiofsd) = virtiofsd() else {
        return;
    };
    let Some(g) = Guest::new("virtiofs") else {
        return;
    };
    // scripts/build-guest-kernel keeps the kernel's .config beside it.
    let config =
        std::fs::read_to_string(format!("{}.config", g.kernel.display())).unwrap_or_default();
    if !config.lines().any(|l| l == "CONFIG_VIRTIO_FS=y") {
        return skip(
            "the cached guest kernel has no CONFIG_VIRTIO_FS (scripts/build-guest-kernel)",
        );
    }
    let share = g.dir.join("share");
    let b = bundle(
        &share,
        "c1",
        &[
            "/bin/sh",
            "-c",
            "echo hello from the share; hostname; echo written-in-the-guest > /from-guest",
        ],
    );
    let sock = g.dir.join("virtiofsd.sock");
    let mut daemon = Command::new(virtiofsd)
        .arg("--socket-path")
        .arg(&sock)
        .arg("--shared-dir")
        .arg(&share)
        .args(["--cache", "never", "--sandbox", "none"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !sock.exists() {
        if t0.elapsed() > Duration::from_secs(10) || daemon.try_wait().unwrap().is_some() {
            let _ = daemon.kill();
            let out = daemon.wait_with_output().unwrap();
            panic!(
                "virtiofsd did not start: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // vhost-user needs the guest's memory shared with virtiofsd.
    let out = g
        .qemu()
        .args(["-object", "memory-backend-memfd,id=mem,size=256M,share=on"])
        .args(["-machine", "memory-backend=mem"])
        .arg("-chardev")
        .arg(format!("socket,id=vfs,path={}", sock.display()))
        .args(["-device", "vhost-user-fs-device,chardev=vfs,tag=strata"])
        .args([
            "-append",
            "console=ttyS0 reboot=k panic=-1 quiet strata.selftest=agent strata.share=strata",
        ])
        .output()
        .unwrap();
    let _ = daemon.kill();
    let _ = daemon.wait();
    let console = String::from_utf8_lossy(&out.stdout).into_owned();
    for l in console
        .lines()
        .filter(|l| l.contains("strata-guest-agent:"))
    {
        eprintln!("{l}");
    }
    assert_console_has(
        &console,
        &[
            "port 1024 refused the guest's own CID (1)",
            "mounts proc,sysfs,devtmpfs,tmpfs,cgroup2,virtiofs",
            r#"shared bundle c1 stdout="hello from the share\nc1\n" stderr="" status=0"#,
            "vsock self-test passed",
        ],
    );
    assert_eq!(
        std::fs::read_to_string(b.join("rootfs/from-guest")).unwrap(),
        "written-in-the-guest\n",
        "the container's write did not reach the host's directory"
    );
}
