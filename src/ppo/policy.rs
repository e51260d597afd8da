//! Acting with a trained policy: the actor forward and the categorical head
//! on their own buffers (any number of envs), and episode evaluation.

use crate::env::{CartPole, CartPoleConfig, CartPoleParams, StepOut, VecEnv};
use crate::error::Result;
use crate::gpu::buffers::decode;
use crate::gpu::{GpuBuffer, GpuContext, Readback};
use crate::nn::MlpPlan;
use crate::ops::categorical::{CategoricalSample, SampleKey};
use crate::ops::RECORD;
use crate::ppo::net::ActorCriticSpec;

/// The policy of P agents over `envs_per_agent` envs each, reading `params`.
#[derive(Debug)]
pub struct Policy {
    obs: GpuBuffer<f32>,
    actions: GpuBuffer<u32>,
    actor: MlpPlan,
    head: CategoricalSample,
    readback: Readback,
}

impl Policy {
    pub fn new(
        ctx: &GpuContext,
        spec: &ActorCriticSpec,
        params: &GpuBuffer<f32>,
        num_agents: usize,
        envs_per_agent: usize,
    ) -> Result<Self> {
        let rows = num_agents * envs_per_agent;
        let obs = GpuBuffer::zeros(ctx, "policy obs", rows * spec.obs_dim)?;
        let actions = GpuBuffer::zeros(ctx, "policy actions", rows)?;
        // The head also records log-probs and values; acting needs neither.
        let scratch_values = GpuBuffer::zeros(ctx, "policy values (unused)", rows)?;
        let scratch_records = GpuBuffer::zeros(ctx, "policy records (unused)", rows * RECORD)?;
        let unused_grads = GpuBuffer::zeros(ctx, "policy grads (unused)", params.len())?;
        let (actor_at, _) = spec.placements(num_agents, envs_per_agent);
        let actor = MlpPlan::new(
            ctx,
            "policy actor",
            &spec.actor(),
            actor_at,
            &obs,
            params,
            &unused_grads,
        )?;
        let head = CategoricalSample::new(
            ctx,
            spec.num_actions,
            actor.output(),
            &scratch_values,
            &scratch_records,
            &actions,
        )?;
        let readback = Readback::new(ctx, "policy actions readback", (rows * 4) as u64);
        Ok(Policy {
            obs,
            actions,
            actor,
            head,
            readback,
        })
    }

    /// Actions for `obs` [P][N][obs_dim]: sampled under `key`, or greedy (argmax) when None.
    pub fn act(
        &mut self,
        ctx: &GpuContext,
        obs: &[f32],
        key: Option<SampleKey>,
    ) -> Result<Vec<u32>> {
        self.obs.write(ctx, obs)?;
        self.head.set_step(ctx, key, 0);
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            for d in self.actor.forward_dispatches() {
                d.record(&mut pass);
            }
            self.head.dispatch().record(&mut pass);
        }
        self.readback.record_copy(&mut encoder, &self.actions, 0);
        ctx.submit_commands(encoder.finish());
        let bytes = self.readback.read_bytes(ctx)?;
        Ok(decode(&bytes, 0, self.actions.len()))
    }
}

/// How to evaluate a policy ([`evaluate_env_id`]).
#[derive(Clone, Copy, Debug)]
pub struct EvalSettings {
    /// Episodes per agent, each on its own env.
    pub episodes: usize,
    pub max_episode_steps: u32,
    pub physics: CartPoleParams,
    /// Argmax actions instead of sampling.
    pub greedy: bool,
    pub seed: u64,
}

/// Returns of `episodes` greedy-or-sampled episodes per agent on the env
/// `env_id` (Gymnasium's physics; for CartPole-v1 `settings.physics`),
/// [P][episodes]. With `obs_norm` (per agent: the statistics its training
/// envs normalized observations with, clipped to ±`clip`), each agent sees
/// observations normalized by its own, frozen.
pub fn evaluate_env_id(
    ctx: &GpuContext,
    spec: &ActorCriticSpec,
    params: &GpuBuffer<f32>,
    num_agents: usize,
    env_id: &str,
    settings: &EvalSettings,
    obs_norm: Option<(&[crate::env::normalize::ObsStats], f64)>,
) -> Result<Vec<Vec<f64>>> {
    crate::config::check_eval_envs("episodes", settings.episodes, num_agents)?;
    let env: Box<dyn crate::env::HostEnv> = if env_id == "CartPole-v1" {
        let config = CartPoleConfig {
            max_episode_steps: settings.max_episode_steps,
            ..CartPoleConfig::new(num_agents, settings.episodes)
        };
        let num_envs = num_agents * settings.episodes;
        Box::new(CartPole::with_physics(
            config,
            &vec![settings.physics; num_envs],
        )?)
    } else {
        crate::env::make_host_env(
            env_id,
            num_agents,
            settings.episodes,
            settings.max_episode_steps,
        )?
    };
    let mut env = match obs_norm {
        Some((stats, clip)) => Box::new(crate::env::normalize::frozen_obs_normalization(
            env, stats, clip,
        )?) as Box<dyn crate::env::HostEnv>,
        None => env,
    };
    evaluate_env(
        ctx,
        spec,
        params,
        num_agents,
        env.as_mut(),
        settings.greedy,
        settings.seed,
    )
}

/// Returns of one episode in each env of `env`, [P][envs per agent]: env
/// `p * N + n` is played by agent `p` (sampled actions, or argmax when
/// `greedy`), starting from `env.reset(seed)`. Every env's episode must end
/// (a time limit guarantees it).
pub fn evaluate_env(
    ctx: &GpuContext,
    spec: &ActorCriticSpec,
    params: &GpuBuffer<f32>,
    num_agents: usize,
    env: &mut dyn VecEnv,
    greedy: bool,
    seed: u64,
) -> Result<Vec<Vec<f64>>> {
    let num_envs = env.num_envs();
    if num_agents == 0 || !num_envs.is_multiple_of(num_agents) {
        return Err(crate::Error::config(
            "num_agents",
            num_agents,
            format!("must divide the env count {num_envs}"),
        ));
    }
    if spec.obs_dim != env.obs_dim() || spec.num_actions != env.num_actions() {
        return Err(crate::Error::config(
            "network",
            format!("{} inputs, {} actions", spec.obs_dim, spec.num_actions),
            format!(
                "the env gives {} observations and takes {} actions",
                env.obs_dim(),
                env.num_actions()
            ),
        ));
    }
    let episodes = num_envs / num_agents;
    let mut policy = Policy::new(ctx, spec, params, num_agents, episodes)?;
    let mut obs = vec![0.0; num_envs * spec.obs_dim];
    env.reset(seed, &mut obs)?;
    let mut out = StepOut::new(num_envs, spec.obs_dim);
    let mut returns: Vec<Option<f64>> = vec![None; num_envs];
    let mut finished = Vec::new();
    let mut step = 0u32;
    while returns.iter().any(Option::is_none) {
        let key = (!greedy).then_some(SampleKey {
            seed,
            iteration: u32::MAX,
            step,
        });
        let actions = policy.act(ctx, &obs, key)?;
        env.step(&actions, &mut out)?;
        env.drain_episodes(&mut finished);
        for episode in finished.drain(..) {
            returns[episode.env].get_or_insert(episode.episode_return);
        }
        std::mem::swap(&mut obs, &mut out.obs);
        step += 1;
    }
    Ok(returns
        .chunks(episodes)
        .map(|agent| agent.iter().map(|r| r.unwrap_or(f64::NAN)).collect())
        .collect())
}
