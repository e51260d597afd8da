//! PpoConfig: CleanRL defaults, derived sizes, presets, validation messages,
//! and assembling a config from preset + TOML file + `--set` overrides.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use ppo_wgpu::config::{EnvDevice, PpoConfig, Sizes, FIELD_NAMES, PRESET_NAMES};
use ppo_wgpu::Error;

/// A fresh folder under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "ppo_wgpu_config_test_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn sets(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The error's message, asserting it is an InvalidConfig for `field`.
fn config_error(result: ppo_wgpu::Result<PpoConfig>, field: &str) -> String {
    match result {
        Err(e @ Error::InvalidConfig { .. }) => {
            let message = e.to_string();
            let Error::InvalidConfig { field: got, .. } = &e else {
                unreachable!()
            };
            assert_eq!(got, field, "wrong field in: {message}");
            message
        }
        Err(other) => panic!("expected InvalidConfig for {field}, got {other}"),
        Ok(config) => panic!("expected an error for {field}, got {config:?}"),
    }
}

#[test]
fn defaults_are_cleanrl() {
    let c = PpoConfig::default();
    assert_eq!(c.env_id, "CartPole-v1");
    assert_eq!(c.exp_name, "ppo");
    assert_eq!(c.seed, 1);
    assert_eq!(c.num_envs, 4);
    assert_eq!(c.num_steps, 128);
    assert_eq!(c.total_timesteps, 500_000);
    assert_eq!(c.learning_rate, 2.5e-4);
    assert!(c.anneal_lr);
    assert_eq!(c.gamma, 0.99);
    assert_eq!(c.gae_lambda, 0.95);
    assert_eq!(c.num_minibatches, 4);
    assert_eq!(c.update_epochs, 4);
    assert!(c.norm_adv);
    assert_eq!(c.clip_coef, 0.2);
    assert!(c.clip_vloss);
    assert_eq!(c.ent_coef, 0.01);
    assert_eq!(c.vf_coef, 0.5);
    assert_eq!(c.max_grad_norm, 0.5);
    assert_eq!(c.target_kl, None);
    assert_eq!(c.num_agents, 1);
    assert_eq!(c.hidden, vec![64, 64]);
    assert_eq!(c.max_episode_steps, 500);
    assert_eq!(c.eval_episodes, 100);
    assert_eq!(c.checkpoint_every, 0);
    assert_eq!(c.env_device, EnvDevice::Cpu);
    assert_eq!(
        c.sizes(),
        Sizes {
            batch_size: 512,
            minibatch_size: 128,
            num_iterations: 976
        }
    );
    c.validate().unwrap();
}

#[test]
fn presets_validate_and_differ_as_documented() {
    for name in PRESET_NAMES {
        let config = PpoConfig::preset(name).unwrap();
        config
            .validate()
            .unwrap_or_else(|e| panic!("preset {name}: {e}"));
    }
    assert_eq!(PpoConfig::preset("cleanrl").unwrap(), PpoConfig::default());
    let default = PpoConfig::preset("default").unwrap();
    assert_eq!(
        PpoConfig {
            total_timesteps: 150_000,
            ..default
        },
        PpoConfig::preset("linear").unwrap()
    );

    let seed = PpoConfig::preset("seed").unwrap();
    assert!(seed.hidden.is_empty());
    assert_eq!(
        (seed.num_envs, seed.num_steps, seed.num_minibatches),
        (1, 500, 1)
    );
    assert_eq!(seed.learning_rate, 1e-3);
    assert!(!seed.anneal_lr && !seed.norm_adv && !seed.clip_vloss);
    assert_eq!((seed.update_epochs, seed.ent_coef), (5, 0.0));
    assert_eq!(seed.max_grad_norm, 1e9);
    assert_eq!(seed.sizes().num_iterations, 1000);

    let linear = PpoConfig::preset("linear").unwrap();
    assert!(linear.hidden.is_empty());
    assert_eq!(
        (
            linear.num_envs,
            linear.learning_rate,
            linear.gae_lambda,
            linear.ent_coef
        ),
        (8, 0.02, 1.0, 0.0)
    );

    let message = PpoConfig::preset("fast").unwrap_err().to_string();
    for name in PRESET_NAMES {
        assert!(message.contains(name), "{message}");
    }
}

