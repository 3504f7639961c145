//! The `discrete` experiment: MAD (exact score of the noised uniform law on the support as base) against
//! plain DSM on two discrete laws, with the same network, data, steps, batches and seed:
//!
//! - `two_point`: the points (-1, 0) and (1, 0) of R^2 with weights 0.1 and 0.9;
//! - `hypercube`: the vertices {-1, 1}^8 with the unequal weights of an Ising chain,
//!   p(x) proportional to exp(h sum_i x_i + J sum_i x_i x_{i+1}), h = 0.3, J = 0.5.
//!
//! Samples are projected onto the support (nearest point). Headline metrics: the total-variation distance
//! between the projected samples' histogram and the target weights (`tv`), and the fraction of raw samples
//! farther than `off_support_tol` from every support point (`off_support_fraction`). Each problem writes a
//! complete run folder of its own under the run folder (`two_point/`, `hypercube/`); the top-level
//! `summary.json` gathers both.

use crate::cli::Options;
use crate::mad::{em_sampler, report, Comparison, Method, MethodSummary, TrainSettings};
use crate::metrics::{empirical_probs, euclidean_dist_matrix, mmd, tv_distance};
use crate::run::{Meta, RunDir};
use anyhow::{bail, Result};
use geom::DiscreteSet;
use nalgebra::DVector;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sample::SamplerConfig;
use scores::base::discrete::DiscreteBase;
use scores::Schedule;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tch::{Kind, Tensor};
use train::{MlpConfig, OptimConfig, Precision, Weighting};

/// One problem's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProblemConfig {
    /// Training points drawn from the target weights.
    pub n_train: usize,
    /// Held-out points (MMD reference and evaluation loss).
    pub n_test: usize,
    /// Training (the same for both methods).
    pub train: TrainSettings,
    /// The sampler (the same for both methods).
    pub sampler: SamplerConfig,
    /// Samples per method.
    pub n_samples: i64,
    /// A raw sample farther than this from every support point counts as off-support.
    pub off_support_tol: f64,
    /// MMD kernel bandwidth (Euclidean; the median heuristic is 0 on discrete data, whose points coincide).
    pub mmd_bandwidth: f64,
}

/// The configuration of `discrete`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscreteConfig {
    /// The seed of everything.
    pub seed: u64,
    /// The two-point problem (`null` to skip it).
    pub two_point: Option<ProblemConfig>,
    /// The hypercube problem (`null` to skip it).
    pub hypercube: Option<ProblemConfig>,
}

fn problem(sigma_max: f64, width: i64, steps: u64) -> ProblemConfig {
    ProblemConfig {
        n_train: 20_000,
        n_test: 2_000,
        train: TrainSettings {
            model: MlpConfig { width, depth: 3, ..MlpConfig::default() },
            schedule: Schedule::Ve { sigma_min: 0.01, sigma_max },
            weighting: Weighting::SigmaSquared,
            optim: OptimConfig { lr: 1e-3, warmup_steps: 200, ..OptimConfig::default() },
            precision: Precision::F32,
            steps,
            batch_size: 512,
            t_eps: 1e-3,
            checkpoint_every: 1_000,
        },
        sampler: em_sampler(500),
        n_samples: 4_000,
        off_support_tol: 0.1,
        mmd_bandwidth: 1.0,
    }
}

impl DiscreteConfig {
    /// The default run: both problems, width-256 MLP, 5,000 (two-point) and 10,000 (hypercube) steps.
    pub fn default_config() -> Self {
        DiscreteConfig {
            seed: 0,
            two_point: Some(problem(3.0, 256, 5_000)),
            hypercube: Some(problem(6.0, 256, 10_000)),
        }
    }

    /// The `--quick` variant.
    pub fn quick(mut self) -> Self {
        for p in [&mut self.two_point, &mut self.hypercube].into_iter().flatten() {
            p.n_train = 2_000;
            p.n_test = 500;
            p.train.model.width = 128;
            p.train.steps = 1_500;
            p.train.optim.warmup_steps = 50;
            p.train.checkpoint_every = 500;
            p.sampler = em_sampler(100);
            p.n_samples = 1_000;
        }
        self
    }

