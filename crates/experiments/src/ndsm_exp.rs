//! The `ndsm` experiment (MATH.md section 7): DSM against nonlinear DSM without control variates, with the
//! exact control variates and with the neural control variate, on imbalanced mixtures in the plane.
//!
//! Problems (each a complete run folder of its own under the run folder, like `discrete`):
//!
//! - `imbalanced`: two isotropic Gaussians at (-1.5, 0) and (1.5, 0), standard deviation 0.4, weights
//!   0.9 / 0.1; `pi` is fitted with k = 2 components (the true number);
//! - `ring`: eight isotropic Gaussians on the circle of radius 2, standard deviation 0.3, weights 0.3, 0.2,
//!   0.15, 0.1, 0.08, 0.07, 0.05, 0.05 (counter-clockwise from (2, 0)); `pi` is fitted with k = 4
//!   components, fewer than the true modes, so that `pi` alone cannot reproduce the law;
//! - `ring_small`: the ring with 200 training points.
//!
//! `pi` is a Gaussian mixture fitted by EM ([`scores::gmm::fit_em_t`], k-means++ start seeded by the run's
//! seed) to the training data. The methods share the network, its initialisation, the optimiser, the steps,
//! the batch size, the time grid and the seed:
//!
//! - `dsm`: DSM on the matching linear process `dX = -beta X dt + sqrt(2 beta) dW` (the NDSM process with
//!   `pi = N(0, I)`, i.e. VP with `2 beta`), sampled by the reverse SDE on the same grid from N(0, I);
//! - `ndsm`, `ndsm_cv`, `ndsm_ncv`: NDSM with no, the exact, and the neural control variate (the
//!   [`train::ndsm::NeuralCvForm::OnExact`] form, the one that can reduce the gradient's variance), sampled
//!   by the reverse SDE from `pi`.
//!
//! Metrics per method: `final_loss`, `mmd` (Gaussian kernel on the Euclidean distance, median bandwidth of
//! the held-out data), `mode_weight_error` (every sample goes to its nearest true mode; the L1 distance
//! `sum_k |w_hat_k - w_k|` between the sample's mode frequencies and the true weights, twice the total
//! variation), `mode_weights`, the estimator's `loss_var` and `grad_var` at fixed parameters, their
//! `variance_ratio` to `ndsm` and the `variance_curve`, `train_seconds`, and `dist_to_manifold` (0: the
//! data live in R^2). The variances are measured for every estimator at the *same* parameters: the score
//! network (current weights) and the neural control variate of the `ndsm_ncv` run at the steps of
//! `variance_fractions`, on the same batches ([`train::ndsm::estimator_variance`]).
//!
//! `ndsm_cv` and `ndsm_ncv` train identically: in the on-exact form the learned term `c_phi(mu_n, t)` does not
//! depend on the score network's parameters, so it changes the loss value (and its variance) but not the
//! gradient; with the same initialisation and batches the two runs take bit-identical steps and draw the same
//! samples. The neural control variate can lower `loss_var` only.
//!
//! Checkpoints: the final EMA weights, `checkpoints/<method>/weights.safetensors` (written to a temporary
//! file, then renamed), and the complete training state every `checkpoint_every` steps and at the end,
//! `checkpoints/<method>/step-<k>/` ([`methods`]): running again with the same `--out` resumes every method
//! from its newest checkpoint and gives the same numbers as an uninterrupted run.

pub mod methods;
mod report;

use self::methods::{default_optim, standard_normal, train_method, MethodKind, Trained, VarianceProbe};
use crate::cli::Options;
use crate::metrics::{empirical_probs, euclidean_dist_matrix, median_bandwidth_of, mmd};
use crate::run::{Meta, RunDir};
use anyhow::{bail, Context, Result};
use nalgebra::{DMatrix, DVector};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use scores::gmm::{fit_em_t, EmFit, GaussianMixture, GmmConfig};
use serde::{Deserialize, Serialize};
use std::time::Instant;
use tch::{Device, Kind, Tensor};
use train::ndsm::{reverse_sample, NdsmConfig, NdsmTrainConfig, NdsmWeighting, NeuralCvConfig, NeuralCvForm};
use train::{MlpConfig, OptimConfig, Precision};

