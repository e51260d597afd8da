//! The `ppo-wgpu` command-line tool.

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use ppo_wgpu::gpu::{list_adapters, AdapterOptions};

#[derive(Parser)]
#[command(
    name = "ppo-wgpu",
    version,
    about = "PPO as WGSL compute kernels on any GPU or a CPU software adapter"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Adapter selection flags shared by every command that touches the GPU.
#[derive(Args, Clone, Debug, Default)]
struct AdapterArgs {
    /// Backend: vulkan, gl, metal, dx12 (default: WGPU_BACKEND, else all).
    #[arg(long)]
    backend: Option<String>,
    /// Substring of the adapter name, e.g. llvmpipe (default: WGPU_ADAPTER_NAME).
    #[arg(long)]
    adapter: Option<String>,
    /// Power preference: high or low (default: WGPU_POWER_PREF, else high).
    #[arg(long)]
    power: Option<String>,
}

impl AdapterArgs {
    fn options(&self) -> AdapterOptions {
        AdapterOptions {
            backend: self.backend.clone(),
            adapter: self.adapter.clone(),
            power: self.power.clone(),
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// List every adapter wgpu can see, marking the one that would be chosen.
    Adapters {
        #[command(flatten)]
        adapter: AdapterArgs,
    },
}

fn adapters(args: &AdapterArgs) -> ppo_wgpu::Result<()> {
    let listed = list_adapters(&args.options())?;
    if !listed.iter().any(|(_, chosen)| *chosen) {
        // Nothing matches: opening a context gives the error that lists what exists.
        ppo_wgpu::GpuContext::new(&args.options())?;
    }
    for (summary, chosen) in &listed {
        let mark = if *chosen { "*" } else { " " };
        println!("{mark} {}", summary.describe());
        println!(
            "    software: {}  max storage binding: {} MiB  max buffer: {} MiB  storage buffers/stage: {}  invocations/workgroup: {}  workgroup memory: {} B  workgroups/dim: {}",
            summary.is_software,
            summary.max_storage_buffer_binding_size >> 20,
            summary.max_buffer_size >> 20,
            summary.max_storage_buffers_per_shader_stage,
            summary.max_compute_invocations_per_workgroup,
            summary.max_compute_workgroup_storage_size,
            summary.max_compute_workgroups_per_dimension,
        );
    }
    println!("(* = the adapter `train` would use)");
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Adapters { adapter } => adapters(adapter),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
