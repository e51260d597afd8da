//! `meta-eval`: how fast each initialization adapts to held-out tasks. Every
//! initialization starts on the same held-out tasks (drawn with `eval_seed`)
//! with the same env and sampling seeds; after k in `adapt_steps` PPO
//! updates its policy plays `adapt_eval_episodes` episodes per task. A
//! task's score is its mean return; the report gives the mean over tasks and
//! a 95% t-interval, plus every task's score.

use std::path::Path;

use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use super::config::MetaConfig;
use super::inner::{ppo_iteration, progress_bar, InnerEnv};
use super::tasks::{family_spec, make_env, repeat_tasks, sample_tasks};
use super::train::population_config;
use crate::config::{check_eval_envs, PpoConfig, MAX_EVAL_ENVS};
use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::ops::context::ContextLayout;
use crate::ppo::policy::evaluate_env;
use crate::ppo::trainer::update_settings;
use crate::ppo::{AgentUpdateStats, PpoGpu};
use crate::run::{write_atomic, ContextWeights};

/// An initialization to evaluate: its parameters and, for CAVIA, its context
/// weights (then its adaptation updates move the context alone).
#[derive(Clone, Debug, PartialEq)]
pub struct Init {
    pub name: String,
    pub params: Vec<f32>,
    pub context: Option<ContextWeights>,
}

impl Init {
    /// An initialization adapted by PPO on all its parameters.
    pub fn plain(name: impl Into<String>, params: Vec<f32>) -> Init {
        Init {
            name: name.into(),
            params,
            context: None,
        }
    }
}

/// The adaptation curve of one initialization.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdaptationCurve {
    pub init: String,
    /// Mean over tasks of the mean return, per k.
    pub mean: Vec<f64>,
    /// 95% t-interval of that mean, per k.
    pub ci95_low: Vec<f64>,
    pub ci95_high: Vec<f64>,
    /// [k][task] mean return of each held-out task.
    pub per_task: Vec<Vec<f64>>,
    /// How far each adaptation update moved the policy, in order (update 1
    /// first). Absent from reports written before it existed.
    #[serde(default)]
    pub updates: Vec<UpdateSummary>,
}

/// One adaptation update's statistics, means over the held-out tasks of
/// each agent's PPO statistics (CleanRL's: the last minibatch's approx KL,
/// clip fraction and entropy; the explained variance of the rollout's
/// returns by the critic before the update).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UpdateSummary {
    pub approx_kl: f64,
    pub clipfrac: f64,
    pub entropy: f64,
    pub explained_variance: f64,
}

impl UpdateSummary {
    /// Means over agents (NaN for none).
    pub fn mean_of(stats: &[AgentUpdateStats]) -> UpdateSummary {
        let mean =
            |f: fn(&AgentUpdateStats) -> f64| stats.iter().map(f).sum::<f64>() / stats.len() as f64;
        UpdateSummary {
            approx_kl: mean(|s| s.approx_kl),
            clipfrac: mean(|s| s.clipfrac),
            entropy: mean(|s| s.entropy),
            explained_variance: mean(|s| s.explained_variance),
        }
    }
}

/// `adaptation.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdaptationReport {
    pub family: String,
    pub method: String,
    pub adapter: String,
    pub eval_tasks: usize,
    pub eval_seed: u64,
    pub adapt_steps: Vec<usize>,
    pub episodes_per_task: usize,
    pub greedy: bool,
    pub inner_learning_rate: f64,
    pub curves: Vec<AdaptationCurve>,
    pub wall_s: f64,
}

impl AdaptationReport {
    pub fn curve(&self, init: &str) -> Option<&AdaptationCurve> {
        self.curves.iter().find(|c| c.init == init)
    }
}

/// Two-sided 95% quantile of Student's t with `df` degrees of freedom
/// (table to 30, then 1.96 + 2.4/df, within 0.002 of the exact value).
pub fn t_quantile_975(df: usize) -> f64 {
    const TABLE: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::INFINITY,
        1..=30 => TABLE[df - 1],
        _ => 1.959_964 + 2.4 / df as f64,
    }
}

