//! Accuracy of `geom::special` against references computed independently here:
//! exact factorials and half-integer Gamma values, the reflection and duplication formulas, Kahan-summed
//! power series, Gauss-Legendre quadrature of the integral representation of I_nu, the closed forms of
//! I_{1/2}, I_{3/2}, I_{5/2}, the three-term recurrence, and known expansions at small and large argument.

use geom::special::{
    bessel_i0e, bessel_i1e, bessel_ratio, ln_gamma, ln_sphere_area, log_bessel_i, log_bessel_i_normalized,
    log_bessel_ie, sphere_mean_resultant,
};
use std::f64::consts::PI;

const EULER_GAMMA: f64 = 0.577_215_664_901_532_9;
const ZETA3: f64 = 1.202_056_903_159_594_2;
const ZETA5: f64 = 1.036_927_755_143_37;

/// Relative error |got - want| / |want|.
fn rel(got: f64, want: f64) -> f64 {
    ((got - want) / want).abs()
}

/// Error of a log-value: absolute below 1, relative above (the spacing of f64 grows with |want|).
fn log_err(got: f64, want: f64) -> f64 {
    (got - want).abs() / want.abs().max(1.0)
}

/// Kahan-compensated sum.
fn kahan(terms: impl Iterator<Item = f64>) -> f64 {
    let (mut sum, mut c) = (0.0f64, 0.0f64);
    for t in terms {
        let y = t - c;
        let s = sum + y;
        c = (s - sum) - y;
        sum = s;
    }
    sum
}

/// sum_{k >= 1} (x^2/4)^k / (k! (nu + 1)_k), Kahan-summed; one plus it is Gamma(nu + 1) (2/x)^nu I_nu(x).
fn series_0f1_tail(nu: f64, x: f64) -> f64 {
    let q = 0.25 * x * x;
    let mut terms = vec![];
    let mut t = 1.0;
    for k in 1..1000 {
        let kf = k as f64;
        t *= q / (kf * (nu + kf));
        terms.push(t);
        if t < 1e-20 * terms.iter().sum::<f64>() {
            break;
        }
    }
    kahan(terms.into_iter())
}

/// Gamma(nu + 1) (2/x)^nu I_nu(x) by its power series.
fn series_0f1(nu: f64, x: f64) -> f64 {
    1.0 + series_0f1_tail(nu, x)
}

/// Gauss-Legendre nodes and weights on [-1, 1] by Newton's method on P_n.
fn gauss_legendre(n: usize) -> (Vec<f64>, Vec<f64>) {
    let (mut nodes, mut weights) = (vec![0.0; n], vec![0.0; n]);
    for i in 0..n {
        let mut z = (PI * (i as f64 + 0.75) / (n as f64 + 0.5)).cos();
        for _ in 0..100 {
            let (mut p0, mut p1) = (1.0, z);
            for k in 2..=n {
                let kf = k as f64;
                (p0, p1) = (p1, ((2.0 * kf - 1.0) * z * p1 - (kf - 1.0) * p0) / kf);
            }
            let dp = n as f64 * (z * p1 - p0) / (z * z - 1.0);
            let dz = p1 / dp;
            z -= dz;
            if dz.abs() < 1e-16 {
                let (mut p0, mut p1) = (1.0, z);
                for k in 2..=n {
                    let kf = k as f64;
                    (p0, p1) = (p1, ((2.0 * kf - 1.0) * z * p1 - (kf - 1.0) * p0) / kf);
                }
                let dp = n as f64 * (z * p1 - p0) / (z * z - 1.0);
                nodes[i] = z;
                weights[i] = 2.0 / ((1.0 - z * z) * dp * dp);
                break;
            }
        }
    }
    (nodes, weights)
}

/// Composite Gauss-Legendre (20 nodes per panel) of f over [a, b] with `panels` equal panels.
fn integrate(f: impl Fn(f64) -> f64, a: f64, b: f64, panels: usize) -> f64 {
    let (nodes, weights) = gauss_legendre(20);
    let h = (b - a) / panels as f64;
    kahan((0..panels).map(|p| {
        let lo = a + h * p as f64;
        kahan(nodes.iter().zip(&weights).map(|(z, w)| 0.5 * h * w * f(lo + 0.5 * h * (z + 1.0))))
    }))
}

