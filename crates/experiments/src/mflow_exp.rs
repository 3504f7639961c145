//! The `mflow` experiment (MATH.md sections 8 and 9): injective flows that learn a manifold and a density on
//! it, on the toy data of the M-flow paper, with four methods trained on the same data:
//!
//! - `mflow`: M-flow (alternating M/D schedule by default), `mflow_e`: M_e-flow (sequential by default),
//!   `pie`: PIE (ambient likelihood with an epsilon-wide Gaussian off the manifold), `af`: a plain ambient
//!   flow (the baseline);
//! - data (`--dataset`): `circle` (d = 2, n = 1), `sphere` (spherical Gaussian, d = 3, n = 2), `surface`
//!   (mixture on a polynomial surface, d = 3, n = 2; the default, with published figures), `lorenz`
//!   (the Lorenz attractor, d = 3, n = 2).
//!
//! Per method: the mean distance of generated samples to the true manifold (`null` for Lorenz), the test
//! reconstruction error (mean of `|x - g(g^{-1}(x))|^2`, 0 for the AF), the mean true log-density of the
//! generated samples at their closest point on the true manifold (area measure; circle, sphere and surface),
//! the MMD against held-out data (Gaussian kernel on the Euclidean distance, median bandwidth), the training
//! time and the final loss, next to the published figures for the polynomial surface.
//! Pictures: loss curves, samples of every model against held-out data, and the learnt manifolds (a grid
//! of latent coordinates decoded, coloured by the learnt log-density along the manifold).
//!
//! `summary.json`: `{"experiment": "mflow", "seed", "dataset", "ambient_dim", "manifold_dim", "methods":
//! {"mflow": {...}, "mflow_e", "pie", "af"}, "reference": {"fresh_data": {...}}, "published": {...}}`; per
//! method `dist_to_manifold` (and `dist_to_manifold_median`), `reconstruction_error`, `sample_log_likelihood`
//! (`null` where the true density is unknown), `mmd` (`mmd2`, `mmd`, `bandwidth`, `n_samples`, `n_reference`),
//! `train_seconds`, `sample_seconds`, `final_loss` (mean batch loss of the last 5% of the steps, whatever their
//! phase), `steps`, `schedule`, `stopped_early`, `best_validation`, `n_parameters`, `resumed` (loaded from a
//! checkpoint) and `published_row` (the key of the matching published row, on the polynomial surface only).
//! `fresh_data` holds the same metrics for new samples of the true law (the floor a perfect model reaches).
//!
//! Every trained model is checkpointed under `checkpoints/<method>/` (weights with an architecture header as
//! safetensors, and `history.json`); a run folder that already holds a finished checkpoint of a method loads
//! it instead of training again, and refuses a checkpoint of another architecture naming the field.

use crate::cli::Options;
use crate::metrics::{euclidean_dist_matrix, median_bandwidth_of, mmd, Mmd};
use crate::progress::Phase as Progress;
use crate::run::{write_json_atomic, Meta, RunDir};
use anyhow::{anyhow, bail, Context, Result};
use mflow::data::{surface_foot_point, surface_height};
use mflow::{
    check_points, train, Control, Dataset, EncoderConfig, EvalReport, FlowConfig, LossWeights, ManifoldFlow,
    MflowError, ModelConfig, ModelKind, Observer, OptimConfig, Precision, Schedule, StepReport, TrainConfig, Transform,
};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::f64::consts::PI;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// The methods, in the order they are trained and reported.
pub const METHODS: [&str; 4] = ["mflow", "mflow_e", "pie", "af"];

/// Published results on the polynomial-surface mixture (Brehmer and Cranmer 2020; MATH.md section 9; median
/// of 5 runs): `(key, method, distance of samples to the manifold, test reconstruction error)`.
pub const PUBLISHED: [(&str, &str, f64, f64); 5] = [
    ("af", "ambient flow", 0.005, 0.000),
    ("pie", "PIE", 0.006, 1.253),
    ("mflow_sequential", "M-flow, sequential", 0.009, 0.013),
    ("mflow_alternating", "M-flow, alternating", 0.002, 0.003),
    ("mflow_e_sequential", "M_e-flow, sequential", 0.002, 0.002),
];

/// How one method's manifold (M) and density (D) updates are arranged (mflow's [`Schedule`], tagged by
/// `kind` so that a `--config` override of another kind replaces it whole).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SchedulePlan {
    /// First `manifold_steps` M steps, then `density_steps` D steps.
    Sequential {
        /// Steps of the M phase.
        manifold_steps: u64,
        /// Steps of the D phase.
        density_steps: u64,
    },
    /// `cycles` times `manifold_steps` M steps then `density_steps` D steps.
    Alternating {
        /// Number of cycles.
        cycles: u64,
        /// M steps a cycle.
        manifold_steps: u64,
        /// D steps a cycle.
        density_steps: u64,
    },
    /// `steps` steps of all weights on one loss (the only schedule of PIE and the AF).
    Simultaneous {
        /// Steps.
        steps: u64,
    },
}

