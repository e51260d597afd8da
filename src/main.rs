//! The `ppo-wgpu` command-line tool.

use std::process::ExitCode;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

mod meta_cli;
mod stop;
use ppo_wgpu::config::PpoConfig;
use ppo_wgpu::env::CartPoleParams;
use ppo_wgpu::gpu::threads::{self, SoftwareThreads};
use ppo_wgpu::gpu::{list_adapters, AdapterOptions, GpuContext};
use ppo_wgpu::ppo::policy::{evaluate_env_id, EvalSettings};
use ppo_wgpu::ppo::trainer::{self, TrainOptions};

#[derive(Parser)]
#[command(
    name = "ppo-wgpu",
    version,
    about = "PPO as WGSL compute kernels on any GPU or a CPU software adapter"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Adapter selection flags shared by every command that touches the GPU.
#[derive(Args, Clone, Debug, Default)]
struct AdapterArgs {
    /// Backend: vulkan, gl, metal, dx12 (default: WGPU_BACKEND, else all).
    #[arg(long)]
    backend: Option<String>,
    /// Substring of the adapter name, e.g. llvmpipe (default: WGPU_ADAPTER_NAME).
    #[arg(long)]
    adapter: Option<String>,
    /// Power preference: high or low (default: WGPU_POWER_PREF, else high).
    #[arg(long)]
    power: Option<String>,
}

impl AdapterArgs {
    fn options(&self) -> AdapterOptions {
        AdapterOptions {
            backend: self.backend.clone(),
            adapter: self.adapter.clone(),
            power: self.power.clone(),
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// List every adapter wgpu can see, marking the one that would be chosen.
    Adapters {
        #[command(flatten)]
        adapter: AdapterArgs,
    },
    /// Train PPO on a classic-control env, CartPole-v1 unless --env says
    /// (CleanRL's loop; every kernel on the adapter).
    Train(TrainArgs),
    /// Evaluate a checkpoint on its env (CartPole optionally with other physics).
    Eval(EvalArgs),
    /// Train each preset × population size and print a throughput table.
    Bench(BenchArgs),
    /// Meta-train an initialization (Reptile / first-order MAML, PPO inner
    /// loop) and the multi-task baseline, then evaluate adaptation.
    MetaTrain(meta_cli::MetaTrainArgs),
    /// Adaptation curves of a meta-train run's initializations on held-out tasks.
    MetaEval(meta_cli::MetaEvalArgs),
}

#[derive(Args, Debug)]
struct BenchArgs {
    /// Presets to run, comma-separated.
    #[arg(long, default_value = "default,cleanrl")]
    presets: String,
    /// Envs to run each preset on, comma-separated Gymnasium ids (default:
    /// each preset's own, CartPole-v1 for most).
    #[arg(long, value_name = "IDS")]
    envs: Option<String>,
    /// Population sizes to run, comma-separated.
    #[arg(long, default_value = "1,64")]
    agents: String,
    /// Cap on env steps per agent (keeps large populations short); 0 = the preset's.
    #[arg(long, default_value_t = 0)]
    max_timesteps: usize,
    /// Where the envs run, comma-separated: cpu (host, f64), gpu (device kernel).
    #[arg(long, default_value = "cpu")]
    env_devices: String,
    /// Also write the table as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Threads of a software adapter, for every row (the driver loads once):
    /// auto (one thread where `train` would take it for every row), driver, single.
    #[arg(long, default_value = "auto", value_name = "auto|driver|single")]
    software_threads: String,
    #[command(flatten)]
    adapter: AdapterArgs,
}

#[derive(Args, Debug)]
struct TrainArgs {
    /// The env, by Gymnasium id: CartPole-v1 (default), Acrobot-v1,
    /// MountainCar-v0; sets env_id.
    #[arg(long, value_name = "ID")]
    env: Option<String>,
    /// Preset: default (fastest to 475 here), cleanrl, seed (the seed article's setup), linear.
    /// Without one, CartPole-v1 gets default and the other envs cleanrl.
    #[arg(long)]
    preset: Option<String>,
    /// TOML file of settings (CleanRL names), applied over the preset.
    #[arg(long)]
    config: Option<PathBuf>,
    /// key=value overrides, applied last (repeatable), e.g. --set learning_rate=1e-3.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Independent agents trained together (seeds seed, seed+1, ...).
    #[arg(long)]
    num_agents: Option<usize>,
    /// Hidden layer sizes, e.g. 64,64; '' for the plain linear policy and value.
    #[arg(long)]
    hidden: Option<String>,
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long)]
    total_timesteps: Option<usize>,
    #[arg(long)]
    exp_name: Option<String>,
    /// Where envs are stepped: cpu (f64, Gymnasium-exact) or gpu (f32, a
    /// whole rollout in one submission); sets env_device.
    #[arg(long, value_name = "cpu|gpu")]
    env_device: Option<String>,
    /// Folder for run folders.
    #[arg(long, default_value = "runs")]
    runs_dir: PathBuf,
    /// Continue the run in this folder from its last checkpoint.
    #[arg(long, value_name = "RUN_DIR")]
    resume: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    adapter: AdapterArgs,
}

