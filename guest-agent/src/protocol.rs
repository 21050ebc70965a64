//! The agent protocol's first exchange and its requests, over any byte stream.
//!
//! ```text
//! host:  STRATA-AGENT <version>\n      agent: STRATA-AGENT 1\n   (or ERR unsupported version <v>\n)
//! host:  PING\n                        agent: PONG\n
//! host:  SHUTDOWN\n                    agent: OK\n   (then the VM powers off)
//! ```

use std::io::{BufRead, BufReader, Read, Write};

use crate::MAX_LINE;

/// The protocol version this agent speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// What the connection asked the agent to do once it ended.
#[derive(Debug, PartialEq, Eq)]
pub enum After {
    /// Keep serving.
    Continue,
    /// Shut the VM down.
    Shutdown,
}

fn read_line<R: BufRead>(r: &mut R) -> std::io::Result<Option<String>> {
    let mut buf = Vec::new();
    let n = r.take(MAX_LINE as u64 + 1).read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "request line too long or unterminated",
        ));
    }
    buf.pop();
    String::from_utf8(buf)
        .map(Some)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "request is not UTF-8"))
}

/// Serves one connection until it closes, errs, or asks for a shutdown.
pub fn serve<S: Read + Write>(stream: S) -> std::io::Result<After> {
    let mut r = BufReader::new(stream);
    let Some(hello) = read_line(&mut r)? else {
        return Ok(After::Continue);
    };
    let version = hello
        .strip_prefix("STRATA-AGENT ")
        .and_then(|v| v.trim().parse::<u32>().ok());
    if version != Some(PROTOCOL_VERSION) {
        let w = r.get_mut();
        writeln!(w, "ERR unsupported version {}", hello.trim())?;
        return Ok(After::Continue);
    }
    writeln!(r.get_mut(), "STRATA-AGENT {PROTOCOL_VERSION}")?;
    while let Some(line) = read_line(&mut r)? {
        match line.as_str() {
            "PING" => writeln!(r.get_mut(), "PONG")?,
            "SHUTDOWN" => {
                writeln!(r.get_mut(), "OK")?;
                return Ok(After::Shutdown);
            }
            other => {
                let shown: String = other.chars().take(64).collect();
                writeln!(r.get_mut(), "ERR unknown request {shown:?}")?;
            }
        }
    }
    Ok(After::Continue)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Duplex {
        input: std::io::Cursor<Vec<u8>>,
        output: Vec<u8>,
    }
    impl Read for Duplex {
        fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
            self.input.read(b)
        }
    }
    impl Write for Duplex {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.output.write(b)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn run(input: &[u8]) -> (std::io::Result<After>, String) {
        let mut d = Duplex {
            input: std::io::Cursor::new(input.to_vec()),
            output: Vec::new(),
        };
        let r = serve(&mut d);
        (r, String::from_utf8(d.output).unwrap())
    }

    #[test]
    fn handshake_ping_shutdown() {
        let (r, out) = run(b"STRATA-AGENT 1\nPING\nBOGUS\nSHUTDOWN\nPING\n");
        assert_eq!(r.unwrap(), After::Shutdown);
        assert_eq!(
            out,
            "STRATA-AGENT 1\nPONG\nERR unknown request \"BOGUS\"\nOK\n"
        );
    }

    #[test]
    fn wrong_version_is_refused() {
        let (r, out) = run(b"STRATA-AGENT 2\nPING\n");
        assert_eq!(r.unwrap(), After::Continue);
        assert_eq!(out, "ERR unsupported version STRATA-AGENT 2\n");
    }

    #[test]
    fn overlong_line_is_an_error() {
        let mut input = b"STRATA-AGENT 1\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', MAX_LINE + 10));
        let (r, _) = run(&input);
        assert!(r.is_err());
    }
}