impl SchedulePlan {
    /// The mflow schedule.
    pub fn schedule(self) -> Schedule {
        match self {
            SchedulePlan::Sequential { manifold_steps, density_steps } => {
                Schedule::Sequential { manifold_steps, density_steps }
            }
            SchedulePlan::Alternating { cycles, manifold_steps, density_steps } => {
                Schedule::Alternating { cycles, manifold_steps, density_steps }
            }
            SchedulePlan::Simultaneous { steps } => Schedule::Simultaneous { steps },
        }
    }

    /// `sequential`, `alternating` or `simultaneous`.
    pub fn name(self) -> &'static str {
        match self {
            SchedulePlan::Sequential { .. } => "sequential",
            SchedulePlan::Alternating { .. } => "alternating",
            SchedulePlan::Simultaneous { .. } => "simultaneous",
        }
    }
}

/// The architecture shared by every method (the AF uses the outer flow only).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSettings {
    /// The outer flow on `R^d`.
    pub outer: FlowConfig,
    /// The inner flow on `R^n`.
    pub inner: FlowConfig,
    /// The encoder of the M_e-flow.
    pub encoder: EncoderConfig,
    /// PIE's off-manifold standard deviation.
    pub pie_epsilon: f64,
    /// Parameter precision.
    pub precision: Precision,
}

/// Training settings shared by every method (the schedule is per method).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSettings {
    /// Rows a step.
    pub batch_size: i64,
    /// AdamW, warm-up, cosine decay, clipping.
    pub optim: OptimConfig,
    /// Loss weights.
    pub weights: LossWeights,
    /// Fraction of the training rows held out for validation and early stopping.
    pub validation_fraction: f64,
    /// Steps between validations.
    pub eval_every: u64,
    /// Validations without improvement before stopping (`null`: never).
    pub patience: Option<u64>,
}

/// The schedule of every method; `null` skips the method.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Methods {
    /// M-flow.
    pub mflow: Option<SchedulePlan>,
    /// M_e-flow.
    pub mflow_e: Option<SchedulePlan>,
    /// PIE (simultaneous only).
    pub pie: Option<SchedulePlan>,
    /// The ambient flow (simultaneous only).
    pub af: Option<SchedulePlan>,
}

impl Methods {
    /// `(name, kind, schedule)` of every method, in the order of [`METHODS`], skipped ones included.
    pub fn all(&self) -> [(&'static str, ModelKind, Option<SchedulePlan>); 4] {
        [
            ("mflow", ModelKind::MFlow, self.mflow),
            ("mflow_e", ModelKind::MeFlow, self.mflow_e),
            ("pie", ModelKind::Pie, self.pie),
            ("af", ModelKind::Af, self.af),
        ]
    }
}

/// The configuration of `mflow`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MflowConfig {
    /// The seed of everything: data, initialisation, batches, sampling.
    pub seed: u64,
    /// `circle`, `sphere`, `surface` or `lorenz` (set by `--dataset`).
    pub dataset: String,
    /// The manifold dimension `n` of the models (`null`: the data set's, 1 for the circle, else 2).
    pub manifold_dim: Option<i64>,
    /// Training rows.
    pub n_train: usize,
    /// Held-out rows (test reconstruction error, MMD reference, plots).
    pub n_test: usize,
    /// Generated samples per method.
    pub n_samples: usize,
    /// The architecture.
    pub model: ModelSettings,
    /// Training.
    pub train: TrainSettings,
    /// The methods and their schedules.
    pub methods: Methods,
    /// Points of the latent grid decoded for the picture of each learnt manifold.
    pub grid_points: usize,
    /// MMD bandwidth (`null`: the median Euclidean distance between held-out points).
    pub mmd_bandwidth: Option<f64>,
}

impl MflowConfig {
    /// The default run on `dataset` (a `--dataset` name): 10,000 training points, outer flows of 5 spline
    /// couplings (width 32), M-flow alternating, M_e-flow sequential, PIE and AF with as many steps.
    pub fn default_for(dataset: &str) -> Self {
        let flow = FlowConfig { layers: 5, hidden: 32, blocks: 2, ..FlowConfig::default() };
        MflowConfig {
            seed: 0,
            dataset: dataset.to_string(),
            manifold_dim: None,
            n_train: 10_000,
            n_test: 1_000,
            n_samples: 1_000,
            model: ModelSettings {
                outer: flow,
                inner: FlowConfig { layers: 3, hidden: 32, blocks: 1, ..FlowConfig::default() },
                encoder: EncoderConfig::default(),
                pie_epsilon: 0.01,
                precision: Precision::F32,
            },
            train: TrainSettings {
                batch_size: 128,
                optim: OptimConfig { lr: 3e-3, warmup_steps: 50, ..OptimConfig::default() },
                weights: LossWeights::default(),
                validation_fraction: 0.1,
                eval_every: 100,
                patience: Some(8),
            },
            methods: Methods {
                mflow: Some(SchedulePlan::Alternating { cycles: 3, manifold_steps: 600, density_steps: 300 }),
                mflow_e: Some(SchedulePlan::Sequential { manifold_steps: 1_800, density_steps: 900 }),
                pie: Some(SchedulePlan::Simultaneous { steps: 2_700 }),
                af: Some(SchedulePlan::Simultaneous { steps: 2_700 }),
            },
            grid_points: 3_600,
            mmd_bandwidth: None,
        }
    }

