//! Sample-quality metrics (`shared/design/MATH.md` section 9).
//!
//! - Batched distance matrices on R^D, on the sphere S^{d-1}, on SO(3) and on the quotient SO(3)/G.
//! - The unbiased MMD^2 with a Gaussian kernel on any of those distances, in bounded memory, and the median
//!   heuristic for its bandwidth.
//! - The total-variation distance between histograms on a discrete set.
//!
//! Every distance matrix is computed in f64 from one matmul of the flattened points: the squared chordal
//! (ambient) distance |x|^2 + |y|^2 - 2 <x, y>, clamped at 0, then mapped to the angle through
//! theta = 2 asin(chord / (2 r)) (r = 1 on the sphere, sqrt 2 on SO(3)).
//! The squared distance, which is what the Gaussian kernel uses, has an absolute error of a few f64 ulps; the
//! angle itself therefore has an absolute error of order sqrt(eps_f64) ~ 1e-8 next to 0 and next to pi,
//! and is exact to rounding elsewhere.
//!
//! ```
//! use experiments::metrics::{median_bandwidth, mmd, sphere_dist_matrix};
//!
//! tch::manual_seed(0);
//! let normalise = |x: tch::Tensor| &x / x.norm_scalaropt_dim(2.0, [1], true);
//! let a = normalise(tch::Tensor::randn([200, 3], (tch::Kind::Double, tch::Device::Cpu)));
//! let b = normalise(tch::Tensor::randn([200, 3], (tch::Kind::Double, tch::Device::Cpu)));
//! let h = median_bandwidth(&sphere_dist_matrix(&b, &b)).unwrap();
//! let m = mmd(&a, &b, sphere_dist_matrix, h).unwrap();
//! assert!(m.mmd2.abs() < 0.02);
//! ```

use anyhow::{ensure, Context, Result};
use geom::SymmetryGroup;
use serde::Serialize;
use tch::{Device, Kind, Tensor};

/// Entries of one chunk of the distance matrix in [`mmd`]: each chunk takes `max(1, MMD_CHUNK_ENTRIES / m)` rows
/// of the `[n, m]` matrix (104 rows for m = 20,000) and holds two f64 matrices of that size, 16 MB each.
/// Chunks this small are reused by the allocator instead of being mapped afresh, which is faster than larger
/// ones.
pub const MMD_CHUNK_ENTRIES: i64 = 1 << 21;

/// Euclidean distances between all pairs of rows, `x: [n, ..]`, `y: [m, ..]` -> `[n, m]`.
///
/// Both are flattened to `[n, D]` and `[m, D]` (the trailing shapes must have the same number of entries);
/// computed in f64 from the squared distances |x|^2 + |y|^2 - 2 <x, y> clamped at 0, returned in the dtype of
/// `x` on the device of `x`. Not meant for gradients. Panics on mismatched shapes.
pub fn euclidean_dist_matrix(x: &Tensor, y: &Tensor) -> Tensor {
    let (xf, yf) = flatten_pair("euclidean_dist_matrix", x, y, None);
    let mut sq = sq_dist_f64(&xf, &yf);
    let _ = sq.sqrt_();
    sq.to_kind(x.kind())
}

/// Geodesic angles between all pairs of unit vectors, `x: [n, d]`, `y: [m, d]` -> `[n, m]` in [0, pi].
///
/// theta = 2 asin(|x - y| / 2), with |x - y|^2 from one matmul in f64 and the asin argument clamped to [0, 1]:
/// acos(<x, y>) for unit vectors, with the accuracy stated in the module doc. Returned in the dtype and on the
/// device of `x`. Rows are not renormalised. Panics unless both are 2-d with the same `d`.
pub fn sphere_dist_matrix(x: &Tensor, y: &Tensor) -> Tensor {
    assert_eq!(x.dim(), 2, "sphere_dist_matrix: x must have shape [n, d], got {:?}", x.size());
    assert_eq!(y.dim(), 2, "sphere_dist_matrix: y must have shape [m, d], got {:?}", y.size());
    let (xf, yf) = flatten_pair("sphere_dist_matrix", x, y, None);
    chord_to_angle(sq_dist_f64(&xf, &yf), 1.0).to_kind(x.kind())
}

