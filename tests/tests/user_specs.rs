//! Specs as ctr, crictl and Kubernetes write them: what a new user's first commands hand the
//! runtime, beyond the tidy specs of the other suites. No PATH in the environment (`ctr run
//! --rootfs`, images built `FROM scratch`), a numeric user the image's passwd does not know,
//! and the mount propagation the CRI plugin writes for `Bidirectional` and `HostToContainer`
//! volumes (`rshared` / `rslave`, also as `linux.rootfsPropagation`).
//!
//! Runs against `io.containerd.strata.v2`, or runc with `STRATA_TEST_RUNTIME=runc`: every
//! test passes on runc too, which is what "as runc does" means here.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::{json, Value};
use strata_tests::cmd::{self, Output};
use strata_tests::{harness, Container, Harness, Runtime, Tier};

/// runc's words (Go's `exec.LookPath`) for a bare program name that no PATH entry holds.
const NOT_FOUND: &str = "executable file not found in $PATH";

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A file or directory of the test's own under the daemon's state directory, named without
/// any container id (so never counted as a leak), removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(h: &Harness, what: &str) -> Scratch {
        let dir = h.info.state.join("user-specs");
        std::fs::create_dir_all(&dir).expect("creating the scratch directory");
        Scratch(dir.join(format!("{what}-{}", SEQ.fetch_add(1, Ordering::SeqCst))))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0).or_else(|_| std::fs::remove_file(&self.0));
    }
}

/// `c.spec(args)` with no environment at all, as `ctr run --rootfs` writes it.
fn spec_without_path(c: &Container<'_>, args: &[&str]) -> Value {
    let mut spec = c.spec(args);
    spec["process"]["env"] = json!([]);
    spec
}

/// `ctr run -d --config SPEC ID`: starts the container from a whole spec in the background.
fn start_spec(c: &Container<'_>, spec: &Value) -> Output {
    let file = Scratch::new(c.h, "spec");
    std::fs::write(&file.0, serde_json::to_vec_pretty(spec).unwrap()).expect("writing the spec");
    let mut cmd = c.h.ctr();
    cmd.args(["run", "-d", "--runtime", &c.runtime]);
    cmd.arg("--fifo-dir").arg(c.h.fifo_dir());
    cmd.args(c.h.runtime_config_flags());
    cmd.arg("--config").arg(&file.0).arg(&c.id);
    cmd::run(cmd, None, Duration::from_secs(60)).expect("running ctr")
}