    /// The `--quick` variant: fewer points and steps, smaller flows.
    pub fn quick(mut self) -> Self {
        self.n_train = 1_000;
        self.n_test = 300;
        self.n_samples = 300;
        self.model.outer = FlowConfig { layers: 3, hidden: 16, blocks: 1, ..self.model.outer };
        self.model.inner = FlowConfig { layers: 2, hidden: 16, blocks: 1, ..self.model.inner };
        self.model.encoder = EncoderConfig { hidden: 32, blocks: 1 };
        self.train.optim.warmup_steps = 10;
        self.train.eval_every = 25;
        self.methods = Methods {
            mflow: Some(SchedulePlan::Alternating { cycles: 2, manifold_steps: 75, density_steps: 40 }),
            mflow_e: Some(SchedulePlan::Sequential { manifold_steps: 150, density_steps: 80 }),
            pie: Some(SchedulePlan::Simultaneous { steps: 230 }),
            af: Some(SchedulePlan::Simultaneous { steps: 230 }),
        };
        self.grid_points = 900;
        self
    }

    /// The data set of [`MflowConfig::dataset`].
    pub fn data_set(&self) -> Result<Dataset> {
        parse_dataset(&self.dataset)
    }

    /// The model configuration of `kind` (unchecked).
    pub fn model_config(&self, kind: ModelKind, data: Dataset) -> ModelConfig {
        let m = &self.model;
        ModelConfig {
            kind,
            ambient_dim: data.ambient_dim(),
            manifold_dim: self.manifold_dim.unwrap_or(data.manifold_dim()),
            outer: m.outer,
            inner: m.inner,
            encoder: m.encoder,
            pie_epsilon: m.pie_epsilon,
            precision: m.precision,
        }
    }

    /// The training configuration of a method (unchecked).
    pub fn train_config(&self, plan: SchedulePlan, seed: u64) -> TrainConfig {
        let t = &self.train;
        TrainConfig {
            schedule: plan.schedule(),
            batch_size: t.batch_size,
            optim: t.optim,
            weights: t.weights,
            validation_fraction: t.validation_fraction,
            eval_every: t.eval_every,
            patience: t.patience,
            seed,
        }
    }

    /// Validates every field before any work; errors name the field and its allowed range.
    pub fn check(&self) -> Result<()> {
        let data = self.data_set()?;
        let d = data.ambient_dim();
        if let Some(n) = self.manifold_dim {
            if n < 1 || n >= d {
                bail!(
                    "invalid config: manifold_dim = {n} is invalid: expected an integer with 1 <= manifold_dim < {d} \
                     (the ambient dimension of {})",
                    self.dataset
                );
            }
        }
        for (name, value, lo, hi) in [
            ("n_train", self.n_train, 10, 10_000_000),
            ("n_test", self.n_test, 2, 100_000),
            ("n_samples", self.n_samples, 2, 100_000),
            ("grid_points", self.grid_points, 2, 1_000_000),
        ] {
            if !(lo..=hi).contains(&value) {
                bail!("invalid config: {name} = {value} is invalid: expected {lo}..={hi}");
            }
        }
        if let Some(h) = self.mmd_bandwidth {
            if !(h.is_finite() && h > 0.0) {
                bail!("invalid config: mmd_bandwidth = {h} is invalid: expected a positive number or null");
            }
        }
        let mut any = false;
        for (name, kind, plan) in self.methods.all() {
            let model = self.model_config(kind, data);
            model.check().map_err(|e| prefixed(e, "model."))?;
            let Some(plan) = plan else { continue };
            any = true;
            self.train_config(plan, 0).check(kind).map_err(|e| {
                let schedule = matches!(&e, MflowError::InvalidConfig { name, .. } if name == "schedule");
                prefixed(e, &if schedule { format!("methods.{name}.") } else { "train.".to_string() })
            })?;
        }
        if !any {
            bail!("invalid config: methods: every method is null, expected at least one schedule");
        }
        Ok(())
    }
}

/// An mflow configuration error as an `invalid config` error, its field name prefixed with `prefix`.
fn prefixed(e: MflowError, prefix: &str) -> anyhow::Error {
    match e {
        MflowError::InvalidConfig { name, value, expected } => {
            anyhow!("invalid config: {prefix}{name} = {value} is invalid: expected {expected}")
        }
        other => anyhow!("invalid config: {other}"),
    }
}

/// The data set of a `--dataset` name (`circle`, `sphere`, `surface`, `lorenz`, or mflow's own names).
pub fn parse_dataset(name: &str) -> Result<Dataset> {
    match name {
        "circle" => Ok(Dataset::Circle),
        "sphere" | "spherical_gaussian" => Ok(Dataset::SphericalGaussian),
        "surface" | "polynomial_surface" => Ok(Dataset::PolynomialSurface),
        "lorenz" => Ok(Dataset::Lorenz),
        other => bail!("invalid config: dataset = {other:?} is invalid: expected circle, sphere, surface or lorenz"),
    }
}

/// `log N(t; pi/2, (pi/4)^2)`, the law of both angles of the circle and the sphere data.
fn log_angle_density(t: f64) -> f64 {
    let s = PI / 4.0;
    let z = (t - PI / 2.0) / s;
    -0.5 * z * z - (s * (2.0 * PI).sqrt()).ln()
}

