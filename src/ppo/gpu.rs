//! The PPO engine on the GPU for P agents at once: rollout inference (one
//! submit per env step, only actions read back, or with the envs on the
//! device the whole rollout in one submission), and the whole update (GAE,
//! epochs of shuffled minibatches, loss, backward, clip, Adam) recorded into
//! one submission with only statistics read back.

use super::fused_update::{
    fused_update_support, linear_update_support, row_pass_by_rows, update_lanes_rows,
    update_uniform_weights, FusedUpdate, FusedUpdateBuffers, LinearUpdate, LinearUpdateBuffers,
    RowPass, UpdatePath,
};
use super::row_pass::ROW_PASS_ROWS;
use crate::env::gpu_cartpole::{CartPoleStepBuffers, GpuCartPole};
use crate::env::{EpisodeStats, StepOut, VecEnv, NUM_ACTIONS, OBS_DIM};
use crate::error::{Error, Result};
use crate::gpu::buffers::decode;
use crate::gpu::{Dispatch, GpuBuffer, GpuContext, Readback};
use crate::nn::MlpPlan;
use crate::ops::categorical::{CategoricalSample, SampleKey};
use crate::ops::context::{ContextBuffers, ContextLayout, ContextStep};
use crate::ops::gae::{Gae, GaeInputs, GaeVariant, TERMINATED, TRUNCATED};
use crate::ops::gather::{BatchShape, GatherBuffers, GatherMinibatch};
use crate::ops::optim::{optimizer_step, AgentState, ClipAdam, OptimBuffers};
use crate::ops::ppo_loss::{stat, LossBuffers, LossCoefs, PpoLoss, ROW_STATS};
use crate::ops::stats::{self, HISTORY_STATS};
use crate::ops::RECORD;
use crate::ppo::fused::{
    auto_picks_fused, fused_support, policy_step_support, FusedBuffers, FusedLayout,
    FusedPolicyStep, FusedRollout, PolicyBuffers, RolloutPath,
};
use crate::ppo::net::ActorCriticSpec;

#[path = "rollout.rs"]
mod rollout;

/// The sizes and coefficients of the update (CleanRL names).
#[derive(Clone, Debug, PartialEq)]
pub struct UpdateSettings {
    pub num_agents: usize,
    pub num_steps: usize,
    /// Envs of each agent (CleanRL's num_envs).
    pub envs_per_agent: usize,
    pub num_minibatches: usize,
    pub update_epochs: usize,
    pub gamma: f64,
    pub gae_lambda: f64,
    pub norm_adv: bool,
    pub coefs: LossCoefs,
    pub max_grad_norm: f64,
    /// Adam's ε.
    pub adam_eps: f64,
    pub target_kl: Option<f64>,
}

impl UpdateSettings {
    pub fn batch_per_agent(&self) -> usize {
        self.num_steps * self.envs_per_agent
    }

    pub fn minibatch_size(&self) -> usize {
        self.batch_per_agent() / self.num_minibatches.max(1)
    }

    fn batch_shape(&self, obs_dim: usize) -> BatchShape {
        BatchShape {
            num_agents: self.num_agents,
            num_steps: self.num_steps,
            envs_per_agent: self.envs_per_agent,
            obs_dim,
            minibatch_size: self.minibatch_size(),
            epochs: self.update_epochs,
        }
    }

    /// Refuses sizes that do not fit together, naming the field and both sizes.
    pub fn validate(&self) -> Result<()> {
        for (field, value) in [
            ("num_agents", self.num_agents),
            ("num_steps", self.num_steps),
            ("num_envs", self.envs_per_agent),
            ("num_minibatches", self.num_minibatches),
            ("update_epochs", self.update_epochs),
        ] {
            if value == 0 {
                return Err(Error::config(field, value, "must be at least 1"));
            }
        }
        let batch = self.batch_per_agent();
        if !batch.is_multiple_of(self.num_minibatches) {
            return Err(Error::config(
                "num_minibatches",
                self.num_minibatches,
                format!("must divide batch_size {batch} (num_envs × num_steps)"),
            ));
        }
        if self.norm_adv && self.minibatch_size() < 2 {
            return Err(Error::config(
                "num_minibatches",
                self.num_minibatches,
                "leaves minibatches of 1 row; norm_adv needs at least 2 (the std of one value is undefined)",
            ));
        }
        Ok(())
    }
}

/// One agent's statistics from an update, as CleanRL logs them (the last
/// minibatch that updated the agent).
#[derive(Clone, Debug, PartialEq)]
pub struct AgentUpdateStats {
    pub policy_loss: f64,
    pub value_loss: f64,
    pub entropy: f64,
    pub old_approx_kl: f64,
    pub approx_kl: f64,
    pub clipfrac: f64,
    pub explained_variance: f64,
    /// Minibatch steps taken (fewer than epochs × minibatches after a target_kl stop).
    pub minibatch_updates: usize,
    /// Means of every minibatch of the update, [ROW_STATS] each, in order.
    pub history: Vec<[f64; ROW_STATS]>,
}

