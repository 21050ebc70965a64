//! `strata-bench`: Strata's native tier against containerd-shim-runc-v2 + runc, on one private
//! containerd with one image.
//!
//! 1. `ctr run --rm IMAGE ID /bin/true`, the two runtimes interleaved, N runs each: the ratio
//!    of the medians (target: at most 1.0x runc).
//! 2. Shim memory: M sleeping containers per runtime, the summed RSS of their shim processes
//!    divided by M (target: at most 5 MiB per container).
//!
//! `strata-bench [--runs N] [--containers M] [--write FILE]`: prints the figures; with
//! `--write` also puts them into FILE (docs/benchmarks.md) between its result markers.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use strata_tests::bench::{first_line, interleaved, median, ms, shim_profile, write_results};
use strata_tests::daemon::pids_with_cmdline;
use strata_tests::Harness;

const STRATA: &str = "io.containerd.strata.v2";
const RUNC: &str = "io.containerd.runc.v2";
const BEGIN: &str = "<!-- bench-native:begin -->";
const END: &str = "<!-- bench-native:end -->";

struct Args {
    runs: usize,
    containers: usize,
    write: Option<PathBuf>,
}

fn args() -> Result<Args> {
    let mut a = Args {
        runs: 30,
        containers: 10,
        write: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--runs" => a.runs = value()?.parse()?,
            "--containers" => a.containers = value()?.parse()?,
            "--write" => a.write = Some(value()?.into()),
            _ => bail!("usage: strata-bench [--runs N] [--containers M] [--write FILE]"),
        }
    }
    Ok(a)
}

fn time_true(h: &Harness, runtime: &str) -> Result<Duration> {
    let mut c = h.container("bench");
    c.runtime = runtime.to_string();
    let out = c.run(&["/bin/true"]);
    if !out.success() {
        bail!("{runtime}: {out}");
    }
    Ok(out.elapsed)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Starts `n` sleeping containers on `runtime`; returns (shim processes, total shim RSS KiB).
fn shim_rss(h: &Harness, runtime: &str, shim: &str, n: usize) -> Result<(usize, u64)> {
    let containers: Vec<_> = (0..n)
        .map(|_| {
            let mut c = h.container("rss");
            c.runtime = runtime.to_string();
            c
        })
        .collect();
    for c in &containers {
        let out = c.try_start(&[], &["sleep", "1000"]);
        if !out.success() {
            bail!("{runtime}: {out}");
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    let sock = h.info.socket.to_string_lossy().into_owned();
    let shims: Vec<u32> = pids_with_cmdline(&sock)
        .into_iter()
        .filter(|(_, cmd)| {
            cmd.split_whitespace()
                .next()
                .is_some_and(|a0| a0.ends_with(shim))
        })
        .map(|(p, _)| p)
        .collect();
    let total = shims.iter().map(|p| rss_kib(*p)).sum();
    drop(containers);
    Ok((shims.len(), total))
}

fn main() -> Result<()> {
    let a = args()?;
    let h = strata_tests::bench::start_harness()?;

    // Interleaved, alternating which goes first, after a warm-up of both.
    let [mut s, mut r]: [Vec<Duration>; 2] =
        interleaved(&[STRATA, RUNC], a.runs, |rt| time_true(&h, rt))?
            .try_into()
            .expect("one list per runtime");
    let (sm, rm) = (median(&mut s), median(&mut r));
    let ratio = sm.as_secs_f64() / rm.as_secs_f64();

    let (sn, stotal) = shim_rss(&h, STRATA, "containerd-shim-strata-v2", a.containers)?;
    let (rn, rtotal) = shim_rss(&h, RUNC, "containerd-shim-runc-v2", a.containers)?;
    let per = |total: u64| total as f64 / 1024.0 / a.containers as f64;
    h.stop();

    let profile = shim_profile(&h);
    let results = format!(
        "Measured {date} on {cpus} CPUs, kernel {kernel}; {containerd}; {runc}; shim built with \
         the `{profile}` profile.\n\n\
         | | strata native | runc (containerd-shim-runc-v2) | strata / runc | target |\n\
         |---|---|---|---|---|\n\
         | `ctr run --rm` of /bin/true, median of {runs} interleaved runs | {sm} | {rm} | {ratio:.2}x | at most 1.0x (aim 0.8x) |\n\
         | fastest / slowest run | {smin} / {smax} | {rmin} / {rmax} | | |\n\
         | shim RSS per running container ({n} sleeping containers) | {sper:.2} MiB = {skib} KiB ({sn} shim processes) | {rper:.2} MiB = {rkib} KiB ({rn} shim processes) | {rssratio:.2}x | at most 5 MiB |\n",
        date = first_line("date", &["-u"]),
        cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        kernel = first_line("uname", &["-r"]),
        containerd = first_line("containerd", &["--version"]),
        runc = first_line("runc", &["--version"]),
        runs = a.runs,
        sm = ms(sm),
        rm = ms(rm),
        smin = ms(s[0]),
        smax = ms(s[s.len() - 1]),
        rmin = ms(r[0]),
        rmax = ms(r[r.len() - 1]),
        n = a.containers,
        sper = per(stotal),
        rper = per(rtotal),
        skib = stotal / a.containers as u64,
        rkib = rtotal / a.containers as u64,
        rssratio = per(stotal) / per(rtotal).max(f64::MIN_POSITIVE),
    );
    println!("{results}");
    if let Some(path) = a.write {
        write_results(&path, BEGIN, END, &results)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
