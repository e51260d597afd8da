//! Meta-learning: the outer-step kernel against its CPU reference (random
//! inputs, partial workgroups, NaN-poisoned outputs), the outer step inside
//! a tiny real meta-training, the navigation env, task sampling, config
//! errors, and the meta-train / meta-eval outputs.

mod common;

use common::{assert_close, ctx, only_run_dir, random_vec, to_f64};
use ppo_wgpu::config::PpoConfig;
use ppo_wgpu::env::{Nav, NavConfig, StepOut, VecEnv, NAV_OBS_DIM};
use ppo_wgpu::gpu::GpuBuffer;
use ppo_wgpu::meta::config::{split_sets, GoalShape};
use ppo_wgpu::meta::eval::{adaptation_eval, mean_ci95, plot_adaptation, t_quantile_975, Init};
use ppo_wgpu::meta::inner::{ppo_iteration, InnerEnv};
use ppo_wgpu::meta::tasks::{family_spec, make_env, repeat_tasks};
use ppo_wgpu::meta::train::{
    load_init, meta_train, MetaTrainOptions, META_CHECKPOINT_FILE, META_METRICS_FILE,
    MULTITASK_CHECKPOINT_FILE,
};
use ppo_wgpu::meta::{
    outer_step_cpu, sample_tasks, MetaAdamState, MetaConfig, MetaInit, MetaMethod, OuterStep,
    TargetKind, Task, TaskFamily,
};
use ppo_wgpu::ppo::trainer::{initial_params, update_settings};
use ppo_wgpu::ppo::PpoGpu;
use ppo_wgpu::Error;

const METHODS: [MetaMethod; 2] = [MetaMethod::Reptile, MetaMethod::Fomaml];

#[test]
fn outer_step_matches_cpu_reference() {
    let Some(ctx) = ctx() else { return };
    let mut case = 0u64;
    for method in METHODS {
        for k in [1usize, 63, 64, 65, 1000] {
            for m in [1usize, 3, 8] {
                case += 1;
                let theta = random_vec(case, k, -1.0, 1.0);
                let params = random_vec(case + 100, m * k, -2.0, 2.0);
                let grads = random_vec(case + 200, m * k, -5.0, 5.0);
                let meta_lr = 0.3f32;
                // Fomaml never reads params: they start poisoned, so every
                // element the broadcast misses stays NaN and fails.
                let start = match method {
                    MetaMethod::Reptile => params.clone(),
                    _ => vec![f32::NAN; m * k],
                };
                let params_gpu = GpuBuffer::from_slice(ctx, "params", &start).unwrap();
                let grads_gpu = GpuBuffer::from_slice(ctx, "grads", &grads).unwrap();
                let mut outer = OuterStep::new(
                    ctx,
                    method,
                    &theta,
                    m,
                    &params_gpu,
                    &grads_gpu,
                    None,
                    meta_lr as f64,
                )
                .unwrap();
                let what = format!("{} K={k} M={m}", method.name());
                // Two steps, so first-order MAML's Adam state carries over.
                let mut adam = MetaAdamState::default();
                let mut expected = theta.clone();
                for step in 0..2 {
                    outer.run(ctx);
                    let reference = match method {
                        MetaMethod::Reptile if step > 0 => expected.repeat(m),
                        _ => params.clone(),
                    };
                    expected = outer_step_cpu(
                        method, &expected, &reference, &grads, m, meta_lr, &mut adam,
                    );
                    let got_theta = outer.theta.read(ctx).unwrap();
                    let label = format!("{what} step {step} theta");
                    assert_close(&label, &to_f64(&expected), &got_theta, 1e-6, 1e-5);
                    let broadcast: Vec<f64> = to_f64(&expected)
                        .iter()
                        .copied()
                        .cycle()
                        .take(m * k)
                        .collect();
                    let got_params = params_gpu.read(ctx).unwrap();
                    let label = format!("{what} step {step} params");
                    assert_close(&label, &broadcast, &got_params, 1e-6, 1e-5);
                    // Continue from the GPU's θ so rounding does not accumulate.
                    expected = got_theta;
                }
                if method == MetaMethod::Fomaml {
                    let state = outer.read_adam(ctx).unwrap();
                    assert_eq!(state.step, 2);
                    assert_close(
                        &format!("{what} adam m"),
                        &to_f64(&adam.m),
                        &state.m,
                        1e-6,
                        1e-5,
                    );
                    assert_close(
                        &format!("{what} adam v"),
                        &to_f64(&adam.v),
                        &state.v,
                        1e-6,
                        1e-5,
                    );
                }
                // Grads are read-only.
                assert_eq!(grads_gpu.read(ctx).unwrap(), grads, "{what}: grads changed");
            }
        }
    }
}

