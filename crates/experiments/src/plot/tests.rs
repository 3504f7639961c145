//! Rendering tests: every plot is written, decoded and checked to hold a picture and text.
//!
//! Set `PLOT_TEST_OUT=DIR` to keep the rendered files in DIR for a look.

use super::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::f64::consts::PI;
use std::path::PathBuf;
use std::time::Instant;

/// Output folder: `PLOT_TEST_OUT` if set (kept), else a fresh temporary folder (removed by the caller).
fn out_dir(tag: &str) -> (PathBuf, bool) {
    match std::env::var_os("PLOT_TEST_OUT") {
        Some(d) => {
            let d = PathBuf::from(d);
            std::fs::create_dir_all(&d).unwrap();
            (d, true)
        }
        None => {
            let d = std::env::temp_dir().join(format!("mg-plot-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            (d, false)
        }
    }
}

/// Decodes the PNG at `path` and returns its size and RGB pixels.
fn decode(path: &Path) -> (u32, u32, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{} is not a png", path.display());
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes)).read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb);
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

/// Fraction of pixels that are not white, and the number of distinct colours.
fn ink(rgb: &[u8]) -> (f64, usize) {
    let pixels: Vec<[u8; 3]> = rgb.chunks_exact(3).map(|p| [p[0], p[1], p[2]]).collect();
    let non_white = pixels.iter().filter(|p| **p != [255, 255, 255]).count();
    let mut distinct = pixels.clone();
    distinct.sort_unstable();
    distinct.dedup();
    (non_white as f64 / pixels.len() as f64, distinct.len())
}

fn check_picture(path: &Path, size: (u32, u32)) {
    let (w, h, rgb) = decode(path);
    assert_eq!((w, h), size, "{}", path.display());
    let (frac, n_colours) = ink(&rgb);
    assert!(frac > 0.01 && frac < 0.9, "{}: {frac} of pixels inked", path.display());
    assert!(n_colours > 8, "{}: {n_colours} colours", path.display());
}

fn uniform_sphere(rng: &mut ChaCha8Rng) -> [f64; 3] {
    let z: f64 = rng.random::<f64>() * 2.0 - 1.0;
    let lon = rng.random::<f64>() * 2.0 * PI;
    let r = (1.0 - z * z).sqrt();
    [r * lon.cos(), r * lon.sin(), z]
}

/// A rotation from the unit quaternion (w, x, y, z), row-major.
fn quat_to_matrix([w, x, y, z]: [f64; 4]) -> [[f64; 3]; 3] {
    [
        [1.0 - 2.0 * (y * y + z * z), 2.0 * (x * y - w * z), 2.0 * (x * z + w * y)],
        [2.0 * (x * y + w * z), 1.0 - 2.0 * (x * x + z * z), 2.0 * (y * z - w * x)],
        [2.0 * (x * z - w * y), 2.0 * (y * z + w * x), 1.0 - 2.0 * (x * x + y * y)],
    ]
}

/// Rotations concentrated around a few modes (small random rotations of them), like a learned SO(3) density.
fn clustered_rotations(rng: &mut ChaCha8Rng, n: usize, spread: f64) -> Vec<[[f64; 3]; 3]> {
    let modes =
        [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.5f64.sqrt(), 0.0, 0.5f64.sqrt(), 0.0], [0.6, 0.0, 0.0, 0.8]];
    (0..n)
        .map(|i| {
            let m = modes[i % modes.len()];
            let mut q = [0.0; 4];
            for (qk, mk) in q.iter_mut().zip(m) {
                *qk = mk + spread * (rng.random::<f64>() - 0.5);
            }
            let norm = q.iter().map(|v| v * v).sum::<f64>().sqrt();
            quat_to_matrix(q.map(|v| v / norm))
        })
        .collect()
}

