//! Policy generation from a recording: a container run under the built-in `record` policy
//! (every decision allowed outside the always-denied set, each audited with its resolved
//! path) leaves an audit log from which `strata policy generate` writes the smallest policy in
//! this crate's TOML that lets the same run through again:
//!
//! - `[files]`: each path the workload opened (reopens of its own descriptors need none) (or tried to open and found missing, so that a
//!   later run sees ENOENT again rather than EACCES), read or read-write by its open flags, as
//!   an exact path; `/proc/<pid>` and `/dev/pts/<n>` components become `*` (they change from
//!   run to run); a path under another listed one with at least its access is left out;
//! - `[exec]`: each program executed (the resolved file);
//! - `[network]`: `none` without IP sockets, `loopback` when every address was a loopback one,
//!   else `cidr` with each address and port used; `raw` if a raw socket was made.
//!
//! What it cannot know: paths with names that differ from run to run (temporary files) need a
//! rule widened by hand; a directory listed (opened) becomes a prefix rule for all beneath it,
//! as the policy language has no exact-only rules.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;

use crate::audit::Record;
use crate::policy::{normalize, Access};

/// A generated policy and what the reader should know about it.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The policy, as TOML the policy loader accepts.
    pub toml: String,
    /// Records the log's rate limit dropped (the policy may then be incomplete).
    pub dropped: u64,
    /// Whether the log came from a run under the recording policy at all.
    pub recorded: bool,
}

const OPENS: &[&str] = &["open", "openat", "openat2", "creat"];
const EXECS: &[&str] = &["execve", "execveat"];
const ENOENT: i32 = libc::ENOENT;

/// `/proc/<digits>`, `/proc/*/task/<digits>` and `/dev/pts/<digits>` components as `*`; and
/// a name that is not UTF-8 (escaped in the log, `names.rs`) as `*`, since a rule cannot name
/// it (the policy loader refuses the escape characters).
fn generalise(path: &str) -> String {
    let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let numeric = |c: &str| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit());
    let mut out: Vec<&str> = Vec::with_capacity(comps.len());
    for (i, c) in comps.iter().enumerate() {
        let wild = numeric(c)
            && match i {
                1 => comps[0] == "proc",
                2 => comps[0] == "dev" && comps[1] == "pts",
                3 => comps[0] == "proc" && comps[2] == "task",
                _ => false,
            };
        out.push(if wild || c.chars().any(crate::names::is_escape) {
            "*"
        } else {
            c
        });
    }
    format!("/{}", out.join("/"))
}

fn writes(flags: &str) -> bool {
    ["O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC"]
        .iter()
        .any(|f| flags.split('|').any(|x| x == *f))
}

/// The path a record's call reached: the resolved one, else the path itself if absolute.
fn reached(r: &Record) -> Option<String> {
    let p = r.args.get("resolved").or_else(|| r.args.get("path"))?;
    p.starts_with('/').then(|| normalize(p))
}

fn covered(rules: &BTreeMap<String, Access>, path: &str, access: Access) -> bool {
    let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    (0..comps.len()).any(|n| {
        let prefix = format!("/{}", comps[..n].join("/"));
        rules.get(&prefix).is_some_and(|a| *a >= access)
    })
}

fn minimal(rules: BTreeMap<String, Access>) -> BTreeMap<String, Access> {
    rules
        .iter()
        .filter(|(p, a)| !covered(&rules, p, **a))
        .map(|(p, a)| (p.clone(), *a))
        .collect()
}

