//! `ConfigureNetwork`: the guest's side of the pod network. The host mirrors each veth of the
//! pod's network namespace to a tap behind a virtio-net device with the veth's MAC address;
//! here each such interface gets the veth's MTU and IPv4 addresses and is brought up, then the
//! routes are added, all in the guest's root network namespace, which the pod's containers
//! use. Plain `ioctl`s (`SIOCSIF*`, `SIOCADDRT`): the guest has no `ip`.
//!
//! IPv6 addresses are not configured (the kernel gives each interface its link-local one);
//! a second IPv4 address on an interface becomes an alias (`eth0:1`).

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use strata_backend::Error;

use crate::proto::agent::{ConfigureNetworkRequest, Interface, Route};

/// `a.b.c.d/len`.
fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8), Error> {
    let bad = || Error::InvalidArgument(format!("{s:?} is not an IPv4 address/prefix"));
    let (addr, len) = s.split_once('/').ok_or_else(bad)?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    if len > 32 {
        return Err(bad());
    }
    Ok((addr, len))
}

fn mask(len: u8) -> Ipv4Addr {
    Ipv4Addr::from(if len == 0 { 0 } else { u32::MAX << (32 - len) })
}

/// `aa:bb:cc:dd:ee:ff`, lower case, as sysfs prints it.
fn normal_mac(mac: &str) -> Result<String, Error> {
    let parts: Vec<&str> = mac.split(':').collect();
    if parts.len() != 6
        || parts
            .iter()
            .any(|p| p.len() != 2 || u8::from_str_radix(p, 16).is_err())
    {
        return Err(Error::InvalidArgument(format!(
            "{mac:?} is not a MAC address"
        )));
    }
    Ok(mac.to_ascii_lowercase())
}

/// The guest interface whose address is `mac`.
fn find_by_mac(mac: &str) -> Result<String, Error> {
    let want = normal_mac(mac)?;
    let dir =
        std::fs::read_dir("/sys/class/net").map_err(|e| Error::io("reading /sys/class/net", e))?;
    for e in dir.flatten() {
        let have = std::fs::read_to_string(e.path().join("address")).unwrap_or_default();
        if have.trim() == want {
            return Ok(e.file_name().to_string_lossy().into_owned());
        }
    }
    Err(Error::NotFound(format!(
        "no guest interface has the MAC address {want}"
    )))
}

struct Sock(OwnedFd);

