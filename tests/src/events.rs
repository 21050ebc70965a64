//! Watches containerd's event stream (`ctr events`) while a test runs.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::cmd::poll;
use crate::Harness;

/// One event as `ctr events` prints it: `TIMESTAMP NAMESPACE TOPIC PAYLOAD`.
#[derive(Debug, Clone)]
pub struct Event {
    pub namespace: String,
    pub topic: String,
    pub payload: String,
}

/// A running `ctr events`.
pub struct Events {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Events {
    /// Starts watching; returns once the subscription is in place.
    pub fn watch(h: &Harness) -> Events {
        let mut c = h.ctr();
        c.arg("events").stdout(Stdio::piped()).stderr(Stdio::null());
        let mut child = c.spawn().expect("starting ctr events");
        let out = child.stdout.take().expect("piped");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        // ctr prints nothing once subscribed; give the subscription a moment to be made.
        thread::sleep(Duration::from_millis(300));
        Events { child, lines }
    }

    /// Every event seen so far whose payload mentions `id`.
    pub fn for_id(&self, id: &str) -> Vec<Event> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| parse(l))
            .filter(|e| e.payload.contains(&format!("\"{id}\"")))
            .collect()
    }

    /// The topics of `id`'s events, in order.
    pub fn topics(&self, id: &str) -> Vec<String> {
        self.for_id(id).into_iter().map(|e| e.topic).collect()
    }

    /// Waits until an event with `topic` for `id` arrives.
    pub fn wait_for(&self, id: &str, topic: &str, timeout: Duration) -> bool {
        poll(timeout, || {
            self.topics(id).iter().any(|t| t == topic).then_some(())
        })
        .is_some()
    }

    /// Every line seen so far, for failure messages.
    pub fn dump(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }
}

/// Parses one line of `ctr events` output: the topic is the first field that starts with '/'.
fn parse(line: &str) -> Option<Event> {
    let fields: Vec<&str> = line.split(' ').collect();
    let ti = fields.iter().position(|f| f.starts_with('/'))?;
    Some(Event {
        namespace: fields.get(ti.checked_sub(1)?)?.to_string(),
        topic: fields[ti].to_string(),
        payload: fields[ti + 1..].join(" "),
    })
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
