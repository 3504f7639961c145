//! Tests of the `mflow` experiment: configuration checks, true densities, checkpoints, a tiny run.

use super::*;

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mg-mflow-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn err(c: &MflowConfig) -> String {
    format!("{:#}", c.check().unwrap_err())
}

#[test]
fn config_check_names_the_field() {
    let base = MflowConfig::default_for("surface");
    base.check().unwrap();
    MflowConfig::default_for("circle").quick().check().unwrap();
    let mut c = base.clone();
    c.manifold_dim = Some(3);
    let e = err(&c);
    assert!(e.contains("manifold_dim = 3") && e.contains("< 3"), "{e}");
    c.manifold_dim = Some(0);
    assert!(err(&c).contains("manifold_dim = 0"));
    let mut c = MflowConfig::default_for("circle");
    c.manifold_dim = Some(2);
    assert!(err(&c).contains("manifold_dim = 2"));
    let c = MflowConfig::default_for("torus");
    assert!(err(&c).contains("dataset = \"torus\""));
    let mut c = base.clone();
    c.n_train = 0;
    assert!(err(&c).contains("n_train = 0"));
    let mut c = base.clone();
    c.model.outer.hidden = 0;
    assert!(err(&c).contains("model.outer.hidden = 0"), "{}", err(&c));
    let mut c = base.clone();
    c.methods.pie = Some(SchedulePlan::Sequential { manifold_steps: 1, density_steps: 1 });
    assert!(err(&c).contains("methods.pie.schedule"), "{}", err(&c));
    let mut c = base.clone();
    c.train.batch_size = 0;
    assert!(err(&c).contains("train.batch_size = 0"), "{}", err(&c));
    let mut c = base.clone();
    c.mmd_bandwidth = Some(f64::NAN);
    assert!(err(&c).contains("mmd_bandwidth"));
    let mut c = base;
    c.methods = Methods { mflow: None, mflow_e: None, pie: None, af: None };
    assert!(err(&c).contains("methods"));
}

