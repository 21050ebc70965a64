//! `strata-bench-wasm`: the wasm tier's start latency and memory, on one private containerd.
//!
//! 1. `ctr run --rm` of a hello module on the wasm tier, cold (its compiled-module cache entry
//!    removed before each run) and warm, interleaved with the native tier running busybox
//!    `echo hello`, N runs each; medians.
//! 2. The bare engine: the wasmtime CLI (`wasmtime run --allow-precompiled` of the module
//!    precompiled by `wasmtime compile`) on the same module, if `wasmtime` is on PATH or in
//!    ~/.cargo/bin: the shim's cost above the engine is the ratio warm / CLI.
//! 3. Memory of a running wasm task: RSS and PSS of its shim process plus its runner process.
//! 4. The shim's share without containerd: the hello module run the way the shim runs it
//!    (`backends/wasm/examples/start_time.rs`, built with the shim's profile: `WasmBackend`
//!    with the shim's `strata-wasm-runner`), create to exit, interleaved with the bare CLI
//!    (`wasmtime run --allow-precompiled`) spawn to exit.
//!
//! 5. HTTP: the `wasi:http/proxy` hello component (`strata_tests::component::http_hello`)
//!    served by a wasm task (`ctr run -d`, host network, `WASMTIME_HTTP_PROXY_SOCKET_ADDR`)
//!    and by `wasmtime serve` on the same component, each loaded in turn (rounds interleaved)
//!    by the same client (`strata_tests::http::load`: 16 keep-alive clients, every body
//!    checked): requests per second and p50/p99 latency, as ratios.
//!
//! 6. With `STRATA_BENCH_WASM_BASELINE=DIR` (a directory holding an earlier build's
//!    `containerd-shim-strata-v2` and `strata-wasm-runner`, run through `ctr run --runtime
//!    DIR/containerd-shim-strata-v2`): the same cold and warm runs on that build, interleaved
//!    with the others, and the ratios of this build to it.
//!
//! `strata-bench-wasm [--runs N] [--write FILE]`: prints the figures; with `--write` also puts
//! them into FILE (docs/benchmarks.md) between its wasm result markers.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;

use strata_tests::bench::{median, ms, start_harness, write_results};
use strata_tests::daemon::pids_with_cmdline;
use strata_tests::Harness;
use strata_tests::{component, http};

const STRATA: &str = "io.containerd.strata.v2";
const BEGIN: &str = "<!-- bench-wasm:begin -->";
const END: &str = "<!-- bench-wasm:end -->";
const CACHE_DIR: &str = "/var/cache/strata/wasm";

const HELLO: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "hello\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 6))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

/// Sleeps 600 s in poll_oneoff (one relative clock subscription at 0, event out at 64).
const SLEEPER: &str = r#"(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (i64.store (i32.const 0) (i64.const 1))
    (i32.store8 (i32.const 8) (i32.const 0))
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const 600000000000))
    (i64.store (i32.const 32) (i64.const 0))
    (i32.store16 (i32.const 40) (i32.const 0))
    (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))))"#;

fn msf(ms: f64) -> String {
    format!("{ms:.1} ms")
}

fn hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Removes every cache entry of the module with digest `digest`.
fn drop_cache_entries(digest: &str) {
    if let Ok(rd) = std::fs::read_dir(CACHE_DIR) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(digest) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// A `ctr run --rm` of `wasm` on the wasm tier, by this build's shim or by the shim binary
/// `shim` (`--runtime PATH`).
fn run_wasm(h: &Harness, wasm: &[u8], shim: Option<&Path>) -> Result<Duration> {
    let mut c = h.container("wbench");
    if let Some(shim) = shim {
        c.runtime = shim.display().to_string();
    }
    let mut spec = c.spec(&["/app.wasm"]);
    let root = PathBuf::from(spec["root"]["path"].as_str().context("spec root")?);
    std::fs::write(root.join("app.wasm"), wasm)?;
    spec["annotations"] = serde_json::json!({ "strata.dev/backend": "wasm" });
    let out = c.run_spec(&spec, &[]);
    if !out.success() || out.stdout != "hello\n" {
        bail!("wasm run: {out}");
    }
    Ok(out.elapsed)
}

fn run_native(h: &Harness) -> Result<Duration> {
    let c = h.container("nbench");
    let out = c.run(&["echo", "hello"]);
    if !out.success() {
        bail!("native run: {out}");
    }
    Ok(out.elapsed)
}

/// The wasmtime CLI: `$STRATA_WASMTIME_CLI`, else on PATH, in ~/.cargo/bin, or where
/// scripts/bench-wasm installs it (/var/cache/strata/tools/bin).
fn wasmtime_cli() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("STRATA_WASMTIME_CLI") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let candidates = std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|d| Path::new(d).join("wasmtime"))
        .chain([
            Path::new(&home).join(".cargo/bin/wasmtime"),
            PathBuf::from("/var/cache/strata/tools/bin/wasmtime"),
        ])
        .collect::<Vec<_>>();
    candidates.into_iter().find(|p| p.is_file())
}