/// One problem's configuration (the target law is fixed by the problem's name; module doc).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProblemConfig {
    /// Training points drawn from the target (2 ..= 10^7).
    pub n_train: usize,
    /// Held-out points: the MMD reference and its bandwidth (2 ..= 10^5).
    pub n_test: usize,
    /// Components of `pi` (1 ..= n_train).
    pub k: usize,
    /// EM iterations at most (>= 1).
    pub em_max_iter: usize,
    /// Eigenvalue floor of every covariance of `pi` (> 0).
    pub em_cov_floor: f64,
    /// The score network (the same for every method).
    pub model: MlpConfig,
    /// The forward SDE and its grid (the same for every method).
    pub sde: NdsmConfig,
    /// AdamW, schedule, clipping and EMA.
    pub optim: OptimConfig,
    /// The loss weight.
    pub weighting: NdsmWeighting,
    /// Precision of the networks and the data they see.
    pub precision: Precision,
    /// Optimiser steps per method (>= 1).
    pub steps: u64,
    /// Transitions (DSM: points) per batch (>= 1).
    pub batch_size: i64,
    /// The network of the neural control variate.
    pub neural_cv_model: MlpConfig,
    /// Its optimiser (constant learning rate `lr`, clipping).
    pub neural_cv_optim: OptimConfig,
    /// Fractions of training (each in [0, 1]) at which the estimator variance is measured.
    pub variance_fractions: Vec<f64>,
    /// Rows per batch of the variance measurement (>= 1).
    pub variance_batch_size: i64,
    /// Batches of the variance measurement (>= 2).
    pub variance_n_batches: usize,
    /// Samples per method (2 ..= 10^6).
    pub n_samples: i64,
    /// Steps between checkpoints of the training state (0: only at the end); they do not change the numbers.
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
}

/// The configuration of `ndsm`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NdsmExpConfig {
    /// The seed of everything.
    pub seed: u64,
    /// Two Gaussians, weights 0.9 / 0.1 (`null` to skip).
    pub imbalanced: Option<ProblemConfig>,
    /// Eight modes on a circle with unequal weights (`null` to skip).
    pub ring: Option<ProblemConfig>,
    /// The ring with a small training set (`null` to skip).
    pub ring_small: Option<ProblemConfig>,
}

/// The default [`ProblemConfig::checkpoint_every`]: 100 steps.
fn default_checkpoint_every() -> u64 {
    100
}

fn problem(n_train: usize, k: usize) -> ProblemConfig {
    ProblemConfig {
        n_train,
        n_test: 2_000,
        k,
        em_max_iter: 500,
        em_cov_floor: 1e-4,
        model: MlpConfig { width: 128, depth: 3, ..MlpConfig::default() },
        sde: NdsmConfig { beta_min: 0.1, beta_max: 10.0, n_steps: 200 },
        optim: default_optim(),
        weighting: NdsmWeighting::SigmaSquared,
        precision: Precision::F32,
        steps: 1_200,
        batch_size: 256,
        neural_cv_model: MlpConfig { width: 64, depth: 2, ..MlpConfig::default() },
        neural_cv_optim: OptimConfig {
            lr: 1e-3,
            weight_decay: 0.0,
            warmup_steps: 0,
            grad_clip: Some(10.0),
            ..OptimConfig::default()
        },
        variance_fractions: vec![0.0, 0.1, 0.25, 0.5, 0.75, 1.0],
        variance_batch_size: 256,
        variance_n_batches: 24,
        n_samples: 2_000,
        checkpoint_every: default_checkpoint_every(),
    }
}

impl NdsmExpConfig {
    /// The default run: the three problems, 1,200 steps of 256 transitions, beta from 0.1 to 10 on a 200-step
    /// grid (fine enough for the exact control variates to pay off where the score varies slowly).
    pub fn default_config() -> Self {
        NdsmExpConfig {
            seed: 0,
            imbalanced: Some(problem(5_000, 2)),
            ring: Some(problem(5_000, 4)),
            ring_small: Some(problem(200, 4)),
        }
    }

