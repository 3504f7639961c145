//! Points in the plane (data, samples, 2-D projections of 3-D points), one panel each, optionally coloured by
//! a value per point.

use super::map::{viridis, ANGLE_RAMP_END};
use super::{drawing_error, label, render, tick_label, title_bar, FONT};
use anyhow::{bail, Context, Result};
use plotters::prelude::*;
use std::path::Path;

/// Width of one panel in pixels.
const PANEL_W: u32 = 480;
/// Height of one panel (its caption included) in pixels.
const PANEL_H: u32 = 380;
/// Height of the figure title bar in pixels.
const TITLE_H: u32 = 40;
/// Lower and upper quantile of the points that fix a column's axes (robust to a few far outliers).
const AXIS_QUANTILES: (f64, f64) = (0.005, 0.995);

/// One panel: its name, its points and, optionally, one colour value per point.
pub type ScatterPanel<'a> = (&'a str, &'a [[f64; 2]], Option<&'a [f64]>);

/// One panel after validation: caption and drawable points with their colours.
struct Prepared {
    caption: String,
    points: Vec<((f64, f64), RGBColor)>,
}

/// Plots 2-D points, one panel per entry, `columns` panels a row (filled row by row), into the PNG file `path`.
///
/// Panels in the same column share their axes, fixed by the 0.5% and 99.5% quantiles of every finite point of
/// that column (padded by 8%), so that, e.g., a column of x-y projections of data and of several models' samples
/// compare at a glance; points outside the axes are not drawn and are counted in the caption.
/// Without colour values the points are dark blue; with them (one per point, else an error naming the panel)
/// they follow the viridis map from the panel's smallest (dark) to its largest value (yellow), and the caption
/// shows the range. Points with a non-finite coordinate or colour value are skipped and counted in the caption.
/// Fails when `panels` is empty, `columns` is 0 or no panel has a point to draw, or when the file cannot be
/// written.
pub fn scatter_panels(path: &Path, title: &str, columns: usize, panels: &[ScatterPanel]) -> Result<()> {
    draw_scatter(path, title, columns, panels)
        .with_context(|| format!("cannot plot scatter panels to {}", path.display()))
}

/// Axis ranges of column `col`: quantiles of the finite points of its panels, padded.
fn column_limits(panels: &[ScatterPanel], columns: usize, col: usize) -> Option<[(f64, f64); 2]> {
    let mut limits = [(0.0, 0.0); 2];
    for (axis, limit) in limits.iter_mut().enumerate() {
        let mut v: Vec<f64> = panels
            .iter()
            .skip(col)
            .step_by(columns)
            .flat_map(|p| p.1.iter().filter(|q| q[0].is_finite() && q[1].is_finite()).map(move |q| q[axis]))
            .collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        let (lo, hi) = (at(AXIS_QUANTILES.0), at(AXIS_QUANTILES.1));
        let pad = if hi > lo { 0.08 * (hi - lo) } else { 1.0 };
        *limit = (lo - pad, hi + pad);
    }
    Some(limits)
}

