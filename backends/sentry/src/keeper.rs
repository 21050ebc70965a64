//! One Landlock domain per container: the keeper.
//!
//! Landlock has no way into an existing domain; a domain passes only across fork and exec. So
//! that a process started by `exec` (`ctr task exec`, CRI ExecSync) is in its container's
//! domain, it is forked by a process already inside it: the keeper, which the init's pre-exec
//! hook forks right after it has restricted itself and installed the filter, while it still
//! holds every privilege an exec may ask for. The spec the native tier builds from gives the
//! init uid 0 and every capability ([`rewrite_init_user`]); the hook applies the spec's real
//! user, groups and capabilities itself once the keeper is forked ([`Creds::apply`]).
//!
//! An exec still goes through libcontainer's tenant set-up (namespaces, cgroup, user, groups,
//! capabilities, rlimits, working directory, environment, terminal): what that process ends up
//! as is what the exec'd program must run as. Its hook ([`proxy`]) measures it (credentials,
//! rlimits, umask, working directory, environment, standard streams) and hands all of it to
//! the keeper, whose child takes exactly that state and execs the program, inside the init's
//! Landlock domain and under the init's filter. The tenant stays as the exec's proxy: the
//! process the shim started and waits for. It forwards every signal it gets to the program,
//! and ends as the program ended (the same exit code, or killed by the same signal). When the
//! proxy dies (SIGKILL), the keeper kills the program.
//!
//! The keeper: a quiet child of the init (no exit signal, so the workload's `wait` never
//! sees it), non-dumpable (ptrace and `/proc/<pid>/mem` need `CAP_SYS_PTRACE` over it), killed
//! with the init (`PR_SET_PDEATHSIG`), in the init's cgroup, domain and filter. It takes
//! requests on a socket whose other end the shim alone keeps and hands only to tenants
//! (`KEEPER_FD_ANNOTATION`; the init's hook sends that end to the supervisor, which puts it
//! at the descriptor number tenants inherit). The workload never holds it.

use std::collections::HashSet;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use caps::{CapSet, Capability};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::resource::Resource;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::fdpass::{self, seqpacket_pair};
use crate::sys;

/// Annotation: the descriptor an exec'd process sends its request to the keeper on.
pub const KEEPER_FD_ANNOTATION: &str = "strata.dev/sentry-keeper-fd";
/// Annotation: the init's real credentials ([`Creds`], JSON), which the hook applies after
/// forking the keeper.
pub const INIT_CREDS_ANNOTATION: &str = "strata.dev/sentry-init-creds";
/// Annotation, present when the spec's own environment sets no HOME: the hook then sets it
/// from the container's passwd for the real uid, as libcontainer would have.
pub const INIT_HOME_ANNOTATION: &str = "strata.dev/sentry-init-home";

/// The message the init's hook sends the supervisor with the keeper's request socket.
pub const KEEPER_MESSAGE: &[u8] = b"keeper";

/// A process's credentials. A `None` leaves that part as it is.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Creds {
    /// Real, effective, saved.
    pub uid: [u32; 3],
    pub gid: [u32; 3],
    /// Supplementary groups.
    pub groups: Option<Vec<u32>>,
    /// Capability sets as masks by capability number.
    pub bounding: Option<u64>,
    pub effective: Option<u64>,
    pub permitted: Option<u64>,
    pub inheritable: Option<u64>,
    pub ambient: Option<u64>,
}

fn mask(set: &HashSet<Capability>) -> u64 {
    set.iter().fold(0, |m, c| m | c.bitmask())
}

fn set_of(mask: u64) -> HashSet<Capability> {
    caps::all()
        .into_iter()
        .filter(|c| mask & c.bitmask() != 0)
        .collect()
}

/// The capabilities of this process's set `set`, by OCI name, in capability order.
fn capability_names(set: CapSet) -> Vec<String> {
    let mut held: Vec<Capability> = caps::read(None, set)
        .unwrap_or_default()
        .into_iter()
        .collect();
    held.sort_by_key(|c| c.index());
    held.iter().map(|c| c.to_string()).collect()
}

impl Creds {
    /// What libcontainer 0.7 makes of a spec's user and capabilities: supplementary groups
    /// only when the list is not empty; the bounding set emptied when the spec lists none;
    /// a set the spec leaves out stays as it is; no capability set touched without
    /// `capabilities`.
    pub fn from_spec(spec: &oci_spec::runtime::Process) -> Creds {
        let user = spec.user();
        let names = |v: &Option<oci_spec::runtime::Capabilities>| {
            v.as_ref().map(|set| {
                set.iter()
                    .filter_map(|c| {
                        serde_json::to_value(c)
                            .ok()?
                            .as_str()?
                            .parse::<Capability>()
                            .ok()
                    })
                    .fold(0u64, |m, c| m | c.bitmask())
            })
        };
        let caps = spec.capabilities().as_ref();
        Creds {
            uid: [user.uid(); 3],
            gid: [user.gid(); 3],
            groups: user.additional_gids().clone().filter(|g| !g.is_empty()),
            bounding: caps.map(|c| names(c.bounding()).unwrap_or(0)),
            effective: caps.and_then(|c| names(c.effective())),
            permitted: caps.and_then(|c| names(c.permitted())),
            inheritable: caps.and_then(|c| names(c.inheritable())),
            ambient: caps.and_then(|c| names(c.ambient())),
        }
    }

