//! Sockets: `socket` by family, and `connect`, `bind`, `listen` by address (performed here on
//! a duplicate of the workload's socket where the policy judges addresses).

use super::*;

pub(super) fn socket_call(call: &mut Call<'_>) -> Outcome {
    let a = call.n.data.args;
    let (domain, ty, proto) = (a[0] as i32, a[1] as i32 & 0xf, a[2] as i32);
    call.arg("family", family_name(domain));
    call.arg("type", ty.to_string());
    call.arg("protocol", proto.to_string());
    let p = call.ctx.policy();
    match domain {
        libc::AF_UNIX => Outcome::Continue,
        libc::AF_NETLINK if proto == libc::NETLINK_ROUTE => Outcome::Continue,
        libc::AF_INET | libc::AF_INET6 => {
            if !p.ip_allowed() {
                Outcome::Errno(libc::EACCES, "network mode none")
            } else if (ty == libc::SOCK_RAW || ty == SOCK_PACKET) && !p.raw_sockets {
                Outcome::Errno(libc::EACCES, "raw sockets refused")
            } else {
                Outcome::Continue
            }
        }
        _ => Outcome::Errno(libc::EACCES, "socket family refused"),
    }
}

pub(super) fn family_name(d: i32) -> String {
    match d {
        libc::AF_UNIX => "AF_UNIX".into(),
        libc::AF_INET => "AF_INET".into(),
        libc::AF_INET6 => "AF_INET6".into(),
        libc::AF_NETLINK => "AF_NETLINK".into(),
        libc::AF_PACKET => "AF_PACKET".into(),
        libc::AF_VSOCK => "AF_VSOCK".into(),
        libc::AF_ALG => "AF_ALG".into(),
        d => format!("family_{d}"),
    }
}

/// A duplicate of the task's socket `fd` and its family.
pub(super) fn task_socket(t: &Task, fd: i32) -> Result<(OwnedFd, i32), i32> {
    let pidfd = sys::pidfd_open(t.tgid).map_err(|_| libc::ESRCH)?;
    let sock = sys::pidfd_getfd(&pidfd, fd).map_err(|_| libc::EBADF)?;
    let addr: SockaddrStorage =
        socket::getsockname(sock.as_raw_fd()).map_err(|_| libc::ENOTSOCK)?;
    let fam = addr.family().map(|f| f as i32).unwrap_or(libc::AF_UNSPEC);
    Ok((sock, fam))
}

pub(super) fn parse_sockaddr(b: &[u8]) -> Result<Option<SocketAddr>, i32> {
    if b.len() < 2 {
        return Err(libc::EINVAL);
    }
    let fam = u16::from_ne_bytes([b[0], b[1]]) as i32;
    match fam {
        libc::AF_UNSPEC => Ok(None),
        libc::AF_INET if b.len() >= 16 => {
            let port = u16::from_be_bytes([b[2], b[3]]);
            let ip = Ipv4Addr::new(b[4], b[5], b[6], b[7]);
            Ok(Some(SocketAddr::V4(SocketAddrV4::new(ip, port))))
        }
        libc::AF_INET6 if b.len() >= 28 => {
            let port = u16::from_be_bytes([b[2], b[3]]);
            let flow = u32::from_be_bytes(b[4..8].try_into().unwrap());
            let ip: [u8; 16] = b[8..24].try_into().unwrap();
            let scope = u32::from_ne_bytes(b[24..28].try_into().unwrap());
            Ok(Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(ip),
                port,
                flow,
                scope,
            ))))
        }
        libc::AF_INET | libc::AF_INET6 => Err(libc::EINVAL),
        _ => Err(libc::EAFNOSUPPORT),
    }
}

