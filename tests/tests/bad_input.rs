//! Bad input: each fails with a clear error, and leaves nothing behind.

use std::fs;

use strata_tests::wasi::{Workload, WorkloadRun};
use strata_tests::{api, harness, strata_only, Runtime};

const ALL_BACKENDS: [&str; 4] = ["native", "sentry", "microvm", "wasm"];

/// Writes a Strata config file of the harness's own (removed with the harness's state dir).
fn config_file(h: &strata_tests::Harness, name: &str, text: &str) -> String {
    let dir = h.info.state.join("strata-configs");
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn config_json_that_is_not_utf8() {
    // containerd 1.6 itself unmarshals config.json before starting any shim, and keeps the
    // bundle directory when that fails, so bytes that are not JSON at all never reach a runtime.
    // Invalid UTF-8 in a string does: Go's decoder silently replaces it, but it is not JSON
    // (RFC 8259 requires UTF-8) and a Rust runtime sees a malformed config.json.
    let h = harness!();
    let c = h.container("badjson");
    let made = h.ctr_run(&[
        "containers",
        "create",
        "--runtime",
        &c.runtime,
        &h.info.image,
        &c.id,
        "true",
    ]);
    assert!(made.success(), "{made}");
    let answer = api::create_task_with_raw_spec(h, &c.id, |spec| {
        let mut v: serde_json::Value = serde_json::from_slice(&spec).unwrap();
        v["hostname"] = "HOSTNAME-PLACEHOLDER".into();
        if h.runtime == Runtime::Strata {
            v["annotations"]["strata.dev/backend"] = h.tier.name().into();
        }
        let text = serde_json::to_vec(&v).unwrap();
        let at = text
            .windows(20)
            .position(|w| w == b"HOSTNAME-PLACEHOLDER")
            .unwrap();
        [&text[..at], b"\xff\xfe-not-utf8", &text[at + 20..]].concat()
    })
    .expect("talking to containerd");
    match (&answer, h.runtime) {
        (Err(err), Runtime::Strata) => {
            assert!(
                err.message().contains("config.json"),
                "the error should name config.json: {err:?}"
            )
        }
        (Ok(_), Runtime::Strata) => {
            panic!("a task was created from a config.json that is not UTF-8")
        }
        // runc is written in Go and takes the replaced string: no verdict, only clean-up.
        (_, Runtime::Runc) => eprintln!("runc answered {answer:?}"),
    }
    c.remove_and_check();
}

#[test]
fn spec_with_an_unknown_namespace() {
    let h = harness!();
    let c = h.container("badns");
    let mut spec = c.workload_spec(&Workload::new());
    spec["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({ "type": "bogus" }));
    let out = c.run_spec(&spec, &[]);
    assert_ne!(out.code, 0, "{out}");
    assert!(
        out.stderr.contains("bogus"),
        "the error should name the bad namespace: {out}"
    );
    c.assert_no_leaks();
}

#[test]
fn missing_rootfs() {
    let h = harness!();
    let c = h.container("norootfs");
    let rootfs = "/nonexistent/strata-rootfs".to_string();
    let mut cmd = h.ctr();
    cmd.args(["run", "--rm", "--runtime", &c.runtime])
        .arg("--fifo-dir")
        .arg(h.fifo_dir());
    cmd.args(h.tier_flags());
    let argv = Workload::new().argv(h);
    cmd.args(["--rootfs", &rootfs, &c.id]).args(&argv);
    let out = strata_tests::cmd::run(cmd, None, strata_tests::harness::CTR_TIMEOUT).unwrap();
    assert_ne!(out.code, 0, "{out}");
    assert!(
        out.stderr.contains(&rootfs),
        "the error should name the missing rootfs: {out}"
    );
    c.assert_no_leaks();
}

#[test]
fn nonexistent_binary() {
    let h = harness!();
    let c = h.container("nobinary");
    let out = c.run(&["/no/such/binary", "arg"]);
    assert_ne!(out.code, 0, "{out}");
    assert!(
        out.stderr.contains("/no/such/binary"),
        "the error should name the binary: {out}"
    );
    c.assert_no_leaks();
}

#[test]
fn second_create_with_the_same_id() {
    let h = harness!();
    let c = h.container("dupid");
    c.start_workload(&[], &Workload::new().sleep());
    let again = c.try_start_workload(&[], &Workload::new());
    assert_ne!(again.code, 0, "{again}");
    assert!(again.stderr.contains("already exists"), "{again}");
    assert_eq!(
        c.status().as_deref(),
        Some("RUNNING"),
        "the first container was disturbed"
    );
    c.remove_and_check();
}

#[test]
fn backend_annotation_bogus_names_the_allowed() {
    let h = harness!();
    strata_only!(h);
    let c = h.container("annbogus");
    let out = c.run_with(
        &["--annotation", "strata.dev/backend=bogus"],
        &["true"],
        None,
    );
    assert_ne!(out.code, 0, "{out}");
    assert!(out.stderr.contains("bogus"), "{out}");
    // The default configuration allows every tier; the microvm tests' (the shipped
    // strata-microvm.toml) allows that tier only.
    assert!(
        out.stderr.contains("allowed backends") && out.stderr.contains(h.tier.name()),
        "the error should name the allowed backends: {out}"
    );
    c.assert_no_leaks();

    // With a configuration that allows two, both are named.
    let cfg = config_file(
        h,
        "two.toml",
        "default_backend = \"native\"\nallowed_backends = [\"native\", \"sentry\"]\n",
    );
    let c = h.container("annbogus2");
    let out = c.run_with(
        &[
            "--runtime-config-path",
            &cfg,
            "--annotation",
            "strata.dev/backend=bogus",
        ],
        &["true"],
        None,
    );
    assert_ne!(out.code, 0, "{out}");
    for b in ["bogus", "native", "sentry"] {
        assert!(out.stderr.contains(b), "{b} missing from the error: {out}");
    }
    c.assert_no_leaks();
}

#[test]
fn backend_annotation_not_allowed() {
    let h = harness!();
    strata_only!(h);
    let cfg = config_file(
        h,
        "native-only.toml",
        "default_backend = \"native\"\nallowed_backends = [\"native\"]\n",
    );
    for other in ALL_BACKENDS.iter().filter(|b| **b != "native") {
        let c = h.container(&format!("ann{other}"));
        let out = c.run_with(
            &[
                "--runtime-config-path",
                &cfg,
                "--annotation",
                &format!("strata.dev/backend={other}"),
            ],
            &["true"],
            None,
        );
        assert_ne!(out.code, 0, "a pod moved itself to {other}: {out}");
        assert!(
            out.stderr.contains(other) && out.stderr.contains("native"),
            "{out}"
        );
        c.assert_no_leaks();
    }
}

#[test]
fn backend_annotation_native_and_config_work() {
    let h = harness!();
    strata_only!(h);
    // The positive control for the tests above: the same flags with good values run.
    let cfg = config_file(
        h,
        "good.toml",
        "default_backend = \"native\"\nallowed_backends = [\"native\"]\n",
    );
    let c = h.container("anngood");
    let out = c.run_with(
        &[
            "--runtime-config-path",
            &cfg,
            "--annotation",
            "strata.dev/backend=native",
        ],
        &["echo", "ran"],
        None,
    );
    assert_eq!(out.stdout, "ran\n", "{out}\n{}", c.log());
    c.assert_no_leaks();
}

#[test]
fn config_toml_unreadable() {
    let h = harness!();
    strata_only!(h);
    let dir = h.info.state.join("strata-configs").join("a-directory.toml");
    fs::create_dir_all(&dir).unwrap();
    for path in [
        dir.to_string_lossy().into_owned(),
        "/nonexistent/strata/config.toml".to_string(),
    ] {
        let c = h.container("cfgunread");
        let out = c.run_with(&["--runtime-config-path", &path], &["true"], None);
        assert_ne!(out.code, 0, "{out}");
        assert!(
            out.stderr.contains(&path),
            "the error should name {path}: {out}"
        );
        c.assert_no_leaks();
    }
}

#[test]
fn config_toml_malformed() {
    let h = harness!();
    strata_only!(h);
    for (name, text) in [
        ("syntax.toml", "default_backend = [\n"),
        ("types.toml", "allowed_backends = \"native\"\n"),
        ("unknown-backend.toml", "default_backend = \"quantum\"\n"),
    ] {
        let cfg = config_file(h, name, text);
        let c = h.container("cfgbad");
        let out = c.run_with(&["--runtime-config-path", &cfg], &["true"], None);
        assert_ne!(out.code, 0, "{name} was accepted: {out}");
        assert!(
            out.stderr.contains(&cfg),
            "the error should name {cfg}: {out}"
        );
        c.assert_no_leaks();
    }
}