/// e^{-x} I_nu(x) from the integral representation
/// I_nu(x) = (1/pi) int_0^pi e^{x cos t} cos(nu t) dt - (sin(nu pi)/pi) int_0^inf e^{-x cosh t - nu t} dt,
/// for moderate nu and x >= 5 (where the oscillating integral does not cancel badly).
fn ie_by_quadrature(nu: f64, x: f64) -> f64 {
    let upper = PI.min(40.0 / x.sqrt());
    let h = 0.5 * (1.0f64).min(1.0 / x.sqrt());
    let panels = (upper / h).ceil() as usize;
    let first = integrate(|t| (-2.0 * x * (0.5 * t).sin().powi(2)).exp() * (nu * t).cos(), 0.0, upper, panels) / PI;
    let s = (nu * PI).sin();
    if s == 0.0 || x > 30.0 {
        return first;
    }
    let t_max = (1.0 + 80.0 / x).acosh();
    let second = integrate(|t| (-x * (1.0 + t.cosh()) - nu * t).exp(), 0.0, t_max, 400) / PI;
    first - s * second
}

/// ln(e^{-x} I_{n + 1/2}(x)) in closed form for n = 0, 1, 2 (free of cancellation for x >= 0, 2, 5).
fn log_ie_half_integer(n: u32, x: f64) -> f64 {
    // e^{-x} sinh x = (1 - e^{-2x})/2, e^{-x} cosh x = (1 + e^{-2x})/2.
    let (sh, ch) = (-0.5 * (-2.0 * x).exp_m1(), 0.5 * (1.0 + (-2.0 * x).exp()));
    let bracket = match n {
        0 => sh,
        1 => ch - sh / x,
        2 => (1.0 + 3.0 / (x * x)) * sh - 3.0 / x * ch,
        _ => unreachable!(),
    };
    0.5 * (2.0 / (PI * x)).ln() + bracket.ln()
}

#[test]
fn ln_gamma_at_integers_and_half_integers() {
    let mut fact = 1.0f64; // exact up to 22!
    for n in 1..=22u32 {
        fact *= n as f64;
        let x = n as f64 + 1.0;
        assert!(log_err(ln_gamma(x), fact.ln()) < 1e-15, "ln_gamma({x})");
    }
    assert_eq!(ln_gamma(1.0), 0.0);
    assert_eq!(ln_gamma(2.0), 0.0);
    // Gamma(n + 1/2) = (2n)! / (4^n n!) sqrt(pi).
    for n in 0..=10u32 {
        let (f2n, fnn) = ((1..=2 * n).map(f64::from).product::<f64>(), (1..=n).map(f64::from).product::<f64>());
        let want = (f2n / (4f64.powi(n as i32) * fnn)).ln() + 0.5 * PI.ln();
        let x = n as f64 + 0.5;
        assert!(log_err(ln_gamma(x), want) < 2e-15, "ln_gamma({x}) = {} vs {want}", ln_gamma(x));
    }
    // ln 1000! by a compensated sum of logs.
    let want = kahan((2..=1000).map(|k| (k as f64).ln()));
    assert!(rel(ln_gamma(1001.0), want) < 1e-15);
}

#[test]
fn ln_gamma_near_its_zeros_and_at_extremes() {
    for eps in [1e-12, 1e-8, 1e-6, -1e-6, 1e-4, -1e-4] {
        // The offset actually represented in 1 + eps (and 2 + eps).
        let (e1, e2) = ((1.0 + eps) - 1.0, (2.0 + eps) - 2.0);
        // ln Gamma(1 + e) = -gamma e + sum_{k >= 2} (-1)^k zeta(k) e^k / k, to k = 5 (error below 1e-20).
        let zeta4 = PI.powi(4) / 90.0;
        let want1 = -EULER_GAMMA * e1 + PI * PI / 12.0 * e1 * e1 - ZETA3 / 3.0 * e1.powi(3) + zeta4 / 4.0 * e1.powi(4)
            - ZETA5 / 5.0 * e1.powi(5);
        assert!(rel(ln_gamma(1.0 + e1), want1) < 1e-15, "near 1: {eps}");
        // ln Gamma(2 + e) = (1 - gamma) e + sum_{k >= 2} (-1)^k (zeta(k) - 1) e^k / k.
        let want2 = (1.0 - EULER_GAMMA) * e2 + (PI * PI / 6.0 - 1.0) / 2.0 * e2 * e2 - (ZETA3 - 1.0) / 3.0 * e2.powi(3)
            + (zeta4 - 1.0) / 4.0 * e2.powi(4)
            - (ZETA5 - 1.0) / 5.0 * e2.powi(5);
        assert!(rel(ln_gamma(2.0 + e2), want2) < 1e-15, "near 2: {eps}");
    }
    // Gamma(x) ~ 1/x - gamma at tiny x.
    for x in [1e-300f64, 1e-20, 1e-10] {
        let want = -x.ln() + (-EULER_GAMMA * x).ln_1p();
        assert!(rel(ln_gamma(x), want) < 1e-15);
    }
    assert_eq!(ln_gamma(0.0), f64::INFINITY);
    assert!(ln_gamma(-1.0).is_nan());
    assert!(ln_gamma(1e300).is_finite());
}

