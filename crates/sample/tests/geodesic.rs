//! Geodesic random walks: points stay on the manifold, Brownian motion (and the reverse walk with a zero
//! score) spreads towards the uniform law at the rate of the heat semigroup, and the reverse heat walk with
//! an exact score concentrates at the point mass it was built from.

mod common;

use common::*;
use geom::{So3, Sphere, TensorManifold, TensorUniformSampler};
use sample::*;
use tch::{Device, Kind, Tensor};

fn north_poles(n: i64, kind: Kind) -> Tensor {
    let x = Tensor::zeros([n, 3], (kind, Device::Cpu));
    let _ = x.select(1, 2).fill_(1.0);
    x
}

fn uniform_times(t_start: f64, t_stop: f64, n_steps: usize) -> Vec<f64> {
    (0..=n_steps).map(|k| t_start + (t_stop - t_start) * k as f64 / n_steps as f64).collect()
}

#[test]
fn the_walk_keeps_points_on_the_sphere() {
    let _lock = serial();
    let s2 = Sphere::new(3).unwrap();
    for (kind, tol) in [(Kind::Double, 1e-12), (Kind::Float, 1e-5)] {
        seed(300);
        let mut x = north_poles(500, kind);
        let sde = BrownianMotion::new();
        for k in 0..100 {
            x = geodesic_step(&s2, &sde, &x, 0.01 * k as f64, 0.01);
            let d = s2.distance_to_manifold_t(&x).max().double_value(&[]);
            assert!(d < tol, "{kind:?} step {k}: distance {d}");
        }
        assert_eq!(x.kind(), kind);
    }
}

#[test]
fn a_zero_score_walk_spreads_towards_uniform_at_the_heat_rate() {
    let _lock = serial();
    // For Brownian motion with generator Delta on S^2, E[x_t] = exp(-2 t) x_0 (l = 1 has eigenvalue -2).
    let s2 = Sphere::new(3).unwrap();
    let zero = ZeroScore;
    let reverse = ReverseHeat::new(&zero);
    let n = 4000;
    seed(310);
    let mut x = north_poles(n, Kind::Double);
    let mut previous = 1.0;
    let mut t = 0.0;
    for horizon in [0.25, 0.5, 1.0, 3.0] {
        // Walk from the previous horizon on, in reverse time with the zero score (same law as forward).
        let times = uniform_times(horizon, t, 100);
        x = geodesic_random_walk(&s2, &reverse, &x, &times, &mut NoProgress).unwrap();
        t = horizon;
        let mean = Vec::<f64>::try_from(x.mean_dim([0i64].as_slice(), false, Kind::Double)).unwrap();
        let norm = mean.iter().map(|m| m * m).sum::<f64>().sqrt();
        let expect = (-2.0 * horizon).exp();
        // Sampling error about 0.01 per coordinate; the walk's bias is O(dt).
        assert!((mean[2] - expect).abs() < 0.04, "t = {horizon}: E[z] = {} vs {expect}", mean[2]);
        assert!(norm < previous + 0.02, "t = {horizon}: |mean| {norm} after {previous}");
        previous = norm;
    }
    assert!(previous < 0.06, "|mean| = {previous} at t = 3");
    let d = s2.distance_to_manifold_t(&x).max().double_value(&[]);
    assert!(d < 1e-12);
}

#[test]
fn brownian_motion_on_so3_uses_the_angle_metric() {
    let _lock = serial();
    // With the angle metric the Laplacian of tr(R) (the l = 1 character) is -2 tr(R), so
    // E[tr R_t] = 3 exp(-2 t) from the identity; metric_factor = 1/2 scales the ambient noise by sqrt(2).
    let so3 = So3::new();
    let n = 2000;
    seed(320);
    let x0 = Tensor::eye(3, (Kind::Double, Device::Cpu)).unsqueeze(0).repeat([n, 1, 1]);
    let horizon = 0.5;
    let times = uniform_times(0.0, horizon, 100);
    let sde = BrownianMotion { metric_factor: 0.5 };
    let x = geodesic_random_walk(&so3, &sde, &x0, &times, &mut NoProgress).unwrap();
    let trace = x.diagonal(0, 1, 2).sum_dim_intlist([1i64].as_slice(), false, Kind::Double);
    let mean = trace.mean(Kind::Double).double_value(&[]);
    let expect = 3.0 * (-2.0 * horizon).exp();
    assert!((mean - expect).abs() < 0.08, "E[tr R] = {mean} vs {expect}");
    assert!(so3.distance_to_manifold_t(&x).max().double_value(&[]) < 1e-10);
}

#[test]
fn reverse_heat_walk_with_an_exact_score_concentrates_on_the_point_mass() {
    let _lock = serial();
    // On the circle the heat kernel from the point (1, 0) at time t is a wrapped normal of variance 2 t.
    // Reversing from the (nearly uniform) law at t = 5 down to t = 0.01 must give E[cos theta] = exp(-0.01)
    // and E[theta^2] about 0.02: the drift is 2 s, not s.
    let circle = Sphere::new(2).unwrap();
    let n = 4000;
    seed(330);
    let x0 = circle.sample_uniform_t(n, Kind::Double, Device::Cpu);
    let config = GeodesicWalkConfig { n_steps: 300, t_start: 5.0, t_end: 0.01, time_grid: TimeGrid::LogSigma };
    let score = CircleHeatScore;
    let mut steps = 0;
    let mut observer = |_: usize, _: usize| steps += 1;
    let x =
        geodesic_random_walk(&circle, &ReverseHeat::new(&score), &x0, &config.times().unwrap(), &mut observer).unwrap();
    assert_eq!(steps, 300);
    let theta = x.select(1, 1).atan2(&x.select(1, 0));
    let mean_cos = theta.cos().mean(Kind::Double).double_value(&[]);
    let var = theta.square().mean(Kind::Double).double_value(&[]);
    assert!((mean_cos - (-0.01f64).exp()).abs() < 0.004, "E[cos] = {mean_cos}");
    assert!((var / 0.02 - 1.0).abs() < 0.2, "E[theta^2] = {var}");
    assert!(circle.distance_to_manifold_t(&x).max().double_value(&[]) < 1e-12);
}

#[test]
fn walk_arguments_are_checked() {
    let _lock = serial();
    let s2 = Sphere::new(3).unwrap();
    let x = north_poles(4, Kind::Double);
    let sde = BrownianMotion::new();
    let e = geodesic_random_walk(&s2, &sde, &x, &[0.0], &mut NoProgress).unwrap_err().to_string();
    assert!(e.contains("times"), "{e}");
    let e = geodesic_random_walk(&s2, &sde, &x, &[0.0, 1.0, 0.5], &mut NoProgress).unwrap_err().to_string();
    assert!(e.contains("times"), "{e}");
    let wrong = Tensor::zeros([4, 2], (Kind::Double, Device::Cpu));
    let e = geodesic_random_walk(&s2, &sde, &wrong, &[0.0, 1.0], &mut NoProgress).unwrap_err().to_string();
    assert!(e.contains("x_init"), "{e}");
}
