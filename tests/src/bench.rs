//! What the benchmark tools share: a harness started beside the running binary, interleaved
//! timed runs, medians, the figures' formatting, and writing them between a document's result
//! markers.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::{DaemonOptions, Harness};

/// A private containerd with `strata-testenv` from the running binary's directory.
pub fn start_harness() -> Result<Harness> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("the binary's directory")?;
    let h = Harness::start(&dir.join("strata-testenv"), DaemonOptions::default())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    eprintln!("shim from {}", h.shim_dir.display());
    Ok(h)
}

/// Runs of `f` over `subjects` (one warm-up run each first: page cache, first shim start),
/// `runs` rounds with the order rotating each round; each subject's times, in `subjects`' order.
pub fn interleaved<T: Copy>(
    subjects: &[T],
    runs: usize,
    mut f: impl FnMut(T) -> Result<Duration>,
) -> Result<Vec<Vec<Duration>>> {
    let mut out = vec![Vec::new(); subjects.len()];
    for s in subjects {
        f(*s)?;
    }
    for i in 0..runs {
        for k in 0..subjects.len() {
            let j = (i + k) % subjects.len();
            out[j].push(f(subjects[j])?);
        }
    }
    Ok(out)
}

/// The median; sorts `v`.
pub fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// The first line `cmd args` prints (on stdout, else on stderr), trimmed; empty if it cannot
/// run.
pub fn first_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

/// The name of the profile the shim was built with (its directory's name; `installed` is
/// scripts/build-shim's: release, linked statically, functions laid out).
pub fn shim_profile(h: &Harness) -> String {
    match h
        .shim_dir
        .file_name()
        .map(|d| d.to_string_lossy().into_owned())
    {
        Some(d) if d == "installed" => "release (static, laid out: scripts/build-shim)".into(),
        Some(d) => d,
        None => String::new(),
    }
}

/// Puts `results` into the document at `path`, replacing what stands between `begin` and `end`.
pub fn write_results(path: &Path, begin: &str, end: &str, results: &str) -> Result<()> {
    let doc =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let (Some(b), Some(e)) = (doc.find(begin), doc.find(end)) else {
        bail!("{} lacks the {begin} / {end} markers", path.display());
    };
    let new = format!("{}{begin}\n{results}{}", &doc[..b], &doc[e..]);
    std::fs::write(path, new)?;
    Ok(())
}
