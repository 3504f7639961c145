//! The neural control variate of NDSM: `2 a.z/ns + (|z|^2 - D)/ns^2` with a learned linear coefficient `a`
//! that depends on `X_n` only (through `mu_n` and `t_{n+1}`), so the term has zero mean for every value of
//! the network's parameters `phi` (module doc of [`crate::ndsm`]).
//!
//! The network is an [`NdsmScoreNet`] `c_phi(x, t)` (score-scaled, output layer zero at initialisation).
//! [`NeuralCv::fit_step`] takes one AdamW step ([`crate::AdamW`] on a [`crate::FlatParams`] buffer) on
//! `mean_b (loss_b)^2`, the second moment of the controlled, weighted loss with the score network held
//! fixed; since the controlled loss has the same mean for every `phi`, this minimises its variance.
//!
//! The controlled loss's gradient in the *score* parameters `theta` sees only what the control variate
//! depends on: in the [`NeuralCvForm::Standalone`] form `c_phi` does not depend on `theta`, so the
//! gradient (and its variance) is that of the plain NDSM loss and only the loss estimator's variance drops;
//! the [`NeuralCvForm::OnExact`] form adds `c_phi` to the exact linear term `s_theta(mu_n)` and keeps its
//! gradient variance reduction.

use super::{ndsm_per_sample_loss, ControlVariate, NdsmScoreNet, NdsmSde, NdsmWeighting, ScoreFn, Transitions};
use crate::optim::clip_grad_norm;
use crate::{AdamW, FlatParams, MlpConfig, OptimConfig, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// Where the learned coefficient enters the linear term `a` of the control variate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NeuralCvForm {
    /// `a = c_phi(mu_n, t_{n+1})`: no evaluation of the score network at `mu_n`.
    Standalone,
    /// `a = s_theta(mu_n, t_{n+1}) + c_phi(mu_n, t_{n+1})`: the exact control variate plus a learned
    /// correction (equal to the exact one at initialisation).
    OnExact,
}

/// Hyper-parameters of [`NeuralCv`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NeuralCvConfig {
    /// The network `c_phi`.
    pub model: MlpConfig,
    /// Where `c_phi` enters.
    pub form: NeuralCvForm,
    /// AdamW of `phi`; the learning rate is constant at `optim.lr` (no warm-up, no decay), clipping at
    /// `optim.grad_clip`; `ema_decay` is unused.
    pub optim: OptimConfig,
    /// Seed of the initialisation of `phi`.
    pub seed: u64,
}

impl Default for NeuralCvConfig {
    /// Width 64, depth 2, standalone, lr 1e-3 without weight decay, clipping at 10, seed 0.
    fn default() -> Self {
        NeuralCvConfig {
            model: MlpConfig { width: 64, depth: 2, ..MlpConfig::default() },
            form: NeuralCvForm::Standalone,
            optim: OptimConfig { weight_decay: 0.0, warmup_steps: 0, grad_clip: Some(10.0), ..OptimConfig::default() },
            seed: 0,
        }
    }
}

/// A learned control variate for the NDSM loss (module doc).
#[derive(Debug)]
pub struct NeuralCv {
    config: NeuralCvConfig,
    net: NdsmScoreNet,
    flat: FlatParams,
    adam: AdamW,
}

impl NeuralCv {
    /// A fresh control variate for points of `dim` coordinates in `kind` on `device`. Errors name the
    /// invalid field.
    pub fn new(config: &NeuralCvConfig, dim: i64, kind: Kind, device: Device) -> Result<Self> {
        let optim = config.optim.check()?;
        let net = NdsmScoreNet::new(&config.model, dim, kind, device, config.seed)?;
        let flat = FlatParams::new(net.mlp().named_parameters());
        let adam = AdamW::new(&optim, flat.buffer());
        Ok(NeuralCv { config: *config, net, flat, adam })
    }

    /// The configuration.
    pub fn config(&self) -> &NeuralCvConfig {
        &self.config
    }

    /// The network `c_phi`.
    pub fn net(&self) -> &NdsmScoreNet {
        &self.net
    }

    /// AdamW steps taken.
    pub fn n_steps(&self) -> u64 {
        self.adam.n_steps()
    }

    /// The flat parameter buffer of `c_phi` and its AdamW moments `(params, m, v)` (shallow handles, for
    /// checkpoints).
    pub fn flat_state(&self) -> (&FlatParams, &Tensor, &Tensor) {
        let (m, v) = self.adam.moments();
        (&self.flat, m, v)
    }

    /// Replaces the parameters of `c_phi` and its AdamW state (moments `m`, `v` after `n_steps` steps) with
    /// flat tensors of the buffer's size (as [`FlatParams::gather`] returns them), for resuming a run.
    pub fn restore(&mut self, params: &Tensor, m: Tensor, v: Tensor, n_steps: u64) {
        tch::no_grad(|| self.flat.buffer_mut().copy_(params));
        self.adam = AdamW::from_state(&self.config.optim, m, v, n_steps);
    }

    /// The linear coefficient `a` of every transition, `[B, D]` (module doc); `score` is evaluated at
    /// `mu_n` only in the [`NeuralCvForm::OnExact`] form.
    pub fn linear_term(&self, score: &ScoreFn, sde: &NdsmSde, tr: &Transitions) -> Tensor {
        let c = self.net.score(sde, &tr.mu, &tr.t_next);
        match self.config.form {
            NeuralCvForm::Standalone => c,
            NeuralCvForm::OnExact => score(&tr.mu, &tr.t_next) + c,
        }
    }

    /// The control variate of every transition, unweighted, `[B]`: `2 a.z/ns + (|z|^2 - D)/ns^2`.
    pub fn control_variate(&self, score: &ScoreFn, sde: &NdsmSde, tr: &Transitions) -> Tensor {
        let ns = tr.noise_scale.unsqueeze(1);
        let d = tr.z.size()[1] as f64;
        let kind = tr.z.kind();
        (self.linear_term(score, sde, tr) * &tr.z / &ns).sum_dim_intlist(-1, false, kind) * 2.0
            + (tr.z.square().sum_dim_intlist(-1, false, kind) - d) / tr.noise_scale.square()
    }

    /// One AdamW step of `phi` on `mean_b loss_b^2` (module doc), with `score` held fixed (its outputs are
    /// detached). Returns the objective before the step.
    pub fn fit_step(&mut self, score: &ScoreFn, sde: &NdsmSde, tr: &Transitions, weighting: NdsmWeighting) -> f64 {
        let fixed = |x: &Tensor, t: &Tensor| score(x, t).detach();
        let loss = ndsm_per_sample_loss(&fixed, sde, tr, weighting, ControlVariate::Neural(self));
        let objective = loss.square().mean(loss.kind());
        let value = objective.double_value(&[]);
        let grad = self.flat.backward(&objective);
        clip_grad_norm(grad, self.config.optim.grad_clip);
        let grad = self.flat.grad().shallow_clone();
        self.adam.step(self.flat.buffer_mut(), &grad, self.config.optim.lr);
        value
    }
}