/// Starts `wasm` as /app.wasm of a wasm task in the background (`ctr run -d --config`),
/// its spec first changed by `edit`; returns the container and its spec file.
fn start_wasm_task<'h>(
    h: &'h Harness,
    name: &str,
    wasm: &[u8],
    edit: impl FnOnce(&mut serde_json::Value),
) -> Result<(strata_tests::Container<'h>, PathBuf)> {
    let c = h.container(name);
    let mut spec = c.spec(&["/app.wasm"]);
    let root = PathBuf::from(spec["root"]["path"].as_str().context("spec root")?);
    std::fs::write(root.join("app.wasm"), wasm)?;
    spec["annotations"] = serde_json::json!({ "strata.dev/backend": "wasm" });
    edit(&mut spec);
    let path = h.info.state.join(format!("{}.json", c.id));
    std::fs::write(&path, serde_json::to_vec(&spec)?)?;
    let out = h.ctr_run(&[
        "run",
        "-d",
        "--runtime",
        STRATA,
        "--config",
        &path.to_string_lossy(),
        &c.id,
    ]);
    if !out.success() {
        bail!("starting the wasm task {name}: {out}");
    }
    Ok((c, path))
}

/// A free port on 127.0.0.1.
fn free_addr() -> Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// What one server gave over every round.
#[derive(Default)]
struct Served {
    requests: usize,
    elapsed: Duration,
    p50: Vec<Duration>,
    p99: Vec<Duration>,
}

impl Served {
    fn add(&mut self, l: &http::Load) -> Result<()> {
        if l.right != l.requests {
            bail!("wrong answers: {:?}", l.first_wrong);
        }
        self.requests += l.requests;
        self.elapsed += l.elapsed;
        self.p50.push(l.p50);
        self.p99.push(l.p99);
        Ok(())
    }

    fn per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

/// The hello component served by a wasm task and, where the CLI is installed, by `wasmtime
/// serve`, `rounds` rounds of `requests` requests from 16 clients each, interleaved.
fn bench_http(
    h: &Harness,
    rounds: usize,
    requests: usize,
) -> Result<(Served, Option<(String, Served)>)> {
    const CLIENTS: usize = 16;
    let wasm = component::http_hello();
    let strata_addr = free_addr()?;
    let (c, path) = start_wasm_task(h, "whttp", &wasm, |spec| {
        spec["process"]["env"] =
            serde_json::json!([format!("WASMTIME_HTTP_PROXY_SOCKET_ADDR={strata_addr}")]);
        if let Some(ns) = spec["linux"]["namespaces"].as_array_mut() {
            ns.retain(|ns| ns["type"] != "network");
        }
    })?;
    if !http::wait_for(strata_addr, Duration::from_secs(30)) {
        bail!("the wasm task serves nothing on {strata_addr}");
    }
    let mut cli = match wasmtime_cli() {
        Some(cli) => {
            let tmp =
                std::env::temp_dir().join(format!("strata-bench-http-{}", std::process::id()));
            std::fs::create_dir_all(&tmp)?;
            std::fs::write(tmp.join("hello-http.wasm"), &wasm)?;
            let addr = free_addr()?;
            let child = Command::new(&cli)
                .args(["serve", "--addr", &addr.to_string()])
                .arg(tmp.join("hello-http.wasm"))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()?;
            if !http::wait_for(addr, Duration::from_secs(60)) {
                bail!("wasmtime serve serves nothing on {addr}");
            }
            let version = strata_tests::bench::first_line(&cli.to_string_lossy(), &["--version"]);
            Some((child, addr, version, tmp))
        }
        None => None,
    };
    let (mut strata, mut peer) = (Served::default(), Served::default());
    // A warm-up round each, not counted.
    http::load(
        strata_addr,
        CLIENTS,
        requests / 4,
        component::http_hello_body,
    );
    if let Some((_, addr, ..)) = &cli {
        http::load(*addr, CLIENTS, requests / 4, component::http_hello_body);
    }
    for _ in 0..rounds {
        strata.add(&http::load(
            strata_addr,
            CLIENTS,
            requests,
            component::http_hello_body,
        ))?;
        if let Some((_, addr, ..)) = &cli {
            peer.add(&http::load(
                *addr,
                CLIENTS,
                requests,
                component::http_hello_body,
            ))?;
        }
    }
    let _ = c.kill("SIGKILL");
    c.remove();
    let _ = std::fs::remove_file(&path);
    let peer = match cli.take() {
        Some((mut child, _, version, tmp)) => {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_dir_all(&tmp);
            Some((version, peer))
        }
        None => None,
    };
    Ok((strata, peer))
}

fn smaps(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0u64)
    };
    (field("Rss:"), field("Pss:"))
}

