//! Sentry policies (TOML): path rules, an exec allowlist, network rules, extra trapped calls;
//! and the sentry configuration that says which policies a pod may pick.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The annotation with which a pod (or a plain container) picks a named policy.
pub const POLICY_ANNOTATION: &str = "strata.dev/sentry-policy";
/// The built-in policy, also shipped as `configs/sentry/default.toml`.
pub const DEFAULT_POLICY_TOML: &str = include_str!("../../../configs/sentry/default.toml");
/// Where the sentry looks for `sentry.toml` and policies when containerd names no Strata
/// configuration file.
pub const DEFAULT_POLICY_DIR: &str = "/etc/strata/sentry";
/// The built-in recording policy's name (no file replaces it): allows everything outside the
/// always-denied set and audits every decision, for `strata policy generate` (see `record`).
/// A pod may pick it only where `sentry.toml` allows it, as any other.
pub const RECORD_POLICY: &str = "record";

/// A policy or sentry configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read sentry policy {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("sentry policy {path} is not valid: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("annotation {POLICY_ANNOTATION}={name:?} is not allowed by {config}; allowed policies: {allowed}")]
    NotAllowed {
        name: String,
        config: String,
        allowed: String,
    },
}

/// What a path rule grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    Deny,
    Read,
    ReadWrite,
}

/// How the workload may use IP networking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NetMode {
    /// No IP sockets.
    None,
    /// Connect and bind on loopback addresses only.
    #[default]
    Loopback,
    /// The pod's network, as under runc: any address the container's own network namespace
    /// reaches (no decision rests on the address, so the kernel performs the call).
    Pod,
    /// Loopback plus the listed CIDRs (and ports).
    Cidr,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilesToml {
    #[serde(default)]
    read: Vec<String>,
    #[serde(default)]
    read_write: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecToml {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    require_private_memory: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkToml {
    #[serde(default)]
    mode: NetMode,
    #[serde(default)]
    connect: Vec<String>,
    #[serde(default)]
    bind: Vec<String>,
    #[serde(default)]
    raw: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SyscallsToml {
    #[serde(default)]
    audit: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditToml {
    max_bytes: Option<u64>,
    per_second: Option<u32>,
    /// Trap every open to audit it, where the kernel could decide them untrapped.
    #[serde(default)]
    opens: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyToml {
    #[serde(default)]
    files: FilesToml,
    #[serde(default)]
    exec: ExecToml,
    #[serde(default)]
    network: NetworkToml,
    #[serde(default)]
    syscalls: SyscallsToml,
    #[serde(default)]
    audit: AuditToml,
}

/// One address rule: a network and, optionally, a port.
#[derive(Debug, Clone, PartialEq)]
pub struct NetRule {
    pub addr: IpAddr,
    pub prefix: u8,
    pub port: Option<u16>,
}

impl NetRule {
    fn parse(s: &str) -> Result<NetRule, String> {
        // "10.0.0.0/8", "10.0.0.0/8:443", "[::1]/128:80", "::/0"
        let (net, port) = if let Some(rest) = s.strip_prefix('[') {
            let (net, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("{s:?}: missing ']'"))?;
            let (pfx, port) = match after.split_once(':') {
                Some((p, port)) => (p, Some(port)),
                None => (after, None),
            };
            (format!("{net}{pfx}"), port.map(str::to_string))
        } else if s.matches(':').count() == 1 {
            let (n, p) = s.split_once(':').unwrap();
            (n.to_string(), Some(p.to_string()))
        } else {
            (s.to_string(), None)
        };
        let (ip, prefix) = match net.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (net.as_str(), None),
        };
        let addr: IpAddr = ip
            .parse()
            .map_err(|_| format!("{s:?}: {ip:?} is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0..={max}"))?,
            None => max,
        };
        let port = match port {
            Some(p) => Some(
                p.parse::<u16>()
                    .map_err(|_| format!("{s:?}: {p:?} is not a port"))?,
            ),
            None => None,
        };
        Ok(NetRule { addr, prefix, port })
    }

    fn matches(&self, sa: &SocketAddr) -> bool {
        if let Some(p) = self.port {
            if p != sa.port() {
                return false;
            }
        }
        let ip = match sa.ip() {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let m = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.prefix as u32)
                };
                u32::from(a) & m == u32::from(b) & m
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let m = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.prefix as u32)
                };
                u128::from(a) & m == u128::from(b) & m
            }
            _ => false,
        }
    }
}

