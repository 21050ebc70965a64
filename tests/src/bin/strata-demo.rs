//! `strata-demo`: runs the same busybox workload on every Strata tier built so far and on runc,
//! on a private containerd, and prints side by side what each allowed and how long it took.
//!
//! A tier is one column of [`TIERS`]: later tiers are added there. A tier that fails to start
//! is shown as unavailable, with the runtime's own error. The wasm tier runs WebAssembly, not
//! a shell: its workload is [`WASM_WORKLOAD`], a module that makes the same attempts where
//! WASI has a call for them (print a line, read and write files, open device and kernel
//! files) and prints the same `key=value` lines; rows WASI has no call for show `n/a`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use strata_tests::{DaemonOptions, Harness};

/// One column of the table: a runtime and the annotations that pick its tier.
struct Tier {
    label: &'static str,
    runtime: &'static str,
    annotations: &'static [&'static str],
    /// Runs [`WASM_WORKLOAD`] as `/app.wasm` instead of the shell workload.
    wasm: bool,
}

const TIERS: &[Tier] = &[
    Tier {
        label: "runc",
        runtime: "io.containerd.runc.v2",
        annotations: &[],
        wasm: false,
    },
    Tier {
        label: "strata native",
        runtime: "io.containerd.strata.v2",
        annotations: &["strata.dev/backend=native"],
        wasm: false,
    },
    Tier {
        label: "strata sentry",
        runtime: "io.containerd.strata.v2",
        annotations: &["strata.dev/backend=sentry"],
        wasm: false,
    },
    Tier {
        label: "strata microvm",
        runtime: "io.containerd.strata.v2",
        annotations: &["strata.dev/backend=microvm"],
        wasm: false,
    },
    Tier {
        label: "strata wasm",
        runtime: "io.containerd.strata.v2",
        annotations: &["strata.dev/backend=wasm"],
        wasm: true,
    },
];

/// The workload: each line `key=value`, one per check, in the order of [`CHECKS`].
///
/// Every probe must be harmless to the host even where a tier fails to isolate (it runs as
/// root): read-only probes, or changes confined to the container's own namespaces. Never
/// probe with something that would change the host (the clock, a sysctl, a module).
const WORKLOAD: &str = r#"
yn() { if "$@" >/dev/null 2>&1; then echo yes; else echo no; fi; }
echo "hello=yes"
echo "readfile=$(yn cat /etc/passwd)"
echo "writetmp=$(yn sh -c 'echo x > /tmp/demo-w')"
echo "uid=$(id -u)"
echo "capeff=$(grep CapEff /proc/self/status | cut -f2)"
echo "kernel=$(uname -r)"
echo "hostname=$(hostname)"
echo "pids=$(ls -d /proc/[0-9]* | wc -l)"
echo "netifs=$(ls /sys/class/net | tr '\n' ' ')"
echo "seccomp=$(grep '^Seccomp:' /proc/self/status | cut -f2)"
echo "nnp=$(grep '^NoNewPrivs:' /proc/self/status | cut -f2)"
echo "devmem=$(yn test -e /dev/mem)"
echo "mknod_mem=$(yn sh -c 'mknod /tmp/m c 1 1 && head -c1 /tmp/m')"
echo "mount=$(yn mount -t tmpfs none /mnt)"
echo "userns=$(yn unshare -U true)"
echo "ping=$(yn ping -c1 -W1 127.0.0.1)"
echo "sethostname=$(yn hostname demo-renamed)"
echo "sysrq=$(yn test -w /proc/sysrq-trigger)"
echo "chown=$(yn sh -c 'touch /tmp/f && chown 1:1 /tmp/f')"
"#;

