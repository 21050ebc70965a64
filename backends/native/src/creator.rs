//! Container processes are made by a fresh, single-threaded helper process, never by a clone
//! of the shim.
//!
//! libcontainer makes a container's processes with a raw clone3(2) of the process that calls
//! it, and its intermediate process ends with `std::process::exit`. A clone of a
//! multi-threaded process inherits every lock another thread held at that instant, with no
//! thread left to release it:
//! - glibc's malloc arena locks (a raw clone, unlike glibc's fork, does not take them around
//!   the copy);
//! - Rust std's own locks. The one caught here (gdb on a hung child) is the lock of std's
//!   stack-overflow thread registry, which every thread takes when it starts and when it
//!   ends, and which `std::process::exit` takes in the intermediate. A shim thread starting
//!   or ending at the moment of the clone (a ttrpc worker, an exit watcher) left the
//!   intermediate asleep for ever: about once in four test-suite runs, one of 50 parallel
//!   `ctr run` hung. A glibc fork of the shim first does not help with this one.
//!
//! So the shim spawns its own executable (`/proc/self/exe`, which stays valid when the binary
//! is replaced) with [`CREATOR_ARG`]; that process, which has one thread and a pristine heap,
//! runs libcontainer and exits as soon as libcontainer returns. The container's processes are
//! its children and pass to the shim, a child subreaper, exactly as when the shim cloned them.
//! (Kata's agent moved to exec-then-set-up for the same reason; systemd removed every thread
//! from PID 1.) The request travels as JSON on a socket the helper answers on, whose number
//! is the argument after [`CREATOR_ARG`]. The container's stdio is the helper's own fds 0-2,
//! which the container's init inherits; the descriptors a pre-exec hook names (the sentry's
//! supervisor socket) are handed over at their numbers, and nothing else of the shim's.

use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, FromRawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::oci_spec::runtime::LinuxSeccomp;
use libcontainer::syscall::syscall::SyscallType;
use serde::{Deserialize, Serialize};
use strata_backend::reaper::Reaper;
use strata_backend::stdio::ProcessIo;
use strata_backend::{Error, Result};

use crate::container::error_chain;
use crate::executor::{NativeExecutor, PreExec, Role};

/// The first argument that makes a binary embedding this tier act as the helper: see
/// [`is_asked`].
pub const CREATOR_ARG: &str = "--strata-native-create";

/// What the helper is to make.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Request {
    pub id: String,
    pub root: PathBuf,
    pub console: Option<PathBuf>,
    /// The executor's seccomp profile for exec'd processes.
    pub exec_seccomp: Option<LinuxSeccomp>,
    /// The name of the executor's pre-exec hook ([`PreExec::name`]).
    pub pre_exec: Option<String>,
    pub kind: Kind,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Kind {
    /// The container and its init process, from the bundle.
    Init { bundle: PathBuf },
    /// A process joining the container, from a process spec file.
    Tenant { process_file: PathBuf },
}

impl Request {
    pub fn new(
        id: &str,
        root: &std::path::Path,
        console: Option<PathBuf>,
        executor: &NativeExecutor,
        kind: Kind,
    ) -> Self {
        Request {
            id: id.to_string(),
            root: root.to_path_buf(),
            console,
            exec_seccomp: executor.exec_seccomp.clone(),
            pre_exec: executor.pre_exec.as_ref().map(|h| h.name().to_string()),
            kind,
        }
    }
}

