//! A wasm task's configuration, built by the shim from the spec and the bundle.

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;

use strata_backend::{CreateOpts, Error, Result};

use crate::module;
use crate::runner::{ImageRef, Network, Preopen, Source, TaskConfig};

/// The annotation that gives a task the network of its container's network namespace:
/// `none` or `inherit` ([`Network`]); absent, the configuration's `[wasm] network`.
pub const NETWORK_ANNOTATION: &str = "strata.dev/wasm.network";

fn invalid(msg: impl Into<String>) -> Error {
    Error::InvalidArgument(msg.into())
}

/// Builds the runner's configuration from the spec; every error here names what to fix.
///
/// The module is `process.args[0]` in the rootfs. When that names no file there (or the spec
/// has no args) and `containerd` (the runtime's API address) is known, it is the first
/// WebAssembly layer of the container's image instead, which the runner reads.
pub fn task_config(
    opts: &CreateOpts,
    cache_dir: Option<PathBuf>,
    containerd: Option<&str>,
    network: Network,
) -> Result<TaskConfig> {
    let spec = &opts.spec;
    let network = network_of(spec, network)?;
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| invalid("the OCI spec has no process"))?;
    let args = process.args().clone().unwrap_or_default();
    let (path, export) = match args.first() {
        Some(arg0) => module::split_entrypoint(arg0),
        None => ("", None),
    };
    let root = module::rootfs_of(&opts.bundle, spec);
    let cwd = process.cwd().to_string_lossy().into_owned();
    let spec_env = process.env().clone().unwrap_or_default();
    let tcplisten = tcplisten_of(spec, &spec_env)?;
    // The same lookup as the ELF check that sent the container here (`entrypoint_is_elf`).
    let found = (!path.is_empty())
        .then(|| module::find_entrypoint(&root, &cwd, path, module::search_path(&spec_env)));
    let source =
        match (found, containerd) {
            (Some(Ok(host)), _) => {
                let mut header = Vec::with_capacity(8);
                File::open(&host)
                    .and_then(|f| f.take(8).read_to_end(&mut header))
                    .map_err(|e| Error::io(format!("read the module {path}"), e))?;
                module::kind_of(&header).map_err(|e| invalid(format!("the module {path}: {e}")))?;
                Source::File(host)
            }
            (missing, Some(address)) => Source::Image(ImageRef {
                address: address.to_string(),
                namespace: opts.namespace.clone(),
                container: opts.id.clone(),
                wanted: missing
                    .and_then(|m| m.err())
                    .map(|e| e.described())
                    .unwrap_or_default(),
            }),
            (None, None) => return Err(invalid(
                "the OCI spec's process has no args: args[0] must name the module, e.g. /app.wasm",
            )),
            (Some(Err(e)), None) => return Err(invalid(e.to_string())),
        };
    let mut wasm_args = args.clone();
    if let Some(a0) = wasm_args.first_mut() {
        *a0 = path.to_string();
    }
    let mut env: Vec<(String, String)> = spec_env
        .into_iter()
        .map(|e| match e.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (e, String::new()),
        })
        .collect();
    // The listening sockets' count, as systemd's socket activation and `wasmtime --listenfd`
    // say it: they are at 3, 4, ...
    if !tcplisten.is_empty() && !env.iter().any(|(k, _)| k == "LISTEN_FDS") {
        env.push(("LISTEN_FDS".into(), tcplisten.len().to_string()));
    }
    let readonly_root = spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false);
    // The runner opens these in the container, whose root is the rootfs by then: paths are
    // the container's; a read-only root or mount is the kernel's to enforce (EROFS).
    let mut preopens = vec![Preopen {
        path: "/".into(),
        guest: "/".into(),
        readonly: readonly_root,
        read_only_mount: readonly_root,
    }];
    if cwd != "/"
        && !cwd.is_empty()
        && module::resolve_in_root(&root, "/", &cwd).is_some_and(|p| p.is_dir())
    {
        preopens.push(Preopen {
            path: PathBuf::from(&cwd),
            guest: ".".into(),
            readonly: readonly_root,
            read_only_mount: readonly_root,
        });
    }
    for m in spec.mounts().clone().unwrap_or_default() {
        let options = m.options().clone().unwrap_or_default();
        let is_bind = m.typ().as_deref() == Some("bind")
            || options.iter().any(|o| o == "bind" || o == "rbind");
        let Some(source) = m.source().clone() else {
            continue;
        };
        // Directories only: WASI preopens are directories (a file bind mount such as CRI's
        // /etc/hosts is not reachable by the module).
        if !is_bind || !source.is_dir() {
            continue;
        }
        let readonly = options.iter().any(|o| o == "ro");
        preopens.push(Preopen {
            path: m.destination().clone(),
            guest: m.destination().to_string_lossy().into_owned(),
            readonly,
            read_only_mount: readonly,
        });
    }
    let memory_limit = spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.memory().as_ref())
        .and_then(|m| m.limit())
        .filter(|l| *l > 0)
        .map(|l| l as u64);
    Ok(TaskConfig {
        id: opts.id.clone(),
        source,
        export: export.map(str::to_string),
        args: wasm_args,
        env,
        preopens,
        memory_limit,
        cache_dir,
        network,
        tcplisten,
    })
}

