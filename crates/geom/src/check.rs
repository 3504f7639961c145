//! Input checks shared by every manifold: finiteness, shapes and membership, with errors that name the
//! argument and the first bad row.

use crate::{GeomError, Result};
use tch::{Kind, Tensor};

/// Panics with a message naming `op`, `arg` and the coordinate when `values` holds a NaN or infinity.
///
/// Per-point operations call this so that nothing silently returns NaN.
#[track_caller]
pub fn assert_finite(op: &str, arg: &str, values: &[f64]) {
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        panic!("{op}: argument `{arg}` has non-finite coordinate {i} ({})", values[i]);
    }
}

/// Errors naming `arg` and the coordinate when `values` holds a NaN or infinity.
pub fn check_finite(arg: &str, values: &[f64]) -> Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(GeomError::NonFinite { arg: arg.to_string(), location: format!("coordinate {i}") }),
        None => Ok(()),
    }
}

/// Errors unless `x` has shape `[B, ..point_shape]` for some B.
pub fn check_batch_shape(arg: &str, x: &Tensor, point_shape: &[i64]) -> Result<()> {
    let size = x.size();
    if size.len() != point_shape.len() + 1 || size[1..] != *point_shape {
        return Err(GeomError::Shape {
            arg: arg.to_string(),
            expected: format!("[B, {}]", point_shape.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ")),
            got: format!("{size:?}"),
        });
    }
    if !matches!(x.kind(), Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16) {
        return Err(GeomError::Shape {
            arg: arg.to_string(),
            expected: "a floating-point dtype".into(),
            got: format!("{:?}", x.kind()),
        });
    }
    Ok(())
}

/// Panics naming `op` and `arg` unless `x` has shape `[B, ..point_shape]`.
#[track_caller]
pub fn assert_batch_shape(op: &str, arg: &str, x: &Tensor, point_shape: &[i64]) {
    if let Err(e) = check_batch_shape(arg, x, point_shape) {
        panic!("{op}: {e}");
    }
}

/// Panics naming `op` unless `x` and `y` have the same shape.
#[track_caller]
pub fn assert_same_shape(op: &str, x: &Tensor, y: &Tensor) {
    let (a, b) = (x.size(), y.size());
    assert!(a == b, "{op}: arguments have shapes {a:?} and {b:?}, expected equal shapes");
}

/// Errors naming `arg` and the first row holding a NaN or infinity, for a batch `[B, ..]`.
pub fn check_batch_finite(arg: &str, x: &Tensor) -> Result<()> {
    if x.numel() == 0 {
        return Ok(());
    }
    let bad = x.isfinite().logical_not().reshape([x.size()[0], -1]).any_dim(1, false);
    if bad.any().int64_value(&[]) != 0 {
        let row = bad.to_kind(Kind::Int64).argmax(0, false).int64_value(&[]);
        return Err(GeomError::NonFinite { arg: arg.to_string(), location: format!("row {row}") });
    }
    Ok(())
}

/// Errors with [`GeomError::OffManifold`] naming `arg`, the manifold and `location` (e.g. `point`,
/// `row 3`) when `distance` exceeds `tol`.
pub fn check_distance(arg: &str, manifold: &str, location: &str, distance: f64, tol: f64) -> Result<()> {
    if distance > tol {
        return Err(GeomError::OffManifold {
            arg: arg.to_string(),
            manifold: manifold.to_string(),
            location: location.to_string(),
            distance,
            tol,
        });
    }
    Ok(())
}

/// Errors naming `arg` and the first row whose distance to the manifold exceeds `tol`.
///
/// `dist` has shape `[B]`.
pub fn check_batch_membership(arg: &str, manifold: &str, dist: &Tensor, tol: f64) -> Result<()> {
    let bad = dist.gt(tol);
    if bad.any().int64_value(&[]) != 0 {
        let row = bad.to_kind(Kind::Int64).argmax(0, false).int64_value(&[]);
        return check_distance(arg, manifold, &format!("row {row}"), dist.double_value(&[row]), tol);
    }
    Ok(())
}

/// Shape, finiteness and optional membership check of a batch, in that order.
pub fn validate_batch(
    arg: &str,
    manifold: &str,
    x: &Tensor,
    point_shape: &[i64],
    tol: Option<f64>,
    distance: impl FnOnce(&Tensor) -> Tensor,
) -> Result<()> {
    check_batch_shape(arg, x, point_shape)?;
    check_batch_finite(arg, x)?;
    if let Some(tol) = tol {
        check_batch_membership(arg, manifold, &distance(x), tol)?;
    }
    Ok(())
}
