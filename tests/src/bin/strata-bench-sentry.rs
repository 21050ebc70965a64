//! `strata-bench-sentry`: the sentry tier against gVisor (`runsc`, through
//! containerd-shim-runc-v2 with `--runc-binary`) and against Strata's native tier, on one
//! private containerd with one image.
//!
//! 1. Start latency: `ctr run --rm IMAGE ID /bin/true`, the three runtimes interleaved (the
//!    order rotating), N runs each: medians and ratios (target: sentry at most 0.5x runsc).
//! 2. Workloads, timed inside the container by busybox `time -p` (so container start is not
//!    counted), the same N interleaved runs:
//!    - untrapped: a shell arithmetic loop and a `dd` from /dev/zero to /dev/null (no trapped
//!      call but the two execs and two opens); target at most 1.05x native. Its difference
//!      is small against the noise of a shared machine, so it gets twice the rounds (gVisor
//!      only in the first half), and each round's sentry run is also compared with the native
//!      run of the same round: the median of those paired ratios and its interquartile range
//!      are printed below the table;
//!    - open-heavy: `find` and `stat` over a tree of a few thousand files and `tar` of it
//!      (every file opened), the tree bind-mounted read-only at /data; target at most 1.3x
//!      native (issue 13; issue 4's was 2x) and faster than runsc.
//!
//! Each workload also runs on the sentry in record mode (the built-in `record` policy, picked
//! with `strata.dev/sentry-policy=record`): every call trapped and audited with its resolved path, every open
//! performed by the supervisor, no rate limit. Issue 13 allows such a container to be slower;
//! its figures stand beside the others (a column and a ratio to native), with no target.
//!
//! runsc is run as `runsc --network=none --platform=PLATFORM` through a wrapper script (the
//! runc shim passes no flags of its own to its binary); `--runsc-platform` picks the platform
//! (default `ptrace`: this machine's /dev/kvm is PVM, on which runsc's KVM platform hangs). If
//! runsc cannot run a container, the figures say why and keep native and sentry.
//!
//! `strata-bench-sentry [--runs N] [--files N] [--runsc-platform P] [--write FILE]`: prints
//! the figures; with `--write` also puts them into FILE (docs/benchmarks.md) between its
//! sentry result markers.
//!
//! `--policy FILE` measures the open-heavy workload only, on native, on the sentry's default
//! policy and on the sentry policy in FILE (named after the file), interleaved, and prints
//! the figures (`--write` is then refused): for the kernel-enforced opens of issue 13, which
//! only a policy that compiles into Landlock gets (docs/sentry.md).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use strata_tests::bench::{first_line, interleaved, median, ms, shim_profile, write_results};
use strata_tests::harness::Container;
use strata_tests::Harness;

/// The most one `ctr run` of a workload may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);

const STRATA: &str = "io.containerd.strata.v2";
const RUNC: &str = "io.containerd.runc.v2";
const BEGIN: &str = "<!-- bench-sentry:begin -->";
const END: &str = "<!-- bench-sentry:end -->";
const RUNSC: &str = "/usr/bin/runsc";

/// No trapped call but the execs of `sh` and `dd` and dd's two opens (about a second
/// natively: long enough for `time -p`'s 10 ms steps not to matter).
const UNTRAPPED: &str = "i=0; while [ $i -lt 600000 ]; do i=$((i+1)); done; \
     dd if=/dev/zero of=/dev/null bs=4k count=300000 2>/dev/null";
/// Directory walks (an open per directory), a stat of every file, a tar of the tree (an
/// open per file and per directory), three times.
const OPEN_HEAVY: &str = "for round in 1 2 3; do find /data | wc -l >/dev/null; \
     find /data -type f | xargs stat -c %s >/dev/null; \
     tar cf - /data | wc -c >/dev/null; done";

#[derive(Clone, Copy, PartialEq)]
enum Tier {
    Native,
    Sentry,
    Runsc,
    /// The sentry on the policy given with `--policy`.
    SentryPolicy,
    /// The sentry in record mode (the built-in `record` policy).
    SentryRecord,
}

impl Tier {
    fn label(self) -> &'static str {
        match self {
            Tier::Native => "strata native",
            Tier::Sentry => "strata sentry",
            Tier::Runsc => "gVisor runsc",
            Tier::SentryPolicy => "strata sentry (--policy)",
            Tier::SentryRecord => "strata sentry, record mode",
        }
    }
}