    /// The `--quick` variant: smaller networks, 200 steps, beta up to 5 on a 100-step grid, an EMA decay of
    /// 0.98, fewer samples and variance batches.
    pub fn quick(mut self) -> Self {
        for p in [&mut self.imbalanced, &mut self.ring, &mut self.ring_small].into_iter().flatten() {
            p.n_train = p.n_train.min(1_000);
            p.n_test = 500;
            p.model.width = 64;
            p.sde = NdsmConfig { beta_min: 0.1, beta_max: 5.0, n_steps: 100 };
            p.steps = 200;
            p.batch_size = 128;
            p.optim.warmup_steps = 20;
            p.optim.ema_decay = 0.98;
            p.neural_cv_model.width = 32;
            p.variance_fractions = vec![0.0, 1.0];
            p.variance_batch_size = 128;
            p.variance_n_batches = 6;
            p.n_samples = 500;
        }
        self
    }

    /// The problems that run, by name.
    pub fn problems(&self) -> Vec<(&'static str, &ProblemConfig)> {
        [("imbalanced", &self.imbalanced), ("ring", &self.ring), ("ring_small", &self.ring_small)]
            .into_iter()
            .filter_map(|(n, p)| p.as_ref().map(|p| (n, p)))
            .collect()
    }

    /// Validates every field before any work; errors name the field (`<problem>.<field>`) and its range.
    pub fn check(&self) -> Result<()> {
        if self.problems().is_empty() {
            bail!("invalid config: imbalanced, ring and ring_small are all null: nothing to run");
        }
        for (name, p) in self.problems() {
            p.check(name)?;
        }
        Ok(())
    }
}

impl ProblemConfig {
    /// Validates the fields of the problem `name`.
    pub fn check(&self, name: &str) -> Result<()> {
        let invalid = |field: &str, value: &dyn std::fmt::Display, expected: &str| -> anyhow::Error {
            anyhow::anyhow!("invalid config: {name}.{field} = {value} is invalid: expected {expected}")
        };
        if !(2..=10_000_000).contains(&self.n_train) {
            return Err(invalid("n_train", &self.n_train, ">= 2 and <= 10^7"));
        }
        if !(2..=100_000).contains(&self.n_test) {
            return Err(invalid("n_test", &self.n_test, ">= 2 and <= 10^5"));
        }
        if self.k < 1 || self.k > self.n_train {
            return Err(invalid("k", &self.k, &format!(">= 1 and <= n_train ({})", self.n_train)));
        }
        let gmm = GmmConfig { max_iter: self.em_max_iter, tol: 1e-8, cov_floor: self.em_cov_floor, seed: 0 };
        gmm.check().map_err(|e| {
            anyhow::anyhow!("invalid config: {name}.{}", e.to_string().replace("gmm.max_iter", "em_max_iter"))
        })?;
        if !(self.em_cov_floor.is_finite() && self.em_cov_floor > 0.0) {
            return Err(invalid("em_cov_floor", &self.em_cov_floor, "a finite number > 0"));
        }
        self.train_config(0).check().map_err(|e| anyhow::anyhow!("invalid config: {name}.{e}"))?;
        self.neural_cv_model.check().map_err(|e| anyhow::anyhow!("invalid config: {name}.neural_cv_{e}"))?;
        self.neural_cv_optim.check().map_err(|e| anyhow::anyhow!("invalid config: {name}.neural_cv_{e}"))?;
        if self.variance_fractions.is_empty() {
            return Err(invalid("variance_fractions", &"[]", "at least one fraction in [0, 1]"));
        }
        if let Some(f) = self.variance_fractions.iter().find(|f| !(0.0..=1.0).contains(*f)) {
            return Err(invalid("variance_fractions", f, "fractions in [0, 1]"));
        }
        if self.variance_batch_size < 1 {
            return Err(invalid("variance_batch_size", &self.variance_batch_size, ">= 1"));
        }
        if self.variance_n_batches < 2 {
            return Err(invalid("variance_n_batches", &self.variance_n_batches, ">= 2"));
        }
        if !(2..=1_000_000).contains(&self.n_samples) {
            return Err(invalid("n_samples", &self.n_samples, ">= 2 and <= 10^6"));
        }
        Ok(())
    }

