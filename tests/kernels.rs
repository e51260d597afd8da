//! Every kernel against its CPU reference: seeded random inputs, sizes that
//! hit partial workgroups, outputs poisoned with NaN before the run.

mod common;

use common::{assert_close, ctx, random_vec, to_f64};
use ppo_wgpu::gpu::GpuBuffer;
use ppo_wgpu::nn::{mlp_backward_cpu, mlp_forward_cpu, MlpPlan, MlpSpec, Placement};
use ppo_wgpu::ops::linear::{
    linear_backward_cpu, linear_forward_cpu, Activation, LinearBackward, LinearBackwardBuffers,
    LinearForward, LinearSpec, RegisterBlock,
};
use ppo_wgpu::Error;

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

const ROW_COUNTS: &[usize] = &[1, 63, 64, 65, 2048];
const AGENT_COUNTS: &[usize] = &[1, 3];
/// (in_dim, out_dim): CartPole input, a 64-wide hidden layer, odd sizes that
/// leave partial register blocks, and the 2-action head.
const LAYER_SHAPES: &[(usize, usize)] = &[(4, 64), (64, 64), (7, 5), (64, 2)];

/// A layer placed after some other parameters, so offsets are exercised.
fn layer_spec(
    num_agents: usize,
    rows: usize,
    in_dim: usize,
    out_dim: usize,
    activation: Activation,
) -> LinearSpec {
    let w_offset = 3;
    let b_offset = w_offset + in_dim * out_dim;
    LinearSpec {
        num_agents,
        rows_per_agent: rows,
        in_dim,
        out_dim,
        param_stride: b_offset + out_dim + 2,
        w_offset,
        b_offset,
        activation,
    }
}

