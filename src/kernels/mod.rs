//! Kernel variants as Rust types, and their host launchers.
//!
//! Each kernel family has one WGSL file, one launcher file and one CPU twin, under one name:
//!
//! | family | WGSL | launcher | CPU twin |
//! |---|---|---|---|
//! | attention | `shaders/attention.wgsl` | [`attention`] | `cpu::attention` |
//! | attention decode (few queries) | `shaders/attention_decode.wgsl` | [`attention_decode`] | `cpu::attention` |
//! | attention on matrix fragments (f16; tensor cores or their emulated twin) | `shaders/attention_mma.wgsl` | [`attention_mma`] | `cpu::attention` |
//! | attention backward (dQ, dK, dV, d_sinks) | `shaders/attention_backward.wgsl` | [`attention_backward`] | `cpu::attention_backward` |
//! | attention merge (split-K) | `shaders/attention_merge.wgsl` | [`attention_merge`] | `cpu::attention_merge` |
//! | similarity | `shaders/similarity.wgsl` | [`similarity`] | `cpu::similarity` |
//! | similarity on matrix fragments (f16; tensor cores or their emulated twin) | `shaders/similarity_mma.wgsl` | [`similarity_mma`] | `cpu::similarity` |
//! | row norms (cosine, L2) | `shaders/row_norms.wgsl` | [`row_norms`] | within `cpu::similarity` |
//! | softmax | `shaders/softmax.wgsl` | [`softmax`] | `cpu::softmax` |
//! | weighted sum | `shaders/weighted_sum.wgsl` | [`weighted_sum`] | `cpu::weighted_sum` |
//! | top-k | `shaders/top_k.wgsl` | [`top_k`] | `cpu::top_k` |
//! | append to a paged cache | `shaders/kv_append.wgsl` | [`kv_append`] | `cpu::append_kv` |
//! | append to a quantized pool | `shaders/kv_quantize.wgsl` | [`kv_quantize`] | `cpu::append_kv` |
//!
//! A variant type owns its WGSL source, its bindings, its workgroup-memory size and its
//! constants. The constants are emitted from Rust into a header in front of the shader (with
//! the flag bits and numeric limits shared by all kernels), so each number exists in one place;
//! the unit tests at the bottom parse every variant with naga and compare its bindings, its
//! workgroup memory and its uniform block with what the Rust side declares.

pub(crate) mod attention;
pub(crate) mod attention_backward;
pub(crate) mod attention_decode;
pub(crate) mod attention_merge;
pub(crate) mod attention_mma;
pub(crate) mod kv_append;
pub(crate) mod kv_quantize;
mod loads;
mod unroll;
pub(crate) mod row_norms;
pub(crate) mod similarity;
pub(crate) mod similarity_mma;
pub(crate) mod softmax;
pub(crate) mod top_k;
pub(crate) mod weighted_sum;

mod abi;
mod preludes;
pub(crate) mod attention_plan;

pub(crate) use abi::{b, flags, Access, Binding, Params, Variant, ViewParams, PARAMS};
pub(crate) use preludes::row_reductions;

use crate::problem::{ZNONE, ZSAT};
use crate::shape::DType;

/// Every kernel variant the crate can build: the key of the pipeline cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kernel {
    Attention(attention::AttentionKernel),
    AttentionBackward(attention_backward::AttentionBackwardKernel),
    AttentionDecode(attention_decode::DecodeKernel),
    AttentionMerge(attention_merge::MergeKernel),
    AttentionMma(attention_mma::AttentionMmaKernel),
    Similarity(similarity::SimilaritySimtKernel),
    SimilarityMma(similarity_mma::SimilarityMmaKernel),
    RowNorms(row_norms::RowNormsKernel),
    Softmax(softmax::SoftmaxKernel),
    WeightedSum(weighted_sum::WeightedSumKernel),
    TopK(top_k::TopKKernel),
    KvAppend(kv_append::KvAppendKernel),
    KvQuantize(kv_quantize::KvQuantizeKernel),
}

