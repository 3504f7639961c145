//! The experiment runner: `experiments NAME [options]` (normally through `cargo xtask experiment`).

use anyhow::{bail, Context, Result};
use experiments::cli;
use experiments::data::{earth_file, EARTH_DATASETS};
use experiments::earth::{published_column, run_smoother, PUBLISHED};
use experiments::run::{Meta, RunDir};
use std::path::PathBuf;

const HELP: &str = "\
experiments NAME [options]

options of every MAD/DSM experiment:
  --quick         the small variant (under a minute)
  --seed N        the seed of data, initialisation, batches and sampling (overrides the config's)
  --config FILE   a JSON object overriding fields of the default configuration (see the run folder's
                  config.json for every field)
  --out DIR       the run folder (default runs/NAME-<UTC time>); a folder with checkpoints is resumed
  --device D      cpu (default), cuda or cuda:N

experiments:
  so3       (the main job) MAD vs DSM on a 16-component wrapped normal mixture on SO(3)
  so3-sym   poses with octahedral symmetry: symmetrised training vs quotient canonicalisation
  sphere    MAD vs DSM on an 8-component von Mises-Fisher mixture on S^2
  discrete  MAD vs DSM on the two-point law (weights 0.1/0.9) and an Ising law on {-1,1}^8
  ndsm      DSM vs nonlinear DSM without, with exact and with neural control variates on imbalanced
            2-D mixtures (0.9/0.1 pair, unequal 8-mode ring, ring with 200 training points)
  oism      DSM vs OISM (Hermite base) vs the OU kernel smoother on 2-D toy laws: loss and gradient variance;
            with --dataset, the Earth-data part (as oism-earth)
  oism-earth  DSM vs MAD vs OISM (spherical-harmonic base, exact under ambient noise) vs the heat kernel
            smoother on one Earth data set: loss and gradient variance, MMD, test NLL of the two density
            estimators
            options: --dataset volcano|earthquake|flood|fire (default fire)
                     --data-dir DIR (default ../shared/data/earth)
  mflow     M-flow, M_e-flow, PIE and an ambient flow learning a manifold and its density
            options: --dataset circle|sphere|surface|lorenz (default surface)
  earth     MAD vs DSM vs the diffusion kernel smoother on one Earth data set (80/10/10 split by the seed)
            options: --dataset volcano|earthquake|flood|fire (default fire)
                     --data-dir DIR (default ../shared/data/earth)

  earth-smoother  the kernel smoother alone on the Earth data: t by validation log-likelihood,
            test NLL (area measure) over seeded 80/10/10 splits, next to the published table
            options: --dataset volcano|earthquake|flood|fire|all (default all)
                     --data-dir DIR (default ../shared/data/earth)
                     --seed N (first split seed, default 0) --seeds K (default 5)
                     --quick (2 seeds, coarse grid) --out DIR (default runs/earth-smoother-<dataset>)
";

/// libtorch's OpenMP threads spin-wait between parallel regions by default; with any other busy process on
/// a 2-core machine that made training up to 50x slower (3 instead of 166 steps/s, measured). Unless the
/// user chose a policy, the runner re-executes itself once with `OMP_WAIT_POLICY=passive`, which the
/// OpenMP runtime only reads at start-up.
fn ensure_passive_openmp() {
    if std::env::var_os("OMP_WAIT_POLICY").is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else { return };
    let status =
        std::process::Command::new(exe).args(std::env::args_os().skip(1)).env("OMP_WAIT_POLICY", "passive").status();
    match status {
        Ok(s) => std::process::exit(s.code().unwrap_or(1)),
        Err(e) => eprintln!("warning: cannot restart with OMP_WAIT_POLICY=passive ({e}); continuing"),
    }
}

fn main() {
    ensure_passive_openmp();
    if let Err(e) = run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("earth-smoother") => earth(&args[1..]),
        Some("earth") => {
            experiments::sphere::run_earth(&cli::parse("earth", &args[1..], &["--dataset", "--data-dir"])?)
        }
        Some("sphere") => experiments::sphere::run_sphere(&cli::parse("sphere", &args[1..], &[])?),
        Some("discrete") => experiments::discrete::run_discrete(&cli::parse("discrete", &args[1..], &[])?),
        Some("so3") => experiments::so3::run_so3(&cli::parse("so3", &args[1..], &[])?),
        Some("so3-sym") => experiments::so3::run_sym(&cli::parse("so3-sym", &args[1..], &[])?),
        Some("ndsm") => experiments::ndsm_exp::run_ndsm(&cli::parse("ndsm", &args[1..], &[])?),
        Some("oism") => {
            // `oism --dataset NAME` is the Earth-data part of the experiment (the same as `oism-earth`).
            let opts = cli::parse("oism", &args[1..], &["--dataset", "--data-dir"])?;
            match (opts.extra("--dataset"), opts.extra("--data-dir")) {
                (Some(_), _) => experiments::oism_exp::earth::run_oism_earth(&opts),
                (None, Some(_)) => bail!("oism: --data-dir needs --dataset volcano|earthquake|flood|fire"),
                (None, None) => experiments::oism_exp::run_oism(&opts),
            }
        }
        Some("oism-earth") => experiments::oism_exp::earth::run_oism_earth(&cli::parse(
            "oism-earth",
            &args[1..],
            &["--dataset", "--data-dir"],
        )?),
        Some("mflow") => experiments::mflow_exp::run_mflow(&cli::parse("mflow", &args[1..], &["--dataset"])?),
        Some("help" | "-h" | "--help") | None => {
            print!("{HELP}");
            Ok(())
        }
        Some(other) => bail!("unknown experiment `{other}`; `experiments help` lists them"),
    }
}