/// Rotation angles of x_i^T y_j for all pairs, `x: [n, 3, 3]`, `y: [m, 3, 3]` -> `[n, m]` in [0, pi].
///
/// tr(x^T y) = <vec x, vec y> comes from one matmul of the flattened `[n, 9] x [9, m]`, in f64; then
/// ||x - y||_F^2 = 6 - 2 tr(x^T y) = 8 sin^2(theta / 2) gives theta = 2 asin(||x - y||_F / (2 sqrt 2)),
/// clamped to [0, pi]. Returned in the dtype and on the device of `x`. Inputs are assumed to be rotations
/// (not checked). Panics unless both have shape `[_, 3, 3]`.
pub fn so3_dist_matrix(x: &Tensor, y: &Tensor) -> Tensor {
    let (xf, yf) = flatten_pair("so3_dist_matrix", x, y, Some(&[3, 3]));
    chord_to_angle(sq_dist_f64(&xf, &yf), std::f64::consts::SQRT_2).to_kind(x.kind())
}

/// Quotient distances d_G(x_i, y_j) = min_{g in G} angle(x_i, y_j g) on SO(3)/G, `x: [n, 3, 3]`,
/// `y: [m, 3, 3]` -> `[n, m]` in [0, pi], in the dtype and on the device of `x`.
///
/// The per-pair twin is [`SymmetryGroup::quotient_dist`]. The angle is decreasing in tr(x^T y g), so this keeps
/// a running maximum of the `[n, m]` trace matrix over the |G| elements (one matmul each, in f64) and converts
/// it once, as [`so3_dist_matrix`] does: memory is a few `[n, m]` f64 matrices whatever |G|.
/// Panics unless both have shape `[_, 3, 3]`.
pub fn quotient_dist_matrix(group: &SymmetryGroup, x: &Tensor, y: &Tensor) -> Tensor {
    let (xf, yf) = flatten_pair("quotient_dist_matrix", x, y, Some(&[3, 3]));
    let m = yf.size()[0];
    let y3 = yf.reshape([m, 3, 3]);
    let elements = group.elements_t(Kind::Double, yf.device());
    // tr(x^T y g) for all pairs: a running maximum over g, in place.
    let yg_t = |k: i64| y3.matmul(&elements.get(k)).reshape([m, 9]).transpose(0, 1);
    let mut best = xf.mm(&yg_t(0));
    let tr = Tensor::empty_like(&best);
    for k in 1..group.order() as i64 {
        let _ = xf.mm_out(&tr, &yg_t(k));
        let _ = best.maximum_out(&best, &tr);
    }
    // |x - y g|^2 = |x|^2 + |y|^2 - 2 tr(x^T y g) for orthogonal g, reusing the buffer.
    let mut sq = tr;
    sq.copy_(&norms_sq(&xf).unsqueeze(1));
    let _ = sq.g_add_(&norms_sq(&yf).unsqueeze(0));
    let _ = sq.g_add_(&best.g_mul_scalar_(-2.0));
    let _ = sq.clamp_min_(0.0);
    chord_to_angle(sq, std::f64::consts::SQRT_2).to_kind(x.kind())
}

/// The result of [`mmd`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Mmd {
    /// The unbiased estimate of MMD^2 (a U-statistic: it can be slightly negative when the laws agree).
    pub mmd2: f64,
    /// sqrt(max(mmd2, 0)).
    pub mmd: f64,
    /// The kernel bandwidth h of k(d) = exp(-d^2 / (2 h^2)), in the units of the distance.
    pub bandwidth: f64,
    /// Number of generated samples.
    pub n_samples: usize,
    /// Number of reference points.
    pub n_reference: usize,
}

/// The median heuristic: the median of the strictly-upper-triangular entries of a square distance matrix
/// `d_ref: [n, n]` (any float dtype and device), the mean of the two middle values for an even count.
///
/// Errors naming `d_ref` unless it is square with n >= 2, its entries are finite, and the median is positive
/// (a zero median means most reference points coincide). Copies the n (n - 1) / 2 entries to the CPU: use a
/// subsample of at most a few thousand points (see [`median_bandwidth_of`]).
pub fn median_bandwidth(d_ref: &Tensor) -> Result<f64> {
    let size = d_ref.size();
    ensure!(size.len() == 2 && size[0] == size[1], "d_ref must be a square distance matrix [n, n], got shape {size:?}");
    let n = size[0] as usize;
    ensure!(n >= 2, "d_ref must hold the distances of at least 2 points, got {n}");
    let all = Vec::<f64>::try_from(d_ref.to_device(Device::Cpu).to_kind(Kind::Double).contiguous().view([-1]))
        .context("cannot copy d_ref to the cpu")?;
    let mut upper: Vec<f64> = (0..n).flat_map(|i| all[i * n + i + 1..(i + 1) * n].iter().copied()).collect();
    if let Some(k) = upper.iter().position(|v| !v.is_finite()) {
        let (i, j) = upper_pair(n, k);
        anyhow::bail!("d_ref has a non-finite entry {} at ({i}, {j})", upper[k]);
    }
    let len = upper.len();
    let (lower_half, &mut mid, _) = upper.select_nth_unstable_by(len / 2, f64::total_cmp);
    let median = if len % 2 == 1 { mid } else { 0.5 * (mid + lower_half.iter().copied().fold(f64::MIN, f64::max)) };
    ensure!(median > 0.0, "d_ref has median distance {median}: most reference points coincide");
    Ok(median)
}