/// Runs a host command that must succeed.
fn host(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("running a host command");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether something is mounted on `path`, as this (the host's) mount table says.
fn host_mounted(path: &Path) -> bool {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let path = path.to_string_lossy();
    table
        .lines()
        .any(|l| l.split_whitespace().nth(4) == Some(&*path))
}

#[test]
fn no_path_and_an_absolute_program_runs() {
    let h = harness!();
    let c = h.container("nopath");
    let spec = spec_without_path(&c, &["/bin/sh", "-c", "echo hi"]);
    let out = c.run_spec(&spec, &[]);
    assert!(out.success(), "{out}\n{}", c.log());
    assert_eq!(out.stdout, "hi\n", "{out}");
    c.assert_no_leaks();
}

#[test]
fn no_path_and_an_absolute_program_runs_in_exec() {
    let h = harness!();
    let c = h.container("nopath-exec");
    let spec = spec_without_path(&c, &["/bin/sleep", "600"]);
    let out = start_spec(&c, &spec);
    assert!(out.success(), "{out}\n{}", c.log());
    let out = c.exec("e1", &["/bin/sh", "-c", "echo exec-hi"]);
    assert!(out.success(), "{out}\n{}", c.log());
    assert_eq!(out.stdout, "exec-hi\n", "{out}");
    // A bare name has nothing to be looked up in: refused as runc refuses it, and the
    // container runs on.
    let out = c.exec("e2", &["sh", "-c", "echo must-not-run"]);
    assert!(!out.success(), "{out}");
    assert!(
        out.stderr.contains(&format!("exec: \"sh\": {NOT_FOUND}")),
        "{out}"
    );
    assert!(!out.stdout.contains("must-not-run"), "{out}");
    let out = c.exec("e3", &["/bin/true"]);
    assert!(out.success(), "{out}");
    c.remove_and_check();
}

#[test]
fn no_path_and_a_bare_program_fails_as_with_runc() {
    let h = harness!();
    let c = h.container("nopath-bare");
    let spec = spec_without_path(&c, &["sh", "-c", "echo must-not-run"]);
    let out = c.run_spec(&spec, &[]);
    assert!(!out.success(), "{out}");
    assert!(
        out.stderr.contains(&format!("exec: \"sh\": {NOT_FOUND}")),
        "expected runc's error: {out}"
    );
    assert!(!out.stdout.contains("must-not-run"), "{out}");
    c.remove();
    c.assert_no_leaks();
}

#[test]
fn a_missing_absolute_program_fails_at_create() {
    let h = harness!();
    let c = h.container("missing");
    let out = c.run(&["/bin/no-such-program"]);
    assert!(!out.success(), "{out}");
    assert!(
        out.stderr.contains(
            "exec: \"/bin/no-such-program\": stat /bin/no-such-program: no such file or directory"
        ),
        "expected runc's error: {out}"
    );
    c.remove();
    c.assert_no_leaks();
}

#[test]
fn ctr_run_rootfs_runs() {
    let h = harness!();
    let c = h.container("rootfs");
    let rootfs = Scratch(h.new_rootfs());
    let mut cmd = h.ctr();
    cmd.args(["run", "--rm", "--runtime", &c.runtime]);
    cmd.arg("--fifo-dir").arg(h.fifo_dir());
    cmd.args(h.tier_flags());
    cmd.arg("--rootfs").arg(&rootfs.0).arg(&c.id);
    cmd.args(["/bin/sh", "-c", "echo hi; echo home=$HOME"]);
    let out = cmd::run(cmd, None, Duration::from_secs(60)).expect("running ctr");
    assert!(out.success(), "{out}\n{}", c.log());
    assert_eq!(out.stdout, "hi\nhome=/root\n", "{out}");
    c.assert_no_leaks();
}

#[test]
fn a_numeric_user_without_a_passwd_entry_runs() {
    let h = harness!();
    let c = h.container("nouser");
    let mut spec = c.spec(&["sh", "-c", "id; echo home=$HOME; sleep 600"]);
    spec["process"]["user"] = json!({ "uid": 12345, "gid": 12345 });
    let out = start_spec(&c, &spec);
    assert!(out.success(), "{out}\n{}", c.log());
    let out = c.exec_with(
        "e1",
        &["--user", "12345"],
        &["sh", "-c", "id -u; id -g"],
        None,
    );
    assert!(out.success(), "{out}\n{}", c.log());
    assert_eq!(out.stdout, "12345\n0\n", "{out}");
    c.remove();
    // The init's own words, from a run to completion.
    let c = h.container("nouser-run");
    let mut spec = c.spec(&["sh", "-c", "id; echo home=$HOME"]);
    spec["process"]["user"] = json!({ "uid": 12345, "gid": 12345 });
    let out = c.run_spec(&spec, &[]);
    assert!(out.success(), "{out}\n{}", c.log());
    assert_eq!(out.stdout, "uid=12345 gid=12345\nhome=/\n", "{out}");
    c.assert_no_leaks();
}

/// A host directory made a shared mount of its own, as the kubelet (and critest) make the
/// source of a `Bidirectional` or `HostToContainer` volume; unmounted, with whatever is
/// mounted under it, when dropped.
struct SharedDir(Scratch);

impl SharedDir {
    fn new(h: &Harness) -> SharedDir {
        let dir = Scratch::new(h, "prop");
        std::fs::create_dir_all(dir.0.join("from-host")).unwrap();
        std::fs::create_dir_all(dir.0.join("from-container")).unwrap();
        let p = dir.0.to_str().unwrap().to_string();
        host(&["mount", "--bind", &p, &p]);
        let shared = SharedDir(dir);
        host(&["mount", "--make-rshared", &p]);
        shared
    }

    fn path(&self) -> &Path {
        &self.0 .0
    }
}

impl Drop for SharedDir {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-R").arg(self.path()).status();
    }
}

/// What critest's mount propagation specs check, for `propagation` (`rshared` or `rslave`):
/// a tmpfs mounted on the host under the volume's source after the start is seen in the
/// container; one mounted in the (privileged) container under the volume's target is seen
/// on the host for `rshared` only.
fn propagation(h: &Harness, name: &str, propagation: &str) {
    let c = h.container(name);
    let src = SharedDir::new(h);
    let mut spec = c.spec(&["sleep", "600"]);
    spec["mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/vol",
        "type": "bind",
        "source": src.path(),
        "options": ["rbind", propagation, "rw"],
    }));
    spec["linux"]["rootfsPropagation"] = propagation.into();
    // Privileged enough to mount, as the CRI plugin makes a privileged container.
    for set in ["bounding", "effective", "permitted"] {
        if let Some(caps) = spec["process"]["capabilities"][set].as_array_mut() {
            caps.push("CAP_SYS_ADMIN".into());
        }
    }
    let out = start_spec(&c, &spec);
    assert!(out.success(), "{out}\n{}", c.log());

    // Host to container.
    let from_host = src.path().join("from-host");
    host(&[
        "mount",
        "-t",
        "tmpfs",
        "-o",
        "size=1m",
        "strata-prop",
        from_host.to_str().unwrap(),
    ]);
    std::fs::write(from_host.join("file"), "made on the host\n").unwrap();
    let out = c.exec("e1", &["cat", "/vol/from-host/file"]);
    assert!(out.success(), "host mount not seen in the container: {out}");
    assert_eq!(out.stdout, "made on the host\n", "{out}");

    // Container to host.
    let out = c.exec(
        "e2",
        &[
            "sh",
            "-c",
            "mount -t tmpfs -o size=1m strata-prop /vol/from-container && echo made in the container > /vol/from-container/file",
        ],
    );
    let on_host = src.path().join("from-container");
    let sentry = h.runtime == Runtime::Strata && h.tier == Tier::Sentry;
    if sentry {
        // The sentry refuses mount(2) to every workload, privileged or not.
        assert!(!out.success(), "the sentry let the container mount: {out}");
        assert!(!host_mounted(&on_host));
    } else {
        assert!(out.success(), "mount in the container: {out}\n{}", c.log());
        let seen = cmd::poll(Duration::from_secs(5), || {
            host_mounted(&on_host).then_some(())
        });
        if propagation == "rshared" {
            assert!(seen.is_some(), "container mount not seen on the host");
            assert_eq!(
                std::fs::read_to_string(on_host.join("file")).unwrap(),
                "made in the container\n"
            );
        } else {
            assert!(seen.is_none(), "an rslave mount propagated to the host");
        }
    }
    c.remove();
    drop(src);
    c.assert_no_leaks();
}

