//! A recorded-once dispatch: pipeline, bind group and grid, created when a
//! plan is built and replayed every iteration.

use std::sync::Arc;

use crate::error::Result;
use crate::gpu::context::GpuContext;
use crate::gpu::kernels::{grid_1d, Kernel};

/// Workgroup size of the 1-D kernels (override constant `WORKGROUP_SIZE`).
pub const WORKGROUP_SIZE: u32 = 64;

/// One kernel dispatch with its resources bound.
#[derive(Debug)]
pub struct Dispatch {
    kernel: Kernel,
    pipeline: Arc<wgpu::ComputePipeline>,
    bind_group: wgpu::BindGroup,
    grid: (u32, u32),
}

impl Dispatch {
    /// Binds `resources` (one per binding of the kernel's spec, in its order)
    /// and sizes the grid for `invocations` threads.
    pub fn new(
        ctx: &GpuContext,
        kernel: Kernel,
        resources: &[wgpu::BindingResource<'_>],
        invocations: u64,
    ) -> Result<Self> {
        let spec = kernel.spec();
        assert_eq!(
            resources.len(),
            spec.bindings.len(),
            "kernel {} takes {} bindings (internal wiring error)",
            kernel.name(),
            spec.bindings.len()
        );
        let pipeline = ctx.pipeline(
            kernel,
            spec.entry_point,
            &[("WORKGROUP_SIZE", WORKGROUP_SIZE)],
        )?;
        let layout = ctx.bind_group_layout(kernel);
        let entries: Vec<wgpu::BindGroupEntry> = spec
            .bindings
            .iter()
            .zip(resources)
            .map(|(&(binding, _), resource)| wgpu::BindGroupEntry {
                binding,
                resource: resource.clone(),
            })
            .collect();
        let bind_group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(kernel.name()),
            layout: &layout,
            entries: &entries,
        });
        let grid = grid_1d(
            invocations,
            WORKGROUP_SIZE,
            ctx.limits.max_compute_workgroups_per_dimension,
        );
        Ok(Dispatch {
            kernel,
            pipeline,
            bind_group,
            grid,
        })
    }

    /// Records the dispatch into a compute pass.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(self.grid.0, self.grid.1, 1);
    }

    pub fn kernel(&self) -> Kernel {
        self.kernel
    }
}

impl GpuContext {
    /// Records `dispatches` in order into one compute pass and submits it
    /// (without waiting). wgpu orders storage writes between dispatches.
    pub fn run(&self, label: &str, dispatches: &[&Dispatch]) {
        self.submit(label, |encoder| {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(label),
                timestamp_writes: None,
            });
            for dispatch in dispatches {
                dispatch.record(&mut pass);
            }
        });
    }
}