/// [`median_bandwidth`] of `dist(r, r)` for the first `max_points` rows `r` of `reference` (all of them if
/// fewer); shuffle `reference` first if its order is not random.
///
/// Errors as [`median_bandwidth`], and naming `max_points` when it is below 2.
pub fn median_bandwidth_of(
    reference: &Tensor,
    dist: impl Fn(&Tensor, &Tensor) -> Tensor,
    max_points: usize,
) -> Result<f64> {
    ensure!(max_points >= 2, "max_points must be at least 2, got {max_points}");
    let n = reference.size().first().copied().unwrap_or(0);
    let r = reference.narrow(0, 0, n.min(max_points as i64));
    median_bandwidth(&dist(&r, &r)).context("median bandwidth of the reference")
}

/// The unbiased estimate of MMD^2 between the laws of `samples: [n, ..]` and `reference: [m, ..]` with the
/// Gaussian kernel k = exp(-d^2 / (2 h^2)) on the distance `dist` (for example [`sphere_dist_matrix`], or
/// `|a, b| quotient_dist_matrix(&g, a, b)`), h = `bandwidth`:
///
/// MMD^2 = mean_{i != j} k(x_i, x_j) + mean_{i != j} k(y_i, y_j) - 2 mean_{i, j} k(x_i, y_j).
///
/// Both inputs are converted to f64 before `dist` is called, and `dist(a, b)` must return the `[a, b]`
/// distance matrix. Work goes in chunks of [`MMD_CHUNK_ENTRIES`] entries, so memory stays at a few
/// chunk-sized matrices whatever n and m (plus what `dist` allocates: the distance functions of this module
/// need a few chunk-sized f64 matrices too, |G| times fewer than a `[n, m, |G|]` table for quotients).
/// The diagonal terms excluded from the within-sample means are the computed
/// k(x_i, x_i), so a `dist` that is not exactly 0 on the diagonal does not bias the estimate.
///
/// Errors naming the argument when `samples` or `reference` has fewer than 2 rows or a non-finite entry, when
/// `bandwidth` is not positive and finite, when `dist` returns a wrongly shaped matrix or a non-finite distance.
pub fn mmd(
    samples: &Tensor,
    reference: &Tensor,
    dist: impl Fn(&Tensor, &Tensor) -> Tensor,
    bandwidth: f64,
) -> Result<Mmd> {
    mmd_chunked(samples, reference, &dist, bandwidth, MMD_CHUNK_ENTRIES)
}

fn mmd_chunked(
    samples: &Tensor,
    reference: &Tensor,
    dist: &dyn Fn(&Tensor, &Tensor) -> Tensor,
    bandwidth: f64,
    chunk_entries: i64,
) -> Result<Mmd> {
    ensure!(bandwidth.is_finite() && bandwidth > 0.0, "bandwidth must be positive and finite, got {bandwidth}");
    let x = check_points("samples", samples)?;
    let y = check_points("reference", reference)?;
    let (n, m) = (x.size()[0] as f64, y.size()[0] as f64);
    let xx = kernel_sum(&x, &x, true, dist, bandwidth, chunk_entries, ("samples", "samples"))?;
    let yy = kernel_sum(&y, &y, true, dist, bandwidth, chunk_entries, ("reference", "reference"))?;
    let xy = kernel_sum(&x, &y, false, dist, bandwidth, chunk_entries, ("samples", "reference"))?;
    let mmd2 = xx / (n * (n - 1.0)) + yy / (m * (m - 1.0)) - 2.0 * xy / (n * m);
    Ok(Mmd { mmd2, mmd: mmd2.max(0.0).sqrt(), bandwidth, n_samples: n as usize, n_reference: m as usize })
}

/// Empirical probabilities of the outcomes 0..k from a list of outcome indices: counts / len.
///
/// An empty list gives all zeros (not a probability vector). Panics naming the index when one is >= k (a bug
/// in the caller's projection onto the discrete set).
pub fn empirical_probs(indices: &[usize], k: usize) -> Vec<f64> {
    let mut counts = vec![0usize; k];
    for &i in indices {
        assert!(i < k, "empirical_probs: index {i} out of range for k = {k} outcomes");
        counts[i] += 1;
    }
    let total = indices.len().max(1) as f64;
    counts.into_iter().map(|c| c as f64 / total).collect()
}