    /// The training configuration of a method (its control variate is set by [`methods::train_method`]).
    pub fn train_config(&self, seed: u64) -> NdsmTrainConfig {
        NdsmTrainConfig {
            model: self.model,
            sde: self.sde,
            optim: self.optim,
            weighting: self.weighting,
            control_variate: train::ndsm::NdsmCvChoice::None,
            steps: self.steps,
            batch_size: self.batch_size,
            seed,
            precision: self.precision,
        }
    }

    /// The neural control variate (the on-exact form, initialised from a seed derived from `seed`).
    pub fn neural_cv(&self, seed: u64) -> NeuralCvConfig {
        NeuralCvConfig {
            model: self.neural_cv_model,
            form: NeuralCvForm::OnExact,
            optim: self.neural_cv_optim,
            seed: sub_seed(seed, 3),
        }
    }

    /// The training steps at which the variance is measured (sorted, without repeats).
    pub fn variance_steps(&self) -> Vec<u64> {
        let mut s: Vec<u64> = self.variance_fractions.iter().map(|f| (f * self.steps as f64).round() as u64).collect();
        s.sort_unstable();
        s.dedup();
        s
    }
}

/// A sub-seed of the run's seed for the purpose `tag` (distinct tags give unrelated seeds).
fn sub_seed(seed: u64, tag: u64) -> u64 {
    // SplitMix64 finaliser of seed + tag * golden ratio.
    let mut z = seed.wrapping_add(tag.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The true law of a problem: isotropic Gaussians in the plane.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// Mode weights (summing to 1).
    pub weights: Vec<f64>,
    /// Mode centres.
    pub means: Vec<[f64; 2]>,
    /// Standard deviation of every mode.
    pub std: f64,
}

impl Target {
    /// The target of the problem `name` (module doc).
    pub fn of(name: &str) -> Result<Target> {
        match name {
            "imbalanced" => Ok(Target { weights: vec![0.9, 0.1], means: vec![[-1.5, 0.0], [1.5, 0.0]], std: 0.4 }),
            "ring" | "ring_small" => {
                let weights = vec![0.3, 0.2, 0.15, 0.1, 0.08, 0.07, 0.05, 0.05];
                let means = (0..8)
                    .map(|i| {
                        let a = std::f64::consts::TAU * i as f64 / 8.0;
                        [2.0 * a.cos(), 2.0 * a.sin()]
                    })
                    .collect();
                Ok(Target { weights, means, std: 0.3 })
            }
            other => bail!("unknown ndsm problem `{other}`"),
        }
    }

    /// The law as a mixture.
    pub fn mixture(&self) -> Result<GaussianMixture> {
        let means = self.means.iter().map(|m| DVector::from_column_slice(m)).collect();
        let covs = self.means.iter().map(|_| DMatrix::identity(2, 2) * self.std.powi(2)).collect();
        Ok(GaussianMixture::new(self.weights.clone(), means, covs)?)
    }

    /// The index of the nearest mode centre of every row of `x: [n, 2]`.
    pub fn nearest_mode(&self, x: &Tensor) -> Vec<usize> {
        let centres: Vec<f64> = self.means.iter().flat_map(|m| m.iter().copied()).collect();
        let c = Tensor::from_slice(&centres).reshape([self.means.len() as i64, 2]);
        let d = euclidean_dist_matrix(&x.to_kind(Kind::Double).to_device(Device::Cpu), &c);
        Vec::<i64>::try_from(d.argmin(1, false)).expect("indices").into_iter().map(|i| i as usize).collect()
    }

    /// `(frequencies of the nearest modes, L1 distance to the weights)` of the rows of `x: [n, 2]`.
    pub fn mode_weight_error(&self, x: &Tensor) -> (Vec<f64>, f64) {
        let p = empirical_probs(&self.nearest_mode(x), self.weights.len());
        let l1 = p.iter().zip(&self.weights).map(|(a, b)| (a - b).abs()).sum();
        (p, l1)
    }
}

/// A problem ready to run: data and `pi`.
struct Prepared<'a> {
    name: &'static str,
    config: &'a ProblemConfig,
    target: Target,
    train: Tensor,
    test: Tensor,
    em: EmFit,
    em_seconds: f64,
    /// `beta_max h lambda_max(Sigma_k^-1)` of `pi`: the exact control variates pay off where twice this
    /// (at the step's beta) is below 1.
    grid_curvature: f64,
}

