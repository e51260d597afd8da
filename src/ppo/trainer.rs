//! Training: CleanRL ppo.py's loop (anneal lr → rollout → bootstrap + GAE →
//! epochs of shuffled minibatches → log) for P agents at once, with the run
//! folder, checkpoints, resume, NaN guard and a final greedy evaluation.
//!
//! `train` is a function of (config, adapter): the same seed on the same
//! adapter gives the same metrics (timing columns aside).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rand::SeedableRng;

use crate::config::{EnvDevice, PpoConfig};
use crate::env::normalize::{per_agent, ObsStats};
use crate::env::{
    make_host_env, trainable_env, CartPoleConfig, CartPoleParams, GpuCartPole, HostEnv,
    NormalizeSettings, Normalized, StepOut,
};
use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::nn::init::init_mlp;
use crate::ops::ppo_loss::LossCoefs;
use crate::ppo::gpu::{AgentUpdateStats, PpoGpu, UpdateSettings};
use crate::ppo::net::ActorCriticSpec;
use crate::ppo::permutations;
use crate::ppo::policy::{evaluate_env_id, EvalSettings};
use crate::run::{
    load_checkpoint, plot_learning_curve, read_metrics, save_checkpoint, write_atomic,
    write_summary, AdamState, AgentState, Checkpoint, MetricsCsv, MetricsRow, RunDir, Summary,
    METRICS_COLUMNS,
};

/// Training episodes averaged for the progress bar.
const RECENT_WINDOW: usize = 10;
/// Greedy episodes per agent in each evaluation during training.
const PERIODIC_EVAL_EPISODES: usize = 20;

/// How `train` runs, beyond the config.
#[derive(Clone, Debug, Default)]
pub struct TrainOptions {
    /// Folder holding run folders (CleanRL's `runs/`).
    pub runs_root: PathBuf,
    /// Continue the run in this folder from its checkpoint.
    pub resume: Option<PathBuf>,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// Set (by Ctrl-C) to stop after the current iteration, saving everything.
    pub stop: Option<Arc<AtomicBool>>,
    /// Stop after this many iterations (for tests of resume); None = the config's total.
    pub max_iterations: Option<usize>,
}

/// What a run produced.
#[derive(Clone, Debug)]
pub struct TrainReport {
    pub run_dir: PathBuf,
    pub summary: Summary,
    /// Last iteration completed.
    pub iteration: usize,
    /// True when stopped before the configured end (Ctrl-C or `max_iterations`).
    pub interrupted: bool,
}

/// Per-agent bookkeeping, carried through checkpoints.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct Progress {
    /// Returns of the last training episodes (for the progress bar).
    recent_returns: Vec<Vec<f64>>,
    /// First evaluation whose mean greedy return reached 475.
    steps_to_solved: Vec<Option<u64>>,
    seconds_to_solved: Vec<Option<f64>>,
    /// Env steps per agent at which the next evaluation runs.
    next_eval_step: u64,
    /// (env steps per agent, wall seconds, mean greedy return per agent).
    evals: Vec<(u64, f64, Vec<f64>)>,
    /// Wall seconds spent before this process (resumed runs).
    wall_offset_s: f64,
    /// Seconds spent in evaluations (kept out of SPS).
    eval_s: f64,
}

/// The update's sizes and coefficients from a config.
pub fn update_settings(config: &PpoConfig) -> UpdateSettings {
    UpdateSettings {
        num_agents: config.num_agents,
        num_steps: config.num_steps,
        envs_per_agent: config.num_envs,
        num_minibatches: config.num_minibatches,
        update_epochs: config.update_epochs,
        gamma: config.gamma,
        gae_lambda: config.gae_lambda,
        norm_adv: config.norm_adv,
        coefs: LossCoefs {
            clip_coef: config.clip_coef,
            ent_coef: config.ent_coef,
            vf_coef: config.vf_coef,
            clip_vloss: config.clip_vloss,
        },
        max_grad_norm: config.max_grad_norm,
        adam_eps: config.adam_eps,
        target_kl: config.target_kl,
    }
}

