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
    let mut c = Command::new(bin_dir().join("strata"));
    c.arg(verb)
        .arg("--root")
        .arg(&root.0)
        .arg("--containerd")
        .arg(containerd)
        .args(["--restart", "never"])
        .args(extra);
    exec(c)
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
