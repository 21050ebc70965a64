//! Strata's configuration (TOML) and the choice of backend for a container.
//!
//! Looked up in this order: the `ConfigPath` of the runtime options containerd passes
//! (`ctr run --runtime-config-path`, or a CRI runtime handler's options), then
//! `/etc/strata/config.toml`, then built-in defaults. The `strata.dev/backend` annotation
//! may pick any tier in `allowed_backends`, and nothing else: a pod can never move itself to
//! a tier its RuntimeClass does not allow.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use strata_backend::BackendKind;

/// The pod annotation that picks a backend.
pub const BACKEND_ANNOTATION: &str = "strata.dev/backend";
/// CRI's annotation naming the pod sandbox a container belongs to.
pub const SANDBOX_ID_ANNOTATION: &str = "io.kubernetes.cri.sandbox-id";
/// CRI's annotation on the pod's own annotations copied onto its containers.
pub const CONTAINER_TYPE_ANNOTATION: &str = "io.kubernetes.cri.container-type";
/// Where the configuration lives when containerd names none.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/strata/config.toml";

/// What went wrong reading the configuration or choosing a backend.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read strata config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("strata config {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error(
        "annotation {BACKEND_ANNOTATION}={value:?} names no backend; allowed backends: {allowed}"
    )]
    UnknownBackend { value: String, allowed: String },
    #[error("annotation {BACKEND_ANNOTATION}={value:?} is not allowed by this runtime's configuration; allowed backends: {allowed}")]
    NotAllowed { value: String, allowed: String },
    #[error("the container's entrypoint {program} is an ELF program, not WebAssembly, and this pod's tier is wasm: such a container runs natively only as the pod's sandbox (pause) container or where \"native\" is in allowed_backends (here: {allowed}); run it in a pod of another RuntimeClass, or allow native in this runtime's configuration")]
    ElfInWasmPod { program: String, allowed: String },
}

/// The parsed configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The tier used when no annotation picks one.
    #[serde(default = "default_backend")]
    pub default_backend: BackendKind,
    /// The tiers an annotation may pick.
    #[serde(default = "all_backends")]
    pub allowed_backends: Vec<BackendKind>,
    /// Where native containers keep their state.
    #[serde(default)]
    pub state_root: Option<PathBuf>,
    /// `[wasm]`: the wasm tier's table, read by that tier (`strata_wasm::Settings`).
    #[serde(default)]
    pub wasm: Option<toml::Value>,
    /// `[microvm]`: the microvm tier's table, read by that tier (`strata_microvm::Settings`).
    #[serde(default)]
    pub microvm: Option<toml::Value>,
    /// `[metrics]`: where the node's counters go (`strata_backend::counters`).
    #[serde(default)]
    pub metrics: Metrics,
}

/// `[metrics]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// The textfile collector's directory that `strata.prom` is written into; an empty string
    /// turns the counters off.
    #[serde(default = "default_metrics_dir")]
    pub dir: PathBuf,
}

fn default_metrics_dir() -> PathBuf {
    PathBuf::from(strata_backend::counters::DEFAULT_DIR)
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            dir: default_metrics_dir(),
        }
    }
}

fn default_backend() -> BackendKind {
    BackendKind::Native
}

fn all_backends() -> Vec<BackendKind> {
    BackendKind::ALL.to_vec()
}

impl Default for Config {
    fn default() -> Self {
        Config {
            default_backend: default_backend(),
            allowed_backends: all_backends(),
            state_root: None,
            wasm: None,
            microvm: None,
            metrics: Metrics::default(),
        }
    }
}

impl Config {
    /// Parses TOML text; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.message().to_string(),
        })?;
        for (kind, table) in [
            (BackendKind::Wasm, &cfg.wasm),
            (BackendKind::Microvm, &cfg.microvm),
        ] {
            if let (Some(table), Some(tier)) = (table, crate::tiers::tier(kind)) {
                tier.validate(table).map_err(|message| ConfigError::Parse {
                    path: path.to_path_buf(),
                    message,
                })?;
            }
        }
        if !cfg.allowed_backends.contains(&cfg.default_backend) {
            return Err(ConfigError::Parse {
                path: path.to_path_buf(),
                message: format!(
                    "default_backend {:?} is not in allowed_backends [{}]",
                    cfg.default_backend.as_str(),
                    list(&cfg.allowed_backends)
                ),
            });
        }
        Ok(cfg)
    }

    /// The tier's own table, if the file has one.
    pub fn tier_settings(&self, kind: BackendKind) -> Option<toml::Value> {
        match kind {
            BackendKind::Wasm => self.wasm.clone(),
            BackendKind::Microvm => self.microvm.clone(),
            BackendKind::Native | BackendKind::Sentry => None,
        }
    }

    /// Loads from `config_path` if given (it must exist), else the default path if it
    /// exists, else built-in defaults.
    pub fn load(config_path: Option<&Path>) -> Result<Config, ConfigError> {
        let path = match config_path {
            Some(p) => p.to_path_buf(),
            None => {
                let p = PathBuf::from(DEFAULT_CONFIG_PATH);
                if !p.exists() {
                    return Ok(Config::default());
                }
                p
            }
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        Config::parse(&text, &path)
    }

    /// Where native containers keep their state: `state_root`, else the native default.
    pub fn native_state_root(&self) -> PathBuf {
        self.state_root
            .clone()
            .unwrap_or_else(|| PathBuf::from(strata_native::DEFAULT_STATE_ROOT))
    }

    /// The tier for a container with these annotations.
    pub fn choose(
        &self,
        annotations: &HashMap<String, String>,
    ) -> Result<BackendKind, ConfigError> {
        let Some(value) = annotations.get(BACKEND_ANNOTATION) else {
            return Ok(self.default_backend);
        };
        let allowed = list(&self.allowed_backends);
        let kind: BackendKind = value.parse().map_err(|_| ConfigError::UnknownBackend {
            value: value.clone(),
            allowed: allowed.clone(),
        })?;
        if !self.allowed_backends.contains(&kind) {
            return Err(ConfigError::NotAllowed {
                value: value.clone(),
                allowed,
            });
        }
        Ok(kind)
    }

    /// The tier of a container in a wasm pod (or a lone wasm container) whose entrypoint
    /// `program` is an ELF program: native when it is the pod's sandbox (pause) container or
    /// `native` is in `allowed_backends`, else refused, so that no container leaves the wasm
    /// tier unless the configuration lets it.
    pub fn tier_of_elf_in_wasm(
        &self,
        program: &str,
        sandbox_container: bool,
    ) -> Result<BackendKind, ConfigError> {
        if sandbox_container || self.allowed_backends.contains(&BackendKind::Native) {
            Ok(BackendKind::Native)
        } else {
            Err(ConfigError::ElfInWasmPod {
                program: program.to_string(),
                allowed: list(&self.allowed_backends),
            })
        }
    }
}

