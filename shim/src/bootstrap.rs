//! The `start` and `delete` actions containerd runs before and after a shim's life.
//!
//! `start` answers in the form the calling containerd speaks: containerd 2.3 sends a
//! protobuf `BootstrapParams` on stdin and reads a `BootstrapResult`; older daemons pass
//! flags, environment and (optionally) the runtime options as a protobuf `Any` on stdin.
//! To those we answer the plain socket address, which containerd 1.6 requires and 1.7 to
//! 2.2 accept (as a task API v2 shim; we serve v2 and v3 alike). Containers of one pod
//! (same `io.kubernetes.cri.sandbox-id`) share one shim process.

use std::io::{IsTerminal, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use containerd_shim::bootstrap::{BootstrapParams, BootstrapResult};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::Message;
use containerd_shim::{Flags, StartOpts};
use serde::{Deserialize, Serialize};

use crate::config::SANDBOX_ID_ANNOTATION;

/// Environment variable carrying the listening socket's fd number to the shim daemon.
pub const LISTEN_FD_ENV: &str = "STRATA_LISTEN_FD";
/// File in the bundle where `start` leaves the runtime options' config path for `create`.
pub const RUNTIME_OPTIONS_FILE: &str = "strata-runtime-options.json";
/// File in the bundle recording what `create` made, for `delete` after a killed shim.
pub const BUNDLE_RECORD_FILE: &str = "strata.json";

/// How containerd called `start`, which decides the form of the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// containerd 2.3+: `BootstrapParams` in, `BootstrapResult` out.
    Bootstrap,
    /// containerd 1.6 to 2.2: flags and environment in, a plain address out.
    Legacy,
}

/// What `start` learnt from containerd.
#[derive(Debug)]
pub struct StartInput {
    pub protocol: Protocol,
    pub ttrpc_address: String,
    pub socket_dir: Option<String>,
    pub runtime_options: Option<Any>,
}

/// Tells the two protocols apart from what came on stdin.
pub fn parse_start_input(input: &[u8], flags: &Flags, env_ttrpc: &str) -> StartInput {
    if !input.is_empty() {
        if let Ok(p) = BootstrapParams::parse_from_bytes(input) {
            if p.instance_id == flags.id
                && p.namespace == flags.namespace
                && !p.containerd_ttrpc_address.is_empty()
            {
                let runtime_options = p
                    .extensions
                    .iter()
                    .find_map(|e| e.value.clone().into_option());
                return StartInput {
                    protocol: Protocol::Bootstrap,
                    ttrpc_address: p.containerd_ttrpc_address.clone(),
                    socket_dir: p.socket_dir.clone().filter(|d| !d.is_empty()),
                    runtime_options,
                };
            }
        }
    }
    let runtime_options = Any::parse_from_bytes(input)
        .ok()
        .filter(|a| !a.type_url.is_empty());
    StartInput {
        protocol: Protocol::Legacy,
        ttrpc_address: env_ttrpc.to_string(),
        socket_dir: None,
        runtime_options,
    }
}

/// The answer to `start`, in the caller's form.
pub fn encode_start_answer(protocol: Protocol, address: &str) -> Result<Vec<u8>> {
    Ok(match protocol {
        Protocol::Legacy => address.as_bytes().to_vec(),
        Protocol::Bootstrap => BootstrapResult {
            version: containerd_shim::protos::TASK_API_VERSION,
            address: address.to_string(),
            protocol: "ttrpc".to_string(),
            ..Default::default()
        }
        .write_to_bytes()?,
    })
}

/// The config path carried by runtime options (`runtimeoptions.v1.Options.config_path`,
/// field 2; also accepted: a JSON body with `ConfigPath`).
pub fn config_path_from_options(any: &Any) -> Option<String> {
    if any.type_url.ends_with("runtimeoptions.v1.Options") {
        return decode_string_field(&any.value, 2).filter(|s| !s.is_empty());
    }
    #[derive(Deserialize)]
    struct Json {
        #[serde(rename = "ConfigPath")]
        config_path: String,
    }
    serde_json::from_slice::<Json>(&any.value)
        .ok()
        .map(|j| j.config_path)
        .filter(|s| !s.is_empty())
}

/// Reads one length-delimited field of a protobuf message, skipping the others.
fn decode_string_field(mut b: &[u8], want: u32) -> Option<String> {
    fn varint(b: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&byte, rest) = b.split_first()?;
            *b = rest;
            v |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    while !b.is_empty() {
        let key = varint(&mut b)?;
        let (field, wire) = ((key >> 3) as u32, key & 7);
        match wire {
            0 => {
                varint(&mut b)?;
            }
            1 => b = b.get(8..)?,
            5 => b = b.get(4..)?,
            2 => {
                let len = varint(&mut b)? as usize;
                let data = b.get(..len)?;
                b = &b[len..];
                if field == want {
                    return String::from_utf8(data.to_vec()).ok();
                }
            }
            _ => return None,
        }
    }
    None
}

