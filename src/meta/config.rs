//! Meta-learning settings: the task family and its ranges, the outer loop,
//! and the adaptation evaluation. The inner loop is plain PPO, configured by
//! a [`PpoConfig`](crate::config::PpoConfig) as for `train`.

use serde::{Deserialize, Serialize};

use super::outer::MetaMethod;
use crate::error::{Error, Result};
use crate::ops::context::{check_context_policy_weight, check_context_step, MAX_CONTEXT_DIM};

/// Every key of [`MetaConfig`], in struct order.
pub const META_FIELD_NAMES: [&str; 40] = [
    "family",
    "method",
    "meta_init",
    "meta_iterations",
    "meta_batch",
    "inner_updates",
    "baseline_iterations",
    "meta_lr",
    "anneal_meta_lr",
    "meta_checkpoint_every",
    "context_dim",
    "context_lr",
    "context_lr_decay",
    "context_bound",
    "context_init_std",
    "context_policy_weight",
    "context_zero_loss",
    "eval_tasks",
    "eval_seed",
    "adapt_steps",
    "adapt_eval_episodes",
    "greedy_eval",
    "length",
    "force_mag",
    "tau",
    "gravity",
    "masscart",
    "masspole",
    "flip_probability",
    "x_threshold",
    "target_reward",
    "target_kind",
    "target_distance",
    "target_speed",
    "target_weight",
    "target_scale",
    "action_preference",
    "goal_shape",
    "goal_range",
    "goal_radius",
];

/// First-order MAML's default meta learning rate (its outer step is Adam);
/// Reptile's default ε is 1, annealed.
pub const FOMAML_META_LR: f64 = 0.003;

/// CAVIA's default meta learning rate (Adam on θ and the context weights,
/// constant).
pub const CAVIA_META_LR: f64 = 0.002;

/// CAVIA's default inner updates (context steps) per task.
pub const CAVIA_INNER_UPDATES: usize = 2;

/// Most adaptation updates `adapt_steps` may ask for.
pub const MAX_ADAPT_STEPS: usize = 1000;

/// A distribution of tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskFamily {
    /// CartPole with physics drawn from ranges, an unobserved target
    /// velocity (or position) in the reward, and the motor flipped with
    /// probability `flip_probability`.
    Cartpole,
    /// Discrete 2-D point navigation to a goal drawn from `goal_range`².
    Nav,
}

impl TaskFamily {
    pub const NAMES: [&'static str; 2] = ["cartpole", "nav"];

    pub fn name(self) -> &'static str {
        match self {
            TaskFamily::Cartpole => "cartpole",
            TaskFamily::Nav => "nav",
        }
    }
}

