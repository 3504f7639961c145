//! The error type of the mflow crate.

/// Errors that mflow returns for invalid configurations, data and checkpoints, and for diverging runs.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum MflowError {
    /// A configuration field is outside its allowed range.
    #[error("{name} = {value} is invalid: expected {expected}")]
    InvalidConfig {
        /// The field's name (dotted for nested configurations, e.g. `outer.bins`).
        name: String,
        /// The value received, formatted.
        value: String,
        /// The allowed range, in words.
        expected: String,
    },
    /// Data with the wrong shape or with non-finite values.
    #[error("invalid data `{name}`: {reason}")]
    InvalidData {
        /// The argument's name.
        name: String,
        /// What is wrong with it (for non-finite values: the row and the column).
        reason: String,
    },
    /// A checkpoint written by a model of another architecture, or with missing or reshaped tensors.
    #[error("checkpoint does not match this model: {0}")]
    CheckpointMismatch(String),
    /// An operation that the model kind does not define (e.g. a manifold density of the ambient flow).
    #[error("{operation} is not defined for the {kind} model")]
    Unsupported {
        /// The operation asked for.
        operation: String,
        /// The model kind, as in [`crate::ModelKind::name`].
        kind: String,
    },
    /// The loss or the gradient became NaN or infinite during training.
    #[error("non-finite {what} at step {step} ({phase} phase)")]
    NonFinite {
        /// `loss` or `gradient norm`.
        what: String,
        /// The (0-based) step being taken.
        step: u64,
        /// The training phase, as in [`crate::Phase::name`].
        phase: String,
    },
    /// An error from libtorch at a boundary (tensor conversion, device transfer).
    #[error("libtorch error: {0}")]
    Torch(String),
}

/// The result type of the mflow crate.
pub type Result<T> = std::result::Result<T, MflowError>;

impl MflowError {
    /// Shorthand for [`MflowError::InvalidConfig`].
    pub fn invalid(name: &str, value: impl std::fmt::Display, expected: &str) -> Self {
        MflowError::InvalidConfig { name: name.to_string(), value: value.to_string(), expected: expected.to_string() }
    }

    /// Shorthand for [`MflowError::InvalidData`].
    pub fn data(name: &str, reason: impl Into<String>) -> Self {
        MflowError::InvalidData { name: name.to_string(), reason: reason.into() }
    }
}

impl From<tch::TchError> for MflowError {
    fn from(e: tch::TchError) -> Self {
        MflowError::Torch(e.to_string())
    }
}