fn draw_scatter(path: &Path, title: &str, columns: usize, panels: &[ScatterPanel]) -> Result<()> {
    if panels.is_empty() {
        bail!("no panels to plot");
    }
    if columns == 0 {
        bail!("columns = 0: expected at least one panel a row");
    }
    let limits: Vec<Option<[(f64, f64); 2]>> = (0..columns).map(|c| column_limits(panels, columns, c)).collect();
    let mut prepared = Vec::with_capacity(panels.len());
    for (i, &(name, points, colours)) in panels.iter().enumerate() {
        if let Some(c) = colours {
            if c.len() != points.len() {
                bail!("panel `{name}`: {} colour values for {} points", c.len(), points.len());
            }
        }
        let finite = |k: usize| {
            let p = points[k];
            p[0].is_finite() && p[1].is_finite() && colours.is_none_or(|c| c[k].is_finite())
        };
        let keep: Vec<usize> = (0..points.len()).filter(|&k| finite(k)).collect();
        let n_skipped = points.len() - keep.len();
        let Some([(x0, x1), (y0, y1)]) = limits[i % columns] else {
            prepared.push(Prepared { caption: label(name, 0, n_skipped, "non-finite"), points: Vec::new() });
            continue;
        };
        let inside = |k: &usize| {
            let p = points[*k];
            (x0..=x1).contains(&p[0]) && (y0..=y1).contains(&p[1])
        };
        let shown: Vec<usize> = keep.iter().copied().filter(inside).collect();
        let n_outside = keep.len() - shown.len();
        let mut caption = label(name, shown.len(), n_skipped, "non-finite");
        if n_outside > 0 {
            caption.push_str(&format!(", {n_outside} outside"));
        }
        let drawn = match colours {
            None => shown.iter().map(|&k| ((points[k][0], points[k][1]), RGBColor(0x1f, 0x4e, 0x9a))).collect(),
            Some(c) => {
                let lo = keep.iter().map(|&k| c[k]).fold(f64::INFINITY, f64::min);
                let hi = keep.iter().map(|&k| c[k]).fold(f64::NEG_INFINITY, f64::max);
                if lo.is_finite() {
                    let span = hi - lo;
                    caption.push_str(&format!(" [{}, {}]", tick_label(lo, span), tick_label(hi, span)));
                }
                let t = |v: f64| if hi > lo { ANGLE_RAMP_END * (v - lo) / (hi - lo) } else { 0.5 };
                shown.iter().map(|&k| ((points[k][0], points[k][1]), viridis(t(c[k])))).collect()
            }
        };
        prepared.push(Prepared { caption, points: drawn });
    }
    if prepared.iter().all(|p| p.points.is_empty()) {
        bail!("no panel has a point to draw");
    }
    let rows = panels.len().div_ceil(columns);
    let size = (PANEL_W * columns as u32, PANEL_H * rows as u32 + TITLE_H);
    render(path, size, |root| {
        root.fill(&WHITE).map_err(drawing_error)?;
        let body = title_bar(root, title, TITLE_H)?;
        for (i, (area, panel)) in body.split_evenly((rows, columns)).iter().zip(&prepared).enumerate() {
            let Some([(x0, x1), (y0, y1)]) = limits[i % columns] else { continue };
            let mut chart = ChartBuilder::on(area)
                .caption(&panel.caption, (FONT, 15))
                .margin(8)
                .x_label_area_size(28)
                .y_label_area_size(44)
                .build_cartesian_2d(x0..x1, y0..y1)
                .map_err(drawing_error)?;
            let (sx, sy) = (x1 - x0, y1 - y0);
            chart
                .configure_mesh()
                .x_labels(5)
                .y_labels(5)
                .x_label_formatter(&|v| tick_label(*v, sx))
                .y_label_formatter(&|v| tick_label(*v, sy))
                .label_style((FONT, 12))
                .bold_line_style(RGBColor(225, 225, 225))
                .light_line_style(RGBColor(245, 245, 245))
                .draw()
                .map_err(drawing_error)?;
            let alpha = (400.0 / panel.points.len().max(1) as f64).sqrt().clamp(0.25, 0.9);
            chart
                .draw_series(panel.points.iter().map(|&(xy, c)| Circle::new(xy, 2, c.mix(alpha).filled())))
                .map_err(drawing_error)?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scatter_writes_a_png_and_refuses_bad_input() {
        let dir = std::env::temp_dir().join(format!("mg-scatter-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.png");
        let pts: Vec<[f64; 2]> = (0..200).map(|i| [(i as f64 * 0.1).cos(), (i as f64 * 0.1).sin()]).collect();
        let mut bad = pts.clone();
        bad[3] = [f64::NAN, 0.0];
        bad[4] = [1e9, 0.0];
        let colour: Vec<f64> = (0..200).map(f64::from).collect();
        let panels: Vec<ScatterPanel> =
            vec![("data", &pts, None), ("coloured", &pts, Some(&colour)), ("bad", &bad, None), ("empty", &[], None)];
        scatter_panels(&path, "test", 2, &panels).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        assert!(scatter_panels(&path, "t", 2, &[]).is_err());
        assert!(scatter_panels(&path, "t", 0, &panels).is_err());
        let e = scatter_panels(&path, "t", 1, &[("c", &pts, Some(&colour[..3]))]).unwrap_err();
        assert!(format!("{e:#}").contains("panel `c`"), "{e:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