#[test]
fn outer_step_cpu_reference_is_the_formula() {
    // Reptile with ε = 1 and one agent jumps to the adapted parameters;
    // first-order MAML's first Adam step moves each θ by about meta_lr
    // against the sign of the mean gradient.
    let theta = [1.0f32, -2.0];
    let params = [3.0f32, 0.0, 5.0, 2.0];
    let grads = [1.0f32, 2.0, 3.0, -4.0];
    let mut adam = MetaAdamState::default();
    assert_eq!(
        outer_step_cpu(
            MetaMethod::Reptile,
            &theta,
            &params[..2],
            &grads,
            1,
            1.0,
            &mut adam
        ),
        [3.0, 0.0]
    );
    assert_eq!(
        outer_step_cpu(
            MetaMethod::Reptile,
            &theta,
            &params,
            &grads,
            2,
            0.5,
            &mut adam
        ),
        [2.5, -0.5]
    );
    assert_eq!(
        adam,
        MetaAdamState::default(),
        "Reptile has no optimizer state"
    );
    let stepped = outer_step_cpu(
        MetaMethod::Fomaml,
        &theta,
        &params,
        &grads,
        2,
        0.5,
        &mut adam,
    );
    // Mean gradient (2, -1): θ moves by 0.5 against its sign.
    assert!(
        (stepped[0] - 0.5).abs() < 1e-5 && (stepped[1] + 1.5).abs() < 1e-5,
        "{stepped:?}"
    );
    assert_eq!(adam.step, 1);
}

fn tiny_ppo() -> PpoConfig {
    PpoConfig {
        num_envs: 2,
        num_steps: 16,
        num_minibatches: 2,
        update_epochs: 2,
        exp_name: "tiny".into(),
        ..PpoConfig::preset("meta").unwrap()
    }
}

/// A real inner loop on CartPole tasks, then the outer step: the kernel's θ
/// and broadcast match the CPU reference applied to the adapted parameters
/// read back from the GPU, for both methods.
#[test]
fn tiny_meta_training_outer_step_matches_reference() {
    let Some(ctx) = ctx() else { return };
    for method in METHODS {
        let meta = MetaConfig {
            meta_batch: 3,
            method,
            ..MetaConfig::for_family(TaskFamily::Cartpole)
        };
        let ppo = PpoConfig {
            num_agents: meta.meta_batch,
            hidden: vec![8],
            ..tiny_ppo()
        };
        let spec = family_spec(meta.family, &ppo.hidden).unwrap();
        let k = spec.param_count();
        let mut gpu = PpoGpu::new(ctx, &spec, &update_settings(&ppo)).unwrap();
        let mut theta = initial_params(&spec, 1, 7);
        let mut outer =
            OuterStep::new(ctx, method, &theta, 3, &gpu.params, gpu.grads(), None, 0.5).unwrap();
        gpu.set_params(ctx, &theta.repeat(3)).unwrap();
        let mut adam = MetaAdamState::default();
        for outer_iteration in 0..2u32 {
            let tasks = sample_tasks(&meta, 11 + outer_iteration as u64, 3);
            let env = make_env(&meta, &repeat_tasks(&tasks, 2), 3, 2, 500).unwrap();
            let mut inner = InnerEnv::new(env, 5).unwrap();
            gpu.reset_optimizer(ctx).unwrap();
            gpu.set_learning_rates(&[0.01; 3]).unwrap();
            for j in 0..2 {
                ppo_iteration(ctx, &mut gpu, &mut inner, 3, outer_iteration * 10 + j).unwrap();
            }
            let adapted = gpu.params.read(ctx).unwrap();
            assert_ne!(adapted[..k], theta[..], "the inner loop moved no parameter");
            if method == MetaMethod::Fomaml {
                let before = gpu.params.read(ctx).unwrap();
                ppo_wgpu::meta::inner::rollout(ctx, &mut gpu, &mut inner, 3, 99).unwrap();
                let perm = ppo_wgpu::ppo::permutations(3, 99, gpu.settings());
                gpu.gradient(ctx, Some(&inner.obs), &perm).unwrap();
                assert_eq!(
                    gpu.params.read(ctx).unwrap(),
                    before,
                    "gradient() moved parameters"
                );
            }
            let grads = gpu.grads().read(ctx).unwrap();
            assert!(grads.iter().all(|g| g.is_finite()));
            assert!(grads.iter().any(|&g| g != 0.0), "no gradient");
            outer.set_meta_lr(0.5);
            outer.run(ctx);
            let want = outer_step_cpu(method, &theta, &adapted, &grads, 3, 0.5, &mut adam);
            let got = outer.theta.read(ctx).unwrap();
            assert_close(
                &format!("{} θ step {outer_iteration}", method.name()),
                &to_f64(&want),
                &got,
                1e-6,
                1e-5,
            );
            let broadcast = gpu.params.read(ctx).unwrap();
            for agent in broadcast.chunks(k) {
                assert_eq!(agent, &got[..], "θ was not broadcast to every agent");
            }
            theta = got;
        }
    }
}

