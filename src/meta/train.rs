//! `meta-train`: Reptile or first-order MAML over a task family with PPO as
//! the inner loop, M tasks per meta-batch run as M agents in the same
//! dispatches; and the multi-task baseline (plain PPO, one agent whose envs
//! run the same tasks, for the same env steps), after meta-training or,
//! with `meta_init = "multitask"`, before it as its start. Writes the run folder:
//! `config.toml` (inner PPO), `meta.toml`, `meta_metrics.csv`,
//! `meta.safetensors` (θ) and `multitask.safetensors`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::config::{MetaConfig, MetaInit};
use super::inner::{finite_mean, ppo_iteration, progress_bar, rollout, InnerEnv};
use super::outer::{MetaMethod, OuterStep};
use super::tasks::{family_spec, make_env, repeat_tasks, sample_tasks};
use crate::config::{EnvDevice, PpoConfig};
use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::ops::context::ContextLayout;
use crate::ppo::net::ActorCriticSpec;
use crate::ppo::trainer::{initial_params, update_settings};
use crate::ppo::{permutations, PpoGpu};
use crate::run::{
    load_checkpoint, save_checkpoint, write_atomic, AgentState, Checkpoint, ContextWeights,
    MetricsCsv, RunDir,
};

pub const META_CONFIG_FILE: &str = "meta.toml";
pub const META_CHECKPOINT_FILE: &str = "meta.safetensors";
pub const MULTITASK_CHECKPOINT_FILE: &str = "multitask.safetensors";
pub const META_METRICS_FILE: &str = "meta_metrics.csv";

/// Columns of `meta_metrics.csv`: one row per outer step (phase "meta") or
/// per meta-iteration's worth of multi-task training (phase "multitask").
pub const META_METRICS_COLUMNS: [&str; 7] = [
    "phase",
    "meta_iteration",
    "env_steps",
    "return_first_rollout",
    "return_last_rollout",
    "meta_lr",
    "wall_s",
];

/// How `meta_train` runs, beyond the configs.
#[derive(Clone, Debug, Default)]
pub struct MetaTrainOptions {
    pub runs_root: PathBuf,
    pub progress: bool,
    /// Set (by Ctrl-C) to stop after the current outer step, saving θ.
    pub stop: Option<Arc<AtomicBool>>,
    /// Also train the multi-task baseline.
    pub baseline: bool,
}

impl MetaTrainOptions {
    fn stop_requested(&self) -> bool {
        self.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst))
    }
}

/// What `meta_train` produced.
#[derive(Clone, Debug)]
pub struct MetaTrainReport {
    pub run_dir: PathBuf,
    pub meta_iterations: usize,
    pub interrupted: bool,
    pub meta_wall_s: f64,
    pub multitask_wall_s: Option<f64>,
    /// Env steps of meta-training over all agents.
    pub meta_env_steps: u64,
    /// Mean return of the first and last inner rollout at the last outer step.
    pub last_returns: (Option<f64>, Option<f64>),
}

/// The inner PPO config of `meta`'s population: M agents.
pub fn inner_config(ppo: &PpoConfig, meta: &MetaConfig) -> Result<PpoConfig> {
    if ppo.env_device != EnvDevice::Cpu {
        return Err(Error::config(
            "env_device",
            "gpu",
            "meta-train steps its task envs on the host (env_device = \"cpu\"); the device env is CartPole-v1 only",
        ));
    }
    population_config(ppo, "meta_batch", meta.meta_batch)
}

/// `ppo` for a population of `num_agents` (one per task, the count the
/// meta key `key` sets), validated; an error notes the key. The PPO
/// config's own periodic evaluation (`eval_episodes`) does not run for
/// meta-learning's populations, so its size is not held against them.
pub(crate) fn population_config(
    ppo: &PpoConfig,
    key: &str,
    num_agents: usize,
) -> Result<PpoConfig> {
    let config = PpoConfig {
        num_agents,
        ..ppo.clone()
    };
    PpoConfig {
        eval_episodes: 1,
        ..config.clone()
    }
    .validate()
    .map_err(|e| e.with_note(format_args!("with num_agents = {key} = {num_agents}")))?;
    Ok(config)
}

