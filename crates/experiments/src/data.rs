//! Data sets read from files: the Earth event locations on S^2 (`latitude,longitude` in degrees a row),
//! and seeded train/validation/test splits.

use anyhow::{bail, Context, Result};
use nalgebra::DVector;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};

/// The four Earth data sets and their file names.
pub const EARTH_DATASETS: &[(&str, &str)] =
    &[("volcano", "volerup.csv"), ("earthquake", "quakes_all.csv"), ("flood", "flood.csv"), ("fire", "fire.csv")];

/// The file of an Earth data set inside `data_dir`; errors list the known names.
pub fn earth_file(data_dir: &Path, dataset: &str) -> Result<PathBuf> {
    match EARTH_DATASETS.iter().find(|(name, _)| *name == dataset) {
        Some((_, file)) => Ok(data_dir.join(file)),
        None => bail!(
            "unknown dataset `{dataset}`: expected one of {}",
            EARTH_DATASETS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Unit vector of a (latitude, longitude) pair in degrees: (cos lat cos lon, cos lat sin lon, sin lat).
pub fn lat_lon_to_unit(lat_deg: f64, lon_deg: f64) -> DVector<f64> {
    let (lat, lon) = (lat_deg.to_radians(), lon_deg.to_radians());
    DVector::from_vec(vec![lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()])
}

/// Parses `latitude,longitude` rows.
///
/// Lines starting with `#` and blank lines are skipped, a header row is allowed before the first data row,
/// CRLF endings are accepted. Errors name `source` and the line number: a wrong field count, a field that
/// is not a number, a non-finite value, or a latitude outside [-90, 90] / longitude outside [-360, 360].
pub fn parse_lat_lon(text: &str, source: &str) -> Result<Vec<(f64, f64)>> {
    let mut rows = Vec::new();
    let mut seen_header = false;
    for (idx, raw) in text.lines().enumerate() {
        let line_no = idx + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != 2 {
            bail!(
                "{source}:{line_no}: expected 2 comma-separated fields (latitude,longitude), found {}: `{line}`",
                fields.len()
            );
        }
        let parsed: Vec<Option<f64>> = fields.iter().map(|f| f.parse::<f64>().ok()).collect();
        if parsed.iter().all(Option::is_none)
            && rows.is_empty()
            && !seen_header
            && fields.iter().all(|f| f.chars().any(char::is_alphabetic))
        {
            seen_header = true;
            continue;
        }
        let (Some(lat), Some(lon)) = (parsed[0], parsed[1]) else {
            let which = if parsed[0].is_none() { "latitude" } else { "longitude" };
            bail!("{source}:{line_no}: {which} is not a number: `{line}`");
        };
        if !lat.is_finite() || !lon.is_finite() {
            bail!("{source}:{line_no}: non-finite value in `{line}`");
        }
        if !(-90.0..=90.0).contains(&lat) {
            bail!("{source}:{line_no}: latitude {lat} is outside [-90, 90]");
        }
        if !(-360.0..=360.0).contains(&lon) {
            bail!("{source}:{line_no}: longitude {lon} is outside [-360, 360]");
        }
        rows.push((lat, lon));
    }
    if rows.is_empty() {
        bail!("{source}: no data rows");
    }
    Ok(rows)
}

/// Reads an Earth data set as unit vectors in R^3.
pub fn load_earth(data_dir: &Path, dataset: &str) -> Result<Vec<DVector<f64>>> {
    let path = earth_file(data_dir, dataset)?;
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!("cannot read {} (pass the folder of the Earth data with --data-dir)", path.display())
    })?;
    let rows = parse_lat_lon(&text, &path.display().to_string())?;
    Ok(rows.into_iter().map(|(lat, lon)| lat_lon_to_unit(lat, lon)).collect())
}

/// Parses rows of `dim` comma-separated numbers (a point of R^dim a row; a 3x3 matrix row-major for
/// SO(3)). Comment lines (`#`), blank lines and one header row before the data are skipped. Errors name
/// `source` and the line: a wrong field count, a field that is not a number, a non-finite value.
pub fn parse_points(text: &str, source: &str, dim: usize) -> Result<Vec<Vec<f64>>> {
    let mut rows: Vec<Vec<f64>> = Vec::new();
    let mut seen_header = false;
    for (idx, raw) in text.lines().enumerate() {
        let line_no = idx + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != dim {
            bail!("{source}:{line_no}: expected {dim} comma-separated numbers, found {} fields", fields.len());
        }
        let parsed: Vec<Option<f64>> = fields.iter().map(|f| f.parse::<f64>().ok()).collect();
        if rows.is_empty() && !seen_header && parsed.iter().all(Option::is_none) {
            seen_header = true;
            continue;
        }
        let mut row = Vec::with_capacity(dim);
        for (k, (f, v)) in fields.iter().zip(parsed).enumerate() {
            match v {
                Some(v) if v.is_finite() => row.push(v),
                Some(_) => bail!("{source}:{line_no}: field {} is not finite (`{f}`)", k + 1),
                None => bail!("{source}:{line_no}: field {} is not a number (`{f}`)", k + 1),
            }
        }
        rows.push(row);
    }
    if rows.is_empty() {
        bail!("{source}: no data rows");
    }
    Ok(rows)
}

/// Checks that every row of `rows` (as parsed by [`parse_points`], line numbers counted among data rows)
/// lies on `manifold` within `tol` (ambient distance); with `project`, rows off the manifold are projected
/// instead. Errors name `source`, the data row (1-based) and its distance.
pub fn on_manifold<M: geom::Manifold>(
    manifold: &M,
    rows: &[Vec<f64>],
    tol: f64,
    project: bool,
    source: &str,
) -> Result<Vec<M::Point>> {
    rows.iter()
        .enumerate()
        .map(|(i, row)| {
            let x = manifold.from_flat(row).with_context(|| format!("{source}: data row {}", i + 1))?;
            let d = manifold.distance_to_manifold(&x).with_context(|| format!("{source}: data row {}", i + 1))?;
            if d <= tol || project {
                Ok(manifold.project(&x)?)
            } else {
                bail!(
                    "{source}: data row {} is {d:.3e} from {} (tolerance {tol:.1e}); set project_data = true in \
                     the config to project such rows onto it",
                    i + 1,
                    manifold.name()
                )
            }
        })
        .collect()
}

/// Reads a file of points on `manifold` ([`parse_points`], [`on_manifold`]).
pub fn load_points<M: geom::Manifold>(manifold: &M, path: &Path, tol: f64, project: bool) -> Result<Vec<M::Point>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read the data file {}", path.display()))?;
    let source = path.display().to_string();
    let dim = manifold.ambient_shape().iter().product::<i64>() as usize;
    let rows = parse_points(&text, &source, dim)?;
    on_manifold(manifold, &rows, tol, project, &source)
}

