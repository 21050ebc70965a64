//! The agent's containers: the protocol's container calls on the native backend's code
//! (`strata-native`, youki's libcontainer), run inside the guest. Exits reach `Wait` through the
//! backend's event sink; every child of the agent is reaped by `strata-backend`'s reaper.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};

use strata_backend::{Backend, BackendEvent, CreateOpts, Error, ExecOpts, StdioPaths};
use strata_native::NativeBackend;

use crate::proto::agent::Stdio;

/// The agent's containers namespace (one agent per VM, one namespace).
const NAMESPACE: &str = "strata-guest";

type Key = (String, String);

/// Exits seen, by (container id, exec id or "").
#[derive(Default)]
struct Exits {
    done: Mutex<HashMap<Key, u32>>,
    changed: Condvar,
}

/// The native backend plus the exits it reported.
pub struct Containers {
    backend: NativeBackend,
    exits: Arc<Exits>,
}

fn stdio(s: Option<&Stdio>) -> StdioPaths {
    let s = s.cloned().unwrap_or_default();
    StdioPaths {
        stdin: s.stdin,
        stdout: s.stdout,
        stderr: s.stderr,
        terminal: s.terminal,
    }
}

fn exec_id(e: &str) -> Option<&str> {
    (!e.is_empty()).then_some(e)
}

/// Maps the backend's errors to ttrpc status codes, as the shim does.
pub fn to_ttrpc(e: Error) -> ttrpc::Error {
    use ttrpc::Code;
    let code = match &e {
        Error::NotFound(_) => Code::NOT_FOUND,
        Error::AlreadyExists(_) => Code::ALREADY_EXISTS,
        Error::InvalidArgument(_) => Code::INVALID_ARGUMENT,
        Error::FailedPrecondition(_) => Code::FAILED_PRECONDITION,
        Error::Unsupported { .. } => Code::UNIMPLEMENTED,
        _ => Code::UNKNOWN,
    };
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, e.to_string()))
}

impl Containers {
    /// A backend keeping its state under `state_root`.
    pub fn new(state_root: impl Into<PathBuf>) -> Self {
        let exits = Arc::new(Exits::default());
        let sink_exits = exits.clone();
        let sink: strata_backend::EventSink = Arc::new(move |ev| {
            if let BackendEvent::Exited {
                container_id,
                exec_id,
                status,
                ..
            } = ev
            {
                let mut done = sink_exits.done.lock().unwrap_or_else(|p| p.into_inner());
                done.insert((container_id, exec_id.unwrap_or_default()), status);
                sink_exits.changed.notify_all();
            }
        });
        Containers {
            backend: NativeBackend::new(state_root, sink),
            exits,
        }
    }

    pub fn create(&self, id: &str, bundle: &str, io: Option<&Stdio>) -> Result<u32, Error> {
        let bundle = PathBuf::from(bundle);
        let spec = oci_spec::runtime::Spec::load(bundle.join("config.json")).map_err(|e| {
            Error::InvalidArgument(format!("{}/config.json: {e}", bundle.display()))
        })?;
        self.forget(id, "");
        self.backend.create(CreateOpts {
            id: id.to_string(),
            bundle,
            spec,
            stdio: stdio(io),
            namespace: NAMESPACE.to_string(),
            config_path: None,
        })
    }

    pub fn start(&self, id: &str, exec: &str) -> Result<u32, Error> {
        self.backend.start(id, exec_id(exec))
    }

    pub fn exec(
        &self,
        id: &str,
        exec: &str,
        process_json: &str,
        io: Option<&Stdio>,
    ) -> Result<(), Error> {
        let process: oci_spec::runtime::Process = serde_json::from_str(process_json)
            .map_err(|e| Error::InvalidArgument(format!("process: {e}")))?;
        self.forget(id, exec);
        self.backend.exec(ExecOpts {
            container_id: id.to_string(),
            exec_id: exec.to_string(),
            process,
            stdio: stdio(io),
        })
    }

    pub fn kill(&self, id: &str, exec: &str, signal: u32, all: bool) -> Result<(), Error> {
        let signal = i32::try_from(signal)
            .map_err(|_| Error::InvalidArgument(format!("signal {signal}")))?;
        self.backend.kill(id, exec_id(exec), signal, all)
    }

    /// Blocks until the process exited; `None` if `deadline` passed first.
    pub fn wait(&self, id: &str, exec: &str, deadline: Option<std::time::Instant>) -> Option<u32> {
        let key = (id.to_string(), exec.to_string());
        let mut done = self.exits.done.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(s) = done.get(&key) {
                return Some(*s);
            }
            match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    done = self
                        .exits
                        .changed
                        .wait_timeout(done, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                None => {
                    done = self
                        .exits
                        .changed
                        .wait(done)
                        .unwrap_or_else(|p| p.into_inner())
                }
            }
        }
    }

    pub fn delete(&self, id: &str, exec: &str) -> Result<(), Error> {
        self.backend.delete(id, exec_id(exec))?;
        self.forget(id, exec);
        Ok(())
    }

    fn forget(&self, id: &str, exec: &str) {
        self.exits
            .done
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(id.to_string(), exec.to_string()));
    }
}
