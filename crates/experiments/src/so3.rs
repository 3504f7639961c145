//! The `so3` experiment (the main job) and `so3-sym`.
//!
//! `so3`: a mixture of wrapped normal laws on SO(3) with random means; MAD (exact score of the noised Haar
//! law as base) against plain DSM with the same network, data, steps, batches and seed; samples by the
//! reverse SDE, projected onto SO(3); MMD with a Gaussian kernel on the geodesic (rotation-angle) distance
//! against held-out data, the distance to SO(3) before projection, the held-out loss, loss curves and the
//! samples drawn as rotation maps. Two references put the MMD in scale: fresh training data against the
//! held-out data (the floor a perfect model reaches) and Haar-uniform rotations (an untrained model).
//!
//! `so3-sym`: poses of an object with a symmetry group G (octahedral by default, 24 elements), observed as
//! any element of their orbit R G. Two treatments of MATH.md section 2: (a) `mad_symmetrised` trains MAD on
//! the poses as observed (the G-symmetrised law on SO(3), 24 times as many modes); (b) `mad_canonicalised`
//! trains MAD on the canonical representative of each pose. Both are evaluated modulo G: MMD with the
//! Gaussian kernel on the quotient distance d_G, and the fraction of samples farther than the 99% radius of
//! every true mode (spurious rotations).

use crate::cli::Options;
use crate::mad::{report, Comparison, Method, MethodSummary, Outcome, TrainSettings};
use crate::metrics::{median_bandwidth, mmd, quotient_dist_matrix, so3_dist_matrix};
use crate::run::{Meta, RunDir};
use anyhow::{bail, Result};
use geom::distributions::{random_wrapped_normal_mixture, ManifoldDistribution, Mixture, WrappedNormalSo3};
use geom::groups::SymmetryGroup;
use geom::{So3, UniformSampler};
use nalgebra::Matrix3;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sample::{FinalDenoise, FixedStepConfig, SamplerConfig, TimeGrid};
use scores::base::so3::So3Base;
use scores::Schedule;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tch::{Kind, Tensor};
use train::{MlpConfig, OptimConfig, Precision, Weighting};

/// The synthetic data of `so3` and `so3-sym`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct So3Data {
    /// Number of wrapped normal components (equal weights, Haar-random means).
    pub n_components: usize,
    /// Scale of every component (radians, the standard deviation of each tangent coordinate).
    pub sigma: f64,
    /// Training points.
    pub n_train: usize,
    /// Held-out points (MMD reference and evaluation loss).
    pub n_test: usize,
}

/// The configuration of `so3` and `so3-sym`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct So3Config {
    /// The seed of everything: data, initialisation, batches, sampling noise.
    pub seed: u64,
    /// The data.
    pub data: So3Data,
    /// `so3-sym` only: the symmetry group (`C<n>`, `D<n>`, `T`, `O`, `I` or their names).
    pub group: Option<String>,
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
}

impl So3Config {
    /// The default `so3` run: 16 components of scale 0.2, 20,000 training points, width-256 MLP, 10,000
    /// steps of 512, 2,000 samples by 500 Euler-Maruyama steps.
    pub fn default_so3() -> Self {
        So3Config {
            seed: 0,
            data: So3Data { n_components: 16, sigma: 0.2, n_train: 20_000, n_test: 2_000 },
            group: None,
            train: TrainSettings {
                model: MlpConfig { width: 256, depth: 3, ..MlpConfig::default() },
                schedule: Schedule::Ve { sigma_min: 0.01, sigma_max: 4.0 },
                weighting: Weighting::SigmaSquared,
                optim: OptimConfig { lr: 1e-3, warmup_steps: 200, ..OptimConfig::default() },
                precision: Precision::F32,
                steps: 10_000,
                batch_size: 512,
                t_eps: 1e-3,
                checkpoint_every: 1_000,
            },
            sampler: SamplerConfig::EulerMaruyama(FixedStepConfig {
                n_steps: 500,
                t_end: 1e-3,
                time_grid: TimeGrid::UniformT,
                final_denoise: FinalDenoise::Tweedie,
            }),
            n_samples: 2_000,
            eval_batch: 4_096,
            mmd_bandwidth: None,
        }
    }

    /// The default `so3-sym` run: octahedral symmetry, 4 components of scale 0.15.
    pub fn default_sym() -> Self {
        let mut c = Self::default_so3();
        c.group = Some("octahedral".into());
        c.data = So3Data { n_components: 4, sigma: 0.15, n_train: 20_000, n_test: 2_000 };
        c
    }

    /// The `--quick` variant of `base`: fewer points, steps and samples, a smaller network.
    pub fn quick(mut base: Self) -> Self {
        base.data.n_train = 2_000;
        base.data.n_test = 500;
        base.train.model.width = 128;
        base.train.steps = 600;
        base.train.optim.warmup_steps = 50;
        base.train.checkpoint_every = 300;
        base.sampler = SamplerConfig::EulerMaruyama(FixedStepConfig {
            n_steps: 100,
            t_end: 1e-3,
            time_grid: TimeGrid::UniformT,
            final_denoise: FinalDenoise::Tweedie,
        });
        base.n_samples = 500;
        base.eval_batch = 1_024;
        base
    }

