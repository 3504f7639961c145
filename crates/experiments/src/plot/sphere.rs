//! Points on S^2 and rotations in SO(3), on an equal-area (Hammer) map, one panel per sample set.

use super::map::{angle_colour, axis_angle, graticule, is_rotation, outline, project, HAMMER_A, HAMMER_B};
use super::{drawing_error, label, render, title_bar, Canvas, FONT};
use anyhow::{bail, Context, Result};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::f64::consts::PI;
use std::path::Path;

/// Width of one map panel in pixels.
const PANEL_W: u32 = 540;
/// Height of one map panel (its label included) in pixels.
const PANEL_H: u32 = 320;
/// Height of the figure title bar in pixels.
const TITLE_H: u32 = 40;
/// Width of the angle colour bar next to rotation panels in pixels.
const COLOUR_BAR_W: u32 = 110;

/// One panel after validation: its label and its points on the map with their colours.
struct Panel {
    label: String,
    points: Vec<((f64, f64), RGBColor)>,
}

/// Plots points on the unit sphere S^2, one panel per entry side by side (e.g. `"data"`, `"mad"`, `"dsm"`), on the
/// Hammer equal-area map of longitude atan2(y, x) and latitude asin(z), into the PNG file `path`.
///
/// Each panel shows the map outline, a light graticule every 30 degrees (longitude 0 in the centre, north up) and
/// the points as small semi-transparent dots (more transparent for larger sets); it is made for up to 20,000 points
/// per panel.
/// Points are normalised onto the sphere; non-finite and zero points are skipped and counted in the panel label.
/// Fails when `panels` is empty or no panel has a point to draw, or when the file cannot be written.
pub fn sphere_panels(path: &Path, title: &str, panels: &[(&str, &[[f64; 3]])]) -> Result<()> {
    let prepared: Vec<Panel> = panels
        .iter()
        .map(|&(name, points)| {
            let colour = RGBColor(0x1f, 0x4e, 0x9a);
            let drawn: Vec<_> = points.iter().filter_map(|&p| project(p)).map(|xy| (xy, colour)).collect();
            let n_skipped = points.len() - drawn.len();
            Panel {
                label: format!("{} (n = {})", label(name, drawn.len(), n_skipped, "non-finite"), drawn.len()),
                points: drawn,
            }
        })
        .collect();
    draw_panels(path, title, &prepared, false)
        .with_context(|| format!("cannot plot sphere panels to {}", path.display()))
}

/// Plots rotations as in the implicit-PDF papers, one panel per entry side by side, into the PNG file `path`:
/// each rotation's axis (of its axis-angle form with angle in [0, pi]) is a dot on the same Hammer map as
/// [`sphere_panels`], coloured by its angle through a viridis ramp shown in a colour bar on the right.
///
/// Rotation matrices are row-major, `[[r00, r01, r02], [r10, r11, r12], [r20, r21, r22]]`.
/// For angles near 0 the axis is arbitrary: the identity is drawn at the north pole.
/// Matrices with a non-finite entry, that are not orthogonal within 1e-3 or have negative determinant are skipped
/// and counted in the panel label.
/// Fails when `panels` is empty or no panel has a rotation to draw, or when the file cannot be written.
pub fn rotation_panels(path: &Path, title: &str, panels: &[(&str, &[[[f64; 3]; 3]])]) -> Result<()> {
    let prepared: Vec<Panel> = panels
        .iter()
        .map(|&(name, rotations)| {
            let drawn: Vec<_> = rotations
                .iter()
                .filter(|r| is_rotation(r))
                .filter_map(|r| {
                    let (axis, angle) = axis_angle(r);
                    project(axis).map(|xy| (xy, angle_colour(angle)))
                })
                .collect();
            let n_skipped = rotations.len() - drawn.len();
            Panel {
                label: format!("{} (n = {})", label(name, drawn.len(), n_skipped, "invalid"), drawn.len()),
                points: drawn,
            }
        })
        .collect();
    draw_panels(path, title, &prepared, true)
        .with_context(|| format!("cannot plot rotation panels to {}", path.display()))
}

/// Opacity of a dot in a panel of `n` points: nearly opaque for a few points, faint for tens of thousands.
fn dot_alpha(n: usize) -> f64 {
    (400.0 / n.max(1) as f64).sqrt().clamp(0.12, 0.9)
}