    /// This process's.
    pub fn current() -> Result<Creds, String> {
        let u = nix::unistd::getresuid().map_err(|e| format!("getresuid: {e}"))?;
        let g = nix::unistd::getresgid().map_err(|e| format!("getresgid: {e}"))?;
        let groups = nix::unistd::getgroups().map_err(|e| format!("getgroups: {e}"))?;
        let read = |set| {
            caps::read(None, set)
                .map(|s| Some(mask(&s)))
                .map_err(|e| format!("read capabilities: {e}"))
        };
        Ok(Creds {
            uid: [u.real.as_raw(), u.effective.as_raw(), u.saved.as_raw()],
            gid: [g.real.as_raw(), g.effective.as_raw(), g.saved.as_raw()],
            groups: Some(groups.iter().map(|g| g.as_raw()).collect()),
            bounding: read(CapSet::Bounding)?,
            effective: read(CapSet::Effective)?,
            permitted: read(CapSet::Permitted)?,
            inheritable: read(CapSet::Inheritable)?,
            ambient: read(CapSet::Ambient)?,
        })
    }

    /// Makes them this (single-threaded) process's, from uid 0 with every capability, in
    /// libcontainer's order: groups, bounding set, ids (keeping the permitted set), the
    /// effective set reset to the permitted one, then each set.
    pub fn apply(&self) -> Result<(), String> {
        if let Some(groups) = &self.groups {
            let now: Vec<u32> = nix::unistd::getgroups()
                .map_err(|e| format!("getgroups: {e}"))?
                .iter()
                .map(|g| g.as_raw())
                .collect();
            if *groups != now {
                let gids: Vec<nix::unistd::Gid> = groups
                    .iter()
                    .map(|g| nix::unistd::Gid::from_raw(*g))
                    .collect();
                nix::unistd::setgroups(&gids).map_err(|e| format!("setgroups: {e}"))?;
            }
        }
        let set = |which, m: u64, what| {
            caps::set(None, which, &set_of(m)).map_err(|e| format!("set the {what} set: {e}"))
        };
        if let Some(b) = self.bounding {
            // The bounding set can only lose members, one by one.
            let now = caps::read(None, CapSet::Bounding)
                .map_err(|e| format!("read the bounding set: {e}"))?;
            for c in now.into_iter().filter(|c| b & c.bitmask() == 0) {
                caps::drop(None, CapSet::Bounding, c)
                    .map_err(|e| format!("drop {c} from the bounding set: {e}"))?;
            }
        }
        nix::sys::prctl::set_keepcaps(true).map_err(|e| format!("keep capabilities: {e}"))?;
        let gid = |n| nix::unistd::Gid::from_raw(n);
        let uid = |n| nix::unistd::Uid::from_raw(n);
        nix::unistd::setresgid(gid(self.gid[0]), gid(self.gid[1]), gid(self.gid[2]))
            .map_err(|e| format!("setresgid {:?}: {e}", self.gid))?;
        nix::unistd::setresuid(uid(self.uid[0]), uid(self.uid[1]), uid(self.uid[2]))
            .map_err(|e| format!("setresuid {:?}: {e}", self.uid))?;
        let permitted =
            caps::read(None, CapSet::Permitted).map_err(|e| format!("read capabilities: {e}"))?;
        caps::set(None, CapSet::Effective, &permitted)
            .map_err(|e| format!("reset the effective set: {e}"))?;
        if let Some(m) = self.effective {
            set(CapSet::Effective, m, "effective")?;
        }
        if let Some(m) = self.inheritable {
            set(CapSet::Inheritable, m, "inheritable")?;
        }
        if let Some(m) = self.permitted {
            set(CapSet::Permitted, m, "permitted")?;
        }
        if let Some(m) = self.ambient {
            set(CapSet::Ambient, m, "ambient")?;
        }
        Ok(())
    }
}

/// Whether the init can be given uid 0 (and so every exec's credentials) by the spec: no user
/// namespace, or one it creates whose maps have uid and gid 0. A container that joins a user
/// namespace by path, or whose maps leave 0 out, has no keeper: its exec'd processes each
/// restrict themselves (a domain apart, as before).
pub fn possible(spec: &oci_spec::runtime::Spec) -> bool {
    let Some(linux) = spec.linux() else {
        return true;
    };
    let user_ns = linux
        .namespaces()
        .iter()
        .flatten()
        .find(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::User);
    let Some(ns) = user_ns else {
        return true;
    };
    if ns.path().is_some() {
        return false;
    }
    let maps_zero = |maps: Option<Vec<(u32, u32)>>| {
        maps.unwrap_or_default()
            .iter()
            .any(|(inside, size)| *inside == 0 && *size > 0)
    };
    maps_zero(
        linux
            .uid_mappings()
            .as_ref()
            .map(|m| m.iter().map(|m| (m.container_id(), m.size())).collect()),
    ) && maps_zero(
        linux
            .gid_mappings()
            .as_ref()
            .map(|m| m.iter().map(|m| (m.container_id(), m.size())).collect()),
    )
}

