//! The sentry's seccomp filter, in OCI `linux.seccomp` form, for the sentry's pre-exec hook to
//! install last before exec (with no_new_privs; see `exec_filter`).
//!
//! Three kinds of rule:
//! - `SCMP_ACT_NOTIFY` for every call the supervisor decides: file opens, exec, sockets,
//!   `uname`, `personality`, `sched_getaffinity` (let through, see [`TRAPPED`]), and the
//!   calls the sentry refuses (so that each refusal is
//!   audited: the supervisor answers them EPERM; with the supervisor gone the kernel answers
//!   ENOSYS, so they fail either way).
//! - `SCMP_ACT_NOTIFY` with argument filters for `clone` with namespace flags, and for
//!   `clone(CLONE_VM)` without `CLONE_THREAD`/`CLONE_VFORK` (a second process sharing memory
//!   would defeat the exec check, see docs/sentry.md).
//! - `SCMP_ACT_ERRNO(ENOSYS)` for `clone3`, whose flags live behind a pointer a filter cannot
//!   read: libc then falls back to `clone`, which the filter can judge (Docker does the same).

use serde_json::{json, Value};

use crate::policy::Policy;

/// Calls whose every use is decided by the supervisor.
pub const TRAPPED: &[&str] = &[
    "open",
    "openat",
    "openat2",
    "creat",
    "execve",
    "execveat",
    "socket",
    "connect",
    "bind",
    "listen",
    "uname",
    "personality",
    // Let through, but only once the supervisor has finished its previous answer: it holds a
    // task on its own CPU while handing over a descriptor and lets go after the task has run
    // on (sys::Pinned, SCHED_BATCH); a task must never see itself held.
    "sched_getaffinity",
];

/// The open calls among [`TRAPPED`]: not trapped at all where the kernel decides every open
/// as the policy does (`Policy::kernel_opens`); the spec's own profile then rules them.
pub const OPENS: &[&str] = &["open", "openat", "openat2", "creat"];

/// Calls the sentry always refuses (Docker's default profile refuses them too, or more).
pub const DENIED: &[&str] = &[
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "userfaultfd",
    "keyctl",
    "add_key",
    "request_key",
    "kexec_load",
    "kexec_file_load",
    "bpf",
    "perf_event_open",
    "unshare",
    "setns",
    "mount",
    "umount2",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "move_mount",
    "open_tree",
    "mount_setattr",
    "pivot_root",
    "init_module",
    "finit_module",
    "delete_module",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "process_madvise",
    "pidfd_getfd",
    "swapon",
    "swapoff",
    "acct",
    "reboot",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "syslog",
    "lookup_dcookie",
    "name_to_handle_at",
    "open_by_handle_at",
    "quotactl",
    "quotactl_fd",
    "sysfs",
    "_sysctl",
    "uselib",
    "ustat",
    "iopl",
    "ioperm",
    "create_module",
    "get_kernel_syms",
    "query_module",
    "nfsservctl",
    "kcmp",
    "vm86",
    "vm86old",
];

/// The call that changes a task's root directory (`pivot_root`, `setns`, `unshare` and
/// namespace clones, which could too, are refused). The supervisor keeps the root of the
/// tasks under a filter open between calls, so it must see each `chroot` that can succeed:
/// trapped (then let through) wherever the spec's own profile would have let it run.
pub const ROOT_CHANGING: &str = "chroot";

/// The calls the sentry filters by their arguments (namespace flags), neither trapped nor
/// refused outright.
pub const ARG_FILTERED: &[&str] = &["clone", "clone3"];

/// Every call the sentry handles itself (trapped, filtered by argument, or refused); a policy
/// cannot list these under `[syscalls]`.
pub fn managed() -> impl Iterator<Item = &'static str> {
    TRAPPED.iter().chain(ARG_FILTERED).chain(DENIED).copied()
}

/// Whether the sentry handles `name` itself.
pub fn is_managed(name: &str) -> bool {
    managed().any(|n| n == name)
}

