//! Where the training step of the peer harness (`benches::mad`) goes: the whole `Trainer::step`, and
//! separately the batch draw, `loss_and_grad` (with the base score and the forward pass alone), clipping,
//! AdamW and the EMA, for DSM and MAD.
//!
//! `cargo run --release -p benches --example profile_train` (times in ms per call; the machine is shared, so
//! repeat and compare with `uptime`).
use benches::mad::{so3_data, train_config};
use benches::time_per_call;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use scores::base::so3::So3Base;
use scores::BaseScore;
use std::sync::Arc;
use tch::{Device, Kind, Tensor};
use train::optim::clip_grad_norm;
use train::{loss_and_grad, AdamW, Ema, FlatParams, LossBatch, Objective, ScoreMlp, TensorBase, Trainer};

fn main() {
    let threads = std::env::var("THREADS").ok().and_then(|s| s.parse().ok()).unwrap_or(rayon::current_num_threads());
    tch::set_num_threads(threads as i32);
    let secs = 2.0;
    let data = so3_data();
    for objective in [Objective::Dsm, Objective::Mad] {
        let config = train_config(objective);
        let base: Option<Arc<dyn TensorBase>> =
            if objective == Objective::Mad { Some(Arc::new(So3Base::new())) } else { None };
        let mut trainer = Trainer::new(config, &[3, 3], base.clone(), Device::Cpu).unwrap();
        let cpu0 = cpu_seconds();
        let mut n_steps = 0;
        let whole = time_per_call(
            || {
                trainer.step(&data).unwrap();
                n_steps += 1;
            },
            secs,
        );
        let cpu = (cpu_seconds() - cpu0) / n_steps as f64;
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let b = 512usize;
        let mut batch = None;
        let draw = time_per_call(
            || {
                let idx: Vec<i64> = (0..b).map(|_| rng.random_range(0..4096u64) as i64).collect();
                let t: Vec<f64> = (0..b).map(|_| 1e-3 + (1.0 - 1e-3) * rng.random::<f64>()).collect();
                let eps: Vec<f64> = (0..b * 9).map(|_| rng.sample(StandardNormal)).collect();
                batch = Some(LossBatch {
                    x0: data.index_select(0, &Tensor::from_slice(&idx)),
                    t: Tensor::from_slice(&t).to_kind(Kind::Float),
                    eps: Tensor::from_slice(&eps).reshape([b as i64, 3, 3]).to_kind(Kind::Float),
                });
            },
            secs,
        );
        let batch = batch.unwrap();
        let named: Vec<_> = trainer.net().named_parameters().into_iter().map(|(n, t)| (n, t.detach().copy())).collect();
        let net = ScoreMlp::from_tensors(&config.model, &[3, 3], &named).unwrap();
        let mut flat = FlatParams::new(net.named_parameters());
        let lg = time_per_call(
            || {
                loss_and_grad(&net, base.as_deref(), &config.schedule, config.weighting, &batch, flat.grad_mut());
            },
            secs,
        );
        let xt = &batch.x0 + &batch.eps * batch.t.view([-1, 1, 1]);
        let ones = batch.t.ones_like();
        let base_t = time_per_call(
            || {
                let _ = So3Base::new().base_score_t(&xt, &ones, &batch.t);
            },
            secs,
        );
        let fwd = time_per_call(
            || {
                let _ = tch::no_grad(|| net.forward(&xt, &ones, &batch.t));
            },
            secs,
        );
        let clip = time_per_call(
            || {
                clip_grad_norm(flat.grad_mut(), Some(1.0));
            },
            secs,
        );
        let mut adam = AdamW::new(&config.optim, flat.buffer());
        let g = flat.grad().copy();
        let ad = time_per_call(|| adam.step(flat.buffer_mut(), &g, 1e-9), secs);
        let mut ema = Ema::new(flat.buffer(), 0.999);
        let em = time_per_call(|| ema.update(flat.buffer()), secs);
        println!(
            "{objective:?} ({threads} threads): step {:.2} ms ({:.1}/s, {:.2} ms CPU) | draw {:.2} | loss_and_grad {:.2} (base {:.2}, fwd only {:.2}) | clip {:.3} | adam {:.3} | ema {:.3}",
            whole * 1e3, 1.0 / whole, cpu * 1e3, draw * 1e3, lg * 1e3, base_t * 1e3, fwd * 1e3, clip * 1e3, ad * 1e3, em * 1e3
        );
    }
}

/// User plus system CPU time of this process in seconds, from `/proc/self/stat` (Linux; NaN elsewhere).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return f64::NAN };
    let rest = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|s| s.parse::<f64>().ok()).unwrap_or(f64::NAN);
    (ticks(11) + ticks(12)) / 100.0
}
