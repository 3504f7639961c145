//! `oism-earth --dataset NAME`: operator-informed score matching on the S^2 Earth data (issue 5, part 2).
//!
//! Four methods with the same data split, schedule, sampler and seed:
//! - `dsm`: plain denoising score matching of the ambient noising x = alpha m + sigma eps in R^3;
//! - `mad`: the same network on the residual to the uniform sphere base (as in `earth`): OISM's base
//!   contains that one, so `mad` tells what the spectral part adds on top of it;
//! - `oism`: the same network trained on the residual to [`SphereSpectralBase`], the exact ambient score
//!   of that noising when m follows the spherical-harmonic density estimate (degree L, heat-smoothed to
//!   time tau, shrunk toward the uniform law): the closed-form spectral estimator of MATH.md section 6
//!   used as the baseline of the score model;
//! - `kernel_smoother`: the diffusion kernel smoother (no network, MATH.md section 5), heat time by
//!   validation, with its test NLL and samples of the smoothed density.
//!
//! tau is chosen by validation log-likelihood of the spectral density itself over a log grid from the
//! smallest time the degree resolves up to 1 (or fixed in the config); the spectral density's own test
//! NLL is reported as `spectral_only.test_nll`, and reverse-SDE samples of its base score alone (no
//! network) as `spectral_only.mmd`. The two networks have no closed-form density, so they get no test NLL
//! (it would need a probability-flow likelihood).
//!
//! The Earth data have no fresh draws, so the MMD floor is `reference.validation_split`: the validation
//! split against the test split (as many points as the validation split holds, not `n_samples`).
//!
//! Per network: the common [`crate::mad::MethodSummary`] fields, `mmd_local` (bandwidth / 8), `loss_var` and `grad_var`
//! of the method's own estimator at its final weights over R fixed batches, and `variance_curve` (see
//! [`super::variance`]; for `mad`, the `oism` entries of `variance_both` are the MAD estimator with the
//! uniform base); the top-level `variance_ratio` holds the oism / dsm ratios at each measured step and
//! `variance_ratio_mad` the mad / dsm ones.

use super::variance::{probe_batches, train_with_variance, Probe, VariancePoint};
use super::{check_shared, network_summary, variance_steps, VarianceSettings};
use crate::cli::Options;
use crate::data::{earth_file, load_earth, split};
use crate::mad::{
    em_sampler, eval_batch, eval_loss, report, sample_method, sample_score, Method, Outcome, SampleTarget,
    TrainSettings,
};
use crate::metrics::{median_bandwidth, mmd, sphere_dist_matrix};
use crate::run::{Meta, RunDir};
use crate::so3::LOCAL_FACTOR;
use crate::sphere::{points_to_tensor, sample_map};
use anyhow::{bail, Context, Result};
use geom::{Sphere, TensorUniformSampler};
use nalgebra::DVector;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use scores::base::sphere::SphereBase;
use scores::base::ScheduledBase;
use scores::heat::sphere::SphereHeatKernel;
use scores::oism::sphere::SphereSpectralScore;
use scores::oism::sphere_base::SphereSpectralBase;
use scores::smoother::bandwidth::{select_time_by_validation, test_nll};
use scores::smoother::harmonics::MAX_DEGREE;
use scores::smoother::spectral::SpectralConfig;
use scores::smoother::sphere::SphereSmoother;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use train::TensorBase;

/// The spectral base of OISM on S^2.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpectralSettings {
    /// Degree L of the spherical-harmonic expansion, 1..=MAX_DEGREE.
    pub degree: usize,
    /// Truncation tolerance relative to the uniform density, in (0, 1]: sets the smallest usable tau.
    pub truncation_tol: f64,
    /// Shrinkage weight of the coefficients toward the uniform law, in [0, 1] (`null`: none).
    pub shrinkage: Option<f64>,
    /// The smoothing time tau (`null`: by validation log-likelihood over `tau_grid` log-spaced times).
    pub tau: Option<f64>,
    /// Points of the validation grid for tau, 2..=200.
    pub tau_grid: usize,
}

