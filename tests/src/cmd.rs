//! Running commands with a deadline and capturing what they print.

use std::fmt;
use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// What a finished command did.
#[derive(Debug, Clone)]
pub struct Output {
    /// The command line, for messages.
    pub command: String,
    /// Exit code; `128 + signal` when the command itself died by a signal; `-1` when it was
    /// killed because it ran past its deadline.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Output {
    /// True when the exit code is 0.
    pub fn success(&self) -> bool {
        self.code == 0
    }

    /// True when the command was killed for running past its deadline.
    pub fn timed_out(&self) -> bool {
        self.code == -1
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` exited {} after {:.2?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command,
            if self.timed_out() {
                "TIMED OUT".to_string()
            } else {
                self.code.to_string()
            },
            self.elapsed,
            self.stdout.trim_end(),
            self.stderr.trim_end()
        )
    }
}

/// The exit code a shell would report for `status`.
pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// Renders a command line for messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        let a = a.to_string_lossy();
        if a.contains(' ') || a.is_empty() {
            s.push_str(&format!("'{a}'"));
        } else {
            s.push_str(&a);
        }
    }
    s
}

fn reader<R: Read + Send + 'static>(r: Option<R>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut r) = r {
            let _ = r.read_to_end(&mut buf);
        }
        buf
    })
}

/// Waits for `child` until `deadline`; kills it past that. Returns None on timeout.
///
/// Woken by the child's exit itself (a thread blocked in `wait`), not by polling: the
/// benchmarks time commands with [`run`], and the 10 ms polling interval this had made every
/// figure a multiple of 10 ms.
pub fn wait_deadline(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (tx, rx) = std::sync::mpsc::channel();
    thread::scope(|s| {
        s.spawn(move || {
            let _ = tx.send(child.wait());
        });
        match rx.recv_timeout(timeout) {
            Ok(status) => status.ok(),
            Err(_) => {
                // The waiter reaps it once killed; the scope waits for that.
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                None
            }
        }
    })
}

/// Runs `cmd` to completion with `stdin` as its input (or /dev/null), killing it after
/// `timeout`.
pub fn run(mut cmd: Command, stdin: Option<&[u8]>, timeout: Duration) -> Result<Output> {
    let command = describe(&cmd);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting `{command}`"))?;
    let input = stdin.map(|s| s.to_vec());
    let mut child_stdin = child.stdin.take();
    let writer = thread::spawn(move || {
        if let (Some(data), Some(w)) = (input, child_stdin.as_mut()) {
            let _ = w.write_all(&data);
        }
        drop(child_stdin);
    });
    let out = reader(child.stdout.take());
    let err = reader(child.stderr.take());
    let status = wait_deadline(&mut child, timeout);
    let _ = writer.join();
    let stdout = String::from_utf8_lossy(&out.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned();
    Ok(Output {
        command,
        code: status.map(exit_code).unwrap_or(-1),
        stdout,
        stderr,
        elapsed: start.elapsed(),
    })
}

/// Polls `f` every 50 ms until it returns Some or `timeout` passes.
pub fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() >= timeout {
            return None;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// A command running in the background whose output the test reads as it comes.
pub struct Background {
    command: String,
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    out: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    err: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    readers: Vec<thread::JoinHandle<()>>,
    start: Instant,
}

fn pump<R: Read + Send + 'static>(
    r: R,
    sink: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut r = r;
        let mut buf = [0u8; 8192];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    })
}

impl Background {
    /// Starts `cmd` with piped stdin, stdout and stderr.
    pub fn spawn(mut cmd: Command) -> Result<Background> {
        let command = describe(&cmd);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting `{command}`"))?;
        let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let err = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let readers = vec![
            pump(child.stdout.take().expect("piped"), out.clone()),
            pump(child.stderr.take().expect("piped"), err.clone()),
        ];
        Ok(Background {
            command,
            stdin: child.stdin.take(),
            child,
            out,
            err,
            readers,
            start: Instant::now(),
        })
    }

    /// What it printed on stdout so far.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap()).into_owned()
    }

    /// What it printed on stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.err.lock().unwrap()).into_owned()
    }

    /// Waits until stdout contains `text`; false after `timeout` or if the command ended first.
    pub fn wait_stdout(&mut self, text: &str, timeout: Duration) -> bool {
        poll(timeout, || {
            if self.stdout().contains(text) {
                return Some(true);
            }
            match self.child.try_wait() {
                Ok(Some(_)) => Some(self.stdout().contains(text)),
                _ => None,
            }
        })
        .unwrap_or(false)
    }

    /// Writes to its stdin.
    pub fn write_stdin(&mut self, data: &[u8]) -> Result<()> {
        self.stdin
            .as_mut()
            .context("stdin already closed")?
            .write_all(data)?;
        Ok(())
    }

    /// Closes its stdin.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Its pid.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Waits for it to end (killing it after `timeout`) and returns everything it did.
    pub fn wait(mut self, timeout: Duration) -> Output {
        self.stdin = None;
        let status = wait_deadline(&mut self.child, timeout);
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        Output {
            command: self.command.clone(),
            code: status.map(exit_code).unwrap_or(-1),
            stdout: self.stdout(),
            stderr: self.stderr(),
            elapsed: self.start.elapsed(),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Compiles the C program `source` statically (`cc -static -O2 FLAGS`) into `dir/NAME`, its
/// source kept beside it as `dir/NAME.c`; the error says what to install.
pub fn build_static_c(
    dir: &std::path::Path,
    name: &str,
    source: &str,
    flags: &[&str],
) -> std::result::Result<std::path::PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let src = dir.join(format!("{name}.c"));
    let out = dir.join(name);
    std::fs::write(&src, source).map_err(|e| e.to_string())?;
    let mut c = Command::new("cc");
    c.args(["-static", "-O2"])
        .args(flags)
        .arg("-o")
        .arg(&out)
        .arg(&src);
    match run(c, None, Duration::from_secs(120)) {
        Ok(o) if o.success() => Ok(out),
        Ok(o) => Err(format!(
            "cc -static failed (install gcc and libc6-dev): {o}"
        )),
        Err(e) => Err(format!("cc not runnable (install gcc): {e}")),
    }
}
