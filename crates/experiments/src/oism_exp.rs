//! The `oism` experiment (issue 5), on 2-D toy laws: plain DSM, operator-informed score matching (OISM:
//! the same network trained by MAD on the residual to the closed-form Hermite spectral estimator,
//! [`scores::oism::hermite::HermiteScore`], MATH.md section 6) and the diffusion kernel smoother (the OU
//! smoother, no network, MATH.md section 5), with the same schedule, sampler and seed.
//!
//! Problems (each its own run folder under the run folder, as `discrete` does):
//! - `mixture`: three anisotropic Gaussians in R^2 with unequal weights 0.55, 0.3, 0.15;
//! - `ring`: radius 2 (sd 0.15) at a uniform angle, a law whose coordinates are strongly dependent (the
//!   per-coordinate Hermite estimator sees only its marginals).
//!
//! Data are standardised per coordinate by the training mean and standard deviation (the Hermite
//! expansion is around N(0, 1)); every figure is in standardised units.
//!
//! Figures per method: the common [`MethodSummary`] fields, `mmd_local` (bandwidth divided by 8: the median
//! bandwidth hardly tells a ring from a Gaussian), `loss_var` and `grad_var` of the method's own estimator at
//! its final training weights, and `variance_curve`: the same at several steps with the loss mean,
//! |mean gradient|^2 and `grad_snr` = |mean gradient|^2 / `grad_var` ([`variance`] module doc).
//! `variance_both` holds both estimators at this method's weights at each step; `nn_dist_train` is the mean
//! distance of a sample to its nearest training point (memorisation shows as a value below the reference
//! `fresh_data_nn_dist_train`). The OISM entry adds `hermite_only_mmd` (samples of the Hermite estimator
//! alone, no network). `kernel_smoother`: the OU time `t` chosen by validation log-likelihood, its kernel
//! standard deviation `bandwidth` = sqrt(1 - e^{-2t}), `test_nll` (Lebesgue measure on R^2, standardised
//! units), `mmd` of reverse-SDE samples with its exact score (the same sampler as the networks) and
//! `mmd_density` of samples drawn from the smoothed density at `t`.
//!
//! The top-level `variance_ratio` lists the ratios oism / dsm of `loss_var` and `grad_var`: each method at
//! its own weights, and both estimators at DSM's and at OISM's weights. Read the last two with care: at
//! equal total score s the two per-sample losses are the same number, |sigma s + eps|^2, since OISM's
//! target is DSM's shifted by sigma s_base and its score by s_base. The same weights therefore stand for two
//! different scores (net / sigma and s_base + net / sigma); both networks start from the same weights with a
//! zero output layer, so at step 0 this compares the score 0 with the Hermite score.
//!
//! Pictures: `samples.png` (held-out data and every method's samples), `variance.png` (variance against
//! step at the methods' own weights, log scale), `loss_curves.png`.

pub mod earth;
pub mod variance;

use crate::cli::Options;
use crate::mad::{
    em_sampler, eval_batch, eval_loss, report, sample_method, Method, MethodSummary, Outcome, Sampled, TrainSettings,
};
use crate::metrics::{euclidean_dist_matrix, median_bandwidth_of, mmd};
use crate::progress::Phase;
use crate::run::{Meta, RunDir};
use crate::so3::LOCAL_FACTOR;
use anyhow::{bail, Context, Result};
use geom::Euclidean;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use sample::{initial_noise, SamplerConfig};
use scores::base::ScheduledBase;
use scores::oism::hermite::{HermiteScore, MAX_HERMITE_DEGREE};
use scores::smoother::bandwidth::{select_time_by_validation, test_nll};
use scores::smoother::ou::OuSmoother;
use scores::{Schedule, Score};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Instant;
use tch::{Device, Kind, Tensor};
use train::{MlpConfig, Objective, OptimConfig, Precision, TensorBase, Weighting};
use variance::{own, probe_batches, train_with_variance, Probe, VariancePoint};

/// The Hermite base of OISM.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HermiteSettings {
    /// Degree K of the projection estimator, in 1..=40.
    pub degree: usize,
    /// Shrinkage weight of the sample means toward 0, in [0, 1] (`null`: none).
    pub shrinkage: Option<f64>,
}

