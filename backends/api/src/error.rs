//! Typed errors every backend returns; the shim maps each variant to one ttrpc code.

use crate::BackendKind;

/// What went wrong in a backend operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No container or process by that id.
    #[error("{0} not found")]
    NotFound(String),
    /// A container or process by that id exists already.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// The request itself is wrong (spec, annotation, argument).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The object is in the wrong state for the operation.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The tier cannot do this operation at all.
    #[error("{op} is not supported by the {backend} backend")]
    Unsupported {
        backend: BackendKind,
        op: &'static str,
    },
    /// The tier is not available in this build or on this host.
    #[error("the {backend} backend is not available: {reason}")]
    Unavailable {
        backend: BackendKind,
        reason: String,
    },
    /// A system call or file operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// Anything else, with a message that says what failed.
    #[error("{0}")]
    Other(String),
}

/// Result alias for backend operations.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The error's kind in a word, for the `reason` label of failure counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::NotFound(_) => "not_found",
            Error::AlreadyExists(_) => "already_exists",
            Error::InvalidArgument(_) => "invalid_argument",
            Error::FailedPrecondition(_) => "failed_precondition",
            Error::Unsupported { .. } => "unsupported",
            Error::Unavailable { .. } => "unavailable",
            Error::Io { .. } => "io",
            Error::Other(_) => "other",
        }
    }

    /// Wraps an I/O error with what was being attempted.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<nix::Error> for Error {
    fn from(e: nix::Error) -> Self {
        Error::Io {
            context: "system call".into(),
            source: std::io::Error::from(e),
        }
    }
}