/// Mean and 95% t-interval of `values`.
pub fn mean_ci95(values: &[f64]) -> (f64, f64, f64) {
    let n = values.len();
    let mean = values.iter().sum::<f64>() / n.max(1) as f64;
    if n < 2 {
        return (mean, f64::NEG_INFINITY, f64::INFINITY);
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let half = t_quantile_975(n - 1) * (var / n as f64).sqrt();
    (mean, mean - half, mean + half)
}

/// Adapts each initialization on the held-out tasks and measures it at
/// every k: PPO on all parameters, or, for an init with context weights,
/// CAVIA's context steps (`meta.context_lr`, `meta.context_bound`).
/// The adaptation evaluation's population (one agent per held-out task),
/// checked with its episode count before any work, so meta-train can
/// refuse what its final evaluation could not run before it trains.
pub fn eval_config(ppo: &PpoConfig, meta: &MetaConfig) -> Result<PpoConfig> {
    meta.validate()?;
    if meta.eval_tasks > MAX_EVAL_ENVS {
        return Err(Error::config(
            "eval_tasks",
            meta.eval_tasks,
            format!(
                "at most {MAX_EVAL_ENVS} held-out tasks, each playing its episodes on its own envs"
            ),
        ));
    }
    check_eval_envs(
        "adapt_eval_episodes",
        meta.adapt_eval_episodes,
        meta.eval_tasks,
    )?;
    population_config(ppo, "eval_tasks", meta.eval_tasks)
}

pub fn adaptation_eval(
    ctx: &GpuContext,
    ppo: &PpoConfig,
    meta: &MetaConfig,
    inits: &[Init],
    progress: bool,
) -> Result<AdaptationReport> {
    let config = eval_config(ppo, meta)?;
    let spec = family_spec(meta.family, &ppo.hidden)?;
    let e_count = meta.eval_tasks;
    let n = ppo.num_envs;
    for init in inits {
        if init.params.len() != spec.param_count() {
            return Err(Error::shape(
                "meta-eval",
                &init.name,
                spec.param_count(),
                init.params.len(),
            ));
        }
        if let Some(context) = &init.context {
            let layout = ContextLayout::new(&spec, context.dim)?;
            if context.weights.len() != layout.weight_len() {
                return Err(Error::shape(
                    "meta-eval",
                    &format!("{} context weights", init.name),
                    layout.weight_len(),
                    context.weights.len(),
                ));
            }
        }
    }
    let cartpole_steps = u32::try_from(ppo.max_episode_steps).map_err(|_| {
        Error::config(
            "max_episode_steps",
            ppo.max_episode_steps,
            "must fit in 32 bits",
        )
    })?;
    let mut gpu = PpoGpu::new(ctx, &spec, &update_settings(&config))?;
    gpu.set_update_path(config.update);
    gpu.set_row_pass(config.row_pass);
    gpu.uses_fused_update(ctx)?;
    let tasks = sample_tasks(meta, meta.eval_seed, e_count);
    let k_max = *meta.adapt_steps.last().unwrap_or(&0);
    let episodes = meta.adapt_eval_episodes;
    let bar = progress_bar(progress, inits.len() * (k_max + 1), "meta-eval", " updates");
    let start = std::time::Instant::now();
    let mut curves = Vec::new();
    for init in inits {
        let name = &init.name;
        gpu.set_params(ctx, &init.params.repeat(e_count))?;
        match &init.context {
            Some(context) => {
                let dim = gpu.context().map(|c| c.layout().dim);
                if dim != Some(context.dim) {
                    gpu.enable_context(ctx, context.dim, meta.context_lr, meta.context_bound)?;
                }
                gpu.use_context(true)?;
                if let Some(step) = gpu.context_mut() {
                    step.set_policy_weight(ctx, meta.context_policy_weight)?;
                    step.set_weights(ctx, &context.weights)?;
                }
            }
            None => gpu.use_context(false)?,
        }
        gpu.reset_optimizer(ctx)?;
        gpu.set_learning_rates(&vec![ppo.learning_rate; e_count])?;
        let env = make_env(meta, &repeat_tasks(&tasks, n), e_count, n, cartpole_steps)?;
        let mut inner = InnerEnv::new(env, meta.eval_seed)?;
        let mut per_task = Vec::new();
        let mut updates = Vec::new();
        for k in 0..=k_max {
            if meta.adapt_steps.contains(&k) {
                let mut eval_env = make_env(
                    meta,
                    &repeat_tasks(&tasks, episodes),
                    e_count,
                    episodes,
                    cartpole_steps,
                )?;
                let seed = meta.eval_seed.wrapping_add(1 + k as u64);
                let returns = evaluate_env(
                    ctx,
                    &spec,
                    &gpu.params,
                    e_count,
                    eval_env.as_mut(),
                    meta.greedy_eval,
                    seed,
                )?;
                per_task.push(
                    returns
                        .iter()
                        .map(|r| r.iter().sum::<f64>() / r.len() as f64)
                        .collect::<Vec<f64>>(),
                );
            }
            if k < k_max {
                if init.context.is_some() {
                    if let Some(context) = gpu.context_mut() {
                        context.set_step(ctx, meta.context_lr_at(k + 1), meta.context_bound)?;
                    }
                }
                let iteration = ppo_iteration(ctx, &mut gpu, &mut inner, meta.eval_seed, k as u32)?;
                updates.push(UpdateSummary::mean_of(&iteration.stats));
            }
            if let Some(bar) = &bar {
                bar.inc(1);
                bar.set_message(name.clone());
            }
        }
        let stats: Vec<(f64, f64, f64)> = per_task.iter().map(|v| mean_ci95(v)).collect();
        curves.push(AdaptationCurve {
            init: name.clone(),
            mean: stats.iter().map(|s| s.0).collect(),
            ci95_low: stats.iter().map(|s| s.1).collect(),
            ci95_high: stats.iter().map(|s| s.2).collect(),
            per_task,
            updates,
        });
    }
    if let Some(bar) = &bar {
        bar.finish();
    }
    Ok(AdaptationReport {
        family: meta.family.name().to_string(),
        method: meta.method.name().to_string(),
        adapter: ctx.adapter.describe(),
        eval_tasks: e_count,
        eval_seed: meta.eval_seed,
        adapt_steps: meta.adapt_steps.clone(),
        episodes_per_task: episodes,
        greedy: meta.greedy_eval,
        inner_learning_rate: ppo.learning_rate,
        curves,
        wall_s: start.elapsed().as_secs_f64(),
    })
}

/// Writes the report as pretty JSON, atomically.
pub fn write_report(path: &Path, report: &AdaptationReport) -> Result<()> {
    let text = serde_json::to_string_pretty(report).map_err(|e| Error::Format {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    write_atomic(path, text.as_bytes())
}

/// The adaptation curves as an SVG: return against k, one line per
/// initialization with its 95% interval as error bars.
pub fn plot_adaptation(report: &AdaptationReport, path: &Path) -> Result<()> {
    let ks: Vec<f64> = report.adapt_steps.iter().map(|&k| k as f64).collect();
    let finite = |v: &&f64| v.is_finite();
    let lows = report
        .curves
        .iter()
        .flat_map(|c| c.ci95_low.iter())
        .filter(finite);
    let highs = report
        .curves
        .iter()
        .flat_map(|c| c.ci95_high.iter())
        .filter(finite);
    let y_min = lows.fold(f64::INFINITY, |a, &b| a.min(b));
    let y_max = highs.fold(f64::NEG_INFINITY, |a, &b| a.max(b));
    let (y_min, y_max) = if y_min.is_finite() && y_max > y_min {
        let pad = 0.05 * (y_max - y_min);
        (y_min - pad, y_max + pad)
    } else {
        (0.0, 1.0)
    };
    let x_max = ks.last().copied().unwrap_or(1.0).max(1.0);
    let mut svg = String::new();
    let draw_error = |e: &dyn std::fmt::Display| Error::Format {
        path: path.to_path_buf(),
        reason: format!("drawing the adaptation plot: {e}"),
    };
    {
        let root = SVGBackend::with_string(&mut svg, (960, 600)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw_error(&e))?;
        let caption = format!(
            "{} ({}): return after k adaptation updates, {} held-out tasks, 95% CI",
            report.family, report.method, report.eval_tasks
        );
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.3..x_max + 0.3, y_min..y_max)
            .map_err(|e| draw_error(&e))?;
        chart
            .configure_mesh()
            .x_desc("adaptation updates k")
            .y_desc("mean episodic return")
            .draw()
            .map_err(|e| draw_error(&e))?;
        for (index, curve) in report.curves.iter().enumerate() {
            let color = Palette99::pick(index).to_rgba();
            let shift = (index as f64 - 1.0) * 0.06;
            let points: Vec<(f64, f64)> = ks
                .iter()
                .map(|k| k + shift)
                .zip(curve.mean.iter().copied())
                .collect();
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                .map_err(|e| draw_error(&e))?
                .label(curve.init.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            let bars = points
                .iter()
                .zip(curve.ci95_low.iter().zip(&curve.ci95_high))
                .filter(|(_, (lo, hi))| lo.is_finite() && hi.is_finite())
                .map(|(&(x, m), (&lo, &hi))| {
                    ErrorBar::new_vertical(x, lo, m, hi, color.filled(), 8)
                });
            chart.draw_series(bars).map_err(|e| draw_error(&e))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| draw_error(&e))?;
        root.present().map_err(|e| draw_error(&e))?;
    }
    write_atomic(path, svg.as_bytes())
}