/// Where and how the spread of the loss estimators is measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VarianceSettings {
    /// Independent batches R (of the training batch size) per measurement, 2..=10^4.
    pub n_batches: usize,
    /// Fractions of the training steps at which to measure, each in [0, 1] (0: the initial weights).
    pub at: Vec<f64>,
}

/// One problem's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProblemConfig {
    /// Training points.
    pub n_train: usize,
    /// Validation points (the smoother's time).
    pub n_valid: usize,
    /// Held-out points (MMD reference, evaluation loss, test NLL).
    pub n_test: usize,
    /// Training (the same for both networks).
    pub train: TrainSettings,
    /// The sampler (the same for every method).
    pub sampler: SamplerConfig,
    /// Samples per method.
    pub n_samples: i64,
    /// Rows of the fixed held-out batch of the evaluation loss.
    pub eval_batch: i64,
    /// The Hermite base of OISM.
    pub hermite: HermiteSettings,
    /// The variance measurements.
    pub variance: VarianceSettings,
    /// Grid of OU times for the smoother's validation search.
    pub smoother_grid: Vec<f64>,
    /// MMD kernel bandwidth (`null`: the median pairwise held-out distance).
    pub mmd_bandwidth: Option<f64>,
}

/// The configuration of `oism`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OismConfig {
    /// The seed of everything: data, initialisation, batches, probe batches, sampling noise.
    pub seed: u64,
    /// The Gaussian mixture problem (`null` to skip it).
    pub mixture: Option<ProblemConfig>,
    /// The ring problem (`null` to skip it).
    pub ring: Option<ProblemConfig>,
}

fn problem() -> ProblemConfig {
    ProblemConfig {
        n_train: 5_000,
        n_valid: 1_000,
        n_test: 2_000,
        train: TrainSettings {
            model: MlpConfig { width: 128, depth: 3, ..MlpConfig::default() },
            schedule: Schedule::Vp { beta_min: 0.1, beta_max: 20.0 },
            weighting: Weighting::SigmaSquared,
            optim: OptimConfig { lr: 1e-3, warmup_steps: 100, ..OptimConfig::default() },
            precision: Precision::F32,
            steps: 10_000,
            batch_size: 256,
            t_eps: 1e-3,
            checkpoint_every: 1_000,
        },
        sampler: em_sampler(500),
        n_samples: 2_000,
        eval_batch: 4_096,
        hermite: HermiteSettings { degree: 7, shrinkage: None },
        variance: VarianceSettings { n_batches: 32, at: vec![0.0, 0.01, 0.05, 0.25, 0.5, 1.0] },
        smoother_grid: (0..13).map(|i| 10f64.powf(-4.0 + 3.5 * i as f64 / 12.0)).collect(),
        mmd_bandwidth: None,
    }
}

impl OismConfig {
    /// The default run: both problems, 5,000 training points, a width-128 MLP, 10,000 steps of 256 points,
    /// VP schedule, Hermite degree 7.
    pub fn default_config() -> Self {
        OismConfig { seed: 0, mixture: Some(problem()), ring: Some(problem()) }
    }

    /// The `--quick` variant.
    pub fn quick(mut self) -> Self {
        for p in [&mut self.mixture, &mut self.ring].into_iter().flatten() {
            p.n_train = 2_000;
            p.n_valid = 500;
            p.n_test = 500;
            p.train.model.width = 64;
            p.train.steps = 1_500;
            p.train.optim.warmup_steps = 50;
            p.train.optim.ema_decay = 0.99;
            p.train.checkpoint_every = 500;
            p.sampler = em_sampler(100);
            p.n_samples = 500;
            p.eval_batch = 1_024;
            p.variance.n_batches = 16;
            p.variance.at = vec![0.0, 0.5, 1.0];
            p.smoother_grid = (0..6).map(|i| 10f64.powf(-4.0 + 3.5 * i as f64 / 5.0)).collect();
        }
        self
    }