/// `log sum exp` of `terms` (`-inf` for none).
fn log_sum_exp(terms: &[f64]) -> f64 {
    let m = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        return m;
    }
    m + terms.iter().map(|t| (t - m).exp()).sum::<f64>().ln()
}

/// The true log-density of the spherical Gaussian (area measure of the unit sphere) at the direction of `x`:
/// the angle pair `(a, b)` has density `N(a) N(b)`, summed over every pair mapped to `x`
/// (`(a + 2 pi k, b + 2 pi m)` and `(-a + 2 pi k, b + pi + 2 pi m)`), divided by the area element `sin a`.
fn sphere_log_density(x: [f64; 3]) -> f64 {
    let r = (x[0] * x[0] + x[1] * x[1] + x[2] * x[2]).sqrt();
    let a = (x[0] / r).clamp(-1.0, 1.0).acos();
    let b = x[2].atan2(x[1]);
    let mut terms = Vec::with_capacity(50);
    for k in -2..=2 {
        for m in -2..=2 {
            let (k, m) = (2.0 * PI * f64::from(k), 2.0 * PI * f64::from(m));
            terms.push(log_angle_density(a + k) + log_angle_density(b + m));
            terms.push(log_angle_density(-a + k) + log_angle_density(b + PI + m));
        }
    }
    log_sum_exp(&terms) - a.sin().max(1e-300).ln()
}

/// The true log-density of the polynomial-surface mixture (area measure of the surface) at the closest point of
/// `y`: the mixture density of the coordinates `u`, divided by the area element `sqrt(1 + |grad p|^2)`.
fn surface_log_density(y: [f64; 3]) -> f64 {
    let (a, b) = surface_foot_point(y);
    let var = 0.25;
    let log_component = |m: [f64; 2]| {
        let sq = (a - m[0]).powi(2) + (b - m[1]).powi(2);
        (0.5f64).ln() - sq / (2.0 * var) - (2.0 * PI * var).ln()
    };
    let g = surface_height(a, b).1;
    log_sum_exp(&[log_component([-1.0, -0.5]), log_component([1.0, 0.5])])
        - 0.5 * (1.0 + g[0] * g[0] + g[1] * g[1]).ln()
}

/// The true log-density on the manifold (area or arc-length measure) at the closest point of each row of `x`
/// (`[B, d]`): `[B]` f64 for the circle, the sphere and the surface, `None` for the Lorenz attractor.
pub fn true_log_density(data: Dataset, x: &Tensor) -> Option<Vec<f64>> {
    let rows =
        |t: &Tensor| Vec::<f64>::try_from(t.to_kind(Kind::Double).to_device(Device::Cpu).contiguous().view([-1]));
    let f: fn([f64; 3]) -> f64 = match data {
        Dataset::Circle => return data.log_density(x).and_then(|t| rows(&t).ok()),
        Dataset::SphericalGaussian => sphere_log_density,
        Dataset::PolynomialSurface => surface_log_density,
        Dataset::Lorenz => return None,
    };
    let v = rows(x).ok()?;
    Some(v.chunks(3).map(|c| f([c[0], c[1], c[2]])).collect())
}

/// Sub-seeds of a run: data (train, test, fresh reference) and, per method of [`METHODS`], (initialisation,
/// batches, sampling); drawn in a fixed order, so a skipped method changes no other seed.
struct Seeds {
    train_data: u64,
    test_data: u64,
    fresh_data: u64,
    methods: [[u64; 3]; 4],
}

impl Seeds {
    fn new(seed: u64) -> Seeds {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (train_data, test_data, fresh_data) = (rng.next_u64(), rng.next_u64(), rng.next_u64());
        let methods = [(); 4].map(|_| [rng.next_u64(), rng.next_u64(), rng.next_u64()]);
        Seeds { train_data, test_data, fresh_data, methods }
    }
}

/// One training step's loss.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LossRecord {
    /// 0-based step.
    pub step: u64,
    /// `manifold`, `density` or `joint`.
    pub phase: String,
    /// The batch loss.
    pub loss: f64,
}

/// What a finished training run leaves next to its weights (`history.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// The method.
    pub method: String,
    /// The schedule it was trained with.
    pub schedule: SchedulePlan,
    /// Steps taken.
    pub steps_done: u64,
    /// Whether patience ran out somewhere.
    pub stopped_early: bool,
    /// Best validation loss per monitored phase.
    pub best_validation: Vec<(String, f64)>,
    /// Wall-clock training time.
    pub train_seconds: f64,
    /// Every step's loss.
    pub losses: Vec<LossRecord>,
    /// The whole resolved configuration of the run that trained it: a checkpoint is only reused by a run
    /// with the same configuration.
    #[serde(default)]
    pub run_config: serde_json::Value,
}

/// The folder of a method's finished checkpoint.
pub fn checkpoint_dir(run: &RunDir, method: &str) -> PathBuf {
    run.path().join("checkpoints").join(method)
}

