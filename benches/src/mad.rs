//! The MAD workloads of the peer harness (`cargo xtask bench peers`): one training step of the train crate
//! on SO(3) data, and Euler-Maruyama sampling of the reverse SDE with the learned MAD score.
//!
//! Both write, next to their throughput, everything the PyTorch peer (`benches/peers/peers_torch.py`) needs
//! to compute the same numbers: the configuration, the weights, a fixed batch or initial state, the noise,
//! and our results on them (first-step loss, gradient, parameters and EMA after one AdamW step; the score
//! and state after the first sampler step; the samples of a whole seeded run).

use crate::{time_per_call, to_tensor, write_array};
use geom::{So3, UniformSampler};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use sample::{euler_maruyama, initial_noise, reverse_sde_drift, FixedStepConfig, NoProgress};
use scores::base::so3::So3Base;
use scores::Schedule;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use tch::{Device, Kind, Tensor};
use train::optim::clip_grad_norm;
use train::{
    loss_and_grad, AdamW, Ema, FlatParams, LossBatch, MlpConfig, Objective, Precision, ResidualScore, ScoreMlp,
    TensorBase, TrainConfig, Trainer, Weighting,
};

/// Points in the training set (Haar rotations).
pub const N_DATA: usize = 4096;
/// Samples of the sampling workload.
pub const N_SAMPLES: i64 = 2048;
/// Steps of the sampling workload.
pub const N_SAMPLER_STEPS: usize = 200;
/// Learning rate of the one-step agreement check (the peak rate; step 0 of the warm-up would move little).
pub const CHECK_LR: f64 = 1e-3;

/// The training configuration of both sides: the default network (width 256, depth 3, SiLU, 8 frequencies)
/// and optimiser (AdamW, warm-up and cosine decay, clipping at 1, EMA 0.999), VE sigma in [0.01, 3], batch
/// 512, f32, 10,000 planned steps (which fixes the learning-rate schedule).
pub fn train_config(objective: Objective) -> TrainConfig {
    TrainConfig {
        model: MlpConfig::default(),
        schedule: Schedule::Ve { sigma_min: 0.01, sigma_max: 3.0 },
        objective,
        weighting: Weighting::SigmaSquared,
        precision: Precision::F32,
        steps: 10_000,
        batch_size: 512,
        t_eps: 1e-3,
        seed: 0,
        checkpoint_every: 0,
        ..TrainConfig::default()
    }
}

/// `N_DATA` Haar rotations, `[N, 3, 3]` f32 on the CPU (seeded).
pub fn so3_data() -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let pts: Vec<_> = (0..N_DATA).map(|_| So3.sample_uniform(&mut rng)).collect();
    to_tensor(&So3, &pts, Kind::Float, Device::Cpu)
}

fn json_params(c: &TrainConfig) -> String {
    let (m, o) = (&c.model, &c.optim);
    let Schedule::Ve { sigma_min, sigma_max } = c.schedule else { unreachable!("the workloads use VE") };
    format!(
        "{{\"width\": {}, \"depth\": {}, \"n_freqs\": {}, \"batch\": {}, \"sigma_min\": {sigma_min:?}, \
         \"sigma_max\": {sigma_max:?}, \"t_eps\": {:?}, \"lr\": {:?}, \"beta1\": {:?}, \"beta2\": {:?}, \"eps\": {:?}, \
         \"weight_decay\": {:?}, \"warmup_steps\": {}, \"min_lr_frac\": {:?}, \"grad_clip\": {:?}, \
         \"ema_decay\": {:?}, \"total_steps\": {}, \"check_lr\": {CHECK_LR:?}, \"mad\": {}}}",
        m.width,
        m.depth,
        m.n_freqs,
        c.batch_size,
        c.t_eps,
        o.lr,
        o.beta1,
        o.beta2,
        o.eps,
        o.weight_decay,
        o.warmup_steps,
        o.min_lr_frac,
        o.grad_clip.expect("the workloads clip"),
        o.ema_decay,
        c.steps,
        c.objective == Objective::Mad,
    )
}

