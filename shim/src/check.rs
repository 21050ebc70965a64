//! `strata check`: what this host supports, tier by tier.
//!
//! The probes read `/proc` and `/sys`, and where reading cannot answer they try the operation
//! itself (creating a user namespace, installing a seccomp filter with a listener) in a forked
//! child, so that a probe never changes the process that runs it. Parsers are pure functions over
//! text and are tested with fixtures; [`assess`] turns the facts into one verdict per tier and is
//! tested the same way.
//!
//! This module must never change the host: it opens `/dev/kvm` read-write only to ask its API
//! version, and everything irreversible happens in a child that exits at once.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;
use strata_backend::BackendKind;

/// The backends linked into this build of Strata: the tier registry's
/// ([`crate::tiers::TIERS`]). `strata check` reports every other tier as not built.
pub fn built_backends() -> Vec<BackendKind> {
    crate::tiers::TIERS.iter().map(|t| t.kind()).collect()
}

/// The outcome of one probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "result", content = "why")]
pub enum Probe {
    /// The host does it.
    Yes,
    /// The host does not; the text says why and, where it can, what to change.
    No(String),
    /// The probe could not be run here (for example, it needs root).
    Skipped(String),
}

impl Probe {
    /// True only for [`Probe::Yes`].
    pub fn is_yes(&self) -> bool {
        matches!(self, Probe::Yes)
    }

    fn describe(&self) -> String {
        match self {
            Probe::Yes => "yes".into(),
            Probe::No(why) => format!("no ({why})"),
            Probe::Skipped(why) => format!("not tested ({why})"),
        }
    }
}

/// What a tier can do on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Everything the tier uses is there.
    Available,
    /// The tier runs, but some of what it offers is missing (the reasons say what).
    Degraded,
    /// The tier cannot run here.
    Unavailable,
}

impl Verdict {
    fn as_str(self) -> &'static str {
        match self {
            Verdict::Available => "available",
            Verdict::Degraded => "degraded",
            Verdict::Unavailable => "unavailable",
        }
    }
}

/// One namespace kind and whether this kernel has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Namespace {
    /// The name used in OCI specs (`mount`, `pid`, `network` is `net` here, ...).
    pub name: &'static str,
    /// Whether `/proc/self/ns/<entry>` exists.
    pub present: bool,
}

/// The namespace kinds, as `(name, entry in /proc/self/ns)`.
const NAMESPACES: [(&str, &str); 8] = [
    ("mount", "mnt"),
    ("pid", "pid"),
    ("net", "net"),
    ("ipc", "ipc"),
    ("uts", "uts"),
    ("user", "user"),
    ("cgroup", "cgroup"),
    ("time", "time"),
];

/// Namespaces the native tier cannot run without.
const REQUIRED_NAMESPACES: [&str; 5] = ["mount", "pid", "net", "ipc", "uts"];

/// Namespace support.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Namespaces {
    pub kinds: Vec<Namespace>,
    /// Creating a user namespace as root.
    pub user_privileged: Probe,
    /// Creating a user namespace as an unprivileged user.
    pub user_unprivileged: Probe,
}

/// How the cgroup filesystems are mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupLayout {
    /// Only v1 hierarchies ("legacy").
    V1,
    /// Only the unified v2 hierarchy.
    V2,
    /// v1 hierarchies hold the controllers; a v2 mount exists beside them.
    Hybrid,
    /// No cgroup filesystem is mounted.
    None,
}

/// One mounted cgroup v1 hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct V1Hierarchy {
    pub mount_point: PathBuf,
    /// Controllers bound to it (`cpu`, `memory`, ...), or `name=...` for a named hierarchy.
    pub controllers: Vec<String>,
}

/// The mounted cgroup v2 hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct V2Hierarchy {
    pub mount_point: PathBuf,
    /// The contents of its root `cgroup.controllers`.
    pub controllers: Vec<String>,
}

/// cgroup support.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cgroups {
    pub layout: CgroupLayout,
    pub v1: Vec<V1Hierarchy>,
    pub v2: Option<V2Hierarchy>,
}

/// Sizes the kernel reports for the seccomp user-notification structures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct NotifSizes {
    pub notif: u16,
    pub resp: u16,
    pub data: u16,
}

/// seccomp support.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Seccomp {
    /// Installing a BPF filter.
    pub filter: Probe,
    /// `/proc/sys/kernel/seccomp/actions_avail`.
    pub actions: Vec<String>,
    /// Installing a filter with `SECCOMP_FILTER_FLAG_NEW_LISTENER` (user notification).
    pub user_notif: Probe,
    /// `SECCOMP_GET_NOTIF_SIZES`, if the kernel answers it.
    pub notif_sizes: Option<NotifSizes>,
}

/// Landlock support.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Landlock {
    /// The ABI version `landlock_create_ruleset(.., LANDLOCK_CREATE_RULESET_VERSION)` returns.
    pub abi: Option<u32>,
    pub probe: Probe,
}

/// What backs `/dev/kvm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KvmBacking {
    /// No `/dev/kvm`.
    Absent,
    /// `kvm_pvm`: page-table-based KVM without hardware virtualisation.
    Pvm,
    /// `kvm_intel`: Intel VT-x.
    VtX,
    /// `kvm_amd`: AMD-V.
    AmdV,
    /// `/dev/kvm` exists but no known vendor module was found.
    Unknown,
}

impl KvmBacking {
    fn describe(self) -> &'static str {
        match self {
            KvmBacking::Absent => "absent",
            KvmBacking::Pvm => "PVM (kvm_pvm, no hardware virtualisation)",
            KvmBacking::VtX => "Intel VT-x (kvm_intel)",
            KvmBacking::AmdV => "AMD-V (kvm_amd)",
            KvmBacking::Unknown => "unknown vendor module",
        }
    }
}

/// KVM support.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Kvm {
    pub backing: KvmBacking,
    /// `KVM_GET_API_VERSION` (12 on every kernel since 2.6.22).
    pub api_version: Option<i32>,
    /// Why `/dev/kvm` could not be opened or asked, if it could not.
    pub error: Option<String>,
    /// KVM modules seen in `/sys/module` and `/proc/modules`.
    pub modules: Vec<String>,
    /// `vmx` or `svm` if the CPU flags in `/proc/cpuinfo` show one.
    pub cpu_flag: Option<String>,
}

/// WebAssembly support.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Wasm {
    /// Whether wasmtime is linked into this build.
    pub built: bool,
    /// The host architecture, which wasmtime's compiler must support.
    pub arch: &'static str,
}

/// Everything the probes found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Host {
    pub kernel: String,
    pub root: bool,
    pub namespaces: Namespaces,
    pub cgroups: Cgroups,
    pub seccomp: Seccomp,
    pub landlock: Landlock,
    pub kvm: Kvm,
    pub wasm: Wasm,
}