/// What the policy says of a syscall it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtraAction {
    /// Trap, record, let it run (no argument is looked at).
    Audit,
    /// Trap, record, fail with EPERM.
    Deny,
}

/// A checked, ready-to-use policy.
#[derive(Debug, Clone)]
pub struct Policy {
    pub name: String,
    /// (components, access), most specific first.
    files: Vec<(Vec<String>, Access)>,
    exec: Vec<Vec<String>>,
    pub require_private_memory: bool,
    pub net_mode: NetMode,
    pub connect: Vec<NetRule>,
    pub bind: Vec<NetRule>,
    pub raw_sockets: bool,
    /// Syscall name → (number, action), for calls the policy adds.
    pub extra: HashMap<String, (i32, ExtraAction)>,
    pub audit_max_bytes: u64,
    pub audit_per_second: u32,
    /// `[audit] opens = true`: every open is trapped and audited, even where
    /// [`Self::kernel_opens`] would leave them to the kernel.
    pub audit_opens: bool,
    /// Recording mode: every decision rests on the always-denied set alone, and each is
    /// audited (no rate limit) so that a policy can be generated from the log.
    pub record: bool,
}

fn components(p: &str) -> Vec<String> {
    p.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(str::to_string)
        .collect()
}

fn check_path(key: &str, p: &str) -> Result<Vec<String>, String> {
    if !p.starts_with('/') {
        return Err(format!("{key}: {p:?} must be an absolute path"));
    }
    let c = components(p);
    if c.iter().any(|c| c == "..") {
        return Err(format!("{key}: {p:?} must not contain '..'"));
    }
    if p.chars().any(crate::names::is_escape) {
        // The supervisor's escape for bytes that are not UTF-8 (names.rs): a rule must
        // never equal an escaped component.
        return Err(format!(
            "{key}: {p:?} holds a character of U+10FF00..U+10FFFF, which rules cannot name"
        ));
    }
    Ok(c)
}

/// Lexical normalisation of an absolute path (`.`, `..` and empty components folded; never
/// above `/`): only for matching already-resolved paths against rules (the supervisor's, and
/// those of a policy generated from a recording) and for spotting `/proc/self`.
pub(crate) fn normalize(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    format!("/{}", out.join("/"))
}

fn matches_prefix(rule: &[String], path: &[&str]) -> bool {
    rule.len() <= path.len() && rule.iter().zip(path).all(|(r, p)| r == "*" || r == p)
}

impl Policy {
    /// The built-in default policy.
    pub fn builtin_default() -> Policy {
        Policy::parse(
            DEFAULT_POLICY_TOML,
            "default",
            Path::new("<built-in default>"),
        )
        .expect("the built-in default policy is valid")
    }