/// Medians (ms) of the shim's share, from `start_time` (backends/wasm/examples).
#[derive(serde::Deserialize)]
struct Share {
    /// create: spawn to the runner's "ready" (module loaded from the cache, linked).
    create: f64,
    /// start to the exit being reaped and reported.
    start_to_exit: f64,
    /// create to exit: what the bare CLI's spawn to exit compares with.
    total: f64,
    /// delete after the exit (cgroup removal), not part of the CLI's figure.
    delete: f64,
    cli: Option<f64>,
}

/// Runs the `start_time` example (built by scripts/bench-wasm with the shim's profile) on
/// `hello`, interleaved with the CLI when there is one.
fn shim_share(
    tool: &Path,
    runner: &Path,
    cli: Option<&Path>,
    hello: &[u8],
    runs: usize,
) -> Result<Share> {
    let module =
        std::env::temp_dir().join(format!("strata-bench-hello-{}.wasm", std::process::id()));
    std::fs::write(&module, hello)?;
    let mut cmd = Command::new(tool);
    cmd.arg(runner).arg(&module).arg(runs.to_string());
    if let Some(cli) = cli {
        cmd.arg(cli);
    }
    let out = cmd
        .output()
        .with_context(|| format!("running {}", tool.display()))?;
    let _ = std::fs::remove_file(&module);
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            tool.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout)
        .with_context(|| format!("parsing {}", String::from_utf8_lossy(&out.stdout)))
}