    /// Validates every field before any work; errors name the field and its allowed range.
    pub fn check(&self) -> Result<()> {
        if self.two_point.is_none() && self.hypercube.is_none() {
            bail!("invalid config: two_point and hypercube are both null: nothing to run");
        }
        for (name, p) in [("two_point", &self.two_point), ("hypercube", &self.hypercube)] {
            let Some(p) = p else { continue };
            if p.n_train < 2 || p.n_train > 10_000_000 {
                bail!("invalid config: {name}.n_train = {}: expected 2..=10^7", p.n_train);
            }
            if p.n_test < 2 || p.n_test > 100_000 {
                bail!("invalid config: {name}.n_test = {}: expected 2..=10^5", p.n_test);
            }
            p.train
                .check()
                .map_err(|e| anyhow::anyhow!("{}", e.to_string().replace("train.", &format!("{name}.train."))))?;
            p.sampler.check().map_err(|e| anyhow::anyhow!("invalid config: {name}.sampler: {e}"))?;
            if !(2..=1_000_000).contains(&p.n_samples) {
                bail!("invalid config: {name}.n_samples = {}: expected 2..=10^6", p.n_samples);
            }
            if !(p.mmd_bandwidth.is_finite() && p.mmd_bandwidth > 0.0) {
                bail!("invalid config: {name}.mmd_bandwidth = {}: expected a positive number", p.mmd_bandwidth);
            }
            if !(p.off_support_tol.is_finite() && p.off_support_tol > 0.0) {
                bail!("invalid config: {name}.off_support_tol = {}: expected a positive number", p.off_support_tol);
            }
        }
        Ok(())
    }
}

/// The Ising-chain weights on {-1, 1}^d in [`DiscreteSet::hypercube`]'s vertex order.
pub fn ising_weights(d: usize, h: f64, j: f64) -> Vec<f64> {
    let set = DiscreteSet::hypercube(d).expect("a valid dimension");
    let energies: Vec<f64> =
        set.points().iter().map(|x| h * x.sum() + j * (0..d - 1).map(|i| x[i] * x[i + 1]).sum::<f64>()).collect();
    let max = energies.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let w: Vec<f64> = energies.iter().map(|e| (e - max).exp()).collect();
    let z: f64 = w.iter().sum();
    w.iter().map(|v| v / z).collect()
}

fn points_tensor(rows: &[DVector<f64>]) -> Tensor {
    let d = rows[0].len() as i64;
    let flat: Vec<f64> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_slice(&flat).reshape([rows.len() as i64, d])
}

