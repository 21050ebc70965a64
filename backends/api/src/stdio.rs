//! A process's standard streams on containerd's FIFOs.
//!
//! Without a terminal, stdout and stderr are handed to the process as they are (opened
//! read-write, so opening never blocks on a missing reader), and no shim thread copies
//! them: the process writes straight into containerd's FIFO. Stdin goes through a pipe fed
//! by a copy thread, so that the shim can close it (CloseIO) and the process reads EOF.
//! With a terminal, the pty master received from the console socket is copied both ways.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::{Error, Result, StdioPaths};

/// The ends a process is given, and the shim's handles on its streams.
#[derive(Default)]
pub struct ProcessIo {
    /// What the process gets as fd 0, 1 and 2 (None: inherit the shim's /dev/null).
    pass: Mutex<[Option<OwnedFd>; 3]>,
    stdin_writer: Arc<Mutex<Option<File>>>,
    stdin_closing: Arc<AtomicBool>,
    stdin_path: Mutex<String>,
    console: Arc<Mutex<Option<File>>>,
    output_copier: Mutex<Option<JoinHandle<()>>>,
}

/// Opens a process's stdout or stderr as containerd names it: a FIFO (read-write, so that it
/// never blocks on a reader), or a file (`file://PATH` or a plain path: created, appended to);
/// `None` for an empty path.
pub fn open_output(path: &str) -> Result<Option<OwnedFd>> {
    if path.is_empty() {
        return Ok(None);
    }
    let path = path.strip_prefix("file://").unwrap_or(path);
    let is_fifo = std::fs::metadata(path)
        .map(|m| m.file_type().is_fifo())
        .unwrap_or(false);
    let f = if is_fifo {
        OpenOptions::new().read(true).write(true).open(path)
    } else {
        OpenOptions::new().create(true).append(true).open(path)
    }
    .map_err(|e| Error::io(format!("open output {path}"), e))?;
    Ok(Some(f.into()))
}

/// How long the stdin copier waits for data before it looks whether CloseIO came.
const STDIN_POLL: Duration = Duration::from_millis(50);

/// Opens a stdin FIFO for reading in a thread (the open waits for containerd's writer) and
/// copies into `sink` until end-of-file, or until `closing` is set and the FIFO is drained.
fn spawn_stdin_copier(path: String, sink: Arc<Mutex<Option<File>>>, closing: Arc<AtomicBool>) {
    let _ = std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let Ok(mut src) = File::open(&path) else {
                *sink.lock().unwrap() = None;
                return;
            };
            let mut buf = [0u8; 8192];
            loop {
                let mut fds = [PollFd::new(src.as_fd(), PollFlags::POLLIN)];
                let ready = poll(
                    &mut fds,
                    PollTimeout::try_from(STDIN_POLL).unwrap_or(PollTimeout::MAX),
                )
                .unwrap_or(0);
                if ready == 0 {
                    // Nothing buffered: after CloseIO that means everything was copied.
                    if closing.load(Ordering::SeqCst) {
                        break;
                    }
                    continue;
                }
                let n = match src.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let mut guard = sink.lock().unwrap();
                let Some(w) = guard.as_mut() else { break };
                if w.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            *sink.lock().unwrap() = None;
        });
}

impl ProcessIo {
    /// Opens the streams for a process without a terminal.
    pub fn pipes(paths: &StdioPaths) -> Result<ProcessIo> {
        let io = ProcessIo::default();
        {
            let mut pass = io.pass.lock().unwrap();
            pass[1] = open_output(&paths.stdout)?;
            pass[2] = open_output(&paths.stderr)?;
        }
        if !paths.stdin.is_empty() {
            let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
            io.pass.lock().unwrap()[0] = Some(r);
            *io.stdin_writer.lock().unwrap() = Some(File::from(w));
            *io.stdin_path.lock().unwrap() = paths.stdin.clone();
            spawn_stdin_copier(
                paths.stdin.clone(),
                io.stdin_writer.clone(),
                io.stdin_closing.clone(),
            );
        }
        Ok(io)
    }

    /// Takes the end the process gets as fd `which` (0, 1 or 2), to hand to the runtime.
    pub fn take_fd(&self, which: usize) -> Option<OwnedFd> {
        self.pass
            .lock()
            .unwrap()
            .get_mut(which)
            .and_then(Option::take)
    }