/// What `start` leaves in the bundle for `create`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct RuntimeOptionsRecord {
    pub config_path: Option<String>,
}

/// What `create` leaves in the bundle for `delete`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct BundleRecord {
    pub backend: String,
    pub state_root: PathBuf,
}

/// Removes what `start` and `create` left in the bundle.
pub fn forget_bundle(bundle: &Path) {
    let _ = std::fs::remove_file(bundle.join(BUNDLE_RECORD_FILE));
    let _ = std::fs::remove_file(bundle.join(RUNTIME_OPTIONS_FILE));
}

/// The pod a container belongs to: its shim is shared with the pod's other containers.
pub fn grouping_id(bundle: &Path, id: &str) -> String {
    let Ok(text) = std::fs::read_to_string(bundle.join("config.json")) else {
        return id.to_string();
    };
    #[derive(Deserialize)]
    struct Partial {
        #[serde(default)]
        annotations: std::collections::HashMap<String, String>,
    }
    serde_json::from_str::<Partial>(&text)
        .ok()
        .and_then(|p| p.annotations.get(SANDBOX_ID_ANNOTATION).cloned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| id.to_string())
}

fn socket_path(address: &str) -> &str {
    address.strip_prefix("unix://").unwrap_or(address)
}

/// The `start` action: find or spawn the pod's shim, answer its address on stdout.
pub fn start(flags: &Flags) -> Result<()> {
    let mut input = Vec::new();
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        stdin
            .lock()
            .take(10 << 20)
            .read_to_end(&mut input)
            .context("read start parameters from stdin")?;
    }
    let env_ttrpc = std::env::var("TTRPC_ADDRESS").unwrap_or_default();
    let start = parse_start_input(&input, flags, &env_ttrpc);
    if start.ttrpc_address.is_empty() {
        bail!("containerd's TTRPC address is missing (TTRPC_ADDRESS unset and no bootstrap parameters)");
    }
    let bundle = std::env::current_dir().context("bundle directory")?;
    let record = RuntimeOptionsRecord {
        config_path: start
            .runtime_options
            .as_ref()
            .and_then(config_path_from_options),
    };
    std::fs::write(
        bundle.join(RUNTIME_OPTIONS_FILE),
        serde_json::to_vec(&record)?,
    )
    .context("record runtime options in the bundle")?;

    let grouping = grouping_id(&bundle, &flags.id);
    let opts = StartOpts {
        id: flags.id.clone(),
        address: flags.address.clone(),
        namespace: flags.namespace.clone(),
        socket_dir: start.socket_dir.clone(),
        ..Default::default()
    };
    let address = opts.socket_address(&grouping);
    let path = PathBuf::from(socket_path(&address));

    // A shim for this pod already serves: share it.
    if UnixStream::connect(&path).is_ok() {
        return answer(&start, &address, &bundle);
    }
    let _ = std::fs::remove_file(&path);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let listener =
        UnixListener::bind(&path).with_context(|| format!("listen on {}", path.display()))?;
    let fd = listener.as_raw_fd();
    // The daemon inherits the listening socket: clear close-on-exec on this one fd.
    nix::fcntl::fcntl(
        fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )
    .context("pass the listening socket to the shim")?;

    let exe = std::env::current_exe().context("locate the shim binary")?;
    let mut cmd = Command::new(exe);
    cmd.current_dir(&bundle)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .env(LISTEN_FD_ENV, fd.to_string())
        .env("TTRPC_ADDRESS", &start.ttrpc_address)
        .args([
            "-namespace",
            &flags.namespace,
            "-id",
            &flags.id,
            "-address",
            &flags.address,
        ])
        .args([
            "-publish-binary",
            &flags.publish_binary,
            "-socket",
            &address,
        ]);
    if flags.debug {
        cmd.arg("-debug");
    }
    let child = cmd.spawn().context("spawn the shim daemon")?;
    drop(listener);
    std::fs::write(bundle.join("shim.pid"), child.id().to_string()).ok();
    answer(&start, &address, &bundle)
}

fn answer(start: &StartInput, address: &str, bundle: &Path) -> Result<()> {
    std::fs::write(bundle.join("address"), address).ok();
    let reply = encode_start_answer(start.protocol, address)?;
    let mut out = std::io::stdout().lock();
    out.write_all(&reply)?;
    out.flush()?;
    Ok(())
}

