//! The error type of the scores crate.

/// Errors that scores returns for invalid input, parameters or data.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum ScoreError {
    /// A parameter is outside its allowed range.
    #[error("parameter `{name}` = {value} is invalid: expected {expected}")]
    InvalidParameter {
        /// The parameter's name.
        name: String,
        /// The value received, formatted.
        value: String,
        /// The allowed range, in words.
        expected: String,
    },
    /// A time lies outside the schedule's range.
    #[error("time t = {t} is outside the schedule's range [{lo}, {hi}]")]
    TimeOutOfRange {
        /// The time received.
        t: f64,
        /// Lower end of the range.
        lo: f64,
        /// Upper end of the range.
        hi: f64,
    },
    /// A data set is empty.
    #[error("data set `{name}` is empty: at least one point is needed")]
    EmptyData {
        /// The data set's name.
        name: String,
    },
    /// An error from the geometry layer (non-finite values, shapes, off-manifold points).
    #[error(transparent)]
    Geom(#[from] geom::GeomError),
}

/// The result type of the scores crate.
pub type Result<T> = std::result::Result<T, ScoreError>;

impl ScoreError {
    /// Shorthand for [`ScoreError::InvalidParameter`].
    pub fn invalid(name: &str, value: impl std::fmt::Display, expected: &str) -> Self {
        ScoreError::InvalidParameter {
            name: name.to_string(),
            value: value.to_string(),
            expected: expected.to_string(),
        }
    }
}
