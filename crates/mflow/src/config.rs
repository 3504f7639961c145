//! Model configurations and their validation.

use crate::spline::SplineConfig;
use crate::{MflowError as E, Result};
use serde::{Deserialize, Serialize};
use tch::Kind;

/// Which member of the family a model is (MATH.md section 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModelKind {
    /// M-flow: outer flow `f` on `R^d`, projection to the first `n` latent coordinates, inner flow `h`
    /// on `R^n`; the encoder is `f^{-1}` followed by the projection.
    MFlow,
    /// M_e-flow: as M-flow, but a separate encoder network maps `R^d` to the manifold coordinates.
    MeFlow,
    /// PIE: the M-flow architecture trained by ambient maximum likelihood, with an `epsilon`-wide
    /// Gaussian in the `d - n` off-manifold latent coordinates.
    Pie,
    /// AF: a plain flow on `R^d` with a standard normal base (the baseline; no manifold).
    Af,
}

impl ModelKind {
    /// The short name used in errors, checkpoints and run folders (`mflow`, `meflow`, `pie`, `af`).
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::MFlow => "mflow",
            ModelKind::MeFlow => "meflow",
            ModelKind::Pie => "pie",
            ModelKind::Af => "af",
        }
    }
}

/// How the coordinates are mixed between two couplings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mixing {
    /// A fixed random permutation (drawn from the model seed).
    Permutation,
    /// A learnt LU-parametrised invertible linear map.
    Lu,
}

/// Floating-point precision of a model's parameters and computations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Precision {
    /// f32.
    F32,
    /// f64.
    F64,
}

impl Precision {
    /// The tch kind.
    pub fn kind(self) -> Kind {
        match self {
            Precision::F32 => Kind::Float,
            Precision::F64 => Kind::Double,
        }
    }
}

/// One flow: `layers` times (mixing, [ActNorm], spline coupling with alternating masks).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowConfig {
    /// Number of coupling layers (>= 1).
    pub layers: usize,
    /// Width of the conditioner networks (>= 1).
    pub hidden: i64,
    /// Residual blocks per conditioner (>= 0).
    pub blocks: usize,
    /// The spline of every coupling.
    pub spline: SplineConfig,
    /// What comes before each coupling.
    pub mixing: Mixing,
    /// An ActNorm layer before each coupling.
    pub actnorm: bool,
}

impl Default for FlowConfig {
    /// 4 layers, width 32, 2 blocks, 8 bins with tail bound 3, LU mixing, no ActNorm.
    fn default() -> Self {
        FlowConfig {
            layers: 4,
            hidden: 32,
            blocks: 2,
            spline: SplineConfig::default(),
            mixing: Mixing::Lu,
            actnorm: false,
        }
    }
}

impl FlowConfig {
    /// Validates the fields; errors name the field as `{prefix}.{field}`.
    pub fn check(&self, prefix: &str) -> Result<()> {
        if self.layers < 1 {
            return Err(E::invalid(&format!("{prefix}.layers"), self.layers, "an integer >= 1"));
        }
        if self.hidden < 1 {
            return Err(E::invalid(&format!("{prefix}.hidden"), self.hidden, "an integer >= 1"));
        }
        self.spline.check(&format!("{prefix}.spline"))
    }

    /// `(name, value)` pairs of every field, names prefixed with `{prefix}.`.
    pub fn fields(&self, prefix: &str) -> Vec<(String, String)> {
        let s = &self.spline;
        [
            ("layers", self.layers.to_string()),
            ("hidden", self.hidden.to_string()),
            ("blocks", self.blocks.to_string()),
            ("spline.bins", s.bins.to_string()),
            ("spline.tail_bound", s.tail_bound.to_string()),
            ("spline.min_bin_width", s.min_bin_width.to_string()),
            ("spline.min_bin_height", s.min_bin_height.to_string()),
            ("spline.min_derivative", s.min_derivative.to_string()),
            ("mixing", format!("{:?}", self.mixing)),
            ("actnorm", self.actnorm.to_string()),
        ]
        .into_iter()
        .map(|(n, v)| (format!("{prefix}.{n}"), v))
        .collect()
    }
}