#[test]
fn bad_values_are_refused_naming_the_field() {
    type Edit = fn(&mut PpoConfig);
    let cases: [(&str, Edit); 32] = [
        ("num_envs", |c| c.num_envs = 0),
        ("num_steps", |c| c.num_steps = 0),
        ("num_minibatches", |c| c.num_minibatches = 0),
        ("num_minibatches", |c| c.num_minibatches = 3),
        ("update_epochs", |c| c.update_epochs = 0),
        ("total_timesteps", |c| c.total_timesteps = 511),
        ("learning_rate", |c| c.learning_rate = 0.0),
        ("learning_rate", |c| c.learning_rate = -1e-3),
        ("learning_rate", |c| c.learning_rate = f64::NAN),
        ("learning_rate", |c| c.learning_rate = f64::INFINITY),
        ("adam_eps", |c| c.adam_eps = 0.0),
        ("adam_eps", |c| c.adam_eps = f64::NAN),
        ("gamma", |c| c.gamma = 1.01),
        ("gamma", |c| c.gamma = -0.1),
        ("gae_lambda", |c| c.gae_lambda = f64::NAN),
        ("clip_coef", |c| c.clip_coef = 0.0),
        ("ent_coef", |c| c.ent_coef = -0.01),
        ("ent_coef", |c| c.ent_coef = f64::NAN),
        ("vf_coef", |c| c.vf_coef = -1.0),
        ("vf_coef", |c| c.vf_coef = f64::INFINITY),
        ("max_grad_norm", |c| c.max_grad_norm = 0.0),
        ("target_kl", |c| c.target_kl = Some(0.0)),
        ("target_kl", |c| c.target_kl = Some(-0.5)),
        ("num_agents", |c| c.num_agents = 0),
        ("hidden[1]", |c| c.hidden = vec![64, 0]),
        ("max_episode_steps", |c| c.max_episode_steps = 0),
        ("eval_episodes", |c| c.eval_episodes = 0),
        ("num_agents × num_envs × num_steps", |c| {
            c.num_agents = 1 << 12;
            c.num_envs = 1 << 10;
            c.num_steps = 1 << 7;
        }),
        ("num_agents × num_envs × num_steps", |c| {
            c.num_agents = usize::MAX;
        }),
        ("hidden", |c| c.hidden = vec![1 << 20, 1 << 20]),
        ("exp_name", |c| c.exp_name = "../escape".into()),
        ("env_id", |c| c.env_id = String::new()),
    ];
    for (field, edit) in cases {
        let mut config = PpoConfig::default();
        edit(&mut config);
        config_error(config.validate().map(|()| config.clone()), field);
    }

    let mut config = PpoConfig {
        num_minibatches: 3,
        ..PpoConfig::default()
    };
    let message = config.validate().unwrap_err().to_string();
    assert!(
        message.contains("num_minibatches = 3: must divide batch_size 512"),
        "{message}"
    );
    config.num_minibatches = 4;
    config.total_timesteps = 100;
    let message = config.validate().unwrap_err().to_string();
    assert!(
        message.contains("100") && message.contains("512"),
        "{message}"
    );
    config.total_timesteps = 500_000;
    config.num_agents = 1 << 20;
    let message = config.validate().unwrap_err().to_string();
    assert!(message.contains("1048576 × 4 × 128"), "{message}");
    assert!(message.contains("268435456"), "{message}");
}

#[test]
fn sizes_never_panic_on_unvalidated_input() {
    let config = PpoConfig {
        num_envs: usize::MAX,
        num_steps: 2,
        num_minibatches: 0,
        ..PpoConfig::default()
    };
    assert_eq!(config.sizes().batch_size, usize::MAX);
    assert_eq!(config.sizes().minibatch_size, 0);
}

#[test]
fn resolve_layers_preset_file_and_sets() {
    let dir = TempDir::new();
    let file = dir.0.join("run.toml");
    std::fs::write(&file, "num_envs = 8\nlearning_rate = 1e-3\nhidden = [32]\n").unwrap();

    let config = PpoConfig::resolve(
        Some("seed"),
        Some(&file),
        &sets(&[
            "learning_rate=3e-4",
            "exp_name=mine",
            "target_kl=0.02",
            "seed = 7",
        ]),
    )
    .unwrap();
    let expected = PpoConfig {
        num_envs: 8,
        learning_rate: 3e-4,
        hidden: vec![32],
        exp_name: "mine".into(),
        target_kl: Some(0.02),
        seed: 7,
        ..PpoConfig::preset("seed").unwrap()
    };
    assert_eq!(config, expected);

    // No preset: "default".
    assert_eq!(
        PpoConfig::resolve(None, None, &[]).unwrap(),
        PpoConfig::preset("default").unwrap()
    );
}

#[test]
fn set_reads_lists_none_and_strings() {
    let resolve = |items: &[&str]| PpoConfig::resolve(None, None, &sets(items)).unwrap();
    assert_eq!(resolve(&["hidden="]).hidden, Vec::<usize>::new());
    assert_eq!(resolve(&["hidden=64,32"]).hidden, vec![64, 32]);
    assert_eq!(resolve(&["hidden= 16 , 8"]).hidden, vec![16, 8]);
    assert_eq!(resolve(&["hidden=[128, 128]"]).hidden, vec![128, 128]);
    assert_eq!(
        resolve(&["target_kl=0.015", "target_kl=none"]).target_kl,
        None
    );
    assert_eq!(resolve(&["exp_name=123"]).exp_name, "123");
    assert_eq!(resolve(&["exp_name=\"quoted\""]).exp_name, "quoted");
    assert_eq!(resolve(&["env_device=cpu"]).env_device, EnvDevice::Cpu);
    assert_eq!(resolve(&["env_device=gpu"]).env_device, EnvDevice::Gpu);
    assert_eq!(resolve(&["learning_rate=1"]).learning_rate, 1.0);
    assert!(!resolve(&["anneal_lr=false"]).anneal_lr);

    let message = config_error(
        PpoConfig::resolve(None, None, &sets(&["hidden=64,x"])),
        "hidden",
    );
    assert!(message.contains("comma-separated"), "{message}");
}