/// The multi-task baseline's config: one agent with `meta_batch × num_envs` envs.
pub fn multitask_config(ppo: &PpoConfig, meta: &MetaConfig) -> Result<PpoConfig> {
    let config = PpoConfig {
        num_agents: 1,
        num_envs: ppo.num_envs.saturating_mul(meta.meta_batch),
        ..ppo.clone()
    };
    config.validate().map_err(|e| {
        e.with_note(format_args!(
            "in the multi-task baseline, one agent with num_envs × meta_batch = {} × {} envs; --no-baseline skips it",
            ppo.num_envs, meta.meta_batch
        ))
    })?;
    Ok(config)
}

fn max_steps(ppo: &PpoConfig) -> Result<u32> {
    u32::try_from(ppo.max_episode_steps).map_err(|_| {
        Error::config(
            "max_episode_steps",
            ppo.max_episode_steps,
            "must fit in 32 bits",
        )
    })
}

/// Tasks of meta-iteration `i` (1-based): the same for meta-training and the baseline.
fn task_seed(seed: u64, i: usize) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(i as u64)
}

fn fmt_return(value: Option<f64>) -> String {
    value.map_or("-".into(), |v| format!("{v:.1}"))
}

/// Saves one set of parameters (θ or the baseline), CAVIA's context
/// weights if any, and the metadata.
#[allow(clippy::too_many_arguments)]
pub fn save_init(
    path: &Path,
    spec: &ActorCriticSpec,
    params: &[f32],
    context: Option<&ContextWeights>,
    kind: &str,
    meta: &MetaConfig,
    ppo: &PpoConfig,
    meta_iteration: usize,
) -> Result<()> {
    let context_values = context.map_or(&[][..], |c| &c.weights[..]);
    let bad = params
        .iter()
        .position(|v| !v.is_finite())
        .map(|i| ("parameter", i));
    let bad = bad.or_else(|| {
        context_values
            .iter()
            .position(|v| !v.is_finite())
            .map(|i| ("context weight", i))
    });
    if let Some((what, index)) = bad {
        return Err(Error::NonFinite {
            what: format!("{kind} {what} {index}"),
            iteration: meta_iteration,
            detail: format!("{} not written; the previous one is kept", path.display()),
        });
    }
    let dims = |m: crate::nn::MlpSpec| -> Vec<(usize, usize)> {
        m.layers(0).iter().map(|l| (l.in_dim, l.out_dim)).collect()
    };
    let mut metadata = BTreeMap::new();
    metadata.insert("kind".to_string(), kind.to_string());
    metadata.insert("meta_config".to_string(), meta.to_toml()?);
    metadata.insert("config".to_string(), ppo.to_toml()?);
    metadata.insert("meta_iteration".to_string(), meta_iteration.to_string());
    save_checkpoint(
        path,
        &Checkpoint {
            actor_layers: dims(spec.actor()),
            critic_layers: dims(spec.critic()),
            agents: vec![AgentState {
                params: params.to_vec(),
                optimizer: None,
            }],
            metadata,
            context: context.cloned(),
        },
    )
}

/// Loads the single parameter vector a `save_init` file holds, checking its size.
pub fn load_init(path: &Path, spec: &ActorCriticSpec) -> Result<Vec<f32>> {
    load_init_with_context(path, spec).map(|(params, _)| params)
}

/// Loads a `save_init` file: its parameters, and CAVIA's context weights
/// when it holds them.
pub fn load_init_with_context(
    path: &Path,
    spec: &ActorCriticSpec,
) -> Result<(Vec<f32>, Option<ContextWeights>)> {
    let checkpoint = load_checkpoint(path)?;
    let k = checkpoint.params_per_agent()?;
    if checkpoint.agents.len() != 1 || k != spec.param_count() {
        return Err(Error::Format {
            path: path.to_path_buf(),
            reason: format!(
                "holds {} parameter vectors of {k}; expected one of {} (hidden sizes {:?})",
                checkpoint.agents.len(),
                spec.param_count(),
                spec.hidden
            ),
        });
    }
    Ok((checkpoint.agents[0].params.clone(), checkpoint.context))
}

/// CAVIA's initial context weights [J][C]: 0 for the actor's rows, so the
/// policy ignores the context until the outer steps teach it to read it;
/// normal with standard deviation `std` for the critic's, from `seed`, so
/// the first inner steps already fit the context to the returns.
pub fn initial_context_weights(layout: &ContextLayout, std: f64, seed: u64) -> Vec<f32> {
    use rand::SeedableRng;
    use rand_distr::{Distribution, Normal};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0xC0A7_E47D_5EED_0001);
    let normal = Normal::new(0.0, std).unwrap_or_else(|_| Normal::new(0.0, 1.0).unwrap());
    let actor = layout.actor_units * layout.dim;
    (0..layout.weight_len())
        .map(|i| {
            let v = normal.sample(&mut rng) as f32;
            if i < actor {
                0.0
            } else {
                v
            }
        })
        .collect()
}

