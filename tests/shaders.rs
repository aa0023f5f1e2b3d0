//! Every kernel variant the crate can build is parsed and validated by naga and translated to
//! SPIR-V (Vulkan), MSL (Metal) and HLSL (DX12): a shader error fails here, GPU or not.

use naga::back::{hlsl, msl, spv};
use naga::valid::{Capabilities, ValidationFlags, Validator};
use wgpu_attention::{all_variants, variant_source};

#[test]
fn every_variant_validates_and_translates() {
    let variants = all_variants();
    assert!(variants.len() >= 20, "expected the full variant list, got {}", variants.len());
    for (family, dtype, consts) in variants {
        let what = format!("{family:?} {dtype:?} {consts:?}");
        let src = variant_source(family, dtype, &consts);
        let module =
            naga::front::wgsl::parse_str(&src).unwrap_or_else(|e| panic!("{what}: {}", e.emit_to_string(&src)));
        let info = Validator::new(ValidationFlags::all(), Capabilities::all())
            .validate(&module)
            .unwrap_or_else(|e| panic!("{what}: {}", e.emit_to_string(&src)));
        let entry = family.entry().to_string();

        let spv_words = spv::write_vec(
            &module,
            &info,
            &spv::Options::default(),
            Some(&spv::PipelineOptions { shader_stage: naga::ShaderStage::Compute, entry_point: entry.clone() }),
        )
        .unwrap_or_else(|e| panic!("{what}: SPIR-V: {e}"));
        assert!(spv_words.len() > 100, "{what}: SPIR-V too short");

        let (msl_src, _) = msl::write_string(
            &module,
            &info,
            &msl::Options { lang_version: (2, 4), ..Default::default() },
            &msl::PipelineOptions {
                entry_point: Some((naga::ShaderStage::Compute, entry.clone())),
                ..Default::default()
            },
        )
        .unwrap_or_else(|e| panic!("{what}: MSL: {e}"));
        assert!(msl_src.contains("kernel"), "{what}: MSL has no kernel");

        let hlsl_opts = hlsl::Options { shader_model: hlsl::ShaderModel::V6_2, ..Default::default() };
        let hlsl_pipe = hlsl::PipelineOptions { entry_point: Some((naga::ShaderStage::Compute, entry.clone())) };
        let mut hlsl_src = String::new();
        hlsl::Writer::new(&mut hlsl_src, &hlsl_opts, &hlsl_pipe)
            .write(&module, &info, None)
            .unwrap_or_else(|e| panic!("{what}: HLSL: {e}"));
        assert!(hlsl_src.contains("numthreads"), "{what}: HLSL has no compute entry");
    }
}
