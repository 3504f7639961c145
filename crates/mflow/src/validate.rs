//! Checks on data at the crate's boundary: shape, dtype and finiteness, with errors that name the row.

use crate::{MflowError, Result};
use tch::{Kind, Tensor};

/// Checks that `x` is a floating-point `[B, dim]` tensor with `B >= 1` and finite entries.
///
/// Errors name the argument `name` and, for a non-finite value, the first offending row and column
/// (0-based) and the value.
pub fn check_points(name: &str, x: &Tensor, dim: i64) -> Result<()> {
    let size = x.size();
    if size.len() != 2 || size[1] != dim {
        return Err(MflowError::data(name, format!("expected shape [rows, {dim}], got {size:?}")));
    }
    if size[0] < 1 {
        return Err(MflowError::data(name, "no rows"));
    }
    if !x.is_floating_point() {
        return Err(MflowError::data(name, format!("expected a floating-point tensor, got {:?}", x.kind())));
    }
    let bad = x.isfinite().logical_not();
    if bad.any().int64_value(&[]) != 0 {
        let first = bad.nonzero().get(0);
        let (row, col) = (first.int64_value(&[0]), first.int64_value(&[1]));
        let value = x.to_kind(Kind::Double).double_value(&[row, col]);
        return Err(MflowError::data(name, format!("row {row} has a non-finite value ({value}) in column {col}")));
    }
    Ok(())
}
