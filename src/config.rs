//! PPO hyper-parameters under CleanRL's `ppo.py` names, their validation,
//! named presets, and how a run's configuration is assembled from a preset,
//! a TOML file and `--set key=value` overrides.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
pub use crate::gpu::threads::SoftwareThreads;
pub use crate::ppo::fused::RolloutPath;
pub use crate::ppo::fused_update::{RowPass, UpdatePath};

/// Most rollout rows (`num_agents × num_envs × num_steps`) a run may ask
/// for: 2^28 rows of a 4-float observation already need 4 GiB of buffers, so
/// anything larger is a typo, and refusing it here beats an allocation
/// failure deep in the GPU code.
pub const MAX_ROLLOUT_ROWS: usize = 1 << 28;

/// Most network parameters over all agents (2^28 f32 = 1 GiB per copy; the
/// optimizer keeps four copies: parameters, gradients, Adam m and v).
pub const MAX_PARAMETERS: usize = 1 << 28;

/// Most evaluation episodes in one evaluation, over all agents: they run
/// side by side, one env each (2^20; a host env and the policy's buffers
/// per episode).
pub const MAX_EVAL_ENVS: usize = 1 << 20;

/// Refuses `episodes` per agent × `agents` beyond [`MAX_EVAL_ENVS`]
/// (overflow included), naming `field`; before anything is allocated.
pub fn check_eval_envs(field: &str, episodes: usize, agents: usize) -> Result<()> {
    if episodes
        .checked_mul(agents)
        .is_none_or(|envs| envs > MAX_EVAL_ENVS)
    {
        return Err(Error::config(
            field,
            episodes,
            format!(
                "{agents} agent(s) × {episodes} episodes run side by side, one env each: at most {MAX_EVAL_ENVS} in all"
            ),
        ));
    }
    Ok(())
}

/// The presets [`PpoConfig::preset`] knows, in the order they are listed to users.
pub const PRESET_NAMES: [&str; 7] = [
    "default",
    "cleanrl",
    "seed",
    "linear",
    "meta",
    "acrobot",
    "mountaincar",
];

/// Every key a TOML file or `--set` may name, in struct order. A test keeps
/// it equal to the fields serde sees.
pub const FIELD_NAMES: [&str; 34] = [
    "env_id",
    "exp_name",
    "seed",
    "num_envs",
    "num_steps",
    "total_timesteps",
    "learning_rate",
    "adam_eps",
    "anneal_lr",
    "gamma",
    "gae_lambda",
    "num_minibatches",
    "update_epochs",
    "norm_adv",
    "clip_coef",
    "clip_vloss",
    "ent_coef",
    "vf_coef",
    "max_grad_norm",
    "target_kl",
    "num_agents",
    "hidden",
    "max_episode_steps",
    "eval_episodes",
    "eval_every",
    "checkpoint_every",
    "env_device",
    "rollout",
    "update",
    "row_pass",
    "software_threads",
    "norm_obs",
    "norm_reward",
    "norm_clip",
];

/// Where environments are stepped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EnvDevice {
    /// On the host, structure-of-arrays over all agents and envs, in f64
    /// (Gymnasium-exact); one submission per rollout step.
    Cpu,
    /// On the device, one kernel per step in f32: a whole rollout is one
    /// submission with only finished-episode statistics read back.
    Gpu,
}