    /// Validates every field before any work; errors name the field and its allowed range.
    pub fn check(&self, needs_group: bool) -> Result<()> {
        let d = &self.data;
        if d.n_components < 1 || d.n_components > 10_000 {
            bail!("invalid config: data.n_components = {}: expected 1..=10000", d.n_components);
        }
        if !(d.sigma.is_finite() && d.sigma > 0.0 && d.sigma <= 10.0) {
            bail!("invalid config: data.sigma = {}: expected a number in (0, 10]", d.sigma);
        }
        if d.n_train < 2 || d.n_train > 10_000_000 {
            bail!("invalid config: data.n_train = {}: expected 2..=10^7", d.n_train);
        }
        if d.n_test < 2 || d.n_test > 100_000 {
            bail!("invalid config: data.n_test = {}: expected 2..=10^5", d.n_test);
        }
        match (&self.group, needs_group) {
            (Some(g), true) => {
                SymmetryGroup::by_name(g).map_err(|e| anyhow::anyhow!("invalid config: group = {g:?}: {e}"))?;
            }
            (None, true) => bail!("invalid config: group is missing: expected a group name such as \"octahedral\""),
            (Some(g), false) => bail!("invalid config: group = {g:?}: only so3-sym takes a group (expected null)"),
            (None, false) => {}
        }
        self.train.check()?;
        self.sampler.check().map_err(|e| anyhow::anyhow!("invalid config: sampler.{e}"))?;
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

/// Rotations to a `[N, 3, 3]` f64 tensor (row-major matrices).
pub fn rotations_to_tensor(rs: &[Matrix3<f64>]) -> Tensor {
    let flat: Vec<f64> = rs.iter().flat_map(|r| (0..3).flat_map(move |i| (0..3).map(move |j| r[(i, j)]))).collect();
    Tensor::from_slice(&flat).reshape([rs.len() as i64, 3, 3])
}

/// A `[N, 3, 3]` tensor to row-major arrays (for the plots).
pub fn tensor_to_rotations(t: &Tensor) -> Vec<[[f64; 3]; 3]> {
    let v = Vec::<f64>::try_from(t.to_kind(Kind::Double).contiguous().flatten(0, -1)).expect("a float tensor");
    v.chunks(9).map(|c| [[c[0], c[1], c[2]], [c[3], c[4], c[5]], [c[6], c[7], c[8]]]).collect()
}

struct So3Run {
    run: RunDir,
    config: So3Config,
    mixture: Mixture<WrappedNormalSo3>,
    train: Tensor,
    test: Tensor,
    rng: ChaCha8Rng,
}

fn setup(opts: &Options, name: &str, base: So3Config, needs_group: bool) -> Result<So3Run> {
    let base = if opts.quick { So3Config::quick(base) } else { base };
    let config = opts.resolve(base, |c, s| c.seed = s)?;
    config.check(needs_group)?;
    let out = opts.out_dir();
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mixture = random_wrapped_normal_mixture(config.data.n_components, config.data.sigma, &mut rng)?;
    let train = rotations_to_tensor(&mixture.sample_n(config.data.n_train, &mut rng));
    let test = rotations_to_tensor(&mixture.sample_n(config.data.n_test, &mut rng));
    let run = RunDir::create(&out, &config, &Meta::collect(name, config.seed, opts.device))?;
    eprintln!("{name}: run folder {}", run.path().display());
    Ok(So3Run { run, config, mixture, train, test, rng })
}

fn comparison<'a>(r: &'a So3Run, opts: &Options, manifold: &'a So3) -> Comparison<'a, So3> {
    Comparison {
        run: &r.run,
        manifold,
        point_shape: vec![3, 3],
        train: r.config.train,
        sampler: r.config.sampler,
        n_samples: r.config.n_samples,
        seed: r.config.seed,
        device: opts.device,
    }
}

fn bandwidth(config: &So3Config, test: &Tensor, dist: &dyn Fn(&Tensor, &Tensor) -> Tensor) -> Result<f64> {
    match config.mmd_bandwidth {
        Some(h) => Ok(h),
        None => median_bandwidth(&dist(test, test)),
    }
}

/// `experiments so3`.
pub fn run_so3(opts: &Options) -> Result<()> {
    let mut r = setup(opts, "so3", So3Config::default_so3(), false)?;
    let so3 = So3::new();
    let cmp = comparison(&r, opts, &so3);
    let eval = cmp.eval_batch(&r.test, r.config.eval_batch);
    let h = bandwidth(&r.config, &r.test, &so3_dist_matrix)?;
    let methods = [Method::mad("mad", Arc::new(So3Base::new())), Method::dsm("dsm")];
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut summaries = Vec::new();
    for m in &methods {
        let o = cmp.run_method(m, &r.train, &eval)?;
        let score = mmd(&o.sampled.points, &r.test, so3_dist_matrix, h)?;
        summaries.push((m.name.clone(), MethodSummary::new(&o.trained, &o.sampled, o.eval_loss, score)));
        outcomes.push(o);
    }
    let n = r.config.n_samples as usize;
    let fresh = rotations_to_tensor(&r.mixture.sample_n(n, &mut r.rng));
    let uniform: Vec<Matrix3<f64>> = (0..n).map(|_| so3.sample_uniform(&mut r.rng)).collect();
    let reference = serde_json::json!({
        "fresh_data": mmd(&fresh, &r.test, so3_dist_matrix, h)?,
        "uniform": mmd(&rotations_to_tensor(&uniform), &r.test, so3_dist_matrix, h)?,
    });
    finish(&r, "so3", &summaries, &outcomes, reference, &[], "MMD: Gaussian kernel on the rotation angle")?;
    Ok(())
}

/// Fraction of `samples: [n, 3, 3]` whose quotient distance to every mean of `mixture` exceeds `radius`.
fn off_mode_fraction(group: &SymmetryGroup, mixture: &Mixture<WrappedNormalSo3>, samples: &Tensor, radius: f64) -> f64 {
    let means: Vec<Matrix3<f64>> = mixture.components().iter().map(|c| *c.mean()).collect();
    let d = quotient_dist_matrix(group, &samples.to_kind(Kind::Double), &rotations_to_tensor(&means));
    let nearest = d.min_dim(1, false).0;
    nearest.gt(radius).to_kind(Kind::Double).mean(Kind::Double).double_value(&[])
}

/// The 99% quantile of the chi distribution with 3 degrees of freedom: the angle of a wrapped normal
/// sample of scale sigma is below 3.368 sigma with probability 0.99 (for small sigma).
const CHI3_Q99: f64 = 3.368;

/// `experiments so3-sym`.
pub fn run_sym(opts: &Options) -> Result<()> {
    let r = setup(opts, "so3-sym", So3Config::default_sym(), true)?;
    let group = SymmetryGroup::by_name(r.config.group.as_deref().unwrap_or("octahedral"))?;
    let so3 = So3::new();
    let cmp = comparison(&r, opts, &so3);
    // The poses as observed: a random element of each orbit (libtorch's generator, seeded).
    tch::manual_seed(r.config.seed as i64 ^ 0x5eed);
    let observed_train = group.random_orbit_t(&r.train);
    let observed_test = group.random_orbit_t(&r.test);
    let canonical_train = group.canonicalize_t(&observed_train);
    let qdist = |x: &Tensor, y: &Tensor| quotient_dist_matrix(&group, x, y);
    let h = bandwidth(&r.config, &observed_test, &qdist)?;
    let eval_sym = cmp.eval_batch(&observed_test, r.config.eval_batch);
    let eval_canon = cmp.eval_batch(&group.canonicalize_t(&observed_test), r.config.eval_batch);
    let base = Arc::new(So3Base::new());
    let radius = CHI3_Q99 * r.config.data.sigma;
    let runs = [
        (Method::mad("mad_symmetrised", base.clone()), &observed_train, &eval_sym),
        (Method::mad("mad_canonicalised", base), &canonical_train, &eval_canon),
    ];
    let mut outcomes = Vec::new();
    let mut summaries = Vec::new();
    for (m, data, eval) in runs {
        let o = cmp.run_method(&m, data, eval)?;
        let score = mmd(&o.sampled.points, &observed_test, qdist, h)?;
        let off = off_mode_fraction(&group, &r.mixture, &o.sampled.points, radius);
        let s = MethodSummary::new(&o.trained, &o.sampled, o.eval_loss, score).with("off_mode_fraction", off);
        summaries.push((m.name.clone(), s));
        outcomes.push(o);
    }
    let reference = serde_json::json!({
        "test_off_mode_fraction": off_mode_fraction(&group, &r.mixture, &observed_test, radius),
        "off_mode_radius": radius,
        "group": group.name(),
        "group_order": group.order(),
        "note": "eval_loss of the two methods is measured on different targets (observed vs canonical poses) \
                 and does not compare across them",
    });
    finish(
        &r,
        "so3-sym",
        &summaries,
        &outcomes,
        reference,
        &["off_mode_fraction"],
        "MMD: Gaussian kernel on the quotient distance d_G",
    )?;
    Ok(())
}

fn finish(
    r: &So3Run,
    name: &str,
    summaries: &[(String, MethodSummary)],
    outcomes: &[Outcome],
    reference: serde_json::Value,
    extra: &[&str],
    mmd_note: &str,
) -> Result<()> {
    let data = tensor_to_rotations(&r.test);
    let samples: Vec<(String, Vec<[[f64; 3]; 3]>)> =
        outcomes.iter().map(|o| (o.trained.name.clone(), tensor_to_rotations(&o.sampled.points))).collect();
    let mut panels: Vec<(&str, &[[[f64; 3]; 3]])> = vec![("held-out data", data.as_slice())];
    panels.extend(samples.iter().map(|(n, s)| (n.as_str(), s.as_slice())));
    let title = format!("{name}: rotation axis, angle as colour");
    crate::plot::rotation_panels(&r.run.file("samples.png"), &title, &panels)?;
    report(&r.run, name, r.config.seed, summaries, outcomes, Vec::new(), reference, extra, mmd_note)
}