    /// Validates every field before any work; errors name the field and its allowed range.
    pub fn check(&self) -> Result<()> {
        if self.mixture.is_none() && self.ring.is_none() {
            bail!("invalid config: mixture and ring are both null: nothing to run");
        }
        for (name, p) in [("mixture", &self.mixture), ("ring", &self.ring)] {
            let Some(p) = p else { continue };
            for (field, v, lo) in [("n_train", p.n_train, 2), ("n_valid", p.n_valid, 2), ("n_test", p.n_test, 2)] {
                if v < lo || v > 10_000_000 {
                    bail!("invalid config: {name}.{field} = {v}: expected 2..=10^7");
                }
            }
            p.train
                .check()
                .map_err(|e| anyhow::anyhow!("{}", e.to_string().replace("train.", &format!("{name}.train."))))?;
            p.sampler.check().map_err(|e| anyhow::anyhow!("invalid config: {name}.sampler: {e}"))?;
            if !(2..=1_000_000).contains(&p.n_samples) {
                bail!("invalid config: {name}.n_samples = {}: expected 2..=10^6", p.n_samples);
            }
            if !(1..=1_000_000).contains(&p.eval_batch) {
                bail!("invalid config: {name}.eval_batch = {}: expected 1..=10^6", p.eval_batch);
            }
            if !(1..=MAX_HERMITE_DEGREE).contains(&p.hermite.degree) {
                bail!(
                    "invalid config: {name}.hermite.degree = {}: expected 1..={MAX_HERMITE_DEGREE}",
                    p.hermite.degree
                );
            }
            if let Some(w) = p.hermite.shrinkage {
                if !(0.0..=1.0).contains(&w) {
                    bail!("invalid config: {name}.hermite.shrinkage = {w}: expected a number in [0, 1] or null");
                }
            }
            check_shared(&format!("{name}."), &p.variance, &p.smoother_grid, p.mmd_bandwidth)?;
        }
        Ok(())
    }
}

/// Checks the fields `oism` and `oism-earth` share; `prefix` is the path of their parent (`"ring."`, or
/// `""` at the top level).
pub(crate) fn check_shared(
    prefix: &str,
    variance: &VarianceSettings,
    smoother_grid: &[f64],
    mmd_bandwidth: Option<f64>,
) -> Result<()> {
    if !(2..=10_000).contains(&variance.n_batches) {
        bail!("invalid config: {prefix}variance.n_batches = {}: expected 2..=10^4", variance.n_batches);
    }
    if variance.at.is_empty() || variance.at.iter().any(|f| !(0.0..=1.0).contains(f)) {
        bail!(
            "invalid config: {prefix}variance.at = {:?}: expected a non-empty list of fractions in [0, 1]",
            variance.at
        );
    }
    if smoother_grid.is_empty() || smoother_grid.iter().any(|t| !(t.is_finite() && *t > 0.0)) {
        bail!("invalid config: {prefix}smoother_grid: expected a non-empty list of positive times");
    }
    if let Some(h) = mmd_bandwidth {
        if !(h.is_finite() && h > 0.0) {
            bail!("invalid config: {prefix}mmd_bandwidth = {h}: expected a positive number or null");
        }
    }
    Ok(())
}

/// The steps at which the fractions `at` of `steps` fall (sorted, without repeats).
pub(crate) fn variance_steps(at: &[f64], steps: u64) -> Vec<u64> {
    let mut v: Vec<u64> = at.iter().map(|f| (f * steps as f64).round() as u64).collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// The summary of one network of `oism` or `oism-earth`: the common fields, `mmd_local`, and `loss_var`,
/// `grad_var`, `variance_curve`, `variance_both` from its variance curve (module doc).
pub(crate) fn network_summary(
    objective: Objective,
    outcome: &Outcome,
    score: crate::metrics::Mmd,
    local: crate::metrics::Mmd,
    curve: &[VariancePoint],
) -> MethodSummary {
    let own_curve: Vec<serde_json::Value> = curve
        .iter()
        .map(|v| {
            let s = own(objective, v);
            serde_json::json!({"step": v.step, "loss_var": s.loss_var, "grad_var": s.grad_var,
                "loss_mean": s.loss_mean, "grad_mean_sq": s.grad_mean_sq, "grad_snr": s.grad_mean_sq / s.grad_var})
        })
        .collect();
    let last = curve.iter().max_by_key(|v| v.step).map(|v| own(objective, v));
    MethodSummary::new(&outcome.trained, &outcome.sampled, outcome.eval_loss, score)
        .with("mmd_local", local)
        .with("loss_var", last.map_or(f64::NAN, |s| s.loss_var))
        .with("grad_var", last.map_or(f64::NAN, |s| s.grad_var))
        .with("variance_curve", own_curve)
        .with("variance_both", curve)
}

/// The 2-D toy laws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Law {
    /// Three anisotropic Gaussians with weights 0.55, 0.3, 0.15.
    Mixture,
    /// Radius 2 with standard deviation 0.15 at a uniform angle.
    Ring,
}