struct Bench<'a> {
    h: &'a Harness,
    runsc_wrapper: PathBuf,
    tree: PathBuf,
    /// For [`Tier::SentryPolicy`]: a Strata configuration whose sentry directory allows the
    /// policy, and the policy's name.
    policy: Option<(String, String)>,
    /// For [`Tier::SentryRecord`]: a Strata configuration whose sentry directory allows the
    /// `record` policy.
    record_cfg: String,
}

impl Bench<'_> {
    /// A container named `name` on `tier`, and the `ctr run` flags that put it there.
    fn container(&self, tier: Tier, name: &str) -> Result<(Container<'_>, Vec<String>)> {
        let mut c = self.h.container(name);
        let mut flags: Vec<String> = vec![
            "--mount".into(),
            format!(
                "type=bind,src={},dst=/data,options=rbind:ro",
                self.tree.display()
            ),
        ];
        let mut add = |f: &[&str]| flags.extend(f.iter().map(|s| s.to_string()));
        match tier {
            Tier::SentryPolicy => {
                let (cfg, name) = self.policy.as_ref().context("no --policy")?;
                let pick = format!("strata.dev/sentry-policy={name}");
                add(&["--annotation", "strata.dev/backend=sentry"]);
                add(&["--annotation", &pick, "--runtime-config-path", cfg]);
            }
            Tier::SentryRecord => {
                add(&["--annotation", "strata.dev/backend=sentry"]);
                add(&["--annotation", "strata.dev/sentry-policy=record"]);
                add(&["--runtime-config-path", &self.record_cfg]);
            }
            Tier::Native => add(&["--annotation", "strata.dev/backend=native"]),
            Tier::Sentry => add(&["--annotation", "strata.dev/backend=sentry"]),
            Tier::Runsc => {
                c.runtime = RUNC.to_string();
                add(&["--runc-binary", &self.runsc_wrapper.to_string_lossy()]);
            }
        }
        if tier != Tier::Runsc {
            c.runtime = STRATA.to_string();
        }
        Ok((c, flags))
    }

    /// `ctr run --rm` on `tier` with `args`; the run's output.
    fn run(&self, tier: Tier, name: &str, args: &[&str]) -> Result<strata_tests::cmd::Output> {
        let (c, flags) = self.container(tier, name)?;
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        // Longer than the tests' limit per ctr call: gVisor's ptrace platform takes over a
        // minute for the untrapped workload on this machine.
        let out = strata_tests::cmd::run(c.run_command(&flags, args), None, RUN_TIMEOUT)?;
        if !out.success() {
            bail!("{}: {out}", tier.label());
        }
        Ok(out)
    }

    fn start(&self, tier: Tier) -> Result<Duration> {
        Ok(self.run(tier, "start", &["/bin/true"])?.elapsed)
    }

    /// The workload's own time, from busybox `time -p` inside the container.
    fn workload(&self, tier: Tier, script: &str) -> Result<Duration> {
        let out = self.run(tier, "work", &["time", "-p", "sh", "-c", script])?;
        let real = out
            .stderr
            .lines()
            .find_map(|l| l.strip_prefix("real "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .with_context(|| format!("{}: no `real` line from time -p: {out}", tier.label()))?;
        Ok(Duration::from_secs_f64(real))
    }
}

/// The resident and proportional set size of the keeper among `c`'s processes.
fn keeper_memory(c: &Container<'_>) -> Option<String> {
    let pid = c
        .pids()
        .ok()?
        .into_iter()
        .find(|p| strata_tests::harness::is_tier_process(*p))?;
    let field = |file: &str, key: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/{file}"))
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
    };
    Some(format!(
        "RSS {}, PSS {}",
        field("status", "VmRSS:")?,
        field("smaps_rollup", "Pss:").unwrap_or_else(|| "-".into())
    ))
}

fn ratio(a: Duration, b: Duration) -> String {
    format!("{:.2}x", a.as_secs_f64() / b.as_secs_f64())
}

/// `files` small files under `root`, a hundred per directory.
fn make_tree(root: &Path, files: usize) -> Result<()> {
    let per_dir = 100;
    for i in 0..files.div_ceil(per_dir) {
        let d = root.join(format!("d{i:03}"));
        std::fs::create_dir_all(&d)?;
        for j in 0..per_dir.min(files - i * per_dir) {
            std::fs::write(
                d.join(format!("f{j:03}")),
                format!("file {i} {j}\n").repeat(8),
            )?;
        }
    }
    Ok(())
}