/// What a rollout on the device reports.
#[derive(Clone, Debug, PartialEq)]
pub struct RolloutStats {
    /// Episodes that ended during the rollout, in step then env order.
    pub episodes: Vec<EpisodeStats>,
    /// Steps at which the layered path ran the final-observation critic
    /// (where some env could be truncated); 0 for the fused rollout, which
    /// runs it per env where a truncation happens.
    pub final_value_steps: usize,
    /// The fused rollout's layout where it ran; None: the layered rollout.
    pub fused_layout: Option<FusedLayout>,
    /// Kernel dispatches the rollout recorded.
    pub dispatches: usize,
}

/// Buffers of the rollout: obs [T][P][N][obs_dim], records [T][P][N][RECORD],
/// rewards / flags / final values [T][P][N].
#[derive(Debug)]
pub struct RolloutBuffers {
    pub obs: GpuBuffer<f32>,
    pub records: GpuBuffer<f32>,
    pub rewards: GpuBuffer<f32>,
    pub flags: GpuBuffer<u32>,
    pub final_values: GpuBuffer<f32>,
    pub last_values: GpuBuffer<f32>,
}

/// The fused update an engine built.
#[derive(Debug)]
enum FusedStep {
    /// Every minibatch step in one dispatch (the linear network).
    Linear(LinearUpdate),
    /// Two dispatches per minibatch step.
    Rows(Box<FusedUpdate>),
}

/// Which fused update suits a network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FusedKind {
    Linear,
    Rows,
}

/// All buffers and recorded dispatches of P agents' PPO, built once per run.
#[derive(Debug)]
pub struct PpoGpu {
    spec: ActorCriticSpec,
    settings: UpdateSettings,
    pub params: GpuBuffer<f32>,
    /// The last minibatch's gradients [P][K], before clipping.
    grads: GpuBuffer<f32>,
    adam_m: GpuBuffer<f32>,
    adam_v: GpuBuffer<f32>,
    agent_state: GpuBuffer<AgentState>,
    /// The host's copy of the agent state; uploaded before each update.
    host_state: Vec<AgentState>,

    cur_obs: GpuBuffer<f32>,
    final_obs: GpuBuffer<f32>,
    actions: GpuBuffer<u32>,
    rollout: RolloutBuffers,
    rollout_actor: MlpPlan,
    rollout_critic: MlpPlan,
    final_critic: MlpPlan,
    sample: CategoricalSample,
    /// One sampler per rollout step for rollouts on the device (each keeps
    /// its own RNG key and record offset); built by the first such rollout.
    device_samples: Vec<CategoricalSample>,
    /// The rollout path device-env rollouts take, and the fused kernel once built.
    rollout_path: RolloutPath,
    fused: Option<FusedRollout>,
    /// A layout forced on the fused rollout (tests, benches); None: by size.
    fused_layout: Option<FusedLayout>,
    /// The one-dispatch rollout step for host envs, once built.
    policy_step: Option<FusedPolicyStep>,
    /// True after `rollout_gpu`: rewards, flags and the next observations are
    /// on the device, and `update` must not overwrite them from the host.
    rollout_on_device: bool,
    step_readback: Readback,
    /// Step whose final observations wait in `final_obs` for the critic.
    pending_final: Option<usize>,
    host_rewards: Vec<f32>,
    host_flags: Vec<u32>,

    perm: GpuBuffer<u32>,
    history: GpuBuffer<f32>,
    explained_var: GpuBuffer<f32>,
    gae: Gae,
    explained_variance: Dispatch,
    gather: GatherMinibatch,
    adv_norm: Option<Dispatch>,
    update_actor: MlpPlan,
    update_critic: MlpPlan,
    loss: PpoLoss,
    clip_adam: ClipAdam,
    /// First-order CAVIA's task contexts, when enabled; while `context_on`,
    /// updates move the contexts instead of running clip + Adam.
    context: Option<ContextStep>,
    context_on: bool,
    stats_means: Vec<Dispatch>,
    update_readback: Readback,
    /// The minibatch step the update takes, and the fused one once built.
    update_path: UpdatePath,
    row_pass: RowPass,
    fused_update: Option<FusedStep>,
    /// The fused minibatch step's clip, Adam and statistics, one dispatch
    /// per history entry (built with the fused row step).
    optimizer_steps: Vec<Dispatch>,
    row_stats: GpuBuffer<f32>,
}

