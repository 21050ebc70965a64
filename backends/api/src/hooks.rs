//! OCI hooks run on the host by a tier whose containers libcontainer does not make (the
//! microvm tier's live in a guest; Kata runs them on the host the same way): each hook's
//! program with its args (args[0] as argv[0]) and env only, the container's state as JSON on
//! its stdin, killed after its `timeout` seconds when it has one.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::Hook;

/// The container's state as a hook reads it (OCI runtime spec, "State").
pub fn state_json(
    id: &str,
    status: &str,
    pid: u32,
    bundle: &std::path::Path,
    annotations: Option<&std::collections::HashMap<String, String>>,
) -> String {
    serde_json::json!({
        "ociVersion": "1.0.2",
        "id": id,
        "status": status,
        "pid": pid,
        "bundle": bundle,
        "annotations": annotations.cloned().unwrap_or_default(),
    })
    .to_string()
}

/// Runs `hooks` in order with `state` on each one's stdin; the first that fails (cannot start,
/// exits non-zero, outlives its timeout) ends the run with the reason.
pub fn run(hooks: &[Hook], state: &str) -> Result<(), String> {
    for hook in hooks {
        run_one(hook, state)?;
    }
    Ok(())
}

fn run_one(hook: &Hook, state: &str) -> Result<(), String> {
    let path = hook.path();
    let name = path.display();
    let mut cmd = Command::new(path);
    if let Some(args) = hook.args() {
        if let Some((arg0, rest)) = args.split_first() {
            cmd.arg0(arg0).args(rest);
        }
    }
    cmd.env_clear();
    for kv in hook.env().iter().flatten() {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // The shim's reaper reaps every child (waitpid(-1)): held off until this one is waited
    // for, or its status would be gone (ECHILD).
    let _guard = crate::reaper::Reaper::global().fork_guard();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("hook {name} cannot start: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its state is not an error.
        let _ = stdin.write_all(state.as_bytes());
    }
    let deadline = hook
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| Instant::now() + Duration::from_secs(t as u64));
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("hook {name} failed: {status}")),
            Ok(None) => {}
            Err(e) => return Err(format!("hook {name}: {e}")),
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "hook {name} ran past its timeout of {}s and was killed",
                hook.timeout().unwrap_or_default()
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(json: serde_json::Value) -> Hook {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_hook_gets_its_args_env_and_the_state() {
        let out = std::env::temp_dir().join(format!("strata-hook-{}", std::process::id()));
        let h = hook(serde_json::json!({
            "path": "/bin/sh",
            "args": ["sh", "-c", format!("echo \"$0 $X\" > {0}; cat >> {0}", out.display())],
            "env": ["X=y"],
        }));
        let state = state_json("c1", "stopped", 0, std::path::Path::new("/b"), None);
        run(&[h], &state).unwrap();
        let got = std::fs::read_to_string(&out).unwrap();
        assert!(got.starts_with("sh y\n"), "{got}");
        assert!(
            got.contains("\"id\":\"c1\"") && got.contains("\"status\":\"stopped\""),
            "{got}"
        );
        std::fs::remove_file(&out).unwrap();
    }

    #[test]
    fn failures_and_timeouts_are_errors() {
        let fail = hook(serde_json::json!({ "path": "/bin/false" }));
        assert!(run(&[fail], "{}").unwrap_err().contains("failed"));
        let missing = hook(serde_json::json!({ "path": "/nonexistent/hook" }));
        assert!(run(&[missing], "{}").unwrap_err().contains("cannot start"));
        let slow = hook(serde_json::json!({
            "path": "/bin/sh", "args": ["sh", "-c", "sleep 5"], "timeout": 1,
        }));
        let err = run(&[slow], "{}").unwrap_err();
        assert!(err.contains("timeout of 1s"), "{err}");
    }
}
