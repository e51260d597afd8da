//! Portability proof: every shader in shaders/ parses, validates, and
//! translates to SPIR-V (Vulkan), MSL (Metal), HLSL (DX12) and GLSL ES (GL),
//! for every entry point, with its override constants resolved.

use std::collections::BTreeSet;

use naga::back::pipeline_constants::process_overrides;
use naga::back::PipelineConstants;
use naga::valid::{Capabilities, ValidationFlags, Validator};
use ppo_wgpu::gpu::kernels::LIBRARY_SHADERS;
use ppo_wgpu::gpu::{Kernel, ALL_SHADERS};
use ppo_wgpu::ppo::fused::{fused_rollout_source, lanes_rollout_source};
use ppo_wgpu::ppo::fused_update::update_rows_source;
use ppo_wgpu::ppo::row_pass::row_pass_source;
use ppo_wgpu::ppo::ActorCriticSpec;

fn translate_all(name: &str, source: &str) -> Vec<String> {
    let module = naga::front::wgsl::parse_str(source)
        .unwrap_or_else(|e| panic!("{name}: WGSL parse error:\n{}", e.emit_to_string(source)));
    let info = Validator::new(ValidationFlags::all(), Capabilities::empty())
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name}: validation error:\n{}", e.emit_to_string(source)));
    let mut entry_points = Vec::new();
    for entry in &module.entry_points {
        let ep = entry.name.as_str();
        assert_eq!(
            entry.stage,
            naga::ShaderStage::Compute,
            "{name}:{ep}: only compute shaders"
        );
        let (module, info) = process_overrides(
            &module,
            &info,
            Some((naga::ShaderStage::Compute, ep)),
            &PipelineConstants::default(),
        )
        .unwrap_or_else(|e| panic!("{name}:{ep}: overrides: {e}"));
        let (module, info) = (module.as_ref(), info.as_ref());

        let spv_pipeline = naga::back::spv::PipelineOptions {
            shader_stage: naga::ShaderStage::Compute,
            entry_point: ep.to_string(),
        };
        let words =
            naga::back::spv::write_vec(module, info, &Default::default(), Some(&spv_pipeline))
                .unwrap_or_else(|e| panic!("{name}:{ep}: SPIR-V: {e}"));
        assert!(words.len() > 16, "{name}:{ep}: empty SPIR-V");

        let msl_pipeline = naga::back::msl::PipelineOptions {
            entry_point: Some((naga::ShaderStage::Compute, ep.to_string())),
            ..Default::default()
        };
        let msl_options = naga::back::msl::Options {
            lang_version: (2, 0),
            ..Default::default()
        };
        let (msl, _) = naga::back::msl::write_string(module, info, &msl_options, &msl_pipeline)
            .unwrap_or_else(|e| panic!("{name}:{ep}: MSL: {e}"));
        assert!(msl.contains("kernel"), "{name}:{ep}: MSL has no kernel");

        let hlsl_pipeline = naga::back::hlsl::PipelineOptions {
            entry_point: Some((naga::ShaderStage::Compute, ep.to_string())),
        };
        let hlsl_options = naga::back::hlsl::Options::default();
        let mut hlsl = String::new();
        naga::back::hlsl::Writer::new(&mut hlsl, &hlsl_options, &hlsl_pipeline)
            .write(module, info, None)
            .unwrap_or_else(|e| panic!("{name}:{ep}: HLSL: {e}"));
        assert!(
            hlsl.contains("numthreads"),
            "{name}:{ep}: HLSL has no numthreads"
        );

        let glsl_options = naga::back::glsl::Options {
            version: naga::back::glsl::Version::Embedded {
                version: 310,
                is_webgl: false,
            },
            ..Default::default()
        };
        let glsl_pipeline = naga::back::glsl::PipelineOptions {
            shader_stage: naga::ShaderStage::Compute,
            entry_point: ep.to_string(),
            multiview: None,
        };
        let mut glsl = String::new();
        naga::back::glsl::Writer::new(
            &mut glsl,
            module,
            info,
            &glsl_options,
            &glsl_pipeline,
            Default::default(),
        )
        .and_then(|mut w| w.write())
        .unwrap_or_else(|e| panic!("{name}:{ep}: GLSL: {e}"));
        assert!(
            glsl.contains("local_size_x"),
            "{name}:{ep}: GLSL has no local_size_x"
        );
        entry_points.push(ep.to_string());
    }
    entry_points
}

