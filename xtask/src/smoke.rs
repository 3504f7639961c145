//! The smoke test of the experiment runner: every experiment's `--quick` variant once, in release mode,
//! with a check of the run folder's files and of the schema of its `summary.json` (docs/RUNS.md), not of
//! its values.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The `--quick` runs: experiment name and extra arguments.
fn runs(earth_data: Option<&Path>) -> Vec<(&'static str, Vec<String>)> {
    let mut v = vec![
        ("so3", vec![]),
        ("so3-sym", vec![]),
        ("sphere", vec![]),
        ("discrete", vec![]),
        ("oism", vec![]),
        ("ndsm", vec![]),
        ("mflow", vec!["--dataset".into(), "surface".into()]),
    ];
    if let Some(dir) = earth_data {
        v.push(("earth", vec!["--dataset".into(), "volcano".into(), "--data-dir".into(), dir.display().to_string()]));
        v.push((
            "oism-earth",
            vec!["--dataset".into(), "volcano".into(), "--data-dir".into(), dir.display().to_string()],
        ));
    }
    v
}

/// Fails naming `path` (a JSON pointer) unless `v` holds a number there.
fn number(v: &Value, path: &str, file: &Path) -> Result<f64> {
    match v.pointer(path) {
        Some(Value::Number(n)) => Ok(n.as_f64().unwrap_or(f64::NAN)),
        Some(other) => bail!("{}: {path} is {other}, expected a number", file.display()),
        None => bail!("{}: {path} is missing", file.display()),
    }
}

/// Checks one MAD/DSM run folder: files and the summary's per-method fields.
fn check_run(dir: &Path, required: &[&str], extra: &[&str]) -> Result<()> {
    for f in ["config.json", "meta.json", "metrics.jsonl", "summary.json", "loss_curves.png", "samples.png"] {
        if !dir.join(f).is_file() {
            bail!("{} is missing", dir.join(f).display());
        }
    }
    let file = dir.join("summary.json");
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(&file)?)
        .with_context(|| format!("{} is not JSON", file.display()))?;
    let methods = summary["methods"].as_object().with_context(|| format!("{}: no methods object", file.display()))?;
    for name in required {
        if !methods.contains_key(*name) {
            bail!("{}: no method named {name}", file.display());
        }
    }
    for (name, m) in methods {
        if name == "kernel_smoother" || name == "spectral_only" {
            number(m, "/test_nll", &file)?;
            number(m, "/mmd/mmd", &file)?;
            continue;
        }
        for key in ["/final_loss", "/eval_loss", "/mmd/mmd", "/mmd/bandwidth", "/dist_to_manifold", "/train_seconds"] {
            number(m, key, &file).with_context(|| format!("method {name}"))?;
        }
        for key in extra {
            number(m, &format!("/{key}"), &file).with_context(|| format!("method {name}"))?;
        }
        let ckpt = dir.join("checkpoints").join(name);
        let step = std::fs::read_dir(&ckpt)
            .with_context(|| format!("no checkpoints in {}", ckpt.display()))?
            .filter_map(|e| e.ok())
            .find(|e| e.file_name().to_string_lossy().starts_with("step-"))
            .with_context(|| format!("no step-* checkpoint in {}", ckpt.display()))?;
        for f in ["weights.safetensors", "state.bin", "history.json"] {
            if !step.path().join(f).is_file() {
                bail!("{} is missing", step.path().join(f).display());
            }
        }
    }
    Ok(())
}

/// Checks a run folder with its own layout: the common files and the named numeric fields (JSON pointers)
/// of every listed method.
fn check_methods(dir: &Path, methods: &[&str], fields: &[&str]) -> Result<()> {
    for f in ["config.json", "meta.json", "summary.json", "loss_curves.png", "samples.png"] {
        if !dir.join(f).is_file() {
            bail!("{} is missing", dir.join(f).display());
        }
    }
    let file = dir.join("summary.json");
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(&file)?)
        .with_context(|| format!("{} is not JSON", file.display()))?;
    for m in methods {
        let entry = summary["methods"].get(*m).with_context(|| format!("{}: no method named {m}", file.display()))?;
        for f in fields {
            number(entry, f, &file).with_context(|| format!("method {m}"))?;
        }
    }
    Ok(())
}