#[test]
fn config_overrides_replace_schedules_whole() {
    let c = crate::cli::merge_json(
        MflowConfig::default_for("surface"),
        r#"{"methods": {"mflow": {"kind": "sequential", "manifold_steps": 5, "density_steps": 6}}}"#,
    )
    .unwrap();
    assert_eq!(c.methods.mflow, Some(SchedulePlan::Sequential { manifold_steps: 5, density_steps: 6 }));
    let e = crate::cli::merge_json(MflowConfig::default_for("surface"), r#"{"methods": {"mflw": null}}"#);
    assert!(format!("{:#}", e.unwrap_err()).contains("mflw"));
}

#[test]
fn non_finite_data_is_refused_naming_the_row() {
    let x = Dataset::PolynomialSurface.sample(5, 0);
    let _ = x.get(3).get(1).fill_(f64::NAN);
    let e = check_points("training data", &x, 3).unwrap_err().to_string();
    assert!(e.contains("training data") && e.contains("row 3"), "{e}");
}

#[test]
fn true_densities_are_normalised_and_peak_on_the_data() {
    // Sphere: integrate exp(log p) over the unit sphere on a (theta, phi) grid.
    let (nt, np) = (200, 400);
    let mut total = 0.0;
    for i in 0..nt {
        let t = PI * (i as f64 + 0.5) / nt as f64;
        for j in 0..np {
            let p = 2.0 * PI * (j as f64 + 0.5) / np as f64;
            let x = [t.cos(), t.sin() * p.cos(), t.sin() * p.sin()];
            total += sphere_log_density(x).exp() * t.sin() * (PI / nt as f64) * (2.0 * PI / np as f64);
        }
    }
    assert!((total - 1.0).abs() < 1e-3, "sphere density integrates to {total}");
    // Surface: the foot point of a surface point is itself, and data points are likelier than far ones.
    let x = Dataset::PolynomialSurface.sample(200, 1);
    let lp = true_log_density(Dataset::PolynomialSurface, &x).unwrap();
    assert!(lp.iter().all(|v| v.is_finite()));
    let far = true_log_density(Dataset::PolynomialSurface, &(x.shallow_clone() * 4.0)).unwrap();
    assert!(mean(&lp) > mean(&far) + 1.0, "{} vs {}", mean(&lp), mean(&far));
    assert!(true_log_density(Dataset::Lorenz, &x).is_none());
    assert_eq!(true_log_density(Dataset::Circle, &Dataset::Circle.sample(7, 0)).unwrap().len(), 7);
}

#[test]
fn checkpoint_of_another_architecture_is_refused_naming_folder_and_field() {
    let dir = temp_dir("ckpt");
    let run = RunDir::create(&dir, &serde_json::json!({}), &Meta::collect("unit", 0, Device::Cpu)).unwrap();
    let mut cfg = ModelConfig::new(ModelKind::MFlow, 3, 2);
    cfg.outer.layers = 1;
    cfg.outer.hidden = 4;
    cfg.inner.layers = 1;
    cfg.inner.hidden = 4;
    let model = ManifoldFlow::new(&cfg, 0, Device::Cpu).unwrap();
    let plan = SchedulePlan::Simultaneous { steps: 1 };
    let history = History {
        method: "mflow".into(),
        schedule: plan,
        steps_done: 0,
        stopped_early: false,
        best_validation: Vec::new(),
        train_seconds: 0.0,
        losses: Vec::new(),
        run_config: serde_json::Value::Null,
    };
    let ckpt = checkpoint_dir(&run, "mflow");
    save_checkpoint(&ckpt, &model, &history).unwrap();
    save_checkpoint(&ckpt, &model, &history).unwrap();
    let mut same = ManifoldFlow::new(&cfg, 1, Device::Cpu).unwrap();
    assert_eq!(load_checkpoint(&ckpt, &mut same).unwrap(), Some(history));
    let x = Dataset::PolynomialSurface.sample(4, 0);
    let diff = (model.project(&x).unwrap() - same.project(&x).unwrap()).abs().max().double_value(&[]);
    assert_eq!(diff, 0.0);
    cfg.outer.hidden = 5;
    let mut other = ManifoldFlow::new(&cfg, 0, Device::Cpu).unwrap();
    let e = format!("{:#}", load_checkpoint(&ckpt, &mut other).unwrap_err());
    assert!(e.contains("outer.hidden") && e.contains(&ckpt.display().to_string()), "{e}");
    assert!(load_checkpoint(&checkpoint_dir(&run, "af"), &mut other).unwrap().is_none());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tiny_run_writes_summary_plots_and_resumes() {
    let dir = temp_dir("run");
    std::fs::create_dir_all(&dir).unwrap();
    let config_file = dir.join("tiny.json");
    let tiny = r#"{"n_train": 200, "n_test": 50, "n_samples": 50, "grid_points": 100,
        "model": {"outer": {"layers": 1, "hidden": 8}, "inner": {"layers": 1, "hidden": 8},
                  "encoder": {"hidden": 8, "blocks": 0}},
        "train": {"eval_every": 2},
        "methods": {"mflow": {"kind": "alternating", "cycles": 1, "manifold_steps": 3, "density_steps": 2},
                    "mflow_e": {"kind": "sequential", "manifold_steps": 3, "density_steps": 2},
                    "pie": {"kind": "simultaneous", "steps": 3}, "af": {"kind": "simultaneous", "steps": 3}}}"#;
    std::fs::write(&config_file, tiny).unwrap();
    let out = dir.join("out");
    let args: Vec<String> =
        ["--quick", "--dataset", "surface", "--out", out.to_str().unwrap(), "--config", config_file.to_str().unwrap()]
            .iter()
            .map(|s| s.to_string())
            .collect();
    let opts = crate::cli::parse("mflow", &args, &["--dataset"]).unwrap();
    run_mflow(&opts).unwrap();
    let read = || -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap()
    };
    let s = read();
    assert_eq!(s["experiment"], "mflow");
    for m in METHODS {
        let r = &s["methods"][m];
        assert!(r["dist_to_manifold"].is_number(), "{m}: {r}");
        assert!(r["reconstruction_error"].is_number() && r["sample_log_likelihood"].is_number(), "{m}: {r}");
        assert!(r["mmd"]["bandwidth"].as_f64().unwrap() > 0.0 && r["train_seconds"].is_number(), "{m}: {r}");
        assert_eq!(r["resumed"], false);
    }
    assert_eq!(s["methods"]["af"]["reconstruction_error"], 0.0);
    assert_eq!(s["published"]["methods"]["pie"]["reconstruction_error"], 1.253);
    for f in ["loss_curves.png", "likelihood_curves.png", "samples.png", "manifold.png", "metrics.jsonl"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    // The same command again loads every finished checkpoint and reproduces the metrics.
    run_mflow(&opts).unwrap();
    let again = read();
    for m in METHODS {
        assert_eq!(again["methods"][m]["resumed"], true);
        assert_eq!(again["methods"][m]["dist_to_manifold"], s["methods"][m]["dist_to_manifold"]);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
