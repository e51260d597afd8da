//! The inner loop shared by meta-training, the multi-task baseline and the
//! adaptation evaluation: PPO rollouts and updates of P agents on a
//! [`VecEnv`] whose agent `p` runs task `p`.

use crate::env::{StepOut, VecEnv};
use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::ppo::{permutations, AgentUpdateStats, PpoGpu};

/// A [`VecEnv`] with its current observations, stepped by a [`PpoGpu`].
pub struct InnerEnv {
    pub env: Box<dyn VecEnv>,
    pub obs: Vec<f32>,
    out: StepOut,
    finished: Vec<crate::env::EpisodeStats>,
}

impl InnerEnv {
    /// Resets `env` with `seed`.
    pub fn new(mut env: Box<dyn VecEnv>, seed: u64) -> Result<Self> {
        let (n, d) = (env.num_envs(), env.obs_dim());
        let mut obs = vec![0.0; n * d];
        env.reset(seed, &mut obs)?;
        Ok(InnerEnv {
            env,
            obs,
            out: StepOut::new(n, d),
            finished: Vec::new(),
        })
    }
}

/// One rollout of `gpu`'s T steps on `inner`, sampling under (seed,
/// iteration); returns the returns of the episodes that ended, per agent.
pub fn rollout(
    ctx: &GpuContext,
    gpu: &mut PpoGpu,
    inner: &mut InnerEnv,
    seed: u64,
    iteration: u32,
) -> Result<Vec<Vec<f64>>> {
    let (num_agents, n) = (gpu.settings().num_agents, gpu.settings().envs_per_agent);
    if inner.env.num_envs() != num_agents * n {
        return Err(Error::shape(
            "meta rollout",
            "envs",
            num_agents * n,
            inner.env.num_envs(),
        ));
    }
    gpu.rollout_host(
        ctx,
        inner.env.as_mut(),
        &mut inner.obs,
        &mut inner.out,
        seed,
        iteration,
        &mut inner.finished,
    )?;
    let mut returns = vec![Vec::new(); num_agents];
    for episode in inner.finished.drain(..) {
        returns[episode.env / n].push(episode.episode_return);
    }
    Ok(returns)
}

/// What one [`ppo_iteration`] reports.
pub struct Iteration {
    /// Returns of the rollout's finished episodes, per agent.
    pub returns: Vec<Vec<f64>>,
    /// Each agent's update statistics.
    pub stats: Vec<AgentUpdateStats>,
}

/// One PPO iteration (rollout, then the update) for every agent. Fails on a
/// non-finite loss.
pub fn ppo_iteration(
    ctx: &GpuContext,
    gpu: &mut PpoGpu,
    inner: &mut InnerEnv,
    seed: u64,
    iteration: u32,
) -> Result<Iteration> {
    let returns = rollout(ctx, gpu, inner, seed, iteration)?;
    let perm = permutations(seed, iteration as u64, gpu.settings());
    let stats = gpu.update(ctx, Some(&inner.obs), &perm)?;
    if let Some((p, s)) = stats
        .iter()
        .enumerate()
        .find(|(_, s)| !(s.policy_loss.is_finite() && s.value_loss.is_finite()))
    {
        return Err(Error::NonFinite {
            what: format!(
                "agent {p} losses (policy {}, value {})",
                s.policy_loss, s.value_loss
            ),
            iteration: iteration as usize,
            detail: "inner loop stopped (lower learning_rate or meta_lr)".into(),
        });
    }
    Ok(Iteration { returns, stats })
}

/// Mean of the finite values, None when there are none.
pub fn finite_mean<'a>(values: impl IntoIterator<Item = &'a f64>) -> Option<f64> {
    let (sum, count) = values
        .into_iter()
        .filter(|v| v.is_finite())
        .fold((0.0, 0usize), |(s, c), v| (s + v, c + 1));
    (count > 0).then(|| sum / count as f64)
}

/// A progress bar on stderr (None when `show` is false): `prefix`, elapsed
/// time, `pos/len` followed by `unit`, and a message.
pub(crate) fn progress_bar(
    show: bool,
    len: usize,
    prefix: &str,
    unit: &str,
) -> Option<indicatif::ProgressBar> {
    show.then(|| {
        let bar = indicatif::ProgressBar::new(len as u64);
        let template =
            format!("{prefix:>10} {{elapsed_precise}} [{{bar:30}}] {{pos}}/{{len}}{unit}  {{msg}}");
        bar.set_style(
            indicatif::ProgressStyle::with_template(&template)
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar
    })
}
