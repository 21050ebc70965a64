//! `strata`: the operator's tool for the Strata shim.
//!
//! One subcommand per verb, each a variant of [`Command`] and a small `run_*` function; the logic
//! lives in the `strata_shim` library (`strata check` in `strata_shim::check`).

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use strata_backend::BackendKind;
use strata_shim::check::{self, Verdict};

#[derive(Parser)]
#[command(
    name = "strata",
    version,
    about = "Operator's tool for Strata, the containerd shim that runs each pod in its isolation tier"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Report what this host supports for each tier (native, sentry, microvm, wasm).
    Check(CheckArgs),
    /// Run a microVM on Strata's own VMM (the microvm tier's machine), for debugging.
    #[command(subcommand)]
    Vm(VmCommand),
    /// Summarise a sentry container's audit log (its trapped and refused system calls).
    Audit(AuditArgs),
    /// Sentry policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Put Strata on this node: binaries, guest image, handler configurations, and its
    /// handlers merged into containerd's configuration (then containerd restarted).
    Install(InstallArgs),
    /// Take back what `strata install` did: containerd's configuration as it was, the files
    /// removed or restored.
    Uninstall(InstallArgs),
}

#[derive(Args)]
struct InstallArgs {
    /// The node's root: every path is taken under it (the host's root mounted into the
    /// installer's container, or a test directory).
    #[arg(long, default_value = "/")]
    root: std::path::PathBuf,
    /// containerd's configuration, as a path on the node.
    #[arg(long, default_value = strata_shim::install::CONTAINERD_CONFIG)]
    config: std::path::PathBuf,
    /// Directory holding containerd-shim-strata-v2, strata and strata-wasm-runner (default:
    /// the one this program runs from).
    #[arg(long, value_name = "DIR")]
    from: Option<std::path::PathBuf>,
    /// Directory holding the microVM guest image (vmlinux, initramfs.cpio.gz).
    #[arg(long, value_name = "DIR")]
    guest: Option<std::path::PathBuf>,
    /// The node's containerd: its version picks the config format, and it checks the result.
    #[arg(long, default_value = "containerd", value_name = "PATH")]
    containerd: std::path::PathBuf,
    /// Install only these tiers' handlers (repeatable; default: all four).
    #[arg(long = "tier", value_name = "TIER", value_parser = parse_tier)]
    tiers: Vec<BackendKind>,
    /// Print what would change (the configuration's diff) and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Only merge the handlers into containerd's configuration (the files are put in place by
    /// a package or by hand).
    #[arg(long)]
    config_only: bool,
    /// Run containerd (to check the result) and systemctl in the mount namespace of the node's
    /// pid 1 (an installer container with hostPID and the node's root at --root).
    #[arg(long)]
    host_namespaces: bool,
    /// Do not write the Node Feature Discovery file naming the tiers that work on this node.
    #[arg(long)]
    no_node_features: bool,
    /// After installing, wait for SIGTERM or SIGINT, then exit 0 (the DaemonSet's container;
    /// its preStop hook runs `strata uninstall`).
    #[arg(long)]
    wait: bool,
    /// How containerd learns of the change: auto (systemd when it runs containerd), systemd,
    /// never.
    #[arg(long, default_value = "auto", value_parser = ["auto", "systemd", "never"])]
    restart: String,
    /// Restart containerd by SIGTERM to this pid (its supervisor starts it again).
    #[arg(long, value_name = "PID", conflicts_with = "restart")]
    containerd_pid: Option<i32>,
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Write the smallest policy that lets a recorded run through again, from the audit log of
    /// a sentry container run with `strata.dev/sentry-policy=record` (generate before the
    /// container is deleted: its log goes with it).
    Generate(GenerateArgs),
    /// Record a running sentry container: from now on its supervisor decides every call it
    /// sees by the recording policy (let through, outside the always-denied calls) and audits
    /// it without rate limit, until `--stop`; then `strata policy generate` writes a policy
    /// from its log. What the kernel enforces from the container's start (its Landlock rules,
    /// the calls its filter does not trap) stays as it was.
    Record(RecordArgs),
}

#[derive(Args)]
struct RecordArgs {
    /// The container id.
    container: String,
    /// containerd namespace (default: whichever has a container of that id).
    #[arg(long, short = 'n')]
    namespace: Option<String>,
    /// End the recording: the container's own policy decides again.
    #[arg(long)]
    stop: bool,
}

#[derive(Args)]
struct GenerateArgs {
    /// The container id, or the path of an audit log (`audit.jsonl`).
    source: String,
    /// containerd namespace (default: whichever has a container of that id).
    #[arg(long, short = 'n')]
    namespace: Option<String>,
    /// Write the policy here instead of standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<std::path::PathBuf>,
}

#[derive(Args)]
struct AuditArgs {
    /// The container id.
    container: String,
    /// containerd namespace (default: whichever has a container of that id).
    #[arg(long, short = 'n')]
    namespace: Option<String>,
}