/// The wasm tier's workload (WASI preview 1; preopen 3 is the container's root): the probes
/// of [`WORKLOAD`] that WASI has a call for, printing the same keys. What WASI has no call
/// for (users, capabilities, the kernel, hostnames, mounts, namespaces, sockets) it cannot
/// attempt: those rows are `n/a`.
const WASM_WORKLOAD: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open" (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 1024) "hello=yes\nreadfile=writetmp=devmem=sysrq=pids=yes\nno\n0 (no /proc)\n?\n")
  (data (i32.const 2048) "etc/passwdtmp/demo-wdev/memproc/sysrq-triggerproc/self/status")
  (func $print (param $fd i32) (param $ptr i32) (param $len i32) (result i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (if (result i32) (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 12))
      (then (i32.const 0)) (else (i32.load (i32.const 12)))))
  ;; opens a path under the root; the fd is at 8; true when it opened
  (func $open (param $ptr i32) (param $len i32) (param $oflags i32) (param $rights i64) (result i32)
    (i32.eqz (call $path_open (i32.const 3) (i32.const 0) (local.get $ptr) (local.get $len)
      (local.get $oflags) (local.get $rights) (local.get $rights) (i32.const 0) (i32.const 8))))
  (func $yn (param $ok i32)
    (if (local.get $ok)
      (then (drop (call $print (i32.const 1) (i32.const 1070) (i32.const 4))))
      (else (drop (call $print (i32.const 1) (i32.const 1074) (i32.const 3))))))
  (func (export "_start")
    (drop (call $print (i32.const 1) (i32.const 1024) (i32.const 10)))
    ;; readfile: open /etc/passwd and read from it
    (drop (call $print (i32.const 1) (i32.const 1034) (i32.const 9)))
    (call $yn (if (result i32) (call $open (i32.const 2048) (i32.const 10) (i32.const 0) (i64.const 2))
      (then
        (i32.store (i32.const 16) (i32.const 4096))
        (i32.store (i32.const 20) (i32.const 256))
        (i32.and (i32.eqz (call $fd_read (i32.load (i32.const 8)) (i32.const 16) (i32.const 1) (i32.const 24)))
                 (i32.gt_u (i32.load (i32.const 24)) (i32.const 0))))
      (else (i32.const 0))))
    ;; writetmp: create /tmp/demo-w and write to it
    (drop (call $print (i32.const 1) (i32.const 1043) (i32.const 9)))
    (call $yn (if (result i32) (call $open (i32.const 2058) (i32.const 10) (i32.const 9) (i64.const 64))
      (then (i32.gt_u (call $print (i32.load (i32.const 8)) (i32.const 1070) (i32.const 4)) (i32.const 0)))
      (else (i32.const 0))))
    (drop (call $print (i32.const 1) (i32.const 1052) (i32.const 7)))
    (call $yn (call $open (i32.const 2068) (i32.const 7) (i32.const 0) (i64.const 2)))
    (drop (call $print (i32.const 1) (i32.const 1059) (i32.const 6)))
    (call $yn (call $open (i32.const 2075) (i32.const 18) (i32.const 0) (i64.const 64)))
    (drop (call $print (i32.const 1) (i32.const 1065) (i32.const 5)))
    (if (call $open (i32.const 2093) (i32.const 16) (i32.const 0) (i64.const 2))
      (then (drop (call $print (i32.const 1) (i32.const 1090) (i32.const 2))))
      (else (drop (call $print (i32.const 1) (i32.const 1077) (i32.const 13)))))))"#;

/// (key, what the row says).
const CHECKS: &[(&str, &str)] = &[
    ("hello", "print a line"),
    ("readfile", "read /etc/passwd"),
    ("writetmp", "write a file in /tmp"),
    ("uid", "uid"),
    ("caps", "capabilities (CapEff bits)"),
    ("sysadmin", "has CAP_SYS_ADMIN"),
    ("kernel", "kernel"),
    ("hostname", "hostname"),
    ("pids", "processes visible"),
    ("netifs", "network interfaces"),
    ("seccomp", "seccomp mode"),
    ("nnp", "no_new_privs"),
    ("devmem", "/dev/mem present"),
    ("mknod_mem", "mknod + read /dev/mem"),
    ("mount", "mount tmpfs"),
    ("userns", "create a user namespace"),
    ("ping", "raw socket (ping lo)"),
    ("sethostname", "change its hostname"),
    ("sysrq", "/proc/sysrq-trigger writable"),
    ("chown", "chown a file"),
];

const RUNS: usize = 3;

enum Outcome {
    Ran {
        values: BTreeMap<String, String>,
        median: Duration,
    },
    Unavailable(String),
}

