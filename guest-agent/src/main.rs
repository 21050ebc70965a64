//! `strata-guest-agent`: PID 1 of the microVM (vsock port 1024), or a host process for tests
//! (`--listen-unix PATH`).

use strata_guest_agent::service::serve;
use strata_guest_agent::{pid1, AGENT_SERVING_MARKER, AGENT_VSOCK_PORT};

fn main() {
    // First, while this process has one thread: it may be the native tier's creating helper.
    if strata_native::creator::is_asked() {
        strata_native::creator::run(&[]);
    }
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--container-init") {
        let (Some(root), rest) = (args.get(2), args.get(3..).unwrap_or_default()) else {
            std::process::exit(2);
        };
        match strata_guest_agent::container::container_init(std::path::Path::new(root), rest) {
            Ok(code) => std::process::exit(code),
            Err(e) => {
                eprintln!("strata-guest-agent: container: {e}");
                std::process::exit(127);
            }
        }
    }
    if args.get(1).map(String::as_str) == Some("--vsock-probe") {
        // A test's probe, run in a container of the pod: does the agent at ADDR answer it?
        std::process::exit(vsock_probe(
            args.get(2).map(String::as_str).unwrap_or_default(),
        ));
    }
    if let Some(i) = args.iter().position(|a| a == "--listen-unix") {
        let Some(path) = args.get(i + 1) else {
            eprintln!("strata-guest-agent: --listen-unix needs a path");
            std::process::exit(2);
        };
        let state = args
            .iter()
            .position(|a| a == "--state")
            .and_then(|i| args.get(i + 1))
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| std::path::PathBuf::from(format!("{path}.state")));
        let r = serve(&format!("unix://{path}"), &state);
        let _ = std::fs::remove_file(path);
        if let Err(e) = r {
            eprintln!("strata-guest-agent: {e}");
            std::process::exit(1);
        }
        return;
    }
    guest_mode()
}

/// `--vsock-probe vsock://CID:PORT`: connects as the host would and asks `Version`. Prints
/// `answered` (exit 1) if the agent answered, `refused: ...` (exit 0) if the connection was
/// refused or closed before an answer, as the agent must do to anyone but the host.
fn vsock_probe(addr: &str) -> i32 {
    use strata_agent_protocol::client::{Agent, ClientError};
    let t0 = std::time::Instant::now();
    let r = Agent::connect(addr, std::time::Duration::from_secs(5));
    // Closed at once, not held open until the call's deadline.
    let at_once = t0.elapsed() < std::time::Duration::from_secs(4);
    match r {
        Ok(_) => {
            println!("answered: {addr}");
            1
        }
        Err(e @ (ClientError::Call { .. } | ClientError::Connect { .. })) if at_once => {
            println!("refused: {addr}: {}", strata_backend::chain(&e));
            0
        }
        Err(e) => {
            println!("error: {addr}: {}", strata_backend::chain(&e));
            2
        }
    }
}

fn guest_mode() -> ! {
    if let Err(e) = pid1::mount_basics() {
        eprintln!("strata-guest-agent: {e}");
    }
    match pid1::leave_initramfs() {
        Ok(true) => {
            // The basic mounts stayed with the old root.
            if let Err(e) = pid1::mount_basics() {
                eprintln!("strata-guest-agent: {e}");
            }
        }
        Ok(false) => {}
        Err(e) => eprintln!("strata-guest-agent: leaving the initramfs: {e}"),
    }
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    // The pod's virtio-fs share, where the host puts the containers' bundles. Without it the
    // agent still serves: creating a container from the share says why it is missing.
    if let Some(tag) = strata_guest_agent::share::tag(&cmdline) {
        if let Err(e) = strata_guest_agent::share::mount_share(tag) {
            eprintln!("strata-guest-agent: {e}");
        }
    }
    let param = |name: &str| {
        cmdline
            .split_whitespace()
            .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
            .map(str::to_string)
    };
    if param("strata.selftest").as_deref() == Some("agent") {
        // The protocol over vsock loopback, inside the guest (QEMU without vhost-vsock); the
        // bundle disk is mounted through the protocol's MountBundle.
        strata_guest_agent::selftest::run(param("strata.bundle").as_deref());
        pid1::power_off();
    }
    if param("strata.selftest").as_deref() == Some("1") {
        println!("strata-guest-agent: {}", pid1::selftest());
        // strata.rootfs=/dev/vdX strata.run=cmd,arg,...: run one command in a container on
        // that rootfs and report its exit status.
        if let (Some(dev), Some(run)) = (param("strata.rootfs"), param("strata.run")) {
            let argv: Vec<String> = run.split(',').map(str::to_string).collect();
            if let Ok(fs) = strata_guest_agent::container::detect_fs(&dev) {
                println!("strata-guest-agent: rootfs {dev} is {fs}, overlay on tmpfs");
            }
            match strata_guest_agent::container::prepare_rootfs(&dev)
                .and_then(|root| strata_guest_agent::container::run(root, &argv))
            {
                Ok(code) => println!("strata-guest-agent: container exited with status {code}"),
                Err(e) => println!("strata-guest-agent: container failed: {e}"),
            }
        }
        // strata.bundle=/dev/vdX: an OCI bundle (config.json, rootfs/) on that device; create
        // and run it with the native backend's code, its output on the console.
        if let Some(dev) = param("strata.bundle") {
            println!("strata-guest-agent: {}", run_bundle(&dev));
        }
        pid1::power_off();
    }
    println!(
        "{AGENT_SERVING_MARKER} at {:.3} s of guest uptime",
        strata_guest_agent::selftest::uptime()
    );
    let state = std::path::Path::new("/run/strata/containers");
    if let Err(e) = serve(&format!("vsock://-1:{AGENT_VSOCK_PORT}"), state) {
        eprintln!("strata-guest-agent: {e}");
    }
    pid1::power_off()
}

/// The self-test's OCI container: the bundle device mounted with an overlay, created, started
/// and waited for through [`Containers`](strata_guest_agent::containers::Containers).
fn run_bundle(dev: &str) -> String {
    use strata_guest_agent::containers::Containers;
    use strata_guest_agent::proto::agent::Stdio;
    let bundle = match strata_guest_agent::container::prepare_rootfs(dev) {
        Ok(b) => b,
        Err(e) => return format!("bundle failed: {e}"),
    };
    let _ = strata_backend::reaper::Reaper::global();
    let c = Containers::new("/run/strata/containers");
    let io = Stdio {
        stdout: "/dev/console".into(),
        stderr: "/dev/console".into(),
        ..Default::default()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    match c
        .create("selftest", bundle, Some(&io))
        .and_then(|_| c.start("selftest", ""))
    {
        Ok(_) => match c.wait("selftest", "", Some(deadline)).ok().flatten() {
            Some(status) => format!("OCI container exited with status {status}"),
            None => "OCI container did not exit within 120 s".into(),
        },
        Err(e) => format!("OCI container failed: {e}"),
    }
}
