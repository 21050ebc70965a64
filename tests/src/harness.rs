//! The test-side handle on a private containerd, and per-test containers with unique ids.

use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::cmd::{self, Output};
use crate::daemon::{DaemonInfo, DaemonOptions};
use crate::image::ImageBuilder;
use crate::leaks;

/// Name of the Strata shim binary containerd looks for on its PATH.
pub const STRATA_SHIM: &str = "containerd-shim-strata-v2";
/// How long one `ctr` call may take before the test calls it hung.
pub const CTR_TIMEOUT: Duration = Duration::from_secs(60);
/// The same for a pod in a VM under emulation (QEMU TCG here), whose boot may take most of a
/// minute when several VMs boot at once on two cores.
pub const CTR_TIMEOUT_VM: Duration = Duration::from_secs(180);

/// Which runtime the suite drives: Strata, or runc as the baseline that validates the harness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    Strata,
    Runc,
}

impl Runtime {
    /// From `STRATA_TEST_RUNTIME` (`strata`, the default, or `runc`).
    pub fn from_env() -> Result<Runtime> {
        match std::env::var("STRATA_TEST_RUNTIME").as_deref() {
            Err(_) | Ok("") | Ok("strata") | Ok("io.containerd.strata.v2") => Ok(Runtime::Strata),
            Ok("runc") | Ok("io.containerd.runc.v2") => Ok(Runtime::Runc),
            Ok(other) => bail!("STRATA_TEST_RUNTIME={other}: expected `strata` or `runc`"),
        }
    }

    /// The runtime name `ctr run --runtime` takes.
    pub fn containerd_name(self) -> &'static str {
        match self {
            Runtime::Strata => "io.containerd.strata.v2",
            Runtime::Runc => "io.containerd.runc.v2",
        }
    }

    /// The shim binary containerd starts for it.
    pub fn shim_binary(self) -> &'static str {
        match self {
            Runtime::Strata => STRATA_SHIM,
            Runtime::Runc => "containerd-shim-runc-v2",
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Runtime::Strata => "strata",
            Runtime::Runc => "runc",
        })
    }
}

/// Why a harness could not be had.
#[derive(Debug)]
pub enum HarnessError {
    /// Something the tests need is not on this machine (a skip, except on CI).
    Missing(String),
    /// The harness itself failed.
    Failed(String),
}

impl fmt::Display for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HarnessError::Missing(s) => write!(f, "prerequisite missing: {s}"),
            HarnessError::Failed(s) => write!(f, "harness failed: {s}"),
        }
    }
}

pub use strata_backend::testing::{not_applicable, on_ci, skip};

/// The Strata tier the suite runs on, from `STRATA_TEST_TIER` (`native`, the default, `sentry`,
/// `microvm` or `wasm`): every container the harness starts carries the annotation
/// `strata.dev/backend=<tier>`, and the CRI tests use the handler `strata-<tier>`. Ignored when
/// the suite runs against runc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    Native,
    Sentry,
    Microvm,
    Wasm,
}

impl Tier {
    pub const ALL: [Tier; 4] = [Tier::Native, Tier::Sentry, Tier::Microvm, Tier::Wasm];