/// Total-variation distance between two probability vectors: (1/2) sum_k |p_k - q_k|, in [0, 1] for
/// probability vectors.
///
/// Errors when the lengths differ or an entry is not finite. Does not check that the entries sum to 1.
pub fn tv_distance(p: &[f64], q: &[f64]) -> Result<f64> {
    ensure!(p.len() == q.len(), "p and q must have the same length, got {} and {}", p.len(), q.len());
    for (arg, v) in [("p", p), ("q", q)] {
        if let Some(k) = v.iter().position(|a| !a.is_finite()) {
            anyhow::bail!("{arg} has a non-finite entry {} at index {k}", v[k]);
        }
    }
    Ok(0.5 * p.iter().zip(q).map(|(a, b)| (a - b).abs()).sum::<f64>())
}

/// Flattens `x: [n, ..]` and `y: [m, ..]` to `[n, D]`, `[m, D]` in f64 on the device of `x`, checking the
/// trailing shape (`point` when given, else equal numbers of entries).
fn flatten_pair(what: &str, x: &Tensor, y: &Tensor, point: Option<&[i64]>) -> (Tensor, Tensor) {
    let (xs, ys) = (x.size(), y.size());
    assert!(!xs.is_empty() && !ys.is_empty(), "{what}: x and y need a batch dimension, got {xs:?} and {ys:?}");
    if let Some(p) = point {
        assert!(&xs[1..] == p, "{what}: x must have shape [n, {p:?}], got {xs:?}");
        assert!(&ys[1..] == p, "{what}: y must have shape [m, {p:?}], got {ys:?}");
    }
    let (dx, dy) = (xs[1..].iter().product::<i64>(), ys[1..].iter().product::<i64>());
    assert_eq!(dx, dy, "{what}: x {xs:?} and y {ys:?} have points of different sizes");
    let xf = x.to_kind(Kind::Double).reshape([xs[0], dx]);
    let yf = y.to_kind(Kind::Double).to_device(x.device()).reshape([ys[0], dy]);
    (xf, yf)
}

fn norms_sq(x: &Tensor) -> Tensor {
    x.square().sum_dim_intlist(1, false, Kind::Double)
}

/// Squared Euclidean distances `[n, m]` between rows of `x: [n, D]`, `y: [m, D]`, clamped at 0.
fn sq_dist_f64(x: &Tensor, y: &Tensor) -> Tensor {
    let mut sq = norms_sq(x).unsqueeze(1) + norms_sq(y).unsqueeze(0);
    // Scaling x by -2 is exact, so this is one gemm with beta = 1.
    let _ = sq.addmm_(&(x * -2.0), &y.transpose(0, 1));
    let _ = sq.clamp_min_(0.0);
    sq
}

/// theta = 2 asin(chord / (2 r)) from squared chords, the argument of asin clamped to [0, 1], in place.
fn chord_to_angle(mut sq: Tensor, r: f64) -> Tensor {
    let _ = sq.sqrt_();
    let _ = sq.g_mul_scalar_(0.5 / r);
    let _ = sq.clamp_max_(1.0);
    let _ = sq.asin_();
    let _ = sq.g_mul_scalar_(2.0);
    sq
}

/// Checks that `t` has at least 2 rows and finite entries; returns it in f64.
fn check_points(arg: &str, t: &Tensor) -> Result<Tensor> {
    let size = t.size();
    let n = size.first().copied().unwrap_or(0);
    ensure!(n >= 2, "{arg} must have at least 2 points, got shape {size:?}");
    let x = t.to_kind(Kind::Double);
    let finite_rows = x.isfinite().reshape([n, -1]).all_dim(1, false);
    if let Some(i) = first_false(&finite_rows) {
        anyhow::bail!("{arg} has a non-finite entry in row {i}");
    }
    Ok(x)
}