/// PPO hyper-parameters. Names and defaults are CleanRL `ppo.py`'s, plus the
/// population size and network shape this crate adds.
///
/// Deserialization fills missing keys from [`PpoConfig::default`] (so a
/// partial TOML file works) and refuses unknown keys (so a typo is not
/// silently ignored).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PpoConfig {
    /// Environment id; names the run folder.
    pub env_id: String,
    /// Experiment name; names the run folder.
    pub exp_name: String,
    /// Seed of agent 0; agent p uses `seed + p`.
    pub seed: u64,
    /// Parallel environments per agent.
    pub num_envs: usize,
    /// Steps per environment per rollout.
    pub num_steps: usize,
    /// Environment steps per agent over the whole run.
    pub total_timesteps: usize,
    /// Adam learning rate (the start value when annealing).
    pub learning_rate: f64,
    /// Adam's ε, added to the root of the second moment (CleanRL: 1e-5).
    /// Adam moves every parameter by about `learning_rate` per step whatever
    /// its gradient's size; a larger ε (0.01, say) lets parameters whose
    /// gradients are smaller than ε move in proportion to them instead, as
    /// SGD would, so noise in near-zero gradients is not amplified.
    pub adam_eps: f64,
    /// Anneal the learning rate linearly to 0 over the iterations.
    pub anneal_lr: bool,
    /// Discount factor.
    pub gamma: f64,
    /// GAE λ.
    pub gae_lambda: f64,
    /// Minibatches per epoch; must divide `num_envs × num_steps`.
    pub num_minibatches: usize,
    /// Passes over the batch per iteration.
    pub update_epochs: usize,
    /// Normalize advantages per minibatch.
    pub norm_adv: bool,
    /// Surrogate clipping coefficient ε.
    pub clip_coef: f64,
    /// Clip the value loss around the old values (CleanRL's `clip_vloss`).
    pub clip_vloss: bool,
    /// Entropy bonus coefficient.
    pub ent_coef: f64,
    /// Value loss coefficient.
    pub vf_coef: f64,
    /// Global gradient-norm clip per agent.
    pub max_grad_norm: f64,
    /// Stop an iteration's epochs early once approx_kl exceeds this (None: never).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_kl: Option<f64>,
    /// Independent agents trained side by side in the same dispatches.
    pub num_agents: usize,
    /// Hidden layer widths (tanh) of both the policy and the value network;
    /// empty means a plain linear policy and value.
    pub hidden: Vec<usize>,
    /// Episode step limit (truncation), 500 for CartPole-v1.
    pub max_episode_steps: usize,
    /// Greedy evaluation episodes per agent at the end of training.
    pub eval_episodes: usize,
    /// Env steps per agent between greedy evaluations during training
    /// (20 episodes each, or eval_episodes if fewer); they give the
    /// steps and seconds to a mean return of 475. 0 turns them off.
    pub eval_every: usize,
    /// Save a checkpoint every this many iterations; 0 saves only at the end.
    pub checkpoint_every: usize,
    /// Where environments are stepped.
    pub env_device: EnvDevice,
    /// How the rollout runs: "auto" (fused where it suits the adapter and
    /// network, `train` says which), "fused" or "layered" (one dispatch per
    /// layer, one for sampling and, with device envs, one per env step).
    /// Fused is one kernel for the whole rollout with `env_device = "gpu"`,
    /// one dispatch per step with host envs.
    pub rollout: RolloutPath,
    /// How the update runs: "fused" (the linear network's whole update in
    /// one dispatch; with hidden layers each minibatch step's forward, loss
    /// and backward of both networks in two dispatches; refused where the
    /// network or minibatch is too large for it), "layered" (a dispatch per
    /// layer and pass) or "auto" (fused for the linear network, and with
    /// hidden layers for one agent or where `row_pass` is "rows"; layered
    /// elsewhere; `train` prints which).
    pub update: UpdatePath,
    /// How the fused update's row pass (networks with hidden layers) spreads
    /// a minibatch: "auto" (by rows for one agent, whose weights the pass
    /// reads from a uniform block; by lanes for populations), "rows" (an
    /// invocation per 2 rows, alone, a workgroup per agent: CleanRL's
    /// update 1.5× faster on llvmpipe, populations 1.2-1.5× the layered
    /// update once their kernel has compiled, ~70 s the first time) or "lanes" (a workgroup of 16 lanes per 2 rows, each lane
    /// some units of every layer).
    pub row_pass: RowPass,
    /// Threads of a CPU software adapter (llvmpipe, lavapipe): "auto" (one
    /// thread where that measured faster: the linear network with one
    /// agent, or with host envs and at most 64 envs in all; `train` says
    /// which), "driver" (a thread per core) or "single". An
    /// `LP_NUM_THREADS` set in the environment wins over it.
    pub software_threads: SoftwareThreads,
    /// Normalize observations on the host as Gymnasium's
    /// `NormalizeObservation` does (one running mean and variance per env,
    /// as CleanRL wraps each env), clipped to ±`norm_clip`. The statistics
    /// are saved in checkpoints and frozen for evaluation. Host envs only.
    pub norm_obs: bool,
    /// Normalize rewards as Gymnasium's `NormalizeReward` does (by the
    /// running deviation of the `gamma`-discounted return, per env),
    /// clipped to ±`norm_clip`. Episode returns stay the env's own.
    pub norm_reward: bool,
    /// Both normalizations clip to ±this (CleanRL: 10).
    pub norm_clip: f64,
}