#[test]
fn ln_gamma_satisfies_recurrence_reflection_and_duplication() {
    let mut x: f64 = 1e-3;
    while x < 300.0 {
        // Gamma(x + 1) = x Gamma(x).
        let (a, b) = (ln_gamma(x + 1.0), ln_gamma(x) + x.ln());
        assert!((a - b).abs() < 4e-16 * (ln_gamma(x).abs() + x.ln().abs()).max(1.0), "recurrence at {x}");
        // Gamma(x) Gamma(x + 1/2) = 2^{1 - 2x} sqrt(pi) Gamma(2x).
        let lhs = ln_gamma(x) + ln_gamma(x + 0.5);
        let rhs = ln_gamma(2.0 * x) + (1.0 - 2.0 * x) * std::f64::consts::LN_2 + 0.5 * PI.ln();
        assert!(log_err(lhs, rhs) < 2e-15, "duplication at {x}: {lhs} vs {rhs}");
        if x < 1.0 {
            // Gamma(x) Gamma(1 - x) = pi / sin(pi x).
            let lhs = ln_gamma(x) + ln_gamma(1.0 - x);
            let rhs = PI.ln() - (PI * x).sin().ln();
            assert!(log_err(lhs, rhs) < 2e-15, "reflection at {x}");
        }
        x *= 1.137;
    }
}

#[test]
fn ln_sphere_area_known_values() {
    assert!(rel(ln_sphere_area(3), (4.0 * PI).ln()) < 1e-15);
    assert!(rel(ln_sphere_area(2), (2.0 * PI).ln()) < 1e-15);
    assert!(rel(ln_sphere_area(4), (2.0 * PI * PI).ln()) < 1e-15);
    assert!(rel(ln_sphere_area(1), 2f64.ln()) < 1e-15);
}

#[test]
fn bessel_log_matches_power_series_at_moderate_x() {
    let mut worst: f64 = 0.0;
    for nu in [0.0, 0.3, 0.5, 1.0, 1.5, 2.0, 3.7, 9.5, 24.0, 24.9, 25.0, 31.2, 100.0] {
        for x in [1e-6, 0.01, 0.5, 1.0, 2.0, 5.0, 10.0, 14.9, 15.1, 20.0, 25.0, 30.0] {
            let want = series_0f1_tail(nu, x).ln_1p();
            let got = log_bessel_i_normalized(nu, x);
            let err = if want < 1e-3 { rel(got, want) } else { (got - want).abs() };
            worst = worst.max(err);
            assert!(err < 2e-14, "log_bessel_i_normalized({nu}, {x}) = {got}, want {want}");
            // The ratio as a quotient of two series.
            let r_want = x / (2.0 * (nu + 1.0)) * series_0f1(nu + 1.0, x) / series_0f1(nu, x);
            assert!(rel(bessel_ratio(nu, x), r_want) < 1e-13, "bessel_ratio({nu}, {x})");
        }
    }
    eprintln!("worst error against the power series: {worst:.2e}");
}

#[test]
fn bessel_log_matches_quadrature_of_the_integral_representation() {
    let mut worst: f64 = 0.0;
    for nu in [0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 2.7, 4.0] {
        for x in [5.0, 12.0, 16.0, 22.0, 35.0, 41.0, 60.0, 150.0, 1e3, 1e4, 1e5, 1e6] {
            let want = ie_by_quadrature(nu, x).ln();
            let got = log_bessel_ie(nu, x);
            worst = worst.max((got - want).abs());
            assert!((got - want).abs() < 1e-13, "log_bessel_ie({nu}, {x}) = {got}, want {want}");
            assert!(log_err(log_bessel_i(nu, x), want + x) < 4e-15, "log_bessel_i({nu}, {x})");
        }
    }
    eprintln!("worst error against quadrature: {worst:.2e}");
}