struct Args {
    runs: usize,
    files: usize,
    platform: String,
    write: Option<PathBuf>,
    policy: Option<PathBuf>,
}

fn args() -> Result<Args> {
    let mut a = Args {
        runs: 10,
        files: 3000,
        platform: "ptrace".into(),
        write: None,
        policy: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--runs" => a.runs = value()?.parse()?,
            "--files" => a.files = value()?.parse()?,
            "--runsc-platform" => a.platform = value()?,
            "--write" => a.write = Some(value()?.into()),
            "--policy" => a.policy = Some(value()?.into()),
            _ => bail!(
                "usage: strata-bench-sentry [--runs N] [--files N] [--runsc-platform P] [--write FILE] [--policy FILE]"
            ),
        }
    }
    if a.runs == 0 {
        bail!("--runs must be at least 1");
    }
    if a.policy.is_some() && a.write.is_some() {
        bail!("--policy measures one workload only; its figures are not written with --write");
    }
    Ok(a)
}

/// A Strata configuration in `dir` whose sentry directory allows the policy `name` (its file,
/// if it needs one, already in `dir/sentry`); its path.
fn allowing_config(dir: &Path, name: &str) -> Result<String> {
    std::fs::create_dir_all(dir.join("sentry"))?;
    std::fs::write(
        dir.join("sentry/sentry.toml"),
        format!("allowed_policies = [\"default\", \"{name}\"]\n"),
    )?;
    let cfg = dir.join("strata.toml");
    std::fs::write(
        &cfg,
        "default_backend = \"sentry\"\nallowed_backends = [\"native\", \"sentry\"]\n",
    )?;
    Ok(cfg.display().to_string())
}