/// Meta-training and adaptation-evaluation settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetaConfig {
    pub family: TaskFamily,
    pub method: MetaMethod,
    /// Where θ starts: `scratch` (the scratch baseline's initialization) or
    /// `multitask` (the multi-task baseline, trained first). A `meta.toml`
    /// without this key predates it, so it reads as `scratch`.
    #[serde(default = "MetaInit::before_warm_start")]
    pub meta_init: MetaInit,
    /// Outer steps.
    pub meta_iterations: usize,
    /// M: tasks per meta-batch, each adapted by its own agent.
    pub meta_batch: usize,
    /// PPO updates (rollout + update epochs) of each inner loop.
    pub inner_updates: usize,
    /// PPO iterations of the multi-task baseline; 0 (the default):
    /// `meta_iterations × inner_updates` (CAVIA: `× (inner_updates + 1)`,
    /// its fresh rollouts included), the env steps of meta-training.
    pub baseline_iterations: usize,
    /// Reptile's ε (default 1), or the learning rate of first-order MAML's
    /// Adam outer step (default [`FOMAML_META_LR`] when `method = "fomaml"`).
    pub meta_lr: f64,
    /// Anneal the meta learning rate linearly to 0.
    pub anneal_meta_lr: bool,
    /// Write the meta-checkpoint every this many outer steps (0: only at the end).
    pub meta_checkpoint_every: usize,
    /// CAVIA: numbers in each task's context (an input of both networks'
    /// first layers, adapted alone in the inner loops and at evaluation).
    pub context_dim: usize,
    /// CAVIA: SGD step size of the context's first update; update k of an
    /// adaptation (1-based) steps with `context_lr / k^context_lr_decay`.
    pub context_lr: f64,
    /// CAVIA: how fast the context's step size falls over an adaptation (0:
    /// constant).
    pub context_lr_decay: f64,
    /// CAVIA: each context number stays in [-context_bound, context_bound].
    pub context_bound: f64,
    /// CAVIA: standard deviation of the critic's context weights' initial
    /// values (normal, seeded by `seed`); the actor's start at 0.
    pub context_init_std: f64,
    /// CAVIA: weight of the policy loss in the context's step (0, the
    /// default: the value loss's gradient alone, a step of a linear
    /// regression of the returns; 1: the whole PPO loss's, as CAVIA).
    pub context_policy_weight: f64,
    /// CAVIA: the outer loss also counts the first rollout of each inner
    /// loop, at context 0, so the networks at context 0 fit the tasks'
    /// average and the first step's gradient carries only what is
    /// particular to the task.
    pub context_zero_loss: bool,
    /// Held-out tasks of the adaptation evaluation.
    pub eval_tasks: usize,
    /// Seed of the held-out tasks (distinct from training's task seeds).
    pub eval_seed: u64,
    /// k: numbers of adaptation updates after which the return is measured, increasing.
    pub adapt_steps: Vec<usize>,
    /// Episodes per held-out task at each k.
    pub adapt_eval_episodes: usize,
    /// Measure with argmax actions instead of the sampled policy.
    pub greedy_eval: bool,
    /// CartPole ranges `[low, high]` (Gymnasium's names; `length` is the half-length).
    pub length: Vec<f64>,
    pub force_mag: Vec<f64>,
    pub tau: Vec<f64>,
    pub gravity: Vec<f64>,
    pub masscart: Vec<f64>,
    pub masspole: Vec<f64>,
    /// Probability that a CartPole task's motor is wired backwards.
    pub flip_probability: f64,
    /// CartPole: an episode ends when the cart leaves `[-x_threshold,
    /// x_threshold]` (m); Gymnasium's track is 2.4.
    pub x_threshold: f64,
    /// CartPole: reward an unobserved target, its side drawn uniformly per
    /// task: each step pays
    /// `(1 - target_weight) + target_weight * max(0, 1 - |v - target| / target_scale)`
    /// instead of 1. Without it one MLP policy serves every physics and
    /// polarity (see the README), so there is nothing to adapt to.
    pub target_reward: bool,
    /// `velocity` (the default): `v` is the cart's velocity and the target
    /// `±target_speed` (m/s; `target_scale` in m/s); `position`: `v` is the
    /// cart's position and the target `±target_distance` (m). A `meta.toml`
    /// without this key predates velocity targets, so it reads as `position`.
    #[serde(default = "TargetKind::before_velocity_targets")]
    pub target_kind: TargetKind,
    pub target_distance: Vec<f64>,
    pub target_speed: Vec<f64>,
    pub target_weight: f64,
    pub target_scale: f64,
    /// CartPole: share of each step's reward paid for using the task's
    /// preferred action (drawn per task; unobserved), 0 for none.
    pub action_preference: f64,
    /// Nav: where goals lie. `circle` (default): at a distance drawn from
    /// `goal_radius` in a uniform direction, so every task's goal is equally
    /// far and the spread of returns across tasks measures adaptation, not
    /// goal distance; `square`: both coordinates from `goal_range` (MAML's
    /// original distribution).
    pub goal_shape: GoalShape,
    pub goal_range: Vec<f64>,
    pub goal_radius: Vec<f64>,
}

/// What a CartPole task's target asks of the cart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// Balance at a position.
    Position,
    /// Move at a velocity.
    Velocity,
}

impl TargetKind {
    /// The only kind there was before `target_kind` existed.
    fn before_velocity_targets() -> TargetKind {
        TargetKind::Position
    }
}

/// Where meta-training's θ starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetaInit {
    /// CleanRL's initialization, as the scratch baseline.
    Scratch,
    /// The multi-task baseline's parameters: meta-training then starts from
    /// a policy that already solves the family's shared part (balancing) and
    /// only has to learn to adapt.
    Multitask,
}

impl MetaInit {
    /// The only start there was before `meta_init` existed.
    fn before_warm_start() -> MetaInit {
        MetaInit::Scratch
    }
}

