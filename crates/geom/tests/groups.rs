//! Finite subgroups of SO(3): group axioms, canonical representatives, the quotient distance, and agreement
//! of the batched tensor functions with their per-point twins in Double precision.

use geom::groups::MAX_N;
use geom::so3::{quaternion_to_matrix, rotation_angle};
use geom::{GeomError, SymmetryGroup};
use nalgebra::{Matrix3, Vector4};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use std::sync::LazyLock;
use tch::{Device, Kind, Tensor};

const NAMES: [&str; 14] = ["C1", "C2", "C3", "C4", "C7", "C12", "D1", "D2", "D3", "D6", "D12", "T", "O", "I"];

static GROUPS: LazyLock<Vec<SymmetryGroup>> =
    LazyLock::new(|| NAMES.iter().map(|n| SymmetryGroup::by_name(n).unwrap()).collect());

/// A Haar-uniform rotation: a normalised standard Gaussian quaternion.
fn uniform_rotation<R: Rng>(rng: &mut R) -> Matrix3<f64> {
    let q = Vector4::from_fn(|_, _| rng.sample::<f64, _>(StandardNormal));
    quaternion_to_matrix(&q.normalize())
}

/// Uniform rotations from rand_chacha seeds drawn by proptest.
fn rotation() -> impl Strategy<Value = Matrix3<f64>> {
    any::<u64>().prop_map(|seed| uniform_rotation(&mut ChaCha8Rng::seed_from_u64(seed)))
}

fn dist(r: &Matrix3<f64>, q: &Matrix3<f64>) -> f64 {
    rotation_angle(&(r.transpose() * q))
}

fn to_tensor(ms: &[Matrix3<f64>]) -> Tensor {
    let flat: Vec<f64> = ms.iter().flat_map(|m| (0..9).map(move |k| m[(k / 3, k % 3)])).collect();
    Tensor::from_slice(&flat).reshape([ms.len() as i64, 3, 3])
}

fn from_tensor(t: &Tensor) -> Vec<Matrix3<f64>> {
    let v = Vec::<f64>::try_from(t.to_kind(Kind::Double).flatten(0, -1)).unwrap();
    v.chunks(9).map(Matrix3::from_row_slice).collect()
}

fn to_vec(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(Kind::Double).flatten(0, -1)).unwrap()
}

fn trace_with(r: &Matrix3<f64>, g: &Matrix3<f64>) -> f64 {
    (r * g).trace()
}

fn invalid_name(e: &GeomError) -> &str {
    match e {
        GeomError::InvalidParameter { name, .. } => name,
        other => panic!("expected InvalidParameter, got {other:?}"),
    }
}

#[test]
fn orders_and_names() {
    for n in 1..=13 {
        let c = SymmetryGroup::cyclic(n).unwrap();
        assert_eq!((c.order(), c.name()), (n, format!("C{n}").as_str()));
        let d = SymmetryGroup::dihedral(n).unwrap();
        assert_eq!((d.order(), d.name()), (2 * n, format!("D{n}").as_str()));
    }
    assert_eq!(SymmetryGroup::tetrahedral().order(), 12);
    assert_eq!(SymmetryGroup::octahedral().order(), 24);
    assert_eq!(SymmetryGroup::icosahedral().order(), 60);
    for g in GROUPS.iter() {
        assert_eq!(g.elements().len(), g.order());
        assert_eq!(&SymmetryGroup::by_name(g.name()).unwrap(), g, "by_name(name()) round trip for {}", g.name());
    }
}

#[test]
fn every_element_is_a_rotation_and_identity_comes_first() {
    for g in GROUPS.iter() {
        assert_eq!(g.elements()[0], Matrix3::identity(), "{}: identity first", g.name());
        for (i, m) in g.elements().iter().enumerate() {
            let orth = (m.transpose() * m - Matrix3::identity()).amax();
            assert!(orth <= 1e-12, "{}[{i}]: |R^T R - I| = {orth:e}", g.name());
            assert!((m.determinant() - 1.0).abs() <= 1e-12, "{}[{i}]: det = {}", g.name(), m.determinant());
        }
    }
}

#[test]
fn groups_are_closed_without_duplicates() {
    for g in GROUPS.iter() {
        let els = g.elements();
        for i in 0..els.len() {
            for j in i + 1..els.len() {
                assert!((els[i] - els[j]).amax() > 1e-3, "{}: elements {i} and {j} coincide", g.name());
            }
        }
        for (i, a) in els.iter().enumerate() {
            for (j, b) in els.iter().enumerate() {
                let p = a * b;
                let err = els.iter().map(|c| (p - c).amax()).fold(f64::INFINITY, f64::min);
                assert!(err <= 1e-12, "{}: elements[{i}] * elements[{j}] is {err:e} from the set", g.name());
            }
            assert!(g.index_of(&a.transpose()).is_some(), "{}: inverse of element {i} missing", g.name());
        }
    }
}

