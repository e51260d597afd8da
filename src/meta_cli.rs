//! The `meta-train` and `meta-eval` commands.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use ppo_wgpu::config::PpoConfig;
use ppo_wgpu::gpu::GpuContext;
use ppo_wgpu::meta::config::split_sets;
use ppo_wgpu::meta::eval::{
    adaptation_eval, eval_config, plot_adaptation, write_report, AdaptationReport, Init,
};
use ppo_wgpu::meta::tasks::family_spec;
use ppo_wgpu::meta::train::{
    check_baseline, inner_config, load_init, load_init_with_context, meta_train, multitask_config,
    MetaTrainOptions, META_CHECKPOINT_FILE, META_CONFIG_FILE, MULTITASK_CHECKPOINT_FILE,
};
use ppo_wgpu::meta::{MetaConfig, TaskFamily};
use ppo_wgpu::ppo::trainer::initial_params;
use ppo_wgpu::run::RunDir;
use ppo_wgpu::{Error, Result};

use crate::AdapterArgs;

/// Default name of the adaptation report (`adaptation.json`, `adaptation.svg`).
pub const ADAPTATION_NAME: &str = "adaptation";

#[derive(Args, Debug)]
pub struct MetaTrainArgs {
    /// Task family: cartpole (physics ranges + an unobserved target velocity) or nav (2-D goals).
    #[arg(long, default_value = "cartpole")]
    family: String,
    /// Outer step: reptile, fomaml (first-order MAML) or cavia (first-order CAVIA: only a task context adapts)
    #[arg(long)]
    method: Option<String>,
    /// PPO preset of the inner loop (see `train --help`); default: the family's.
    #[arg(long)]
    preset: Option<String>,
    /// TOML file of inner-loop PPO settings, applied over the preset.
    #[arg(long)]
    config: Option<PathBuf>,
    /// key=value overrides, PPO or meta-learning keys (meta_batch, inner_updates,
    /// meta_lr, meta_iterations, length=[0.25,1.0], adapt_steps=[0,1,2,5,10], ...).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Folder for run folders.
    #[arg(long, default_value = "runs")]
    runs_dir: PathBuf,
    /// Skip the multi-task baseline.
    #[arg(long)]
    no_baseline: bool,
    /// Skip the adaptation evaluation at the end.
    #[arg(long)]
    no_eval: bool,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    adapter: AdapterArgs,
}

#[derive(Args, Debug)]
pub struct MetaEvalArgs {
    /// A run folder written by `meta-train`.
    run: PathBuf,
    /// Evaluation overrides: eval_tasks, eval_seed, adapt_steps, adapt_eval_episodes, greedy_eval.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Write NAME.json and NAME.svg in the run folder (keeps earlier reports).
    #[arg(long, default_value = "adaptation")]
    name: String,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    adapter: AdapterArgs,
}

fn parse_family(name: &str) -> Result<TaskFamily> {
    match name {
        "cartpole" => Ok(TaskFamily::Cartpole),
        "nav" => Ok(TaskFamily::Nav),
        _ => Err(Error::config(
            "--family",
            name,
            format!(
                "unknown task family; valid: {}",
                TaskFamily::NAMES.join(", ")
            ),
        )),
    }
}

/// The inner-loop preset a family trains well with by default.
pub fn family_preset(family: TaskFamily) -> &'static str {
    match family {
        TaskFamily::Cartpole | TaskFamily::Nav => "meta",
    }
}

fn open_context(adapter: &AdapterArgs) -> Result<GpuContext> {
    let ctx = GpuContext::new(&adapter.options())?;
    eprintln!("adapter: {}", ctx.adapter.describe());
    Ok(ctx)
}

pub fn meta_train_command(args: &MetaTrainArgs) -> Result<ExitCode> {
    let family = parse_family(&args.family)?;
    let (ppo_sets, mut meta_sets) = split_sets(&args.sets)?;
    if let Some(method) = &args.method {
        meta_sets.push(("method".into(), toml::Value::String(method.clone())));
    }
    let preset = args.preset.as_deref().unwrap_or(family_preset(family));
    let ppo = PpoConfig::resolve(Some(preset), args.config.as_deref(), &ppo_sets)?;
    let meta = MetaConfig::resolve(family, &meta_sets)?;
    // Every config error is reported before the adapter is touched.
    family_spec(family, &ppo.hidden)?;
    inner_config(&ppo, &meta)?;
    check_baseline(&meta, !args.no_baseline)?;
    if !args.no_baseline {
        multitask_config(&ppo, &meta)?;
    }
    // The final adaptation evaluation too, so nothing fails after training.
    eval_config(&ppo, &meta)?;
    let ctx = open_context(&args.adapter)?;
    eprintln!(
        "{} {}: {} outer steps x {} tasks x {} inner updates ({} envs x {} steps each), hidden {:?}",
        family.name(),
        meta.method.name(),
        meta.meta_iterations,
        meta.meta_batch,
        meta.inner_updates,
        ppo.num_envs,
        ppo.num_steps,
        ppo.hidden
    );
    let stop = crate::stop::StopRequest::install("stopping after this outer step");
    let report = meta_train(
        &ppo,
        &meta,
        &ctx,
        &MetaTrainOptions {
            runs_root: args.runs_dir.clone(),
            progress: !args.quiet,
            stop: Some(stop.flag()),
            baseline: !args.no_baseline,
        },
    )?;
    println!("run: {}", report.run_dir.display());
    println!(
        "meta-training: {} outer steps, {} env steps in {:.1} s",
        report.meta_iterations, report.meta_env_steps, report.meta_wall_s
    );
    if let Some(s) = report.multitask_wall_s {
        println!("multi-task baseline: {s:.1} s");
    }
    if report.interrupted {
        return Ok(stop.exit_code());
    }
    if args.no_eval {
        return Ok(ExitCode::SUCCESS);
    }
    evaluate_run(
        &ctx,
        &report.run_dir,
        &ppo,
        &meta,
        !args.no_baseline,
        !args.quiet,
        ADAPTATION_NAME,
    )
    .map(|()| ExitCode::SUCCESS)
}

