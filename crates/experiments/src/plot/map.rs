//! The equal-area world map used for S^2 and SO(3) panels, rotation axis-angle, and the angle colour map.

use plotters::style::RGBColor;
use std::f64::consts::{FRAC_PI_2, PI, SQRT_2};

/// Half-width of the Hammer map: it spans x in [-2 sqrt 2, 2 sqrt 2].
pub(crate) const HAMMER_A: f64 = 2.0 * SQRT_2;
/// Half-height of the Hammer map: it spans y in [-sqrt 2, sqrt 2].
pub(crate) const HAMMER_B: f64 = SQRT_2;

/// Hammer projection of longitude `lon` in [-pi, pi] and latitude `lat` in [-pi/2, pi/2].
///
/// The image is the ellipse x^2 / 8 + y^2 / 2 <= 1, and the map is equal-area with unit area scale: the ellipse
/// has area 4 pi, the area of the unit sphere.
pub(crate) fn hammer(lon: f64, lat: f64) -> (f64, f64) {
    let (s_lat, c_lat) = lat.sin_cos();
    let (s_half, c_half) = (lon / 2.0).sin_cos();
    let d = (1.0 + c_lat * c_half).sqrt();
    (2.0 * SQRT_2 * c_lat * s_half / d, SQRT_2 * s_lat / d)
}

/// Longitude atan2(y, x) and latitude asin(z) of `p / |p|`; `None` when `p` is not finite or is zero.
pub(crate) fn lon_lat(p: [f64; 3]) -> Option<(f64, f64)> {
    let norm = (p[0] * p[0] + p[1] * p[1] + p[2] * p[2]).sqrt();
    if !norm.is_finite() || norm < 1e-12 {
        return None;
    }
    let z = (p[2] / norm).clamp(-1.0, 1.0);
    Some((p[1].atan2(p[0]), z.asin()))
}

/// The Hammer map of the direction of `p`, or `None` as for [`lon_lat`].
pub(crate) fn project(p: [f64; 3]) -> Option<(f64, f64)> {
    lon_lat(p).map(|(lon, lat)| hammer(lon, lat))
}

/// Polylines of the map: the graticule every 30 degrees (meridians, then parallels) without the outline.
pub(crate) fn graticule() -> Vec<Vec<(f64, f64)>> {
    let mut lines = Vec::new();
    for lon_deg in (-150..=150).step_by(30) {
        let lon = f64::from(lon_deg).to_radians();
        lines.push((-90..=90).map(|lat| hammer(lon, f64::from(lat).to_radians())).collect());
    }
    for lat_deg in (-60..=60).step_by(30) {
        let lat = f64::from(lat_deg).to_radians();
        lines.push((-180..=180).map(|lon| hammer(f64::from(lon).to_radians(), lat)).collect());
    }
    lines
}

/// The outline of the map, a closed polyline on the ellipse (the meridians at longitude +-180 degrees).
pub(crate) fn outline() -> Vec<(f64, f64)> {
    (0..=360).map(|k| f64::from(k).to_radians()).map(|t| (HAMMER_A * t.cos(), HAMMER_B * t.sin())).collect()
}

/// Maximum deviation from orthogonality, max |R R^T - I|, accepted for a rotation matrix.
pub(crate) const ORTHOGONALITY_TOL: f64 = 1e-3;

/// Whether `r` is finite, orthogonal within [`ORTHOGONALITY_TOL`] and has positive determinant.
pub(crate) fn is_rotation(r: &[[f64; 3]; 3]) -> bool {
    if r.iter().flatten().any(|v| !v.is_finite()) {
        return false;
    }
    for i in 0..3 {
        for j in 0..3 {
            let dot: f64 = (0..3).map(|k| r[i][k] * r[j][k]).sum();
            if (dot - if i == j { 1.0 } else { 0.0 }).abs() > ORTHOGONALITY_TOL {
                return false;
            }
        }
    }
    let det = r[0][0] * (r[1][1] * r[2][2] - r[1][2] * r[2][1]) - r[0][1] * (r[1][0] * r[2][2] - r[1][2] * r[2][0])
        + r[0][2] * (r[1][0] * r[2][1] - r[1][1] * r[2][0]);
    det > 0.0
}

