//! Grouped bars over the categories of a discrete set.

use super::{drawing_error, label, render, series_colour, tick_label, FONT};
use anyhow::{bail, Context, Result};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontTransform;
use std::path::Path;

/// Above this many categories, bars are thin and categories are not labelled one by one.
const MAX_LABELLED: usize = 32;

/// Plots grouped bars into the PNG file `path`: for each category, one bar per series (e.g. the target
/// probabilities and the empirical probabilities of `"mad"` and `"dsm"` samples over the states of a discrete set).
///
/// Every series holds one value per category, in the order of `categories`.
/// Up to 32 categories are labelled one by one (labels turned upright when they do not fit); beyond that, bars are
/// thin and the x axis shows the category index instead (made for up to 256 categories).
/// Non-finite values are left out (no bar) and counted in the legend; bars start from 0, so negative values go down.
/// Fails when `categories` or `series` is empty, when a series' length differs from the number of categories
/// (the error names the series), when no value is finite, or when the file cannot be written.
pub fn bar_groups(path: &Path, title: &str, categories: &[String], series: &[(&str, &[f64])]) -> Result<()> {
    draw_bar_groups(path, title, categories, series)
        .with_context(|| format!("cannot plot bar groups to {}", path.display()))
}

fn draw_bar_groups(path: &Path, title: &str, categories: &[String], series: &[(&str, &[f64])]) -> Result<()> {
    let n = categories.len();
    if n == 0 {
        bail!("no categories to plot");
    }
    if series.is_empty() {
        bail!("no series to plot");
    }
    for &(name, values) in series {
        if values.len() != n {
            bail!("series {name} has {} values for {n} categories", values.len());
        }
    }
    let finite = || series.iter().flat_map(|s| s.1.iter().copied()).filter(|v| v.is_finite());
    if finite().next().is_none() {
        bail!("no finite value in any series");
    }
    let lo = finite().fold(0.0, f64::min);
    let hi = finite().fold(0.0, f64::max);
    let (lo, hi) = if hi > lo { (lo, hi) } else { (lo, lo + 1.0) };
    // Headroom above the bars for the legend.
    let (pad, headroom) = (0.04 * (hi - lo), 0.22 * (hi - lo));
    let y_range = if lo < 0.0 { lo - pad..hi + headroom } else { 0.0..hi + headroom };
    let k = series.len();
    let thin = n > MAX_LABELLED;
    let width = if thin { 1400 } else { (160 + n * (k * 14 + 10)).clamp(900, 1600) as u32 };
    render(path, (width, 560), |root| {
        root.fill(&WHITE).map_err(drawing_error)?;
        let tick_style = TextStyle::from((FONT, 13).into_font()).color(&BLACK);
        let slot = (f64::from(width) - 120.0) / n as f64;
        let max_label = categories
            .iter()
            .map(|c| root.estimate_text_size(c, &tick_style).map(|s| s.0).unwrap_or(0))
            .max()
            .unwrap_or(0);
        let upright = !thin && f64::from(max_label) > 0.9 * slot;
        let x_label_h = if thin {
            48
        } else if upright {
            (max_label + 36).min(140)
        } else {
            44
        };
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT, 22))
            .margin(14)
            .x_label_area_size(x_label_h)
            .y_label_area_size(72)
            .build_cartesian_2d(0.0..n as f64, y_range.clone())
            .map_err(drawing_error)?;
        let span = y_range.end - y_range.start;
        let y_label = |v: &f64| tick_label(*v, span);
        let mut mesh = chart.configure_mesh();
        mesh.disable_x_mesh()
            .y_label_formatter(&y_label)
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 16))
            .bold_line_style(RGBColor(225, 225, 225))
            .light_line_style(RGBColor(245, 245, 245));
        if thin {
            mesh.x_desc("category index").x_label_formatter(&|v| format!("{}", v.floor()));
        } else {
            mesh.x_labels(0);
        }
        mesh.draw().map_err(drawing_error)?;
        let group = if thin { 0.9 } else { 0.8 };
        let bar_w = group / k as f64;
        for (j, &(name, values)) in series.iter().enumerate() {
            let colour = series_colour(j);
            let bars = values.iter().enumerate().filter(|(_, v)| v.is_finite()).map(|(i, &v)| {
                let x0 = i as f64 + (1.0 - group) / 2.0 + j as f64 * bar_w;
                Rectangle::new([(x0, v.max(0.0)), (x0 + bar_w, v.min(0.0))], colour.filled())
            });
            let n_skipped = values.iter().filter(|v| !v.is_finite()).count();
            chart
                .draw_series(bars)
                .map_err(drawing_error)?
                .label(label(name, n - n_skipped, n_skipped, "non-finite"))
                .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], colour.filled()));
        }
        if !thin {
            let style = if upright {
                tick_style.transform(FontTransform::Rotate270).pos(Pos::new(HPos::Right, VPos::Center))
            } else {
                tick_style.pos(Pos::new(HPos::Center, VPos::Top))
            };
            for (i, c) in categories.iter().enumerate() {
                let (x, y) = chart.backend_coord(&(i as f64 + 0.5, y_range.start));
                root.draw(&Text::new(c.clone(), (x, y + 8), style.clone())).map_err(drawing_error)?;
            }
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
    })
}
