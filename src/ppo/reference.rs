//! The CPU reference of the whole update, in f64, following CleanRL's
//! ppo.py update loop step by step for each agent, with the same
//! permutations as the GPU. It is the oracle the GPU update is tested against.

use crate::nn::{mlp_backward_cpu, mlp_forward_cpu, Placement};
use crate::ops::gae::gae_cpu;
use crate::ops::gather::minibatch_rows_cpu;
use crate::ops::optim::{adam_cpu, clip_grad_norm_cpu};
use crate::ops::ppo_loss::{ppo_loss_cpu, stat, ROW_STATS};
use crate::ops::stats::{adv_norm_cpu, explained_variance_cpu, row_stats_mean_cpu};
use crate::ops::{record, RECORD};
use crate::ppo::gpu::{AgentUpdateStats, UpdateSettings};
use crate::ppo::net::ActorCriticSpec;

/// Everything the reference update reads (f64; rollout tensors [T][P][N][..]).
pub struct ReferenceInputs<'a> {
    pub spec: &'a ActorCriticSpec,
    pub settings: &'a UpdateSettings,
    /// [P][K]
    pub params: &'a [f64],
    pub adam_m: &'a [f64],
    pub adam_v: &'a [f64],
    pub adam_steps: &'a [u32],
    pub learning_rates: &'a [f64],
    pub obs: &'a [f64],
    /// Rollout records: log-prob, value and action are read.
    pub records: &'a [f64],
    pub rewards: &'a [f64],
    pub flags: &'a [u32],
    /// Final observations, read where truncated.
    pub final_obs: &'a [f64],
    /// Observations after the last step, [P][N][obs_dim].
    pub next_obs: &'a [f64],
    pub perm: &'a [u32],
}

/// The reference's results.
pub struct ReferenceOutput {
    pub params: Vec<f64>,
    pub adam_m: Vec<f64>,
    pub adam_v: Vec<f64>,
    pub adam_steps: Vec<u32>,
    pub stats: Vec<AgentUpdateStats>,
    /// [T][P][N]
    pub advantages: Vec<f64>,
    pub returns: Vec<f64>,
}

/// V(obs) for every row of [rows][obs_dim] with every agent's critic; rows are
/// [.., P, N] so agent p owns rows with (row / N) % P == p.
fn critic_values(
    spec: &ActorCriticSpec,
    settings: &UpdateSettings,
    params: &[f64],
    obs: &[f64],
) -> Vec<f64> {
    let (p_count, n) = (settings.num_agents, settings.envs_per_agent);
    let k = spec.param_count();
    let rows = obs.len() / spec.obs_dim;
    let mut values = vec![0.0; rows];
    for p in 0..p_count {
        let own: Vec<usize> = (0..rows).filter(|r| (r / n) % p_count == p).collect();
        let x: Vec<f64> = own
            .iter()
            .flat_map(|&r| obs[r * spec.obs_dim..(r + 1) * spec.obs_dim].to_vec())
            .collect();
        let placement = Placement {
            num_agents: 1,
            rows_per_agent: own.len(),
            param_stride: k,
            base: spec.critic_base(),
        };
        let out = mlp_forward_cpu(&spec.critic(), placement, &x, &params[p * k..(p + 1) * k]);
        for (i, &r) in own.iter().enumerate() {
            values[r] = out.last().expect("critic has layers")[i];
        }
    }
    values
}

