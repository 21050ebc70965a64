//! `strata-demo`: runs the same busybox workload on every Strata tier built so far and on runc,
//! on a private containerd, and prints side by side what each allowed and how long it took.
//!
//! A tier is one row of [`TIERS`]: later tiers are added there. A tier that fails to start is
//! shown as unavailable, with the runtime's own error.

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
}

const TIERS: &[Tier] = &[
    Tier {
        label: "runc",
        runtime: "io.containerd.runc.v2",
        annotations: &[],
    },
    Tier {
        label: "strata native",
        runtime: "io.containerd.strata.v2",
        annotations: &["strata.dev/backend=native"],
    },
    Tier {
        label: "strata sentry",
        runtime: "io.containerd.strata.v2",
        annotations: &["strata.dev/backend=sentry"],
    },
    Tier {
        label: "strata microvm",
        runtime: "io.containerd.strata.v2",
        annotations: &["strata.dev/backend=microvm"],
    },
    // The wasm tier runs WebAssembly, not this busybox workload: it gets its own workload.
];

/// The workload: each line `key=value`, one per check, in the order of [`CHECKS`].
///
/// Every probe must be harmless to the host even where a tier fails to isolate (it runs as
/// root): read-only probes, or changes confined to the container's own namespaces. Never
/// probe with something that would change the host (the clock, a sysctl, a module).
const WORKLOAD: &str = r#"
yn() { if "$@" >/dev/null 2>&1; then echo yes; else echo no; fi; }
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

/// (key, what the row says).
const CHECKS: &[(&str, &str)] = &[
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
        let out = c.run_with(&flags, &["sh", "-c", WORKLOAD], None);
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
        "Strata demo: one busybox workload on each tier, private containerd at {}\n",
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
        for (_, o) in &outcomes {
            let v = match o {
                Outcome::Ran { values, .. } => {
                    values.get(*key).cloned().unwrap_or_else(|| "?".into())
                }
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
    for (t, o) in &outcomes {
        if let Outcome::Unavailable(why) = o {
            println!("{}: {why}", t.label);
        }
    }
    h.stop();
    Ok(())
}