/// The actor-critic of a config for its env (`env_id`).
pub fn env_spec(config: &PpoConfig) -> Result<ActorCriticSpec> {
    let env = trainable_env("env_id", &config.env_id)?;
    let num_actions = env.num_actions.unwrap_or(0);
    ActorCriticSpec::new(env.obs_dim, num_actions, &config.hidden)
}

/// CleanRL's initialization for every agent; agent p draws from seed + p.
pub fn initial_params(spec: &ActorCriticSpec, num_agents: usize, seed: u64) -> Vec<f32> {
    let k = spec.param_count();
    let mut params = vec![0.0f32; num_agents * k];
    for (p, slice) in params.chunks_mut(k).enumerate() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed.wrapping_add(p as u64));
        init_mlp(&spec.actor().layers(0), 0.01, slice, &mut rng);
        init_mlp(
            &spec.critic().layers(spec.critic_base()),
            1.0,
            slice,
            &mut rng,
        );
    }
    params
}

fn layer_dims(spec: &crate::nn::MlpSpec) -> Vec<(usize, usize)> {
    spec.layers(0)
        .iter()
        .map(|l| (l.in_dim, l.out_dim))
        .collect()
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// The envs of a run (`env_device`): on the host with the observations the
/// policy reads next, or on the device.
enum Envs {
    Host {
        env: Box<dyn HostEnv>,
        obs: Vec<f32>,
        out: StepOut,
    },
    Device(Box<GpuCartPole>),
}

/// Greedy (or sampled) returns of every agent on fresh envs of the run's
/// env, [P][episodes]; where observations are normalized, each agent sees
/// them normalized by its training envs' statistics (merged), frozen.
fn evaluate_agents(
    ctx: &GpuContext,
    config: &PpoConfig,
    spec: &ActorCriticSpec,
    gpu: &PpoGpu,
    envs: &Envs,
    settings: &EvalSettings,
) -> Result<Vec<Vec<f64>>> {
    let obs_norm: Option<Vec<ObsStats>> = match envs {
        Envs::Host { env, .. } => env.obs_stats().map(|s| per_agent(s, config.num_agents)),
        Envs::Device(_) => None,
    };
    let obs_norm = obs_norm.as_deref().map(|s| (s, config.norm_clip));
    let p_count = config.num_agents;
    evaluate_env_id(
        ctx,
        spec,
        &gpu.params,
        p_count,
        &config.env_id,
        settings,
        obs_norm,
    )
}

/// Checkpoint metadata keys of the two env kinds' states.
const HOST_ENV_KEY: &str = "env_state";
const DEVICE_ENV_KEY: &str = "gpu_env_state";

/// Everything a run needs to continue, gathered for a checkpoint.
struct Snapshot<'a> {
    config: &'a PpoConfig,
    spec: &'a ActorCriticSpec,
    iteration: usize,
    global_step: u64,
    env: &'a Envs,
    progress: &'a Progress,
}

