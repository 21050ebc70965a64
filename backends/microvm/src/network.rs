//! The pod network for a VM, as Kata's default "tcfilter" model: CNI has put a veth with the
//! pod's addresses and routes in the pod's network namespace; the tier adds a tap beside it in
//! that namespace and redirects every frame both ways between the two with tc (an ingress
//! qdisc and a `mirred egress redirect` filter on each). The VM gets a virtio-net device on the
//! tap with the veth's MAC address, and the agent gives the guest's interface the veth's
//! addresses, routes and MTU. The namespace's own stack then sees no traffic: the guest owns
//! the pod's address.
//!
//! The tap is not persistent: it goes away when the last descriptor on it closes (the VMM's
//! and, until the VM has started, the shim's). What stays in the namespace is the veth's
//! ingress qdisc, removed at the pod's end ([`PodNetwork::detach`]) and after a shim SIGKILL
//! from the record in the pod's directory ([`cleanup_orphan`]); CNI removes the veth with the
//! namespace.
//!
//! `ip` and `tc` (iproute2) do the reading and the tc set-up, run inside the namespace
//! (`setns` in the child before exec); the tap is created by a thread of the shim that has
//! entered the namespace, since a tap is made in the namespace of whoever opens it.
#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::Error;

/// The record in a pod's directory of what [`attach`] changed, for [`cleanup_orphan`].
pub const NET_RECORD_FILE: &str = "net.json";

/// One veth of the pod, mirrored to a tap that the VM's virtio-net device uses.
#[derive(Debug)]
pub struct Link {
    /// The veth's name in the pod's namespace (`eth0` under most CNI plugins).
    pub veth: String,
    /// The tap's name beside it.
    pub tap: String,
    /// The veth's MAC address: the guest interface's.
    pub mac: String,
    pub mtu: u32,
    /// The veth's IPv4 addresses, `a.b.c.d/len`.
    pub addresses: Vec<String>,
    /// The tap's descriptor, for the VMM; `None` once handed over ([`PodNetwork::release_taps`]).
    pub tap_fd: Option<OwnedFd>,
}

/// An IPv4 route of the namespace that the guest needs (the kernel's own per-address routes
/// are made by the guest's kernel when the address is set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// `default` or `a.b.c.d/len`.
    pub destination: String,
    /// Empty for a route on the link.
    pub gateway: String,
    /// The MAC address of the link it leaves by.
    pub mac: String,
}

/// The pod's network as the VM gets it.
#[derive(Debug)]
pub struct PodNetwork {
    pub netns: PathBuf,
    pub links: Vec<Link>,
    pub routes: Vec<Route>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    netns: PathBuf,
    veths: Vec<String>,
}

/// The network namespace that the host names for a pod (CRI: the one CNI set up), from the
/// sandbox container's spec; `None` when the spec asks for a new one or none.
pub fn pod_netns(spec: &oci_spec::runtime::Spec) -> Option<PathBuf> {
    use oci_spec::runtime::LinuxNamespaceType;
    spec.linux()
        .as_ref()?
        .namespaces()
        .as_ref()?
        .iter()
        .find(|n| n.typ() == LinuxNamespaceType::Network)?
        .path()
        .clone()
}