/// Axis (unit vector) and angle in [0, pi] of the rotation `r` (row-major), so that `r` rotates by the angle about
/// the axis, counter-clockwise.
///
/// Small angles use the antisymmetric part, large ones the symmetric part (stable near pi, where the sign of the
/// axis follows the antisymmetric part and, at pi exactly, is chosen so that the largest component is positive).
/// For the identity, and angles below 1e-12, the axis is the z axis.
pub(crate) fn axis_angle(r: &[[f64; 3]; 3]) -> ([f64; 3], f64) {
    let cos = ((r[0][0] + r[1][1] + r[2][2] - 1.0) / 2.0).clamp(-1.0, 1.0);
    // v = 2 sin(angle) axis; atan2 keeps the angle accurate near 0 and pi, where acos(cos) is not.
    let v = [r[2][1] - r[1][2], r[0][2] - r[2][0], r[1][0] - r[0][1]];
    let v_norm = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
    let angle = (v_norm / 2.0).atan2(cos);
    if angle < 1e-12 || (v_norm == 0.0 && angle < FRAC_PI_2) {
        return ([0.0, 0.0, 1.0], angle);
    }
    if angle < FRAC_PI_2 {
        return ([v[0] / v_norm, v[1] / v_norm, v[2] / v_norm], angle);
    }
    // (R + R^T) / 2 - cos I = (1 - cos) axis axis^T: take its column with the largest diagonal entry.
    let b = |i: usize, j: usize| (r[i][j] + r[j][i]) / 2.0 - if i == j { cos } else { 0.0 };
    let k = (0..3).max_by(|&i, &j| b(i, i).total_cmp(&b(j, j))).unwrap_or(0);
    let col = [b(0, k), b(1, k), b(2, k)];
    let n = (col[0] * col[0] + col[1] * col[1] + col[2] * col[2]).sqrt();
    let mut axis = [col[0] / n, col[1] / n, col[2] / n];
    let dot = axis[0] * v[0] + axis[1] * v[1] + axis[2] * v[2];
    if dot < 0.0 || dot == 0.0 && axis[k] < 0.0 {
        axis = [-axis[0], -axis[1], -axis[2]];
    }
    (axis, angle)
}

/// Ten stops of matplotlib's viridis colour map, at 0, 1/9, ..., 1.
const VIRIDIS: [(u8, u8, u8); 10] = [
    (0x44, 0x01, 0x54),
    (0x48, 0x28, 0x78),
    (0x3e, 0x4a, 0x89),
    (0x31, 0x68, 0x8e),
    (0x26, 0x82, 0x8e),
    (0x1f, 0x9e, 0x89),
    (0x35, 0xb7, 0x79),
    (0x6d, 0xcd, 0x59),
    (0xb4, 0xde, 0x2c),
    (0xfd, 0xe7, 0x25),
];

