//! The models: M-flow, M_e-flow, PIE and the ambient flow, with encoding, decoding, projection,
//! sampling and densities.
//!
//! # The manifold density and its Jacobian
//!
//! For M-flow, M_e-flow and PIE, with manifold coordinates `v in R^n`, decoder `g(v) = f(v, 0)` and
//! inner flow `u = h^{-1}(v)`:
//!
//! `log p(x) = log N(u; 0, I_n) + log|det du/dv| - 1/2 log det(J^T J)`, `J = dg/dv` (`d x n`),
//!
//! evaluated at the projection of `x` (`v` = the encoding of `x`). `J` is built by forward-mode
//! differentiation: the `n` basis tangents `e_1..e_n` (padded with zeros to `R^d`) are pushed through every
//! layer of `f` with the layer's own derivative formulas ([`crate::Transform::forward_jvp`], written out in
//! [`crate::dual`] down to the splines and the conditioner networks). That is `n` Jacobian-vector products
//! in *one* forward pass, with no backward pass, and it stays differentiable with respect to the weights
//! (the simultaneous schedule trains through it). The per-element autograd reference
//! ([`ManifoldFlow::decoder_jacobian_autograd`]) needs one backward pass per output coordinate, `d` of them;
//! benches/jacobian.rs measures the ratio.