/// Draws the data and fits `pi`; refuses a grid too coarse for `pi` (the explicit step's stability).
fn prepare<'a>(name: &'static str, p: &'a ProblemConfig, seed: u64) -> Result<Prepared<'a>> {
    let target = Target::of(name)?;
    let law = target.mixture()?;
    let mut rng = ChaCha8Rng::seed_from_u64(sub_seed(seed, 1));
    let train = law.sample_t(p.n_train, &mut rng, Kind::Double, Device::Cpu);
    let test = law.sample_t(p.n_test, &mut rng, Kind::Double, Device::Cpu);
    let gmm = GmmConfig { max_iter: p.em_max_iter, tol: 1e-8, cov_floor: p.em_cov_floor, seed: sub_seed(seed, 2) };
    let start = Instant::now();
    let em = fit_em_t(&train, p.k, &gmm).with_context(|| format!("{name}: EM fit of pi"))?;
    let em_seconds = start.elapsed().as_secs_f64();
    // 2 beta_max h lambda_max(Sigma^-1) must stay well below 2 (MATH.md 7, train::ndsm module doc).
    let min_eig = em
        .mixture
        .covariances()
        .iter()
        .map(|c| c.clone().symmetric_eigen().eigenvalues.min())
        .fold(f64::INFINITY, f64::min);
    let grid_curvature = p.sde.beta_max / p.sde.n_steps as f64 / min_eig;
    if grid_curvature > 1.0 {
        bail!(
            "invalid config: {name}.sde.n_steps = {} is too coarse for pi: beta_max h / (smallest covariance \
             eigenvalue {min_eig:.3e}) = {grid_curvature:.3} must be <= 1 (half the stability limit of the \
             explicit step); raise n_steps or lower beta_max",
            p.sde.n_steps
        );
    }
    Ok(Prepared { name, config: p, target, train, test, em, em_seconds, grid_curvature })
}

/// `[n, 2]` rows as points, f64.
fn rows(x: &Tensor) -> Vec<[f64; 2]> {
    let v = Vec::<f64>::try_from(x.to_kind(Kind::Double).to_device(Device::Cpu).contiguous().view([-1]))
        .expect("a float tensor");
    v.chunks_exact(2).map(|c| [c[0], c[1]]).collect()
}

/// Samples of one method, with what they cost.
struct Sampled {
    points: Tensor,
    n_non_finite: i64,
    seconds: f64,
}

fn sample_method(trained: &Trained, p: &Prepared, pi: &GaussianMixture, seed: u64, device: Device) -> Result<Sampled> {
    let kind = p.config.precision.kind();
    let sde = train::ndsm::NdsmSde::new(&p.config.sde)?;
    let net = &trained.ema;
    let score = |x: &Tensor, t: &Tensor| net.score(&sde, x, t);
    let mut rng = ChaCha8Rng::seed_from_u64(sub_seed(seed, 4));
    let start = Instant::now();
    let x = reverse_sample(&score, &sde, pi, p.config.n_samples, &mut rng, kind, device);
    let seconds = start.elapsed().as_secs_f64();
    let x = x.to_kind(Kind::Double).to_device(Device::Cpu);
    let finite = x.isfinite().all_dim(1, false);
    let n_non_finite = finite.logical_not().sum(Kind::Int64).int64_value(&[]);
    let points = x.index_select(0, &finite.nonzero().squeeze_dim(1));
    if points.size()[0] < 2 {
        bail!("{}/{}: fewer than 2 finite samples (the sampler diverged)", p.name, trained.kind.name());
    }
    Ok(Sampled { points, n_non_finite, seconds })
}

