//! How many threads Mesa's CPU driver runs our dispatches on.
//!
//! llvmpipe (under GL, and as lavapipe under Vulkan) splits each dispatch's
//! workgroups over a pool of worker threads, one per core, unless
//! `LP_NUM_THREADS` says otherwise; `LP_NUM_THREADS=0` runs everything on
//! the thread that submits. The driver reads the variable once, when it
//! loads, so it must be set before the first [`GpuContext`](super::GpuContext)
//! opens. Other drivers ignore it.
//!
//! Where a run's dispatches hold one workgroup or a few (the linear
//! network's update is one workgroup per agent; a host rollout step of a
//! few envs is one), the pool adds a hand-over and a wake-up to every
//! dispatch and saves nothing. Measured with `ppo-wgpu bench` and `train`
//! on 2 cores, steady env steps per second, one thread against the pool
//! (`benches/NOTES.md`):
//!
//! | network | agents × envs | envs | Mesa 25 GL | Mesa 22.3 GL | lavapipe 25 |
//! |---|---|---|---|---|---|
//! | linear | 1 × 8 | device | 1.24–1.36× | 1.14× | 0.92× |
//! | linear | 1 × 8 | host | 4.1× | 3.6× | 1.00× |
//! | linear | 1 × 64, 1 × 512 | device | | 1.13×, 1.04× | |
//! | linear | 1 × 64, 1 × 512 | host | | 2.2×, 1.11× | |
//! | linear | 8 × 8 | host | 1.85× | 1.78× | 0.95× |
//! | linear | 8 × 8 | device | 0.83× | 0.76× | 0.64× |
//! | linear | 64 × 8 | either | 0.61–0.86× | 0.57–0.79× | |
//! | 64-64 | 1 × 4 | either | 0.74–0.93× | 1.02× (host) | |
//!
//! [`single_thread_wins`] is that table as a rule.

use serde::{Deserialize, Serialize};

/// The variable llvmpipe and lavapipe read for their thread count.
pub const LP_NUM_THREADS: &str = "LP_NUM_THREADS";

/// Config key `software_threads`: how many threads a CPU software adapter
/// (llvmpipe, lavapipe) runs dispatches on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SoftwareThreads {
    /// One thread where [`single_thread_wins`] says it measured faster, the
    /// driver's pool elsewhere.
    #[default]
    Auto,
    /// The driver's own choice (a thread per core).
    Driver,
    /// Everything on the submitting thread (`LP_NUM_THREADS=0`).
    Single,
}

/// What a run asks of the adapter, as far as the thread choice goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreadWorkload {
    /// Hidden layers of the actor and critic (0: the linear network).
    pub hidden_layers: usize,
    pub num_agents: usize,
    pub num_envs: usize,
    /// Envs stepped on the device (`env_device = "gpu"`).
    pub device_envs: bool,
}

/// Whether one thread ran this workload faster than llvmpipe's pool (the
/// table in this module's documentation): the linear network with one
/// agent, or with host envs and at most 64 envs in all. Networks with
/// hidden layers have work for every core.
pub fn single_thread_wins(work: &ThreadWorkload) -> bool {
    work.hidden_layers == 0
        && (work.num_agents == 1 || (!work.device_envs && work.num_agents * work.num_envs <= 64))
}

/// What [`apply`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ThreadsApplied {
    /// `LP_NUM_THREADS` was already set (to this); left alone.
    Environment(String),
    /// Set `LP_NUM_THREADS=0`; `auto`: because [`single_thread_wins`].
    Single { auto: bool },
    /// Left to the driver; `auto`: because one thread did not measure faster.
    Driver { auto: bool },
}

impl ThreadsApplied {
    /// One line for the start of a run on a CPU software adapter.
    pub fn describe(&self) -> String {
        match self {
            Self::Environment(value) => {
                format!("{LP_NUM_THREADS}={value} from the environment (software_threads is not applied)")
            }
            Self::Single { auto: true } => format!(
                "one thread ({LP_NUM_THREADS}=0): measured faster for this network and size; software_threads = \"driver\" uses a thread per core"
            ),
            Self::Single { auto: false } => {
                format!("one thread ({LP_NUM_THREADS}=0), as software_threads asks")
            }
            Self::Driver { auto: true } => "a thread per core (the driver's pool)".to_string(),
            Self::Driver { auto: false } => {
                "a thread per core (the driver's pool), as software_threads asks".to_string()
            }
        }
    }
}

/// Sets `LP_NUM_THREADS=0` in this process where `choice` asks for one
/// thread, unless the variable is already set (the user's setting wins).
///
/// Call it before the first [`GpuContext`](super::GpuContext) opens and
/// before the program starts other threads: the driver reads the variable
/// only when it loads, and the environment is process-wide.
pub fn apply(choice: SoftwareThreads, work: &ThreadWorkload) -> ThreadsApplied {
    apply_with(choice, single_thread_wins(work))
}

/// [`apply`] where `auto_single` is what `auto` decides (a bench running
/// several workloads on one driver decides for all of them at once).
pub fn apply_with(choice: SoftwareThreads, auto_single: bool) -> ThreadsApplied {
    match choice {
        SoftwareThreads::Auto => apply_decision(auto_single, true),
        SoftwareThreads::Driver => apply_decision(false, false),
        SoftwareThreads::Single => apply_decision(true, false),
    }
}

/// One thread where `single`; `auto` says whether the rule (rather than
/// the user) decided.
fn apply_decision(single: bool, auto: bool) -> ThreadsApplied {
    if let Some(value) = std::env::var_os(LP_NUM_THREADS) {
        return ThreadsApplied::Environment(value.to_string_lossy().into_owned());
    }
    if single {
        std::env::set_var(LP_NUM_THREADS, "0");
        ThreadsApplied::Single { auto }
    } else {
        ThreadsApplied::Driver { auto }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn work(
        hidden_layers: usize,
        num_agents: usize,
        num_envs: usize,
        device: bool,
    ) -> ThreadWorkload {
        ThreadWorkload {
            hidden_layers,
            num_agents,
            num_envs,
            device_envs: device,
        }
    }

    #[test]
    fn the_rule_follows_the_measured_table() {
        // Faster on one thread.
        assert!(single_thread_wins(&work(0, 1, 8, true)));
        assert!(single_thread_wins(&work(0, 1, 8, false)));
        assert!(single_thread_wins(&work(0, 1, 512, true)));
        assert!(single_thread_wins(&work(0, 1, 512, false)));
        assert!(single_thread_wins(&work(0, 8, 8, false)));
        // Faster on the pool.
        assert!(!single_thread_wins(&work(0, 8, 8, true)));
        assert!(!single_thread_wins(&work(0, 64, 8, true)));
        assert!(!single_thread_wins(&work(0, 64, 8, false)));
        assert!(!single_thread_wins(&work(0, 8, 16, false)));
        assert!(!single_thread_wins(&work(2, 1, 4, true)));
        assert!(!single_thread_wins(&work(2, 1, 4, false)));
        assert!(!single_thread_wins(&work(1, 1, 8, false)));
    }

    #[test]
    fn descriptions_name_the_variable() {
        for applied in [
            ThreadsApplied::Environment("3".into()),
            ThreadsApplied::Single { auto: true },
            ThreadsApplied::Single { auto: false },
        ] {
            assert!(applied.describe().contains(LP_NUM_THREADS), "{applied:?}");
        }
        assert!(ThreadsApplied::Driver { auto: false }
            .describe()
            .contains("software_threads"));
    }
}
