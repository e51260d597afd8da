//! `checkpoint.safetensors`: every agent's parameters, optionally its Adam
//! state, and string metadata.
//!
//! Tensor names follow the PyTorch state dict of CleanRL's `Agent`, whose
//! `nn.Sequential` puts a Tanh at every odd index: linear layer `i` of the
//! policy is `actor.{2i}.weight` `[out, in]` and `actor.{2i}.bias` `[out]`,
//! the value network likewise under `critic.`. With one agent the names have
//! no prefix, so `agent.load_state_dict(safetensors.torch.load_file(path))`
//! works directly once the `optim.` tensors are filtered out; with several,
//! agent `p`'s names start with `agent{p}.`. Adam's moments follow as
//! `optim.m.actor.0.weight`, `optim.v.…`, and its step count as the i64
//! scalar `optim.step`, each under the same agent prefix.
//!
//! A meta-initialization learned by CAVIA also holds its context weights:
//! `context.actor.0.weight` `[out, C]`, the columns of the policy's first
//! layer that read the C context inputs (its full PyTorch weight is
//! `torch.cat([actor.0.weight, context.actor.0.weight], dim=1)` over the
//! input `[obs, context]`), and `context.critic.{2L}.weight` `[in, C]` for
//! the value's last layer `2L` (`critic.{2L}.weight` `[1, in]`), which with
//! context φ becomes `critic.{2L}.weight + (U φ)ᵀ`, U being that tensor.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use super::{io_error, write_atomic};
use crate::error::{Error, Result};

/// Metadata keys this module writes itself; user keys may not start with it.
const RESERVED_PREFIX: &str = "ppo_wgpu.";
const KEY_FORMAT: &str = "ppo_wgpu.format";
const KEY_NUM_AGENTS: &str = "ppo_wgpu.num_agents";
const KEY_ACTOR_LAYERS: &str = "ppo_wgpu.actor_layers";
const KEY_CRITIC_LAYERS: &str = "ppo_wgpu.critic_layers";
/// Bumped when the tensor layout changes, so old files fail loudly.
const FORMAT_VERSION: &str = "1";

/// Everything needed to resume or evaluate a run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Checkpoint {
    /// `(in_dim, out_dim)` of each linear layer of the policy, input first.
    pub actor_layers: Vec<(usize, usize)>,
    /// `(in_dim, out_dim)` of each linear layer of the value network.
    pub critic_layers: Vec<(usize, usize)>,
    /// One entry per agent.
    pub agents: Vec<AgentState>,
    /// Free-form strings (the config TOML, iteration, global step, ...).
    /// Keys starting with `ppo_wgpu.` are reserved.
    pub metadata: BTreeMap<String, String>,
    /// CAVIA's context weights (one set, shared by every agent), if any.
    pub context: Option<ContextWeights>,
}

/// The weights of a C-number task context: `weights[j][c]` for the actor's
/// first-layer units `j`, then the critic's last-layer inputs (the layout
/// of [`crate::ops::context::ContextStep`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContextWeights {
    pub dim: usize,
    pub weights: Vec<f32>,
}

const CONTEXT_ACTOR: &str = "context.actor.0.weight";

/// The critic's context tensor: named after the value's last layer.
fn context_critic_name(critic_layers: &[(usize, usize)]) -> String {
    format!(
        "context.critic.{}.weight",
        2 * critic_layers.len().saturating_sub(1)
    )
}

/// Rows of the context tensors: the policy's first-layer units and the
/// value's last-layer inputs.
fn context_units(
    actor_layers: &[(usize, usize)],
    critic_layers: &[(usize, usize)],
) -> (usize, usize) {
    let actor = actor_layers.first().map_or(0, |l| l.1);
    let critic = critic_layers.last().map_or(0, |l| l.0 * l.1);
    (actor, critic)
}

/// One agent's state.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AgentState {
    /// The GPU layout: actor layers then critic layers, each `W[out][in]`
    /// row-major then `b[out]`.
    pub params: Vec<f32>,
    /// Adam state, when saved for resuming.
    pub optimizer: Option<AdamState>,
}

/// Adam's state for one agent; `m` and `v` use the parameter layout.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AdamState {
    /// First moment.
    pub m: Vec<f32>,
    /// Second moment.
    pub v: Vec<f32>,
    /// Updates taken so far (for bias correction).
    pub step: u64,
}

/// One linear layer's two tensors and where they sit in the flat layout.
struct LayerSlot {
    weight: String,
    bias: String,
    in_dim: usize,
    out_dim: usize,
    offset: usize,
}