/// The `delete` action: containerd's cleanup after a shim that died. Removes what the
/// container left (processes, cgroup, state, rootfs mount) and reports it killed.
pub fn delete(flags: &Flags) -> Result<()> {
    use containerd_shim::protos::shim::shim::DeleteResponse;
    let bundle = if flags.bundle.is_empty() {
        std::env::current_dir()?
    } else {
        PathBuf::from(&flags.bundle)
    };
    let record: BundleRecord = std::fs::read(bundle.join(BUNDLE_RECORD_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let state_root = if record.state_root.as_os_str().is_empty() {
        PathBuf::from(strata_native::DEFAULT_STATE_ROOT)
    } else {
        record.state_root.clone()
    };
    let orphan = strata_backend::Orphan {
        bundle: &bundle,
        namespace: &flags.namespace,
        id: &flags.id,
        state_root: &state_root,
        tier: record.backend.parse().ok(),
    };
    for tier in crate::tiers::TIERS {
        if let Err(e) = tier.cleanup_orphan(&orphan) {
            tracing::warn!(id = %flags.id, tier = %tier.kind(), error = %e, "cleanup of a dead shim's container");
        }
    }
    crate::rootfs::unmount(&bundle);
    // The dead shim's socket, unless another shim of the pod still serves on it.
    if let Ok(address) = std::fs::read_to_string(bundle.join("address")) {
        let path = socket_path(address.trim());
        if !path.is_empty() && UnixStream::connect(path).is_err() {
            let _ = std::fs::remove_file(path);
        }
    }
    forget_bundle(&bundle);
    let resp = DeleteResponse {
        exit_status: 128 + libc::SIGKILL as u32,
        exited_at: Some(crate::service::now()).into(),
        ..Default::default()
    };
    let mut out = std::io::stdout().lock();
    resp.write_to_writer(&mut out)?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use containerd_shim::bootstrap::Extension;

    use super::*;

    fn flags() -> Flags {
        Flags {
            id: "c1".into(),
            namespace: "k8s.io".into(),
            ..Default::default()
        }
    }

    #[test]
    fn legacy_start_answers_plain_address() {
        let s = parse_start_input(b"", &flags(), "/run/containerd/containerd.sock.ttrpc");
        assert_eq!(s.protocol, Protocol::Legacy);
        let a = encode_start_answer(s.protocol, "unix:///run/containerd/s/abc").unwrap();
        assert_eq!(a, b"unix:///run/containerd/s/abc");
    }

    #[test]
    fn legacy_runtime_options_carry_config_path() {
        // runtimeoptions.v1.Options { type_url = "x", config_path = "/etc/strata/native.toml" }
        let mut body = vec![0x0a, 1, b'x', 0x12, 23];
        body.extend_from_slice(b"/etc/strata/native.toml");
        let any = Any {
            type_url: "runtimeoptions.v1.Options".into(),
            value: body,
            ..Default::default()
        };
        let bytes = any.write_to_bytes().unwrap();
        let s = parse_start_input(&bytes, &flags(), "/t");
        assert_eq!(s.protocol, Protocol::Legacy);
        let opts = s.runtime_options.unwrap();
        assert_eq!(
            config_path_from_options(&opts).as_deref(),
            Some("/etc/strata/native.toml")
        );
    }

    #[test]
    fn containerd_2_3_bootstrap_round_trip() {
        let params = BootstrapParams {
            instance_id: "c1".into(),
            namespace: "k8s.io".into(),
            containerd_ttrpc_address: "/run/containerd/containerd.sock.ttrpc".into(),
            socket_dir: Some("/run/containerd/s2".into()),
            extensions: vec![Extension {
                value: Some(Any {
                    type_url: "runtimeoptions.v1.Options".into(),
                    value: vec![0x12, 3, b'/', b'a', b'b'],
                    ..Default::default()
                })
                .into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let s = parse_start_input(&params.write_to_bytes().unwrap(), &flags(), "");
        assert_eq!(s.protocol, Protocol::Bootstrap);
        assert_eq!(s.ttrpc_address, "/run/containerd/containerd.sock.ttrpc");
        assert_eq!(s.socket_dir.as_deref(), Some("/run/containerd/s2"));
        assert_eq!(
            config_path_from_options(s.runtime_options.as_ref().unwrap()).as_deref(),
            Some("/ab")
        );
        let a = encode_start_answer(s.protocol, "unix:///run/containerd/s2/x").unwrap();
        let r = BootstrapResult::parse_from_bytes(&a).unwrap();
        assert_eq!(r.address, "unix:///run/containerd/s2/x");
        assert_eq!(r.protocol, "ttrpc");
        assert_eq!(r.version, 3);
    }

    #[test]
    fn pod_containers_share_a_grouping() {
        let d = std::env::temp_dir().join(format!("strata-group-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("config.json"),
            r#"{"annotations":{"io.kubernetes.cri.sandbox-id":"pod1"}}"#,
        )
        .unwrap();
        assert_eq!(grouping_id(&d, "ctr2"), "pod1");
        std::fs::write(d.join("config.json"), r#"{"annotations":{}}"#).unwrap();
        assert_eq!(grouping_id(&d, "ctr2"), "ctr2");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
