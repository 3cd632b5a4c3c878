//! `lockstep plot RUN_DIR` (and the end of every run): loss and metric curves from
//! `<run dir>/metrics.csv`, rendered with plotters to `<run dir>/curves.svg`. Left panel: the
//! training loss and the held-out loss by round; right panel: every other held-out metric
//! (accuracy, auc, r2 ...) by round. SVG needs no fonts or image codecs on the machine and opens
//! in any browser.

use super::csv;
use crate::error::RuntimeError;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

/// Render `<run_dir>/metrics.csv` to `<run_dir>/curves.svg`; returns the file written.
///
/// # Errors
/// [`RuntimeError::Io`] naming `metrics.csv` (missing, empty, malformed) or the image.
pub fn plot(run_dir: &Path) -> Result<PathBuf, RuntimeError> {
    let src = run_dir.join("metrics.csv");
    let (header, rows) = csv::read(&src)?;
    if rows.is_empty() {
        return Err(RuntimeError::io("plot", &src, "no rows yet"));
    }
    let series = |i: usize| -> Vec<(f64, f64)> {
        rows.iter()
            .filter(|r| r.len() > i && r[i].is_finite())
            .map(|r| (r[0], r[i]))
            .collect()
    };
    let mut losses = Vec::new();
    let mut metrics = Vec::new();
    for (i, h) in header.iter().enumerate() {
        match h.as_str() {
            "train_loss" | "eval_loss" => losses.push((h.clone(), series(i))),
            h if h.starts_with("eval_") && h != "eval_mse" => {
                metrics.push((h.to_string(), series(i)))
            }
            _ => {}
        }
    }
    let out = run_dir.join("curves.svg");
    let err = |e: &dyn std::fmt::Display| RuntimeError::io("plot", &out, e.to_string());
    {
        let root = SVGBackend::new(&out, (1200, 450)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let panels = root.split_evenly((1, 2));
        draw(&panels[0], "loss", &losses).map_err(|e| err(&e))?;
        draw(&panels[1], "held-out metrics", &metrics).map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    Ok(out)
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

fn draw(
    area: &Area<'_>,
    title: &str,
    lines: &[(String, Vec<(f64, f64)>)],
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let points = || lines.iter().flat_map(|(_, s)| s.iter());
    let x_max = points().map(|p| p.0).fold(1.0f64, f64::max);
    let (mut lo, mut hi) =
        points().fold((f64::MAX, f64::MIN), |(l, h), p| (l.min(p.1), h.max(p.1)));
    if lo > hi {
        (lo, hi) = (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(1e-6);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..x_max, (lo - pad)..(hi + pad))?;
    chart.configure_mesh().x_desc("round").draw()?;
    for (i, (name, s)) in lines.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(s.iter().copied(), color.stroke_width(2)))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
    }
    if !lines.is_empty() {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }
    Ok(())
}