impl Checkpoint {
    /// Parameters per agent implied by the layer shapes (what each
    /// [`AgentState::params`] must hold), or why the shapes are not a network.
    pub fn params_per_agent(&self) -> Result<usize> {
        count_params(&self.actor_layers, &self.critic_layers)
    }
}

fn count_params(actor: &[(usize, usize)], critic: &[(usize, usize)]) -> Result<usize> {
    check_layers("actor_layers", actor)?
        .checked_add(check_layers("critic_layers", critic)?)
        .ok_or_else(|| Error::config("critic_layers", "", "parameter count overflows"))
}

/// The tensors of both networks in layout order, names without agent prefix.
fn layer_slots(actor: &[(usize, usize)], critic: &[(usize, usize)]) -> Vec<LayerSlot> {
    let mut offset = 0;
    let mut slots = Vec::with_capacity(actor.len() + critic.len());
    for (net, layers) in [("actor", actor), ("critic", critic)] {
        for (i, &(in_dim, out_dim)) in layers.iter().enumerate() {
            slots.push(LayerSlot {
                weight: format!("{net}.{}.weight", 2 * i),
                bias: format!("{net}.{}.bias", 2 * i),
                in_dim,
                out_dim,
                offset,
            });
            offset += out_dim * (in_dim + 1);
        }
    }
    slots
}

/// Refuses layer lists that cannot be a network: empty, a zero size, a layer
/// whose input is not the previous layer's output, or more parameters than
/// fit in memory.
fn check_layers(field: &str, layers: &[(usize, usize)]) -> Result<usize> {
    let shown = || format!("{layers:?}");
    if layers.is_empty() {
        return Err(Error::config(field, shown(), "needs at least one layer"));
    }
    let mut count = 0usize;
    for (i, &(in_dim, out_dim)) in layers.iter().enumerate() {
        if in_dim == 0 || out_dim == 0 {
            return Err(Error::config(
                field,
                shown(),
                format!("layer {i} has a zero size"),
            ));
        }
        if let Some(&(next_in, _)) = layers.get(i + 1) {
            if next_in != out_dim {
                return Err(Error::config(
                    field,
                    shown(),
                    format!(
                        "layer {i} outputs {out_dim} but layer {} takes {next_in}",
                        i + 1
                    ),
                ));
            }
        }
        count = in_dim
            .checked_add(1)
            .and_then(|fan_in| fan_in.checked_mul(out_dim))
            .and_then(|layer| count.checked_add(layer))
            .ok_or_else(|| Error::config(field, shown(), "parameter count overflows"))?;
    }
    Ok(count)
}

fn agent_prefix(num_agents: usize, agent: usize) -> String {
    if num_agents == 1 {
        String::new()
    } else {
        format!("agent{agent}.")
    }
}