/// The encoder of the M_e-flow: a residual MLP from `R^d` to `R^n`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderConfig {
    /// Width (>= 1).
    pub hidden: i64,
    /// Residual blocks (>= 0).
    pub blocks: usize,
}

impl Default for EncoderConfig {
    /// Width 64, 2 blocks.
    fn default() -> Self {
        EncoderConfig { hidden: 64, blocks: 2 }
    }
}

/// Everything that fixes a model's architecture (the checkpoint header records all of it).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Which model.
    pub kind: ModelKind,
    /// Ambient dimension `d` (>= 2).
    pub ambient_dim: i64,
    /// Manifold dimension `n` (1 <= n < d; recorded but unused by the AF).
    pub manifold_dim: i64,
    /// The outer flow `f` on `R^d`.
    pub outer: FlowConfig,
    /// The inner flow `h` on `R^n` (unused by the AF).
    pub inner: FlowConfig,
    /// The encoder (used by the M_e-flow only).
    pub encoder: EncoderConfig,
    /// Standard deviation of the off-manifold latent coordinates in PIE's ambient density (finite, > 0).
    pub pie_epsilon: f64,
    /// Parameter precision.
    pub precision: Precision,
}

impl ModelConfig {
    /// An M-flow on `R^ambient_dim` with an `manifold_dim`-dimensional manifold and default flows.
    pub fn new(kind: ModelKind, ambient_dim: i64, manifold_dim: i64) -> ModelConfig {
        ModelConfig {
            kind,
            ambient_dim,
            manifold_dim,
            outer: FlowConfig::default(),
            inner: FlowConfig { layers: 2, ..FlowConfig::default() },
            encoder: EncoderConfig::default(),
            pie_epsilon: 0.01,
            precision: Precision::F32,
        }
    }

    /// Validates every field before any work; errors name the field and the allowed range.
    pub fn check(&self) -> Result<()> {
        if self.ambient_dim < 2 {
            return Err(E::invalid("ambient_dim", self.ambient_dim, "an integer >= 2"));
        }
        if self.manifold_dim < 1 || self.manifold_dim >= self.ambient_dim {
            let expected = format!("an integer with 1 <= manifold_dim < ambient_dim = {}", self.ambient_dim);
            return Err(E::invalid("manifold_dim", self.manifold_dim, &expected));
        }
        self.outer.check("outer")?;
        self.inner.check("inner")?;
        if self.encoder.hidden < 1 {
            return Err(E::invalid("encoder.hidden", self.encoder.hidden, "an integer >= 1"));
        }
        if !(self.pie_epsilon.is_finite() && self.pie_epsilon > 0.0) {
            return Err(E::invalid("pie_epsilon", self.pie_epsilon, "a finite number > 0"));
        }
        Ok(())
    }

    /// `(name, value)` pairs of every architecture field: the checkpoint header.
    pub fn fields(&self) -> Vec<(String, String)> {
        let mut f = vec![
            ("kind".to_string(), self.kind.name().to_string()),
            ("ambient_dim".to_string(), self.ambient_dim.to_string()),
            ("manifold_dim".to_string(), self.manifold_dim.to_string()),
        ];
        f.extend(self.outer.fields("outer"));
        f.extend(self.inner.fields("inner"));
        f.push(("encoder.hidden".to_string(), self.encoder.hidden.to_string()));
        f.push(("encoder.blocks".to_string(), self.encoder.blocks.to_string()));
        f.push(("pie_epsilon".to_string(), self.pie_epsilon.to_string()));
        f.push(("precision".to_string(), format!("{:?}", self.precision)));
        f
    }
}
