//! Run-folder outputs: atomic writes, checkpoint round trips and tensor
//! names, metrics CSV, summary, learning-curve SVG, folder naming.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use ppo_wgpu::run::{
    load_checkpoint, plot_learning_curve, read_metrics, read_summary, save_checkpoint,
    write_atomic, write_summary, AdamState, AgentState, Checkpoint, MetricsCsv, MetricsRow, RunDir,
    Summary, METRICS_COLUMNS, SOLVED_RETURN,
};
use ppo_wgpu::Error;
use safetensors::SafeTensors;

/// A fresh folder under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "ppo_wgpu_run_test_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn write_atomic_replaces_and_leaves_no_temp_file() {
    let dir = TempDir::new();
    let path = dir.path().join("out.txt");
    write_atomic(&path, b"first").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"first");
    write_atomic(&path, b"second, longer").unwrap();
    write_atomic(&path, b"3").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"3");
    assert_eq!(file_names(dir.path()), vec!["out.txt"]);

    // A folder that does not exist is an Io error naming the target, and
    // leaves nothing behind.
    let missing = dir.path().join("no_such_dir").join("x");
    match write_atomic(&missing, b"x") {
        Err(Error::Io { path, .. }) => assert_eq!(path, missing),
        other => panic!("expected Io error, got {other:?}"),
    }
    assert_eq!(file_names(dir.path()), vec!["out.txt"]);
}

#[test]
fn run_dir_uses_cleanrl_naming() {
    let dir = TempDir::new();
    let root = dir.path().join("runs");
    let run = RunDir::create(&root, "CartPole-v1", "ppo", 1, 1_700_000_000).unwrap();
    assert_eq!(run.path(), root.join("CartPole-v1__ppo__1__1700000000"));
    assert!(run.path().is_dir());
    assert_eq!(run.metrics_path(), run.path().join("metrics.csv"));
    assert_eq!(
        run.checkpoint_path(),
        run.path().join("checkpoint.safetensors")
    );
    assert_eq!(run.config_path(), run.path().join("config.toml"));
    assert_eq!(run.summary_path(), run.path().join("summary.json"));
    assert_eq!(run.plot_path(), run.path().join("learning_curve.svg"));

    // The same name again (two runs started in the same second) gets its
    // own folder and leaves the first one alone.
    std::fs::write(run.metrics_path(), "first").unwrap();
    for n in [2, 3] {
        let again = RunDir::create(&root, "CartPole-v1", "ppo", 1, 1_700_000_000).unwrap();
        assert_eq!(
            again.path(),
            root.join(format!("CartPole-v1__ppo__1__1700000000__{n}"))
        );
        assert!(again.path().is_dir() && !again.metrics_path().exists());
    }
    assert_eq!(
        std::fs::read_to_string(run.metrics_path()).unwrap(),
        "first"
    );
    // A file where the folder would go is not taken for a run.
    std::fs::write(root.join("CartPole-v1__ppo__1__5"), "").unwrap();
    assert!(matches!(
        RunDir::create(&root, "CartPole-v1", "ppo", 1, 5),
        Err(Error::Io { .. })
    ));
    // Names that would escape the folder are refused.
    assert!(matches!(
        RunDir::create(&root, "CartPole-v1", "../up", 1, 1),
        Err(Error::InvalidConfig { .. })
    ));

    assert_eq!(RunDir::open(run.path()).unwrap(), run);
    assert!(RunDir::open(&root.join("missing")).is_err());
    write_atomic(&root.join("file"), b"").unwrap();
    assert!(RunDir::open(&root.join("file")).is_err());
}