/// Writes `model` and `history` into `dir` atomically: both files go into a temporary sibling folder that is
/// then renamed to `dir`.
pub fn save_checkpoint(dir: &Path, model: &ManifoldFlow, history: &History) -> Result<()> {
    let parent = dir.parent().context("a checkpoint folder needs a parent folder")?;
    let name = dir.file_name().context("a checkpoint folder needs a name")?.to_string_lossy();
    let tmp = parent.join(format!(".{name}.tmp{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("cannot remove {}", tmp.display()))?;
    }
    std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    Tensor::write_safetensors(&model.checkpoint(), tmp.join("weights.safetensors"))
        .with_context(|| format!("cannot write {}", tmp.join("weights.safetensors").display()))?;
    write_json_atomic(&tmp.join("history.json"), history)?;
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot remove the old {}", dir.display()))?;
    }
    std::fs::rename(&tmp, dir).with_context(|| format!("cannot move {} to {}", tmp.display(), dir.display()))
}

/// Loads the finished checkpoint in `dir` into `model` and returns its history, or `None` when `dir` holds no
/// finished checkpoint. A checkpoint of another architecture is an error naming the folder and the field.
pub fn load_checkpoint(dir: &Path, model: &mut ManifoldFlow) -> Result<Option<History>> {
    let (weights, history) = (dir.join("weights.safetensors"), dir.join("history.json"));
    if !(weights.is_file() && history.is_file()) {
        return Ok(None);
    }
    let tensors = Tensor::read_safetensors(&weights).with_context(|| format!("cannot read {}", weights.display()))?;
    model.load_checkpoint(&tensors).with_context(|| format!("checkpoint {}", dir.display()))?;
    let text = std::fs::read_to_string(&history).with_context(|| format!("cannot read {}", history.display()))?;
    let h = serde_json::from_str(&text).with_context(|| format!("invalid {}", history.display()))?;
    Ok(Some(h))
}

/// Receives training progress: metrics lines, the progress bar, every loss.
struct Recorder<'a> {
    run: &'a RunDir,
    method: &'a str,
    progress: Progress,
    losses: Vec<LossRecord>,
    error: Option<anyhow::Error>,
}

impl Recorder<'_> {
    fn record(&mut self, value: serde_json::Value) -> Control {
        if self.error.is_none() {
            if let Err(e) = self.run.append_metric(&value) {
                self.error = Some(e);
            }
        }
        if self.error.is_some() {
            Control::Stop
        } else {
            Control::Continue
        }
    }
}

impl Observer for Recorder<'_> {
    fn on_step(&mut self, r: &StepReport) -> Control {
        let phase = r.phase.name();
        self.losses.push(LossRecord { step: r.step, phase: phase.to_string(), loss: r.loss });
        self.progress.set_position(r.step + 1);
        self.progress.set_message(format!("{phase} loss {:.4}", r.loss));
        self.record(serde_json::json!({
            "method": self.method, "phase": phase, "step": r.step, "loss": r.loss, "lr": r.lr, "grad_norm": r.grad_norm,
        }))
    }

    fn on_eval(&mut self, r: &EvalReport) {
        let _ = self.record(serde_json::json!({
            "method": self.method, "phase": r.phase.name(), "step": r.step, "val_loss": r.loss, "improved": r.improved,
        }));
    }
}

/// A trained (or loaded) model.
struct Trained {
    name: &'static str,
    plan: SchedulePlan,
    model: ManifoldFlow,
    history: History,
    resumed: bool,
}

/// Trains one method on `data`, or loads its finished checkpoint from the run folder.
fn train_or_load(
    run: &RunDir,
    config: &MflowConfig,
    (name, kind, plan): (&'static str, ModelKind, SchedulePlan),
    seeds: [u64; 3],
    data: &Tensor,
    device: Device,
) -> Result<Trained> {
    let dataset = config.data_set()?;
    let mut model =
        ManifoldFlow::new(&config.model_config(kind, dataset), seeds[0], device).map_err(|e| prefixed(e, "model."))?;
    let dir = checkpoint_dir(run, name);
    if let Some(history) = load_checkpoint(&dir, &mut model)? {
        let mine = serde_json::to_value(config)?;
        let diffs = crate::cli::json_diff(&history.run_config, &mine);
        if !diffs.is_empty() {
            anyhow::bail!(
                "the checkpoint {} was trained with another configuration ({}); use another --out folder or \
                 remove it",
                dir.display(),
                diffs.join("; ")
            );
        }
        eprintln!("mflow: {name}: loaded the finished checkpoint {}", dir.display());
        return Ok(Trained { name, plan, model, history, resumed: true });
    }
    let train_config = config.train_config(plan, seeds[1]);
    let total = train_config.schedule.total_steps();
    let mut rec = Recorder { run, method: name, progress: Progress::new(name, total), losses: Vec::new(), error: None };
    let start = Instant::now();
    let outcome = train(&mut model, data, &train_config, &mut rec).with_context(|| format!("training {name}"))?;
    let train_seconds = start.elapsed().as_secs_f64();
    let Recorder { progress, losses, error, .. } = rec;
    progress.finish();
    if let Some(e) = error {
        return Err(e.context(format!("training {name}")));
    }
    let history = History {
        method: name.to_string(),
        schedule: plan,
        steps_done: outcome.steps_done,
        stopped_early: outcome.stopped_early,
        best_validation: outcome.best_validation.iter().map(|(p, l)| (p.name().to_string(), *l)).collect(),
        train_seconds,
        losses,
        run_config: serde_json::to_value(config)?,
    };
    save_checkpoint(&dir, &model, &history)?;
    Ok(Trained { name, plan, model, history, resumed: false })
}

/// Mean of a slice (NaN when empty).
fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Median of a slice (NaN when empty).
fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => 0.5 * (s[n / 2 - 1] + s[n / 2]),
    }
}