#[derive(Subcommand)]
enum VmCommand {
    /// Boot a kernel with its console on stdout; exits 0 when the guest shuts down cleanly.
    Run(VmRunCli),
}

#[derive(Args)]
struct VmRunCli {
    /// ELF vmlinux with a PVH note, or a 64-bit bzImage.
    #[arg(long)]
    kernel: std::path::PathBuf,
    /// Initramfs.
    #[arg(long)]
    initrd: Option<std::path::PathBuf>,
    /// Kernel command line (default: console=ttyS0 reboot=k panic=1 pci=off ...).
    #[arg(long)]
    cmdline: Option<String>,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 128)]
    mem: u32,
    /// Number of vCPUs.
    #[arg(long, default_value_t = 1)]
    vcpus: u8,
    /// Disk image, PATH or PATH:ro (repeatable; /dev/vda, /dev/vdb, ...).
    #[arg(long, value_name = "PATH[:ro]")]
    disk: Vec<String>,
    /// Host Unix socket of the hybrid vsock device.
    #[arg(long, value_name = "UDS")]
    vsock: Option<std::path::PathBuf>,
    /// A virtio-net device on an inherited tap descriptor (opened with IFF_TAP | IFF_NO_PI |
    /// IFF_VNET_HDR) with the guest's MAC address (repeatable).
    #[arg(long, value_name = "FD,MAC")]
    net: Vec<String>,
    /// A virtio-fs device served by a vhost-user back end (virtiofsd) already listening on
    /// SOCKET; the guest mounts TAG (repeatable).
    #[arg(long, value_name = "TAG=SOCKET")]
    fs: Vec<String>,
    /// Fail if the guest has not shut down after this many seconds.
    #[arg(long, value_name = "SECS")]
    timeout: Option<u64>,
}

#[derive(Args)]
struct CheckArgs {
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Exit with status 1 unless this tier is available or degraded (repeatable).
    #[arg(long, value_name = "TIER", value_parser = parse_tier)]
    require: Vec<BackendKind>,
}