/// The verdict for one tier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TierReport {
    pub tier: BackendKind,
    /// What the tier can do here: `host` unless the backend is not built.
    pub verdict: Verdict,
    /// What the host alone allows.
    pub host: Verdict,
    /// Whether this build of Strata contains the backend.
    pub built: bool,
    /// Why the verdict is not `available`.
    pub reasons: Vec<String>,
}

/// The whole answer of `strata check`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub tiers: Vec<TierReport>,
    pub host: Host,
}

impl Report {
    /// The report for one tier.
    pub fn tier(&self, tier: BackendKind) -> Option<&TierReport> {
        self.tiers.iter().find(|t| t.tier == tier)
    }
}

/// Probes this host and assesses every tier against [`built_backends`].
pub fn run() -> Report {
    let host = probe_host();
    let tiers = assess(&host, &built_backends());
    Report { tiers, host }
}

// ---------------------------------------------------------------------------------------------
// Assessment: facts in, verdicts out. Pure, so the rules are unit-tested.

/// One verdict per tier, weakest isolation first.
pub fn assess(host: &Host, built: &[BackendKind]) -> Vec<TierReport> {
    let native = assess_native(host);
    let sentry = assess_sentry(host, &native);
    BackendKind::ALL
        .iter()
        .map(|&tier| {
            let (verdict, mut reasons) = match tier {
                BackendKind::Native => native.clone(),
                BackendKind::Sentry => sentry.clone(),
                BackendKind::Microvm => assess_microvm(host),
                BackendKind::Wasm => assess_wasm(host),
            };
            let is_built = built.contains(&tier);
            let overall = if is_built {
                verdict
            } else {
                reasons.insert(0, "not built yet: this strata has no such backend".into());
                Verdict::Unavailable
            };
            TierReport {
                tier,
                verdict: overall,
                host: verdict,
                built: is_built,
                reasons,
            }
        })
        .collect()
}

type Assessment = (Verdict, Vec<String>);

/// Collects reasons and keeps the worst verdict seen.
struct Findings {
    verdict: Verdict,
    reasons: Vec<String>,
}

impl Findings {
    fn new() -> Self {
        Findings {
            verdict: Verdict::Available,
            reasons: Vec::new(),
        }
    }

    fn add(&mut self, verdict: Verdict, reason: impl Into<String>) {
        self.verdict = self.verdict.max(verdict);
        self.reasons.push(reason.into());
    }

    fn done(self) -> Assessment {
        (self.verdict, self.reasons)
    }
}

fn assess_native(host: &Host) -> Assessment {
    let mut f = Findings::new();
    let ns = &host.namespaces;
    let missing = |names: &mut dyn Iterator<Item = &Namespace>| -> Vec<&'static str> {
        names.filter(|n| !n.present).map(|n| n.name).collect()
    };
    let required_missing = missing(
        &mut ns
            .kinds
            .iter()
            .filter(|n| REQUIRED_NAMESPACES.contains(&n.name)),
    );
    if !required_missing.is_empty() {
        f.add(
            Verdict::Unavailable,
            format!(
                "kernel lacks the {} namespace(s) every container needs",
                required_missing.join(", ")
            ),
        );
    }
    let optional_missing = missing(
        &mut ns
            .kinds
            .iter()
            .filter(|n| !REQUIRED_NAMESPACES.contains(&n.name)),
    );
    if !optional_missing.is_empty() {
        f.add(
            Verdict::Degraded,
            format!(
                "kernel lacks the {} namespace(s): containers whose spec asks for them fail",
                optional_missing.join(", ")
            ),
        );
    }
    if let Probe::No(why) = &ns.user_privileged {
        f.add(
            Verdict::Degraded,
            format!(
                "cannot create user namespaces as root ({why}): pods with user namespaces fail"
            ),
        );
    }

    let cg = &host.cgroups;
    if cg.layout == CgroupLayout::None {
        f.add(
            Verdict::Unavailable,
            "no cgroup filesystem is mounted: mount cgroup2 on /sys/fs/cgroup",
        );
    } else {
        let have = effective_controllers(cg);
        for (controller, what) in [
            ("memory", "memory limits and OOM events"),
            ("cpu", "cpu quota and shares"),
            ("pids", "pids limits"),
            ("freezer", "pause and resume"),
            (
                "devices",
                "the device cgroup (devices stay reachable only by path)",
            ),
        ] {
            if !have.contains(controller) {
                f.add(
                    Verdict::Degraded,
                    format!(
                        "no {controller} controller in use ({}): {what} unavailable",
                        layout_name(cg.layout)
                    ),
                );
            }
        }
        if !have.contains("blkio") && !have.contains("io") {
            f.add(
                Verdict::Degraded,
                format!(
                    "no blkio/io controller in use ({}): block I/O limits unavailable",
                    layout_name(cg.layout)
                ),
            );
        }
    }

    if let Probe::No(why) = &host.seccomp.filter {
        f.add(
            Verdict::Degraded,
            format!("seccomp filters unavailable ({why}): containers with a seccomp profile fail"),
        );
    }
    f.done()
}

fn assess_sentry(host: &Host, native: &Assessment) -> Assessment {
    let mut f = Findings::new();
    // The sentry is the native tier plus a supervisor: everything native lacks, it lacks too.
    f.verdict = native.0;
    f.reasons.extend(native.1.iter().cloned());
    match &host.seccomp.user_notif {
        Probe::Yes => {}
        Probe::No(why) => f.add(
            Verdict::Unavailable,
            format!("seccomp user notification unavailable ({why}): the supervisor cannot trap syscalls"),
        ),
        Probe::Skipped(why) => f.add(
            Verdict::Degraded,
            format!("seccomp user notification not tested ({why})"),
        ),
    }
    match (&host.landlock.probe, host.landlock.abi) {
        // Below ABI 3 Landlock cannot refuse truncation, so no ruleset is fully enforced and
        // the supervisor keeps every open (docs/sentry.md, "Kernel-enforced opens").
        (Probe::Yes, Some(abi)) if abi < 3 => f.add(
            Verdict::Degraded,
            format!(
                "Landlock ABI {abi} (below 3, no truncate right): under policies compiled into \
                 Landlock opens are never left to the kernel, and each costs a supervisor \
                 round trip (the default policy's opens are still the kernel's)"
            ),
        ),
        (Probe::Yes, Some(_)) => {}
        (Probe::No(why), _) | (Probe::Skipped(why), _) => f.add(
            Verdict::Degraded,
            format!(
                "Landlock unavailable ({why}): file access is confined by the supervisor alone, \
                 which traps every open, also under the default policy"
            ),
        ),
        (Probe::Yes, None) => f.add(Verdict::Degraded, "Landlock ABI version unknown"),
    }
    f.done()
}