/// Parameters for the layers, distinct per agent and element.
fn checkpoint(num_agents: usize, with_optimizer: bool) -> Checkpoint {
    let actor_layers = vec![(4, 64), (64, 64), (64, 2)];
    let critic_layers = vec![(4, 64), (64, 64), (64, 1)];
    let count: usize = actor_layers
        .iter()
        .chain(&critic_layers)
        .map(|(i, o)| (i + 1) * o)
        .sum();
    let values = |agent: usize, salt: f32| -> Vec<f32> {
        (0..count)
            .map(|k| (k as f32 * 0.37 + agent as f32 * 11.0 + salt).sin())
            .collect()
    };
    let agents = (0..num_agents)
        .map(|p| AgentState {
            params: values(p, 0.0),
            optimizer: with_optimizer.then(|| AdamState {
                m: values(p, 1.0),
                v: values(p, 2.0).iter().map(|x| x * x).collect(),
                step: 1234 + p as u64,
            }),
        })
        .collect();
    let metadata = BTreeMap::from([
        ("config".to_string(), "num_envs = 4\n".to_string()),
        ("iteration".to_string(), "17".to_string()),
        ("global_step".to_string(), "8704".to_string()),
    ]);
    Checkpoint {
        actor_layers,
        critic_layers,
        agents,
        metadata,
        context: None,
    }
}

#[test]
fn checkpoint_round_trips() {
    let dir = TempDir::new();
    let path = dir.path().join("checkpoint.safetensors");
    for num_agents in [1, 3] {
        for with_optimizer in [false, true] {
            let saved = checkpoint(num_agents, with_optimizer);
            assert_eq!(saved.params_per_agent().unwrap(), 4610 + 4545);
            save_checkpoint(&path, &saved).unwrap();
            let loaded = load_checkpoint(&path).unwrap();
            assert_eq!(loaded, saved, "P={num_agents} optimizer={with_optimizer}");
        }
    }
    assert_eq!(file_names(dir.path()), vec!["checkpoint.safetensors"]);
}