/// Writes named tensors as `{prefix}{i}` arrays; returns the JSON object `{name: spec, ..}` (in order).
fn json_named(dir: &Path, prefix: &str, named: &[(String, Tensor)]) -> String {
    let mut s = String::from("{");
    for (i, (name, t)) in named.iter().enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        write!(s, "{sep}\"{name}\": {}", write_array(dir, &format!("{prefix}{i}"), t)).expect("String write");
    }
    s.push('}');
    s
}

/// Detached copies of a network's parameters (new storage), in [`ScoreMlp::named_parameters`] order.
fn copy_named(net: &ScoreMlp) -> Vec<(String, Tensor)> {
    net.named_parameters().into_iter().map(|(n, t)| (n, t.detach().copy())).collect()
}

/// A seeded batch of `b` points of `data` with times in `[t_eps, 1]` and standard normal noise, f32.
fn check_batch(data: &Tensor, b: i64, t_eps: f64, seed: u64) -> LossBatch {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = data.size()[0];
    let idx: Vec<i64> = (0..b).map(|_| rng.random_range(0..n)).collect();
    let t: Vec<f64> = (0..b).map(|_| t_eps + (1.0 - t_eps) * rng.random::<f64>()).collect();
    let eps: Vec<f64> = (0..b * 9).map(|_| rng.sample(StandardNormal)).collect();
    LossBatch {
        x0: data.index_select(0, &Tensor::from_slice(&idx)),
        t: Tensor::from_slice(&t).to_kind(Kind::Float),
        eps: Tensor::from_slice(&eps).reshape([b, 3, 3]).to_kind(Kind::Float),
    }
}

/// The training-step workload (`mad_train_step`, or `dsm_train_step` for the same step without the base
/// score): times [`Trainer::step`], then runs the one-step agreement check on a fixed batch. Returns the
/// manifest entry and the trained weights (for the sampling workload).
pub fn train_workload(dir: &Path, objective: Objective, quick: bool) -> (String, Vec<(String, Tensor)>) {
    let config = train_config(objective);
    let base: Option<Arc<dyn TensorBase>> = match objective {
        Objective::Mad => Some(Arc::new(So3Base::new())),
        Objective::Dsm => None,
    };
    let data = so3_data();
    let mut trainer = Trainer::new(config, &[3, 3], base.clone(), Device::Cpu).expect("valid config");
    for _ in 0..5 {
        trainer.step(&data).expect("finite step");
    }
    let sec = time_per_call(
        || {
            trainer.step(&data).expect("finite step");
        },
        if quick { 1.0 } else { 4.0 },
    );
    let name = match objective {
        Objective::Mad => "mad_train_step",
        Objective::Dsm => "dsm_train_step",
    };
    // One step of the train crate's pieces on a fixed batch, from the trained weights.
    let weights = copy_named(trainer.net());
    let net = ScoreMlp::from_tensors(&config.model, &[3, 3], &copy_named(trainer.net())).expect("same layout");
    let mut flat = FlatParams::new(net.named_parameters());
    let batch = check_batch(&data, config.batch_size, config.t_eps, 5);
    let loss = loss_and_grad(&net, base.as_deref(), &config.schedule, config.weighting, &batch, flat.grad_mut());
    let grad = flat.grad().copy();
    let grad_norm = clip_grad_norm(flat.grad_mut(), config.optim.grad_clip);
    let mut adam = AdamW::new(&config.optim, flat.buffer());
    let mut ema = Ema::new(flat.buffer(), config.optim.ema_decay);
    let g = flat.grad().shallow_clone();
    adam.step(flat.buffer_mut(), &g, CHECK_LR);
    ema.update(flat.buffer());
    let entry = format!(
        "{{\"workload\": \"{name}\", \"ours_per_s\": {}, \"params\": {}, \"data\": {}, \"weights\": {}, \
         \"check\": {{\"x0\": {}, \"t\": {}, \"eps\": {}, \"loss\": {loss:?}, \"grad_norm\": {grad_norm:?}, \
         \"grad\": {}, \"params_after\": {}, \"ema_after\": {}}}, \
         \"note\": \"steps/s; MLP 256x3 SiLU on SO(3) [3,3], batch 512, f32, AdamW + clip + EMA{}\"}}",
        1.0 / sec,
        json_params(&config),
        write_array(dir, &format!("{name}_data"), &data),
        json_named(dir, &format!("{name}_w"), &weights),
        write_array(dir, &format!("{name}_x0"), &batch.x0),
        write_array(dir, &format!("{name}_t"), &batch.t),
        write_array(dir, &format!("{name}_eps"), &batch.eps),
        write_array(dir, &format!("{name}_grad"), &grad),
        write_array(dir, &format!("{name}_params_after"), flat.buffer()),
        write_array(dir, &format!("{name}_ema_after"), ema.shadow()),
        if objective == Objective::Mad { ", exact SO(3) base score" } else { ", no base score" },
    );
    (entry, weights)
}

