//! A process's standard streams over the agent's transport, Kata-style: for each streamed
//! stream the agent listens on a port of its own, announces it in the reply (`StdioPorts`), and
//! the host connects to it once (through the VMM's hybrid vsock socket: `CONNECT <port>\n`).
//!
//! The backend takes paths, so each stream is a pipe named by a `/proc/self/fd/N` path: the
//! backend opens its own end from that path (stdout/stderr as the process's fd 1/2, stdin for its
//! copier), and a thread of the agent copies between the pipe and the connection. stdout/stderr
//! end when every holder of the pipe's write end (the process and whatever inherited it) closed
//! it; stdin ends when the host shuts down writing on its connection, or on `CloseStdin` once
//! nothing more is readable. With a terminal the backend copies between the pty master and the
//! same paths: the master's output is the stdout stream, the stdin stream goes into the master.
//!
//! The connection is untrusted in both directions: bytes are copied, never parsed; on vsock only
//! the host's CID may connect (the guest's own processes could reach the port through vsock
//! loopback), unless the agent runs its in-guest self-test; a host that goes away does not block
//! the process (its output is drained and dropped).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{shutdown, Shutdown};
use strata_backend::Error;

use crate::proto::agent::{Stdio, StdioPorts};
use crate::vsock;

/// How the host reaches the stream ports.
#[derive(Clone, Debug)]
pub enum StreamTransport {
    /// AF_VSOCK in the guest. `allow_local`: accept the guest's own CID too, on port 1024 and
    /// the stream ports (set by the self-test only).
    Vsock { allow_local: bool },
    /// The agent as a host process on `unix://BASE`: port P is the Unix socket `BASE_P`.
    Unix(PathBuf),
}

/// Whether a vsock peer may connect to the agent's ports (1024 and the streams'): the host,
/// and the guest itself only where `allow_local` (the self-test).
pub fn peer_allowed(cid: u32, allow_local: bool) -> bool {
    cid == vsock::CID_HOST || (allow_local && cid == vsock::CID_LOCAL)
}

/// The first port handed out; the next free one above it is used.
const FIRST_PORT: u32 = 10_000;
static NEXT_PORT: AtomicU32 = AtomicU32::new(FIRST_PORT);
/// How often a waiting listener looks whether its process went away.
const ACCEPT_POLL: Duration = Duration::from_millis(100);

enum Listener {
    Vsock(OwnedFd),
    Unix(UnixListener, PathBuf),
}

impl Listener {
    fn bind(t: &StreamTransport) -> Result<(u32, Listener), Error> {
        let mut last = None;
        for _ in 0..64 {
            let port = NEXT_PORT.fetch_add(1, Ordering::SeqCst);
            let r = match t {
                StreamTransport::Vsock { .. } => vsock::listen(port, 1).map(Listener::Vsock),
                StreamTransport::Unix(base) => {
                    let path = PathBuf::from(format!("{}_{port}", base.display()));
                    UnixListener::bind(&path).and_then(|l| {
                        l.set_nonblocking(true)?;
                        Ok(Listener::Unix(l, path))
                    })
                }
            };
            match r {
                Ok(l) => return Ok((port, l)),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => last = Some(e),
                Err(e) => return Err(Error::io("listening for a stdio stream", e)),
            }
        }
        Err(Error::io(
            "listening for a stdio stream",
            last.unwrap_or_else(|| std::io::Error::other("no free port")),
        ))
    }

    /// Waits for the host's connection; None when `stop` said so first.
    fn accept(&self, allow_local: bool, stop: impl Fn() -> bool) -> Option<File> {
        while !stop() {
            let fd = match self {
                Listener::Vsock(fd) => fd.as_fd(),
                Listener::Unix(l, _) => l.as_fd(),
            };
            let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
            let ready = poll(
                &mut fds,
                PollTimeout::try_from(ACCEPT_POLL).unwrap_or(PollTimeout::MAX),
            );
            if !matches!(ready, Ok(n) if n > 0) {
                continue;
            }
            match self {
                Listener::Vsock(l) => match vsock::accept(l) {
                    Ok((conn, cid)) if peer_allowed(cid, allow_local) => {
                        return Some(File::from(conn))
                    }
                    _ => continue,
                },
                Listener::Unix(l, _) => match l.accept() {
                    Ok((s, _)) => return Some(File::from(OwnedFd::from(s))),
                    Err(_) => continue,
                },
            }
        }
        None
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The streams of one process: the ports announced, the pipe ends the backend's paths name.
pub struct ProcessStreams {
    pub ports: StdioPorts,
    cancel: Arc<AtomicBool>,
    /// Ends named by the paths given to the backend, held while the process may use them.
    held: Vec<OwnedFd>,
    /// Write ends of stdout/stderr: dropped once the backend opened its own (`opened`), so that
    /// the reader sees end-of-file when the process's copies close.
    until_opened: Vec<OwnedFd>,
    /// The stdin stream's copier, when stdin is streamed.
    stdin: Option<Arc<StdinEnd>>,
}

/// Ending a streamed stdin from the agent's side (`CloseStdin`).
#[derive(Default)]
pub struct StdinEnd {
    /// Asked to end: the copier stops once nothing more is readable.
    close: AtomicBool,
    /// The copier has ended (the process's end-of-file is on its way).
    done: Mutex<bool>,
    ended: Condvar,
}

impl StdinEnd {
    /// Asks the copier to end after what is readable now, and waits (at most `wait`) until
    /// it has.
    pub fn close(&self, wait: Duration) {
        self.close.store(true, Ordering::SeqCst);
        let done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        let _ = self
            .ended
            .wait_timeout_while(done, wait, |d| !*d)
            .unwrap_or_else(|p| p.into_inner());
    }

    fn closing(&self) -> bool {
        self.close.load(Ordering::SeqCst)
    }

    fn finished(&self) {
        *self.done.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.ended.notify_all();
    }
}

/// How long the stdin copier waits for data before it looks whether it was asked to end.
const STDIN_POLL: Duration = Duration::from_millis(50);

fn fd_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

fn pipe() -> Result<(OwnedFd, OwnedFd), Error> {
    Ok(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?)
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), Error> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map(|_| ())
        .map_err(|e| Error::io("starting a stdio stream thread", e))
}

/// Copies `src` to `conn` until `src` ends; if the host went away, keeps draining `src` so the
/// process never blocks on a full pipe. Then ends the connection's sending side.
fn pump_out(mut src: File, mut conn: Option<File>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        if let Some(c) = conn.as_mut() {
            if c.write_all(&buf[..n]).is_err() {
                conn = None;
            }
        }
    }
    if let Some(c) = conn {
        let _ = shutdown(c.as_raw_fd(), Shutdown::Write);
    }
}

