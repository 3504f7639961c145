//! The residual model of MAD: s(x, t) = s_base(x, t) + delta(x, t), with the network giving
//! `sigma_t * delta` (DSM is the same without a base).

use crate::ScoreMlp;
use scores::{BaseScore, Schedule, Score};
use std::sync::{Arc, Mutex};
use tch::Tensor;

/// An object-safe view of a [`BaseScore`]: only its batched score, and a name to tell bases apart in
/// checkpoints. Every `BaseScore` implements it.
pub trait TensorBase: Send + Sync {
    /// The batched base score: `x: [B, ..ambient]`, `alpha, sigma: [B]` (same dtype and device as `x`)
    /// -> `[B, ..ambient]`, same dtype and device.
    fn base_score_tensor(&self, x: &Tensor, alpha: &Tensor, sigma: &Tensor) -> Tensor;

    /// A name identifying the base (the Rust type name by default), recorded in checkpoints.
    fn base_name(&self) -> String;
}

impl std::fmt::Debug for dyn TensorBase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.base_name())
    }
}

impl<B: BaseScore> TensorBase for B {
    fn base_score_tensor(&self, x: &Tensor, alpha: &Tensor, sigma: &Tensor) -> Tensor {
        self.base_score_t(x, alpha, sigma)
    }

    fn base_name(&self) -> String {
        std::any::type_name::<B>().to_string()
    }
}

/// The learned score `s(x, t) = s_base(x, t) + net(x, t) / sigma_t` (MAD), or `net(x, t) / sigma_t` without a
/// base (DSM), as a [`Score`] for sampling.
///
/// The network sits behind a mutex so that the score is `Sync` (tensors are only `Send`); evaluations of
/// one `ResidualScore` from several threads run one at a time.
pub struct ResidualScore {
    net: Mutex<ScoreMlp>,
    base: Option<Arc<dyn TensorBase>>,
    schedule: Schedule,
}

impl std::fmt::Debug for ResidualScore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResidualScore")
            .field("base", &self.base.as_ref().map(|b| b.base_name()))
            .field("schedule", &self.schedule)
            .finish_non_exhaustive()
    }
}

impl ResidualScore {
    /// Wraps a network, an optional base score and the schedule that maps t to (alpha_t, sigma_t).
    pub fn new(net: ScoreMlp, base: Option<Arc<dyn TensorBase>>, schedule: Schedule) -> Self {
        ResidualScore { net: Mutex::new(net), base, schedule }
    }

    /// The schedule.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// The base score, if any.
    pub fn base(&self) -> Option<&Arc<dyn TensorBase>> {
        self.base.as_ref()
    }

    /// Gives the network back.
    pub fn into_net(self) -> ScoreMlp {
        self.net.into_inner().unwrap_or_else(|e| e.into_inner())
    }

    /// The residual `delta(x, t) = net(x, t) / sigma_t`: `x: [B, ..ambient]`, `t: [B]` (same float dtype and
    /// device) -> `[B, ..ambient]` in the dtype and on the device of `x`. The network runs in its own dtype
    /// and on its own device (inputs are converted when they differ); differentiable in `x`.
    pub fn residual(&self, x: &Tensor, t: &Tensor) -> Tensor {
        let alpha = self.schedule.alpha_t(t);
        let sigma = self.schedule.sigma_t(t);
        self.residual_at(x, &alpha, &sigma)
    }

    fn residual_at(&self, x: &Tensor, alpha: &Tensor, sigma: &Tensor) -> Tensor {
        let net = self.net.lock().unwrap_or_else(|e| e.into_inner());
        let (kind, device) = (net.kind(), net.device());
        let to_net = |t: &Tensor| t.to_kind(kind).to_device(device);
        let sigma_n = to_net(sigma);
        let out = net.forward(&to_net(x), &to_net(alpha), &sigma_n);
        let shape: Vec<i64> = std::iter::once(-1).chain(std::iter::repeat_n(1, x.dim() - 1)).collect();
        (out / sigma_n.reshape(shape)).to_kind(x.kind()).to_device(x.device())
    }
}

impl Score for ResidualScore {
    /// `x: [B, ..ambient]`, `t: [B]` (same float dtype and device) -> `[B, ..ambient]` in the dtype and on
    /// the device of `x`; differentiable in `x`. The base score is evaluated in the dtype of `x`, the network
    /// in its own ([`ResidualScore::residual`]).
    fn score(&self, x: &Tensor, t: &Tensor) -> Tensor {
        let alpha = self.schedule.alpha_t(t);
        let sigma = self.schedule.sigma_t(t);
        let delta = self.residual_at(x, &alpha, &sigma);
        match &self.base {
            Some(base) => base.base_score_tensor(x, &alpha, &sigma) + delta,
            None => delta,
        }
    }
}
