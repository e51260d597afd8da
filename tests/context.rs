//! First-order CAVIA's task context: the context kernels against their CPU
//! references (seeded random inputs, partial workgroups, NaN-poisoned
//! outputs), the context update inside a real PPO update, the outer step
//! on the context weights, a tiny CAVIA meta-training and its checkpoint.

mod common;

use common::{assert_close, ctx, random_vec, to_f64};
use ppo_wgpu::config::PpoConfig;
use ppo_wgpu::gpu::GpuBuffer;
use ppo_wgpu::meta::eval::{adaptation_eval, Init};
use ppo_wgpu::meta::inner::{ppo_iteration, rollout, InnerEnv};
use ppo_wgpu::meta::tasks::{family_spec, make_env, repeat_tasks};
use ppo_wgpu::meta::train::{
    initial_context_weights, load_init_with_context, meta_train, MetaTrainOptions,
    META_CHECKPOINT_FILE,
};
use ppo_wgpu::meta::{
    context_outer_cpu, outer_step_cpu, sample_tasks, MetaAdamState, MetaConfig, MetaInit,
    MetaMethod, OuterStep, TaskFamily,
};
use ppo_wgpu::ops::context::{
    context_apply_cpu, context_collect_cpu, context_grad_cpu, context_step_cpu, ContextBuffers,
    ContextLayout, ContextStep,
};
use ppo_wgpu::ops::optim::AgentState;
use ppo_wgpu::ppo::trainer::{initial_params, update_settings};
use ppo_wgpu::ppo::{permutations, ActorCriticSpec, PpoGpu};
use ppo_wgpu::run::{load_checkpoint, save_checkpoint, Checkpoint, ContextWeights};
use ppo_wgpu::Error;

fn agent_states(updating: &[bool]) -> Vec<AgentState> {
    updating
        .iter()
        .map(|&on| AgentState {
            learning_rate: 0.0,
            updating: u32::from(on),
            adam_step: 0,
            clip_scale: 1.0,
        })
        .collect()
}

