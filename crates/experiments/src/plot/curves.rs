//! Training loss against step.

use super::{drawing_error, label, log_ticks, render, series_colour, tick_label, FONT};
use anyhow::{bail, Context, Result};
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;
use std::ops::Range;
use std::path::Path;

/// One series after validation: finite points sorted by step, and its moving average.
struct Curve {
    label: String,
    points: Vec<(u64, f64)>,
    smooth: Vec<(u64, f64)>,
}

/// Plots training loss against step for several methods (e.g. `("mad", &losses)`) into the PNG file `path`.
///
/// Each series is drawn raw, thin and light, and as a centred moving average over about 2% of its points, thick,
/// in the same colour.
/// The y axis is logarithmic when every finite value is positive and the values span at least two labelled ticks
/// (the moving average is then taken of log values, a geometric mean), and linear otherwise.
/// Points need not be sorted; non-finite losses are skipped and counted in the legend.
/// Fails when `series` is empty or holds no finite value at all, or when the file cannot be written.
pub fn loss_curves(path: &Path, title: &str, series: &[(&str, &[(u64, f64)])]) -> Result<()> {
    step_curves(path, title, "loss", series)
}

/// [`loss_curves`] for any quantity against step, with `y_desc` as the label of the y axis (a variance,
/// say).
pub fn step_curves(path: &Path, title: &str, y_desc: &str, series: &[(&str, &[(u64, f64)])]) -> Result<()> {
    draw_curves(path, title, y_desc, series)
        .with_context(|| format!("cannot plot {y_desc} curves to {}", path.display()))
}

fn draw_curves(path: &Path, title: &str, y_desc: &str, series: &[(&str, &[(u64, f64)])]) -> Result<()> {
    if series.is_empty() {
        bail!("no series to plot");
    }
    let mut curves: Vec<Curve> = series
        .iter()
        .map(|&(name, raw)| {
            let mut points: Vec<(u64, f64)> = raw.iter().copied().filter(|p| p.1.is_finite()).collect();
            points.sort_by_key(|p| p.0);
            let n_skipped = raw.len() - points.len();
            Curve { label: label(name, points.len(), n_skipped, "non-finite"), points, smooth: Vec::new() }
        })
        .collect();
    let values = || curves.iter().flat_map(|c| c.points.iter().map(|p| p.1));
    if values().next().is_none() {
        bail!("no finite {y_desc} value in any series");
    }
    let lo = values().fold(f64::INFINITY, f64::min);
    let hi = values().fold(f64::NEG_INFINITY, f64::max);
    // A log axis when every value is positive and the range spans at least two labelled ticks.
    let log_axis = (lo > 0.0).then(|| {
        let (lo, hi) = if hi > lo { (lo, hi) } else { (lo / 2.0, hi * 2.0) };
        let pad = (hi / lo).powf(0.03);
        let (lo, hi) = (lo / pad, hi * pad);
        (lo, hi, log_ticks(lo, hi))
    });
    let log_axis = log_axis.filter(|(_, _, (bold, _))| bold.len() >= 2);
    let x0 = curves.iter().filter_map(|c| c.points.first()).map(|p| p.0).min().unwrap_or(0);
    let x1 = curves.iter().filter_map(|c| c.points.last()).map(|p| p.0).max().unwrap_or(0).max(x0 + 1);
    for c in &mut curves {
        c.smooth = moving_average(&c.points, log_axis.is_some());
    }
    render(path, (960, 600), |root| {
        root.fill(&WHITE).map_err(drawing_error)?;
        match log_axis {
            Some((lo, hi, (bold, light))) => {
                let y = (lo..hi).log_scale().with_key_points(bold).with_light_points(light);
                draw(root, title, y_desc, &curves, x0..x1, y, 0.0)
            }
            None => {
                let (lo, hi) = if hi > lo { (lo, hi) } else { (lo - 1.0, hi + 1.0) };
                let pad = 0.03 * (hi - lo);
                draw(root, title, y_desc, &curves, x0..x1, lo - pad..hi + pad, hi - lo)
            }
        }
    })
}