#[test]
fn embedded_font_renders_text() {
    let (dir, keep) = out_dir("font");
    let path = dir.join("text.png");
    render(&path, (200, 60), |root| {
        root.fill(&WHITE).map_err(drawing_error)?;
        let style = TextStyle::from((FONT, 30).into_font()).color(&BLACK);
        root.draw(&Text::new("Angle π", (10, 10), style)).map_err(drawing_error)?;
        Ok(())
    })
    .unwrap();
    let (_, _, rgb) = decode(&path);
    let dark = rgb.chunks_exact(3).filter(|p| p[0] < 100 && p[1] < 100 && p[2] < 100).count();
    assert!(dark > 200, "{dark} dark pixels: text did not render");
    if !keep {
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn every_plot_renders_to_a_png_that_holds_a_picture() {
    let (dir, keep) = out_dir("all");
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let n = 20_000;

    let mad: Vec<(u64, f64)> =
        (0..n as u64).map(|s| (s, (2.0 + rng.random::<f64>()) * (-(s as f64) / 4000.0).exp() + 0.05)).collect();
    let mut dsm: Vec<(u64, f64)> =
        (0..n as u64).map(|s| (s, (3.0 + 2.0 * rng.random::<f64>()) * (-(s as f64) / 6000.0).exp() + 0.08)).collect();
    dsm[10].1 = f64::NAN;
    dsm[11].1 = f64::INFINITY;
    let t = Instant::now();
    let loss = dir.join("loss.png");
    loss_curves(&loss, "training loss", &[("mad", &mad), ("dsm", &dsm)]).unwrap();
    eprintln!("loss_curves, 2 x {n} points: {:?}", t.elapsed());
    check_picture(&loss, (960, 600));
    let signed: Vec<(u64, f64)> = (0..500u64).map(|s| (s, (s as f64 / 50.0).sin() - 0.2)).collect();
    loss_curves(&dir.join("loss_linear.png"), "signed loss", &[("ndsm", &signed)]).unwrap();
    check_picture(&dir.join("loss_linear.png"), (960, 600));

    let data: Vec<[f64; 3]> = (0..n)
        .map(|i| {
            let c = [[1.0, 0.0, 0.3], [-0.5, 0.8, -0.4], [0.0, -0.6, -0.8]][i % 3];
            let p = uniform_sphere(&mut rng);
            [c[0] + 0.35 * p[0], c[1] + 0.35 * p[1], c[2] + 0.35 * p[2]]
        })
        .collect();
    let uniform: Vec<[f64; 3]> = (0..n).map(|_| uniform_sphere(&mut rng)).collect();
    let mut noisy = data.clone();
    noisy[0] = [f64::NAN, 0.0, 0.0];
    let t = Instant::now();
    let sphere = dir.join("sphere.png");
    sphere_panels(&sphere, "samples on S^2", &[("data", &data), ("mad", &noisy), ("dsm", &uniform)]).unwrap();
    eprintln!("sphere_panels, 3 x {n} points: {:?}", t.elapsed());
    check_picture(&sphere, (3 * 540, 360));

    let target = clustered_rotations(&mut rng, n, 0.15);
    let wide = clustered_rotations(&mut rng, n, 0.5);
    let uniform_rot: Vec<[[f64; 3]; 3]> = (0..n)
        .map(|_| {
            let q = [0; 4].map(|_| rng.random::<f64>() - 0.5);
            let norm = q.iter().map(|v| v * v).sum::<f64>().sqrt();
            quat_to_matrix(q.map(|v| v / norm))
        })
        .collect();
    let t = Instant::now();
    let rot = dir.join("rotations.png");
    rotation_panels(&rot, "samples on SO(3)", &[("data", &target), ("mad", &wide), ("uniform", &uniform_rot)]).unwrap();
    eprintln!("rotation_panels, 3 x {n} rotations: {:?}", t.elapsed());
    check_picture(&rot, (3 * 540 + 110, 360));

    let cats: Vec<String> = (0..12).map(|i| format!("s{i}")).collect();
    let p: Vec<f64> = (0..12).map(|i| f64::from(i + 1) / 78.0).collect();
    let q: Vec<f64> = p.iter().map(|v| v * (0.9 + 0.2 * rng.random::<f64>())).collect();
    let r: Vec<f64> = p.iter().rev().copied().collect();
    let bars = dir.join("bars.png");
    let t = Instant::now();
    bar_groups(&bars, "state probabilities", &cats, &[("target", &p), ("mad", &q), ("dsm", &r)]).unwrap();
    eprintln!("bar_groups, 12 categories: {:?}", t.elapsed());
    check_picture(&bars, (900, 560));
    let long: Vec<String> = (0..20).map(|i| format!("state {i:02}: {}", "ab".repeat(i % 4))).collect();
    let v: Vec<f64> = (0..20).map(|i| f64::from(i) / 190.0).collect();
    bar_groups(&dir.join("bars_upright.png"), "long labels", &long, &[("target", &v), ("mad", &v)]).unwrap();
    let many: Vec<String> = (0..256).map(|i| format!("{i}")).collect();
    let pm: Vec<f64> = (0..256).map(|i| (f64::from(i) / 40.0).sin().powi(2) / 128.0).collect();
    let qm: Vec<f64> = pm.iter().map(|v| v * (0.8 + 0.4 * rng.random::<f64>())).collect();
    let t = Instant::now();
    let bars_many = dir.join("bars_256.png");
    bar_groups(&bars_many, "256 states", &many, &[("target", &pm), ("mad", &qm), ("dsm", &pm)]).unwrap();
    eprintln!("bar_groups, 256 categories: {:?}", t.elapsed());
    check_picture(&bars_many, (1400, 560));

    // Atomic writes leave no temporary file behind.
    let stray: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
    if !keep {
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn invalid_inputs_are_errors_that_name_the_path_and_the_problem() {
    let (dir, keep) = out_dir("invalid");
    let path = dir.join("bad.png");
    let err = |r: Result<()>| format!("{:#}", r.unwrap_err());
    let msg = err(loss_curves(&path, "t", &[]));
    assert!(msg.contains("bad.png") && msg.contains("no series"), "{msg}");
    let nan = [(0u64, f64::NAN), (1, f64::INFINITY)];
    assert!(err(loss_curves(&path, "t", &[("mad", &nan), ("dsm", &[])])).contains("no finite loss value"));
    assert!(err(sphere_panels(&path, "t", &[])).contains("no panels"));
    assert!(
        err(sphere_panels(&path, "t", &[("data", &[[0.0; 3], [f64::NAN, 1.0, 0.0]])])).contains("no panel has a point")
    );
    let reflection = [[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    assert!(err(rotation_panels(&path, "t", &[("mad", &[reflection])])).contains("no panel has a point"));
    let cats = vec!["a".to_string(), "b".to_string()];
    let msg = err(bar_groups(&path, "t", &cats, &[("target", &[0.5, 0.5]), ("mad", &[1.0])]));
    assert!(msg.contains("series mad has 1 values for 2 categories"), "{msg}");
    assert!(err(bar_groups(&path, "t", &[], &[("target", &[])])).contains("no categories"));
    assert!(err(bar_groups(&path, "t", &cats, &[("target", &[f64::NAN, f64::NAN])])).contains("no finite value"));
    assert!(!path.exists());
    // A writable plot into a missing folder fails with the path in the message.
    let missing = dir.join("no/such/folder/loss.png");
    let msg = err(loss_curves(&missing, "t", &[("mad", &[(0, 1.0), (1, 0.5)])]));
    assert!(msg.contains("no/such/folder/loss.png"), "{msg}");
    if !keep {
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn labels_say_what_was_skipped() {
    assert_eq!(label("mad", 10, 0, "non-finite"), "mad");
    assert_eq!(label("mad", 10, 2, "non-finite"), "mad (2 non-finite skipped)");
    assert_eq!(label("mad", 0, 3, "invalid"), "mad (all 3 invalid)");
    assert_eq!(label("mad", 0, 0, "invalid"), "mad (empty)");
}

#[test]
fn tick_labels_are_compact() {
    assert_eq!(tick_label(0.0, 1.0), "0");
    assert_eq!(tick_label(0.5, 1.0), "0.5");
    assert_eq!(tick_label(100.0, 1.0), "100");
    assert_eq!(tick_label(-2.25, 1.0), "-2.25");
    assert_eq!(tick_label(1e-4, 0.0), "1e-4");
    assert_eq!(tick_label(2.5e-6, 0.0), "2.5e-6");
    assert_eq!(tick_label(3e6, 0.0), "3e6");
    assert_eq!(tick_label(-2.22e-16, 2.0), "0");
    assert_eq!(tick_label(1e-10, 0.0), "1e-10");
}

#[test]
fn log_ticks_adapt_to_the_range() {
    let (bold, light) = log_ticks(0.05, 5.0);
    assert_eq!(bold, vec![0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0]);
    assert!(light.len() > 15 && light.iter().all(|v| (0.05..=5.0).contains(v)));
    let (bold, _) = log_ticks(0.8, 4.0);
    assert_eq!(bold, vec![1.0, 2.0, 3.0]);
    let (bold, light) = log_ticks(1e-12, 1e4);
    assert_eq!(bold, vec![1e-12, 1e-10, 1e-8, 1e-6, 1e-4, 0.01, 1.0, 100.0, 1e4]);
    assert!(light.is_empty());
    assert!(log_ticks(1.01, 1.02).0.is_empty());
}
