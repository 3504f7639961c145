//! Score networks, denoising losses (DSM and MAD), AdamW with warm-up and cosine decay, gradient clipping,
//! an EMA of the weights, and a reproducible, resumable training loop.
//!
//! - [`ScoreMlp`]: an MLP on the flattened point and Fourier features of `ln sigma_t`, whose output is the
//!   noise-scaled residual `sigma_t * delta` ([`net`] module doc).
//! - [`ResidualScore`]: `s = s_base + net / sigma_t` as a [`scores::Score`] (MAD), or `net / sigma_t` (DSM).
//! - [`residual_loss`]: `E lambda(t) | sigma_t delta - (-eps - sigma_t s_base(x_t)) |^2` (MATH.md section 2).
//! - [`loss_and_grad`]: the same loss with a hand-written backward pass into the flat gradient (training).
//! - [`AdamW`], [`Ema`], [`optim::clip_grad_norm`] on one flat parameter buffer ([`FlatParams`]).
//! - [`Trainer`]: steps, [`Observer`] reports, [`Checkpoint`]s as values (no files), [`Trainer::resume`].
//!
//! Layering: depends on `geom` and `scores` only; never prints or writes files (the caller's
//! [`Observer`] does).
//!
//! ```
//! use std::sync::Arc;
//! use tch::{Device, Kind, Tensor};
//! use train::{Control, MlpConfig, Objective, Observer, StepReport, TrainConfig, Trainer};
//! use scores::base::sphere::SphereBase;
//!
//! // MAD on the circle S^1 in R^2: two data points, the exact score of the uniform law on S^1 as base.
//! let config = TrainConfig {
//!     model: MlpConfig { width: 16, depth: 2, ..MlpConfig::default() },
//!     objective: Objective::Mad,
//!     steps: 20,
//!     batch_size: 32,
//!     ..TrainConfig::default()
//! };
//! let base = Arc::new(SphereBase::new(2).unwrap());
//! let mut trainer = Trainer::new(config, &[2], Some(base), Device::Cpu).unwrap();
//! let data = Tensor::from_slice(&[1.0f64, 0.0, -1.0, 0.0]).reshape([2, 2]);
//!
//! struct Losses(Vec<f64>);
//! impl Observer for Losses {
//!     fn on_step(&mut self, r: &StepReport) -> Control {
//!         self.0.push(r.loss);
//!         Control::Continue
//!     }
//! }
//! let mut losses = Losses(Vec::new());
//! let outcome = trainer.run(&data, &mut losses).unwrap();
//! assert_eq!(outcome.steps_done, 20);
//! assert!(losses.0.iter().all(|l| l.is_finite()));
//!
//! // The EMA weights as a score for sampling.
//! use scores::Score;
//! let score = trainer.ema_score();
//! let s = score.score(&data.to_kind(Kind::Float), &Tensor::from_slice(&[0.5f32, 0.5]));
//! assert_eq!(s.size(), [2, 2]);
//! ```

pub mod checkpoint;
pub mod config;
pub mod error;
pub mod flat;
pub mod fused;
pub mod loss;
pub mod model;
pub mod ndsm;
pub mod net;
pub mod optim;
pub mod trainer;

pub use checkpoint::{Checkpoint, RunState};
pub use config::{Precision, TrainConfig};
pub use error::{Result, TrainError};
pub use flat::FlatParams;
pub use fused::loss_and_grad;
pub use loss::{per_sample_loss, residual_loss, LossBatch, Objective, Weighting};
pub use model::{ResidualScore, TensorBase};
pub use net::{Activation, MlpConfig, ScoreMlp};
pub use optim::{clip_grad_norm, AdamW, Ema, OptimConfig, SERIAL_CHUNK};
pub use trainer::{Control, Observer, RunOutcome, StepReport, Trainer};