pub fn meta_eval_command(args: &MetaEvalArgs) -> Result<()> {
    let run = RunDir::open(&args.run)?;
    let ppo = ppo_wgpu::ppo::trainer::load_run_config(&run)?;
    let meta_path = run.path().join(META_CONFIG_FILE);
    let text = std::fs::read_to_string(&meta_path).map_err(|source| Error::Io {
        path: meta_path.clone(),
        source,
    })?;
    let saved: MetaConfig = toml::from_str(&text).map_err(|e| Error::Format {
        path: meta_path.clone(),
        reason: e.to_string(),
    })?;
    let (ppo_sets, meta_sets) = split_sets(&args.sets)?;
    const EVAL_KEYS: [&str; 5] = [
        "eval_tasks",
        "eval_seed",
        "adapt_steps",
        "adapt_eval_episodes",
        "greedy_eval",
    ];
    if let Some(item) = ppo_sets.first() {
        return Err(Error::config(
            "--set",
            item,
            format!("meta-eval takes only {}", EVAL_KEYS.join(", ")),
        ));
    }
    if let Some((key, value)) = meta_sets
        .iter()
        .find(|(k, _)| !EVAL_KEYS.contains(&k.as_str()))
    {
        return Err(Error::config(
            key,
            value,
            format!(
                "meta-eval takes only {}; the rest is fixed by the run",
                EVAL_KEYS.join(", ")
            ),
        ));
    }
    let meta = saved.with_sets(&meta_sets)?;
    ppo_wgpu::config::check_name("--name", &args.name)?;
    let has_baseline = run.path().join(MULTITASK_CHECKPOINT_FILE).exists();
    eval_config(&ppo, &meta)?;
    let ctx = open_context(&args.adapter)?;
    evaluate_run(
        &ctx,
        run.path(),
        &ppo,
        &meta,
        has_baseline,
        !args.quiet,
        &args.name,
    )
}

/// Adapts meta, scratch (and multi-task) initializations on the held-out
/// tasks; writes `{name}.json` and `{name}.svg` and prints the table.
fn evaluate_run(
    ctx: &GpuContext,
    run: &Path,
    ppo: &PpoConfig,
    meta: &MetaConfig,
    with_baseline: bool,
    progress: bool,
    name: &str,
) -> Result<()> {
    let spec = family_spec(meta.family, &ppo.hidden)?;
    let (theta, context) = load_init_with_context(&run.join(META_CHECKPOINT_FILE), &spec)?;
    let mut inits = vec![Init {
        name: format!("meta ({})", meta.method.name()),
        params: theta,
        context,
    }];
    inits.push(Init::plain("scratch", initial_params(&spec, 1, ppo.seed)));
    if with_baseline {
        inits.push(Init::plain(
            "multi-task",
            load_init(&run.join(MULTITASK_CHECKPOINT_FILE), &spec)?,
        ));
    }
    let report = adaptation_eval(ctx, ppo, meta, &inits, progress)?;
    let (json, svg) = (
        run.join(format!("{name}.json")),
        run.join(format!("{name}.svg")),
    );
    write_report(&json, &report)?;
    plot_adaptation(&report, &svg)?;
    print_table(&report);
    println!("wrote {} and {}", json.display(), svg.display());
    Ok(())
}

fn print_table(report: &AdaptationReport) {
    println!(
        "return after k adaptation updates on {} held-out tasks (mean [95% CI]):",
        report.eval_tasks
    );
    print!("{:<18}", "init");
    for k in &report.adapt_steps {
        print!("{:>24}", format!("k={k}"));
    }
    println!();
    for curve in &report.curves {
        print!("{:<18}", curve.init);
        for i in 0..report.adapt_steps.len() {
            let cell = format!(
                "{:.1} [{:.1}, {:.1}]",
                curve.mean[i], curve.ci95_low[i], curve.ci95_high[i]
            );
            print!("{cell:>24}");
        }
        println!();
    }
    // How far the first updates moved each init (all of them are in the JSON).
    println!("approx KL of adaptation updates 1, 2, 3 (mean over tasks):");
    for curve in &report.curves {
        let kl: Vec<String> = curve
            .updates
            .iter()
            .take(3)
            .map(|u| format!("{:.4}", u.approx_kl))
            .collect();
        println!("{:<18}{}", curve.init, kl.join("  "));
    }
}
