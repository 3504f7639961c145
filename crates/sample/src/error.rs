//! The error type of the sample crate.

/// Errors that the samplers return: invalid configurations, non-finite inputs or outputs, adaptive solvers
/// that cannot reach the end time, and errors of the layers below.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum SampleError {
    /// A configuration field is outside its allowed range.
    #[error("config field `{field}` = {value} is invalid: expected {expected}")]
    InvalidConfig {
        /// The field's name, e.g. `n_steps` or `corrector.snr`.
        field: String,
        /// The value received, formatted.
        value: String,
        /// The allowed range, in words.
        expected: String,
    },
    /// A tensor argument has the wrong dtype or rank.
    #[error("argument `{arg}` is invalid: {reason}")]
    InvalidArgument {
        /// The argument's name.
        arg: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A tensor holds NaN or infinite values (an input, or the state of a diverging solver).
    #[error("`{what}` has non-finite values")]
    NonFinite {
        /// What holds them, e.g. `x_init` or `euler_maruyama state at t = 0.5`.
        what: String,
    },
    /// The adaptive ODE solver used up its step budget before reaching the end time.
    #[error("dormand-prince used its budget of max_steps = {max_steps} steps and stopped at t = {t} before t_end = {t_end}: raise max_steps or loosen rtol/atol")]
    MaxStepsExceeded {
        /// The budget (accepted plus rejected steps).
        max_steps: usize,
        /// The time reached.
        t: f64,
        /// The time that was to be reached.
        t_end: f64,
    },
    /// The adaptive ODE solver's step size fell below the resolution of f64 at the current time.
    #[error(
        "dormand-prince step size {h:e} underflowed at t = {t}: the score is probably not finite or not smooth there"
    )]
    StepSizeUnderflow {
        /// The step size.
        h: f64,
        /// The time reached.
        t: f64,
    },
    /// An error from the scores layer (schedules).
    #[error(transparent)]
    Score(#[from] scores::ScoreError),
    /// An error from the geometry layer (shapes, non-finite or off-manifold points).
    #[error(transparent)]
    Geom(#[from] geom::GeomError),
}

/// The result type of the sample crate.
pub type Result<T> = std::result::Result<T, SampleError>;

impl SampleError {
    /// Shorthand for [`SampleError::InvalidConfig`].
    pub fn invalid(field: &str, value: impl std::fmt::Display, expected: &str) -> Self {
        SampleError::InvalidConfig {
            field: field.to_string(),
            value: value.to_string(),
            expected: expected.to_string(),
        }
    }

    /// The same error with the field name prefixed by `prefix.` (for nested configurations).
    pub(crate) fn in_field(self, prefix: &str) -> Self {
        match self {
            SampleError::InvalidConfig { field, value, expected } => {
                SampleError::InvalidConfig { field: format!("{prefix}.{field}"), value, expected }
            }
            other => other,
        }
    }
}

/// Field checks shared by the configurations.
pub(crate) mod check {
    use super::{Result, SampleError};

    /// `n >= 1`.
    pub(crate) fn positive_count(field: &str, n: usize) -> Result<()> {
        if n == 0 {
            return Err(SampleError::invalid(field, n, "an integer >= 1"));
        }
        Ok(())
    }

    /// A finite `v > 0`.
    pub(crate) fn positive(field: &str, v: f64) -> Result<()> {
        if !(v.is_finite() && v > 0.0) {
            return Err(SampleError::invalid(field, v, "a finite number > 0"));
        }
        Ok(())
    }

    /// `t` in the open interval (0, 1).
    pub(crate) fn t_end(field: &str, t: f64) -> Result<()> {
        if !(t > 0.0 && t < 1.0) {
            return Err(SampleError::invalid(field, t, "a number in the open interval (0, 1)"));
        }
        Ok(())
    }
}
