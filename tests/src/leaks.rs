//! What a removed container must not leave behind: processes, mounts, cgroups, state
//! directories and containerd records that mention its id.

use std::fs;
use std::path::Path;

use crate::daemon::{cgroup_dirs, mountpoints};
use crate::Harness;

/// The directory under the daemon's state where `ctr` keeps its FIFOs (see
/// [`Harness::fifo_dir`]); not walked.
pub const CLIENT_FIFO_DIR: &str = "ctr-fifo";

fn matches<'a>(ids: &[&'a str], text: &str) -> Option<&'a str> {
    ids.iter().copied().find(|id| text.contains(id))
}

/// Processes whose command line or cgroup mentions one of `ids`.
pub fn processes(ids: &[&str]) -> Vec<String> {
    let me = std::process::id();
    let mut found = Vec::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return found;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let cmdline = fs::read(e.path().join("cmdline"))
            .map(|c| {
                String::from_utf8_lossy(&c)
                    .replace('\0', " ")
                    .trim()
                    .to_string()
            })
            .unwrap_or_default();
        let cgroup = fs::read_to_string(e.path().join("cgroup")).unwrap_or_default();
        // A zombie has an empty cmdline; its cgroup still says where it was.
        if let Some(id) = matches(ids, &cmdline).or_else(|| matches(ids, &cgroup)) {
            let state = fs::read_to_string(e.path().join("stat"))
                .ok()
                .and_then(|s| s.rsplit(") ").next().and_then(|r| r.chars().next()))
                .unwrap_or('?');
            found.push(format!(
                "process {pid} [{state}] of {id} still there: {cmdline:?}"
            ));
        }
    }
    found
}

/// Mount points whose path mentions one of `ids`.
pub fn mounts(ids: &[&str]) -> Vec<String> {
    mountpoints(|m| matches(ids, m).is_some())
        .into_iter()
        .map(|m| format!("mount {m} still there"))
        .collect()
}

/// Cgroup directories whose name mentions one of `ids`.
pub fn cgroups(ids: &[&str]) -> Vec<String> {
    cgroup_dirs(&|name: &str| matches(ids, name).is_some())
        .into_iter()
        .map(|d| format!("cgroup {} still there", d.display()))
        .collect()
}

fn walk(dir: &Path, ids: &[&str], depth: usize, out: &mut Vec<String>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        if matches(ids, &name).is_some() {
            out.push(format!("{} still there", path.display()));
            continue;
        }
        // Content blobs and snapshot trees are named by digest and number, and are large.
        if name == "io.containerd.content.v1.content"
            || name == "snapshots"
            || name == CLIENT_FIFO_DIR
        {
            continue;
        }
        let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if is_dir && depth > 0 {
            walk(&path, ids, depth - 1, out);
        }
    }
}

/// Files and directories named after one of `ids` under the daemon's root and state, and
/// under /run and /var/lib (where runtimes keep their own state).
pub fn state_dirs(h: &Harness, ids: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    walk(&h.info.state, ids, 6, &mut out);
    walk(&h.info.root, ids, 6, &mut out);
    for top in ["/run", "/var/lib"] {
        let Ok(rd) = fs::read_dir(top) else { continue };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            // Other private daemons' trees cannot hold our ids; ours is walked above.
            if name.starts_with(crate::daemon::PREFIX) || name == "dpkg" || name == "apt" {
                continue;
            }
            if matches(ids, &name).is_some() {
                out.push(format!("{} still there", e.path().display()));
            } else if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                walk(&e.path(), ids, 4, &mut out);
            }
        }
    }
    out
}

/// Containers, tasks and snapshots containerd still lists for one of `ids`.
pub fn containerd_records(h: &Harness, ids: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for (what, args) in [
        ("container", &["containers", "ls", "-q"][..]),
        ("task", &["tasks", "ls", "-q"][..]),
        ("snapshot", &["snapshots", "ls"][..]),
    ] {
        let o = h.ctr_run(args);
        if !o.success() {
            out.push(format!("cannot list {what}s: {o}"));
            continue;
        }
        for line in o.stdout.lines() {
            let first = line.split_whitespace().next().unwrap_or_default();
            if ids.contains(&first) {
                out.push(format!("containerd still lists {what} {first}"));
            }
        }
    }
    out
}

/// Everything of `ids` that is left.
pub fn find(h: &Harness, ids: &[&str]) -> Vec<String> {
    let mut out = processes(ids);
    out.extend(mounts(ids));
    out.extend(cgroups(ids));
    out.extend(state_dirs(h, ids));
    out.extend(containerd_records(h, ids));
    out
}

/// What the processes of `id` are doing (state, kernel wait channel, each thread's), for the
/// message of a test that failed or hung.
pub fn diagnose(id: &str) -> String {
    let mut out = String::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return out;
    };
    let read = |p: &Path| fs::read_to_string(p).unwrap_or_default().trim().to_string();
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let cmdline = fs::read(e.path().join("cmdline"))
            .map(|c| {
                String::from_utf8_lossy(&c)
                    .replace('\0', " ")
                    .trim()
                    .to_string()
            })
            .unwrap_or_default();
        let cgroup = read(&e.path().join("cgroup"));
        if !cmdline.contains(id) && !cgroup.contains(id) {
            continue;
        }
        let stat = read(&e.path().join("stat"));
        let state = stat
            .rsplit(") ")
            .next()
            .and_then(|r| r.chars().next())
            .unwrap_or('?');
        out.push_str(&format!(
            "  pid {pid} [{state}] wchan={} {cmdline:?}\n",
            read(&e.path().join("wchan"))
        ));
        if let Ok(tasks) = fs::read_dir(e.path().join("task")) {
            for t in tasks.flatten() {
                let tid = t.file_name().to_string_lossy().into_owned();
                if tid == pid.to_string() {
                    continue;
                }
                out.push_str(&format!(
                    "    thread {tid} {} wchan={}\n",
                    read(&t.path().join("comm")),
                    read(&t.path().join("wchan"))
                ));
            }
        }
    }
    out
}