/// Runs the update for every agent.
pub fn reference_update(inputs: &ReferenceInputs<'_>) -> ReferenceOutput {
    let (spec, settings) = (inputs.spec, inputs.settings);
    let (p_count, t_count, n) = (
        settings.num_agents,
        settings.num_steps,
        settings.envs_per_agent,
    );
    let sequences = p_count * n;
    let k = spec.param_count();
    let shape_m = settings.minibatch_size();

    let values: Vec<f64> = inputs
        .records
        .chunks(RECORD)
        .map(|r| r[record::VALUE])
        .collect();
    let final_values = critic_values(spec, settings, inputs.params, inputs.final_obs);
    let last_values = critic_values(spec, settings, inputs.params, inputs.next_obs);
    let (advantages, returns) = gae_cpu(
        t_count,
        sequences,
        settings.gamma,
        settings.gae_lambda,
        inputs.rewards,
        inputs.flags,
        &final_values,
        &last_values,
        &values,
    );

    let shape = crate::ops::gather::BatchShape {
        num_agents: p_count,
        num_steps: t_count,
        envs_per_agent: n,
        obs_dim: spec.obs_dim,
        minibatch_size: shape_m,
        epochs: settings.update_epochs,
    };
    let mut out = ReferenceOutput {
        params: inputs.params.to_vec(),
        adam_m: inputs.adam_m.to_vec(),
        adam_v: inputs.adam_v.to_vec(),
        adam_steps: inputs.adam_steps.to_vec(),
        stats: Vec::with_capacity(p_count),
        advantages: advantages.clone(),
        returns: returns.clone(),
    };
    let actor_at = Placement {
        num_agents: 1,
        rows_per_agent: shape_m,
        param_stride: k,
        base: 0,
    };
    let critic_at = Placement {
        base: spec.critic_base(),
        ..actor_at
    };
    for p in 0..p_count {
        let agent_rows: Vec<usize> = (0..shape.batch_per_agent())
            .map(|b| shape.rollout_row(p, b))
            .collect();
        let explained_variance = explained_variance_cpu(
            &agent_rows.iter().map(|&r| values[r]).collect::<Vec<_>>(),
            &agent_rows.iter().map(|&r| returns[r]).collect::<Vec<_>>(),
        );
        let params = &mut out.params[p * k..(p + 1) * k];
        let adam_m = &mut out.adam_m[p * k..(p + 1) * k];
        let adam_v = &mut out.adam_v[p * k..(p + 1) * k];
        let mut history = Vec::new();
        'epochs: for epoch in 0..settings.update_epochs {
            for minibatch in 0..settings.num_minibatches {
                let rows = minibatch_rows_cpu(&shape, inputs.perm, epoch, minibatch, p);
                let mb_obs: Vec<f64> = rows
                    .iter()
                    .flat_map(|&r| inputs.obs[r * spec.obs_dim..(r + 1) * spec.obs_dim].to_vec())
                    .collect();
                let mut mb_adv: Vec<f64> = rows.iter().map(|&r| advantages[r]).collect();
                if settings.norm_adv {
                    mb_adv = adv_norm_cpu(&mb_adv);
                }
                let mut mb_records = Vec::with_capacity(rows.len() * RECORD);
                for (j, &r) in rows.iter().enumerate() {
                    let rec = &inputs.records[r * RECORD..(r + 1) * RECORD];
                    mb_records.extend([
                        rec[record::LOGPROB],
                        rec[record::VALUE],
                        mb_adv[j],
                        returns[r],
                        rec[record::ACTION],
                    ]);
                }
                let actor_out = mlp_forward_cpu(&spec.actor(), actor_at, &mb_obs, params);
                let critic_out = mlp_forward_cpu(&spec.critic(), critic_at, &mb_obs, params);
                let logits = actor_out.last().expect("actor has layers");
                let new_values = critic_out.last().expect("critic has layers");
                let loss = ppo_loss_cpu(
                    &mb_records,
                    logits,
                    new_values,
                    spec.num_actions,
                    shape_m,
                    settings.coefs,
                );
                let mut grads = vec![0.0; k];
                mlp_backward_cpu(
                    &spec.actor(),
                    actor_at,
                    &mb_obs,
                    params,
                    &actor_out,
                    &loss.dlogits,
                    &mut grads,
                );
                mlp_backward_cpu(
                    &spec.critic(),
                    critic_at,
                    &mb_obs,
                    params,
                    &critic_out,
                    &loss.dvalues,
                    &mut grads,
                );
                clip_grad_norm_cpu(&mut grads, settings.max_grad_norm);
                out.adam_steps[p] += 1;
                adam_cpu(
                    params,
                    &grads,
                    adam_m,
                    adam_v,
                    inputs.learning_rates[p],
                    settings.adam_eps,
                    out.adam_steps[p],
                );
                let means = row_stats_mean_cpu(&loss.row_stats);
                history.push(means);
                let epoch_end = minibatch + 1 == settings.num_minibatches;
                if epoch_end
                    && settings
                        .target_kl
                        .is_some_and(|kl| means[stat::APPROX_KL] > kl)
                {
                    break 'epochs;
                }
            }
        }
        let last: [f64; ROW_STATS] = *history.last().expect("at least one minibatch");
        out.stats.push(AgentUpdateStats {
            policy_loss: last[stat::POLICY_LOSS],
            value_loss: last[stat::VALUE_LOSS],
            entropy: last[stat::ENTROPY],
            old_approx_kl: last[stat::OLD_APPROX_KL],
            approx_kl: last[stat::APPROX_KL],
            clipfrac: last[stat::CLIPFRAC],
            explained_variance,
            minibatch_updates: history.len(),
            history,
        });
    }
    out
}