#[derive(Args, Debug)]
struct EvalArgs {
    /// A checkpoint.safetensors written by `train`.
    #[arg(long)]
    checkpoint: PathBuf,
    #[arg(long, default_value_t = 100)]
    episodes: usize,
    /// Argmax actions instead of sampling.
    #[arg(long)]
    greedy: bool,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The env, by Gymnasium id (default: the one the checkpoint was trained
    /// on, CartPole-v1 for checkpoints that do not say).
    #[arg(long, value_name = "ID")]
    env: Option<String>,
    /// Episode limit (default: the env's Gymnasium time limit).
    #[arg(long)]
    max_episode_steps: Option<u32>,
    /// Physics of CartPole-v1 (Gymnasium's by default); negative values may
    /// follow a space (`--polarity -1`).
    #[arg(long, allow_negative_numbers = true)]
    gravity: Option<f64>,
    #[arg(long, allow_negative_numbers = true)]
    masscart: Option<f64>,
    #[arg(long, allow_negative_numbers = true)]
    masspole: Option<f64>,
    /// Half the pole's length.
    #[arg(long, allow_negative_numbers = true)]
    length: Option<f64>,
    #[arg(long, allow_negative_numbers = true)]
    force_mag: Option<f64>,
    #[arg(long, allow_negative_numbers = true)]
    tau: Option<f64>,
    /// -1 flips the motor.
    #[arg(long, allow_negative_numbers = true)]
    polarity: Option<f64>,
    #[command(flatten)]
    adapter: AdapterArgs,
}

fn adapters(args: &AdapterArgs) -> ppo_wgpu::Result<()> {
    let listed = list_adapters(&args.options())?;
    if !listed.iter().any(|(_, chosen)| *chosen) {
        // Nothing matches: opening a context gives the error that lists what exists.
        ppo_wgpu::GpuContext::new(&args.options())?;
    }
    for (summary, chosen) in &listed {
        let mark = if *chosen { "*" } else { " " };
        println!("{mark} {}", summary.describe());
        println!(
            "    software: {}  max storage binding: {} MiB  max buffer: {} MiB  storage buffers/stage: {}  invocations/workgroup: {}  workgroup memory: {} B  workgroups/dim: {}",
            summary.is_software,
            summary.max_storage_buffer_binding_size >> 20,
            summary.max_buffer_size >> 20,
            summary.max_storage_buffers_per_shader_stage,
            summary.max_compute_invocations_per_workgroup,
            summary.max_compute_workgroup_storage_size,
            summary.max_compute_workgroups_per_dimension,
        );
    }
    println!("(* = the adapter `train` would use)");
    Ok(())
}

fn train(args: &TrainArgs) -> ppo_wgpu::Result<ExitCode> {
    let mut sets = args.sets.clone();
    let flags = [
        ("env_id", args.env.clone()),
        ("num_agents", args.num_agents.map(|v| v.to_string())),
        ("hidden", args.hidden.clone()),
        ("seed", args.seed.map(|v| v.to_string())),
        (
            "total_timesteps",
            args.total_timesteps.map(|v| v.to_string()),
        ),
        ("exp_name", args.exp_name.clone()),
        ("env_device", args.env_device.clone()),
    ];
    for (key, value) in flags {
        if let Some(value) = value {
            sets.push(format!("{key}={value}"));
        }
    }
    let config = match &args.resume {
        Some(dir) => {
            if args.preset.is_some() || args.config.is_some() || !sets.is_empty() {
                return Err(ppo_wgpu::Error::config(
                    "--resume",
                    dir.display(),
                    "a resumed run keeps its own config; drop --preset/--config/--set and the setting flags",
                ));
            }
            let run = ppo_wgpu::run::RunDir::open(dir)?;
            trainer::check_resumable(&run)?;
            trainer::load_run_config(&run)?
        }
        None => PpoConfig::resolve(args.preset.as_deref(), args.config.as_deref(), &sets)?,
    };
    // Every config error is reported before the adapter is touched.
    config.validate()?;
    if args.resume.is_none() {
        ppo_wgpu::run::check_runs_root(&args.runs_dir)?;
    }
    // Before the driver loads (it reads LP_NUM_THREADS once) and before the
    // Ctrl-C handler's thread starts.
    let threads = threads::apply(config.software_threads, &config.thread_workload());
    let ctx = GpuContext::new(&args.adapter.options())?;
    eprintln!("adapter: {}", ctx.adapter.describe());
    if ctx.adapter.is_software {
        eprintln!(
            "(a CPU software adapter: fine for classic control; `ppo-wgpu adapters` lists the others)"
        );
        eprintln!("software threads: {}", threads.describe());
    }
    let sizes = config.sizes();
    eprintln!(
        "{} agents x {} envs x {} steps, {} iterations, hidden {:?}",
        config.num_agents, config.num_envs, config.num_steps, sizes.num_iterations, config.hidden
    );
    // First SIGINT or SIGTERM: finish the iteration, save, exit 130 / 143.
    // Second: exit now.
    let stop = stop::StopRequest::install("stopping after this iteration");
    let report = trainer::train(
        &config,
        &ctx,
        &TrainOptions {
            runs_root: args.runs_dir.clone(),
            resume: args.resume.clone(),
            progress: !args.quiet,
            stop: Some(stop.flag()),
            max_iterations: None,
        },
    )?;
    let s = &report.summary;
    println!("run: {}", report.run_dir.display());
    println!(
        "{} env steps in {:.1} s ({:.0} steps/s) on {}",
        s.global_steps, s.wall_s, s.sps, s.adapter
    );
    let solved = s.solved_return;
    for p in 0..config.num_agents {
        let reached = match (
            s.steps_to_475.get(p).copied().flatten(),
            s.seconds_to_475.get(p).copied().flatten(),
        ) {
            (Some(steps), Some(secs)) => {
                format!("reached mean return {solved} at step {steps} ({secs:.1} s)")
            }
            _ => format!("did not reach mean return {solved}"),
        };
        let eval = match (s.final_eval_mean.get(p), s.final_eval_std.get(p)) {
            (Some(m), Some(sd)) => format!("greedy eval {m:.1} ± {sd:.1}"),
            _ => "no final eval (interrupted)".to_string(),
        };
        println!("agent {p}: {reached}; {eval}");
    }
    if report.interrupted {
        println!(
            "interrupted at iteration {}: resume with --resume {}",
            report.iteration,
            report.run_dir.display()
        );
        return Ok(stop.exit_code());
    }
    Ok(ExitCode::SUCCESS)
}

fn eval(args: &EvalArgs) -> ppo_wgpu::Result<()> {
    if args.episodes == 0 {
        return Err(ppo_wgpu::Error::config(
            "--episodes",
            0,
            "must be at least 1",
        ));
    }
    ppo_wgpu::config::check_eval_envs("--episodes", args.episodes, 1)?;
    let checkpoint = ppo_wgpu::run::load_checkpoint(&args.checkpoint)?;
    ppo_wgpu::config::check_eval_envs("--episodes", args.episodes, checkpoint.agents.len())?;
    let actor = &checkpoint.actor_layers;
    let (obs_dim, num_actions) = match (actor.first(), actor.last()) {
        (Some(first), Some(last)) => (first.0, last.1),
        _ => {
            return Err(ppo_wgpu::Error::Format {
                path: args.checkpoint.clone(),
                reason: "checkpoint has no actor layers".into(),
            })
        }
    };
    let env = eval_env(args, &checkpoint)?;
    check_fits_env(&args.checkpoint, &checkpoint, env)?;
    let hidden: Vec<usize> = actor.iter().skip(1).map(|l| l.0).collect();
    let spec = ppo_wgpu::ppo::ActorCriticSpec::new(obs_dim, num_actions, &hidden)?;
    if spec.param_count() != checkpoint.params_per_agent()? {
        return Err(ppo_wgpu::Error::Format {
            path: args.checkpoint.clone(),
            reason: "actor and critic layers disagree with the parameter count".into(),
        });
    }
    let physics_flags = [
        ("--gravity", args.gravity),
        ("--masscart", args.masscart),
        ("--masspole", args.masspole),
        ("--length", args.length),
        ("--force-mag", args.force_mag),
        ("--tau", args.tau),
        ("--polarity", args.polarity),
    ];
    if env.id != "CartPole-v1" {
        if let Some((flag, Some(value))) = physics_flags.iter().find(|(_, v)| v.is_some()) {
            return Err(ppo_wgpu::Error::config(
                *flag,
                value,
                format!("sets CartPole-v1's physics; the env is {}", env.id),
            ));
        }
    }
    let d = CartPoleParams::GYMNASIUM;
    let physics = CartPoleParams {
        gravity: args.gravity.unwrap_or(d.gravity),
        masscart: args.masscart.unwrap_or(d.masscart),
        masspole: args.masspole.unwrap_or(d.masspole),
        length: args.length.unwrap_or(d.length),
        force_mag: args.force_mag.unwrap_or(d.force_mag),
        tau: args.tau.unwrap_or(d.tau),
        polarity: args.polarity.unwrap_or(d.polarity),
    };
    physics.validate(0)?;
    let obs_norm = checkpoint_obs_norm(&args.checkpoint, &checkpoint)?;
    let ctx = GpuContext::new(&args.adapter.options())?;
    let params: Vec<f32> = checkpoint
        .agents
        .iter()
        .flat_map(|a| a.params.clone())
        .collect();
    let params = ppo_wgpu::gpu::GpuBuffer::from_slice(&ctx, "params", &params)?;
    let returns = evaluate_env_id(
        &ctx,
        &spec,
        &params,
        checkpoint.agents.len(),
        env.id,
        &EvalSettings {
            episodes: args.episodes,
            max_episode_steps: args.max_episode_steps.unwrap_or(env.max_episode_steps),
            physics,
            greedy: args.greedy,
            seed: args.seed,
        },
        obs_norm
            .as_ref()
            .map(|(stats, clip)| (stats.as_slice(), *clip)),
    )?;
    let mode = if args.greedy { "greedy" } else { "sampled" };
    for (p, r) in returns.iter().enumerate() {
        let (m, sd) = trainer::mean_std(r);
        println!(
            "agent {p}: mean return {m:.1} ± {sd:.1} over {} {mode} episodes",
            r.len()
        );
    }
    Ok(())
}

/// Where the checkpoint's run normalized observations (`norm_obs`): per
/// agent, the statistics its training envs held at the checkpoint (merged),
/// and the clip. Read before any work; a checkpoint that says it normalized
/// but holds no statistics is refused.
fn checkpoint_obs_norm(
    path: &std::path::Path,
    checkpoint: &ppo_wgpu::run::Checkpoint,
) -> ppo_wgpu::Result<Option<(Vec<ppo_wgpu::env::normalize::ObsStats>, f64)>> {
    use ppo_wgpu::env::normalize::{obs_stats_in_snapshot, per_agent};
    let config = checkpoint
        .metadata
        .get("config")
        .and_then(|text| toml::from_str::<toml::Table>(text).ok());
    let get = |key: &str| config.as_ref().and_then(|c| c.get(key).cloned());
    if get("norm_obs").and_then(|v| v.as_bool()) != Some(true) {
        return Ok(None);
    }
    let clip = get("norm_clip").and_then(|v| v.as_float()).unwrap_or(10.0);
    let bad = |reason: String| ppo_wgpu::Error::Format {
        path: path.to_path_buf(),
        reason,
    };
    let state = checkpoint.metadata.get("env_state").ok_or_else(|| {
        bad("its run normalized observations (norm_obs) but it holds no env_state with the statistics".into())
    })?;
    let stats = obs_stats_in_snapshot(state).map_err(|e| bad(e.to_string()))?;
    let agents = checkpoint.agents.len();
    if stats.is_empty() || stats.len() % agents != 0 {
        return Err(bad(format!(
            "its observation statistics cover {} envs, not a whole number per agent for {agents} agents",
            stats.len()
        )));
    }
    Ok(Some((per_agent(&stats, agents), clip)))
}

/// The env `eval` plays: `--env`, else the one the checkpoint's config
/// names (CartPole-v1 when it has none). A `--env` other than the
/// checkpoint's is refused, naming both.
fn eval_env(
    args: &EvalArgs,
    checkpoint: &ppo_wgpu::run::Checkpoint,
) -> ppo_wgpu::Result<&'static ppo_wgpu::env::EnvInfo> {
    let trained_on = checkpoint
        .metadata
        .get("config")
        .and_then(|text| toml::from_str::<toml::Table>(text).ok())
        .and_then(|table| table.get("env_id")?.as_str().map(str::to_string));
    match (args.env.clone(), trained_on) {
        (Some(asked), Some(trained)) if asked != trained => Err(ppo_wgpu::Error::config(
            "--env",
            asked,
            format!("the checkpoint was trained on {trained}; evaluate it there (drop --env)"),
        )),
        (Some(id), _) | (None, Some(id)) => ppo_wgpu::env::trainable_env("--env", &id),
        (None, None) => ppo_wgpu::env::trainable_env("--env", "CartPole-v1"),
    }
}