fn run_problem(opts: &Options, parent: &std::path::Path, seed: u64, p: &Prepared) -> Result<serde_json::Value> {
    let cfg = p.config;
    let run =
        RunDir::create(&parent.join(p.name), cfg, &Meta::collect(&format!("ndsm/{}", p.name), seed, opts.device))?;
    eprintln!(
        "ndsm/{}: pi = {} components by EM ({} iterations, mean log-likelihood {:.4}, {:.2} s)",
        p.name,
        p.em.mixture.n_components(),
        p.em.n_iter,
        p.em.log_likelihood.last().copied().unwrap_or(f64::NAN),
        p.em_seconds
    );
    let pi = &p.em.mixture;
    let std_normal = standard_normal(2)?;
    let h = median_bandwidth_of(&p.test, euclidean_dist_matrix, 2_000)?;
    let window = report::data_window(&rows(&p.test));
    let variance_steps = cfg.variance_steps();
    let probe = VarianceProbe {
        steps: &variance_steps,
        config: train::ndsm::VarianceConfig {
            batch_size: cfg.variance_batch_size,
            n_batches: cfg.variance_n_batches,
            weighting: cfg.weighting,
            seed: sub_seed(seed, 5),
        },
    };
    let mut methods = Vec::new();
    for kind in MethodKind::ALL {
        let probe = (kind == MethodKind::NdsmNcv).then_some(probe);
        let config = cfg.train_config(seed);
        let trained = train_method(
            &run,
            kind,
            config,
            cfg.neural_cv(seed),
            pi,
            &p.train,
            probe,
            cfg.checkpoint_every,
            opts.device,
        )?;
        let law = if kind == MethodKind::Dsm { &std_normal } else { pi };
        eprintln!("{}: sample", kind.name());
        let sampled = sample_method(&trained, p, law, seed, opts.device)?;
        let score = mmd(&sampled.points, &p.test, euclidean_dist_matrix, h)?;
        let (weights, err) = p.target.mode_weight_error(&sampled.points);
        let pts = rows(&sampled.points);
        let outside = pts.iter().filter(|q| !report::in_window(&window, q)).count() as f64 / pts.len() as f64;
        methods.push(report::MethodResult {
            trained,
            sampled: sampled.points,
            n_non_finite: sampled.n_non_finite,
            sample_seconds: sampled.seconds,
            mmd: score,
            mode_weights: weights,
            mode_weight_error: err,
            outside_fraction: outside,
        });
    }
    // References: fresh samples of the true law (the floor) and samples of pi alone.
    let mut rng = ChaCha8Rng::seed_from_u64(sub_seed(seed, 6));
    let fresh = p.target.mixture()?.sample_t(cfg.n_samples as usize, &mut rng, Kind::Double, Device::Cpu);
    let pi_samples = pi.sample_t(cfg.n_samples as usize, &mut rng, Kind::Double, Device::Cpu);
    let reference = [("fresh_data", &fresh), ("pi", &pi_samples)]
        .into_iter()
        .map(|(n, x)| {
            let m = mmd(x, &p.test, euclidean_dist_matrix, h)?;
            let (w, e) = p.target.mode_weight_error(x);
            Ok((n.to_string(), serde_json::json!({"mmd": m, "mode_weight_error": e, "mode_weights": w})))
        })
        .collect::<Result<serde_json::Map<_, _>>>()?;
    report::write(&run, p, seed, &methods, reference, &rows(&p.test), &rows(&pi_samples))
}