#[test]
fn checkpoint_tensor_names_match_cleanrl_state_dict() {
    let dir = TempDir::new();
    let path = dir.path().join("one.safetensors");
    let saved = checkpoint(1, false);
    save_checkpoint(&path, &saved).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let mut names = file.names();
    names.sort_unstable();
    assert_eq!(
        names,
        vec![
            "actor.0.bias",
            "actor.0.weight",
            "actor.2.bias",
            "actor.2.weight",
            "actor.4.bias",
            "actor.4.weight",
            "critic.0.bias",
            "critic.0.weight",
            "critic.2.bias",
            "critic.2.weight",
            "critic.4.bias",
            "critic.4.weight",
        ]
    );
    let weight = file.tensor("actor.0.weight").unwrap();
    assert_eq!(weight.shape(), &[64, 4]);
    assert_eq!(file.tensor("actor.4.weight").unwrap().shape(), &[2, 64]);
    assert_eq!(file.tensor("critic.4.bias").unwrap().shape(), &[1]);
    // W[out][in] row-major: element [1][2] is params[1 * 4 + 2].
    let data = weight.data();
    let element = f32::from_le_bytes(data[24..28].try_into().unwrap());
    assert_eq!(element, saved.agents[0].params[6]);
    // The first bias follows its 64×4 weight.
    let bias = file.tensor("actor.0.bias").unwrap();
    let first_bias = f32::from_le_bytes(bias.data()[0..4].try_into().unwrap());
    assert_eq!(first_bias, saved.agents[0].params[256]);

    let path = dir.path().join("three.safetensors");
    save_checkpoint(&path, &checkpoint(3, true)).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let names = file.names();
    for name in [
        "agent0.actor.0.weight",
        "agent2.critic.4.bias",
        "agent1.optim.m.actor.2.weight",
        "agent1.optim.v.critic.0.bias",
        "agent2.optim.step",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    assert_eq!(names.len(), 3 * (12 * 3 + 1));
}

#[test]
fn corrupted_checkpoints_are_errors_not_panics() {
    let dir = TempDir::new();
    let path = dir.path().join("checkpoint.safetensors");
    save_checkpoint(&path, &checkpoint(2, true)).unwrap();
    let good = std::fs::read(&path).unwrap();

    let bad = dir.path().join("bad.safetensors");
    let mut variants: Vec<Vec<u8>> = vec![
        Vec::new(),
        good[..4].to_vec(),
        good[..good.len() / 2].to_vec(),
        good[..good.len() - 1].to_vec(),
        b"not a checkpoint at all".to_vec(),
    ];
    // A header length pointing past the end.
    let mut huge_header = good.clone();
    huge_header[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    variants.push(huge_header);
    // Garbage inside the JSON header.
    let mut scrambled = good.clone();
    for byte in &mut scrambled[8..40] {
        *byte = b'#';
    }
    variants.push(scrambled);
    for (i, bytes) in variants.iter().enumerate() {
        std::fs::write(&bad, bytes).unwrap();
        match load_checkpoint(&bad) {
            Err(Error::Format { .. }) => {}
            other => panic!("variant {i}: expected a Format error, got {other:?}"),
        }
    }
    assert!(matches!(
        load_checkpoint(&dir.path().join("missing.safetensors")),
        Err(Error::Io { .. })
    ));
}

/// Rewrites a checkpoint's tensors and metadata through the safetensors API.
fn rewrite(
    from: &Path,
    to: &Path,
    edit: impl Fn(&str, Vec<usize>) -> Option<(String, Vec<usize>)>,
    edit_meta: impl Fn(&mut std::collections::HashMap<String, String>),
) {
    let bytes = std::fs::read(from).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let mut meta = header.metadata().clone().unwrap();
    edit_meta(&mut meta);
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let mut owned: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, view) in file.tensors() {
        if let Some((new_name, shape)) = edit(&name, view.shape().to_vec()) {
            let elements: usize = shape.iter().product();
            let mut data = view.data().to_vec();
            data.resize(elements * view.dtype().bitsize() / 8, 0);
            owned.push((new_name, view.dtype(), shape, data));
        }
    }
    let views: Vec<_> = owned
        .iter()
        .map(|(name, dtype, shape, data)| {
            (
                name.clone(),
                safetensors::tensor::TensorView::new(*dtype, shape.clone(), data).unwrap(),
            )
        })
        .collect();
    std::fs::write(to, safetensors::serialize(views, Some(meta)).unwrap()).unwrap();
}

/// A NaN or infinity in a stored tensor is refused on load, naming the
/// tensor (a NaN actor once evaluated to a garbage mean return with exit 0).
#[test]
fn non_finite_checkpoints_are_refused_naming_the_tensor() {
    let dir = TempDir::new();
    let good = dir.path().join("good.safetensors");
    save_checkpoint(&good, &checkpoint(1, true)).unwrap();
    for (name, value) in [
        ("actor.0.weight", f32::NAN),
        ("critic.4.bias", f32::INFINITY),
        ("optim.v.actor.2.weight", f32::NEG_INFINITY),
    ] {
        let mut bytes = std::fs::read(&good).unwrap();
        let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
        let offset = header[name]["data_offsets"][0].as_u64().unwrap() as usize;
        let at = 8 + header_len + offset;
        bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
        let bad = dir.path().join("bad.safetensors");
        std::fs::write(&bad, bytes).unwrap();
        let message = load_checkpoint(&bad).unwrap_err().to_string();
        assert!(
            message.contains(name) && message.contains("element 0") && message.contains("finite"),
            "{message}"
        );
    }
}

#[test]
fn checkpoint_shape_and_name_mismatches_are_named() {
    let dir = TempDir::new();
    let good = dir.path().join("good.safetensors");
    let bad = dir.path().join("bad.safetensors");
    save_checkpoint(&good, &checkpoint(1, false)).unwrap();

    let keep_meta = |_: &mut std::collections::HashMap<String, String>| {};
    rewrite(
        &good,
        &bad,
        |name, shape| {
            if name == "actor.2.weight" {
                Some((name.into(), vec![64, 63]))
            } else {
                Some((name.into(), shape))
            }
        },
        keep_meta,
    );
    let message = load_checkpoint(&bad).unwrap_err().to_string();
    assert!(
        message.contains("actor.2.weight")
            && message.contains("[64, 63]")
            && message.contains("[64, 64]"),
        "{message}"
    );

    rewrite(
        &good,
        &bad,
        |name, shape| (name != "critic.4.bias").then(|| (name.into(), shape)),
        keep_meta,
    );
    let message = load_checkpoint(&bad).unwrap_err().to_string();
    assert!(
        message.contains("critic.4.bias") && message.contains("missing"),
        "{message}"
    );

    rewrite(
        &good,
        &bad,
        |name, shape| Some((name.replace("actor.0.bias", "actor.0.extra"), shape)),
        keep_meta,
    );
    let message = load_checkpoint(&bad).unwrap_err().to_string();
    assert!(message.contains("actor.0.bias"), "{message}");

    // Layer sizes declared in metadata that do not chain.
    rewrite(
        &good,
        &bad,
        |name, shape| Some((name.into(), shape)),
        |meta| {
            meta.insert("ppo_wgpu.actor_layers".into(), "[[4,64],[32,2]]".into());
        },
    );
    let message = load_checkpoint(&bad).unwrap_err().to_string();
    assert!(
        message.contains("outputs 64") && message.contains("takes 32"),
        "{message}"
    );

    // Absurd sizes are refused before allocating.
    rewrite(
        &good,
        &bad,
        |name, shape| Some((name.into(), shape)),
        |meta| {
            meta.insert("ppo_wgpu.num_agents".into(), "100000000000".into());
        },
    );
    assert!(matches!(load_checkpoint(&bad), Err(Error::Format { .. })));

    // A plain safetensors file without our metadata.
    rewrite(
        &good,
        &bad,
        |name, shape| Some((name.into(), shape)),
        |meta| meta.clear(),
    );
    let message = load_checkpoint(&bad).unwrap_err().to_string();
    assert!(message.contains("not a ppo-wgpu checkpoint"), "{message}");
}

#[test]
fn checkpoint_save_refuses_inconsistent_input() {
    let dir = TempDir::new();
    let path = dir.path().join("c.safetensors");

    let mut short = checkpoint(2, true);
    short.agents[1].params.pop();
    assert!(matches!(
        save_checkpoint(&path, &short),
        Err(Error::ShapeMismatch { .. })
    ));

    let mut bad_moment = checkpoint(1, true);
    bad_moment.agents[0].optimizer.as_mut().unwrap().v.push(0.0);
    assert!(save_checkpoint(&path, &bad_moment).is_err());

    let mut unchained = checkpoint(1, false);
    unchained.critic_layers[1] = (32, 64);
    assert!(matches!(
        save_checkpoint(&path, &unchained),
        Err(Error::InvalidConfig { .. })
    ));

    let mut reserved = checkpoint(1, false);
    reserved
        .metadata
        .insert("ppo_wgpu.num_agents".into(), "5".into());
    assert!(save_checkpoint(&path, &reserved).is_err());

    let mut empty = checkpoint(1, false);
    empty.agents.clear();
    assert!(save_checkpoint(&path, &empty).is_err());
    assert!(!path.exists(), "nothing written on error");
}

fn metrics_rows() -> Vec<MetricsRow> {
    let mut rows = Vec::new();
    for iteration in 1..=3usize {
        for agent in 0..2usize {
            let finished = iteration > 1 || agent == 1;
            rows.push(MetricsRow {
                iteration,
                global_step: iteration as u64 * 512,
                agent,
                episodic_return: finished.then_some(20.5 * iteration as f64 + agent as f64),
                episodic_length: finished.then_some(21.0),
                sps: Some(1234.5),
                learning_rate: Some(2.5e-4 * (1.0 - iteration as f64 / 4.0)),
                value_loss: Some(0.1 + 0.2),
                policy_loss: Some(-0.012_345_678_901_234),
                entropy: Some(0.69),
                old_approx_kl: Some(1e-9),
                approx_kl: Some(3.5e-20),
                clipfrac: Some(0.0),
                explained_variance: if agent == 0 { None } else { Some(-1.5e17) },
                wall_s: 0.25 * iteration as f64,
            });
        }
    }
    rows
}

#[test]
fn metrics_csv_round_trips_with_empty_cells() {
    let dir = TempDir::new();
    let path = dir.path().join("metrics.csv");
    let rows = metrics_rows();
    let mut csv = MetricsCsv::create(&path, &METRICS_COLUMNS).unwrap();
    for row in &rows[..3] {
        csv.append(&row.to_cells()).unwrap();
    }
    // Readable after every row.
    assert_eq!(read_metrics(&path).unwrap(), rows[..3]);
    drop(csv);

    // Resume after a crash cut the last row short.
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("3,1536,0,61.5");
    std::fs::write(&path, &text).unwrap();
    assert_eq!(
        read_metrics(&path).unwrap(),
        rows[..3],
        "partial row skipped"
    );
    let mut csv = MetricsCsv::open_append(&path, &METRICS_COLUMNS).unwrap();
    for row in &rows[3..] {
        csv.append(&row.to_cells()).unwrap();
    }
    assert_eq!(read_metrics(&path).unwrap(), rows);

    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next().unwrap(), METRICS_COLUMNS.join(","));
    assert_eq!(
        lines.next().unwrap(),
        "1,512,0,,,1234.5,0.0001875,0.30000000000000004,-0.012345678901234,0.69,1e-9,3.5e-20,0,,0.25"
    );
    assert!(text.ends_with('\n'));
    assert_eq!(text.lines().count(), 1 + rows.len());
}