/// (angle in units of pi/30, number of elements with that rotation angle), sorted by angle.
fn angle_histogram(g: &SymmetryGroup) -> Vec<(u32, usize)> {
    let mut hist: Vec<(u32, usize)> = Vec::new();
    for m in g.elements() {
        // Angles of the polyhedral groups are multiples of 2 pi / 60 (pi/30): 0, 2pi/5, pi/2, 2pi/3, 4pi/5, pi.
        let k = (rotation_angle(m) / (std::f64::consts::PI / 30.0)).round() as u32;
        match hist.iter_mut().find(|(a, _)| *a == k) {
            Some(e) => e.1 += 1,
            None => hist.push((k, 1)),
        }
    }
    hist.sort();
    hist
}

#[test]
fn polyhedral_groups_have_the_textbook_conjugacy_classes() {
    // T: identity, 3 half-turns, 8 third-turns.
    assert_eq!(angle_histogram(&SymmetryGroup::tetrahedral()), vec![(0, 1), (20, 8), (30, 3)]);
    // O: identity, 6 quarter-turns, 8 third-turns, 3 + 6 half-turns.
    assert_eq!(angle_histogram(&SymmetryGroup::octahedral()), vec![(0, 1), (15, 6), (20, 8), (30, 9)]);
    // I: identity, 12 fifth-turns, 20 third-turns, 12 two-fifth-turns, 15 half-turns.
    assert_eq!(angle_histogram(&SymmetryGroup::icosahedral()), vec![(0, 1), (12, 12), (20, 20), (24, 12), (30, 15)]);
}

#[test]
fn tetrahedral_is_a_subgroup_of_octahedral_and_icosahedral() {
    let t = SymmetryGroup::tetrahedral();
    for big in [SymmetryGroup::octahedral(), SymmetryGroup::icosahedral()] {
        for m in t.elements() {
            assert!(big.index_of(m).is_some(), "T element {m} missing from {}", big.name());
        }
    }
    for m in SymmetryGroup::octahedral().elements() {
        assert!(m.iter().all(|x| *x == x.round()), "octahedral entries are exact integers: {m}");
    }
}

#[test]
fn from_elements_accepts_groups_and_names_each_problem() {
    for g in GROUPS.iter() {
        let h = SymmetryGroup::from_elements(g.elements().to_vec()).unwrap();
        assert_eq!(h.order(), g.order());
        assert_eq!(h.name(), format!("custom({})", g.order()));
    }
    let quarter = SymmetryGroup::cyclic(4).unwrap().elements()[1];
    let reflection = Matrix3::from_diagonal(&nalgebra::Vector3::new(1.0, 1.0, -1.0));
    let scaled = Matrix3::identity() * 2.0;
    let mut nan = Matrix3::identity();
    nan[(0, 1)] = f64::NAN;
    let cases: Vec<(Vec<Matrix3<f64>>, &str)> = vec![
        (vec![], "empty"),
        (vec![Matrix3::identity(), nan], "elements[1]"),
        (vec![Matrix3::identity(), reflection], "elements[1]"),
        (vec![scaled], "elements[0]"),
        (vec![Matrix3::identity(), Matrix3::identity()], "coincide"),
        (vec![quarter * quarter], "identity"),
        (vec![Matrix3::identity(), quarter], "is not in the list"),
    ];
    for (els, needle) in cases {
        let err = SymmetryGroup::from_elements(els).unwrap_err();
        assert!(err.to_string().contains(needle), "error {err} should mention {needle}");
    }
}

#[test]
fn bad_parameters_name_n() {
    for e in [
        SymmetryGroup::cyclic(0).unwrap_err(),
        SymmetryGroup::dihedral(0).unwrap_err(),
        SymmetryGroup::cyclic(MAX_N + 1).unwrap_err(),
        SymmetryGroup::dihedral(MAX_N + 1).unwrap_err(),
    ] {
        assert_eq!(invalid_name(&e), "n");
    }
    assert_eq!(SymmetryGroup::dihedral(1).unwrap().order(), 2);
}