macro_rules! each_kernel {
    ($self:expr, $v:ident => $e:expr) => {
        match $self {
            Kernel::Attention($v) => $e,
            Kernel::AttentionBackward($v) => $e,
            Kernel::AttentionDecode($v) => $e,
            Kernel::AttentionMerge($v) => $e,
            Kernel::AttentionMma($v) => $e,
            Kernel::Similarity($v) => $e,
            Kernel::SimilarityMma($v) => $e,
            Kernel::RowNorms($v) => $e,
            Kernel::Softmax($v) => $e,
            Kernel::WeightedSum($v) => $e,
            Kernel::TopK($v) => $e,
            Kernel::KvAppend($v) => $e,
            Kernel::KvQuantize($v) => $e,
        }
    };
}

fn name_of<V: Variant>(_: &V) -> &'static str {
    V::NAME
}
fn source_of<V: Variant>(_: &V) -> &'static str {
    V::SOURCE
}

impl Kernel {
    /// The family name, which is also the entry point.
    pub fn name(&self) -> &'static str {
        each_kernel!(self, v => name_of(v))
    }
    /// The entry point.
    pub fn entry(&self) -> &'static str {
        self.name()
    }
    /// Bindings, slot 0 first.
    pub fn bindings(&self) -> &'static [Binding] {
        each_kernel!(self, v => v.bindings())
    }
    /// Workgroup memory, bytes.
    #[cfg(test)]
    pub fn workgroup_bytes(&self) -> u32 {
        each_kernel!(self, v => v.workgroup_bytes())
    }
    /// Header constants.
    pub fn constants(&self) -> Vec<(&'static str, u32)> {
        each_kernel!(self, v => v.constants())
    }
    /// Storage dtype.
    pub fn dtype(&self) -> DType {
        each_kernel!(self, v => v.dtype())
    }

    /// The complete WGSL of this variant: generated header, `common.wgsl`, preludes, body.
    pub fn source(&self) -> String {
        let mut s = String::new();
        if self.dtype() == DType::F16 {
            s.push_str("enable f16;\n");
        }
        for e in each_kernel!(self, v => v.enables()) {
            s.push_str(&format!("enable {e};\n"));
        }
        match self.dtype() {
            DType::F16 => s.push_str("alias elem = f16;\n"),
            DType::F32 => s.push_str("alias elem = f32;\n"),
        }
        s.push_str(&format!("// variant {self:?}\n"));
        for (name, v) in self.constants() {
            s.push_str(&format!("const {name}: u32 = {v}u;\n"));
        }
        for (name, v) in flags::ALL {
            s.push_str(&format!("const {name}: u32 = {v}u;\n"));
        }
        let elem_max = match self.dtype() {
            DType::F32 => f32::MAX,
            DType::F16 => half::f16::MAX.to_f32(),
        };
        for (name, v) in [("ZSAT", ZSAT), ("ZNONE", ZNONE), ("F32_MAX", f32::MAX), ("ELEM_MAX", elem_max)] {
            s.push_str(&format!("const {name}: f32 = {v:e};\n"));
        }
        s.push_str(include_str!("../../shaders/common.wgsl"));
        for p in each_kernel!(self, v => v.preludes()) {
            s.push_str(p);
        }
        s.push_str(&each_kernel!(self, v => v.generated()));
        // the body with its template loops unrolled over the header constants (kernels/unroll.rs:
        // registers named per loop index; a body without such loops is unchanged)
        s.push_str(&unroll::unroll(each_kernel!(self, v => source_of(v)), &self.constants()));
        s
    }

    /// Every variant the crate can build (the shader tests parse each one).
    #[cfg(test)]
    pub fn all() -> Vec<Kernel> {
        let mut v = vec![];
        for dtype in [DType::F32, DType::F16] {
            v.extend(attention::AttentionKernel::all(dtype).map(Kernel::Attention));
            v.extend(attention_decode::DecodeKernel::all(dtype).map(Kernel::AttentionDecode));
            v.push(Kernel::AttentionMerge(attention_merge::MergeKernel { dtype }));
            v.extend(similarity::SimilaritySimtKernel::all(dtype).map(Kernel::Similarity));
            v.extend(row_norms::RowNormsKernel::all(dtype).map(Kernel::RowNorms));
            v.extend(softmax::SoftmaxKernel::all(dtype).map(Kernel::Softmax));
            v.push(Kernel::WeightedSum(weighted_sum::WeightedSumKernel { dtype }));
            for write in [[true, true], [true, false], [false, true]] {
                v.push(Kernel::KvAppend(kv_append::KvAppendKernel { dtype, write }));
            }
        }
        v.extend(top_k::TopKKernel::all().map(Kernel::TopK));
        v.extend(attention_backward::AttentionBackwardKernel::all().map(Kernel::AttentionBackward));
        v.extend(kv_quantize::KvQuantizeKernel::all().map(Kernel::KvQuantize));
        for mma in [similarity_mma::Mma::Emulated, similarity_mma::Mma::Hardware { subgroup: 32 }] {
            v.extend(similarity_mma::SimilarityMmaKernel::all(mma).map(Kernel::SimilarityMma));
            v.extend(attention_mma::AttentionMmaKernel::all(mma).map(Kernel::AttentionMma));
        }
        v
    }

    /// Whether the variant runs on cooperative matrices (naga translates those to SPIR-V only).
    #[cfg(test)]
    pub fn hardware_mma(&self) -> bool {
        let hw = |m: &similarity_mma::Mma| matches!(m, similarity_mma::Mma::Hardware { .. });
        match self {
            Kernel::SimilarityMma(k) => hw(&k.mma),
            Kernel::AttentionMma(k) => hw(&k.mma),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    //! Every variant against naga: it parses, validates, translates to SPIR-V, MSL and HLSL, and
    //! its bindings, workgroup memory and uniform block are what the Rust side declares.

    use super::*;
    use naga::back::{hlsl, msl, spv};
    use naga::valid::{Capabilities, ValidationFlags, Validator};

    fn parse(k: &Kernel) -> (naga::Module, naga::valid::ModuleInfo, String) {
        let src = k.source();
        let module = naga::front::wgsl::parse_str(&src).unwrap_or_else(|e| panic!("{k:?}: {}", e.emit_to_string(&src)));
        let info = Validator::new(ValidationFlags::all(), Capabilities::all())
            .validate(&module)
            .unwrap_or_else(|e| panic!("{k:?}: {}", e.emit_to_string(&src)));
        (module, info, src)
    }

    #[test]
    fn every_variant_validates_and_translates() {
        let all = Kernel::all();
        assert!(all.len() >= 40, "expected the full variant list, got {}", all.len());
        for k in &all {
            let (module, info, _) = parse(k);
            let entry = k.entry().to_string();
            let words = spv::write_vec(
                &module,
                &info,
                &spv::Options::default(),
                Some(&spv::PipelineOptions { shader_stage: naga::ShaderStage::Compute, entry_point: entry.clone() }),
            )
            .unwrap_or_else(|e| panic!("{k:?}: SPIR-V: {e}"));
            assert!(words.len() > 100, "{k:?}: SPIR-V too short");
            let msl = msl::write_string(
                &module,
                &info,
                &msl::Options { lang_version: (2, 4), ..Default::default() },
                &msl::PipelineOptions {
                    entry_point: Some((naga::ShaderStage::Compute, entry.clone())),
                    ..Default::default()
                },
            );
            let opts = hlsl::Options { shader_model: hlsl::ShaderModel::V6_2, ..Default::default() };
            let pipe = hlsl::PipelineOptions { entry_point: Some((naga::ShaderStage::Compute, entry.clone())) };
            let mut hlsl_src = String::new();
            let hlsl = hlsl::Writer::new(&mut hlsl_src, &opts, &pipe).write(&module, &info, None);
            if k.hardware_mma() {
                // wgpu exposes cooperative matrices on Vulkan only: naga 30 writes them to MSL
                // (unused: wgpu's Metal backend lacks the feature) and not to HLSL
                assert!(msl.is_ok(), "{k:?}: MSL: {:?}", msl.err());
                let e = hlsl.expect_err("naga 30 has no HLSL for cooperative matrices");
                assert!(format!("{e}").contains("CooperativeMatrix"), "{k:?}: HLSL: {e}");
                continue;
            }
            let (msl_src, _) = msl.unwrap_or_else(|e| panic!("{k:?}: MSL: {e}"));
            assert!(msl_src.contains("kernel"), "{k:?}: MSL has no kernel");
            hlsl.unwrap_or_else(|e| panic!("{k:?}: HLSL: {e}"));
            assert!(hlsl_src.contains("numthreads"), "{k:?}: HLSL has no compute entry");
        }
    }

    #[test]
    fn shaders_match_the_rust_declarations() {
        for k in Kernel::all() {
            let (module, _, _) = parse(&k);
            let mut layouter = naga::proc::Layouter::default();
            layouter.update(module.to_ctx()).unwrap();
            let mut found = vec![];
            let mut workgroup = 0u32;
            for (_, var) in module.global_variables.iter() {
                match var.space {
                    naga::AddressSpace::WorkGroup => workgroup += layouter[var.ty].size,
                    naga::AddressSpace::Uniform => {
                        let bind = var.binding.as_ref().unwrap();
                        found.push(Binding { slot: bind.binding, name: "", access: Access::Uniform });
                        // the uniform block: size and member offsets as in Rust
                        assert_eq!(layouter[var.ty].size as usize, std::mem::size_of::<Params>(), "{k:?}: Params size");
                        let naga::TypeInner::Struct { members, .. } = &module.types[var.ty].inner else {
                            panic!("{k:?}: uniform is not a struct")
                        };
                        let rust = params_offsets();
                        let wgsl: Vec<(String, u32)> =
                            members.iter().map(|m| (m.name.clone().unwrap_or_default(), m.offset)).collect();
                        assert_eq!(wgsl.len(), rust.len(), "{k:?}: Params members {wgsl:?} vs {rust:?}");
                        for ((wn, wo), (rn, ro)) in wgsl.iter().zip(&rust) {
                            assert_eq!((wn.as_str(), *wo), (*rn, *ro as u32), "{k:?}: Params member");
                        }
                    }
                    naga::AddressSpace::Storage { access } => {
                        let bind = var.binding.as_ref().unwrap();
                        let acc =
                            if access.contains(naga::StorageAccess::STORE) { Access::ReadWrite } else { Access::Read };
                        found.push(Binding { slot: bind.binding, name: "", access: acc });
                    }
                    _ => {}
                }
            }
            found.sort_by_key(|b| b.slot);
            let declared: Vec<(u32, Access)> = k.bindings().iter().map(|b| (b.slot, b.access)).collect();
            let found: Vec<(u32, Access)> = found.iter().map(|b| (b.slot, b.access)).collect();
            assert_eq!(found, declared, "{k:?}: bindings in WGSL vs Rust");
            assert_eq!(workgroup, k.workgroup_bytes(), "{k:?}: workgroup bytes in WGSL vs Rust");
        }
    }

    /// `Params` members and their byte offsets, in declaration order (the view members expanded).
    fn params_offsets() -> Vec<(&'static str, usize)> {
        macro_rules! offs {
            ($($f:ident),*) => { vec![$((stringify!($f), std::mem::offset_of!(Params, $f))),*] };
        }
        let mut v = offs!(
            bh0, nbh, r0, nr, heads, group, nq, nk, d, flags, split_len, idx0, start, out_stride, out_offset, wleft,
            wright, max_blocks, page_shift, _pad0, pre, kpre, post, post2, mscale, unit, ex, floor, zcap, cap_in,
            cap_out, cap_lim
        );
        let views = std::mem::offset_of!(Params, views);
        for i in 0..6 {
            v.push((["v0", "v1", "v2", "v3", "v4", "v5"][i], views + i * std::mem::size_of::<ViewParams>()));
        }
        v
    }

    #[test]
    fn headers_carry_every_constant_once() {
        for k in Kernel::all() {
            let src = k.source();
            for (name, _) in k.constants() {
                assert_eq!(src.matches(&format!("const {name}:")).count(), 1, "{k:?}: {name} defined once");
            }
        }
    }
}