/// Accumulate over several minibatches' gradients, step, apply and reset,
/// for networks whose first layer has 2..65 units, 1..5 context numbers and
/// agent counts that leave partial workgroups; some agents stopped.
#[test]
fn context_kernels_match_cpu_reference() {
    let Some(ctx) = ctx() else { return };
    let mut case = 0u64;
    let mut clamped_cases = 0;
    for hidden in [vec![], vec![8], vec![65, 3]] {
        let spec = ActorCriticSpec::new(4, 2, &hidden).unwrap();
        let k = spec.param_count();
        for dim in [1usize, 2, 5] {
            for p in [1usize, 3, 13] {
                case += 1;
                let layout = ContextLayout::new(&spec, dim).unwrap();
                let what = format!("hidden {hidden:?} C={dim} P={p}");
                let updating: Vec<bool> = (0..p).map(|i| i % 3 != 1).collect();
                let weights = random_vec(case, layout.weight_len(), -1.0, 1.0);
                let params = random_vec(case + 100, p * k, -2.0, 2.0);
                let grads_gpu = GpuBuffer::<f32>::zeros(ctx, "grads", p * k).unwrap();
                let state_gpu =
                    GpuBuffer::from_slice(ctx, "agent_state", &agent_states(&updating)).unwrap();
                // The biases start poisoned: reset must not read them as
                // base before params are written, and apply must write all.
                let params_gpu = GpuBuffer::from_slice(ctx, "params", &params).unwrap();
                let minibatches = 3;
                let (lr, bound) = (1.5f32, 0.9f32);
                let mut step = ContextStep::new(
                    ctx,
                    layout,
                    p,
                    minibatches,
                    lr as f64,
                    bound as f64,
                    &ContextBuffers {
                        grads: &grads_gpu,
                        agent_state: &state_gpu,
                        params: &params_gpu,
                    },
                )
                .unwrap();
                // The policy's slots weighted 1 (the default), 0 (the value
                // loss alone) and in between.
                let policy_weight = [1.0f32, 0.0, 0.37][case as usize % 3];
                if policy_weight != 1.0 {
                    step.set_policy_weight(ctx, policy_weight as f64).unwrap();
                }
                // Reset over poisoned base, contexts and sums.
                step.base
                    .write(ctx, &vec![f32::NAN; p * layout.units()])
                    .unwrap();
                step.phi.write(ctx, &vec![f32::NAN; p * dim]).unwrap();
                step.acc.write(ctx, &vec![f32::NAN; p * dim]).unwrap();
                step.theta_acc.write(ctx, &vec![f32::NAN; p * k]).unwrap();
                step.weight_acc
                    .write(ctx, &vec![f32::NAN; p * layout.weight_len()])
                    .unwrap();
                step.reset(ctx);
                assert_eq!(
                    step.theta_acc.read(ctx).unwrap(),
                    vec![0.0; p * k],
                    "{what}: reset θ sums"
                );
                assert_eq!(
                    step.weight_acc.read(ctx).unwrap(),
                    vec![0.0; p * layout.weight_len()],
                    "{what}: reset weight sums"
                );
                assert!(
                    step.collect_dispatch().is_none(),
                    "{what}: collecting by default"
                );
                let collect_weight = 0.25f32;
                step.set_collect(ctx, Some(collect_weight as f64));
                let mut theta_acc = vec![0.0f32; p * k];
                let mut weight_acc = vec![0.0f32; p * layout.weight_len()];
                let base: Vec<f32> = (0..p)
                    .flat_map(|a| (0..layout.units()).map(move |j| (a, j)))
                    .map(|(a, j)| params[a * k + layout.slot_index(j)])
                    .collect();
                assert_eq!(step.base.read(ctx).unwrap(), base, "{what}: reset base");
                assert_eq!(
                    step.phi.read(ctx).unwrap(),
                    vec![0.0; p * dim],
                    "{what}: reset phi"
                );
                assert_eq!(
                    step.acc.read(ctx).unwrap(),
                    vec![0.0; p * dim],
                    "{what}: reset acc"
                );
                step.set_weights(ctx, &weights).unwrap();
                // With phi = 0, applying the weights leaves the biases alone.
                assert_eq!(
                    params_gpu.read(ctx).unwrap(),
                    params,
                    "{what}: apply at phi = 0"
                );

                // Two context steps, each after `minibatches` gradients.
                let mut phi = vec![0.0f32; p * dim];
                for update in 0..2u64 {
                    let mut acc = vec![0.0f32; p * dim];
                    for mb in 0..minibatches as u64 {
                        let grads = random_vec(case * 1000 + update * 10 + mb, p * k, -3.0, 3.0);
                        grads_gpu.write(ctx, &grads).unwrap();
                        let collect = step.collect_dispatch().unwrap();
                        ctx.run("accumulate", &[collect, step.accumulate_dispatch()]);
                        context_collect_cpu(
                            &layout,
                            &grads,
                            &phi,
                            collect_weight,
                            &mut theta_acc,
                            &mut weight_acc,
                        );
                        let g = context_grad_cpu(&layout, &weights, &grads, policy_weight);
                        acc.iter_mut().zip(g).for_each(|(a, g)| *a += g);
                    }
                    let label = format!("{what} update {update}");
                    let got_acc = step.acc.read(ctx).unwrap();
                    assert_close(
                        &format!("{label} sums"),
                        &to_f64(&acc),
                        &got_acc,
                        1e-5,
                        1e-5,
                    );
                    let got = step.theta_acc.read(ctx).unwrap();
                    assert_close(
                        &format!("{label} θ sums"),
                        &to_f64(&theta_acc),
                        &got,
                        1e-6,
                        1e-5,
                    );
                    let got = step.weight_acc.read(ctx).unwrap();
                    assert_close(
                        &format!("{label} weight sums"),
                        &to_f64(&weight_acc),
                        &got,
                        1e-6,
                        1e-5,
                    );
                    // Poison the biases: apply must rewrite every one.
                    let mut poisoned = params_gpu.read(ctx).unwrap();
                    for a in 0..p {
                        for j in 0..layout.units() {
                            poisoned[a * k + layout.slot_index(j)] = f32::NAN;
                        }
                    }
                    params_gpu.write(ctx, &poisoned).unwrap();
                    ctx.run("step", &step.step_dispatches());
                    assert_eq!(
                        step.acc.read(ctx).unwrap(),
                        vec![0.0; p * dim],
                        "{label}: sums cleared"
                    );
                    // The reference steps from the GPU's sums, so rounding does not accumulate.
                    context_step_cpu(&mut phi, &got_acc, &updating, minibatches, lr, bound);
                    let got_phi = step.read_phi(ctx).unwrap();
                    assert_close(&format!("{label} phi"), &to_f64(&phi), &got_phi, 1e-6, 1e-5);
                    if got_phi.iter().any(|v| v.abs() == bound) {
                        clamped_cases += 1;
                    }
                    phi = got_phi;
                }
                let got_phi = phi;
                assert!(
                    got_phi.iter().all(|v| v.abs() <= bound),
                    "{what}: phi left the box"
                );
                for (a, &on) in updating.iter().enumerate() {
                    let agent = &got_phi[a * dim..][..dim];
                    if on {
                        assert!(
                            agent.iter().all(|&v| v != 0.0),
                            "{what}: agent {a}'s context did not move"
                        );
                    } else {
                        assert!(
                            agent.iter().all(|&v| v == 0.0),
                            "{what}: stopped agent {a}'s context moved"
                        );
                    }
                }
                let mut want = params.clone();
                context_apply_cpu(&layout, &weights, &base, &got_phi, &mut want);
                let got = params_gpu.read(ctx).unwrap();
                assert_close(&format!("{what} params"), &to_f64(&want), &got, 1e-6, 1e-5);
                // Only first-layer biases change.
                let biases: Vec<usize> =
                    (0..layout.units()).map(|j| layout.slot_index(j)).collect();
                for (i, (&g, &o)) in got.iter().zip(&params).enumerate() {
                    if !biases.contains(&(i % k)) {
                        assert_eq!(
                            g, o,
                            "{what}: parameter {i} is not a first-layer bias but changed"
                        );
                    }
                }
            }
        }
    }
    // The box is exercised: some steps end on its boundary.
    assert!(
        clamped_cases > 3,
        "only {clamped_cases} updates reached the bound"
    );
}