#[test]
fn every_shader_translates_to_every_backend() {
    for shader in ALL_SHADERS {
        let entry_points = translate_all(shader.name, shader.source);
        assert!(!entry_points.is_empty(), "{}: no entry point", shader.name);
        eprintln!(
            "{}: {} ok on SPIR-V, MSL, HLSL, GLSL ES 3.10",
            shader.name,
            entry_points.join(", ")
        );
    }
}

#[test]
fn every_shader_file_is_registered_and_every_kernel_exists() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".wgsl"))
        .collect();
    let registered: BTreeSet<String> = ALL_SHADERS
        .iter()
        .chain(LIBRARY_SHADERS)
        .map(|s| s.name.to_string())
        .collect();
    assert_eq!(on_disk, registered, "shaders/ and ALL_SHADERS disagree");
    for &kernel in Kernel::ALL {
        let spec = kernel.spec();
        let entry_points = translate_all(spec.shader.name, spec.shader.source);
        assert!(
            entry_points.iter().any(|e| e == spec.entry_point),
            "{kernel:?}: no entry point {} in {}",
            spec.entry_point,
            spec.shader.name
        );
        assert!(
            spec.shader.source.starts_with("// "),
            "{}: every shader starts with a header comment",
            spec.shader.name
        );
    }
}

#[test]
fn a_broken_shader_is_reported_not_accepted() {
    let broken = "@compute @workgroup_size(64) fn main() { let x: f32 = 1u; }";
    let module = naga::front::wgsl::parse_str(broken);
    let rejected = match module {
        Err(_) => true,
        Ok(m) => Validator::new(ValidationFlags::all(), Capabilities::empty())
            .validate(&m)
            .is_err(),
    };
    assert!(rejected, "naga accepted a type error");
}

/// The fused rollout is generated per network: its source for the shapes
/// the presets use, and the limits of what it takes, on every backend.
#[test]
fn generated_fused_rollouts_translate_to_every_backend() {
    for (hidden, actions) in [
        (&[][..], 2),
        (&[64usize, 64][..], 2),
        (&[16][..], 3),
        (&[256, 100][..], 2),
    ] {
        let spec = ActorCriticSpec::new(4, actions, hidden).unwrap();
        let (source, _) = fused_rollout_source(&spec);
        let name = format!("rollout_fused for hidden {hidden:?}");
        let entry_points = translate_all(&name, &source);
        assert_eq!(entry_points, ["rollout_fused"], "{name}");
        assert!(source.starts_with("// "), "{name}: header comment");
        for (envs, uniform) in [(1, false), (3, true), (8, false), (8, true)] {
            let (source, _) = lanes_rollout_source(&spec, envs, uniform);
            let name =
                format!("rollout_lanes for hidden {hidden:?}, {envs} envs, uniform {uniform}");
            assert_eq!(translate_all(&name, &source), ["rollout_lanes"], "{name}");
        }
    }
}

/// The fused update's row pass is generated per network and rows per
/// workgroup: the shapes the presets and tests use, on every backend.
#[test]
fn generated_fused_updates_translate_to_every_backend() {
    for (hidden, actions) in [
        (&[][..], 2),
        (&[64usize, 64][..], 2),
        (&[20, 37, 5][..], 3),
        (&[256, 256][..], 2),
    ] {
        let spec = ActorCriticSpec::new(4, actions, hidden).unwrap();
        for (rows, uniform) in [(1, false), (2, true), (2, false), (4, true)] {
            let source = update_rows_source(&spec, rows, uniform);
            if std::env::var_os("PPO_DUMP_WGSL").is_some() {
                let path = std::env::temp_dir().join(format!(
                    "update_rows_{}_{rows}_{uniform}.wgsl",
                    hidden
                        .iter()
                        .map(|h| h.to_string())
                        .collect::<Vec<_>>()
                        .join("-")
                ));
                std::fs::write(&path, &source).unwrap();
            }
            let name = format!(
                "update_rows for hidden {hidden:?}, {rows} rows per workgroup, uniform weights {uniform}"
            );
            assert_eq!(translate_all(&name, &source), ["update_rows"], "{name}");
            assert!(source.starts_with("// "), "{name}: header comment");
            let source = row_pass_source(&spec, rows, uniform);
            let name = format!(
                "update_rows (rows layout) for hidden {hidden:?}, {rows} rows per invocation, uniform weights {uniform}"
            );
            assert_eq!(translate_all(&name, &source), ["update_rows"], "{name}");
            assert!(source.starts_with("// "), "{name}: header comment");
        }
    }
}
