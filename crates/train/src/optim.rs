//! Optimisation on flat parameter buffers: AdamW, the learning-rate schedule, gradient clipping and the
//! exponential moving average (EMA) of the weights.
//!
//! Every function here works on one contiguous 1-d tensor holding *all* parameters (see
//! [`crate::FlatParams`]): an AdamW step is a handful of elementwise kernels whatever the number of
//! parameter tensors, instead of a few small kernels per tensor. Everything runs under `no_grad`.
//!
//! On the CPU the buffers are processed in chunks of [`SERIAL_CHUNK`] elements, below libtorch's
//! parallelisation threshold (32768), so that every kernel runs on the calling thread: these kernels are
//! memory-bound on a few hundred kilobytes, gain nothing from a second thread, and an OpenMP barrier on a
//! busy machine costs up to a scheduler time slice (measured: ten in-place ops on 150 000 floats take
//! 0.4 ms whole or chunked on an idle core pair, but a median 4.4 ms whole against 0.6 ms chunked when
//! the cores are shared). Other devices process each buffer whole.

use crate::{Result, TrainError};
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

/// Chunk length of the serial elementwise kernels on the CPU (module doc).
pub const SERIAL_CHUNK: i64 = 32_000;

/// Views of a 1-d tensor in chunks of [`SERIAL_CHUNK`] on the CPU, the whole tensor elsewhere.
pub(crate) fn chunks(t: &Tensor) -> Vec<Tensor> {
    if t.device() == Device::Cpu && t.numel() as i64 > SERIAL_CHUNK {
        t.split(SERIAL_CHUNK, 0)
    } else {
        vec![t.shallow_clone()]
    }
}

/// Hyper-parameters of AdamW, its learning-rate schedule, gradient clipping and the EMA.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    /// Peak learning rate, reached at the end of the warm-up (finite, > 0).
    pub lr: f64,
    /// Decay of the first moment (in [0, 1)).
    pub beta1: f64,
    /// Decay of the second moment (in [0, 1)).
    pub beta2: f64,
    /// Added to the root of the second moment (finite, > 0).
    pub eps: f64,
    /// Decoupled weight decay per unit learning rate, applied to every parameter (finite, >= 0).
    pub weight_decay: f64,
    /// Steps of linear warm-up (>= 0; 0 starts at the peak).
    pub warmup_steps: u64,
    /// Floor of the cosine decay as a fraction of the peak (in [0, 1]).
    pub min_lr_frac: f64,
    /// Maximal global L2 norm of the gradient (finite, > 0); `None` disables clipping.
    pub grad_clip: Option<f64>,
    /// Decay of the EMA of the weights (in [0, 1); 0 makes the EMA a copy of the weights).
    pub ema_decay: f64,
}

impl Default for OptimConfig {
    /// lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight decay 1e-4, 100 warm-up steps, floor 0.01, clipping
    /// at 1, EMA decay 0.999.
    fn default() -> Self {
        OptimConfig {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-4,
            warmup_steps: 100,
            min_lr_frac: 0.01,
            grad_clip: Some(1.0),
            ema_decay: 0.999,
        }
    }
}

impl OptimConfig {
    /// Validates the fields; errors name the field (as `optim.<field>`) and the allowed range.
    pub fn check(self) -> Result<Self> {
        let unit_open = |name: &str, v: f64| {
            if (0.0..1.0).contains(&v) {
                Ok(())
            } else {
                Err(TrainError::invalid(name, v, "a number in [0, 1)"))
            }
        };
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(TrainError::invalid("optim.lr", self.lr, "a finite number > 0"));
        }
        unit_open("optim.beta1", self.beta1)?;
        unit_open("optim.beta2", self.beta2)?;
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(TrainError::invalid("optim.eps", self.eps, "a finite number > 0"));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(TrainError::invalid("optim.weight_decay", self.weight_decay, "a finite number >= 0"));
        }
        if !(0.0..=1.0).contains(&self.min_lr_frac) {
            return Err(TrainError::invalid("optim.min_lr_frac", self.min_lr_frac, "a number in [0, 1]"));
        }
        if let Some(c) = self.grad_clip {
            if !(c.is_finite() && c > 0.0) {
                return Err(TrainError::invalid("optim.grad_clip", c, "a finite number > 0 (or none)"));
            }
        }
        unit_open("optim.ema_decay", self.ema_decay)?;
        Ok(self)
    }

    /// The learning rate of the step with 0-based index `step` in a run of `total_steps` steps:
    ///
    /// - warm-up, `step < warmup_steps`: `lr * (step + 1) / warmup_steps`;
    /// - then cosine decay from `lr` to `lr * min_lr_frac`: with `p = (step - warmup_steps) /
    ///   (total_steps - warmup_steps)`, `lr * (f + (1 - f) (1 + cos(pi p)) / 2)`, `f = min_lr_frac`, `p`
    ///   clamped to [0, 1] (steps past the end stay at the floor).
    pub fn lr_at(&self, step: u64, total_steps: u64) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = total_steps.saturating_sub(self.warmup_steps).max(1);
        let p = ((step - self.warmup_steps) as f64 / span as f64).clamp(0.0, 1.0);
        let f = self.min_lr_frac;
        self.lr * (f + (1.0 - f) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos()))
    }
}

