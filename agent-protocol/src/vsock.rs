//! AF_VSOCK stream sockets for the agent's port and stdio streams: listen, accept (with the
//! peer's CID), the peer's CID of an accepted socket, connect. The crate's only `unsafe`:
//! nix 0.29's `accept4` returns a raw descriptor, which is wrapped into an `OwnedFd` here at
//! once.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{
    accept4, bind, connect as nix_connect, getpeername, listen as nix_listen, socket,
    AddressFamily, Backlog, SockFlag, SockType, VsockAddr,
};

/// Any CID (binding).
pub const CID_ANY: u32 = u32::MAX;
/// The local CID (vsock loopback inside the guest).
pub const CID_LOCAL: u32 = 1;
/// The host's CID.
pub const CID_HOST: u32 = 2;

fn io_err(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// A listening socket on `port` of any CID, non-blocking (accept is polled), with a backlog of
/// `backlog` connections (a stream port takes one; the agent's port more).
pub fn listen(port: u32, backlog: i32) -> io::Result<OwnedFd> {
    let fd = socket(
        AddressFamily::Vsock,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(io_err)?;
    bind(fd.as_raw_fd(), &VsockAddr::new(CID_ANY, port)).map_err(io_err)?;
    nix_listen(&fd, Backlog::new(backlog).map_err(io_err)?).map_err(io_err)?;
    Ok(fd)
}

/// Accepts one connection (blocking socket, close-on-exec) and returns it with the peer's CID.
pub fn accept(listener: &OwnedFd) -> io::Result<(OwnedFd, u32)> {
    let raw = accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC).map_err(io_err)?;
    // SAFETY: accept4 succeeded, so `raw` is a new descriptor that nothing else owns; it is
    // wrapped once, here, and closed when the OwnedFd drops.
    let conn = unsafe { OwnedFd::from_raw_fd(raw) };
    let cid = peer_cid(conn.as_raw_fd())?;
    Ok((conn, cid))
}

/// The CID of the peer of the connected vsock socket `fd` (an error if `fd` is no vsock
/// socket).
pub fn peer_cid(fd: RawFd) -> io::Result<u32> {
    Ok(getpeername::<VsockAddr>(fd).map_err(io_err)?.cid())
}

/// Connects to `cid:port`.
pub fn connect(cid: u32, port: u32) -> io::Result<OwnedFd> {
    let fd = socket(
        AddressFamily::Vsock,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(io_err)?;
    nix_connect(fd.as_raw_fd(), &VsockAddr::new(cid, port)).map_err(io_err)?;
    Ok(fd)
}