/// Rewrites `spec` (JSON) so that libcontainer leaves the init as uid 0 with every
/// capability, and records what the spec asked for in its annotations, for the hook.
pub fn rewrite_init_user(
    spec: &mut serde_json::Value,
    original: &oci_spec::runtime::Spec,
) -> Result<(), String> {
    use serde_json::json;
    let process = original.process().as_ref().ok_or("spec has no process")?;
    let creds = Creds::from_spec(process);
    let home_set = process
        .env()
        .iter()
        .flatten()
        .any(|e| e.strip_prefix("HOME=").is_some_and(|h| !h.is_empty()));
    let p = spec
        .pointer_mut("/process")
        .and_then(serde_json::Value::as_object_mut)
        .ok_or("spec process is not an object")?;
    let mut user = json!({ "uid": 0, "gid": 0 });
    if let Some(umask) = process.user().umask() {
        user["umask"] = json!(umask);
    }
    p.insert("user".into(), user);
    // Every capability the shim holds (what an init can be given at all) in the sets an exec
    // may ask for; the inheritable and ambient sets as the shim has them, which is what
    // libcontainer leaves an init whose spec names none.
    let all = capability_names(CapSet::Permitted);
    p.insert(
        "capabilities".into(),
        json!({
            "bounding": all,
            "effective": all,
            "permitted": all,
            "inheritable": capability_names(CapSet::Inheritable),
            "ambient": capability_names(CapSet::Ambient),
        }),
    );
    let ann = crate::object_at(spec, "annotations").ok_or("spec annotations are not an object")?;
    ann.insert(
        INIT_CREDS_ANNOTATION.into(),
        json!(serde_json::to_string(&creds).unwrap_or_default()),
    );
    if !home_set {
        ann.insert(INIT_HOME_ANNOTATION.into(), json!("1"));
    }
    Ok(())
}

/// The resources whose limits an exec'd process takes from its tenant.
const RLIMITS: [Resource; 16] = [
    Resource::RLIMIT_AS,
    Resource::RLIMIT_CORE,
    Resource::RLIMIT_CPU,
    Resource::RLIMIT_DATA,
    Resource::RLIMIT_FSIZE,
    Resource::RLIMIT_LOCKS,
    Resource::RLIMIT_MEMLOCK,
    Resource::RLIMIT_MSGQUEUE,
    Resource::RLIMIT_NICE,
    Resource::RLIMIT_NOFILE,
    Resource::RLIMIT_NPROC,
    Resource::RLIMIT_RSS,
    Resource::RLIMIT_RTPRIO,
    Resource::RLIMIT_RTTIME,
    Resource::RLIMIT_SIGPENDING,
    Resource::RLIMIT_STACK,
];

/// What the keeper's child is to become and run. With it travel, in this order, the
/// tenant's standard input, output and error, its working directory, and the socket the
/// keeper answers on.
#[derive(Serialize, Deserialize, Debug)]
struct Launch {
    path: Vec<u8>,
    args: Vec<Vec<u8>>,
    env: Vec<Vec<u8>>,
    creds: Creds,
    /// Soft and hard limit for each of [`RLIMITS`].
    rlimits: Vec<(u64, u64)>,
    umask: u32,
    terminal: bool,
}

/// The descriptors of a request: standard input, output, error, working directory, reply
/// socket.
const LAUNCH_FDS: usize = 5;
const _: () = assert!(LAUNCH_FDS <= fdpass::MAX_FDS);

/// The longest request (program, arguments, environment, state as JSON).
const MAX_REQUEST: usize = 256 * 1024;

/// An answer to an exec's proxy (`started`, `err ...`, `exit N`, `signal N`).
fn answer(sock: RawFd, bytes: &[u8]) {
    let _ = fdpass::send(sock, bytes, &[]);
}

/// In the init's hook, after its filter is installed and before it takes its real
/// credentials: forks the keeper and sends the supervisor (over `exec_fd`) the end of the
/// keeper's request socket that tenants are to inherit.
pub fn start(exec_fd: RawFd) -> Result<(), String> {
    let (theirs, keeper_end) =
        seqpacket_pair().map_err(|e| format!("sentry: the keeper's socket: {e}"))?;
    let init = nix::unistd::getpid();
    match sys::fork_quiet().map_err(|e| format!("sentry: fork the keeper: {e}"))? {
        sys::Forked::Child => keep(keeper_end, init),
        sys::Forked::Parent(_) => {}
    }
    drop(keeper_end);
    fdpass::send(exec_fd, KEEPER_MESSAGE, &[theirs.as_raw_fd()])
        .map_err(|e| format!("sentry: hand the keeper's socket to the supervisor: {e}"))?;
    Ok(())
}