/// A checkpoint's networks against the env's spaces, before any work: an
/// error naming what the checkpoint's networks take and give, and what the
/// env needs.
fn check_fits_env(
    path: &std::path::Path,
    checkpoint: &ppo_wgpu::run::Checkpoint,
    env: &ppo_wgpu::env::EnvInfo,
) -> ppo_wgpu::Result<()> {
    let (obs_dim, num_actions) = (env.obs_dim, env.num_actions.unwrap_or(0));
    let ends = |layers: &[(usize, usize)]| match (layers.first(), layers.last()) {
        (Some(first), Some(last)) => Some((first.0, last.1)),
        _ => None,
    };
    let actor = ends(&checkpoint.actor_layers);
    let critic = ends(&checkpoint.critic_layers);
    if actor == Some((obs_dim, num_actions)) && critic == Some((obs_dim, 1)) {
        return Ok(());
    }
    let describe = |name: &str, ends: Option<(usize, usize)>, what: &str| match ends {
        Some((i, o)) => {
            let plural = if o == 1 { "" } else { "s" };
            format!("{name} takes {i} inputs and gives {o} {what}{plural}")
        }
        None => format!("{name} has no layers"),
    };
    Err(ppo_wgpu::Error::Format {
        path: path.to_path_buf(),
        reason: format!(
            "its {} and its {}; {} needs an actor of {obs_dim} inputs ({}) and {num_actions} actions ({}), and a critic of {obs_dim} inputs and 1 value",
            describe("actor", actor, "action"),
            describe("critic", critic, "value"),
            env.id,
            env.observation,
            env.actions,
        ),
    })
}