#[test]
fn meta_train_writes_inits_metrics_and_adaptation_report() {
    let Some(ctx) = ctx() else { return };
    let root = scratch_dir("outputs");
    for family in [TaskFamily::Cartpole, TaskFamily::Nav] {
        let meta = MetaConfig {
            meta_iterations: 3,
            meta_batch: 2,
            inner_updates: 1,
            eval_tasks: 3,
            adapt_steps: vec![0, 1, 2],
            adapt_eval_episodes: 2,
            ..MetaConfig::for_family(family)
        };
        let ppo = PpoConfig {
            max_episode_steps: 60,
            ..tiny_ppo()
        };
        let report = meta_train(
            &ppo,
            &meta,
            ctx,
            &MetaTrainOptions {
                runs_root: root.as_path().to_path_buf(),
                baseline: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(report.meta_iterations, 3);
        assert!(!report.interrupted);
        let dir = &report.run_dir;
        let spec = family_spec(family, &ppo.hidden).unwrap();
        let theta = load_init(&dir.join(META_CHECKPOINT_FILE), &spec).unwrap();
        let baseline = load_init(&dir.join(MULTITASK_CHECKPOINT_FILE), &spec).unwrap();
        let scratch = initial_params(&spec, 1, ppo.seed);
        assert!(theta.iter().all(|v| v.is_finite()));
        assert_ne!(theta, scratch, "meta-training left θ at the scratch init");
        assert_ne!(baseline, scratch, "the baseline did not train");
        let metrics = std::fs::read_to_string(dir.join(META_METRICS_FILE)).unwrap();
        assert_eq!(
            metrics.lines().filter(|l| l.starts_with("meta,")).count(),
            3
        );
        assert_eq!(
            metrics
                .lines()
                .filter(|l| l.starts_with("multitask,"))
                .count(),
            3
        );

        let inits = vec![Init::plain("meta", theta), Init::plain("scratch", scratch)];
        let report = adaptation_eval(ctx, &ppo, &meta, &inits, false).unwrap();
        assert_eq!(report.curves.len(), 2);
        let max_entropy = (spec.num_actions as f64).ln();
        for curve in &report.curves {
            assert_eq!(curve.mean.len(), 3);
            assert_eq!(curve.per_task.len(), 3);
            // One summary per adaptation update, with CleanRL's ranges.
            assert_eq!(curve.updates.len(), *meta.adapt_steps.last().unwrap());
            for u in &curve.updates {
                assert!(u.approx_kl >= -1e-6 && u.approx_kl < 1.0, "{u:?}");
                assert!((0.0..=1.0).contains(&u.clipfrac), "{u:?}");
                assert!(u.entropy > 0.0 && u.entropy <= max_entropy + 1e-6, "{u:?}");
                assert!(u.explained_variance.is_finite() && u.explained_variance <= 1.0);
            }
            for (i, tasks) in curve.per_task.iter().enumerate() {
                assert_eq!(tasks.len(), 3);
                assert!(tasks.iter().all(|r| r.is_finite()));
                assert!(curve.ci95_low[i] <= curve.mean[i] && curve.mean[i] <= curve.ci95_high[i]);
                match family {
                    TaskFamily::Cartpole => {
                        assert!(tasks.iter().all(|&r| (1.0..=60.0).contains(&r)))
                    }
                    TaskFamily::Nav => assert!(tasks.iter().all(|&r| r < 0.0)),
                }
            }
        }
        // The same init adapted twice on the same seeds gives the same curve.
        let again = adaptation_eval(ctx, &ppo, &meta, &inits[..1], false).unwrap();
        assert_eq!(again.curves[0], report.curves[0]);
        let svg = dir.join("adaptation.svg");
        plot_adaptation(&report, &svg).unwrap();
        assert!(std::fs::read_to_string(&svg).unwrap().contains("<svg"));
    }
}

#[test]
fn meta_batch_beyond_the_adapter_is_refused_before_any_work() {
    let Some(ctx) = ctx() else { return };
    let root = scratch_dir("too_big");
    let limit = ctx.limits.max_storage_buffer_binding_size as usize;
    // Enough agents that the rollout observations exceed one binding, while
    // the config's own row limit still passes.
    let ppo = PpoConfig {
        num_envs: 8,
        num_steps: 16,
        ..tiny_ppo()
    };
    let meta_batch = limit / (8 * 16 * 4 * 4) + 1;
    let meta = MetaConfig {
        meta_batch,
        ..MetaConfig::default()
    };
    let err = meta_train(
        &ppo,
        &meta,
        ctx,
        &MetaTrainOptions {
            runs_root: root.as_path().to_path_buf(),
            ..Default::default()
        },
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&limit.to_string()) || text.contains("limit"),
        "{text}"
    );
    assert_eq!(
        std::fs::read_dir(root.as_path()).unwrap().count(),
        0,
        "a run folder was created"
    );
}

/// `meta_init = "multitask"`: the baseline trains first and θ starts at its
/// parameters. With a meta learning rate of 1e-9 the outer steps cannot move
/// θ measurably, so the meta init written at the end is the baseline's.
/// Without the baseline it is refused before any work.
#[test]
fn meta_training_can_start_from_the_multitask_baseline() {
    let Some(ctx) = ctx() else { return };
    let root = scratch_dir("warm");
    let meta = MetaConfig {
        meta_init: MetaInit::Multitask,
        meta_iterations: 2,
        meta_batch: 2,
        inner_updates: 1,
        meta_lr: 1e-9,
        ..MetaConfig::for_family(TaskFamily::Cartpole)
    };
    let ppo = PpoConfig {
        max_episode_steps: 60,
        ..tiny_ppo()
    };
    let err = meta_train(
        &ppo,
        &meta,
        ctx,
        &MetaTrainOptions {
            runs_root: root.clone(),
            baseline: false,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidConfig { field, .. } if field == "meta_init"),
        "{err}"
    );
    assert!(err.to_string().contains("--no-baseline"), "{err}");
    assert!(
        std::fs::read_dir(&root).unwrap().next().is_none(),
        "a refused run wrote files"
    );

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
    assert_eq!(report.meta_iterations, 2);
    assert!(report.multitask_wall_s.is_some());
    let spec = family_spec(meta.family, &ppo.hidden).unwrap();
    let dir = &report.run_dir;
    let theta = load_init(&dir.join(META_CHECKPOINT_FILE), &spec).unwrap();
    let baseline = load_init(&dir.join(MULTITASK_CHECKPOINT_FILE), &spec).unwrap();
    let scratch = initial_params(&spec, 1, ppo.seed);
    assert_ne!(baseline, scratch, "the baseline did not train");
    assert_close("warm-started θ", &to_f64(&baseline), &theta, 1e-6, 1e-5);
    // The baseline's rows come first: it ran before meta-training.
    let metrics = std::fs::read_to_string(dir.join(META_METRICS_FILE)).unwrap();
    let phases: Vec<&str> = metrics
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(phases, ["multitask", "multitask", "meta", "meta"]);
    let _ = std::fs::remove_dir_all(&root);
}

/// The final adaptation evaluation is sized and checked before meta-train
/// starts (it once panicked with "capacity overflow" after meta-training):
/// too many episodes or held-out tasks are refused naming the key.
#[test]
fn adaptation_eval_sizes_are_refused_up_front() {
    use ppo_wgpu::meta::eval::eval_config;
    let ppo = PpoConfig::preset("meta").unwrap();
    let cases: [(&str, i64); 3] = [
        ("adapt_eval_episodes", i64::MAX),
        ("adapt_eval_episodes", 100_000),
        ("eval_tasks", 100_000_000),
    ];
    for (key, value) in cases {
        let meta = MetaConfig::resolve(
            TaskFamily::Cartpole,
            &[(key.to_string(), toml::Value::Integer(value))],
        )
        .unwrap();
        let err = eval_config(&ppo, &meta).unwrap_err();
        match &err {
            Error::InvalidConfig { field, .. } => assert_eq!(field, key, "{err}"),
            other => panic!("{key}: unexpected error {other}"),
        }
    }
    let meta = MetaConfig::resolve(TaskFamily::Cartpole, &[]).unwrap();
    assert_eq!(
        eval_config(&ppo, &meta).unwrap().num_agents,
        meta.eval_tasks
    );
}

#[test]
fn bad_meta_configs_are_refused_naming_the_field() {
    let cases: [(&str, toml::Value, &str); 10] = [
        ("length", toml::Value::Array(vec![]), "empty range"),
        (
            "force_mag",
            toml::Value::try_from(vec![15.0, 5.0]).unwrap(),
            "inverted range",
        ),
        (
            "goal_range",
            toml::Value::try_from(vec![0.5]).unwrap(),
            "expected [low, high]",
        ),
        (
            "adapt_steps",
            toml::Value::try_from(vec![0, 5, 2]).unwrap(),
            "increase",
        ),
        ("meta_batch", toml::Value::Integer(0), "at least 1"),
        ("action_preference", toml::Value::Float(-0.5), "[0, 1]"),
        ("flip_probability", toml::Value::Float(1.5), "[0, 1]"),
        (
            "target_speed",
            toml::Value::try_from(vec![-0.2, 0.2]).unwrap(),
            "must not be negative",
        ),
        ("target_kind", "speed".into(), "unknown variant"),
        (
            "x_threshold",
            toml::Value::Float(0.0),
            "finite and positive",
        ),
    ];
    for (key, value, reason) in cases {
        let err = MetaConfig::resolve(TaskFamily::Cartpole, &[(key.to_string(), value.clone())])
            .unwrap_err();
        match &err {
            Error::InvalidConfig {
                field, reason: r, ..
            } => {
                assert_eq!(field, key, "{err}");
                assert!(r.contains(reason), "{key}: {err}");
            }
            other => panic!("{key}: unexpected error {other}"),
        }
    }
    let err = MetaConfig::resolve(
        TaskFamily::Nav,
        &[("meta_bach".into(), toml::Value::Integer(2))],
    )
    .unwrap_err();
    assert!(err.to_string().contains("meta_bach"), "{err}");
    let err =
        MetaConfig::resolve(TaskFamily::Nav, &[("method".into(), "maml".into())]).unwrap_err();
    assert!(err.to_string().contains("method"), "{err}");
    // --set splits meta keys from PPO keys.
    let (ppo, meta) = split_sets(&[
        "learning_rate=0.1".into(),
        "meta_lr=0.5".into(),
        "method=fomaml".into(),
    ])
    .unwrap();
    assert_eq!(ppo, ["learning_rate=0.1"]);
    assert_eq!(meta[0], ("meta_lr".to_string(), toml::Value::Float(0.5)));
    assert_eq!(
        meta[1],
        ("method".to_string(), toml::Value::String("fomaml".into()))
    );
    let resolved = MetaConfig::resolve(TaskFamily::Nav, &meta).unwrap();
    assert_eq!(resolved.method, MetaMethod::Fomaml);
    assert_eq!(resolved.meta_lr, 0.5);
}

#[test]
fn tasks_are_seeded_and_inside_their_ranges() {
    let meta = MetaConfig {
        flip_probability: 0.5,
        ..MetaConfig::for_family(TaskFamily::Cartpole)
    };
    let tasks = sample_tasks(&meta, 3, 400);
    assert_eq!(tasks, sample_tasks(&meta, 3, 400));
    assert_ne!(tasks, sample_tasks(&meta, 4, 400));
    let mut flipped = 0;
    let mut left = 0;
    for task in &tasks {
        let Task::Cartpole { physics: p, target } = task else {
            panic!("wrong family")
        };
        let inside = |v: f64, r: &[f64]| r[0] <= v && v <= r[1];
        assert!(inside(p.length, &meta.length) && inside(p.force_mag, &meta.force_mag));
        assert!(inside(p.tau, &meta.tau) && inside(p.masscart, &meta.masscart));
        assert!(inside(p.masspole, &meta.masspole) && p.gravity == 9.8);
        flipped += (p.polarity == -1.0) as usize;
        assert!(p.polarity.abs() == 1.0);
        let target = target.expect("target_reward is on by default");
        assert_eq!(target.goal.abs(), 0.2, "{target:?}");
        assert_eq!(target.kind, TargetKind::Velocity);
        left += usize::from(target.goal < 0.0);
    }
    assert!(
        (150..=250).contains(&left),
        "{left} of 400 targets on the left"
    );
    // Binomial(400, 0.5): 200 ± 50 is over 5 standard deviations.
    assert!((150..=250).contains(&flipped), "{flipped} of 400 flipped");
    let never = MetaConfig {
        flip_probability: 0.0,
        ..meta
    };
    assert!(sample_tasks(&never, 3, 100)
        .iter()
        .all(|t| matches!(t, Task::Cartpole { physics: p, .. } if p.polarity == 1.0)));
    let position = MetaConfig {
        target_kind: TargetKind::Position,
        target_distance: vec![0.1, 0.3],
        ..MetaConfig::for_family(TaskFamily::Cartpole)
    };
    let mut right = 0;
    for task in sample_tasks(&position, 5, 200) {
        let Task::Cartpole {
            target: Some(target),
            ..
        } = task
        else {
            panic!("no target: {task:?}")
        };
        assert_eq!(target.kind, TargetKind::Position);
        assert!((0.1..=0.3).contains(&target.goal.abs()), "{target:?}");
        right += usize::from(target.goal > 0.0);
    }
    assert!((60..=140).contains(&right), "{right} of 200 to the right");
    let nav = MetaConfig {
        goal_shape: GoalShape::Square,
        ..MetaConfig::for_family(TaskFamily::Nav)
    };
    for task in sample_tasks(&nav, 9, 200) {
        let Task::Nav(goal) = task else {
            panic!("wrong family")
        };
        assert!(goal.iter().all(|g| (-0.5..=0.5).contains(g)), "{goal:?}");
    }
    let circle = MetaConfig {
        goal_radius: vec![0.3, 0.6],
        ..MetaConfig::for_family(TaskFamily::Nav)
    };
    let mut quadrants = [0usize; 4];
    for task in sample_tasks(&circle, 9, 200) {
        let Task::Nav([x, y]) = task else {
            panic!("wrong family")
        };
        let r = (x * x + y * y).sqrt();
        assert!((0.3 - 1e-12..=0.6 + 1e-12).contains(&r), "radius {r}");
        quadrants[usize::from(x > 0.0) * 2 + usize::from(y > 0.0)] += 1;
    }
    assert!(
        quadrants.iter().all(|&q| q > 20),
        "directions not uniform: {quadrants:?}"
    );
}

#[test]
fn nav_moves_rewards_and_truncates() {
    let goals = [[0.3, -0.2], [-1.0, 1.0]];
    let mut env = Nav::new(
        NavConfig {
            max_episode_steps: 3,
            ..NavConfig::new(1, 2)
        },
        &goals,
    )
    .unwrap();
    let mut out = StepOut::new(2, NAV_OBS_DIM);
    env.reset(0, &mut out.obs).unwrap();
    assert_eq!(out.obs, [0.0; 4]);
    // +x in env 0, −y in env 1.
    env.step(&[1, 4], &mut out).unwrap();
    assert!((out.obs[0] - 0.1).abs() < 1e-7 && out.obs[1] == 0.0);
    assert!(out.obs[2] == 0.0 && (out.obs[3] + 0.1).abs() < 1e-7);
    let d0 = ((0.1f64 - 0.3).powi(2) + 0.2f64.powi(2)).sqrt();
    let d1 = (1.0f64 + 1.1f64.powi(2)).sqrt();
    assert!((out.reward[0] as f64 + d0).abs() < 1e-6, "{:?}", out.reward);
    assert!((out.reward[1] as f64 + d1).abs() < 1e-6, "{:?}", out.reward);
    assert_eq!(
        (&out.terminated[..], &out.truncated[..]),
        (&[0u8, 0][..], &[0u8, 0][..])
    );
    env.step(&[0, 2], &mut out).unwrap();
    env.step(&[3, 2], &mut out).unwrap();
    // The third step truncates: final_obs keeps where the points ended, obs restarts.
    assert_eq!(out.truncated, [1, 1]);
    assert!((out.final_obs[0] - 0.1).abs() < 1e-7 && (out.final_obs[1] - 0.1).abs() < 1e-7);
    assert!((out.final_obs[2] + 0.2).abs() < 1e-7 && (out.final_obs[3] + 0.1).abs() < 1e-7);
    assert_eq!(out.obs, [0.0; 4]);
    let mut episodes = Vec::new();
    env.drain_episodes(&mut episodes);
    assert_eq!(episodes.len(), 2);
    assert!(episodes
        .iter()
        .all(|e| e.length == 3 && e.episode_return < 0.0));
    // Clamped at the square's edge.
    let mut far = Nav::new(NavConfig::new(1, 1), &[[0.0, 0.0]]).unwrap();
    let mut out = StepOut::new(1, NAV_OBS_DIM);
    far.reset(0, &mut out.obs).unwrap();
    for _ in 0..15 {
        far.step(&[1], &mut out).unwrap();
    }
    assert!((out.obs[0] - 1.0).abs() < 1e-6, "{:?}", out.obs);
    // Bad input leaves the env as it was.
    let before = far.position(0);
    assert!(far
        .step(&[5], &mut out)
        .unwrap_err()
        .to_string()
        .contains("action"));
    assert_eq!(far.position(0), before);
    assert!(Nav::new(NavConfig::new(1, 2), &[[0.0, 0.0]]).is_err());
    assert!(Nav::new(NavConfig::new(1, 1), &[[f64::NAN, 0.0]]).is_err());
}

#[test]
fn confidence_intervals() {
    assert_eq!(t_quantile_975(1), 12.706);
    assert!((t_quantile_975(60) - 2.000).abs() < 0.002);
    assert!((t_quantile_975(120) - 1.980).abs() < 0.002);
    let (mean, low, high) = mean_ci95(&[1.0, 2.0, 3.0, 4.0]);
    assert_eq!(mean, 2.5);
    // sd = 1.291, se = 0.6455, t(3) = 3.182.
    assert!((high - mean - 3.182 * 0.645_497).abs() < 1e-4, "{high}");
    assert!((mean - low - (high - mean)).abs() < 1e-12);
    let (_, low, high) = mean_ci95(&[7.0]);
    assert!(low.is_infinite() && high.is_infinite());
}

#[test]
fn meta_toml_from_before_velocity_targets_keeps_its_position_target() {
    // What meta-train wrote before target_kind and x_threshold existed.
    let old = "family = \"cartpole\"\nflip_probability = 0.5\ntarget_reward = true\n\
               target_distance = [0.5, 0.5]\ntarget_weight = 0.5\ntarget_scale = 0.5\n";
    let meta: MetaConfig = toml::from_str(old).unwrap();
    assert_eq!(meta.target_kind, TargetKind::Position);
    assert_eq!(meta.x_threshold, 2.4);
    // Nor meta_init: those runs started from scratch.
    assert_eq!(meta.meta_init, MetaInit::Scratch);
    // A new run writes every key, so it reads back as written.
    let new = MetaConfig::for_family(TaskFamily::Cartpole);
    assert_eq!(new.target_kind, TargetKind::Velocity);
    let back: MetaConfig = toml::from_str(&new.to_toml().unwrap()).unwrap();
    assert_eq!(back, new);
}

#[test]
fn x_threshold_sets_the_cartpole_track() {
    let tasks = sample_tasks(&MetaConfig::for_family(TaskFamily::Cartpole), 2, 4);
    let mut terminated = Vec::new();
    for x_threshold in [2.4, 1e-4] {
        let meta = MetaConfig {
            x_threshold,
            ..MetaConfig::for_family(TaskFamily::Cartpole)
        };
        let mut env = make_env(&meta, &tasks, 4, 1, 500).unwrap();
        let mut out = StepOut::new(4, env.obs_dim());
        env.reset(7, &mut out.obs).unwrap();
        env.step(&[0, 1, 0, 1], &mut out).unwrap();
        terminated.push(out.terminated.clone());
    }
    // Resets lie in ±0.05: on Gymnasium's track the first step ends
    // nothing, on a 0.1 mm one every episode.
    assert_eq!(terminated, [vec![0; 4], vec![1; 4]]);
    // A position target must lie on the track; a velocity target has none.
    let short = ("x_threshold".to_string(), toml::Value::Float(0.4));
    let position = ("target_kind".to_string(), toml::Value::from("position"));
    let err = MetaConfig::resolve(TaskFamily::Cartpole, &[short.clone(), position]).unwrap_err();
    assert!(err.to_string().contains("target_distance"), "{err}");
    assert!(MetaConfig::resolve(TaskFamily::Cartpole, &[short]).is_ok());
}

#[test]
fn cartpole_target_rewards_the_distance_to_the_target() {
    use ppo_wgpu::env::{CartPole, CartPoleConfig, OBS_DIM};
    use ppo_wgpu::meta::tasks::CartPoleTarget;
    use ppo_wgpu::meta::Target;
    let config = CartPoleConfig {
        max_episode_steps: 5,
        ..CartPoleConfig::new(1, 5)
    };
    let position = |goal: f64, weight: f64, scale: f64| Target {
        goal,
        weight,
        scale,
        ..Target::NONE
    };
    let targets = [
        position(1.0, 1.0, 2.0),
        position(-0.5, 0.5, 0.5),
        position(0.0, 0.5, 0.5),
        // Half the reward for pushing right (action 1), none from the position.
        Target {
            preferred_action: 1,
            preference: 0.5,
            ..Target::NONE
        },
        // Move right at 0.5 m/s; the reward falls to 0 at 0 and 1 m/s.
        Target {
            kind: TargetKind::Velocity,
            goal: 0.5,
            weight: 1.0,
            scale: 0.5,
            ..Target::NONE
        },
    ];
    let mut plain = CartPole::new(config.clone()).unwrap();
    let mut env = CartPoleTarget::new(CartPole::new(config).unwrap(), targets.to_vec()).unwrap();
    let mut out = StepOut::new(5, OBS_DIM);
    let mut plain_out = StepOut::new(5, OBS_DIM);
    env.reset(4, &mut out.obs).unwrap();
    plain.reset(4, &mut plain_out.obs).unwrap();
    let mut returns = [0.0f64; 5];
    for step in 0..5 {
        let actions = [1, 0, step % 2, step % 2, 1];
        env.step(&actions, &mut out).unwrap();
        plain.step(&actions, &mut plain_out).unwrap();
        // Same dynamics and flags as CartPole; only the reward differs.
        assert_eq!(out.obs, plain_out.obs);
        assert_eq!(out.terminated, plain_out.terminated);
        assert_eq!(out.truncated, plain_out.truncated);
        for (e, target) in targets.iter().enumerate() {
            let obs = if out.truncated[e] == 1 {
                &out.final_obs[e * OBS_DIM..][..OBS_DIM]
            } else {
                &out.obs[e * OBS_DIM..][..OBS_DIM]
            };
            let v = match target.kind {
                TargetKind::Position => obs[0],
                TargetKind::Velocity => obs[1],
            } as f64;
            let position = (1.0 - (v - target.goal).abs() / target.scale).max(0.0);
            let position = (1.0 - target.weight) + target.weight * position;
            let preferred = f64::from(u8::from(actions[e] == target.preferred_action));
            let want = (1.0 - target.preference) * position + target.preference * preferred;
            assert!(
                (out.reward[e] as f64 - want).abs() < 1e-6,
                "env {e}: {} vs {want}",
                out.reward[e]
            );
            assert!((target.reward(obs, actions[e]) - want).abs() < 1e-12);
            returns[e] += out.reward[e] as f64;
        }
    }
    assert_eq!(out.truncated, [1, 1, 1, 1, 1]);
    let mut episodes = Vec::new();
    env.drain_episodes(&mut episodes);
    assert_eq!(episodes.len(), 5);
    for episode in episodes {
        assert!((episode.episode_return - returns[episode.env]).abs() < 1e-5);
        assert_eq!(episode.length, 5);
    }
    // Near x = 0: about half of 1 per step 1 m from a scale-2 target, about
    // 0.5 per step 0.5 m from a scale-0.5 target (more: env 1 pushes toward
    // it), about 1 on the target.
    assert!(returns[0] > 2.4 && returns[0] < 2.6, "{returns:?}");
    assert!(returns[1] > 2.5 && returns[1] < 3.0, "{returns:?}");
    assert!(returns[2] > 4.7, "{returns:?}");
    // Pushes right at steps 1 and 3: 2 × 1 + 3 × 0.5.
    assert!((returns[3] - 3.5).abs() < 1e-6, "{returns:?}");
    // Five pushes right: about 0.2, 0.4, 0.6, 0.8, 1.0 m/s, paying about
    // 0.4, 0.8, 0.8, 0.4, 0 (more mass swings the pole, so a little less
    // speed per push).
    assert!(returns[4] > 2.0 && returns[4] < 3.0, "{returns:?}");
    for bad in [
        position(0.0, 1.5, 1.0),
        Target {
            preference: 2.0,
            ..Target::NONE
        },
        Target {
            preferred_action: 2,
            ..Target::NONE
        },
    ] {
        let env = CartPole::new(CartPoleConfig::new(1, 1)).unwrap();
        assert!(CartPoleTarget::new(env, vec![bad]).is_err(), "{bad:?}");
    }
    assert!(
        CartPoleTarget::new(CartPole::new(CartPoleConfig::new(1, 1)).unwrap(), vec![]).is_err()
    );
}

#[test]
fn diverging_meta_training_stops_with_the_last_good_theta_kept() {
    let Some(ctx) = ctx() else { return };
    let root = scratch_dir("nan");
    let ppo = PpoConfig {
        learning_rate: 1e30,
        ..tiny_ppo()
    };
    let meta = MetaConfig {
        meta_iterations: 4,
        meta_batch: 2,
        inner_updates: 2,
        ..MetaConfig::for_family(TaskFamily::Nav)
    };
    let options = MetaTrainOptions {
        runs_root: root.clone(),
        ..Default::default()
    };
    let err = meta_train(&ppo, &meta, ctx, &options).unwrap_err();
    assert!(matches!(err, Error::NonFinite { .. }), "{err}");
    assert!(err.to_string().contains("is kept in"), "{err}");
    let run = only_run_dir(&root);
    let spec = family_spec(meta.family, &ppo.hidden).unwrap();
    let theta = load_init(&run.join(META_CHECKPOINT_FILE), &spec).unwrap();
    assert_eq!(
        theta,
        initial_params(&spec, 1, ppo.seed),
        "the kept θ is the start"
    );
}

fn scratch_dir(name: &str) -> std::path::PathBuf {
    common::scratch_dir("meta", name)
}