#[test]
fn rshared_propagation_goes_both_ways() {
    let h = harness!();
    propagation(h, "rshared", "rshared");
}

#[test]
fn rslave_propagation_comes_from_the_host_only() {
    let h = harness!();
    propagation(h, "rslave", "rslave");
}

/// OCI hooks as a device plugin or a monitoring agent adds them: `poststart` runs once the
/// process started and `poststop` when the container is deleted, both on the host with the
/// container's state on stdin, as runc runs them (the microvm tier runs them on the host
/// around the guest's container, as Kata does); a spec without hooks deletes as fast as it can (the native tier's own clean-up,
/// without libcontainer's), and both leave nothing behind.
#[test]
fn a_poststop_hook_runs_at_delete() {
    use strata_tests::wasi::{Workload, WorkloadRun};

    let h = harness!();
    let c = h.container("poststop");
    let mark = Scratch::new(h, "poststop-mark");
    let started = Scratch::new(h, "poststart-mark");
    let _ = std::fs::remove_file(&mark.0);
    let _ = std::fs::remove_file(&started.0);
    let mut spec = c.workload_spec(&Workload::new().out("hi\n"));
    let hook = |file: &Path| {
        json!({
            "path": "/bin/sh",
            "args": ["sh", "-c", format!("cat > {}", file.display())],
        })
    };
    spec["hooks"] = json!({ "poststart": [hook(&started.0)], "poststop": [hook(&mark.0)] });
    let out = c.run_spec(&spec, &[]);
    assert!(out.success(), "{out}\n{}", c.log());
    assert_eq!(out.stdout, "hi\n", "{out}");
    // Each hook got the container's state on its stdin, as the OCI runtime spec says.
    let state = std::fs::read_to_string(&started.0).unwrap_or_default();
    assert!(
        state.contains(&c.id),
        "the poststart hook did not run: {state:?}\n{}",
        c.log()
    );
    let state = std::fs::read_to_string(&mark.0).unwrap_or_default();
    assert!(
        state.contains(&c.id),
        "the poststop hook did not run, or not with the state: {state:?}\n{}",
        c.log()
    );
    c.assert_no_leaks();
}