#[test]
fn by_name_parses_and_lists_the_allowed_names() {
    for (name, order) in [("C4", 4), ("D3", 6), ("T", 12), ("O", 24), ("I", 60), (" C1 ", 1), ("D10", 20)] {
        assert_eq!(SymmetryGroup::by_name(name).unwrap().order(), order, "{name}");
    }
    for bad in
        ["", "X", "C", "D", "C0", "D0", "Cx", "C-1", "C+4", "c4", "t", "Ix", "O2", "C4.5", "C99999999999999999999999"]
    {
        let e = SymmetryGroup::by_name(bad).unwrap_err();
        assert_eq!(invalid_name(&e), "name", "{bad}");
        let msg = e.to_string();
        assert!(msg.contains("C<n>") && msg.contains("D<n>") && msg.contains("T, O, I"), "{bad}: {msg}");
    }
}

#[test]
fn random_element_is_uniform_over_the_group() {
    let g = SymmetryGroup::cyclic(4).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut counts = [0usize; 4];
    for _ in 0..4000 {
        counts[g.index_of(&g.random_element(&mut rng)).expect("random_element is in the group")] += 1;
    }
    assert!(counts.iter().all(|&c| (850..1150).contains(&c)), "counts {counts:?}");
}

#[test]
fn elements_t_matches_elements_row_major() {
    for g in GROUPS.iter() {
        let t = g.elements_t(Kind::Double, Device::Cpu);
        assert_eq!(t.size(), vec![g.order() as i64, 3, 3]);
        assert_eq!(from_tensor(&t), g.elements().to_vec(), "{}", g.name());
        assert_eq!(g.elements_t(Kind::Float, Device::Cpu).kind(), Kind::Float);
    }
}

#[test]
fn random_orbit_t_stays_in_the_orbit_and_follows_the_seed() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let rs: Vec<Matrix3<f64>> = (0..64).map(|_| uniform_rotation(&mut rng)).collect();
    let r = to_tensor(&rs);
    for g in GROUPS.iter() {
        tch::manual_seed(3);
        let a = g.random_orbit_t(&r);
        tch::manual_seed(3);
        let b = g.random_orbit_t(&r);
        assert_eq!(to_vec(&a), to_vec(&b), "{}: same seed, same draw", g.name());
        assert_eq!(a.size(), vec![64, 3, 3]);
        for (ri, ai) in rs.iter().zip(from_tensor(&a)) {
            assert!(g.index_of(&(ri.transpose() * ai)).is_some(), "{}: row left its orbit", g.name());
        }
        let f = g.random_orbit_t(&r.to_kind(Kind::Float));
        assert_eq!(f.kind(), Kind::Float);
    }
    // With enough rows every element of a small group shows up.
    let c3 = SymmetryGroup::cyclic(3).unwrap();
    let hits: std::collections::HashSet<usize> =
        from_tensor(&c3.random_orbit_t(&to_tensor(&[Matrix3::identity(); 300])))
            .iter()
            .map(|m| c3.index_of(m).unwrap())
            .collect();
    assert_eq!(hits.len(), 3);
}

#[test]
fn batched_functions_accept_float_and_empty_batches() {
    let o = SymmetryGroup::octahedral();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let rs: Vec<Matrix3<f64>> = (0..8).map(|_| uniform_rotation(&mut rng)).collect();
    let qs: Vec<Matrix3<f64>> = (0..8).map(|_| uniform_rotation(&mut rng)).collect();
    let (r, q) = (to_tensor(&rs).to_kind(Kind::Float), to_tensor(&qs).to_kind(Kind::Float));
    let d = o.quotient_dist_t(&r, &q);
    assert_eq!((d.size(), d.kind()), (vec![8], Kind::Float));
    for (i, di) in to_vec(&d).iter().enumerate() {
        assert!((di - o.quotient_dist(&rs[i], &qs[i])).abs() < 1e-4);
    }
    assert_eq!(o.canonicalize_t(&r).kind(), Kind::Float);
    let empty = Tensor::zeros([0, 3, 3], (Kind::Double, Device::Cpu));
    assert_eq!(o.quotient_dist_t(&empty, &empty).size(), vec![0]);
    assert_eq!(o.canonicalize_t(&empty).size(), vec![0, 3, 3]);
    assert_eq!(o.random_orbit_t(&empty).size(), vec![0, 3, 3]);
}