#[test]
fn bessel_half_integer_orders_match_closed_forms() {
    let mut worst: f64 = 0.0;
    let mut x: f64 = 1e-3;
    while x < 3e6 {
        for (n, x_min) in [(0u32, 0.0), (1, 2.0), (2, 5.0)] {
            if x < x_min {
                continue;
            }
            let nu = n as f64 + 0.5;
            let want = log_ie_half_integer(n, x);
            let got = log_bessel_ie(nu, x);
            worst = worst.max((got - want).abs());
            assert!((got - want).abs() < 1e-13, "log_bessel_ie({nu}, {x}) = {got}, want {want}");
            let got_i = log_bessel_i(nu, x);
            assert!(log_err(got_i, want + x) < 1e-15, "log_bessel_i({nu}, {x}) = {got_i}, want {}", want + x);
        }
        if x >= 2.0 {
            // A_3 = I_{3/2}/I_{1/2} = coth x - 1/x and A_5 = I_{5/2}/I_{3/2}.
            let a3 = 1.0 / x.tanh() - 1.0 / x;
            assert!(rel(bessel_ratio(0.5, x), a3) < 1e-14, "A_3({x})");
            assert!(rel(sphere_mean_resultant(3, x), a3) < 1e-14);
        }
        if x >= 5.0 {
            let a5 = (log_ie_half_integer(2, x) - log_ie_half_integer(1, x)).exp();
            assert!(rel(bessel_ratio(1.5, x), a5) < 1e-13, "A_5({x})");
        }
        x *= 1.31;
    }
    eprintln!("worst error against closed forms: {worst:.2e}");
}

#[test]
fn bessel_three_term_recurrence_holds_everywhere() {
    // I_{nu-1} - I_{nu+1} = (2 nu / x) I_nu, i.e. 1/r_{nu-1} - r_nu = 2 nu / x for the ratio, and the same
    // relation between the logs of the scaled functions.
    for nu in [1.0, 1.5, 2.3, 7.0, 24.5, 25.0, 25.7, 60.0, 1e3] {
        let mut x: f64 = 1e-4;
        while x < 2e6 {
            let (r_lo, r) = (bessel_ratio(nu - 1.0, x), bessel_ratio(nu, x));
            let scale = 1.0 / r_lo + r;
            assert!((1.0 / r_lo - r - 2.0 * nu / x).abs() < 1e-14 * scale, "ratio recurrence at nu = {nu}, x = {x}");
            let (lm, l0, lp) = (log_bessel_ie(nu - 1.0, x), log_bessel_ie(nu, x), log_bessel_ie(nu + 1.0, x));
            let (a, b) = ((lm - l0).exp(), (lp - l0).exp());
            // The differences of logs carry the rounding of the logs themselves.
            let log_tol = 3e-14 + 1e-15 * (lm.abs() + l0.abs() + lp.abs());
            assert!((a - b - 2.0 * nu / x).abs() < log_tol * (a + b), "log recurrence at nu = {nu}, x = {x}");
            assert!((r.ln() - (lp - l0)).abs() < log_tol, "ratio vs logs at nu = {nu}, x = {x}");
            x *= 1.7;
        }
    }
}

#[test]
fn scaled_bessel_i0e_i1e() {
    let mut x: f64 = 1e-8;
    while x < 3e6 {
        let (want0, want1) = if x <= 30.0 {
            let e = (-x).exp();
            (series_0f1(0.0, x) * e, 0.5 * x * series_0f1(1.0, x) * e)
        } else {
            (ie_by_quadrature(0.0, x), ie_by_quadrature(1.0, x))
        };
        assert!(rel(bessel_i0e(x), want0) < 1e-14, "i0e({x})");
        assert!(rel(bessel_i1e(x), want1) < 1e-14, "i1e({x})");
        assert_eq!(bessel_i0e(-x), bessel_i0e(x));
        assert_eq!(bessel_i1e(-x), -bessel_i1e(x));
        x *= 1.43;
    }
    assert_eq!(bessel_i0e(0.0), 1.0);
    assert_eq!(bessel_i1e(0.0), 0.0);
    // I_0(1) and I_1(1) (Abramowitz and Stegun, table 9.8).
    assert!(rel(bessel_i0e(1.0) * 1f64.exp(), 1.266_065_877_752_008_4) < 1e-15);
    assert!(rel(bessel_i1e(1.0) * 1f64.exp(), 0.565_159_103_992_485) < 1e-15);
}