fn draw_panels(path: &Path, title: &str, panels: &[Panel], colour_bar: bool) -> Result<()> {
    if panels.is_empty() {
        bail!("no panels to plot");
    }
    if panels.iter().all(|p| p.points.is_empty()) {
        bail!("no panel has a point to draw");
    }
    let bar_w = if colour_bar { COLOUR_BAR_W } else { 0 };
    let width = PANEL_W * panels.len() as u32 + bar_w;
    render(path, (width, PANEL_H + TITLE_H), |root| {
        root.fill(&WHITE).map_err(drawing_error)?;
        let body = title_bar(root, title, TITLE_H)?;
        let (maps, bar) = body.split_horizontally(PANEL_W * panels.len() as u32);
        for (area, panel) in maps.split_evenly((1, panels.len())).iter().zip(panels) {
            draw_map(area, panel)?;
        }
        if colour_bar {
            draw_colour_bar(&bar)?;
        }
        Ok(())
    })
}

/// Draws one panel: label on top, then graticule, points and outline of the map.
fn draw_map(area: &Canvas, panel: &Panel) -> Result<()> {
    let (w, h) = area.dim_in_pixel();
    let (label_h, pad) = (30.0, 10.0);
    let scale =
        ((f64::from(w) - 2.0 * pad) / (2.0 * HAMMER_A)).min((f64::from(h) - label_h - 2.0 * pad) / (2.0 * HAMMER_B));
    let (cx, cy) = (f64::from(w) / 2.0, label_h + (f64::from(h) - label_h) / 2.0);
    let px = |(x, y): (f64, f64)| ((cx + scale * x).round() as i32, (cy - scale * y).round() as i32);
    let style = TextStyle::from((FONT, 16).into_font()).pos(Pos::new(HPos::Center, VPos::Center)).color(&BLACK);
    area.draw(&Text::new(panel.label.clone(), (w as i32 / 2, (label_h / 2.0) as i32 + 2), style))
        .map_err(drawing_error)?;
    let grid = RGBColor(200, 200, 200);
    for line in graticule() {
        area.draw(&PathElement::new(line.into_iter().map(px).collect::<Vec<_>>(), grid.stroke_width(1)))
            .map_err(drawing_error)?;
    }
    let alpha = dot_alpha(panel.points.len());
    for &(xy, colour) in &panel.points {
        area.draw(&Circle::new(px(xy), 2, colour.mix(alpha).filled())).map_err(drawing_error)?;
    }
    let edge: Vec<_> = outline().into_iter().map(px).collect();
    area.draw(&PathElement::new(edge, RGBColor(90, 90, 90).stroke_width(1))).map_err(drawing_error)?;
    Ok(())
}

/// Draws the vertical angle colour bar, 0 at the bottom and pi at the top, with its ticks and caption.
fn draw_colour_bar(area: &Canvas) -> Result<()> {
    let (_, h) = area.dim_in_pixel();
    let (x0, x1) = (16, 36);
    let (top, bottom) = (50, h as i32 - 30);
    for y in top..=bottom {
        let angle = PI * f64::from(bottom - y) / f64::from(bottom - top);
        area.draw(&PathElement::new(vec![(x0, y), (x1, y)], angle_colour(angle).stroke_width(1)))
            .map_err(drawing_error)?;
    }
    area.draw(&Rectangle::new([(x0, top), (x1, bottom)], RGBColor(90, 90, 90).stroke_width(1)))
        .map_err(drawing_error)?;
    let tick = TextStyle::from((FONT, 15).into_font()).pos(Pos::new(HPos::Left, VPos::Center)).color(&BLACK);
    for (frac, text) in [(0.0, "0"), (0.5, "π/2"), (1.0, "π")] {
        let y = bottom - (frac * f64::from(bottom - top)).round() as i32;
        area.draw(&PathElement::new(vec![(x1, y), (x1 + 5, y)], BLACK.stroke_width(1))).map_err(drawing_error)?;
        area.draw(&Text::new(text, (x1 + 9, y), tick.clone())).map_err(drawing_error)?;
    }
    let caption = TextStyle::from((FONT, 15).into_font()).pos(Pos::new(HPos::Left, VPos::Center)).color(&BLACK);
    area.draw(&Text::new("angle", (x0 - 4, top - 20), caption)).map_err(drawing_error)?;
    Ok(())
}