pub(super) fn addr_call(call: &mut Call<'_>, bind: bool) -> Outcome {
    let a = call.n.data.args;
    let pid = call.n.pid;
    let t = match task(call.ctx, pid, Need::Creds) {
        Ok(t) => t,
        Err(_) => return call.unreadable(),
    };
    let (sock, fam) = match task_socket(&t, a[0] as i32) {
        Ok(s) => s,
        Err(e) => return Outcome::Errno(e, "not a socket of the task"),
    };
    call.arg("family", family_name(fam));
    if fam != libc::AF_INET && fam != libc::AF_INET6 {
        // The decision rests on the socket's family only, not on the address: the kernel
        // resolves Unix and netlink addresses in the workload's own namespaces.
        return Outcome::Continue;
    }
    let len = (a[2] as usize).min(128);
    let bytes = match read_bytes(pid, a[1], len) {
        Ok(b) => b,
        Err(e) => return Outcome::Errno(e, "unreadable address"),
    };
    if !call.valid() {
        return Outcome::Gone;
    }
    if call.ctx.policy().any_address() {
        // No decision rests on the address (read for the audit only): the kernel does the
        // call in the workload's own network namespace, with its own answers (capability
        // checks, EINPROGRESS, ECONNREFUSED, AF_UNSPEC, a bad length...).
        if let Ok(Some(sa)) = parse_sockaddr(&bytes) {
            call.arg("addr", sa.to_string());
        }
        return Outcome::Continue;
    }
    let sa = match parse_sockaddr(&bytes) {
        Ok(Some(sa)) => sa,
        Ok(None) if !bind => {
            // AF_UNSPEC: dissolves a datagram socket's association, reaching no address.
            // Done on the duplicate (the same socket), so that the family judged is the one
            // the kernel acts on.
            return match sys::connect_unspec(sock.as_raw_fd()) {
                Ok(()) => Outcome::Value(0),
                Err(e) => Outcome::Errno(e.raw_os_error().unwrap_or(libc::EIO), "connect failed"),
            };
        }
        Ok(None) => return Outcome::Errno(libc::EAFNOSUPPORT, "bind to AF_UNSPEC"),
        Err(e) => return Outcome::Errno(e, "bad address"),
    };
    call.arg("addr", sa.to_string());
    let p = call.ctx.policy();
    if bind {
        if !p.bind_allowed(&sa) {
            return Outcome::Errno(libc::EACCES, "bind address refused by policy");
        }
        if sa.port() != 0 && sa.port() < 1024 && t.creds.cap_eff & (1 << CAP_NET_BIND_SERVICE) == 0
        {
            return Outcome::Errno(libc::EACCES, "privileged port without CAP_NET_BIND_SERVICE");
        }
        return match bind_or_connect(&sock, sa, true) {
            Ok(()) => Outcome::Value(0),
            Err(e) => Outcome::Errno(e as i32, "bind failed"),
        };
    }
    if !p.connect_allowed(&sa) {
        return Outcome::Errno(libc::EACCES, "connect address refused by policy");
    }
    let blocking = nix::fcntl::fcntl(sock.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)
        .map(|f| OFlag::from_bits_truncate(f) & OFlag::O_NONBLOCK == OFlag::empty())
        .unwrap_or(true);
    let connect = move || match bind_or_connect(&sock, sa, false) {
        Ok(()) => Outcome::Value(0),
        Err(e) => Outcome::Errno(e as i32, "connect failed"),
    };
    if blocking {
        return defer(call, connect);
    }
    connect()
}

pub(super) fn listen_call(call: &mut Call<'_>) -> Outcome {
    let t = match task(call.ctx, call.n.pid, Need::Creds) {
        Ok(t) => t,
        Err(_) => return call.unreadable(),
    };
    let (sock, fam) = match task_socket(&t, call.n.data.args[0] as i32) {
        Ok(s) => s,
        Err(e) => return Outcome::Errno(e, "not a socket of the task"),
    };
    call.arg("family", family_name(fam));
    if fam != libc::AF_INET && fam != libc::AF_INET6 {
        return Outcome::Continue;
    }
    let bound: Option<SocketAddr> = socket::getsockname::<SockaddrStorage>(sock.as_raw_fd())
        .ok()
        .and_then(|s| {
            s.as_sockaddr_in()
                .map(|a| SocketAddr::V4(SocketAddrV4::new(a.ip(), a.port())))
                .or_else(|| {
                    s.as_sockaddr_in6()
                        .map(|a| SocketAddr::V6(SocketAddrV6::new(a.ip(), a.port(), 0, 0)))
                })
        });
    match bound {
        Some(sa) => {
            call.arg("addr", sa.to_string());
            // Unbound, listen() binds the wildcard address: the policy must allow that.
            if call.ctx.policy().any_address() || call.ctx.policy().bind_allowed(&sa) {
                Outcome::Continue
            } else {
                Outcome::Errno(libc::EACCES, "listen address refused by policy")
            }
        }
        None => Outcome::Errno(libc::EACCES, "unknown socket address"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddrs() {
        let mut b = vec![0u8; 16];
        b[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        b[2..4].copy_from_slice(&8080u16.to_be_bytes());
        b[4..8].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(
            parse_sockaddr(&b).unwrap(),
            Some("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(parse_sockaddr(&b[..8]), Err(libc::EINVAL));
    }
}