/// Meta-trains an initialization (and the multi-task baseline); see the module docs.
pub fn meta_train(
    ppo: &PpoConfig,
    meta: &MetaConfig,
    ctx: &GpuContext,
    options: &MetaTrainOptions,
) -> Result<MetaTrainReport> {
    // Everything that can be refused is checked, and every GPU buffer is
    // allocated, before the first step.
    meta.validate()?;
    check_baseline(meta, options.baseline)?;
    let spec = family_spec(meta.family, &ppo.hidden)?;
    let inner = inner_config(ppo, meta)?;
    let (m_count, n, k_inner) = (meta.meta_batch, ppo.num_envs, meta.inner_updates);
    let cartpole_steps = max_steps(ppo)?;
    let mut gpu = PpoGpu::new(ctx, &spec, &update_settings(&inner))?;
    gpu.set_update_path(ppo.update);
    gpu.set_row_pass(ppo.row_pass);
    gpu.uses_fused_update(ctx)?;
    if meta.method == MetaMethod::Cavia {
        gpu.enable_context(ctx, meta.context_dim, meta.context_lr, meta.context_bound)?;
        if let Some(context) = gpu.context_mut() {
            context.set_policy_weight(ctx, meta.context_policy_weight)?;
            let weights =
                initial_context_weights(context.layout(), meta.context_init_std, ppo.seed);
            context.set_weights(ctx, &weights)?;
        }
    }
    let mut mt_gpu = if options.baseline {
        let mt = multitask_config(ppo, meta)?;
        let mut mt_gpu = PpoGpu::new(ctx, &spec, &update_settings(&mt))?;
        mt_gpu.set_update_path(ppo.update);
        mt_gpu.set_row_pass(ppo.row_pass);
        mt_gpu.uses_fused_update(ctx)?;
        Some((mt_gpu, mt))
    } else {
        None
    };
    let theta0 = initial_params(&spec, 1, ppo.seed);
    let mut outer = OuterStep::new(
        ctx,
        meta.method,
        &theta0,
        m_count,
        &gpu.params,
        gpu.grads(),
        gpu.context(),
        meta.meta_lr,
    )?;

    let unix_time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let env_id = format!("meta-{}", meta.family.name());
    let run = RunDir::create(
        &options.runs_root,
        &env_id,
        &ppo.exp_name,
        ppo.seed,
        unix_time,
    )?;
    write_atomic(&run.config_path(), ppo.to_toml()?.as_bytes())?;
    write_atomic(
        &run.path().join(META_CONFIG_FILE),
        meta.to_toml()?.as_bytes(),
    )?;
    let meta_path = run.path().join(META_CHECKPOINT_FILE);
    let save_theta = |outer: &OuterStep, gpu: &PpoGpu, meta_iteration: usize| {
        let theta = outer.theta.read(ctx)?;
        let context = gpu
            .context()
            .map(|c| -> Result<ContextWeights> {
                Ok(ContextWeights {
                    dim: c.layout().dim,
                    weights: c.weights.read(ctx)?,
                })
            })
            .transpose()?;
        save_init(
            &meta_path,
            &spec,
            &theta,
            context.as_ref(),
            "meta",
            meta,
            ppo,
            meta_iteration,
        )
    };
    let mut csv = MetricsCsv::create(&run.path().join(META_METRICS_FILE), &META_METRICS_COLUMNS)?;
    // Under meta_init = multitask the baseline trains first (check_baseline
    // made sure it is there) and θ starts from it; a Ctrl-C during it skips
    // meta-training below.
    let mut multitask_wall_s = None;
    let mut meta_theta0 = theta0.clone();
    if let (MetaInit::Multitask, Some((mt_gpu, mt))) = (meta.meta_init, &mut mt_gpu) {
        multitask_wall_s = Some(train_multitask(
            ctx, mt_gpu, mt, ppo, meta, &spec, &theta0, &run, &mut csv, options,
        )?);
        meta_theta0 = mt_gpu.read_params(ctx)?;
        outer.theta.write(ctx, &meta_theta0)?;
    }
    save_theta(&outer, &gpu, 0)?;
    gpu.set_params(ctx, &meta_theta0.repeat(m_count))?;
    let bar = progress_bar(
        options.progress,
        meta.meta_iterations,
        meta.method.name(),
        "",
    );
    let start = Instant::now();
    let rollout_steps = (ppo.num_steps * n * m_count) as u64;
    let mut env_steps = 0u64;
    let mut done = 0;
    let mut last_returns = (None, None);
    let mut saved_at = 0;
    while done < meta.meta_iterations && !options.stop_requested() {
        let i = done + 1;
        let annotate = |e: Error| {
            match e {
            Error::NonFinite { what, .. } => Error::NonFinite {
                what,
                iteration: i,
                detail: format!(
                    "meta-training stopped at this outer step; θ of outer step {saved_at} is kept in {} (lower learning_rate or meta_lr)",
                    meta_path.display()
                ),
            },
            other => other,
        }
        };
        let tasks = sample_tasks(meta, task_seed(ppo.seed, i), m_count);
        let env = make_env(meta, &repeat_tasks(&tasks, n), m_count, n, cartpole_steps)?;
        let mut inner_env = InnerEnv::new(env, task_seed(ppo.seed, i))?;
        gpu.reset_optimizer(ctx)?;
        gpu.set_learning_rates(&vec![ppo.learning_rate; m_count])?;
        let mut first = None;
        let mut last = None;
        // CAVIA's outer gradient sums the losses of the rollouts that count
        // (MetaConfig::context_collect_weight), each over its minibatches.
        for j in 0..k_inner {
            let key = (i * (k_inner + 1) + j) as u32;
            if let Some(context) = gpu.context_mut() {
                context.set_step(ctx, meta.context_lr_at(j + 1), meta.context_bound)?;
                context.set_collect(ctx, meta.context_collect_weight(j, ppo.num_minibatches));
            }
            let iteration =
                ppo_iteration(ctx, &mut gpu, &mut inner_env, ppo.seed, key).map_err(annotate)?;
            let mean = finite_mean(iteration.returns.iter().flatten());
            first = first.or(Some(mean));
            last = Some(mean);
            env_steps += rollout_steps;
        }
        if meta.method.needs_gradient() {
            // Fresh data at the adapted parameters, then their gradient.
            let key = (i * (k_inner + 1) + k_inner) as u32;
            rollout(ctx, &mut gpu, &mut inner_env, ppo.seed, key)?;
            let perm = permutations(ppo.seed, key as u64, gpu.settings());
            if let Some(context) = gpu.context_mut() {
                context.set_collect(
                    ctx,
                    meta.context_collect_weight(k_inner, ppo.num_minibatches),
                );
            }
            gpu.gradient(ctx, Some(&inner_env.obs), &perm)?;
            if let Some(context) = gpu.context_mut() {
                context.set_collect(ctx, None);
            }
            env_steps += rollout_steps;
        }
        let meta_lr = if meta.anneal_meta_lr {
            meta.meta_lr * (1.0 - (i - 1) as f64 / meta.meta_iterations as f64)
        } else {
            meta.meta_lr
        };
        outer.set_meta_lr(meta_lr);
        outer.run(ctx);
        // The next tasks' contexts start at 0 from the broadcast θ.
        gpu.reset_context(ctx);
        done = i;
        last_returns = (first.flatten(), last.flatten());
        let wall_s = start.elapsed().as_secs_f64();
        csv.append(&[
            "meta".to_string(),
            i.to_string(),
            env_steps.to_string(),
            fmt_cell(last_returns.0),
            fmt_cell(last_returns.1),
            format!("{meta_lr}"),
            format!("{wall_s:.3}"),
        ])?;
        if let Some(bar) = &bar {
            bar.set_position(i as u64);
            bar.set_message(format!(
                "return before {} after {} adaptation",
                fmt_return(last_returns.0),
                fmt_return(last_returns.1)
            ));
        }
        if meta.meta_checkpoint_every > 0 && i % meta.meta_checkpoint_every == 0 {
            save_theta(&outer, &gpu, i)?;
            saved_at = i;
        }
    }
    if let Some(bar) = &bar {
        bar.finish();
    }
    save_theta(&outer, &gpu, done)?;
    let meta_wall_s = start.elapsed().as_secs_f64();
    let interrupted = done < meta.meta_iterations;

    if multitask_wall_s.is_none() && !interrupted {
        if let Some((mt_gpu, mt)) = &mut mt_gpu {
            multitask_wall_s = Some(train_multitask(
                ctx, mt_gpu, mt, ppo, meta, &spec, &theta0, &run, &mut csv, options,
            )?);
        }
    }
    Ok(MetaTrainReport {
        run_dir: run.path().to_path_buf(),
        meta_iterations: done,
        interrupted,
        meta_wall_s,
        multitask_wall_s,
        meta_env_steps: env_steps,
        last_returns,
    })
}

