//! The sentry's answers against the kernel's, call for call: one probe program
//! (`tests/probes/sentry-diff.c`, built here with `cc -static`) exercises file, directory,
//! descriptor, process, signal, socket and limit calls with their edge cases and prints one line
//! per case (the kernel's answer, nothing that changes from run to run). It runs through
//! containerd with the spec `ctr run` writes, on the native tier and on the sentry tier under
//! its default policy (whose opens the kernel decides) and under the same policy with every
//! open performed by the supervisor (`[audit] opens = true`), and the outputs are compared line
//! for line. Every line that differs must be in [`POLICY_DIFFERENCES`] or in the table of that
//! mode, with the reason (also in docs/sentry.md, "The kernel's answers"); a listed line that
//! no longer differs fails the test too, so the tables stay true.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use strata_tests::{cmd, harness, skip, strata_only, Harness};

const PROBE_C: &str = include_str!("../probes/sentry-diff.c");

/// Where the sentry answers differently from the kernel, on purpose, whoever performs the
/// opens: `(case, reason)`. Everything else the probe prints must be the same on both tiers.
const POLICY_DIFFERENCES: &[(&str, &str)] = &[
    (
        "proc_version",
        "emulated (docs/sentry.md, \"Files that tell the host's kernel\"): Linux version 5.15.0-strata, not the host's",
    ),
    (
        "uname",
        "emulated: release 5.15.0-strata, not the host's",
    ),
    (
        "packet_socket",
        "AF_PACKET is refused (EACCES) under every policy: a large, often-exploited kernel surface no ordinary pod needs (the kernel gives it to CAP_NET_RAW)",
    ),
    (
        "vsock_socket",
        "AF_VSOCK is refused (EACCES): only IP, Unix and NETLINK_ROUTE sockets are allowed",
    ),
    (
        "netlink_audit_socket",
        "netlink protocols other than NETLINK_ROUTE are refused (EACCES)",
    ),
    (
        "bad_family_socket",
        "families outside IP, Unix and netlink are refused by the sentry (EACCES) before the kernel would say EAFNOSUPPORT",
    ),
];

/// Under the default policy, whose opens the kernel decides (docs/sentry.md, "Opens the
/// kernel decides"): the policy's denied files are masked in the container.
const KERNEL_OPENS_DIFFERENCES: &[(&str, &str)] = &[
    (
        "proc_kallsyms",
        "masked by the null device (read empty; the kernel gives root zeroed addresses): the default policy denies /proc/kallsyms, /proc/kcore, /proc/keys, /proc/sched_debug, /proc/timer_list, /proc/kmsg, /proc/sysrq-trigger, /proc/config.gz",
    ),
    (
        "sys_kernel_notes",
        "/sys/kernel is masked by an empty read-only tmpfs (ENOENT): it tells the host kernel's build (notes, vmcoreinfo) and tunables",
    ),
];

/// Where the supervisor performs every open (the default policy with `[audit] opens = true`,
/// and every policy the kernel cannot decide opens for).
const SUPERVISOR_OPENS_DIFFERENCES: &[(&str, &str)] = &[
    (
        "reopen_own_fd_write",
        "a descriptor the task holds is reopened through /proc/self/fd only for no more access than it has: the kernel reopens the file afresh (a read-only descriptor can become a writable one if the file's mode allows), the supervisor refuses (EACCES), so a descriptor passed in read-only stays read-only",
    ),
    (
        "proc_other_process_fd",
        "another process's /proc/<pid>/fd/N is refused (EACCES): the kernel lets a process with ptrace access to it reopen it; the supervisor reopens only the calling task's own descriptors",
    ),
    (
        "openat2_o_path",
        "openat2 with O_PATH is answered ENOSYS, as by a kernel without openat2 (every user of openat2 falls back to openat): an O_PATH descriptor cannot be handed over (ADDFD refuses it), and letting the kernel make the call would let it read open_how again, after the check, where another thread may have turned O_PATH into O_RDONLY",
    ),
    (
        "openat2_o_path_beneath",
        "as openat2_o_path: O_PATH with RESOLVE_BENEATH, ENOSYS",
    ),
    (
        "proc_kallsyms",
        "kernel-internal file refused by the policy (EACCES; the kernel gives root zeroed addresses): /proc/kallsyms, /proc/kcore, /proc/keys, /proc/sched_debug, /proc/timer_list where the runtime leaves them unmasked",
    ),
    (
        "sys_kernel_notes",
        "/sys/kernel is refused by the policy (EACCES): it tells the host kernel's build (notes, vmcoreinfo) and tunables",
    ),
    (
        "sys_firmware",
        "/sys/firmware is refused by the policy (EACCES) where runc shows the empty tmpfs it masks it with: the supervisor does not rely on the spec's masked paths",
    ),
    (
        "proc_self_mem",
        "/proc/<pid>/mem is refused by the policy (EACCES): the supervisor, which is not the task, cannot make the kernel's ptrace access check for it",
    ),
];