impl Law {
    /// `n` points `[n, 2]` (f64, CPU) drawn with `rng`, not standardised.
    pub fn sample(self, n: usize, rng: &mut ChaCha8Rng) -> Tensor {
        let mut flat = Vec::with_capacity(2 * n);
        for _ in 0..n {
            let (z1, z2): (f64, f64) = (rng.sample(StandardNormal), rng.sample(StandardNormal));
            let (x, y) = match self {
                Law::Mixture => {
                    // (weight, mean, sd along, sd across, angle)
                    const C: [(f64, [f64; 2], f64, f64, f64); 3] = [
                        (0.55, [-2.0, -1.0], 0.8, 0.25, 0.6),
                        (0.30, [2.0, -0.5], 0.5, 0.5, 0.0),
                        (0.15, [0.5, 2.5], 0.6, 0.2, -1.0),
                    ];
                    let u: f64 = rng.random();
                    let c = if u < C[0].0 {
                        C[0]
                    } else if u < C[0].0 + C[1].0 {
                        C[1]
                    } else {
                        C[2]
                    };
                    let (a, b) = (z1 * c.2, z2 * c.3);
                    let (s, co) = c.4.sin_cos();
                    (c.1[0] + co * a - s * b, c.1[1] + s * a + co * b)
                }
                Law::Ring => {
                    let theta = std::f64::consts::TAU * rng.random::<f64>();
                    let r = 2.0 + 0.15 * z1;
                    let _ = z2;
                    (r * theta.cos(), r * theta.sin())
                }
            };
            flat.extend([x, y]);
        }
        Tensor::from_slice(&flat).reshape([n as i64, 2])
    }
}

/// Per-coordinate standardisation by the training mean and standard deviation.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Standardiser {
    /// Training mean per coordinate.
    pub mean: [f64; 2],
    /// Training standard deviation per coordinate.
    pub std: [f64; 2],
}

impl Standardiser {
    /// Fitted to `x: [N, 2]` (f64).
    pub fn fit(x: &Tensor) -> Self {
        let m = x.mean_dim(0, false, Kind::Double);
        let s = x.std_dim(0, true, false);
        Standardiser {
            mean: [m.double_value(&[0]), m.double_value(&[1])],
            std: [s.double_value(&[0]), s.double_value(&[1])],
        }
    }

    /// (x - mean) / std, `[N, 2]` f64.
    pub fn apply(&self, x: &Tensor) -> Tensor {
        (x - Tensor::from_slice(&self.mean).view([1, 2])) / Tensor::from_slice(&self.std).view([1, 2])
    }
}

/// The OU smoother as a score along a schedule: x = alpha x_0 + sigma eps is sqrt(v) times the OU marginal
/// at time -ln(alpha / sqrt(v)), v = alpha^2 + sigma^2 (exact for VP, where v = 1, and for VE).
pub struct SmootherScore {
    /// The smoother over the training data.
    pub smoother: OuSmoother,
    /// The schedule.
    pub schedule: Schedule,
}

impl Score for SmootherScore {
    /// `x: [B, 2]`, `t: [B]` -> `[B, 2]`, dtype and device of `x`.
    fn score(&self, x: &Tensor, t: &Tensor) -> Tensor {
        let alpha = self.schedule.alpha_t(t).to_kind(Kind::Double);
        let sigma = self.schedule.sigma_t(t).to_kind(Kind::Double);
        let sv = (alpha.square() + sigma.square()).sqrt();
        let t_ou = -(alpha / &sv).log();
        let sv = sv.unsqueeze(1);
        let z = x.to_kind(Kind::Double) / &sv;
        (self.smoother.score(&z, &t_ou) / sv).to_kind(x.kind())
    }
}

