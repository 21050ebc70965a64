//! Bringing up the loopback interface of a network namespace the container created.
//!
//! runc does this for every new network namespace; libcontainer does not, and a workload
//! that talks to itself on 127.0.0.1 would fail. The shim enters the namespace from a
//! short-lived thread of its own (network namespaces are per thread), so no code runs in
//! the container's processes and the shim's other threads are untouched.

use std::fs::File;
use std::os::fd::AsRawFd;

use nix::sched::{setns, CloneFlags};
use strata_backend::{Error, Result};

/// Sets IFF_UP on `lo` in the network namespace of `pid`.
pub fn loopback_up(pid: u32) -> Result<()> {
    let ns = File::open(format!("/proc/{pid}/ns/net"))
        .map_err(|e| Error::io("open the container's network namespace", e))?;
    std::thread::Builder::new()
        .name("netns-lo".into())
        .spawn(move || -> Result<()> {
            setns(&ns, CloneFlags::CLONE_NEWNET)
                .map_err(|e| Error::io("enter the container's network namespace", e.into()))?;
            let sock = nix::sys::socket::socket(
                nix::sys::socket::AddressFamily::Inet,
                nix::sys::socket::SockType::Datagram,
                nix::sys::socket::SockFlag::SOCK_CLOEXEC,
                None,
            )?;
            ifflags::set_up(sock.as_raw_fd(), "lo")
                .map_err(|e| Error::io("bring up lo in the container's network namespace", e))
        })
        .map_err(|e| Error::io("spawn a thread", e))?
        .join()
        .map_err(|_| Error::Other("the loopback thread panicked".into()))?
}

#[allow(unsafe_code)]
mod ifflags {
    use std::os::fd::RawFd;

    /// SIOCGIFFLAGS, then SIOCSIFFLAGS with IFF_UP added.
    pub fn set_up(sock: RawFd, name: &str) -> std::io::Result<()> {
        // SAFETY: ifreq is plain old data; all-zero is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in req
            .ifr_name
            .iter_mut()
            .zip(name.bytes().take(libc::IFNAMSIZ - 1))
        {
            *dst = src as libc::c_char;
        }
        // SAFETY: SIOCGIFFLAGS reads the name and writes the flags of `req`, which lives
        // across the call; `sock` is an open socket.
        if unsafe { libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the kernel just filled the flags member of the union.
        unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
        // SAFETY: SIOCSIFFLAGS reads `req` (name and flags), which lives across the call.
        if unsafe { libc::ioctl(sock, libc::SIOCSIFFLAGS, &req) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}