/// Namespace flags that `clone` may not carry.
pub const CLONE_NS_FLAGS: &[u64] = &[
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWCGROUP as u64,
];

/// `(arg0 & mask) == datum`. libcontainer 0.7 takes the mask from `valueTwo` and the datum
/// from `value` (and libseccomp masks the datum), so the order matters: the other way round,
/// the CLONE_VM rule below refused every thread.
fn masked(mask: u64, datum: u64) -> Value {
    json!({ "index": 0, "value": datum, "valueTwo": mask, "op": "SCMP_CMP_MASKED_EQ" })
}

/// What the supervisor may rely on in the filter [`apply`] made.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Applied {
    /// No task under the filter changes its root directory unseen: every `chroot` that could
    /// succeed reaches the supervisor (trapped, or decided by the policy's `[syscalls]`), or
    /// the spec's own profile refuses it outright.
    pub root_watched: bool,
}

/// Actions under which a call never runs.
const REFUSING: &[&str] = &[
    "SCMP_ACT_ERRNO",
    "SCMP_ACT_KILL",
    "SCMP_ACT_KILL_PROCESS",
    "SCMP_ACT_KILL_THREAD",
    "SCMP_ACT_TRAP",
];
/// Actions under which a call runs as without a filter.
const RUNNING: &[&str] = &["SCMP_ACT_ALLOW", "SCMP_ACT_LOG"];

/// What the spec's own profile does with `name` whatever its arguments: the action of its
/// one unconditional rule naming it, or the default action without one; `None` when its
/// rules make that depend on the arguments (or disagree).
fn own_action(rules: &[Value], default: Option<&str>, name: &str) -> Option<String> {
    let naming: Vec<&Value> = rules
        .iter()
        .filter(|r| {
            r.get("names")
                .and_then(Value::as_array)
                .is_some_and(|n| n.iter().any(|n| n.as_str() == Some(name)))
        })
        .collect();
    match naming.as_slice() {
        [] => default.map(str::to_string),
        [r] if r
            .get("args")
            .and_then(Value::as_array)
            .is_none_or(|a| a.is_empty()) =>
        {
            r.get("action").and_then(Value::as_str).map(str::to_string)
        }
        _ => None,
    }
}

/// Whether the spec's own profile lets a plain `clone` (a fork or a thread, no namespace
/// flags) run: its default action runs calls, or one of its rules naming `clone` allows it,
/// with or without conditions on the flags (such conditions only keep namespace flags out,
/// which the sentry traps anyway).
fn spec_runs_plain_clone(rules: &[Value], default: Option<&str>) -> bool {
    let naming_clone = |r: &&Value| {
        r.get("names")
            .and_then(Value::as_array)
            .is_some_and(|n| n.iter().any(|n| n.as_str() == Some("clone")))
    };
    let allowing = rules
        .iter()
        .filter(naming_clone)
        .filter_map(|r| r.get("action").and_then(Value::as_str))
        .any(|a| RUNNING.contains(&a));
    allowing || default.is_none_or(|d| RUNNING.contains(&d))
}