/// Samples any score with the problem's sampler from the schedule's initial law (seeded as the networks
/// are) and writes them to `samples/<name>.safetensors`.
fn sample_score(
    run: &RunDir,
    name: &str,
    score: &dyn Score,
    p: &ProblemConfig,
    seed: u64,
    device: Device,
) -> Result<Sampled> {
    let kind = p.train.precision.kind();
    tch::manual_seed(seed as i64);
    let x1 = initial_noise(&p.train.schedule, &[p.n_samples, 2], kind, device);
    let mut phase = Phase::new(&format!("{name}: sample"), 1);
    let start = Instant::now();
    let out = tch::no_grad(|| sample::sample(score, &p.train.schedule, &x1, &p.sampler, &mut phase))
        .with_context(|| format!("{name}: sampling failed"))?;
    let sample_seconds = start.elapsed().as_secs_f64();
    phase.finish();
    let x = out.x.to_kind(Kind::Double).to_device(Device::Cpu);
    if x.isfinite().logical_not().any().int64_value(&[]) != 0 {
        bail!("{name}: some samples are not finite (the sampler diverged)");
    }
    let dir = run.file("samples");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let file = dir.join(format!("{name}.safetensors"));
    Tensor::write_safetensors(&[("samples", &x)], &file).with_context(|| format!("cannot write {}", file.display()))?;
    let distance_before = Tensor::zeros([p.n_samples], (Kind::Double, Device::Cpu));
    Ok(Sampled { points: x, distance_before, mean_distance_before: 0.0, sample_seconds })
}

/// Mean distance of each row of `x` to its nearest row of `train` (in chunks of 512 rows).
fn nn_dist(x: &Tensor, train: &Tensor) -> f64 {
    let n = x.size()[0];
    let mut total = 0.0;
    for lo in (0..n).step_by(512) {
        let chunk = x.narrow(0, lo, 512.min(n - lo));
        let d = euclidean_dist_matrix(&chunk, train).min_dim(1, false).0;
        total += d.sum(Kind::Double).double_value(&[]);
    }
    total / n as f64
}

fn to_points(x: &Tensor) -> Vec<[f64; 2]> {
    let v = Vec::<f64>::try_from(x.to_kind(Kind::Double).contiguous().flatten(0, -1)).expect("a float tensor");
    v.chunks(2).map(|c| [c[0], c[1]]).collect()
}

/// oism / dsm ratios of loss_var and grad_var at each step of two curves (or one, `b == a`).
fn ratios(dsm: &[(u64, variance::Spread)], oism: &[(u64, variance::Spread)]) -> Vec<serde_json::Value> {
    dsm.iter()
        .filter_map(|(s, d)| {
            let (_, o) = oism.iter().find(|(t, _)| t == s)?;
            Some(serde_json::json!({
                "step": s, "loss_var_ratio": o.loss_var / d.loss_var, "grad_var_ratio": o.grad_var / d.grad_var,
            }))
        })
        .collect()
}