impl PpoGpu {
    pub fn new(
        ctx: &GpuContext,
        spec: &ActorCriticSpec,
        settings: &UpdateSettings,
    ) -> Result<Self> {
        settings.validate()?;
        let (p, n, t) = (
            settings.num_agents,
            settings.envs_per_agent,
            settings.num_steps,
        );
        let (obs_dim, num_actions) = (spec.obs_dim, spec.num_actions);
        let k = spec.param_count();
        let rows = p * n;
        let zeros = |name: &str, len: usize| GpuBuffer::<f32>::zeros(ctx, name, len);
        // A uniform block too: the fused update reads one agent's weights from it.
        let params = GpuBuffer::<f32>::zeros_uniform(ctx, "params", p * k)?;
        // Written by the backward plans, read by Adam.
        let grads = zeros("grads", p * k)?;
        let adam_m = zeros("adam_m", p * k)?;
        let adam_v = zeros("adam_v", p * k)?;
        let host_state = vec![
            AgentState {
                learning_rate: 0.0,
                updating: 1,
                adam_step: 0,
                clip_scale: 1.0,
            };
            p
        ];
        let agent_state = GpuBuffer::from_slice(ctx, "agent_state", &host_state)?;

        let cur_obs = zeros("obs (current step)", rows * obs_dim)?;
        let final_obs = zeros("final obs (current step)", rows * obs_dim)?;
        let actions = GpuBuffer::<u32>::zeros(ctx, "actions (current step)", rows)?;
        let rollout = RolloutBuffers {
            obs: zeros("rollout obs", t * rows * obs_dim)?,
            records: zeros("rollout records", t * rows * RECORD)?,
            rewards: zeros("rollout rewards", t * rows)?,
            flags: GpuBuffer::zeros(ctx, "rollout flags", t * rows)?,
            final_values: zeros("rollout final values", t * rows)?,
            last_values: zeros("last values", rows)?,
        };
        let (actor_at, critic_at) = spec.placements(p, n);
        let rollout_actor = MlpPlan::new(
            ctx,
            "rollout actor",
            &spec.actor(),
            actor_at,
            &cur_obs,
            &params,
            &grads,
        )?;
        let rollout_critic = MlpPlan::new(
            ctx,
            "rollout critic",
            &spec.critic(),
            critic_at,
            &cur_obs,
            &params,
            &grads,
        )?;
        let final_critic = MlpPlan::new(
            ctx,
            "final-obs critic",
            &spec.critic(),
            critic_at,
            &final_obs,
            &params,
            &grads,
        )?;
        let sample = CategoricalSample::new(
            ctx,
            num_actions,
            rollout_actor.output(),
            rollout_critic.output(),
            &rollout.records,
            &actions,
        )?;
        let step_readback = Readback::new(ctx, "actions readback", (rows * 4) as u64);

        let shape = settings.batch_shape(obs_dim);
        let m = shape.minibatch_size;
        let minibatches = settings.num_minibatches;
        let history_len = settings.update_epochs * minibatches;
        let perm = GpuBuffer::<u32>::zeros(
            ctx,
            "permutations",
            settings.update_epochs * p * shape.batch_per_agent(),
        )?;
        let mb_obs = zeros("minibatch obs", p * m * obs_dim)?;
        let mb_records = zeros("minibatch records", p * m * RECORD)?;
        let row_stats = zeros("row stats", p * m * ROW_STATS)?;
        let history = zeros("stats history", history_len * p * HISTORY_STATS)?;
        let explained_var = zeros("explained variance", p)?;
        let gae = Gae::new(
            ctx,
            t,
            rows,
            settings.gamma as f32,
            settings.gae_lambda as f32,
            GaeVariant::for_shape(t, rows),
            &GaeInputs {
                rewards: &rollout.rewards,
                flags: &rollout.flags,
                final_values: &rollout.final_values,
                last_values: &rollout.last_values,
                records: &rollout.records,
            },
        )?;
        let explained_variance =
            stats::explained_variance(ctx, p, t, n, &rollout.records, &explained_var)?;
        let gather = GatherMinibatch::new(
            ctx,
            &shape,
            &GatherBuffers {
                perm: &perm,
                obs: &rollout.obs,
                records: &rollout.records,
                mb_obs: &mb_obs,
                mb_records: &mb_records,
            },
        )?;
        let adv_norm = if settings.norm_adv {
            Some(stats::adv_norm(ctx, p, m, &mb_records)?)
        } else {
            None
        };
        let (actor_mb, critic_mb) = spec.placements(p, m);
        let update_actor = MlpPlan::new(
            ctx,
            "actor",
            &spec.actor(),
            actor_mb,
            &mb_obs,
            &params,
            &grads,
        )?;
        let update_critic = MlpPlan::new(
            ctx,
            "critic",
            &spec.critic(),
            critic_mb,
            &mb_obs,
            &params,
            &grads,
        )?;
        let loss = PpoLoss::new(
            ctx,
            p * m,
            m,
            num_actions,
            settings.coefs,
            &LossBuffers {
                mb_records: &mb_records,
                logits: update_actor.output(),
                values: update_critic.output(),
                dlogits: update_actor.grad_output(),
                dvalues: update_critic.grad_output(),
                row_stats: &row_stats,
            },
        )?;
        let clip_adam = ClipAdam::new(
            ctx,
            p,
            k,
            settings.max_grad_norm,
            settings.adam_eps,
            &OptimBuffers {
                grads: &grads,
                agent_state: &agent_state,
                params: &params,
                adam_m: &adam_m,
                adam_v: &adam_v,
            },
        )?;
        let mut stats_means = Vec::with_capacity(history_len);
        for index in 0..history_len {
            let epoch_end = (index + 1) % minibatches == 0;
            stats_means.push(stats::row_stats_mean(
                ctx,
                p,
                m,
                index,
                settings.target_kl.filter(|_| epoch_end),
                &stats::RowStatsBuffers {
                    row_stats: &row_stats,
                    agent_state: &agent_state,
                    history: &history,
                },
            )?);
        }
        let update_readback = Readback::new(
            ctx,
            "update readback",
            ((history.len() + explained_var.len()) * 4 + p * std::mem::size_of::<AgentState>())
                as u64,
        );
        Ok(PpoGpu {
            spec: spec.clone(),
            settings: settings.clone(),
            params,
            grads,
            adam_m,
            adam_v,
            agent_state,
            host_state,
            cur_obs,
            final_obs,
            actions,
            rollout,
            rollout_actor,
            rollout_critic,
            final_critic,
            sample,
            device_samples: Vec::new(),
            rollout_path: RolloutPath::Auto,
            fused: None,
            fused_layout: None,
            policy_step: None,
            rollout_on_device: false,
            step_readback,
            pending_final: None,
            host_rewards: vec![0.0; t * rows],
            host_flags: vec![0; t * rows],
            perm,
            history,
            explained_var,
            gae,
            explained_variance,
            gather,
            adv_norm,
            update_actor,
            update_critic,
            loss,
            clip_adam,
            context: None,
            context_on: false,
            stats_means,
            update_readback,
            update_path: UpdatePath::Auto,
            row_pass: RowPass::Auto,
            fused_update: None,
            optimizer_steps: Vec::new(),
            row_stats,
        })
    }

