//! The error type of the train crate.

/// Errors that train returns for invalid configurations, data or checkpoints, and for diverging runs.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum TrainError {
    /// A configuration field is outside its allowed range.
    #[error("{name} = {value} is invalid: expected {expected}")]
    InvalidConfig {
        /// The field's name (dotted for nested configurations, e.g. `model.width`).
        name: String,
        /// The value received, formatted.
        value: String,
        /// The allowed range, in words.
        expected: String,
    },
    /// Training data with the wrong shape, dtype or values.
    #[error("invalid data `{name}`: {reason}")]
    InvalidData {
        /// The argument's name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A checkpoint that does not belong to this configuration or architecture.
    #[error("checkpoint does not match this run: {0}")]
    CheckpointMismatch(String),
    /// The loss or the gradient became NaN or infinite.
    #[error("non-finite {what} at step {step}")]
    NonFinite {
        /// `loss` or `gradient norm`.
        what: String,
        /// The (0-based) step being taken.
        step: u64,
    },
    /// An error from libtorch at a boundary (tensor conversion, device transfer).
    #[error("libtorch error: {0}")]
    Torch(String),
}

/// The result type of the train crate.
pub type Result<T> = std::result::Result<T, TrainError>;

impl TrainError {
    /// Shorthand for [`TrainError::InvalidConfig`].
    pub fn invalid(name: &str, value: impl std::fmt::Display, expected: &str) -> Self {
        TrainError::InvalidConfig { name: name.to_string(), value: value.to_string(), expected: expected.to_string() }
    }

    /// Shorthand for [`TrainError::InvalidData`].
    pub fn data(name: &str, reason: impl Into<String>) -> Self {
        TrainError::InvalidData { name: name.to_string(), reason: reason.into() }
    }
}

impl From<tch::TchError> for TrainError {
    fn from(e: tch::TchError) -> Self {
        TrainError::Torch(e.to_string())
    }
}