/// `experiments ndsm`.
pub fn run_ndsm(opts: &Options) -> Result<()> {
    let base = NdsmExpConfig::default_config();
    let base = if opts.quick { base.quick() } else { base };
    let config = opts.resolve(base, |c, s| c.seed = s)?;
    config.check()?;
    let prepared: Vec<Prepared> =
        config.problems().into_iter().map(|(n, p)| prepare(n, p, config.seed)).collect::<Result<_>>()?;
    let run = RunDir::create(&opts.out_dir(), &config, &Meta::collect("ndsm", config.seed, opts.device))?;
    eprintln!("ndsm: run folder {} (an interrupted run resumes from its checkpoints)", run.path().display());
    let mut problems = serde_json::Map::new();
    for p in &prepared {
        let s = run_problem(opts, run.path(), config.seed, p)?;
        problems.insert(p.name.to_string(), s);
    }
    run.write_summary(&serde_json::json!({ "experiment": "ndsm", "seed": config.seed, "problems": problems }))?;
    println!("\nwrote {}", run.file("summary.json").display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_name_the_field() {
        NdsmExpConfig::default_config().check().unwrap();
        NdsmExpConfig::default_config().quick().check().unwrap();
        let err = |c: &NdsmExpConfig| c.check().unwrap_err().to_string();
        let mut c = NdsmExpConfig::default_config();
        c.ring_small.as_mut().unwrap().k = 201;
        assert!(err(&c).contains("ring_small.k = 201"), "{}", err(&c));
        let mut c = NdsmExpConfig::default_config();
        c.ring.as_mut().unwrap().batch_size = 0;
        assert!(err(&c).contains("ring.batch_size"), "{}", err(&c));
        let mut c = NdsmExpConfig::default_config();
        c.imbalanced.as_mut().unwrap().sde.n_steps = 0;
        assert!(err(&c).contains("imbalanced.sde.n_steps"), "{}", err(&c));
        let mut c = NdsmExpConfig::default_config();
        c.imbalanced.as_mut().unwrap().neural_cv_model.width = 0;
        assert!(err(&c).contains("imbalanced.neural_cv_model.width"), "{}", err(&c));
        let mut c = NdsmExpConfig::default_config();
        c.ring.as_mut().unwrap().variance_fractions = vec![0.5, 1.5];
        assert!(err(&c).contains("ring.variance_fractions = 1.5"), "{}", err(&c));
        let mut c = NdsmExpConfig::default_config();
        c.ring.as_mut().unwrap().variance_n_batches = 1;
        assert!(err(&c).contains("ring.variance_n_batches"), "{}", err(&c));
        let none = NdsmExpConfig { seed: 0, imbalanced: None, ring: None, ring_small: None };
        assert!(none.check().is_err());
        // Unknown fields are refused with their path.
        let e = format!(
            "{:#}",
            crate::cli::merge_json(NdsmExpConfig::default_config(), r#"{"ring": {"kk": 3}}"#).unwrap_err()
        );
        assert!(e.contains("kk"), "{e}");
    }

    #[test]
    fn targets_and_mode_weights() {
        let t = Target::of("ring").unwrap();
        assert!((t.weights.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        let x = Tensor::from_slice(&[2.1, 0.0, 0.0, 1.9, 0.1, 2.0, -2.0, 0.0]).reshape([4, 2]);
        assert_eq!(t.nearest_mode(&x), vec![0, 2, 2, 4]);
        let (p, e) = t.mode_weight_error(&x);
        assert_eq!(p[2], 0.5);
        assert!((e - p.iter().zip(&t.weights).map(|(a, b)| (a - b).abs()).sum::<f64>()).abs() < 1e-12);
        assert!(Target::of("moons").is_err());
        assert_ne!(sub_seed(0, 1), sub_seed(0, 2));
    }

    #[test]
    fn variance_steps_are_sorted_and_unique() {
        let mut p = problem(100, 2);
        p.steps = 10;
        p.variance_fractions = vec![1.0, 0.0, 0.01, 0.5];
        assert_eq!(p.variance_steps(), vec![0, 5, 10]);
    }
}