fn parse_tier(s: &str) -> Result<BackendKind, String> {
    s.parse().map_err(|e| format!("{e}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check(args) => run_check(&args),
        Command::Vm(VmCommand::Run(args)) => run_vm(args),
        Command::Audit(args) => run_audit(&args),
        Command::Policy(PolicyCommand::Generate(args)) => run_policy_generate(&args),
        Command::Policy(PolicyCommand::Record(args)) => run_policy_record(&args),
        Command::Install(args) => run_install(args, false),
        Command::Uninstall(args) => run_install(args, true),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("strata: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run_install(args: InstallArgs, uninstall: bool) -> anyhow::Result<ExitCode> {
    use strata_shim::install::{self, Restart};
    let mut opts = install::Options::for_node();
    opts.root = args.root;
    opts.config = args.config;
    if let Some(from) = args.from {
        opts.from = from;
    }
    opts.guest = args.guest;
    opts.containerd = args.containerd;
    if !args.tiers.is_empty() {
        opts.tiers = args.tiers;
    }
    opts.dry_run = args.dry_run;
    opts.config_only = args.config_only;
    opts.host_namespaces = args.host_namespaces;
    opts.node_features = !args.no_node_features;
    opts.restart = match (args.containerd_pid, args.restart.as_str()) {
        (Some(pid), _) => Restart::Pid(pid),
        (None, "systemd") => Restart::Systemd,
        (None, "never") => Restart::Never,
        _ => Restart::Auto,
    };
    let report = if uninstall {
        install::uninstall(&opts)?
    } else {
        install::install(&opts)?
    };
    print!("{}", report.diff);
    for line in &report.lines {
        println!("strata: {line}");
    }
    if args.wait && !uninstall {
        use nix::sys::signal::{SigSet, Signal};
        let mut set = SigSet::empty();
        set.add(Signal::SIGTERM);
        set.add(Signal::SIGINT);
        set.thread_block().context("blocking SIGTERM and SIGINT")?;
        let sig = set.wait().context("waiting for SIGTERM")?;
        println!("strata: {sig}: leaving (the preStop hook uninstalls)");
    }
    Ok(ExitCode::SUCCESS)
}

fn run_check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let report = check::run();
    if args.json {
        let json = serde_json::to_string_pretty(&report).context("encoding the report")?;
        println!("{json}");
    } else {
        print!("{}", check::render_text(&report));
    }
    let mut code = ExitCode::SUCCESS;
    for tier in &args.require {
        let verdict = report.tier(*tier).map(|t| t.verdict);
        if verdict.is_none_or(|v| v == Verdict::Unavailable) {
            eprintln!("strata: required tier {tier} is unavailable on this host");
            code = ExitCode::from(1);
        }
    }
    Ok(code)
}

fn run_vm(a: VmRunCli) -> anyhow::Result<ExitCode> {
    let mut args = strata_vmm::cli::VmRunArgs::new(a.kernel);
    args.initrd = a.initrd;
    args.cmdline = a.cmdline;
    args.mem_mib = a.mem;
    args.vcpus = a.vcpus;
    args.disks = a.disk;
    args.vsock = a.vsock;
    args.nets = a.net;
    args.fs = a.fs;
    args.timeout = a.timeout.map(std::time::Duration::from_secs);
    let code = strata_vmm::cli::vm_run(&args).context("strata vm run")?;
    Ok(ExitCode::from(code as u8))
}

fn run_audit(a: &AuditArgs) -> anyhow::Result<ExitCode> {
    let root = std::path::Path::new(strata_sentry::DEFAULT_STATE_ROOT);
    let path = strata_sentry::find_audit_log(root, a.namespace.as_deref(), &a.container)
        .with_context(|| {
            format!(
                "no audit log for container {:?} under {} (is it a running sentry container?)",
                a.container,
                root.display()
            )
        })?;
    let summary = strata_sentry::audit::summarise(&path)
        .with_context(|| format!("reading {}", path.display()))?;
    print!("{summary}");
    Ok(ExitCode::SUCCESS)
}

fn run_policy_record(a: &RecordArgs) -> anyhow::Result<ExitCode> {
    use strata_sentry::RECORD_POLICY;
    let root = std::path::Path::new(strata_sentry::DEFAULT_STATE_ROOT);
    let dir = strata_sentry::find_container_dir(root, a.namespace.as_deref(), &a.container)
        .with_context(|| {
            format!(
                "{:?} is not a sentry container under {} (not on the sentry tier, or deleted)",
                a.container,
                root.display()
            )
        })?;
    let log = dir.join(strata_sentry::audit::FILE);
    // The policies the log's `start` records name, in order: the container's own first,
    // then one per switch.
    let started = || -> anyhow::Result<Vec<String>> {
        Ok(strata_sentry::record::read_log(&log)
            .with_context(|| format!("reading {}", log.display()))?
            .into_iter()
            .filter(|r| r.syscall == "-" && r.decision == "start")
            .filter_map(|r| r.args.get("policy").cloned())
            .collect())
    };
    let before = started()?;
    let own = before.first().cloned().unwrap_or_default();
    if own == RECORD_POLICY {
        println!(
            "{}: runs under the recording policy from its start",
            a.container
        );
        return Ok(ExitCode::SUCCESS);
    }
    let control = dir.join(strata_sentry::RECORD_CONTROL_FILE);
    let recording =
        |policies: &[String]| policies.last().map(String::as_str) == Some(RECORD_POLICY);
    if recording(&before) != a.stop {
        println!(
            "{}: {}",
            a.container,
            if a.stop {
                "not recording"
            } else {
                "already recording"
            }
        );
        return Ok(ExitCode::SUCCESS);
    }
    let set = |on: bool| {
        if on {
            std::fs::write(&control, b"")
        } else {
            std::fs::remove_file(&control).or_else(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            })
        }
    };
    set(!a.stop).with_context(|| format!("writing {}", control.display()))?;
    // The supervisor looks at the control file at least once a second and answers with a
    // `start` record.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let now = started()?;
        if now.len() > before.len() && recording(&now) != a.stop {
            break;
        }
        if std::time::Instant::now() >= deadline {
            let _ = set(a.stop);
            anyhow::bail!(
                "{}: its supervisor did not answer within 5 s (is its shim running?); nothing changed",
                a.container
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    if a.stop {
        println!(
            "{}: recording ended; its policy {own:?} decides again",
            a.container
        );
    } else {
        println!(
            "{}: recording (policy {own:?} set aside for the calls its supervisor sees); \
             `strata policy record --stop {}` ends it, `strata policy generate {}` writes a policy",
            a.container, a.container, a.container
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn run_policy_generate(a: &GenerateArgs) -> anyhow::Result<ExitCode> {
    let root = std::path::Path::new(strata_sentry::DEFAULT_STATE_ROOT);
    let as_file = std::path::PathBuf::from(&a.source);
    let path = if as_file.is_file() {
        as_file
    } else {
        strata_sentry::find_audit_log(root, a.namespace.as_deref(), &a.source).with_context(
            || {
                format!(
                    "{:?} is neither an audit log nor a sentry container under {} (was it deleted?)",
                    a.source,
                    root.display()
                )
            },
        )?
    };
    let records = strata_sentry::record::read_log(&path)
        .with_context(|| format!("reading {}", path.display()))?;
    let g = strata_sentry::record::generate(records, &path.display().to_string());
    if !g.recorded {
        eprintln!(
            "strata: warning: {} is not from a run under the {:?} policy: calls its policy refused are missing",
            path.display(),
            strata_sentry::RECORD_POLICY
        );
    }
    if g.dropped > 0 {
        eprintln!(
            "strata: warning: the log's rate limit dropped {} records: the policy may be incomplete",
            g.dropped
        );
    }
    match &a.output {
        Some(out) => {
            std::fs::write(out, &g.toml).with_context(|| format!("writing {}", out.display()))?
        }
        None => print!("{}", g.toml),
    }
    Ok(ExitCode::SUCCESS)
}