struct Child {
    pid: Pid,
    pidfd: OwnedFd,
    reply: OwnedFd,
    /// Killed because its proxy is gone: its reply socket is no longer watched.
    orphaned: bool,
}

/// The keeper's life: launches what tenants ask for, reports each program's end to its
/// proxy, kills a program whose proxy is gone. Ends with the init, or once the shim has let
/// go of the request socket and no program of its is left.
fn keep(requests: OwnedFd, init: Pid) -> ! {
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    if nix::unistd::getppid() != init {
        std::process::exit(0);
    }
    let _ = nix::sys::prctl::set_dumpable(false);
    let _ = nix::sys::prctl::set_name(c"strata-keeper");
    // Nothing of the init's but the request socket: not the container's standard streams
    // (holding them would keep a reader from seeing their end), not the supervisor's socket
    // or the keeper's slot, not what libcontainer's set-up holds until the init's exec. (This
    // process never returns: nothing that owned them is dropped.)
    close_all_but(&[requests.as_raw_fd()]);
    let mut accepting = true;
    let mut children: Vec<Child> = Vec::new();
    loop {
        if !accepting && children.is_empty() {
            std::process::exit(0);
        }
        let mut fds = Vec::new();
        if accepting {
            fds.push(PollFd::new(requests.as_fd(), PollFlags::POLLIN));
        }
        for c in &children {
            fds.push(PollFd::new(c.pidfd.as_fd(), PollFlags::POLLIN));
            if !c.orphaned {
                fds.push(PollFd::new(c.reply.as_fd(), PollFlags::empty()));
            }
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => std::process::exit(1),
        }
        let revents: Vec<PollFlags> = fds
            .iter()
            .map(|f| f.revents().unwrap_or(PollFlags::empty()))
            .collect();
        drop(fds);
        // The children polled, before any request adds one.
        let mut i = usize::from(accepting);
        let mut ended = Vec::new();
        for (n, c) in children.iter_mut().enumerate() {
            let exited = !revents[i].is_empty();
            i += 1;
            if !c.orphaned {
                if !revents[i].is_empty() {
                    // The proxy is gone (killed): so goes the program.
                    let _ = sys::pidfd_send_signal(&c.pidfd, libc::SIGKILL);
                    c.orphaned = true;
                }
                i += 1;
            }
            if exited {
                ended.push(n);
            }
        }
        for n in ended.into_iter().rev() {
            let c = children.remove(n);
            let end = match waitpid(c.pid, None) {
                Ok(WaitStatus::Exited(_, code)) => format!("exit {code}"),
                Ok(WaitStatus::Signaled(_, sig, _)) => format!("signal {}", sig as i32),
                _ => "signal 9".to_string(),
            };
            answer(c.reply.as_raw_fd(), end.as_bytes());
        }
        if accepting {
            let r = revents[0];
            if r.contains(PollFlags::POLLIN) {
                match fdpass::receive(requests.as_raw_fd(), MAX_REQUEST) {
                    Ok((bytes, fds)) if !bytes.is_empty() => {
                        if let Some(c) = serve(&bytes, fds) {
                            children.push(c);
                        }
                    }
                    Ok(_) | Err(_) => accepting = false,
                }
            } else if !r.is_empty() {
                accepting = false;
            }
        }
    }
}

/// Launches one request; the answer goes to its reply socket. The child, if one runs.
fn serve(bytes: &[u8], fds: Vec<OwnedFd>) -> Option<Child> {
    if fds.len() != LAUNCH_FDS {
        return None;
    }
    let reply = fds[4].as_raw_fd();
    let launch: Launch = match serde_json::from_slice(bytes) {
        Ok(l) => l,
        Err(e) => {
            answer(reply, format!("err malformed request: {e}").as_bytes());
            return None;
        }
    };
    match launch_child(&launch, &fds) {
        Ok((pid, pidfd)) => {
            let _ = fdpass::send(reply, b"started", &[pidfd.as_raw_fd()]);
            let mut fds = fds;
            let reply = fds.remove(4);
            Some(Child {
                pid,
                pidfd,
                reply,
                orphaned: false,
            })
        }
        Err(e) => {
            answer(reply, format!("err {e}").as_bytes());
            None
        }
    }
}

