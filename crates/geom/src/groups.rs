//! Finite subgroups of SO(3) as exact sets of rotation matrices, and the quotient geometry of SO(3)/G.
//!
//! A pose with a symmetry group G is only defined up to the *right* action R ~ R g, g in G: the symmetry
//! acts in the body frame (`shared/design/MATH.md` section 1).
//! On the quotient SO(3)/G this module provides
//! - the quotient distance d_G(R, Q) = min_{g in G} dist(R, Q g), with dist the rotation angle of R^T Q;
//! - the canonical representative of the coset R G: R g* with g* = argmax_{g in G} tr(R g), the element of
//!   the coset closest to the identity (ties go to the lowest index in [`SymmetryGroup::elements`]);
//! - orbits and uniformly random group elements, per point and batched on tensors.
//!
//! Every built-in group lists the identity first.
//! The cubic groups (T, O) are signed permutation matrices with integer entries; the cyclic, dihedral and
//! icosahedral groups have entries snapped to their exact values (0, ±1/2, ±1, ±φ/2, ±1/(2φ), ±√2/2, ±√3/2)
//! where they take one, so that every group is closed and orthonormal to about 1e-15.
//!
//! ```
//! use geom::SymmetryGroup;
//! use nalgebra::Matrix3;
//!
//! let o = SymmetryGroup::by_name("O").unwrap();
//! assert_eq!(o.order(), 24);
//! // A quarter turn about x is equivalent to the identity modulo the cube's rotations.
//! let r = Matrix3::new(1.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 1.0, 0.0);
//! assert!(o.quotient_dist(&r, &Matrix3::identity()) < 1e-12);
//! assert!((o.canonicalize(&r) - Matrix3::identity()).amax() < 1e-12);
//! ```

use crate::check::{assert_batch_shape, assert_finite, assert_same_shape, check_finite};
use crate::so3::{expm, project_to_so3, rotation_angle, rotation_angle_t};
use crate::{GeomError, Result};
use nalgebra::{Matrix3, Vector3};
use rand::Rng;
use tch::{Device, Kind, Tensor};

/// Largest `n` accepted by [`SymmetryGroup::cyclic`] and [`SymmetryGroup::dihedral`].
///
/// Every quotient operation costs O(order) per point and the batched ones build a `[B, order]` table, so a
/// larger `n` is almost certainly a configuration mistake.
pub const MAX_N: usize = 10_000;

/// Tolerance of [`SymmetryGroup::from_elements`] on |R^T R - I|_max and |det R - 1|.
pub const ROTATION_TOL: f64 = 1e-9;

/// Two matrices whose largest entry difference is at most this are treated as the same group element.
const MATCH_TOL: f64 = 1e-6;

/// Entries within this of an exact value are replaced by it.
const SNAP_TOL: f64 = 1e-10;

/// A finite subgroup G of SO(3), stored as its rotation matrices.
///
/// Built by [`SymmetryGroup::cyclic`], [`SymmetryGroup::dihedral`], [`SymmetryGroup::tetrahedral`],
/// [`SymmetryGroup::octahedral`], [`SymmetryGroup::icosahedral`], [`SymmetryGroup::by_name`] or
/// [`SymmetryGroup::from_elements`]; the last one checks the group axioms, the others hold by construction.
#[derive(Debug, Clone, PartialEq)]
pub struct SymmetryGroup {
    name: String,
    elements: Vec<Matrix3<f64>>,
}

impl SymmetryGroup {
    /// The cyclic group C_n of rotations by 2 pi k / n, k = 0..n, about the z axis (order n).
    ///
    /// Errors naming `n` unless 1 <= n <= [`MAX_N`]. C_1 is the trivial group.
    pub fn cyclic(n: usize) -> Result<Self> {
        check_n(n)?;
        let elements = (0..n).map(|k| rot_z(k, n)).collect();
        Ok(Self { name: format!("C{n}"), elements })
    }

