//! Our side of the peer benches (`cargo xtask bench peers`): runs each workload, times it, and writes its
//! inputs, outputs and throughput to `--dir` for `benches/peers/peers.py`, which runs the same work in
//! NumPy/SciPy (base score, smoother) or PyTorch eager (`benches/peers/peers_torch.py`: the MAD training
//! step, the same step without the base score, reverse-SDE sampling) and prints the ratio.
//!
//! Options: `--dir DIR`, `--quick`, `--only NAME,..` (a subset of the workloads), `--threads N` (libtorch
//! and rayon threads).

use benches::mad::{sampling_workload, train_workload, N_SAMPLER_STEPS};
use benches::{time_per_call, to_tensor, write_array};
use geom::distributions::{random_vmf_mixture, ManifoldDistribution};
use geom::{So3, Sphere, UniformSampler};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use scores::base::so3::So3Base;
use scores::smoother::sphere::SphereSmoother;
use scores::smoother::SmootherDensity;
use scores::BaseScore;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};
use train::Objective;

/// SO(3) base score at 65,536 noised rotations, sigma log-uniform in [1e-3, 1e2], alpha in (0, 1].
fn so3_workload(dir: &Path, n: usize, min_seconds: f64) -> String {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let (mut xs, mut alphas, mut sigmas) = (Vec::with_capacity(9 * n), Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let r = So3.sample_uniform(&mut rng);
        let alpha: f64 = 1.0 - rng.random::<f64>();
        let sigma = 10f64.powf(-3.0 + 5.0 * rng.random::<f64>());
        for i in 0..3 {
            for j in 0..3 {
                let eps: f64 = StandardNormal.sample(&mut rng);
                xs.push(alpha * r[(i, j)] + sigma * eps);
            }
        }
        alphas.push(alpha);
        sigmas.push(sigma);
    }
    let x = Tensor::from_slice(&xs).view([n as i64, 3, 3]);
    let (alpha, sigma) = (Tensor::from_slice(&alphas), Tensor::from_slice(&sigmas));
    let base = So3Base::new();
    let mut out = Tensor::new();
    let sec = time_per_call(|| out = base.base_score_t(&x, &alpha, &sigma), min_seconds);
    format!(
        "{{\"workload\": \"so3_base_score\", \"ours_per_s\": {}, \"inputs\": {{\"x\": {}, \"alpha\": {}, \"sigma\": {}}}, \
         \"outputs\": {{\"score\": {}}}, \"note\": \"{n} points, Double, CPU\"}}",
        n as f64 / sec,
        write_array(dir, "so3_x", &x),
        write_array(dir, "so3_alpha", &alpha),
        write_array(dir, "so3_sigma", &sigma),
        write_array(dir, "so3_score", &out),
    )
}

/// The S^2 heat-kernel smoother (direct form): log-density at `n_queries` points from 10,000 data points
/// drawn from a von Mises-Fisher mixture, at t = 0.01.
fn s2_smoother_workload(dir: &Path, n_data: usize, n_queries: usize, min_seconds: f64) -> String {
    let s2 = Sphere::new(3).expect("d = 3 is valid");
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    let law = random_vmf_mixture(3, 8, 30.0, &mut rng).expect("valid mixture");
    let data = to_tensor(&s2, &law.sample_n(n_data, &mut rng), Kind::Double, tch::Device::Cpu);
    let queries = to_tensor(&s2, &law.sample_n(n_queries, &mut rng), Kind::Double, tch::Device::Cpu);
    let t = 0.01;
    let smoother = SphereSmoother::new(&data).expect("valid data");
    let mut out = Tensor::new();
    let sec = time_per_call(|| out = smoother.log_density_t(&queries, t).expect("valid queries"), min_seconds);
    format!(
        "{{\"workload\": \"s2_smoother\", \"ours_per_s\": {}, \"params\": {{\"t\": {t}, \"peer_queries\": 2000}}, \
         \"inputs\": {{\"data\": {}, \"queries\": {}}}, \"outputs\": {{\"log_density\": {}}}, \
         \"note\": \"{n_data} data x {n_queries} queries, queries/s, Double, CPU\"}}",
        n_queries as f64 / sec,
        write_array(dir, "s2_data", &data),
        write_array(dir, "s2_queries", &queries),
        write_array(dir, "s2_log_density", &out),
    )
}

fn main() {
    let mut dir = PathBuf::from("target/peers");
    let mut quick = false;
    let mut only: Option<Vec<String>> = None;
    let mut threads = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--dir" => dir = PathBuf::from(args.next().expect("--dir needs a folder")),
            "--quick" => quick = true,
            "--only" => {
                only = Some(
                    args.next().expect("--only needs a comma-separated list").split(',').map(String::from).collect(),
                )
            }
            "--threads" => threads = Some(args.next().and_then(|n| n.parse().ok()).expect("--threads needs a count")),
            other => panic!("unknown option `{other}` (allowed: --dir DIR, --quick, --only NAME,.., --threads N)"),
        }
    }
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    if let Some(n) = threads {
        rayon::ThreadPoolBuilder::new().num_threads(n).build_global().expect("the rayon pool is not built yet");
    }
    tch::set_num_threads(rayon::current_num_threads() as i32);
    let wanted = |name: &str| only.as_ref().is_none_or(|o| o.iter().any(|w| w == name));
    let n = if quick { 4096 } else { 65_536 };
    let min_seconds = if quick { 0.5 } else { 2.0 };
    let mut workloads = Vec::new();
    if wanted("so3_base_score") {
        workloads.push(so3_workload(&dir, n, min_seconds));
    }
    if wanted("s2_smoother") {
        workloads.push(s2_smoother_workload(&dir, 10_000, if quick { 1000 } else { 10_000 }, min_seconds));
    }
    if wanted("mad_train_step") || wanted("reverse_sde_sampling") {
        let (entry, weights) = train_workload(&dir, Objective::Mad, quick);
        if wanted("mad_train_step") {
            workloads.push(entry);
        }
        if wanted("reverse_sde_sampling") {
            let n_steps = if quick { N_SAMPLER_STEPS / 4 } else { N_SAMPLER_STEPS };
            workloads.push(sampling_workload(&dir, &weights, n_steps, quick));
        }
    }
    if wanted("dsm_train_step") {
        workloads.push(train_workload(&dir, Objective::Dsm, quick).0);
    }
    let mut manifest = String::from("{\"workloads\": [\n");
    for (i, w) in workloads.iter().enumerate() {
        let sep = if i + 1 < workloads.len() { ",\n" } else { "\n" };
        write!(manifest, "{w}{sep}").expect("writing to a String cannot fail");
    }
    manifest.push_str("]}\n");
    std::fs::write(dir.join("manifest.json"), manifest).expect("cannot write manifest.json");
}