fn rule_text(sa: &SocketAddr) -> String {
    match sa {
        SocketAddr::V4(a) => format!("{}/32:{}", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("[{}]/128:{}", a.ip(), a.port()),
    }
}

fn is_loopback(sa: &SocketAddr) -> bool {
    match sa {
        SocketAddr::V4(a) => a.ip().is_loopback(),
        SocketAddr::V6(a) => {
            a.ip().is_loopback() || a.ip().to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

fn toml_list(items: impl IntoIterator<Item = String>) -> String {
    let v: Vec<String> = items
        .into_iter()
        .map(|s| toml::Value::String(s).to_string())
        .collect();
    format!("[{}]", v.join(", "))
}

/// Generates a policy from a recording's records; `source` only names it in the header.
pub fn generate(records: impl IntoIterator<Item = Record>, source: &str) -> Generated {
    let mut files: BTreeMap<String, Access> = BTreeMap::new();
    let mut exec: BTreeSet<String> = BTreeSet::new();
    let (mut ip, mut raw, mut recorded) = (false, false, false);
    let (mut connect, mut bind): (BTreeSet<SocketAddr>, BTreeSet<SocketAddr>) = Default::default();
    let mut dropped = 0;
    for r in records {
        let ok = r.decision == "allow" || r.decision == "emulate";
        match r.syscall.as_str() {
            "-" if r.decision == "suppressed" => dropped += r.count.unwrap_or(0),
            "-" if r.decision == "start" => {
                recorded |=
                    r.args.get("policy").map(String::as_str) == Some(crate::policy::RECORD_POLICY);
            }
            // A reopen of a descriptor the task holds is judged by that descriptor, not by
            // path rules.
            s if OPENS.contains(&s) && r.args.contains_key("own_fd") => {}
            s if OPENS.contains(&s) && (ok || r.errno == Some(ENOENT)) => {
                let Some(p) = reached(&r) else { continue };
                let access = if r.args.get("flags").is_some_and(|f| writes(f)) {
                    Access::ReadWrite
                } else {
                    Access::Read
                };
                let e = files.entry(generalise(&p)).or_insert(access);
                *e = (*e).max(access);
            }
            s if EXECS.contains(&s) && ok => {
                if let Some(p) = reached(&r) {
                    exec.insert(generalise(&p));
                }
            }
            "socket" if ok => {
                let fam = r.args.get("family").map(String::as_str);
                if matches!(fam, Some("AF_INET") | Some("AF_INET6")) {
                    ip = true;
                    let ty = r.args.get("type").and_then(|t| t.parse::<i32>().ok());
                    raw |= matches!(ty, Some(libc::SOCK_RAW) | Some(10));
                }
            }
            "connect" | "bind" | "listen" if ok => {
                let Some(sa) = r
                    .args
                    .get("addr")
                    .and_then(|a| a.parse::<SocketAddr>().ok())
                else {
                    continue;
                };
                ip = true;
                if r.syscall == "connect" {
                    connect.insert(sa);
                } else {
                    bind.insert(sa);
                }
            }
            _ => {}
        }
    }
    let files = minimal(files);
    let list = |a: Access| {
        toml_list(
            files
                .iter()
                .filter(|(_, x)| **x == a)
                .map(|(p, _)| p.clone()),
        )
    };
    let outside: Vec<&SocketAddr> = connect
        .iter()
        .chain(&bind)
        .filter(|s| !is_loopback(s))
        .collect();
    let mode = if !ip {
        "none"
    } else if outside.is_empty() {
        "loopback"
    } else {
        "cidr"
    };
    let mut t = format!(
        "# Generated by `strata policy generate` from {source}.\n\
         # Exact paths as the recorded run used them; widen by hand what changes between runs.\n\
         [files]\nread = {}\nread_write = {}\n\n[exec]\nallow = {}\n\n[network]\nmode = \"{mode}\"\n",
        list(Access::Read),
        list(Access::ReadWrite),
        toml_list(exec),
    );
    if mode == "cidr" {
        let rules = |set: &BTreeSet<SocketAddr>| {
            toml_list(set.iter().filter(|s| !is_loopback(s)).map(rule_text))
        };
        t.push_str(&format!(
            "connect = {}\nbind = {}\n",
            rules(&connect),
            rules(&bind)
        ));
    }
    if raw {
        t.push_str("raw = true\n");
    }
    Generated {
        toml: t,
        dropped,
        recorded,
    }
}

/// Reads an audit log (and its rotated predecessor `.1`, first) into records; unreadable
/// lines are skipped.
pub fn read_log(path: &Path) -> std::io::Result<Vec<Record>> {
    let mut old = path.as_os_str().to_owned();
    old.push(".1");
    let mut out = Vec::new();
    for (p, required) in [(Path::new(&old), false), (path, true)] {
        let text = match std::fs::read_to_string(p) {
            Ok(t) => t,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        out.extend(text.lines().filter_map(|l| serde_json::from_str(l).ok()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;

    fn rec(sc: &str, decision: &str, args: &[(&str, &str)], errno: Option<i32>) -> Record {
        Record {
            syscall: sc.into(),
            decision: decision.into(),
            args: args
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            errno,
            ..Default::default()
        }
    }

    /// A recorded name that is not UTF-8 becomes `*` in its rule: the policy loads, and lets
    /// the same name be opened and run again (session 9 noted such a policy could not be
    /// loaded).
    #[test]
    fn names_that_are_not_utf8_become_wildcards() {
        let file = crate::names::from_bytes(b"/data/caf\xe9/notes");
        let prog = crate::names::from_bytes(b"/opt/t\xf6ol");
        let records = vec![
            rec("-", "start", &[("policy", "record")], None),
            rec(
                "openat",
                "allow",
                &[("path", &file), ("flags", "O_RDONLY"), ("resolved", &file)],
                None,
            ),
            rec(
                "execve",
                "allow",
                &[("path", &prog), ("resolved", &prog)],
                None,
            ),
        ];
        let g = generate(records, "test");
        assert!(g.toml.contains("\"/data/*/notes\""), "{}", g.toml);
        assert!(g.toml.contains("\"/opt/*\""), "{}", g.toml);
        let p = Policy::parse(&g.toml, "gen", Path::new("gen.toml")).expect("loads");
        assert_eq!(p.file_access(&file), Access::Read);
        assert!(p.exec_allowed(&prog));
        assert_eq!(p.file_access("/data/other/secret"), Access::Deny);
    }

    #[test]
    fn a_recording_becomes_a_policy_the_loader_accepts() {
        let records = vec![
            rec("-", "start", &[("policy", "record")], None),
            rec(
                "openat",
                "allow",
                &[
                    ("path", "/etc/passwd"),
                    ("flags", "O_RDONLY"),
                    ("resolved", "/etc/passwd"),
                ],
                None,
            ),
            rec(
                "openat",
                "allow",
                &[
                    ("path", "x"),
                    ("flags", "O_WRONLY|O_CREAT|O_TRUNC"),
                    ("resolved", "/tmp/x"),
                ],
                None,
            ),
            rec(
                "openat",
                "allow",
                &[
                    ("path", "/tmp"),
                    ("flags", "O_RDONLY|O_DIRECTORY"),
                    ("resolved", "/tmp"),
                ],
                None,
            ),
            rec(
                "openat",
                "allow",
                &[
                    ("path", "/proc/self/status"),
                    ("flags", "O_RDONLY"),
                    ("resolved", "/proc/12/status"),
                ],
                None,
            ),
            rec(
                "openat",
                "error",
                &[
                    ("path", "/etc/missing"),
                    ("flags", "O_RDONLY"),
                    ("resolved", "/etc/missing"),
                ],
                Some(libc::ENOENT),
            ),
            rec(
                "openat",
                "error",
                &[
                    ("path", "/etc/shadow"),
                    ("flags", "O_RDONLY"),
                    ("resolved", "/etc/shadow"),
                ],
                Some(libc::EACCES),
            ),
            rec(
                "openat",
                "emulate",
                &[
                    ("path", "/proc/version"),
                    ("flags", "O_RDONLY"),
                    ("resolved", "/proc/version"),
                ],
                None,
            ),
            rec(
                "execve",
                "allow",
                &[("path", "/proc/self/exe"), ("resolved", "/bin/busybox")],
                None,
            ),
            rec(
                "socket",
                "allow",
                &[("family", "AF_INET"), ("type", "1")],
                None,
            ),
            rec(
                "connect",
                "allow",
                &[("family", "AF_INET"), ("addr", "10.1.2.3:443")],
                None,
            ),
            rec(
                "bind",
                "allow",
                &[("family", "AF_INET"), ("addr", "127.0.0.1:8080")],
                None,
            ),
            rec("-", "suppressed", &[], None),
        ];
        let g = generate(records, "test");
        assert!(g.recorded);
        let p = Policy::parse(&g.toml, "gen", Path::new("gen.toml"))
            .unwrap_or_else(|e| panic!("{e}\n{}", g.toml));
        assert_eq!(p.file_access("/etc/passwd"), Access::Read);
        assert_eq!(p.file_access("/etc/missing"), Access::Read);
        assert_eq!(p.file_access("/etc/shadow"), Access::Deny);
        assert_eq!(p.file_access("/etc/group"), Access::Deny);
        assert_eq!(p.file_access("/tmp/x"), Access::ReadWrite);
        assert_eq!(p.file_access("/tmp/y"), Access::Read);
        assert_eq!(p.file_access("/proc/99/status"), Access::Read);
        assert_eq!(p.file_access("/proc/version"), Access::Read);
        assert!(p.exec_allowed("/bin/busybox") && !p.exec_allowed("/bin/other"));
        assert!(p.connect_allowed(&"10.1.2.3:443".parse().unwrap()));
        assert!(!p.connect_allowed(&"10.1.2.3:80".parse().unwrap()));
        assert!(p.bind_allowed(&"127.0.0.1:8080".parse().unwrap()));
        assert!(!p.raw_sockets);
        // Nothing at all: no IP, no files.
        let g = generate(Vec::new(), "empty");
        let p = Policy::parse(&g.toml, "gen", Path::new("gen.toml")).unwrap();
        assert!(!p.ip_allowed() && !g.recorded);
    }

    #[test]
    fn generalisation() {
        assert_eq!(generalise("/proc/12/task/13/comm"), "/proc/*/task/*/comm");
        assert_eq!(generalise("/dev/pts/3"), "/dev/pts/*");
        assert_eq!(generalise("/etc/12"), "/etc/12");
    }
}