/// Rewrites `spec` (OCI runtime spec as JSON) for the sentry: no_new_privs, and the filter
/// above merged into whatever seccomp profile the spec already has. With `kernel_opens`, the
/// open calls ([`OPENS`]) are left out of the filter and to the spec's own rules.
pub fn apply(spec: &mut Value, policy: &Policy, kernel_opens: bool) -> Result<Applied, String> {
    let process = spec
        .get_mut("process")
        .and_then(Value::as_object_mut)
        .ok_or("the spec has no process")?;
    process.insert("noNewPrivileges".into(), json!(true));

    let linux = spec
        .as_object_mut()
        .ok_or("the spec is not an object")?
        .entry("linux")
        .or_insert_with(|| json!({}));
    let linux = linux.as_object_mut().ok_or("linux is not an object")?;
    let seccomp = linux.entry("seccomp").or_insert_with(
        || json!({ "defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"] }),
    );
    let seccomp = seccomp
        .as_object_mut()
        .ok_or("linux.seccomp is not an object")?;
    let mine = |n: &&str| !(kernel_opens && OPENS.contains(n));
    let mut managed: Vec<&str> = managed().filter(mine).collect();
    managed.extend(policy.extra.keys().map(String::as_str));

    let default = seccomp
        .get("defaultAction")
        .and_then(Value::as_str)
        .map(str::to_string);
    let old_rules = match seccomp.remove("syscalls") {
        Some(Value::Array(old)) => old,
        _ => Vec::new(),
    };
    let clone_runs = spec_runs_plain_clone(&old_rules, default.as_deref());
    // Keep the spec's own rules for every other call.
    let mut rules: Vec<Value> = Vec::new();
    for mut rule in old_rules {
        if let Some(Value::Array(names)) = rule.get_mut("names") {
            names.retain(|n| !n.as_str().is_some_and(|n| managed.contains(&n)));
            if names.is_empty() {
                continue;
            }
        }
        rules.push(rule);
    }
    let mut notify: Vec<&str> = TRAPPED.iter().copied().filter(mine).collect();
    notify.extend(DENIED);
    // chroot: decided by the policy if it lists it (its rules were dropped above); else
    // trapped where the spec would let it run, left to the spec where it refuses it.
    let root_watched = if policy.extra.contains_key(ROOT_CHANGING) {
        true
    } else {
        match own_action(&rules, default.as_deref(), ROOT_CHANGING) {
            Some(a) if RUNNING.contains(&a.as_str()) => {
                rules.retain_mut(|rule| {
                    let Some(Value::Array(names)) = rule.get_mut("names") else {
                        return true;
                    };
                    names.retain(|n| n.as_str() != Some(ROOT_CHANGING));
                    !names.is_empty()
                });
                notify.push(ROOT_CHANGING);
                true
            }
            Some(a) => REFUSING.contains(&a.as_str()),
            None => false,
        }
    };
    let mut extra: Vec<&String> = policy.extra.keys().collect();
    extra.sort();
    notify.extend(extra.iter().map(|s| s.as_str()));
    rules.push(json!({ "names": notify, "action": "SCMP_ACT_NOTIFY" }));
    for flag in CLONE_NS_FLAGS {
        rules.push(json!({
            "names": ["clone"], "action": "SCMP_ACT_NOTIFY", "args": [masked(*flag, *flag)],
        }));
    }
    let vm_mask = (libc::CLONE_VM | libc::CLONE_THREAD | libc::CLONE_VFORK) as u64;
    rules.push(json!({
        "names": ["clone"], "action": "SCMP_ACT_NOTIFY",
        "args": [masked(vm_mask, libc::CLONE_VM as u64)],
    }));
    // The spec's own clone rules were dropped above; where its profile lets an ordinary fork
    // or thread run (containerd's and Docker's default profiles allow clone only without
    // namespace flags, under a default that refuses), every clone that none of the rules
    // above traps is allowed explicitly: without namespace flags, and with the CLONE_VM,
    // CLONE_THREAD and CLONE_VFORK bits in any combination but CLONE_VM alone. These rules and
    // the trapping ones never match the same flags, so no precedence between them matters.
    if clone_runs {
        let ns_all = CLONE_NS_FLAGS.iter().fold(0, |a, f| a | f);
        let (vm, thread, vfork) = (
            libc::CLONE_VM as u64,
            libc::CLONE_THREAD as u64,
            libc::CLONE_VFORK as u64,
        );
        for bits in [
            0,
            thread,
            vfork,
            vm | thread,
            vm | vfork,
            thread | vfork,
            vm | thread | vfork,
        ] {
            rules.push(json!({
                "names": ["clone"], "action": "SCMP_ACT_ALLOW",
                "args": [masked(ns_all | vm_mask, bits)],
            }));
        }
    }
    rules.push(json!({
        "names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::ENOSYS,
    }));
    seccomp.insert("syscalls".into(), Value::Array(rules));
    seccomp.remove("listenerPath");
    // libcontainer (as runc) refuses flags it does not know; none are needed.
    seccomp.remove("flags");
    Ok(Applied { root_watched })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_into_an_existing_profile() {
        let mut spec = json!({
            "process": { "args": ["sh"] },
            "linux": { "seccomp": {
                "defaultAction": "SCMP_ACT_ERRNO",
                "syscalls": [
                    { "names": ["read", "openat", "write"], "action": "SCMP_ACT_ALLOW" },
                    { "names": ["ptrace"], "action": "SCMP_ACT_ALLOW" },
                ],
            }},
        });
        apply(&mut spec, &Policy::builtin_default(), false).unwrap();
        assert_eq!(spec["process"]["noNewPrivileges"], json!(true));
        let s = &spec["linux"]["seccomp"];
        assert_eq!(s["defaultAction"], json!("SCMP_ACT_ERRNO"));
        let rules = s["syscalls"].as_array().unwrap();
        assert_eq!(rules[0]["names"], json!(["read", "write"]));
        // The allowed ptrace rule is gone: the sentry decides ptrace.
        assert!(rules.iter().all(|r| r["action"] != "SCMP_ACT_ALLOW"
            || !r["names"].as_array().unwrap().contains(&json!("ptrace"))));
        let notify = rules
            .iter()
            .find(|r| r["action"] == "SCMP_ACT_NOTIFY")
            .unwrap();
        for n in ["openat", "execve", "ptrace", "bpf", "uname"] {
            assert!(
                notify["names"].as_array().unwrap().contains(&json!(n)),
                "{n}"
            );
        }
    }

    #[test]
    fn opens_the_kernel_decides_are_left_to_the_specs_own_rules() {
        let mut spec = json!({
            "process": { "args": ["sh"] },
            "linux": { "seccomp": {
                "defaultAction": "SCMP_ACT_ERRNO",
                "syscalls": [
                    { "names": ["read", "openat", "write", "open"], "action": "SCMP_ACT_ALLOW" },
                ],
            }},
        });
        apply(&mut spec, &Policy::builtin_default(), true).unwrap();
        let rules = spec["linux"]["seccomp"]["syscalls"].as_array().unwrap();
        assert_eq!(
            rules[0]["names"],
            json!(["read", "openat", "write", "open"])
        );
        let notify = rules
            .iter()
            .find(|r| r["action"] == "SCMP_ACT_NOTIFY")
            .unwrap()["names"]
            .as_array()
            .unwrap();
        for n in OPENS {
            assert!(!notify.contains(&json!(n)), "{n}");
        }
        for n in ["execve", "socket", "uname", "mount", "open_tree"] {
            assert!(notify.contains(&json!(n)), "{n}");
        }
    }

    #[test]
    fn chroot_is_trapped_where_the_spec_lets_it_run() {
        let policy = Policy::builtin_default();
        let notified = |spec: &Value| {
            spec["linux"]["seccomp"]["syscalls"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["action"] == "SCMP_ACT_NOTIFY")
                .any(|r| r["names"].as_array().unwrap().contains(&json!("chroot")))
        };
        // No profile: allowed by default, so trapped.
        let mut spec = json!({ "process": { "args": ["sh"] } });
        assert!(apply(&mut spec, &policy, false).unwrap().root_watched);
        assert!(notified(&spec));
        // Allowed by name (as Docker's profile does): trapped instead.
        let mut spec = json!({
            "process": { "args": ["sh"] },
            "linux": { "seccomp": { "defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
                { "names": ["chroot", "read"], "action": "SCMP_ACT_ALLOW" },
            ]}},
        });
        assert!(apply(&mut spec, &policy, false).unwrap().root_watched);
        assert!(notified(&spec));
        let rules = spec["linux"]["seccomp"]["syscalls"].as_array().unwrap();
        assert_eq!(rules[0]["names"], json!(["read"]));
        // Refused by the spec's default: left to it.
        let mut spec = json!({
            "process": { "args": ["sh"] },
            "linux": { "seccomp": { "defaultAction": "SCMP_ACT_ERRNO", "syscalls": [] }},
        });
        assert!(apply(&mut spec, &policy, false).unwrap().root_watched);
        assert!(!notified(&spec));
        // Allowed only for some arguments: left to the spec, and roots are not kept.
        let mut spec = json!({
            "process": { "args": ["sh"] },
            "linux": { "seccomp": { "defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
                { "names": ["chroot"], "action": "SCMP_ACT_ALLOW",
                  "args": [{ "index": 1, "value": 0, "op": "SCMP_CMP_EQ" }] },
            ]}},
        });
        assert!(!apply(&mut spec, &policy, false).unwrap().root_watched);
        assert!(!notified(&spec));
    }

    /// containerd's default profile (what `ctr run --seccomp` and Kubernetes' RuntimeDefault
    /// give): clone allowed only without namespace flags, everything unlisted refused. A fork
    /// must still run under the sentry, a namespace clone must still be trapped.
    #[test]
    fn forks_run_under_a_profile_that_allows_clone_by_its_flags() {
        let ns_mask = 2_114_060_288u64; // containerd's: every CLONE_NEW* flag
        let mut spec = json!({
            "process": { "args": ["sh"] },
            "linux": { "seccomp": { "defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
                { "names": ["read"], "action": "SCMP_ACT_ALLOW" },
                { "names": ["clone"], "action": "SCMP_ACT_ALLOW",
                  "args": [{ "index": 0, "value": ns_mask, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ" }] },
            ]}},
        });
        apply(&mut spec, &Policy::builtin_default(), false).unwrap();
        let rules = spec["linux"]["seccomp"]["syscalls"]
            .as_array()
            .unwrap()
            .clone();
        // Which rules a clone with `flags` matches, by action.
        let actions = |flags: u64| -> Vec<String> {
            rules
                .iter()
                .filter(|r| r["names"].as_array().unwrap().contains(&json!("clone")))
                .filter(|r| {
                    r["args"].as_array().is_none_or(|a| {
                        a.iter().all(|c| {
                            let (mask, datum) = (
                                c["valueTwo"].as_u64().unwrap(),
                                c["value"].as_u64().unwrap(),
                            );
                            flags & mask == datum
                        })
                    })
                })
                .map(|r| r["action"].as_str().unwrap().to_string())
                .collect()
        };
        let sigchld = libc::SIGCHLD as u64;
        let fork = sigchld | libc::CLONE_CHILD_SETTID as u64 | libc::CLONE_CHILD_CLEARTID as u64;
        let thread = (libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD
            | libc::CLONE_SYSVSEM
            | libc::CLONE_SETTLS) as u64;
        let vfork = (libc::CLONE_VM | libc::CLONE_VFORK) as u64 | sigchld;
        for flags in [fork, thread, vfork] {
            assert_eq!(actions(flags), ["SCMP_ACT_ALLOW"], "flags {flags:#x}");
        }
        for flags in [
            fork | libc::CLONE_NEWNS as u64,
            libc::CLONE_VM as u64 | sigchld,
        ] {
            let a = actions(flags);
            assert!(
                !a.is_empty() && a.iter().all(|a| a == "SCMP_ACT_NOTIFY"),
                "flags {flags:#x}: {a:?}"
            );
        }
        // A profile that refuses clone outright keeps refusing forks.
        let mut spec = json!({
            "process": { "args": ["sh"] },
            "linux": { "seccomp": { "defaultAction": "SCMP_ACT_ERRNO", "syscalls": [] }},
        });
        apply(&mut spec, &Policy::builtin_default(), false).unwrap();
        let allows_clone = spec["linux"]["seccomp"]["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| {
                r["action"] == "SCMP_ACT_ALLOW"
                    && r["names"].as_array().unwrap().contains(&json!("clone"))
            });
        assert!(!allows_clone);
    }

    #[test]
    fn every_listed_call_is_managed() {
        for n in TRAPPED.iter().chain(DENIED) {
            assert!(is_managed(n), "{n}");
        }
    }
}