#[test]
fn quotient_dist_t_has_finite_gradients() {
    let i = SymmetryGroup::icosahedral();
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let rs: Vec<Matrix3<f64>> = (0..16).map(|_| uniform_rotation(&mut rng)).collect();
    // Generic pairs, and orbit mates (quotient distance 0).
    let mut qs: Vec<Matrix3<f64>> = (0..8).map(|_| uniform_rotation(&mut rng)).collect();
    qs.extend((8..16).map(|k| rs[k] * i.elements()[k]));
    let r = to_tensor(&rs).set_requires_grad(true);
    let d = i.quotient_dist_t(&r, &to_tensor(&qs));
    d.sum(Kind::Double).backward();
    let grad = to_vec(&r.grad());
    assert!(grad.iter().all(|x| x.is_finite()), "non-finite gradient {grad:?}");
    assert!(to_vec(&d)[8..].iter().all(|x| x.abs() < 1e-7));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn canonical_representative_is_constant_on_cosets_and_closest_to_identity(r in rotation()) {
        for g in GROUPS.iter() {
            let c = g.canonicalize(&r);
            prop_assert!(g.index_of(&(r.transpose() * c)).is_some(), "{}: canon(R) is not in the orbit of R", g.name());
            for (k, h) in g.elements().iter().enumerate() {
                let ch = g.canonicalize(&(r * h));
                prop_assert!((ch - c).amax() < 1e-10, "{}: canon(R g_{k}) != canon(R)", g.name());
                let maximal = c.trace() >= trace_with(&r, h) - 1e-12;
                prop_assert!(maximal, "{}: canon(R) does not maximise the trace", g.name());
            }
            let to_id = g.quotient_dist(&r, &Matrix3::identity());
            let closest = (rotation_angle(&c) - to_id).abs() < 1e-9;
            prop_assert!(closest, "{}: canon(R) is not the coset element closest to I", g.name());
        }
    }

    #[test]
    fn quotient_dist_is_a_g_invariant_metric_below_dist(
        r in rotation(),
        q in rotation(),
        p in rotation(),
        seed in any::<u64>(),
    ) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for g in GROUPS.iter() {
            let d = g.quotient_dist(&r, &q);
            let (a, b) = (g.random_element(&mut rng), g.random_element(&mut rng));
            prop_assert!((0.0..=std::f64::consts::PI).contains(&d));
            prop_assert!((d - g.quotient_dist(&q, &r)).abs() < 1e-12, "{}: not symmetric", g.name());
            prop_assert!(g.quotient_dist(&r, &(r * a)) < 1e-9, "{}: orbit mates not at distance 0", g.name());
            prop_assert!((d - g.quotient_dist(&(r * a), &(q * b))).abs() < 1e-9, "{}: not G-invariant", g.name());
            prop_assert!(d <= dist(&r, &q) + 1e-12, "{}: larger than dist", g.name());
            let via_p = g.quotient_dist(&r, &p) + g.quotient_dist(&p, &q);
            prop_assert!(d <= via_p + 1e-9, "{}: triangle inequality", g.name());
            let orbit = g.orbit(&q);
            prop_assert_eq!(orbit.len(), g.order());
            let min_over_orbit = orbit.iter().map(|qg| dist(&r, qg)).fold(f64::INFINITY, f64::min);
            prop_assert!((d - min_over_orbit).abs() < 1e-12);
        }
    }

    #[test]
    fn batched_agrees_with_per_point_in_double(seeds in prop::collection::vec(any::<u64>(), 1..12)) {
        let seeded = |s: u64| uniform_rotation(&mut ChaCha8Rng::seed_from_u64(s));
        let rs: Vec<Matrix3<f64>> = seeds.iter().map(|&s| seeded(s)).collect();
        let qs: Vec<Matrix3<f64>> = seeds.iter().map(|&s| seeded(s ^ 0x9e37_79b9_7f4a_7c15)).collect();
        let (r, q) = (to_tensor(&rs), to_tensor(&qs));
        for g in GROUPS.iter() {
            let d = to_vec(&g.quotient_dist_t(&r, &q));
            let c = from_tensor(&g.canonicalize_t(&r));
            let idx = Vec::<i64>::try_from(g.canonical_index_t(&r)).unwrap();
            for i in 0..rs.len() {
                let err = (d[i] - g.quotient_dist(&rs[i], &qs[i])).abs();
                prop_assert!(err < 1e-10, "{}: quotient_dist row {i} off by {err:e}", g.name());
                let c_ref = g.canonicalize(&rs[i]);
                // Equal, or a tie between two elements of equal trace broken differently by rounding.
                let tie = (c[i].trace() - c_ref.trace()).abs() < 1e-12;
                prop_assert!((c[i] - c_ref).amax() < 1e-12 || tie, "{}: canonicalize row {i}", g.name());
                let same_index = idx[i] as usize == g.canonical_index(&rs[i]);
                prop_assert!(same_index || tie, "{}: canonical_index row {i}", g.name());
            }
        }
    }
}