#[test]
fn metrics_csv_refuses_bad_input() {
    let dir = TempDir::new();
    let path = dir.path().join("metrics.csv");
    let mut csv = MetricsCsv::create(&path, &METRICS_COLUMNS).unwrap();
    assert!(matches!(
        csv.append(&["1".to_string()]),
        Err(Error::ShapeMismatch { .. })
    ));
    let mut cells = metrics_rows()[0].to_cells();
    cells[1] = "1,2".into();
    assert!(csv.append(&cells).is_err());
    drop(csv);
    assert!(MetricsCsv::open_append(&path, &["iteration", "other"]).is_err());

    std::fs::write(&path, format!("{}\n1,2,x\n", METRICS_COLUMNS.join(","))).unwrap();
    let message = read_metrics(&path).unwrap_err().to_string();
    assert!(message.contains("line 2"), "{message}");
    let mut cells = metrics_rows()[0].to_cells();
    cells[0] = "first".into();
    std::fs::write(
        &path,
        format!("{}\n{}\n", METRICS_COLUMNS.join(","), cells.join(",")),
    )
    .unwrap();
    let message = read_metrics(&path).unwrap_err().to_string();
    assert!(
        message.contains("iteration") && message.contains("first"),
        "{message}"
    );
    std::fs::write(&path, "iteration,global_step\n1,2\n").unwrap();
    let message = read_metrics(&path).unwrap_err().to_string();
    assert!(message.contains("missing column \"agent\""), "{message}");
}