#[test]
fn linear_forward_matches_cpu_reference() {
    let Some(ctx) = ctx() else { return };
    let mut seed = 1;
    for &num_agents in AGENT_COUNTS {
        for &rows in ROW_COUNTS {
            for &(in_dim, out_dim) in LAYER_SHAPES {
                for activation in [Activation::Identity, Activation::Tanh] {
                    seed += 1;
                    let spec = layer_spec(num_agents, rows, in_dim, out_dim, activation);
                    let x = random_vec(seed, spec.rows() * in_dim, -2.0, 2.0);
                    let params = random_vec(seed + 1000, num_agents * spec.param_stride, -0.5, 0.5);
                    let x_gpu = GpuBuffer::from_slice(ctx, "x", &x).unwrap();
                    let p_gpu = GpuBuffer::from_slice(ctx, "params", &params).unwrap();
                    let y_gpu = GpuBuffer::<f32>::zeros(ctx, "y", spec.rows() * out_dim).unwrap();
                    let want = linear_forward_cpu(&spec, &to_f64(&x), &to_f64(&params));
                    let mut first = None;
                    for block in [RegisterBlock::B4x4, RegisterBlock::B8x8] {
                        y_gpu.poison(ctx).unwrap();
                        let op =
                            LinearForward::with_block(ctx, &spec, &x_gpu, &p_gpu, &y_gpu, block)
                                .unwrap();
                        ctx.run("test", &[op.dispatch()]);
                        let got = y_gpu.read(ctx).unwrap();
                        let what = format!("linear_forward {block:?} P={num_agents} rows={rows} {in_dim}->{out_dim} {activation:?}");
                        assert_close(&what, &want, &got, 1e-5, 1e-5);
                        // Both blocks sum in the same order: the same values
                        // on the software adapters (a hardware compiler may
                        // fuse multiply-adds differently in each).
                        match &first {
                            None => first = Some(got),
                            Some(ref_4x4) if ctx.adapter.is_software => assert_eq!(
                                bits(ref_4x4),
                                bits(&got),
                                "{what}: differs from the 4x4 block"
                            ),
                            Some(_) => {}
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn linear_backward_matches_cpu_reference() {
    let Some(ctx) = ctx() else { return };
    let mut seed = 100;
    for &num_agents in AGENT_COUNTS {
        for &rows in ROW_COUNTS {
            for &(in_dim, out_dim) in LAYER_SHAPES {
                for activation in [Activation::Identity, Activation::Tanh] {
                    seed += 1;
                    let spec = layer_spec(num_agents, rows, in_dim, out_dim, activation);
                    let x = random_vec(seed, spec.rows() * in_dim, -2.0, 2.0);
                    let params = random_vec(seed + 1000, num_agents * spec.param_stride, -0.5, 0.5);
                    // y only enters through tanh's derivative; any values in (-1, 1) test it.
                    let y = random_vec(seed + 2000, spec.rows() * out_dim, -0.99, 0.99);
                    let dy = random_vec(seed + 3000, spec.rows() * out_dim, -1.0, 1.0);
                    let buf =
                        |name: &str, data: &[f32]| GpuBuffer::from_slice(ctx, name, data).unwrap();
                    let (x_gpu, p_gpu, y_gpu, dy_gpu) = (
                        buf("x", &x),
                        buf("params", &params),
                        buf("y", &y),
                        buf("dy", &dy),
                    );
                    let want = linear_backward_cpu(
                        &spec,
                        &to_f64(&x),
                        &to_f64(&params),
                        &to_f64(&y),
                        &to_f64(&dy),
                    );
                    let mut first: Option<(Vec<u32>, Vec<u32>)> = None;
                    for block in [RegisterBlock::B4x4, RegisterBlock::B8x8] {
                        let dx_gpu =
                            GpuBuffer::<f32>::zeros(ctx, "dx", spec.rows() * in_dim).unwrap();
                        let grads_gpu =
                            GpuBuffer::<f32>::zeros(ctx, "grads", params.len()).unwrap();
                        dx_gpu.poison(ctx).unwrap();
                        grads_gpu.poison(ctx).unwrap();
                        let op = LinearBackward::with_block(
                            ctx,
                            &spec,
                            &LinearBackwardBuffers {
                                x: &x_gpu,
                                params: &p_gpu,
                                y: &y_gpu,
                                dy: &dy_gpu,
                                dx: Some(&dx_gpu),
                                grads: &grads_gpu,
                            },
                            block,
                        )
                        .unwrap();
                        let dispatches: Vec<_> = op.dispatches().collect();
                        ctx.run("test", &dispatches);
                        let what =
                            format!("{block:?} P={num_agents} rows={rows} {in_dim}->{out_dim} {activation:?}");
                        assert_close(
                            &format!("linear_backward dx {what}"),
                            &want.dx,
                            &dx_gpu.read(ctx).unwrap(),
                            1e-5,
                            1e-5,
                        );
                        // Weight gradients sum over the rows: allow f32 accumulation error growing with them.
                        let atol = 2e-6 * rows as f64;
                        let grads = grads_gpu.read(ctx).unwrap();
                        let mut got_w = Vec::new();
                        let mut got_b = Vec::new();
                        for p in 0..num_agents {
                            let base = p * spec.param_stride;
                            got_w.extend_from_slice(
                                &grads
                                    [base + spec.w_offset..base + spec.w_offset + in_dim * out_dim],
                            );
                            got_b.extend_from_slice(
                                &grads[base + spec.b_offset..base + spec.b_offset + out_dim],
                            );
                            // Slots outside this layer must be left alone (still NaN).
                            assert!(
                                grads[base..base + spec.w_offset].iter().all(|g| g.is_nan()),
                                "{what}: wrote before the layer"
                            );
                            assert!(
                                grads[base + spec.b_offset + out_dim..base + spec.param_stride]
                                    .iter()
                                    .all(|g| g.is_nan()),
                                "{what}: wrote after the layer"
                            );
                        }
                        assert_close(
                            &format!("linear_backward dW {what}"),
                            &want.dw,
                            &got_w,
                            atol,
                            1e-4,
                        );
                        assert_close(
                            &format!("linear_backward db {what}"),
                            &want.db,
                            &got_b,
                            atol,
                            1e-4,
                        );
                        // Both blocks sum in the same order: the same values
                        // on the software adapters.
                        let got = (bits(&dx_gpu.read(ctx).unwrap()), bits(&grads));
                        match &first {
                            None => first = Some(got),
                            Some(ref_4x4) if ctx.adapter.is_software => {
                                assert!(*ref_4x4 == got, "{what}: differs from the 4x4 block")
                            }
                            Some(_) => {}
                        }
                    }
                }
            }
        }
    }
}

/// The whole network, forward then backward from a random dLoss/dOutput,
/// against the CPU reference, for the 64-64 net and the plain linear one.
#[test]
fn mlp_forward_backward_matches_cpu_reference() {
    let Some(ctx) = ctx() else { return };
    for (k, hidden) in [vec![64, 64], vec![], vec![5, 33, 7]]
        .into_iter()
        .enumerate()
    {
        for &num_agents in AGENT_COUNTS {
            for &rows in &[1usize, 65, 512] {
                let seed = 7000 + 100 * k as u64 + 10 * num_agents as u64 + rows as u64;
                let spec = MlpSpec::new(4, &hidden, 2).unwrap();
                // Place the network after 10 other parameters, as the critic follows the actor.
                let placement = Placement {
                    num_agents,
                    rows_per_agent: rows,
                    param_stride: 10 + spec.param_count(),
                    base: 10,
                };
                let total_rows = num_agents * rows;
                let x = random_vec(seed, total_rows * 4, -2.0, 2.0);
                let params = random_vec(seed + 1, num_agents * placement.param_stride, -0.4, 0.4);
                let dout = random_vec(seed + 2, total_rows * 2, -1.0, 1.0);
                let x_gpu = GpuBuffer::from_slice(ctx, "x", &x).unwrap();
                let p_gpu = GpuBuffer::from_slice(ctx, "params", &params).unwrap();
                let g_gpu = GpuBuffer::<f32>::zeros(ctx, "grads", params.len()).unwrap();
                let plan =
                    MlpPlan::new(ctx, "net", &spec, placement, &x_gpu, &p_gpu, &g_gpu).unwrap();
                plan.output().poison(ctx).unwrap();
                plan.grad_output().write(ctx, &dout).unwrap();
                let dispatches: Vec<_> = plan
                    .forward_dispatches()
                    .chain(plan.backward_dispatches())
                    .collect();
                ctx.run("mlp", &dispatches);

                let (x64, p64) = (to_f64(&x), to_f64(&params));
                let outputs = mlp_forward_cpu(&spec, placement, &x64, &p64);
                let mut want_grads = vec![0.0; params.len()];
                mlp_backward_cpu(
                    &spec,
                    placement,
                    &x64,
                    &p64,
                    &outputs,
                    &to_f64(&dout),
                    &mut want_grads,
                );
                let what = format!("mlp {hidden:?} P={num_agents} rows={rows}");
                assert_close(
                    &format!("{what} output"),
                    outputs.last().unwrap(),
                    &plan.output().read(ctx).unwrap(),
                    1e-5,
                    1e-4,
                );
                let got = g_gpu.read(ctx).unwrap();
                // The 10 slots before the network are not its parameters: the GPU leaves them 0.
                for p in 0..num_agents {
                    let base = p * placement.param_stride;
                    assert!(
                        got[base..base + 10].iter().all(|&g| g == 0.0),
                        "{what}: wrote outside the network"
                    );
                }
                assert_close(
                    &format!("{what} grads"),
                    &want_grads,
                    &got,
                    2e-6 * rows as f64 + 1e-6,
                    1e-4,
                );
            }
        }
    }
}

#[test]
fn mismatched_buffer_is_an_error_naming_the_tensor() {
    let Some(ctx) = ctx() else { return };
    let spec = layer_spec(2, 10, 4, 8, Activation::Tanh);
    let x = GpuBuffer::<f32>::zeros(ctx, "observations", spec.rows() * 4 - 1).unwrap();
    let params = GpuBuffer::<f32>::zeros(ctx, "params", 2 * spec.param_stride).unwrap();
    let y = GpuBuffer::<f32>::zeros(ctx, "hidden", spec.rows() * 8).unwrap();
    let err = LinearForward::new(ctx, &spec, &x, &params, &y).unwrap_err();
    match &err {
        Error::ShapeMismatch {
            tensor,
            expected,
            got,
            ..
        } => {
            assert_eq!(tensor, "observations");
            assert_eq!((*expected, *got), (80, 79));
        }
        other => panic!("expected ShapeMismatch, got {other:?}"),
    }
    assert!(err.to_string().contains("observations"), "{err}");

    let short_params = GpuBuffer::<f32>::zeros(ctx, "actor params", spec.param_stride).unwrap();
    let x_ok = GpuBuffer::<f32>::zeros(ctx, "observations", spec.rows() * 4).unwrap();
    let err = LinearForward::new(ctx, &spec, &x_ok, &short_params, &y).unwrap_err();
    assert!(err.to_string().contains("actor params"), "{err}");

    // A layer whose parameters do not fit the per-agent stride.
    let bad = LinearSpec {
        param_stride: 5,
        ..spec
    };
    let err = LinearForward::new(ctx, &bad, &x_ok, &params, &y).unwrap_err();
    assert!(matches!(err, Error::InvalidConfig { .. }), "{err:?}");
    assert!(err.to_string().contains("param_stride"), "{err}");
}

#[test]
fn pipeline_cache_returns_the_same_pipeline() {
    let Some(ctx) = ctx() else { return };
    use ppo_wgpu::gpu::kernels::Shape;
    use ppo_wgpu::gpu::Kernel;
    for &kernel in Kernel::ALL {
        let spec = kernel.spec();
        let entry = spec.entry_point;
        let constants: &[(&str, u32)] = match spec.shape {
            Shape::PerItem => &[("WORKGROUP_SIZE", 64)],
            Shape::PerWorkgroup(_) => &[],
        };
        let a = ctx.pipeline(kernel, entry, constants).unwrap();
        let b = ctx.pipeline(kernel, entry, constants).unwrap();
        assert!(
            std::sync::Arc::ptr_eq(&a, &b),
            "{kernel:?}: cache built a second pipeline"
        );
        if spec.shape == Shape::PerItem {
            let c = ctx
                .pipeline(kernel, entry, &[("WORKGROUP_SIZE", 128)])
                .unwrap();
            assert!(
                !std::sync::Arc::ptr_eq(&a, &c),
                "{kernel:?}: constants must be part of the key"
            );
        }
    }
}

#[test]
fn a_broken_shader_is_an_error_naming_it_not_a_panic() {
    let Some(ctx) = ctx() else { return };
    use ppo_wgpu::gpu::kernels::create_pipeline_from_source;
    use ppo_wgpu::gpu::Kernel;
    let layout = ctx.bind_group_layout(Kernel::LinearForward);
    let broken = "@compute @workgroup_size(64) fn main() { let x: f32 = 1u; }";
    let err = create_pipeline_from_source(&ctx.device, "broken.wgsl", broken, "main", &[], &layout)
        .unwrap_err();
    match &err {
        Error::Shader {
            shader,
            entry_point,
            ..
        } => {
            assert_eq!(shader, "broken.wgsl");
            assert_eq!(entry_point, "main");
        }
        other => panic!("expected Error::Shader, got {other:?}"),
    }
    // A missing entry point in a valid shader is an error too.
    let source = ppo_wgpu::gpu::kernels::LINEAR_FORWARD_WGSL.source;
    let err = create_pipeline_from_source(
        &ctx.device,
        "linear_forward.wgsl",
        source,
        "no_such_entry",
        &[],
        &layout,
    )
    .unwrap_err();
    assert!(err.to_string().contains("no_such_entry"), "{err}");
}

#[test]
fn a_tensor_larger_than_the_adapter_allows_is_refused_with_the_limit_named() {
    let Some(ctx) = ctx() else { return };
    let limit = ctx.max_binding_bytes().min(ctx.limits.max_buffer_size);
    let too_many = (limit / 4 + 1) as usize;
    let err = GpuBuffer::<f32>::zeros(ctx, "rollout obs", too_many).unwrap_err();
    match &err {
        Error::AdapterLimit {
            needed, available, ..
        } => {
            assert_eq!(*available, limit);
            assert!(*needed > limit);
        }
        other => panic!("expected AdapterLimit, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("rollout obs") && message.contains("max_storage_buffer_binding_size"),
        "{message}"
    );
}
