//! Final projection: a point mass on two points of the unit circle, sampled with its exact score, projects
//! onto the set, and the mean distance to the set before projection is small.

mod common;

use common::*;
use geom::{DiscreteSet, Sphere, TensorManifold};
use sample::*;
use tch::{Device, Kind, Tensor};

const B: i64 = 2000;

fn two_point_samples(s: i64, final_denoise: FinalDenoise) -> Vec<(scores::Schedule, Tensor)> {
    schedules()
        .into_iter()
        .map(|schedule| {
            seed(s);
            let score = MixtureScore::new(schedule, &[vec![-1.0, 0.0], vec![1.0, 0.0]], 0.0);
            let x1 = initial_noise(&schedule, &[B, 2], Kind::Double, Device::Cpu);
            // The log-sigma grid makes the last steps small, so that the noise left at t_end is about
            // sigma(t_end) (a uniform grid leaves the larger sqrt(g^2 dt) of its last step for VP).
            let config = FixedStepConfig { n_steps: 200, t_end: 1e-3, time_grid: TimeGrid::LogSigma, final_denoise };
            (schedule, euler_maruyama(&score, &schedule, &x1, &config, &mut NoProgress).unwrap().x)
        })
        .collect()
}

#[test]
fn two_points_project_onto_the_set_with_a_small_distance_before() {
    let _lock = serial();
    let set = DiscreteSet::two_points();
    for (schedule, x) in two_point_samples(200, FinalDenoise::Off) {
        let p = project_samples(&set, &x).unwrap();
        assert_eq!(p.distance_before.size(), vec![B]);
        assert_eq!(p.points.size(), vec![B, 2]);
        // Every projected point is one of the two points.
        assert!(set.distance_to_manifold_t(&p.points).max().double_value(&[]) < 1e-12);
        // The residual noise at t_end has scale sigma(t_end) ~ 0.01, so the mean distance is about
        // sigma sqrt(pi / 2).
        let sigma = schedule.sigma(1e-3);
        assert!(p.mean_distance_before < 3.0 * sigma, "{schedule:?}: {}", p.mean_distance_before);
        let mean = p.distance_before.mean(Kind::Double).double_value(&[]);
        assert!((mean - p.mean_distance_before).abs() < 1e-12);
        // Both points get about half of the mass.
        let right = p.points.select(1, 0).gt(0.0).to_kind(Kind::Double).mean(Kind::Double).double_value(&[]);
        assert!((right - 0.5).abs() < 0.05, "{schedule:?}: fraction at (1, 0) is {right}");
        // The two points lie on the unit circle: projecting onto the circle moves the samples as little.
        let circle = Sphere::new(2).unwrap();
        let q = project_samples(&circle, &x).unwrap();
        assert!(circle.distance_to_manifold_t(&q.points).max().double_value(&[]) < 1e-12);
        assert!(q.mean_distance_before <= p.mean_distance_before + 1e-12);
    }
}

#[test]
fn tweedie_denoising_lands_on_the_points() {
    let _lock = serial();
    let set = DiscreteSet::two_points();
    for (schedule, x) in two_point_samples(210, FinalDenoise::Tweedie) {
        let p = project_samples(&set, &x).unwrap();
        assert!(p.mean_distance_before < 1e-6, "{schedule:?}: {}", p.mean_distance_before);
    }
}

#[test]
fn projection_keeps_dtype_and_device_and_rejects_bad_input() {
    let _lock = serial();
    let circle = Sphere::new(2).unwrap();
    let x = Tensor::from_slice(&[3.0f32, 4.0, 0.0, 0.5]).reshape([2, 2]);
    let p = project_samples(&circle, &x).unwrap();
    assert_eq!((p.points.kind(), p.points.device()), (Kind::Float, Device::Cpu));
    assert_eq!((p.distance_before.kind(), p.distance_before.size()), (Kind::Float, vec![2]));
    assert!((p.mean_distance_before - 2.25).abs() < 1e-6);
    let nan = Tensor::from_slice(&[f64::NAN, 1.0]).reshape([1, 2]);
    let e = project_samples(&circle, &nan).unwrap_err().to_string();
    assert!(e.contains("`x`"), "{e}");
    let wrong = Tensor::zeros([4, 3], (Kind::Double, Device::Cpu));
    let e = project_samples(&circle, &wrong).unwrap_err().to_string();
    assert!(e.contains("`x`"), "{e}");
}