/// Copies the host's `conn` into `sink` until the host ends it, or until `end` asks and
/// nothing more is readable.
fn pump_in(mut conn: File, mut sink: File, end: &StdinEnd) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let mut fds = [PollFd::new(conn.as_fd(), PollFlags::POLLIN)];
        let ready = poll(
            &mut fds,
            PollTimeout::try_from(STDIN_POLL).unwrap_or(PollTimeout::MAX),
        );
        match ready {
            Ok(0) if end.closing() => break,
            Ok(0) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break,
            Ok(_) => {}
        }
        let n = match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        if sink.write_all(&buf[..n]).is_err() {
            break;
        }
    }
}

impl ProcessStreams {
    /// Sets up the streams `io` asks for; returns them and the paths to give the backend.
    /// `None` when nothing is streamed.
    pub fn open(
        t: &StreamTransport,
        io: Option<&Stdio>,
    ) -> Result<Option<(ProcessStreams, Stdio)>, Error> {
        let Some(io) = io else { return Ok(None) };
        if !(io.stream_stdin || io.stream_stdout || io.stream_stderr) {
            return Ok(None);
        }
        if io.terminal && io.stream_stderr {
            return Err(Error::InvalidArgument(
                "a terminal has no stderr of its own: its output is the stdout stream".into(),
            ));
        }
        let clash = (io.stream_stdin && !io.stdin.is_empty())
            || (io.stream_stdout && !io.stdout.is_empty())
            || (io.stream_stderr && !io.stderr.is_empty());
        if clash {
            return Err(Error::InvalidArgument(
                "a streamed stdio stream cannot also have a path".into(),
            ));
        }
        let allow_local = matches!(t, StreamTransport::Vsock { allow_local: true });
        let mut paths = io.clone();
        let mut ps = ProcessStreams {
            ports: StdioPorts::default(),
            cancel: Arc::new(AtomicBool::new(false)),
            held: Vec::new(),
            until_opened: Vec::new(),
            stdin: None,
        };
        if io.stream_stdin {
            let (r, w) = pipe()?;
            let (port, l) = Listener::bind(t)?;
            paths.stdin = fd_path(&r);
            ps.held.push(r);
            ps.ports.stdin = port;
            let cancel = ps.cancel.clone();
            let end = Arc::new(StdinEnd::default());
            ps.stdin = Some(end.clone());
            spawn("stdin-stream", move || {
                let stop = || cancel.load(Ordering::SeqCst) || end.closing();
                if let Some(conn) = l.accept(allow_local, stop) {
                    drop(l);
                    pump_in(conn, File::from(w), &end);
                } else {
                    drop(w);
                }
                // `w` is dropped by now: the process's end-of-file.
                end.finished();
            })?;
        }
        for (which, wanted) in [(1, io.stream_stdout), (2, io.stream_stderr)] {
            if !wanted {
                continue;
            }
            let (r, w) = pipe()?;
            let (port, l) = Listener::bind(t)?;
            if which == 1 {
                paths.stdout = fd_path(&w);
                ps.ports.stdout = port;
            } else {
                paths.stderr = fd_path(&w);
                ps.ports.stderr = port;
            }
            ps.until_opened.push(w);
            let cancel = ps.cancel.clone();
            spawn("output-stream", move || {
                let conn = l.accept(allow_local, || cancel.load(Ordering::SeqCst));
                drop(l);
                pump_out(File::from(r), conn);
            })?;
        }
        Ok(Some((ps, paths)))
    }

    /// The backend has opened its ends (for a terminal: attached the pty, at the start of an
    /// exec'd process): drop the agent's write ends of stdout/stderr.
    pub fn opened(&mut self) {
        self.until_opened.clear();
    }

    /// The streamed stdin's end, if stdin is streamed.
    pub fn stdin(&self) -> Option<Arc<StdinEnd>> {
        self.stdin.clone()
    }
}

impl Drop for ProcessStreams {
    fn drop(&mut self) {
        // Listeners nobody connected to stop; established streams run to their end.
        self.cancel.store(true, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_host_unless_the_self_test_allows_local() {
        assert!(peer_allowed(vsock::CID_HOST, false));
        assert!(peer_allowed(vsock::CID_HOST, true));
        assert!(!peer_allowed(vsock::CID_LOCAL, false));
        assert!(peer_allowed(vsock::CID_LOCAL, true));
        for cid in [0, 3, 4, 1000, u32::MAX] {
            assert!(!peer_allowed(cid, false), "{cid}");
            assert!(!peer_allowed(cid, true), "{cid}");
        }
    }
}