/// CAVIA's outer step: first-order MAML's Adam step on θ along the mean of
/// the collected θ sums, with the broadcast, and Adam on the context
/// weights along the mean of their sums; two steps so the moments carry
/// over; partial workgroups in K and in J×C.
#[test]
fn cavia_outer_step_matches_cpu_reference() {
    let Some(ctx) = ctx() else { return };
    let mut case = 500u64;
    for hidden in [vec![], vec![8], vec![70]] {
        let spec = ActorCriticSpec::new(4, 2, &hidden).unwrap();
        let k = spec.param_count();
        for dim in [1usize, 3] {
            for m in [1usize, 3, 8] {
                case += 1;
                let what = format!("hidden {hidden:?} C={dim} M={m}");
                let layout = ContextLayout::new(&spec, dim).unwrap();
                let theta = random_vec(case, k, -1.0, 1.0);
                let grads = random_vec(case + 1, m * k, -4.0, 4.0);
                let weights = random_vec(case + 2, layout.weight_len(), -1.0, 1.0);
                let weight_acc = random_vec(case + 3, m * layout.weight_len(), -2.0, 2.0);
                // Never read by the outer step: every element the broadcast
                // misses stays NaN and fails.
                let params_gpu =
                    GpuBuffer::from_slice(ctx, "params", &vec![f32::NAN; m * k]).unwrap();
                let grads_gpu = GpuBuffer::from_slice(ctx, "grads", &grads).unwrap();
                let state_gpu =
                    GpuBuffer::from_slice(ctx, "state", &agent_states(&vec![true; m])).unwrap();
                let step = ContextStep::new(
                    ctx,
                    layout,
                    m,
                    4,
                    0.1,
                    1.0,
                    &ContextBuffers {
                        grads: &grads_gpu,
                        agent_state: &state_gpu,
                        params: &params_gpu,
                    },
                )
                .unwrap();
                step.weights.write(ctx, &weights).unwrap();
                step.theta_acc.write(ctx, &grads).unwrap();
                step.weight_acc.write(ctx, &weight_acc).unwrap();
                let meta_lr = 0.05f32;
                let mut outer = OuterStep::new(
                    ctx,
                    MetaMethod::Cavia,
                    &theta,
                    m,
                    &params_gpu,
                    &grads_gpu,
                    Some(&step),
                    meta_lr as f64,
                )
                .unwrap();
                let (mut theta_adam, mut weight_adam) =
                    (MetaAdamState::default(), MetaAdamState::default());
                let (mut want_theta, mut want_weights) = (theta.clone(), weights.clone());
                for s in 0..2 {
                    outer.run(ctx);
                    want_theta = outer_step_cpu(
                        MetaMethod::Cavia,
                        &want_theta,
                        &[],
                        &grads,
                        m,
                        meta_lr,
                        &mut theta_adam,
                    );
                    want_weights =
                        context_outer_cpu(&want_weights, &weight_acc, m, meta_lr, &mut weight_adam);
                    let label = format!("{what} step {s}");
                    let got_theta = outer.theta.read(ctx).unwrap();
                    assert_close(
                        &format!("{label} θ"),
                        &to_f64(&want_theta),
                        &got_theta,
                        1e-6,
                        1e-5,
                    );
                    let got_params = params_gpu.read(ctx).unwrap();
                    for agent in got_params.chunks(k) {
                        assert_eq!(agent, &got_theta[..], "{label}: θ not broadcast");
                    }
                    let got_weights = step.weights.read(ctx).unwrap();
                    assert_close(
                        &format!("{label} weights"),
                        &to_f64(&want_weights),
                        &got_weights,
                        1e-6,
                        1e-5,
                    );
                    want_theta = got_theta;
                    want_weights = got_weights;
                }
                let state = outer
                    .read_context_adam(ctx)
                    .unwrap()
                    .expect("CAVIA has context Adam state");
                assert_eq!(state.step, 2);
                assert_close(
                    &format!("{what} weight m"),
                    &to_f64(&weight_adam.m),
                    &state.m,
                    1e-6,
                    1e-5,
                );
                assert_close(
                    &format!("{what} weight v"),
                    &to_f64(&weight_adam.v),
                    &state.v,
                    1e-6,
                    1e-5,
                );
                // The outer step reads the collected sums, never writes them.
                assert_eq!(
                    step.theta_acc.read(ctx).unwrap(),
                    grads,
                    "{what}: θ sums changed"
                );
                assert_eq!(
                    step.weight_acc.read(ctx).unwrap(),
                    weight_acc,
                    "{what}: weight sums changed"
                );
            }
        }
    }
}

