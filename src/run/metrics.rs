//! `metrics.csv`: one row per agent per iteration under CleanRL's tag names,
//! written a whole row at a time so the file is valid CSV after every row.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{io_error, write_atomic};
use crate::error::{Error, Result};

/// The columns of `metrics.csv`, in file order.
pub const METRICS_COLUMNS: [&str; 15] = [
    "iteration",
    "global_step",
    "agent",
    "charts/episodic_return",
    "charts/episodic_length",
    "charts/SPS",
    "charts/learning_rate",
    "losses/value_loss",
    "losses/policy_loss",
    "losses/entropy",
    "losses/old_approx_kl",
    "losses/approx_kl",
    "losses/clipfrac",
    "losses/explained_variance",
    "wall_s",
];

/// One agent's numbers for one iteration. `None` is an empty cell: a value
/// that does not exist yet (no episode has finished) or was not measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetricsRow {
    /// Iteration, counted from 1 as in CleanRL.
    pub iteration: usize,
    /// Environment steps of this agent so far (CleanRL's `global_step`).
    pub global_step: u64,
    /// Agent index `p` in `0..num_agents`.
    pub agent: usize,
    /// `charts/episodic_return`: mean return of the episodes that finished
    /// this iteration.
    pub episodic_return: Option<f64>,
    /// `charts/episodic_length`.
    pub episodic_length: Option<f64>,
    /// `charts/SPS`: environment steps per second.
    pub sps: Option<f64>,
    /// `charts/learning_rate` after annealing.
    pub learning_rate: Option<f64>,
    /// `losses/value_loss`.
    pub value_loss: Option<f64>,
    /// `losses/policy_loss`.
    pub policy_loss: Option<f64>,
    /// `losses/entropy`.
    pub entropy: Option<f64>,
    /// `losses/old_approx_kl`.
    pub old_approx_kl: Option<f64>,
    /// `losses/approx_kl`.
    pub approx_kl: Option<f64>,
    /// `losses/clipfrac`.
    pub clipfrac: Option<f64>,
    /// `losses/explained_variance`.
    pub explained_variance: Option<f64>,
    /// Seconds since the run started.
    pub wall_s: f64,
}

impl MetricsRow {
    /// The cells in [`METRICS_COLUMNS`] order, for [`MetricsCsv::append`].
    pub fn to_cells(&self) -> Vec<String> {
        let mut cells = vec![
            self.iteration.to_string(),
            self.global_step.to_string(),
            self.agent.to_string(),
        ];
        cells.extend(self.optional_values().iter().map(|v| match v {
            Some(v) => format_f64(*v),
            None => String::new(),
        }));
        cells.push(format_f64(self.wall_s));
        cells
    }

    /// The optional columns, in file order (between `agent` and `wall_s`).
    fn optional_values(&self) -> [Option<f64>; 11] {
        [
            self.episodic_return,
            self.episodic_length,
            self.sps,
            self.learning_rate,
            self.value_loss,
            self.policy_loss,
            self.entropy,
            self.old_approx_kl,
            self.approx_kl,
            self.clipfrac,
            self.explained_variance,
        ]
    }

    fn optional_values_mut(&mut self) -> [&mut Option<f64>; 11] {
        [
            &mut self.episodic_return,
            &mut self.episodic_length,
            &mut self.sps,
            &mut self.learning_rate,
            &mut self.value_loss,
            &mut self.policy_loss,
            &mut self.entropy,
            &mut self.old_approx_kl,
            &mut self.approx_kl,
            &mut self.clipfrac,
            &mut self.explained_variance,
        ]
    }
}

/// Shortest text that reads back to the same f64; exponent form only where
/// plain digits would be long.
fn format_f64(v: f64) -> String {
    let magnitude = v.abs();
    if v != 0.0 && v.is_finite() && !(1e-4..1e16).contains(&magnitude) {
        format!("{v:e}")
    } else {
        v.to_string()
    }
}

/// An open CSV log. Each [`append`](Self::append) writes one whole line with
/// a single write call, so a killed process leaves only complete rows
/// (rows are not fsynced: a power loss may drop the last few).
#[derive(Debug)]
pub struct MetricsCsv {
    path: PathBuf,
    file: File,
    num_columns: usize,
}

impl MetricsCsv {
    /// Creates (or replaces) the file with just the header line.
    pub fn create(path: &Path, columns: &[&str]) -> Result<MetricsCsv> {
        write_atomic(path, format!("{}\n", columns.join(",")).as_bytes())?;
        Self::append_to(path, columns.len())
    }