    pub fn from_env() -> Result<Tier> {
        match std::env::var("STRATA_TEST_TIER").as_deref() {
            Err(_) | Ok("") => Ok(Tier::Native),
            Ok(s) => Tier::ALL
                .into_iter()
                .find(|t| t.name() == s)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "STRATA_TEST_TIER={s}: expected native, sentry, microvm or wasm"
                    )
                }),
        }
    }

    /// The value of `strata.dev/backend`.
    pub fn name(self) -> &'static str {
        match self {
            Tier::Native => "native",
            Tier::Sentry => "sentry",
            Tier::Microvm => "microvm",
            Tier::Wasm => "wasm",
        }
    }

    /// `strata.dev/backend=<tier>`, as `ctr run --annotation` takes it.
    pub fn annotation(self) -> String {
        format!("strata.dev/backend={}", self.name())
    }

    /// The CRI runtime handler (and RuntimeClass) that pins this tier.
    pub fn cri_handler(self) -> &'static str {
        match self {
            Tier::Native => "strata-native",
            Tier::Sentry => "strata-sentry",
            Tier::Microvm => "strata-microvm",
            Tier::Wasm => "strata-wasm",
        }
    }

    /// Why critest cannot run on this tier's handler yet, if it cannot (every tier can now).
    /// (The shared suites' gate is [`tier_gate`].)
    pub fn unavailable(self) -> Option<&'static str> {
        None
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Checks what the suite needs on this machine, for `runtime` with the shim in `shim_dir`.
pub fn check_prerequisites(runtime: Runtime, shim_dir: &Path) -> Result<(), HarnessError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(HarnessError::Missing(
            "the integration tests need root (containerd, mounts, cgroups)".into(),
        ));
    }
    // containerd, ctr and the runc shim of the version under test; runc itself from PATH.
    crate::daemon::check_containerd()?;
    if crate::daemon::which("runc").is_none() {
        return Err(HarnessError::Missing(
            "`runc` is not on PATH: run scripts/install-deps".into(),
        ));
    }
    if !Path::new(crate::image::BUSYBOX).is_file() {
        return Err(HarnessError::Missing(format!(
            "{} is missing: apt-get install busybox-static",
            crate::image::BUSYBOX
        )));
    }
    if runtime == Runtime::Strata && !shim_dir.join(STRATA_SHIM).is_file() {
        return Err(HarnessError::Missing(format!(
            "{} not found: build it with `cargo build -p strata-shim` (or set STRATA_SHIM_DIR)",
            shim_dir.join(STRATA_SHIM).display()
        )));
    }
    Ok(())
}

