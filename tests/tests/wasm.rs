//! The wasm tier through containerd: modules written in WAT (the `wat` crate) placed as
//! `/app.wasm` in the container's own copy of the busybox rootfs, run with
//! `strata.dev/backend=wasm`. Every test ends by checking that nothing of its container is
//! left (processes, cgroups, mounts, state).
//!
//! Strata-only: runc cannot run WebAssembly.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use strata_tests::component::{self, Peer};
use strata_tests::harness::{Container, CTR_TIMEOUT};
use strata_tests::pty::PtyChild;
use strata_tests::wasi::{self, module, put_module, rootfs, spawn_spec};
use strata_tests::{cgroups, cmd, harness, strata_only, Output};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Prints `text` on fd `fd`, then exits with `code`.
fn print_and_exit(fd: u32, text: &str, code: i32) -> Vec<u8> {
    module(&format!(
        r#"(data (i32.const 1024) "{text}")
           (func (export "_start")
             (call $write (i32.const {fd}) (i32.const 1024) (i32.const {len}))
             (call $exit (i32.const {code})))"#,
        len = text.len(),
        text = text.replace('\n', "\\n"),
    ))
}

/// Writes its argv and environ buffers (NUL-separated) to stdout with `|` between.
fn dump_args_env() -> Vec<u8> {
    module(
        r#"(data (i32.const 16) "|")
           (func (export "_start") (local $n i32)
             (drop (call $args_sizes (i32.const 100) (i32.const 104)))
             (drop (call $args_get (i32.const 2048) (i32.const 4096)))
             (call $write (i32.const 1) (i32.const 4096) (i32.load (i32.const 104)))
             (call $write (i32.const 1) (i32.const 16) (i32.const 1))
             (drop (call $env_sizes (i32.const 100) (i32.const 104)))
             (drop (call $env_get (i32.const 2048) (i32.const 8192)))
             (call $write (i32.const 1) (i32.const 8192) (i32.load (i32.const 104))))"#,
    )
}

/// Opens `path` relative to preopen `dirfd`; reads it to stdout (`write` false) or creates it
/// and writes `wrote\n` (`write` true). Exits with the WASI errno of a failed open.
fn file_op(dirfd: u32, path: &str, write: bool) -> Vec<u8> {
    let (oflags, rights) = if write { (1 | 8, 64) } else { (0, 2) };
    let action = if write {
        "(call $write (i32.load (i32.const 200)) (i32.const 300) (i32.const 6))"
    } else {
        r#"(i32.store (i32.const 20) (i32.const 4096))
           (i32.store (i32.const 24) (i32.const 4000))
           (drop (call $fd_read (i32.load (i32.const 200)) (i32.const 20) (i32.const 1) (i32.const 28)))
           (call $write (i32.const 1) (i32.const 4096) (i32.load (i32.const 28)))"#
    };
    module(&format!(
        r#"(data (i32.const 1024) "{path}")
           (data (i32.const 300) "wrote\n")
           (func (export "_start") (local $e i32)
             (local.set $e (call $path_open (i32.const {dirfd}) (i32.const 0) (i32.const 1024)
               (i32.const {len}) (i32.const {oflags}) (i64.const {rights}) (i64.const {rights})
               (i32.const 0) (i32.const 200)))
             (if (local.get $e) (then (call $exit (local.get $e))))
             {action}
             (call $exit (i32.const 0)))"#,
        len = path.len(),
    ))
}

