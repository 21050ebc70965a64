//! Shared by the agent's host-process tests: busybox bundles, the agent as a host process.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use strata_guest_agent::client::Agent;
use strata_guest_agent::proto::agent::{Stdio, StdioPorts};

/// Skips (or fails under CI=true) with `why`; returns true to make the caller return.
pub fn skip(why: &str) -> bool {
    strata_backend::testing::skip("guest agent host tests", why);
    true
}

/// Root and a static /bin/busybox, or a skip.
pub fn can_run_containers() -> bool {
    if !nix::unistd::geteuid().is_root() {
        return !skip("needs root");
    }
    let static_busybox = Command::new("ldd")
        .arg("/bin/busybox")
        .output()
        .map(|o| !String::from_utf8_lossy(&o.stdout).contains("=>"))
        .unwrap_or(false);
    static_busybox || !skip("no static /bin/busybox (apt-get install busybox-static)")
}

/// An OCI bundle of busybox running `args`; `resources` goes to `linux.resources`.
pub fn bundle_with(dir: &Path, name: &str, args: &[&str], resources: serde_json::Value) -> PathBuf {
    bundle_edited(dir, name, args, |spec| {
        spec["linux"]["resources"] = resources
    })
}

/// An OCI bundle of busybox running `args`, its config.json changed by `edit` before it is
/// written.
pub fn bundle_edited(
    dir: &Path,
    name: &str,
    args: &[&str],
    edit: impl FnOnce(&mut serde_json::Value),
) -> PathBuf {
    let b = dir.join(name);
    let bin = b.join("rootfs/bin");
    std::fs::create_dir_all(&bin).unwrap();
    for d in ["proc", "dev", "tmp"] {
        std::fs::create_dir_all(b.join("rootfs").join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", bin.join("busybox")).unwrap();
    for applet in [
        "sh", "echo", "cat", "sleep", "hostname", "dd", "tr", "wc", "tty", "stty",
    ] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
    }
    let mut spec = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/bin"],
            "cwd": "/",
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": false},
        "hostname": name,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}
        ],
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
            "resources": {}
        }
    });
    edit(&mut spec);
    std::fs::write(
        b.join("config.json"),
        serde_json::to_vec_pretty(&spec).unwrap(),
    )
    .unwrap();
    b
}

pub fn bundle(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    bundle_with(dir, name, args, serde_json::json!({}))
}

/// A bundle of busybox whose process has a terminal (and /dev/pts a devpts of its own).
pub fn terminal_bundle(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    bundle_edited(dir, name, args, |spec| {
        spec["process"]["terminal"] = true.into();
        spec["process"]["env"] = serde_json::json!(["PATH=/bin", "TERM=xterm"]);
        spec["mounts"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "destination": "/dev/pts", "type": "devpts", "source": "devpts",
                "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]
            }));
    })
}

/// Polls `f` every 20 ms until it is true; false after `within`.
pub fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    loop {
        if f() {
            return true;
        }
        if t0.elapsed() > within {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The agent run as a host process on `<dir>/agent.sock`; killed (with its containers) if a
/// test fails before it shut the agent down.
pub struct HostAgent {
    pub child: std::process::Child,
    pub sock: PathBuf,
}

impl HostAgent {
    pub fn start(dir: &Path) -> HostAgent {
        let sock = dir.join("agent.sock");
        let child = Command::new(env!("CARGO_BIN_EXE_strata-guest-agent"))
            .arg("--listen-unix")
            .arg(&sock)
            .arg("--state")
            .arg(dir.join("state"))
            .spawn()
            .unwrap();
        // Connectable, not merely there: the socket's file exists from bind(2) on, before the
        // agent listens.
        let t0 = Instant::now();
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "agent socket never accepted a connection"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        HostAgent { child, sock }
    }
}

impl Drop for HostAgent {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("strata-agent-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn ctx() -> ttrpc::context::Context {
    ttrpc::context::with_timeout(Duration::from_secs(30).as_nanos() as i64)
}

/// The container calls through the client, unwrapped (30 s deadlines).
pub struct Calls<'a>(pub &'a Agent);

impl Calls<'_> {
    pub fn create(&self, id: &str, bundle: &Path, io: Stdio) -> StdioPorts {
        self.0
            .create_container(id, &bundle.display().to_string(), io)
            .unwrap()
            .stdio_ports
            .unwrap_or_default()
    }
    pub fn start(&self, id: &str, exec: &str) -> u32 {
        self.0.start(id, exec).unwrap()
    }
    pub fn wait(&self, id: &str, exec: &str) -> u32 {
        self.0.wait(id, exec, Duration::from_secs(30)).unwrap()
    }
    /// `sh -c script` exec'd in the container `id` as `exec`, not started; its stream ports.
    pub fn exec(&self, id: &str, exec: &str, script: &str, io: Stdio) -> StdioPorts {
        let process = serde_json::json!({
            "terminal": io.terminal,
            "user": {"uid": 0, "gid": 0},
            "args": ["/bin/sh", "-c", script],
            "env": ["PATH=/bin"],
            "cwd": "/"
        });
        self.0.exec(id, exec, &process.to_string(), io).unwrap()
    }
    pub fn kill(&self, id: &str, signal: u32) {
        self.0.kill(id, "", signal, false).unwrap()
    }
    pub fn delete(&self, id: &str) {
        self.0.delete(id, "").unwrap()
    }
}
