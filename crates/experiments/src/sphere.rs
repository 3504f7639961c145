//! The experiments on S^2: `sphere` (a synthetic von Mises-Fisher mixture) and `earth` (the Earth event
//! data), both MAD (exact score of the noised uniform law on S^2 as base) against plain DSM with the same
//! network, data, steps, batches and seed; MMD with a Gaussian kernel on the great-circle distance against
//! held-out data, the distance to the sphere before projection, the held-out loss, loss curves and an
//! equal-area map of samples against data.
//!
//! `earth` adds the diffusion kernel smoother (no network; method `kernel_smoother`): smoothing time by
//! validation log-likelihood, test NLL in the area measure of the unit sphere (next to the published table),
//! and samples drawn from the smoothed density (a training point moved by the heat kernel) for its MMD.

use crate::cli::Options;
use crate::data::{earth_file, load_earth, load_points, split};
use crate::earth::{published_column, PUBLISHED};
use crate::mad::{em_sampler, report, Compared, Comparison, Method, MethodSummary, Outcome, TrainSettings};
use crate::metrics::{median_bandwidth, mmd, sphere_dist_matrix};
use crate::run::{Meta, RunDir};
use crate::so3::LOCAL_FACTOR;
use anyhow::{bail, Context, Result};
use geom::distributions::{random_vmf_mixture, ManifoldDistribution};
use geom::{Sphere, UniformSampler};
use nalgebra::DVector;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sample::SamplerConfig;
use scores::base::sphere::SphereBase;
use scores::heat::sphere::SphereHeatKernel;
use scores::smoother::bandwidth::{select_time_by_validation, test_nll};
use scores::smoother::sphere::SphereSmoother;
use scores::Schedule;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tch::{Kind, Tensor};
use train::{MlpConfig, OptimConfig, Precision, Weighting};

/// The synthetic data of `sphere`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmfData {
    /// Number of von Mises-Fisher components (equal weights, uniform random mean directions).
    pub n_components: usize,
    /// Concentration of every component.
    pub kappa: f64,
    /// Training points.
    pub n_train: usize,
    /// Held-out points.
    pub n_test: usize,
}

/// The configuration of `sphere` and `earth`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SphereConfig {
    /// The seed of everything: data (or split), initialisation, batches, sampling noise.
    pub seed: u64,
    /// `sphere`: the synthetic data (`null` for `earth`).
    pub data: Option<VmfData>,
    /// `earth`: the data set (`volcano`, `earthquake`, `flood`, `fire`; `null` for `sphere`).
    pub dataset: Option<String>,
    /// `earth`: the folder of the Earth CSV files.
    pub data_dir: Option<PathBuf>,
    /// `earth`: the grid of smoothing times of the kernel smoother (heat-kernel time).
    pub smoother_grid: Vec<f64>,
    /// Training (the same for every method).
    pub train: TrainSettings,
    /// The sampler (the same for every method).
    pub sampler: SamplerConfig,
    /// Samples per method.
    pub n_samples: i64,
    /// Rows of the fixed held-out batch of the evaluation loss.
    pub eval_batch: i64,
    /// MMD kernel bandwidth in radians (`null`: the median pairwise distance of the held-out data).
    pub mmd_bandwidth: Option<f64>,
    /// `sphere` only: train on the unit vectors in this CSV file (3 numbers a row) instead of the synthetic
    /// mixture; 10% of the rows (by the seed) are held out. `data` must then be `null`.
    #[serde(default)]
    pub data_file: Option<PathBuf>,
    /// Project rows of `data_file` that are off S^2 by more than `manifold_tol` instead of refusing them.
    #[serde(default)]
    pub project_data: bool,
    /// Ambient distance to S^2 beyond which a row of `data_file` is off the manifold.
    #[serde(default = "default_tol")]
    pub manifold_tol: f64,
}

fn default_tol() -> f64 {
    1e-6
}

/// The training settings of `sphere`, `earth` and `oism-earth`: width-256 MLP, VE sigma 0.01..3, 10,000
/// steps of 512.
pub(crate) fn train_settings() -> TrainSettings {
    TrainSettings {
        model: MlpConfig { width: 256, depth: 3, ..MlpConfig::default() },
        schedule: Schedule::Ve { sigma_min: 0.01, sigma_max: 3.0 },
        weighting: Weighting::SigmaSquared,
        optim: OptimConfig { lr: 1e-3, warmup_steps: 200, ..OptimConfig::default() },
        precision: Precision::F32,
        steps: 10_000,
        batch_size: 512,
        t_eps: 1e-3,
        checkpoint_every: 1_000,
    }
}