    /// The dihedral group D_n (order 2n): C_n about z, then the n half-turns about the axes in the xy-plane
    /// at angles pi k / n, k = 0..n, from the x axis.
    ///
    /// Errors naming `n` unless 1 <= n <= [`MAX_N`].
    /// D_1 is accepted and is {I, half-turn about x}: a conjugate of C_2 whose axis is x instead of z.
    pub fn dihedral(n: usize) -> Result<Self> {
        check_n(n)?;
        let mut elements: Vec<Matrix3<f64>> = (0..n).map(|k| rot_z(k, n)).collect();
        // Half-turn about (cos phi, sin phi, 0) is 2 a a^T - I = Rz(2 phi) diag(1, -1, -1).
        let flip = Matrix3::from_diagonal(&Vector3::new(1.0, -1.0, -1.0));
        elements.extend((0..n).map(|k| rot_z(k, n) * flip));
        Ok(Self { name: format!("D{n}"), elements })
    }

    /// The tetrahedral group T (order 12): the rotations of the cube that map the tetrahedron with vertices
    /// (1,1,1), (1,-1,-1), (-1,1,-1), (-1,-1,1) to itself.
    ///
    /// These are the signed permutation matrices with an even permutation and an even number of minus signs:
    /// the identity, the three half-turns about the coordinate axes and the eight third-turns about the
    /// body diagonals. Entries are exact integers.
    pub fn tetrahedral() -> Self {
        let elements = signed_permutations().into_iter().filter(|(even, _)| *even).map(|(_, m)| m).collect();
        Self { name: "T".into(), elements }
    }

    /// The octahedral group O (order 24): the rotations of the cube, i.e. all signed permutation matrices
    /// with determinant +1. Entries are exact integers.
    pub fn octahedral() -> Self {
        let elements = signed_permutations().into_iter().map(|(_, m)| m).collect();
        Self { name: "O".into(), elements }
    }

    /// The icosahedral group I (order 60): the rotations of the icosahedron with vertices the cyclic
    /// permutations of (0, ±1, ±φ), φ the golden ratio.
    ///
    /// Generated by closure from the third-turn (x, y, z) -> (z, x, y) about (1, 1, 1) and the fifth-turn
    /// about the vertex (0, 1, φ); it contains [`SymmetryGroup::tetrahedral`] as a subgroup.
    pub fn icosahedral() -> Self {
        let phi = (1.0 + 5f64.sqrt()) / 2.0;
        let axis = Vector3::new(0.0, 1.0, phi).normalize();
        let fifth = snap(&project_to_so3(&expm(&(axis * (2.0 * std::f64::consts::PI / 5.0)))));
        let third = Matrix3::new(0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0);
        let elements = closure(&[third, fifth], 60);
        assert_eq!(
            elements.len(),
            60,
            "icosahedral: closure of the generators has {} elements, expected 60",
            elements.len()
        );
        Self { name: "I".into(), elements }
    }

    /// A group from an explicit list of rotations, kept in the given order.
    ///
    /// Checks, in this order, with errors naming `elements` (or `elements[i]`) and the problem: the list is
    /// non-empty; every entry is finite; every matrix is a rotation (|R^T R - I|_max and |det R - 1| at most
    /// [`ROTATION_TOL`]); no two elements coincide; the identity is present; every product is in the set.
    /// Matrices closer than 1e-6 (largest entry difference) count as equal. The closure check costs
    /// O(order^3). The group is named `custom(<order>)`.
    pub fn from_elements(elements: Vec<Matrix3<f64>>) -> Result<Self> {
        let n = elements.len();
        if n == 0 {
            return Err(GeomError::invalid("elements", "an empty list", "a non-empty list of rotation matrices"));
        }
        for (i, g) in elements.iter().enumerate() {
            let arg = format!("elements[{i}]");
            check_finite(&arg, g.as_slice())?;
            let orth = (g.transpose() * g - Matrix3::identity()).amax();
            let det = g.determinant();
            if orth > ROTATION_TOL || (det - 1.0).abs() > ROTATION_TOL {
                return Err(GeomError::invalid(
                    &arg,
                    format!("a matrix with |R^T R - I|_max = {orth:.3e} and det = {det:.6}"),
                    &format!("a rotation matrix (R^T R = I and det R = 1 within {ROTATION_TOL:.0e})"),
                ));
            }
        }
        for i in 0..n {
            if let Some(j) = (i + 1..n).find(|&j| same(&elements[i], &elements[j])) {
                return Err(GeomError::invalid(
                    "elements",
                    format!("a list in which elements[{i}] and elements[{j}] coincide"),
                    "distinct rotations",
                ));
            }
        }
        if find(&elements, &Matrix3::identity()).is_none() {
            return Err(GeomError::invalid(
                "elements",
                "a list without the identity",
                "a list containing the identity",
            ));
        }
        for i in 0..n {
            for j in 0..n {
                if find(&elements, &(elements[i] * elements[j])).is_none() {
                    return Err(GeomError::invalid(
                        "elements",
                        format!("a list in which elements[{i}] * elements[{j}] is not in the list"),
                        "a list closed under multiplication",
                    ));
                }
            }
        }
        Ok(Self { name: format!("custom({n})"), elements })
    }