/// The viridis colour map at `t`, clamped to [0, 1] (NaN counts as 0), interpolated linearly between ten stops.
pub(crate) fn viridis(t: f64) -> RGBColor {
    let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
    let pos = t * (VIRIDIS.len() - 1) as f64;
    let i = (pos.floor() as usize).min(VIRIDIS.len() - 2);
    let f = pos - i as f64;
    let (a, b) = (VIRIDIS[i], VIRIDIS[i + 1]);
    let mix = |x: u8, y: u8| (f64::from(x) + f * (f64::from(y) - f64::from(x))).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// The part of viridis used for angles: its pale yellow end is hard to see on white, so the ramp stops here.
pub(crate) const ANGLE_RAMP_END: f64 = 0.9;

/// Colour of a rotation angle in [0, pi]: viridis from 0 (angle 0) to [`ANGLE_RAMP_END`] (angle pi).
pub(crate) fn angle_colour(angle: f64) -> RGBColor {
    viridis(ANGLE_RAMP_END * angle / PI)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::{Rotation3, Unit, Vector3};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn uniform_sphere(rng: &mut ChaCha8Rng) -> (f64, f64) {
        let z: f64 = rng.random::<f64>() * 2.0 - 1.0;
        (rng.random::<f64>() * 2.0 * PI - PI, z.asin())
    }

    #[test]
    fn hammer_maps_the_sphere_into_the_ellipse_and_its_boundary_onto_it() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..10_000 {
            let (lon, lat) = uniform_sphere(&mut rng);
            let (x, y) = hammer(lon, lat);
            assert!(x * x / 8.0 + y * y / 2.0 <= 1.0 + 1e-12, "({lon}, {lat}) -> ({x}, {y})");
        }
        for k in -90..=90 {
            let (x, y) = hammer(PI, f64::from(k).to_radians());
            assert!((x * x / 8.0 + y * y / 2.0 - 1.0).abs() < 1e-12);
        }
        assert_eq!(hammer(0.0, 0.0), (0.0, 0.0));
        let (x, y) = hammer(0.0, FRAC_PI_2);
        assert!(x.abs() < 1e-12 && (y - HAMMER_B).abs() < 1e-12);
    }

    #[test]
    fn hammer_jacobian_is_the_sphere_area_element() {
        // |det d(x, y) / d(lon, lat)| = cos(lat): equal area with unit scale.
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let h = 1e-6;
        for _ in 0..1000 {
            let (lon, lat) = uniform_sphere(&mut rng);
            let (lon, lat) = (lon * 0.99, lat * 0.99);
            let (xa, ya) = hammer(lon + h, lat);
            let (xb, yb) = hammer(lon - h, lat);
            let (xc, yc) = hammer(lon, lat + h);
            let (xd, yd) = hammer(lon, lat - h);
            let det = ((xa - xb) * (yc - yd) - (xc - xd) * (ya - yb)) / (4.0 * h * h);
            assert!((det.abs() - lat.cos()).abs() < 1e-6, "det {det} vs cos {}", lat.cos());
        }
    }

    #[test]
    fn uniform_sphere_points_are_uniform_on_the_map() {
        let n = 400_000;
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (nx, ny) = (16usize, 8usize);
        let (cw, ch) = (2.0 * HAMMER_A / nx as f64, 2.0 * HAMMER_B / ny as f64);
        let mut counts = vec![0u32; nx * ny];
        for _ in 0..n {
            let (lon, lat) = uniform_sphere(&mut rng);
            let (x, y) = hammer(lon, lat);
            let i = (((x + HAMMER_A) / cw) as usize).min(nx - 1);
            let j = (((y + HAMMER_B) / ch) as usize).min(ny - 1);
            counts[j * nx + i] += 1;
        }
        let inside = |x: f64, y: f64| x * x / 8.0 + y * y / 2.0 <= 1.0;
        let mut n_cells = 0;
        for j in 0..ny {
            for i in 0..nx {
                let (x0, y0) = (-HAMMER_A + i as f64 * cw, -HAMMER_B + j as f64 * ch);
                if [(x0, y0), (x0 + cw, y0), (x0, y0 + ch), (x0 + cw, y0 + ch)].iter().all(|&(x, y)| inside(x, y)) {
                    n_cells += 1;
                    let expected = n as f64 * cw * ch / (4.0 * PI);
                    let got = f64::from(counts[j * nx + i]);
                    assert!((got - expected).abs() < 5.0 * expected.sqrt(), "cell ({i}, {j}): {got} vs {expected}");
                }
            }
        }
        assert!(n_cells >= 60, "{n_cells} cells inside");
    }

    #[test]
    fn lon_lat_normalises_and_rejects_bad_points() {
        let (lon, lat) = lon_lat([0.0, 2.0, 0.0]).unwrap();
        assert!((lon - FRAC_PI_2).abs() < 1e-15 && lat.abs() < 1e-15);
        let (_, lat) = lon_lat([0.0, 0.0, -3.0]).unwrap();
        assert!((lat + FRAC_PI_2).abs() < 1e-15);
        assert!(lon_lat([0.0; 3]).is_none());
        assert!(lon_lat([f64::NAN, 0.0, 1.0]).is_none());
        assert!(lon_lat([f64::INFINITY, 0.0, 1.0]).is_none());
    }

    fn rows(r: &Rotation3<f64>) -> [[f64; 3]; 3] {
        let m = r.matrix();
        [[m[(0, 0)], m[(0, 1)], m[(0, 2)]], [m[(1, 0)], m[(1, 1)], m[(1, 2)]], [m[(2, 0)], m[(2, 1)], m[(2, 2)]]]
    }

    #[test]
    fn axis_angle_recovers_the_rotation() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let mut angles: Vec<f64> = (0..2000).map(|_| rng.random::<f64>() * PI).collect();
        angles.extend([0.0, 1e-14, 1e-9, 1e-6, FRAC_PI_2, PI - 1e-6, PI - 1e-9, PI]);
        for angle in angles {
            let (lon, lat) = uniform_sphere(&mut rng);
            let a = Vector3::new(lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin());
            let r = rows(&Rotation3::from_axis_angle(&Unit::new_normalize(a), angle));
            assert!(is_rotation(&r));
            let (axis, got) = axis_angle(&r);
            assert!((got - angle).abs() < 1e-6, "angle {got} vs {angle}");
            let norm = (axis[0] * axis[0] + axis[1] * axis[1] + axis[2] * axis[2]).sqrt();
            assert!((norm - 1.0).abs() < 1e-12);
            let back = rows(&Rotation3::from_axis_angle(&Unit::new_normalize(Vector3::from(axis)), got));
            for (x, y) in back.iter().flatten().zip(r.iter().flatten()) {
                assert!((x - y).abs() < 1e-9, "angle {angle}: {back:?} vs {r:?}");
            }
            if angle > 1e-3 && angle < PI - 1e-3 {
                assert!((axis[0] - a[0]).abs() + (axis[1] - a[1]).abs() + (axis[2] - a[2]).abs() < 1e-9);
            }
        }
        assert_eq!(axis_angle(&[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), ([0.0, 0.0, 1.0], 0.0));
    }

    #[test]
    fn is_rotation_rejects_reflections_and_non_orthogonal_matrices() {
        assert!(!is_rotation(&[[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]));
        assert!(!is_rotation(&[[1.01, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]));
        assert!(!is_rotation(&[[f64::NAN, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]));
    }

    #[test]
    fn colour_map_endpoints_and_clamping() {
        assert_eq!(viridis(0.0), RGBColor(0x44, 0x01, 0x54));
        assert_eq!(viridis(1.0), RGBColor(0xfd, 0xe7, 0x25));
        assert_eq!(viridis(-1.0), viridis(0.0));
        assert_eq!(viridis(2.0), viridis(1.0));
        assert_eq!(viridis(f64::NAN), viridis(0.0));
        assert_eq!(viridis(5.0 / 9.0), RGBColor(0x1f, 0x9e, 0x89));
        assert_eq!(angle_colour(0.0), viridis(0.0));
        assert_eq!(angle_colour(PI), viridis(ANGLE_RAMP_END));
        // Monotone in lightness along the ramp (green channel grows).
        let greens: Vec<u8> = (0..=100).map(|k| angle_colour(PI * f64::from(k) / 100.0).1).collect();
        assert!(greens.windows(2).all(|w| w[0] <= w[1]));
    }
}