/// A train/validation/test split.
#[derive(Debug, Clone)]
pub struct Split<T> {
    /// Training rows.
    pub train: Vec<T>,
    /// Validation rows.
    pub valid: Vec<T>,
    /// Test rows.
    pub test: Vec<T>,
}

/// Shuffles with `seed` (ChaCha8) and splits by the given fractions of train and validation (the rest is
/// test); errors when a part would be empty.
pub fn split<T: Clone>(rows: &[T], train_frac: f64, valid_frac: f64, seed: u64) -> Result<Split<T>> {
    if !(train_frac > 0.0 && valid_frac > 0.0 && train_frac + valid_frac < 1.0) {
        bail!("split fractions train = {train_frac}, valid = {valid_frac}: expected both > 0 with sum < 1");
    }
    let mut idx: Vec<usize> = (0..rows.len()).collect();
    idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let n_train = (rows.len() as f64 * train_frac).round() as usize;
    let n_valid = (rows.len() as f64 * valid_frac).round() as usize;
    if n_train == 0 || n_valid == 0 || n_train + n_valid >= rows.len() {
        bail!("cannot split {} rows into non-empty train/valid/test parts", rows.len());
    }
    let take = |r: &[usize]| r.iter().map(|&i| rows[i].clone()).collect::<Vec<_>>();
    Ok(Split {
        train: take(&idx[..n_train]),
        valid: take(&idx[n_train..n_train + n_valid]),
        test: take(&idx[n_train + n_valid..]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_comments_headers_and_crlf() {
        let text = "# source\r\nLATITUDE,LONGITUDE\r\n31.1,35.5\r\n\r\n-10, 20\r\n";
        let rows = parse_lat_lon(text, "q.csv").unwrap();
        assert_eq!(rows, vec![(31.1, 35.5), (-10.0, 20.0)]);
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = parse_lat_lon("# c\n1,2\n3\n", "f.csv").unwrap_err().to_string();
        assert!(e.starts_with("f.csv:3:"), "{e}");
        let e = parse_lat_lon("1,2\nabc,4\n", "f.csv").unwrap_err().to_string();
        assert!(e.contains("f.csv:2:") && e.contains("latitude"), "{e}");
        let e = parse_lat_lon("1,2\n3,NaN\n", "f.csv").unwrap_err().to_string();
        assert!(e.contains("f.csv:2:") && e.contains("non-finite"), "{e}");
        let e = parse_lat_lon("95,2\n", "f.csv").unwrap_err().to_string();
        assert!(e.contains("f.csv:1:") && e.contains("latitude"), "{e}");
        let e = parse_lat_lon("1,2\nlat,lon\n", "f.csv").unwrap_err().to_string();
        assert!(e.contains("f.csv:2:"), "a header after data is an error: {e}");
        assert!(parse_lat_lon("# only comments\n", "f.csv").is_err());
    }

    #[test]
    fn points_files_name_file_and_line() {
        let rows = parse_points("# c\nx,y,z\n1,0,0\n0, 1, 0\n", "p.csv", 3).unwrap();
        assert_eq!(rows, vec![vec![1.0, 0.0, 0.0], vec![0.0, 1.0, 0.0]]);
        let e = parse_points("1,0,0\n1,0\n", "p.csv", 3).unwrap_err().to_string();
        assert!(e.starts_with("p.csv:2:") && e.contains("expected 3"), "{e}");
        let e = parse_points("1,0,0\n1,x,0\n", "p.csv", 3).unwrap_err().to_string();
        assert!(e.starts_with("p.csv:2:") && e.contains("field 2"), "{e}");
        let e = parse_points("1,0,0\n1,0,inf\n", "p.csv", 3).unwrap_err().to_string();
        assert!(e.starts_with("p.csv:2:") && e.contains("not finite"), "{e}");
        assert!(parse_points("", "p.csv", 3).is_err());
    }

    #[test]
    fn off_manifold_rows_are_errors_unless_projected() {
        let s2 = geom::Sphere::new(3).unwrap();
        let rows = vec![vec![1.0, 0.0, 0.0], vec![0.0, 2.0, 0.0]];
        let e = on_manifold(&s2, &rows, 1e-6, false, "p.csv").unwrap_err().to_string();
        assert!(e.contains("data row 2") && e.contains("project_data"), "{e}");
        let pts = on_manifold(&s2, &rows, 1e-6, true, "p.csv").unwrap();
        assert!((pts[1][1] - 1.0).abs() < 1e-15);
        let so3 = geom::So3::new();
        let eye = vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];
        assert_eq!(on_manifold(&so3, &[eye], 1e-6, false, "r.csv").unwrap().len(), 1);
    }

    #[test]
    fn unit_vectors_and_split() {
        let v = lat_lon_to_unit(90.0, 10.0);
        assert!((v[2] - 1.0).abs() < 1e-15);
        let rows: Vec<usize> = (0..100).collect();
        let s = split(&rows, 0.8, 0.1, 3).unwrap();
        assert_eq!((s.train.len(), s.valid.len(), s.test.len()), (80, 10, 10));
        let again = split(&rows, 0.8, 0.1, 3).unwrap();
        assert_eq!(s.test, again.test, "same seed, same split");
        let mut all: Vec<usize> = s.train.iter().chain(&s.valid).chain(&s.test).copied().collect();
        all.sort();
        assert_eq!(all, rows);
        assert!(split(&rows[..2], 0.8, 0.1, 0).is_err());
    }
}