/// In the shim: has the helper make what `req` says with `io`'s container-side descriptors as
/// its stdio, and returns the pid of the process made (the init, or the exec'd process).
/// `what` names the work in errors.
/// `keep` are descriptors of this process the container's processes must inherit at the same
/// numbers (all above 2).
pub(crate) fn create(
    what: &str,
    executor: &NativeExecutor,
    req: &Request,
    io: &ProcessIo,
    keep: &[i32],
) -> Result<u32> {
    let exe = executor
        .creator_exe
        .clone()
        .unwrap_or_else(|| PathBuf::from("/proc/self/exe"));
    let json = serde_json::to_vec(req)
        .map_err(|e| Error::Other(format!("{what}: encode the request: {e}")))?;
    let (ours, theirs) =
        UnixStream::pair().map_err(|e| Error::io(format!("{what}: socketpair"), e))?;
    // The socket's number in the helper: the first above the stdio that no kept one has.
    let request_fd = (3..).find(|n| !keep.contains(n)).unwrap_or(3);
    let mut cmd = Command::new(&exe);
    if let Some(name) = executor
        .pre_exec
        .as_ref()
        .and_then(|h| h.process_name(&req.id))
    {
        std::os::unix::process::CommandExt::arg0(&mut cmd, name);
    }
    cmd.arg(CREATOR_ARG).arg(request_fd.to_string());
    for (i, fd) in [0, 1, 2].into_iter().map(|n| (n, io.take_fd(n))) {
        // A stream the container does not get stays the shim's own, as when the shim cloned.
        let s = fd.map(Stdio::from).unwrap_or_else(Stdio::inherit);
        match i {
            0 => cmd.stdin(s),
            1 => cmd.stdout(s),
            _ => cmd.stderr(s),
        };
    }
    let mut pass = vec![(theirs.as_fd(), request_fd)];
    #[allow(unsafe_code)]
    // SAFETY: the kept descriptors are the hook's (the sentry's supervisor socket), open for
    // the container's whole life, which outlasts this call.
    pass.extend(
        keep.iter()
            .map(|&fd| (unsafe { BorrowedFd::borrow_raw(fd) }, fd)),
    );
    let held = strata_backend::spawn::pass_fds(&mut cmd, &pass)
        .map_err(|e| Error::io(format!("{what}: descriptors for the creating helper"), e))?;
    // The reaper must not take the helper's status: held until we have waited for it.
    let _guard = Reaper::global().fork_guard();
    let mut child = cmd.spawn().map_err(|e| {
        Error::io(
            format!("{what}: start the creating helper {}", exe.display()),
            e,
        )
    })?;
    drop((held, pass));
    drop((theirs, cmd));
    let mut ours = ours;
    let sent = ours
        .write_all(&json)
        .and_then(|()| ours.shutdown(std::net::Shutdown::Write));
    let status = child.wait();
    // The container's processes hold the helper's end until they exec (close-on-exec): read
    // what is there now, which is all the helper wrote, never waiting for more.
    let answer = read_now(ours);
    parse(what, &answer, sent, status)
}