    /// Starts copying between a process's pty master and its FIFOs.
    pub fn attach_console(&self, master: OwnedFd, paths: &StdioPaths) -> Result<()> {
        let master = File::from(master);
        let reader = master
            .try_clone()
            .map_err(|e| Error::io("dup pty master", e))?;
        *self.console.lock().unwrap() = Some(
            master
                .try_clone()
                .map_err(|e| Error::io("dup pty master", e))?,
        );
        if !paths.stdin.is_empty() {
            *self.stdin_writer.lock().unwrap() = Some(master);
            *self.stdin_path.lock().unwrap() = paths.stdin.clone();
            spawn_stdin_copier(
                paths.stdin.clone(),
                self.stdin_writer.clone(),
                self.stdin_closing.clone(),
            );
        }
        if let Some(out) = open_output(&paths.stdout)? {
            let mut out = File::from(out);
            let mut reader = reader;
            let handle = std::thread::Builder::new()
                .name("console".into())
                .spawn(move || {
                    let mut buf = [0u8; 8192];
                    loop {
                        match reader.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if out.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        }
                    }
                })
                .map_err(|e| Error::io("spawn console copier", e))?;
            *self.output_copier.lock().unwrap() = Some(handle);
        }
        Ok(())
    }

    /// Closes the process's stdin once what containerd already wrote to it has been copied
    /// (containerd sends CloseIO right after its last write).
    pub fn close_stdin(&self) {
        self.stdin_closing.store(true, Ordering::SeqCst);
        // A copier still waiting in open() for a writer that never came: let it through.
        let path = self.stdin_path.lock().unwrap().clone();
        if !path.is_empty() {
            let _ = OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&path);
        }
    }

    /// Sets the terminal's window size.
    pub fn resize(&self, width: u32, height: u32) -> Result<()> {
        let guard = self.console.lock().unwrap();
        let Some(console) = guard.as_ref() else {
            return Err(Error::FailedPrecondition("process has no terminal".into()));
        };
        let ws = libc::winsize {
            ws_row: height as u16,
            ws_col: width as u16,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which lives across the call;
        // the fd is a pty master this struct owns.
        let rc = unsafe { libc::ioctl(console.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        if rc < 0 {
            return Err(Error::io(
                "set window size",
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    /// After the process exited: lets the terminal output drain (bounded), then closes all.
    pub fn finish(&self) {
        if let Some(h) = self.output_copier.lock().unwrap().take() {
            let deadline = Instant::now() + Duration::from_secs(2);
            while !h.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if h.is_finished() {
                let _ = h.join();
            }
        }
        *self.console.lock().unwrap() = None;
        *self.stdin_writer.lock().unwrap() = None;
    }
}

/// A listening console socket: libcontainer connects to it and sends the pty master.
pub struct ConsoleSocket {
    path: std::path::PathBuf,
    listener: std::os::unix::net::UnixListener,
}

impl ConsoleSocket {
    /// Binds a console socket at `path` (removed again on drop).
    pub fn bind(path: &Path) -> Result<ConsoleSocket> {
        let _ = std::fs::remove_file(path);
        let listener = std::os::unix::net::UnixListener::bind(path)
            .map_err(|e| Error::io(format!("bind console socket {}", path.display()), e))?;
        Ok(ConsoleSocket {
            path: path.to_path_buf(),
            listener,
        })
    }

    /// Path to hand to the container runtime.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits (at most `timeout`) for the runtime to send the pty master.
    pub fn receive(&self, timeout: Duration) -> Result<OwnedFd> {
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
        self.listener
            .set_nonblocking(true)
            .map_err(|e| Error::io("console socket", e))?;
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match self.listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        return Err(Error::Other(
                            "no terminal received on the console socket".into(),
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => return Err(Error::io("accept console socket", e)),
            }
        };
        stream
            .set_nonblocking(false)
            .map_err(|e| Error::io("console socket", e))?;
        let _ = stream.set_read_timeout(Some(timeout));
        let mut buf = [0u8; 4096];
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let msg = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                if let Some(fd) = fds.first() {
                    // SAFETY: SCM_RIGHTS just installed this fd in our table; nothing else owns it.
                    return Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(*fd) });
                }
            }
        }
        Err(Error::Other(
            "console socket message carried no file descriptor".into(),
        ))
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