/// Rows of a `[B, d]` tensor as f64 vectors.
fn to_rows(t: &Tensor) -> Vec<Vec<f64>> {
    let d = t.size()[1] as usize;
    let v = Vec::<f64>::try_from(t.to_kind(Kind::Double).to_device(Device::Cpu).contiguous().view([-1]))
        .expect("a float tensor");
    v.chunks(d).map(<[f64]>::to_vec).collect()
}

/// `f64` values of a 1-d tensor.
fn to_vec(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(Kind::Double).to_device(Device::Cpu).contiguous()).expect("a float tensor")
}

/// The key of the published row a method and schedule correspond to.
fn published_key(name: &str, plan: SchedulePlan) -> Option<&'static str> {
    match (name, plan.name()) {
        ("af", _) => Some("af"),
        ("pie", _) => Some("pie"),
        ("mflow", "sequential") => Some("mflow_sequential"),
        ("mflow", "alternating") => Some("mflow_alternating"),
        ("mflow_e", "sequential") => Some("mflow_e_sequential"),
        _ => None,
    }
}

/// The metrics of a set of points: distance to the manifold and true log-density.
fn point_metrics(data: Dataset, x: &Tensor) -> (Option<Vec<f64>>, Option<Vec<f64>>) {
    let dist = data.distance_to_manifold(x).map(|t| to_vec(&t));
    (dist, true_log_density(data, x))
}

/// Evaluates one trained method: samples, metrics and the summary object.
fn evaluate(
    t: &Trained,
    data: Dataset,
    test: &Tensor,
    h: f64,
    n_samples: usize,
    sample_seed: u64,
) -> Result<(serde_json::Value, Tensor)> {
    let start = Instant::now();
    let samples = t.model.sample(n_samples as i64, sample_seed).to_kind(Kind::Double).to_device(Device::Cpu);
    let sample_seconds = start.elapsed().as_secs_f64();
    let rec = tch::no_grad(|| t.model.reconstruction_error(test)).with_context(|| format!("{}: test data", t.name))?;
    let rec = to_vec(&rec);
    let (dist, log_p) = point_metrics(data, &samples);
    let score: Mmd =
        mmd(&samples, test, euclidean_dist_matrix, h).with_context(|| format!("{}: MMD of the samples", t.name))?;
    let losses: Vec<f64> = t.history.losses.iter().map(|r| r.loss).collect();
    let tail = (losses.len() / 20).max(1).min(losses.len());
    let summary = serde_json::json!({
        "dist_to_manifold": dist.as_deref().map(mean),
        "dist_to_manifold_median": dist.as_deref().map(median),
        "reconstruction_error": mean(&rec),
        "sample_log_likelihood": log_p.as_deref().map(mean),
        "mmd": score,
        "train_seconds": t.history.train_seconds,
        "sample_seconds": sample_seconds,
        "final_loss": mean(&losses[losses.len() - tail..]),
        "steps": t.history.steps_done,
        "schedule": t.plan.name(),
        "stopped_early": t.history.stopped_early,
        "best_validation": t.history.best_validation,
        "n_parameters": t.model.n_parameters(),
        "resumed": t.resumed,
        "published_row": if data == Dataset::PolynomialSurface { published_key(t.name, t.plan) } else { None },
    });
    Ok((summary, samples))
}

/// A decoded grid of latent coordinates (`u` in the inner flow's base, `[-2.5, 2.5]^n`) of a manifold model,
/// and the learnt log-density along the manifold at each point; `None` for the AF.
fn manifold_grid(model: &ManifoldFlow, grid_points: usize) -> Option<(Tensor, Vec<f64>)> {
    let inner = model.inner()?;
    let n = model.config().manifold_dim;
    let side = (grid_points as f64).powf(1.0 / n as f64).floor().max(2.0) as i64;
    let (kind, device) = (model.tensor_kind(), model.device());
    let axis = Tensor::linspace(-2.5, 2.5, side, (kind, device));
    let axes: Vec<Tensor> = (0..n).map(|_| axis.shallow_clone()).collect();
    let mesh = Tensor::meshgrid_indexing(&axes, "ij");
    let u = Tensor::stack(&mesh.iter().map(|m| m.reshape([-1])).collect::<Vec<_>>(), 1);
    tch::no_grad(|| {
        let v = inner.forward(&u).0;
        let x = model.decode(&v);
        let log_p = model.coordinate_log_prob(&v).ok()? - model.log_det_metric(&v) * 0.5;
        Some((x.to_kind(Kind::Double).to_device(Device::Cpu), to_vec(&log_p)))
    })
}

/// Coordinate pairs shown for `d`-dimensional points: `(x, y)`, and `(x, z)` in 3-D.
fn projections(d: usize) -> Vec<(usize, usize, &'static str)> {
    if d == 2 {
        vec![(0, 1, "x-y")]
    } else {
        vec![(0, 1, "x-y"), (0, 2, "x-z")]
    }
}