fn main() -> Result<()> {
    let mut runs = 20usize;
    let mut write: Option<PathBuf> = None;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--runs" => runs = it.next().context("--runs N")?.parse()?,
            "--write" => write = Some(it.next().context("--write FILE")?.into()),
            _ => bail!("usage: strata-bench-wasm [--runs N] [--write FILE]"),
        }
    }
    let hello = wat::parse_str(HELLO)?;
    let digest = hex(&hello);
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("the binary's directory")?;
    let h = start_harness()?;

    let baseline = std::env::var_os("STRATA_BENCH_WASM_BASELINE")
        .map(|d| PathBuf::from(d).join("containerd-shim-strata-v2"));
    run_native(&h)?;
    run_wasm(&h, &hello, None)?;
    if let Some(b) = &baseline {
        run_wasm(&h, &hello, Some(b))?;
    }
    let (mut cold, mut warm, mut native) = (Vec::new(), Vec::new(), Vec::new());
    let (mut cold_base, mut warm_base) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        drop_cache_entries(&digest);
        cold.push(run_wasm(&h, &hello, None)?);
        warm.push(run_wasm(&h, &hello, None)?);
        if let Some(b) = &baseline {
            drop_cache_entries(&digest);
            cold_base.push(run_wasm(&h, &hello, Some(b))?);
            warm_base.push(run_wasm(&h, &hello, Some(b))?);
        }
        native.push(run_native(&h)?);
    }
    let (cm, wm, nm) = (median(&mut cold), median(&mut warm), median(&mut native));
    let baseline_rows = match &baseline {
        Some(b) if !cold_base.is_empty() => {
            let (cb, wb) = (median(&mut cold_base), median(&mut warm_base));
            format!(
                "| `ctr run --rm` hello, cold, the earlier build ({dir}) | {cb} | this build / earlier, cold: {cr:.2}x | |\n\
                 | `ctr run --rm` hello, warm, the earlier build | {wb} | this build / earlier, warm: {wr:.2}x | warm at most 1.1x the earlier |\n",
                dir = b.parent().unwrap_or(b).display(),
                cb = ms(cb),
                wb = ms(wb),
                cr = cm.as_secs_f64() / cb.as_secs_f64(),
                wr = wm.as_secs_f64() / wb.as_secs_f64(),
            )
        }
        _ => String::new(),
    };

    // The bare engine on the same module, precompiled (the counterpart of a warm cache).
    let cli = wasmtime_cli().map(|cli| -> Result<(String, Duration)> {
        let tmp = std::env::temp_dir().join(format!("strata-bench-wasm-{}", std::process::id()));
        std::fs::create_dir_all(&tmp)?;
        std::fs::write(tmp.join("hello.wasm"), &hello)?;
        let st = Command::new(&cli)
            .args(["compile", "-o"])
            .arg(tmp.join("hello.cwasm"))
            .arg(tmp.join("hello.wasm"))
            .status()?;
        if !st.success() {
            bail!("wasmtime compile failed");
        }
        let mut t = Vec::new();
        for _ in 0..runs.max(5) {
            let start = Instant::now();
            let out = Command::new(&cli)
                .args(["run", "--allow-precompiled"])
                .arg(tmp.join("hello.cwasm"))
                .output()?;
            t.push(start.elapsed());
            if out.stdout != b"hello\n" {
                bail!(
                    "wasmtime run printed {:?}",
                    String::from_utf8_lossy(&out.stdout)
                );
            }
        }
        let _ = std::fs::remove_dir_all(&tmp);
        let version = Command::new(&cli)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        Ok((version, median(&mut t)))
    });
    let cli = cli.transpose()?;

    // Memory of a running task: its shim plus its runner.
    let sleeper = wat::parse_str(SLEEPER)?;
    let (c, path) = start_wasm_task(&h, "wmem", &sleeper, |_| {})?;
    std::thread::sleep(Duration::from_secs(2));
    let shim = pids_with_cmdline(&format!("-id {} ", c.id))
        .into_iter()
        .find(|(_, cmd)| cmd.contains("containerd-shim-strata-v2"))
        .map(|(p, _)| p)
        .context("the task's shim")?;
    let runner = c.pid().context("the task's pid")?;
    let (srss, spss) = smaps(shim);
    let (rrss, rpss) = smaps(runner);
    let _ = c.kill("SIGKILL");
    c.remove();
    let _ = std::fs::remove_file(&path);
    let (served, peer) = bench_http(&h, runs.clamp(3, 10), 2000)?;
    h.stop();

    // The shim's share without containerd, with the shim's own build of the wasm tier: a run
    // takes milliseconds, so many more of them, for medians that hold on a busy machine.
    let share_runs = runs * 10;
    let shim_dir = std::env::var_os("STRATA_SHIM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.to_path_buf());
    // scripts/bench-wasm names it: the installed shim's directory holds no examples.
    let start_time = std::env::var_os("STRATA_WASM_START_TIME")
        .map(PathBuf::from)
        .unwrap_or_else(|| shim_dir.join("examples/start_time"));
    let share = shim_share(
        &start_time,
        &shim_dir.join("strata-wasm-runner"),
        wasmtime_cli().as_deref(),
        &hello,
        share_runs,
    )?;

    let mib = |kib: u64| kib as f64 / 1024.0;
    let cli_rows = match &cli {
        Some((v, t)) => format!(
            "| bare engine: `wasmtime run --allow-precompiled` ({v}), median of {n} | {t} | warm / CLI: {ratio:.2}x | warm at most 1.5x the CLI |\n",
            n = runs.max(5),
            t = ms(*t),
            ratio = wm.as_secs_f64() / t.as_secs_f64(),
        ),
        None => "| bare engine: wasmtime CLI | not installed (`cargo install wasmtime-cli`) | | warm at most 1.5x the CLI |\n".into(),
    };
    let share_rows = format!(
        "| shim's share without containerd: `WasmBackend` create → exit of the same module, warm (create {c} + start to exit {r}; delete after it {d}), median of {share_runs} | {t} | {ratio} | at most 1.5x the CLI |\n",
        c = msf(share.create),
        r = msf(share.start_to_exit),
        d = msf(share.delete),
        t = msf(share.total),
        ratio = match share.cli {
            Some(cli) => format!(
                "/ CLI, interleaved ({}): {:.2}x",
                msf(cli),
                share.total / cli
            ),
            None => "CLI not installed".into(),
        },
    );
    let p = |v: &mut Vec<Duration>| median(v);
    let mut served = served;
    let (s50, s99) = (p(&mut served.p50), p(&mut served.p99));
    let http_rows = match peer {
        Some((version, mut peer)) => {
            let (w50, w99) = (p(&mut peer.p50), p(&mut peer.p99));
            format!(
                "| HTTP: hello `wasi:http/proxy` component, 16 keep-alive clients, {n} requests | Strata {sr:.0}/s, p50 {s50}, p99 {s99} | requests/s Strata / `wasmtime serve`: {rr:.2}x; p99 {pr:.2}x | at least 0.8x its requests/s |\n\
                 | HTTP: the same component under `wasmtime serve` ({version}), interleaved | {wr:.0}/s, p50 {w50}, p99 {w99} | | |\n",
                n = served.requests,
                sr = served.per_second(),
                s50 = msf(s50.as_secs_f64() * 1e3),
                s99 = msf(s99.as_secs_f64() * 1e3),
                rr = served.per_second() / peer.per_second(),
                pr = s99.as_secs_f64() / w99.as_secs_f64(),
                wr = peer.per_second(),
                w50 = msf(w50.as_secs_f64() * 1e3),
                w99 = msf(w99.as_secs_f64() * 1e3),
            )
        }
        None => format!(
            "| HTTP: hello `wasi:http/proxy` component, 16 keep-alive clients, {n} requests | Strata {sr:.0}/s, p50 {s50}, p99 {s99} | `wasmtime serve` not installed (scripts/bench-wasm installs it) | at least 0.8x its requests/s |\n",
            n = served.requests,
            sr = served.per_second(),
            s50 = msf(s50.as_secs_f64() * 1e3),
            s99 = msf(s99.as_secs_f64() * 1e3),
        ),
    };
    let results = format!(
        "Measured {date}, {runs} interleaved runs each.\n\n\
         | | median | ratio | target |\n\
         |---|---|---|---|\n\
         | `ctr run --rm` hello, wasm tier, cold (cache entry removed) | {cold} | cold / native: {cr:.2}x | |\n\
         | `ctr run --rm` hello, wasm tier, warm (cached compiled module) | {warm} | warm / native: {wr:.2}x | |\n\
         | `ctr run --rm` busybox `echo hello`, native tier | {native} | | |\n\
         {baseline_rows}\
         {cli_rows}\
         {share_rows}\
         {http_rows}\
         | running wasm task: shim + runner RSS | {rss:.1} MiB (shim {srss:.1} + runner {rrss:.1}) | | at most 15 MiB per task |\n\
         | running wasm task: shim + runner PSS | {pss:.1} MiB (shim {spss:.1} + runner {rpss:.1}) | | |\n",
        date = String::from_utf8_lossy(&Command::new("date").arg("-u").output()?.stdout).trim(),
        cold = ms(cm),
        warm = ms(wm),
        native = ms(nm),
        cr = cm.as_secs_f64() / nm.as_secs_f64(),
        wr = wm.as_secs_f64() / nm.as_secs_f64(),
        rss = mib(srss + rrss),
        srss = mib(srss),
        rrss = mib(rrss),
        pss = mib(spss + rpss),
        spss = mib(spss),
        rpss = mib(rpss),
    );
    println!("{results}");
    if let Some(path) = write {
        write_results(&path, BEGIN, END, &results)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