fn sockaddr_in(a: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(a).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size; the bytes are a valid sockaddr.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

impl Sock {
    fn new() -> Result<Sock, Error> {
        // SAFETY: a plain socket call; the descriptor is owned at once.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(Error::io(
                "socket(AF_INET)",
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: fd was just returned by socket.
        Ok(Sock(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn ifreq(name: &str) -> Result<libc::ifreq, Error> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ {
            return Err(Error::InvalidArgument(format!("interface name {name:?}")));
        }
        // SAFETY: ifreq is plain data; all zeroes is valid.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
            *d = s as libc::c_char;
        }
        Ok(req)
    }

    fn ioctl(
        &self,
        what: &str,
        name: &str,
        op: libc::Ioctl,
        arg: *mut libc::c_void,
    ) -> Result<(), Error> {
        // SAFETY: `arg` points at a live ifreq or rtentry of the kind `op` takes.
        if unsafe { libc::ioctl(self.0.as_raw_fd(), op, arg) } != 0 {
            return Err(Error::io(
                format!("{what} of {name}"),
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    fn set_mtu(&self, name: &str, mtu: u32) -> Result<(), Error> {
        let mut req = Self::ifreq(name)?;
        req.ifr_ifru.ifru_mtu = mtu as libc::c_int;
        self.ioctl(
            "setting the MTU",
            name,
            libc::SIOCSIFMTU,
            (&raw mut req).cast(),
        )
    }

    fn set_addr(&self, name: &str, addr: Ipv4Addr, len: u8) -> Result<(), Error> {
        let mut req = Self::ifreq(name)?;
        req.ifr_ifru.ifru_addr = sockaddr_in(addr);
        self.ioctl(
            "setting the address",
            name,
            libc::SIOCSIFADDR,
            (&raw mut req).cast(),
        )?;
        let mut req = Self::ifreq(name)?;
        req.ifr_ifru.ifru_netmask = sockaddr_in(mask(len));
        self.ioctl(
            "setting the netmask",
            name,
            libc::SIOCSIFNETMASK,
            (&raw mut req).cast(),
        )
    }

    fn up(&self, name: &str) -> Result<(), Error> {
        let mut req = Self::ifreq(name)?;
        self.ioctl(
            "reading the flags",
            name,
            libc::SIOCGIFFLAGS,
            (&raw mut req).cast(),
        )?;
        // SAFETY: SIOCGIFFLAGS filled the flags member.
        unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
        self.ioctl(
            "bringing up",
            name,
            libc::SIOCSIFFLAGS,
            (&raw mut req).cast(),
        )
    }

    fn add_route(
        &self,
        dev: &str,
        dest: Option<(Ipv4Addr, u8)>,
        gateway: Option<Ipv4Addr>,
    ) -> Result<(), Error> {
        let mut name = Self::ifreq(dev)?.ifr_name;
        // SAFETY: rtentry is plain data; all zeroes is valid.
        let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
        let (dst, len) = dest.unwrap_or((Ipv4Addr::UNSPECIFIED, 0));
        rt.rt_dst = sockaddr_in(dst);
        rt.rt_genmask = sockaddr_in(mask(len));
        rt.rt_flags = libc::RTF_UP;
        if let Some(gw) = gateway {
            rt.rt_gateway = sockaddr_in(gw);
            rt.rt_flags |= libc::RTF_GATEWAY;
        }
        if len == 32 {
            rt.rt_flags |= libc::RTF_HOST;
        }
        rt.rt_dev = name.as_mut_ptr();
        match self.ioctl("adding a route", dev, libc::SIOCADDRT, (&raw mut rt).cast()) {
            // The kernel made it already (the route of an address's own subnet).
            Err(Error::Io { source, .. }) if source.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            r => r,
        }
    }
}

fn configure_interface(sock: &Sock, i: &Interface) -> Result<String, Error> {
    let name = find_by_mac(&i.mac)?;
    if i.mtu != 0 {
        sock.set_mtu(&name, i.mtu)?;
    }
    for (n, a) in i.addresses.iter().enumerate() {
        let (addr, len) = parse_cidr(a)?;
        let label = if n == 0 {
            name.clone()
        } else {
            format!("{name}:{n}")
        };
        sock.set_addr(&label, addr, len)?;
    }
    sock.up(&name)?;
    Ok(name)
}

fn add_route(sock: &Sock, r: &Route, names: &[(String, String)]) -> Result<(), Error> {
    let mac = normal_mac(&r.mac)?;
    let dev = names
        .iter()
        .find(|(m, _)| *m == mac)
        .map(|(_, n)| n.as_str())
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "route {:?} leaves by {mac}, not an interface of this request",
                r.destination
            ))
        })?;
    let dest = match r.destination.as_str() {
        "default" | "0.0.0.0/0" => None,
        d => Some(parse_cidr(d)?),
    };
    let gateway = match r.gateway.as_str() {
        "" => None,
        g => Some(g.parse::<Ipv4Addr>().map_err(|_| {
            Error::InvalidArgument(format!("gateway {g:?} is not an IPv4 address"))
        })?),
    };
    sock.add_route(dev, dest, gateway)
}

/// Configures the interfaces and routes; returns the guest's interface names.
pub fn configure(req: &ConfigureNetworkRequest) -> Result<Vec<String>, Error> {
    // Checked before anything is changed.
    for i in &req.interfaces {
        normal_mac(&i.mac)?;
        for a in &i.addresses {
            parse_cidr(a)?;
        }
    }
    if std::process::id() != 1 {
        return Err(Error::FailedPrecondition(
            "ConfigureNetwork is served by the guest's PID 1 only: an agent run as a host \
             process does not change the host's interfaces"
                .into(),
        ));
    }
    let sock = Sock::new()?;
    sock.up("lo")?;
    let mut names = Vec::new();
    for i in &req.interfaces {
        names.push((normal_mac(&i.mac)?, configure_interface(&sock, i)?));
    }
    // Link routes first: a gateway must be reachable when its route is added.
    let (on_link, via): (Vec<&Route>, Vec<&Route>) =
        req.routes.iter().partition(|r| r.gateway.is_empty());
    for r in on_link.into_iter().chain(via) {
        add_route(&sock, r, &names)?;
    }
    Ok(names.into_iter().map(|(_, n)| n).collect())
}

/// Whether `key` is a network sysctl name this agent writes: `net.` and then
/// `[A-Za-z0-9_-]` components joined by single dots.
fn net_sysctl_key(key: &str) -> bool {
    key.strip_prefix("net.").is_some_and(|rest| {
        rest.split('.').all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
    })
}

/// The pod's network sysctls (CRI sets `net.ipv4.ping_group_range` and
/// `net.ipv4.ip_unprivileged_port_start` on a pod's sandbox): runc applies them in the pod's
/// network namespace; here that namespace is the guest's own (the container's spec names
/// none, see `ConfigureNetwork`), where libcontainer refuses `net.*` sysctls, so the guest's
/// PID 1 applies them itself and takes them out of the spec. A container with a network
/// namespace of its own keeps them for libcontainer. An agent that is not PID 1 changes
/// nothing (the host's sysctls are never its to set). Returns whether the spec changed.
pub fn apply_pod_sysctls(spec: &mut oci_spec::runtime::Spec) -> Result<bool, Error> {
    use oci_spec::runtime::LinuxNamespaceType;
    if std::process::id() != 1 {
        return Ok(false);
    }
    let Some(linux) = spec.linux_mut() else {
        return Ok(false);
    };
    let own_netns = linux
        .namespaces()
        .as_ref()
        .is_some_and(|ns| ns.iter().any(|n| n.typ() == LinuxNamespaceType::Network));
    if own_netns {
        return Ok(false);
    }
    let Some(mut sysctls) = linux.sysctl().clone() else {
        return Ok(false);
    };
    let net: Vec<(String, String)> = sysctls
        .iter()
        .filter(|(k, _)| k.starts_with("net."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (key, value) in &net {
        if !net_sysctl_key(key) {
            return Err(Error::InvalidArgument(format!(
                "sysctl {key:?}: not a sysctl name"
            )));
        }
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        std::fs::write(&path, value).map_err(|e| {
            Error::InvalidArgument(format!("sysctl {key}={value:?} in the pod's network: {e}"))
        })?;
        sysctls.remove(key);
    }
    linux.set_sysctl(Some(sysctls));
    Ok(!net.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_and_masks() {
        assert_eq!(
            parse_cidr("198.18.5.2/24").unwrap(),
            (Ipv4Addr::new(198, 18, 5, 2), 24)
        );
        assert_eq!(mask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(mask(0), Ipv4Addr::UNSPECIFIED);
        assert_eq!(mask(32), Ipv4Addr::BROADCAST);
        for bad in ["198.18.5.2", "198.18.5.2/33", "fe80::1/64", "x/8", ""] {
            assert!(parse_cidr(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn net_sysctl_names() {
        for ok in [
            "net.ipv4.ping_group_range",
            "net.ipv4.conf.eth-0.forwarding",
            "net.core.somaxconn",
        ] {
            assert!(net_sysctl_key(ok), "{ok}");
        }
        for bad in [
            "net.",
            "net..x",
            "net.ipv4/../../x",
            "kernel.shmmax",
            "net.a b",
            "net.ipv4.",
        ] {
            assert!(!net_sysctl_key(bad), "{bad}");
        }
    }

    #[test]
    fn macs() {
        assert_eq!(
            normal_mac("16:EA:d6:b2:fb:44").unwrap(),
            "16:ea:d6:b2:fb:44"
        );
        for bad in [
            "16:ea:d6:b2:fb",
            "16:ea:d6:b2:fb:4g",
            "16-ea-d6-b2-fb-44",
            "",
        ] {
            assert!(normal_mac(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_host_process_agent_changes_nothing() {
        let req = ConfigureNetworkRequest {
            interfaces: vec![Interface {
                mac: "02:00:00:00:00:01".into(),
                mtu: 1500,
                addresses: vec!["198.18.9.2/24".into()],
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(matches!(configure(&req), Err(Error::FailedPrecondition(_))));
        let mut bad = req.clone();
        bad.interfaces[0].addresses = vec!["198.18.9.2".into()];
        assert!(matches!(configure(&bad), Err(Error::InvalidArgument(_))));
    }
}