#[test]
fn bessel_edge_values() {
    assert_eq!(log_bessel_i(0.0, 0.0), 0.0);
    assert_eq!(log_bessel_i(1.5, 0.0), f64::NEG_INFINITY);
    assert_eq!(bessel_ratio(2.0, 0.0), 0.0);
    assert_eq!(bessel_ratio(2.0, f64::INFINITY), 1.0);
    assert_eq!(log_bessel_i_normalized(3.0, 0.0), 0.0);
    assert!(log_bessel_i(0.5, f64::NAN).is_nan());
    // No overflow far out.
    for nu in [0.0, 0.5, 1.0, 30.0, 1e4] {
        for x in [1e6, 1e8, 1e12] {
            assert!(log_bessel_i(nu, x).is_finite() && log_bessel_ie(nu, x).is_finite());
            let r = bessel_ratio(nu, x);
            assert!(r > 0.0 && r <= 1.0);
        }
    }
    // Tiny x: I_nu(x) ~ (x/2)^nu / Gamma(nu + 1).
    for nu in [0.5, 2.0, 40.0] {
        let x = 1e-200;
        assert!(log_err(log_bessel_i(nu, x), nu * (0.5 * x).ln() - ln_gamma(nu + 1.0)) < 1e-15);
        assert!(rel(bessel_ratio(nu, x), x / (2.0 * (nu + 1.0))) < 1e-15);
    }
}

#[test]
fn large_order_bessel_against_series_and_recurrence() {
    // Large orders: the Debye expansion against the series where both apply, and the recurrence.
    for nu in [30.0, 77.5, 500.0, 1e4] {
        for x in [0.5 * nu, nu, 1.5 * nu] {
            if x > 300.0 {
                continue; // the plain series reference would need too many terms
            }
            let want = series_0f1(nu, x).ln();
            assert!((log_bessel_i_normalized(nu, x) - want).abs() < 1e-13 * want.max(1.0), "nu = {nu}, x = {x}");
        }
    }
}

#[test]
fn mean_resultant_length_over_the_whole_range() {
    // Small kappa: A_3 = k/3 - k^3/45 + 2 k^5/945 - k^7/4725 + ..., where coth k - 1/k cancels.
    for k in [1e-300, 1e-20, 1e-8, 1e-4, 1e-2, 0.1] {
        let k2 = k * k;
        let want =
            k * (1.0 / 3.0 + k2 * (-1.0 / 45.0 + k2 * (2.0 / 945.0 + k2 * (-1.0 / 4725.0 + k2 * 2.0 / 93555.0))));
        assert!(rel(sphere_mean_resultant(3, k), want) < 2e-15, "A_3({k})");
    }
    // General d, small kappa: A_d = (k/d) (1 - k^2 / (d (d + 2))) + O(k^5).
    for d in [2usize, 4, 5, 10, 101] {
        let k = 1e-5;
        let df = d as f64;
        assert!(rel(sphere_mean_resultant(d, k), k / df * (1.0 - k * k / (df * (df + 2.0)))) < 1e-15, "d = {d}");
        assert_eq!(sphere_mean_resultant(d, 0.0), 0.0);
    }
    // Large kappa: ratio of Hankel expansions to four terms (truncation below 1e-20 at kappa = 1e6).
    let hankel = |nu: f64, x: f64| {
        let mut t = 1.0;
        let mut s = 1.0;
        for k in 1..=4 {
            let odd = (2 * k - 1) as f64;
            t *= -(4.0 * nu * nu - odd * odd) / (8.0 * k as f64 * x);
            s += t;
        }
        s
    };
    for d in [2usize, 3, 4, 5, 10, 20] {
        for k in [1e5, 1e6, 1e7] {
            let nu = 0.5 * d as f64 - 1.0;
            let want = hankel(nu + 1.0, k) / hankel(nu, k);
            assert!(rel(sphere_mean_resultant(d, k), want) < 1e-15, "A_{d}({k})");
        }
    }
    // d = 1, odd symmetry, d = 2 as i1e / i0e.
    assert!(rel(sphere_mean_resultant(1, 0.7), 0.7f64.tanh()) < 1e-15);
    assert_eq!(sphere_mean_resultant(3, -2.0), -sphere_mean_resultant(3, 2.0));
    for k in [0.3, 3.0, 30.0, 300.0] {
        assert!(rel(sphere_mean_resultant(2, k), bessel_i1e(k) / bessel_i0e(k)) < 1e-14);
    }
    // Monotone increasing from 0 to 1 on a fine grid spanning 0 .. 1e6.
    let mut prev = 0.0;
    let mut k = 1e-6;
    while k < 1e6 {
        let a = sphere_mean_resultant(3, k);
        assert!(a > prev && a < 1.0, "A_3 not increasing at {k}");
        prev = a;
        k *= 1.05;
    }
}
