//! The tap ioctls virtio-net needs, and nothing else: checking that a descriptor handed to the
//! VMM is a tap opened as the microvm tier opens it (`IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`),
//! setting its virtio-net header to 12 bytes and its offloads to none. [`create`] and
//! [`set_up`] make a tap in the calling thread's network namespace, for tests and tools; the
//! tier opens its own (backends/microvm's `open_tap`).
//!
//! This is the only module of the device code with `unsafe` (ioctls on the tap and a socket).
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The tap's virtio-net header: `virtio_net_hdr_v1` (with `num_buffers`).
pub const VNET_HDR_LEN: usize = 12;

/// Why a descriptor cannot be used as the device's tap.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("descriptor {fd} is not open in the VMM process")]
    NotOpen {
        fd: RawFd,
        #[source]
        source: io::Error,
    },
    #[error("descriptor {fd} is not a tun/tap device (TUNGETIFF failed); pass the fd of an open /dev/net/tun attached to a tap")]
    NotTun {
        fd: RawFd,
        #[source]
        source: io::Error,
    },
    #[error("descriptor {fd} is a tun/tap device without {missing}; open it with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR")]
    WrongFlags { fd: RawFd, missing: &'static str },
    #[error("setting up the tap on descriptor {fd}: {what}")]
    Setup {
        fd: RawFd,
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

fn ifreq_named(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req
        .ifr_name
        .iter_mut()
        .zip(name.bytes().take(libc::IFNAMSIZ - 1))
    {
        *d = s as libc::c_char;
    }
    req
}

/// Checks that `fd` is a tap with `IFF_NO_PI | IFF_VNET_HDR`, and returns a duplicate of it
/// (close-on-exec, non-blocking, a 12-byte virtio-net header, no offloads) with the interface's
/// name. The caller keeps `fd`, which shares these settings (one open file description); the
/// tap lives as long as either descriptor is open.
pub fn open_checked(fd: RawFd) -> Result<(File, String), TapError> {
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) on any integer is sound: it fails with EBADF on a
    // descriptor that is not open, and otherwise returns a new descriptor this process owns.
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if dup < 0 {
        return Err(TapError::NotOpen {
            fd,
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: `dup` was just returned by F_DUPFD_CLOEXEC; nothing else owns it.
    let file = File::from(unsafe { OwnedFd::from_raw_fd(dup) });
    let raw = file.as_raw_fd();
    let mut req = ifreq_named("");
    // SAFETY: TUNGETIFF writes at most one `struct ifreq` through the pointer, which points to a
    // live, writable ifreq; on another kind of descriptor it fails (ENOTTY/EBADFD/EINVAL).
    if unsafe { libc::ioctl(raw, libc::TUNGETIFF, &mut req) } != 0 {
        return Err(TapError::NotTun {
            fd,
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: TUNGETIFF filled `ifru_flags`, the active member for this request.
    let flags = i32::from(unsafe { req.ifr_ifru.ifru_flags });
    for (bit, name) in [
        (libc::IFF_TAP, "IFF_TAP (it is a tun)"),
        (libc::IFF_NO_PI, "IFF_NO_PI"),
        (libc::IFF_VNET_HDR, "IFF_VNET_HDR"),
    ] {
        if flags & bit == 0 {
            return Err(TapError::WrongFlags { fd, missing: name });
        }
    }
    let name: String = req
        .ifr_name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8 as char)
        .collect();
    let setup = |what, r: libc::c_int| {
        if r < 0 {
            Err(TapError::Setup {
                fd,
                what,
                source: io::Error::last_os_error(),
            })
        } else {
            Ok(())
        }
    };
    let hdr = VNET_HDR_LEN as libc::c_int;
    // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, which points to `hdr`.
    setup("TUNSETVNETHDRSZ 12", unsafe {
        libc::ioctl(raw, libc::TUNSETVNETHDRSZ, &hdr)
    })?;
    // SAFETY: TUNSETOFFLOAD takes its flags by value; 0 turns every offload off.
    setup("TUNSETOFFLOAD 0", unsafe {
        libc::ioctl(raw, libc::TUNSETOFFLOAD, 0 as libc::c_ulong)
    })?;
    // SAFETY: F_GETFL/F_SETFL on a descriptor this function owns.
    let fl = unsafe { libc::fcntl(raw, libc::F_GETFL) };
    setup("F_GETFL", fl)?;
    // SAFETY: as above.
    setup("O_NONBLOCK", unsafe {
        libc::fcntl(raw, libc::F_SETFL, fl | libc::O_NONBLOCK)
    })?;
    Ok((file, name))
}

/// Creates the tap `name` (`IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`) in the calling thread's network
/// namespace.
pub fn create(name: &str) -> io::Result<OwnedFd> {
    // SAFETY: the path is a NUL-terminated literal; the result is checked.
    let fd = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened here; nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = ifreq_named(name);
    req.ifr_ifru.ifru_flags =
        (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one ifreq through the pointer, which points to `req`.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut req) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Brings the interface `name` up (SIOCSIFFLAGS) in the calling thread's network namespace.
pub fn set_up(name: &str) -> io::Result<()> {
    // SAFETY: plain socket(2); the result is checked.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `s` was just created here; nothing else owns it.
    let s = unsafe { OwnedFd::from_raw_fd(s) };
    let mut req = ifreq_named(name);
    // SAFETY: SIOCGIFFLAGS writes one ifreq through the pointer, which points to `req`.
    if unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS filled `ifru_flags`, the active member.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads one ifreq through the pointer, which points to `req`.
    if unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