    pub fn spec(&self) -> &ActorCriticSpec {
        &self.spec
    }

    pub fn settings(&self) -> &UpdateSettings {
        &self.settings
    }

    /// Which GAE kernel the shape selected.
    pub fn gae_variant(&self) -> GaeVariant {
        self.gae.variant()
    }

    /// Uploads all agents' parameters, [P][K]. With a context enabled,
    /// every agent's context restarts at 0 from these parameters.
    pub fn set_params(&self, ctx: &GpuContext, params: &[f32]) -> Result<()> {
        self.params.write(ctx, params)?;
        self.reset_context(ctx);
        Ok(())
    }

    /// Gives every agent a task context of `dim` numbers (first-order
    /// CAVIA; see [`crate::ops::context`]) with zero weights, and switches
    /// updates to it: an update then runs its first epoch's minibatches at
    /// the rollout's parameters, and moves each context by one step of
    /// projected SGD (`lr`, box `[-bound, bound]`) along their mean
    /// gradient, leaving the rest of the parameters, and Adam, alone. The
    /// contexts start at 0 from the current parameters.
    pub fn enable_context(
        &mut self,
        ctx: &GpuContext,
        dim: usize,
        lr: f64,
        bound: f64,
    ) -> Result<()> {
        let layout = ContextLayout::new(&self.spec, dim)?;
        let step = ContextStep::new(
            ctx,
            layout,
            self.settings.num_agents,
            self.settings.num_minibatches,
            lr,
            bound,
            &ContextBuffers {
                grads: &self.grads,
                agent_state: &self.agent_state,
                params: &self.params,
            },
        )?;
        self.context = Some(step);
        self.context_on = true;
        self.reset_context(ctx);
        Ok(())
    }

    /// The contexts, when enabled.
    pub fn context(&self) -> Option<&ContextStep> {
        self.context.as_ref()
    }

    pub fn context_mut(&mut self) -> Option<&mut ContextStep> {
        self.context.as_mut()
    }

    /// Whether updates move the contexts (true) or run Adam on every
    /// parameter (false, the default; also with a context enabled).
    pub fn use_context(&mut self, on: bool) -> Result<()> {
        if on && self.context.is_none() {
            return Err(Error::config(
                "context",
                "on",
                "enable_context first: this PpoGpu has no task context",
            ));
        }
        self.context_on = on;
        Ok(())
    }

    /// Restarts every agent's context at 0: the current values of the slots
    /// it shifts become their base. Does nothing without a context.
    pub fn reset_context(&self, ctx: &GpuContext) {
        if let Some(context) = &self.context {
            context.reset(ctx);
        }
    }

    pub fn read_params(&self, ctx: &GpuContext) -> Result<Vec<f32>> {
        self.params.read(ctx)
    }

    /// Adam's first and second moments, [P][K] each, and each agent's step count.
    pub fn read_optimizer(&self, ctx: &GpuContext) -> Result<(Vec<f32>, Vec<f32>, Vec<u32>)> {
        let steps = self.host_state.iter().map(|s| s.adam_step).collect();
        Ok((self.adam_m.read(ctx)?, self.adam_v.read(ctx)?, steps))
    }

