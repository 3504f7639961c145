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
//! trains MAD on the canonical representative of each pose; `dsm_symmetrised` and `dsm_canonicalised` are
//! the same with plain DSM. All are evaluated modulo G: MMD with the
//! Gaussian kernel on the quotient distance d_G, and the fraction of samples farther than the 99% radius of
//! every true mode (spurious rotations).

use crate::cli::Options;
use crate::data::load_points;
use crate::mad::{em_sampler, report, Comparison, Method, MethodSummary, Outcome, TrainSettings};
use crate::metrics::{median_bandwidth, mmd, quotient_dist_matrix, so3_dist_matrix};
use crate::run::{Meta, RunDir};
use anyhow::{bail, Context, Result};
use geom::distributions::{random_wrapped_normal_mixture, ManifoldDistribution, Mixture, WrappedNormalSo3};
use geom::groups::SymmetryGroup;
use geom::{So3, UniformSampler};
use nalgebra::Matrix3;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sample::SamplerConfig;
use scores::base::so3::So3Base;
use scores::Schedule;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
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
    /// `so3-sym` only: the symmetry group (`C<n>`, `D<n>`, `T`, `O` (octahedral, the default), `I`).
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
    /// `so3` only: train on the rotations in this CSV file (9 numbers a row, row-major) instead of the
    /// synthetic mixture; 10% of the rows (by the seed) are held out. `data.n_train`/`n_test` are ignored.
    #[serde(default)]
    pub data_file: Option<PathBuf>,
    /// Project rows of `data_file` that are off SO(3) by more than `manifold_tol` instead of refusing them.
    #[serde(default)]
    pub project_data: bool,
    /// Ambient (Frobenius) distance to SO(3) beyond which a row of `data_file` is off the manifold.
    #[serde(default = "default_tol")]
    pub manifold_tol: f64,
}

fn default_tol() -> f64 {
    1e-6
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
            sampler: em_sampler(500),
            n_samples: 2_000,
            eval_batch: 4_096,
            mmd_bandwidth: None,
            data_file: None,
            project_data: false,
            manifold_tol: default_tol(),
        }
    }

    /// The default `so3-sym` run: octahedral symmetry, 4 components of scale 0.15.
    pub fn default_sym() -> Self {
        let mut c = Self::default_so3();
        c.group = Some("O".into());
        c.data = So3Data { n_components: 4, sigma: 0.15, n_train: 20_000, n_test: 2_000 };
        c
    }

    /// The `--quick` variant of `base`: fewer points, steps and samples, a smaller network.
    pub fn quick(mut base: Self) -> Self {
        base.data.n_train = 2_000;
        base.data.n_test = 500;
        base.train.model.width = 128;
        base.train.steps = 1_500;
        base.train.optim.warmup_steps = 50;
        base.train.checkpoint_every = 500;
        base.sampler = em_sampler(100);
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
            (None, true) => bail!("invalid config: group is missing: expected a group name such as \"O\""),
            (Some(g), false) => bail!("invalid config: group = {g:?}: only so3-sym takes a group (expected null)"),
            (None, false) => {}
        }
        self.train.check()?;
        self.sampler.check().map_err(|e| anyhow::anyhow!("invalid config: sampler: {e}"))?;
        if !(2..=100_000).contains(&self.n_samples) {
            bail!("invalid config: n_samples = {}: expected 2..=100000", self.n_samples);
        }
        if !(1..=1_000_000).contains(&self.eval_batch) {
            bail!("invalid config: eval_batch = {}: expected 1..=10^6", self.eval_batch);
        }
        if self.data_file.is_some() && needs_group {
            bail!("invalid config: data_file: only so3 reads a data file (so3-sym needs the true modes)");
        }
        if !(self.manifold_tol.is_finite() && self.manifold_tol > 0.0) {
            bail!("invalid config: manifold_tol = {}: expected a positive number", self.manifold_tol);
        }
        if let Some(h) = self.mmd_bandwidth {
            if !(h.is_finite() && h > 0.0) {
                bail!("invalid config: mmd_bandwidth = {h}: expected a positive number or null");
            }
        }
        Ok(())
    }
}

