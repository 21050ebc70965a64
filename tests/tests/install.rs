//! `strata install` and `strata uninstall` against the real configuration files of containerd
//! 1.6, 1.7 and 2.1: each one's `containerd config default`, and one an operator has edited
//! (comments, a handler of their own, changed settings). Every run is checked by that
//! containerd (`config dump`) and must give back the file byte for byte at uninstall.
//!
//! The root is a scratch directory (`--root`), so the node's own files are never touched.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use strata_tests::daemon::ContainerdVersion;
use strata_tests::harness::shim_dir;
use strata_tests::{skip, Output};

const HANDLERS: [&str; 4] = [
    "strata-native",
    "strata-sentry",
    "strata-microvm",
    "strata-wasm",
];

/// The directory holding `strata`, `containerd-shim-strata-v2` and `strata-wasm-runner`.
fn bin_dir() -> PathBuf {
    shim_dir(Path::new(env!("CARGO_BIN_EXE_strata-testenv")))
}

/// containerd `v`'s binary, or None (reported as a skip; on CI a failure).
fn containerd(v: ContainerdVersion, test: &str) -> Option<PathBuf> {
    if let Err(e) = v.check() {
        skip(test, &format!("containerd {v}: {e}"));
        return None;
    }
    Some(v.program("containerd"))
}

/// A scratch node root, removed when dropped.
struct Root(PathBuf);

