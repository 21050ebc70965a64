//! Messages with descriptors (SCM_RIGHTS) on the `SOCK_SEQPACKET` sockets between the shim
//! and a container's processes: the notification fds the pre-exec hook sends the supervisor,
//! the keeper's request socket, and an exec's request to the keeper and its answers.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{OwnedFd, RawFd};

use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType, UnixAddr,
};

use crate::sys;

/// The most descriptors one message carries (an exec's request to the keeper).
pub const MAX_FDS: usize = 5;

/// A connected pair of close-on-exec `SOCK_SEQPACKET` Unix sockets.
pub fn seqpacket_pair() -> nix::Result<(OwnedFd, OwnedFd)> {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
}

/// Sends `bytes` with `fds` attached (none: a plain message); a peer that is gone is an
/// error (EPIPE), not SIGPIPE.
pub fn send(sock: RawFd, bytes: &[u8], fds: &[RawFd]) -> nix::Result<usize> {
    let rights = [ControlMessage::ScmRights(fds)];
    sendmsg::<UnixAddr>(
        sock,
        &[IoSlice::new(bytes)],
        if fds.is_empty() { &[] } else { &rights },
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
}

/// One message of at most `max_len` bytes and its descriptors (close-on-exec, owned); an
/// empty message is the peer's end.
pub fn receive(sock: RawFd, max_len: usize) -> nix::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut buf = vec![0u8; max_len];
    let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(sock, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC)?;
    let mut fds = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(r) = c {
            fds.extend(r.into_iter().map(sys::own_fd));
        }
    }
    let len = msg.bytes;
    buf.truncate(len);
    Ok((buf, fds))
}
