//! The denoising losses (MATH.md section 2, "Loss"): MAD and plain DSM, for any [`Schedule`].
//!
//! For data `x_0`, a time `t ~ U[t_eps, 1]` and noise `eps ~ N(0, I)`, `x_t = alpha_t x_0 + sigma_t eps` and
//!
//! ```text
//! L = E lambda(t) | sigma_t delta(x_t, t) - ((alpha_t x_0 - x_t) / sigma_t - sigma_t s_base(x_t, t)) |^2
//! ```
//!
//! where `sigma_t delta` is the network output ([`crate::ScoreMlp`]) and `(alpha_t x_0 - x_t) / sigma_t = -eps`
//! exactly (the code uses `-eps`). DSM is the same with `s_base = 0`. The squared norm sums over every
//! ambient coordinate; the loss is the mean over the batch.
//!
//! Weightings ([`Weighting`]): in this noise-scaled form `lambda = 1` is the usual `sigma_t^2` weighting of
//! the plain score loss `|s - target|^2` (noise prediction); the likelihood weighting `g(t)^2` of the plain
//! loss is `lambda = g(t)^2 / sigma_t^2` here (constant `2 ln(sigma_max / sigma_min)` for VE, so VE is only
//! rescaled; for VP it grows like `1/t` near 0 and no importance sampling of `t` is done).

use crate::{ScoreMlp, TensorBase};
use scores::Schedule;
use serde::{Deserialize, Serialize};
use tch::{Reduction, Tensor};

/// Which loss to train: MAD learns the residual to an analytic base score, DSM the whole score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// Plain denoising score matching (`s_base = 0`).
    Dsm,
    /// Manifold-aware denoising score matching (`s = s_base + delta`); needs a base score.
    Mad,
}

/// The time weighting lambda(t) of the noise-scaled loss (module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Weighting {
    /// `lambda = 1`: the `sigma_t^2` weighting of the plain score loss.
    SigmaSquared,
    /// `lambda = g(t)^2 / sigma_t^2`: the likelihood weighting `g(t)^2` of the plain score loss.
    Likelihood,
}

/// One batch of the loss's randomness: data, times and noise.
#[derive(Debug)]
pub struct LossBatch {
    /// Clean points `x_0: [B, ..ambient]`.
    pub x0: Tensor,
    /// Times `t: [B]` in `[t_eps, 1]`.
    pub t: Tensor,
    /// Standard normal noise `eps: [B, ..ambient]`.
    pub eps: Tensor,
}

/// The per-sample loss `lambda(t_i) | net(x_t,i) - target_i |^2`, `[B]` (module doc).
///
/// `batch` tensors and the network share one float dtype and device; the result has that dtype and device
/// and is differentiable in the network's parameters. `base` is `None` for DSM.
/// Panics on a shape mismatch (a bug in the caller).
pub fn per_sample_loss(
    net: &ScoreMlp,
    base: Option<&dyn TensorBase>,
    schedule: &Schedule,
    weighting: Weighting,
    batch: &LossBatch,
) -> Tensor {
    let (pred, target, _) = prediction_and_target(net, base, schedule, batch);
    let b = pred.size()[0];
    let per_sample = (pred - target).square().reshape([b, -1]).sum_dim_intlist(1, false, None);
    match weighting {
        Weighting::SigmaSquared => per_sample,
        Weighting::Likelihood => per_sample * schedule.g2_t(&batch.t) / schedule.sigma_t(&batch.t).square(),
    }
}

/// The mean loss over the batch, a differentiable scalar tensor (shape `[]`) in the network's dtype and
/// on its device; arguments as for [`per_sample_loss`]. With a fixed `batch` this is a deterministic
/// function of the parameters (what tests evaluate).
pub fn residual_loss(
    net: &ScoreMlp,
    base: Option<&dyn TensorBase>,
    schedule: &Schedule,
    weighting: Weighting,
    batch: &LossBatch,
) -> Tensor {
    match weighting {
        Weighting::SigmaSquared => {
            // One fused op: mean over all B * D entries, times D = mean over the batch of the row sums.
            let (pred, target, dim) = prediction_and_target(net, base, schedule, batch);
            pred.mse_loss(&target, Reduction::Mean) * dim as f64
        }
        Weighting::Likelihood => per_sample_loss(net, base, schedule, weighting, batch).mean(None),
    }
}

/// `(net(x_t), target, D)` with `D` the number of ambient coordinates.
fn prediction_and_target(
    net: &ScoreMlp,
    base: Option<&dyn TensorBase>,
    schedule: &Schedule,
    batch: &LossBatch,
) -> (Tensor, Tensor, i64) {
    let n = noised(base, schedule, batch);
    let pred = net.forward(&n.x_t, &n.alpha, &n.sigma);
    let dim = n.x_t.size()[1..].iter().product();
    (pred, n.target, dim)
}

/// The noised points and the regression target of one batch.
pub(crate) struct Noised {
    /// `x_t = alpha_t x_0 + sigma_t eps`, `[B, ..ambient]`.
    pub x_t: Tensor,
    /// `alpha_t`, `[B]`.
    pub alpha: Tensor,
    /// `sigma_t`, `[B]`.
    pub sigma: Tensor,
    /// `-eps - sigma_t s_base(x_t)`, `[B, ..ambient]`.
    pub target: Tensor,
}

pub(crate) fn noised(base: Option<&dyn TensorBase>, schedule: &Schedule, batch: &LossBatch) -> Noised {
    let size = batch.x0.size();
    assert_eq!(batch.eps.size(), size, "residual_loss: `eps` must have the shape of `x0`");
    let b = size[0];
    assert_eq!(batch.t.size(), [b], "residual_loss: `t` must have shape [B] = [{b}]");
    let bshape: Vec<i64> = std::iter::once(b).chain(std::iter::repeat_n(1, size.len() - 1)).collect();
    let alpha = schedule.alpha_t(&batch.t);
    let sigma = schedule.sigma_t(&batch.t);
    let (a, s) = (alpha.reshape(&bshape[..]), sigma.reshape(&bshape[..]));
    let x_t = match schedule {
        Schedule::Ve { .. } => &batch.x0 + &batch.eps * &s,
        Schedule::Vp { .. } => &batch.x0 * &a + &batch.eps * &s,
    };
    let target = match base {
        None => -&batch.eps,
        Some(base) => -&batch.eps - base.base_score_tensor(&x_t, &alpha, &sigma) * &s,
    };
    Noised { x_t, alpha, sigma, target }
}