/// Sizes derived from a configuration (CleanRL computes them in one place too).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizes {
    /// Transitions per agent per iteration: `num_envs × num_steps`.
    pub batch_size: usize,
    /// Transitions per agent per minibatch: `batch_size / num_minibatches`.
    pub minibatch_size: usize,
    /// Iterations of the run: `total_timesteps / batch_size` (rounded down,
    /// as in CleanRL).
    pub num_iterations: usize,
}

impl Default for PpoConfig {
    /// CleanRL `ppo.py`'s defaults, one agent, a 64-64 tanh network.
    fn default() -> Self {
        PpoConfig {
            env_id: "CartPole-v1".into(),
            exp_name: "ppo".into(),
            seed: 1,
            num_envs: 4,
            num_steps: 128,
            total_timesteps: 500_000,
            learning_rate: 2.5e-4,
            adam_eps: crate::ops::optim::ADAM_EPS,
            anneal_lr: true,
            gamma: 0.99,
            gae_lambda: 0.95,
            num_minibatches: 4,
            update_epochs: 4,
            norm_adv: true,
            clip_coef: 0.2,
            clip_vloss: true,
            ent_coef: 0.01,
            vf_coef: 0.5,
            max_grad_norm: 0.5,
            target_kl: None,
            num_agents: 1,
            hidden: vec![64, 64],
            max_episode_steps: 500,
            eval_episodes: 100,
            eval_every: 10_000,
            checkpoint_every: 0,
            env_device: EnvDevice::Cpu,
            rollout: RolloutPath::Auto,
            update: UpdatePath::Auto,
            row_pass: RowPass::Auto,
            software_threads: SoftwareThreads::Auto,
            norm_obs: false,
            norm_reward: false,
            norm_clip: 10.0,
        }
    }
}