/// The configuration of `oism-earth`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OismEarthConfig {
    /// The seed of everything: split, initialisation, batches, probe batches, sampling noise.
    pub seed: u64,
    /// `volcano`, `earthquake`, `flood` or `fire`.
    pub dataset: String,
    /// The folder of the Earth CSV files.
    pub data_dir: PathBuf,
    /// Training (the same for both networks).
    pub train: TrainSettings,
    /// The sampler (the same for every method).
    pub sampler: sample::SamplerConfig,
    /// Samples per method.
    pub n_samples: i64,
    /// Rows of the fixed held-out batch of the evaluation loss.
    pub eval_batch: i64,
    /// The spectral base.
    pub spectral: SpectralSettings,
    /// The variance measurements.
    pub variance: VarianceSettings,
    /// Heat times searched by the kernel smoother's validation.
    pub smoother_grid: Vec<f64>,
    /// MMD kernel bandwidth (`null`: the median pairwise held-out great-circle distance).
    pub mmd_bandwidth: Option<f64>,
}

impl OismEarthConfig {
    /// The default run on `dataset`: the `earth` experiment's network and schedule (width 256, VE
    /// sigma 0.01..3, 10,000 steps of 512), degree 40 with tolerance 1e-6 and shrinkage 0.01.
    pub fn default_config(dataset: &str, data_dir: PathBuf) -> Self {
        OismEarthConfig {
            seed: 0,
            dataset: dataset.to_string(),
            data_dir,
            train: crate::sphere::train_settings(),
            sampler: em_sampler(500),
            n_samples: 2_000,
            eval_batch: 4_096,
            spectral: SpectralSettings {
                degree: 40,
                truncation_tol: 1e-6,
                shrinkage: Some(0.01),
                tau: None,
                tau_grid: 24,
            },
            variance: VarianceSettings { n_batches: 32, at: vec![0.0, 0.01, 0.05, 0.25, 0.5, 1.0] },
            smoother_grid: (0..13).map(|i| 10f64.powf(-5.0 + 5.0 * i as f64 / 12.0)).collect(),
            mmd_bandwidth: None,
        }
    }

    /// The `--quick` variant.
    pub fn quick(mut self) -> Self {
        self.train.model.width = 64;
        self.train.steps = 600;
        self.train.batch_size = 256;
        self.train.optim.warmup_steps = 50;
        self.train.optim.ema_decay = 0.99;
        self.train.checkpoint_every = 300;
        self.sampler = em_sampler(100);
        self.n_samples = 400;
        self.eval_batch = 1_024;
        self.spectral.degree = 20;
        self.spectral.tau_grid = 8;
        self.variance = VarianceSettings { n_batches: 8, at: vec![0.0, 1.0] };
        self.smoother_grid = (0..6).map(|i| 10f64.powf(-5.0 + 5.0 * i as f64 / 5.0)).collect();
        self
    }