/// Writes `checkpoint` atomically (see [`write_atomic`](super::write_atomic)).
pub fn save_checkpoint(path: &Path, checkpoint: &Checkpoint) -> Result<()> {
    let params_per_agent = checkpoint.params_per_agent()?;
    let num_agents = checkpoint.agents.len();
    if num_agents == 0 {
        return Err(Error::config(
            "agents",
            0,
            "a checkpoint needs at least one agent",
        ));
    }
    if let Some(key) = checkpoint
        .metadata
        .keys()
        .find(|k| k.starts_with(RESERVED_PREFIX))
    {
        return Err(Error::config(
            "metadata",
            key,
            format!("keys starting with {RESERVED_PREFIX:?} are reserved"),
        ));
    }

    let slots = layer_slots(&checkpoint.actor_layers, &checkpoint.critic_layers);
    // (name, shape, little-endian bytes); views borrow the bytes below.
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (p, agent) in checkpoint.agents.iter().enumerate() {
        let prefix = agent_prefix(num_agents, p);
        let mut flat = vec![("", "params", &agent.params)];
        if let Some(adam) = &agent.optimizer {
            flat.push(("optim.m.", "optimizer.m", &adam.m));
            flat.push(("optim.v.", "optimizer.v", &adam.v));
            let step = i64::try_from(adam.step).map_err(|_| {
                Error::config(
                    format!("agents[{p}].optimizer.step"),
                    adam.step,
                    "exceeds i64",
                )
            })?;
            tensors.push((
                format!("{prefix}optim.step"),
                Vec::new(),
                step.to_le_bytes().to_vec(),
            ));
        }
        for (name_prefix, what, values) in flat {
            if values.len() != params_per_agent {
                return Err(Error::shape(
                    "save_checkpoint",
                    &format!("agents[{p}].{what}"),
                    params_per_agent,
                    values.len(),
                ));
            }
            for slot in &slots {
                let weight_end = slot.offset + slot.out_dim * slot.in_dim;
                let bias_end = weight_end + slot.out_dim;
                tensors.push((
                    format!("{prefix}{name_prefix}{}", slot.weight),
                    vec![slot.out_dim, slot.in_dim],
                    f32_bytes(&values[slot.offset..weight_end]),
                ));
                tensors.push((
                    format!("{prefix}{name_prefix}{}", slot.bias),
                    vec![slot.out_dim],
                    f32_bytes(&values[weight_end..bias_end]),
                ));
            }
        }
    }

    if let Some(context) = &checkpoint.context {
        let (actor_units, critic_units) =
            context_units(&checkpoint.actor_layers, &checkpoint.critic_layers);
        let expected = (actor_units + critic_units) * context.dim;
        if context.dim == 0 || context.weights.len() != expected {
            return Err(Error::shape(
                "save_checkpoint",
                &format!("context weights of dim {}", context.dim),
                expected,
                context.weights.len(),
            ));
        }
        let (actor, critic) = context.weights.split_at(actor_units * context.dim);
        tensors.push((
            CONTEXT_ACTOR.into(),
            vec![actor_units, context.dim],
            f32_bytes(actor),
        ));
        tensors.push((
            context_critic_name(&checkpoint.critic_layers),
            vec![critic_units, context.dim],
            f32_bytes(critic),
        ));
    }

    let mut metadata: HashMap<String, String> = checkpoint
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    metadata.insert(KEY_FORMAT.into(), FORMAT_VERSION.into());
    metadata.insert(KEY_NUM_AGENTS.into(), num_agents.to_string());
    metadata.insert(
        KEY_ACTOR_LAYERS.into(),
        layers_json(&checkpoint.actor_layers),
    );
    metadata.insert(
        KEY_CRITIC_LAYERS.into(),
        layers_json(&checkpoint.critic_layers),
    );

    let views = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            let dtype = if name.ends_with("optim.step") {
                Dtype::I64
            } else {
                Dtype::F32
            };
            TensorView::new(dtype, shape.clone(), bytes).map(|view| (name.as_str(), view))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .and_then(|views| safetensors::serialize(views, Some(metadata)));
    let bytes = views.map_err(|e| Error::Format {
        path: path.to_path_buf(),
        reason: format!("cannot serialize checkpoint: {e}"),
    })?;
    write_atomic(path, &bytes)
}