    /// Restores Adam's state (for resuming a run).
    pub fn set_optimizer(
        &mut self,
        ctx: &GpuContext,
        m: &[f32],
        v: &[f32],
        steps: &[u32],
    ) -> Result<()> {
        self.adam_m.write(ctx, m)?;
        self.adam_v.write(ctx, v)?;
        if steps.len() != self.host_state.len() {
            return Err(Error::shape(
                "set_optimizer",
                "adam steps",
                self.host_state.len(),
                steps.len(),
            ));
        }
        for (state, &step) in self.host_state.iter_mut().zip(steps) {
            state.adam_step = step;
        }
        Ok(())
    }

    /// Zeroes Adam's moments and step counts: every agent starts a fresh
    /// optimizer (meta-learning's inner loops do this at each broadcast).
    pub fn reset_optimizer(&mut self, ctx: &GpuContext) -> Result<()> {
        let zeros = vec![0.0f32; self.adam_m.len()];
        let steps = vec![0u32; self.host_state.len()];
        self.set_optimizer(ctx, &zeros, &zeros, &steps)
    }

    /// The gradients [P][K] the last update's final minibatch left, before
    /// clipping (see [`PpoGpu::gradient`]).
    pub fn grads(&self) -> &GpuBuffer<f32> {
        &self.grads
    }

    /// Sets each agent's learning rate for the next update (annealing).
    pub fn set_learning_rates(&mut self, rates: &[f64]) -> Result<()> {
        if rates.len() != self.host_state.len() {
            return Err(Error::shape(
                "set_learning_rates",
                "learning rates",
                self.host_state.len(),
                rates.len(),
            ));
        }
        for (state, &rate) in self.host_state.iter_mut().zip(rates) {
            state.learning_rate = rate as f32;
        }
        Ok(())
    }

    /// Which update runs ([`UpdatePath::Auto`]: the fused one wherever it
    /// is supported).
    pub fn set_update_path(&mut self, path: UpdatePath) {
        self.update_path = path;
    }

    /// How the fused row step's row pass spreads a minibatch ([`RowPass::Auto`]:
    /// by rows where the weights fit a uniform block).
    pub fn set_row_pass(&mut self, row_pass: RowPass) {
        self.row_pass = row_pass;
    }

    /// Whether updates take the fused minibatch step (CAVIA's context
    /// updates always take the layered one); an error naming `update`
    /// where [`UpdatePath::Fused`] was asked for and is not supported.
    pub fn uses_fused_update(&self, ctx: &GpuContext) -> Result<bool> {
        Ok(self.fused_kind(ctx)?.is_some())
    }

    /// The fused update the path takes: for the linear network the
    /// one-dispatch update where it applies, else the row step.
    fn fused_kind(&self, ctx: &GpuContext) -> Result<Option<FusedKind>> {
        if self.update_path == UpdatePath::Layered {
            return Ok(None);
        }
        let m = self.settings.minibatch_size();
        if linear_update_support(ctx, &self.spec, m, self.settings.norm_adv).is_none() {
            return Ok(Some(FusedKind::Linear));
        }
        let p_count = self.settings.num_agents;
        match (
            fused_update_support(ctx, &self.spec, p_count, m),
            self.update_path,
        ) {
            (None, UpdatePath::Auto)
                if !update_uniform_weights(ctx, &self.spec, p_count)
                    && self.row_pass != RowPass::Rows =>
            {
                Ok(None)
            }
            (None, _) => {
                row_pass_by_rows(ctx, &self.spec, p_count, self.row_pass)?;
                Ok(Some(FusedKind::Rows))
            }
            (Some(_), UpdatePath::Auto) => Ok(None),
            (Some(reason), _) => Err(Error::config("update", "fused", reason)),
        }
    }