/// Sum of k(a_i, b_j) over all pairs, minus the diagonal terms when `exclude_diag` (then `b` is `a`).
fn kernel_sum(
    a: &Tensor,
    b: &Tensor,
    exclude_diag: bool,
    dist: &dyn Fn(&Tensor, &Tensor) -> Tensor,
    h: f64,
    chunk_entries: i64,
    names: (&str, &str),
) -> Result<f64> {
    let (n, m) = (a.size()[0], b.size()[0]);
    let chunk = (chunk_entries / m).max(1);
    let scale = -0.5 / (h * h);
    let mut total = 0.0;
    let mut start = 0;
    while start < n {
        let c = chunk.min(n - start);
        let d = dist(&a.narrow(0, start, c), b).to_kind(Kind::Double);
        ensure!(
            d.size() == [c, m],
            "dist returned shape {:?} for {c} {} and {m} {}, expected [{c}, {m}]",
            d.size(),
            names.0,
            names.1
        );
        if !d.sum(Kind::Double).double_value(&[]).is_finite() {
            let i = first_false(&d.isfinite().all_dim(1, false)).unwrap_or(0);
            anyhow::bail!(
                "dist returned a non-finite distance between {} row {} and {}",
                names.0,
                start as usize + i,
                names.1
            );
        }
        let mut k = d.square();
        let _ = k.g_mul_scalar_(scale);
        let _ = k.exp_();
        total += k.sum(Kind::Double).double_value(&[]);
        if exclude_diag {
            total -= k.narrow(1, start, c).diagonal(0, 0, 1).sum(Kind::Double).double_value(&[]);
        }
        start += c;
    }
    Ok(total)
}

/// Index of the first false entry of a 1-d Bool tensor.
fn first_false(mask: &Tensor) -> Option<usize> {
    let v = Vec::<bool>::try_from(mask.to_device(Device::Cpu)).ok()?;
    v.iter().position(|ok| !ok)
}