#[test]
fn unknown_keys_are_named_with_a_suggestion() {
    let message = config_error(
        PpoConfig::resolve(None, None, &sets(&["learning_rat=1e-3"])),
        "learning_rat",
    );
    assert!(
        message.contains("did you mean `learning_rate`"),
        "{message}"
    );

    let message = config_error(
        PpoConfig::resolve(None, None, &sets(&["completely_unrelated=1"])),
        "completely_unrelated",
    );
    assert!(!message.contains("did you mean"), "{message}");
    assert!(
        message.contains("num_minibatches"),
        "lists valid keys: {message}"
    );

    let dir = TempDir::new();
    let file = dir.0.join("typo.toml");
    std::fs::write(&file, "num_env = 8\n").unwrap();
    let message = config_error(PpoConfig::resolve(None, Some(&file), &[]), "num_env");
    assert!(message.contains("did you mean `num_envs`"), "{message}");
    assert!(message.contains("typo.toml"), "names the file: {message}");

    // Deserializing directly (not through resolve) refuses unknown keys too.
    let err = toml::from_str::<PpoConfig>("num_env = 8").unwrap_err();
    assert!(err.to_string().contains("num_env"), "{err}");
}

#[test]
fn wrong_types_name_the_field_and_type() {
    let message = config_error(
        PpoConfig::resolve(None, None, &sets(&["num_envs=many"])),
        "num_envs",
    );
    assert!(
        message.contains("usize") || message.contains("integer"),
        "{message}"
    );

    let message = config_error(
        PpoConfig::resolve(None, None, &sets(&["anneal_lr=yes"])),
        "anneal_lr",
    );
    assert!(message.contains("bool"), "{message}");

    let message = config_error(
        PpoConfig::resolve(None, None, &sets(&["env_device=tpu"])),
        "env_device",
    );
    assert!(
        message.contains("cpu") && message.contains("gpu"),
        "{message}"
    );

    let dir = TempDir::new();
    let file = dir.0.join("types.toml");
    std::fs::write(&file, "gamma = \"high\"\n").unwrap();
    let message = config_error(PpoConfig::resolve(None, Some(&file), &[]), "gamma");
    assert!(
        message.contains("f64") || message.contains("float"),
        "{message}"
    );
}

#[test]
fn malformed_inputs_are_errors() {
    config_error(
        PpoConfig::resolve(None, None, &sets(&["num_envs"])),
        "--set",
    );
    config_error(PpoConfig::resolve(None, None, &sets(&["=4"])), "--set");
    // Validation runs after overrides.
    config_error(
        PpoConfig::resolve(None, None, &sets(&["num_minibatches=5"])),
        "num_minibatches",
    );
    config_error(PpoConfig::resolve(Some("nope"), None, &[]), "preset");

    let dir = TempDir::new();
    let file = dir.0.join("broken.toml");
    std::fs::write(&file, "num_envs = = 4\n").unwrap();
    assert!(matches!(
        PpoConfig::resolve(None, Some(&file), &[]),
        Err(Error::Format { .. })
    ));
    assert!(matches!(
        PpoConfig::resolve(None, Some(&dir.0.join("missing.toml")), &[]),
        Err(Error::Io { .. })
    ));
}

#[test]
fn toml_round_trip() {
    let mut configs: Vec<PpoConfig> = PRESET_NAMES
        .iter()
        .map(|name| PpoConfig::preset(name).unwrap())
        .collect();
    configs.push(PpoConfig {
        target_kl: Some(0.015),
        num_agents: 8,
        learning_rate: 0.1 + 0.2,
        ..PpoConfig::default()
    });
    let dir = TempDir::new();
    for config in configs {
        let text = config.to_toml().unwrap();
        assert_eq!(
            toml::from_str::<PpoConfig>(&text).unwrap(),
            config,
            "{text}"
        );
        // And as a config file given to resolve on top of a different preset.
        let file = dir.0.join("config.toml");
        std::fs::write(&file, &text).unwrap();
        let resolved = PpoConfig::resolve(Some("seed"), Some(&file), &[]).unwrap();
        assert_eq!(resolved, config);
    }
}

#[test]
fn field_names_match_serde() {
    let config = PpoConfig {
        target_kl: Some(0.01),
        ..PpoConfig::default()
    };
    let table: toml::Table = toml::from_str(&config.to_toml().unwrap()).unwrap();
    let mut serialized: Vec<&str> = table.keys().map(String::as_str).collect();
    let mut listed = FIELD_NAMES.to_vec();
    serialized.sort_unstable();
    listed.sort_unstable();
    assert_eq!(serialized, listed);
}
