//! The wasm tier's own start cost, without containerd: a module run exactly the way the shim
//! runs it ([`WasmBackend`]: task configuration from the spec into the bundle,
//! `strata-wasm-runner` as the native tier's creating helper, compiled module from the cache,
//! WASI linked, the task's container (namespaces, root, cgroup), start, exit reaped), create
//! to exit, interleaved with the bare wasmtime CLI
//! (`wasmtime run --allow-precompiled`, spawn to exit) on the same module. Run as root (it
//! makes cgroups), built with the profile the shim is installed with, so that the shim's side
//! is measured as it runs. Used by `scripts/bench-wasm`.
//!
//! `start_time RUNNER MODULE.wasm RUNS [WASMTIME_CLI]`: prints one JSON line of medians (ms):
//! `create`, `start_to_exit`, `total` (create to exit), `delete` (after the exit), `cli`.
//! MODULE must print `hello` and a newline.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata_backend::{Backend, BackendEvent, CreateOpts, StdioPaths};
use strata_wasm::WasmBackend;

fn median(v: &mut [Duration]) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e3
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        return Err("usage: start_time RUNNER MODULE.wasm RUNS [WASMTIME_CLI]".into());
    }
    let runner = PathBuf::from(&args[0]);
    let module = std::fs::read(&args[1])?;
    let runs: usize = args[2].parse()?;
    let cli = args.get(3).map(PathBuf::from);

    let tmp = std::env::temp_dir().join(format!("strata-start-time-{}", std::process::id()));
    let bundle = tmp.join("bundle");
    std::fs::create_dir_all(bundle.join("rootfs"))?;
    std::fs::write(bundle.join("rootfs/app.wasm"), &module)?;
    let cwasm = tmp.join("app.cwasm");
    if let Some(cli) = &cli {
        let st = Command::new(cli)
            .args(["compile", "-o"])
            .arg(&cwasm)
            .arg(bundle.join("rootfs/app.wasm"))
            .status()?;
        if !st.success() {
            return Err("wasmtime compile failed".into());
        }
    }
    let spec: oci_spec::runtime::Spec = serde_json::from_value(serde_json::json!({
        "ociVersion": "1.0.2",
        "root": { "path": "rootfs" },
        "process": { "args": ["/app.wasm"], "cwd": "/", "env": [], "user": { "uid": 0, "gid": 0 } },
        // As containerd's default spec (`ctr oci spec`): its mounts and namespaces, and a
        // device rule, so the cgroup's resources are applied.
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc",
              "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
              "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
            { "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
              "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
            { "destination": "/sys", "type": "sysfs", "source": "sysfs",
              "options": ["nosuid", "noexec", "nodev", "ro"] }
        ],
        "linux": {
            "namespaces": [
                { "type": "pid" }, { "type": "ipc" }, { "type": "uts" }, { "type": "mount" },
                { "type": "network" }
            ],
            "resources": { "devices": [ { "allow": false, "access": "rwm" } ] }
        },
    }))?;
    // The native tier's container (libcontainer) reads the spec from the bundle, as from
    // containerd's.
    std::fs::write(bundle.join("config.json"), serde_json::to_vec(&spec)?)?;
    let out = tmp.join("stdout");
    let (tx, rx) = mpsc::channel::<u32>();
    let tx = Mutex::new(tx);
    let backend = WasmBackend::new(
        &runner,
        tmp.join("state"),
        Arc::new(move |ev| {
            if let BackendEvent::Exited { status, .. } = ev {
                let _ = tx.lock().unwrap().send(status);
            }
        }),
    );
    let one = |i: usize| -> Result<(Duration, Duration, Duration), Box<dyn std::error::Error>> {
        let id = format!("start-time-{}-{i}", std::process::id());
        std::fs::write(&out, "")?;
        let t0 = Instant::now();
        backend.create(CreateOpts {
            id: id.clone(),
            bundle: bundle.clone(),
            spec: spec.clone(),
            stdio: StdioPaths {
                stdout: out.to_string_lossy().into_owned(),
                ..Default::default()
            },
            namespace: "strata-bench".into(),
            config_path: None,
            sandbox_id: id.clone(),
        })?;
        let t1 = Instant::now();
        backend.start(&id, None)?;
        let status = rx.recv_timeout(Duration::from_secs(30))?;
        let t2 = Instant::now();
        backend.delete(&id, None)?;
        let t3 = Instant::now();
        if status != 0 || std::fs::read(&out)? != b"hello\n" {
            return Err(format!(
                "the task exited {status} and printed {:?}",
                std::fs::read_to_string(&out)
            )
            .into());
        }
        Ok((t1 - t0, t2 - t1, t3 - t2))
    };
    // One run first: the cache entry exists afterwards (warm starts from here on).
    one(0)?;
    let (mut create, mut run, mut total, mut delete, mut bare) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 1..=runs {
        let (c, r, d) = one(i)?;
        create.push(c);
        run.push(r);
        total.push(c + r);
        delete.push(d);
        if let Some(cli) = &cli {
            bare.push(cli_run(cli, &cwasm)?);
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
    println!(
        "{}",
        serde_json::json!({
            "create": median(&mut create),
            "start_to_exit": median(&mut run),
            "total": median(&mut total),
            "delete": median(&mut delete),
            "cli": (!bare.is_empty()).then(|| median(&mut bare)),
        })
    );
    Ok(())
}

/// `wasmtime run --allow-precompiled CWASM`, spawn to exit. The backend's reaper reaps every
/// child of this process: it is held off meanwhile so that the exit stays the Command's.
fn cli_run(cli: &Path, cwasm: &Path) -> Result<Duration, Box<dyn std::error::Error>> {
    let _guard = strata_backend::reaper::Reaper::global().fork_guard();
    let t = Instant::now();
    let o = Command::new(cli)
        .args(["run", "--allow-precompiled"])
        .arg(cwasm)
        .output()?;
    let took = t.elapsed();
    if o.stdout != b"hello\n" {
        return Err(format!(
            "wasmtime run printed {:?}",
            String::from_utf8_lossy(&o.stdout)
        )
        .into());
    }
    Ok(took)
}