#[test]
fn cavia_outer_step_needs_the_contexts() {
    let Some(ctx) = ctx() else { return };
    let params = GpuBuffer::<f32>::zeros(ctx, "params", 10).unwrap();
    let grads = GpuBuffer::<f32>::zeros(ctx, "grads", 10).unwrap();
    let err = OuterStep::new(
        ctx,
        MetaMethod::Cavia,
        &[0.0; 10],
        1,
        &params,
        &grads,
        None,
        0.1,
    )
    .unwrap_err();
    assert!(err.to_string().contains("cavia"), "{err}");
}

fn tiny_ppo(agents: usize) -> PpoConfig {
    PpoConfig {
        num_agents: agents,
        num_envs: 2,
        num_steps: 16,
        num_minibatches: 2,
        update_epochs: 2,
        hidden: vec![8],
        exp_name: "tiny".into(),
        ..PpoConfig::preset("meta").unwrap()
    }
}

/// A PPO update with the context on is one projected-SGD step of the
/// context along the first epoch's gradient at the rollout's parameters:
/// the same step the full-batch gradient of `gradient()` gives, on the same
/// rollout; nothing but the first-layer biases moves, and Adam is untouched.
#[test]
fn context_update_is_one_step_along_the_rollout_gradient() {
    let Some(ctx) = ctx() else { return };
    let meta = MetaConfig::for_family(TaskFamily::Cartpole);
    let agents = 2;
    // Unnormalized advantages: the mean of the minibatch losses is then the
    // full-batch loss, so both engines see one gradient.
    let ppo = PpoConfig {
        norm_adv: false,
        ..tiny_ppo(agents)
    };
    let full = PpoConfig {
        num_minibatches: 1,
        update_epochs: 1,
        ..ppo.clone()
    };
    let spec = family_spec(meta.family, &ppo.hidden).unwrap();
    let k = spec.param_count();
    let layout = ContextLayout::new(&spec, 3).unwrap();
    let weights = random_vec(3, layout.weight_len(), -1.0, 1.0);
    let theta = initial_params(&spec, agents, 5);
    let (lr, bound) = (0.05f32, 1e3f32);
    let tasks = sample_tasks(&meta, 21, agents);
    let mut engines = Vec::new();
    for config in [&ppo, &full] {
        let mut gpu = PpoGpu::new(ctx, &spec, &update_settings(config)).unwrap();
        gpu.enable_context(ctx, 3, lr as f64, bound as f64).unwrap();
        gpu.context().unwrap().set_weights(ctx, &weights).unwrap();
        gpu.set_params(ctx, &theta).unwrap();
        gpu.reset_optimizer(ctx).unwrap();
        gpu.set_learning_rates(&[0.01; 2]).unwrap();
        let env = make_env(&meta, &repeat_tasks(&tasks, 2), agents, 2, 500).unwrap();
        let mut inner = InnerEnv::new(env, 9).unwrap();
        rollout(ctx, &mut gpu, &mut inner, 4, 1).unwrap();
        engines.push((gpu, inner));
    }
    let (mut stepped, inner) = engines.remove(0);
    let (mut reference, ref_inner) = engines.remove(0);
    assert_eq!(inner.obs, ref_inner.obs, "the two rollouts differ");
    let stats = stepped
        .update(
            ctx,
            Some(&inner.obs),
            &permutations(4, 1, stepped.settings()),
        )
        .unwrap();
    reference
        .gradient(
            ctx,
            Some(&ref_inner.obs),
            &permutations(4, 1, reference.settings()),
        )
        .unwrap();
    let grads = reference.grads().read(ctx).unwrap();
    let mut phi = vec![0.0f32; agents * 3];
    let acc = context_grad_cpu(&layout, &weights, &grads, 1.0);
    context_step_cpu(&mut phi, &acc, &[true, true], 1, lr, bound);
    let got_phi = stepped.context().unwrap().read_phi(ctx).unwrap();
    assert_close(
        "context after one update",
        &to_f64(&phi),
        &got_phi,
        1e-6,
        2e-3,
    );
    assert!(got_phi.iter().all(|&v| v != 0.0), "a context did not move");
    let mut want = theta.clone();
    let base: Vec<f32> = (0..agents)
        .flat_map(|a| (0..layout.units()).map(move |j| (a, j)))
        .map(|(a, j)| theta[a * k + layout.slot_index(j)])
        .collect();
    context_apply_cpu(&layout, &weights, &base, &got_phi, &mut want);
    let got = stepped.read_params(ctx).unwrap();
    assert_close("params after one update", &to_f64(&want), &got, 1e-6, 1e-5);
    let biases: Vec<usize> = (0..layout.units()).map(|j| layout.slot_index(j)).collect();
    for (i, (&g, &t)) in got.iter().zip(&theta).enumerate() {
        if !biases.contains(&(i % k)) {
            assert_eq!(g, t, "parameter {i} moved under a context update");
        }
    }
    let (m, v, steps) = stepped.read_optimizer(ctx).unwrap();
    assert!(
        m.iter().chain(&v).all(|&x| x == 0.0) && steps == [0, 0],
        "Adam ran"
    );
    // The statistics describe the moved policy on the second epoch.
    for s in &stats {
        assert!(
            s.policy_loss.is_finite() && s.approx_kl.is_finite(),
            "{s:?}"
        );
        assert_eq!(s.minibatch_updates, 2 * ppo.num_minibatches, "{s:?}");
    }
    // With the context off, the same engine runs Adam on every parameter again.
    stepped.use_context(false).unwrap();
    stepped.set_params(ctx, &theta).unwrap();
    let mut inner = inner;
    rollout(ctx, &mut stepped, &mut inner, 4, 2).unwrap();
    stepped
        .update(
            ctx,
            Some(&inner.obs),
            &permutations(4, 2, stepped.settings()),
        )
        .unwrap();
    let moved = stepped.read_params(ctx).unwrap();
    let changed = moved.iter().zip(&theta).filter(|(a, b)| a != b).count();
    assert!(
        changed > moved.len() / 2,
        "Adam moved only {changed} parameters"
    );
    // A PpoGpu without a context refuses to use one.
    let mut plain = PpoGpu::new(ctx, &spec, &update_settings(&ppo)).unwrap();
    let err = plain.use_context(true).unwrap_err();
    assert!(err.to_string().contains("context"), "{err}");
}