impl SphereConfig {
    /// The default `sphere` run: 8 vMF components of concentration 50, 20,000 training points.
    pub fn default_sphere() -> Self {
        SphereConfig {
            seed: 0,
            data: Some(VmfData { n_components: 8, kappa: 50.0, n_train: 20_000, n_test: 2_000 }),
            dataset: None,
            data_dir: None,
            smoother_grid: Vec::new(),
            train: train_settings(),
            sampler: em_sampler(500),
            n_samples: 2_000,
            eval_batch: 4_096,
            mmd_bandwidth: None,
            data_file: None,
            project_data: false,
            manifold_tol: default_tol(),
        }
    }

    /// The default `earth` run on `dataset`.
    pub fn default_earth(dataset: &str, data_dir: PathBuf) -> Self {
        SphereConfig {
            data: None,
            dataset: Some(dataset.to_string()),
            data_dir: Some(data_dir),
            smoother_grid: (0..13).map(|i| 10f64.powf(-5.0 + 5.0 * i as f64 / 12.0)).collect(),
            ..Self::default_sphere()
        }
    }

    /// The `--quick` variant: fewer points, steps and samples, a smaller network.
    pub fn quick(mut self) -> Self {
        if let Some(d) = &mut self.data {
            d.n_train = 2_000;
            d.n_test = 500;
        }
        if !self.smoother_grid.is_empty() {
            self.smoother_grid = (0..7).map(|i| 10f64.powf(-5.0 + 5.0 * i as f64 / 6.0)).collect();
        }
        self.train.model.width = 128;
        self.train.steps = 1_500;
        self.train.optim.warmup_steps = 50;
        self.train.checkpoint_every = 500;
        self.sampler = em_sampler(100);
        self.n_samples = 500;
        self.eval_batch = 1_024;
        self
    }

    /// Validates every field before any work; errors name the field and its allowed range.
    pub fn check(&self, earth: bool) -> Result<()> {
        if !(self.manifold_tol.is_finite() && self.manifold_tol > 0.0) {
            bail!("invalid config: manifold_tol = {}: expected a positive number", self.manifold_tol);
        }
        match (&self.data, earth) {
            (Some(_), false) if self.data_file.is_some() => {
                bail!("invalid config: data and data_file are both set: set data to null to read the file")
            }
            (None, false) if self.data_file.is_some() => {}
            (_, true) if self.data_file.is_some() => {
                bail!("invalid config: data_file: earth reads its data set from --data-dir (use the sphere experiment)")
            }
            (Some(d), false) => {
                if d.n_components < 1 || d.n_components > 10_000 {
                    bail!("invalid config: data.n_components = {}: expected 1..=10000", d.n_components);
                }
                if !(d.kappa.is_finite() && d.kappa >= 0.0 && d.kappa <= 1e6) {
                    bail!("invalid config: data.kappa = {}: expected a number in [0, 1e6]", d.kappa);
                }
                if d.n_train < 2 || d.n_train > 10_000_000 {
                    bail!("invalid config: data.n_train = {}: expected 2..=10^7", d.n_train);
                }
                if d.n_test < 2 || d.n_test > 100_000 {
                    bail!("invalid config: data.n_test = {}: expected 2..=10^5", d.n_test);
                }
            }
            (None, false) => bail!("invalid config: data is missing (the vMF mixture of the sphere experiment)"),
            (Some(_), true) => bail!("invalid config: data must be null for earth (the data come from the files)"),
            (None, true) => {
                let name = self.dataset.as_deref().unwrap_or("");
                if !["volcano", "earthquake", "flood", "fire"].contains(&name) {
                    bail!("invalid config: dataset = {name:?}: expected volcano, earthquake, flood or fire");
                }
                if self.smoother_grid.is_empty() || self.smoother_grid.iter().any(|t| !(t.is_finite() && *t > 0.0)) {
                    bail!("invalid config: smoother_grid: expected a non-empty list of positive times");
                }
            }
        }
        self.train.check()?;
        self.sampler.check().map_err(|e| anyhow::anyhow!("invalid config: sampler: {e}"))?;
        if !(2..=100_000).contains(&self.n_samples) {
            bail!("invalid config: n_samples = {}: expected 2..=100000", self.n_samples);
        }
        if !(1..=1_000_000).contains(&self.eval_batch) {
            bail!("invalid config: eval_batch = {}: expected 1..=10^6", self.eval_batch);
        }
        if let Some(h) = self.mmd_bandwidth {
            if !(h.is_finite() && h > 0.0) {
                bail!("invalid config: mmd_bandwidth = {h}: expected a positive number or null");
            }
        }
        Ok(())
    }
}

/// Unit vectors to a `[N, 3]` f64 tensor.
pub fn points_to_tensor(rows: &[DVector<f64>]) -> Tensor {
    let flat: Vec<f64> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_slice(&flat).reshape([rows.len() as i64, 3])
}

