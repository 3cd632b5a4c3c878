//! `lockstep plot RUN_DIR` (and the end of every run): loss and metric curves from
//! `<run dir>/metrics.csv`, rendered with plotters to `<run dir>/curves.svg`. Left panel: the
//! training loss and the held-out loss by round; right panel: every other held-out metric
//! (accuracy, auc, r2 ...) by round. A stream's file adds its prequential metrics (`preq_*`,
//! loss on the left, the others on the right), and its x axis reads `round (rows trained)`. SVG
//! needs no fonts or image codecs on the machine and opens in any browser.

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
    if !run_dir.is_dir() {
        return Err(RuntimeError::io(
            "plot",
            run_dir,
            "no such directory (give the run directory, e.g. runs/credit)",
        ));
    }
    if !src.exists() {
        return Err(RuntimeError::io(
            "plot",
            &src,
            format!(
                "not found: this run wrote no metrics (a row is written at each evaluation, and \
                 none has completed yet; or {} is not a run directory)",
                run_dir.display()
            ),
        ));
    }
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
            "train_loss" | "eval_loss" | "preq_loss" => losses.push((h.clone(), series(i))),
            h if (h.starts_with("eval_") || h.starts_with("preq_")) && !h.ends_with("_mse") => {
                metrics.push((h.to_string(), series(i)))
            }
            _ => {}
        }
    }
    // A stream's rows trained by round (from 0), for the x axis's labels.
    let rows_by_round: Option<Vec<(f64, f64)>> = header.iter().position(|h| h == "rows").map(|i| {
        std::iter::once((0.0, 0.0))
            .chain(rows.iter().filter(|r| r.len() > i).map(|r| (r[0], r[i])))
            .collect()
    });
    let x = XAxis {
        rows: rows_by_round,
    };
    let title = match metrics.iter().any(|(h, _)| h.starts_with("preq_")) {
        true => "prequential and held-out metrics",
        false => "held-out metrics",
    };
    let out = run_dir.join("curves.svg");
    let err = |e: &dyn std::fmt::Display| RuntimeError::io("plot", &out, e.to_string());
    {
        let root = SVGBackend::new(&out, (1200, 450)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let panels = root.split_evenly((1, 2));
        draw(&panels[0], "loss", &losses, &x).map_err(|e| err(&e))?;
        draw(&panels[1], title, &metrics, &x).map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    Ok(out)
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

/// The x axis: rounds, labelled with the rows trained by then for a stream.
struct XAxis {
    /// `(round, rows trained)` points, from `(0, 0)`, for a stream.
    rows: Option<Vec<(f64, f64)>>,
}

impl XAxis {
    fn desc(&self) -> &'static str {
        match self.rows {
            Some(_) => "round (rows trained)",
            None => "round",
        }
    }

    /// A stream's tick label: `round (rows)`.
    fn label(&self, round: f64) -> String {
        let Some(points) = &self.rows else {
            return format!("{round}");
        };
        // Rows at `round`, linear between the rows of the file (rounds have equal shares).
        let rows = points
            .windows(2)
            .find(|w| round <= w[1].0)
            .map(|w| {
                let (a, b) = (w[0], w[1]);
                let t = if b.0 > a.0 {
                    (round - a.0) / (b.0 - a.0)
                } else {
                    1.0
                };
                a.1 + t * (b.1 - a.1)
            })
            .unwrap_or_else(|| points.last().map_or(0.0, |p| p.1));
        if round.fract() == 0.0 {
            format!("{round:.0} ({rows:.0})")
        } else {
            format!("{round:.1} ({rows:.0})")
        }
    }
}

fn draw(
    area: &Area<'_>,
    title: &str,
    lines: &[(String, Vec<(f64, f64)>)],
    x: &XAxis,
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
    let label = |v: &f64| x.label(*v);
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(x.desc());
    if x.rows.is_some() {
        mesh.x_labels(5).x_label_formatter(&label);
    }
    mesh.draw()?;
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
