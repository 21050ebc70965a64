//! Just enough of QEMU's machine protocol (QMP) to learn that the machine runs: the greeting,
//! `qmp_capabilities`, `query-status`. QMP answers only once QEMU has built the machine
//! (kernel loaded, vhost-user devices connected) and entered its main loop.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// The longest QMP line read (a greeting or a reply is a few hundred bytes).
const MAX_LINE: u64 = 64 * 1024;

/// Connects to the QMP socket at `path` and returns QEMU's run state (`"running"`, ...).
pub fn query_status(path: &Path, timeout: Duration) -> std::io::Result<String> {
    let stream = UnixStream::connect(path)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let greeting = read_reply(&mut reader)?;
    if greeting.get("QMP").is_none() {
        return Err(bad(format!("no QMP greeting: {greeting}")));
    }
    writer.write_all(b"{\"execute\":\"qmp_capabilities\"}\n")?;
    read_reply(&mut reader)?;
    writer.write_all(b"{\"execute\":\"query-status\"}\n")?;
    let reply = read_reply(&mut reader)?;
    reply["return"]["status"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| bad(format!("unexpected query-status reply: {reply}")))
}

/// The next line that is not an asynchronous event; an `error` reply is an error.
fn read_reply(r: &mut impl BufRead) -> std::io::Result<serde_json::Value> {
    loop {
        let mut line = String::new();
        let n = r.by_ref().take(MAX_LINE).read_line(&mut line)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "QEMU closed its QMP socket",
            ));
        }
        let v: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| bad(format!("QMP: {e}: {line:?}")))?;
        if v.get("event").is_some() {
            continue;
        }
        if let Some(e) = v.get("error") {
            return Err(bad(format!("QMP error: {e}")));
        }
        return Ok(v);
    }
}

fn bad(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use super::*;

    fn serve(script: &'static [&'static str], tag: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("strata-qmp-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let l = UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            w.write_all(script[0].as_bytes()).unwrap();
            for out in &script[1..] {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                w.write_all(out.as_bytes()).unwrap();
            }
        });
        path
    }

    #[test]
    fn status_after_greeting_and_capabilities_skipping_events() {
        let p = serve(
            &[
                "{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n",
                "{\"return\": {}}\n",
                "{\"event\": \"RESUME\", \"data\": {}}\n{\"return\": {\"status\": \"running\", \"running\": true}}\n",
            ],
            "ok",
        );
        assert_eq!(query_status(&p, Duration::from_secs(5)).unwrap(), "running");
        let _ = std::fs::remove_file(p);
    }

    #[test]
    fn garbage_and_errors_are_errors() {
        let p = serve(&["not json\n"], "garbage");
        assert!(query_status(&p, Duration::from_secs(5)).is_err());
        let p2 = serve(
            &[
                "{\"QMP\": {}}\n",
                "{\"error\": {\"class\": \"GenericError\", \"desc\": \"no\"}}\n",
            ],
            "error",
        );
        let e = query_status(&p2, Duration::from_secs(5)).unwrap_err();
        assert!(e.to_string().contains("GenericError"), "{e}");
        let _ = std::fs::remove_file(p);
        let _ = std::fs::remove_file(p2);
    }
}