impl PpoConfig {
    /// A named starting point; see [`PRESET_NAMES`].
    ///
    /// - `cleanrl`: CleanRL `ppo.py` exactly (64-64 tanh networks).
    /// - `default`: what `train` uses without `--preset`, chosen by measuring
    ///   wall time to a mean greedy return of 475 on CPU software adapters
    ///   (README has the table): the `linear` preset over 100k steps. On
    ///   llvmpipe the linear network reached 475 in 1-2 s where the best 64-64
    ///   setting measured (RL-Zoo's, 16 envs × 16 steps) took 13-15 s.
    /// - `seed`: the seed design's setup: linear policy and value, one env,
    ///   lr 1e-3 without annealing, 5 epochs over one minibatch, no advantage
    ///   normalization, no entropy bonus, unclipped value loss, and gradient
    ///   clipping effectively off (`max_grad_norm` 1e9). The seed updated once
    ///   per episode; fixed 500-step batches (one full CartPole-v1 episode at
    ///   most) approximate that with a constant batch size.
    /// - `acrobot`: Acrobot-v1 with CleanRL's `ppo.py` settings over 100k
    ///   steps, where five seeds out of five reached −100 (Gymnasium's
    ///   threshold; README has the table). What `train --env Acrobot-v1`
    ///   uses without `--preset`.
    /// - `mountaincar`: MountainCar-v0 with RL Zoo's PPO settings for it (16
    ///   envs × 16 steps, λ = 0.98, no entropy bonus, a constant learning
    ///   rate of 3e-4, four epochs of four minibatches) and both
    ///   normalizations, 2M steps (twice RL Zoo's budget; threshold −110: at 1M five seeds
    ///   averaged −111.9, at 2M −99.7, every seed −99.0 to −102.0; README has the table). CleanRL's
    ///   settings never reach the flag. What `train --env MountainCar-v0`
    ///   uses without `--preset`.
    /// - `linear`: a linear policy and value, tuned by measurement: CleanRL's
    ///   loop with 8 envs, lr 0.02 (annealed), λ = 1 (Monte-Carlo advantages:
    ///   a linear critic is a poor bootstrap) and no entropy bonus, 150k steps.
    pub fn preset(name: &str) -> Result<PpoConfig> {
        let cleanrl = PpoConfig::default();
        let linear = PpoConfig {
            hidden: Vec::new(),
            num_envs: 8,
            total_timesteps: 150_000,
            learning_rate: 0.02,
            gae_lambda: 1.0,
            ent_coef: 0.0,
            ..cleanrl.clone()
        };
        match name {
            "cleanrl" => Ok(cleanrl),
            "default" => Ok(PpoConfig {
                total_timesteps: 100_000,
                ..linear
            }),
            "seed" => Ok(PpoConfig {
                hidden: Vec::new(),
                num_envs: 1,
                num_steps: 500,
                total_timesteps: 500_000,
                learning_rate: 1e-3,
                anneal_lr: false,
                gamma: 0.99,
                gae_lambda: 0.95,
                clip_coef: 0.2,
                update_epochs: 5,
                num_minibatches: 1,
                norm_adv: false,
                ent_coef: 0.0,
                clip_vloss: false,
                max_grad_norm: 1e9,
                ..cleanrl
            }),
            "linear" => Ok(linear.clone()),
            "acrobot" => Ok(PpoConfig {
                env_id: "Acrobot-v1".into(),
                total_timesteps: 100_000,
                ..cleanrl
            }),
            "mountaincar" => Ok(PpoConfig {
                env_id: "MountainCar-v0".into(),
                num_envs: 16,
                num_steps: 16,
                total_timesteps: 2_000_000,
                learning_rate: 3e-4,
                anneal_lr: false,
                gae_lambda: 0.98,
                ent_coef: 0.0,
                max_episode_steps: 200,
                norm_obs: true,
                norm_reward: true,
                ..cleanrl
            }),
            // The inner loop of meta-learning (`meta-train`): the linear
            // preset's loop with a constant learning rate (every inner loop
            // starts a fresh optimizer) and one hidden layer, whose features
            // the outer loop can shape.
            "meta" => Ok(PpoConfig {
                anneal_lr: false,
                hidden: vec![64],
                ..linear
            }),
            _ => Err(Error::config(
                "preset",
                name,
                format!("unknown preset; valid presets: {}", PRESET_NAMES.join(", ")),
            )),
        }
    }

    /// The derived sizes. Meaningful only for a configuration that passed
    /// [`validate`](Self::validate); never panics otherwise (a zero divisor
    /// gives 0, an overflowing product saturates).
    /// What the run asks of a software adapter's threads
    /// ([`crate::gpu::threads::apply`]).
    pub fn thread_workload(&self) -> crate::gpu::threads::ThreadWorkload {
        crate::gpu::threads::ThreadWorkload {
            hidden_layers: self.hidden.len(),
            num_agents: self.num_agents,
            num_envs: self.num_envs,
            device_envs: self.env_device == EnvDevice::Gpu,
        }
    }

    pub fn sizes(&self) -> Sizes {
        let batch_size = self.num_envs.saturating_mul(self.num_steps);
        Sizes {
            batch_size,
            minibatch_size: batch_size.checked_div(self.num_minibatches).unwrap_or(0),
            num_iterations: self.total_timesteps.checked_div(batch_size).unwrap_or(0),
        }
    }