    /// Parses and checks a policy; `path` only names the file in errors.
    pub fn parse(text: &str, name: &str, path: &Path) -> Result<Policy, PolicyError> {
        let invalid = |message: String| PolicyError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let t: PolicyToml = toml::from_str(text).map_err(|e| invalid(e.message().to_string()))?;
        let mut files = Vec::new();
        for (key, list, access) in [
            ("files.read", &t.files.read, Access::Read),
            ("files.read_write", &t.files.read_write, Access::ReadWrite),
            ("files.deny", &t.files.deny, Access::Deny),
        ] {
            for p in list {
                files.push((check_path(key, p).map_err(invalid)?, access));
            }
        }
        // Most specific first; on equal length, deny before read before read-write.
        files.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        let mut exec = Vec::new();
        for p in &t.exec.allow {
            exec.push(check_path("exec.allow", p).map_err(invalid)?);
        }
        let parse_rules = |key: &str, list: &[String]| -> Result<Vec<NetRule>, PolicyError> {
            list.iter()
                .map(|s| NetRule::parse(s).map_err(|m| invalid(format!("{key}: {m}"))))
                .collect()
        };
        let connect = parse_rules("network.connect", &t.network.connect)?;
        let bind = parse_rules("network.bind", &t.network.bind)?;
        if t.network.mode != NetMode::Cidr && !(connect.is_empty() && bind.is_empty()) {
            return Err(invalid(
                "network.connect and network.bind need network.mode = \"cidr\"".into(),
            ));
        }
        let mut extra = HashMap::new();
        for (key, list, action) in [
            ("syscalls.audit", &t.syscalls.audit, ExtraAction::Audit),
            ("syscalls.deny", &t.syscalls.deny, ExtraAction::Deny),
        ] {
            for name in list {
                let nr = libseccomp::ScmpSyscall::from_name(name)
                    .map_err(|_| invalid(format!("{key}: no system call named {name:?}")))?;
                if crate::filter::is_managed(name) {
                    return Err(invalid(format!(
                        "{key}: {name} is always handled by the sentry and cannot be listed"
                    )));
                }
                if extra
                    .insert(name.clone(), (i32::from(nr), action))
                    .is_some()
                {
                    return Err(invalid(format!("{name} is listed twice under [syscalls]")));
                }
            }
        }
        Ok(Policy {
            name: name.to_string(),
            files,
            exec,
            require_private_memory: t.exec.require_private_memory,
            net_mode: t.network.mode,
            connect,
            bind,
            raw_sockets: t.network.raw,
            extra,
            audit_max_bytes: t.audit.max_bytes.unwrap_or(8 << 20).max(4096),
            audit_per_second: t.audit.per_second.unwrap_or(200).max(1),
            audit_opens: t.audit.opens,
            record: false,
        })
    }

    /// The built-in recording policy: every path read-write, exec from anywhere, any address
    /// and raw sockets; the always-denied calls and device nodes stay refused.
    pub fn recording() -> Policy {
        let text = "[files]\nread_write = [\"/\"]\n[exec]\nallow = [\"/\"]\n\
                    [network]\nmode = \"cidr\"\nconnect = [\"0.0.0.0/0\", \"[::]/0\"]\n\
                    bind = [\"0.0.0.0/0\", \"[::]/0\"]\nraw = true\n\
                    [audit]\nmax_bytes = 67108864\nper_second = 1000000\n";
        let mut p = Policy::parse(text, RECORD_POLICY, Path::new("<built-in record>"))
            .expect("the built-in recording policy is valid");
        p.record = true;
        p
    }

    /// The exec allowlist as paths (a rule's components up to its first `*`), for Landlock;
    /// `None` when recording (exec from anywhere).
    pub fn exec_prefixes(&self) -> Option<Vec<String>> {
        if self.record {
            return None;
        }
        Some(
            self.exec
                .iter()
                .map(|r| {
                    let fixed: Vec<&str> = r
                        .iter()
                        .take_while(|c| *c != "*")
                        .map(String::as_str)
                        .collect();
                    format!("/{}", fixed.join("/"))
                })
                .collect(),
        )
    }

    /// What the rules grant on `path` (an absolute, normalised container path).
    pub fn file_access(&self, path: &str) -> Access {
        let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        self.files
            .iter()
            .find(|(rule, _)| matches_prefix(rule, &comps))
            .map(|(_, a)| *a)
            .unwrap_or(Access::Deny)
    }

    /// The access the rules grant on `tree` (an absolute, normalised container path) and on
    /// every path beneath it, if it is the same throughout: no rule beneath `tree` (or one
    /// whose `*` components could match beneath it) grants anything else. `None` when the
    /// tree is not uniform, or is denied. The first step of the kernel-enforced opens of issue
    /// 13: only such a tree can become one Landlock rule with the same rights, and only an
    /// open whose path falls in one may ever be left to the kernel (conservative: a rule of
    /// the same access nested under one of another also makes the tree non-uniform).
    pub fn uniform_access(&self, tree: &str) -> Option<Access> {
        let comps: Vec<&str> = tree.split('/').filter(|c| !c.is_empty()).collect();
        let access = self.file_access(tree);
        if access == Access::Deny {
            return None;
        }
        let beneath = |rule: &[String]| {
            rule.len() > comps.len() && rule.iter().zip(&comps).all(|(r, c)| r == "*" || r == c)
        };
        if self
            .files
            .iter()
            .any(|(rule, a)| *a != access && beneath(rule))
        {
            return None;
        }
        Some(access)
    }