    /// Parses a Schoenflies name: `C<n>` or `D<n>` with 1 <= n <= [`MAX_N`] (e.g. `C4`, `D3`), `T`, `O` or
    /// `I`. Case-sensitive; surrounding whitespace is ignored.
    ///
    /// Errors naming `name` and listing the allowed names. `SymmetryGroup::by_name(g.name())` rebuilds every
    /// built-in group.
    pub fn by_name(name: &str) -> Result<Self> {
        let err = || {
            GeomError::invalid(
                "name",
                format!("{name:?}"),
                &format!("one of C<n>, D<n> with n in 1..={MAX_N} (e.g. C4, D3), T, O, I"),
            )
        };
        let s = name.trim();
        match s {
            "T" => return Ok(Self::tetrahedral()),
            "O" => return Ok(Self::octahedral()),
            "I" => return Ok(Self::icosahedral()),
            _ => {}
        }
        let digits = s.get(1..).filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())).ok_or_else(err)?;
        let n: usize = digits.parse().map_err(|_| err())?;
        match &s[..1] {
            "C" => Self::cyclic(n).map_err(|_| err()),
            "D" => Self::dihedral(n).map_err(|_| err()),
            _ => Err(err()),
        }
    }

    /// The group's name: `C<n>`, `D<n>`, `T`, `O`, `I`, or `custom(<order>)` for [`SymmetryGroup::from_elements`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The rotation matrices, identity first for the built-in groups.
    pub fn elements(&self) -> &[Matrix3<f64>] {
        &self.elements
    }

    /// The number of elements |G|.
    pub fn order(&self) -> usize {
        self.elements.len()
    }

    /// Index of the element within 1e-6 (largest entry difference) of `m`, if any.
    pub fn index_of(&self, m: &Matrix3<f64>) -> Option<usize> {
        find(&self.elements, m)
    }

    /// Index of g* = argmax_{g in G} tr(R g), the lowest index among exact ties.
    ///
    /// Panics naming `r` when it has a non-finite entry.
    pub fn canonical_index(&self, r: &Matrix3<f64>) -> usize {
        assert_finite("canonical_index", "r", r.as_slice());
        let mut best = (0, f64::NEG_INFINITY);
        for (k, g) in self.elements.iter().enumerate() {
            let tr = r.component_mul(&g.transpose()).sum();
            if tr > best.1 {
                best = (k, tr);
            }
        }
        best.0
    }

    /// The canonical representative R g* of the coset R G, g* = argmax_{g in G} tr(R g): the element of the
    /// coset closest to the identity (ties: lowest index). Constant on cosets: canon(R g) = canon(R).
    ///
    /// Panics naming `r` when it has a non-finite entry.
    pub fn canonicalize(&self, r: &Matrix3<f64>) -> Matrix3<f64> {
        r * self.elements[self.canonical_index(r)]
    }

    /// The quotient distance d_G(R, Q) = min_{g in G} dist(R, Q g) in [0, pi], with dist the rotation angle
    /// of R^T Q. Symmetric, invariant under R -> R g and Q -> Q h, and at most dist(R, Q).
    ///
    /// Panics naming the argument when `r` or `q` has a non-finite entry.
    pub fn quotient_dist(&self, r: &Matrix3<f64>, q: &Matrix3<f64>) -> f64 {
        assert_finite("quotient_dist", "r", r.as_slice());
        assert_finite("quotient_dist", "q", q.as_slice());
        let m = r.transpose() * q;
        self.elements.iter().map(|g| rotation_angle(&(m * g))).fold(f64::INFINITY, f64::min)
    }

    /// The orbit {R g : g in G}, in the order of [`SymmetryGroup::elements`].
    pub fn orbit(&self, r: &Matrix3<f64>) -> Vec<Matrix3<f64>> {
        self.elements.iter().map(|g| r * g).collect()
    }

    /// A uniformly random element of G.
    pub fn random_element<R: Rng + ?Sized>(&self, rng: &mut R) -> Matrix3<f64> {
        self.elements[rng.random_range(0..self.order())]
    }

    /// The elements as a tensor of shape `[G, 3, 3]` (row-major matrices), of dtype `kind` on `device`.
    pub fn elements_t(&self, kind: Kind, device: Device) -> Tensor {
        let flat: Vec<f64> = self.elements.iter().flat_map(|g| (0..9).map(move |k| g[(k / 3, k % 3)])).collect();
        Tensor::from_slice(&flat).reshape([self.order() as i64, 3, 3]).to_kind(kind).to_device(device)
    }

    /// Indices of g* = argmax_{g in G} tr(R g) for a batch, `r: [B, 3, 3]` -> `[B]` of Kind::Int64 on the
    /// device of `r`. Not differentiable (an index); ties go to the lowest index.
    ///
    /// Panics unless `r` has shape `[B, 3, 3]` and a floating-point dtype.
    pub fn canonical_index_t(&self, r: &Tensor) -> Tensor {
        assert_batch_shape("canonical_index_t", "r", r, &[3, 3]);
        tch::no_grad(|| self.traces_t(r).argmax(1, false))
    }

    /// Batched canonical representative, `r: [B, 3, 3]` -> `[B, 3, 3]`, same dtype and device; the per-point
    /// twin is [`SymmetryGroup::canonicalize`].
    ///
    /// Differentiable in `r` (the selected element is a constant). Panics unless `r` has shape `[B, 3, 3]`.
    pub fn canonicalize_t(&self, r: &Tensor) -> Tensor {
        let idx = self.canonical_index_t(r);
        r.matmul(&self.elements_t(r.kind(), r.device()).index_select(0, &idx))
    }

    /// Batched quotient distance, `r, q: [B, 3, 3]` -> `[B]`, same dtype and device; the per-point twin is
    /// [`SymmetryGroup::quotient_dist`].
    ///
    /// The minimising element is chosen by the largest tr(R^T Q g) (the smallest angle) and the gradient
    /// flows through the angle of that element only, so it stays finite wherever
    /// [`crate::so3::rotation_angle_t`] does. Panics unless both have shape `[B, 3, 3]`.
    pub fn quotient_dist_t(&self, r: &Tensor, q: &Tensor) -> Tensor {
        assert_batch_shape("quotient_dist_t", "r", r, &[3, 3]);
        assert_batch_shape("quotient_dist_t", "q", q, &[3, 3]);
        assert_same_shape("quotient_dist_t", r, q);
        let m = r.transpose(1, 2).matmul(q);
        let idx = tch::no_grad(|| self.traces_t(&m).argmax(1, false));
        let g = self.elements_t(m.kind(), m.device()).index_select(0, &idx);
        rotation_angle_t(&m.matmul(&g))
    }

    /// Each row times an independent uniformly random group element, `r: [B, 3, 3]` -> `[B, 3, 3]`, same
    /// dtype and device, drawn with libtorch's generator (seed it with `tch::manual_seed`).
    ///
    /// This is the G-symmetrisation of a batch of poses. Panics unless `r` has shape `[B, 3, 3]`.
    pub fn random_orbit_t(&self, r: &Tensor) -> Tensor {
        assert_batch_shape("random_orbit_t", "r", r, &[3, 3]);
        let idx = Tensor::randint(self.order() as i64, [r.size()[0]], (Kind::Int64, r.device()));
        r.matmul(&self.elements_t(r.kind(), r.device()).index_select(0, &idx))
    }

    /// tr(M g) for every row of `m: [B, 3, 3]` and every g: `[B, G]`.
    fn traces_t(&self, m: &Tensor) -> Tensor {
        let b = m.size()[0];
        let g = self.order() as i64;
        // tr(M g) = sum_ij M_ij g_ji = <vec(M), vec(g^T)>.
        let gt = self.elements_t(m.kind(), m.device()).transpose(1, 2).reshape([g, 9]);
        m.reshape([b, 9]).matmul(&gt.transpose(0, 1))
    }
}