/// AdamW (Loshchilov and Hutter) with decoupled weight decay, on one flat parameter buffer.
///
/// One step with gradient `g`, learning rate `lr` and step count `n` (1-based):
/// `p <- p (1 - lr wd)`, `m <- b1 m + (1 - b1) g`, `v <- b2 v + (1 - b2) g^2`,
/// `p <- p - lr (m / (1 - b1^n)) / (sqrt(v / (1 - b2^n)) + eps)` (PyTorch's `AdamW`).
#[derive(Debug)]
pub struct AdamW {
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    m: Tensor,
    v: Tensor,
    n_steps: u64,
}

impl AdamW {
    /// Zero moments shaped like `params` (`[P]`, any float dtype and device; the moments take both).
    pub fn new(config: &OptimConfig, params: &Tensor) -> Self {
        let m = params.detach().zeros_like();
        let v = params.detach().zeros_like();
        Self::from_state(config, m, v, 0)
    }

    /// Resumes from moments `m`, `v` (`[P]`, the parameters' dtype and device) after `n_steps` steps.
    pub fn from_state(config: &OptimConfig, m: Tensor, v: Tensor, n_steps: u64) -> Self {
        AdamW {
            beta1: config.beta1,
            beta2: config.beta2,
            eps: config.eps,
            weight_decay: config.weight_decay,
            m,
            v,
            n_steps,
        }
    }

    /// The first and second moments, `[P]` each.
    pub fn moments(&self) -> (&Tensor, &Tensor) {
        (&self.m, &self.v)
    }

    /// Steps taken so far.
    pub fn n_steps(&self) -> u64 {
        self.n_steps
    }

    /// One AdamW step, in place: `params` and `grad` are `[P]` of the moments' dtype and device.
    pub fn step(&mut self, params: &mut Tensor, grad: &Tensor, lr: f64) {
        assert_eq!(params.size(), self.m.size(), "AdamW::step: argument `params` must have the moments' shape");
        assert_eq!(grad.size(), self.m.size(), "AdamW::step: argument `grad` must have the moments' shape");
        let _guard = tch::no_grad_guard();
        self.n_steps += 1;
        let n = self.n_steps as i32;
        let bc1 = 1.0 - self.beta1.powi(n);
        let bc2 = 1.0 - self.beta2.powi(n);
        // p += m / d with d = (sqrt(v) / sqrt(bc2) + eps) * (-bc1 / lr): one fused addcdiv.
        let scale = -bc1 / lr;
        let (ps, gs, ms, vs) = (chunks(params), chunks(grad), chunks(&self.m), chunks(&self.v));
        for (((mut p, g), mut m), mut v) in ps.into_iter().zip(gs).zip(ms).zip(vs) {
            let _ = m.lerp_(&g, 1.0 - self.beta1);
            let _ = v.lerp_(&g.square(), 1.0 - self.beta2);
            if self.weight_decay > 0.0 {
                let _ = p.g_mul_scalar_(1.0 - lr * self.weight_decay);
            }
            if lr > 0.0 {
                let mut d = v.sqrt();
                let _ = d.g_mul_scalar_(scale / bc2.sqrt());
                let _ = d.g_add_scalar_(self.eps * scale);
                let _ = p.addcdiv_(&m, &d);
            }
        }
    }
}

/// Scales `grad` (any shape) in place so that its global L2 norm is at most `max_norm` (`None`: no
/// clipping) and returns the norm *before* clipping. A norm above `max_norm` is multiplied by
/// `max_norm / norm`; a non-finite norm is returned unchanged and the gradient left as is.
pub fn clip_grad_norm(grad: &mut Tensor, max_norm: Option<f64>) -> f64 {
    let _guard = tch::no_grad_guard();
    let flat = grad.reshape([-1]);
    let parts = chunks(&flat);
    let norm = if parts.len() == 1 {
        flat.norm().double_value(&[])
    } else {
        Tensor::stack(&parts.iter().map(|c| c.norm()).collect::<Vec<_>>(), 0).norm().double_value(&[])
    };
    if let Some(max) = max_norm {
        if norm.is_finite() && norm > max {
            for mut c in parts {
                let _ = c.g_mul_scalar_(max / norm);
            }
        }
    }
    norm
}

/// Exponential moving average of the weights, `ema <- decay ema + (1 - decay) params`, on a flat buffer.
#[derive(Debug)]
pub struct Ema {
    decay: f64,
    shadow: Tensor,
}

impl Ema {
    /// Starts the average at a copy of `params` (`[P]`, any float dtype and device).
    pub fn new(params: &Tensor, decay: f64) -> Self {
        Self::from_state(params.detach().copy(), decay)
    }

    /// Resumes from an averaged buffer.
    pub fn from_state(shadow: Tensor, decay: f64) -> Self {
        Ema { decay, shadow }
    }

    /// One update from the current `params` (`[P]`, the average's dtype and device).
    pub fn update(&mut self, params: &Tensor) {
        assert_eq!(params.size(), self.shadow.size(), "Ema::update: argument `params` must have the average's shape");
        let _guard = tch::no_grad_guard();
        for (mut s, p) in chunks(&self.shadow).into_iter().zip(chunks(params)) {
            let _ = s.lerp_(&p, 1.0 - self.decay);
        }
    }

    /// The averaged buffer, `[P]`.
    pub fn shadow(&self) -> &Tensor {
        &self.shadow
    }

    /// The decay.
    pub fn decay(&self) -> f64 {
        self.decay
    }
}