/// Refuses `meta_init = "multitask"` without the baseline it starts from.
pub fn check_baseline(meta: &MetaConfig, baseline: bool) -> Result<()> {
    if meta.meta_init == MetaInit::Multitask && !baseline {
        return Err(Error::config(
            "meta_init",
            "multitask",
            format!(
                "meta-training of the {} family starts from the multi-task baseline, so it must be trained: drop --no-baseline or set meta_init=scratch",
                meta.family.name()
            ),
        ));
    }
    Ok(())
}

fn fmt_cell(value: Option<f64>) -> String {
    value.map_or(String::new(), |v| format!("{v}"))
}

/// Plain PPO from the scratch initialization on the meta-batches' tasks:
/// at meta-iteration i its `M × N` envs run the same M tasks meta-training
/// saw, for `inner_updates` iterations, so both spend the same env steps
/// (first-order MAML's extra rollout aside), or for `baseline_iterations`
/// PPO iterations in all when that is set (tasks change every
/// `inner_updates`). The learning rate anneals as in `train` when
/// `anneal_lr` is set.
#[allow(clippy::too_many_arguments)]
fn train_multitask(
    ctx: &GpuContext,
    gpu: &mut PpoGpu,
    mt: &PpoConfig,
    ppo: &PpoConfig,
    meta: &MetaConfig,
    spec: &ActorCriticSpec,
    theta0: &[f32],
    run: &RunDir,
    csv: &mut MetricsCsv,
    options: &MetaTrainOptions,
) -> Result<f64> {
    let (m_count, n, k_inner) = (meta.meta_batch, ppo.num_envs, meta.inner_updates);
    let cartpole_steps = max_steps(ppo)?;
    gpu.set_params(ctx, theta0)?;
    let path = run.path().join(MULTITASK_CHECKPOINT_FILE);
    let total = meta.baseline_ppo_iterations();
    let batches = total.div_ceil(k_inner);
    let bar = progress_bar(options.progress, batches, "multitask", "");
    let start = Instant::now();
    let rollout_steps = (mt.num_steps * mt.num_envs) as u64;
    let mut env_steps = 0u64;
    for i in 1..=batches {
        if options.stop_requested() {
            break;
        }
        let tasks = sample_tasks(meta, task_seed(ppo.seed, i), m_count);
        let env = make_env(
            meta,
            &repeat_tasks(&tasks, n),
            1,
            m_count * n,
            cartpole_steps,
        )?;
        let mut inner_env = InnerEnv::new(env, task_seed(ppo.seed, i))?;
        let mut means = Vec::new();
        for j in 0..k_inner {
            let done = (i - 1) * k_inner + j;
            if done >= total {
                break;
            }
            let frac = if ppo.anneal_lr {
                1.0 - done as f64 / total as f64
            } else {
                1.0
            };
            gpu.set_learning_rates(&[frac * ppo.learning_rate])?;
            let iteration = ppo_iteration(ctx, gpu, &mut inner_env, ppo.seed, (done + 1) as u32)?;
            means.push(finite_mean(iteration.returns.iter().flatten()));
            env_steps += rollout_steps;
        }
        let (first, last) = (means[0], means[means.len() - 1]);
        csv.append(&[
            "multitask".to_string(),
            i.to_string(),
            env_steps.to_string(),
            fmt_cell(first),
            fmt_cell(last),
            String::new(),
            format!("{:.3}", start.elapsed().as_secs_f64()),
        ])?;
        if let Some(bar) = &bar {
            bar.set_position(i as u64);
            bar.set_message(format!("sampled return {}", fmt_return(last)));
        }
    }
    if let Some(bar) = &bar {
        bar.finish();
    }
    let params = gpu.read_params(ctx)?;
    save_init(
        &path,
        spec,
        &params,
        None,
        "multitask",
        meta,
        ppo,
        meta.meta_iterations,
    )?;
    Ok(start.elapsed().as_secs_f64())
}