    /// Refuses values the trainer cannot run, naming the field, its value and
    /// the limit it breaks.
    pub fn validate(&self) -> Result<()> {
        check_name("env_id", &self.env_id)?;
        let env = crate::env::trainable_env("env_id", &self.env_id)?;
        if self.env_device == EnvDevice::Gpu && env.id != "CartPole-v1" {
            return Err(Error::config(
                "env_device",
                "gpu",
                format!(
                    "only CartPole-v1 has a device env so far; {} runs on the host (env_device = \"cpu\")",
                    env.id
                ),
            ));
        }
        if (self.norm_obs || self.norm_reward) && self.env_device == EnvDevice::Gpu {
            let field = if self.norm_obs {
                "norm_obs"
            } else {
                "norm_reward"
            };
            let reason = "normalizes on the host; it needs env_device = \"cpu\"";
            return Err(Error::config(field, true, reason));
        }
        if !(self.norm_clip.is_finite() && self.norm_clip > 0.0) {
            return Err(Error::config(
                "norm_clip",
                self.norm_clip,
                "must be finite and positive",
            ));
        }
        check_name("exp_name", &self.exp_name)?;
        let at_least_one = [
            ("num_envs", self.num_envs),
            ("num_steps", self.num_steps),
            ("num_minibatches", self.num_minibatches),
            ("update_epochs", self.update_epochs),
            ("num_agents", self.num_agents),
            ("max_episode_steps", self.max_episode_steps),
            ("eval_episodes", self.eval_episodes),
        ];
        for (field, value) in at_least_one {
            if value == 0 {
                return Err(Error::config(field, value, "must be at least 1"));
            }
        }
        if let Some(i) = self.hidden.iter().position(|&h| h == 0) {
            return Err(Error::config(
                format!("hidden[{i}]"),
                0,
                "hidden layer widths must be at least 1 (use hidden = [] for a linear network)",
            ));
        }
        if self.seed.checked_add(self.num_agents as u64 - 1).is_none() {
            return Err(Error::config(
                "seed",
                self.seed,
                format!(
                    "agent seeds seed..seed+{} overflow u64",
                    self.num_agents - 1
                ),
            ));
        }

        let rows = self
            .num_agents
            .checked_mul(self.num_envs)
            .and_then(|n| n.checked_mul(self.num_steps));
        if rows.is_none_or(|rows| rows > MAX_ROLLOUT_ROWS) {
            return Err(Error::config(
                "num_agents × num_envs × num_steps",
                format!(
                    "{} × {} × {}",
                    self.num_agents, self.num_envs, self.num_steps
                ),
                format!("rollout rows must be at most 2^28 = {MAX_ROLLOUT_ROWS}"),
            ));
        }
        let Sizes { batch_size, .. } = self.sizes();
        if batch_size % self.num_minibatches != 0 {
            return Err(Error::config(
                "num_minibatches",
                self.num_minibatches,
                format!(
                    "must divide batch_size {batch_size} (num_envs {} × num_steps {})",
                    self.num_envs, self.num_steps
                ),
            ));
        }
        if self.total_timesteps < batch_size {
            return Err(Error::config(
                "total_timesteps",
                self.total_timesteps,
                format!("must be at least batch_size {batch_size} (one iteration)"),
            ));
        }
        self.check_parameter_count()?;
        check_eval_envs("eval_episodes", self.eval_episodes, self.num_agents)?;

        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return Err(Error::config(
                "learning_rate",
                self.learning_rate,
                "must be finite and > 0",
            ));
        }
        for (field, value) in [("gamma", self.gamma), ("gae_lambda", self.gae_lambda)] {
            if !(0.0..=1.0).contains(&value) {
                return Err(Error::config(field, value, "must be in [0, 1]"));
            }
        }
        let positive = [
            ("adam_eps", Some(self.adam_eps)),
            ("clip_coef", Some(self.clip_coef)),
            ("max_grad_norm", Some(self.max_grad_norm)),
            ("target_kl", self.target_kl),
        ];
        for (field, value) in positive {
            if let Some(value) = value.filter(|v| !(v.is_finite() && *v > 0.0)) {
                return Err(Error::config(field, value, "must be finite and > 0"));
            }
        }
        for (field, value) in [("ent_coef", self.ent_coef), ("vf_coef", self.vf_coef)] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(Error::config(field, value, "must be finite and >= 0"));
            }
        }
        Ok(())
    }

    /// Refuses networks that cannot fit whatever the environment: counts the
    /// parameters as if observation and action sizes were 1 (a lower bound).
    fn check_parameter_count(&self) -> Result<()> {
        let mut widths = vec![1usize];
        widths.extend(&self.hidden);
        widths.push(1);
        let per_network = widths.windows(2).try_fold(0usize, |total, pair| {
            pair[0]
                .checked_add(1)
                .and_then(|fan_in| fan_in.checked_mul(pair[1]))
                .and_then(|layer| total.checked_add(layer))
        });
        // Two networks (policy and value) per agent.
        let total = per_network
            .and_then(|n| n.checked_mul(2))
            .and_then(|n| n.checked_mul(self.num_agents));
        if total.is_none_or(|total| total > MAX_PARAMETERS) {
            return Err(Error::config(
                "hidden",
                format!("{:?} (num_agents {})", self.hidden, self.num_agents),
                format!(
                    "num_agents × parameters per agent must be at most 2^28 = {MAX_PARAMETERS}"
                ),
            ));
        }
        Ok(())
    }

    /// Starts from `preset` (default `"default"`), overlays the keys of the
    /// TOML file, then each `key=value` of `sets`, and validates the result.
    ///
    /// A `--set` value is read as a TOML value (`8`, `1e-3`, `true`,
    /// `[64, 64]`), falling back to the raw text as a string; string fields
    /// always take the raw text. `hidden` also takes a comma list
    /// (`hidden=64,64`, or `hidden=` for a linear network), and
    /// `target_kl=none` (also `target_kl = "none"` in a file) clears it.
    pub fn resolve(
        preset: Option<&str>,
        config_file: Option<&Path>,
        sets: &[String],
    ) -> Result<PpoConfig> {
        let file = match config_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
                    path: path.to_path_buf(),
                    source,
                })?;
                let file: toml::Table = toml::from_str(&text).map_err(|e| Error::Format {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })?;
                Some((path, file))
            }
            None => None,
        };
        // The env decides the preset when none is named, and the episode
        // limit when none is set: peek at it before merging.
        let set_key = |item: &String, key: &str| {
            item.split_once('=')
                .filter(|(k, _)| k.trim() == key)
                .map(|(_, v)| v.trim().trim_matches('"').to_string())
        };
        let env_id = sets
            .iter()
            .rev()
            .find_map(|item| set_key(item, "env_id"))
            .or_else(|| {
                let (_, file) = file.as_ref()?;
                file.get("env_id")?.as_str().map(str::to_string)
            });
        let limit_set = sets
            .iter()
            .any(|item| set_key(item, "max_episode_steps").is_some())
            || file
                .as_ref()
                .is_some_and(|(_, f)| f.contains_key("max_episode_steps"));
        let preset = preset.unwrap_or(match env_id.as_deref() {
            None | Some("CartPole-v1") => "default",
            Some("Acrobot-v1") => "acrobot",
            Some("MountainCar-v0") => "mountaincar",
            // CleanRL's ppo.py defaults, which CleanRL runs on every
            // classic-control task; the tuned CartPole preset is not for them.
            Some(_) => "cleanrl",
        });
        let base = PpoConfig::preset(preset)?;
        let mut table = toml::Table::try_from(&base)
            .map_err(|e| Error::config("preset", preset, e.to_string()))?;
        if let Some((path, file)) = file {
            for (key, value) in file {
                apply_override(&mut table, key, value)
                    .map_err(|e| e.with_note(format_args!("in {}", path.display())))?;
            }
        }
        for item in sets {
            let (key, value) = parse_set(item, &table)?;
            apply_override(&mut table, key, value)?;
        }
        if !limit_set {
            let id = table.get("env_id").and_then(toml::Value::as_str);
            if let Some(env) = id.and_then(|id| crate::env::env_info("env_id", id).ok()) {
                let limit = toml::Value::Integer(i64::from(env.max_episode_steps));
                table.insert("max_episode_steps".into(), limit);
            }
        }
        let config: PpoConfig = table
            .try_into()
            .map_err(|e| Error::config("config", "(merged)", e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// The configuration as a TOML document (written to the run folder, and
    /// accepted back by [`resolve`](Self::resolve) as a config file). Fails
    /// only for integers beyond TOML's signed 64-bit range.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string(self).map_err(|e| Error::config("config", "(to_toml)", e.to_string()))
    }
}

