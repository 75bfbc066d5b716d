//! The library's error type.

use std::path::{Path, PathBuf};

/// Everything that can go wrong in defed's library API.
///
/// Every variant that concerns a file names the file, so a message printed at the CLI edge is
/// enough to find and fix the problem.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system I/O error on a named file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file whose content is not what its format requires (corrupt, truncated, wrong kind).
    #[error("{}: {msg}", path.display())]
    Format {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// A checkpoint that does not fit the architecture it is loaded into.
    #[error("checkpoint {}: {msg}", path.display())]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// The first mismatch found.
        msg: String,
    },
    /// Input data of the wrong shape for the operation.
    #[error("shape error: {0}")]
    Shape(String),
    /// Invalid input values or arguments (NaN pixels, out-of-range values, bad options).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// A failed HTTP exchange with a `defed serve` service.
    #[error("{url}: {msg}")]
    Http {
        /// The address asked for.
        url: String,
        /// What went wrong.
        msg: String,
    },
    /// A network failure while downloading a data set.
    #[error("download of {url} failed: {msg}")]
    Download {
        /// The address asked for.
        url: String,
        /// What went wrong.
        msg: String,
    },
}

/// Shorthand for results with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// A format error in `path`.
    pub fn format(path: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        Error::Format {
            path: path.as_ref().to_path_buf(),
            msg: msg.into(),
        }
    }

    /// A checkpoint error in `path`.
    pub fn checkpoint(path: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        Error::Checkpoint {
            path: path.as_ref().to_path_buf(),
            msg: msg.into(),
        }
    }
}