/// One named point set with optional colour values, projected for [`crate::plot::scatter_panels`].
struct PointSet {
    name: String,
    points: Vec<Vec<f64>>,
    colour: Option<Vec<f64>>,
}

/// A panel's owned name and projected points, and its colour values.
type OwnedPanel<'a> = (String, Vec<[f64; 2]>, Option<&'a [f64]>);

/// Writes `file`: one row of panels per point set, one column per projection.
fn scatter_file(run: &RunDir, file: &str, title: &str, d: usize, sets: &[PointSet]) -> Result<()> {
    let proj = projections(d);
    let owned: Vec<OwnedPanel> = sets
        .iter()
        .flat_map(|s| {
            proj.iter().map(move |&(i, j, label)| {
                let pts = s.points.iter().map(|p| [p[i], p[j]]).collect();
                (format!("{} ({label})", s.name), pts, s.colour.as_deref())
            })
        })
        .collect();
    let panels: Vec<crate::plot::ScatterPanel> = owned.iter().map(|(n, p, c)| (n.as_str(), p.as_slice(), *c)).collect();
    crate::plot::scatter_panels(&run.file(file), title, proj.len(), &panels)
}

/// Writes the loss curves: reconstruction (M phases) and likelihood (D and joint phases), one series each.
fn loss_plots(run: &RunDir, trained: &[Trained]) -> Result<()> {
    // The ambient likelihoods start far off (PIE's epsilon-wide Gaussian): the likelihood plot leaves out the
    // first 1/20 of every method's steps (`skip_div`), or the early values would set the whole axis.
    for (file, title, phases, skip_div) in [
        ("loss_curves.png", "reconstruction loss (manifold phases)", &["manifold"][..], None),
        (
            "likelihood_curves.png",
            "negative log-likelihood (density and joint phases; first 5% of steps left out)",
            &["density", "joint"][..],
            Some(20),
        ),
    ] {
        let series: Vec<(String, Vec<(u64, f64)>)> = trained
            .iter()
            .map(|t| {
                let first = skip_div.map_or(0, |k| t.history.steps_done / k);
                let pts: Vec<(u64, f64)> = t
                    .history
                    .losses
                    .iter()
                    .filter(|r| phases.contains(&r.phase.as_str()) && r.step >= first)
                    .map(|r| (r.step, r.loss))
                    .collect();
                (t.name.to_string(), pts)
            })
            .filter(|(_, p)| !p.is_empty())
            .collect();
        if series.is_empty() {
            continue;
        }
        let refs: Vec<(&str, &[(u64, f64)])> = series.iter().map(|(n, p)| (n.as_str(), p.as_slice())).collect();
        crate::plot::loss_curves(&run.file(file), title, &refs)?;
    }
    Ok(())
}

/// Formats an optional number for the table.
fn cell(v: &serde_json::Value, width: usize, precision: usize) -> String {
    match v.as_f64() {
        Some(x) => format!("{x:>width$.precision$}"),
        None => format!("{:>width$}", "-"),
    }
}

/// Prints the end-of-run table, ours next to the published figures.
fn print_table(dataset: &str, seed: u64, methods: &[(&str, serde_json::Value)], reference: &serde_json::Value) {
    println!("\nmflow on {dataset}, seed {seed} (dist: mean distance of samples to the true manifold; rec: test reconstruction error)");
    println!(
        "{:<10} {:<13} {:>9} {:>9} {:>9} {:>11} {:>10} {:>9} {:>8} | {:>8} {:>8}",
        "method", "schedule", "dist", "dist_med", "rec", "sample_ll", "mmd2", "final", "train_s", "pub_dist", "pub_rec"
    );
    for (name, s) in methods {
        let published = s["published_row"].as_str().and_then(|k| PUBLISHED.iter().find(|p| p.0 == k));
        let (pd, pr) =
            published.map_or(("-".to_string(), "-".to_string()), |p| (format!("{:.3}", p.2), format!("{:.3}", p.3)));
        println!(
            "{:<10} {:<13} {} {} {} {} {:>10.2e} {} {} | {:>8} {:>8}",
            name,
            s["schedule"].as_str().unwrap_or("-"),
            cell(&s["dist_to_manifold"], 9, 4),
            cell(&s["dist_to_manifold_median"], 9, 4),
            cell(&s["reconstruction_error"], 9, 4),
            cell(&s["sample_log_likelihood"], 11, 3),
            s["mmd"]["mmd2"].as_f64().unwrap_or(f64::NAN),
            cell(&s["final_loss"], 9, 4),
            cell(&s["train_seconds"], 8, 1),
            pd,
            pr
        );
    }
    let f = &reference["fresh_data"];
    println!(
        "{:<10} {:<13} {} {} {:>9} {} {:>10.2e}",
        "fresh data",
        "(reference)",
        cell(&f["dist_to_manifold"], 9, 4),
        cell(&f["dist_to_manifold_median"], 9, 4),
        "-",
        cell(&f["sample_log_likelihood"], 11, 3),
        f["mmd"]["mmd2"].as_f64().unwrap_or(f64::NAN),
    );
    println!("\npublished, polynomial surface (Brehmer and Cranmer 2020, median of 5 runs): dist / rec");
    for (_, method, dist, rec) in PUBLISHED {
        println!("  {method:<24} {dist:.3} / {rec:.3}");
    }
}