use crate::config::{ModelConfig, ModelKind};
use crate::coupling::RqCoupling;
use crate::linear::{ActNorm, LuLinear, Permutation};
use crate::nets::{standard_normal, ResidualNet};
use crate::transform::{Flow, Transform};
use crate::validate::check_points;
use crate::{config::FlowConfig, config::Mixing, MflowError, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::f64::consts::PI;
use tch::{nn, Device, Kind, Tensor};

/// Builds `cfg.layers` times (mixing, optional ActNorm, coupling) on `R^dim` under `p`.
pub fn build_flow(p: &nn::Path, dim: i64, cfg: &FlowConfig, rng: &mut ChaCha8Rng) -> Flow {
    let mut flow = Flow::new(dim);
    for l in 0..cfg.layers {
        let lp = p / format!("layer{l}");
        match cfg.mixing {
            Mixing::Permutation => flow.push(Box::new(Permutation::random(&(&lp / "perm"), dim, rng))),
            Mixing::Lu => flow.push(Box::new(LuLinear::new(&(&lp / "lu"), dim))),
        }
        if cfg.actnorm {
            flow.push(Box::new(ActNorm::new(&(&lp / "actnorm"), dim)));
        }
        let coupling = RqCoupling::new(&(&lp / "coupling"), dim, l, cfg.hidden, cfg.blocks, cfg.spline, rng);
        flow.push(Box::new(coupling));
    }
    flow
}

/// `log N(z; 0, sigma^2 I)` per row of `z` (`[B, k]`).
pub fn log_normal(z: &Tensor, sigma: f64) -> Tensor {
    let k = z.size()[1] as f64;
    z.square().sum_dim_intlist(-1, false, z.kind()) * (-0.5 / (sigma * sigma))
        - k * (sigma.ln() + 0.5 * (2.0 * PI).ln())
}

/// A model of the M-flow family ([`ModelKind`]) with its weights.
///
/// The weights live in two var stores: the *manifold* store (outer flow and encoder) and the *density*
/// store (inner flow), which the training schedules update separately. Shapes: data `[B, d]`, manifold
/// coordinates `[B, n]`, per-row outputs `[B]`, all in the model's precision on its device; inputs of
/// another floating dtype are converted.
#[derive(Debug)]
pub struct ManifoldFlow {
    config: ModelConfig,
    pub(crate) manifold_vs: nn::VarStore,
    pub(crate) density_vs: nn::VarStore,
    outer: Flow,
    inner: Option<Flow>,
    encoder: Option<ResidualNet>,
}

impl ManifoldFlow {
    /// A new model after [`ModelConfig::check`]; weights (and random permutations) drawn from `seed`.
    pub fn new(config: &ModelConfig, seed: u64, device: Device) -> Result<ManifoldFlow> {
        config.check()?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut manifold_vs = nn::VarStore::new(device);
        let mut density_vs = nn::VarStore::new(device);
        manifold_vs.set_kind(config.precision.kind());
        density_vs.set_kind(config.precision.kind());
        let (d, n) = (config.ambient_dim, config.manifold_dim);
        let outer = build_flow(&(manifold_vs.root() / "outer"), d, &config.outer, &mut rng);
        let inner = (config.kind != ModelKind::Af)
            .then(|| build_flow(&(density_vs.root() / "inner"), n, &config.inner, &mut rng));
        let encoder = (config.kind == ModelKind::MeFlow).then(|| {
            let e = &config.encoder;
            ResidualNet::new(&(manifold_vs.root() / "encoder"), d, e.hidden, n, e.blocks, 1.0, &mut rng)
        });
        Ok(ManifoldFlow { config: *config, manifold_vs, density_vs, outer, inner, encoder })
    }

    /// The (checked) configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The model kind.
    pub fn kind(&self) -> ModelKind {
        self.config.kind
    }

    /// The tch kind of the parameters.
    pub fn tensor_kind(&self) -> Kind {
        self.config.precision.kind()
    }

    /// The device of the parameters.
    pub fn device(&self) -> Device {
        self.manifold_vs.device()
    }

    /// The outer flow `f` (`forward`: latent `R^d` to data).
    pub fn outer(&self) -> &Flow {
        &self.outer
    }

    /// The inner flow `h` (`forward`: base `R^n` to manifold coordinates); `None` for the AF.
    pub fn inner(&self) -> Option<&Flow> {
        self.inner.as_ref()
    }

    /// Number of trainable scalars.
    pub fn n_parameters(&self) -> i64 {
        let count = |vs: &nn::VarStore| vs.trainable_variables().iter().map(|t| t.numel() as i64).sum::<i64>();
        count(&self.manifold_vs) + count(&self.density_vs)
    }

    fn unsupported(&self, operation: &str) -> MflowError {
        MflowError::Unsupported { operation: operation.to_string(), kind: self.kind().name().to_string() }
    }

    fn inner_flow(&self, operation: &str) -> Result<&Flow> {
        self.inner.as_ref().ok_or_else(|| self.unsupported(operation))
    }

    /// Checks data `x` (`[B, d]`, finite; errors name `name`, the row and the column) and converts it to the
    /// model's dtype and device.
    pub fn check_data(&self, name: &str, x: &Tensor) -> Result<Tensor> {
        check_points(name, x, self.config.ambient_dim)?;
        Ok(x.to_device(self.device()).to_kind(self.tensor_kind()))
    }

    /// Manifold coordinates `v` (`[B, n]`) of data `x` (`[B, d]`, unchecked): the first `n` latent
    /// coordinates of `f^{-1}(x)`, or the encoder network for the M_e-flow.
    ///
    /// # Panics
    /// For the AF (no manifold), or on a shape mismatch.
    pub fn encode_unchecked(&self, x: &Tensor) -> Tensor {
        assert!(self.kind() != ModelKind::Af, "the ambient flow has no manifold coordinates");
        match &self.encoder {
            Some(e) => e.forward(x),
            None => self.outer.inverse(x).0.narrow(-1, 0, self.config.manifold_dim),
        }
    }

    /// Manifold coordinates of checked data `x` ([`ManifoldFlow::encode_unchecked`]).
    pub fn encode(&self, x: &Tensor) -> Result<Tensor> {
        if self.kind() == ModelKind::Af {
            return Err(self.unsupported("encode"));
        }
        let x = self.check_data("x", x)?;
        Ok(self.encode_unchecked(&x))
    }

    /// The latent point `(v, 0)` (`[B, d]`) of manifold coordinates `v` (`[B, n]`).
    fn embed(&self, v: &Tensor) -> Tensor {
        let (b, n, d) = (v.size()[0], self.config.manifold_dim, self.config.ambient_dim);
        Tensor::cat(&[v.shallow_clone(), Tensor::zeros([b, d - n], (v.kind(), v.device()))], -1)
    }

    /// The decoder `g(v) = f(v, 0)`: points on the learnt manifold (`[B, d]`) from coordinates `[B, n]`.
    pub fn decode(&self, v: &Tensor) -> Tensor {
        self.outer.forward(&self.embed(v)).0
    }

    /// The projection `g(e(x))` of data `x` (`[B, d]`) onto the learnt manifold; the identity for the AF
    /// (its "manifold" is all of `R^d`).
    pub fn project(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.check_data("x", x)?;
        Ok(self.project_unchecked(&x))
    }

    pub(crate) fn project_unchecked(&self, x: &Tensor) -> Tensor {
        match self.kind() {
            ModelKind::Af => x.shallow_clone(),
            _ => self.decode(&self.encode_unchecked(x)),
        }
    }

    /// Squared reconstruction error `|x - g(e(x))|^2` per row (`[B]`; zero for the AF).
    pub fn reconstruction_error(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.check_data("x", x)?;
        Ok(self.reconstruction_unchecked(&x))
    }

    pub(crate) fn reconstruction_unchecked(&self, x: &Tensor) -> Tensor {
        (x - self.project_unchecked(x)).square().sum_dim_intlist(-1, false, x.kind())
    }

    /// `n_samples` samples (`[n_samples, d]`) drawn with a [`ChaCha8Rng`] seeded by `seed`: on the learnt
    /// manifold (`g(h(u))`, `u ~ N(0, I_n)`) for M-flow, M_e-flow and PIE, `f(z)` with `z ~ N(0, I_d)` for
    /// the AF. Runs without gradients.
    pub fn sample(&self, n_samples: i64, seed: u64) -> Tensor {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        tch::no_grad(|| match &self.inner {
            None => {
                let z = standard_normal(&mut rng, n_samples, self.config.ambient_dim, self.tensor_kind());
                self.outer.forward(&z.to_device(self.device())).0
            }
            Some(h) => {
                let u = standard_normal(&mut rng, n_samples, self.config.manifold_dim, self.tensor_kind());
                self.decode(&h.forward(&u.to_device(self.device())).0)
            }
        })
    }

    /// `log N(h^{-1}(v)) + log|det dh^{-1}/dv|` per row: the density of manifold coordinates `v` (`[B, n]`).
    pub fn coordinate_log_prob(&self, v: &Tensor) -> Result<Tensor> {
        let (u, ld) = self.inner_flow("coordinate_log_prob")?.inverse(v);
        Ok(log_normal(&u, 1.0) + ld)
    }

    /// The decoder Jacobian `J = dg/dv` at `v` (`[B, n]`), `[B, d, n]` with `J[b, i, k] = dx_i/dv_k`, by `n`
    /// forward-mode Jacobian-vector products in one pass (module doc). Differentiable in the weights.
    pub fn decoder_jacobian(&self, v: &Tensor) -> Tensor {
        let (b, n, d) = (v.size()[0], self.config.manifold_dim, self.config.ambient_dim);
        let basis = Tensor::eye_m(n, d, (v.kind(), v.device()));
        let t = basis.unsqueeze(1).expand([n, b, d], false);
        let (_, _, jt) = self.outer.forward_jvp(&self.embed(v), &t);
        jt.permute([1, 2, 0])
    }

    /// The same Jacobian by reverse-mode autograd, one backward pass per output coordinate (`d` passes):
    /// the approach of the original M-flow code, kept as a reference for tests and the bench. Not
    /// differentiable in the weights.
    pub fn decoder_jacobian_autograd(&self, v: &Tensor) -> Tensor {
        let v = v.detach().set_requires_grad(true);
        let x = self.decode(&v);
        let rows: Vec<Tensor> = (0..self.config.ambient_dim)
            .map(|i| {
                let xi = x.select(1, i).sum(x.kind());
                Tensor::run_backward(&[&xi], &[&v], true, false).remove(0)
            })
            .collect();
        Tensor::stack(&rows, 1)
    }

    /// `log det(J^T J)` (`[B]`) of the decoder Jacobian at `v` (`[B, n]`).
    pub fn log_det_metric(&self, v: &Tensor) -> Tensor {
        let j = self.decoder_jacobian(v);
        let (_, logabs) = Tensor::linalg_slogdet(&j.transpose(1, 2).matmul(&j));
        logabs
    }

    /// The density on the learnt manifold at the projection of checked data `x` (module doc); `[B]`.
    pub(crate) fn manifold_log_prob_unchecked(&self, x: &Tensor) -> Result<Tensor> {
        let v = self.encode_unchecked(x);
        Ok(self.coordinate_log_prob(&v)? - self.log_det_metric(&v) * 0.5)
    }

    /// `log p(x)` on the learnt manifold, evaluated at the projection of `x` (`[B, d]`), for M-flow,
    /// M_e-flow and PIE; the AF refuses (it has an ambient density only).
    pub fn manifold_log_prob(&self, x: &Tensor) -> Result<Tensor> {
        if self.kind() == ModelKind::Af {
            return Err(self.unsupported("manifold_log_prob"));
        }
        let x = self.check_data("x", x)?;
        self.manifold_log_prob_unchecked(&x)
    }

    pub(crate) fn ambient_log_prob_unchecked(&self, x: &Tensor) -> Result<Tensor> {
        let (z, ld_outer) = self.outer.inverse(x);
        match self.kind() {
            ModelKind::Af => Ok(log_normal(&z, 1.0) + ld_outer),
            ModelKind::Pie => {
                let (n, d) = (self.config.manifold_dim, self.config.ambient_dim);
                let v = z.narrow(-1, 0, n);
                let orth = z.narrow(-1, n, d - n);
                Ok(self.coordinate_log_prob(&v)? + log_normal(&orth, self.config.pie_epsilon) + ld_outer)
            }
            _ => Err(self.unsupported("ambient_log_prob")),
        }
    }

    /// The ambient density `log p(x)` on `R^d` (`[B]`): the AF's, or PIE's (with the `pie_epsilon`-wide
    /// Gaussian off the manifold); M-flow and M_e-flow refuse (their density lives on the manifold).
    pub fn ambient_log_prob(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.check_data("x", x)?;
        self.ambient_log_prob_unchecked(&x)
    }

    /// The model's own density: [`ManifoldFlow::ambient_log_prob`] for the AF,
    /// [`ManifoldFlow::manifold_log_prob`] otherwise.
    pub fn log_prob(&self, x: &Tensor) -> Result<Tensor> {
        match self.kind() {
            ModelKind::Af => self.ambient_log_prob(x),
            _ => self.manifold_log_prob(x),
        }
    }
}
