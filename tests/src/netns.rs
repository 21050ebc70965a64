//! A pod network made by hand, as CNI's bridge plugin makes one: a bridge on the host with the
//! gateway's address, a network namespace with a veth (`eth0`) in it holding the pod's address
//! and a default route through the gateway. Addresses come from 198.18.0.0/16, half of the
//! benchmarking range (RFC 2544), which no host routes: test traffic goes only to addresses
//! the test made. Everything is removed on drop, and [`sweep_stale`] removes what a killed test
//! process left.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::cmd;

/// Names start with this, then the test process's pid (bridges: `stn<pid % 100000>b<n>`).
const NS_PREFIX: &str = "strata-tn-";

fn ip(args: &[&str]) -> Result<String, String> {
    let mut c = Command::new("ip");
    c.args(args);
    let out = cmd::run(c, None, Duration::from_secs(20)).map_err(|e| format!("{e:#}"))?;
    if !out.success() {
        return Err(format!("{out}"));
    }
    Ok(out.stdout)
}

/// One pod network: a namespace on its own bridge.
pub struct TestNet {
    /// The namespace's name (`ip netns`).
    pub name: String,
    pub bridge: String,
    host_veth: String,
    /// The gateway's (the host's) address on the bridge.
    pub gateway: String,
    /// The pod's address (on `eth0` in the namespace).
    pub address: String,
}

impl TestNet {
    pub fn new() -> Result<TestNet, String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        sweep_stale();
        let pid = std::process::id();
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let third = (pid.wrapping_mul(4).wrapping_add(n)) % 256;
        let short = pid % 100_000;
        let net = TestNet {
            name: format!("{NS_PREFIX}{pid}-{n}"),
            bridge: format!("stn{short}b{n}"),
            host_veth: format!("stn{short}v{n}"),
            gateway: format!("198.18.{third}.1"),
            address: format!("198.18.{third}.2"),
        };
        let (ns, br, hv) = (
            net.name.as_str(),
            net.bridge.as_str(),
            net.host_veth.as_str(),
        );
        let gw = format!("{}/24", net.gateway);
        let addr = format!("{}/24", net.address);
        let steps: [&[&str]; 10] = [
            &["netns", "add", ns],
            &["link", "add", br, "type", "bridge"],
            &["addr", "add", &gw, "dev", br],
            &["link", "set", br, "up"],
            &[
                "link", "add", hv, "type", "veth", "peer", "name", "eth0", "netns", ns,
            ],
            &["link", "set", hv, "master", br, "up"],
            &["-n", ns, "link", "set", "eth0", "up"],
            &["-n", ns, "link", "set", "lo", "up"],
            &["-n", ns, "addr", "add", &addr, "dev", "eth0"],
            &["-n", ns, "route", "add", "default", "via", &net.gateway],
        ];
        for s in steps {
            // On failure, drop removes what was made.
            ip(s).map_err(|e| format!("making the test network {ns}: {e}"))?;
        }
        Ok(net)
    }

    /// The namespace's path, as CRI hands it to a runtime.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.name)
    }

    /// `ip` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> Result<String, String> {
        let mut a = vec!["-n", self.name.as_str()];
        a.extend_from_slice(args);
        ip(&a)
    }

    /// `tc` inside the namespace.
    pub fn tc(&self, args: &[&str]) -> Result<String, String> {
        let mut a = vec!["netns", "exec", self.name.as_str(), "tc"];
        a.extend_from_slice(args);
        ip(&a)
    }

    /// What a runtime left in the namespace: links other than `lo` and `eth0`, and qdiscs
    /// or filters on `eth0` beyond the kernel's own.
    pub fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        match self.ip(&["-o", "link", "show"]) {
            Ok(links) => {
                for l in links.lines() {
                    let name = l.split(':').nth(1).unwrap_or("").trim();
                    let name = name.split('@').next().unwrap_or(name);
                    if name != "lo" && name != "eth0" {
                        left.push(format!("link {name}"));
                    }
                }
            }
            Err(e) => left.push(format!("cannot list links: {e}")),
        }
        match self.tc(&["qdisc", "show", "dev", "eth0"]) {
            Ok(q) => left.extend(
                q.lines()
                    .filter(|l| l.contains("ingress") || l.contains("clsact"))
                    .map(|l| format!("qdisc {l}")),
            ),
            Err(e) => left.push(format!("cannot list qdiscs: {e}")),
        }
        left
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
        let _ = ip(&["link", "del", &self.host_veth]);
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

/// Removes the namespaces and bridges of test processes that are gone.
pub fn sweep_stale() {
    let Ok(rd) = std::fs::read_dir("/var/run/netns") else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((pid, n)) = name
            .strip_prefix(NS_PREFIX)
            .and_then(|r| r.split_once('-'))
            .and_then(|(p, n)| Some((p.parse::<u32>().ok()?, n.parse::<u32>().ok()?)))
        else {
            continue;
        };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let short = pid % 100_000;
        let _ = ip(&["netns", "del", &name]);
        let _ = ip(&["link", "del", &format!("stn{short}v{n}")]);
        let _ = ip(&["link", "del", &format!("stn{short}b{n}")]);
    }
}