/// Reads a checkpoint written by [`save_checkpoint`], checking every tensor's
/// name, dtype and shape against the layer sizes stored in its metadata.
pub fn load_checkpoint(path: &Path) -> Result<Checkpoint> {
    let bytes = std::fs::read(path).map_err(|source| io_error(path, source))?;
    let format_error = |reason: String| Error::Format {
        path: path.to_path_buf(),
        reason,
    };
    let (_, header) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| format_error(format!("not a safetensors file: {e}")))?;
    let file = SafeTensors::deserialize(&bytes)
        .map_err(|e| format_error(format!("not a safetensors file: {e}")))?;
    let mut metadata: BTreeMap<String, String> = header
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();

    let mut take = |key: &str| {
        metadata.remove(key).ok_or_else(|| {
            format_error(format!(
                "metadata has no {key:?}; not a ppo-wgpu checkpoint"
            ))
        })
    };
    let version = take(KEY_FORMAT)?;
    let num_agents_text = take(KEY_NUM_AGENTS)?;
    let actor_text = take(KEY_ACTOR_LAYERS)?;
    let critic_text = take(KEY_CRITIC_LAYERS)?;
    if version != FORMAT_VERSION {
        return Err(format_error(format!(
            "checkpoint format {version:?}, this build reads {FORMAT_VERSION:?}"
        )));
    }
    let num_agents: usize = num_agents_text
        .parse()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| format_error(format!("{KEY_NUM_AGENTS} = {num_agents_text:?}")))?;
    let parse_layers = |key: &str, text: &str| -> Result<Vec<(usize, usize)>> {
        serde_json::from_str(text).map_err(|e| format_error(format!("{key} = {text:?}: {e}")))
    };
    let actor_layers = parse_layers(KEY_ACTOR_LAYERS, &actor_text)?;
    let critic_layers = parse_layers(KEY_CRITIC_LAYERS, &critic_text)?;
    let params_per_agent =
        count_params(&actor_layers, &critic_layers).map_err(|e| format_error(e.to_string()))?;
    // Refuse sizes the file cannot hold before allocating for them.
    let stored_floats = params_per_agent.checked_mul(num_agents);
    if stored_floats.is_none_or(|n| n > bytes.len() / 4) {
        return Err(format_error(format!(
            "metadata declares {num_agents} agents × {params_per_agent} parameters, more than the file holds"
        )));
    }

    let slots = layer_slots(&actor_layers, &critic_layers);
    let mut seen: HashSet<String> = HashSet::new();
    let read_flat = |prefix: &str, seen: &mut HashSet<String>| -> Result<Vec<f32>> {
        let mut values = Vec::with_capacity(params_per_agent);
        for slot in &slots {
            for (name, shape) in [
                (&slot.weight, vec![slot.out_dim, slot.in_dim]),
                (&slot.bias, vec![slot.out_dim]),
            ] {
                let full = format!("{prefix}{name}");
                let view = tensor(&file, &full, Dtype::F32, &shape).map_err(&format_error)?;
                let start = values.len();
                values.extend(
                    view.data()
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                );
                if let Some(i) = values[start..].iter().position(|v| !v.is_finite()) {
                    return Err(format_error(format!(
                        "tensor {full} holds {} at element {i}: a checkpoint's values must be finite",
                        values[start + i]
                    )));
                }
                seen.insert(full);
            }
        }
        Ok(values)
    };

    let mut agents = Vec::with_capacity(num_agents);
    for p in 0..num_agents {
        let prefix = agent_prefix(num_agents, p);
        let params = read_flat(&prefix, &mut seen)?;
        let step_name = format!("{prefix}optim.step");
        let optimizer = if file.names().contains(&step_name.as_str()) {
            let view = tensor(&file, &step_name, Dtype::I64, &[]).map_err(&format_error)?;
            let step_bytes: [u8; 8] = view
                .data()
                .try_into()
                .map_err(|_| format_error(format!("tensor {step_name} is not 8 bytes")))?;
            let step = u64::try_from(i64::from_le_bytes(step_bytes))
                .map_err(|_| format_error(format!("tensor {step_name} is negative")))?;
            seen.insert(step_name);
            Some(AdamState {
                m: read_flat(&format!("{prefix}optim.m."), &mut seen)?,
                v: read_flat(&format!("{prefix}optim.v."), &mut seen)?,
                step,
            })
        } else {
            None
        };
        agents.push(AgentState { params, optimizer });
    }

    let names = file.names();
    let critic_name = context_critic_name(&critic_layers);
    let any_context = names.iter().any(|n| n.starts_with("context."));
    let context = if any_context {
        let dim = file
            .tensor(CONTEXT_ACTOR)
            .map_err(|_| format_error(format!("tensor {CONTEXT_ACTOR} is missing")))?
            .shape()
            .get(1)
            .copied()
            .unwrap_or(0);
        let mut weights = Vec::new();
        let (actor_units, critic_units) = context_units(&actor_layers, &critic_layers);
        for (name, units) in [
            (CONTEXT_ACTOR, actor_units),
            (critic_name.as_str(), critic_units),
        ] {
            let view = tensor(&file, name, Dtype::F32, &[units, dim]).map_err(&format_error)?;
            let start = weights.len();
            weights.extend(
                view.data()
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            );
            if let Some(i) = weights[start..].iter().position(|v| !v.is_finite()) {
                return Err(format_error(format!(
                    "tensor {name} holds {} at element {i}: a checkpoint's values must be finite",
                    weights[start + i]
                )));
            }
            seen.insert(name.to_string());
        }
        if dim == 0 {
            return Err(format_error(format!(
                "tensor {CONTEXT_ACTOR} has no columns"
            )));
        }
        Some(ContextWeights { dim, weights })
    } else {
        None
    };

    let mut unexpected: Vec<&str> = file
        .names()
        .into_iter()
        .filter(|name| !seen.contains(*name))
        .collect();
    if !unexpected.is_empty() {
        unexpected.sort_unstable();
        return Err(format_error(format!(
            "unexpected tensors for {num_agents} agent(s): {}",
            unexpected.join(", ")
        )));
    }
    Ok(Checkpoint {
        actor_layers,
        critic_layers,
        agents,
        metadata,
        context,
    })
}

/// A tensor with the expected dtype and shape, or the reason it is not.
fn tensor<'data>(
    file: &SafeTensors<'data>,
    name: &str,
    dtype: Dtype,
    shape: &[usize],
) -> std::result::Result<TensorView<'data>, String> {
    let view = file
        .tensor(name)
        .map_err(|_| format!("tensor {name} is missing"))?;
    if view.dtype() != dtype {
        return Err(format!(
            "tensor {name} has dtype {}, expected {dtype}",
            view.dtype()
        ));
    }
    if view.shape() != shape {
        return Err(format!(
            "tensor {name} has shape {:?}, expected {shape:?}",
            view.shape()
        ));
    }
    Ok(view)
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn layers_json(layers: &[(usize, usize)]) -> String {
    let pairs: Vec<String> = layers.iter().map(|(i, o)| format!("[{i},{o}]")).collect();
    format!("[{}]", pairs.join(","))
}
