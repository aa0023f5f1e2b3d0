//! Kernel sources, the variant generator and the pipeline cache.
//!
//! Each kernel family is one file in `shaders/`. A variant is that file preceded by a small
//! generated header: `enable f16;` and `alias elem = f16;` for f16 storage (else
//! `alias elem = f32;`), then one `const NAME: u32 = V;` per tile parameter, then the shared
//! preludes (`shaders/common.wgsl`, and `shaders/masking.wgsl` for the masking families). Headers are the
//! only place sources are changed, so every variant is the checked-in file plus constants.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::error::{Error, Result};
use crate::shape::DType;

/// A kernel family: one WGSL file and its bind group layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// `shaders/similarity.wgsl`: S = Q·Kᵀ (dot or cosine).
    Similarity,
    /// `shaders/softmax.wgsl`: masked softmax over rows.
    Softmax,
    /// `shaders/weighted_sum.wgsl`: O = P·V.
    WeightedSum,
    /// `shaders/attention.wgsl`: fused attention with online softmax.
    Attention,
    /// `shaders/attention_merge.wgsl`: combines split-K attention partials.
    AttentionMerge,
    /// `shaders/topk.wgsl`: exact top-k selection and merging.
    TopK,
}

/// How a binding is declared.
#[derive(Clone, Copy)]
enum Slot {
    Uniform,
    Read,
    Write,
}

impl Family {
    /// Every family, for validation.
    pub const ALL: [Family; 6] = [
        Family::Similarity,
        Family::Softmax,
        Family::WeightedSum,
        Family::Attention,
        Family::AttentionMerge,
        Family::TopK,
    ];

    /// The WGSL body of this family.
    pub fn source(&self) -> &'static str {
        match self {
            Family::Similarity => include_str!("../shaders/similarity.wgsl"),
            Family::Softmax => include_str!("../shaders/softmax.wgsl"),
            Family::WeightedSum => include_str!("../shaders/weighted_sum.wgsl"),
            Family::Attention => include_str!("../shaders/attention.wgsl"),
            Family::AttentionMerge => include_str!("../shaders/attention_merge.wgsl"),
            Family::TopK => include_str!("../shaders/topk.wgsl"),
        }
    }

    /// Entry point name.
    pub fn entry(&self) -> &'static str {
        match self {
            Family::Similarity => "similarity",
            Family::Softmax => "softmax",
            Family::WeightedSum => "weighted_sum",
            Family::Attention => "attention",
            Family::AttentionMerge => "attention_merge",
            Family::TopK => "top_k_select",
        }
    }

    /// Bindings 0.. in order (binding 0 is always the uniform parameters).
    fn slots(&self) -> &'static [Slot] {
        use Slot::*;
        match self {
            // params, q, k, scores
            Family::Similarity => &[Uniform, Read, Read, Write],
            // params, x, mask, key_lengths, out
            Family::Softmax => &[Uniform, Read, Read, Read, Write],
            // params, weights, v, out
            Family::WeightedSum => &[Uniform, Read, Read, Write],
            // params, q, mask, key_lengths, k, v, out, lse
            Family::Attention => &[Uniform, Read, Read, Read, Read, Read, Write, Write],
            // params, partials, out, lse
            Family::AttentionMerge => &[Uniform, Read, Write, Write],
            // params, scores, indices, out scores, out indices
            Family::TopK => &[Uniform, Read, Read, Write, Write],
        }
    }
}

/// Builds the source of one variant: generated header plus the family's file.
pub fn variant_source(family: Family, dtype: DType, consts: &[(&str, u32)]) -> String {
    let mut s = String::new();
    match dtype {
        DType::F16 => s.push_str("enable f16;\nalias elem = f16;\n"),
        DType::F32 => s.push_str("alias elem = f32;\n"),
    }
    for (name, v) in consts {
        s.push_str(&format!("const {name}: u32 = {v}u;\n"));
    }
    s.push_str(include_str!("../shaders/common.wgsl"));
    if matches!(family, Family::Softmax | Family::Attention) {
        s.push_str(include_str!("../shaders/masking.wgsl"));
    }
    if family == Family::Attention {
        // the Q/K/V bindings and their loads: vectors of 4, or scalars
        if consts.contains(&("VEC", 4)) {
            s.push_str(include_str!("../shaders/qkv_vec4.wgsl"));
        } else {
            s.push_str(include_str!("../shaders/qkv_scalar.wgsl"));
        }
    }
    s.push_str(family.source());
    s
}