fn run_problem(
    opts: &Options,
    parent: &std::path::Path,
    name: &str,
    seed: u64,
    p: &ProblemConfig,
    support: DiscreteSet,
    target: Vec<f64>,
) -> Result<serde_json::Value> {
    let run = RunDir::create(&parent.join(name), p, &Meta::collect(&format!("discrete/{name}"), seed, opts.device))?;
    let target_set = DiscreteSet::new(support.points().to_vec(), Some(target.clone()))?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let train: Vec<DVector<f64>> = (0..p.n_train).map(|_| target_set.sample_weighted(&mut rng)).collect();
    let test: Vec<DVector<f64>> = (0..p.n_test).map(|_| target_set.sample_weighted(&mut rng)).collect();
    let (train, test) = (points_tensor(&train), points_tensor(&test));
    let d = support.ambient_dim() as i64;
    let cmp = Comparison {
        run: &run,
        manifold: &support,
        point_shape: vec![d],
        train: p.train,
        sampler: p.sampler,
        n_samples: p.n_samples,
        seed,
        device: opts.device,
    };
    let eval = cmp.eval_batch(&test, 4_096.min(p.n_test as i64 * 4));
    let h = p.mmd_bandwidth;
    let methods = [Method::mad("mad", Arc::new(DiscreteBase::new(support.clone()))), Method::dsm("dsm")];
    let (mut summaries, mut outcomes) = (Vec::new(), Vec::new());
    let mut bars: Vec<(String, Vec<f64>)> = vec![("target".into(), target.clone())];
    for m in &methods {
        let o = cmp.run_method(m, &train, &eval)?;
        let idx = support.nearest_index_t(&o.sampled.points);
        let idx: Vec<usize> =
            Vec::<i64>::try_from(idx.to_kind(Kind::Int64)).expect("indices").iter().map(|&i| i as usize).collect();
        let probs = empirical_probs(&idx, support.len());
        let tv = tv_distance(&probs, &target)?;
        let off =
            o.sampled.distance_before.gt(p.off_support_tol).to_kind(Kind::Double).mean(Kind::Double).double_value(&[]);
        let score = mmd(&o.sampled.points, &test, euclidean_dist_matrix, h)?;
        let s = MethodSummary::new(&o.trained, &o.sampled, o.eval_loss, score)
            .with("tv", tv)
            .with("off_support_fraction", off);
        bars.push((m.name.clone(), probs));
        summaries.push((m.name.clone(), s));
        outcomes.push(o);
    }
    let categories: Vec<String> = if support.len() <= 32 {
        support.points().iter().map(|x| format!("{:?}", x.as_slice())).collect()
    } else {
        (0..support.len()).map(|i| i.to_string()).collect()
    };
    let series: Vec<(&str, &[f64])> = bars.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect();
    crate::plot::bar_groups(
        &run.file("samples.png"),
        &format!("discrete/{name}: probabilities"),
        &categories,
        &series,
    )?;
    // The TV distance that n samples from the target itself reach (the sampling-noise floor).
    let floor_idx: Vec<usize> = (0..p.n_samples as usize)
        .map(|_| {
            let x = target_set.sample_weighted(&mut rng);
            support.nearest_index(&x)
        })
        .collect();
    let floor = tv_distance(&empirical_probs(&floor_idx, support.len()), &target)?;
    let reference = serde_json::json!({ "tv_of_target_samples": floor, "n_states": support.len() });
    report(
        &run,
        &format!("discrete/{name}"),
        seed,
        &summaries,
        &outcomes,
        Vec::new(),
        reference,
        &["tv", "off_support_fraction"],
        "MMD: Gaussian kernel on the Euclidean distance",
    )?;
    let text = std::fs::read_to_string(run.file("summary.json"))?;
    Ok(serde_json::from_str(&text)?)
}

/// `experiments discrete`.
pub fn run_discrete(opts: &Options) -> Result<()> {
    let base = DiscreteConfig::default_config();
    let base = if opts.quick { base.quick() } else { base };
    let config = opts.resolve(base, |c, s| c.seed = s)?;
    config.check()?;
    let run = RunDir::create(&opts.out_dir(), &config, &Meta::collect("discrete", config.seed, opts.device))?;
    eprintln!("discrete: run folder {}", run.path().display());
    let mut problems = serde_json::Map::new();
    if let Some(p) = &config.two_point {
        let s = run_problem(opts, run.path(), "two_point", config.seed, p, DiscreteSet::two_points(), vec![0.1, 0.9])?;
        problems.insert("two_point".into(), s);
    }
    if let Some(p) = &config.hypercube {
        let support = DiscreteSet::hypercube(8)?;
        let s = run_problem(opts, run.path(), "hypercube", config.seed, p, support, ising_weights(8, 0.3, 0.5))?;
        problems.insert("hypercube".into(), s);
    }
    run.write_summary(&serde_json::json!({ "experiment": "discrete", "seed": config.seed, "problems": problems }))?;
    println!("\nwrote {}", run.file("summary.json").display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ising_weights_are_a_law_and_unequal() {
        let w = ising_weights(8, 0.3, 0.5);
        assert_eq!(w.len(), 256);
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        // All +1 (vertex 255) is the most likely state; all -1 (vertex 0) is less likely (h > 0).
        let max = w.iter().cloned().fold(0.0, f64::max);
        assert_eq!(w[255], max);
        assert!(w[0] < w[255] / 10.0);
    }

    #[test]
    fn config_errors_name_the_field() {
        let mut c = DiscreteConfig::default_config();
        c.hypercube.as_mut().unwrap().n_samples = 0;
        assert!(c.check().unwrap_err().to_string().contains("hypercube.n_samples"));
        let mut c = DiscreteConfig::default_config();
        c.two_point.as_mut().unwrap().train.batch_size = 0;
        assert!(
            c.check().unwrap_err().to_string().contains("two_point.train.batch_size"),
            "{}",
            c.check().unwrap_err()
        );
        assert!(DiscreteConfig { seed: 0, two_point: None, hypercube: None }.check().is_err());
    }
}