impl Root {
    fn new(name: &str) -> Root {
        let p = std::env::temp_dir().join(format!("strata-install-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(p.join("etc/containerd")).unwrap();
        Root(p)
    }
    fn config(&self) -> PathBuf {
        self.0.join("etc/containerd/config.toml")
    }
    /// Every file under the root, with its bytes.
    fn tree(&self) -> Vec<(PathBuf, Vec<u8>)> {
        fn walk(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
            let Ok(rd) = fs::read_dir(dir) else { return };
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    out.push((p.clone(), Vec::new()));
                    walk(&p, out);
                } else {
                    out.push((p.clone(), fs::read(&p).unwrap_or_default()));
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.0, &mut out);
        out.sort();
        out
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn exec(c: Command) -> Output {
    strata_tests::cmd::run(c, None, std::time::Duration::from_secs(120)).expect("running a command")
}

/// `strata <verb> --root <root> --containerd <containerd> --restart never <extra...>`.
fn strata(verb: &str, root: &Root, containerd: &Path, extra: &[&str]) -> Output {
    let mut all = vec!["--restart", "never"];
    all.extend(extra);
    exec(strata_command(verb, root, containerd, &all))
}

/// `strata <verb> --root <root> --containerd <containerd> <args...>`, not yet run.
fn strata_command(verb: &str, root: &Root, containerd: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(bin_dir().join("strata"));
    c.arg(verb)
        .arg("--root")
        .arg(&root.0)
        .arg("--containerd")
        .arg(containerd)
        .args(args);
    c
}

/// `containerd config default` of `containerd`.
fn default_config(containerd: &Path) -> String {
    let mut c = Command::new(containerd);
    c.args(["config", "default"]);
    let out = exec(c);
    assert!(out.success(), "containerd config default: {out}");
    out.stdout
}

/// The handlers `containerd --config <file> config dump` reads, with their runtime_type.
fn dumped_handlers(containerd: &Path, file: &Path) -> Vec<(String, String)> {
    let mut c = Command::new(containerd);
    c.arg("--config").arg(file).args(["config", "dump"]);
    let out = exec(c);
    assert!(out.success(), "config dump of {}: {out}", file.display());
    let v: toml::Table = toml::from_str(&out.stdout).expect("the dump is TOML");
    let mut found = Vec::new();
    for plugin in ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime"] {
        let Some(rt) = v
            .get("plugins")
            .and_then(|p| p.get(plugin))
            .and_then(|p| p.get("containerd"))
            .and_then(|p| p.get("runtimes"))
            .and_then(|r| r.as_table())
        else {
            continue;
        };
        for (name, t) in rt {
            let ty = t.get("runtime_type").and_then(|x| x.as_str()).unwrap_or("");
            found.push((name.clone(), ty.to_string()));
        }
    }
    found.sort();
    found
}

/// An operator's configuration: the default with comments, a handler of their own and a
/// changed setting, in `v`'s format.
fn customised(default: &str, v: ContainerdVersion) -> String {
    let (plugin, extra) = match v.config_version() {
        2 => ("io.containerd.grpc.v1.cri", "max_concurrent_downloads = 7"),
        _ => (
            "io.containerd.cri.v1.images",
            "max_concurrent_downloads = 7",
        ),
    };
    let mut out = String::from("# node-17: managed by hand, see the runbook\n# keep this line\n");
    let header = format!("[plugins.\"{plugin}\"]");
    let mut seen = false;
    for line in default.lines() {
        if line.trim_start().starts_with("max_concurrent_downloads") {
            continue; // set below, to another value
        }
        out.push_str(line);
        out.push('\n');
        if !seen && (line.trim() == header || line.trim() == header.replace('"', "'")) {
            seen = true;
            out.push_str("    # raised for the registry mirror (operator)\n    ");
            out.push_str(extra);
            out.push('\n');
        }
    }
    assert!(seen, "no {header} in the default configuration of {v}");
    let runtimes = match v.config_version() {
        2 => "plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes",
        _ => "plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes",
    };
    out.push_str(&format!(
        "\n# the operator's own handler\n[{runtimes}.runsc]\n  runtime_type = \"io.containerd.runsc.v1\" # gVisor\n"
    ));
    out
}

/// Install, install again, uninstall: checked at each step on `file`'s contents `original`.
fn round_trip(v: ContainerdVersion, containerd: &Path, name: &str, original: &str) {
    let root = Root::new(name);
    fs::write(root.config(), original).unwrap();

    let out = strata("install", &root, containerd, &[]);
    assert!(out.success(), "{v} {name}: install: {out}");
    let merged = fs::read_to_string(root.config()).unwrap();
    let handlers = dumped_handlers(containerd, &root.config());
    for h in HANDLERS {
        assert!(
            handlers.contains(&(h.to_string(), "io.containerd.strata.v2".to_string())),
            "{v} {name}: containerd does not read handler {h}: {handlers:?}\n{merged}"
        );
    }
    // Everything of the original is still there: comments line for line, and the data.
    for line in original.lines().filter(|l| l.trim_start().starts_with('#')) {
        assert!(
            merged.contains(line),
            "{v} {name}: lost the line {line:?}:\n{merged}"
        );
    }
    let mut data: toml::Table = toml::from_str(&merged).unwrap();
    let before: toml::Table = toml::from_str(original).unwrap();
    let plugin = if v.config_version() == 2 {
        "io.containerd.grpc.v1.cri"
    } else {
        "io.containerd.cri.v1.runtime"
    };
    let rt = data
        .get_mut("plugins")
        .and_then(|p| p.get_mut(plugin))
        .and_then(|p| p.get_mut("containerd"))
        .and_then(|p| p.get_mut("runtimes"))
        .and_then(|p| p.as_table_mut())
        .unwrap();
    for h in HANDLERS {
        assert!(rt.remove(h).is_some(), "{v} {name}: no {h} in the file");
    }
    assert_eq!(
        data, before,
        "{v} {name}: install changed more than the handlers"
    );
    // The files are in place, the binaries as built.
    for b in ["containerd-shim-strata-v2", "strata", "strata-wasm-runner"] {
        assert_eq!(
            fs::read(root.0.join("usr/local/bin").join(b)).ok(),
            fs::read(bin_dir().join(b)).ok(),
            "{v} {name}: /usr/local/bin/{b}"
        );
    }
    for t in ["native", "sentry", "microvm", "wasm"] {
        assert!(
            root.0.join(format!("etc/strata/strata-{t}.toml")).is_file(),
            "{v} {name}: /etc/strata/strata-{t}.toml"
        );
    }
    // The native tier works on this machine, so Node Feature Discovery is told so.
    let features = fs::read_to_string(
        root.0
            .join("etc/kubernetes/node-feature-discovery/features.d/strata"),
    )
    .unwrap_or_default();
    assert!(
        features.lines().any(|l| l == "strata-native=true"),
        "{v} {name}: the NFD feature file: {features:?}"
    );

    // Twice: nothing changes.
    let tree = root.tree();
    let out = strata("install", &root, containerd, &[]);
    assert!(out.success(), "{v} {name}: second install: {out}");
    assert!(out.stdout.contains("there already"), "{out}");
    assert_eq!(
        root.tree(),
        tree,
        "{v} {name}: the second install changed files"
    );

    let out = strata("uninstall", &root, containerd, &[]);
    assert!(out.success(), "{v} {name}: uninstall: {out}");
    assert_eq!(
        fs::read_to_string(root.config()).unwrap(),
        original,
        "{v} {name}: uninstall did not give back the file byte for byte"
    );
    let left: Vec<PathBuf> = root
        .tree()
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| {
            p != &root.config() && p != &root.0.join("etc/containerd") && p != &root.0.join("etc")
        })
        .collect();
    assert!(left.is_empty(), "{v} {name}: uninstall left {left:?}");
}

#[test]
fn install_merges_into_each_containerds_own_config_and_uninstall_gives_it_back() {
    let test =
        "install::install_merges_into_each_containerds_own_config_and_uninstall_gives_it_back";
    for v in ContainerdVersion::ALL {
        let Some(containerd) = containerd(v, test) else {
            continue;
        };
        let default = default_config(&containerd);
        round_trip(v, &containerd, &format!("default-{v}"), &default);
        round_trip(
            v,
            &containerd,
            &format!("custom-{v}"),
            &customised(&default, v),
        );
    }
}

#[test]
fn install_on_a_node_without_a_config_writes_one_and_uninstall_removes_it() {
    let test = "install::install_on_a_node_without_a_config_writes_one_and_uninstall_removes_it";
    for v in ContainerdVersion::ALL {
        let Some(containerd) = containerd(v, test) else {
            continue;
        };
        let root = Root::new(&format!("none-{v}"));
        let out = strata("install", &root, &containerd, &["--tier", "native"]);
        assert!(out.success(), "{v}: {out}");
        let text = fs::read_to_string(root.config()).unwrap();
        assert!(
            text.starts_with(&format!("version = {}\n", v.config_version())),
            "{v}: {text}"
        );
        assert_eq!(
            dumped_handlers(&containerd, &root.config())
                .into_iter()
                .filter(|(n, _)| n.starts_with("strata-"))
                .collect::<Vec<_>>(),
            vec![(
                "strata-native".to_string(),
                "io.containerd.strata.v2".to_string()
            )],
            "{v}"
        );
        let out = strata("uninstall", &root, &containerd, &[]);
        assert!(out.success(), "{v}: {out}");
        assert!(
            !root.config().exists(),
            "{v}: the config install wrote is still there"
        );
    }
}

#[test]
fn dry_run_prints_the_diff_and_changes_nothing() {
    let test = "install::dry_run_prints_the_diff_and_changes_nothing";
    let v = ContainerdVersion::V1_6;
    let Some(containerd) = containerd(v, test) else {
        return;
    };
    let root = Root::new("dry");
    fs::write(root.config(), default_config(&containerd)).unwrap();
    let tree = root.tree();
    let out = strata("install", &root, &containerd, &["--dry-run"]);
    assert!(out.success(), "{out}");
    assert!(
        out.stdout
            .contains("+[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.strata-native]"),
        "no diff: {out}"
    );
    assert!(
        out.stdout
            .contains("would put /usr/local/bin/containerd-shim-strata-v2"),
        "{out}"
    );
    assert_eq!(root.tree(), tree, "--dry-run changed files");
}

#[test]
fn uninstall_after_an_operators_edit_keeps_the_edit() {
    let test = "install::uninstall_after_an_operators_edit_keeps_the_edit";
    let v = ContainerdVersion::V1_6;
    let Some(containerd) = containerd(v, test) else {
        return;
    };
    let root = Root::new("edited");
    let original = default_config(&containerd);
    fs::write(root.config(), &original).unwrap();
    assert!(strata("install", &root, &containerd, &[]).success());
    let mut text = fs::read_to_string(root.config()).unwrap();
    text.push_str("\n# added after install\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.kata]\n  runtime_type = \"io.containerd.kata.v2\"\n");
    fs::write(root.config(), &text).unwrap();
    let out = strata("uninstall", &root, &containerd, &[]);
    assert!(out.success(), "{out}");
    assert!(out.stdout.contains("edited since install"), "{out}");
    let after = fs::read_to_string(root.config()).unwrap();
    assert!(
        after.contains("# added after install") && after.contains("runtimes.kata]"),
        "{after}"
    );
    assert!(
        !after.contains("strata-"),
        "Strata's handlers are still there:\n{after}"
    );
    let names: Vec<String> = dumped_handlers(&containerd, &root.config())
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(
        names.contains(&"kata".to_string()) && names.contains(&"runc".to_string()),
        "{names:?}"
    );
}

/// Runs install on `text` and expects a refusal naming `reason`, with the root untouched.
fn refused(root: &Root, containerd: &Path, text: Option<&str>, reason: &str) {
    if let Some(text) = text {
        fs::write(root.config(), text).unwrap();
    }
    let tree = root.tree();
    let out = strata("install", root, containerd, &[]);
    assert!(!out.success(), "install accepted it: {out}");
    assert!(
        out.stderr.contains(reason),
        "the error does not say {reason:?}: {out}"
    );
    assert_eq!(
        root.tree(),
        tree,
        "a refused install changed files ({reason})"
    );
}

#[test]
fn install_refuses_what_it_cannot_merge_safely_and_changes_nothing() {
    let test = "install::install_refuses_what_it_cannot_merge_safely_and_changes_nothing";
    let Some(c16) = containerd(ContainerdVersion::V1_6, test) else {
        return;
    };
    let root = Root::new("bad");
    refused(
        &root,
        &c16,
        Some("version = 2\n[plugins\nx = 1\n"),
        "is not valid TOML",
    );
    refused(
        &root,
        &c16,
        Some("version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.strata-wasm]\n  runtime_type = \"io.containerd.wasmtime.v1\"\n"),
        "a handler named strata-wasm is already defined",
    );
    refused(&root, &c16, Some("version = 3\n"), "config version 3");
    refused(
        &root,
        &c16,
        Some("[plugins.cri]\n  sandbox_image = \"pause\"\n"),
        "has no `version`",
    );
    fs::create_dir_all(root.0.join("etc/containerd/conf.d")).unwrap();
    fs::write(
        root.0.join("etc/containerd/conf.d/10-cri.toml"),
        "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"pause:3.9\"\n",
    )
    .unwrap();
    refused(
        &root,
        &c16,
        Some("version = 2\nimports = [\"/etc/containerd/conf.d/*.toml\"]\n"),
        "which defines [plugins.\"io.containerd.grpc.v1.cri\"]",
    );
    fs::remove_dir_all(root.0.join("etc/containerd/conf.d")).unwrap();
    // Something containerd itself refuses (a wrong type) is caught by its own check.
    refused(
        &root,
        &c16,
        Some("version = 2\noom_score = \"high\"\n"),
        "containerd does not accept the merged configuration",
    );
    // A restart by signal to a process that is not there is refused before any change.
    fs::write(root.config(), "version = 2\n").unwrap();
    let tree = root.tree();
    let mut c = Command::new(bin_dir().join("strata"));
    c.arg("install")
        .arg("--root")
        .arg(&root.0)
        .arg("--containerd")
        .arg(&c16)
        .args(["--containerd-pid", "999999999"]);
    let out = exec(c);
    assert!(
        !out.success() && out.stderr.contains("nothing was changed"),
        "{out}"
    );
    assert_eq!(root.tree(), tree);
    // Binaries that are not there.
    fs::write(root.config(), "version = 2\n").unwrap();
    let tree = root.tree();
    let out = strata("install", &root, &c16, &["--from", "/nonexistent"]);
    assert!(!out.success() && out.stderr.contains("--from"), "{out}");
    assert_eq!(root.tree(), tree);

    // A configuration on a read-only file system.
    let dir = root.0.join("etc/containerd");
    let bind = |args: &[&str]| {
        let st = Command::new("mount")
            .args(args)
            .arg(&dir)
            .arg(&dir)
            .status()
            .unwrap();
        assert!(st.success(), "mount {args:?}");
    };
    if !nix::unistd::geteuid().is_root() {
        skip(test, "a read-only bind mount needs root");
        return;
    }
    bind(&["--bind"]);
    let st = Command::new("mount")
        .args(["-o", "remount,bind,ro"])
        .arg(&dir)
        .status()
        .unwrap();
    assert!(st.success());
    let tree = root.tree();
    let out = strata("install", &root, &c16, &[]);
    let _ = Command::new("umount").arg(&dir).status();
    assert!(
        !out.success(),
        "install wrote to a read-only file system: {out}"
    );
    assert!(out.stderr.contains("Read-only file system"), "{out}");
    assert_eq!(
        root.tree(),
        tree,
        "a refused install changed files (read-only)"
    );
}

/// The installer image (`scripts/build-installer-image`, no base image), imported into the
/// test's containerd and run under runc as the DaemonSet runs it, installs into a node root
/// bind-mounted at /host and uninstalls again; containerd is the node's (the root's
/// /usr/bin/containerd, run from inside the container).
#[test]
fn the_installer_image_installs_from_a_container() {
    let test = "install::the_installer_image_installs_from_a_container";
    let h = strata_tests::harness!();
    let Some(containerd) = containerd(ContainerdVersion::V1_6, test) else {
        return;
    };
    let containerd = strata_tests::daemon::which_path(&containerd).expect("containerd on PATH");
    let root = Root::new("image");
    let original = default_config(&containerd);
    fs::write(root.config(), &original).unwrap();
    fs::create_dir_all(root.0.join("usr/bin")).unwrap();
    fs::copy(&containerd, root.0.join("usr/bin/containerd")).unwrap();

    let name = "localhost/strata-test/installer:latest";
    let tar = root.0.with_extension("tar");
    let mut c = Command::new(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-installer-image"),
    );
    c.arg("--from")
        .arg(bin_dir())
        .args(["--name", name])
        .arg(&tar);
    let out = exec(c);
    assert!(out.success(), "build-installer-image: {out}");
    let out = h.ctr_run(&["images", "import", tar.to_str().unwrap()]);
    let _ = fs::remove_file(&tar);
    assert!(out.success(), "importing the installer image: {out}");

    let mount = format!(
        "type=bind,src={},dst=/host,options=rbind:rw",
        root.0.display()
    );
    let run = |verb: &str| {
        let id = h.new_id(&format!("installer-{verb}"));
        h.ctr_run(&[
            "run",
            "--rm",
            "--runtime",
            "io.containerd.runc.v2",
            "--mount",
            &mount,
            name,
            &id,
            "/strata/bin/strata",
            verb,
            "--root",
            "/host",
            "--containerd",
            "/host/usr/bin/containerd",
            "--restart",
            "never",
        ])
    };
    let out = run("install");
    assert!(
        out.success(),
        "strata install in the installer's container: {out}"
    );
    assert!(out.stdout.contains("added strata-native"), "{out}");
    let handlers = dumped_handlers(&containerd, &root.config());
    for hname in HANDLERS {
        assert!(
            handlers.iter().any(|(n, _)| n == hname),
            "no {hname}: {handlers:?}"
        );
    }
    assert_eq!(
        fs::read(root.0.join("usr/local/bin/strata")).ok(),
        fs::read(bin_dir().join("strata")).ok(),
        "the image's strata was not put in /usr/local/bin"
    );
    let out = run("uninstall");
    assert!(
        out.success(),
        "strata uninstall in the installer's container: {out}"
    );
    assert_eq!(fs::read_to_string(root.config()).unwrap(), original);
    assert!(!root.0.join("usr/local/bin/strata").exists());
    let _ = h.ctr_run(&["images", "rm", name]);
}

/// A node's containerd configuration (`# a node's containerd, {who}`) with CRI and runc, on
/// paths of its own under `root` (never the machine's).
fn node_config(root: &Root, who: &str) -> String {
    let r = root.0.display().to_string();
    format!(
        r#"version = 2
# a node's containerd, {who}
root = "{r}/var/lib/containerd"
state = "{r}/run/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{r}/run/containerd/containerd.sock"

[plugins."io.containerd.internal.v1.opt"]
  path = "{r}/opt/containerd"

[plugins."io.containerd.grpc.v1.cri"]
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    conf_dir = "{r}/etc/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
"#
    )
}

/// The pids of `pid`'s children.
fn children(pid: u32) -> Vec<u32> {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Kills a process (and so what dies with it) when dropped; one started in a process group
/// of its own (`process_group(0)`) with the whole group.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let pid = self.0.id() as i32;
        if nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid))).ok()
            == Some(nix::unistd::Pid::from_raw(pid))
        {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `--containerd-pid`: install and uninstall each restart a containerd that its supervisor (a
/// shell loop, as a non-systemd node has runit or s6) starts again, and the new containerd has
/// loaded the handlers (its CRI plugin logs its runtimes as it starts). `--restart systemd`
/// where systemd does not run containerd is refused before anything changes.
#[test]
fn install_restarts_containerd_through_its_supervisor() {
    use std::os::unix::process::CommandExt;
    let test = "install::install_restarts_containerd_through_its_supervisor";
    let Some(containerd) = containerd(ContainerdVersion::V1_6, test) else {
        return;
    };
    let containerd = strata_tests::daemon::which_path(&containerd).expect("containerd on PATH");
    let root = Root::new("restart");
    let original = node_config(&root, "with CRI");
    fs::write(root.config(), &original).unwrap();
    let log = root.0.with_extension("log");
    let supervisor = format!(
        "for i in 1 2; do echo \"== start $i\"; {} --config {}; done",
        containerd.display(),
        root.config().display()
    );
    let sup = Killed(
        Command::new("sh")
            .args(["-c", &supervisor])
            .process_group(0)
            .stdin(std::process::Stdio::null())
            .stdout(fs::File::create(&log).unwrap())
            .stderr(fs::File::options().append(true).open(&log).unwrap())
            .spawn()
            .expect("starting the supervisor"),
    );
    let socket = root.0.join("run/containerd/containerd.sock");
    // containerd `n` of the supervisor: its pid once it serves, and what it logged.
    let started = |n: u32| -> (u32, String) {
        strata_tests::cmd::poll(std::time::Duration::from_secs(60), || {
            let text = fs::read_to_string(&log).unwrap_or_default();
            let own = text.split(&format!("== start {n}\n")).nth(1)?.to_string();
            let pid = *children(sup.0.id()).first()?;
            (socket.exists() && own.contains("containerd successfully booted"))
                .then_some((pid, own))
        })
        .unwrap_or_else(|| {
            panic!(
                "containerd {n} did not start: {}",
                fs::read_to_string(&log).unwrap_or_default()
            )
        })
    };
    let (first, own) = started(1);
    assert!(!own.contains("strata-native"), "{own}");

    // Refused before anything changes: systemd does not run containerd here.
    let systemd = Command::new("systemctl")
        .args(["is-active", "--quiet", "containerd"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !systemd {
        // (The running containerd writes under the root: the config and install's records are
        // what must not change.)
        let out = exec(strata_command(
            "install",
            &root,
            &containerd,
            &["--restart", "systemd", "--config-only"],
        ));
        assert!(!out.success(), "--restart systemd without systemd: {out}");
        assert!(
            out.stderr.contains("systemd does not run containerd"),
            "{out}"
        );
        assert_eq!(fs::read_to_string(root.config()).unwrap(), original);
        assert!(
            !root.0.join("var/lib/strata").exists(),
            "a refused install left records"
        );
    }

    let pid = first.to_string();
    let out = exec(strata_command(
        "install",
        &root,
        &containerd,
        &["--config-only", "--containerd-pid", &pid],
    ));
    assert!(out.success(), "install --containerd-pid: {out}");
    assert!(out.stdout.contains("sent SIGTERM"), "{out}");
    let (second, own) = started(2);
    assert_ne!(first, second);
    for h in HANDLERS {
        assert!(
            own.contains(h),
            "the restarted containerd did not load {h}:\n{own}"
        );
    }

    let out = exec(strata_command(
        "uninstall",
        &root,
        &containerd,
        &["--containerd-pid", &second.to_string()],
    ));
    assert!(out.success(), "uninstall --containerd-pid: {out}");
    // The loop ends with the second containerd: the supervisor exits once it stopped.
    let mut sup = sup;
    let st = strata_tests::cmd::poll(std::time::Duration::from_secs(30), || {
        sup.0.try_wait().ok().flatten()
    });
    assert!(st.is_some(), "containerd did not stop at uninstall");
    assert_eq!(fs::read_to_string(root.config()).unwrap(), original);
    let _ = fs::remove_file(&log);
}

/// A private systemd, booted as pid 1 of its own pid, mount, uts, ipc and cgroup namespaces
/// with only the test's units (`SYSTEMD_UNIT_PATH`): `containerd.service` runs `containerd`
/// on the config that `config` puts at /etc/containerd/config.toml (a tmpfs over it, and one
/// over /var/lib, so that install's files never reach the machine's). Its cgroups are made
/// under a cgroup of the test's in every hierarchy, removed again with it.
struct PrivateSystemd {
    boot: Killed,
    pid: u32,
    cgroup: String,
    log: PathBuf,
}

impl PrivateSystemd {
    fn boot(dir: &Path, containerd: &Path, config: &str) -> PrivateSystemd {
        let units = dir.join("units");
        fs::create_dir_all(&units).unwrap();
        let log = dir.join("containerd.log");
        fs::write(
            units.join("strata-test.target"),
            "[Unit]\nDefaultDependencies=no\nWants=containerd.service\n",
        )
        .unwrap();
        fs::write(
            units.join("containerd.service"),
            format!(
                "[Unit]\nDefaultDependencies=no\n[Service]\nExecStartPre=/bin/sh -c 'echo == start >>{log}'\n\
                 ExecStart={containerd}\nStandardOutput=append:{log}\nStandardError=append:{log}\n",
                log = log.display(),
                containerd = containerd.display()
            ),
        )
        .unwrap();
        fs::write(dir.join("config.toml"), config).unwrap();
        let cgroup = format!("strata-test-systemd-{}", std::process::id());
        let script = format!(
            r#"for h in /sys/fs/cgroup/*/; do
  [ -w "$h/cgroup.procs" ] && mkdir -p "$h/{cgroup}" && echo $$ >"$h/{cgroup}/cgroup.procs" 2>/dev/null
done
exec unshare --pid --fork --kill-child --mount --uts --ipc --cgroup --propagation private sh -c '
  umount -R /sys/fs/cgroup && mount -t tmpfs tmpfs /run && mount -t proc proc /proc &&
  mount -t tmpfs tmpfs /etc/containerd && mount -t tmpfs tmpfs /var/lib &&
  cp {dir}/config.toml /etc/containerd/config.toml &&
  exec env SYSTEMD_UNIT_PATH={units} /lib/systemd/systemd --system --unit=strata-test.target'"#,
            dir = dir.display(),
            units = units.display(),
        );
        let boot = Killed(
            Command::new("sh")
                .args(["-c", &script])
                .stdin(std::process::Stdio::null())
                .stdout(fs::File::create(dir.join("systemd.log")).unwrap())
                .stderr(std::process::Stdio::inherit())
                .spawn()
                .expect("booting systemd"),
        );
        let pid = strata_tests::cmd::poll(std::time::Duration::from_secs(20), || {
            // The shell is now unshare; its child, systemd.
            let systemd = *children(boot.0.id()).first()?;
            let comm = fs::read_to_string(format!("/proc/{systemd}/comm")).ok()?;
            (comm.trim() == "systemd").then_some(systemd)
        })
        .unwrap_or_else(|| {
            panic!(
                "systemd did not boot: {}",
                fs::read_to_string(dir.join("systemd.log")).unwrap_or_default()
            )
        });
        PrivateSystemd {
            boot,
            pid,
            cgroup,
            log,
        }
    }

    /// `prog args...` on the node: in systemd's pid and mount namespaces.
    fn on_node(&self, prog: &Path, args: &[&str]) -> Output {
        let mut c = Command::new("nsenter");
        c.args(["-t", &self.pid.to_string(), "-m", "-p", "--"])
            .arg(prog)
            .args(args);
        exec(c)
    }

    /// containerd.service's main pid, once it runs.
    fn containerd_pid(&self) -> Option<u32> {
        let out = self.on_node(
            Path::new("systemctl"),
            &["show", "-p", "MainPID", "--value", "containerd"],
        );
        out.stdout.trim().parse().ok().filter(|&p| p != 0)
    }

    /// The file at `path` as the node sees it.
    fn read(&self, path: &str) -> String {
        fs::read_to_string(format!("/proc/{}/root{path}", self.pid)).unwrap_or_default()
    }
}

impl Drop for PrivateSystemd {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.boot.0.wait();
        let Ok(hierarchies) = fs::read_dir("/sys/fs/cgroup") else {
            return;
        };
        for h in hierarchies.flatten() {
            let top = h.path().join(&self.cgroup);
            let _ = strata_tests::cmd::poll(std::time::Duration::from_secs(5), || {
                let mut dirs = Vec::new();
                let mut stack = vec![top.clone()];
                while let Some(d) = stack.pop() {
                    if let Ok(rd) = fs::read_dir(&d) {
                        stack.extend(rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
                        dirs.push(d);
                    }
                }
                dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
                for d in &dirs {
                    let _ = fs::remove_dir(d);
                }
                (!top.exists()).then_some(())
            });
        }
    }
}

/// `--restart auto` where systemd runs containerd (a private systemd, above): install and
/// uninstall each restart containerd.service through `systemctl restart`, the restarted
/// containerd has (then no longer has) the handlers, and uninstall gives the file back.
#[test]
fn install_restarts_containerd_through_systemd() {
    let test = "install::install_restarts_containerd_through_systemd";
    let Some(containerd) = containerd(ContainerdVersion::V1_6, test) else {
        return;
    };
    let containerd = strata_tests::daemon::which_path(&containerd).expect("containerd on PATH");
    for prog in [
        "/lib/systemd/systemd",
        "/usr/bin/nsenter",
        "/usr/bin/unshare",
    ] {
        if !Path::new(prog).exists() {
            skip(
                test,
                &format!("{prog} is missing (apt-get install systemd util-linux)"),
            );
            return;
        }
    }
    let root = Root::new("systemd");
    let original = node_config(&root, "run by systemd");
    let node = PrivateSystemd::boot(&root.0, &containerd, &original);
    let booted = |after: Option<u32>| -> (u32, String) {
        strata_tests::cmd::poll(std::time::Duration::from_secs(60), || {
            let pid = node.containerd_pid().filter(|&p| Some(p) != after)?;
            let text = fs::read_to_string(&node.log).unwrap_or_default();
            let own = text.rsplit("== start\n").next()?.to_string();
            own.contains("containerd successfully booted")
                .then_some((pid, own))
        })
        .unwrap_or_else(|| {
            panic!(
                "containerd.service did not (re)start: {}",
                fs::read_to_string(&node.log).unwrap_or_default()
            )
        })
    };
    let (first, own) = booted(None);
    assert!(!own.contains("strata-native"), "{own}");

    let strata = bin_dir().join("strata");
    let args = [
        "--containerd",
        containerd.to_str().unwrap(),
        "--config-only",
    ];
    let mut install = vec!["install"];
    install.extend(args);
    let out = node.on_node(&strata, &install);
    assert!(out.success(), "install on a systemd node: {out}");
    assert!(
        out.stdout.contains("restarted containerd (systemctl"),
        "{out}"
    );
    let (second, own) = booted(Some(first));
    for h in HANDLERS {
        assert!(
            own.contains(h),
            "the restarted containerd did not load {h}:\n{own}"
        );
    }

    let mut uninstall = vec!["uninstall"];
    uninstall.extend(args);
    let out = node.on_node(&strata, &uninstall);
    assert!(out.success(), "uninstall on a systemd node: {out}");
    assert!(
        out.stdout.contains("restarted containerd (systemctl"),
        "{out}"
    );
    let (_, own) = booted(Some(second));
    assert!(!own.contains("strata-native"), "{own}");
    assert_eq!(node.read("/etc/containerd/config.toml"), original);
    assert!(
        !fs::read_to_string("/etc/containerd/config.toml")
            .unwrap_or_default()
            .contains("strata"),
        "the machine's own containerd config was touched"
    );
}

/// Where `bin`'s ELF interpreter and libraries are (`ldd`).
fn libraries(bin: &Path) -> Vec<PathBuf> {
    let mut c = Command::new("ldd");
    c.arg(bin);
    let out = exec(c);
    out.stdout
        .lines()
        .filter_map(|l| {
            let p = l.split("=>").last()?.split_whitespace().next()?;
            p.starts_with('/').then(|| PathBuf::from(p))
        })
        .collect()
}

/// Copies `bin` to `dest` under `root`, with the libraries it loads at their own paths.
fn copy_with_libraries(bin: &Path, root: &Path, dest: &str) {
    for p in libraries(bin)
        .into_iter()
        .map(|l| (l.clone(), l))
        .chain([(bin.to_path_buf(), PathBuf::from(dest))])
    {
        let to = root.join(p.1.strip_prefix("/").unwrap());
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::copy(&p.0, &to).unwrap_or_else(|e| panic!("copying {}: {e}", p.0.display()));
    }
}

/// A private node: a process that is pid 1 of a new pid namespace and whose mount namespace
/// has `root` as its `/` (pivot_root), as a Kubernetes node's init is to a hostPID
/// container that has the node's `/` mounted somewhere. Dies with the returned child.
fn private_node(root: &Path) -> (Killed, u32) {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::process::CommandExt;
    let dir = std::ffi::CString::new(root.as_os_str().as_bytes()).unwrap();
    // The child execs `sleep` as the node init's parent; the init never execs, and closes
    // every descriptor it inherited (spawn waits for the exec's close-on-exec pipe).
    let mut c = Command::new("sleep");
    c.arg("infinity");
    // SAFETY: between fork and exec only raw system calls on memory made before the fork.
    unsafe {
        c.pre_exec(move || {
            if libc::unshare(libc::CLONE_NEWPID) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let pid = libc::fork();
            if pid < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if pid > 0 {
                return Ok(());
            }
            // A mount namespace of the init's own: pivot_root moves the root of every process
            // in its namespace, and the parent is about to exec `sleep` from the host's.
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                libc::_exit(1);
            }
            // The node's pid 1.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            libc::syscall(libc::SYS_close_range, 3, libc::c_uint::MAX, 0);
            let dot = c".".as_ptr();
            let steps = [
                libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ),
                libc::mount(
                    dir.as_ptr(),
                    dir.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ),
                libc::chdir(dir.as_ptr()),
                libc::syscall(libc::SYS_pivot_root, dot, dot) as libc::c_int,
                libc::umount2(dot, libc::MNT_DETACH),
                libc::chdir(c"/".as_ptr()),
            ];
            if steps.iter().any(|&r| r != 0) {
                libc::_exit(1);
            }
            loop {
                libc::pause();
            }
        });
    }
    let child = Killed(c.spawn().expect("starting the node"));
    let node = strata_tests::cmd::poll(std::time::Duration::from_secs(10), || {
        let pid = *children(child.0.id()).first()?;
        Path::new(&format!("/proc/{pid}/root/.strata-test-node"))
            .exists()
            .then_some(pid)
    })
    .expect("the node's init did not take the root as its /");
    (child, node)
}

/// `--host-namespaces`, as the DaemonSet runs it: the installer runs in the node's pid
/// namespace (hostPID) but a mount namespace of its own, with the node's `/` at `--root`. The
/// node's containerd (at /usr/bin/containerd on the node: 2.1 here) is the one asked for its
/// version and that checks the result, not the installer's own /usr/bin/containerd (1.6): the
/// config written is version 3 and 2.1 reads it. Uninstall gives the node back as it was.
#[test]
fn host_namespaces_runs_the_nodes_containerd() {
    let test = "install::host_namespaces_runs_the_nodes_containerd";
    let (Some(ours), Some(nodes)) = (
        containerd(ContainerdVersion::V1_6, test),
        containerd(ContainerdVersion::V2_1, test),
    ) else {
        return;
    };
    let ours = strata_tests::daemon::which_path(&ours).expect("containerd on PATH");
    if ours != Path::new("/usr/bin/containerd") {
        skip(
            test,
            &format!(
                "containerd 1.6 is {}, not /usr/bin/containerd",
                ours.display()
            ),
        );
        return;
    }
    let root = Root::new("hostns");
    fs::write(root.0.join(".strata-test-node"), "").unwrap();
    copy_with_libraries(&nodes, &root.0, "/usr/bin/containerd");
    fs::remove_file(root.config()).ok();
    let tree = root.tree();
    let (_node, init) = private_node(&root.0);

    let run = |verb: &str| {
        let mut c = Command::new("nsenter");
        c.arg(format!("--pid=/proc/{init}/ns/pid"))
            .args(["--", "unshare", "--mount", "--mount-proc", "--"])
            .arg(bin_dir().join("strata"))
            .arg(verb)
            .arg("--root")
            .arg(&root.0)
            .args([
                "--containerd",
                "/usr/bin/containerd",
                "--host-namespaces",
                "--restart",
                "never",
            ]);
        exec(c)
    };
    let out = run("install");
    assert!(out.success(), "install --host-namespaces: {out}");
    let written = fs::read_to_string(root.config()).unwrap();
    assert!(
        written.starts_with("version = 3"),
        "not written for the node's containerd 2.1:\n{written}"
    );
    let handlers = dumped_handlers(&nodes, &root.config());
    for h in HANDLERS {
        assert!(handlers.iter().any(|(n, _)| n == h), "no {h}: {handlers:?}");
    }
    let out = run("uninstall");
    assert!(out.success(), "uninstall --host-namespaces: {out}");
    assert_eq!(root.tree(), tree, "uninstall left the node changed");
}

/// Whether everything `want` holds is in `got` (objects key by key, recursively; arrays item
/// by item), so that a field the typed object dropped (one Kubernetes does not know) shows.
fn subset(want: &serde_json::Value, got: &serde_json::Value, at: &str, missing: &mut Vec<String>) {
    use serde_json::Value;
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (k, v) in w {
                match g.get(k) {
                    Some(gv) => subset(v, gv, &format!("{at}.{k}"), missing),
                    None => missing.push(format!("{at}.{k}")),
                }
            }
        }
        (Value::Array(w), Value::Array(g)) if w.len() == g.len() => {
            for (i, (a, b)) in w.iter().zip(g).enumerate() {
                subset(a, b, &format!("{at}[{i}]"), missing);
            }
        }
        (w, g) if w == g => {}
        (w, g) => missing.push(format!("{at}: {w} became {g}")),
    }
}