fn save(ctx: &GpuContext, gpu: &PpoGpu, run: &RunDir, snap: &Snapshot<'_>) -> Result<()> {
    let params = gpu.read_params(ctx)?;
    if let Some(bad) = params.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite {
            what: format!("parameter {bad} (agent {})", bad / snap.spec.param_count()),
            iteration: snap.iteration,
            detail: "checkpoint not written; the previous one is kept".into(),
        });
    }
    let (m, v, steps) = gpu.read_optimizer(ctx)?;
    let k = snap.spec.param_count();
    let agents = (0..snap.config.num_agents)
        .map(|p| AgentState {
            params: params[p * k..(p + 1) * k].to_vec(),
            optimizer: Some(AdamState {
                m: m[p * k..(p + 1) * k].to_vec(),
                v: v[p * k..(p + 1) * k].to_vec(),
                step: steps[p] as u64,
            }),
        })
        .collect();
    let mut metadata = BTreeMap::new();
    metadata.insert("config".to_string(), snap.config.to_toml()?);
    metadata.insert("iteration".to_string(), snap.iteration.to_string());
    metadata.insert("global_step".to_string(), snap.global_step.to_string());
    match snap.env {
        Envs::Host { env, .. } => metadata.insert(HOST_ENV_KEY.to_string(), env.snapshot_json()?),
        Envs::Device(env) => {
            metadata.insert(DEVICE_ENV_KEY.to_string(), to_json(&env.snapshot(ctx)?)?)
        }
    };
    metadata.insert("progress".to_string(), to_json(snap.progress)?);
    save_checkpoint(
        &run.checkpoint_path(),
        &Checkpoint {
            actor_layers: layer_dims(&snap.spec.actor()),
            critic_layers: layer_dims(&snap.spec.critic()),
            agents,
            metadata,
            context: None,
        },
    )
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::Format {
        path: "checkpoint metadata".into(),
        reason: e.to_string(),
    })
}

fn metadata<'a>(checkpoint: &'a Checkpoint, key: &str, path: &std::path::Path) -> Result<&'a str> {
    checkpoint
        .metadata
        .get(key)
        .map(String::as_str)
        .ok_or_else(|| Error::Format {
            path: path.to_path_buf(),
            reason: format!("checkpoint has no '{key}' metadata; it was not written by `train`"),
        })
}

fn json_metadata<T: serde::de::DeserializeOwned>(
    checkpoint: &Checkpoint,
    key: &str,
    path: &std::path::Path,
) -> Result<T> {
    serde_json::from_str(metadata(checkpoint, key, path)?).map_err(|e| Error::Format {
        path: path.to_path_buf(),
        reason: format!("checkpoint metadata '{key}': {e}"),
    })
}

/// Loads the resolved config a run folder was started with.
/// An error naming `--resume` where `run` has no checkpoint to resume
/// from (a run killed before its first one, written as it starts, leaves
/// a folder with at most its config).
pub fn check_resumable(run: &RunDir) -> Result<()> {
    if run.checkpoint_path().exists() {
        return Ok(());
    }
    Err(Error::config(
        "--resume",
        run.path().display(),
        format!(
            "the folder has no {}: the run stopped before its first checkpoint (written as it starts), so there is nothing to resume; start a new run",
            crate::run::CHECKPOINT_FILE
        ),
    ))
}

pub fn load_run_config(run: &RunDir) -> Result<PpoConfig> {
    PpoConfig::resolve(None, Some(&run.config_path()), &[])
}