/// Shuffles `rows` with `seed` and holds out 10% (at least 2 rows) as the test set: `(train, test)`.
pub fn holdout<T: Clone>(rows: &[T], seed: u64) -> Option<(Vec<T>, Vec<T>)> {
    use rand::seq::SliceRandom;
    let n_test = (rows.len() / 10).max(2);
    if rows.len() < n_test + 2 {
        return None;
    }
    let mut idx: Vec<usize> = (0..rows.len()).collect();
    idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ 0x401d));
    let pick = |r: &[usize]| r.iter().map(|&i| rows[i].clone()).collect::<Vec<_>>();
    Some((pick(&idx[n_test..]), pick(&idx[..n_test])))
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
    /// The synthetic law (`None` with a data file).
    mixture: Option<Mixture<WrappedNormalSo3>>,
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
    let (mixture, train, test) = match &config.data_file {
        Some(path) => {
            let rows = load_points(&So3::new(), path, config.manifold_tol, config.project_data)?;
            let (train, test) = holdout(&rows, config.seed)
                .with_context(|| format!("{}: too few rows to hold out a test set", path.display()))?;
            (None, rotations_to_tensor(&train), rotations_to_tensor(&test))
        }
        None => {
            let mixture = random_wrapped_normal_mixture(config.data.n_components, config.data.sigma, &mut rng)?;
            let train = rotations_to_tensor(&mixture.sample_n(config.data.n_train, &mut rng));
            let test = rotations_to_tensor(&mixture.sample_n(config.data.n_test, &mut rng));
            (Some(mixture), train, test)
        }
    };
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