fn run_problem(
    opts: &Options,
    parent: &std::path::Path,
    name: &str,
    seed: u64,
    law: Law,
    p: &ProblemConfig,
) -> Result<serde_json::Value> {
    let run = RunDir::create(&parent.join(name), p, &Meta::collect(&format!("oism/{name}"), seed, opts.device))?;
    let device = opts.device;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let raw_train = law.sample(p.n_train, &mut rng);
    let st = Standardiser::fit(&raw_train);
    let train = st.apply(&raw_train);
    let valid = st.apply(&law.sample(p.n_valid, &mut rng));
    let test = st.apply(&law.sample(p.n_test, &mut rng));
    let h = match p.mmd_bandwidth {
        Some(h) => h,
        None => median_bandwidth_of(&test, euclidean_dist_matrix, 2_000)?,
    };

    let start = Instant::now();
    let hermite =
        HermiteScore::fit(&train, p.hermite.degree, p.hermite.shrinkage).context("fitting the Hermite base")?;
    let hermite_fit_seconds = start.elapsed().as_secs_f64();
    let base: Arc<dyn TensorBase> = Arc::new(hermite.clone());
    let kind = p.train.precision.kind();
    let batches = probe_batches(&train, p.variance.n_batches, p.train.batch_size, p.train.t_eps, seed, kind, device);
    let at_steps = variance_steps(&p.variance.at, p.train.steps);
    let probe =
        Probe { run: &run, settings: p.train, seed, hermite: base.clone(), batches: &batches, at_steps, device };
    let eval = eval_batch(&test, p.eval_batch, p.train.t_eps, seed, kind, device);
    let r2 = Euclidean::new(2)?;

    let methods = [Method::dsm("dsm"), Method::mad("oism", base.clone())];
    let (mut summaries, mut outcomes, mut curves) = (Vec::new(), Vec::new(), Vec::new());
    for m in &methods {
        let (trained, curve) = train_with_variance(&probe, m, &train)?;
        let eval_loss = eval_loss(&trained, &eval);
        let sampled = sample_method(&run, &trained, &r2, &p.sampler, &[2], p.n_samples, seed, device)?;
        let score = mmd(&sampled.points, &test, euclidean_dist_matrix, h)?;
        let local = mmd(&sampled.points, &test, euclidean_dist_matrix, h / LOCAL_FACTOR)?;
        let outcome = Outcome { trained, sampled, eval_loss };
        let mut s = network_summary(m.objective, &outcome, score, local, &curve)
            .with("nn_dist_train", nn_dist(&outcome.sampled.points, &train));
        if m.objective == Objective::Mad {
            s = s.with("hermite_degree", p.hermite.degree).with("hermite_shrinkage", p.hermite.shrinkage);
        }
        summaries.push((m.name.clone(), s));
        outcomes.push(outcome);
        curves.push(curve);
    }

    // The Hermite estimator alone (no network), as a reference for OISM's base.
    let hermite_score = ScheduledBase { base: hermite, schedule: p.train.schedule };
    let hermite_samples = sample_score(&run, "hermite_only", &hermite_score, p, seed, device)?;
    let hermite_mmd = mmd(&hermite_samples.points, &test, euclidean_dist_matrix, h)?;
    let hermite_local = mmd(&hermite_samples.points, &test, euclidean_dist_matrix, h / LOCAL_FACTOR)?;
    if let Some((_, s)) = summaries.iter_mut().find(|(n, _)| n == "oism") {
        s.extra.insert("hermite_only_mmd".into(), serde_json::to_value(hermite_mmd)?);
        s.extra.insert("hermite_only_mmd_local".into(), serde_json::to_value(hermite_local)?);
        s.extra.insert("hermite_fit_seconds".into(), serde_json::json!(hermite_fit_seconds));
    }

    // The kernel smoother: time by validation, test NLL, reverse-SDE samples and samples of its density.
    let start = Instant::now();
    let smoother = OuSmoother::new(&train).context("building the kernel smoother")?;
    let (t, _) =
        select_time_by_validation(&smoother, &valid, &p.smoother_grid).context("selecting the smoothing time")?;
    let nll = test_nll(&smoother, &test, t)?;
    let fit_seconds = start.elapsed().as_secs_f64();
    let ks_score = SmootherScore { smoother: smoother.clone(), schedule: p.train.schedule };
    let ks_samples = sample_score(&run, "kernel_smoother", &ks_score, p, seed, device)?;
    let (a, sd) = ((-t).exp(), (-(-2.0 * t).exp_m1()).sqrt());
    let mut rng_d = ChaCha8Rng::seed_from_u64(seed);
    rng_d.set_stream(13);
    let idx: Vec<i64> = (0..p.n_samples).map(|_| rng_d.random_range(0..p.n_train as i64)).collect();
    let eps: Vec<f64> = (0..2 * p.n_samples).map(|_| rng_d.sample(StandardNormal)).collect();
    let density_samples =
        train.index_select(0, &Tensor::from_slice(&idx)) * a + Tensor::from_slice(&eps).reshape([p.n_samples, 2]) * sd;
    let ks_mmd = mmd(&ks_samples.points, &test, euclidean_dist_matrix, h)?;
    let ks_local = mmd(&ks_samples.points, &test, euclidean_dist_matrix, h / LOCAL_FACTOR)?;
    let ks = serde_json::json!({
        "mmd": ks_mmd, "mmd_local": ks_local, "mmd_density": mmd(&density_samples, &test, euclidean_dist_matrix, h)?,
        "mmd_density_local": mmd(&density_samples, &test, euclidean_dist_matrix, h / LOCAL_FACTOR)?,
        "test_nll": nll, "t": t, "bandwidth": sd, "fit_seconds": fit_seconds,
        "sample_seconds": ks_samples.sample_seconds, "dist_to_manifold": 0.0,
        "nn_dist_train": nn_dist(&ks_samples.points, &train),
    });
    eprintln!("{name}: kernel_smoother t = {t:.3e} (kernel sd {sd:.3}), test NLL {nll:.3}, mmd2 {:.3e}", ks_mmd.mmd2);

    // References and the variance ratios.
    let fresh = st.apply(&law.sample(p.n_samples as usize, &mut rng));
    let gauss = Tensor::randn([p.n_samples, 2], (Kind::Double, Device::Cpu));
    let at = |i: usize, f: fn(&VariancePoint) -> variance::Spread| -> Vec<(u64, variance::Spread)> {
        curves[i].iter().map(|v| (v.step, f(v))).collect()
    };
    let dsm_own = at(0, |v| v.dsm);
    let oism_own = at(1, |v| v.oism);
    let variance_ratio = serde_json::json!({
        "own_weights": ratios(&dsm_own, &oism_own),
        "at_dsm_weights": ratios(&at(0, |v| v.dsm), &at(0, |v| v.oism)),
        "at_oism_weights": ratios(&at(1, |v| v.dsm), &at(1, |v| v.oism)),
    });
    let reference = serde_json::json!({
        "fresh_data": mmd(&fresh, &test, euclidean_dist_matrix, h)?,
        "fresh_data_local": mmd(&fresh, &test, euclidean_dist_matrix, h / LOCAL_FACTOR)?,
        "fresh_data_nn_dist_train": nn_dist(&fresh, &train),
        "standard_normal": mmd(&gauss, &test, euclidean_dist_matrix, h)?,
        "standard_normal_local": mmd(&gauss, &test, euclidean_dist_matrix, h / LOCAL_FACTOR)?,
        "standardiser": st,
        "variance_batches": p.variance.n_batches,
        "variance_batch_size": p.train.batch_size,
    });

    // Pictures.
    let mut owned: Vec<(String, Vec<[f64; 2]>)> = vec![("held-out data".into(), to_points(&test))];
    owned.extend(outcomes.iter().map(|o| (o.trained.name.clone(), to_points(&o.sampled.points))));
    owned.push(("kernel_smoother".into(), to_points(&ks_samples.points)));
    owned.push(("hermite only".into(), to_points(&hermite_samples.points)));
    let panels: Vec<crate::plot::ScatterPanel> = owned.iter().map(|(n, p)| (n.as_str(), p.as_slice(), None)).collect();
    crate::plot::scatter_panels(
        &run.file("samples.png"),
        &format!("oism/{name}: samples (standardised units)"),
        panels.len(),
        &panels,
    )?;
    let series: Vec<(String, Vec<(u64, f64)>)> = vec![
        ("dsm loss_var".into(), dsm_own.iter().map(|(s, v)| (*s, v.loss_var)).collect()),
        ("oism loss_var".into(), oism_own.iter().map(|(s, v)| (*s, v.loss_var)).collect()),
        ("dsm grad_var".into(), dsm_own.iter().map(|(s, v)| (*s, v.grad_var)).collect()),
        ("oism grad_var".into(), oism_own.iter().map(|(s, v)| (*s, v.grad_var)).collect()),
    ];
    let series_ref: Vec<(&str, &[(u64, f64)])> = series.iter().map(|(n, c)| (n.as_str(), c.as_slice())).collect();
    crate::plot::step_curves(
        &run.file("variance.png"),
        &format!("oism/{name}: variance over {} batches of {} (own weights)", p.variance.n_batches, p.train.batch_size),
        "variance",
        &series_ref,
    )?;

    report(
        &run,
        &format!("oism/{name}"),
        seed,
        &summaries,
        &outcomes,
        vec![("kernel_smoother".to_string(), ks)],
        reference,
        &["mmd_local", "loss_var", "grad_var", "nn_dist_train"],
        "MMD: Gaussian kernel on the Euclidean distance (standardised units)",
    )?;
    println!(
        "kernel_smoother  mmd2 {:.3e}  mmd2_local {:.3e}  test_nll {nll:.4}  t {t:.3e}  bandwidth {sd:.4}",
        ks_mmd.mmd2, ks_local.mmd2
    );
    println!("hermite only     mmd2 {:.3e}  mmd2_local {:.3e}", hermite_mmd.mmd2, hermite_local.mmd2);
    println!("variance ratio oism/dsm (loss_var, grad_var):");
    println!("{:>8} {:>22} {:>22} {:>22}", "step", "own weights", "at dsm weights", "at oism weights");
    for (i, (step, d)) in dsm_own.iter().enumerate() {
        let o = &oism_own[i].1;
        let (cd, co) = (&curves[0][i], &curves[1][i]);
        println!(
            "{step:>8} {:>10.3} {:>11.3} {:>10.3} {:>11.3} {:>10.3} {:>11.3}",
            o.loss_var / d.loss_var,
            o.grad_var / d.grad_var,
            cd.oism.loss_var / cd.dsm.loss_var,
            cd.oism.grad_var / cd.dsm.grad_var,
            co.oism.loss_var / co.dsm.loss_var,
            co.oism.grad_var / co.dsm.grad_var
        );
    }
    let text = std::fs::read_to_string(run.file("summary.json"))?;
    let mut summary: serde_json::Value = serde_json::from_str(&text)?;
    summary["variance_ratio"] = variance_ratio;
    run.write_summary(&summary)?;
    Ok(summary)
}