/// A `[N, 3]` tensor to arrays (for the plots).
pub fn tensor_to_points(t: &Tensor) -> Vec<[f64; 3]> {
    let v = Vec::<f64>::try_from(t.to_kind(Kind::Double).contiguous().flatten(0, -1)).expect("a float tensor");
    v.chunks(3).map(|c| [c[0], c[1], c[2]]).collect()
}

fn comparison<'a>(run: &'a RunDir, config: &SphereConfig, opts: &Options, s2: &'a Sphere) -> Comparison<'a, Sphere> {
    Comparison {
        run,
        manifold: s2,
        point_shape: vec![3],
        train: config.train,
        sampler: config.sampler,
        n_samples: config.n_samples,
        seed: config.seed,
        device: opts.device,
    }
}

/// Trains and samples MAD and DSM on `train`, scores them against `test`; returns the summaries and
/// outcomes.
fn mad_vs_dsm(
    run: &RunDir,
    config: &SphereConfig,
    opts: &Options,
    train: &Tensor,
    test: &Tensor,
    h: f64,
) -> Result<Compared> {
    let s2 = Sphere::new(3)?;
    let cmp = comparison(run, config, opts, &s2);
    let eval = cmp.eval_batch(test, config.eval_batch);
    let methods = [Method::mad("mad", Arc::new(SphereBase::new(3)?)), Method::dsm("dsm")];
    let (mut summaries, mut outcomes) = (Vec::new(), Vec::new());
    for m in &methods {
        let o = cmp.run_method(m, train, &eval)?;
        let score = mmd(&o.sampled.points, test, sphere_dist_matrix, h)?;
        let local = mmd(&o.sampled.points, test, sphere_dist_matrix, h / LOCAL_FACTOR)?;
        let s = MethodSummary::new(&o.trained, &o.sampled, o.eval_loss, score).with("mmd_local", local);
        summaries.push((m.name.clone(), s));
        outcomes.push(o);
    }
    Ok((summaries, outcomes))
}

fn bandwidth(config: &SphereConfig, test: &Tensor) -> Result<f64> {
    match config.mmd_bandwidth {
        Some(h) => Ok(h),
        None => median_bandwidth(&sphere_dist_matrix(test, test)),
    }
}

pub(crate) fn sample_map(
    run: &RunDir,
    title: &str,
    data: &Tensor,
    extra: &[(&str, &Tensor)],
    outcomes: &[Outcome],
) -> Result<()> {
    let mut owned: Vec<(String, Vec<[f64; 3]>)> = vec![("held-out data".to_string(), tensor_to_points(data))];
    owned.extend(extra.iter().map(|(n, t)| (n.to_string(), tensor_to_points(t))));
    owned.extend(outcomes.iter().map(|o| (o.trained.name.clone(), tensor_to_points(&o.sampled.points))));
    let panels: Vec<(&str, &[[f64; 3]])> = owned.iter().map(|(n, p)| (n.as_str(), p.as_slice())).collect();
    crate::plot::sphere_panels(&run.file("samples.png"), title, &panels)
}

/// `experiments sphere`.
pub fn run_sphere(opts: &Options) -> Result<()> {
    let base = SphereConfig::default_sphere();
    let base = if opts.quick { base.quick() } else { base };
    let config = opts.resolve(base, |c, s| c.seed = s)?;
    config.check(false)?;
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let s2 = Sphere::new(3)?;
    let (mixture, train, test) = match (&config.data_file, config.data) {
        (Some(path), _) => {
            let rows = load_points(&s2, path, config.manifold_tol, config.project_data)?;
            let (train, test) = crate::so3::holdout(&rows, config.seed)
                .with_context(|| format!("{}: too few rows to hold out a test set", path.display()))?;
            (None, points_to_tensor(&train), points_to_tensor(&test))
        }
        (None, Some(d)) => {
            let mixture = random_vmf_mixture(3, d.n_components, d.kappa, &mut rng)?;
            let train = points_to_tensor(&mixture.sample_n(d.n_train, &mut rng));
            let test = points_to_tensor(&mixture.sample_n(d.n_test, &mut rng));
            (Some(mixture), train, test)
        }
        (None, None) => unreachable!("checked: data or data_file"),
    };
    let run = RunDir::create(&opts.out_dir(), &config, &Meta::collect("sphere", config.seed, opts.device))?;
    eprintln!("sphere: run folder {}", run.path().display());
    let h = bandwidth(&config, &test)?;
    let (summaries, outcomes) = mad_vs_dsm(&run, &config, opts, &train, &test, h)?;
    let n = config.n_samples as usize;
    let uniform: Vec<DVector<f64>> = (0..n).map(|_| s2.sample_uniform(&mut rng)).collect();
    let mut reference = serde_json::json!({
        "uniform": mmd(&points_to_tensor(&uniform), &test, sphere_dist_matrix, h)?,
    });
    if let Some(mixture) = &mixture {
        let fresh = points_to_tensor(&mixture.sample_n(n, &mut rng));
        reference["fresh_data"] = serde_json::to_value(mmd(&fresh, &test, sphere_dist_matrix, h)?)?;
        reference["fresh_data_local"] =
            serde_json::to_value(mmd(&fresh, &test, sphere_dist_matrix, h / LOCAL_FACTOR)?)?;
    }
    sample_map(&run, "sphere: samples on an equal-area map", &test, &[], &outcomes)?;
    report(
        &run,
        "sphere",
        config.seed,
        &summaries,
        &outcomes,
        Vec::new(),
        reference,
        &["mmd_local"],
        "MMD: Gaussian kernel on the great-circle distance",
    )
}