fn launch_child(l: &Launch, fds: &[OwnedFd]) -> Result<(Pid, OwnedFd), String> {
    let (err_r, err_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let keeper = nix::unistd::getpid();
    match sys::fork().map_err(|e| format!("fork: {e}"))? {
        sys::Forked::Child => {
            drop(err_r);
            let e = become_exec(l, fds, keeper).unwrap_err();
            let _ = nix::unistd::write(&err_w, e.as_bytes());
            std::process::exit(127);
        }
        sys::Forked::Parent(pid) => {
            drop(err_w);
            let pid = Pid::from_raw(pid as i32);
            let mut why = Vec::new();
            let mut buf = [0u8; 1024];
            loop {
                match nix::unistd::read(err_r.as_raw_fd(), &mut buf) {
                    Ok(0) => break,
                    Ok(n) => why.extend_from_slice(&buf[..n]),
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(_) => break,
                }
            }
            if !why.is_empty() {
                let _ = waitpid(pid, None);
                return Err(String::from_utf8_lossy(&why).into_owned());
            }
            let pidfd = sys::pidfd_open(pid.as_raw() as u32).map_err(|e| format!("pidfd: {e}"))?;
            Ok((pid, pidfd))
        }
    }
}

/// In the keeper's child: takes the tenant's state and execs its program; returns only why
/// it could not.
fn become_exec(l: &Launch, fds: &[OwnedFd], keeper: Pid) -> Result<(), String> {
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&SigSet::empty()),
        None,
    );
    // Above the standard streams before they are put in place.
    let high: Vec<OwnedFd> = fds
        .iter()
        .map(|f| sys::dup_above(f, 10))
        .collect::<std::io::Result<_>>()
        .map_err(|e| format!("move descriptors: {e}"))?;
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    for (n, f) in high[..3].iter().enumerate() {
        nix::unistd::dup2(f.as_raw_fd(), n as RawFd).map_err(|e| format!("dup2: {e}"))?;
    }
    if l.terminal {
        sys::set_controlling_tty(0).map_err(|e| format!("set the controlling terminal: {e}"))?;
    }
    nix::unistd::fchdir(high[3].as_raw_fd()).map_err(|e| format!("chdir: {e}"))?;
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(l.umask));
    for (r, (soft, hard)) in RLIMITS.iter().zip(&l.rlimits) {
        nix::sys::resource::setrlimit(*r, *soft, *hard)
            .map_err(|e| format!("setrlimit {r:?}: {e}"))?;
    }
    l.creds.apply()?;
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(|e| format!("pdeathsig: {e}"))?;
    if nix::unistd::getppid() != keeper {
        return Err("the keeper is gone".into());
    }
    let c = |b: &[u8]| {
        CString::new(b)
            .map_err(|_| "a NUL in the program, an argument or the environment".to_string())
    };
    let path = c(&l.path)?;
    let args = l.args.iter().map(|a| c(a)).collect::<Result<Vec<_>, _>>()?;
    let env = l.env.iter().map(|a| c(a)).collect::<Result<Vec<_>, _>>()?;
    let err = nix::unistd::execve(&path, &args, &env).unwrap_err();
    Err(format!(
        "exec {:?}: {}",
        String::from_utf8_lossy(&l.path),
        err.desc().to_lowercase()
    ))
}