/// `experiments oism`.
pub fn run_oism(opts: &Options) -> Result<()> {
    let base = OismConfig::default_config();
    let base = if opts.quick { base.quick() } else { base };
    let config = opts.resolve(base, |c, s| c.seed = s)?;
    config.check()?;
    let run = RunDir::create(&opts.out_dir(), &config, &Meta::collect("oism", config.seed, opts.device))?;
    eprintln!("oism: run folder {}", run.path().display());
    let mut problems = serde_json::Map::new();
    for (name, law, p) in [("mixture", Law::Mixture, &config.mixture), ("ring", Law::Ring, &config.ring)] {
        if let Some(p) = p {
            problems.insert(name.into(), run_problem(opts, run.path(), name, config.seed, law, p)?);
        }
    }
    run.write_summary(&serde_json::json!({ "experiment": "oism", "seed": config.seed, "problems": problems }))?;
    println!("\nwrote {}", run.file("summary.json").display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_name_the_field() {
        assert!(OismConfig::default_config().check().is_ok());
        assert!(OismConfig::default_config().quick().check().is_ok());
        let mut c = OismConfig::default_config();
        c.ring.as_mut().unwrap().hermite.degree = 0;
        assert!(c.check().unwrap_err().to_string().contains("ring.hermite.degree"));
        let mut c = OismConfig::default_config();
        c.mixture.as_mut().unwrap().hermite.shrinkage = Some(1.5);
        assert!(c.check().unwrap_err().to_string().contains("mixture.hermite.shrinkage"));
        let mut c = OismConfig::default_config();
        c.mixture.as_mut().unwrap().variance.at = vec![0.5, 1.2];
        assert!(c.check().unwrap_err().to_string().contains("mixture.variance.at"));
        let mut c = OismConfig::default_config();
        c.ring.as_mut().unwrap().train.batch_size = 0;
        assert!(c.check().unwrap_err().to_string().contains("ring.train.batch_size"));
        assert!(OismConfig { seed: 0, mixture: None, ring: None }.check().is_err());
    }

    #[test]
    fn standardised_laws_have_unit_scale_and_the_smoother_score_is_exact_for_vp() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for law in [Law::Mixture, Law::Ring] {
            let x = law.sample(4_000, &mut rng);
            let z = Standardiser::fit(&x).apply(&x);
            let sd = z.std_dim(0, true, false);
            assert!((sd.double_value(&[0]) - 1.0).abs() < 1e-9 && (sd.double_value(&[1]) - 1.0).abs() < 1e-9);
        }
        // VP: the adapter is the OU smoother at OU time -ln alpha_t.
        let data = Tensor::from_slice(&[0.5f64, -0.2, -1.0, 0.3]).reshape([2, 2]);
        let schedule = Schedule::Vp { beta_min: 0.1, beta_max: 20.0 };
        let s = SmootherScore { smoother: OuSmoother::new(&data).unwrap(), schedule };
        let x = Tensor::from_slice(&[0.1f64, 0.4]).reshape([1, 2]);
        let t = 0.3;
        let got = s.score(&x, &Tensor::from_slice(&[t]));
        let want = s.smoother.score(&x, &Tensor::from_slice(&[-schedule.alpha(t).ln()]));
        assert!((got - want).abs().max().double_value(&[]) < 1e-12);
    }
}