fn main() -> Result<()> {
    let a = args()?;
    let h = strata_tests::bench::start_harness()?;
    let result = measure(&h, &a);
    h.stop();
    let results = result?;
    println!("{results}");
    if let Some(path) = a.write {
        write_results(&path, BEGIN, END, &results)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn measure(h: &Harness, a: &Args) -> Result<String> {
    let tree = h.info.state.join("bench-tree");
    make_tree(&tree, a.files)?;
    let wrapper = h.info.state.join("runsc-bench");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n# runsc as containerd-shim-runc-v2's --runc-binary, with the flags the shim cannot pass\nexec {RUNSC} --network=none --platform={} \"$@\"\n",
            a.platform
        ),
    )?;
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let policy = match &a.policy {
        Some(file) => {
            let name = file
                .file_stem()
                .and_then(|s| s.to_str())
                .context("--policy FILE: a file named NAME.toml")?
                .to_string();
            let dir = h.info.state.join("bench-policy");
            std::fs::create_dir_all(dir.join("sentry"))?;
            std::fs::copy(file, dir.join("sentry").join(format!("{name}.toml")))
                .with_context(|| format!("{}", file.display()))?;
            Some((allowing_config(&dir, &name)?, name))
        }
        None => None,
    };
    let record_cfg = allowing_config(&h.info.state.join("bench-record"), "record")?;
    let b = Bench {
        h,
        runsc_wrapper: wrapper,
        tree,
        policy,
        record_cfg,
    };
    if let Some((_, name)) = &b.policy {
        return policy_open_heavy(&b, a, name);
    }

    // runsc, if it can run here at all.
    let runsc_error = if !Path::new(RUNSC).exists() {
        Some(format!("{RUNSC} is not installed (apt-get install runsc)"))
    } else {
        match b.run(Tier::Runsc, "probe", &["/bin/true"]) {
            Ok(_) => None,
            Err(e) => Some(
                format!("{e:#}")
                    .lines()
                    .take(12)
                    .collect::<Vec<_>>()
                    .join(" / "),
            ),
        }
    };
    if let Some(e) = &runsc_error {
        eprintln!("runsc cannot run here: {e}");
    }
    // Native, sentry and record mode first and in this order: the untrapped workload's extra
    // rounds below are added by index.
    let n_s = [Tier::Native, Tier::Sentry, Tier::SentryRecord];
    let mut tiers = n_s.to_vec();
    if runsc_error.is_none() {
        tiers.push(Tier::Runsc);
    }

    eprintln!("start latency, {} runs", a.runs);
    let start = interleaved(&tiers, a.runs, |t| b.start(t))?;
    eprintln!(
        "untrapped workload, {} runs (native, sentry and record mode {})",
        a.runs,
        2 * a.runs
    );
    let mut untrapped = interleaved(&tiers, a.runs, |t| b.workload(t, UNTRAPPED))?;
    for (i, more) in interleaved(&n_s, a.runs, |t| b.workload(t, UNTRAPPED))?
        .into_iter()
        .enumerate()
    {
        untrapped[i].extend(more);
    }
    eprintln!("open-heavy workload, {} runs", a.runs);
    let open_heavy = interleaved(&tiers, a.runs, |t| b.workload(t, OPEN_HEAVY))?;
    eprintln!("exec latency, {} runs", a.runs);
    let running: Vec<(Container<'_>, Tier)> = tiers
        .iter()
        .map(|t| {
            let (c, flags) = b.container(*t, "execs")?;
            let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
            c.start(&flags, &["sleep", "100000"]);
            Ok((c, *t))
        })
        .collect::<Result<_>>()?;
    // The sentry's keeper (exec'd programs are forked from it, docs/sentry.md): its memory.
    let keeper = running
        .iter()
        .find(|(_, t)| *t == Tier::Sentry)
        .and_then(|(c, _)| keeper_memory(c));
    let mut n_exec = 0;
    let exec = interleaved(&tiers, a.runs, |t| {
        n_exec += 1;
        let (c, _) = running
            .iter()
            .find(|(_, x)| *x == t)
            .context("no container")?;
        let out = strata_tests::cmd::run(
            c.exec_command(&format!("e{n_exec}"), &[], &["/bin/true"]),
            None,
            RUN_TIMEOUT,
        )?;
        if !out.success() {
            bail!("{}: {out}", t.label());
        }
        Ok(out.elapsed)
    })?;
    for (c, _) in &running {
        c.remove();
    }

    let med = |v: &Vec<Vec<Duration>>, t: Tier| {
        tiers
            .iter()
            .position(|x| *x == t)
            .map(|i| median(&mut v[i].clone()))
    };
    let cell = |v: &Vec<Vec<Duration>>, t: Tier| med(v, t).map(ms).unwrap_or_else(|| "-".into());
    let vs = |v: &Vec<Vec<Duration>>, a: Tier, b: Tier| match (med(v, a), med(v, b)) {
        (Some(x), Some(y)) => ratio(x, y),
        _ => "-".into(),
    };
    let spread = |v: &Vec<Vec<Duration>>, t: Tier| {
        tiers
            .iter()
            .position(|x| *x == t)
            .map(|i| {
                let mut s = v[i].clone();
                s.sort();
                format!("{} / {}", ms(s[0]), ms(s[s.len() - 1]))
            })
            .unwrap_or_else(|| "-".into())
    };
    let (n, s, rec, r) = (Tier::Native, Tier::Sentry, Tier::SentryRecord, Tier::Runsc);
    let runsc_note = match &runsc_error {
        None => format!(
            "runsc {} (`--network=none --platform={}`, through containerd-shim-runc-v2 `--runc-binary`)",
            first_line(RUNSC, &["--version"]),
            a.platform
        ),
        Some(e) => format!("**runsc could not run a container here**, so its columns are empty: {e}"),
    };
    let mut t = format!(
        "Measured {date} on {cpus} CPUs, kernel {kernel}; {containerd}; {runsc_note}; shim \
         built with the `{profile}` profile; median of {runs} interleaved runs each \
         (untrapped: {runs2} for native, the sentry and record mode); \
         workloads timed inside the container (busybox `time -p`, 10 ms resolution); tree of \
         {files} files. Record mode: the sentry on the built-in `record` policy (every call \
         trapped and audited, every open performed by the supervisor), allowed to be slower: \
         no target.\n\n\
         | | strata native | strata sentry | sentry, record mode | gVisor runsc | sentry / native | record / native | sentry / runsc | target |\n\
         |---|---|---|---|---|---|---|---|---|\n",
        date = first_line("date", &["-u"]),
        cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        kernel = first_line("uname", &["-r"]),
        containerd = first_line("containerd", &["--version"]),
        profile = shim_profile(h),
        runs = a.runs,
        runs2 = 2 * a.runs,
        files = a.files,
    );
    let rows = [
        (
            "`ctr run --rm` of /bin/true",
            &start,
            "sentry at most 0.5x runsc",
        ),
        (
            "untrapped: shell loop (600 000) + `dd` 300 000 x 4 KiB",
            &untrapped,
            "sentry at most 1.05x native",
        ),
        (
            "open-heavy: `find`, `stat` of every file, `tar` of the tree, 3 rounds",
            &open_heavy,
            "sentry at most 1.3x native (issue 13), faster than runsc",
        ),
        (
            "`ctr task exec` of /bin/true into a running container",
            &exec,
            "none (the keeper's cost: one more fork and two socket round trips)",
        ),
    ];
    for (label, v, target) in rows {
        t.push_str(&format!(
            "| {label} | {} | {} | {} | {} | {} | {} | {} | {target} |\n",
            cell(v, n),
            cell(v, s),
            cell(v, rec),
            cell(v, r),
            vs(v, s, n),
            vs(v, rec, n),
            vs(v, s, r),
        ));
        t.push_str(&format!(
            "| fastest / slowest | {} | {} | {} | {} | | | | |\n",
            spread(v, n),
            spread(v, s),
            spread(v, rec),
            spread(v, r),
        ));
    }
    t.push_str(&format!(
        "\nThe sentry container's keeper (one per container, docs/sentry.md): {}.\n",
        keeper.unwrap_or_else(|| "not found".into())
    ));
    // Native (index 0), sentry (1) and record mode (2) ran next to each other in every round.
    for (who, i) in [("sentry", 1), ("record-mode", 2)] {
        t.push_str(&format!("\nEach round's {who} run against the native run of the same round (median of the rounds' ratios, interquartile range):"));
        for (label, v) in [
            ("start", &start),
            ("untrapped", &untrapped),
            ("open-heavy", &open_heavy),
            ("exec", &exec),
        ] {
            let (m, lo, hi) = paired(&v[0], &v[i]);
            t.push_str(&format!(
                " {label} {m:.2}x ({lo:.2}-{hi:.2}x, {} rounds);",
                v[0].len().min(v[i].len())
            ));
        }
        t.pop();
        t.push_str(".\n");
    }
    Ok(t)
}

/// `--policy`: the open-heavy workload on native, the sentry's default policy and the given
/// policy, interleaved.
fn policy_open_heavy(b: &Bench<'_>, a: &Args, name: &str) -> Result<String> {
    let tiers = [Tier::Native, Tier::Sentry, Tier::SentryPolicy];
    eprintln!("open-heavy workload, {} runs, policy {name}", a.runs);
    let v = interleaved(&tiers, a.runs, |t| b.workload(t, OPEN_HEAVY))?;
    let mut t = format!(
        "Measured {date} on {cpus} CPUs, kernel {kernel}; shim built with the `{profile}` \
         profile; open-heavy workload (`find`, `stat` of every file, `tar` of the tree, 3 \
         rounds; tree of {files} files), median of {runs} interleaved runs.\n\n\
         | | strata native | sentry, default policy | sentry, policy `{name}` |\n|---|---|---|---|\n",
        date = first_line("date", &["-u"]),
        cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        kernel = first_line("uname", &["-r"]),
        profile = shim_profile(b.h),
        files = a.files,
        runs = a.runs,
    );
    let med: Vec<Duration> = v.iter().map(|x| median(&mut x.clone())).collect();
    t.push_str(&format!(
        "| median | {} | {} | {} |\n| ratio to native | 1.00x | {} | {} |\n",
        ms(med[0]),
        ms(med[1]),
        ms(med[2]),
        ratio(med[1], med[0]),
        ratio(med[2], med[0]),
    ));
    let (m1, lo1, hi1) = paired(&v[0], &v[1]);
    let (m2, lo2, hi2) = paired(&v[0], &v[2]);
    t.push_str(&format!(
        "| per round, to native (median, IQR) | | {m1:.2}x ({lo1:.2}-{hi1:.2}x) | {m2:.2}x ({lo2:.2}-{hi2:.2}x) |\n"
    ));
    Ok(t)
}

/// The ratios `b[i] / a[i]` of runs made in the same round: median, first and third quartile.
fn paired(a: &[Duration], b: &[Duration]) -> (f64, f64, f64) {
    let mut r: Vec<f64> = a
        .iter()
        .zip(b)
        .map(|(x, y)| y.as_secs_f64() / x.as_secs_f64().max(1e-9))
        .collect();
    r.sort_by(f64::total_cmp);
    let q = |f: f64| r[((r.len() - 1) as f64 * f).round() as usize];
    (q(0.5), q(0.25), q(0.75))
}
