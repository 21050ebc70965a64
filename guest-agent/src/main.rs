//! `strata-guest-agent`: PID 1 of the microVM (vsock), or a host process for tests
//! (`--listen-unix PATH`).

use std::os::unix::net::UnixListener;

use strata_guest_agent::protocol::{serve, After};
use strata_guest_agent::{pid1, AGENT_VSOCK_PORT};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--listen-unix") {
        let Some(path) = args.get(i + 1) else {
            eprintln!("strata-guest-agent: --listen-unix needs a path");
            std::process::exit(2);
        };
        std::process::exit(host_mode(path));
    }
    guest_mode()
}

/// The same service on a Unix socket; `SHUTDOWN` ends the process with 0.
fn host_mode(path: &str) -> i32 {
    let listener = match UnixListener::bind(path) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("strata-guest-agent: binding {path}: {e}");
            return 1;
        }
    };
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        if let Ok(After::Shutdown) = serve(stream) {
            let _ = std::fs::remove_file(path);
            return 0;
        }
    }
    1
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
    let Some(listener) = vsock_listener() else {
        eprintln!("strata-guest-agent: no vsock; powering off");
        pid1::power_off();
    };
    println!("strata-guest-agent: ready on vsock port {AGENT_VSOCK_PORT}");
    loop {
        let fd = match nix::sys::socket::accept(std::os::fd::AsRawFd::as_raw_fd(&listener)) {
            Ok(fd) => fd,
            Err(_) => continue,
        };
        // The accepted fd is a vsock stream socket; UnixStream serves only as an owned
        // Read + Write around it.
        let stream = std::os::unix::net::UnixStream::from(owned(fd));
        if let Ok(After::Shutdown) = serve(stream) {
            pid1::power_off();
        }
    }
}

/// Takes ownership of a descriptor that accept(2) just returned.
#[allow(unsafe_code)]
fn owned(fd: std::os::fd::RawFd) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: `fd` was returned by accept(2) a moment ago and no other object owns it, so
    // this OwnedFd is its only owner and closes it exactly once.
    unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }
}

fn vsock_listener() -> Option<std::os::fd::OwnedFd> {
    use nix::sys::socket::{
        bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType, VsockAddr,
    };
    let fd = socket(
        AddressFamily::Vsock,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| eprintln!("strata-guest-agent: vsock socket: {e}"))
    .ok()?;
    let addr = VsockAddr::new(libc::VMADDR_CID_ANY, AGENT_VSOCK_PORT);
    bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr)
        .map_err(|e| eprintln!("strata-guest-agent: vsock bind: {e}"))
        .ok()?;
    listen(&fd, Backlog::new(16).ok()?)
        .map_err(|e| eprintln!("strata-guest-agent: vsock listen: {e}"))
        .ok()?;
    Some(fd)
}