/// A real CAVIA inner loop on CartPole tasks (two context updates, the
/// second collected), the fresh rollout's gradient collected, then the outer
/// step: θ and the context weights match the CPU reference applied to the
/// read-back sums, θ is broadcast, and the reset starts the next tasks clean.
#[test]
fn tiny_cavia_meta_step_matches_reference() {
    let Some(ctx) = ctx() else { return };
    let meta = MetaConfig {
        meta_batch: 3,
        method: MetaMethod::Cavia,
        inner_updates: 2,
        ..MetaConfig::for_family(TaskFamily::Cartpole)
    };
    let ppo = tiny_ppo(3);
    let spec = family_spec(meta.family, &ppo.hidden).unwrap();
    let k = spec.param_count();
    let layout = ContextLayout::new(&spec, meta.context_dim).unwrap();
    let mut gpu = PpoGpu::new(ctx, &spec, &update_settings(&ppo)).unwrap();
    gpu.enable_context(ctx, meta.context_dim, meta.context_lr, meta.context_bound)
        .unwrap();
    let mut weights = initial_context_weights(&layout, meta.context_init_std, 1);
    gpu.context().unwrap().set_weights(ctx, &weights).unwrap();
    let mut theta = initial_params(&spec, 1, 7);
    let meta_lr = 0.01f32;
    let mut outer = OuterStep::new(
        ctx,
        MetaMethod::Cavia,
        &theta,
        3,
        &gpu.params,
        gpu.grads(),
        gpu.context(),
        meta_lr as f64,
    )
    .unwrap();
    gpu.set_params(ctx, &theta.repeat(3)).unwrap();
    let (mut theta_adam, mut weight_adam) = (MetaAdamState::default(), MetaAdamState::default());
    let collect_weight = |update| meta.context_collect_weight(update, ppo.num_minibatches);
    for step in 0..2u32 {
        let tasks = sample_tasks(&meta, 31 + step as u64, 3);
        let env = make_env(&meta, &repeat_tasks(&tasks, 2), 3, 2, 500).unwrap();
        let mut inner = InnerEnv::new(env, 5).unwrap();
        for j in 0..2 {
            let context = gpu.context_mut().unwrap();
            context
                .set_step(ctx, meta.context_lr_at(j + 1), meta.context_bound)
                .unwrap();
            context.set_collect(ctx, collect_weight(j));
            ppo_iteration(ctx, &mut gpu, &mut inner, 3, step * 10 + j as u32).unwrap();
            let sums = gpu.context().unwrap().theta_acc.read(ctx).unwrap();
            let collected = sums.iter().any(|&v| v != 0.0);
            let want = j >= 1 || meta.context_zero_loss;
            assert_eq!(collected, want, "update {} collected", j + 1);
        }
        let phi = gpu.context().unwrap().read_phi(ctx).unwrap();
        assert!(phi
            .iter()
            .all(|v| v.is_finite() && v.abs() <= meta.context_bound as f32));
        assert!(phi.iter().any(|&v| v != 0.0), "no context moved");
        let adapted = gpu.read_params(ctx).unwrap();
        for (i, (&a, &t)) in adapted.iter().zip(theta.repeat(3).iter()).enumerate() {
            if !(0..layout.units()).any(|j| layout.slot_index(j) == i % k) {
                assert_eq!(a, t, "parameter {i} moved in a CAVIA inner loop");
            }
        }
        rollout(ctx, &mut gpu, &mut inner, 3, 99 + step).unwrap();
        gpu.context_mut()
            .unwrap()
            .set_collect(ctx, collect_weight(2));
        let perm = permutations(3, 99 + step as u64, gpu.settings());
        gpu.gradient(ctx, Some(&inner.obs), &perm).unwrap();
        gpu.context_mut().unwrap().set_collect(ctx, None);
        assert_eq!(
            gpu.read_params(ctx).unwrap(),
            adapted,
            "gradient() moved parameters"
        );
        let theta_sums = gpu.context().unwrap().theta_acc.read(ctx).unwrap();
        let weight_sums = gpu.context().unwrap().weight_acc.read(ctx).unwrap();
        assert!(theta_sums.iter().chain(&weight_sums).all(|v| v.is_finite()));
        outer.run(ctx);
        let want_theta = outer_step_cpu(
            MetaMethod::Cavia,
            &theta,
            &[],
            &theta_sums,
            3,
            meta_lr,
            &mut theta_adam,
        );
        let want_weights = context_outer_cpu(&weights, &weight_sums, 3, meta_lr, &mut weight_adam);
        let got_theta = outer.theta.read(ctx).unwrap();
        assert_close(
            &format!("step {step} θ"),
            &to_f64(&want_theta),
            &got_theta,
            1e-6,
            1e-5,
        );
        let got_weights = gpu.context().unwrap().weights.read(ctx).unwrap();
        assert_close(
            &format!("step {step} weights"),
            &to_f64(&want_weights),
            &got_weights,
            1e-6,
            1e-5,
        );
        assert_ne!(got_weights, weights, "the context weights did not move");
        gpu.reset_context(ctx);
        let context = gpu.context().unwrap();
        assert!(context.read_phi(ctx).unwrap().iter().all(|&v| v == 0.0));
        assert!(context
            .theta_acc
            .read(ctx)
            .unwrap()
            .iter()
            .all(|&v| v == 0.0));
        assert!(context
            .weight_acc
            .read(ctx)
            .unwrap()
            .iter()
            .all(|&v| v == 0.0));
        for agent in gpu.read_params(ctx).unwrap().chunks(k) {
            assert_eq!(
                agent,
                &got_theta[..],
                "θ was not broadcast with the context at 0"
            );
        }
        theta = got_theta;
        weights = got_weights;
    }
}