fn check_n(n: usize) -> Result<()> {
    if (1..=MAX_N).contains(&n) {
        Ok(())
    } else {
        Err(GeomError::invalid("n", n, &format!("an integer in 1..={MAX_N}")))
    }
}

/// Rotation by 2 pi k / n about z, entries snapped.
fn rot_z(k: usize, n: usize) -> Matrix3<f64> {
    let a = 2.0 * std::f64::consts::PI * k as f64 / n as f64;
    let (s, c) = a.sin_cos();
    snap(&Matrix3::new(c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0))
}

/// All 24 signed permutation matrices with determinant +1, identity first, each with a flag telling
/// whether its permutation is even (those 12 form T).
fn signed_permutations() -> Vec<(bool, Matrix3<f64>)> {
    const PERMS: [([usize; 3], bool); 6] = [
        ([0, 1, 2], true),
        ([1, 2, 0], true),
        ([2, 0, 1], true),
        ([0, 2, 1], false),
        ([2, 1, 0], false),
        ([1, 0, 2], false),
    ];
    let mut out = Vec::with_capacity(24);
    for (perm, even) in PERMS {
        for bits in 0..8u32 {
            let mut m = Matrix3::zeros();
            for i in 0..3 {
                m[(i, perm[i])] = if (bits >> i) & 1 == 1 { -1.0 } else { 1.0 };
            }
            if m.determinant() > 0.0 {
                out.push((even, m));
            }
        }
    }
    out
}

