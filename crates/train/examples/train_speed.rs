//! Steps per second of the training step for a small MLP (by default width 256, depth 3, batch 512; DSM,
//! VE, f32) on points of S^2, on the CPU.
//!
//! `cargo run --release -p train --example train_speed [n_steps] [width] [batch]` (`THREADS=1` for one
//! thread)
//!
//! The PyTorch eager peer of the same computation: `python crates/train/examples/peer_train_step.py`.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use std::time::Instant;
use tch::{Device, Tensor};
use train::{MlpConfig, TrainConfig, Trainer};

fn main() {
    let arg = |i: usize, default: u64| std::env::args().nth(i).and_then(|s| s.parse().ok()).unwrap_or(default);
    let (n_steps, width, batch) = (arg(1, 300), arg(2, 256) as i64, arg(3, 512) as i64);
    let warmup = 20;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let n = 10_000;
    let mut pts = Vec::with_capacity(3 * n);
    for _ in 0..n {
        let v: [f64; 3] = std::array::from_fn(|_| StandardNormal.sample(&mut rng));
        let r = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
        pts.extend(v.iter().map(|x| x / r));
    }
    let data = Tensor::from_slice(&pts).reshape([n as i64, 3]).to_kind(tch::Kind::Float);
    let config = TrainConfig {
        model: MlpConfig { width, depth: 3, ..MlpConfig::default() },
        steps: warmup + n_steps,
        batch_size: batch,
        checkpoint_every: 0,
        ..TrainConfig::default()
    };
    if let Some(threads) = std::env::var("THREADS").ok().and_then(|s| s.parse().ok()) {
        tch::set_num_threads(threads);
    }
    let mut trainer = Trainer::new(config, &[3], None, Device::Cpu).expect("valid config");
    for _ in 0..warmup {
        trainer.step(&data).expect("step");
    }
    // Timed in chunks of 20 steps: the machine is shared, so report the median and the best chunk, and
    // the process CPU time per step (with one thread, the work done, whatever the load).
    let chunk = 20;
    let mut rates = Vec::new();
    let mut last = f64::NAN;
    let n_chunks = (n_steps / chunk).max(1);
    let cpu0 = cpu_seconds();
    for _ in 0..n_chunks {
        let start = Instant::now();
        for _ in 0..chunk {
            last = trainer.step(&data).expect("step").loss;
        }
        rates.push(chunk as f64 / start.elapsed().as_secs_f64());
    }
    let cpu_per_step = (cpu_seconds() - cpu0) / (n_chunks * chunk) as f64;
    rates.sort_by(f64::total_cmp);
    println!(
        "train step (width {width}, depth 3, batch {batch}, f32, {} threads): median {:.1} steps/s, best {:.1} \
         steps/s, {:.2} ms CPU/step, last loss {last:.4}",
        tch::get_num_threads(),
        rates[rates.len() / 2],
        rates[rates.len() - 1],
        1e3 * cpu_per_step,
    );
}

/// User plus system CPU time of this process in seconds, from `/proc/self/stat` (Linux; NaN elsewhere).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return f64::NAN };
    // Fields after the command name (which ends with ')'): utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|s| s.parse::<f64>().ok()).unwrap_or(f64::NAN);
    // Field 14 is index 11 after the state field (field 3 is index 0); the kernel's clock is 100 Hz.
    (ticks(11) + ticks(12)) / 100.0
}