fn list(kinds: &[BackendKind]) -> String {
    kinds
        .iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(v: &str) -> HashMap<String, String> {
        HashMap::from([(BACKEND_ANNOTATION.to_string(), v.to_string())])
    }

    #[test]
    fn an_elf_container_leaves_wasm_only_as_the_sandbox_or_where_native_is_allowed() {
        let wasm_with = |allowed: &str| {
            Config::parse(
                &format!("default_backend = \"wasm\"\nallowed_backends = [{allowed}]\n"),
                Path::new("/etc/strata/strata-wasm.toml"),
            )
            .unwrap()
        };
        let wasm_only = wasm_with("\"wasm\"");
        let pause = wasm_only.tier_of_elf_in_wasm("/pause", true);
        assert_eq!(pause.unwrap(), BackendKind::Native);
        let msg = wasm_only
            .tier_of_elf_in_wasm("/bin/sh", false)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("/bin/sh"), "{msg}");
        assert!(msg.contains("allowed_backends (here: wasm)"), "{msg}");
        assert!(msg.contains("sandbox (pause) container"), "{msg}");
        for allowing in [wasm_with("\"wasm\", \"native\""), Config::default()] {
            let sidecar = allowing.tier_of_elf_in_wasm("/bin/sh", false);
            assert_eq!(sidecar.unwrap(), BackendKind::Native);
        }
    }

    #[test]
    fn defaults_without_file_or_annotation() {
        let c = Config::default();
        assert_eq!(c.choose(&HashMap::new()).unwrap(), BackendKind::Native);
        assert_eq!(c.choose(&ann("wasm")).unwrap(), BackendKind::Wasm);
    }

    #[test]
    fn annotation_cannot_leave_allowed_set() {
        let c = Config::parse(
            "default_backend = \"microvm\"\nallowed_backends = [\"microvm\", \"sentry\"]\n",
            Path::new("x.toml"),
        )
        .unwrap();
        assert_eq!(c.choose(&HashMap::new()).unwrap(), BackendKind::Microvm);
        assert_eq!(c.choose(&ann("sentry")).unwrap(), BackendKind::Sentry);
        let e = c.choose(&ann("native")).unwrap_err().to_string();
        assert!(
            e.contains("not allowed") && e.contains("microvm, sentry"),
            "{e}"
        );
        let e = c.choose(&ann("bogus")).unwrap_err().to_string();
        assert!(
            e.contains("names no backend") && e.contains("microvm, sentry"),
            "{e}"
        );
    }

    #[test]
    fn wasm_cache_dir_is_configurable() {
        let c = Config::parse("[wasm]\ncache_dir = \"/srv/wasm\"\n", Path::new("a")).unwrap();
        let wasm = strata_wasm::Settings::from_table(c.wasm.as_ref().unwrap()).unwrap();
        assert_eq!(wasm.cache_dir.as_deref(), Some(Path::new("/srv/wasm")));
        assert!(Config::parse("[wasm]\ncache = 1\n", Path::new("a")).is_err());
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let e = Config::parse("default_backend = 3", Path::new("/etc/s.toml")).unwrap_err();
        assert!(e.to_string().contains("/etc/s.toml"), "{e}");
        let e = Config::parse("default_backend = \"gvisor\"", Path::new("a")).unwrap_err();
        assert!(e.to_string().contains("not valid"), "{e}");
        let e = Config::parse("colour = 1", Path::new("a")).unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
        let e = Config::parse(
            "default_backend = \"wasm\"\nallowed_backends = [\"native\"]",
            Path::new("a"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("not in allowed_backends"), "{e}");
        let e = Config::load(Some(Path::new("/nonexistent/strata.toml"))).unwrap_err();
        assert!(e.to_string().contains("cannot read"), "{e}");
    }
}
