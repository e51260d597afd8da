//! A training run's folder and everything written into it: the resolved
//! config, per-iteration metrics, checkpoints, the summary and the learning
//! curve. Files are replaced atomically, so a crash or a kill never leaves a
//! half-written checkpoint or summary behind.

mod checkpoint;
mod metrics;
mod plot;
mod summary;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::check_name;
use crate::error::{Error, Result};

pub use checkpoint::{
    load_checkpoint, save_checkpoint, AdamState, AgentState, Checkpoint, ContextWeights,
};
pub use metrics::{read_metrics, MetricsCsv, MetricsRow, METRICS_COLUMNS};
pub use plot::{plot_learning_curve, SOLVED_RETURN};
pub use summary::{read_summary, write_summary, Summary};

/// The resolved configuration, as TOML.
pub const CONFIG_FILE: &str = "config.toml";
/// One row per agent per iteration.
pub const METRICS_FILE: &str = "metrics.csv";
/// Parameters (and optimizer state) of every agent.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
/// End-of-run numbers.
pub const SUMMARY_FILE: &str = "summary.json";
/// Episodic return against global step.
pub const PLOT_FILE: &str = "learning_curve.svg";
/// The lock a training process holds on its run folder (empty; the
/// operating system's file lock is what counts, and it ends with the
/// process, however it ends).
pub const LOCK_FILE: &str = ".lock";

/// One run's folder, `{root}/{env_id}__{exp_name}__{seed}__{unix_time}`
/// (CleanRL's naming, so existing TensorBoard / W&B habits carry over).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// Creates the folder (and `root` if needed). A run of the same name
    /// started in the same second gets its own folder, the name followed by
    /// `__2`, `__3`, ...: nothing is ever overwritten (each name is claimed
    /// by an atomic create), and concurrent runs of one script both run.
    pub fn create(
        root: &Path,
        env_id: &str,
        exp_name: &str,
        seed: u64,
        unix_time: u64,
    ) -> Result<RunDir> {
        check_name("env_id", env_id)?;
        check_name("exp_name", exp_name)?;
        check_runs_root(root)?;
        fs::create_dir_all(root).map_err(|source| io_error(root, source))?;
        let name = format!("{env_id}__{exp_name}__{seed}__{unix_time}");
        const ATTEMPTS: usize = 1000;
        for attempt in 1..=ATTEMPTS {
            let path = match attempt {
                1 => root.join(&name),
                n => root.join(format!("{name}__{n}")),
            };
            match fs::create_dir(&path) {
                Ok(()) => return Ok(RunDir { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && path.is_dir() => {}
                Err(source) => return Err(io_error(&path, source)),
            }
        }
        Err(Error::config(
            "runs_dir",
            root.display(),
            format!("{ATTEMPTS} runs named {name} already exist there"),
        ))
    }

    /// An existing run folder (to resume, evaluate or plot it).
    pub fn open(path: &Path) -> Result<RunDir> {
        let meta = fs::metadata(path).map_err(|source| io_error(path, source))?;
        if !meta.is_dir() {
            return Err(Error::Format {
                path: path.to_path_buf(),
                reason: "not a run folder (not a directory)".into(),
            });
        }
        Ok(RunDir {
            path: path.to_path_buf(),
        })
    }

    /// The folder itself.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `config.toml` in this folder.
    pub fn config_path(&self) -> PathBuf {
        self.path.join(CONFIG_FILE)
    }

    /// `metrics.csv` in this folder.
    pub fn metrics_path(&self) -> PathBuf {
        self.path.join(METRICS_FILE)
    }

    /// `checkpoint.safetensors` in this folder.
    pub fn checkpoint_path(&self) -> PathBuf {
        self.path.join(CHECKPOINT_FILE)
    }

    /// `summary.json` in this folder.
    pub fn summary_path(&self) -> PathBuf {
        self.path.join(SUMMARY_FILE)
    }

    /// `learning_curve.svg` in this folder.
    pub fn plot_path(&self) -> PathBuf {
        self.path.join(PLOT_FILE)
    }

    /// Takes the folder's lock for as long as the returned guard lives, so
    /// two processes never train into one run folder (two `--resume` of the
    /// same run, say); an error naming `field` (the flag that chose the
    /// folder) when another process holds it. The lock is the operating
    /// system's, so a process killed in any way releases it.
    pub fn lock(&self, field: &str) -> Result<RunLock> {
        let path = self.path.join(LOCK_FILE);
        let file = open_lock_file(&path)?;
        match file.try_lock() {
            Ok(()) => Ok(RunLock { _file: file }),
            Err(fs::TryLockError::WouldBlock) => Err(Error::config(
                field,
                self.path.display(),
                format!(
                    "another ppo-wgpu process is training this run (it holds {}); wait for it to end or stop it",
                    path.display()
                ),
            )),
            Err(fs::TryLockError::Error(source)) => Err(io_error(&path, source)),
        }
    }
}

/// An error naming `--runs-dir` where `root`, or a folder it would be
/// created in, is a file (checked before any work; creating it would say
/// only "File exists").
pub fn check_runs_root(root: &Path) -> Result<()> {
    match root.ancestors().find(|p| p.exists() && !p.is_dir()) {
        None => Ok(()),
        Some(file) => Err(Error::config(
            "--runs-dir",
            root.display(),
            format!(
                "{} is a file, not a folder; --runs-dir names the folder that holds the run folders",
                file.display()
            ),
        )),
    }
}

/// Opens (creating it, never truncating it) a file to take a lock on.
fn open_lock_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|source| io_error(path, source))
}