    /// The trees a Landlock rule may stand for (issue 13, docs/sentry.md "Kernel-enforced
    /// opens"): each rule of the policy that names a plain path (no `*`), allows something,
    /// and is [uniform](Self::uniform_access) with exactly that access; never the root, nor
    /// anything at or beneath `/proc`, `/sys` or `/dev`, whose files the supervisor answers
    /// itself (the task's own `/proc/self`, emulated files, namespaced sysctls, the device
    /// list). Sorted and without duplicates. Empty for the recording policy, which must see
    /// every open.
    pub fn kernel_trees(&self) -> Vec<(String, Access)> {
        if self.record {
            return Vec::new();
        }
        let mut out: Vec<(String, Access)> = self
            .files
            .iter()
            .filter(|(rule, a)| *a != Access::Deny && !rule.iter().any(|c| c == "*"))
            .map(|(rule, _)| format!("/{}", rule.join("/")))
            .filter(|p| !kernel_excluded(p))
            .filter_map(|p| self.uniform_access(&p).map(|a| (p, a)))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The access the policy allows uniformly on `tree` (see [`Self::uniform_access`]) where
    /// a Landlock rule may stand for it, i.e. outside the trees [`Self::kernel_trees`] never
    /// takes.
    pub fn kernel_access(&self, tree: &str) -> Option<Access> {
        if self.record || kernel_excluded(&normalize(tree)) {
            return None;
        }
        self.uniform_access(tree)
    }

    /// Whether the kernel alone can decide every open as this policy does, so that opens need
    /// not be trapped at all (issue 13, docs/sentry.md "Opens the kernel decides"): the files
    /// rules are `read_write = ["/"]` and deny rules that are either fixed paths in `/proc` or
    /// `/sys` outside any process's own directory (masked in the container's mount namespace,
    /// as runc masks `/proc/kcore`: [`KernelOpens::masks`]) or a process's memory and mapped
    /// files ([`PTRACE_GUARDED`], which the kernel opens only for a task that may ptrace that
    /// process). Never for the recording policy or one that audits opens, which must see
    /// every open; never for any other rule, which the kernel could not enforce by path.
    pub fn kernel_opens(&self) -> Option<KernelOpens> {
        if self.record || self.audit_opens {
            return None;
        }
        let mut allows = self.files.iter().filter(|(_, a)| *a != Access::Deny);
        match (allows.next(), allows.next()) {
            (Some((root, Access::ReadWrite)), None) if root.is_empty() => {}
            _ => return None,
        }
        let mut masks = Vec::new();
        for (rule, _) in self.files.iter().filter(|(_, a)| *a == Access::Deny) {
            let path = format!("/{}", rule.join("/"));
            if PTRACE_GUARDED.contains(&path.as_str()) {
                continue;
            }
            let fixed = match rule.as_slice() {
                [top, entry, ..] if top == "proc" => {
                    !(entry == "self"
                        || entry == "thread-self"
                        || entry.bytes().all(|b| b.is_ascii_digit()))
                }
                [top, _, ..] => top == "sys",
                _ => false,
            };
            if !fixed || rule.iter().any(|c| c == "*") {
                return None;
            }
            masks.push(path);
        }
        masks.sort();
        Some(KernelOpens { masks })
    }

    /// Whether the file at `path` (resolved) may be executed.
    pub fn exec_allowed(&self, path: &str) -> bool {
        let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        self.exec.iter().any(|rule| matches_prefix(rule, &comps))
    }

    /// Whether every address is allowed (connect, bind and listen are then the kernel's).
    pub fn any_address(&self) -> bool {
        self.net_mode == NetMode::Pod
    }

    /// Whether IP sockets may be created at all.
    pub fn ip_allowed(&self) -> bool {
        self.net_mode != NetMode::None
    }

    /// Whether the workload may connect to `sa`.
    pub fn connect_allowed(&self, sa: &SocketAddr) -> bool {
        match self.net_mode {
            NetMode::None => false,
            NetMode::Loopback => is_loopback(sa),
            NetMode::Pod => true,
            NetMode::Cidr => is_loopback(sa) || self.connect.iter().any(|r| r.matches(sa)),
        }
    }

    /// Whether the workload may bind to `sa`.
    pub fn bind_allowed(&self, sa: &SocketAddr) -> bool {
        match self.net_mode {
            NetMode::None => false,
            NetMode::Loopback => is_loopback(sa),
            NetMode::Pod => true,
            NetMode::Cidr => is_loopback(sa) || self.bind.iter().any(|r| r.matches(sa)),
        }
    }
}

/// Deny rules that the kernel's own ptrace access check answers once opens are the kernel's:
/// a process's memory and its mapped files, which the kernel opens only for a task that may
/// ptrace that process (same credentials and dumpable, or `CAP_SYS_PTRACE`; Landlock's ptrace
/// rule keeps every other domain out), as under runc. The supervisor, which is not the task,
/// cannot ask that check for it, and so refuses them outright when it performs opens.
pub const PTRACE_GUARDED: &[&str] = &[
    "/proc/*/mem",
    "/proc/*/task/*/mem",
    "/proc/*/map_files",
    "/proc/*/task/*/map_files",
];

/// What the kernel needs for a policy whose opens it decides ([`Policy::kernel_opens`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelOpens {
    /// The denied paths, each to be masked in the container (`linux.maskedPaths`: the null
    /// device over a file, an empty read-only tmpfs over a directory).
    pub masks: Vec<String>,
}