    /// Opens an existing log to add rows (resuming a run). The header must
    /// equal `columns`; an unterminated last line (the write a crash cut
    /// short) is removed first.
    pub fn open_append(path: &Path, columns: &[&str]) -> Result<MetricsCsv> {
        let text = fs::read_to_string(path).map_err(|source| io_error(path, source))?;
        let header = text.lines().next().unwrap_or("");
        if header != columns.join(",") {
            return Err(Error::Format {
                path: path.to_path_buf(),
                reason: format!("header is {header:?}, expected {:?}", columns.join(",")),
            });
        }
        let complete = text.rfind('\n').map_or(0, |i| i + 1);
        if complete < text.len() {
            let file = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|source| io_error(path, source))?;
            file.set_len(complete as u64)
                .map_err(|source| io_error(path, source))?;
        }
        Self::append_to(path, columns.len())
    }

    fn append_to(path: &Path, num_columns: usize) -> Result<MetricsCsv> {
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|source| io_error(path, source))?;
        Ok(MetricsCsv {
            path: path.to_path_buf(),
            file,
            num_columns,
        })
    }

    /// Appends one row, e.g. `csv.append(&row.to_cells())`. Cells are written
    /// unquoted, so one containing a comma, quote or line break is refused.
    pub fn append(&mut self, cells: &[String]) -> Result<()> {
        if cells.len() != self.num_columns {
            return Err(Error::shape(
                "MetricsCsv::append",
                "cells",
                self.num_columns,
                cells.len(),
            ));
        }
        if let Some(cell) = cells.iter().find(|c| c.contains([',', '"', '\n', '\r'])) {
            return Err(Error::Format {
                path: self.path.clone(),
                reason: format!("cell {cell:?} would need CSV quoting"),
            });
        }
        let mut line = cells.join(",");
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.flush())
            .map_err(|source| io_error(&self.path, source))
    }
}

/// Reads `metrics.csv` back. Columns are found by name, so extra columns
/// are ignored; an unterminated last line (a write cut short) is skipped.
pub fn read_metrics(path: &Path) -> Result<Vec<MetricsRow>> {
    let text = fs::read_to_string(path).map_err(|source| io_error(path, source))?;
    let format_error = |line: usize, reason: String| Error::Format {
        path: path.to_path_buf(),
        reason: format!("line {line}: {reason}"),
    };
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    let mut lines = complete.lines().map(|l| l.strip_suffix('\r').unwrap_or(l));
    let header: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
    let mut index = [0usize; METRICS_COLUMNS.len()];
    for (slot, name) in index.iter_mut().zip(METRICS_COLUMNS) {
        *slot = header
            .iter()
            .position(|h| *h == name)
            .ok_or_else(|| format_error(1, format!("missing column {name:?}")))?;
    }

    let mut rows = Vec::new();
    for (i, line) in lines.enumerate() {
        let line_number = i + 2;
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != header.len() {
            return Err(format_error(
                line_number,
                format!("{} cells, header has {}", fields.len(), header.len()),
            ));
        }
        let cell = |column: usize| fields[index[column]].trim();
        let required = |column: usize| -> Result<&str> {
            let text = cell(column);
            if text.is_empty() {
                Err(format_error(
                    line_number,
                    format!("{} is empty", METRICS_COLUMNS[column]),
                ))
            } else {
                Ok(text)
            }
        };
        let bad = |column: usize| {
            format_error(
                line_number,
                format!(
                    "{} = {:?} is not a number",
                    METRICS_COLUMNS[column],
                    cell(column)
                ),
            )
        };
        let mut row = MetricsRow {
            iteration: required(0)?.parse().map_err(|_| bad(0))?,
            global_step: required(1)?.parse().map_err(|_| bad(1))?,
            agent: required(2)?.parse().map_err(|_| bad(2))?,
            wall_s: required(14)?.parse().map_err(|_| bad(14))?,
            ..MetricsRow::default()
        };
        for (offset, slot) in row.optional_values_mut().into_iter().enumerate() {
            let column = 3 + offset;
            let text = cell(column);
            *slot = if text.is_empty() {
                None
            } else {
                Some(text.parse().map_err(|_| bad(column))?)
            };
        }
        rows.push(row);
    }
    Ok(rows)
}