/// (i, j) of the k-th entry of the strict upper triangle of an n x n matrix, row by row.
fn upper_pair(n: usize, mut k: usize) -> (usize, usize) {
    for i in 0..n {
        let row = n - 1 - i;
        if k < row {
            return (i, i + 1 + k);
        }
        k -= row;
    }
    (n, n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use geom::so3::expm;
    use geom::{Manifold, So3, Sphere, TensorUniformSampler, UniformSampler};
    use nalgebra::{DVector, Matrix3, Vector3};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use std::f64::consts::PI;

    const CPU: (Kind, Device) = (Kind::Double, Device::Cpu);

    fn tensor(flat: Vec<f64>, shape: &[i64]) -> Tensor {
        Tensor::from_slice(&flat).reshape(shape)
    }

    fn to_vec2(t: &Tensor) -> Vec<Vec<f64>> {
        let (n, m) = (t.size()[0], t.size()[1]);
        let flat = Vec::<f64>::try_from(t.to_kind(Kind::Double).contiguous().view([-1])).unwrap();
        (0..n as usize).map(|i| flat[i * m as usize..(i + 1) * m as usize].to_vec()).collect()
    }

    /// Largest |batched - per-point| over all pairs, and over the pairs whose reference value lies in
    /// [1e-3, pi - 1e-3] (away from the ends, where the chordal form is exact to rounding).
    fn max_err<P>(d: &Tensor, xs: &[P], ys: &[P], reference: impl Fn(&P, &P) -> f64) -> (f64, f64) {
        assert_eq!(d.size(), [xs.len() as i64, ys.len() as i64]);
        let d = to_vec2(d);
        let (mut all, mut inner): (f64, f64) = (0.0, 0.0);
        for (i, x) in xs.iter().enumerate() {
            for (j, y) in ys.iter().enumerate() {
                let (r, e) = (reference(x, y), (d[i][j] - reference(x, y)).abs());
                all = all.max(e);
                if (1e-3..=PI - 1e-3).contains(&r) {
                    inner = inner.max(e);
                }
            }
        }
        (all, inner)
    }

    /// Absolute error allowed at angles near 0 and pi: sqrt of a few ulps of the squared chord.
    const END_TOL: f64 = 2e-7;

    fn rot_flat(rs: &[Matrix3<f64>]) -> Tensor {
        let flat = rs.iter().flat_map(|r| (0..9).map(move |k| r[(k / 3, k % 3)])).collect();
        tensor(flat, &[rs.len() as i64, 3, 3])
    }

    fn random_axis(rng: &mut ChaCha8Rng) -> Vector3<f64> {
        let v = Sphere::new(3).unwrap().sample_uniform(rng);
        Vector3::new(v[0], v[1], v[2])
    }

    /// Rotations: random ones, then for each random x: x, x at angles 1e-9 and 1e-4, x at angle pi - 1e-6 and pi.
    fn so3_points(seed: u64) -> (Vec<Matrix3<f64>>, Vec<Matrix3<f64>>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let xs: Vec<Matrix3<f64>> = (0..8).map(|_| So3.sample_uniform(&mut rng)).collect();
        let mut ys: Vec<Matrix3<f64>> = (0..6).map(|_| So3.sample_uniform(&mut rng)).collect();
        for x in &xs {
            for angle in [0.0, 1e-9, 1e-4, PI - 1e-6, PI] {
                ys.push(x * expm(&(random_axis(&mut rng) * angle)));
            }
        }
        (xs, ys)
    }

    #[test]
    fn euclidean_matches_per_point_norms() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let s = Sphere::new(6).unwrap();
        let xs: Vec<DVector<f64>> = (0..7).map(|_| s.sample_uniform(&mut rng) * 3.0).collect();
        let mut ys: Vec<DVector<f64>> = (0..5).map(|_| s.sample_uniform(&mut rng)).collect();
        ys.push(xs[0].clone());
        ys.push(&xs[1] + s.sample_uniform(&mut rng) * 1e-6);
        let flat =
            |v: &[DVector<f64>]| tensor(v.iter().flat_map(|p| p.iter().copied()).collect(), &[v.len() as i64, 2, 3]);
        let d = euclidean_dist_matrix(&flat(&xs), &flat(&ys));
        assert!(max_err(&d, &xs, &ys, |x, y| (x - y).norm()).0 < END_TOL);
        let d32 = euclidean_dist_matrix(&flat(&xs).to_kind(Kind::Float), &flat(&ys));
        assert_eq!(d32.kind(), Kind::Float);
        assert!(max_err(&d32, &xs, &ys, |x, y| (x - y).norm()).0 < 1e-5);
    }

    #[test]
    fn sphere_matches_per_point_dist_near_zero_and_antipodal() {
        for dim in [3, 5] {
            let s = Sphere::new(dim).unwrap();
            let mut rng = ChaCha8Rng::seed_from_u64(dim as u64);
            let xs: Vec<DVector<f64>> = (0..8).map(|_| s.sample_uniform(&mut rng)).collect();
            let mut ys: Vec<DVector<f64>> = (0..6).map(|_| s.sample_uniform(&mut rng)).collect();
            for x in &xs {
                for (base, step) in [(x.clone(), 0.0), (x.clone(), 1e-9), (x.clone(), 1e-4), (-x, 0.0), (-x, 1e-6)] {
                    let v = s.tangent_project(&base, &s.sample_uniform(&mut rng));
                    ys.push(s.exp(&base, &(v.normalize() * step)));
                }
            }
            let flat = |v: &[DVector<f64>]| {
                tensor(v.iter().flat_map(|p| p.iter().copied()).collect(), &[v.len() as i64, dim as i64])
            };
            let d = sphere_dist_matrix(&flat(&xs), &flat(&ys));
            assert_eq!(d.kind(), Kind::Double);
            let (err, inner) = max_err(&d, &xs, &ys, |x, y| s.dist(x, y));
            assert!(err < END_TOL && inner < 1e-12, "S^{}: max errors {err:e}, {inner:e}", dim - 1);
            let d32 = sphere_dist_matrix(&flat(&xs).to_kind(Kind::Float), &flat(&ys).to_kind(Kind::Float));
            assert_eq!(d32.kind(), Kind::Float);
            assert!(max_err(&d32, &xs, &ys, |x, y| s.dist(x, y)).0 < 1e-3);
        }
    }

    #[test]
    fn so3_matches_per_point_dist_near_zero_and_pi() {
        let (xs, ys) = so3_points(3);
        let d = so3_dist_matrix(&rot_flat(&xs), &rot_flat(&ys));
        let (err, inner) = max_err(&d, &xs, &ys, |x, y| So3.dist(x, y));
        assert!(err < END_TOL && inner < 1e-12, "max errors {err:e}, {inner:e}");
        assert!(d.max().double_value(&[]) <= PI && d.min().double_value(&[]) >= 0.0);
    }

    #[test]
    fn quotient_matches_per_point_quotient_dist() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        for group in [SymmetryGroup::octahedral(), SymmetryGroup::cyclic(3).unwrap(), SymmetryGroup::icosahedral()] {
            let (xs, mut ys) = so3_points(5);
            // Points equivalent to an x modulo G, exactly and up to a small rotation.
            for x in &xs {
                let g = group.random_element(&mut rng);
                ys.push(x * g);
                ys.push(x * g * expm(&(random_axis(&mut rng) * 1e-5)));
            }
            let d = quotient_dist_matrix(&group, &rot_flat(&xs), &rot_flat(&ys));
            let (err, inner) = max_err(&d, &xs, &ys, |x, y| group.quotient_dist(x, y));
            assert!(err < END_TOL && inner < 1e-12, "{}: max errors {err:e}, {inner:e}", group.name());
            let d1 = so3_dist_matrix(&rot_flat(&xs), &rot_flat(&ys));
            assert!(d.le_tensor(&(d1 + END_TOL)).all().int64_value(&[]) == 1, "{}: d_G > d", group.name());
        }
        let (xs, ys) = so3_points(6);
        let trivial = SymmetryGroup::cyclic(1).unwrap();
        let d = quotient_dist_matrix(&trivial, &rot_flat(&xs), &rot_flat(&ys));
        let d1 = so3_dist_matrix(&rot_flat(&xs), &rot_flat(&ys));
        let gap = (d - d1).abs().max().double_value(&[]);
        assert!(gap < END_TOL, "C1 differs from so3_dist_matrix by {gap:e}");
    }

    fn normalise(x: Tensor) -> Tensor {
        &x / x.norm_scalaropt_dim(2.0, [1], true)
    }

    fn uniform_s2(n: i64) -> Tensor {
        normalise(Tensor::randn([n, 3], CPU))
    }

    /// Concentrated around the north pole (angular spread about 0.5).
    fn polar_s2(n: i64) -> Tensor {
        normalise(Tensor::randn([n, 3], CPU) * 0.5 + Tensor::from_slice(&[0.0, 0.0, 1.0]))
    }

    #[test]
    fn mmd_same_law_is_near_zero_and_different_laws_clearly_positive() {
        tch::manual_seed(10);
        let (a, b, c) = (uniform_s2(400), uniform_s2(400), polar_s2(400));
        let h = median_bandwidth(&sphere_dist_matrix(&b, &b)).unwrap();
        assert!((1.0..2.2).contains(&h), "median angle of uniform points {h}");
        let same = mmd(&a, &b, sphere_dist_matrix, h).unwrap();
        let diff = mmd(&c, &b, sphere_dist_matrix, h).unwrap();
        assert!(same.mmd2.abs() < 5e-3, "{same:?}");
        assert!(diff.mmd2 > 0.1, "{diff:?}");
        assert_eq!((diff.n_samples, diff.n_reference, diff.bandwidth), (400, 400, h));
        assert!((diff.mmd - diff.mmd2.sqrt()).abs() < 1e-15);
    }

    #[test]
    fn unbiased_mmd_averages_to_zero_over_seeds() {
        let values: Vec<f64> = (0..40)
            .map(|seed| {
                tch::manual_seed(100 + seed);
                mmd(&uniform_s2(50), &uniform_s2(40), sphere_dist_matrix, 1.0).unwrap().mmd2
            })
            .collect();
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let sd = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
        assert!(mean.abs() < 3.0 * sd / n.sqrt(), "mean {mean:e}, sd {sd:e}");
        assert!(values.iter().any(|&v| v < 0.0), "an unbiased estimate is negative for some seeds");
        let negative = mmd(&uniform_s2(50), &uniform_s2(40), sphere_dist_matrix, 1.0).unwrap();
        assert!(negative.mmd >= 0.0);
    }

    #[test]
    fn mmd_is_symmetric_and_independent_of_chunking() {
        tch::manual_seed(11);
        let (a, b) = (uniform_s2(70), polar_s2(45));
        let ab = mmd(&a, &b, sphere_dist_matrix, 0.7).unwrap();
        let ba = mmd(&b, &a, sphere_dist_matrix, 0.7).unwrap();
        assert!((ab.mmd2 - ba.mmd2).abs() < 1e-12, "{ab:?} {ba:?}");
        let chunked = mmd_chunked(&a, &b, &sphere_dist_matrix, 0.7, 100).unwrap();
        assert!((ab.mmd2 - chunked.mmd2).abs() < 1e-12);
        // f32 inputs are upcast before the distance.
        let f32 = mmd(&a.to_kind(Kind::Float), &b, sphere_dist_matrix, 0.7).unwrap();
        assert!((ab.mmd2 - f32.mmd2).abs() < 1e-5);
    }

    #[test]
    fn quotient_mmd_ignores_the_symmetry() {
        tch::manual_seed(12);
        let group = SymmetryGroup::octahedral();
        let (a, b) =
            (So3.sample_uniform_t(60, Kind::Double, Device::Cpu), So3.sample_uniform_t(50, Kind::Double, Device::Cpu));
        let dist = |u: &Tensor, v: &Tensor| quotient_dist_matrix(&group, u, v);
        let plain = mmd(&a, &b, dist, 0.3).unwrap();
        let moved = mmd(&group.random_orbit_t(&a), &b, dist, 0.3).unwrap();
        assert!((plain.mmd2 - moved.mmd2).abs() < 1e-9, "{plain:?} {moved:?}");
    }

    #[test]
    fn mmd_errors_name_the_argument() {
        tch::manual_seed(13);
        let (a, b) = (uniform_s2(10), uniform_s2(10));
        let msg = |r: Result<Mmd>| r.unwrap_err().to_string();
        assert!(msg(mmd(&a.narrow(0, 0, 1), &b, sphere_dist_matrix, 1.0)).starts_with("samples must have at least 2"));
        assert!(msg(mmd(&a, &b.narrow(0, 0, 1), sphere_dist_matrix, 1.0)).starts_with("reference must have at least 2"));
        for h in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(msg(mmd(&a, &b, sphere_dist_matrix, h)).starts_with("bandwidth must be positive"));
        }
        let bad = a.copy();
        let _ = bad.get(3).get(1).fill_(f64::NAN);
        assert_eq!(msg(mmd(&bad, &b, sphere_dist_matrix, 1.0)), "samples has a non-finite entry in row 3");
        let nan_dist = |u: &Tensor, v: &Tensor| sphere_dist_matrix(u, v) * f64::NAN;
        assert!(msg(mmd(&a, &b, nan_dist, 1.0)).starts_with("dist returned a non-finite distance"));
        let wrong = |u: &Tensor, _: &Tensor| sphere_dist_matrix(u, u);
        assert!(msg(mmd(&a, &b.narrow(0, 0, 4), wrong, 1.0)).starts_with("dist returned shape"));
    }

    #[test]
    fn median_bandwidth_known_values_and_errors() {
        // Points 0, 1, 3 on a line: distances 1, 3, 2.
        let p = Tensor::from_slice(&[0.0, 1.0, 3.0]).reshape([3, 1]);
        assert_eq!(median_bandwidth(&euclidean_dist_matrix(&p, &p)).unwrap(), 2.0);
        // Points 0, 1, 3, 7: distances 1, 3, 7, 2, 6, 4 -> (3 + 4) / 2.
        let p = Tensor::from_slice(&[0.0f32, 1.0, 3.0, 7.0]).reshape([4, 1]);
        assert_eq!(median_bandwidth(&euclidean_dist_matrix(&p, &p)).unwrap(), 3.5);
        assert_eq!(median_bandwidth_of(&p, euclidean_dist_matrix, 3).unwrap(), 2.0);
        let err = |t: &Tensor| median_bandwidth(t).unwrap_err().to_string();
        assert!(err(&Tensor::zeros([2, 3], CPU)).starts_with("d_ref must be a square"));
        assert!(err(&Tensor::zeros([1, 1], CPU)).starts_with("d_ref must hold the distances of at least 2"));
        assert!(err(&Tensor::zeros([3, 3], CPU)).starts_with("d_ref has median distance 0"));
        let d = Tensor::ones([3, 3], CPU);
        let _ = d.get(1).get(2).fill_(f64::INFINITY);
        assert_eq!(err(&d), "d_ref has a non-finite entry inf at (1, 2)");
        assert!(median_bandwidth_of(&p, euclidean_dist_matrix, 1).is_err());
    }

    #[test]
    fn tv_and_empirical_probs_known_values() {
        assert_eq!(empirical_probs(&[0, 1, 1, 3], 4), vec![0.25, 0.5, 0.0, 0.25]);
        assert_eq!(empirical_probs(&[], 2), vec![0.0, 0.0]);
        assert_eq!(tv_distance(&[0.5, 0.5], &[1.0, 0.0]).unwrap(), 0.5);
        assert_eq!(tv_distance(&[0.2, 0.3, 0.5], &[0.2, 0.3, 0.5]).unwrap(), 0.0);
        assert_eq!(tv_distance(&[1.0, 0.0], &[0.0, 1.0]).unwrap(), 1.0);
        assert!((tv_distance(&[0.1, 0.6, 0.3], &[0.3, 0.3, 0.4]).unwrap() - 0.3).abs() < 1e-15);
        assert_eq!(
            tv_distance(&[1.0], &[0.5, 0.5]).unwrap_err().to_string(),
            "p and q must have the same length, got 1 and 2"
        );
        assert!(tv_distance(&[f64::NAN, 1.0], &[0.5, 0.5]).unwrap_err().to_string().starts_with("p has a non-finite"));
    }

    #[test]
    #[should_panic(expected = "index 2 out of range for k = 2")]
    fn empirical_probs_panics_on_out_of_range_index() {
        empirical_probs(&[0, 2], 2);
    }

    #[test]
    fn upper_pair_enumerates_the_strict_upper_triangle() {
        let pairs: Vec<_> = (0..6).map(|k| upper_pair(4, k)).collect();
        assert_eq!(pairs, [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]);
    }
}