/// The group generated by `gens`: breadth-first products from the identity, each re-orthonormalised and
/// snapped; stops early (returning what it has) past `max_order` elements.
fn closure(gens: &[Matrix3<f64>], max_order: usize) -> Vec<Matrix3<f64>> {
    let mut elements = vec![Matrix3::identity()];
    let mut next = 0;
    while next < elements.len() {
        for g in gens {
            let p = snap(&project_to_so3(&(elements[next] * g)));
            if find(&elements, &p).is_none() {
                elements.push(p);
                if elements.len() > max_order {
                    return elements;
                }
            }
        }
        next += 1;
    }
    elements
}

fn same(a: &Matrix3<f64>, b: &Matrix3<f64>) -> bool {
    (a - b).amax() <= MATCH_TOL
}

fn find(elements: &[Matrix3<f64>], m: &Matrix3<f64>) -> Option<usize> {
    elements.iter().position(|g| same(g, m))
}

/// Replaces every entry within [`SNAP_TOL`] of an exact value that entries of the built-in groups take.
fn snap(m: &Matrix3<f64>) -> Matrix3<f64> {
    let phi = (1.0 + 5f64.sqrt()) / 2.0;
    let exact = [0.0, 0.5, 1.0, phi / 2.0, 0.5 / phi, std::f64::consts::FRAC_1_SQRT_2, 3f64.sqrt() / 2.0];
    m.map(|x| match exact.iter().find(|&&e| (x.abs() - e).abs() <= SNAP_TOL) {
        // A clean +0.0 rather than -0.0.
        Some(&e) => {
            if e > 0.0 {
                e.copysign(x)
            } else {
                0.0
            }
        }
        None => x,
    })
}