/// In an exec'd process's hook: has the keeper run the program as this process is set up,
/// then stands in for it until it ends, and ends the same way. Returns only if the program
/// could not be started.
pub fn proxy(
    spec: &oci_spec::runtime::Spec,
    keeper_fd: RawFd,
) -> Result<std::convert::Infallible, String> {
    let process = spec.process().as_ref().ok_or("spec has no process")?;
    let path = strata_native::find_program(spec)?;
    let args: Vec<Vec<u8>> = process
        .args()
        .iter()
        .flatten()
        .map(|a| a.as_bytes().to_vec())
        .collect();
    strata_native::default_home();
    let env = std::env::vars_os()
        .map(|(k, v)| {
            let mut e = k.into_vec();
            e.push(b'=');
            e.extend(v.into_vec());
            e
        })
        .collect();
    let mask = nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    nix::sys::stat::umask(mask);
    let rlimits = RLIMITS
        .iter()
        .map(|r| nix::sys::resource::getrlimit(*r).map_err(|e| format!("getrlimit {r:?}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let terminal = process.terminal().unwrap_or(false);
    let launch = Launch {
        path: path.as_os_str().as_bytes().to_vec(),
        args,
        env,
        creds: Creds::current()?,
        rlimits,
        umask: mask.bits(),
        terminal,
    };
    let _ = nix::sys::prctl::set_name(c"strata-exec");
    // Outside every Landlock domain and unfiltered: no process of the workload's user may
    // reach into it (Landlock's ptrace rule refuses the workload's domain already).
    let _ = nix::sys::prctl::set_dumpable(false);
    if terminal {
        // The terminal can be the controlling one of one session: the program's, from now.
        // Giving it up sends this session leader's group SIGHUP and SIGCONT, ignored here
        // (before signals are blocked, so they are not kept pending for the program).
        let _ = sys::ignore_disposition(Signal::SIGHUP);
        let _ = sys::release_controlling_tty(0);
        let _ = sys::default_disposition(Signal::SIGHUP);
    }
    // Every signal from now on waits for the program, to be passed on.
    let all = SigSet::all();
    all.thread_block()
        .map_err(|e| format!("block signals: {e}"))?;
    let signals =
        nix::sys::signalfd::SignalFd::with_flags(&all, nix::sys::signalfd::SfdFlags::SFD_CLOEXEC)
            .map_err(|e| format!("signalfd: {e}"))?;
    let cwd = nix::fcntl::open(
        ".",
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map(sys::own_fd)
    .map_err(|e| format!("open the working directory: {e}"))?;
    let streams = Streams::new().map_err(|e| format!("pipes for the standard streams: {e}"))?;
    let (mine, theirs) = seqpacket_pair().map_err(|e| format!("socketpair: {e}"))?;
    let json = serde_json::to_vec(&launch).map_err(|e| format!("encode: {e}"))?;
    let given = streams.program_ends();
    let sent = fdpass::send(
        keeper_fd,
        &json,
        &[
            given[0],
            given[1],
            given[2],
            cwd.as_raw_fd(),
            theirs.as_raw_fd(),
        ],
    );
    drop((theirs, cwd));
    match sent {
        Ok(_) => {}
        Err(nix::errno::Errno::ENOTSOCK) => {
            return Err("sentry: the container's keeper has not started".into())
        }
        Err(e) => return Err(format!("sentry: the container's keeper is gone ({e})")),
    }
    let (answer, mut fds) = fdpass::receive(mine.as_raw_fd(), MAX_REQUEST)
        .map_err(|e| format!("sentry: the keeper's answer: {e}"))?;
    if let Some(err) = answer.strip_prefix(b"err ") {
        return Err(String::from_utf8_lossy(err).into_owned());
    }
    if answer != b"started" || fds.len() != 1 {
        return Err("sentry: the container's keeper ended before it answered".into());
    }
    let program = fds.remove(0);
    let mut streams = streams.started();
    // From here on this process never returns (nothing of the stack is dropped): what
    // libcontainer's set-up left open for the exec to close (its sync channels, whose end
    // its parent waits for) is closed now, as the exec would have, and so are the streams
    // the program holds without a pump of ours (its readers must see their end with its).
    let mut keep = vec![mine.as_raw_fd(), signals.as_raw_fd(), program.as_raw_fd()];
    keep.extend(streams.fds());
    close_all_but(&keep);
    loop {
        let mut p = vec![
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
            PollFd::new(mine.as_fd(), PollFlags::POLLIN),
        ];
        let pumps = streams.poll_fds();
        p.extend(pumps.iter().map(|(fd, flags)| {
            // The descriptors belong to `streams`, alive for this loop.
            PollFd::new(sys::borrow(*fd), *flags)
        }));
        match poll(&mut p, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => end_as(b"signal 9", &mut streams),
        }
        let ready: Vec<bool> = p
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(p);
        if ready[0] {
            if let Ok(Some(info)) = signals.read_signal() {
                let _ = sys::pidfd_send_signal(&program, info.ssi_signo as i32);
            }
        }
        let ready_fds: Vec<RawFd> = pumps
            .iter()
            .zip(&ready[2..])
            .filter(|(_, r)| **r)
            .map(|((fd, _), _)| *fd)
            .collect();
        streams.pump(&ready_fds);
        if ready[1] {
            let end = fdpass::receive(mine.as_raw_fd(), MAX_REQUEST)
                .map(|(b, _)| b)
                .unwrap_or_default();
            // No answer: the keeper died, and with it (PR_SET_PDEATHSIG) the program.
            end_as(
                if end.is_empty() { b"signal 9" } else { &end },
                &mut streams,
            );
        }
    }
}

/// Whether `fd` is a named FIFO (containerd's stdio FIFOs, whose paths lie outside the
/// container's root): the program cannot reopen one by path (`/dev/stdout`) inside the
/// init's Landlock domain, whose rules name only the init's own. A pipe of ours stands in.
fn is_named_fifo(fd: RawFd) -> bool {
    const PIPEFS_MAGIC: libc::__fsword_t = 0x5049_5045;
    let fifo = nix::sys::stat::fstat(fd).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFIFO);
    fifo && nix::sys::statfs::fstatfs(sys::borrow(fd))
        .is_ok_and(|fs| fs.filesystem_type().0 != PIPEFS_MAGIC)
}

/// One standard stream: given to the program as it is, or through a pipe this process pumps
/// to or from the stream (a named FIFO).
enum Stream {
    Direct,
    /// Standard input: the program reads `pipe`; this process copies the stream into it.
    In {
        pipe: Option<OwnedFd>,
        given: Option<OwnedFd>,
        pending: Vec<u8>,
        open: bool,
    },
    /// Output: the program writes `given`; this process copies `pipe` to the stream.
    Out {
        pipe: Option<OwnedFd>,
        given: Option<OwnedFd>,
    },
}

struct Streams([Stream; 3]);

impl Streams {
    fn new() -> std::io::Result<Streams> {
        let make = |n: RawFd| -> std::io::Result<Stream> {
            if !is_named_fifo(n) {
                return Ok(Stream::Direct);
            }
            let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
            Ok(if n == 0 {
                let _ = nix::fcntl::fcntl(
                    w.as_raw_fd(),
                    nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
                );
                Stream::In {
                    pipe: Some(w),
                    given: Some(r),
                    pending: Vec::new(),
                    open: true,
                }
            } else {
                Stream::Out {
                    pipe: Some(r),
                    given: Some(w),
                }
            })
        };
        Ok(Streams([make(0)?, make(1)?, make(2)?]))
    }

    /// The descriptors the program gets as its standard streams.
    fn program_ends(&self) -> [RawFd; 3] {
        let mut out = [0, 1, 2];
        for (n, s) in self.0.iter().enumerate() {
            match s {
                Stream::In { given: Some(g), .. } | Stream::Out { given: Some(g), .. } => {
                    out[n] = g.as_raw_fd()
                }
                _ => {}
            }
        }
        out
    }

    /// Once the program holds its ends: ours of them closed.
    fn started(mut self) -> Streams {
        for s in &mut self.0 {
            if let Stream::In { given, .. } | Stream::Out { given, .. } = s {
                *given = None;
            }
        }
        self
    }

    /// Descriptors to keep: the pipes, and the streams they are pumped to or from.
    fn fds(&self) -> Vec<RawFd> {
        let mut v = Vec::new();
        for (n, s) in self.0.iter().enumerate() {
            match s {
                Stream::Direct => {}
                Stream::In { pipe, .. } | Stream::Out { pipe, .. } => {
                    v.push(n as RawFd);
                    v.extend(pipe.as_ref().map(|p| p.as_raw_fd()));
                }
            }
        }
        v
    }

    /// What to poll: the input stream while nothing waits to go into the pipe, else the
    /// pipe for room; each output pipe for data.
    fn poll_fds(&self) -> Vec<(RawFd, PollFlags)> {
        let mut v = Vec::new();
        for s in &self.0 {
            match s {
                Stream::In {
                    pipe: Some(p),
                    pending,
                    open,
                    ..
                } => {
                    if !pending.is_empty() {
                        v.push((p.as_raw_fd(), PollFlags::POLLOUT));
                    } else if *open {
                        v.push((0, PollFlags::POLLIN));
                    }
                }
                Stream::Out { pipe: Some(p), .. } => v.push((p.as_raw_fd(), PollFlags::POLLIN)),
                _ => {}
            }
        }
        v
    }

    /// Moves what is ready on `ready` (descriptors from `poll_fds`).
    fn pump(&mut self, ready: &[RawFd]) {
        let mut buf = vec![0u8; 64 * 1024];
        for (n, s) in self.0.iter_mut().enumerate() {
            match s {
                Stream::In {
                    pipe,
                    pending,
                    open,
                    ..
                } => {
                    let Some(p) = pipe.as_ref() else { continue };
                    if *open && pending.is_empty() && ready.contains(&0) {
                        match nix::unistd::read(0, &mut buf) {
                            Ok(0) | Err(_) => *open = false,
                            Ok(k) => pending.extend_from_slice(&buf[..k]),
                        }
                    }
                    if !pending.is_empty() {
                        match nix::unistd::write(p, pending) {
                            Ok(k) => {
                                pending.drain(..k);
                            }
                            Err(nix::errno::Errno::EAGAIN) => {}
                            Err(_) => {
                                pending.clear();
                                *open = false;
                            }
                        }
                    }
                    if !*open && pending.is_empty() {
                        // The stream's end: the program reads its end of the pipe.
                        *pipe = None;
                    }
                }
                Stream::Out { pipe, .. } => {
                    let Some(p) = pipe.as_ref() else { continue };
                    if !ready.contains(&p.as_raw_fd()) {
                        continue;
                    }
                    match nix::unistd::read(p.as_raw_fd(), &mut buf) {
                        Ok(0) | Err(_) => *pipe = None,
                        Ok(k) => write_all(n as RawFd, &buf[..k]),
                    }
                }
                Stream::Direct => {}
            }
        }
    }

    /// Once the program has ended: what it wrote and is still in the pipes goes out.
    fn drain(&mut self) {
        let mut buf = vec![0u8; 64 * 1024];
        for (n, s) in self.0.iter_mut().enumerate() {
            if let Stream::Out { pipe: Some(p), .. } = s {
                let _ = nix::fcntl::fcntl(
                    p.as_raw_fd(),
                    nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
                );
                while let Ok(k) = nix::unistd::read(p.as_raw_fd(), &mut buf) {
                    if k == 0 {
                        break;
                    }
                    write_all(n as RawFd, &buf[..k]);
                }
            }
        }
    }
}

/// Writes all of `data` to `fd` (a stream), giving up on an error.
fn write_all(fd: RawFd, mut data: &[u8]) {
    while !data.is_empty() {
        match nix::unistd::write(sys::borrow(fd), data) {
            Ok(0) => return,
            Ok(k) => data = &data[k..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}

/// Closes every descriptor of this process but `keep`.
fn close_all_but(keep: &[RawFd]) {
    let open: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    for fd in open.into_iter().filter(|fd| !keep.contains(fd)) {
        sys::close_raw(fd);
    }
}

/// Ends this process as the program ended (`exit N` or `signal N`), once the program's
/// output still in the pipes has gone out.
fn end_as(end: &[u8], streams: &mut Streams) -> ! {
    streams.drain();
    let text = String::from_utf8_lossy(end);
    let (kind, n) = text.split_once(' ').unwrap_or(("exit", "1"));
    let n: i32 = n.trim().parse().unwrap_or(1);
    if kind == "signal" {
        if let Ok(sig) = Signal::try_from(n) {
            let _ = nix::sys::resource::setrlimit(Resource::RLIMIT_CORE, 0, 0);
            // Back to SIG_DFL, raised (pending while blocked), then unblocked.
            let _ = sys::default_disposition(sig);
            let _ = nix::sys::signal::raise(sig);
            let mut one = SigSet::empty();
            one.add(sig);
            let _ = one.thread_unblock();
        }
        std::process::exit(128 + n);
    }
    std::process::exit(n);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_masks_survive_the_round_trip() {
        let set: HashSet<Capability> = [
            Capability::CAP_CHOWN,
            Capability::CAP_KILL,
            Capability::CAP_SYS_ADMIN,
        ]
        .into();
        assert_eq!(set_of(mask(&set)), set);
        assert_eq!(mask(&HashSet::new()), 0);
    }

    #[test]
    fn creds_from_a_spec_are_libcontainers() {
        let spec: oci_spec::runtime::Process = serde_json::from_value(serde_json::json!({
            "cwd": "/", "args": ["sh"],
            "user": { "uid": 1000, "gid": 100, "additionalGids": [10, 20] },
            "capabilities": { "effective": ["CAP_KILL"], "permitted": ["CAP_KILL", "CAP_CHOWN"] }
        }))
        .unwrap();
        let c = Creds::from_spec(&spec);
        assert_eq!(c.uid, [1000; 3]);
        assert_eq!(c.gid, [100; 3]);
        assert_eq!(c.groups, Some(vec![10, 20]));
        // No bounding list: emptied, as libcontainer does; no ambient list: left alone.
        assert_eq!(c.bounding, Some(0));
        assert_eq!(c.effective, Some(Capability::CAP_KILL.bitmask()));
        assert_eq!(
            c.permitted,
            Some(Capability::CAP_KILL.bitmask() | Capability::CAP_CHOWN.bitmask())
        );
        assert_eq!(c.ambient, None);

        let bare: oci_spec::runtime::Process = serde_json::from_value(serde_json::json!({
            "cwd": "/", "args": ["sh"], "user": { "uid": 0, "gid": 0, "additionalGids": [] }
        }))
        .unwrap();
        let c = Creds::from_spec(&bare);
        assert_eq!(c.groups, None, "an empty list sets no groups");
        assert_eq!(c.bounding, None, "no capabilities: no set touched");
    }

    #[test]
    fn only_a_spec_that_can_map_uid_0_gets_a_keeper() {
        let spec = |linux: serde_json::Value| -> oci_spec::runtime::Spec {
            serde_json::from_value(serde_json::json!({
                "ociVersion": "1.0.2", "root": { "path": "rootfs" },
                "process": { "cwd": "/", "args": ["sh"], "user": { "uid": 0, "gid": 0 } },
                "linux": linux
            }))
            .unwrap()
        };
        assert!(possible(&spec(
            serde_json::json!({ "namespaces": [{ "type": "mount" }] })
        )));
        let map = |from: u32| serde_json::json!([{ "containerID": from, "hostID": 100000, "size": 65536 }]);
        assert!(possible(&spec(serde_json::json!({
            "namespaces": [{ "type": "user" }], "uidMappings": map(0), "gidMappings": map(0)
        }))));
        assert!(!possible(&spec(serde_json::json!({
            "namespaces": [{ "type": "user" }], "uidMappings": map(1000), "gidMappings": map(0)
        }))));
        assert!(!possible(&spec(serde_json::json!({
            "namespaces": [{ "type": "user", "path": "/proc/1/ns/user" }]
        }))));
    }

    #[test]
    fn the_init_is_rewritten_to_root_and_remembers_its_user() {
        let original: oci_spec::runtime::Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2", "root": { "path": "rootfs" },
            "process": { "cwd": "/", "args": ["sh"], "env": ["PATH=/bin"],
                "user": { "uid": 1000, "gid": 1000, "umask": 18, "additionalGids": [5] },
                "capabilities": { "bounding": ["CAP_KILL"] } }
        }))
        .unwrap();
        let mut json = serde_json::to_value(&original).unwrap();
        rewrite_init_user(&mut json, &original).unwrap();
        assert_eq!(
            json["process"]["user"],
            serde_json::json!({ "uid": 0, "gid": 0, "umask": 18 })
        );
        let bounding = json["process"]["capabilities"]["bounding"]
            .as_array()
            .unwrap();
        assert!(bounding.iter().any(|c| c == "CAP_SYS_ADMIN"));
        let creds: Creds =
            serde_json::from_str(json["annotations"][INIT_CREDS_ANNOTATION].as_str().unwrap())
                .unwrap();
        assert_eq!(
            creds,
            Creds::from_spec(original.process().as_ref().unwrap())
        );
        assert_eq!(json["annotations"][INIT_HOME_ANNOTATION], "1");
        // The rewritten spec is one libcontainer reads.
        let back: oci_spec::runtime::Spec = serde_json::from_value(json).unwrap();
        assert_eq!(back.process().as_ref().unwrap().user().uid(), 0);
    }
}
