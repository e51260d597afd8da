//! The rollout half of [`PpoGpu`]: host-env steps (fused into one dispatch
//! per step, or layered), device-env rollouts (one fused kernel, or layered
//! per step) and the choice between them. A child module of `ppo::gpu`
//! (`#[path]`), so it reaches the engine's buffers; the update lives there.

use super::*;

impl PpoGpu {
    /// Records the critic on the pending final observations, into final_values.
    pub(super) fn record_pending_final(&mut self, encoder: &mut wgpu::CommandEncoder) {
        if let Some(step) = self.pending_final.take() {
            {
                let mut pass = encoder.begin_compute_pass(&Default::default());
                for d in self.final_critic.forward_dispatches() {
                    d.record(&mut pass);
                }
            }
            let rows = (self.settings.num_agents * self.settings.envs_per_agent) as u64;
            encoder.copy_buffer_to_buffer(
                &self.final_critic.output().buffer,
                0,
                &self.rollout.final_values.buffer,
                step as u64 * rows * 4,
                rows * 4,
            );
        }
    }

    /// Rollout step `step`: policy and value forward on `obs` [P][N][obs_dim],
    /// sample, store log-prob, value and obs in the rollout; returns the actions.
    pub fn rollout_step(
        &mut self,
        ctx: &GpuContext,
        step: usize,
        obs: &[f32],
        key: SampleKey,
    ) -> Result<Vec<u32>> {
        if step >= self.settings.num_steps {
            return Err(Error::config(
                "step",
                step,
                format!("the rollout has {} steps", self.settings.num_steps),
            ));
        }
        self.cur_obs.write(ctx, obs)?;
        self.rollout_on_device = false;
        if self.uses_fused_policy_step(ctx)? {
            return self.fused_policy_step(ctx, step, key);
        }
        self.sample.set_step(ctx, Some(key), step as u32);
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        self.record_pending_final(&mut encoder);
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            for d in self.rollout_actor.forward_dispatches() {
                d.record(&mut pass);
            }
            for d in self.rollout_critic.forward_dispatches() {
                d.record(&mut pass);
            }
            self.sample.dispatch().record(&mut pass);
        }
        let obs_bytes = (self.cur_obs.len() * 4) as u64;
        encoder.copy_buffer_to_buffer(
            &self.cur_obs.buffer,
            0,
            &self.rollout.obs.buffer,
            step as u64 * obs_bytes,
            obs_bytes,
        );
        self.step_readback
            .record_copy(&mut encoder, &self.actions, 0);
        ctx.submit_commands(encoder.finish());
        let bytes = self.step_readback.read_bytes(ctx)?;
        Ok(decode(&bytes, 0, self.actions.len()))
    }

    /// Whether [`PpoGpu::rollout_step`] takes the one-dispatch fused step
    /// ([`FusedPolicyStep`]): with [`RolloutPath::Auto`] wherever it is
    /// supported; an error where [`RolloutPath::Fused`] was asked for and it
    /// is not.
    pub fn uses_fused_policy_step(&self, ctx: &GpuContext) -> Result<bool> {
        takes_fused(
            self.rollout_path,
            policy_step_support(ctx, &self.spec),
            || true,
        )
    }

    /// [`PpoGpu::rollout_step`] as one dispatch (after `cur_obs` is written).
    fn fused_policy_step(
        &mut self,
        ctx: &GpuContext,
        step: usize,
        key: SampleKey,
    ) -> Result<Vec<u32>> {
        if self.policy_step.is_none() {
            self.policy_step = Some(FusedPolicyStep::new(
                ctx,
                &self.spec,
                self.settings.num_agents,
                self.settings.envs_per_agent,
                &PolicyBuffers {
                    params: &self.params,
                    cur_obs: &self.cur_obs,
                    obs: &self.rollout.obs,
                    records: &self.rollout.records,
                    actions: &self.actions,
                },
            )?);
        }
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        self.record_pending_final(&mut encoder);
        let policy = self.policy_step.as_ref().expect("built above");
        policy.prepare(ctx, step, key);
        policy.record(&mut encoder, &self.params);
        self.step_readback
            .record_copy(&mut encoder, &self.actions, 0);
        ctx.submit_commands(encoder.finish());
        let bytes = self.step_readback.read_bytes(ctx)?;
        Ok(decode(&bytes, 0, self.actions.len()))
    }

    /// A whole rollout on a host [`VecEnv`]: for each of the T steps,
    /// [`PpoGpu::rollout_step`] on `obs` (sampling keyed by (seed,
    /// iteration, step)), the env step into `out`, and
    /// [`PpoGpu::record_env_step`]. `obs` ends as the observations after the
    /// last step, the bootstrap input of [`PpoGpu::update`]; the episodes
    /// that ended are appended to `finished`.
    #[allow(clippy::too_many_arguments)]
    pub fn rollout_host(
        &mut self,
        ctx: &GpuContext,
        env: &mut dyn VecEnv,
        obs: &mut Vec<f32>,
        out: &mut StepOut,
        seed: u64,
        iteration: u32,
        finished: &mut Vec<EpisodeStats>,
    ) -> Result<()> {
        for step in 0..self.settings.num_steps {
            let key = SampleKey {
                seed,
                iteration,
                step: step as u32,
            };
            let actions = self.rollout_step(ctx, step, obs, key)?;
            env.step(&actions, out)?;
            self.record_env_step(
                ctx,
                step,
                &out.reward,
                &out.terminated,
                &out.truncated,
                &out.final_obs,
            )?;
            std::mem::swap(obs, &mut out.obs);
            env.drain_episodes(finished);
        }
        Ok(())
    }

    /// Records what the envs returned for step `step`: rewards and flags
    /// [P][N]; `final_obs` [P][N][obs_dim] is read where `truncated` is set.
    pub fn record_env_step(
        &mut self,
        ctx: &GpuContext,
        step: usize,
        rewards: &[f32],
        terminated: &[u8],
        truncated: &[u8],
        final_obs: &[f32],
    ) -> Result<()> {
        const OP: &str = "record_env_step";
        let rows = self.settings.num_agents * self.settings.envs_per_agent;
        for (name, len) in [
            ("rewards", rewards.len()),
            ("terminated", terminated.len()),
            ("truncated", truncated.len()),
        ] {
            if len != rows {
                return Err(Error::shape(OP, name, rows, len));
            }
        }
        if step >= self.settings.num_steps {
            return Err(Error::config(
                "step",
                step,
                format!("the rollout has {} steps", self.settings.num_steps),
            ));
        }
        self.rollout_on_device = false;
        let at = step * rows;
        self.host_rewards[at..at + rows].copy_from_slice(rewards);
        for (i, flag) in self.host_flags[at..at + rows].iter_mut().enumerate() {
            *flag =
                (terminated[i] != 0) as u32 * TERMINATED + (truncated[i] != 0) as u32 * TRUNCATED;
        }
        if truncated
            .iter()
            .zip(terminated)
            .any(|(&tr, &te)| tr != 0 && te == 0)
        {
            self.final_obs.write(ctx, final_obs)?;
            self.pending_final = Some(step);
        }
        Ok(())
    }

    /// A whole rollout of T steps with the envs on the device, in one
    /// submission: per step the actor and critic forward on the current
    /// observations, sampling keyed by (`seed`, `iteration`, step), the
    /// observations copied into the rollout, the env step (rewards, flags and
    /// the next observations written in place), and where an env can be
    /// truncated the critic on the final observations. Only the finished
    /// episodes come back. `update(ctx, None, ..)` then bootstraps from the
    /// observations left on the device.
    pub fn rollout_gpu(
        &mut self,
        ctx: &GpuContext,
        env: &mut GpuCartPole,
        seed: u64,
        iteration: u32,
    ) -> Result<RolloutStats> {
        const OP: &str = "rollout_gpu";
        let (t_count, rows) = (
            self.settings.num_steps,
            self.settings.num_agents * self.settings.envs_per_agent,
        );
        if self.spec.obs_dim != OBS_DIM || self.spec.num_actions != NUM_ACTIONS {
            return Err(Error::shape(
                OP,
                "policy obs_dim × num_actions",
                OBS_DIM * NUM_ACTIONS,
                self.spec.obs_dim * self.spec.num_actions,
            ));
        }
        if env.num_envs() != rows {
            return Err(Error::shape(OP, "envs", rows, env.num_envs()));
        }
        if env.num_steps() != t_count {
            return Err(Error::shape(OP, "env num_steps", t_count, env.num_steps()));
        }
        if self.uses_fused_rollout(ctx)? {
            return self.rollout_fused(ctx, env, seed, iteration);
        }
        env.bind(
            ctx,
            &CartPoleStepBuffers {
                actions: &self.actions,
                obs: &self.cur_obs,
                final_obs: &self.final_obs,
                rewards: &self.rollout.rewards,
                flags: &self.rollout.flags,
            },
        )?;
        if let Some(obs) = env.take_pending_obs() {
            self.cur_obs.write(ctx, &obs)?;
        }
        if self.device_samples.is_empty() {
            self.device_samples = (0..t_count)
                .map(|_| {
                    CategoricalSample::new(
                        ctx,
                        self.spec.num_actions,
                        self.rollout_actor.output(),
                        self.rollout_critic.output(),
                        &self.rollout.records,
                        &self.actions,
                    )
                })
                .collect::<Result<_>>()?;
        }
        for (step, sample) in self.device_samples.iter_mut().enumerate() {
            let key = SampleKey {
                seed,
                iteration,
                step: step as u32,
            };
            sample.set_step(ctx, Some(key), step as u32);
        }
        let truncation_steps = env.truncation_steps();
        let obs_bytes = (self.cur_obs.len() * 4) as u64;
        let rows_bytes = rows as u64 * 4;
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        self.record_pending_final(&mut encoder);
        for (step, &truncation_possible) in truncation_steps.iter().enumerate() {
            {
                let mut pass = encoder.begin_compute_pass(&Default::default());
                for d in self.rollout_actor.forward_dispatches() {
                    d.record(&mut pass);
                }
                for d in self.rollout_critic.forward_dispatches() {
                    d.record(&mut pass);
                }
                self.device_samples[step].dispatch().record(&mut pass);
            }
            encoder.copy_buffer_to_buffer(
                &self.cur_obs.buffer,
                0,
                &self.rollout.obs.buffer,
                step as u64 * obs_bytes,
                obs_bytes,
            );
            {
                let mut pass = encoder.begin_compute_pass(&Default::default());
                env.step_dispatch(step)?.record(&mut pass);
                if truncation_possible {
                    for d in self.final_critic.forward_dispatches() {
                        d.record(&mut pass);
                    }
                }
            }
            if truncation_possible {
                encoder.copy_buffer_to_buffer(
                    &self.final_critic.output().buffer,
                    0,
                    &self.rollout.final_values.buffer,
                    step as u64 * rows_bytes,
                    rows_bytes,
                );
            }
        }
        env.record_readback(&mut encoder);
        ctx.submit_commands(encoder.finish());
        let episodes = env.finish_rollout(ctx)?;
        self.rollout_on_device = true;
        let final_value_steps = truncation_steps.iter().filter(|&&b| b).count();
        let per_step = self.rollout_actor.forward_dispatches().count()
            + self.rollout_critic.forward_dispatches().count()
            + 2;
        Ok(RolloutStats {
            episodes,
            final_value_steps,
            fused_layout: None,
            dispatches: t_count * per_step
                + final_value_steps * self.final_critic.forward_dispatches().count(),
        })
    }

    /// Chooses the rollout path, for device envs (one fused kernel) and host
    /// envs (one fused dispatch per step): [`RolloutPath::Auto`], the
    /// default, takes the fused one where it is supported and suits the
    /// adapter.
    pub fn set_rollout_path(&mut self, path: RolloutPath) {
        self.rollout_path = path;
    }

    /// Forces the fused rollout's layout (None: [`FusedLayout::choose`] by
    /// size); the kernel is rebuilt on the next rollout.
    pub fn set_fused_layout(&mut self, layout: Option<FusedLayout>) {
        self.fused_layout = layout;
        self.fused = None;
    }

    /// The layout the fused rollout takes for this engine's sizes.
    pub fn fused_layout(&self, ctx: &GpuContext) -> FusedLayout {
        self.fused_layout
            .unwrap_or_else(|| FusedLayout::choose(ctx, &self.spec, self.settings.envs_per_agent))
    }

    /// Why the fused rollout cannot run this policy on `ctx` (None: it can).
    pub fn fused_unsupported(&self, ctx: &GpuContext) -> Option<String> {
        fused_support(ctx, &self.spec, OBS_DIM)
    }

    /// Which rollout device envs get, in words, for `train` to print.
    pub fn rollout_path_description(&self, ctx: &GpuContext) -> String {
        match (self.uses_fused_rollout(ctx), self.fused_unsupported(ctx)) {
            (Ok(true), _) => format!(
                "fused (one kernel runs the whole rollout; {})",
                self.fused_layout(ctx).describe()
            ),
            (_, Some(reason)) => format!("layered (fused rollout not possible: {reason})"),
            _ if self.rollout_path == RolloutPath::Layered => "layered (as asked)".into(),
            _ => format!(
                "layered (with {} envs per agent the fused kernel of a network with hidden \
                 layers compiles for 8-22 s on a CPU adapter and runs no faster; \
                 --set rollout=fused forces it)",
                self.settings.envs_per_agent
            ),
        }
    }

    /// Whether the next device rollout takes the fused path; an error where
    /// [`RolloutPath::Fused`] was asked for and is not supported.
    pub fn uses_fused_rollout(&self, ctx: &GpuContext) -> Result<bool> {
        takes_fused(self.rollout_path, self.fused_unsupported(ctx), || {
            auto_picks_fused(ctx, &self.spec, self.settings.envs_per_agent)
        })
    }

    /// [`PpoGpu::rollout_gpu`] as one fused kernel (a few dispatches on CPU
    /// adapters, see `ppo::fused`), in one submission.
    fn rollout_fused(
        &mut self,
        ctx: &GpuContext,
        env: &mut GpuCartPole,
        seed: u64,
        iteration: u32,
    ) -> Result<RolloutStats> {
        if self.fused.is_none() {
            self.fused = Some(FusedRollout::new(
                ctx,
                &self.spec,
                self.settings.num_agents,
                self.settings.envs_per_agent,
                self.settings.num_steps,
                self.fused_layout(ctx),
            )?);
        }
        // The kernel observes the envs' states directly.
        env.take_pending_obs();
        let fused = self.fused.as_mut().expect("built above");
        fused.prepare(
            ctx,
            &FusedBuffers {
                params: &self.params,
                physics: env.physics_buffer(),
                states: env.states_buffer(),
                cur_obs: &self.cur_obs,
                obs: &self.rollout.obs,
                records: &self.rollout.records,
                rewards: &self.rollout.rewards,
                flags: &self.rollout.flags,
                final_values: &self.rollout.final_values,
                episodes: env.episodes_buffer(),
            },
            env.limits(),
            SampleKey {
                seed,
                iteration,
                step: 0,
            },
        );
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        self.record_pending_final(&mut encoder);
        let fused = self.fused.as_ref().expect("built above");
        fused.record_weight_copy(&mut encoder, &self.params);
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            fused.record(&mut pass);
        }
        env.record_readback(&mut encoder);
        ctx.submit_commands(encoder.finish());
        let episodes = env.finish_rollout(ctx)?;
        self.rollout_on_device = true;
        Ok(RolloutStats {
            episodes,
            final_value_steps: 0,
            fused_layout: Some(self.fused.as_ref().expect("built above").layout()),
            dispatches: self.fused.as_ref().expect("built above").dispatch_count(),
        })
    }
}

/// Whether `path` takes a fused kernel that is `unsupported` for a reason
/// (or not): never when layered; under auto where supported and `auto`
/// agrees; when fused was asked for, yes, or an error naming the reason.
fn takes_fused(
    path: RolloutPath,
    unsupported: Option<String>,
    auto: impl FnOnce() -> bool,
) -> Result<bool> {
    match (path, unsupported) {
        (RolloutPath::Layered, _) => Ok(false),
        (RolloutPath::Auto, reason) => Ok(reason.is_none() && auto()),
        (RolloutPath::Fused, None) => Ok(true),
        (RolloutPath::Fused, Some(reason)) => Err(Error::config("rollout", "fused", reason)),
    }
}