/// `experiments earth --dataset NAME [--data-dir DIR]`.
pub fn run_earth(opts: &Options) -> Result<()> {
    let dataset = opts.extra("--dataset").unwrap_or("fire").to_string();
    let data_dir = PathBuf::from(opts.extra("--data-dir").unwrap_or("../shared/data/earth"));
    let base = SphereConfig::default_earth(&dataset, data_dir);
    let base = if opts.quick { base.quick() } else { base };
    let config = opts.resolve(base, |c, s| c.seed = s)?;
    config.check(true)?;
    let dataset = config.dataset.clone().expect("checked");
    let data_dir = config.data_dir.clone().unwrap_or_else(|| PathBuf::from("../shared/data/earth"));
    let file = earth_file(&data_dir, &dataset)?;
    if !file.is_file() {
        bail!("cannot find {} (pass the folder of the Earth data with --data-dir)", file.display());
    }
    let rows = load_earth(&data_dir, &dataset)?;
    let s = split(&rows, 0.8, 0.1, config.seed)?;
    let (train, valid, test) = (points_to_tensor(&s.train), points_to_tensor(&s.valid), points_to_tensor(&s.test));
    let run = RunDir::create(&opts.out_dir(), &config, &Meta::collect("earth", config.seed, opts.device))?;
    eprintln!("earth/{dataset}: {} rows, run folder {}", rows.len(), run.path().display());
    let h = bandwidth(&config, &test)?;
    let (summaries, outcomes) = mad_vs_dsm(&run, &config, opts, &train, &test, h)?;

    // The kernel smoother: t by validation, test NLL, and samples from the smoothed density.
    let start = Instant::now();
    let smoother = SphereSmoother::new(&train).context("building the kernel smoother")?;
    let (t, _) = select_time_by_validation(&smoother, &valid, &config.smoother_grid)
        .with_context(|| format!("selecting the smoothing time on {dataset}"))?;
    let nll = test_nll(&smoother, &test, t)?;
    let heat = SphereHeatKernel::new(2)?;
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let smoothed: Vec<DVector<f64>> = (0..config.n_samples as usize)
        .map(|_| {
            let i = rand::Rng::random_range(&mut rng, 0..s.train.len());
            heat.sample(&s.train[i], t, &mut rng)
        })
        .collect();
    let smoothed = points_to_tensor(&smoothed);
    let seconds = start.elapsed().as_secs_f64();
    let ks = serde_json::json!({
        "test_nll": nll, "t": t, "mmd": mmd(&smoothed, &test, sphere_dist_matrix, h)?, "fit_seconds": seconds,
        "dist_to_manifold": 0.0,
    });
    eprintln!("kernel_smoother: t = {t:.3e}, test NLL = {nll:.3} (area measure), {seconds:.1} s");
    let published: serde_json::Map<String, serde_json::Value> = match published_column(&dataset) {
        Some(c) => PUBLISHED.iter().map(|(m, row)| (m.to_string(), serde_json::json!(row[c]))).collect(),
        None => serde_json::Map::new(),
    };
    let reference = serde_json::json!({
        "dataset": dataset, "n_rows": rows.len(), "published_test_nll": published,
    });
    sample_map(
        &run,
        &format!("earth/{dataset}: samples on an equal-area map"),
        &test,
        &[("kernel_smoother", &smoothed)],
        &outcomes,
    )?;
    report(
        &run,
        "earth",
        config.seed,
        &summaries,
        &outcomes,
        vec![("kernel_smoother".to_string(), ks)],
        reference,
        &["mmd_local"],
        "MMD: Gaussian kernel on the great-circle distance",
    )?;
    println!("kernel_smoother: test NLL {nll:.3} (area measure) at t = {t:.3e}; MMD in summary.json");
    for (m, v) in &published {
        println!("published {m:<32} test NLL {v}");
    }
    Ok(())
}