/// Env and experiment names become a folder name, so they must be a single
/// plain path component.
pub fn check_name(field: &str, value: &str) -> Result<()> {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if value.is_empty() || !value.chars().all(plain) {
        return Err(Error::config(
            field,
            format!("{value:?}"),
            "must be non-empty ASCII letters, digits, '-', '_' or '.' (it names the run folder)",
        ));
    }
    Ok(())
}

/// Checks `key` and the type of `value`, then sets it in the merged table.
fn apply_override(table: &mut toml::Table, key: String, value: toml::Value) -> Result<()> {
    if !FIELD_NAMES.contains(&key.as_str()) {
        return Err(unknown_key(&key, &value.to_string()));
    }
    if key == "target_kl"
        && value
            .as_str()
            .is_some_and(|s| s.eq_ignore_ascii_case("none"))
    {
        table.remove(&key);
        return Ok(());
    }
    // Deserializing the key alone (the rest from defaults) isolates its type error.
    let alone = toml::Table::from_iter([(key.clone(), value.clone())]);
    if let Err(e) = alone.try_into::<PpoConfig>() {
        return Err(Error::config(
            &key,
            value.to_string(),
            e.message().trim().to_string(),
        ));
    }
    table.insert(key, value);
    Ok(())
}

/// Splits one `--set key=value` item and reads its value (see [`PpoConfig::resolve`]).
fn parse_set(item: &str, table: &toml::Table) -> Result<(String, toml::Value)> {
    let Some((key, raw)) = item.split_once('=') else {
        return Err(Error::config("--set", item, "expected key=value"));
    };
    let (key, raw) = (key.trim(), raw.trim());
    if key.is_empty() {
        return Err(Error::config("--set", item, "expected key=value"));
    }
    if !FIELD_NAMES.contains(&key) {
        return Err(unknown_key(key, raw));
    }
    let parsed = parse_toml_value(raw);
    let is_string = table.get(key).is_some_and(toml::Value::is_str);
    if parsed.is_none() && !is_string && raw.parse::<i128>().is_ok() {
        // TOML integers are 64-bit signed: 18446744073709551615 would
        // otherwise be read as a string and refused as "invalid type".
        return Err(Error::config(
            key,
            raw,
            format!("over the largest integer a config holds, {}", i64::MAX),
        ));
    }
    let value = if key == "hidden" && !raw.starts_with('[') {
        parse_width_list(raw)?
    } else if is_string {
        match parsed {
            Some(toml::Value::String(s)) => toml::Value::String(s),
            _ => toml::Value::String(raw.to_string()),
        }
    } else {
        parsed.unwrap_or_else(|| toml::Value::String(raw.to_string()))
    };
    Ok((key.to_string(), value))
}