/// Spins forever.
fn spin() -> Vec<u8> {
    module(r#"(func (export "_start") (loop $l (br $l)))"#)
}

/// A module with a unique data segment, so that its digest (its cache entry) is its own.
fn unique_hello(tag: &str) -> Vec<u8> {
    module(&format!(
        r#"(data (i32.const 1024) "cached {tag}\n")
           (func (export "_start") (call $write (i32.const 1) (i32.const 1024) (i32.const {len})))"#,
        len = "cached \n".len() + tag.len()
    ))
}

/// A spec running `args` on the wasm tier with `wasm` as /app.wasm in the rootfs.
fn wasm_spec(c: &Container, wasm: &[u8], args: &[&str]) -> Value {
    let mut spec = c.spec(args);
    put_module(&spec, "/app.wasm", wasm);
    spec["annotations"] = json!({ "strata.dev/backend": "wasm" });
    spec
}

fn cache_dir() -> PathBuf {
    PathBuf::from(
        std::env::var("STRATA_WASM_CACHE_DIR").unwrap_or_else(|_| "/var/cache/strata/wasm".into()),
    )
}

fn sha256_hex(data: &[u8]) -> String {
    let out = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut ch| {
            use std::io::Write;
            ch.stdin.take().unwrap().write_all(data)?;
            ch.wait_with_output()
        })
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The cache entries of a module.
fn cache_entries(wasm: &[u8]) -> Vec<PathBuf> {
    let prefix = format!("{}-", sha256_hex(wasm));
    std::fs::read_dir(cache_dir())
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .map(|n| n.to_string_lossy().starts_with(&prefix))
                        .unwrap_or(false)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn assert_fails_with(out: &Output, needle: &str) {
    assert!(!out.success(), "expected a failure: {out}");
    assert!(
        out.stderr.contains(needle),
        "the error should say {needle:?}: {out}"
    );
}

#[test]
fn wasm_hello_stdout_and_stderr() {
    let h = harness!();
    strata_only!(h);
    let c = h.container("wasm-hello");
    let spec = wasm_spec(
        &c,
        &print_and_exit(1, "hello from wasm\n", 0),
        &["/app.wasm"],
    );
    let out = c.run_spec(&spec, &[]);
    assert!(out.success(), "{out}\n{}", c.log());
    assert_eq!(out.stdout, "hello from wasm\n");
    let c2 = h.container("wasm-stderr");
    let spec = wasm_spec(&c2, &print_and_exit(2, "to stderr\n", 0), &["/app.wasm"]);
    let out = c2.run_spec(&spec, &[]);
    assert!(out.success(), "{out}");
    assert_eq!(
        (out.stdout.as_str(), out.stderr.as_str()),
        ("", "to stderr\n")
    );
    c.remove_and_check();
    c2.remove_and_check();
}

#[test]
fn wasm_exit_codes_pass_through() {
    let h = harness!();
    strata_only!(h);
    // proc_exit takes 0..=125 (as in the wasmtime CLI, larger values are a trap).
    for code in [0, 3, 125] {
        let c = h.container("wasm-exit");
        let spec = wasm_spec(&c, &print_and_exit(1, "x", code), &["/app.wasm"]);
        let out = c.run_spec(&spec, &[]);
        assert_eq!(out.code, code, "{out}\n{}", c.log());
        c.remove_and_check();
    }
}

#[test]
fn wasm_args_and_env() {
    let h = harness!();
    strata_only!(h);
    let c = h.container("wasm-args");
    let mut spec = wasm_spec(&c, &dump_args_env(), &["/app.wasm", "one", "two words"]);
    spec["process"]["env"] = json!(["GREETING=hi there", "EMPTY="]);
    let out = c.run_spec(&spec, &[]);
    assert!(out.success(), "{out}\n{}", c.log());
    assert_eq!(
        out.stdout.replace('\0', ";"),
        "/app.wasm;one;two words;|GREETING=hi there;EMPTY=;"
    );
    c.remove_and_check();
}

#[test]
fn wasm_named_export() {
    let h = harness!();
    strata_only!(h);
    let c = h.container("wasm-export");
    let wasm = module(
        r#"(data (i32.const 1024) "other export\n")
           (func (export "_start") (call $exit (i32.const 9)))
           (func (export "other") (call $write (i32.const 1) (i32.const 1024) (i32.const 13)))"#,
    );
    let spec = wasm_spec(&c, &wasm, &["/app.wasm#other"]);
    let out = c.run_spec(&spec, &[]);
    assert!(out.success(), "{out}\n{}", c.log());
    assert_eq!(out.stdout, "other export\n");
    c.remove_and_check();
}

#[test]
fn wasm_reads_a_rootfs_file() {
    let h = harness!();
    strata_only!(h);
    let c = h.container("wasm-read");
    // Preopen 3 is the rootfs, as `/`.
    let spec = wasm_spec(&c, &file_op(3, "etc/greeting", false), &["/app.wasm"]);
    std::fs::write(rootfs(&spec).join("etc/greeting"), "read from the rootfs\n").unwrap();
    let out = c.run_spec(&spec, &[]);
    assert!(out.success(), "{out}\n{}", c.log());
    assert_eq!(out.stdout, "read from the rootfs\n");
    c.remove_and_check();
}

#[test]
fn wasm_writes_to_a_mount_and_a_read_only_mount_is_refused() {
    let h = harness!();
    strata_only!(h);
    let base = h.info.state.join(format!(
        "wasm-mounts-{}",
        SEQ.fetch_add(1, Ordering::SeqCst)
    ));
    let (rw, ro) = (base.join("rw"), base.join("ro"));
    std::fs::create_dir_all(&rw).unwrap();
    std::fs::create_dir_all(&ro).unwrap();
    let mounts = |spec: &mut Value| {
        let m = spec["mounts"].as_array_mut().unwrap();
        m.push(json!({"destination": "/out", "type": "bind", "source": rw, "options": ["rbind", "rw"]}));
        m.push(
            json!({"destination": "/ro", "type": "bind", "source": ro, "options": ["rbind", "ro"]}),
        );
    };
    // Preopens: 3 is `/`, 4 is /out, 5 is /ro.
    let c = h.container("wasm-mount-rw");
    let mut spec = wasm_spec(&c, &file_op(4, "f.txt", true), &["/app.wasm"]);
    mounts(&mut spec);
    let out = c.run_spec(&spec, &[]);
    assert!(out.success(), "{out}\n{}", c.log());
    assert_eq!(
        std::fs::read_to_string(rw.join("f.txt")).unwrap(),
        "wrote\n"
    );
    c.remove_and_check();

    let c = h.container("wasm-mount-ro");
    let mut spec = wasm_spec(&c, &file_op(5, "f.txt", true), &["/app.wasm"]);
    mounts(&mut spec);
    let out = c.run_spec(&spec, &[]);
    // The exit status is the WASI errno of the open: 69 is `rofs`, the kernel's EROFS of the
    // runner's read-only bind mount (not 63, `perm`, of a preopen without write permission).
    assert_eq!(
        out.code,
        69,
        "writing to a read-only mount: {out}\n{}",
        c.log()
    );
    assert!(
        !ro.join("f.txt").exists(),
        "the read-only mount was written"
    );
    c.remove_and_check();
    let _ = std::fs::remove_dir_all(&base);
}

/// `readonlyRootfs`: a module writing into its root filesystem gets the kernel's EROFS, as
/// under runc (critest's ReadOnlyRootfs spec reads `touch`'s message), not WASI's EPERM of a
/// preopen without write permission; with a writable rootfs the same command creates the file.
/// Nothing of the runner's read-only bind mount is left in the host's mount table.
#[test]
fn wasm_read_only_rootfs_write_is_erofs() {
    use strata_tests::wasi::contest_module;

    let h = harness!();
    strata_only!(h);
    for readonly in [true, false] {
        let c = h.container("wasm-rofs");
        // The contest in applet mode (argv[0] `touch`), at /wasm/touch: busybox's own
        // /bin/touch stays as it is.
        let mut spec = c.spec(&["/wasm/touch", "/created"]);
        std::fs::create_dir_all(rootfs(&spec).join("wasm")).unwrap();
        put_module(&spec, "/wasm/touch", contest_module());
        spec["annotations"] = json!({ "strata.dev/backend": "wasm" });
        spec["root"]["readonly"] = json!(readonly);
        let root = rootfs(&spec);
        let out = c.run_spec(&spec, &[]);
        if readonly {
            assert_eq!(
                (out.code, out.stderr.as_str()),
                (1, "touch: /created: Read-only file system\n"),
                "{out}\n{}",
                c.log()
            );
            assert!(
                !root.join("created").exists(),
                "the read-only rootfs was written"
            );
        } else {
            assert!(out.success(), "{out}\n{}", c.log());
            assert!(root.join("created").is_file(), "touch made no file: {out}");
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !mounts.contains(&*root.to_string_lossy()),
            "the runner's mount of {} leaked into the host:\n{mounts}",
            root.display()
        );
        c.remove_and_check();
    }
}

/// A bare argv[0] is looked up in the spec's PATH inside the rootfs (as runc and runwasi do),
/// by the ELF check and the wasm tier alike: a module only at /bin/NAME runs as `NAME`. A bare
/// name on no directory of PATH fails, and the error names the PATH it was looked up in.
#[test]
fn wasm_bare_argv0_is_looked_up_in_path() {
    let h = harness!();
    strata_only!(h);
    let c = h.container("wasm-path");
    let mut spec = c.spec(&["strata-hello", "arg"]);
    put_module(&spec, "/bin/strata-hello", &dump_args_env());
    spec["annotations"] = json!({ "strata.dev/backend": "wasm" });
    spec["process"]["env"] = json!(["PATH=/usr/local/bin:/usr/bin:/bin"]);
    let out = c.run_spec(&spec, &[]);
    assert!(out.success(), "{out}\n{}", c.log());
    assert_eq!(
        out.stdout,
        "strata-hello\0arg\0|PATH=/usr/local/bin:/usr/bin:/bin\0"
    );
    c.remove_and_check();

    // On disk, but not on PATH (nor taken from the cwd, /bin).
    let c = h.container("wasm-nopath");
    let mut spec = c.spec(&["strata-hello"]);
    put_module(&spec, "/bin/strata-hello", &dump_args_env());
    spec["annotations"] = json!({ "strata.dev/backend": "wasm" });
    spec["process"]["env"] = json!(["PATH=/usr/local/bin:/usr/bin"]);
    spec["process"]["cwd"] = json!("/bin");
    let out = c.run_spec(&spec, &[]);
    assert_fails_with(
        &out,
        "the module strata-hello (looked up in PATH=/usr/local/bin:/usr/bin) does not exist",
    );
    c.remove_and_check();
}

#[test]
fn wasm_trap_is_a_nonzero_exit_with_the_message() {
    let h = harness!();
    strata_only!(h);
    let c = h.container("wasm-trap");
    let spec = wasm_spec(
        &c,
        &module(r#"(func (export "_start") unreachable)"#),
        &["/app.wasm"],
    );
    let out = c.run_spec(&spec, &[]);
    assert_eq!(out.code, 134, "{out}\n{}", c.log());
    assert!(out.stderr.contains("unreachable"), "{out}");
    c.remove_and_check();
}

fn kill_within(signal: &str, want: i32) {
    let h = harness!();
    strata_only!(h);
    let c = h.container("wasm-spin");
    let spec = wasm_spec(&c, &spin(), &["/app.wasm"]);
    let (bg, path) = spawn_spec(&c, &spec);
    assert!(
        c.wait_status("RUNNING", Duration::from_secs(30)),
        "never ran\n{}",
        c.log()
    );
    // It really spins: let it burn CPU for a moment.
    std::thread::sleep(Duration::from_millis(300));
    let took = assert_ends_within_a_second(&c, bg, path, signal, want);
    eprintln!("{signal}: the spinning module was gone after {took:?}");
}

/// Sends `signal` to the running task `c` (started by `spawn_spec`, whose spec file is
/// `path`), asserts that `ctr run` ends with `want` within a second, then removes the container
/// and checks that nothing is left. Returns how long the task took to end.
fn assert_ends_within_a_second(
    c: &Container,
    bg: cmd::Background,
    path: PathBuf,
    signal: &str,
    want: i32,
) -> Duration {
    let t = Instant::now();
    let k = c.kill(signal);
    assert!(k.success(), "{k}");
    let out = bg.wait(CTR_TIMEOUT);
    let took = t.elapsed();
    assert_eq!(out.code, want, "{out}\n{}", c.log());
    assert!(took < Duration::from_secs(1), "{signal} took {took:?}");
    let _ = std::fs::remove_file(path);
    c.remove_and_check();
    took
}

#[test]
fn wasm_sigkill_stops_an_infinite_loop_within_a_second() {
    kill_within("SIGKILL", 137);
}

#[test]
fn wasm_sigterm_interrupts_an_infinite_loop_within_a_second() {
    kill_within("SIGTERM", 143);
}

/// SIGINT takes the same path as SIGTERM (epoch interruption), and the runner dies of SIGINT
/// itself: 130, as a process that does not catch it.
#[test]
fn wasm_sigint_interrupts_an_infinite_loop_within_a_second() {
    kill_within("SIGINT", 130);
}

#[test]
fn wasm_pids_and_stats_come_from_its_own_cgroup() {
    let h = harness!();
    strata_only!(h);
    let c = h.container("wasm-stats");
    let mut spec = wasm_spec(&c, &spin(), &["/app.wasm"]);
    spec["linux"]["resources"]["memory"] = json!({ "limit": 256u64 << 20 });
    let (bg, path) = spawn_spec(&c, &spec);
    assert!(
        c.wait_status("RUNNING", Duration::from_secs(30)),
        "never ran\n{}",
        c.log()
    );
    let pid = c.pid().expect("task pid");
    assert_eq!(c.pids().unwrap(), vec![pid]);
    let dir = cgroups::cgroup_dir(pid, "memory").expect("the task has a memory cgroup");
    assert!(
        dir.to_string_lossy().contains(&c.id),
        "cgroup {} is not the task's own",
        dir.display()
    );
    assert_eq!(cgroups::memory_limit(pid), Some(256 << 20));
    let m = c.metrics().unwrap();
    let usage = cgroups::metric_memory_usage(&m).unwrap_or(0);
    // cgroup v1 charges pages to the cgroup that faults them first: what the runner touched
    // before it was moved in (the shim binary's pages) is not counted, its heap is.
    assert!(usage > 0, "memory usage {usage} in {m}");
    // pids.current counts the runner's threads (main, signals, control).
    assert!(cgroups::metric_pids(&m).unwrap_or(0) >= 1, "{m}");
    assert!(c.kill("SIGKILL").success());
    assert_eq!(bg.wait(CTR_TIMEOUT).code, 137);
    let _ = std::fs::remove_file(path);
    c.remove_and_check();
}

#[test]
fn wasm_linear_memory_is_capped_at_the_spec_limit() {
    let h = harness!();
    strata_only!(h);
    // Grows page by page (untouched, so only the limiter can stop it), then exits with the
    // MiB it holds; 0 would mean it reached 1 GiB.
    let wasm = module(
        r#"(func (export "_start")
             (block $done (loop $l
               (br_if $done (i32.ge_u (memory.size) (i32.const 16384)))
               (br_if $l (i32.ne (memory.grow (i32.const 1)) (i32.const -1)))))
             (if (i32.ge_u (memory.size) (i32.const 16384)) (then (call $exit (i32.const 0))))
             (call $exit (i32.div_u (memory.size) (i32.const 16))))"#,
    );
    let c = h.container("wasm-memcap");
    let mut spec = wasm_spec(&c, &wasm, &["/app.wasm"]);
    spec["linux"]["resources"]["memory"] = json!({ "limit": 48u64 << 20 });
    let out = c.run_spec(&spec, &[]);
    assert_eq!(out.code, 48, "{out}\n{}", c.log());
    c.remove_and_check();
}

#[test]
fn wasm_memory_bomb_is_stopped_at_the_limit() {
    let h = harness!();
    strata_only!(h);
    // Grows and touches every page towards 1 GiB: exit 0 means nothing stopped it; 3 means
    // memory.grow was refused; 137 that the cgroup's OOM killer stopped the task first.
    let wasm = module(
        r#"(func (export "_start") (local $p i32)
             (block $done (loop $l
               (br_if $done (i32.ge_u (memory.size) (i32.const 16384)))
               (local.set $p (memory.grow (i32.const 16)))
               (if (i32.eq (local.get $p) (i32.const -1)) (then (call $exit (i32.const 3))))
               (i32.store (i32.mul (local.get $p) (i32.const 65536)) (i32.const 1))
               (i32.store (i32.add (i32.mul (local.get $p) (i32.const 65536)) (i32.const 500000)) (i32.const 1))
               (memory.fill (i32.mul (local.get $p) (i32.const 65536)) (i32.const 7) (i32.const 1048576))
               (br $l)))
             (call $exit (i32.const 0)))"#,
    );
    let c = h.container("wasm-bomb");
    let mut spec = wasm_spec(&c, &wasm, &["/app.wasm"]);
    spec["linux"]["resources"]["memory"] = json!({ "limit": 64u64 << 20 });
    let out = c.run_spec(&spec, &[]);
    assert!(
        matches!(out.code, 3 | 137),
        "the bomb was not stopped: {out}\n{}",
        c.log()
    );
    c.remove_and_check();
}

#[test]
fn wasm_preview2_component_runs() {
    let h = harness!();
    strata_only!(h);
    for (ok, want) in [(true, 0), (false, 1)] {
        let wasm = wat::parse_str(format!(
            r#"(component
              (core module $m (func (export "run") (result i32) i32.const {}))
              (core instance $i (instantiate $m))
              (func $run (result (result)) (canon lift (core func $i "run")))
              (instance $inst (export "run" (func $run)))
              (export "wasi:cli/run@0.2.0" (instance $inst)))"#,
            if ok { 0 } else { 1 }
        ))
        .unwrap();
        let c = h.container("wasm-p2");
        let spec = wasm_spec(&c, &wasm, &["/app.wasm"]);
        let out = c.run_spec(&spec, &[]);
        assert_eq!(out.code, want, "{out}\n{}", c.log());
        c.remove_and_check();
    }
}