/// A run folder's lock ([`RunDir::lock`]), released when dropped.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

/// Whether `name` is one of [`write_atomic`]'s temporary files
/// (`.NAME.tmp.PID.N`).
fn is_atomic_temporary(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('.') else {
        return false;
    };
    let mut parts = rest.rsplitn(4, '.');
    let (Some(n), Some(pid), Some(tmp), Some(_)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    tmp == "tmp" && n.parse::<u64>().is_ok() && pid.parse::<u32>().is_ok()
}

impl RunDir {
    /// Removes the temporary files a write cut short left (a process killed
    /// while it wrote a checkpoint); the lock proves no other process is
    /// writing here. Returns how many it removed.
    pub fn remove_stale_temporaries(&self, _lock: &RunLock) -> Result<usize> {
        let entries = fs::read_dir(&self.path).map_err(|source| io_error(&self.path, source))?;
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name.to_str().is_some_and(is_atomic_temporary)
                && entry.file_type().is_ok_and(|t| t.is_file())
            {
                let path = entry.path();
                fs::remove_file(&path).map_err(|source| io_error(&path, source))?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// A folder for a command's scratch runs (`ppo-wgpu bench`), removed when
/// dropped, on every return and unwinding path. It holds a lock for its
/// life, so a later process can tell a folder whose owner died (killed,
/// say) from one in use: [`ScratchDir::new`] removes the dead ones.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
    lock: Option<File>,
}

impl ScratchDir {
    /// Creates `parent/PREFIX-PID`, first removing any `PREFIX-*` folder
    /// under `parent` whose lock no process holds.
    pub fn new(parent: &Path, prefix: &str) -> Result<ScratchDir> {
        if let Ok(entries) = fs::read_dir(parent) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let ours = name
                    .to_str()
                    .is_some_and(|n| n.starts_with(&format!("{prefix}-")));
                if ours && entry.file_type().is_ok_and(|t| t.is_dir()) {
                    let lock = entry.path().join(LOCK_FILE);
                    // Only a folder with a lock file nobody holds is
                    // known to be dead; anything else is left alone.
                    if let Ok(file) = OpenOptions::new().write(true).open(&lock) {
                        let dead = file.try_lock().is_ok();
                        drop(file);
                        if dead {
                            let _ = fs::remove_dir_all(entry.path());
                        }
                    }
                }
            }
        }
        // A folder of this PID left by a dead process went with the others
        // above; one still held (a process of the same PID in another PID
        // namespace sharing this folder) makes the lock below fail rather
        // than being deleted under it.
        let path = parent.join(format!("{prefix}-{}", std::process::id()));
        fs::create_dir_all(&path).map_err(|source| io_error(&path, source))?;
        let lock_path = path.join(LOCK_FILE);
        let lock = open_lock_file(&lock_path)?;
        lock.try_lock().map_err(|e| Error::Io {
            path: lock_path.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        Ok(ScratchDir {
            path,
            lock: Some(lock),
        })
    }

    /// The folder itself.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        self.lock.take();
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Replaces `path` with `bytes` so that readers (and a crash at any moment)
/// see either the old file or the new one, never a mix: the bytes go to a
/// temporary file in the same folder, are synced to disk, and the temporary
/// file is renamed over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    // Unique per process and call, so concurrent writers never share a temp file.
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let file_name = path.file_name().ok_or_else(|| Error::Format {
        path: path.to_path_buf(),
        reason: "not a file path".into(),
    })?;
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(file_name);
    temp_name.push(format!(
        ".tmp.{}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let temp = dir.join(temp_name);

    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp, path)
    })();
    if let Err(source) = written {
        // Best effort: the temp file may not exist if creating it failed.
        let _ = fs::remove_file(&temp);
        return Err(io_error(path, source));
    }
    sync_dir(dir);
    Ok(())
}

/// Makes the rename itself durable. Only Unix can open a folder to sync it;
/// the data is already safe either way, so a failure here is not an error.
fn sync_dir(dir: &Path) {
    if cfg!(unix) {
        if let Ok(handle) = File::open(dir) {
            let _ = handle.sync_all();
        }
    }
}

fn io_error(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}