/// `program args...` run inside the network namespace `netns`; its stdout, or an error with
/// its stderr.
fn run_in(netns: &Path, program: &str, args: &[&str]) -> Result<String, Error> {
    let ns = File::open(netns).map_err(|e| Error::io(format!("open {}", netns.display()), e))?;
    let fd = ns.as_raw_fd();
    let mut cmd = Command::new(program);
    cmd.args(args);
    // SAFETY: setns is async-signal-safe and `fd` stays open in the parent until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // The shim reaps every child (a subreaper): held off while this one is waited for here.
    let guard = strata_backend::reaper::Reaper::global().fork_guard();
    let out = cmd.output();
    drop(guard);
    let out = out.map_err(|e| {
        Error::io(
            format!(
                "running {program} in {} (iproute2 is needed)",
                netns.display()
            ),
            e,
        )
    })?;
    drop(ns);
    if !out.status.success() {
        return Err(Error::Other(format!(
            "`{program} {}` in {}: {}",
            args.join(" "),
            netns.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[derive(Debug, Deserialize)]
struct IpLink {
    ifname: String,
    #[serde(default)]
    link_type: String,
    #[serde(default)]
    address: String,
    #[serde(default)]
    mtu: u32,
    #[serde(default)]
    addr_info: Vec<IpAddr>,
}

#[derive(Debug, Deserialize)]
struct IpAddr {
    family: String,
    local: String,
    prefixlen: u8,
}

#[derive(Debug, Deserialize)]
struct IpRoute {
    dst: String,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    dev: Option<String>,
    #[serde(default)]
    protocol: Option<String>,
    #[serde(rename = "type", default)]
    kind: Option<String>,
}

/// What the guest needs from `ip -j addr` and `ip -j -4 route` output: the namespace's
/// Ethernet links (not loopback, not a tap of ours) and its routes other than the kernel's.
fn parse(addr_json: &str, route_json: &str) -> Result<(Vec<IpLink>, Vec<IpRoute>), Error> {
    let links: Vec<IpLink> = serde_json::from_str(addr_json)
        .map_err(|e| Error::Other(format!("reading `ip -j addr` output: {e}")))?;
    let routes: Vec<IpRoute> = serde_json::from_str(route_json)
        .map_err(|e| Error::Other(format!("reading `ip -j route` output: {e}")))?;
    let links = links
        .into_iter()
        .filter(|l| l.link_type == "ether" && !l.ifname.starts_with(TAP_PREFIX))
        .collect();
    let routes = routes
        .into_iter()
        .filter(|r| r.protocol.as_deref() != Some("kernel"))
        .filter(|r| r.kind.as_deref().is_none_or(|k| k == "unicast"))
        .collect();
    Ok((links, routes))
}

const TAP_PREFIX: &str = "tap_strata";

/// Sets up the pod's network namespace for a VM: a tap per Ethernet link, the tc redirects,
/// and the record for [`cleanup_orphan`] in `record_dir`. `Ok(None)`: the namespace has no
/// Ethernet link (a pod without a network). On error nothing it made is left.
pub fn attach(netns: &Path, record_dir: &Path) -> Result<Option<PodNetwork>, Error> {
    let addrs = run_in(netns, "ip", &["-j", "addr", "show"])?;
    let routes = run_in(netns, "ip", &["-j", "-4", "route", "show"])?;
    let (ip_links, ip_routes) = parse(&addrs, &routes)?;
    if ip_links.is_empty() {
        return Ok(None);
    }
    let mut net = PodNetwork {
        netns: netns.to_path_buf(),
        links: Vec::new(),
        routes: Vec::new(),
    };
    let record = Record {
        netns: netns.to_path_buf(),
        veths: ip_links.iter().map(|l| l.ifname.clone()).collect(),
    };
    let text = serde_json::to_vec(&record).map_err(|e| Error::Other(e.to_string()))?;
    let record_path = record_dir.join(NET_RECORD_FILE);
    std::fs::write(&record_path, text)
        .map_err(|e| Error::io(format!("write {}", record_path.display()), e))?;
    for (n, l) in ip_links.iter().enumerate() {
        let tap = format!("{TAP_PREFIX}{n}");
        match mirror(netns, l, &tap) {
            Ok(fd) => net.links.push(Link {
                veth: l.ifname.clone(),
                tap,
                mac: l.address.clone(),
                mtu: l.mtu,
                addresses: l
                    .addr_info
                    .iter()
                    .filter(|a| a.family == "inet")
                    .map(|a| format!("{}/{}", a.local, a.prefixlen))
                    .collect(),
                tap_fd: Some(fd),
            }),
            Err(e) => {
                net.detach();
                let _ = std::fs::remove_file(&record_path);
                return Err(e);
            }
        }
    }
    for r in ip_routes {
        let Some(link) = r
            .dev
            .as_deref()
            .and_then(|d| net.links.iter().find(|l| l.veth == d))
        else {
            continue;
        };
        net.routes.push(Route {
            destination: r.dst,
            gateway: r.gateway.unwrap_or_default(),
            mac: link.mac.clone(),
        });
    }
    Ok(Some(net))
}

/// Creates `tap` beside `link` and redirects both ways between them.
fn mirror(netns: &Path, link: &IpLink, tap: &str) -> Result<OwnedFd, Error> {
    let fd = open_tap(netns, tap)?;
    let veth = link.ifname.as_str();
    let mtu = link.mtu.to_string();
    let steps: [&[&str]; 5] = [
        &["link", "set", "dev", tap, "mtu", &mtu, "up"],
        &["qdisc", "add", "dev", veth, "ingress"],
        &[
            "filter", "add", "dev", veth, "parent", "ffff:", "protocol", "all", "u32", "match",
            "u8", "0", "0", "action", "mirred", "egress", "redirect", "dev", tap,
        ],
        &["qdisc", "add", "dev", tap, "ingress"],
        &[
            "filter", "add", "dev", tap, "parent", "ffff:", "protocol", "all", "u32", "match",
            "u8", "0", "0", "action", "mirred", "egress", "redirect", "dev", veth,
        ],
    ];
    for (i, args) in steps.iter().enumerate() {
        let program = if i == 0 { "ip" } else { "tc" };
        if let Err(e) = run_in(netns, program, args) {
            let _ = run_in(netns, "tc", &["qdisc", "del", "dev", veth, "ingress"]);
            return Err(Error::Other(format!(
                "redirecting {veth} to the VM's tap {tap}: {e}"
            )));
        }
    }
    Ok(fd)
}

/// A tap named `name` in `netns` (not persistent: it lives as long as a descriptor on it).
fn open_tap(netns: &Path, name: &str) -> Result<OwnedFd, Error> {
    let ns = File::open(netns).map_err(|e| Error::io(format!("open {}", netns.display()), e))?;
    let name = name.to_string();
    // A thread of its own enters the namespace: the rest of the shim stays where it is.
    std::thread::spawn(move || -> Result<OwnedFd, Error> {
        // SAFETY: plain syscalls on descriptors this thread owns; `req` is a zeroed ifreq.
        unsafe {
            if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(Error::io(
                    "entering the pod's network namespace",
                    std::io::Error::last_os_error(),
                ));
            }
            let fd = libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(Error::io(
                    "open /dev/net/tun",
                    std::io::Error::last_os_error(),
                ));
            }
            let fd = OwnedFd::from_raw_fd(fd);
            let mut req: libc::ifreq = std::mem::zeroed();
            for (d, s) in req
                .ifr_name
                .iter_mut()
                .zip(name.bytes().take(libc::IFNAMSIZ - 1))
            {
                *d = s as libc::c_char;
            }
            req.ifr_ifru.ifru_flags =
                (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;
            if libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut req) != 0 {
                return Err(Error::io(
                    format!("creating the tap {name}"),
                    std::io::Error::last_os_error(),
                ));
            }
            Ok(fd)
        }
    })
    .join()
    .map_err(|_| Error::Other("the tap thread panicked".into()))?
}

impl PodNetwork {
    /// The taps' descriptors for the VMM's command line: (descriptor, MAC address).
    pub fn taps(&self) -> Vec<(RawFd, String)> {
        self.links
            .iter()
            .filter_map(|l| Some((l.tap_fd.as_ref()?.as_raw_fd(), l.mac.clone())))
            .collect()
    }

    /// Closes the shim's descriptors on the taps, once the VMM holds its own: a tap then
    /// goes away with the VMM.
    pub fn release_taps(&mut self) {
        for l in &mut self.links {
            l.tap_fd = None;
        }
    }

    /// Removes the redirects (the taps go with their descriptors). Errors are logged: the
    /// namespace may already be gone with its veth.
    pub fn detach(&mut self) {
        self.release_taps();
        let veths: Vec<String> = self.links.iter().map(|l| l.veth.clone()).collect();
        remove_redirects(&self.netns, &veths);
    }
}

fn remove_redirects(netns: &Path, veths: &[String]) {
    if !netns.exists() {
        return;
    }
    for veth in veths {
        if let Err(e) = run_in(netns, "tc", &["qdisc", "del", "dev", veth, "ingress"]) {
            tracing::debug!(error = %e, "removing the redirect of {veth}");
        }
    }
}

/// Undoes what [`attach`] recorded in `dir` (after the shim was killed): the veths' ingress
/// qdiscs. The taps went with the VMM.
pub fn cleanup_orphan(dir: &Path) {
    let path = dir.join(NET_RECORD_FILE);
    let Ok(text) = std::fs::read(&path) else {
        return;
    };
    if let Ok(rec) = serde_json::from_slice::<Record>(&text) {
        remove_redirects(&rec.netns, &rec.veths);
    }
    let _ = std::fs::remove_file(path);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_ip_prints() {
        let addr = r#"[{"ifindex":1,"ifname":"lo","link_type":"loopback","address":"00:00:00:00:00:00","mtu":65536,"addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8}]},
            {"ifindex":2,"ifname":"eth0","link_type":"ether","address":"16:ea:d6:b2:fb:44","mtu":1450,"addr_info":[{"family":"inet","local":"198.18.5.2","prefixlen":24},{"family":"inet6","local":"fe80::1","prefixlen":64}]},
            {"ifindex":3,"ifname":"tap_strata0","link_type":"ether","address":"fa:d4:29:d1:a1:7a","mtu":1500,"addr_info":[]}]"#;
        let route = r#"[{"dst":"default","gateway":"198.18.5.1","dev":"eth0"},
            {"dst":"198.18.5.0/24","dev":"eth0","protocol":"kernel","scope":"link","prefsrc":"198.18.5.2"},
            {"type":"blackhole","dst":"198.19.0.0/16"}]"#;
        let (links, routes) = parse(addr, route).unwrap();
        assert_eq!(links.len(), 1);
        assert_eq!(links[0].ifname, "eth0");
        assert_eq!(links[0].mtu, 1450);
        assert_eq!(routes.len(), 1);
        assert_eq!(routes[0].dst, "default");
        assert_eq!(routes[0].gateway.as_deref(), Some("198.18.5.1"));
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse("not json", "[]").is_err());
    }
}