/// Nav goal distributions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GoalShape {
    Circle,
    Square,
}

impl Default for MetaConfig {
    fn default() -> Self {
        MetaConfig {
            family: TaskFamily::Cartpole,
            method: MetaMethod::Reptile,
            meta_init: MetaInit::Scratch,
            meta_iterations: 300,
            meta_batch: 16,
            inner_updates: 3,
            baseline_iterations: 0,
            meta_lr: 1.0,
            anneal_meta_lr: true,
            meta_checkpoint_every: 25,
            context_dim: 2,
            context_lr: 0.2,
            context_lr_decay: 2.0,
            context_bound: 2.0,
            context_init_std: 0.5,
            context_policy_weight: 0.0,
            context_zero_loss: true,
            eval_tasks: 32,
            eval_seed: 1_000_000_007,
            adapt_steps: vec![0, 1, 2, 5, 10],
            adapt_eval_episodes: 8,
            greedy_eval: false,
            // CARL's CartPole context ranges narrowed to where CartPole-v1's
            // thresholds stay solvable.
            length: vec![0.25, 1.0],
            force_mag: vec![5.0, 15.0],
            tau: vec![0.01, 0.03],
            gravity: vec![9.8, 9.8],
            masscart: vec![0.5, 2.0],
            masspole: vec![0.05, 0.2],
            // Motor flips keep Reptile from learning to balance at all (see
            // the README); they stay available.
            flip_probability: 0.0,
            x_threshold: 2.4,
            target_reward: true,
            target_kind: TargetKind::Velocity,
            target_distance: vec![0.5, 0.5],
            target_speed: vec![0.2, 0.2],
            target_weight: 1.0,
            target_scale: 0.4,
            action_preference: 0.0,
            goal_shape: GoalShape::Circle,
            goal_range: vec![-0.5, 0.5],
            goal_radius: vec![0.5, 0.5],
        }
    }
}

impl MetaConfig {
    /// The defaults of `family`.
    pub fn for_family(family: TaskFamily) -> MetaConfig {
        MetaConfig {
            family,
            ..MetaConfig::default()
        }
    }

    /// Refuses empty or inverted ranges, sizes of zero and unordered k
    /// values, naming the field.
    pub fn validate(&self) -> Result<()> {
        for (field, value) in [
            ("meta_iterations", self.meta_iterations),
            ("meta_batch", self.meta_batch),
            ("eval_tasks", self.eval_tasks),
            ("adapt_eval_episodes", self.adapt_eval_episodes),
        ] {
            if value == 0 {
                return Err(Error::config(field, 0, "must be at least 1"));
            }
        }
        if self.inner_updates == 0 {
            return Err(Error::config(
                "inner_updates",
                0,
                "must be at least 1 (the inner loop adapts with PPO updates)",
            ));
        }
        check_positive("meta_lr", self.meta_lr)?;
        if self.context_dim == 0 || self.context_dim > MAX_CONTEXT_DIM {
            return Err(Error::config(
                "context_dim",
                self.context_dim,
                format!("must be in 1..={MAX_CONTEXT_DIM}"),
            ));
        }
        check_context_step(self.context_lr, self.context_bound)?;
        check_positive("context_init_std", self.context_init_std)?;
        check_context_policy_weight(self.context_policy_weight)?;
        if !(self.context_lr_decay.is_finite() && self.context_lr_decay >= 0.0) {
            return Err(Error::config(
                "context_lr_decay",
                self.context_lr_decay,
                "must be finite and >= 0",
            ));
        }
        if self.adapt_steps.is_empty() {
            return Err(Error::config(
                "adapt_steps",
                "[]",
                "needs at least one k, e.g. [0, 1, 5]",
            ));
        }
        if let Some(w) = self.adapt_steps.windows(2).find(|w| w[0] >= w[1]) {
            return Err(Error::config(
                "adapt_steps",
                format!("{:?}", self.adapt_steps),
                format!("k values must increase strictly ({} then {})", w[0], w[1]),
            ));
        }
        if let Some(&k) = self.adapt_steps.iter().find(|&&k| k > MAX_ADAPT_STEPS) {
            return Err(Error::config(
                "adapt_steps",
                k,
                format!("at most {MAX_ADAPT_STEPS} adaptation updates"),
            ));
        }
        check_fraction("flip_probability", self.flip_probability)?;
        check_positive("x_threshold", self.x_threshold)?;
        for (field, range) in self.physics_ranges() {
            let [low, high] = check_range(field, range)?;
            if low <= 0.0 {
                return Err(Error::config(
                    field,
                    format!("{range:?}"),
                    "must be positive",
                ));
            }
            debug_assert!(low <= high);
        }
        let [low, high] = check_range("target_distance", &self.target_distance)?;
        let on_track = self.target_kind == TargetKind::Velocity || high < self.x_threshold;
        if low < 0.0 || !on_track {
            return Err(Error::config(
                "target_distance",
                format!("{:?}", self.target_distance),
                format!(
                    "must lie in [0, {}), inside the track (x_threshold)",
                    self.x_threshold
                ),
            ));
        }
        check_magnitudes(
            "target_speed",
            &self.target_speed,
            " (the direction is drawn per task)",
        )?;
        check_fraction("action_preference", self.action_preference)?;
        check_fraction("target_weight", self.target_weight)?;
        check_positive("target_scale", self.target_scale)?;
        check_range("goal_range", &self.goal_range)?;
        check_magnitudes("goal_radius", &self.goal_radius, "")?;
        Ok(())
    }

