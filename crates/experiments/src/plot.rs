//! PNG plots for experiment runs: loss curves, points on the sphere, rotations, grouped bars, 2-D scatter panels.
//!
//! Every function renders into an in-memory RGB buffer with plotters' bitmap backend, encodes it as PNG and writes
//! it with [`crate::run::write_atomic`], so a reader never sees a half-written file.
//! Text uses DejaVu Sans embedded in the binary (the `dejavu` crate) through plotters' `ab_glyph` feature: plots
//! need no system font and no fontconfig.
//! Errors name the output path.
//!
//! Input policy, the same for every function:
//! - an empty list of series or panels is an error, and so is a plot in which no value at all can be drawn;
//! - a single empty series or panel is drawn (empty) and labelled as such;
//! - non-finite values (and, for rotations, matrices that are not rotations) are skipped, and the number skipped
//!   is shown in the label of their series or panel, e.g. `dsm (3 non-finite skipped)`, so that a run that diverged
//!   still gets its plot and the plot says so;
//! - a shape mismatch (bar values whose count differs from the number of categories) is an error naming the series.
//!
//! ```no_run
//! use experiments::plot;
//! use std::path::Path;
//!
//! let mad: Vec<(u64, f64)> = (0..1000).map(|s| (s, 1.0 / (1.0 + s as f64))).collect();
//! let dsm: Vec<(u64, f64)> = (0..1000).map(|s| (s, 2.0 / (1.0 + s as f64))).collect();
//! plot::loss_curves(Path::new("loss.png"), "training loss", &[("mad", &mad), ("dsm", &dsm)]).unwrap();
//! ```

mod bars;
mod curves;
mod map;
mod scatter;
mod sphere;

pub use bars::bar_groups;
pub use curves::{loss_curves, step_curves};
pub use scatter::{scatter_panels, ScatterPanel};
pub use sphere::{rotation_panels, sphere_panels};

use anyhow::{anyhow, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;
use std::sync::OnceLock;

/// Family name under which the embedded font is registered with plotters.
const FONT: &str = "sans-serif";

/// Registers DejaVu Sans (regular and bold) with plotters, once per process.
fn ensure_font() -> Result<()> {
    static REGISTERED: OnceLock<std::result::Result<(), &'static str>> = OnceLock::new();
    let registered = REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
            .map_err(|_| "embedded DejaVu Sans regular is not a valid font")?;
        plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold())
            .map_err(|_| "embedded DejaVu Sans bold is not a valid font")
    });
    registered.map_err(|e| anyhow!(e))
}

/// The drawing area every plot function draws on.
type Canvas<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// Turns a plotters error, whose type borrows the backend, into an owned error.
fn drawing_error(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("drawing failed: {e}")
}

/// Renders `draw` on a white `width` x `height` canvas and writes it atomically to `path` as PNG.
fn render(path: &Path, (width, height): (u32, u32), draw: impl FnOnce(&Canvas) -> Result<()>) -> Result<()> {
    ensure_font()?;
    let mut rgb = vec![255u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        draw(&root)?;
        root.present().map_err(drawing_error)?;
    }
    let png = encode_png(&rgb, width, height)?;
    crate::run::write_atomic(path, &png)
}

/// Encodes 8-bit RGB pixels, row-major, as a PNG file in memory.
fn encode_png(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::Fast);
    let mut writer = encoder.write_header().context("cannot encode png header")?;
    writer.write_image_data(rgb).context("cannot encode png data")?;
    writer.finish().context("cannot finish png")?;
    Ok(out)
}

/// Colour of the `i`-th series: the ten colours of matplotlib's tab10, cycled.
fn series_colour(i: usize) -> RGBColor {
    const TAB10: [(u8, u8, u8); 10] = [
        (0x1f, 0x77, 0xb4),
        (0xff, 0x7f, 0x0e),
        (0x2c, 0xa0, 0x2c),
        (0xd6, 0x27, 0x28),
        (0x94, 0x67, 0xbd),
        (0x8c, 0x56, 0x4b),
        (0xe3, 0x77, 0xc2),
        (0x7f, 0x7f, 0x7f),
        (0xbc, 0xbd, 0x22),
        (0x17, 0xbe, 0xcf),
    ];
    let (r, g, b) = TAB10[i % TAB10.len()];
    RGBColor(r, g, b)
}

/// Label of a series or panel: its name, plus how many values were skipped and why, or that it is empty.
fn label(name: &str, n_drawn: usize, n_skipped: usize, what: &str) -> String {
    match (n_drawn, n_skipped) {
        (0, 0) => format!("{name} (empty)"),
        (0, _) => format!("{name} (all {n_skipped} {what})"),
        (_, 0) => name.to_string(),
        _ => format!("{name} ({n_skipped} {what} skipped)"),
    }
}

/// Draws `title` centred at the top of `area`, `height` pixels tall, and returns the area below it.
fn title_bar<'a>(area: &Canvas<'a>, title: &str, height: u32) -> Result<Canvas<'a>> {
    let (top, body) = area.split_vertically(height);
    let (w, h) = top.dim_in_pixel();
    let style = TextStyle::from((FONT, 22).into_font()).pos(Pos::new(HPos::Center, VPos::Center)).color(&BLACK);
    top.draw(&Text::new(title.to_string(), (w as i32 / 2, h as i32 / 2), style)).map_err(drawing_error)?;
    Ok(body)
}

/// Compact tick label: plain decimals from 1e-3 to 1e5, scientific notation outside; values smaller than 1e-9 of
/// the axis `span` are rounding noise around zero and print as 0 (pass a span of 0 on a log axis).
fn tick_label(v: f64, span: f64) -> String {
    let a = v.abs();
    if a == 0.0 || a < 1e-9 * span {
        "0".to_string()
    } else if (1e-3..1e5).contains(&a) {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        let s = format!("{v:.2e}");
        let (mantissa, exponent) = s.split_once('e').unwrap_or((&s, "0"));
        format!("{}e{exponent}", mantissa.trim_end_matches('0').trim_end_matches('.'))
    }
}

/// Labelled (bold) and grid-only (light) ticks of a log axis over [lo, hi], 0 < lo < hi: 1-2-5 ticks within
/// three decades, 1-2-3-5-7 within one, decades (thinned to at most about eight) beyond; the light ticks are the
/// digits 1 to 9 of every decade while there are at most eight decades.
fn log_ticks(lo: f64, hi: f64) -> (Vec<f64>, Vec<f64>) {
    let decades = (hi / lo).log10();
    let (k0, k1) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    let in_range = |v: &f64| *v >= lo * (1.0 - 1e-12) && *v <= hi * (1.0 + 1e-12);
    let grid = |mantissas: &[f64], every: i32| -> Vec<f64> {
        (k0..=k1)
            .filter(|k| k.rem_euclid(every) == 0)
            .flat_map(|k| mantissas.iter().map(move |m| m * 10f64.powi(k)))
            .filter(in_range)
            .collect()
    };
    let bold = if decades <= 1.0 {
        grid(&[1.0, 2.0, 3.0, 5.0, 7.0], 1)
    } else if decades <= 3.0 {
        grid(&[1.0, 2.0, 5.0], 1)
    } else {
        grid(&[1.0], (decades / 8.0).ceil() as i32)
    };
    let light = if decades <= 8.0 { grid(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0], 1) } else { Vec::new() };
    (bold, light)
}

#[cfg(test)]
mod tests;