    /// The update that runs, in a few words ("fused, linear", "fused, 2
    /// per minibatch", "layered"), for summaries and benches.
    pub fn update_name(&self, ctx: &GpuContext) -> &'static str {
        match self.fused_kind(ctx) {
            Ok(Some(FusedKind::Linear)) => "fused, linear",
            Ok(Some(FusedKind::Rows)) => {
                let p_count = self.settings.num_agents;
                match row_pass_by_rows(ctx, &self.spec, p_count, self.row_pass) {
                    Ok(true) => "fused, rows",
                    _ => "fused, lanes",
                }
            }
            _ => "layered",
        }
    }

    /// The minibatch step in words, for the trainer's progress line.
    pub fn update_path_description(&self, ctx: &GpuContext) -> String {
        match self.fused_kind(ctx) {
            Ok(Some(FusedKind::Linear)) => {
                "fused (the whole update in one dispatch, a workgroup per agent)".to_string()
            }
            Ok(Some(FusedKind::Rows)) => {
                let p_count = self.settings.num_agents;
                let layout = match row_pass_by_rows(ctx, &self.spec, p_count, self.row_pass) {
                    Ok(true) => format!("{ROW_PASS_ROWS} rows per invocation"),
                    _ => format!(
                        "{} rows per workgroup of lanes",
                        update_lanes_rows(ctx, &self.spec).unwrap_or(1)
                    ),
                };
                format!("fused (a row pass, the gradients and clip + Adam per minibatch step, {layout})")
            }
            _ => "layered (a dispatch per layer and pass)".to_string(),
        }
    }

    /// Builds the fused update where the update takes it and it is not built yet.
    fn prepare_fused_update(&mut self, ctx: &GpuContext) -> Result<()> {
        if self.fused_update.is_some() {
            return Ok(());
        }
        self.fused_update = match self.fused_kind(ctx)? {
            None => None,
            Some(FusedKind::Linear) => Some(FusedStep::Linear(LinearUpdate::new(
                ctx,
                &self.spec,
                &self.settings,
                &LinearUpdateBuffers {
                    rewards: &self.rollout.rewards,
                    flags: &self.rollout.flags,
                    final_values: &self.rollout.final_values,
                    cur_obs: &self.cur_obs,
                    explained_var: &self.explained_var,
                    perm: &self.perm,
                    obs: &self.rollout.obs,
                    records: &self.rollout.records,
                    params: &self.params,
                    adam_m: &self.adam_m,
                    adam_v: &self.adam_v,
                    agent_state: &self.agent_state,
                    history: &self.history,
                    grads: &self.grads,
                },
            )?)),
            Some(FusedKind::Rows) => {
                self.optimizer_steps = self.build_optimizer_steps(ctx)?;
                Some(FusedStep::Rows(Box::new(FusedUpdate::new(
                    ctx,
                    &self.spec,
                    &self.settings,
                    self.row_pass,
                    &FusedUpdateBuffers {
                        params: &self.params,
                        obs: &self.rollout.obs,
                        records: &self.rollout.records,
                        perm: &self.perm,
                        row_stats: &self.row_stats,
                        grads: &self.grads,
                    },
                )?)))
            }
        };
        Ok(())
    }

    /// [`optimizer_step`] for every history entry (epoch × minibatch), the
    /// target-KL check at each epoch's last.
    fn build_optimizer_steps(&self, ctx: &GpuContext) -> Result<Vec<Dispatch>> {
        let minibatches = self.settings.num_minibatches;
        (0..self.stats_means.len())
            .map(|index| {
                let epoch_end = (index + 1) % minibatches == 0;
                optimizer_step(
                    ctx,
                    self.settings.num_agents,
                    self.spec.param_count(),
                    self.settings.max_grad_norm,
                    self.settings.adam_eps,
                    self.settings.minibatch_size(),
                    index,
                    self.settings.target_kl.filter(|_| epoch_end),
                    &OptimBuffers {
                        grads: &self.grads,
                        agent_state: &self.agent_state,
                        params: &self.params,
                        adam_m: &self.adam_m,
                        adam_v: &self.adam_v,
                    },
                    &stats::RowStatsBuffers {
                        row_stats: &self.row_stats,
                        agent_state: &self.agent_state,
                        history: &self.history,
                    },
                )
            })
            .collect()
    }

    /// Records one minibatch's gather, advantage normalization, forward
    /// passes and loss (which also writes the output gradients).
    fn record_minibatch_loss(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        epoch: usize,
        minibatch: usize,
    ) {
        self.gather.dispatch(epoch, minibatch).record(pass);
        if let Some(d) = &self.adv_norm {
            d.record(pass);
        }
        for d in self.update_actor.forward_dispatches() {
            d.record(pass);
        }
        for d in self.update_critic.forward_dispatches() {
            d.record(pass);
        }
        self.loss.dispatch().record(pass);
    }

    /// The whole update in one submission: bootstrap values of `next_obs`,
    /// GAE, `update_epochs` × `num_minibatches` minibatch steps through the
    /// permutations `perm` [epochs][P][T·N]; returns each agent's statistics.
    ///
    /// After a host rollout (`rollout_step` / `record_env_step`) `next_obs`
    /// [P][N][obs_dim] must be given, and the recorded rewards and flags are
    /// uploaded. After [`PpoGpu::rollout_gpu`] everything is already on the
    /// device: `None` bootstraps from the observations the envs left there.
    pub fn update(
        &mut self,
        ctx: &GpuContext,
        next_obs: Option<&[f32]>,
        perm: &[u32],
    ) -> Result<Vec<AgentUpdateStats>> {
        self.update_or_gradient(ctx, next_obs, perm, true)
    }

    /// The update's passes without Adam: the parameters stay as they are and
    /// [`PpoGpu::grads`] then holds the PPO loss gradient of the last
    /// minibatch at those parameters (ratio 1, so the clipped surrogate's
    /// gradient is the policy gradient plus the value and entropy terms).
    /// First-order MAML's outer gradient. The returned statistics are empty.
    pub fn gradient(
        &mut self,
        ctx: &GpuContext,
        next_obs: Option<&[f32]>,
        perm: &[u32],
    ) -> Result<()> {
        self.update_or_gradient(ctx, next_obs, perm, false)
            .map(|_| ())
    }

    fn update_or_gradient(
        &mut self,
        ctx: &GpuContext,
        next_obs: Option<&[f32]>,
        perm: &[u32],
        apply: bool,
    ) -> Result<Vec<AgentUpdateStats>> {
        let batch = self.settings.batch_per_agent();
        if let Some(bad) = perm.iter().position(|&b| b as usize >= batch) {
            return Err(Error::config(
                format!("perm[{bad}]"),
                perm[bad],
                format!("batch rows per agent are 0..{batch}"),
            ));
        }
        match next_obs {
            Some(obs) => self.cur_obs.write(ctx, obs)?,
            None if !self.rollout_on_device => {
                return Err(Error::config(
                    "next_obs",
                    "None",
                    "only a rollout_gpu leaves the next observations on the device; pass them after a host rollout",
                ));
            }
            None => {}
        }
        self.perm.write(ctx, perm)?;
        if !self.rollout_on_device {
            self.rollout.rewards.write(ctx, &self.host_rewards)?;
            self.rollout.flags.write(ctx, &self.host_flags)?;
        }
        self.prepare_fused_update(ctx)?;
        for state in &mut self.host_state {
            state.updating = u32::from(apply);
            state.clip_scale = 1.0;
        }
        self.agent_state.write(ctx, &self.host_state)?;

        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        self.record_pending_final(&mut encoder);
        if self.context_on {
            // Only the first epoch's statistics are written below.
            encoder.clear_buffer(&self.history.buffer, 0, None);
        }
        // A context update is one step after the first epoch.
        let context = self.context.as_ref().filter(|_| self.context_on);
        let fused = self.fused_update.as_ref().filter(|_| context.is_none());
        let (linear, fused) = match fused {
            Some(FusedStep::Linear(linear)) => (Some(linear), None),
            Some(FusedStep::Rows(rows)) => (None, Some(rows)),
            None => (None, None),
        };
        // The linear update's first dispatch bootstraps and runs GAE itself.
        let prologue = linear.is_some_and(LinearUpdate::has_prologue);
        if !prologue {
            {
                let mut pass = encoder.begin_compute_pass(&Default::default());
                for d in self.rollout_critic.forward_dispatches() {
                    d.record(&mut pass);
                }
            }
            let rows_bytes = (self.rollout.last_values.len() * 4) as u64;
            encoder.copy_buffer_to_buffer(
                &self.rollout_critic.output().buffer,
                0,
                &self.rollout.last_values.buffer,
                0,
                rows_bytes,
            );
        }
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            if !prologue {
                self.gae.dispatch().record(&mut pass);
                self.explained_variance.record(&mut pass);
            }
            if let Some(fused) = fused {
                fused.record_prologue(&mut pass);
            }
            let minibatches = self.settings.num_minibatches;
            let epochs = if context.is_some() {
                1
            } else {
                self.settings.update_epochs
            };
            // The linear update runs every minibatch step in its own dispatch.
            let epochs = match linear {
                Some(linear) => {
                    linear.record(&mut pass);
                    0
                }
                None => epochs,
            };
            for epoch in 0..epochs {
                for minibatch in 0..minibatches {
                    match fused {
                        Some(fused) => fused.record(&mut pass, epoch * minibatches + minibatch),
                        None => {
                            self.record_minibatch_loss(&mut pass, epoch, minibatch);
                            for d in self.update_actor.backward_dispatches() {
                                d.record(&mut pass);
                            }
                            for d in self.update_critic.backward_dispatches() {
                                d.record(&mut pass);
                            }
                        }
                    }
                    let index = epoch * minibatches + minibatch;
                    match (context, fused) {
                        (Some(context), _) => {
                            if let Some(d) = context.collect_dispatch() {
                                d.record(&mut pass);
                            }
                            context.accumulate_dispatch().record(&mut pass);
                        }
                        (None, Some(_)) => {
                            // Clip, Adam and the statistics below in one dispatch.
                            self.optimizer_steps[index].record(&mut pass);
                            continue;
                        }
                        (None, None) => {
                            for d in self.clip_adam.dispatches() {
                                d.record(&mut pass);
                            }
                        }
                    }
                    // After Adam: a target_kl stop at the epoch's end keeps this step, as CleanRL does.
                    self.stats_means[index].record(&mut pass);
                }
            }
            if let Some(context) = context {
                for d in context.step_dispatches() {
                    d.record(&mut pass);
                }
                // The statistics of the moved policy on the second epoch's
                // minibatches (forward and loss only), so approx_kl and
                // clipfrac tell how far the step went.
                if self.settings.update_epochs > 1 {
                    let epoch = 1;
                    for minibatch in 0..minibatches {
                        self.record_minibatch_loss(&mut pass, epoch, minibatch);
                        self.stats_means[epoch * minibatches + minibatch].record(&mut pass);
                    }
                }
            }
        }
        let history_bytes = (self.history.len() * 4) as u64;
        let ev_bytes = (self.explained_var.len() * 4) as u64;
        self.update_readback
            .record_copy(&mut encoder, &self.history, 0);
        self.update_readback
            .record_copy(&mut encoder, &self.explained_var, history_bytes);
        self.update_readback
            .record_copy(&mut encoder, &self.agent_state, history_bytes + ev_bytes);
        ctx.submit_commands(encoder.finish());
        let bytes = self.update_readback.read_bytes(ctx)?;

        let p_count = self.settings.num_agents;
        let history: Vec<f32> = decode(&bytes, 0, self.history.len());
        let explained: Vec<f32> = decode(&bytes, history_bytes as usize, p_count);
        self.host_state = decode(&bytes, (history_bytes + ev_bytes) as usize, p_count);
        let entries = history.len() / (p_count * HISTORY_STATS);
        Ok((0..p_count)
            .map(|p| {
                let rows: Vec<&[f32]> = (0..entries)
                    .map(|e| {
                        &history[(e * p_count + p) * HISTORY_STATS
                            ..(e * p_count + p + 1) * HISTORY_STATS]
                    })
                    .filter(|row| row[ROW_STATS] != 0.0)
                    .collect();
                let to_f64 = |row: &[f32]| std::array::from_fn(|k| row[k] as f64);
                let history: Vec<[f64; ROW_STATS]> = rows.iter().map(|r| to_f64(r)).collect();
                let last = history.last().copied().unwrap_or([f64::NAN; ROW_STATS]);
                AgentUpdateStats {
                    policy_loss: last[stat::POLICY_LOSS],
                    value_loss: last[stat::VALUE_LOSS],
                    entropy: last[stat::ENTROPY],
                    old_approx_kl: last[stat::OLD_APPROX_KL],
                    approx_kl: last[stat::APPROX_KL],
                    clipfrac: last[stat::CLIPFRAC],
                    explained_variance: explained[p] as f64,
                    minibatch_updates: history.len(),
                    history,
                }
            })
            .collect())
    }

    /// Kernel dispatches one update records (bootstrap, GAE, statistics and
    /// every minibatch step), all in one submission.
    pub fn update_dispatch_count(&self) -> usize {
        if let Some(FusedStep::Linear(linear)) = &self.fused_update {
            let separate = if linear.has_prologue() {
                0
            } else {
                self.rollout_critic.forward_dispatches().count() + 2
            };
            return separate + linear.dispatch_count();
        }
        if let Some(FusedStep::Rows(fused)) = &self.fused_update {
            // The row pass, the gradients and the optimizer step; the
            // minibatch is read through the permutation.
            let per_minibatch = fused.dispatch_count() + 1;
            return self.rollout_critic.forward_dispatches().count()
                + 2
                + fused.prologue_dispatch_count()
                + self.stats_means.len() * per_minibatch;
        }
        let step = self.update_actor.forward_dispatches().count()
            + self.update_critic.forward_dispatches().count()
            + 1
            + self.update_actor.backward_dispatches().count()
            + self.update_critic.backward_dispatches().count();
        // The gather, advantage normalization, the step, clip + Adam and the statistics.
        let per_minibatch = 1 + self.adv_norm.is_some() as usize + step + 3;
        self.rollout_critic.forward_dispatches().count()
            + 2
            + self.stats_means.len() * per_minibatch
    }

    /// Rollout records [T][P][N][RECORD] (log-prob, value, advantage, return, action).
    pub fn read_records(&self, ctx: &GpuContext) -> Result<Vec<f32>> {
        self.rollout.records.read(ctx)
    }

    /// Rollout observations [T][P][N][obs_dim].
    pub fn read_rollout_obs(&self, ctx: &GpuContext) -> Result<Vec<f32>> {
        self.rollout.obs.read(ctx)
    }

    /// The observations the policy reads next (the update's bootstrap input), [P][N][obs_dim].
    pub fn read_current_obs(&self, ctx: &GpuContext) -> Result<Vec<f32>> {
        self.cur_obs.read(ctx)
    }

    /// The rollout's buffers (tests poison them).
    pub fn rollout_buffers(&self) -> &RolloutBuffers {
        &self.rollout
    }

    /// V(final obs) as computed for truncated steps, [T][P][N].
    pub fn read_final_values(&self, ctx: &GpuContext) -> Result<Vec<f32>> {
        self.rollout.final_values.read(ctx)
    }

    /// Rewards on the device, [T][P][N] (written by `rollout_gpu`, or
    /// uploaded from the host by `update`).
    pub fn read_rewards(&self, ctx: &GpuContext) -> Result<Vec<f32>> {
        self.rollout.rewards.read(ctx)
    }

    /// [`TERMINATED`] / [`TRUNCATED`] flags on the device, [T][P][N].
    pub fn read_flags(&self, ctx: &GpuContext) -> Result<Vec<u32>> {
        self.rollout.flags.read(ctx)
    }
}