/// `mmd_local` uses the MMD bandwidth divided by this: the median heuristic (about 2 radians here) sees the
/// placement of the modes, a bandwidth 8 times smaller also sees their shape.
pub const LOCAL_FACTOR: f64 = 8.0;

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
        let local = mmd(&o.sampled.points, &r.test, so3_dist_matrix, h / LOCAL_FACTOR)?;
        let s = MethodSummary::new(&o.trained, &o.sampled, o.eval_loss, score).with("mmd_local", local);
        summaries.push((m.name.clone(), s));
        outcomes.push(o);
    }
    let n = r.config.n_samples as usize;
    let uniform: Vec<Matrix3<f64>> = (0..n).map(|_| so3.sample_uniform(&mut r.rng)).collect();
    let mut reference = serde_json::json!({
        "uniform": mmd(&rotations_to_tensor(&uniform), &r.test, so3_dist_matrix, h)?,
    });
    if let Some(mixture) = &r.mixture {
        let fresh = rotations_to_tensor(&mixture.sample_n(n, &mut r.rng));
        reference["fresh_data"] = serde_json::to_value(mmd(&fresh, &r.test, so3_dist_matrix, h)?)?;
        reference["fresh_data_local"] = serde_json::to_value(mmd(&fresh, &r.test, so3_dist_matrix, h / LOCAL_FACTOR)?)?;
    }
    finish(
        &r,
        "so3",
        &summaries,
        &outcomes,
        reference,
        &["mmd_local"],
        "MMD: Gaussian kernel on the rotation angle",
        None,
    )?;
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
    let mixture = r.mixture.as_ref().expect("so3-sym has no data file (checked)");
    let group = SymmetryGroup::by_name(r.config.group.as_deref().unwrap_or("O"))?;
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
        (Method::dsm("dsm_symmetrised"), &observed_train, &eval_sym),
        (Method::dsm("dsm_canonicalised"), &canonical_train, &eval_canon),
    ];
    let mut outcomes = Vec::new();
    let mut summaries = Vec::new();
    for (m, data, eval) in runs {
        let o = cmp.run_method(&m, data, eval)?;
        let score = mmd(&o.sampled.points, &observed_test, qdist, h)?;
        let off = off_mode_fraction(&group, mixture, &o.sampled.points, radius);
        let s = MethodSummary::new(&o.trained, &o.sampled, o.eval_loss, score).with("off_mode_fraction", off);
        summaries.push((m.name.clone(), s));
        outcomes.push(o);
    }
    let reference = serde_json::json!({
        "test_off_mode_fraction": off_mode_fraction(&group, mixture, &observed_test, radius),
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
        Some(&group),
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
    canonical: Option<&SymmetryGroup>,
) -> Result<()> {
    // Modulo a group, every pose is drawn as its canonical representative (data and samples alike).
    let show = |t: &Tensor| match canonical {
        Some(g) => tensor_to_rotations(&g.canonicalize_t(&t.to_kind(Kind::Double))),
        None => tensor_to_rotations(t),
    };
    let data = show(&r.test);
    let samples: Vec<(String, Vec<[[f64; 3]; 3]>)> =
        outcomes.iter().map(|o| (o.trained.name.clone(), show(&o.sampled.points))).collect();
    let mut panels: Vec<(&str, &[[[f64; 3]; 3]])> = vec![("held-out data", data.as_slice())];
    panels.extend(samples.iter().map(|(n, s)| (n.as_str(), s.as_slice())));
    let title = match canonical {
        Some(g) => format!("{name}: canonical representatives modulo {}; rotation axis, angle as colour", g.name()),
        None => format!("{name}: rotation axis, angle as colour"),
    };
    crate::plot::rotation_panels(&r.run.file("samples.png"), &title, &panels)?;
    report(&r.run, name, r.config.seed, summaries, outcomes, Vec::new(), reference, extra, mmd_note)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::merge_json;

    #[test]
    fn bad_configs_name_the_field_before_any_work() {
        let c = So3Config::default_so3();
        assert!(c.check(false).is_ok());
        assert!(So3Config::default_sym().check(true).is_ok());
        let e = c.check(true).unwrap_err().to_string();
        assert!(e.contains("group is missing"), "{e}");
        let e = So3Config::default_sym().check(false).unwrap_err().to_string();
        assert!(e.contains("group"), "{e}");
        let mut bad = So3Config::default_sym();
        bad.group = Some("Q7".into());
        assert!(bad.check(true).unwrap_err().to_string().contains("group = \"Q7\""));
        let e = merge_json(c.clone(), r#"{"data": {"sigma": -1}}"#).unwrap().check(false).unwrap_err().to_string();
        assert!(e.contains("data.sigma"), "{e}");
        let e = merge_json(c.clone(), r#"{"sampler": {"n_steps": 0}}"#).unwrap().check(false).unwrap_err().to_string();
        assert!(e.contains("sampler") && e.contains("n_steps"), "{e}");
        let e = format!("{:#}", merge_json(c.clone(), r#"{"train": {"stepz": 3}}"#).unwrap_err());
        assert!(e.contains("train") && e.contains("stepz"), "{e}");
        let e = format!("{:#}", merge_json(c, r#"{"train": {"steps": "many"}}"#).unwrap_err());
        assert!(e.contains("train.steps"), "{e}");
    }

    #[test]
    fn rotations_round_trip_and_holdout_splits() {
        let so3 = So3::new();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let rs: Vec<Matrix3<f64>> = (0..5).map(|_| so3.sample_uniform(&mut rng)).collect();
        let back = tensor_to_rotations(&rotations_to_tensor(&rs));
        for (r, b) in rs.iter().zip(&back) {
            for i in 0..3 {
                for j in 0..3 {
                    assert_eq!(r[(i, j)], b[i][j]);
                }
            }
        }
        let rows: Vec<usize> = (0..50).collect();
        let (train, test) = holdout(&rows, 3).unwrap();
        assert_eq!((train.len(), test.len()), (45, 5));
        assert!(holdout(&rows[..3], 0).is_none());
    }
}