/// The sampling workload (`reverse_sde_sampling`): Euler-Maruyama on the reverse VE SDE with the MAD score
/// `s = s_base + net / sigma` of `weights`, `N_SAMPLES` rotations, `N_SAMPLER_STEPS` uniform steps from t = 1
/// to 1e-3 (`n_steps` overrides the count), f32. Throughput in samples * steps per second.
pub fn sampling_workload(dir: &Path, weights: &[(String, Tensor)], n_steps: usize, quick: bool) -> String {
    let config = train_config(Objective::Mad);
    let schedule = config.schedule;
    let net = ScoreMlp::from_tensors(&config.model, &[3, 3], weights).expect("same layout");
    let score = ResidualScore::new(net, Some(Arc::new(So3Base::new())), schedule);
    let fixed = FixedStepConfig { n_steps, t_end: 1e-3, ..FixedStepConfig::default() };
    tch::manual_seed(7);
    let x_init = initial_noise(&schedule, &[N_SAMPLES, 3, 3], Kind::Float, Device::Cpu);
    let mut out = Tensor::new();
    let sec = time_per_call(
        || {
            tch::manual_seed(8);
            out = euler_maruyama(&score, &schedule, &x_init, &fixed, &mut NoProgress).expect("finite samples").x;
        },
        if quick { 0.5 } else { 4.0 },
    );
    // The first step with exported noise.
    let ts = fixed.times(&schedule).expect("valid grid");
    let (t0, dt) = (ts[0], ts[0] - ts[1]);
    tch::manual_seed(9);
    let z0 = x_init.randn_like();
    let (score0, x1) = tch::no_grad(|| {
        let tt = Tensor::full([N_SAMPLES], t0, (Kind::Float, Device::Cpu));
        let s = scores::Score::score(&score, &x_init, &tt);
        let drift = reverse_sde_drift(&score, &schedule, &x_init, t0);
        (s, &x_init - drift * dt + &z0 * (schedule.g2(t0) * dt).sqrt())
    });
    format!(
        "{{\"workload\": \"reverse_sde_sampling\", \"ours_per_s\": {}, \"params\": {}, \"n_steps\": {n_steps}, \
         \"t_end\": 1e-3, \"run_seed\": 8, \"weights\": {}, \"x_init\": {}, \"samples\": {}, \
         \"check\": {{\"t0\": {t0:?}, \"dt\": {dt:?}, \"z0\": {}, \"score0\": {}, \"x1\": {}}}, \
         \"note\": \"samples x steps/s; {N_SAMPLES} SO(3) samples, {n_steps} steps, MAD score, f32\"}}",
        (N_SAMPLES as f64 * n_steps as f64) / sec,
        json_params(&config),
        json_named(dir, "sde_w", weights),
        write_array(dir, "sde_x_init", &x_init),
        write_array(dir, "sde_samples", &out),
        write_array(dir, "sde_z0", &z0),
        write_array(dir, "sde_score0", &score0),
        write_array(dir, "sde_x1", &x1),
    )
}
