//! One error type for the whole crate.

use std::path::PathBuf;

/// Everything that can go wrong in `ppo_wgpu`. Variants carry the names and
/// values a user needs to fix the problem (field, value, limit).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No adapter was found (or none matched the user's filter).
    #[error("no GPU or software adapter found{filter}.\n{hint}")]
    NoAdapter { filter: String, hint: String },

    /// The adapter cannot provide a limit or feature we need.
    #[error(
        "adapter '{adapter}' cannot provide {what}: needs {needed}, adapter allows {available}"
    )]
    AdapterLimit {
        adapter: String,
        what: String,
        needed: u64,
        available: u64,
    },

    /// Device request failed.
    #[error("could not open device on adapter '{adapter}': {reason}")]
    Device { adapter: String, reason: String },

    /// A shader failed to compile or a pipeline failed to build.
    #[error("shader '{shader}' (entry point '{entry_point}') failed: {reason}")]
    Shader {
        shader: String,
        entry_point: String,
        reason: String,
    },

    /// A GPU operation (submit, readback) failed.
    #[error("GPU error in {op}: {reason}")]
    Gpu { op: String, reason: String },

    /// Tensor sizes disagree with the declared shapes.
    #[error("{op}: tensor '{tensor}' has {got} elements, expected {expected}")]
    ShapeMismatch {
        op: String,
        tensor: String,
        expected: usize,
        got: usize,
    },

    /// A configuration value is invalid.
    #[error("invalid config: {field} = {value}: {reason}")]
    InvalidConfig {
        field: String,
        value: String,
        reason: String,
    },

    /// An environment was given bad input (action, physics parameter, buffer).
    #[error("env {index}: {field} = {value}: {reason}")]
    InvalidEnv {
        index: usize,
        field: String,
        value: String,
        reason: String,
    },

    /// NaN or infinity appeared in training.
    #[error("non-finite value in {what} at iteration {iteration}: {detail}")]
    NonFinite {
        what: String,
        iteration: usize,
        detail: String,
    },

    /// File input/output failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A file had unexpected contents.
    #[error("{path}: {reason}")]
    Format { path: PathBuf, reason: String },
}

/// Crate-wide result alias.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Shorthand for [`Error::InvalidConfig`].
    pub fn config(
        field: impl Into<String>,
        value: impl ToString,
        reason: impl Into<String>,
    ) -> Self {
        Error::InvalidConfig {
            field: field.into(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    /// An [`Error::InvalidConfig`] with `note` appended to its reason (where
    /// the value came from); other errors unchanged.
    pub fn with_note(self, note: impl std::fmt::Display) -> Self {
        match self {
            Error::InvalidConfig {
                field,
                value,
                reason,
            } => Error::InvalidConfig {
                field,
                value,
                reason: format!("{reason} ({note})"),
            },
            other => other,
        }
    }

    /// Shorthand for [`Error::ShapeMismatch`].
    pub fn shape(op: &str, tensor: &str, expected: usize, got: usize) -> Self {
        Error::ShapeMismatch {
            op: op.into(),
            tensor: tensor.into(),
            expected,
            got,
        }
    }
}