/// The addresses a preview 1 module listens on: the container's `STRATA_WASM_TCPLISTEN`
/// (one container's, as a Kubernetes pod spec can set it), else the annotation (the pod's
/// or `ctr`'s); none without either.
fn tcplisten_of(spec: &oci_spec::runtime::Spec, env: &[String]) -> Result<Vec<String>> {
    use crate::listen::{parse, ANNOTATION, ENV};
    let from_env = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix(ENV)?.strip_prefix('='));
    let (value, said) = match from_env {
        Some(v) => (v, ENV),
        None => match spec.annotations().as_ref().and_then(|a| a.get(ANNOTATION)) {
            Some(v) => (v.as_str(), ANNOTATION),
            None => return Ok(Vec::new()),
        },
    };
    let addresses = parse(value).map_err(|e| invalid(format!("{said}={value:?}: {e}")))?;
    Ok(addresses.iter().map(ToString::to_string).collect())
}

/// The task's network: the annotation's, else `default`.
fn network_of(spec: &oci_spec::runtime::Spec, default: Network) -> Result<Network> {
    let Some(word) = spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(NETWORK_ANNOTATION))
    else {
        return Ok(default);
    };
    Network::parse(word.trim()).ok_or_else(|| {
        invalid(format!(
            "annotation {NETWORK_ANNOTATION}={word:?}: the wasm tier's network is \"none\" or \"inherit\" (the container's network namespace, with name lookup)"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_network_is_the_annotations_else_the_configurations() {
        let spec_with = |value: Option<&str>| {
            let mut spec = oci_spec::runtime::Spec::default();
            spec.set_annotations(
                value.map(|v| [(NETWORK_ANNOTATION.to_string(), v.to_string())].into()),
            );
            spec
        };
        for default in [Network::None, Network::Inherit] {
            assert_eq!(network_of(&spec_with(None), default).unwrap(), default);
            assert_eq!(
                network_of(&spec_with(Some("none")), default).unwrap(),
                Network::None
            );
            assert_eq!(
                network_of(&spec_with(Some("inherit")), default).unwrap(),
                Network::Inherit
            );
        }
        let err = network_of(&spec_with(Some("host")), Network::None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(NETWORK_ANNOTATION) && err.contains("\"host\"") && err.contains("inherit"),
            "{err}"
        );
    }

    #[test]
    fn tcplisten_is_the_containers_variable_else_the_annotation() {
        use crate::listen::{ANNOTATION, ENV};
        let mut spec = oci_spec::runtime::Spec::default();
        assert!(tcplisten_of(&spec, &[]).unwrap().is_empty());
        spec.set_annotations(Some(
            [(ANNOTATION.to_string(), "0.0.0.0:8080".to_string())].into(),
        ));
        assert_eq!(tcplisten_of(&spec, &[]).unwrap(), ["0.0.0.0:8080"]);
        let env = vec![
            "PATH=/bin".to_string(),
            format!("{ENV}=127.0.0.1:9090, [::1]:9091"),
        ];
        assert_eq!(
            tcplisten_of(&spec, &env).unwrap(),
            ["127.0.0.1:9090", "[::1]:9091"]
        );
        let err = tcplisten_of(&spec, &[format!("{ENV}=:80")])
            .unwrap_err()
            .to_string();
        assert!(err.contains(ENV) && err.contains("\":80\""), "{err}");
    }
}
