//! `learning_curve.svg`: episodic return against global step, one line per
//! agent. SVG text is written as `<text>` elements and sized by plotters'
//! built-in estimate, so no system font is needed.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;

use super::metrics::MetricsRow;
use super::write_atomic;
use crate::error::{Error, Result};

/// CartPole-v1's "solved" return, drawn as a dashed reference line.
pub const SOLVED_RETURN: f64 = 475.0;

/// Above this many agents the legend would hide the plot, so lines go unlabelled.
const MAX_LEGEND_AGENTS: usize = 10;

const WIDTH_PX: u32 = 960;
const HEIGHT_PX: u32 = 600;

/// Draws the learning curve of `metrics`, with the env's `solved` return as
/// a dashed line, and writes it atomically to `path`. Rows without an
/// episodic return (no episode finished yet) are skipped; with none at all
/// the axes are still drawn.
pub fn plot_learning_curve(metrics: &[MetricsRow], solved: f64, path: &Path) -> Result<()> {
    let mut curves: BTreeMap<usize, Vec<(f64, f64)>> = BTreeMap::new();
    for row in metrics {
        let points = curves.entry(row.agent).or_default();
        if let Some(value) = row.episodic_return.filter(|v| v.is_finite()) {
            points.push((row.global_step as f64, value));
        }
    }
    for points in curves.values_mut() {
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    let x_max = metrics
        .iter()
        .map(|row| row.global_step as f64)
        .fold(1.0, f64::max);
    let returns = curves.values().flatten().map(|&(_, y)| y);
    let y_max = returns.clone().fold(solved.max(0.0), f64::max);
    let y_min = returns.fold(solved.min(0.0), f64::min);
    // 5% of the span above and below (CartPole's 0..500 becomes -25..525).
    let pad = 0.05 * (y_max - y_min).max(1.0);
    let (y_min, y_max) = (if y_min < 0.0 { y_min - pad } else { 0.0 }, y_max + pad);

    let mut svg = String::new();
    draw(&mut svg, &curves, x_max, solved, y_min..y_max).map_err(|reason| Error::Format {
        path: path.to_path_buf(),
        reason: format!("cannot draw learning curve: {reason}"),
    })?;
    write_atomic(path, svg.as_bytes())
}

fn draw(
    svg: &mut String,
    curves: &BTreeMap<usize, Vec<(f64, f64)>>,
    x_max: f64,
    solved: f64,
    y_range: std::ops::Range<f64>,
) -> std::result::Result<(), String> {
    let root = SVGBackend::with_string(svg, (WIDTH_PX, HEIGHT_PX)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Episodic return per agent", ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_max, y_range)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("global step")
        .y_desc("episodic return")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(|e| e.to_string())?;

    let labelled = curves.len() <= MAX_LEGEND_AGENTS;
    for (&agent, points) in curves {
        let color = Palette99::pick(agent).to_rgba();
        let series = chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?;
        if labelled {
            series
                .label(format!("agent {agent}"))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
    }
    chart
        .draw_series(DashedLineSeries::new(
            [(0.0, solved), (x_max, solved)],
            8,
            6,
            BLACK.stroke_width(1),
        ))
        .map_err(|e| e.to_string())?
        .label(format!("solved ({solved})"))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(1)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}