/// One kernel variant: family, storage dtype, header constants.
pub type Variant = (Family, DType, Vec<(&'static str, u32)>);

/// Every variant the crate can build: `(family, dtype, header constants)`. The shader tests
/// validate and translate each one.
pub fn all_variants() -> Vec<Variant> {
    let mut v = vec![];
    for dtype in [DType::F32, DType::F16] {
        for metric in [0, 1, 2] {
            v.push((Family::Similarity, dtype, vec![("METRIC", metric)]));
        }
        v.push((Family::Softmax, dtype, vec![]));
        v.push((Family::WeightedSum, dtype, vec![]));
        for tile in crate::ops::AttentionTile::all() {
            for split in [false, true] {
                for vec4 in [false, true] {
                    v.push((Family::Attention, dtype, tile.consts(split, vec4)));
                }
            }
        }
        v.push((Family::AttentionMerge, dtype, vec![]));
        if dtype == DType::F32 {
            for kp in [16u32, 32, 64, 128, 256, 512, 1024] {
                for pairs in [0, 1] {
                    v.push((
                        Family::TopK,
                        dtype,
                        vec![("KP", kp), ("CAP", if kp <= 512 { 1024 } else { 2048 }), ("PAIRS", pairs)],
                    ));
                }
            }
        }
    }
    v
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    family: Family,
    dtype: DType,
    consts: Vec<(&'static str, u32)>,
}

/// Compiled pipelines, one per (family, dtype, constants), built on first use.
pub(crate) struct PipelineCache {
    layouts: HashMap<Family, (wgpu::BindGroupLayout, wgpu::PipelineLayout)>,
    pipelines: RwLock<HashMap<Key, Arc<wgpu::ComputePipeline>>>,
}

impl PipelineCache {
    pub fn new(device: &wgpu::Device) -> Self {
        let layouts = Family::ALL
            .iter()
            .map(|&f| {
                let entries: Vec<_> = f
                    .slots()
                    .iter()
                    .enumerate()
                    .map(|(i, slot)| wgpu::BindGroupLayoutEntry {
                        binding: i as u32,
                        visibility: wgpu::ShaderStages::COMPUTE,
                        ty: wgpu::BindingType::Buffer {
                            ty: match slot {
                                Slot::Uniform => wgpu::BufferBindingType::Uniform,
                                Slot::Read => wgpu::BufferBindingType::Storage { read_only: true },
                                Slot::Write => wgpu::BufferBindingType::Storage { read_only: false },
                            },
                            has_dynamic_offset: false,
                            min_binding_size: None,
                        },
                        count: None,
                    })
                    .collect();
                let bgl = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                    label: Some(f.entry()),
                    entries: &entries,
                });
                let pl = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                    label: Some(f.entry()),
                    bind_group_layouts: &[Some(&bgl)],
                    immediate_size: 0,
                });
                (f, (bgl, pl))
            })
            .collect();
        PipelineCache { layouts, pipelines: RwLock::new(HashMap::new()) }
    }

    pub fn bind_group_layout(&self, family: Family) -> Result<&wgpu::BindGroupLayout> {
        self.layouts.get(&family).map(|l| &l.0).ok_or_else(|| Error::Gpu(format!("no layout for {family:?}")))
    }

    /// The pipeline for a variant, compiling it on first use (read lock first, write lock on miss).
    pub fn get(
        &self,
        ctx: &crate::Context,
        family: Family,
        dtype: DType,
        consts: &[(&'static str, u32)],
    ) -> Result<Arc<wgpu::ComputePipeline>> {
        let key = Key { family, dtype, consts: consts.to_vec() };
        if let Some(p) = self.pipelines.read().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(p.clone());
        }
        let layout = &self.layouts.get(&family).ok_or_else(|| Error::Gpu(format!("no layout for {family:?}")))?.1;
        let device = ctx.device();
        let pipeline = ctx.scoped(|| {
            let src = variant_source(family, dtype, consts);
            let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(family.entry()),
                source: wgpu::ShaderSource::Wgsl(src.into()),
            });
            Ok(device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(family.entry()),
                layout: Some(layout),
                module: &module,
                entry_point: Some(family.entry()),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &[],
                    // Every kernel writes its workgroup memory before reading it.
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            }))
        })?;
        let p = Arc::new(pipeline);
        self.pipelines.write().unwrap_or_else(|e| e.into_inner()).insert(key, p.clone());
        Ok(p)
    }
}