    /// Validates every field before any work; errors name the field and its allowed range.
    pub fn check(&self) -> Result<()> {
        if !["volcano", "earthquake", "flood", "fire"].contains(&self.dataset.as_str()) {
            bail!("invalid config: dataset = {:?}: expected volcano, earthquake, flood or fire", self.dataset);
        }
        self.train.check()?;
        self.sampler.check().map_err(|e| anyhow::anyhow!("invalid config: sampler: {e}"))?;
        if !(2..=1_000_000).contains(&self.n_samples) {
            bail!("invalid config: n_samples = {}: expected 2..=10^6", self.n_samples);
        }
        if !(1..=1_000_000).contains(&self.eval_batch) {
            bail!("invalid config: eval_batch = {}: expected 1..=10^6", self.eval_batch);
        }
        let sp = &self.spectral;
        if !(1..=MAX_DEGREE).contains(&sp.degree) {
            bail!("invalid config: spectral.degree = {}: expected 1..={MAX_DEGREE}", sp.degree);
        }
        if !(sp.truncation_tol > 0.0 && sp.truncation_tol <= 1.0) {
            bail!("invalid config: spectral.truncation_tol = {}: expected a number in (0, 1]", sp.truncation_tol);
        }
        if let Some(w) = sp.shrinkage {
            if !(0.0..=1.0).contains(&w) {
                bail!("invalid config: spectral.shrinkage = {w}: expected a number in [0, 1] or null");
            }
        }
        if let Some(t) = sp.tau {
            if !(t.is_finite() && t > 0.0) {
                bail!("invalid config: spectral.tau = {t}: expected a positive number or null");
            }
        }
        if !(2..=200).contains(&sp.tau_grid) {
            bail!("invalid config: spectral.tau_grid = {}: expected 2..=200", sp.tau_grid);
        }
        check_shared("", &self.variance, &self.smoother_grid, self.mmd_bandwidth)
    }
}

/// `tau_grid` times log-spaced from `min` to 1 (or `[min]` when min >= 1).
fn tau_grid(min: f64, n: usize) -> Vec<f64> {
    if min >= 1.0 {
        return vec![min];
    }
    (0..n).map(|i| min * (1.0 / min).powf(i as f64 / (n - 1) as f64)).collect()
}

/// oism / dsm ratios of loss_var and grad_var at the steps both curves measured.
fn ratios(dsm: &[VariancePoint], oism: &[VariancePoint]) -> Vec<serde_json::Value> {
    dsm.iter()
        .filter_map(|d| {
            let o = oism.iter().find(|o| o.step == d.step)?;
            Some(serde_json::json!({
                "step": d.step,
                "loss_var_ratio": o.oism.loss_var / d.dsm.loss_var,
                "grad_var_ratio": o.oism.grad_var / d.dsm.grad_var,
                "at_dsm_weights": {"loss_var_ratio": d.oism.loss_var / d.dsm.loss_var,
                                   "grad_var_ratio": d.oism.grad_var / d.dsm.grad_var},
                "at_oism_weights": {"loss_var_ratio": o.oism.loss_var / o.dsm.loss_var,
                                    "grad_var_ratio": o.oism.grad_var / o.dsm.grad_var},
            }))
        })
        .collect()
}