#[test]
fn learning_curve_is_an_svg_with_labels() {
    let dir = TempDir::new();
    let path = dir.path().join("learning_curve.svg");
    plot_learning_curve(&metrics_rows(), SOLVED_RETURN, &path).unwrap();
    let svg = std::fs::read_to_string(&path).unwrap();
    assert!(svg.contains("<svg"), "{svg}");
    for text in [
        "global step",
        "episodic return",
        "Episodic return per agent",
        "agent 0",
        "agent 1",
        "solved (475)",
    ] {
        assert!(svg.contains(text), "missing {text:?}");
    }
    assert!(svg.contains("<polyline"), "has line series");

    // No episode finished yet, or no rows at all: still a valid plot.
    let mut unfinished = metrics_rows();
    unfinished.iter_mut().for_each(|r| r.episodic_return = None);
    plot_learning_curve(&unfinished, SOLVED_RETURN, &path).unwrap();
    plot_learning_curve(&[], SOLVED_RETURN, &path).unwrap();
    assert!(std::fs::read_to_string(&path).unwrap().contains("<svg"));
    // An env whose returns are negative (Acrobot-v1) draws its own line.
    let mut negative = metrics_rows();
    negative
        .iter_mut()
        .for_each(|r| r.episodic_return = r.episodic_return.map(|v| -v));
    plot_learning_curve(&negative, -100.0, &path).unwrap();
    assert!(std::fs::read_to_string(&path)
        .unwrap()
        .contains("solved (-100)"));
    assert_eq!(file_names(dir.path()), vec!["learning_curve.svg"]);
}