/// One row of `ppo-wgpu bench`.
#[derive(serde::Serialize)]
struct BenchRow {
    adapter: String,
    preset: String,
    env_id: String,
    env_device: ppo_wgpu::config::EnvDevice,
    num_agents: usize,
    num_envs: usize,
    num_steps: usize,
    hidden: Vec<usize>,
    steps_per_agent: u64,
    /// Env steps per second over all agents, training only.
    steady_sps: f64,
    /// Which rollout ran ("host, fused step", "layered", "fused lanes E=2", ...).
    rollout: String,
    /// The rollout phase alone: env steps per second over all agents.
    rollout_sps: f64,
    /// The update phase alone: milliseconds per update.
    update_ms: f64,
    /// Which update ran ("fused, linear", "fused, rows", "layered").
    update: String,
    /// Kernel dispatches per update (one submission).
    update_dispatches: usize,
    /// Queue submissions per iteration (rollout and update).
    submissions_per_iteration: f64,
    /// Seconds to a mean greedy return of the env's solved return (475 for
    /// CartPole-v1; median agent), adapter start-up included.
    seconds_to_475: Option<f64>,
    agents_reaching_475: usize,
    final_eval_mean: f64,
    wall_s: f64,
}

fn parse_list<T: std::str::FromStr>(flag: &str, value: &str) -> ppo_wgpu::Result<Vec<T>> {
    value
        .split(',')
        .map(|item| {
            item.trim()
                .parse()
                .map_err(|_| ppo_wgpu::Error::config(flag, item, "not a valid list item"))
        })
        .collect()
}

