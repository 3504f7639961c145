//! Polynomial and linear-algebra kernels of the Hermite estimator: normalised Hermite polynomials, their
//! linearisation coefficients, and a small in-place Cholesky solve.

/// The normalised Hermite polynomials h_0(z), .., h_{n-1}(z) into `out` (n = `out.len()`), by
/// h_{k+1} = (z h_k - sqrt(k) h_{k-1}) / sqrt(k + 1); h_k = He_k / sqrt(k!), orthonormal under N(0, 1).
pub fn hermite_normalised(z: f64, out: &mut [f64]) {
    if out.is_empty() {
        return;
    }
    out[0] = 1.0;
    if out.len() > 1 {
        out[1] = z;
    }
    for k in 1..out.len().saturating_sub(1) {
        out[k + 1] = (z * out[k] - (k as f64).sqrt() * out[k - 1]) / ((k + 1) as f64).sqrt();
    }
}

/// Solves G b = r in place (b into `r`) for the symmetric `k x k` matrix whose lower triangle is in `g`
/// (row-major, overwritten by its Cholesky factor); false (with `g` and `r` clobbered) unless G is
/// numerically positive definite.
pub(super) fn cholesky_solve(k: usize, g: &mut [f64], r: &mut [f64]) -> bool {
    for i in 0..k {
        for j in 0..=i {
            let mut s = g[i * k + j];
            for l in 0..j {
                s -= g[i * k + l] * g[j * k + l];
            }
            if i == j {
                if !(s > 0.0 && s.is_finite()) {
                    return false;
                }
                g[i * k + i] = s.sqrt();
            } else {
                g[i * k + j] = s / g[j * k + j];
            }
        }
    }
    for i in 0..k {
        let s: f64 = (0..i).map(|l| g[i * k + l] * r[l]).sum();
        r[i] = (r[i] - s) / g[i * k + i];
    }
    for i in (0..k).rev() {
        let s: f64 = (i + 1..k).map(|l| g[l * k + i] * r[l]).sum();
        r[i] = (r[i] - s) / g[i * k + i];
    }
    true
}

/// The linearisation table of h_p h_q for p, q < k: `lin[p * k + q]` = (p + q - 2r, sqrt(p! q! (p+q-2r)!) /
/// (r! (p-r)! (q-r)!)) for r = 0..=min(p, q).
pub(super) fn linearisation(k: usize) -> Vec<Vec<(usize, f64)>> {
    let mut ln_fact = vec![0.0f64; 2 * k + 1];
    for i in 1..ln_fact.len() {
        ln_fact[i] = ln_fact[i - 1] + (i as f64).ln();
    }
    let mut lin = vec![Vec::new(); k * k];
    for p in 0..k {
        for q in 0..k {
            lin[p * k + q] = (0..=p.min(q))
                .map(|r| {
                    let i = p + q - 2 * r;
                    let l = 0.5 * (ln_fact[p] + ln_fact[q] + ln_fact[i]) - ln_fact[r] - ln_fact[p - r] - ln_fact[q - r];
                    (i, l.exp())
                })
                .collect();
        }
    }
    lin
}
