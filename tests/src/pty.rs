//! Runs a command (`ctr run -t`, `ctr task exec -t`) on a pseudo-terminal of a chosen size,
//! so that tests can read the screen, type, and resize the window.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nix::pty::{openpty, Winsize};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::cmd::{self, poll};

/// A command running with a terminal as its stdin, stdout and stderr.
pub struct PtyChild {
    child: Child,
    master: File,
    tty_path: String,
    screen: Arc<Mutex<Vec<u8>>>,
    reader: Option<thread::JoinHandle<()>>,
}

fn winsize(rows: u16, cols: u16) -> Winsize {
    Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

impl PtyChild {
    /// Spawns `cmd` on a new terminal of `rows` x `cols`.
    pub fn spawn(mut cmd: Command, rows: u16, cols: u16) -> Result<PtyChild> {
        let pty = openpty(Some(&winsize(rows, cols)), None).context("openpty")?;
        let tty_path = nix::unistd::ttyname(pty.slave.as_fd())
            .context("ttyname of the pty")?
            .to_string_lossy()
            .into_owned();
        let slave = File::from(pty.slave);
        cmd.stdin(Stdio::from(slave.try_clone()?))
            .stdout(Stdio::from(slave.try_clone()?))
            .stderr(Stdio::from(slave));
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", cmd::describe(&cmd)))?;
        // `cmd` still holds the slave's descriptors; the reader sees EOF only once they close.
        drop(cmd);
        let master = File::from(pty.master);
        let mut rd = master.try_clone()?;
        let screen = Arc::new(Mutex::new(Vec::new()));
        let sink = screen.clone();
        let reader = thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // EIO once every holder of the slave side has closed it.
            while let Ok(n) = rd.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Ok(PtyChild {
            child,
            master,
            tty_path,
            screen,
            reader: Some(reader),
        })
    }

    /// Everything printed so far, carriage returns removed.
    pub fn screen(&self) -> String {
        String::from_utf8_lossy(&self.screen.lock().unwrap()).replace('\r', "")
    }

    /// Waits until the screen contains `text`.
    pub fn wait_for(&self, text: &str, timeout: Duration) -> Result<()> {
        if poll(timeout, || self.screen().contains(text).then_some(())).is_none() {
            bail!(
                "{text:?} did not appear within {timeout:?}; screen:\n{}",
                self.screen()
            );
        }
        Ok(())
    }

    /// Types `data` on the terminal.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        self.master.write_all(data)?;
        Ok(())
    }

    /// Resizes the terminal and tells the program (SIGWINCH), as a terminal emulator does.
    pub fn resize(&self, rows: u16, cols: u16) -> Result<()> {
        let mut c = Command::new("stty");
        c.args([
            "-F",
            &self.tty_path,
            "rows",
            &rows.to_string(),
            "cols",
            &cols.to_string(),
        ]);
        let out = cmd::run(c, None, Duration::from_secs(10))?;
        if !out.success() {
            bail!("resizing the terminal: {out}");
        }
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGWINCH)?;
        Ok(())
    }

    /// Waits for the command to end; returns its exit code and the whole screen.
    pub fn wait(mut self, timeout: Duration) -> (i32, String) {
        let code = cmd::wait_deadline(&mut self.child, timeout)
            .map(cmd::exit_code)
            .unwrap_or(-1);
        if let Some(r) = self.reader.take() {
            // The container side may still hold the terminal briefly after ctr exits.
            let _ = poll(Duration::from_secs(5), || r.is_finished().then_some(()));
            if r.is_finished() {
                let _ = r.join();
            }
        }
        (code, self.screen())
    }
}

impl Drop for PtyChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
