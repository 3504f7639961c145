//! Samplers for score-based generative models on manifolds: the reverse-time SDE (Euler-Maruyama,
//! predictor-corrector), the probability-flow ODE (Heun, adaptive Dormand-Prince 5(4)), geodesic random
//! walks for intrinsic scores, and the final projection onto the manifold.
//!
//! Every ambient sampler takes any [`scores::Score`] and a [`scores::Schedule`] (VE or VP) and runs from
//! t = 1 down to a small t_end > 0 (MATH.md sections 0 and 3):
//! - forward SDE dx = f(t) x dt + g(t) dW, x_t = alpha_t x_0 + sigma_t eps;
//! - reverse SDE dx = [f(t) x - g(t)^2 s(x, t)] dt + g(t) dW_bar ([`euler_maruyama()`],
//!   [`predictor_corrector()`]);
//! - probability-flow ODE dx/dt = f(t) x - g(t)^2 s(x, t) / 2 ([`heun()`], [`dormand_prince()`]);
//! - initial law N(0, sigma_max^2 I) for VE and N(0, I) for VP ([`initial_noise`]);
//! - intrinsic processes have generator the Laplace-Beltrami operator, dX = sqrt(2) dB, whose reversal has
//!   drift 2 s ([`geodesic`]).
//!
//! Conventions shared by every function:
//! - tensors are batches `[B, ..ambient]`; outputs keep the dtype and device of the input state;
//! - randomness comes from libtorch's default generator on the state's device: seed it with
//!   `tch::manual_seed`. That generator is global to the process, so samplers running concurrently in
//!   several threads interleave their draws: for reproducible samples, sample from one thread at a time;
//! - configurations are validated by `check()` before any work, and errors name the field and its range;
//! - the library never prints: long loops report to a [`Progress`] observer ([`NoProgress`] ignores it);
//! - solver states are detached after each step (the samplers are not differentiable).
//!
//! ```
//! use sample::{euler_maruyama, initial_noise, project_samples, FixedStepConfig, NoProgress};
//! use scores::{Schedule, Score};
//! use tch::{Device, Kind, Tensor};
//!
//! /// The exact score of the data law N(0, 0.5^2 I) noised by `schedule`.
//! struct GaussianScore(Schedule);
//! impl Score for GaussianScore {
//!     fn score(&self, x: &Tensor, t: &Tensor) -> Tensor {
//!         let var = self.0.alpha_t(t).square() * 0.25 + self.0.sigma_t(t).square();
//!         -x / var.unsqueeze(-1)
//!     }
//! }
//!
//! tch::manual_seed(0);
//! let schedule = Schedule::ve(0.01, 10.0).unwrap();
//! let x1 = initial_noise(&schedule, &[2000, 2], Kind::Double, Device::Cpu);
//! let config = FixedStepConfig { n_steps: 200, t_end: 1e-3, ..Default::default() };
//! let out = euler_maruyama(&GaussianScore(schedule), &schedule, &x1, &config, &mut NoProgress).unwrap();
//! let std = out.x.std(true).double_value(&[]);
//! assert!((std - 0.5).abs() < 0.05, "std = {std}");
//!
//! // Project onto the unit circle and read how far the samples were from it.
//! let circle = geom::Sphere::new(2).unwrap();
//! let projected = project_samples(&circle, &out.x).unwrap();
//! assert!(projected.mean_distance_before > 0.1);
//! ```

pub mod dormand_prince;
pub mod error;
pub mod euler_maruyama;
pub mod geodesic;
pub mod grid;
pub mod heun;
pub mod init;
pub mod predictor_corrector;
pub mod progress;
pub mod project;
pub mod sampler;
pub mod sde;
mod tensor_util;

pub use dormand_prince::{dormand_prince, DormandPrinceConfig, StepController};
pub use error::{Result, SampleError};
pub use euler_maruyama::{euler_maruyama, euler_maruyama_step};
pub use geodesic::{
    geodesic_random_walk, geodesic_step, BrownianMotion, GeodesicWalkConfig, IntrinsicSde, ReverseHeat,
};
pub use grid::{heat_time_grid, noise_to_signal, t_of_noise_to_signal, time_grid, TimeGrid};
pub use heun::{heun, heun_step};
pub use init::{initial_noise, initial_noise_with_base};
pub use predictor_corrector::{
    langevin_step, predictor_corrector, LangevinConfig, PredictorCorrectorConfig, StepNorms,
};
pub use progress::{NoProgress, Progress};
pub use project::{project_samples, Projected};
pub use sampler::{sample, SamplerConfig};
pub use sde::{
    probability_flow_drift, reverse_sde_drift, tweedie_denoise, FinalDenoise, FixedStepConfig, SampleOutput,
};
