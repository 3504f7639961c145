//! Injective flows that learn a manifold and a density on it (MATH.md section 8).
pub mod config;
pub mod coupling;
pub mod dual;
pub mod error;
pub mod linear;
pub mod model;
pub mod nets;
pub mod spline;
pub mod transform;
pub mod validate;

pub use config::{EncoderConfig, FlowConfig, Mixing, ModelConfig, ModelKind, Precision};
pub use coupling::RqCoupling;
pub use error::{MflowError, Result};
pub use linear::{ActNorm, LuLinear, Permutation};
pub use model::ManifoldFlow;
pub use spline::SplineConfig;
pub use transform::{Flow, Transform};