/// `experiments mflow [--dataset circle|sphere|surface|lorenz]`.
pub fn run_mflow(opts: &Options) -> Result<()> {
    let base = MflowConfig::default_for(opts.extra("--dataset").unwrap_or("surface"));
    let base = if opts.quick { base.quick() } else { base };
    let config = opts.resolve(base, |c, s| c.seed = s)?;
    config.check()?;
    let data = config.data_set()?;
    tch::manual_seed(config.seed as i64);
    let seeds = Seeds::new(config.seed);
    let train_data = data.sample(config.n_train, seeds.train_data);
    let test = data.sample(config.n_test, seeds.test_data);
    let d = data.ambient_dim();
    check_points("training data", &train_data, d)?;
    check_points("test data", &test, d)?;
    let run = RunDir::create(&opts.out_dir(), &config, &Meta::collect("mflow", config.seed, opts.device))?;
    eprintln!("mflow: {} (d = {d}), run folder {}", data.name(), run.path().display());
    let h = match config.mmd_bandwidth {
        Some(h) => h,
        None => median_bandwidth_of(&test, euclidean_dist_matrix, 2_000)?,
    };

    let mut trained = Vec::new();
    for (idx, (name, kind, plan)) in config.methods.all().into_iter().enumerate() {
        let Some(plan) = plan else { continue };
        trained.push(train_or_load(&run, &config, (name, kind, plan), seeds.methods[idx], &train_data, opts.device)?);
    }

    let mut summaries = Vec::new();
    let mut sample_sets = vec![PointSet { name: "held-out data".to_string(), points: to_rows(&test), colour: None }];
    std::fs::create_dir_all(run.file("samples")).context("cannot create the samples folder")?;
    for t in &trained {
        let idx = METHODS.iter().position(|m| *m == t.name).expect("a known method");
        let (summary, samples) = evaluate(t, data, &test, h, config.n_samples, seeds.methods[idx][2])?;
        let path = run.file("samples").join(format!("{}.safetensors", t.name));
        let tmp = run.file("samples").join(format!(".{}.tmp{}", t.name, std::process::id()));
        Tensor::write_safetensors(&[("samples", &samples)], &tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))?;
        sample_sets.push(PointSet { name: t.name.to_string(), points: to_rows(&samples), colour: None });
        summaries.push((t.name, summary));
    }

    let fresh = data.sample(config.n_samples, seeds.fresh_data);
    let (fresh_dist, fresh_log_p) = point_metrics(data, &fresh);
    let reference = serde_json::json!({
        "fresh_data": {
            "dist_to_manifold": fresh_dist.as_deref().map(mean),
            "dist_to_manifold_median": fresh_dist.as_deref().map(median),
            "sample_log_likelihood": fresh_log_p.as_deref().map(mean),
            "mmd": mmd(&fresh, &test, euclidean_dist_matrix, h)?,
        }
    });
    let published: serde_json::Map<String, serde_json::Value> = PUBLISHED
        .iter()
        .map(|(k, m, dist, rec)| {
            (k.to_string(), serde_json::json!({"method": m, "dist_to_manifold": dist, "reconstruction_error": rec}))
        })
        .collect();
    let summary = serde_json::json!({
        "experiment": "mflow",
        "seed": config.seed,
        "dataset": config.dataset,
        "ambient_dim": d,
        "manifold_dim": config.manifold_dim.unwrap_or(data.manifold_dim()),
        "mmd_kernel": "MMD: Gaussian kernel on the Euclidean distance",
        "methods": summaries.iter().map(|(n, s)| (n.to_string(), s.clone())).collect::<serde_json::Map<_, _>>(),
        "reference": reference,
        "published": {
            "source": "Brehmer and Cranmer 2020, M-flow paper (MATH.md section 9), median of 5 runs",
            "dataset": "polynomial_surface",
            "methods": published,
        },
    });
    run.write_summary(&summary)?;

    let du = d as usize;
    loss_plots(&run, &trained)?;
    let title = format!("mflow: samples against held-out data ({})", data.name());
    scatter_file(&run, "samples.png", &title, du, &sample_sets)?;
    let test_log_p = true_log_density(data, &test);
    let data_colour = if test_log_p.is_some() { "data by the true one" } else { "data plain" };
    let mut manifold_sets =
        vec![PointSet { name: "held-out data".to_string(), points: to_rows(&test), colour: test_log_p }];
    for t in &trained {
        if let Some((x, log_p)) = manifold_grid(&t.model, config.grid_points) {
            let name = format!("{} manifold", t.name);
            manifold_sets.push(PointSet { name, points: to_rows(&x), colour: Some(log_p) });
        }
    }
    let title = format!("mflow: learnt manifolds coloured by the learnt log-density, {data_colour} ({})", data.name());
    scatter_file(&run, "manifold.png", &title, du, &manifold_sets)?;

    let named: Vec<(&str, serde_json::Value)> = summaries.iter().map(|(n, s)| (*n, s.clone())).collect();
    print_table(&config.dataset, config.seed, &named, &summary["reference"]);
    println!("\nwrote {}", run.file("summary.json").display());
    Ok(())
}

#[cfg(test)]
mod tests;
