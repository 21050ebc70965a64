//! The per-container audit log: one JSON object per line for each trapped or refused call,
//! in the container's sentry state directory.
//!
//! The workload decides how many calls it makes, so the log is bounded twice: a token bucket
//! (`per_second`, bursts of ten seconds' worth) whose overflow is counted and written as one
//! `suppressed` record, and a size cap after which the file is rotated once (`audit.jsonl.1`),
//! so that the two never hold more than twice the cap.
//!
//! Records are written in batches, not one write per call: a batch leaves when it holds
//! [`BATCH_BYTES`], when its first record is [`BATCH_AGE`] old, when the supervisor goes idle
//! ([`AuditLog::flush`]), and when the log is dropped. A reader sees whole lines only.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The log's file name in the container's sentry directory.
pub const FILE: &str = "audit.jsonl";
/// The largest batch of records kept before writing.
pub const BATCH_BYTES: usize = 16 * 1024;
/// The longest a record waits in a batch while calls keep coming.
pub const BATCH_AGE: std::time::Duration = std::time::Duration::from_millis(200);

/// One record.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Record {
    /// Seconds since the epoch.
    pub ts: f64,
    /// Host pid of the calling thread.
    pub pid: u32,
    pub syscall: String,
    /// Decoded arguments (path, flags, address...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub args: BTreeMap<String, String>,
    /// `allow`, `deny` (by policy), `error` (failed as the kernel would have failed it),
    /// `emulate`, `suppressed` for a count of records dropped, or `start` (syscall `-`) for
    /// the container's policy and the host's Landlock ABI, written first.
    pub decision: String,
    /// errno returned to the workload, if denied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<i32>,
    /// Why, in a few words.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// For `suppressed`: how many records the rate limit dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

struct State {
    file: Option<File>,
    written: u64,
    /// Whole lines not written yet, and when the first of them came.
    batch: Vec<u8>,
    since: Option<Instant>,
    tokens: f64,
    last: Instant,
    suppressed: u64,
    /// The size cap and the rate limit: the policy's, or the recording policy's while
    /// `strata policy record` records (see [`AuditLog::set_limits`]).
    max_bytes: u64,
    per_second: f64,
    /// Trapped calls per decision since the node's counters were last written
    /// (`strata_sentry_trapped_calls_total`), counted before the rate limit.
    decisions: std::collections::BTreeMap<String, u64>,
}

/// The writer shared by a container's supervisor threads.
pub struct AuditLog {
    path: PathBuf,
    st: Mutex<State>,
}

impl AuditLog {
    pub fn open(path: PathBuf, max_bytes: u64, per_second: u32) -> std::io::Result<AuditLog> {
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let written = file.metadata().map(|m| m.len()).unwrap_or(0);
        let per_second = per_second as f64;
        Ok(AuditLog {
            path,
            st: Mutex::new(State {
                max_bytes,
                per_second,
                file: Some(file),
                written,
                batch: Vec::new(),
                since: None,
                tokens: per_second * 10.0,
                last: Instant::now(),
                suppressed: 0,
                decisions: Default::default(),
            }),
        })
    }