fn tiny_meta(family: TaskFamily) -> MetaConfig {
    MetaConfig {
        method: MetaMethod::Cavia,
        meta_init: MetaInit::Multitask,
        meta_iterations: 3,
        meta_batch: 2,
        inner_updates: 2,
        eval_tasks: 3,
        adapt_steps: vec![0, 1, 2],
        adapt_eval_episodes: 2,
        ..MetaConfig::for_family(family)
    }
}

/// `meta-train` with CAVIA on both families: θ starts from the baseline,
/// the checkpoint holds the context weights, and the evaluation adapts the
/// meta init through its context alone (deterministically).
#[test]
fn cavia_meta_train_writes_context_weights_and_evaluates() {
    let Some(ctx) = ctx() else { return };
    let root = scratch_dir("cavia_train");
    for family in [TaskFamily::Cartpole, TaskFamily::Nav] {
        let meta = tiny_meta(family);
        let ppo = PpoConfig {
            max_episode_steps: 60,
            ..tiny_ppo(1)
        };
        let report = meta_train(
            &ppo,
            &meta,
            ctx,
            &MetaTrainOptions {
                runs_root: root.clone(),
                baseline: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(report.meta_iterations, 3);
        let spec = family_spec(family, &ppo.hidden).unwrap();
        let (theta, context) =
            load_init_with_context(&report.run_dir.join(META_CHECKPOINT_FILE), &spec).unwrap();
        let context = context.expect("a CAVIA meta-checkpoint holds context weights");
        let layout = ContextLayout::new(&spec, meta.context_dim).unwrap();
        assert_eq!(context.dim, meta.context_dim);
        assert_eq!(context.weights.len(), layout.weight_len());
        assert!(theta.iter().chain(&context.weights).all(|v| v.is_finite()));
        assert_ne!(
            context.weights,
            initial_context_weights(&layout, meta.context_init_std, ppo.seed),
            "the context weights did not train"
        );
        let inits = vec![
            Init {
                name: "meta".into(),
                params: theta.clone(),
                context: Some(context.clone()),
            },
            Init::plain("plain", theta.clone()),
        ];
        let eval = adaptation_eval(ctx, &ppo, &meta, &inits, false).unwrap();
        assert_eq!(eval.curves.len(), 2);
        for curve in &eval.curves {
            assert!(curve.mean.iter().all(|v| v.is_finite()), "{curve:?}");
            assert_eq!(curve.updates.len(), 2);
        }
        // Same θ, same k = 0 policy; the context-only updates are others.
        assert_eq!(eval.curves[0].per_task[0], eval.curves[1].per_task[0]);
        assert_ne!(eval.curves[0].updates, eval.curves[1].updates);
        let again = adaptation_eval(ctx, &ppo, &meta, &inits[..1], false).unwrap();
        assert_eq!(
            again.curves[0], eval.curves[0],
            "CAVIA adaptation is not deterministic"
        );
    }
}

#[test]
fn checkpoint_round_trips_context_weights() {
    let dir = scratch_dir("ckpt");
    let spec = ActorCriticSpec::new(4, 2, &[8]).unwrap();
    let layout = ContextLayout::new(&spec, 3).unwrap();
    let dims = |m: ppo_wgpu::nn::MlpSpec| -> Vec<(usize, usize)> {
        m.layers(0).iter().map(|l| (l.in_dim, l.out_dim)).collect()
    };
    let checkpoint = Checkpoint {
        actor_layers: dims(spec.actor()),
        critic_layers: dims(spec.critic()),
        agents: vec![ppo_wgpu::run::AgentState {
            params: random_vec(1, spec.param_count(), -1.0, 1.0),
            optimizer: None,
        }],
        metadata: Default::default(),
        context: Some(ContextWeights {
            dim: 3,
            weights: random_vec(2, layout.weight_len(), -1.0, 1.0),
        }),
    };
    let path = dir.join("meta.safetensors");
    save_checkpoint(&path, &checkpoint).unwrap();
    assert_eq!(load_checkpoint(&path).unwrap(), checkpoint);
    // The tensors PyTorch sees: [units, C] for each network.
    let bytes = std::fs::read(&path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(
        file.tensor("context.actor.0.weight").unwrap().shape(),
        [8, 3]
    );
    assert_eq!(
        file.tensor("context.critic.2.weight").unwrap().shape(),
        [8, 3]
    );
    // A NaN or infinity in a context tensor is refused on load, naming it.
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    for (name, value, element) in [
        ("context.actor.0.weight", f32::NAN, 0),
        ("context.critic.2.weight", f32::INFINITY, 5),
    ] {
        let offset = header[name]["data_offsets"][0].as_u64().unwrap() as usize;
        let at = 8 + header_len + offset + 4 * element;
        let mut poisoned = bytes.clone();
        poisoned[at..at + 4].copy_from_slice(&value.to_le_bytes());
        let bad = dir.join("poisoned.safetensors");
        std::fs::write(&bad, poisoned).unwrap();
        let message = load_checkpoint(&bad).unwrap_err().to_string();
        assert!(
            message.contains(name)
                && message.contains(&format!("element {element}"))
                && message.contains("finite"),
            "{message}"
        );
    }
    // Weights of the wrong size are refused, and nothing is written.
    let bad = Checkpoint {
        context: Some(ContextWeights {
            dim: 3,
            weights: vec![0.0; 5],
        }),
        ..checkpoint.clone()
    };
    let other = dir.join("bad.safetensors");
    let err = save_checkpoint(&other, &bad).unwrap_err();
    assert!(err.to_string().contains("context"), "{err}");
    assert!(!other.exists(), "a refused checkpoint was written");
    // A file with only the actor's context columns is refused, naming the missing one.
    let mut tensors: Vec<(String, safetensors::tensor::TensorView)> = Vec::new();
    for (name, view) in file.tensors() {
        if name != "context.critic.2.weight" {
            tensors.push((name, view));
        }
    }
    let metadata = safetensors::SafeTensors::read_metadata(&bytes)
        .unwrap()
        .1
        .metadata()
        .clone();
    let partial = safetensors::serialize(tensors, metadata).unwrap();
    std::fs::write(&other, partial).unwrap();
    let err = load_checkpoint(&other).unwrap_err();
    assert!(err.to_string().contains("context.critic.2.weight"), "{err}");
}

#[test]
fn context_settings_are_checked_and_cavia_defaults_apply() {
    let cavia = MetaConfig::resolve(
        TaskFamily::Cartpole,
        &[("method".into(), toml::Value::String("cavia".into()))],
    )
    .unwrap();
    assert_eq!(cavia.method, MetaMethod::Cavia);
    assert_eq!(cavia.meta_init, MetaInit::Multitask);
    assert_eq!(cavia.meta_lr, ppo_wgpu::meta::config::CAVIA_META_LR);
    assert!(!cavia.anneal_meta_lr);
    assert_eq!(cavia.inner_updates, 2);
    // The baseline gets meta-training's env steps, fresh rollouts included.
    assert_eq!(cavia.baseline_ppo_iterations(), cavia.meta_iterations * 3);
    let reptile = MetaConfig::for_family(TaskFamily::Cartpole);
    assert_eq!(
        reptile.baseline_ppo_iterations(),
        reptile.meta_iterations * reptile.inner_updates
    );
    // An explicit meta_init wins.
    let scratch = MetaConfig::resolve(
        TaskFamily::Cartpole,
        &[
            ("method".into(), toml::Value::String("cavia".into())),
            ("meta_init".into(), toml::Value::String("scratch".into())),
        ],
    )
    .unwrap();
    assert_eq!(scratch.meta_init, MetaInit::Scratch);
    for (key, value) in [
        ("context_dim", toml::Value::Integer(0)),
        ("context_dim", toml::Value::Integer(65)),
        ("context_lr", toml::Value::Float(0.0)),
        ("context_lr", toml::Value::Float(f64::INFINITY)),
        ("context_bound", toml::Value::Float(-1.0)),
        ("context_lr_decay", toml::Value::Float(-0.5)),
        ("context_init_std", toml::Value::Float(0.0)),
        ("context_policy_weight", toml::Value::Float(-1.0)),
        ("context_policy_weight", toml::Value::Float(f64::NAN)),
    ] {
        let err =
            MetaConfig::resolve(TaskFamily::Cartpole, &[(key.into(), value.clone())]).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidConfig { field, .. } if field == key),
            "{key} = {value}: {err}"
        );
    }
    // The outer loss: the rollouts after each context step, and with
    // context_zero_loss the first one too, equally weighted.
    for (zero_loss, want) in [
        (false, [None, Some(1.0 / 8.0), Some(1.0 / 8.0)]),
        (true, [Some(1.0 / 12.0); 3]),
    ] {
        let m = MetaConfig {
            inner_updates: 2,
            context_zero_loss: zero_loss,
            ..MetaConfig::default()
        };
        assert_eq!([0, 1, 2].map(|j| m.context_collect_weight(j, 4)), want);
        assert_eq!(m.context_collect_weight(3, 4), None);
    }
    // Step sizes over an adaptation: context_lr / k^decay.
    let m = MetaConfig {
        context_lr: 2.0,
        context_lr_decay: 1.0,
        ..MetaConfig::default()
    };
    assert_eq!([1, 2, 4].map(|k| m.context_lr_at(k)), [2.0, 1.0, 0.5]);
}

fn scratch_dir(name: &str) -> std::path::PathBuf {
    common::scratch_dir("ctx", name)
}