/// Builds the runner in release mode and runs every `--quick` experiment into `target/smoke/`.
/// `cargo` builds a cargo command with the libtorch environment; `runtime_env` adds what the built binary
/// needs to find libtorch at run time.
pub fn run(root: &Path, cargo: impl Fn(&[&str]) -> Command, runtime_env: impl Fn(&mut Command)) -> Result<()> {
    let status = cargo(&["build", "--release", "--quiet", "-p", "experiments"]).status()?;
    if !status.success() {
        bail!("cannot build the experiments runner");
    }
    let bin = root.join("target/release/experiments");
    let earth = root.join("../shared/data/earth");
    let earth = earth.join("volerup.csv").is_file().then_some(earth);
    if earth.is_none() {
        eprintln!("xtask: smoke: ../shared/data/earth not found, skipping the earth run");
    }
    let out_root = root.join("target/smoke");
    let mut lines = Vec::new();
    for (name, extra) in runs(earth.as_deref()) {
        let out: PathBuf = out_root.join(name);
        if out.exists() {
            std::fs::remove_dir_all(&out).with_context(|| format!("cannot clear {}", out.display()))?;
        }
        let start = Instant::now();
        let mut cmd = Command::new(&bin);
        cmd.current_dir(root).args([name, "--quick", "--out"]).arg(&out).args(&extra);
        cmd.env("MANIFOLD_GEN_PROGRESS", "off");
        runtime_env(&mut cmd);
        let output = cmd.output().with_context(|| format!("cannot start {}", bin.display()))?;
        let secs = start.elapsed().as_secs_f64();
        if !output.status.success() {
            bail!(
                "experiment {name} --quick failed:\n{}\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        match name {
            "discrete" => {
                for p in ["two_point", "hypercube"] {
                    check_run(&out.join(p), &["mad", "dsm"], &["tv", "off_support_fraction"])?;
                }
            }
            "ndsm" => {
                for p in ["imbalanced", "ring", "ring_small"] {
                    check_methods(
                        &out.join(p),
                        &["dsm", "ndsm", "ndsm_cv", "ndsm_ncv"],
                        &[
                            "/loss_var",
                            "/grad_var",
                            "/mmd/mmd",
                            "/mode_weight_error",
                            "/final_loss",
                            "/train_seconds",
                            "/dist_to_manifold",
                        ],
                    )?;
                }
            }
            "oism" => {
                for p in ["mixture", "ring"] {
                    check_run(
                        &out.join(p),
                        &["dsm", "oism", "kernel_smoother"],
                        &["loss_var", "grad_var", "mmd_local/mmd"],
                    )?;
                }
            }
            "so3-sym" => check_run(
                &out,
                &["mad_symmetrised", "mad_canonicalised", "dsm_symmetrised", "dsm_canonicalised"],
                &["off_mode_fraction"],
            )?,
            "mflow" => check_methods(
                &out,
                &["mflow", "mflow_e", "pie", "af"],
                &["/dist_to_manifold", "/reconstruction_error", "/train_seconds", "/final_loss", "/mmd/mmd"],
            )?,
            "earth" => {
                check_run(&out, &["mad", "dsm", "kernel_smoother"], &[])?;
                let s: Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json"))?)?;
                number(&s, "/methods/kernel_smoother/test_nll", &out.join("summary.json"))?;
            }
            "oism-earth" => {
                check_run(
                    &out,
                    &["dsm", "oism", "kernel_smoother", "spectral_only"],
                    &["loss_var", "grad_var", "mmd_local/mmd"],
                )?;
                let s: Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json"))?)?;
                number(&s, "/methods/spectral_only/tau", &out.join("summary.json"))?;
                if !out.join("variance.png").is_file() {
                    bail!("{}: variance.png is missing", out.display());
                }
            }
            _ => check_run(&out, &["mad", "dsm"], &["mmd_local/mmd"])?,
        }
        eprintln!("xtask: smoke: {name} --quick ok in {secs:.1} s");
        lines.push(format!("{name}: {secs:.1} s"));
    }
    eprintln!("xtask: smoke runs passed ({})", lines.join(", "));
    Ok(())
}
