//! The error type of the geom crate.

/// Errors that geom returns for invalid input or parameters.
///
/// Every variant names the offending argument so that a caller several layers up can tell the user
/// which field or row to fix.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum GeomError {
    /// An argument holds a NaN or infinite value.
    #[error("argument `{arg}` has a non-finite value at {location}")]
    NonFinite {
        /// The argument's name.
        arg: String,
        /// Where the value sits, e.g. `row 3` or `coordinate 1`.
        location: String,
    },
    /// An argument has the wrong shape or dimension.
    #[error("argument `{arg}` has shape {got}, expected {expected}")]
    Shape {
        /// The argument's name.
        arg: String,
        /// The expected shape, in words or as a list.
        expected: String,
        /// The shape received.
        got: String,
    },
    /// A point lies off the manifold by more than the tolerance.
    #[error("argument `{arg}` is off the manifold {manifold} at {location}: distance {distance:.3e} exceeds tolerance {tol:.1e}")]
    OffManifold {
        /// The argument's name.
        arg: String,
        /// The manifold's name.
        manifold: String,
        /// Where the point sits, e.g. `row 3`.
        location: String,
        /// Its distance to the manifold (ambient).
        distance: f64,
        /// The tolerance that was exceeded.
        tol: f64,
    },
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
    /// An operation is undefined at this input (for example the sphere's projection of the zero vector).
    #[error("{op} is undefined for argument `{arg}`: {reason}")]
    Undefined {
        /// The operation.
        op: String,
        /// The argument's name.
        arg: String,
        /// Why it is undefined.
        reason: String,
    },
}

/// The result type of the geom crate.
pub type Result<T> = std::result::Result<T, GeomError>;

impl GeomError {
    /// Shorthand for [`GeomError::InvalidParameter`].
    pub fn invalid(name: &str, value: impl std::fmt::Display, expected: &str) -> Self {
        GeomError::InvalidParameter { name: name.to_string(), value: value.to_string(), expected: expected.to_string() }
    }
}