/// Draws the chart on `root`, generic over the y coordinate (linear or logarithmic).
/// `span` is the extent of a linear axis (for tick labels), 0 for a log axis.
fn draw<Y>(
    root: &super::Canvas,
    title: &str,
    y_desc: &str,
    curves: &[Curve],
    x: Range<u64>,
    y: Y,
    span: f64,
) -> Result<()>
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(root)
        .caption(title, (FONT, 22))
        .margin(14)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(x, y)
        .map_err(drawing_error)?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc(y_desc)
        .y_label_formatter(&|v| tick_label(*v, span))
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .bold_line_style(RGBColor(225, 225, 225))
        .light_line_style(RGBColor(245, 245, 245))
        .draw()
        .map_err(drawing_error)?;
    // Raw values first, in a light tint of each colour, so every moving average stays on top and visible.
    for (i, c) in curves.iter().enumerate() {
        let tint = tint(series_colour(i), 0.7);
        chart.draw_series(LineSeries::new(c.points.iter().copied(), tint.stroke_width(1))).map_err(drawing_error)?;
        if c.points.len() == 1 {
            chart.draw_series(c.points.iter().map(|&p| Circle::new(p, 3, tint.filled()))).map_err(drawing_error)?;
        }
    }
    for (i, c) in curves.iter().enumerate() {
        let colour = series_colour(i);
        chart
            .draw_series(LineSeries::new(c.smooth.iter().copied(), colour.stroke_width(3)))
            .map_err(drawing_error)?
            .label(c.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], colour.stroke_width(3)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font((FONT, 15))
        .draw()
        .map_err(drawing_error)?;
    Ok(())
}

/// `colour` moved a fraction `amount` of the way to white.
fn tint(colour: RGBColor, amount: f64) -> RGBColor {
    let f = |c: u8| (f64::from(c) + amount * (255.0 - f64::from(c))).round() as u8;
    RGBColor(f(colour.0), f(colour.1), f(colour.2))
}

/// Centred moving average of the values of `points` (sorted by step) over a window of about 2% of them (at least
/// one point; shrunk at the ends); with `geometric`, the average of log values, exponentiated.
fn moving_average(points: &[(u64, f64)], geometric: bool) -> Vec<(u64, f64)> {
    let n = points.len();
    let half = ((n as f64 * 0.02).round() as usize).max(1) / 2;
    let f = |v: f64| if geometric { v.ln() } else { v };
    let mut prefix = Vec::with_capacity(n + 1);
    prefix.push(0.0);
    for p in points {
        prefix.push(prefix.last().copied().unwrap_or(0.0) + f(p.1));
    }
    (0..n)
        .map(|i| {
            let (a, b) = (i.saturating_sub(half), (i + half + 1).min(n));
            let mean = (prefix[b] - prefix[a]) / (b - a) as f64;
            (points[i].0, if geometric { mean.exp() } else { mean })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moving_average_is_centred_and_keeps_constants() {
        let pts: Vec<(u64, f64)> = (0..500).map(|s| (s, 2.0)).collect();
        for geometric in [false, true] {
            let m = moving_average(&pts, geometric);
            assert_eq!(m.len(), 500);
            assert!(m.iter().all(|p| (p.1 - 2.0).abs() < 1e-12));
        }
        // Window 2% of 500 = 10 points -> half-width 5: a linear ramp is unchanged away from the ends.
        let ramp: Vec<(u64, f64)> = (0..500).map(|s| (s, s as f64)).collect();
        let m = moving_average(&ramp, false);
        assert!((m[100].1 - 100.0).abs() < 1e-9 && m[0].1 > 0.0);
        assert_eq!(moving_average(&[(3, 1.5)], true), vec![(3, 1.5)]);
        assert!(moving_average(&[], false).is_empty());
    }
}