    /// A new size cap and rate limit from now on (a full burst's worth of records at once).
    pub fn set_limits(&self, max_bytes: u64, per_second: u32) {
        let mut st = self.st.lock().unwrap_or_else(|e| e.into_inner());
        st.max_bytes = max_bytes;
        st.per_second = per_second as f64;
        st.tokens = st.per_second * 10.0;
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records `r` unless the rate limit says no (then it is only counted).
    pub fn record(&self, mut r: Record) {
        let mut st = self.st.lock().unwrap_or_else(|e| e.into_inner());
        if r.decision != "start" {
            // Every trapped call passes here: allocate a key only for a decision not seen
            // since the last flush.
            match st.decisions.get_mut(r.decision.as_str()) {
                Some(n) => *n += 1,
                None => {
                    st.decisions.insert(r.decision.clone(), 1);
                }
            }
        }
        let now = Instant::now();
        let burst = st.per_second * 10.0;
        st.tokens =
            (st.tokens + now.duration_since(st.last).as_secs_f64() * st.per_second).min(burst);
        st.last = now;
        if st.tokens < 1.0 {
            st.suppressed += 1;
            return;
        }
        st.tokens -= 1.0;
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        if st.suppressed > 0 {
            let s = Record {
                ts,
                syscall: "-".into(),
                decision: "suppressed".into(),
                count: Some(st.suppressed),
                ..Default::default()
            };
            st.suppressed = 0;
            Self::add(&mut st, &s);
        }
        r.ts = ts;
        Self::add(&mut st, &r);
        let batch = (st.max_bytes as usize / 4).clamp(1, BATCH_BYTES);
        if st.batch.len() >= batch || st.since.is_some_and(|t| now - t >= BATCH_AGE) {
            self.write(&mut st);
        }
    }

    /// Whether records wait in a batch.
    pub fn pending(&self) -> bool {
        let st = self.st.lock().unwrap_or_else(|e| e.into_inner());
        !st.batch.is_empty()
    }

    /// Writes the records waiting in the batch, and adds the calls counted since the last
    /// flush to the node's counters.
    pub fn flush(&self) {
        let mut st = self.st.lock().unwrap_or_else(|e| e.into_inner());
        self.write(&mut st);
        let decisions = std::mem::take(&mut st.decisions);
        drop(st);
        for (decision, n) in decisions {
            strata_backend::counters::add(
                "strata_sentry_trapped_calls_total",
                &[("decision", &decision)],
                n as f64,
            );
        }
    }

    fn add(st: &mut State, r: &Record) {
        let len = st.batch.len();
        if serde_json::to_writer(&mut st.batch, r).is_ok() {
            st.batch.push(b'\n');
            st.since.get_or_insert_with(Instant::now);
        } else {
            st.batch.truncate(len);
        }
    }

    fn write(&self, st: &mut State) {
        if st.batch.is_empty() {
            return;
        }
        let lines = std::mem::take(&mut st.batch);
        st.since = None;
        if st.written + lines.len() as u64 > st.max_bytes {
            st.file = None;
            let mut old = self.path.clone().into_os_string();
            old.push(".1");
            let _ = std::fs::rename(&self.path, &old);
            st.file = OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .open(&self.path)
                .ok();
            st.written = 0;
        }
        if let Some(f) = st.file.as_mut() {
            // One write per batch of whole lines: a reader never sees half a line.
            if f.write_all(&lines).is_ok() {
                st.written += lines.len() as u64;
            }
        }
        // Keep the allocation for the next batch.
        st.batch = lines;
        st.batch.clear();
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.flush();
    }
}

/// A human summary of an audit log (and its rotated predecessor): counts per call and
/// decision, the most frequent refused arguments, and what the rate limit dropped.
pub fn summarise(path: &Path) -> std::io::Result<String> {
    let mut counts: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut denied: BTreeMap<String, u64> = BTreeMap::new();
    let mut suppressed = 0u64;
    let mut started = Vec::new();
    let mut total = 0u64;
    let mut bad = 0u64;
    let mut old = path.as_os_str().to_owned();
    old.push(".1");
    let mut files = Vec::new();
    if let Ok(f) = File::open(&old) {
        files.push(f);
    }
    files.push(File::open(path)?);
    for f in files {
        for line in BufReader::new(f).lines() {
            let line = line?;
            let Ok(r) = serde_json::from_str::<Record>(&line) else {
                bad += 1;
                continue;
            };
            if r.decision == "suppressed" {
                suppressed += r.count.unwrap_or(0);
                continue;
            }
            if r.decision == "start" {
                let arg = |k: &str| r.args.get(k).cloned().unwrap_or_else(|| "?".into());
                started.push(format!(
                    "policy {}, Landlock ABI {}",
                    arg("policy"),
                    arg("landlock_abi")
                ));
                continue;
            }
            total += 1;
            if r.decision == "deny" {
                let what = r
                    .args
                    .get("path")
                    .or_else(|| r.args.get("addr"))
                    .or_else(|| r.args.get("family"))
                    .cloned()
                    .unwrap_or_default();
                *denied
                    .entry(format!("{} {}", r.syscall, what).trim().to_string())
                    .or_default() += 1;
            }
            *counts.entry((r.syscall, r.decision)).or_default() += 1;
        }
    }
    let mut out = format!("audit log {}\n", path.display());
    if let Some(s) = started.last() {
        out.push_str(&format!("{s}\n"));
    }
    out.push_str(&format!("{total} records"));
    if suppressed > 0 {
        out.push_str(&format!(", {suppressed} more dropped by the rate limit"));
    }
    if bad > 0 {
        out.push_str(&format!(", {bad} unreadable lines"));
    }
    out.push_str("\n\nSYSCALL              DECISION   COUNT\n");
    for ((sc, d), n) in &counts {
        out.push_str(&format!("{sc:<20} {d:<10} {n}\n"));
    }
    if !denied.is_empty() {
        let mut top: Vec<_> = denied.into_iter().collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        out.push_str("\nREFUSED (most frequent first)\n");
        for (what, n) in top.into_iter().take(20) {
            out.push_str(&format!("{n:>6}  {what}\n"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(sc: &str, d: &str, path: &str) -> Record {
        Record {
            syscall: sc.into(),
            decision: d.into(),
            args: BTreeMap::from([("path".to_string(), path.to_string())]),
            ..Default::default()
        }
    }

    #[test]
    fn rate_limit_and_size_cap_bound_the_log() {
        let dir = std::env::temp_dir().join(format!("strata-audit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(FILE);
        let log = AuditLog::open(path.clone(), 64 * 1024, 100).unwrap();
        for i in 0..100_000 {
            log.record(rec("openat", "deny", &format!("/secret/{i}")));
        }
        log.flush();
        // Burst of 10 s at 100/s: about 1000 written, the rest counted.
        let size = std::fs::metadata(&path).unwrap().len();
        let old = std::fs::metadata(dir.join("audit.jsonl.1"))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(size <= 64 * 1024 && old <= 64 * 1024, "{size} {old}");
        std::thread::sleep(std::time::Duration::from_millis(50));
        log.record(rec("execve", "allow", "/bin/sh"));
        log.flush();
        let s = summarise(&path).unwrap();
        assert!(s.contains("dropped by the rate limit"), "{s}");
        assert!(s.contains("execve               allow"), "{s}");
        assert!(s.contains("REFUSED"), "{s}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
