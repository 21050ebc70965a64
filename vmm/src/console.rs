//! The guest console: every byte the guest writes to COM1 lands in a bounded ring buffer (the
//! tail is what an error report quotes) and, if asked, is echoed to a host writer.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// How much console output is kept.
pub const CONSOLE_RING_BYTES: usize = 64 * 1024;

struct Inner {
    ring: VecDeque<u8>,
    total: u64,
    first_byte_at: Option<Instant>,
    echo: Option<Box<dyn Write + Send>>,
}

/// The console of one machine.
pub struct Console {
    inner: Mutex<Inner>,
}

impl Console {
    /// A console that keeps its output and, if `echo` is given, copies it there.
    pub fn new(echo: Option<Box<dyn Write + Send>>) -> Arc<Self> {
        Arc::new(Console {
            inner: Mutex::new(Inner {
                ring: VecDeque::with_capacity(4096),
                total: 0,
                first_byte_at: None,
                echo,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends guest output.
    pub fn push(&self, bytes: &[u8]) {
        let mut i = self.lock();
        if i.first_byte_at.is_none() {
            i.first_byte_at = Some(Instant::now());
        }
        i.total += bytes.len() as u64;
        for &b in bytes {
            if i.ring.len() == CONSOLE_RING_BYTES {
                i.ring.pop_front();
            }
            i.ring.push_back(b);
        }
        if let Some(echo) = i.echo.as_mut() {
            // A host writer that fails (closed stdout) must not stop the guest.
            let _ = echo.write_all(bytes).and_then(|_| echo.flush());
        }
    }

    /// Everything still in the ring, lossily decoded.
    pub fn contents(&self) -> String {
        let i = self.lock();
        let (a, b) = i.ring.as_slices();
        let mut v = Vec::with_capacity(a.len() + b.len());
        v.extend_from_slice(a);
        v.extend_from_slice(b);
        String::from_utf8_lossy(&v).into_owned()
    }

    /// The last `lines` lines of output.
    pub fn tail(&self, lines: usize) -> String {
        let all = self.contents();
        let trimmed = all.trim_end_matches('\n');
        let start = trimmed
            .rmatch_indices('\n')
            .nth(lines.saturating_sub(1))
            .map(|(i, _)| i + 1)
            .unwrap_or(0);
        trimmed[start..].to_string()
    }

    /// Bytes written since boot.
    pub fn total_bytes(&self) -> u64 {
        self.lock().total
    }

    /// When the guest wrote its first byte.
    pub fn first_byte_at(&self) -> Option<Instant> {
        self.lock().first_byte_at
    }
}

/// The `Write` end handed to the serial device.
pub struct ConsoleWriter(pub Arc<Console>);

impl Write for ConsoleWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.push(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_the_tail() {
        let c = Console::new(None);
        for i in 0..20_000 {
            c.push(format!("line {i}\n").as_bytes());
        }
        assert!(c.contents().len() <= CONSOLE_RING_BYTES);
        assert_eq!(c.tail(2), "line 19998\nline 19999");
        assert!(c.total_bytes() > CONSOLE_RING_BYTES as u64);
    }

    #[test]
    fn tail_of_short_output() {
        let c = Console::new(None);
        c.push(b"only");
        assert_eq!(c.tail(5), "only");
    }
}
