//! PPO: the actor-critic layout, the GPU engine (rollout inference and the
//! whole update), and the f64 CPU reference of CleanRL's update.

pub mod fused;
pub mod fused_update;
pub mod gpu;
pub mod net;
pub mod policy;
pub mod reference;
pub mod row_pass;
pub mod trainer;

pub use fused::{FusedLayout, RolloutPath};
pub use fused_update::UpdatePath;
pub use gpu::{AgentUpdateStats, PpoGpu, RolloutStats, UpdateSettings};
pub use net::ActorCriticSpec;

use rand::seq::SliceRandom;
use rand::SeedableRng;

/// The minibatch permutations of one update, [epochs][P][T·N]: agent `p`'s
/// epoch `e` is a shuffle of 0..T·N from a generator seeded by
/// (seed, iteration, agent, epoch), so runs are reproducible.
pub fn permutations(seed: u64, iteration: u64, settings: &UpdateSettings) -> Vec<u32> {
    let batch = settings.batch_per_agent();
    let mut out = Vec::with_capacity(settings.update_epochs * settings.num_agents * batch);
    for epoch in 0..settings.update_epochs {
        for agent in 0..settings.num_agents {
            let key = [seed, iteration, agent as u64, epoch as u64]
                .iter()
                .fold(0x9E37_79B9_7F4A_7C15u64, |h, &x| {
                    (h ^ x).wrapping_mul(0xBF58_476D_1CE4_E5B9).rotate_left(31)
                });
            let mut rng = rand::rngs::StdRng::seed_from_u64(key);
            let mut rows: Vec<u32> = (0..batch as u32).collect();
            rows.shuffle(&mut rng);
            out.extend(rows);
        }
    }
    out
}
