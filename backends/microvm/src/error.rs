//! The tier's errors.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A helper binary (qemu, virtiofsd, vhost-device-vsock) is missing.
    #[error("{name} not found ({looked}); {hint}")]
    MissingTool {
        name: &'static str,
        looked: String,
        hint: &'static str,
    },
    #[error("the guest {what} {path} does not exist")]
    MissingImage { what: &'static str, path: PathBuf },
    /// /dev/kvm cannot run a Linux guest here and TCG is not allowed.
    #[error("{0}")]
    NoAccelerator(String),
    #[error("the VM did not boot: {reason}{}", tail_suffix(.console_tail))]
    Boot {
        reason: String,
        console_tail: String,
    },
    #[error("{0}")]
    Other(String),
}

fn tail_suffix(tail: &str) -> String {
    if tail.trim().is_empty() {
        String::new()
    } else {
        format!("; guest console ends:\n{tail}")
    }
}

impl Error {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}
