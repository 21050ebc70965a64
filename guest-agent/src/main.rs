//! `strata-guest-agent`: PID 1 of the microVM (vsock port 1024), or a host process for tests
//! (`--listen-unix PATH`).

use strata_guest_agent::service::serve;
use strata_guest_agent::{pid1, AGENT_VSOCK_PORT};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--listen-unix") {
        let Some(path) = args.get(i + 1) else {
            eprintln!("strata-guest-agent: --listen-unix needs a path");
            std::process::exit(2);
        };
        let r = serve(&format!("unix://{path}"));
        let _ = std::fs::remove_file(path);
        if let Err(e) = r {
            eprintln!("strata-guest-agent: {e}");
            std::process::exit(1);
        }
        return;
    }
    guest_mode()
}

fn guest_mode() -> ! {
    if let Err(e) = pid1::mount_basics() {
        eprintln!("strata-guest-agent: {e}");
    }
    if std::fs::read_to_string("/proc/cmdline")
        .map(|c| c.split_whitespace().any(|w| w == "strata.selftest=1"))
        .unwrap_or(false)
    {
        println!("strata-guest-agent: {}", pid1::selftest());
        pid1::power_off();
    }
    std::thread::spawn(|| loop {
        pid1::reap_orphans();
        std::thread::sleep(std::time::Duration::from_millis(100));
    });
    println!("strata-guest-agent: serving on vsock port {AGENT_VSOCK_PORT}");
    if let Err(e) = serve(&format!("vsock://-1:{AGENT_VSOCK_PORT}")) {
        eprintln!("strata-guest-agent: {e}");
    }
    pid1::power_off()
}
