//! Exact base scores of MAD (MATH.md section 2): the score of the noised uniform (or given) base law on a
//! manifold, s_base(x, t) = (alpha E[m | x] - x) / sigma^2.
//!
//! One type per space, each implementing [`BaseScore`] per point (f64 reference) and batched;
//! [`ScheduledBase`] turns any of them into a [`Score`] through a [`Schedule`].

pub mod discrete;
pub mod gaussian;
pub mod monte_carlo;
pub mod so3;
pub mod sphere;
pub mod torus;

use crate::{BaseScore, Schedule, Score};
use tch::Tensor;

/// A base score evaluated along a noise schedule: score(x, t) = base_score(x, alpha_t, sigma_t).
#[derive(Debug, Clone)]
pub struct ScheduledBase<B> {
    /// The base score.
    pub base: B,
    /// The schedule giving alpha_t and sigma_t.
    pub schedule: Schedule,
}

impl<B: BaseScore> Score for ScheduledBase<B> {
    /// `x: [B, ..ambient]`, `t: [B]` -> `[B, ..ambient]`, dtype and device of `x`.
    fn score(&self, x: &Tensor, t: &Tensor) -> Tensor {
        let alpha = self.schedule.alpha_t(t);
        let sigma = self.schedule.sigma_t(t);
        self.base.base_score_t(x, &alpha, &sigma)
    }
}