    /// `(field, [low, high])` of each CartPole physics range.
    pub fn physics_ranges(&self) -> [(&'static str, &[f64]); 6] {
        [
            ("length", &self.length),
            ("force_mag", &self.force_mag),
            ("tau", &self.tau),
            ("gravity", &self.gravity),
            ("masscart", &self.masscart),
            ("masspole", &self.masspole),
        ]
    }

    /// Defaults of `family`, then `--set key=value` items naming
    /// [`META_FIELD_NAMES`]; validated.
    pub fn resolve(family: TaskFamily, sets: &[MetaSet]) -> Result<MetaConfig> {
        MetaConfig::for_family(family).with_sets(sets)
    }

    /// This config with `sets` applied (each key and value type checked on
    /// its own, so an error names it), then validated. Choosing `fomaml`
    /// without a `meta_lr` takes [`FOMAML_META_LR`]; choosing `cavia` takes,
    /// for each of these keys not set: `meta_lr` [`CAVIA_META_LR`], not
    /// annealed, `inner_updates` [`CAVIA_INNER_UPDATES`], and `meta_init =
    /// "multitask"` (first-order outer steps alone do not learn to balance
    /// CartPole from scratch; see the README).
    pub fn with_sets(&self, sets: &[MetaSet]) -> Result<MetaConfig> {
        let mut table = toml::Table::try_from(self)
            .map_err(|e| Error::config("meta config", "(serialize)", e.to_string()))?;
        for (key, value) in sets {
            if !META_FIELD_NAMES.contains(&key.as_str()) {
                return Err(Error::config(
                    key,
                    value.to_string(),
                    "not a meta-learning key",
                ));
            }
            let alone = toml::Table::from_iter([(key.clone(), value.clone())]);
            if let Err(e) = alone.try_into::<MetaConfig>() {
                return Err(Error::config(
                    key,
                    value.to_string(),
                    e.message().trim().to_string(),
                ));
            }
            table.insert(key.clone(), value.clone());
        }
        let mut config: MetaConfig = table
            .try_into()
            .map_err(|e| Error::config("meta config", "(merged)", e.to_string()))?;
        let sets_key = |name: &str| sets.iter().any(|(k, _)| k == name);
        if sets_key("method") && !sets_key("meta_lr") {
            match config.method {
                MetaMethod::Fomaml => config.meta_lr = FOMAML_META_LR,
                MetaMethod::Cavia => config.meta_lr = CAVIA_META_LR,
                MetaMethod::Reptile => {}
            }
        }
        if sets_key("method") && config.method == MetaMethod::Cavia {
            if !sets_key("meta_init") {
                config.meta_init = MetaInit::Multitask;
            }
            if !sets_key("inner_updates") {
                config.inner_updates = CAVIA_INNER_UPDATES;
            }
            if !sets_key("anneal_meta_lr") {
                config.anneal_meta_lr = false;
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// PPO iterations the multi-task baseline trains for.
    pub fn baseline_ppo_iterations(&self) -> usize {
        let rollouts = match self.method {
            MetaMethod::Cavia => self.inner_updates + 1,
            MetaMethod::Reptile | MetaMethod::Fomaml => self.inner_updates,
        };
        match self.baseline_iterations {
            0 => self.meta_iterations.saturating_mul(rollouts),
            n => n,
        }
    }

    /// CAVIA's outer loss: the weight with which rollout `update` of an
    /// inner loop (0-based; `inner_updates` is the fresh one after the last
    /// update) adds its minibatches' gradients to the outer sums, or None
    /// where it does not count. The rollouts after every context step count
    /// (MAML++'s multi-step loss), and with `context_zero_loss` the first
    /// one, at context 0, too; equally weighted, so the sums are a mean.
    pub fn context_collect_weight(&self, update: usize, minibatches: usize) -> Option<f64> {
        let first = usize::from(!self.context_zero_loss);
        let counted = (self.inner_updates + 1 - first) * minibatches.max(1);
        (first..=self.inner_updates)
            .contains(&update)
            .then(|| 1.0 / counted as f64)
    }

    /// CAVIA's context step size at adaptation update `k` (1-based).
    pub fn context_lr_at(&self, k: usize) -> f64 {
        self.context_lr / (k.max(1) as f64).powf(self.context_lr_decay)
    }

    pub fn to_toml(&self) -> Result<String> {
        toml::to_string(self)
            .map_err(|e| Error::config("meta config", "(serialize)", e.to_string()))
    }
}

/// One meta-learning `--set`: key and parsed value.
pub type MetaSet = (String, toml::Value);

/// Splits `--set key=value` items into meta-learning keys (parsed as TOML
/// values; bare words become strings) and the rest, which are PPO keys.
pub fn split_sets(sets: &[String]) -> Result<(Vec<String>, Vec<MetaSet>)> {
    let mut ppo = Vec::new();
    let mut meta = Vec::new();
    for item in sets {
        let Some((key, raw)) = item.split_once('=') else {
            return Err(Error::config("--set", item, "expected key=value"));
        };
        let (key, raw) = (key.trim(), raw.trim());
        if META_FIELD_NAMES.contains(&key) {
            let parsed: Option<toml::Value> =
                toml::from_str::<toml::Table>(&format!("value = {raw}"))
                    .ok()
                    .and_then(|mut doc| doc.remove("value"));
            let value = parsed.unwrap_or_else(|| toml::Value::String(raw.to_string()));
            meta.push((key.to_string(), value));
        } else if crate::config::FIELD_NAMES.contains(&key) {
            ppo.push(item.clone());
        } else {
            let names = [&META_FIELD_NAMES[..], &crate::config::FIELD_NAMES[..]].concat();
            return Err(crate::config::unknown_key_among(key, raw, &names));
        }
    }
    Ok((ppo, meta))
}

/// `value` finite and above 0.
fn check_positive(field: &str, value: f64) -> Result<()> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(Error::config(field, value, "must be finite and positive"))
    }
}

/// `value` in [0, 1] (NaN is not).
fn check_fraction(field: &str, value: f64) -> Result<()> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(Error::config(field, value, "must be in [0, 1]"))
    }
}

/// A [`check_range`] of magnitudes: `low` must not be negative (`why` is
/// appended to the error).
fn check_magnitudes(field: &str, range: &[f64], why: &str) -> Result<[f64; 2]> {
    let [low, high] = check_range(field, range)?;
    if low < 0.0 {
        return Err(Error::config(
            field,
            format!("{range:?}"),
            format!("must not be negative{why}"),
        ));
    }
    Ok([low, high])
}

/// `[low, high]` with both finite and `low <= high`.
fn check_range(field: &str, range: &[f64]) -> Result<[f64; 2]> {
    match range {
        [] => Err(Error::config(
            field,
            "[]",
            "empty range; expected [low, high]",
        )),
        &[low, high] if low.is_finite() && high.is_finite() => {
            if low > high {
                Err(Error::config(
                    field,
                    format!("[{low}, {high}]"),
                    "inverted range: low must not exceed high",
                ))
            } else {
                Ok([low, high])
            }
        }
        [_, _] => Err(Error::config(
            field,
            format!("{range:?}"),
            "bounds must be finite",
        )),
        _ => Err(Error::config(
            field,
            format!("{range:?}"),
            format!("expected [low, high], got {} values", range.len()),
        )),
    }
}
