//! One-dimensional quadrature: Gauss-Legendre rules and an adaptive bisection scheme on top of them.
//!
//! Used for the SO(3) base score's normalising integral and, in tests, as the independent high-accuracy
//! reference for series and closed forms.

/// Nodes and weights of the n-point Gauss-Legendre rule on [-1, 1], by Newton's method on P_n.
///
/// Accurate to about 1e-15 for n up to a few hundred.
pub fn gauss_legendre(n: usize) -> (Vec<f64>, Vec<f64>) {
    assert!(n >= 1, "gauss_legendre: `n` = 0, expected at least 1 node");
    let mut nodes = vec![0.0; n];
    let mut weights = vec![0.0; n];
    let nf = n as f64;
    for i in 0..n.div_ceil(2) {
        // Tricomi's initial guess for the i-th root (descending order).
        let mut x = (std::f64::consts::PI * (i as f64 + 0.75) / (nf + 0.5)).cos();
        let mut dp = 0.0;
        for _ in 0..100 {
            let (p, d) = legendre_and_derivative(n, x);
            dp = d;
            let dx = p / d;
            x -= dx;
            if dx.abs() < 1e-16 {
                break;
            }
        }
        let (_, d) = legendre_and_derivative(n, x);
        dp = if d != 0.0 { d } else { dp };
        let w = 2.0 / ((1.0 - x * x) * dp * dp);
        nodes[i] = x;
        nodes[n - 1 - i] = -x;
        weights[i] = w;
        weights[n - 1 - i] = w;
    }
    if n % 2 == 1 {
        nodes[n / 2] = 0.0;
    }
    (nodes, weights)
}

/// P_n(x) and P_n'(x) by the three-term recurrence.
fn legendre_and_derivative(n: usize, x: f64) -> (f64, f64) {
    let (mut p0, mut p1) = (1.0, x);
    if n == 0 {
        return (1.0, 0.0);
    }
    for k in 2..=n {
        let kf = k as f64;
        let p2 = ((2.0 * kf - 1.0) * x * p1 - (kf - 1.0) * p0) / kf;
        p0 = p1;
        p1 = p2;
    }
    let d = n as f64 * (x * p1 - p0) / (x * x - 1.0);
    (p1, d)
}

/// A fixed Gauss-Legendre rule, reusable across integrals.
#[derive(Debug, Clone)]
pub struct GaussLegendre {
    nodes: Vec<f64>,
    weights: Vec<f64>,
}

impl GaussLegendre {
    /// The n-point rule.
    pub fn new(n: usize) -> Self {
        let (nodes, weights) = gauss_legendre(n);
        GaussLegendre { nodes, weights }
    }

    /// Nodes on [-1, 1].
    pub fn nodes(&self) -> &[f64] {
        &self.nodes
    }

    /// Weights on [-1, 1] (they sum to 2).
    pub fn weights(&self) -> &[f64] {
        &self.weights
    }

    /// int_a^b f with this rule.
    pub fn integrate(&self, f: impl Fn(f64) -> f64, a: f64, b: f64) -> f64 {
        let (c, h) = (0.5 * (a + b), 0.5 * (b - a));
        h * self.nodes.iter().zip(&self.weights).map(|(x, w)| w * f(c + h * x)).sum::<f64>()
    }
}

/// Adaptive quadrature: a 20-point Gauss-Legendre rule on each interval, bisected until the estimate on the
/// whole agrees with the sum over the two halves to `rel_tol` (relative to the running total) or `abs_tol`.
///
/// Returns the integral; panics naming the argument on a non-finite bound.
pub fn integrate_adaptive(f: impl Fn(f64) -> f64, a: f64, b: f64, rel_tol: f64, abs_tol: f64) -> f64 {
    assert!(a.is_finite() && b.is_finite(), "integrate_adaptive: bounds `a` = {a}, `b` = {b} must be finite");
    let rule = GaussLegendre::new(20);
    let whole = rule.integrate(&f, a, b);
    adapt(&rule, &f, a, b, whole, rel_tol, abs_tol, 0)
}

fn adapt(
    rule: &GaussLegendre,
    f: &impl Fn(f64) -> f64,
    a: f64,
    b: f64,
    whole: f64,
    rel_tol: f64,
    abs_tol: f64,
    depth: usize,
) -> f64 {
    let m = 0.5 * (a + b);
    let left = rule.integrate(f, a, m);
    let right = rule.integrate(f, m, b);
    let sum = left + right;
    if depth >= 50 || (sum - whole).abs() <= abs_tol.max(rel_tol * sum.abs()) {
        return sum;
    }
    adapt(rule, f, a, m, left, rel_tol, abs_tol * 0.5, depth + 1)
        + adapt(rule, f, m, b, right, rel_tol, abs_tol * 0.5, depth + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_integrate_polynomials_exactly() {
        for n in [1, 2, 5, 20, 64] {
            let g = GaussLegendre::new(n);
            assert!((g.weights().iter().sum::<f64>() - 2.0).abs() < 1e-13, "n={n}");
            let deg = 2 * n - 1;
            let exact = if deg % 2 == 0 { 2.0 / (deg as f64 + 1.0) } else { 0.0 };
            let got = g.integrate(|x| x.powi(deg as i32), -1.0, 1.0);
            assert!((got - exact).abs() < 1e-13, "n={n}: {got}");
            let even = deg - 1;
            let got = g.integrate(|x| x.powi(even as i32), -1.0, 1.0);
            assert!((got - 2.0 / (even as f64 + 1.0)).abs() < 1e-13, "n={n}: {got}");
        }
    }

    #[test]
    fn adaptive_handles_peaks() {
        // A sharp peak: int exp(-(x - 0.3)^2 / (2 * 1e-6)) dx = sqrt(2 pi 1e-6).
        let got = integrate_adaptive(|x| (-(x - 0.3) * (x - 0.3) / 2e-6).exp(), -1.0, 1.0, 1e-13, 0.0);
        let exact = (2.0 * std::f64::consts::PI * 1e-6).sqrt();
        assert!((got / exact - 1.0).abs() < 1e-11, "{got} vs {exact}");
        let got = integrate_adaptive(|x| x.sqrt(), 0.0, 1.0, 1e-12, 0.0);
        assert!((got - 2.0 / 3.0).abs() < 1e-11, "{got}");
    }
}
