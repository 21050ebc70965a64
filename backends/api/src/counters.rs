//! Node-wide counters for operators, in Prometheus' text exposition format, in a file that a
//! node exporter's textfile collector reads (`--collector.textfile.directory=/run/strata/metrics`).
//!
//! Every shim on the node adds to the same counters. An addition takes an exclusive `flock` on
//! `<dir>/.lock`, reads `<dir>/strata.prom`, adds, and writes the file again through a rename
//! (`strata.prom.tmp`, which the collector ignores; the lock makes writers take turns), so the
//! collector never reads half a file. The directory is under `/run`, so the counters
//! start again at zero when the node boots, as Prometheus counters may.
//!
//! A counter that cannot be written (no directory, a read-only `/run`) is logged once at debug
//! level and otherwise ignored: metrics never fail a container.

use std::collections::BTreeMap;
use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Where the counters go unless the configuration's `[metrics] dir` says otherwise.
pub const DEFAULT_DIR: &str = "/run/strata/metrics";
/// The file the textfile collector reads.
pub const FILE: &str = "strata.prom";

static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();

/// The counters Strata writes, with their help text. Anything else is refused (a typo would
/// otherwise become a new series).
pub const KNOWN: &[(&str, &str)] = &[
    ("strata_tasks_started_total", "Containers started, by tier."),
    (
        "strata_create_failures_total",
        "Container creates that failed, by tier and reason (the error's kind).",
    ),
    (
        "strata_sentry_trapped_calls_total",
        "System calls the sentry supervisor answered, by decision (allow, deny, error, emulate).",
    ),
    ("strata_microvm_boots_total", "Pod VMs booted, by hypervisor driver and accelerator."),
    (
        "strata_microvm_boot_seconds_total",
        "Seconds spent booting pod VMs until the agent answered (divide by the boots for the mean).",
    ),
];

/// Sets the directory for this process (from the configuration; `None` turns counting off).
/// The first call wins: one shim serves one pod, under one configuration.
pub fn set_dir(dir: Option<PathBuf>) {
    let _ = DIR.set(dir);
}

fn dir() -> Option<&'static Path> {
    DIR.get_or_init(|| Some(PathBuf::from(DEFAULT_DIR)))
        .as_deref()
}

/// Adds `v` to counter `name` with `labels`, in the node's file.
pub fn add(name: &str, labels: &[(&str, &str)], v: f64) {
    let Some(dir) = dir() else { return };
    if let Err(e) = add_in(dir, name, labels, v) {
        tracing::debug!(dir = %dir.display(), error = %e, "metrics: counter not written");
    }
}

/// The series key: `name{a="x",b="y"}` with label values escaped as the format asks.
fn series(name: &str, labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return name.to_string();
    }
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{v}\"")
        })
        .collect();
    format!("{name}{{{}}}", inner.join(","))
}

/// Reads the series of a file this module wrote: `series value` lines, comments skipped.
pub fn parse(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn render(values: &BTreeMap<String, f64>) -> String {
    let mut out = String::new();
    for (name, help) in KNOWN {
        let mine: Vec<_> = values
            .iter()
            .filter(|(k, _)| k.split('{').next() == Some(name))
            .collect();
        if mine.is_empty() {
            continue;
        }
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n"));
        for (k, v) in mine {
            out.push_str(&format!("{k} {v}\n"));
        }
    }
    out
}

/// [`add`] in `dir`, errors returned.
pub fn add_in(dir: &Path, name: &str, labels: &[(&str, &str)], v: f64) -> std::io::Result<()> {
    if !KNOWN.iter().any(|(n, _)| *n == name) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("unknown counter {name}"),
        ));
    }
    fs::create_dir_all(dir)?;
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(".lock"))?;
    // SAFETY: flock on a descriptor this function owns; released when `lock` closes.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let path = dir.join(FILE);
    let mut values = match fs::read_to_string(&path) {
        Ok(t) => parse(&t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
        Err(e) => return Err(e),
    };
    *values.entry(series(name, labels)).or_insert(0.0) += v;
    crate::files::write_atomically(&path, render(&values).as_bytes(), 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_up_across_writers_and_render_as_prometheus_text() {
        let dir = std::env::temp_dir().join(format!("strata-counters-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let dir = dir.clone();
                std::thread::spawn(move || {
                    for _ in 0..25 {
                        add_in(
                            &dir,
                            "strata_tasks_started_total",
                            &[("tier", "native")],
                            1.0,
                        )
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        add_in(
            &dir,
            "strata_create_failures_total",
            &[("tier", "wasm"), ("reason", "invalid \"argument\"")],
            1.0,
        )
        .unwrap();
        assert!(add_in(&dir, "strata_typo_total", &[], 1.0).is_err());
        let text = fs::read_to_string(dir.join(FILE)).unwrap();
        assert!(
            text.contains("# TYPE strata_tasks_started_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("strata_tasks_started_total{tier=\"native\"} 100\n"),
            "{text}"
        );
        assert!(
            text.contains(
                r#"strata_create_failures_total{tier="wasm",reason="invalid \"argument\""} 1"#
            ),
            "{text}"
        );
        assert_eq!(parse(&text).len(), 2);
        let _ = fs::remove_dir_all(&dir);
    }
}
