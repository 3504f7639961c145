//! The variance of the loss estimators and of their gradients at fixed network parameters: DSM on the
//! matching linear process, NDSM without control variates, with the exact ones, and with a neural one.
//!
//! For `r = 1..R` a batch is drawn ([`NdsmSde::sample_transitions`]; the DSM batch reuses its data rows,
//! takes `t = t_{n+1}` and draws its own `eps`), and every estimator is evaluated on it (common random
//! numbers: the NDSM variants see the same transitions). For each estimator:
//!
//! - `loss_var`: the sample variance (divisor R - 1) of the R batch-mean losses;
//! - `grad_var`: `1/(R-1) sum_r |g_r - mean_r g_r|^2`, `g_r` the gradient of the batch-mean loss in all
//!   parameters of the score network (the trace of the gradient's covariance).
//!
//! DSM and NDSM train towards different targets (the scores of different forward processes), so their
//! means differ; the NDSM variants share the same mean (the control variates have zero mean).

use super::{
    dsm_per_sample_loss, ndsm_per_sample_loss, randn, ControlVariate, NdsmScoreNet, NdsmSde, NdsmWeighting, NeuralCv,
};
use crate::{Result, TrainError};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use scores::gmm::GaussianMixture;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// An estimator of a score-matching loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Estimator {
    /// DSM on the matching linear (Ornstein-Uhlenbeck) process.
    Dsm,
    /// NDSM without control variates.
    Ndsm,
    /// NDSM with the exact control variates.
    NdsmExact,
    /// NDSM with a neural control variate.
    NdsmNeural,
}

/// Settings of [`estimator_variance`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VarianceConfig {
    /// Rows per batch (>= 1).
    pub batch_size: i64,
    /// Batches R (>= 2).
    pub n_batches: usize,
    /// The loss weight.
    pub weighting: NdsmWeighting,
    /// Seed of the batches (ChaCha8).
    pub seed: u64,
}

/// The measured statistics of one estimator (module doc).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EstimatorVariance {
    /// The estimator.
    pub estimator: Estimator,
    /// Mean over the R batches of the batch-mean loss.
    pub loss_mean: f64,
    /// Sample variance of the batch-mean loss.
    pub loss_var: f64,
    /// Trace of the sample covariance of the batch gradient.
    pub grad_var: f64,
    /// Norm of the mean gradient.
    pub grad_mean_norm: f64,
}

impl EstimatorVariance {
    /// `(loss_var / base.loss_var, grad_var / base.grad_var)`.
    pub fn ratios_to(&self, base: &EstimatorVariance) -> (f64, f64) {
        (self.loss_var / base.loss_var, self.grad_var / base.grad_var)
    }
}

struct Accumulator {
    estimator: Estimator,
    losses: Vec<f64>,
    grad_sum: Option<Tensor>,
    grad_sq_sum: f64,
}

impl Accumulator {
    fn push(&mut self, net: &NdsmScoreNet, loss: &Tensor) {
        let params = net.parameters();
        let grads = Tensor::run_backward(&[loss], &params, false, false);
        let g = Tensor::cat(&grads.iter().map(|g| g.reshape([-1]).to_kind(Kind::Double)).collect::<Vec<_>>(), 0);
        self.grad_sq_sum += g.square().sum(Kind::Double).double_value(&[]);
        self.grad_sum = Some(match self.grad_sum.take() {
            Some(s) => s + &g,
            None => g,
        });
        self.losses.push(loss.double_value(&[]));
    }

    fn finish(self) -> EstimatorVariance {
        let r = self.losses.len() as f64;
        let mean = self.losses.iter().sum::<f64>() / r;
        let loss_var = self.losses.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / (r - 1.0);
        let g = self.grad_sum.expect("at least two batches");
        let mean_sq = g.square().sum(Kind::Double).double_value(&[]) / (r * r);
        let grad_var = ((self.grad_sq_sum - r * mean_sq) / (r - 1.0)).max(0.0);
        EstimatorVariance {
            estimator: self.estimator,
            loss_mean: mean,
            loss_var,
            grad_var,
            grad_mean_norm: mean_sq.sqrt(),
        }
    }
}

/// Measures every estimator (module doc) for the score network `net` at its current parameters, on `data:
/// [N, D]` (the network's dtype and device) with the reference law `pi`. Returns DSM, NDSM, NDSM with the
/// exact control variates and, when `neural` is given, NDSM with that neural control variate, in this
/// order. The parameters are not changed.
pub fn estimator_variance(
    net: &NdsmScoreNet,
    sde: &NdsmSde,
    pi: &GaussianMixture,
    data: &Tensor,
    neural: Option<&NeuralCv>,
    config: &VarianceConfig,
) -> Result<Vec<EstimatorVariance>> {
    if config.batch_size < 1 {
        return Err(TrainError::invalid("variance.batch_size", config.batch_size, ">= 1"));
    }
    if config.n_batches < 2 {
        return Err(TrainError::invalid("variance.n_batches", config.n_batches, ">= 2"));
    }
    let mut estimators = vec![Estimator::Dsm, Estimator::Ndsm, Estimator::NdsmExact];
    if neural.is_some() {
        estimators.push(Estimator::NdsmNeural);
    }
    let mut acc: Vec<Accumulator> = estimators
        .iter()
        .map(|&estimator| Accumulator { estimator, losses: Vec::new(), grad_sum: None, grad_sq_sum: 0.0 })
        .collect();
    let score = |x: &Tensor, t: &Tensor| net.score(sde, x, t);
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let w = config.weighting;
    for _ in 0..config.n_batches {
        let tr = sde.sample_transitions(pi, data, config.batch_size, &mut rng);
        let (b, d) = (tr.z.size()[0], tr.z.size()[1]);
        let eps = randn(&mut rng, b, d, tr.z.kind(), tr.z.device());
        for a in acc.iter_mut() {
            let per_sample = match a.estimator {
                Estimator::Dsm => dsm_per_sample_loss(&score, sde, &tr.x0, &tr.t_next, &eps, w),
                Estimator::Ndsm => ndsm_per_sample_loss(&score, sde, &tr, w, ControlVariate::None),
                Estimator::NdsmExact => ndsm_per_sample_loss(&score, sde, &tr, w, ControlVariate::Exact),
                Estimator::NdsmNeural => {
                    let ncv = neural.expect("listed only when given");
                    ndsm_per_sample_loss(&score, sde, &tr, w, ControlVariate::Neural(ncv))
                }
            };
            a.push(net, &per_sample.mean(per_sample.kind()));
        }
    }
    Ok(acc.into_iter().map(Accumulator::finish).collect())
}
