//! Injective flows that learn a manifold and a density on it (M-flows; Brehmer and Cranmer 2020;
//! MATH.md section 8).
//!
//! - Building blocks ([`Transform`]): rational-quadratic spline couplings with residual conditioners
//!   ([`RqCoupling`], [`spline`]), LU-parametrised linear maps ([`LuLinear`]), permutations, [`ActNorm`],
//!   and their compositions ([`Flow`]). `forward` is the generative direction; every layer also pushes
//!   tangents forward ([`Transform::forward_jvp`], by hand-written derivatives in [`dual`]).
//! - Models ([`ManifoldFlow`], [`ModelKind`]): M-flow, M_e-flow, PIE and the ambient flow (AF), with
//!   encoding, decoding, projection, reconstruction error, sampling and densities. The manifold density's
//!   `-1/2 log det(J^T J)` uses the `d x n` decoder Jacobian from `n` forward-mode products in one pass
//!   ([`model`] module doc), not one backward pass per output coordinate.
//! - Training ([`train`]): sequential, alternating or simultaneous M/D schedules ([`Schedule`]), tch's AdamW
//!   per parameter group, warm-up and cosine decay, gradient clipping, early stopping on a validation
//!   split with the best weights restored, progress through an [`Observer`].
//! - Checkpoints ([`ManifoldFlow::checkpoint`]): named tensors with an architecture header; a checkpoint
//!   of another architecture is refused naming the field.
//! - Toy data ([`Dataset`]): Gaussian on a circle, spherical Gaussian, mixture on a polynomial surface,
//!   Lorenz attractor; seeded, with the distance to the true manifold.
//!
//! Layering: depends on tch (and optionally geom) only; never prints or writes files.
//!
//! ```
//! use mflow::{train, Dataset, ManifoldFlow, ModelConfig, ModelKind, Schedule, TrainConfig};
//! use tch::Device;
//!
//! let data = Dataset::Circle.sample(256, 0);
//! let mut config = ModelConfig::new(ModelKind::MFlow, 2, 1);
//! config.outer.layers = 2;
//! config.outer.hidden = 8;
//! let mut model = ManifoldFlow::new(&config, 0, Device::Cpu).unwrap();
//! let train_config = TrainConfig {
//!     schedule: Schedule::Sequential { manifold_steps: 5, density_steps: 5 },
//!     batch_size: 64,
//!     patience: None,
//!     ..TrainConfig::default()
//! };
//! let outcome = train(&mut model, &data, &train_config, &mut ()).unwrap();
//! assert_eq!(outcome.steps_done, 10);
//!
//! let samples = model.sample(100, 1);
//! assert_eq!(samples.size(), [100, 2]);
//! let log_p = model.manifold_log_prob(&data).unwrap();
//! assert_eq!(log_p.size(), [256]);
//!
//! // A manifold dimension outside 1..d is refused, naming the field.
//! let err = ManifoldFlow::new(&ModelConfig::new(ModelKind::MFlow, 2, 2), 0, Device::Cpu).unwrap_err();
//! assert!(err.to_string().starts_with("manifold_dim = 2 is invalid"));
//! ```

pub mod checkpoint;
pub mod config;
pub mod coupling;
pub mod data;
pub mod dual;
pub mod error;
pub mod linear;
pub mod model;
pub mod nets;
pub mod spline;
pub mod train_config;
pub mod trainer;
pub mod transform;
pub mod validate;

pub use checkpoint::{header_text, HEADER_NAME};
pub use config::{EncoderConfig, FlowConfig, Mixing, ModelConfig, ModelKind, Precision};
pub use coupling::RqCoupling;
pub use data::Dataset;
pub use error::{MflowError, Result};
pub use linear::{ActNorm, LuLinear, Permutation};
pub use model::ManifoldFlow;
pub use spline::SplineConfig;
pub use train_config::{LossWeights, OptimConfig, Schedule, TrainConfig};
pub use trainer::{phase_loss, split_indices, train, Control, EvalReport, Observer, Phase, StepReport, TrainOutcome};
pub use transform::{Flow, Transform};
pub use validate::check_points;