fn assess_microvm(host: &Host) -> Assessment {
    let mut f = Findings::new();
    let kvm = &host.kvm;
    match kvm.backing {
        KvmBacking::Absent => {
            let hint = match kvm.cpu_flag.as_deref() {
                Some("vmx") => ": the CPU has VT-x, load kvm_intel",
                Some("svm") => ": the CPU has AMD-V, load kvm_amd",
                _ => ": the CPU shows no vmx/svm flag (enable virtualisation or nested virtualisation)",
            };
            f.add(Verdict::Unavailable, format!("no /dev/kvm{hint}"));
            return f.done();
        }
        KvmBacking::Pvm => f.add(
            Verdict::Degraded,
            "/dev/kvm is PVM (kvm_pvm), not hardware virtualisation: small purpose-built guests run, \
             an unmodified Linux guest stops with \"emulation failure\"; a microvm pod gets the \
             QEMU driver with TCG (emulation, no security boundary) only where [microvm] \
             allow_tcg = true, and the strata driver (Strata's own VMM) refuses pods here",
        ),
        KvmBacking::Unknown => f.add(
            Verdict::Degraded,
            "/dev/kvm exists but neither kvm_intel, kvm_amd nor kvm_pvm is loaded: cannot tell what backs it",
        ),
        KvmBacking::VtX | KvmBacking::AmdV => {}
    }
    match (kvm.api_version, &kvm.error) {
        (Some(12), _) => {}
        (Some(v), _) => f.add(
            Verdict::Unavailable,
            format!("KVM API version {v}, expected 12"),
        ),
        (None, Some(e)) => {
            let hint = if host.root {
                ""
            } else {
                " (the shim runs as root: run strata check as root)"
            };
            f.add(
                Verdict::Unavailable,
                format!("cannot use /dev/kvm: {e}{hint}"),
            )
        }
        (None, None) => f.add(Verdict::Unavailable, "KVM API version unknown"),
    }
    f.done()
}

fn assess_wasm(host: &Host) -> Assessment {
    let mut f = Findings::new();
    if !matches!(host.wasm.arch, "x86_64" | "aarch64" | "riscv64" | "s390x") {
        f.add(
            Verdict::Unavailable,
            format!("wasmtime cannot compile for {}", host.wasm.arch),
        );
    }
    f.done()
}

/// The controllers the native backend would use, given how libcgroups picks a hierarchy: with a
/// pure v2 mount it uses v2 (where freezer and devices are part of the core); otherwise the v1
/// hierarchies, and a hybrid host's v2 mount only tracks processes.
pub fn effective_controllers(cg: &Cgroups) -> BTreeSet<String> {
    match cg.layout {
        CgroupLayout::V2 => {
            let mut set: BTreeSet<String> = cg
                .v2
                .iter()
                .flat_map(|v2| v2.controllers.iter().cloned())
                .collect();
            // cgroup.freeze and eBPF device filters need no controller in cgroup.controllers.
            set.insert("freezer".into());
            set.insert("devices".into());
            set
        }
        CgroupLayout::V1 | CgroupLayout::Hybrid => cg
            .v1
            .iter()
            .flat_map(|h| h.controllers.iter().cloned())
            .filter(|c| !c.starts_with("name="))
            .collect(),
        CgroupLayout::None => BTreeSet::new(),
    }
}

fn layout_name(layout: CgroupLayout) -> &'static str {
    match layout {
        CgroupLayout::V1 => "cgroup v1",
        CgroupLayout::V2 => "cgroup v2",
        CgroupLayout::Hybrid => "cgroup v1/v2 hybrid, controllers from v1",
        CgroupLayout::None => "no cgroups",
    }
}

// ---------------------------------------------------------------------------------------------
// Parsers: text in, facts out.

/// Cgroup mounts found in a mountinfo text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupMounts {
    pub v1: Vec<V1Hierarchy>,
    /// Mount points of cgroup2 filesystems, in mount order.
    pub v2: Vec<PathBuf>,
}

/// Mount options of a cgroup v1 super block that are not controllers.
const V1_NON_CONTROLLER_OPTIONS: [&str; 6] = [
    "rw",
    "ro",
    "xattr",
    "noprefix",
    "clone_children",
    "cpuset_v2_mode",
];

