//! Scores of noised laws on manifolds: the [`Score`] trait, noise schedules, exact base scores (MAD),
//! heat kernels and diffusion kernel smoothers.
//!
//! Conventions are those of `shared/design/MATH.md`: ambient noising x_t = alpha_t x_0 + sigma_t eps,
//! intrinsic processes with generator the Laplace-Beltrami operator (dX = sqrt(2) dB, so the heat kernel at
//! time t has "variance" 2t per dimension), densities on S^2 w.r.t. the area measure of the unit sphere and
//! on SO(3) w.r.t. the Haar probability measure.
//!
//! ```
//! use scores::Schedule;
//!
//! let ve = Schedule::ve(0.01, 50.0).unwrap();
//! assert!((ve.sigma(1.0) - 50.0).abs() < 1e-12);
//! assert!((ve.t_of_sigma(ve.sigma(0.3)).unwrap() - 0.3).abs() < 1e-12);
//! ```

pub mod base;
pub mod error;
pub mod gmm;
pub mod heat;
pub mod oism;
pub mod quadrature;
pub mod schedule;
pub mod score;
pub mod smoother;

pub use error::{Result, ScoreError};
pub use schedule::Schedule;
pub use score::{BaseScore, Score};