/// Reads `raw` as a TOML value by wrapping it in a one-key document.
fn parse_toml_value(raw: &str) -> Option<toml::Value> {
    let mut doc: toml::Table = toml::from_str(&format!("value = {raw}")).ok()?;
    doc.remove("value")
}

/// `64,64` → `[64, 64]`; the empty string → `[]`.
fn parse_width_list(raw: &str) -> Result<toml::Value> {
    if raw.is_empty() {
        return Ok(toml::Value::Array(Vec::new()));
    }
    raw.split(',')
        .map(|width| {
            width
                .trim()
                .parse::<i64>()
                .ok()
                .filter(|w| *w >= 0)
                .map(toml::Value::Integer)
                .ok_or_else(|| {
                    Error::config(
                        "hidden",
                        raw,
                        "expected comma-separated layer widths, e.g. hidden=64,64 (hidden= for none)",
                    )
                })
        })
        .collect::<Result<Vec<_>>>()
        .map(toml::Value::Array)
}

/// The error for a key that is not a field, with the closest field name when
/// it is within edit distance 3, else the list of valid keys.
fn unknown_key(key: &str, value: &str) -> Error {
    unknown_key_among(key, value, &FIELD_NAMES)
}

/// [`unknown_key`] among `names` (meta-train's keys and the PPO config's).
pub fn unknown_key_among(key: &str, value: &str, names: &[&str]) -> Error {
    let closest = names
        .iter()
        .map(|name| (edit_distance(key, name), *name))
        .min()
        .filter(|(distance, _)| *distance <= 3);
    let reason = match closest {
        Some((_, name)) => format!("unknown key; did you mean `{name}`?"),
        None => format!("unknown key; valid keys: {}", names.join(", ")),
    };
    Error::config(key, value, reason)
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != *cb);
            current.push(substitute.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}