/// Parses `/proc/<pid>/mountinfo` for cgroup (v1) and cgroup2 mounts. A hierarchy bind-mounted
/// twice is reported once, at its first mount point.
pub fn parse_mountinfo_cgroups(text: &str) -> CgroupMounts {
    let mut out = CgroupMounts::default();
    for line in text.lines() {
        // "<id> <parent> <maj:min> <root> <mount point> <options> [optional...] - <fstype> <source> <super options>"
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let left: Vec<&str> = left.split_whitespace().collect();
        let right: Vec<&str> = right.split_whitespace().collect();
        if left.len() < 5 || right.is_empty() {
            continue;
        }
        let mount_point = PathBuf::from(unescape_mount_path(left[4]));
        match right[0] {
            "cgroup2" => out.v2.push(mount_point),
            "cgroup" => {
                let mut controllers: Vec<String> = right
                    .get(2)
                    .map(|opts| {
                        opts.split(',')
                            .filter(|o| {
                                !V1_NON_CONTROLLER_OPTIONS.contains(o)
                                    && (!o.contains('=') || o.starts_with("name="))
                            })
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default();
                controllers.sort();
                if !out.v1.iter().any(|h| h.controllers == controllers) {
                    out.v1.push(V1Hierarchy {
                        mount_point,
                        controllers,
                    });
                }
            }
            _ => {}
        }
    }
    out
}

/// Decodes the octal escapes (`\040` for a space, ...) the kernel writes into mountinfo paths.
pub fn unescape_mount_path(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|b| (b'0'..=b'7').contains(b)) {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(v) = u8::try_from(value) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The layout that a set of cgroup mounts makes.
pub fn cgroup_layout(mounts: &CgroupMounts) -> CgroupLayout {
    let has_v1 = mounts
        .v1
        .iter()
        .any(|h| h.controllers.iter().any(|c| !c.starts_with("name=")));
    match (has_v1, !mounts.v2.is_empty()) {
        (true, true) => CgroupLayout::Hybrid,
        (true, false) => CgroupLayout::V1,
        (false, true) => CgroupLayout::V2,
        (false, false) => CgroupLayout::None,
    }
}

/// Splits a whitespace-separated list (`cgroup.controllers`, seccomp `actions_avail`).
pub fn parse_word_list(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_string).collect()
}

/// Module names from `/proc/modules` (the first field of each line).
pub fn parse_proc_modules(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// `vmx` or `svm` if a `flags` line of `/proc/cpuinfo` lists it.
pub fn parse_cpu_virt_flag(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .filter_map(|l| l.split_once(':'))
        .flat_map(|(_, flags)| flags.split_whitespace())
        .find(|f| *f == "vmx" || *f == "svm")
        .map(str::to_string)
}

/// What backs `/dev/kvm`, given whether it exists and the loaded modules. PVM wins over a vendor
/// module: when `kvm_pvm` is loaded it is the one that registered `/dev/kvm` on the hosts PVM is
/// made for (guests without VT-x/AMD-V).
pub fn kvm_backing(device_exists: bool, modules: &[String]) -> KvmBacking {
    let has = |m: &str| modules.iter().any(|x| x == m);
    if !device_exists {
        KvmBacking::Absent
    } else if has("kvm_pvm") {
        KvmBacking::Pvm
    } else if has("kvm_intel") {
        KvmBacking::VtX
    } else if has("kvm_amd") {
        KvmBacking::AmdV
    } else {
        KvmBacking::Unknown
    }
}

// ---------------------------------------------------------------------------------------------
// Probes: the real host.

fn read(path: impl AsRef<Path>) -> Option<String> {
    fs::read_to_string(path).ok()
}

/// Probes this host. Needs root for a complete answer (user namespaces as root, `/dev/kvm`).
pub fn probe_host() -> Host {
    let root = nix::unistd::geteuid().is_root();
    Host {
        kernel: read("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| "unknown".into()),
        root,
        namespaces: probe_namespaces(root),
        cgroups: probe_cgroups(),
        seccomp: probe_seccomp(),
        landlock: probe_landlock(),
        kvm: probe_kvm(),
        wasm: Wasm {
            built: built_backends().contains(&BackendKind::Wasm),
            arch: std::env::consts::ARCH,
        },
    }
}

fn probe_namespaces(root: bool) -> Namespaces {
    let kinds = NAMESPACES
        .iter()
        .map(|&(name, entry)| Namespace {
            name,
            present: Path::new("/proc/self/ns").join(entry).exists(),
        })
        .collect();
    let user_privileged = if root {
        // SAFETY: the child function makes only raw system calls (async-signal-safe).
        errno_probe(unsafe { sys::in_forked_child(sys::child_unshare_user) })
    } else {
        Probe::Skipped("not running as root".into())
    };
    // As root, the child drops to nobody first; otherwise we already are unprivileged.
    let child = if root {
        sys::child_unshare_user_as_nobody
    } else {
        sys::child_unshare_user
    };
    // SAFETY: both child functions make only raw system calls (async-signal-safe).
    let user_unprivileged = match errno_probe(unsafe { sys::in_forked_child(child) }) {
        Probe::No(why) => Probe::No(format!("{why}{}", userns_hint())),
        other => other,
    };
    Namespaces {
        kinds,
        user_privileged,
        user_unprivileged,
    }
}

/// Why unprivileged user namespaces may be refused, from the sysctls that govern them.
fn userns_hint() -> String {
    let mut hint = String::new();
    for (path, bad) in [
        ("/proc/sys/user/max_user_namespaces", "0"),
        ("/proc/sys/kernel/unprivileged_userns_clone", "0"),
        (
            "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
            "1",
        ),
    ] {
        if read(path).is_some_and(|v| v.trim() == bad) {
            let _ = write!(hint, "; {path} is {bad}");
        }
    }
    hint
}

/// Turns a child's exit code (0, or an errno) into a probe.
fn errno_probe(result: std::io::Result<i32>) -> Probe {
    match result {
        Ok(0) => Probe::Yes,
        Ok(sys::SETUP_FAILED) => {
            Probe::Skipped("could not drop privileges in the test child".into())
        }
        Ok(errno) => Probe::No(std::io::Error::from_raw_os_error(errno).to_string()),
        Err(e) => Probe::Skipped(format!("test child failed: {e}")),
    }
}

fn probe_cgroups() -> Cgroups {
    let mounts = read("/proc/self/mountinfo")
        .map(|t| parse_mountinfo_cgroups(&t))
        .unwrap_or_default();
    let layout = cgroup_layout(&mounts);
    let v2 = mounts.v2.first().map(|mp| V2Hierarchy {
        controllers: read(mp.join("cgroup.controllers"))
            .map(|t| parse_word_list(&t))
            .unwrap_or_default(),
        mount_point: mp.clone(),
    });
    Cgroups {
        layout,
        v1: mounts.v1,
        v2,
    }
}

fn probe_seccomp() -> Seccomp {
    let actions = read("/proc/sys/kernel/seccomp/actions_avail")
        .map(|t| parse_word_list(&t))
        .unwrap_or_default();
    let filter = match sys::seccomp_mode() {
        Err(e) => Probe::No(format!(
            "PR_GET_SECCOMP: {e}; kernel built without CONFIG_SECCOMP"
        )),
        // SAFETY: the child function makes only raw system calls (async-signal-safe).
        Ok(_) => errno_probe(unsafe { sys::in_forked_child(sys::child_seccomp_filter) }),
    };
    let notif_sizes = sys::seccomp_notif_sizes().ok();
    let user_notif = if !filter.is_yes() {
        Probe::No("no seccomp filters".into())
    } else if notif_sizes.is_none() {
        Probe::No("SECCOMP_GET_NOTIF_SIZES refused: kernel older than 5.0".into())
    } else {
        // SAFETY: the child function makes only raw system calls (async-signal-safe).
        errno_probe(unsafe { sys::in_forked_child(sys::child_seccomp_listener) })
    };
    Seccomp {
        filter,
        actions,
        user_notif,
        notif_sizes,
    }
}

fn probe_landlock() -> Landlock {
    match sys::landlock_abi() {
        Ok(v) => Landlock {
            abi: Some(v),
            probe: Probe::Yes,
        },
        Err(e) => {
            let why = match e.raw_os_error() {
                Some(libc::ENOSYS) => {
                    "kernel built without Landlock (CONFIG_SECURITY_LANDLOCK)".into()
                }
                Some(libc::EOPNOTSUPP) => {
                    "Landlock is built in but not enabled: add landlock to the lsm= boot parameter"
                        .into()
                }
                _ => format!("landlock_create_ruleset: {e}"),
            };
            Landlock {
                abi: None,
                probe: Probe::No(why),
            }
        }
    }
}

fn probe_kvm() -> Kvm {
    let mut modules: BTreeSet<String> = read("/proc/modules")
        .map(|t| parse_proc_modules(&t))
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.starts_with("kvm"))
        .collect();
    if let Ok(dir) = fs::read_dir("/sys/module") {
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("kvm") {
                modules.insert(name);
            }
        }
    }
    let modules: Vec<String> = modules.into_iter().collect();
    let device = Path::new("/dev/kvm").exists();
    let backing = kvm_backing(device, &modules);
    let (api_version, error) = if device {
        match sys::kvm_api_version() {
            Ok(v) => (Some(v), None),
            Err(e) => (None, Some(e.to_string())),
        }
    } else {
        (None, None)
    };
    Kvm {
        backing,
        api_version,
        error,
        modules,
        cpu_flag: read("/proc/cpuinfo").and_then(|t| parse_cpu_virt_flag(&t)),
    }
}

// ---------------------------------------------------------------------------------------------
// Output.

/// The human-readable report: a verdict table, then the facts behind it.
pub fn render_text(report: &Report) -> String {
    let h = &report.host;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "strata check: kernel {}{}\n",
        h.kernel,
        if h.root {
            ""
        } else {
            " (not root: some probes skipped; run as root for a complete answer)"
        }
    );

    let width = report
        .tiers
        .iter()
        .map(|t| t.tier.as_str().len())
        .max()
        .unwrap_or(4)
        .max(4);
    let _ = writeln!(out, "{:<width$}  {:<11}  WHY", "TIER", "VERDICT");
    for t in &report.tiers {
        let mut first = true;
        let reasons: Vec<String> = if t.reasons.is_empty() {
            vec![String::new()]
        } else if !t.built {
            let mut r = t.reasons.clone();
            r.insert(1, format!("host support: {}", t.host.as_str()));
            r
        } else {
            t.reasons.clone()
        };
        for reason in reasons {
            if first {
                let _ = writeln!(
                    out,
                    "{:<width$}  {:<11}  {reason}",
                    t.tier.as_str(),
                    t.verdict.as_str()
                );
                first = false;
            } else {
                let _ = writeln!(out, "{:<width$}  {:<11}  {reason}", "", "");
            }
        }
    }

    let _ = writeln!(out, "\nHOST");
    let ns = &h.namespaces;
    let present: Vec<&str> = ns
        .kinds
        .iter()
        .filter(|n| n.present)
        .map(|n| n.name)
        .collect();
    let absent: Vec<&str> = ns
        .kinds
        .iter()
        .filter(|n| !n.present)
        .map(|n| n.name)
        .collect();
    let _ = writeln!(
        out,
        "  namespaces   present: {}{}",
        present.join(" "),
        if absent.is_empty() {
            String::new()
        } else {
            format!("; absent: {}", absent.join(" "))
        }
    );
    let _ = writeln!(
        out,
        "  user ns      as root: {}; unprivileged: {}",
        ns.user_privileged.describe(),
        ns.user_unprivileged.describe()
    );

    let cg = &h.cgroups;
    let _ = writeln!(out, "  cgroups      {}", layout_name(cg.layout));
    for v1 in &cg.v1 {
        let _ = writeln!(
            out,
            "    v1         {} at {}",
            v1.controllers.join(","),
            v1.mount_point.display()
        );
    }
    if let Some(v2) = &cg.v2 {
        let _ = writeln!(
            out,
            "    v2         {} at {}",
            if v2.controllers.is_empty() {
                "(no controllers)".to_string()
            } else {
                v2.controllers.join(",")
            },
            v2.mount_point.display()
        );
    }

    let sc = &h.seccomp;
    let _ = writeln!(out, "  seccomp      filter: {}", sc.filter.describe());
    if !sc.actions.is_empty() {
        let _ = writeln!(out, "    actions    {}", sc.actions.join(" "));
    }
    let _ = writeln!(
        out,
        "    notify     {}{}",
        sc.user_notif.describe(),
        sc.notif_sizes
            .map(|s| format!(
                " (struct sizes: notif {}, resp {}, data {})",
                s.notif, s.resp, s.data
            ))
            .unwrap_or_default()
    );

    let _ = writeln!(
        out,
        "  landlock     {}",
        match h.landlock.abi {
            Some(v) => format!("ABI {v}"),
            None => h.landlock.probe.describe(),
        }
    );

    let kvm = &h.kvm;
    let _ = writeln!(
        out,
        "  kvm          /dev/kvm: {}{}{}",
        kvm.backing.describe(),
        kvm.api_version
            .map(|v| format!("; API version {v}"))
            .unwrap_or_default(),
        kvm.error
            .as_ref()
            .map(|e| format!("; cannot open: {e}"))
            .unwrap_or_default()
    );
    if !kvm.modules.is_empty() || kvm.cpu_flag.is_some() {
        let _ = writeln!(
            out,
            "    modules    {}; cpu flag: {}",
            if kvm.modules.is_empty() {
                "none".to_string()
            } else {
                kvm.modules.join(" ")
            },
            kvm.cpu_flag.as_deref().unwrap_or("none (no vmx/svm)")
        );
    }

    let _ = writeln!(
        out,
        "  wasm         {} ({})",
        if h.wasm.built {
            "wasmtime built in"
        } else {
            "not built yet"
        },
        h.wasm.arch
    );
    out
}

// ---------------------------------------------------------------------------------------------
// The system calls, each in one small function.

mod sys {
    use std::fs::OpenOptions;
    use std::io;
    use std::os::fd::AsRawFd;

    use super::NotifSizes;

    /// Exit code of a test child that could not prepare the test itself.
    pub(super) const SETUP_FAILED: i32 = 255;

    const SECCOMP_SET_MODE_FILTER: libc::c_uint = 1;
    const SECCOMP_GET_NOTIF_SIZES: libc::c_uint = 3;
    const SECCOMP_FILTER_FLAG_NEW_LISTENER: libc::c_uint = 1 << 3;
    const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
    const BPF_RET_K: u16 = 0x06;
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    /// `_IO(KVMIO, 0x00)`.
    const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;

    fn errno() -> i32 {
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(SETUP_FAILED)
    }

    /// Runs `child` in a forked child and returns its exit code.
    ///
    /// # Safety
    ///
    /// The calling process may have other threads, so after `fork` only async-signal-safe
    /// operations are allowed: `child` must make raw system calls only (no allocation, no locks,
    /// no `println!`).
    pub(super) unsafe fn in_forked_child(child: fn() -> i32) -> io::Result<i32> {
        // SAFETY: fork has no memory-safety preconditions; the child below only runs `child`
        // (async-signal-safe by this function's contract) and leaves with _exit.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            let code = child();
            // SAFETY: _exit is async-signal-safe, runs no destructors and never returns.
            unsafe { libc::_exit(code) };
        }
        let mut status: libc::c_int = 0;
        loop {
            // SAFETY: waits for our own child; `status` is a valid, writable c_int.
            let r = unsafe { libc::waitpid(pid, &mut status, 0) };
            if r == pid {
                break;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        if libc::WIFEXITED(status) {
            Ok(libc::WEXITSTATUS(status))
        } else {
            Err(io::Error::other(format!(
                "test child ended by signal {}",
                libc::WTERMSIG(status)
            )))
        }
    }

    /// Child: `unshare(CLONE_NEWUSER)`; exits 0 or the errno.
    pub(super) fn child_unshare_user() -> i32 {
        // SAFETY: unshare takes no pointers; it only changes this (forked) process.
        if unsafe { libc::unshare(libc::CLONE_NEWUSER) } == 0 {
            0
        } else {
            errno()
        }
    }

    /// Child: drop to nobody (65534), then `unshare(CLONE_NEWUSER)`.
    pub(super) fn child_unshare_user_as_nobody() -> i32 {
        const NOBODY: libc::uid_t = 65534;
        // SAFETY: setgroups with size 0 reads no memory; the set*id calls take plain integers.
        // All change only this forked child.
        let dropped = unsafe {
            libc::setgroups(0, std::ptr::null()) == 0
                && libc::setresgid(NOBODY, NOBODY, NOBODY) == 0
                && libc::setresuid(NOBODY, NOBODY, NOBODY) == 0
        };
        if !dropped {
            return SETUP_FAILED;
        }
        child_unshare_user()
    }

    /// Installs an allow-everything filter with `flags`; returns the syscall's result.
    fn install_allow_filter(flags: libc::c_uint) -> libc::c_long {
        let mut insn = [libc::sock_filter {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: SECCOMP_RET_ALLOW,
        }];
        let prog = libc::sock_fprog {
            len: 1,
            filter: insn.as_mut_ptr(),
        };
        // SAFETY: PR_SET_NO_NEW_PRIVS takes integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return -1;
        }
        // SAFETY: `prog` points at `insn`, a valid one-instruction program that outlives the
        // call; the kernel copies it.
        unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                SECCOMP_SET_MODE_FILTER,
                flags,
                &prog as *const libc::sock_fprog,
            )
        }
    }

    /// Child: install a seccomp filter.
    pub(super) fn child_seccomp_filter() -> i32 {
        if install_allow_filter(0) == 0 {
            0
        } else {
            errno()
        }
    }

    /// Child: install a seccomp filter that returns a user-notification listener fd.
    pub(super) fn child_seccomp_listener() -> i32 {
        if install_allow_filter(SECCOMP_FILTER_FLAG_NEW_LISTENER) >= 0 {
            0
        } else {
            errno()
        }
    }

    /// `prctl(PR_GET_SECCOMP)`: this process's seccomp mode.
    pub(super) fn seccomp_mode() -> io::Result<i32> {
        // SAFETY: PR_GET_SECCOMP takes no pointers and changes nothing.
        let r = unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r)
        }
    }

    /// `seccomp(SECCOMP_GET_NOTIF_SIZES)`.
    pub(super) fn seccomp_notif_sizes() -> io::Result<NotifSizes> {
        #[repr(C)]
        #[derive(Default)]
        struct Sizes {
            notif: u16,
            resp: u16,
            data: u16,
        }
        let mut sizes = Sizes::default();
        // SAFETY: the kernel writes a struct seccomp_notif_sizes (three u16) into `sizes`, which
        // has that layout and lives across the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                SECCOMP_GET_NOTIF_SIZES,
                0,
                &mut sizes as *mut Sizes,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(NotifSizes {
            notif: sizes.notif,
            resp: sizes.resp,
            data: sizes.data,
        })
    }

    /// `landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)`: the ABI version.
    pub(super) fn landlock_abi() -> io::Result<u32> {
        // SAFETY: with the VERSION flag the kernel requires a NULL attribute pointer and size 0,
        // creates nothing and returns a number.
        let r = unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                std::ptr::null::<libc::c_void>(),
                0usize,
                LANDLOCK_CREATE_RULESET_VERSION,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            u32::try_from(r).map_err(io::Error::other)
        }
    }

    /// `KVM_GET_API_VERSION` on `/dev/kvm`.
    pub(super) fn kvm_api_version() -> io::Result<i32> {
        let kvm = OpenOptions::new().read(true).write(true).open("/dev/kvm")?;
        // SAFETY: KVM_GET_API_VERSION takes no argument and only returns a number; `kvm` is an
        // open file for the duration of the call.
        let r = unsafe { libc::ioctl(kvm.as_raw_fd(), KVM_GET_API_VERSION, 0) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This host's mountinfo: a v1/v2 hybrid with cpu and cpuacct mounted apart.
    const HYBRID: &str = "\
22 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    /// A systemd host in unified mode, with optional fields before the separator.
    const UNIFIED: &str = "\
24 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
30 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    /// A legacy v1 host (comounted cpu,cpuacct; xattr and release_agent options; a bind mount).
    const LEGACY: &str = "\
25 18 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/systemd rw,nosuid shared:10 - cgroup cgroup rw,xattr,release_agent=/lib/systemd/systemd-cgroups-agent,name=systemd
29 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:13 - cgroup cgroup rw,cpu,cpuacct
30 25 0:27 / /sys/fs/cgroup/memory rw,nosuid shared:14 - cgroup cgroup rw,memory
99 22 0:27 / /mnt/memory\\040copy rw,nosuid - cgroup cgroup rw,memory
";

    #[test]
    fn mountinfo_hybrid() {
        let m = parse_mountinfo_cgroups(HYBRID);
        assert_eq!(cgroup_layout(&m), CgroupLayout::Hybrid);
        assert_eq!(m.v2, vec![PathBuf::from("/sys/fs/cgroup/unified")]);
        let all: Vec<String> = m.v1.iter().flat_map(|h| h.controllers.clone()).collect();
        assert_eq!(
            all,
            [
                "cpu",
                "cpuacct",
                "memory",
                "devices",
                "freezer",
                "blkio",
                "pids",
                "name=systemd"
            ]
        );
        assert_eq!(m.v1[2].mount_point, PathBuf::from("/sys/fs/cgroup/memory"));
    }

    #[test]
    fn mountinfo_unified() {
        let m = parse_mountinfo_cgroups(UNIFIED);
        assert_eq!(cgroup_layout(&m), CgroupLayout::V2);
        assert!(m.v1.is_empty());
        assert_eq!(m.v2, vec![PathBuf::from("/sys/fs/cgroup")]);
    }

    #[test]
    fn mountinfo_legacy_dedups_bind_mounts_and_skips_options() {
        let m = parse_mountinfo_cgroups(LEGACY);
        assert_eq!(cgroup_layout(&m), CgroupLayout::V1);
        assert_eq!(m.v1.len(), 3, "{m:?}");
        assert_eq!(m.v1[0].controllers, ["name=systemd"]);
        assert_eq!(m.v1[1].controllers, ["cpu", "cpuacct"]);
        assert_eq!(
            m.v1[1].mount_point,
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")
        );
    }

    #[test]
    fn mountinfo_without_cgroups_or_garbage() {
        assert_eq!(
            cgroup_layout(&parse_mountinfo_cgroups("garbage\n1 2 3\n\n")),
            CgroupLayout::None
        );
        // Only a named hierarchy: no controllers, so no v1 layout.
        let named = "26 25 0:23 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n";
        assert_eq!(
            cgroup_layout(&parse_mountinfo_cgroups(named)),
            CgroupLayout::None
        );
    }

    #[test]
    fn mount_path_escapes() {
        assert_eq!(unescape_mount_path("/mnt/a\\040b"), "/mnt/a b");
        assert_eq!(unescape_mount_path("/tab\\011x\\134y"), "/tab\tx\\y");
        assert_eq!(unescape_mount_path("/trailing\\04"), "/trailing\\04");
        assert_eq!(unescape_mount_path("/not\\999octal"), "/not\\999octal");
    }

    #[test]
    fn proc_modules() {
        let text = "\
kvm_intel 401408 0 - Live 0x0000000000000000
kvm 1142784 1 kvm_intel, Live 0x0000000000000000
irqbypass 16384 1 kvm, Live 0x0000000000000000
";
        let mods = parse_proc_modules(text);
        assert_eq!(mods, ["kvm_intel", "kvm", "irqbypass"]);
        assert_eq!(kvm_backing(true, &mods), KvmBacking::VtX);
        assert_eq!(kvm_backing(false, &mods), KvmBacking::Absent);
    }

    #[test]
    fn kvm_backings() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(kvm_backing(true, &s(&["kvm", "kvm_pvm"])), KvmBacking::Pvm);
        assert_eq!(
            kvm_backing(true, &s(&["kvm", "kvm_intel", "kvm_pvm"])),
            KvmBacking::Pvm
        );
        assert_eq!(kvm_backing(true, &s(&["kvm", "kvm_amd"])), KvmBacking::AmdV);
        assert_eq!(kvm_backing(true, &s(&["kvm"])), KvmBacking::Unknown);
    }

    #[test]
    fn cpu_flags() {
        let intel = "processor\t: 0\nflags\t\t: fpu vme de vmx sse2\n";
        let amd = "flags\t\t: fpu svm sse\n";
        let none = "flags\t\t: fpu sse\nbugs\t\t: vmx_tricky\n";
        assert_eq!(parse_cpu_virt_flag(intel).as_deref(), Some("vmx"));
        assert_eq!(parse_cpu_virt_flag(amd).as_deref(), Some("svm"));
        assert_eq!(parse_cpu_virt_flag(none), None);
    }

    #[test]
    fn word_lists() {
        assert_eq!(
            parse_word_list("cpuset cpu io memory hugetlb pids rdma misc\n"),
            ["cpuset", "cpu", "io", "memory", "hugetlb", "pids", "rdma", "misc"]
        );
        assert!(parse_word_list("\n").is_empty());
    }

    /// A host where everything is present: hybrid cgroups from `HYBRID`, hardware KVM.
    fn full_host() -> Host {
        let mounts = parse_mountinfo_cgroups(HYBRID);
        Host {
            kernel: "6.18.0".into(),
            root: true,
            namespaces: Namespaces {
                kinds: NAMESPACES
                    .iter()
                    .map(|&(name, _)| Namespace {
                        name,
                        present: true,
                    })
                    .collect(),
                user_privileged: Probe::Yes,
                user_unprivileged: Probe::Yes,
            },
            cgroups: Cgroups {
                layout: cgroup_layout(&mounts),
                v1: mounts.v1,
                v2: Some(V2Hierarchy {
                    mount_point: "/sys/fs/cgroup/unified".into(),
                    controllers: vec!["hugetlb".into()],
                }),
            },
            seccomp: Seccomp {
                filter: Probe::Yes,
                actions: vec!["allow".into(), "user_notif".into()],
                user_notif: Probe::Yes,
                notif_sizes: Some(NotifSizes {
                    notif: 80,
                    resp: 24,
                    data: 64,
                }),
            },
            landlock: Landlock {
                abi: Some(6),
                probe: Probe::Yes,
            },
            kvm: Kvm {
                backing: KvmBacking::VtX,
                api_version: Some(12),
                error: None,
                modules: vec!["kvm".into(), "kvm_intel".into()],
                cpu_flag: Some("vmx".into()),
            },
            wasm: Wasm {
                built: true,
                arch: "x86_64",
            },
        }
    }

    fn verdict(reports: &[TierReport], tier: BackendKind) -> &TierReport {
        reports.iter().find(|t| t.tier == tier).unwrap()
    }

    #[test]
    fn everything_present_and_built() {
        let r = assess(&full_host(), &BackendKind::ALL);
        for t in &r {
            assert_eq!(t.verdict, Verdict::Available, "{t:?}");
            assert!(t.reasons.is_empty(), "{t:?}");
        }
    }

    #[test]
    fn not_built_is_unavailable_but_keeps_host_verdict() {
        let r = assess(&full_host(), &[BackendKind::Native]);
        let wasm = verdict(&r, BackendKind::Wasm);
        assert_eq!(wasm.verdict, Verdict::Unavailable);
        assert_eq!(wasm.host, Verdict::Available);
        assert!(!wasm.built);
        assert!(wasm.reasons[0].contains("not built yet"));
        assert_eq!(verdict(&r, BackendKind::Native).verdict, Verdict::Available);
    }

    #[test]
    fn pvm_degrades_microvm_and_absent_kvm_disables_it() {
        let mut host = full_host();
        host.kvm.backing = KvmBacking::Pvm;
        host.kvm.modules = vec!["kvm".into(), "kvm_pvm".into()];
        let r = assess(&host, &BackendKind::ALL);
        let vm = verdict(&r, BackendKind::Microvm);
        assert_eq!(vm.verdict, Verdict::Degraded);
        assert!(vm.reasons[0].contains("PVM"), "{vm:?}");

        host.kvm.backing = KvmBacking::Absent;
        host.kvm.api_version = None;
        let r = assess(&host, &BackendKind::ALL);
        let vm = verdict(&r, BackendKind::Microvm);
        assert_eq!(vm.verdict, Verdict::Unavailable);
        assert!(vm.reasons[0].contains("load kvm_intel"), "{vm:?}");
    }

    #[test]
    fn unopenable_kvm_is_unavailable() {
        let mut host = full_host();
        host.kvm.api_version = None;
        host.kvm.error = Some("Permission denied (os error 13)".into());
        let r = assess(&host, &BackendKind::ALL);
        let vm = verdict(&r, BackendKind::Microvm);
        assert_eq!(vm.verdict, Verdict::Unavailable);
        assert!(vm.reasons[0].contains("Permission denied"));
        assert!(!vm.reasons[0].contains("as root"), "{vm:?}");
        host.root = false;
        let r = assess(&host, &BackendKind::ALL);
        assert!(verdict(&r, BackendKind::Microvm).reasons[0].contains("run strata check as root"));
    }

    #[test]
    fn no_user_notif_disables_sentry_only() {
        let mut host = full_host();
        host.seccomp.user_notif = Probe::No("Invalid argument (os error 22)".into());
        let r = assess(&host, &BackendKind::ALL);
        assert_eq!(
            verdict(&r, BackendKind::Sentry).verdict,
            Verdict::Unavailable
        );
        assert_eq!(verdict(&r, BackendKind::Native).verdict, Verdict::Available);
    }

    #[test]
    fn an_old_landlock_abi_degrades_sentry() {
        let mut host = full_host();
        host.landlock = Landlock {
            abi: Some(2),
            probe: Probe::Yes,
        };
        let r = assess(&host, &BackendKind::ALL);
        let s = verdict(&r, BackendKind::Sentry);
        assert_eq!(s.verdict, Verdict::Degraded);
        assert!(s.reasons[0].contains("ABI 2"), "{:?}", s.reasons);
        host.landlock.abi = Some(3);
        let r = assess(&host, &BackendKind::ALL);
        assert_eq!(verdict(&r, BackendKind::Sentry).verdict, Verdict::Available);
    }

    #[test]
    fn no_landlock_degrades_sentry() {
        let mut host = full_host();
        host.landlock = Landlock {
            abi: None,
            probe: Probe::No("kernel built without Landlock".into()),
        };
        let r = assess(&host, &BackendKind::ALL);
        let s = verdict(&r, BackendKind::Sentry);
        assert_eq!(s.verdict, Verdict::Degraded);
        assert!(s.reasons[0].contains("Landlock"));
    }

    #[test]
    fn missing_namespaces() {
        let mut host = full_host();
        for n in &mut host.namespaces.kinds {
            if n.name == "time" {
                n.present = false;
            }
        }
        let r = assess(&host, &BackendKind::ALL);
        let native = verdict(&r, BackendKind::Native);
        assert_eq!(native.verdict, Verdict::Degraded);
        assert!(native.reasons[0].contains("time"));
        // The sentry inherits what native lacks.
        assert_eq!(verdict(&r, BackendKind::Sentry).verdict, Verdict::Degraded);

        for n in &mut host.namespaces.kinds {
            if n.name == "pid" {
                n.present = false;
            }
        }
        let r = assess(&host, &BackendKind::ALL);
        assert_eq!(
            verdict(&r, BackendKind::Native).verdict,
            Verdict::Unavailable
        );
        assert_eq!(
            verdict(&r, BackendKind::Sentry).verdict,
            Verdict::Unavailable
        );
        // A VM does not need the host's namespaces.
        assert_eq!(
            verdict(&r, BackendKind::Microvm).verdict,
            Verdict::Available
        );
    }

    #[test]
    fn hybrid_uses_v1_controllers_and_v2_core_features() {
        let hybrid = full_host().cgroups;
        let have = effective_controllers(&hybrid);
        assert!(have.contains("memory") && have.contains("freezer"));
        assert!(
            !have.contains("hugetlb"),
            "v2 controllers are unused on a hybrid host"
        );

        let mounts = parse_mountinfo_cgroups(UNIFIED);
        let v2 = Cgroups {
            layout: cgroup_layout(&mounts),
            v1: vec![],
            v2: Some(V2Hierarchy {
                mount_point: "/sys/fs/cgroup".into(),
                controllers: parse_word_list("cpu io memory pids"),
            }),
        };
        let have = effective_controllers(&v2);
        for c in ["cpu", "io", "memory", "pids", "freezer", "devices"] {
            assert!(have.contains(c), "{c}");
        }
        let mut host = full_host();
        host.cgroups = v2;
        let r = assess(&host, &BackendKind::ALL);
        assert_eq!(verdict(&r, BackendKind::Native).verdict, Verdict::Available);
    }

    #[test]
    fn hybrid_without_v1_memory_is_degraded() {
        let mut host = full_host();
        host.cgroups.v1.retain(|h| h.controllers != ["memory"]);
        let r = assess(&host, &BackendKind::ALL);
        let native = verdict(&r, BackendKind::Native);
        assert_eq!(native.verdict, Verdict::Degraded);
        assert!(native
            .reasons
            .iter()
            .any(|r| r.contains("no memory controller")));
    }

    #[test]
    fn no_cgroups_is_unavailable() {
        let mut host = full_host();
        host.cgroups = Cgroups {
            layout: CgroupLayout::None,
            v1: vec![],
            v2: None,
        };
        let r = assess(&host, &BackendKind::ALL);
        assert_eq!(
            verdict(&r, BackendKind::Native).verdict,
            Verdict::Unavailable
        );
    }

    #[test]
    fn text_and_json_render() {
        let report = Report {
            tiers: assess(&full_host(), &[BackendKind::Native]),
            host: full_host(),
        };
        let text = render_text(&report);
        assert!(text.contains("native"), "{text}");
        assert!(text.contains("not built yet"), "{text}");
        assert!(text.contains("Intel VT-x"), "{text}");
        let json: serde_json::Value = serde_json::to_value(&report).unwrap();
        assert_eq!(json["tiers"][0]["tier"], "native");
        assert_eq!(json["tiers"][0]["verdict"], "available");
        assert_eq!(json["tiers"][3]["verdict"], "unavailable");
        assert_eq!(json["host"]["kvm"]["backing"], "vt_x");
        assert_eq!(json["host"]["cgroups"]["layout"], "hybrid");
        assert_eq!(json["host"]["seccomp"]["user_notif"]["result"], "yes");
    }

    /// The probes run on whatever host runs the tests: they must answer without panicking, and
    /// what they say must agree with what the test can see for itself.
    #[test]
    fn probes_this_host() {
        let report = run();
        assert_eq!(report.tiers.len(), 4);
        let mnt = report
            .host
            .namespaces
            .kinds
            .iter()
            .find(|n| n.name == "mount")
            .unwrap();
        assert_eq!(mnt.present, Path::new("/proc/self/ns/mnt").exists());
        assert_eq!(
            report.host.kvm.backing == KvmBacking::Absent,
            !Path::new("/dev/kvm").exists()
        );
        if let Some(abi) = report.host.landlock.abi {
            assert!(abi >= 1);
        }
    }
}