#[test]
fn summary_round_trips_and_tolerates_missing_fields() {
    let dir = TempDir::new();
    let path = dir.path().join("summary.json");
    let summary = Summary {
        adapter: "llvmpipe (LLVM 15.0.6, 256 bits) (Gl)".into(),
        env_id: "CartPole-v1".into(),
        solved_return: 475.0,
        wall_s: 12.5,
        global_steps: 1_000_000,
        sps: 80_000.0,
        steps_to_475: vec![Some(150_000), None],
        seconds_to_475: vec![Some(1.75), None],
        evaluations: vec![
            (10_000, 0.5, vec![35.0, 20.5]),
            (150_000, 1.75, vec![480.0, 122.0]),
        ],
        final_eval_mean: vec![500.0, 123.4],
        final_eval_std: vec![0.0, 55.5],
        rollout: "fused lanes E=2".into(),
        rollout_sps: 150_000.0,
        update_ms: 29.5,
        update: "fused, rows".into(),
        update_dispatches: 54,
        submissions_per_iteration: 2.0,
    };
    write_summary(&path, &summary).unwrap();
    assert_eq!(read_summary(&path).unwrap(), summary);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(json["steps_to_475"], serde_json::json!([150000, null]));

    std::fs::write(&path, r#"{"adapter": "x", "wall_s": 1.0}"#).unwrap();
    let partial = read_summary(&path).unwrap();
    assert_eq!(partial.adapter, "x");
    assert!(partial.final_eval_mean.is_empty());
    std::fs::write(&path, "{").unwrap();
    assert!(matches!(read_summary(&path), Err(Error::Format { .. })));
}

/// A scratch folder goes when dropped; a later one removes the folders of
/// dead owners (their lock free), and keeps live ones and folders without
/// a lock file.
#[test]
fn scratch_folders_are_removed_and_dead_ones_cleaned() {
    use ppo_wgpu::run::{ScratchDir, LOCK_FILE};
    let parent = std::env::temp_dir().join(format!("ppo_wgpu_scratch_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&parent);
    std::fs::create_dir_all(&parent).unwrap();
    let scratch = ScratchDir::new(&parent, "bench").unwrap();
    let path = scratch.path().to_path_buf();
    assert!(path.is_dir());
    std::fs::write(path.join("file"), b"x").unwrap();
    drop(scratch);
    assert!(!path.exists(), "dropped scratch folder still there");

    let dead = parent.join("bench-4000001");
    let live = parent.join("bench-4000002");
    let foreign = parent.join("bench-notes");
    for dir in [&dead, &live, &foreign] {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("data"), b"x").unwrap();
    }
    std::fs::write(dead.join(LOCK_FILE), b"").unwrap();
    let held = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(live.join(LOCK_FILE))
        .unwrap();
    held.try_lock().unwrap();
    let scratch = ScratchDir::new(&parent, "bench").unwrap();
    assert!(!dead.exists(), "a dead owner's folder is left");
    assert!(live.exists() && foreign.exists());
    drop(scratch);
    drop(held);
    let _ = std::fs::remove_dir_all(&parent);
}