fn bench(args: &BenchArgs) -> ppo_wgpu::Result<()> {
    let presets: Vec<String> = parse_list("--presets", &args.presets)?;
    let populations: Vec<usize> = parse_list("--agents", &args.agents)?;
    let devices: Vec<String> = parse_list("--env-devices", &args.env_devices)?;
    let envs: Vec<Option<String>> = match &args.envs {
        Some(list) => parse_list::<String>("--envs", list)?
            .into_iter()
            .map(Some)
            .collect(),
        None => vec![None],
    };
    let mut configs = Vec::new();
    for (preset, env) in presets
        .iter()
        .flat_map(|p| envs.iter().map(move |e| (p, e)))
    {
        for &agents in &populations {
            for device in &devices {
                let mut sets = vec![format!("env_device={device}")];
                if let Some(id) = env {
                    ppo_wgpu::env::trainable_env("--envs", id)?;
                    sets.push(format!("env_id={id}"));
                }
                let mut config = PpoConfig::resolve(Some(preset), None, &sets)?;
                config.num_agents = agents;
                if args.max_timesteps > 0 {
                    config.total_timesteps = config.total_timesteps.min(args.max_timesteps);
                }
                config.validate()?;
                configs.push((preset.clone(), config));
            }
        }
    }
    let choice = match args.software_threads.as_str() {
        "auto" => SoftwareThreads::Auto,
        "driver" => SoftwareThreads::Driver,
        "single" => SoftwareThreads::Single,
        other => {
            return Err(ppo_wgpu::Error::config(
                "--software-threads",
                other,
                "one of auto, driver, single",
            ))
        }
    };
    // One setting serves every row: one thread only where each row takes it.
    let threads = threads::apply_with(
        choice,
        configs
            .iter()
            .all(|(_, c)| threads::single_thread_wins(&c.thread_workload())),
    );
    let open_start = std::time::Instant::now();
    let ctx = GpuContext::new(&args.adapter.options())?;
    let startup_s = open_start.elapsed().as_secs_f64();
    eprintln!(
        "adapter: {} (opened in {startup_s:.2} s)",
        ctx.adapter.describe()
    );
    if ctx.adapter.is_software {
        eprintln!("software threads: {}", threads.describe());
    }
    // Removed on every way out of this function (and, if this process is
    // killed, by the next bench).
    let scratch = ppo_wgpu::run::ScratchDir::new(&std::env::temp_dir(), "ppo-wgpu-bench")?;
    let runs_root = scratch.path().to_path_buf();
    let mut rows = Vec::new();
    println!(
        "{:<11} {:<14} {:>4} {:>6} {:>10} {:>8} {:>12} {:>12} {:>17} {:>12} {:>22} {:>10} {:>10} {:>10} {:>9} {:>10} {:>8}",
        "preset",
        "env id",
        "env",
        "agents",
        "envs×steps",
        "hidden",
        "steps/agent",
        "steady SPS",
        "rollout",
        "rollout SPS",
        "update",
        "dispatches",
        "update ms",
        "submits/it",
        "s to goal",
        "eval mean",
        "wall s"
    );
    for (index, (preset, config)) in configs.into_iter().enumerate() {
        // A folder per run: run folders are named to the second, and short
        // runs of the same seed would collide.
        let report = trainer::train(
            &config,
            &ctx,
            &TrainOptions {
                runs_root: runs_root.join(index.to_string()),
                ..Default::default()
            },
        )?;
        let s = &report.summary;
        // Agents that never got there sort last, so the (lower) median is None
        // when fewer than half of them did.
        let mut times: Vec<f64> = s
            .seconds_to_475
            .iter()
            .map(|t| t.map_or(f64::INFINITY, |t| t + startup_s))
            .collect();
        times.sort_by(f64::total_cmp);
        let reaching = times.iter().filter(|t| t.is_finite()).count();
        let median = times
            .get(times.len().saturating_sub(1) / 2)
            .copied()
            .filter(|t| t.is_finite());
        let eval_mean = trainer::mean_std(&s.final_eval_mean).0;
        let row = BenchRow {
            adapter: ctx.adapter.describe(),
            preset,
            env_id: config.env_id.clone(),
            env_device: config.env_device,
            num_agents: config.num_agents,
            num_envs: config.num_envs,
            num_steps: config.num_steps,
            hidden: config.hidden.clone(),
            steps_per_agent: s.global_steps / config.num_agents as u64,
            steady_sps: s.sps,
            rollout: s.rollout.clone(),
            rollout_sps: s.rollout_sps,
            update_ms: s.update_ms,
            update: s.update.clone(),
            update_dispatches: s.update_dispatches,
            submissions_per_iteration: s.submissions_per_iteration,
            seconds_to_475: median,
            agents_reaching_475: reaching,
            final_eval_mean: eval_mean,
            wall_s: s.wall_s + startup_s,
        };
        println!(
            "{:<11} {:<14} {:>4} {:>6} {:>10} {:>8} {:>12} {:>12.0} {:>17} {:>12.0} {:>22} {:>10} {:>10.2} {:>10.1} {:>9} {:>10.1} {:>8.1}",
            row.preset,
            row.env_id,
            format!("{:?}", row.env_device).to_lowercase(),
            row.num_agents,
            format!("{}×{}", row.num_envs, row.num_steps),
            format!("{:?}", row.hidden).replace(' ', ""),
            row.steps_per_agent,
            row.steady_sps,
            row.rollout,
            row.rollout_sps,
            row.update,
            row.update_dispatches,
            row.update_ms,
            row.submissions_per_iteration,
            row.seconds_to_475
                .map_or("-".to_string(), |t| format!("{t:.1}")),
            row.final_eval_mean,
            row.wall_s
        );
        rows.push(row);
    }
    drop(scratch);
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&rows).map_err(|e| ppo_wgpu::Error::Format {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        ppo_wgpu::run::write_atomic(path, text.as_bytes())?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Adapters { adapter } => adapters(adapter).map(|()| ExitCode::SUCCESS),
        Command::Train(args) => train(args),
        Command::Eval(args) => eval(args).map(|()| ExitCode::SUCCESS),
        Command::Bench(args) => bench(args).map(|()| ExitCode::SUCCESS),
        Command::MetaTrain(args) => meta_cli::meta_train_command(args),
        Command::MetaEval(args) => meta_cli::meta_eval_command(args).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
