//! A recorded-once dispatch: pipeline, bind group and grid, created when a
//! plan is built and replayed every iteration.

use std::sync::Arc;

use crate::error::Result;
use crate::gpu::context::GpuContext;
use crate::gpu::kernels::{grid_1d, Kernel, Shape};

/// Workgroup size of the 1-D kernels (override constant `WORKGROUP_SIZE`).
pub const WORKGROUP_SIZE: u32 = 64;

/// One kernel dispatch with its resources bound.
#[derive(Debug)]
pub struct Dispatch {
    kernel: Kernel,
    /// The dims block bound at the kernel's first binding, when built by [`Dispatch::with_uniform`].
    uniform: Option<wgpu::Buffer>,
    pipeline: Arc<wgpu::ComputePipeline>,
    bind_group: wgpu::BindGroup,
    grid: (u32, u32),
}

impl Dispatch {
    /// Binds `resources` (one per binding of the kernel's spec, in its order)
    /// and sizes the grid for `items` work items: invocations for
    /// [`Shape::PerItem`] kernels, workgroups for [`Shape::PerWorkgroup`] ones.
    pub fn new(
        ctx: &GpuContext,
        kernel: Kernel,
        resources: &[wgpu::BindingResource<'_>],
        items: u64,
    ) -> Result<Self> {
        Self::with_constants(ctx, kernel, resources, items, &[])
    }

    /// Like [`Dispatch::new`], with values for the kernel's own override
    /// constants (sizes the compiler then folds into its loops).
    pub fn with_constants(
        ctx: &GpuContext,
        kernel: Kernel,
        resources: &[wgpu::BindingResource<'_>],
        items: u64,
        overrides: &[(&'static str, u32)],
    ) -> Result<Self> {
        let spec = kernel.spec();
        assert_eq!(
            resources.len(),
            spec.bindings.len(),
            "kernel {} takes {} bindings (internal wiring error)",
            kernel.name(),
            spec.bindings.len()
        );
        let (constants, invocations, group_size): (&[(&'static str, u32)], u64, u32) =
            match spec.shape {
                Shape::PerItem => (&[("WORKGROUP_SIZE", WORKGROUP_SIZE)], items, WORKGROUP_SIZE),
                Shape::PerWorkgroup(lanes) => (&[], items * lanes as u64, lanes),
            };
        let constants: Vec<(&'static str, u32)> =
            constants.iter().chain(overrides).copied().collect();
        let pipeline = ctx.pipeline(kernel, spec.entry_point, &constants)?;
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
            group_size,
            ctx.limits.max_compute_workgroups_per_dimension,
        );
        Ok(Dispatch {
            kernel,
            uniform: None,
            pipeline,
            bind_group,
            grid,
        })
    }

    /// Like [`Dispatch::new`], with a uniform block holding `dims` created and
    /// bound at the kernel's first binding, followed by `storage`.
    pub fn with_uniform<D: bytemuck::Pod>(
        ctx: &GpuContext,
        kernel: Kernel,
        dims: &D,
        storage: &[wgpu::BindingResource<'_>],
        items: u64,
    ) -> Result<Self> {
        Self::with_uniform_constants(ctx, kernel, dims, storage, items, &[])
    }

    /// [`Dispatch::with_uniform`] with override constants ([`Dispatch::with_constants`]).
    pub fn with_uniform_constants<D: bytemuck::Pod>(
        ctx: &GpuContext,
        kernel: Kernel,
        dims: &D,
        storage: &[wgpu::BindingResource<'_>],
        items: u64,
        overrides: &[(&'static str, u32)],
    ) -> Result<Self> {
        let uniform = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(kernel.name()),
            size: (std::mem::size_of::<D>() as u64).next_multiple_of(16),
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        ctx.queue
            .write_buffer(&uniform, 0, bytemuck::bytes_of(dims));
        let mut resources = Vec::with_capacity(storage.len() + 1);
        resources.push(uniform.as_entire_binding());
        resources.extend(storage.iter().cloned());
        let mut dispatch = Dispatch::with_constants(ctx, kernel, &resources, items, overrides)?;
        dispatch.uniform = Some(uniform);
        Ok(dispatch)
    }

    /// Rewrites the dims block (queued: takes effect for work submitted after).
    pub fn write_uniform<D: bytemuck::Pod>(&self, ctx: &GpuContext, dims: &D) {
        let uniform = self
            .uniform
            .as_ref()
            .expect("write_uniform on a dispatch built without a uniform (internal wiring error)");
        ctx.queue.write_buffer(uniform, 0, bytemuck::bytes_of(dims));
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