/// Parses `text` as the typed object `T`, and fails on a field it does not know.
fn typed<T: serde::de::DeserializeOwned + serde::Serialize>(
    doc: &serde_json::Value,
    file: &str,
) -> T {
    let obj: T = serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("{file}: not a valid {}: {e}", doc["kind"]));
    let back = serde_json::to_value(&obj).unwrap();
    let mut missing = Vec::new();
    subset(doc, &back, "", &mut missing);
    assert!(
        missing.is_empty(),
        "{file}: {} fields Kubernetes does not know: {missing:?}",
        doc["kind"]
    );
    obj
}

/// The manifests in configs/kubernetes are read as the Kubernetes objects they claim to be
/// (k8s-openapi's types: a wrong type fails, and so does a field the type does not have), and
/// agree with what `strata install` writes: the RuntimeClasses select on the labels of its
/// Node Feature Discovery file, the DaemonSet runs the image's install with the node at /host
/// and uninstalls in preStop.
#[test]
fn the_kubernetes_manifests_are_the_objects_they_claim_to_be() {
    use k8s_openapi::api::apps::v1::DaemonSet;
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::node::v1::RuntimeClass;
    use serde::Deserialize;

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/kubernetes");
    let mut classes = Vec::new();
    let mut daemonsets = Vec::new();
    let mut accounts = Vec::new();
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = fs::read_to_string(&path).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v = serde_yaml::Value::deserialize(doc).unwrap_or_else(|e| panic!("{file}: {e}"));
            if v.is_null() {
                continue;
            }
            let v: serde_json::Value = serde_json::to_value(&v).unwrap();
            match (v["apiVersion"].as_str(), v["kind"].as_str()) {
                (Some("node.k8s.io/v1"), Some("RuntimeClass")) => {
                    classes.push(typed::<RuntimeClass>(&v, &file))
                }
                (Some("apps/v1"), Some("DaemonSet")) => {
                    daemonsets.push(typed::<DaemonSet>(&v, &file))
                }
                (Some("v1"), Some("ServiceAccount")) => {
                    accounts.push(typed::<ServiceAccount>(&v, &file))
                }
                other => panic!("{file}: an object of unexpected kind {other:?}"),
            }
        }
    }

    let mut handlers: Vec<&str> = classes.iter().map(|c| c.handler.as_str()).collect();
    let mut expected = HANDLERS;
    handlers.sort();
    expected.sort();
    assert_eq!(handlers, expected);
    for c in &classes {
        let selector = c
            .scheduling
            .as_ref()
            .and_then(|s| s.node_selector.as_ref())
            .unwrap_or_else(|| panic!("RuntimeClass {} has no nodeSelector", c.handler));
        // NFD's local source names a label feature.node.kubernetes.io/<name> for a line
        // <name>=<value> of the file install writes (strata-<tier>=true).
        assert_eq!(
            selector
                .get(&format!("feature.node.kubernetes.io/{}", c.handler))
                .map(String::as_str),
            Some("true"),
            "RuntimeClass {}: {selector:?}",
            c.handler
        );
        assert_eq!(c.metadata.name.as_deref(), Some(c.handler.as_str()));
    }

    assert_eq!(daemonsets.len(), 1, "one installer DaemonSet");
    let ds = &daemonsets[0];
    let pod = ds.spec.template.spec.as_ref().unwrap();
    assert_eq!(
        pod.host_pid,
        Some(true),
        "install --host-namespaces needs hostPID"
    );
    let sa = pod.service_account_name.as_deref().unwrap();
    assert!(
        accounts
            .iter()
            .any(|a| a.metadata.name.as_deref() == Some(sa)),
        "the DaemonSet's service account {sa} is not in the manifests"
    );
    let host = pod
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.host_path.as_ref().is_some_and(|h| h.path == "/"))
        .expect("a hostPath volume of the node's /");
    let c = &pod.containers[0];
    assert!(c
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .any(|m| m.name == host.name && m.mount_path == "/host"));
    let pre_stop = c
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref())
        .and_then(|h| h.exec.as_ref())
        .and_then(|e| e.command.clone())
        .unwrap_or_default();
    assert_eq!(
        pre_stop,
        [
            "/strata/bin/strata",
            "uninstall",
            "--root=/host",
            "--host-namespaces"
        ],
        "preStop"
    );
    // A wrong type is refused (the check above would otherwise prove little).
    let bad = serde_json::json!({"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
        "metadata": {"name": "x"}, "handler": ["not", "a", "string"]});
    assert!(serde_json::from_value::<RuntimeClass>(bad).is_err());
    let unknown = serde_json::json!({"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
        "metadata": {"name": "x"}, "handler": "x", "overheads": {}});
    let back =
        serde_json::to_value(serde_json::from_value::<RuntimeClass>(unknown.clone()).unwrap())
            .unwrap();
    let mut missing = Vec::new();
    subset(&unknown, &back, "", &mut missing);
    assert_eq!(missing, [".overheads"], "an unknown field is caught");
}