fn run_tier(h: &Harness, tier: &Tier) -> Outcome {
    let mut times = Vec::new();
    let mut values = BTreeMap::new();
    for run in 0..RUNS {
        let mut c = h.container(&format!("demo-{}", tier.label.replace(' ', "-")));
        c.runtime = tier.runtime.to_string();
        let mut flags: Vec<&str> = Vec::new();
        for a in tier.annotations {
            flags.extend(["--annotation", a]);
        }
        // The microvm column runs under the shipped strata-microvm.toml plus this machine's
        // [microvm] table (the cached guest kernel and initramfs; QEMU TCG where /dev/kvm
        // cannot run Linux, which the pod's log and docs/microvm.md say is no security boundary).
        let microvm_config = h.microvm_config().display().to_string();
        if tier.annotations.contains(&"strata.dev/backend=microvm") {
            flags.extend(["--runtime-config-path", &microvm_config]);
        }
        let out = if tier.wasm {
            let mut spec = c.spec(&["/app.wasm"]);
            let root = PathBuf::from(spec["root"]["path"].as_str().unwrap_or_default());
            let wasm = match wat::parse_str(WASM_WORKLOAD) {
                Ok(w) => w,
                Err(e) => return Outcome::Unavailable(format!("the wasm workload: {e}")),
            };
            if let Err(e) = std::fs::write(root.join("app.wasm"), wasm) {
                return Outcome::Unavailable(format!("writing /app.wasm: {e}"));
            }
            spec["annotations"] = serde_json::json!({ "strata.dev/backend": "wasm" });
            c.run_spec(&spec, &[])
        } else {
            c.run_with(&flags, &["sh", "-c", WORKLOAD], None)
        };
        if !out.success() {
            let why = out
                .stderr
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no error text")
                .trim()
                .trim_start_matches("ctr: ")
                .to_string();
            return Outcome::Unavailable(if out.timed_out() {
                "timed out".into()
            } else {
                why
            });
        }
        times.push(out.elapsed);
        if run == 0 {
            for line in out.stdout.lines() {
                if let Some((k, v)) = line.split_once('=') {
                    values.insert(k.to_string(), v.trim().to_string());
                }
            }
            if let Some(hex) = values.get("capeff").cloned() {
                let bits = u64::from_str_radix(&hex, 16).unwrap_or(0);
                values.insert("caps".into(), bits.count_ones().to_string());
                values.insert(
                    "sysadmin".into(),
                    if bits & (1 << 21) != 0 { "yes" } else { "no" }.into(),
                );
            }
        }
    }
    times.sort();
    Outcome::Ran {
        values,
        median: times[times.len() / 2],
    }
}

fn main() -> Result<()> {
    let exe = std::env::current_exe()?;
    let testenv: PathBuf = exe
        .parent()
        .context("the binary's directory")?
        .join("strata-testenv");
    let h =
        Harness::start(&testenv, DaemonOptions::default()).map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "Strata demo: one workload on each tier, private containerd at {}\n",
        h.info.socket.display()
    );
    let outcomes: Vec<(&Tier, Outcome)> = TIERS.iter().map(|t| (t, run_tier(&h, t))).collect();

    let width = 34;
    let col = 18;
    print!("{:width$}", "");
    for (t, _) in &outcomes {
        print!("{:col$}", t.label);
    }
    println!();
    for (key, label) in CHECKS {
        print!("{label:width$}");
        for (t, o) in &outcomes {
            let v = match o {
                Outcome::Ran { values, .. } => values
                    .get(*key)
                    .cloned()
                    .unwrap_or_else(|| if t.wasm { "n/a" } else { "?" }.into()),
                Outcome::Unavailable(_) => "-".into(),
            };
            let v: String = v.chars().take(col - 2).collect();
            print!("{v:col$}");
        }
        println!();
    }
    print!("{:width$}", format!("time, ctr run --rm (median/{RUNS})"));
    for (_, o) in &outcomes {
        let v = match o {
            Outcome::Ran { median, .. } => format!("{:.0} ms", median.as_secs_f64() * 1000.0),
            Outcome::Unavailable(_) => "unavailable".into(),
        };
        print!("{v:col$}");
    }
    println!("\n");
    if TIERS.iter().any(|t| t.wasm) {
        println!(
            "strata wasm runs a WebAssembly module, not the shell: it made the attempts WASI has a call for;\n\
             n/a = WASI has no such call (no users, capabilities, kernel, hostname, mounts, namespaces, sockets).\n"
        );
    }
    for (t, o) in &outcomes {
        if let Outcome::Unavailable(why) = o {
            println!("{}: {why}", t.label);
        }
    }
    h.stop();
    Ok(())
}