/// The default policy with every open trapped and performed by the supervisor.
const AUDITED: &str = concat!(
    include_str!("../../configs/sentry/default.toml"),
    "\n[audit]\nopens = true\n"
);

/// The `ctr` flags that put a sentry container under [`AUDITED`].
fn audited_flags(h: &Harness) -> Vec<String> {
    let dir = h.info.state.join("diff-audited");
    std::fs::create_dir_all(dir.join("sentry")).unwrap();
    std::fs::write(
        dir.join("sentry/sentry.toml"),
        "allowed_policies = [\"default\", \"audited\"]\n",
    )
    .unwrap();
    std::fs::write(dir.join("sentry/audited.toml"), AUDITED).unwrap();
    std::fs::write(
        dir.join("strata.toml"),
        "default_backend = \"sentry\"\nallowed_backends = [\"native\", \"sentry\"]\n",
    )
    .unwrap();
    vec![
        "--runtime-config-path".into(),
        dir.join("strata.toml").display().to_string(),
        "--annotation".into(),
        "strata.dev/sentry-policy=audited".into(),
    ]
}

/// The probe, built once per test binary. `None`: no C compiler (skipped; on CI a failure).
fn probe(h: &Harness, test: &str) -> Option<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let r = BIN.get_or_init(|| {
        let dir = h.info.state.join("sentry-diff");
        cmd::build_static_c(&dir, "sentry-diff", PROBE_C, &[]).map(|_| dir)
    });
    match r {
        Ok(p) => Some(p.clone()),
        Err(e) => {
            skip(test, e);
            None
        }
    }
}

/// Runs the probe with `args` on `backend` through `ctr run` (the probe's directory bound
/// read-only at /probe), extra ctr `flags`; its output lines.
fn run(h: &Harness, dir: &Path, backend: &str, flags: &[&str], args: &[&str]) -> Vec<String> {
    let c = h.container(&format!("diff-{backend}"));
    let mount = format!(
        "type=bind,src={},dst=/probe,options=rbind:ro",
        dir.display()
    );
    let annotation = format!("strata.dev/backend={backend}");
    let mut all = vec!["--annotation", &annotation, "--mount", &mount];
    all.extend_from_slice(flags);
    let mut argv = vec!["/probe/sentry-diff"];
    argv.extend_from_slice(args);
    let out = c.run_with(&all, &argv, None);
    assert!(
        out.success() && out.stdout.lines().last() == Some("end"),
        "{backend}: the probe did not run to its end: {out}"
    );
    c.assert_no_leaks();
    out.stdout.lines().map(str::to_string).collect()
}