/// `experiments oism-earth --dataset NAME [--data-dir DIR]`.
pub fn run_oism_earth(opts: &Options) -> Result<()> {
    let dataset = opts.extra("--dataset").unwrap_or("fire").to_string();
    let data_dir = PathBuf::from(opts.extra("--data-dir").unwrap_or("../shared/data/earth"));
    let base = OismEarthConfig::default_config(&dataset, data_dir);
    let base = if opts.quick { base.quick() } else { base };
    let config = opts.resolve(base, |c, s| c.seed = s)?;
    config.check()?;
    let file = earth_file(&config.data_dir, &config.dataset)?;
    if !file.is_file() {
        bail!("cannot find {} (pass the folder of the Earth data with --data-dir)", file.display());
    }
    let rows = load_earth(&config.data_dir, &config.dataset)?;
    let seed = config.seed;
    let s = split(&rows, 0.8, 0.1, seed)?;
    let (train, valid, test) = (points_to_tensor(&s.train), points_to_tensor(&s.valid), points_to_tensor(&s.test));
    let run = RunDir::create(&opts.out_dir(), &config, &Meta::collect("oism-earth", seed, opts.device))?;
    let name = format!("oism-earth/{}", config.dataset);
    eprintln!("{name}: {} rows ({} train), run folder {}", rows.len(), s.train.len(), run.path().display());
    let device = opts.device;
    let h = match config.mmd_bandwidth {
        Some(h) => h,
        None => median_bandwidth(&sphere_dist_matrix(&test, &test))?,
    };

    // The spectral estimator: fit, tau by validation, its own test NLL, the base.
    let start = Instant::now();
    let sp = config.spectral;
    let est = SphereSpectralScore::fit_config(
        &train,
        SpectralConfig { degree: sp.degree, truncation_tol: sp.truncation_tol },
        sp.shrinkage,
    )
    .context("fitting the spectral estimator")?;
    let min_tau = est.min_time();
    let (tau, tau_table) = match sp.tau {
        Some(t) => (t, Vec::new()),
        None => select_time_by_validation(&est, &valid, &tau_grid(min_tau, sp.tau_grid))
            .context("selecting the spectral smoothing time")?,
    };
    let spectral_nll = test_nll(&est, &test, tau)?;
    let base = SphereSpectralBase::new(&est, tau).context("spectral.tau")?;
    let spectral_fit_seconds = start.elapsed().as_secs_f64();
    eprintln!(
        "{name}: spectral estimator L = {}, tau = {tau:.3e} (smallest {min_tau:.3e}), test NLL {spectral_nll:.3}",
        sp.degree
    );
    let base_arc: Arc<dyn TensorBase> = Arc::new(base.clone());

    // The two networks, with the variance probes.
    let kind = config.train.precision.kind();
    let batches = probe_batches(
        &train,
        config.variance.n_batches,
        config.train.batch_size,
        config.train.t_eps,
        seed,
        kind,
        device,
    );
    let at_steps = variance_steps(&config.variance.at, config.train.steps);
    let probe = Probe {
        run: &run,
        settings: config.train,
        seed,
        hermite: base_arc.clone(),
        batches: &batches,
        at_steps,
        device,
    };
    let eval = eval_batch(&test, config.eval_batch, config.train.t_eps, seed, kind, device);
    let s2 = Sphere::new(3)?;
    // MAD with the uniform base separates what the spectral part of OISM's base adds from what the
    // uniform sphere base (which OISM's base contains) already gives. Its probe measures DSM and MAD.
    let uniform_base: Arc<dyn TensorBase> = Arc::new(SphereBase::new(3)?);
    let mad_probe = Probe { hermite: uniform_base.clone(), at_steps: probe.at_steps.clone(), ..probe };
    let methods = [Method::dsm("dsm"), Method::mad("oism", base_arc.clone()), Method::mad("mad", uniform_base)];
    let (mut summaries, mut outcomes, mut curves) = (Vec::new(), Vec::new(), Vec::new());
    for m in &methods {
        let p = if m.name == "mad" { &mad_probe } else { &probe };
        let (trained, curve) = train_with_variance(p, m, &train)?;
        let eval_loss = eval_loss(&trained, &eval);
        let sampled = sample_method(&run, &trained, &s2, &config.sampler, &[3], config.n_samples, seed, device)?;
        let score = mmd(&sampled.points, &test, sphere_dist_matrix, h)?;
        let local = mmd(&sampled.points, &test, sphere_dist_matrix, h / LOCAL_FACTOR)?;
        let outcome = Outcome { trained, sampled, eval_loss };
        let mut summary = network_summary(m.objective, &outcome, score, local, &curve);
        if m.name == "oism" {
            summary = summary.with("spectral_degree", sp.degree).with("spectral_tau", tau);
        }
        summaries.push((m.name.clone(), summary));
        outcomes.push(outcome);
        curves.push(curve);
    }

    // The spectral base alone (no network).
    let scheduled = ScheduledBase { base, schedule: config.train.schedule };
    let target = SampleTarget { name: "spectral_only", score: &scheduled, schedule: &config.train.schedule, kind };
    let spectral_samples = sample_score(&run, &target, &s2, &config.sampler, &[3], config.n_samples, seed, device)?;
    let spectral_mmd = mmd(&spectral_samples.points, &test, sphere_dist_matrix, h)?;
    let spectral_local = mmd(&spectral_samples.points, &test, sphere_dist_matrix, h / LOCAL_FACTOR)?;
    let spectral = serde_json::json!({
        "mmd": spectral_mmd, "mmd_local": spectral_local, "test_nll": spectral_nll, "tau": tau,
        "min_tau": min_tau, "degree": sp.degree, "shrinkage": sp.shrinkage, "tau_validation": tau_table,
        "fit_seconds": spectral_fit_seconds, "sample_seconds": spectral_samples.sample_seconds,
        "dist_to_manifold": spectral_samples.mean_distance_before,
    });

    // The kernel smoother: heat time by validation, test NLL, samples of the smoothed density.
    let start = Instant::now();
    let smoother = SphereSmoother::new(&train).context("building the kernel smoother")?;
    let (t, _) = select_time_by_validation(&smoother, &valid, &config.smoother_grid)
        .with_context(|| format!("selecting the smoothing time on {}", config.dataset))?;
    let nll = test_nll(&smoother, &test, t)?;
    let heat = SphereHeatKernel::new(2)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let smoothed: Vec<DVector<f64>> = (0..config.n_samples as usize)
        .map(|_| {
            let i = rand::Rng::random_range(&mut rng, 0..s.train.len());
            heat.sample(&s.train[i], t, &mut rng)
        })
        .collect();
    let smoothed = points_to_tensor(&smoothed);
    let ks_mmd = mmd(&smoothed, &test, sphere_dist_matrix, h)?;
    let ks_local = mmd(&smoothed, &test, sphere_dist_matrix, h / LOCAL_FACTOR)?;
    let ks = serde_json::json!({
        "test_nll": nll, "t": t, "mmd": ks_mmd, "mmd_local": ks_local,
        "fit_seconds": start.elapsed().as_secs_f64(), "dist_to_manifold": 0.0,
    });
    eprintln!("{name}: kernel_smoother t = {t:.3e}, test NLL {nll:.3} (area measure)");

    // References, pictures, summary.
    tch::manual_seed(seed as i64);
    let uniform = s2.sample_uniform_t(config.n_samples, tch::Kind::Double, tch::Device::Cpu);
    let reference = serde_json::json!({
        "dataset": config.dataset, "n_rows": rows.len(), "n_train": s.train.len(),
        "uniform": mmd(&uniform, &test, sphere_dist_matrix, h)?,
        "uniform_local": mmd(&uniform, &test, sphere_dist_matrix, h / LOCAL_FACTOR)?,
        "validation_split": mmd(&valid, &test, sphere_dist_matrix, h)?,
        "validation_split_local": mmd(&valid, &test, sphere_dist_matrix, h / LOCAL_FACTOR)?,
        "variance_batches": config.variance.n_batches, "variance_batch_size": config.train.batch_size,
    });
    sample_map(
        &run,
        &format!("{name}: samples on an equal-area map"),
        &test,
        &[("kernel_smoother", &smoothed), ("spectral only", &spectral_samples.points)],
        &outcomes,
    )?;
    let series: Vec<(String, Vec<(u64, f64)>)> = vec![
        ("dsm loss_var".into(), curves[0].iter().map(|v| (v.step, v.dsm.loss_var)).collect()),
        ("oism loss_var".into(), curves[1].iter().map(|v| (v.step, v.oism.loss_var)).collect()),
        ("dsm grad_var".into(), curves[0].iter().map(|v| (v.step, v.dsm.grad_var)).collect()),
        ("oism grad_var".into(), curves[1].iter().map(|v| (v.step, v.oism.grad_var)).collect()),
        ("mad loss_var".into(), curves[2].iter().map(|v| (v.step, v.oism.loss_var)).collect()),
        ("mad grad_var".into(), curves[2].iter().map(|v| (v.step, v.oism.grad_var)).collect()),
    ];
    let series_ref: Vec<(&str, &[(u64, f64)])> = series.iter().map(|(n, c)| (n.as_str(), c.as_slice())).collect();
    crate::plot::step_curves(
        &run.file("variance.png"),
        &format!(
            "{name}: variance over {} batches of {} (own weights)",
            config.variance.n_batches, config.train.batch_size
        ),
        "variance",
        &series_ref,
    )?;
    report(
        &run,
        "oism-earth",
        seed,
        &summaries,
        &outcomes,
        vec![("kernel_smoother".to_string(), ks), ("spectral_only".to_string(), spectral)],
        reference,
        &["mmd_local", "loss_var", "grad_var"],
        "MMD: Gaussian kernel on the great-circle distance",
    )?;
    println!(
        "kernel_smoother  mmd2 {:.3e}  mmd2_local {:.3e}  test_nll {nll:.4} (t {t:.3e})",
        ks_mmd.mmd2, ks_local.mmd2
    );
    println!(
        "spectral only    mmd2 {:.3e}  mmd2_local {:.3e}  test_nll {spectral_nll:.4} (L {}, tau {tau:.3e})",
        spectral_mmd.mmd2, spectral_local.mmd2, sp.degree
    );
    println!("variance ratios to dsm (loss_var, grad_var) at each method's own weights:");
    println!("  {:>6}  {:>8} {:>8}  {:>8} {:>8}", "step", "oism", "", "mad", "");
    for (o, m) in ratios(&curves[0], &curves[1]).iter().zip(ratios(&curves[0], &curves[2])) {
        let f = |r: &serde_json::Value, k: &str| r[k].as_f64().unwrap_or(f64::NAN);
        println!(
            "  {:>6}  {:>8.3} {:>8.3}  {:>8.3} {:>8.3}",
            o["step"],
            f(o, "loss_var_ratio"),
            f(o, "grad_var_ratio"),
            f(&m, "loss_var_ratio"),
            f(&m, "grad_var_ratio")
        );
    }
    let text = std::fs::read_to_string(run.file("summary.json"))?;
    let mut summary: serde_json::Value = serde_json::from_str(&text)?;
    summary["variance_ratio"] = serde_json::json!(ratios(&curves[0], &curves[1]));
    summary["variance_ratio_mad"] = serde_json::json!(ratios(&curves[0], &curves[2]));
    run.write_summary(&summary)?;
    println!("\nwrote {}", run.file("summary.json").display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_name_the_field() {
        let c = OismEarthConfig::default_config("fire", PathBuf::from("/nowhere"));
        assert!(c.check().is_ok());
        assert!(c.clone().quick().check().is_ok());
        let mut bad = c.clone();
        bad.dataset = "rain".into();
        assert!(bad.check().unwrap_err().to_string().contains("dataset"));
        let mut bad = c.clone();
        bad.spectral.degree = 0;
        assert!(bad.check().unwrap_err().to_string().contains("spectral.degree"));
        let mut bad = c.clone();
        bad.spectral.tau = Some(-1.0);
        assert!(bad.check().unwrap_err().to_string().contains("spectral.tau"));
        let mut bad = c.clone();
        bad.spectral.shrinkage = Some(2.0);
        assert!(bad.check().unwrap_err().to_string().contains("spectral.shrinkage"));
        let mut bad = c;
        bad.variance.at = vec![];
        assert!(bad.check().unwrap_err().to_string().contains("variance.at"));
    }

    #[test]
    fn tau_grid_spans_min_to_one() {
        let g = tau_grid(1e-3, 4);
        assert_eq!(g.len(), 4);
        assert!((g[0] - 1e-3).abs() < 1e-15 && (g[3] - 1.0).abs() < 1e-12);
        assert!(g.windows(2).all(|w| w[1] > w[0]));
        assert_eq!(tau_grid(2.0, 5), vec![2.0]);
    }
}