#[test]
fn wasm_preview2_component_prints_to_stdout() {
    let h = harness!();
    strata_only!(h);
    let c = h.container("wasm-p2-print");
    let spec = wasm_spec(
        &c,
        &component::printing("hello from a component\n"),
        &["/app.wasm"],
    );
    let out = c.run_spec(&spec, &[]);
    assert!(out.success(), "{out}\n{}", c.log());
    // Through wasi:cli/stdout onto containerd's stdout FIFO, read back by ctr.
    assert_eq!(out.stdout, "hello from a component\n");
    c.remove_and_check();
}

/// `wasi:sockets` through containerd: a component that resolves a name (the container's
/// `/etc/hosts`, bind-mounted as CRI mounts it) or takes an address, connects to a listener
/// of the test and sends a message. Without `strata.dev/wasm.network` the lookup and the
/// socket are refused and nothing reaches the listener; with `inherit` it gets through in the
/// host's network namespace (`--net-host`), and in a container's own namespace the host's
/// listener is out of reach. A word the annotation does not know fails the create.
#[test]
fn wasm_network_is_off_unless_the_annotation_allows_it() {
    use std::io::Read;
    use std::net::TcpListener;

    let h = harness!();
    strata_only!(h);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let hosts = h
        .info
        .state
        .join(format!("wasm-hosts-{}", SEQ.fetch_add(1, Ordering::SeqCst)));
    std::fs::write(&hosts, "127.0.0.1 strata-test-peer\n").unwrap();
    // What reached the listener within a second (None: no connection).
    let received = || -> Option<String> {
        let until = Instant::now() + Duration::from_secs(1);
        while Instant::now() < until {
            match listener.accept() {
                Ok((mut conn, _)) => {
                    conn.set_nonblocking(false).unwrap();
                    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    let mut got = String::new();
                    conn.read_to_string(&mut got).unwrap();
                    return Some(got);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        None
    };
    let cases: &[(Option<&str>, Peer, bool, &str)] = &[
        (
            None,
            Peer::Name("strata-test-peer"),
            true,
            "lookup: permanent-resolver-failure\n",
        ),
        (
            None,
            Peer::Ipv4([127, 0, 0, 1]),
            true,
            "socket: access-denied\n",
        ),
        (
            Some("none"),
            Peer::Ipv4([127, 0, 0, 1]),
            true,
            "socket: access-denied\n",
        ),
        (
            Some("inherit"),
            Peer::Name("strata-test-peer"),
            true,
            "sent\n",
        ),
        (Some("inherit"), Peer::Ipv4([127, 0, 0, 1]), true, "sent\n"),
        // Its own network namespace: 127.0.0.1 is that namespace's loopback, where nothing
        // listens; the host's listener is not reached.
        (
            Some("inherit"),
            Peer::Ipv4([127, 0, 0, 1]),
            false,
            "connect: connection-refused\n",
        ),
    ];
    for (i, (network, peer, host_net, want)) in cases.iter().enumerate() {
        let message = format!("hello {i} from a component");
        let c = h.container(&format!("wasm-net-{i}"));
        let mut spec = wasm_spec(
            &c,
            &component::tcp_client(*peer, port, &message),
            &["/app.wasm"],
        );
        if let Some(n) = network {
            spec["annotations"]["strata.dev/wasm.network"] = json!(n);
        }
        if *host_net {
            host_network(&mut spec);
        }
        spec["mounts"].as_array_mut().unwrap().push(
            json!({"destination": "/etc/hosts", "type": "bind", "source": hosts, "options": ["rbind", "ro"]}),
        );
        let out = c.run_spec(&spec, &[]);
        let case = format!("case {i}: network {network:?}, {peer:?}, host network {host_net}");
        assert_eq!(out.stdout, *want, "{case}: {out}\n{}", c.log());
        assert_eq!(
            out.code,
            if *want == "sent\n" { 0 } else { 1 },
            "{case}: {out}"
        );
        let got = received();
        if *want == "sent\n" {
            assert_eq!(got.as_deref(), Some(message.as_str()), "{case}");
        } else {
            assert_eq!(got, None, "{case}: the listener was reached");
        }
        c.remove_and_check();
    }

    let c = h.container("wasm-net-bad");
    let mut spec = wasm_spec(
        &c,
        &component::tcp_client(Peer::Ipv4([127, 0, 0, 1]), port, "x"),
        &["/app.wasm"],
    );
    spec["annotations"]["strata.dev/wasm.network"] = json!("host");
    let out = c.run_spec(&spec, &[]);
    assert!(!out.success(), "{out}");
    let said = format!("{}{}", out.stderr, c.log());
    assert!(
        said.contains("strata.dev/wasm.network") && said.contains("\"host\""),
        "the refusal names the annotation and the word: {out}"
    );
    assert_eq!(received(), None);
    c.remove_and_check();
    let _ = std::fs::remove_file(&hosts);
}

/// A loopback address whose port was free a moment ago (bound, then let go).
fn free_loopback_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

/// Runs `spec` (a served component) in `c`, GETs `/` from `addr` once it serves, and stops
/// it (SIGKILL); the answer. `case` names the run in a failure.
fn serve_and_get(
    c: &Container,
    spec: &Value,
    addr: std::net::SocketAddr,
    case: &str,
) -> strata_tests::http::Response {
    use strata_tests::http;
    let (bg, path) = spawn_spec(c, spec);
    assert!(
        http::wait_for(addr, Duration::from_secs(30)),
        "{case}: nothing served on {addr}\n{}",
        c.log()
    );
    let got = http::Client::connect(addr).and_then(|mut cl| cl.get("/"));
    let got = got.unwrap_or_else(|e| panic!("{case}: {e}\n{}", c.log()));
    let k = c.kill("SIGKILL");
    assert!(k.success(), "{k}");
    let _ = bg.wait(CTR_TIMEOUT);
    let _ = std::fs::remove_file(path);
    got
}

/// The host's network namespace for `spec`, as `ctr run --net-host` gives.
fn host_network(spec: &mut Value) {
    spec["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .retain(|ns| ns["type"] != "network");
}

/// Outgoing `https` from a `wasi:http` component (network `inherit`) is TLS verified against
/// the container's own CA bundle, as a program in the container would verify it: an upstream
/// (`openssl s_server`) whose certificate a test CA signed answers when that CA is the
/// container's `/etc/ssl/certs/ca-certificates.crt`, or the file `SSL_CERT_FILE` names; with
/// no CA of the container's trusting it, the request fails with `TLS-certificate-error` (13).
#[test]
fn wasm_http_outgoing_https_trusts_the_containers_ca_bundle() {
    use std::net::SocketAddr;

    let h = harness!();
    strata_only!(h);
    let dir = std::env::temp_dir().join(format!("strata-wasm-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let openssl = |args: &[&str]| {
        let mut c = Command::new("openssl");
        c.args(args).current_dir(&dir);
        let out = cmd::run(c, None, Duration::from_secs(60)).expect("running openssl");
        assert!(out.success(), "openssl {args:?}: {out}");
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "1", "-subj", "/CN=strata test CA"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(&ca);
    let mut csr = vec!["req", "-subj", "/CN=127.0.0.1"];
    csr.extend(ec);
    csr.extend(["-keyout", "srv.key", "-out", "srv.csr"]);
    openssl(&csr);
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-days",
        "1",
        "-in",
        "srv.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-extfile",
        "san.ext",
        "-out",
        "srv.pem",
    ]);
    let ca_pem = std::fs::read(dir.join("ca.pem")).unwrap();

    let upstream = free_loopback_addr().to_string();
    let mut server = Command::new("openssl")
        .args(["s_server", "-quiet", "-www", "-accept", &upstream])
        .args(["-cert", "srv.pem", "-key", "srv.key"])
        .current_dir(&dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("starting openssl s_server");
    let up: SocketAddr = upstream.parse().unwrap();
    assert!(
        cmd::poll(Duration::from_secs(20), || std::net::TcpStream::connect(up)
            .ok())
        .is_some(),
        "openssl s_server does not listen on {upstream}"
    );

    let relay = component::http_relay_to(&upstream, true);
    for (case, ca_at, cert_file, want) in [
        (
            "bundle",
            Some("/etc/ssl/certs/ca-certificates.crt"),
            None,
            "upstream said 200\n",
        ),
        (
            "SSL_CERT_FILE",
            Some("/ca.pem"),
            Some("/ca.pem"),
            "upstream said 200\n",
        ),
        ("untrusted", None, None, "upstream error 013\n"),
    ] {
        let addr = free_loopback_addr();
        let c = h.container("wasm-https");
        let mut spec = wasm_spec(&c, &relay, &["/app.wasm"]);
        host_network(&mut spec);
        let mut env = vec![format!("WASMTIME_HTTP_PROXY_SOCKET_ADDR={addr}")];
        if let Some(f) = cert_file {
            env.push(format!("SSL_CERT_FILE={f}"));
        }
        spec["process"]["env"] = json!(env);
        spec["annotations"]["strata.dev/wasm.network"] = json!("inherit");
        if let Some(at) = ca_at {
            let file = rootfs(&spec).join(at.trim_start_matches('/'));
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, &ca_pem).unwrap();
        }
        let got = serve_and_get(&c, &spec, addr, case);
        assert_eq!(
            (got.status, got.body.as_str()),
            (200, want),
            "{case}\n{}",
            c.log()
        );
        c.remove_and_check();
    }
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// `strata.dev/wasm.tcplisten`, as the wasmtime CLI's `-S tcplisten`: a preview 1 module
/// finds a listening socket bound on the annotation's address at descriptor 3 and serves two
/// connections on it (`wasi::echo_server`: `sock_accept`, `sock_recv`/`sock_send`,
/// `fd_read`/`fd_write`, `sock_shutdown`, `fd_close`, and a file opened while a connection is
/// open gets a number of its own), then exits 0; `LISTEN_FDS=1` is in its environment. An
/// address already in use fails the start saying so; a malformed one fails the create naming
/// the annotation.
#[test]
fn wasm_preview1_module_serves_on_its_preopened_listening_socket() {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    let h = harness!();
    strata_only!(h);
    let addr = free_loopback_addr().to_string();
    let listening = |c: &Container, wasm: &[u8], address: &str| {
        let mut spec = wasm_spec(c, wasm, &["/app.wasm"]);
        host_network(&mut spec);
        spec["annotations"]["strata.dev/wasm.tcplisten"] = json!(address);
        spec
    };

    let c = h.container("wasm-listen");
    let (bg, path) = spawn_spec(&c, &listening(&c, &wasi::echo_server(2), &addr));
    for msg in ["first", "second"] {
        let mut s = cmd::poll(Duration::from_secs(30), || TcpStream::connect(&addr).ok())
            .unwrap_or_else(|| panic!("nothing listens on {addr}\n{}", c.log()));
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(msg.as_bytes()).unwrap();
        let mut got = String::new();
        let _ = s.read_to_string(&mut got);
        assert_eq!(got, format!("echo: {msg}"), "{}", c.log());
    }
    let out = bg.wait(CTR_TIMEOUT);
    assert_eq!(out.code, 0, "the echo server: {out}\n{}", c.log());
    let _ = std::fs::remove_file(path);
    c.remove_and_check();

    // SIGTERM while the module waits in sock_accept ends it as SIGTERM does, and frees the port.
    let c = h.container("wasm-listen-term");
    let (bg, path) = spawn_spec(&c, &listening(&c, &wasi::echo_server(2), &addr));
    let s = cmd::poll(Duration::from_secs(30), || TcpStream::connect(&addr).ok());
    assert!(s.is_some(), "nothing listens on {addr}\n{}", c.log());
    drop(s);
    let k = c.kill("SIGTERM");
    assert!(k.success(), "{k}");
    let out = bg.wait(CTR_TIMEOUT);
    assert_eq!(out.code, 143, "SIGTERM in sock_accept: {out}\n{}", c.log());
    assert!(TcpListener::bind(&addr).is_ok(), "{addr} is still held");
    let _ = std::fs::remove_file(path);
    c.remove_and_check();

    let c = h.container("wasm-listen-env");
    let out = c.run_spec(&listening(&c, &dump_args_env(), &addr), &[]);
    assert!(out.success(), "{out}");
    assert!(out.stdout.contains("LISTEN_FDS=1"), "{out}");
    c.remove_and_check();

    let held = TcpListener::bind(&addr).unwrap();
    let c = h.container("wasm-listen-busy");
    let out = c.run_spec(&listening(&c, &wasi::echo_server(1), &addr), &[]);
    assert!(!out.success(), "{out}");
    let said = format!("{}{}", out.stderr, c.log());
    assert!(
        said.contains(&format!("listen on {addr}")) && said.contains("in use"),
        "{out}\n{}",
        c.log()
    );
    drop(held);
    c.remove_and_check();

    let c = h.container("wasm-listen-bad");
    let out = c.run_spec(&listening(&c, &wasi::echo_server(1), "localhost:http"), &[]);
    assert!(!out.success(), "{out}");
    let said = format!("{}{}", out.stderr, c.log());
    assert!(
        said.contains("strata.dev/wasm.tcplisten") && said.contains("\"localhost:http\""),
        "the refusal names the annotation: {out}\n{}",
        c.log()
    );
    c.remove_and_check();
}

/// A `wasi:http/proxy` component (`component::http_hello`) served on the address that the
/// spec's `WASMTIME_HTTP_PROXY_SOCKET_ADDR` names: 1,000 requests from 16 concurrent
/// keep-alive clients each get the body naming their own path; SIGTERM ends the server with
/// 143 and SIGKILL with 137, and the port is free again; a second server on an address in
/// use fails at its start, and a malformed address fails the create, naming the variable.
#[test]
fn wasm_http_proxy_component_is_served() {
    use std::net::TcpListener;
    use strata_tests::http;

    let h = harness!();
    strata_only!(h);
    let serving = |c: &Container, address: &str| {
        let mut spec = wasm_spec(c, &component::http_hello(), &["/app.wasm"]);
        host_network(&mut spec);
        let env = &mut spec["process"]["env"];
        if !env.is_array() {
            *env = json!([]);
        }
        env.as_array_mut()
            .unwrap()
            .push(json!(format!("WASMTIME_HTTP_PROXY_SOCKET_ADDR={address}")));
        spec
    };
    for (signal, want) in [("SIGTERM", 143), ("SIGKILL", 137)] {
        let addr = free_loopback_addr();
        let c = h.container("wasm-http");
        let (bg, path) = spawn_spec(&c, &serving(&c, &addr.to_string()));
        assert!(
            http::wait_for(addr, Duration::from_secs(30)),
            "nothing served on {addr}\n{}",
            c.log()
        );
        let (clients, requests) = if signal == "SIGTERM" {
            (16, 1000)
        } else {
            (1, 10)
        };
        let l = http::load(addr, clients, requests, component::http_hello_body);
        assert_eq!(
            (l.requests, l.right),
            (requests, requests),
            "first wrong: {:?}\n{}",
            l.first_wrong,
            c.log()
        );
        eprintln!(
            "{requests} requests from {clients} clients: {:.0}/s, p50 {:?}, p99 {:?}",
            l.per_second(),
            l.p50,
            l.p99
        );
        if signal == "SIGTERM" {
            // A second server on the same address fails at its start, saying why.
            let twin = h.container("wasm-http-twin");
            let out = twin.run_spec(&serving(&twin, &addr.to_string()), &[]);
            assert!(!out.success(), "{out}");
            assert!(
                out.stderr.contains(&format!("serve on {addr}")) && out.stderr.contains("in use"),
                "{out}\n{}",
                twin.log()
            );
            twin.remove_and_check();
        }
        let k = c.kill(signal);
        assert!(k.success(), "{k}");
        let out = bg.wait(CTR_TIMEOUT);
        assert_eq!(out.code, want, "{signal}: {out}\n{}", c.log());
        assert!(
            TcpListener::bind(addr).is_ok(),
            "{addr} is still held after {signal}"
        );
        let _ = std::fs::remove_file(path);
        c.remove_and_check();
    }

    let c = h.container("wasm-http-bad");
    let out = c.run_spec(&serving(&c, "localhost:http"), &[]);
    assert!(!out.success(), "{out}");
    let said = format!("{}{}", out.stderr, c.log());
    assert!(
        said.contains("WASMTIME_HTTP_PROXY_SOCKET_ADDR=\"localhost:http\""),
        "the refusal names the variable: {out}\n{}",
        c.log()
    );
    c.remove_and_check();
}

/// `wasi:http/outgoing-handler` follows the task's network policy: a proxy component
/// (`component::http_relay`) asks an upstream server of the test before it answers. Without
/// `strata.dev/wasm.network` the request fails with `HTTP-request-denied` (error code 15)
/// and never reaches the upstream; with `inherit` the upstream's status comes back.
#[test]
fn wasm_http_outgoing_requests_follow_the_network_policy() {
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    let h = harness!();
    strata_only!(h);
    // The upstream: answers 200 to each request and records its request line.
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for conn in upstream.incoming().flatten() {
            let mut reader = BufReader::new(conn);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            record.lock().unwrap().push(line.trim_end().to_string());
            let mut rest = String::new();
            while reader.read_line(&mut rest).is_ok_and(|n| n > 2) {
                rest.clear();
            }
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        }
    });
    let relay = component::http_relay(&upstream_addr.to_string());
    for (network, want, reached) in [
        (None, "upstream error 015\n", false),
        (Some("inherit"), "upstream said 200\n", true),
    ] {
        let addr = free_loopback_addr();
        let c = h.container("wasm-http-out");
        let mut spec = wasm_spec(&c, &relay, &["/app.wasm"]);
        host_network(&mut spec);
        spec["process"]["env"] = json!([format!("WASMTIME_HTTP_PROXY_SOCKET_ADDR={addr}")]);
        if let Some(n) = network {
            spec["annotations"]["strata.dev/wasm.network"] = json!(n);
        }
        seen.lock().unwrap().clear();
        let got = serve_and_get(&c, &spec, addr, &format!("network {network:?}"));
        assert_eq!(
            (got.status, got.body.as_str()),
            (200, want),
            "network {network:?}"
        );
        let requests = seen.lock().unwrap().clone();
        if reached {
            assert_eq!(requests, ["GET /upstream HTTP/1.1"], "network {network:?}");
        } else {
            assert!(
                requests.is_empty(),
                "network {network:?} reached the upstream: {requests:?}"
            );
        }
        c.remove_and_check();
    }
}

/// Images whose layer is the WebAssembly binary itself (no tar layer): the module is read
/// from containerd's content store, by the runner, through containerd's API.
///
/// containerd 1.6 before 1.6.25 (Debian's 1.6.20 here) cannot unpack such an image: `ctr
/// images import` fails with "mismatched image rootfs and manifest layers" unless
/// `--no-unpack`, and `ctr run` of it fails the same way. The blobs are kept, so the
/// container is made through the API as `ctr run` would make it, minus the snapshot: its
/// root is the bundle's empty `rootfs`. Where `ctr run` of the image works (containerd 1.6.25+,
/// 1.7.7+, 2.x unpack it to an empty snapshot), that is used instead.
#[test]
fn wasm_image_layers_run_from_the_content_store() {
    use strata_tests::{api, image};

    let h = harness!();
    strata_only!(h);
    let module_hello = print_and_exit(1, "hello from a wasm layer\n", 0);
    let cases = [
        (
            "application/vnd.wasm.content.layer.v1+wasm",
            module_hello.clone(),
            "hello from a wasm layer\n",
        ),
        (
            "application/wasm",
            module_hello,
            "hello from a wasm layer\n",
        ),
        (
            "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm",
            component::printing("hello from a component layer\n"),
            "hello from a component layer\n",
        ),
    ];
    for (i, (media_type, wasm, want)) in cases.into_iter().enumerate() {
        let name = format!("localhost/strata-test/wasm-layer-{i}:1");
        let tar = h.info.state.join(format!("wasm-layer-{i}.tar"));
        image::write_wasm_image_tar(&name, media_type, &wasm, &tar).unwrap();
        let import = |flags: &[&str]| {
            let mut c = h.ctr();
            c.args(["images", "import", "--all-platforms"])
                .args(flags)
                .arg(&tar);
            cmd::run(c, None, CTR_TIMEOUT).expect("running ctr")
        };
        let out = import(&[]);
        if !out.success() {
            assert_fails_with(&out, "mismatched image rootfs and manifest layers");
            eprintln!("{media_type}: this containerd cannot unpack a wasm-layer image; importing with --no-unpack");
            let out = import(&["--no-unpack"]);
            assert!(out.success(), "{out}");
        }
        let _ = std::fs::remove_file(&tar);

        let c = h.container("wasm-layer");
        let mut cmd = h.ctr();
        cmd.args([
            "run",
            "--rm",
            "--runtime",
            &c.runtime,
            "--annotation",
            "strata.dev/backend=wasm",
        ]);
        cmd.arg("--fifo-dir").arg(h.fifo_dir());
        cmd.args([&name, &c.id, "app.wasm"]);
        let out = cmd::run(cmd, None, CTR_TIMEOUT).expect("running ctr");
        let (code, stdout) = if out.success() {
            (0, out.stdout)
        } else {
            assert_fails_with(&out, "mismatched image rootfs and manifest layers");
            let mut spec = h.base_spec();
            spec["root"] = json!({ "path": "rootfs" });
            spec["process"]["args"] = json!(["app.wasm"]);
            spec["process"]["terminal"] = json!(false);
            spec["linux"]["cgroupsPath"] = format!("/{}/{}", h.info.namespace, c.id).into();
            spec["annotations"] = json!({ "strata.dev/backend": "wasm" });
            let run = api::run_task_of_image(h, &c.id, &name, &c.runtime, &spec)
                .expect("containerd's API")
                .unwrap_or_else(|s| panic!("{media_type}: {s:?}\n{}", c.log()));
            assert_eq!(run.stderr, "", "{media_type}");
            (run.exit_status as i32, run.stdout)
        };
        assert_eq!(
            (code, stdout.as_str()),
            (0, want),
            "{media_type}\n{}",
            c.log()
        );
        c.remove_and_check();
    }

    // An image without a wasm layer, whose args name no file: the error says both.
    let c = h.container("wasm-no-layer");
    let out = c.run_with(
        &["--annotation", "strata.dev/backend=wasm"],
        &["/nope.wasm"],
        None,
    );
    assert_fails_with(
        &out,
        "/nope.wasm does not exist in the container's root filesystem",
    );
    assert_fails_with(&out, "has no WebAssembly layer");
    c.remove_and_check();
}

#[test]
fn wasm_elf_entrypoint_runs_native() {
    let h = harness!();
    strata_only!(h);
    let c = h.container("wasm-elf");
    let mut spec = c.spec(&["sh", "-c", "echo native in a wasm pod; cat /proc/self/comm"]);
    spec["annotations"] = json!({ "strata.dev/backend": "wasm" });
    let out = c.run_spec(&spec, &[]);
    assert!(out.success(), "{out}\n{}", c.log());
    assert_eq!(out.stdout, "native in a wasm pod\ncat\n");
    c.remove_and_check();
}

/// Tier pinning: under a configuration that allows only wasm (as `configs/strata-wasm.toml`,
/// the `strata-wasm` RuntimeClass), a container whose entrypoint is ELF is refused at its
/// create, naming the rule, and leaves nothing; a module still runs there. (That a pod's pause
/// container, ELF, runs natively under the same configuration is shown by every CRI test of
/// the `strata-wasm` handler: `wasm_pod_through_cri` here, and tests/tests/cri.rs.)
#[test]
fn wasm_only_configuration_refuses_an_elf_container() {
    let h = harness!();
    strata_only!(h);
    let config = h.info.state.join("strata-wasm-only.toml");
    std::fs::write(
        &config,
        "default_backend = \"wasm\"\nallowed_backends = [\"wasm\"]\n",
    )
    .unwrap();
    let config = config.display().to_string();
    let flags = ["--runtime-config-path", config.as_str()];

    // With the annotation, and without it (the configuration's default, wasm, applies).
    for (name, program, annotations) in [
        (
            "wasm-pinned-elf",
            "sh",
            json!({ "strata.dev/backend": "wasm" }),
        ),
        ("wasm-pinned-default", "/bin/sh", json!({})),
    ] {
        let c = h.container(name);
        let mut spec = c.spec(&[program, "-c", "echo escaped the wasm tier"]);
        spec["annotations"] = annotations;
        let out = c.run_spec(&spec, &flags);
        assert_fails_with(
            &out,
            &format!("entrypoint {program} is an ELF program, not WebAssembly"),
        );
        assert_fails_with(&out, "allowed_backends (here: wasm)");
        assert!(!out.stdout.contains("escaped"), "{out}");
        c.remove_and_check();
    }

    let c = h.container("wasm-pinned-module");
    let spec = wasm_spec(
        &c,
        &print_and_exit(1, "a module on wasm only\n", 0),
        &["/app.wasm"],
    );
    let out = c.run_spec(&spec, &flags);
    assert!(out.success(), "{out}\n{}", c.log());
    assert_eq!(out.stdout, "a module on wasm only\n");
    c.remove_and_check();
}

/// The runner is inside the task's container (issue 15): its own namespaces and root, the
/// spec's user, no capabilities, no_new_privs and its own seccomp filter. A module reaches
/// the container's files and /proc, and no host file by any path: absolute, `..`, or through
/// `/proc/<pid>/root`. Each refusal has a control that succeeds, so the test can fail.
#[test]
fn wasm_runner_is_confined_in_the_tasks_container() {
    use strata_tests::wasi::contest_module;

    let h = harness!();
    strata_only!(h);
    // A host file the module must never read.
    let secret = h.info.state.join("host-secret");
    std::fs::write(&secret, "host secret\n").unwrap();
    let secret = secret.display().to_string();

    let c = h.container("wasm-confined");
    let mut spec = c.spec(&["/bin/sleep", "1000"]);
    put_module(&spec, "/bin/sleep", contest_module());
    spec["annotations"] = json!({ "strata.dev/backend": "wasm" });
    spec["process"]["user"] = json!({ "uid": 1000, "gid": 1000, "additionalGids": [1001] });
    let (bg, path) = spawn_spec(&c, &spec);
    assert!(
        c.wait_status("RUNNING", Duration::from_secs(30)),
        "never ran\n{}",
        c.log()
    );
    let pid = c.pid().expect("task pid");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(field(cap), "0000000000000000", "{cap}:\n{status}");
    }
    assert_eq!(field("NoNewPrivs"), "1", "{status}");
    assert_eq!(field("Seccomp"), "2", "{status}");
    assert_eq!(field("Uid"), "1000 1000 1000 1000", "{status}");
    assert_eq!(field("Gid"), "1000 1000 1000 1000", "{status}");
    assert_eq!(field("Groups"), "1001", "{status}");
    for ns in ["mnt", "pid", "ipc", "uts", "net"] {
        let ours = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        let its = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap();
        assert_ne!(ours, its, "the runner shares the host's {ns} namespace");
    }
    // Its root is the container's: the module is there, the host's file is not.
    assert!(std::path::Path::new(&format!("/proc/{pid}/root/bin/sleep")).exists());
    assert!(!std::path::Path::new(&format!("/proc/{pid}/root{secret}")).exists());
    let k = c.kill("SIGKILL");
    assert!(k.success(), "{k}");
    let out = bg.wait(CTR_TIMEOUT);
    assert_eq!(out.code, 137, "{out}");
    c.remove_and_check();
    let _ = std::fs::remove_file(path);

    // What a module can reach: the contest module's applets, `cat FILE` and `test -d DIR`,
    // each in a container of its own with a file of the container's at /etc/container-file.
    let applet = |name: &str, argv: &[&str]| {
        let c = h.container(name);
        let mut spec = c.spec(argv);
        put_module(&spec, argv[0], contest_module());
        std::fs::write(
            rootfs(&spec).join("etc/container-file"),
            "the container's\n",
        )
        .unwrap();
        spec["annotations"] = json!({ "strata.dev/backend": "wasm" });
        let out = c.run_spec(&spec, &[]);
        c.remove_and_check();
        out
    };
    let out = applet("wasm-cat-own", &["/bin/cat", "/etc/container-file"]);
    assert!(out.success(), "the control: {out}");
    assert_eq!(out.stdout, "the container's\n");
    let up = "../".repeat(16);
    for file in [
        secret.clone(),
        format!("{up}{}", secret.trim_start_matches('/')),
        format!("/proc/self/root{secret}"),
        format!("/proc/1/root{secret}"),
        format!("/proc/1/cwd/{up}{}", secret.trim_start_matches('/')),
    ] {
        let out = applet("wasm-cat-host", &["/bin/cat", &file]);
        assert!(
            !out.success() && !out.stdout.contains("host secret"),
            "the module read the host's {file}: {out}"
        );
    }
    // The container's /proc: the runner itself is its PID 1; no host process is there.
    let out = applet("wasm-proc-own", &["/bin/test", "-d", "/proc/1/fd"]);
    assert!(out.success(), "the control: the container's /proc/1: {out}");
    let host_pid = format!("/proc/{}", std::process::id());
    let out = applet("wasm-proc-host", &["/bin/test", "-d", &host_pid]);
    assert_eq!(
        out.code, 1,
        "a host process is visible as {host_pid}: {out}"
    );
}

#[test]
fn wasm_bad_input_is_a_clear_error() {
    let h = harness!();
    strata_only!(h);
    let good = print_and_exit(1, "x", 0);
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        ("not-wasm", b"#!/bin/sh\necho hi\n".to_vec(), "/app.wasm", "not a WebAssembly binary"),
        ("truncated-header", good[..6].to_vec(), "/app.wasm", "truncated"),
        ("truncated-body", good[..good.len() - 5].to_vec(), "/app.wasm", "invalid WebAssembly"),
        ("missing-export", good.clone(), "/app.wasm#nope", "no export `nope`"),
        ("missing-file", good.clone(), "/nope.wasm", "/nope.wasm does not exist"),
        (
            "unknown-import",
            wat::parse_str(r#"(module (import "env" "launch_missiles" (func)) (memory (export "memory") 1) (func (export "_start")))"#).unwrap(),
            "/app.wasm",
            "launch_missiles",
        ),
    ];
    for (name, wasm, arg0, needle) in cases {
        let c = h.container(&format!("wasm-bad-{name}"));
        let spec = wasm_spec(&c, &wasm, &[arg0]);
        let out = c.run_spec(&spec, &[]);
        assert_fails_with(&out, needle);
        c.remove_and_check();
    }
}

#[test]
fn wasm_cache_hit_and_corrupt_entry_rebuilt() {
    let h = harness!();
    strata_only!(h);
    let tag = format!(
        "{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    );
    let wasm = unique_hello(&tag);
    let want = format!("cached {tag}\n");
    let run = || {
        let c = h.container("wasm-cache");
        let out = c.run_spec(&wasm_spec(&c, &wasm, &["/app.wasm"]), &[]);
        assert!(out.success(), "{out}\n{}", c.log());
        assert_eq!(out.stdout, want);
        c.remove_and_check();
    };
    run();
    let entries = cache_entries(&wasm);
    assert_eq!(
        entries.len(),
        1,
        "one entry after the first start: {entries:?}"
    );
    let entry = &entries[0];
    let ino = std::fs::metadata(entry).unwrap().ino();
    run();
    assert_eq!(
        std::fs::metadata(entry).unwrap().ino(),
        ino,
        "the second start recompiled"
    );

    let mut bytes = std::fs::read(entry).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    std::fs::write(entry, &bytes).unwrap();
    run();
    let rebuilt = std::fs::read(entry).unwrap();
    assert_ne!(rebuilt, bytes, "the corrupt entry was not rebuilt");
    assert_eq!(cache_entries(&wasm).len(), 1);
    let _ = std::fs::remove_file(entry);
}

#[test]
fn wasm_concurrent_first_starts_of_one_module() {
    let h = harness!();
    strata_only!(h);
    let tag = format!(
        "{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    );
    let wasm = unique_hello(&tag);
    let containers: Vec<Container> = (0..4).map(|_| h.container("wasm-conc")).collect();
    let specs: Vec<Value> = containers
        .iter()
        .map(|c| wasm_spec(c, &wasm, &["/app.wasm"]))
        .collect();
    std::thread::scope(|s| {
        let runs: Vec<_> = containers
            .iter()
            .zip(&specs)
            .map(|(c, spec)| s.spawn(move || c.run_spec(spec, &[])))
            .collect();
        for r in runs {
            let out = r.join().unwrap();
            assert!(out.success(), "{out}");
            assert_eq!(out.stdout, format!("cached {tag}\n"));
        }
    });
    let entries = cache_entries(&wasm);
    assert_eq!(entries.len(), 1, "{entries:?}");
    for c in &containers {
        c.remove_and_check();
    }
    let _ = std::fs::remove_file(&entries[0]);
}

/// A Kubernetes-style pod through containerd's CRI plugin on the handler `strata-wasm`: the
/// pause container (ELF) runs native, the wasm container runs on the wasm tier, both in one
/// shim; its output reaches the CRI log; with the pod's `strata.dev/wasm.network=inherit`, a
/// component reaches a listener of the node through the pod's network (its address the pod's,
/// from the CNI subnet); a wasi:http/proxy component serves on its default address, reached
/// at the pod's IP; an ELF sidecar is refused (the handler allows wasm only); stop and remove
/// leave nothing.
#[test]
fn wasm_cri_pod_with_handler_strata_wasm() {
    use std::collections::HashMap;

    use k8s_cri::v1::ContainerState;
    use strata_tests::cri::{self, CriEnv};
    use strata_tests::image::ImageBuilder;
    use strata_tests::{leaks, skip, HarnessError};

    const TEST: &str = "wasm_cri_pod_with_handler_strata_wasm";
    if strata_tests::Runtime::from_env().ok() != Some(strata_tests::Runtime::Strata) {
        eprintln!("SKIP {TEST}: tests a Strata feature");
        return;
    }
    let env = match CriEnv::start(std::path::Path::new(env!("CARGO_BIN_EXE_strata-testenv"))) {
        Ok(e) => e,
        Err(HarnessError::Missing(why)) => return skip(TEST, &why),
        Err(e) => panic!("{TEST}: {e}"),
    };
    const IMAGE: &str = "localhost/strata-test/wasm-hello:1";
    let wasm = module(
        r#"(data (i32.const 1024) "hello from a wasm pod\n")
           (func (export "_start")
             (call $write (i32.const 1) (i32.const 1024) (i32.const 22))
             (loop $l (br $l)))"#,
    );
    // The node's side of the pod network: the bridge's address, the subnet's first.
    let gateway: [u8; 4] = {
        let net: Vec<u8> = env
            .subnet
            .trim_end_matches(".0/24")
            .split('.')
            .map(|p| p.parse().unwrap())
            .collect();
        [net[0], net[1], net[2], 1]
    };
    // Bound to every address: the gateway's exists once CNI made the bridge for the pod.
    let listener = std::net::TcpListener::bind("0.0.0.0:0").expect("a listener of the node");
    let port = listener.local_addr().unwrap().port();
    let mut image = ImageBuilder::busybox(IMAGE).unwrap();
    image
        .file("app.wasm", wasm, 0o644)
        .file(
            "client.wasm",
            component::tcp_client(Peer::Ipv4(gateway), port, "hello from a wasm pod's socket"),
            0o644,
        )
        .file("web.wasm", component::http_hello(), 0o644)
        .file("echo.wasm", wasi::echo_server(1), 0o644)
        .cmd(&["/app.wasm"]);
    env.import(&image).expect("importing the wasm image");
    cri::run_async(async {
        let mut c = env.client().await.expect("CRI client");
        let pod_config = env.pod_config(
            "strata-wasm-pod",
            HashMap::from([("strata.dev/wasm.network".to_string(), "inherit".to_string())]),
        );
        let pod = c
            .run_pod(&pod_config, "strata-wasm")
            .await
            .unwrap_or_else(|s| {
                panic!(
                    "RunPodSandbox on strata-wasm: {s}\n{}",
                    env.harness.log_lines("", 30)
                )
            });
        let mut cfg = env.container_config("hello", &["/app.wasm"]);
        cfg.image.as_mut().unwrap().image = IMAGE.into();
        let id = c
            .start_container(&pod, &cfg, &pod_config)
            .await
            .unwrap_or_else(|s| {
                panic!(
                    "starting the wasm container: {s}\n{}",
                    env.harness.log_lines(&pod, 30)
                )
            });
        let (st, info) = c.container_status(&id).await.expect("ContainerStatus");
        assert_eq!(st.state, ContainerState::ContainerRunning as i32, "{st:?}");
        let pid = cri::info_pid(&info).expect("container pid");
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(
            String::from_utf8_lossy(&cmdline).starts_with("strata-wasm:"),
            "the container is not a wasm runner: {:?}",
            String::from_utf8_lossy(&cmdline)
        );
        let shims: Vec<_> = env.shim_processes();
        assert_eq!(shims.len(), 1, "one shim for the pod: {shims:?}");
        let log = PathBuf::from(&pod_config.log_directory).join("hello.log");
        let seen = cmd::poll(Duration::from_secs(10), || {
            std::fs::read_to_string(&log)
                .ok()
                .filter(|t| t.contains("hello from a wasm pod"))
        });
        assert!(seen.is_some(), "no output in {}", log.display());

        // The pod network: a component connects to the node's listener.
        let mut client = env.container_config("client", &["/client.wasm"]);
        client.image.as_mut().unwrap().image = IMAGE.into();
        let client_id = c
            .start_container(&pod, &client, &pod_config)
            .await
            .unwrap_or_else(|s| {
                panic!(
                    "starting the client: {s}\n{}",
                    env.harness.log_lines(&pod, 30)
                )
            });
        listener.set_nonblocking(true).unwrap();
        let conn = cmd::poll(Duration::from_secs(20), || listener.accept().ok());
        let (mut conn, from) = conn.expect("the component's connection never came");
        conn.set_nonblocking(false).unwrap();
        let mut got = String::new();
        std::io::Read::read_to_string(&mut conn, &mut got).unwrap();
        assert_eq!(got, "hello from a wasm pod's socket");
        assert!(
            env.in_subnet(&from.ip().to_string()),
            "the connection came from {from}, not from the pod's network"
        );
        let until = Instant::now() + Duration::from_secs(20);
        let st = loop {
            let (st, _) = c
                .container_status(&client_id)
                .await
                .expect("ContainerStatus");
            if st.state == ContainerState::ContainerExited as i32 || Instant::now() > until {
                break st;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(
            (st.state, st.exit_code),
            (ContainerState::ContainerExited as i32, 0),
            "the client: {st:?}"
        );

        // A wasi:http/proxy component, served on the default address (0.0.0.0:8080) in the
        // pod's network namespace: the node reaches it at the pod's IP.
        let mut web = env.container_config("web", &["/web.wasm"]);
        web.image.as_mut().unwrap().image = IMAGE.into();
        c.start_container(&pod, &web, &pod_config)
            .await
            .unwrap_or_else(|s| {
                panic!(
                    "starting the web component: {s}\n{}",
                    env.harness.log_lines(&pod, 30)
                )
            });
        let (status, _) = c.pod_status(&pod).await.expect("PodSandboxStatus");
        let pod_ip = status.network.map(|n| n.ip).unwrap_or_default();
        let web_addr: std::net::SocketAddr = format!("{pod_ip}:8080").parse().unwrap();
        assert!(
            strata_tests::http::wait_for(web_addr, Duration::from_secs(30)),
            "nothing served on {web_addr}\n{}",
            env.harness.log_lines(&pod, 30)
        );
        let l = strata_tests::http::load(web_addr, 4, 100, component::http_hello_body);
        assert_eq!(
            (l.requests, l.right),
            (100, 100),
            "first wrong: {:?}",
            l.first_wrong
        );

        // A preview 1 module listening on the socket its container's STRATA_WASM_TCPLISTEN
        // names, in the pod's network namespace: the node reaches it at the pod's IP.
        let mut echo = env.container_config("echo", &["/echo.wasm"]);
        echo.image.as_mut().unwrap().image = IMAGE.into();
        echo.envs.push(k8s_cri::v1::KeyValue {
            key: "STRATA_WASM_TCPLISTEN".into(),
            value: "0.0.0.0:9090".into(),
        });
        let echo_id = c
            .start_container(&pod, &echo, &pod_config)
            .await
            .unwrap_or_else(|s| {
                panic!(
                    "starting the echo module: {s}\n{}",
                    env.harness.log_lines(&pod, 30)
                )
            });
        let echo_addr = format!("{pod_ip}:9090");
        let mut conn = cmd::poll(Duration::from_secs(30), || {
            std::net::TcpStream::connect(&echo_addr).ok()
        })
        .unwrap_or_else(|| panic!("nothing listens on {echo_addr}"));
        std::io::Write::write_all(&mut conn, b"from the node").unwrap();
        let mut got = String::new();
        let _ = std::io::Read::read_to_string(&mut conn, &mut got);
        assert_eq!(got, "echo: from the node");
        let until = Instant::now() + Duration::from_secs(20);
        let st = loop {
            let (st, _) = c.container_status(&echo_id).await.expect("ContainerStatus");
            if st.state == ContainerState::ContainerExited as i32 || Instant::now() > until {
                break st;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(
            (st.state, st.exit_code),
            (ContainerState::ContainerExited as i32, 0),
            "the echo module: {st:?}"
        );

        // Tier pinning: the handler's configuration allows wasm only, so an ELF sidecar
        // (busybox) is refused at its start, naming the rule; the pod runs on.
        let sidecar = env.container_config("elf-sidecar", &["sh", "-c", "sleep 1000"]);
        match c.start_container(&pod, &sidecar, &pod_config).await {
            Ok(_) => panic!("an ELF container ran in a strata-wasm pod"),
            Err(s) => assert!(
                s.message().contains("is an ELF program, not WebAssembly")
                    && s.message().contains("allowed_backends (here: wasm)"),
                "the refusal should name the tier rule: {s}"
            ),
        }
        let (st, _) = c.container_status(&id).await.expect("ContainerStatus");
        assert_eq!(st.state, ContainerState::ContainerRunning as i32, "{st:?}");
        let all = c.list_containers().await.expect("ListContainers");

        c.stop_pod(&pod).await.expect("StopPodSandbox");
        c.remove_pod(&pod).await.expect("RemovePodSandbox");
        let mut ids = vec![pod.as_str(), id.as_str()];
        ids.extend(all.iter().map(String::as_str));
        let mut left = Vec::new();
        let clean = cmd::poll(Duration::from_secs(20), || {
            left = leaks::processes(&ids);
            left.extend(leaks::mounts(&ids));
            left.extend(leaks::cgroups(&ids));
            left.extend(leaks::state_dirs(&env.harness, &ids));
            left.is_empty().then_some(())
        });
        assert!(clean.is_some(), "left behind: {left:?}");
    });
}

/// The shared suites' contest module (`strata_tests::wasi`) on its own: each step does what
/// its busybox rendering does, and a bad script says what is wrong (exit 2), so a shared test
/// on wasm can fail only for the tier, never silently for the module.
/// (Its stdin steps are the shared lifecycle tests': `ctr run` with stdin at /dev/null never
/// closes the task's stdin, on any tier.)
#[test]
fn wasm_contest_module_runs_its_script() {
    use strata_tests::wasi::{contest_module, CONTEST_PATH};

    let h = harness!();
    strata_only!(h);
    let cases: &[(&[&str], i32, &str, &str)] = &[
        (
            &["out", "a b\n", "err", "e\n", "exit", "7"],
            7,
            "a b\n",
            "e\n",
        ),
        (&["fill", "5", "z", "out", "!"], 0, "zzzzz!", ""),
        (&["busy", "1000", "env"], 0, "A=1\0", ""),
        (&["args"], 0, "/contest.wasm\0args\0", ""),
        (&["bogus"], 2, "", "contest: unknown step bogus\n"),
        (&["exit"], 2, "", "contest: missing operand of exit\n"),
        (&["fill", "x", "a"], 2, "", "contest: not a number: x\n"),
    ];
    for (script, code, stdout, stderr) in cases {
        let c = h.container("wasm-contest");
        let mut args = vec![CONTEST_PATH];
        args.extend(script.iter());
        let mut spec = c.spec(&args);
        put_module(&spec, CONTEST_PATH, contest_module());
        spec["annotations"] = json!({ "strata.dev/backend": "wasm" });
        spec["process"]["env"] = json!(["A=1"]);
        let out = c.run_spec(&spec, &[]);
        assert_eq!(
            (out.code, out.stdout.as_str(), out.stderr.as_str()),
            (*code, *stdout, *stderr),
            "{script:?}: {out}\n{}",
            c.log()
        );
        c.remove_and_check();
    }
}

/// A spec running the contest module with `script` on the wasm tier.
fn contest_spec(c: &Container, script: &[&str]) -> Value {
    use strata_tests::wasi::{contest_module, CONTEST_PATH};

    let mut args = vec![CONTEST_PATH];
    args.extend(script);
    let mut spec = c.spec(&args);
    put_module(&spec, CONTEST_PATH, contest_module());
    spec["annotations"] = json!({ "strata.dev/backend": "wasm" });
    spec
}

/// A module blocked in a host call (reading stdin) reaches no epoch check: SIGTERM still ends
/// it within a second (the runner takes the signal's default action 500 ms after it).
#[test]
fn wasm_sigterm_ends_a_module_blocked_on_stdin() {
    let h = harness!();
    strata_only!(h);
    let c = h.container("wasm-term-stdin");
    let (mut bg, path) = spawn_spec(&c, &contest_spec(&c, &["out", "ready\n", "cat"]));
    assert!(
        bg.wait_stdout("ready", Duration::from_secs(30)),
        "never ran: {}\n{}",
        bg.stderr(),
        c.log()
    );
    bg.write_stdin(b"echoed\n").unwrap();
    assert!(
        bg.wait_stdout("echoed", Duration::from_secs(10)),
        "{}",
        bg.stderr()
    );
    assert_ends_within_a_second(&c, bg, path, "SIGTERM", 143);
}

/// What a wasm task cannot do (exec, a terminal) is refused with an error that says so; the
/// running task is not disturbed and nothing is left.
#[test]
fn wasm_exec_and_terminal_are_refused_clearly() {
    let h = harness!();
    strata_only!(h);
    let c = h.container("wasm-noexec");
    let (bg, path) = spawn_spec(&c, &contest_spec(&c, &["sleep"]));
    assert!(
        c.wait_status("RUNNING", Duration::from_secs(30)),
        "never ran\n{}",
        c.log()
    );
    let out = c.exec("e1", &["/contest.wasm", "out", "x"]);
    assert!(!out.success(), "an exec into a wasm task ran: {out}");
    assert!(
        out.stderr.contains("not supported") || out.stderr.contains("not implemented"),
        "the error should say exec is not supported: {out}"
    );
    eprintln!("exec refused: {}", out.stderr.trim());
    assert_eq!(c.status().as_deref(), Some("RUNNING"), "{}", c.log());
    assert!(c.kill("SIGKILL").success());
    assert_eq!(bg.wait(CTR_TIMEOUT).code, 137);
    let _ = std::fs::remove_file(path);
    c.remove_and_check();

    let c = h.container("wasm-notty");
    let mut spec = contest_spec(&c, &["out", "x"]);
    spec["process"]["terminal"] = json!(true);
    let path = strata_tests::wasi::write_spec(h, &spec);
    let mut cmd = h.ctr();
    cmd.args(["run", "--rm", "-t", "--runtime", &c.runtime]);
    cmd.arg("--fifo-dir").arg(h.fifo_dir());
    cmd.arg("--config").arg(&path).arg(&c.id);
    let (code, screen) = PtyChild::spawn(cmd, 40, 100)
        .unwrap()
        .wait(Duration::from_secs(30));
    let _ = std::fs::remove_file(path);
    assert_ne!(code, 0, "a wasm task got a terminal: {screen}");
    eprintln!("terminal refused: {}", screen.trim());
    assert!(
        screen.contains("terminal"),
        "the error should name the terminal: {screen}"
    );
    c.remove_and_check();
}