/// The cases whose lines differ between the two runs, each with both lines.
fn compare(native: &[String], sentry: &[String]) -> Vec<(String, String, String)> {
    let key = |l: &str| l.split(' ').next().unwrap_or("").to_string();
    let map = |v: &[String]| {
        v.iter()
            .map(|l| (key(l), l.clone()))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let (n, s) = (map(native), map(sentry));
    let mut keys: Vec<&String> = n.keys().chain(s.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| n.get(*k) != s.get(*k))
        .map(|k| {
            (
                k.clone(),
                n.get(k).cloned().unwrap_or_else(|| "(missing)".into()),
                s.get(k).cloned().unwrap_or_else(|| "(missing)".into()),
            )
        })
        .collect()
}

/// Fails unless every differing case is listed in [`POLICY_DIFFERENCES`] or `table`, and every
/// listed case (of those this run printed) differs.
fn check(mode: &str, native: &[String], sentry: &[String], table: &[(&str, &str)]) {
    let listed = || POLICY_DIFFERENCES.iter().chain(table);
    let diffs = compare(native, sentry);
    eprintln!("{mode}: {} cases, {} differ", native.len(), diffs.len());
    for (k, n, s) in &diffs {
        eprintln!("  {k}: native `{n}`, sentry `{s}`");
    }
    let unlisted: Vec<_> = diffs
        .iter()
        .filter(|(k, _, _)| !listed().any(|(c, _)| c == k))
        .collect();
    assert!(
        unlisted.is_empty(),
        "{mode}: the sentry answers these differently from the kernel, and they are no documented policy decision: {unlisted:#?}"
    );
    let printed = |c: &str| native.iter().any(|l| l.split(' ').next() == Some(c));
    let stale: Vec<_> = listed()
        .filter(|(c, _)| printed(c) && !diffs.iter().any(|(k, _, _)| k == c))
        .map(|(c, _)| *c)
        .collect();
    assert!(
        stale.is_empty(),
        "{mode}: listed as policy differences but answered as the kernel does now (take them out of the table): {stale:?}"
    );
}

#[test]
fn the_sentry_answers_as_the_kernel_does_call_for_call() {
    let h = harness!();
    strata_only!(h);
    let Some(dir) = probe(h, "sentry_diff") else {
        return;
    };
    let native = run(h, &dir, "native", &[], &["rw", "/wd"]);
    let sentry = run(h, &dir, "sentry", &[], &["rw", "/wd"]);
    check("writable root", &native, &sentry, KERNEL_OPENS_DIFFERENCES);
    let flags = audited_flags(h);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let audited = run(h, &dir, "sentry", &flags, &["rw", "/wd"]);
    check(
        "writable root, opens by the supervisor",
        &native,
        &audited,
        SUPERVISOR_OPENS_DIFFERENCES,
    );
}

#[test]
fn a_read_only_root_fails_writes_with_erofs_on_both_tiers() {
    let h = harness!();
    strata_only!(h);
    let Some(dir) = probe(h, "sentry_diff_ro") else {
        return;
    };
    let native = run(h, &dir, "native", &["--read-only"], &["ro"]);
    let sentry = run(h, &dir, "sentry", &["--read-only"], &["ro"]);
    check("read-only root", &native, &sentry, KERNEL_OPENS_DIFFERENCES);
    // The probe itself discriminates: the root is read-only under both.
    assert!(
        sentry.iter().any(|l| l == "ro_creat err EROFS")
            && sentry.iter().any(|l| l == "ro_mkdir err EROFS"),
        "{sentry:?}"
    );
}

/// The files of `/proc/sys` that the kernel answers from the opener's namespaces (IPC, network,
/// UTS) read the container's values on the sentry as on native: its own sysctls from the spec
/// and its host name, not the shim's (the supervisor opens them from the task's namespaces).
#[test]
fn namespaced_sysctls_read_the_containers_own_values() {
    let h = harness!();
    strata_only!(h);
    let read = "cat /proc/sys/fs/mqueue/msg_max /proc/sys/kernel/shm_rmid_forced \
                /proc/sys/net/ipv4/ip_unprivileged_port_start /proc/sys/kernel/hostname";
    let mut outs = Vec::new();
    for backend in ["native", "sentry"] {
        let c = h.container(&format!("sysctl-{backend}"));
        let mut spec = c.spec(&["sh", "-c", read]);
        spec["annotations"]["strata.dev/backend"] = backend.into();
        spec["hostname"] = "strata-sysctl".into();
        spec["linux"]["sysctl"] = serde_json::json!({
            "fs.mqueue.msg_max": "100",
            "kernel.shm_rmid_forced": "1",
            "net.ipv4.ip_unprivileged_port_start": "80",
        });
        // The spec's own namespaces: a new IPC, network and UTS namespace each.
        for ns in ["ipc", "network", "uts"] {
            let list = spec["linux"]["namespaces"].as_array_mut().unwrap();
            if !list.iter().any(|n| n["type"] == ns) {
                list.push(serde_json::json!({ "type": ns }));
            }
        }
        let out = c.run_spec(&spec, &[]);
        assert!(out.success(), "{backend}: {out}");
        outs.push(out.stdout.clone());
        c.remove_and_check();
    }
    assert_eq!(
        outs[0], "100\n1\n80\nstrata-sysctl\n",
        "native: {}",
        outs[0]
    );
    assert_eq!(outs[1], outs[0], "sentry differs from native");
}