fn earth(args: &[String]) -> Result<()> {
    let (mut dataset, mut data_dir, mut seed, mut n_seeds, mut quick, mut out) =
        ("all".to_string(), PathBuf::from("../shared/data/earth"), 0u64, 5usize, false, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().cloned().with_context(|| format!("{name} needs a value"));
        match a.as_str() {
            "--dataset" => dataset = value("--dataset")?,
            "--data-dir" => data_dir = PathBuf::from(value("--data-dir")?),
            "--seed" => seed = value("--seed")?.parse().context("--seed must be a non-negative integer")?,
            "--seeds" => n_seeds = value("--seeds")?.parse().context("--seeds must be a positive integer")?,
            "--out" => out = Some(PathBuf::from(value("--out")?)),
            "--quick" => quick = true,
            other => bail!("unknown option `{other}` for earth; `experiments help` lists them"),
        }
    }
    if n_seeds == 0 {
        bail!("--seeds = 0 is invalid: expected at least 1");
    }
    if quick {
        n_seeds = n_seeds.min(2);
    }
    let names: Vec<&str> =
        if dataset == "all" { EARTH_DATASETS.iter().map(|(n, _)| *n).collect() } else { vec![dataset.as_str()] };
    // Check every name and file before any work or any folder is created.
    for name in &names {
        let file = earth_file(&data_dir, name)?;
        if !file.is_file() {
            bail!("cannot find {} (pass the folder of the Earth data with --data-dir)", file.display());
        }
    }
    let n_grid = if quick { 7 } else { 13 };
    // log-uniform from 1e-5 to 1 (heat-kernel time, generator Delta).
    let grid: Vec<f64> = (0..n_grid).map(|i| 10f64.powf(-5.0 + 5.0 * i as f64 / (n_grid - 1) as f64)).collect();
    let out = out.unwrap_or_else(|| PathBuf::from(format!("runs/earth-smoother-{dataset}")));
    let config = serde_json::json!({
        "experiment": "earth", "method": "kernel_smoother", "dataset": dataset,
        "data_dir": data_dir, "seed": seed, "n_seeds": n_seeds, "t_grid": grid, "split": [0.8, 0.1, 0.1],
    });
    let run = RunDir::create(&out, &config, &Meta::collect("earth", seed, tch::Device::Cpu))?;
    let mut summaries = Vec::new();
    for name in names {
        eprintln!("earth/{name}: kernel smoother, {n_seeds} splits");
        let mut metric_err = Ok(());
        let s = run_smoother(&data_dir, name, seed, n_seeds, &grid, |r| {
            eprintln!(
                "  seed {}: t = {:.3e}, valid LL = {:.3}, test NLL = {:.3} ({:.1} s)",
                r.seed, r.t, r.valid_ll, r.test_nll, r.seconds
            );
            if metric_err.is_ok() {
                metric_err = run.append_metric(&serde_json::json!({"dataset": name, "split": r}));
            }
        })?;
        metric_err?;
        summaries.push(s);
    }
    run.write_summary(&serde_json::json!({ "kernel_smoother": summaries }))?;
    println!("\ntest NLL, area measure on the unit sphere (lower is better); ours: mean +- std over splits");
    println!("{:<32} {}", "method", summaries.iter().map(|s| format!("{:>16}", s.dataset)).collect::<String>());
    println!(
        "{:<32} {}",
        "kernel smoother (ours)",
        summaries.iter().map(|s| format!("{:>9.3} +- {:<4.2}", s.test_nll_mean, s.test_nll_std)).collect::<String>()
    );
    for (method, row) in PUBLISHED {
        let cells: String = summaries
            .iter()
            .map(|s| published_column(&s.dataset).map_or(format!("{:>16}", "-"), |c| format!("{:>16.2}", row[c])))
            .collect();
        println!("{method:<32} {cells}");
    }
    println!("\nwrote {}", run.file("summary.json").display());
    Ok(())
}