fn read_now(s: UnixStream) -> String {
    let _ = s.set_nonblocking(true);
    let mut s = s;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

fn parse(
    what: &str,
    answer: &str,
    sent: std::io::Result<()>,
    status: std::io::Result<std::process::ExitStatus>,
) -> Result<u32> {
    if let Some(pid) = answer.strip_prefix("ok ") {
        return pid
            .trim()
            .parse()
            .map_err(|_| Error::Other(format!("{what}: the creating helper answered {answer:?}")));
    }
    if let Some(err) = answer.strip_prefix("err ") {
        return Err(Error::InvalidArgument(format!("{what}: {err}")));
    }
    let how = match (&status, &sent) {
        (Err(e), _) => format!("could not be waited for: {e}"),
        (Ok(st), Err(e)) => format!("did not take the request ({e}) and ended with {st}"),
        (Ok(st), Ok(())) => format!("ended with {st} without an answer"),
    };
    Err(Error::Other(format!("{what}: the creating helper {how}")))
}

/// Whether this process was started as the creating helper: then a binary that embeds this
/// tier (the shim, the guest agent) calls [`run`] first thing in `main`, while it has one
/// thread, after setting up its log if it likes.
pub fn is_asked() -> bool {
    std::env::args_os().nth(1).as_deref() == Some(std::ffi::OsStr::new(CREATOR_ARG))
}

/// Acts as the creating helper and exits. `hooks` are the pre-exec hooks a request may name.
pub fn run(hooks: &[Arc<dyn PreExec>]) -> ! {
    let mut args = std::env::args_os().skip(2);
    let Some(fd) = args
        .next()
        .and_then(|a| a.to_str()?.parse::<i32>().ok())
        .filter(|fd| *fd > 2)
    else {
        eprintln!("{CREATOR_ARG}: expected the request socket's descriptor number");
        std::process::exit(2);
    };
    // Close-on-exec: the container's processes must not keep it past their exec.
    if nix::fcntl::fcntl(
        fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .is_err()
    {
        eprintln!("{CREATOR_ARG}: descriptor {fd} is not open");
        std::process::exit(2);
    }
    #[allow(unsafe_code)]
    // SAFETY: the shim spawned this process with the request socket at `fd` (`create`), which
    // was just found open; this runs first thing, before anything else could own that
    // number, and once.
    let mut sock = unsafe { UnixStream::from_raw_fd(fd) };
    let answer = match read_request(&mut sock) {
        Ok(req) => match make(req, hooks) {
            Ok(pid) => format!("ok {pid}"),
            Err(e) => format!("err {e}"),
        },
        Err(e) => format!("err {e}"),
    };
    let code = i32::from(sock.write_all(answer.as_bytes()).is_err());
    std::process::exit(code);
}

fn read_request(sock: &mut UnixStream) -> std::result::Result<Request, String> {
    let mut json = Vec::new();
    sock.read_to_end(&mut json)
        .map_err(|e| format!("read the request: {e}"))?;
    serde_json::from_slice(&json).map_err(|e| format!("malformed request: {e}"))
}

fn make(req: Request, hooks: &[Arc<dyn PreExec>]) -> std::result::Result<u32, String> {
    let pre_exec = match &req.pre_exec {
        None => None,
        Some(name) => Some(
            hooks
                .iter()
                .find(|h| h.name() == name)
                .cloned()
                .ok_or_else(|| format!("this binary has no pre-exec hook {name:?}"))?,
        ),
    };
    if let (Some(hook), Kind::Init { bundle }) = (&pre_exec, &req.kind) {
        hook.before_create(bundle)?;
    }
    let executor = NativeExecutor {
        role: match req.kind {
            Kind::Init { .. } => Role::Init,
            Kind::Tenant { .. } => Role::Exec,
        },
        pre_exec,
        exec_seccomp: req.exec_seccomp,
        creator_exe: None,
    };
    let builder = ContainerBuilder::new(req.id.clone(), SyscallType::default())
        .with_root_path(&req.root)
        .map_err(|e| format!("container state root: {e}"))?
        .with_console_socket(req.console.clone())
        .with_executor(executor);
    match req.kind {
        Kind::Init { bundle } => builder
            .as_init(&bundle)
            .with_systemd(false)
            .with_detach(true)
            .build()
            .map(|lc| lc.pid().map(|p| p.as_raw() as u32).unwrap_or(0))
            .map_err(|e| error_chain(&e)),
        Kind::Tenant { process_file } => builder
            .as_tenant()
            .with_process(Some(&process_file))
            .with_detach(true)
            .build()
            .map(|pid| pid.as_raw() as u32)
            .map_err(|e| error_chain(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_as_pid_or_error() {
        let ok = || Ok(std::process::ExitStatus::default());
        assert_eq!(parse("w", "ok 42", Ok(()), ok()).unwrap(), 42);
        let err = parse("create container c", "err no such file", Ok(()), ok()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid argument: create container c: no such file"
        );
        let err = parse("w", "", Ok(()), ok()).unwrap_err();
        assert!(err.to_string().contains("without an answer"), "{err}");
        let err = parse("w", "ok x", Ok(()), ok()).unwrap_err();
        assert!(err.to_string().contains("answered"), "{err}");
    }

    #[test]
    fn requests_survive_the_trip() {
        let req = Request {
            id: "c1".into(),
            root: "/run/x".into(),
            console: None,
            exec_seccomp: None,
            pre_exec: Some("sentry".into()),
            kind: Kind::Tenant {
                process_file: "/run/x/c1/exec-e1.json".into(),
            },
        };
        let back: Request = serde_json::from_slice(&serde_json::to_vec(&req).unwrap()).unwrap();
        assert_eq!(back.pre_exec.as_deref(), Some("sentry"));
        assert!(
            matches!(back.kind, Kind::Tenant { ref process_file } if process_file.ends_with("exec-e1.json"))
        );
    }
}
