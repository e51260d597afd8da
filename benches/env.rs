//! Env steps per second of `CartPole` on one core, for several batch sizes.
//!
//! `cargo bench --bench env`. Each batch size runs several timed repetitions
//! of about half a second with seeded random actions (so episodes end and
//! auto-reset as in training) and reports the median.

use std::hint::black_box;
use std::time::{Duration, Instant};

use ppo_wgpu::env::{CartPole, CartPoleConfig, StepOut, VecEnv};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const BATCH_SIZES: [usize; 4] = [1, 64, 4096, 65536];
const REPETITIONS: usize = 7;
const REPETITION_TIME: Duration = Duration::from_millis(500);
/// Distinct action batches cycled through, so actions are not the same every step.
const ACTION_BATCHES: usize = 16;

fn main() -> ppo_wgpu::Result<()> {
    println!("CartPole env steps/s, one core, median of {REPETITIONS} runs");
    for num_envs in BATCH_SIZES {
        let mut cartpole = CartPole::new(CartPoleConfig::new(1, num_envs))?;
        let mut out = StepOut::new(num_envs, cartpole.obs_dim());
        cartpole.reset(0, &mut out.obs)?;
        let mut rng = StdRng::seed_from_u64(0);
        let actions: Vec<Vec<u32>> = (0..ACTION_BATCHES)
            .map(|_| (0..num_envs).map(|_| rng.random_range(0..2)).collect())
            .collect();
        let mut episodes = Vec::new();
        let mut rates: Vec<f64> = (0..REPETITIONS)
            .map(|_| {
                let start = Instant::now();
                let mut steps = 0usize;
                while start.elapsed() < REPETITION_TIME {
                    // Enough steps between clock reads that timing is negligible.
                    for batch in actions.iter().cycle().take(1 + (1 << 16) / num_envs) {
                        cartpole.step(black_box(batch), &mut out)?;
                        steps += num_envs;
                    }
                    cartpole.drain_episodes(&mut episodes);
                    episodes.clear();
                }
                Ok(steps as f64 / start.elapsed().as_secs_f64())
            })
            .collect::<ppo_wgpu::Result<_>>()?;
        black_box(&out);
        rates.sort_by(f64::total_cmp);
        let (min, median, max) = (rates[0], rates[REPETITIONS / 2], rates[REPETITIONS - 1]);
        println!(
            "N = {num_envs:>6}: {:>7.2} M steps/s (min {:.2}, max {:.2})",
            median / 1e6,
            min / 1e6,
            max / 1e6
        );
    }
    Ok(())
}