/// The directory the shim binary is taken from: `STRATA_SHIM_DIR`, else the directory of
/// `testenv` (cargo puts every binary of a profile in one directory).
pub fn shim_dir(testenv: &Path) -> PathBuf {
    if let Some(d) = std::env::var_os("STRATA_SHIM_DIR") {
        return PathBuf::from(d);
    }
    testenv
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The microvm driver the suites run pods under: `STRATA_TEST_MICROVM_DRIVER` (`qemu`, the
/// default, or `strata`, Strata's own VMM).
pub fn microvm_driver() -> String {
    std::env::var("STRATA_TEST_MICROVM_DRIVER").unwrap_or_else(|_| "qemu".into())
}

/// The `[microvm]` table the tests run pods under: the guest kernel that
/// `scripts/build-guest-kernel` cached for this tree, the initramfs `scripts/build-initramfs`
/// wrote, `allow_tcg` (this machine's /dev/kvm cannot run a Linux guest: QEMU emulates), and
/// the driver of [`microvm_driver`].
pub fn microvm_test_table() -> String {
    let repo = crate::package_dir().join("..");
    let kernel = Command::new(repo.join("scripts/build-guest-kernel"))
        .arg("--cached")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!(
        "[microvm]\ndriver = {:?}\nallow_tcg = true\nboot_timeout_secs = 120\nkernel = {kernel:?}\ninitrd = {:?}\n",
        microvm_driver(),
        MICROVM_INITRAMFS
    )
}

/// Where `scripts/build-initramfs` writes the guest's initramfs by default.
pub const MICROVM_INITRAMFS: &str = "/var/cache/strata/guest-initramfs/initramfs.cpio.gz";

/// Why `test` (a path such as `lifecycle::tty_run`) does not apply to the tier the suite runs
/// on, if it does not: the tier runs no container yet, or the test is in the tier's table of
/// tests that cannot apply ([`crate::tiers::not_applicable_on`]). Always `None` against runc.
pub fn tier_gate(test: &str) -> Option<String> {
    let (Ok(Runtime::Strata), Ok(tier)) = (Runtime::from_env(), Tier::from_env()) else {
        return None;
    };
    if tier == Tier::Microvm && microvm_driver() == "strata" {
        if let Some(why) = strata_microvm::strata_vmm::unsupported_here() {
            return Some(format!("not on {tier} with Strata's VMM here: {why}"));
        }
    }
    let name = test.rsplit("::").next().unwrap_or(test);
    crate::tiers::not_applicable_on(tier, name).map(|why| format!("not on {tier}: {why}"))
}

/// A private containerd run by a `strata-testenv supervise` process, which tears it down when
/// this handle is dropped or this process ends, however it ends.
pub struct Harness {
    pub info: DaemonInfo,
    pub runtime: Runtime,
    /// The Strata tier its containers run on (meaningless for runc).
    pub tier: Tier,
    pub shim_dir: PathBuf,
    supervisor: Mutex<Option<(Child, ChildStdin)>>,
    /// The supervisor's answers to commands after its first line.
    answers: Mutex<Option<BufReader<ChildStdout>>>,
    next_id: AtomicU32,
    base_spec: OnceLock<serde_json::Value>,
}

static SHARED: OnceLock<Result<Harness, HarnessError>> = OnceLock::new();

impl Harness {
    /// Starts a private containerd through the supervisor binary `testenv`.
    pub fn start(testenv: &Path, opts: DaemonOptions) -> Result<Harness, HarnessError> {
        let runtime = Runtime::from_env().map_err(|e| HarnessError::Failed(e.to_string()))?;
        let tier = Tier::from_env().map_err(|e| HarnessError::Failed(e.to_string()))?;
        let shim_dir = shim_dir(testenv);
        check_prerequisites(runtime, &shim_dir)?;
        let mut opts = opts;
        opts.shim_dir.get_or_insert_with(|| shim_dir.clone());
        let json = serde_json::to_string(&opts).map_err(|e| HarnessError::Failed(e.to_string()))?;
        let mut child = Command::new(testenv)
            .arg("supervise")
            .arg(json)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // Its own process group: a Ctrl-C to the tests must not stop the clean-up.
            .process_group(0)
            .spawn()
            .map_err(|e| HarnessError::Failed(format!("starting {}: {e}", testenv.display())))?;
        let stdin = child.stdin.take().expect("piped stdin");
        let mut line = String::new();
        let mut out = BufReader::new(child.stdout.take().expect("piped stdout"));
        let _ = out.read_line(&mut line);
        let value: serde_json::Value = serde_json::from_str(&line).map_err(|_| {
            HarnessError::Failed(format!(
                "the supervisor said {line:?} instead of its address"
            ))
        })?;
        if let Some(err) = value.get("error") {
            let _ = child.wait();
            return Err(HarnessError::Failed(
                err.as_str().unwrap_or_default().to_string(),
            ));
        }
        let info: DaemonInfo =
            serde_json::from_value(value).map_err(|e| HarnessError::Failed(e.to_string()))?;
        Ok(Harness {
            info,
            runtime,
            tier,
            shim_dir,
            supervisor: Mutex::new(Some((child, stdin))),
            answers: Mutex::new(Some(out)),
            next_id: AtomicU32::new(1),
            base_spec: OnceLock::new(),
        })
    }

    /// The one containerd of this test binary, started on first use. `None` means the test
    /// should return: it has been reported as skipped (on CI this panics instead).
    pub fn shared(testenv: &str, test: &str) -> Option<&'static Harness> {
        if let Some(reason) = tier_gate(test) {
            not_applicable(test, &reason);
            return None;
        }
        match SHARED.get_or_init(|| Harness::start(Path::new(testenv), DaemonOptions::default())) {
            Ok(h) => Some(h),
            Err(HarnessError::Missing(reason)) => {
                skip(test, reason);
                None
            }
            Err(e) => panic!("{test}: {e}"),
        }
    }

    /// Restarts containerd (SIGTERM, then a new one on the same socket, configuration and
    /// state), as `systemctl restart containerd` does; shims and containers keep running.
    pub fn restart_containerd(&self) -> std::result::Result<(), String> {
        let mut sup = self.supervisor.lock().unwrap();
        let (_, stdin) = sup.as_mut().ok_or("the daemon is stopped")?;
        writeln!(stdin, "{}", crate::daemon::SUPERVISOR_RESTART)
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("asking the supervisor: {e}"))?;
        let mut answers = self.answers.lock().unwrap();
        let out = answers.as_mut().ok_or("the supervisor's output is gone")?;
        let mut line = String::new();
        out.read_line(&mut line)
            .map_err(|e| format!("reading the supervisor's answer: {e}"))?;
        match line.trim().strip_prefix("ok ") {
            Some(_) => Ok(()),
            None => Err(format!("restarting containerd: {}", line.trim())),
        }
    }

    /// Stops the daemon now and waits until everything is cleaned up.
    pub fn stop(&self) {
        if let Some((mut child, stdin)) = self.supervisor.lock().ok().and_then(|mut s| s.take()) {
            drop(stdin);
            let _ = cmd::wait_deadline(&mut child, Duration::from_secs(120));
        }
    }

    /// `ctr` on this daemon's socket and namespace.
    pub fn ctr(&self) -> Command {
        self.info.ctr()
    }

    /// The `ctr run` flags that put a container on the suite's tier: the backend annotation
    /// for Strata, nothing for runc.
    pub fn tier_flags(&self) -> Vec<String> {
        match self.runtime {
            Runtime::Strata if self.tier == Tier::Microvm => vec![
                "--annotation".into(),
                self.tier.annotation(),
                "--runtime-config-path".into(),
                self.microvm_config().display().to_string(),
            ],
            Runtime::Strata => vec!["--annotation".into(), self.tier.annotation()],
            Runtime::Runc => Vec::new(),
        }
    }

    /// `--runtime-config-path FILE` where the tier needs a configuration of its own (microvm:
    /// [`Harness::microvm_config`]), for `ctr run` invocations that take no [`Harness::tier_flags`]
    /// (a whole spec carries its annotation itself).
    pub fn runtime_config_flags(&self) -> Vec<String> {
        if self.runtime == Runtime::Strata && self.tier == Tier::Microvm {
            vec![
                "--runtime-config-path".into(),
                self.microvm_config().display().to_string(),
            ]
        } else {
            Vec::new()
        }
    }

    /// How long one `ctr` call may take on this suite's target ([`CTR_TIMEOUT_VM`] for pods
    /// in VMs, which boot in it).
    pub fn ctr_timeout(&self) -> Duration {
        if self.processes_on_the_host() {
            CTR_TIMEOUT
        } else {
            CTR_TIMEOUT_VM
        }
    }

    /// Whether the container's processes (and their cgroups) are the host's: not in a VM, where
    /// the pids `ctr task ps` lists and the cgroups are the guest's.
    pub fn processes_on_the_host(&self) -> bool {
        !(self.runtime == Runtime::Strata && self.tier == Tier::Microvm)
    }

    /// The processes a tier keeps in every container beside the workload's, which `ctr task
    /// ps` lists with it: the sentry's keeper (docs/sentry.md, "One domain per container"),
    /// none elsewhere. `pids` less those.
    pub fn workload_pids(&self, pids: &[u32]) -> Vec<u32> {
        pids.iter()
            .copied()
            .filter(|p| !is_tier_process(*p))
            .collect()
    }

    /// The configuration the microvm tier's containers are created under: the shipped
    /// `configs/strata-microvm.toml` with a `[microvm]` table for this machine
    /// ([`microvm_test_table`]), written once into the daemon's state directory.
    pub fn microvm_config(&self) -> PathBuf {
        let path = self.info.state.join("strata-microvm-test.toml");
        if !path.exists() {
            let shipped = std::fs::read_to_string(
                crate::package_dir().join("../configs/strata-microvm.toml"),
            )
            .expect("reading configs/strata-microvm.toml");
            std::fs::write(&path, format!("{shipped}\n{}", microvm_test_table()))
                .expect("writing the microvm test configuration");
        }
        path
    }

    /// Where `ctr` keeps the FIFOs of the stdio it attaches (`--fifo-dir`). They are the
    /// client's, not the runtime's: a client that never deletes its task (the shim was killed)
    /// leaves them, so they live here and are not counted as leaks.
    pub fn fifo_dir(&self) -> PathBuf {
        self.info.state.join(crate::leaks::CLIENT_FIFO_DIR)
    }

    /// Runs `ctr ARGS` with the default deadline.
    pub fn ctr_run(&self, args: &[&str]) -> Output {
        let mut c = self.ctr();
        c.args(args);
        cmd::run(c, None, self.ctr_timeout()).expect("running ctr")
    }

    /// A fresh, unique container id for the test `name`.
    pub fn new_id(&self, name: &str) -> String {
        let n = self.next_id.fetch_add(1, Ordering::SeqCst);
        format!("st{}-{n}-{name}", std::process::id() % 100_000)
    }

    /// A container handle with a unique id; removed (best effort) when dropped.
    pub fn container(&self, name: &str) -> Container<'_> {
        Container {
            h: self,
            id: self.new_id(name),
            runtime: self.runtime.containerd_name().to_string(),
            scratch: Mutex::new(Vec::new()),
        }
    }

    /// containerd's default spec (`ctr oci spec`), as `ctr run` would start from.
    pub fn base_spec(&self) -> serde_json::Value {
        self.base_spec
            .get_or_init(|| {
                let out = self.ctr_run(&["oci", "spec"]);
                assert!(out.success(), "ctr oci spec failed: {out}");
                serde_json::from_str(&out.stdout).expect("ctr oci spec printed JSON")
            })
            .clone()
    }

    /// A fresh copy of the busybox root filesystem in a directory of its own (named without
    /// any container id, so that it never counts as a leak).
    pub fn new_rootfs(&self) -> PathBuf {
        let dir = self
            .info
            .state
            .join("rootfs")
            .join(format!("r{}", self.next_id.fetch_add(1, Ordering::SeqCst)));
        ImageBuilder::busybox(&self.info.image)
            .and_then(|b| b.unpack(&dir))
            .expect("unpacking the busybox rootfs");
        dir
    }

    /// Imports an image built with [`ImageBuilder`] into the namespace.
    pub fn import_image(&self, image: &ImageBuilder) -> Result<()> {
        let path = self.info.state.join(format!(
            "image-{}.tar",
            self.next_id.fetch_add(1, Ordering::SeqCst)
        ));
        image.write_oci_tar(&path)?;
        let mut c = self.ctr();
        c.args(["images", "import"]).arg(&path);
        let out = cmd::run(c, None, Duration::from_secs(120))?;
        let _ = std::fs::remove_file(&path);
        if !out.success() {
            bail!("importing {}: {out}", image.name());
        }
        Ok(())
    }

    /// The last lines of containerd's log that mention `needle`.
    pub fn log_lines(&self, needle: &str, max: usize) -> String {
        let log = std::fs::read_to_string(&self.info.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(needle)).collect();
        lines[lines.len().saturating_sub(max)..].join("\n")
    }

    /// Fails the test, with details, if anything of the containers `ids` is left (processes,
    /// mounts, cgroups, state directories, containerd records) after up to 20 s of waiting.
    pub fn assert_no_leaks(&self, ids: &[&str]) {
        let mut last = Vec::new();
        let clean = cmd::poll(Duration::from_secs(20), || {
            last = leaks::find(self, ids);
            last.is_empty().then_some(())
        });
        if clean.is_none() {
            let logs: Vec<String> = ids
                .iter()
                .take(3)
                .map(|id| self.log_lines(id, 15))
                .collect();
            panic!(
                "leaked after the containers were removed:\n  {}\ncontainerd log:\n{}",
                last.join("\n  "),
                logs.join("\n")
            );
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `let h = harness!();` in a test: the shared harness, or return (skipped) when the machine
/// lacks something the tests need. On CI a missing prerequisite fails the test instead.
#[macro_export]
macro_rules! harness {
    () => {{
        fn __here() {}
        let test = std::any::type_name_of_val(&__here).trim_end_matches("::__here");
        match $crate::Harness::shared(env!("CARGO_BIN_EXE_strata-testenv"), test) {
            Some(h) => h,
            None => return,
        }
    }};
}

/// Returns early (skipped) unless the suite runs against Strata; for tests of Strata's own
/// features (backend annotation, its configuration file).
#[macro_export]
macro_rules! strata_only {
    ($h:expr) => {{
        fn __here() {}
        let test = std::any::type_name_of_val(&__here).trim_end_matches("::__here");
        if $h.runtime != $crate::Runtime::Strata {
            $crate::not_applicable(
                test,
                &format!(
                    "tests a Strata feature; the suite runs against {}",
                    $h.runtime
                ),
            );
            return;
        }
    }};
}

/// One container of a test, with a unique id.
pub struct Container<'h> {
    pub h: &'h Harness,
    pub id: String,
    /// The `--runtime` passed to `ctr run`.
    pub runtime: String,
    scratch: Mutex<Vec<PathBuf>>,
}

impl Container<'_> {
    fn run_cmd(&self, detach: bool, flags: &[&str], args: &[&str]) -> Command {
        let mut c = self.h.ctr();
        c.arg("run");
        c.arg(if detach { "-d" } else { "--rm" });
        c.arg("--fifo-dir").arg(self.h.fifo_dir());
        c.arg("--runtime").arg(&self.runtime);
        c.args(self.h.tier_flags());
        c.args(flags);
        c.arg(&self.h.info.image).arg(&self.id).args(args);
        c
    }

    /// `ctr run --rm --runtime RT IMAGE ID ARGS`: runs to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_with(&[], args, None)
    }

    /// `ctr run --rm` with extra `flags`, feeding `stdin`.
    pub fn run_with(&self, flags: &[&str], args: &[&str], stdin: Option<&[u8]>) -> Output {
        cmd::run(
            self.run_cmd(false, flags, args),
            stdin,
            self.h.ctr_timeout(),
        )
        .expect("running ctr")
    }

    /// The `ctr run --rm` command line, to spawn it yourself (pty, streaming output).
    pub fn run_command(&self, flags: &[&str], args: &[&str]) -> Command {
        self.run_cmd(false, flags, args)
    }

    /// `ctr run --rm` in the background, its output read as it comes.
    pub fn spawn(&self, flags: &[&str], args: &[&str]) -> cmd::Background {
        cmd::Background::spawn(self.run_cmd(false, flags, args)).expect("starting ctr")
    }

    /// A spec for this container made from containerd's default one: its own copy of the
    /// busybox rootfs, `args` as the process, PATH set. Adjust it and pass it to
    /// [`Container::run_spec`].
    pub fn spec(&self, args: &[&str]) -> serde_json::Value {
        let rootfs = self.h.new_rootfs();
        self.scratch.lock().unwrap().push(rootfs.clone());
        let mut spec = self.h.base_spec();
        spec["root"] = serde_json::json!({ "path": rootfs });
        spec["process"]["args"] = serde_json::json!(args);
        spec["process"]["env"] = serde_json::json!([
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        ]);
        spec["process"]["terminal"] = serde_json::json!(false);
        // `ctr oci spec` knows no container id: its cgroupsPath is the namespace's own cgroup.
        spec["linux"]["cgroupsPath"] = format!("/{}/{}", self.h.info.namespace, self.id).into();
        if self.h.runtime == Runtime::Strata {
            spec["annotations"]["strata.dev/backend"] = self.h.tier.name().into();
        }
        spec
    }

    /// `ctr run --rm --config SPEC ID`: runs the container from a whole spec.
    pub fn run_spec(&self, spec: &serde_json::Value, flags: &[&str]) -> Output {
        let dir = self.h.info.state.join("specs");
        std::fs::create_dir_all(&dir).expect("creating the specs directory");
        let path = dir.join(format!(
            "s{}.json",
            self.h.next_id.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::write(&path, serde_json::to_vec_pretty(spec).unwrap()).expect("writing the spec");
        self.scratch.lock().unwrap().push(path.clone());
        let mut c = self.h.ctr();
        c.args(["run", "--rm", "--runtime", &self.runtime]);
        c.arg("--fifo-dir").arg(self.h.fifo_dir());
        c.args(self.h.runtime_config_flags());
        c.args(flags).arg("--config").arg(&path).arg(&self.id);
        cmd::run(c, None, self.h.ctr_timeout()).expect("running ctr")
    }

    /// `ctr run -d`: starts the container in the background. Panics if that fails.
    pub fn start(&self, flags: &[&str], args: &[&str]) {
        let out = cmd::run(self.run_cmd(true, flags, args), None, self.h.ctr_timeout())
            .expect("running ctr");
        assert!(out.success(), "starting {} failed: {out}", self.id);
    }

    /// `ctr run -d` returning what ctr said, for tests that expect a failure.
    pub fn try_start(&self, flags: &[&str], args: &[&str]) -> Output {
        cmd::run(self.run_cmd(true, flags, args), None, self.h.ctr_timeout()).expect("running ctr")
    }

    /// `ctr task exec --exec-id EXEC ID ARGS`.
    pub fn exec(&self, exec_id: &str, args: &[&str]) -> Output {
        self.exec_with(exec_id, &[], args, None)
    }

    /// `ctr task exec` with extra flags and input.
    pub fn exec_with(
        &self,
        exec_id: &str,
        flags: &[&str],
        args: &[&str],
        stdin: Option<&[u8]>,
    ) -> Output {
        cmd::run(
            self.exec_command(exec_id, flags, args),
            stdin,
            self.h.ctr_timeout(),
        )
        .expect("running ctr")
    }

    /// The `ctr task exec` command line.
    pub fn exec_command(&self, exec_id: &str, flags: &[&str], args: &[&str]) -> Command {
        let mut c = self.h.ctr();
        c.args(["task", "exec", "--exec-id", exec_id]);
        c.arg("--fifo-dir")
            .arg(self.h.fifo_dir())
            .args(flags)
            .arg(&self.id)
            .args(args);
        c
    }

    /// `ctr task kill -s SIGNAL ID`.
    pub fn kill(&self, signal: &str) -> Output {
        self.h.ctr_run(&["task", "kill", "-s", signal, &self.id])
    }

    /// The task's status from `ctr task ls` (RUNNING, PAUSED, STOPPED, ...), None if no task.
    pub fn status(&self) -> Option<String> {
        self.task_row().map(|(_, s)| s)
    }

    /// The task's host pid from `ctr task ls`.
    pub fn pid(&self) -> Option<u32> {
        self.task_row().and_then(|(p, _)| p.parse().ok())
    }

    fn task_row(&self) -> Option<(String, String)> {
        let out = self.h.ctr_run(&["task", "ls"]);
        out.stdout.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3 && f[0] == self.id).then(|| (f[1].to_string(), f[2].to_string()))
        })
    }

    /// Waits up to `timeout` for the task to reach `status`.
    pub fn wait_status(&self, status: &str, timeout: Duration) -> bool {
        cmd::poll(timeout, || {
            (self.status().as_deref() == Some(status)).then_some(())
        })
        .is_some()
    }

    /// Pids from `ctr task ps`.
    pub fn pids(&self) -> Result<Vec<u32>> {
        let out = self.h.ctr_run(&["task", "ps", &self.id]);
        if !out.success() {
            bail!("ctr task ps failed: {out}");
        }
        Ok(out
            .stdout
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect())
    }

    /// `ctr task metrics --format json`: containerd's cgroup v1 or v2 metrics, as JSON.
    pub fn metrics(&self) -> Result<serde_json::Value> {
        let out = self
            .h
            .ctr_run(&["task", "metrics", "--format", "json", &self.id]);
        if !out.success() {
            bail!("ctr task metrics failed: {out}");
        }
        serde_json::from_str(&out.stdout).with_context(|| format!("parsing {}", out.stdout))
    }

    /// Kills and removes the task and the container, ignoring errors.
    pub fn remove(&self) {
        let id = self.id.as_str();
        if self.status().is_some() {
            let _ = self.h.ctr_run(&["task", "kill", "-a", "-s", "SIGKILL", id]);
            let _ = cmd::poll(Duration::from_secs(10), || {
                (self.status().as_deref() != Some("RUNNING")).then_some(())
            });
            let _ = self.h.ctr_run(&["task", "rm", "-f", id]);
        }
        let _ = self.h.ctr_run(&["containers", "rm", id]);
    }

    /// The pid of this container's shim: the one process of the runtime's shim binary whose
    /// command line names this container's id and this harness's containerd. Panics unless
    /// there is exactly one.
    pub fn shim_pid(&self) -> u32 {
        let shim = self.h.runtime.shim_binary();
        let socket = self.h.info.socket.to_string_lossy();
        let shims: Vec<(u32, String)> =
            crate::daemon::pids_with_cmdline(&format!("-id {} ", self.id))
                .into_iter()
                .filter(|(_, cmd)| {
                    cmd.split_whitespace()
                        .next()
                        .is_some_and(|a0| a0.ends_with(shim))
                })
                .filter(|(_, cmd)| cmd.contains(&*socket))
                .collect();
        assert_eq!(
            shims.len(),
            1,
            "expected one {shim} for {}: {shims:?}",
            self.id
        );
        shims[0].0
    }

    /// The host processes that run this container's workload: its own processes where they
    /// are the host's, else (microvm) the pod VM's: QEMU and its helper daemons, found by the
    /// pod's state directory (which carries the id) on their command lines.
    pub fn host_pids(&self) -> Vec<u32> {
        if self.h.processes_on_the_host() {
            return self.pids().unwrap_or_default();
        }
        let shim = self.shim_pid();
        crate::daemon::pids_with_cmdline(&format!("/{}/vm/", self.id))
            .into_iter()
            .map(|(pid, _)| pid)
            .filter(|&pid| pid != shim)
            .collect()
    }

    /// Fails the test if anything of this container is left. See [`Harness::assert_no_leaks`].
    pub fn assert_no_leaks(&self) {
        self.h.assert_no_leaks(&[&self.id]);
    }

    /// Removes the container, then asserts that nothing of it is left.
    pub fn remove_and_check(&self) {
        self.remove();
        self.assert_no_leaks();
    }

    /// The containerd log lines about this container, for failure messages.
    pub fn log(&self) -> String {
        self.h.log_lines(&self.id, 20)
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("containerd log for {}:\n{}", self.id, self.log());
            eprintln!(
                "processes of {}:\n{}",
                self.id,
                crate::leaks::diagnose(&self.id)
            );
        }
        self.remove();
        for p in self.scratch.lock().unwrap().drain(..) {
            let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
        }
    }
}

/// Parses `ctr`'s answer file path argument helper: the bundle directory of a container.
pub fn bundle_dir(h: &Harness, id: &str) -> PathBuf {
    h.info
        .state
        .join("io.containerd.runtime.v2.task")
        .join(&h.info.namespace)
        .join(id)
}

/// Reads a whole file, with the path in the error.
pub fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Whether host process `pid` is one a tier keeps in a container (the sentry's keeper).
pub fn is_tier_process(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "strata-keeper")
}