/// Trains `config` on `ctx`'s adapter. See the module docs.
pub fn train(config: &PpoConfig, ctx: &GpuContext, options: &TrainOptions) -> Result<TrainReport> {
    config.validate()?;
    let env_info = trainable_env("env_id", &config.env_id)?;
    let spec = env_spec(config)?;
    let settings = update_settings(config);
    let sizes = config.sizes();
    let (p_count, n) = (config.num_agents, config.num_envs);
    let max_episode_steps = u32::try_from(config.max_episode_steps).map_err(|_| {
        Error::config(
            "max_episode_steps",
            config.max_episode_steps,
            "must fit in 32 bits",
        )
    })?;
    let mut gpu = PpoGpu::new(ctx, &spec, &settings)?;
    gpu.set_rollout_path(config.rollout);
    // A fused rollout asked for and not possible is refused before any work.
    let rollout_line = if config.env_device == EnvDevice::Gpu {
        gpu.uses_fused_rollout(ctx)?;
        gpu.rollout_path_description(ctx)
    } else if gpu.uses_fused_policy_step(ctx)? {
        "host envs, one dispatch per step (forward, critic and sampling fused)".to_string()
    } else {
        "host envs, a dispatch per layer and one for sampling per step".to_string()
    };
    gpu.set_update_path(config.update);
    gpu.set_row_pass(config.row_pass);
    // A fused update asked for and not possible is refused before any work too.
    gpu.uses_fused_update(ctx)?;
    if options.progress {
        eprintln!("rollout: {rollout_line}");
        eprintln!("update: {}", gpu.update_path_description(ctx));
    }
    let mut envs = match config.env_device {
        EnvDevice::Cpu => {
            let mut env = make_host_env(&config.env_id, p_count, n, max_episode_steps)?;
            if config.norm_obs || config.norm_reward {
                let settings = NormalizeSettings {
                    obs: config.norm_obs,
                    reward: config.norm_reward,
                    gamma: config.gamma,
                    clip: config.norm_clip,
                };
                env = Box::new(Normalized::new(env, settings)?);
            }
            let num_envs = env.num_envs();
            Envs::Host {
                env,
                obs: vec![0.0f32; num_envs * spec.obs_dim],
                out: StepOut::new(num_envs, spec.obs_dim),
            }
        }
        EnvDevice::Gpu => {
            let env_config = CartPoleConfig {
                max_episode_steps,
                ..CartPoleConfig::new(p_count, n)
            };
            Envs::Device(Box::new(GpuCartPole::new(
                ctx,
                env_config,
                config.num_steps,
            )?))
        }
    };

    let (run, _lock, start_iteration, mut global_step, mut progress, mut csv) = match &options
        .resume
    {
        None => {
            let unix_time = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let run = RunDir::create(
                &options.runs_root,
                &config.env_id,
                &config.exp_name,
                config.seed,
                unix_time,
            )?;
            let lock = run.lock("--runs-dir")?;
            write_atomic(&run.config_path(), config.to_toml()?.as_bytes())?;
            gpu.set_params(ctx, &initial_params(&spec, p_count, config.seed))?;
            match &mut envs {
                Envs::Host { env, obs, .. } => env.reset(config.seed, obs)?,
                Envs::Device(env) => env.reset(ctx, config.seed)?,
            }
            let progress = Progress {
                recent_returns: vec![Vec::new(); p_count],
                steps_to_solved: vec![None; p_count],
                seconds_to_solved: vec![None; p_count],
                next_eval_step: config.eval_every as u64,
                ..Progress::default()
            };
            let csv = MetricsCsv::create(&run.metrics_path(), &METRICS_COLUMNS)?;
            (run, lock, 1, 0u64, progress, csv)
        }
        Some(dir) => {
            let run = RunDir::open(dir)?;
            // Before reading anything: a second `--resume` of a run that is
            // training is refused, not run beside it.
            let lock = run.lock("--resume")?;
            run.remove_stale_temporaries(&lock)?;
            check_resumable(&run)?;
            let path = run.checkpoint_path();
            let checkpoint = load_checkpoint(&path)?;
            if checkpoint.agents.len() != p_count
                || checkpoint.params_per_agent()? != spec.param_count()
            {
                return Err(Error::Format {
                    path,
                    reason: format!(
                        "checkpoint holds {} agents of {} parameters; the config needs {p_count} of {}",
                        checkpoint.agents.len(),
                        checkpoint.params_per_agent()?,
                        spec.param_count()
                    ),
                });
            }
            let iteration: usize = json_metadata(&checkpoint, "iteration", &path)?;
            if iteration >= sizes.num_iterations {
                // Nothing to redo: leave the run's files as they are.
                return Err(Error::config(
                    "--resume",
                    dir.display(),
                    format!(
                        "the run is finished (iteration {iteration} of {}): nothing to resume; its results are in {}",
                        sizes.num_iterations,
                        run.summary_path().display()
                    ),
                ));
            }
            let global_step: u64 = json_metadata(&checkpoint, "global_step", &path)?;
            match &mut envs {
                Envs::Host { env, obs, .. } => {
                    let state = metadata(&checkpoint, HOST_ENV_KEY, &path)?;
                    env.restore_json(state).map_err(|e| Error::Format {
                        path: path.clone(),
                        reason: format!("checkpoint metadata '{HOST_ENV_KEY}': {e}"),
                    })?;
                    *obs = env.current_observations();
                }
                Envs::Device(env) => {
                    env.restore(ctx, &json_metadata(&checkpoint, DEVICE_ENV_KEY, &path)?)?
                }
            }
            let progress: Progress = json_metadata(&checkpoint, "progress", &path)?;
            let params: Vec<f32> = checkpoint
                .agents
                .iter()
                .flat_map(|a| a.params.clone())
                .collect();
            gpu.set_params(ctx, &params)?;
            let mut m = Vec::new();
            let mut v = Vec::new();
            let mut steps = Vec::new();
            for agent in &checkpoint.agents {
                let adam = agent.optimizer.as_ref().ok_or_else(|| Error::Format {
                    path: path.clone(),
                    reason: "checkpoint has no optimizer state to resume from".into(),
                })?;
                m.extend_from_slice(&adam.m);
                v.extend_from_slice(&adam.v);
                steps.push(u32::try_from(adam.step).unwrap_or(u32::MAX));
            }
            gpu.set_optimizer(ctx, &m, &v, &steps)?;
            // Rows logged after the checkpoint are redone: drop them first.
            let kept: Vec<MetricsRow> = read_metrics(&run.metrics_path())?
                .into_iter()
                .filter(|row| row.iteration <= iteration)
                .collect();
            let mut text = format!("{}\n", METRICS_COLUMNS.join(","));
            for row in &kept {
                text.push_str(&row.to_cells().join(","));
                text.push('\n');
            }
            write_atomic(&run.metrics_path(), text.as_bytes())?;
            let csv = MetricsCsv::open_append(&run.metrics_path(), &METRICS_COLUMNS)?;
            (run, lock, iteration + 1, global_step, progress, csv)
        }
    };

    if options.resume.is_none() {
        // Iteration 0: the initial parameters, so a run that fails at once
        // still leaves a good checkpoint to resume or inspect.
        let snap = Snapshot {
            config,
            spec: &spec,
            iteration: 0,
            global_step,
            env: &envs,
            progress: &progress,
        };
        save(ctx, &gpu, &run, &snap)?;
    }
    let last_iteration = match options.max_iterations {
        Some(limit) => sizes.num_iterations.min(start_iteration - 1 + limit),
        None => sizes.num_iterations,
    };
    let bar = options.progress.then(|| {
        let bar =
            indicatif::ProgressBar::new(sizes.num_iterations as u64 * sizes.batch_size as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} steps  {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_position(global_step);
        bar
    });
    let start = Instant::now();
    let steps_at_start = global_step;
    let mut eval_s_here = 0.0;
    let eval_settings = EvalSettings {
        episodes: config.eval_episodes,
        max_episode_steps,
        physics: CartPoleParams::GYMNASIUM,
        greedy: true,
        seed: config.seed.wrapping_add(1_000_003),
    };
    let mut finished = Vec::new();
    // Seconds in each phase this run, for the summary's per-phase figures.
    let (mut rollout_s, mut update_s, mut updates) = (0.0, 0.0, 0usize);
    let mut submissions = 0u64;
    let mut rollout_path = if gpu.uses_fused_policy_step(ctx)? {
        "host, fused step"
    } else {
        "host, layered"
    }
    .to_string();
    let mut all_rows: Vec<MetricsRow> = read_metrics(&run.metrics_path())?;
    let mut iteration = start_iteration - 1;

    while iteration < last_iteration {
        if options
            .stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::SeqCst))
        {
            break;
        }
        iteration += 1;
        let frac = if config.anneal_lr {
            1.0 - (iteration - 1) as f64 / sizes.num_iterations as f64
        } else {
            1.0
        };
        gpu.set_learning_rates(&vec![frac * config.learning_rate; p_count])?;
        let mut iteration_episodes: Vec<Vec<(f64, u32)>> = vec![Vec::new(); p_count];
        let submissions_before = ctx.submissions();
        let phase_start = Instant::now();
        let next_obs = match &mut envs {
            Envs::Host { env, obs, out } => {
                global_step += (n * config.num_steps) as u64;
                gpu.rollout_host(
                    ctx,
                    env.as_mut(),
                    obs,
                    out,
                    config.seed,
                    iteration as u32,
                    &mut finished,
                )?;
                Some(obs.as_slice())
            }
            Envs::Device(env) => {
                global_step += (n * config.num_steps) as u64;
                let rollout = gpu.rollout_gpu(ctx, env, config.seed, iteration as u32)?;
                rollout_path = match rollout.fused_layout {
                    None => "layered".into(),
                    Some(layout) => format!("fused {}", layout.name()),
                };
                finished.extend(rollout.episodes);
                None
            }
        };
        rollout_s += phase_start.elapsed().as_secs_f64();
        for episode in finished.drain(..) {
            iteration_episodes[episode.env / n].push((episode.episode_return, episode.length));
        }
        let perm = permutations(config.seed, iteration as u64, &settings);
        let update_start = Instant::now();
        let stats: Vec<AgentUpdateStats> = gpu.update(ctx, next_obs, &perm)?;
        update_s += update_start.elapsed().as_secs_f64();
        updates += 1;
        submissions += ctx.submissions() - submissions_before;

        let training_s = (start.elapsed().as_secs_f64() - eval_s_here).max(1e-9);
        let sps = ((global_step - steps_at_start) * p_count as u64) as f64 / training_s;
        if config.eval_every > 0 && global_step >= progress.next_eval_step {
            let eval_start = Instant::now();
            let settings = EvalSettings {
                episodes: config.eval_episodes.min(PERIODIC_EVAL_EPISODES),
                ..eval_settings
            };
            let returns = evaluate_agents(ctx, config, &spec, &gpu, &envs, &settings)?;
            eval_s_here += eval_start.elapsed().as_secs_f64();
            let wall_s = progress.wall_offset_s + start.elapsed().as_secs_f64();
            let means: Vec<f64> = returns.iter().map(|r| mean_std(r).0).collect();
            for (p, &m) in means.iter().enumerate() {
                if progress.steps_to_solved[p].is_none() && m >= env_info.solved_return {
                    progress.steps_to_solved[p] = Some(global_step);
                    progress.seconds_to_solved[p] = Some(wall_s);
                }
            }
            progress.evals.push((global_step, wall_s, means));
            progress.next_eval_step = global_step + config.eval_every as u64;
        }
        let wall_s = progress.wall_offset_s + start.elapsed().as_secs_f64();
        for (p, s) in stats.iter().enumerate() {
            let returns: Vec<f64> = iteration_episodes[p].iter().map(|e| e.0).collect();
            let lengths: Vec<f64> = iteration_episodes[p].iter().map(|e| e.1 as f64).collect();
            let recent = &mut progress.recent_returns[p];
            recent.extend(&returns);
            let excess = recent.len().saturating_sub(RECENT_WINDOW);
            recent.drain(..excess);
            let row = MetricsRow {
                iteration,
                global_step,
                agent: p,
                episodic_return: mean(&returns),
                episodic_length: mean(&lengths),
                sps: Some(sps.round()),
                learning_rate: Some(frac * config.learning_rate),
                value_loss: Some(s.value_loss),
                policy_loss: Some(s.policy_loss),
                entropy: Some(s.entropy),
                old_approx_kl: Some(s.old_approx_kl),
                approx_kl: Some(s.approx_kl),
                clipfrac: Some(s.clipfrac),
                explained_variance: Some(s.explained_variance),
                wall_s,
            };
            csv.append(&row.to_cells())?;
            all_rows.push(row);
            let losses = [s.policy_loss, s.value_loss, s.entropy, s.approx_kl];
            if losses.iter().any(|v| !v.is_finite()) {
                if let Some(bar) = &bar {
                    bar.abandon();
                }
                return Err(Error::NonFinite {
                    what: format!(
                        "agent {p} losses (policy {}, value {}, entropy {}, approx_kl {})",
                        s.policy_loss, s.value_loss, s.entropy, s.approx_kl
                    ),
                    iteration,
                    detail: format!(
                        "training stopped; the last good checkpoint is kept in {} (lower learning_rate or max_grad_norm)",
                        run.path().display()
                    ),
                });
            }
        }
        if let Some(bar) = &bar {
            bar.set_position(global_step);
            let recent: Vec<f64> = progress
                .recent_returns
                .iter()
                .filter_map(|r| mean(r))
                .collect();
            bar.set_message(format!(
                "SPS {:.0}  sampled return {}",
                sps,
                mean(&recent).map_or("-".to_string(), |r| format!("{r:.1}"))
            ));
        }
        if config.checkpoint_every > 0 && iteration % config.checkpoint_every == 0 {
            // The time spent so far survives the checkpoint: a run killed
            // after it resumes with its clock where it was.
            let progress = Progress {
                wall_offset_s: progress.wall_offset_s + start.elapsed().as_secs_f64(),
                eval_s: progress.eval_s + eval_s_here,
                ..progress.clone()
            };
            let snap = Snapshot {
                config,
                spec: &spec,
                iteration,
                global_step,
                env: &envs,
                progress: &progress,
            };
            save(ctx, &gpu, &run, &snap)?;
        }
    }
    if let Some(bar) = &bar {
        bar.finish();
    }
    let interrupted = iteration < sizes.num_iterations;
    // Training time ends here: the final checkpoint, plot and evaluation
    // below are not counted in the steady SPS.
    let training_s = (start.elapsed().as_secs_f64() - eval_s_here).max(1e-9);
    let wall_s = progress.wall_offset_s + start.elapsed().as_secs_f64();
    progress.wall_offset_s = wall_s;
    progress.eval_s += eval_s_here;
    let snap = Snapshot {
        config,
        spec: &spec,
        iteration,
        global_step,
        env: &envs,
        progress: &progress,
    };
    save(ctx, &gpu, &run, &snap)?;
    plot_learning_curve(&all_rows, env_info.solved_return, &run.plot_path())?;

    let (eval_mean, eval_std) = if interrupted {
        (Vec::new(), Vec::new())
    } else {
        let returns = evaluate_agents(ctx, config, &spec, &gpu, &envs, &eval_settings)?;
        returns.iter().map(|r| mean_std(r)).unzip()
    };
    let summary = Summary {
        adapter: ctx.adapter.describe(),
        env_id: config.env_id.clone(),
        solved_return: env_info.solved_return,
        wall_s,
        global_steps: global_step * p_count as u64,
        sps: ((global_step - steps_at_start) * p_count as u64) as f64 / training_s,
        steps_to_475: progress.steps_to_solved.clone(),
        seconds_to_475: progress.seconds_to_solved.clone(),
        evaluations: progress.evals.clone(),
        final_eval_mean: eval_mean,
        final_eval_std: eval_std,
        rollout: rollout_path,
        rollout_sps: (updates * p_count * n * config.num_steps) as f64 / rollout_s.max(1e-9),
        update_ms: 1e3 * update_s / updates.max(1) as f64,
        update: gpu.update_name(ctx).to_string(),
        update_dispatches: gpu.update_dispatch_count(),
        submissions_per_iteration: submissions as f64 / updates.max(1) as f64,
    };
    write_summary(&run.summary_path(), &summary)?;
    Ok(TrainReport {
        run_dir: run.path().to_path_buf(),
        summary,
        iteration,
        interrupted,
    })
}

/// Mean and (population) standard deviation.
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    let m = mean(values).unwrap_or(f64::NAN);
    let var = values.iter().map(|v| (v - m).powi(2)).sum::<f64>() / values.len().max(1) as f64;
    (m, var.sqrt())
}