/// Whether `path` (normalised) is the root or at or beneath `/proc`, `/sys` or `/dev`: never
/// left to Landlock (see [`Policy::kernel_trees`]).
fn kernel_excluded(path: &str) -> bool {
    let first = path.split('/').find(|c| !c.is_empty());
    matches!(first, None | Some("proc") | Some("sys") | Some("dev"))
}

fn is_loopback(sa: &SocketAddr) -> bool {
    match sa.ip() {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// `sentry.toml`: the policies a pod may pick.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SentryToml {
    #[serde(default = "default_name")]
    default_policy: String,
    #[serde(default = "default_allowed")]
    allowed_policies: Vec<String>,
}

fn default_name() -> String {
    "default".into()
}

fn default_allowed() -> Vec<String> {
    vec!["default".into()]
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The policy directory for a Strata configuration file: `sentry/` beside it.
pub fn policy_dir_for(config_path: Option<&Path>) -> PathBuf {
    match config_path.and_then(Path::parent) {
        Some(dir) => dir.join("sentry"),
        None => PathBuf::from(DEFAULT_POLICY_DIR),
    }
}

/// Chooses the policy for a container: the annotation's name if `sentry.toml` in `dir`
/// allows it, else the configured default; `default` is built in unless `dir` has a file.
pub fn select(dir: &Path, annotations: &HashMap<String, String>) -> Result<Policy, PolicyError> {
    let cfg_path = dir.join("sentry.toml");
    let cfg = match std::fs::read_to_string(&cfg_path) {
        Ok(text) => toml::from_str::<SentryToml>(&text).map_err(|e| PolicyError::Invalid {
            path: cfg_path.clone(),
            message: e.message().to_string(),
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => SentryToml {
            default_policy: default_name(),
            allowed_policies: default_allowed(),
        },
        Err(source) => {
            return Err(PolicyError::Read {
                path: cfg_path,
                source,
            })
        }
    };
    for n in cfg.allowed_policies.iter().chain([&cfg.default_policy]) {
        if !valid_name(n) {
            return Err(PolicyError::Invalid {
                path: cfg_path.clone(),
                message: format!("{n:?} is not a policy name (letters, digits, '-', '_')"),
            });
        }
    }
    let name = match annotations.get(POLICY_ANNOTATION) {
        Some(n) => {
            let n = n.trim();
            if !cfg.allowed_policies.iter().any(|a| a == n) {
                return Err(PolicyError::NotAllowed {
                    name: n.to_string(),
                    config: cfg_path.display().to_string(),
                    allowed: cfg.allowed_policies.join(", "),
                });
            }
            n.to_string()
        }
        None => cfg.default_policy.clone(),
    };
    if name == RECORD_POLICY {
        return Ok(Policy::recording());
    }
    let file = dir.join(format!("{name}.toml"));
    match std::fs::read_to_string(&file) {
        Ok(text) => Policy::parse(&text, &name, &file),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && name == "default" => {
            Ok(Policy::builtin_default())
        }

        Err(source) => Err(PolicyError::Read { path: file, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation() {
        assert_eq!(normalize("/a/./b/../c//"), "/a/c");
        assert_eq!(normalize("/../.."), "/");
        assert_eq!(normalize(""), "/");
    }

    fn p(text: &str) -> Result<Policy, PolicyError> {
        Policy::parse(text, "t", Path::new("/x/t.toml"))
    }

    #[test]
    fn default_policy_rules() {
        // What runc runs: the root writable (a read-only root is the kernel's EROFS), device
        // nodes left to the supervisor's device list, any program, the pod's network.
        let d = Policy::builtin_default();
        assert_eq!(d.file_access("/etc/passwd"), Access::ReadWrite);
        assert_eq!(d.file_access("/tmp/x"), Access::ReadWrite);
        assert_eq!(d.file_access("/dev/null"), Access::ReadWrite);
        assert_eq!(d.file_access("/proc/1/mem"), Access::Deny);
        assert_eq!(d.file_access("/proc/1/task/1/mem"), Access::Deny);
        assert_eq!(d.file_access("/proc/1/status"), Access::ReadWrite);
        assert_eq!(d.file_access("/proc/kallsyms"), Access::Deny);
        assert_eq!(d.file_access("/sys/kernel/notes"), Access::Deny);
        assert_eq!(d.file_access("/"), Access::ReadWrite);
        assert!(d.exec_allowed("/bin/busybox"));
        assert!(d.exec_allowed("/usr/lib/x/helper"));
        assert!(d.exec_allowed("/tmp/prog"));
        assert!(d.any_address());
        assert!(d.connect_allowed(&"10.0.0.1:80".parse().unwrap()));
        assert!(d.bind_allowed(&"0.0.0.0:80".parse().unwrap()));
        assert!(d.raw_sockets);
    }

    #[test]
    fn opens_are_the_kernels_only_where_masks_and_ptrace_say_what_the_policy_says() {
        let k = Policy::builtin_default()
            .kernel_opens()
            .expect("default: kernel opens");
        assert!(k.masks.contains(&"/proc/kallsyms".to_string()));
        assert!(k.masks.contains(&"/sys/kernel".to_string()));
        assert!(!k.masks.iter().any(|m| m.contains('*')), "{k:?}");
        assert_eq!(k.masks.len(), 12, "{k:?}");
        let p = |t: &str| Policy::parse(t, "t", Path::new("t.toml")).unwrap();
        let rw = "[files]\nread_write = [\"/\"]\n";
        assert_eq!(p(rw).kernel_opens(), Some(KernelOpens { masks: vec![] }));
        // Every open audited: trapped.
        assert_eq!(
            p(&format!("{rw}[audit]\nopens = true\n")).kernel_opens(),
            None
        );
        assert_eq!(Policy::recording().kernel_opens(), None);
        // Rules the kernel could not enforce by a mask: trapped.
        for deny in [
            "/etc/shadow",
            "/proc/*/environ",
            "/proc/self/environ",
            "/proc/1/environ",
            "/proc/thread-self/mem",
            "/sys/*/x",
            "/proc",
        ] {
            let t = format!("{rw}deny = [\"{deny}\"]\n");
            assert_eq!(p(&t).kernel_opens(), None, "{deny}");
        }
        // A root that is only read, or a tree beside it: trapped.
        assert_eq!(p("[files]\nread = [\"/\"]\n").kernel_opens(), None);
        assert_eq!(p(&format!("{rw}read = [\"/etc\"]\n")).kernel_opens(), None);
        let strict = p(include_str!("../../../configs/sentry/strict.toml"));
        assert_eq!(strict.kernel_opens(), None);
    }

    #[test]
    fn uniform_trees() {
        let d = Policy::builtin_default();
        assert_eq!(d.uniform_access("/etc"), Some(Access::ReadWrite));
        assert_eq!(d.uniform_access("/usr/lib"), Some(Access::ReadWrite));
        // Exceptions inside: the root, /proc (kallsyms, */mem), /sys (kernel, firmware).
        assert_eq!(d.uniform_access("/"), None);
        assert_eq!(d.uniform_access("/proc"), None);
        assert_eq!(d.uniform_access("/proc/1"), None);
        assert_eq!(d.uniform_access("/sys"), None);
        assert_eq!(d.uniform_access("/sys/kernel"), None);
        assert_eq!(d.uniform_access("/sys/class"), Some(Access::ReadWrite));
        let strict = p(
            "[files]\nread = [\"/usr\", \"/etc\"]\nread_write = [\"/tmp\"]\n\
                        deny = [\"/etc/shadow\", \"/usr/*/secret\"]\n",
        )
        .unwrap();
        assert_eq!(strict.uniform_access("/tmp"), Some(Access::ReadWrite));
        assert_eq!(strict.uniform_access("/etc"), None);
        assert_eq!(strict.uniform_access("/etc/ssl"), Some(Access::Read));
        assert_eq!(strict.uniform_access("/usr"), None);
        assert_eq!(strict.uniform_access("/usr/lib"), None);
        assert_eq!(strict.uniform_access("/usr/lib/x"), Some(Access::Read));
        assert_eq!(strict.uniform_access("/var"), None);
        assert_eq!(strict.uniform_access("/etc/shadow"), None);
    }

    #[test]
    fn kernel_trees_are_the_uniform_rules_outside_proc_sys_dev() {
        // The default policy: `/` has exceptions inside (/proc, /sys): nothing.
        assert!(Policy::builtin_default().kernel_trees().is_empty());
        assert!(Policy::recording().kernel_trees().is_empty());
        let strict = p(&std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../configs/sentry/strict.toml"
        ))
        .unwrap())
        .unwrap();
        let t = strict.kernel_trees();
        let s = |v: &[(&str, Access)]| -> Vec<(String, Access)> {
            v.iter().map(|(p, a)| (p.to_string(), *a)).collect()
        };
        // /proc/self (a deny rule with `*` beneath) and the device files are not taken.
        assert_eq!(
            t,
            s(&[
                ("/bin", Access::Read),
                ("/etc", Access::Read),
                ("/lib", Access::Read),
                ("/lib64", Access::Read),
                ("/sbin", Access::Read),
                ("/tmp", Access::ReadWrite),
                ("/usr", Access::Read),
            ])
        );
        // Nested rules: a tree with a narrower or wider rule inside is not uniform, the inner
        // one is; a denied file or a `*` rule inside excludes its tree.
        let nested = p("[files]\nread = [\"/srv\", \"/data\", \"/opt\"]\n\
                        read_write = [\"/srv/cache\", \"/var\"]\n\
                        deny = [\"/data/secret\", \"/opt/*/key\", \"/proc/kcore\"]\n")
        .unwrap();
        assert_eq!(
            nested.kernel_trees(),
            s(&[
                ("/srv/cache", Access::ReadWrite),
                ("/var", Access::ReadWrite)
            ])
        );
        assert_eq!(
            nested.kernel_access("/srv/cache/x"),
            Some(Access::ReadWrite)
        );
        assert_eq!(nested.kernel_access("/srv/other"), Some(Access::Read));
        assert_eq!(nested.kernel_access("/srv"), None);
        assert_eq!(nested.kernel_access("/data"), None);
        assert_eq!(nested.kernel_access("/data/public"), Some(Access::Read));
        assert_eq!(nested.kernel_access("/opt"), None);
        assert_eq!(nested.kernel_access("/etc"), None);
        // Never the root, /proc, /sys or /dev, however uniform the policy is there.
        let open = p("[files]\nread_write = [\"/\", \"/proc\", \"/dev/null\"]\n").unwrap();
        assert!(open.kernel_trees().is_empty());
        assert_eq!(open.kernel_access("/"), None);
        assert_eq!(open.kernel_access("/proc/1"), None);
        assert_eq!(open.kernel_access("/sys/class"), None);
        assert_eq!(open.kernel_access("/dev/null"), None);
        assert_eq!(open.kernel_access("/devices"), Some(Access::ReadWrite));
    }

    #[test]
    fn rules_cannot_name_the_escape_of_non_utf8_bytes() {
        let e = p("[files]\nread = [\"/data/\u{10FF41}\"]\n").unwrap_err();
        assert!(e.to_string().contains("U+10FF00"), "{e}");
        let ok = p("[files]\nread = [\"/data/caf\u{e9}\"]\n").unwrap();
        assert_eq!(ok.file_access("/data/caf\u{e9}/x"), Access::Read);
        // A non-UTF-8 name (escaped by the supervisor) is judged by the rules above it.
        let escaped = crate::names::from_bytes(b"/data/caf\xe9");
        assert_eq!(ok.file_access(&escaped), Access::Deny);
        let ok = p("[files]\nread = [\"/data\"]\ndeny = [\"/data/*/secret\"]\n").unwrap();
        let escaped = crate::names::from_bytes(b"/data/\xff/secret");
        assert_eq!(ok.file_access(&escaped), Access::Deny);
        let escaped = crate::names::from_bytes(b"/data/\xff/other");
        assert_eq!(ok.file_access(&escaped), Access::Read);
    }

    #[test]
    fn shipped_policies_parse() {
        let f = "strict";
        let path = format!(
            "{}/../../configs/sentry/{f}.toml",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let strict = Policy::parse(&text, f, Path::new(&path)).unwrap();
        assert!(strict.require_private_memory);
        assert!(!strict.ip_allowed());
    }

    #[test]
    fn cidr_rules() {
        let pol = p("[network]\nmode = \"cidr\"\nconnect = [\"10.0.0.0/8:443\", \"[2001:db8::]/32\"]\nbind = [\"0.0.0.0/0:8080\"]").unwrap();
        assert!(pol.connect_allowed(&"10.1.2.3:443".parse().unwrap()));
        assert!(!pol.connect_allowed(&"10.1.2.3:80".parse().unwrap()));
        assert!(!pol.connect_allowed(&"11.1.2.3:443".parse().unwrap()));
        assert!(pol.connect_allowed(&"[2001:db8::1]:1".parse().unwrap()));
        assert!(pol.bind_allowed(&"0.0.0.0:8080".parse().unwrap()));
        assert!(!pol.bind_allowed(&"0.0.0.0:8081".parse().unwrap()));
    }

    #[test]
    fn bad_policies_are_clear_errors() {
        let cases = [
            ("[files]\nread = [\"etc\"]", "must be an absolute path"),
            ("[files]\nread = [\"/a/../b\"]", "must not contain '..'"),
            ("[files]\nreed = [\"/\"]", "reed"),
            ("[network]\nmode = \"everything\"", "everything"),
            (
                "[network]\nmode = \"cidr\"\nconnect = [\"10.0.0.0/33\"]",
                "prefix length",
            ),
            (
                "[network]\nmode = \"cidr\"\nconnect = [\"ten/8\"]",
                "not an IP address",
            ),
            ("[network]\nconnect = [\"10.0.0.0/8\"]", "need network.mode"),
            (
                "[syscalls]\ndeny = [\"frobnicate\"]",
                "no system call named \"frobnicate\"",
            ),
            ("[syscalls]\naudit = [\"openat\"]", "always handled"),
            ("files = 3", "invalid type"),
        ];
        for (text, want) in cases {
            let e = p(text).unwrap_err().to_string();
            assert!(e.contains("/x/t.toml") && e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn selection_obeys_the_allowed_list() {
        let dir = std::env::temp_dir().join(format!("strata-sentry-sel-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ann = |v: &str| HashMap::from([(POLICY_ANNOTATION.to_string(), v.to_string())]);
        // No sentry.toml: the built-in default only.
        assert_eq!(select(&dir, &HashMap::new()).unwrap().name, "default");
        let e = select(&dir, &ann("strict")).unwrap_err().to_string();
        assert!(
            e.contains("not allowed") && e.contains("allowed policies: default"),
            "{e}"
        );
        std::fs::write(
            dir.join("sentry.toml"),
            "allowed_policies = [\"default\", \"web\"]",
        )
        .unwrap();
        let e = select(&dir, &ann("web")).unwrap_err().to_string();
        assert!(e.contains("web.toml"), "{e}");
        std::fs::write(dir.join("web.toml"), "[network]\nmode = \"nowhere\"").unwrap();
        let e = select(&dir, &ann("web")).unwrap_err().to_string();
        assert!(e.contains("web.toml") && e.contains("nowhere"), "{e}");
        std::fs::write(dir.join("web.toml"), "[network]\nmode = \"none\"").unwrap();
        assert_eq!(select(&dir, &ann("web")).unwrap().net_mode, NetMode::None);
        std::fs::write(dir.join("sentry.toml"), "default_policy = \"../x\"").unwrap();
        let e = select(&dir, &HashMap::new()).unwrap_err().to_string();
        assert!(e.contains("not a policy name"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
