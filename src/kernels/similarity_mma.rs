//! Host side of `shaders/similarity_mma.wgsl`: f16 similarity on 16x16x16 matrix fragments,
//! on tensor cores (cooperative matrices) or their emulated twin (CPU twin: `cpu::similarity`).

use super::similarity::epilogue_preludes;
use super::{Binding, Variant};
use crate::context::Context;
use crate::options::Similarity;
use crate::problem::{Operand, SimilarityProblem};
use crate::shape::{DType, Layout, Shape};

/// Where a fragment kernel's matrix operations run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Mma {
    /// Cooperative matrices (wgpu's `EXPERIMENTAL_COOPERATIVE_MATRIX`), with subgroups of this
    /// size.
    Hardware { subgroup: u32 },
    /// Plain WGSL over the same workgroup-memory layouts (`shaders/mma_emulated.wgsl`).
    Emulated,
}

impl Mma {
    /// The subgroup size the kernel is written for (the twin's virtual subgroups are 32 wide).
    pub fn subgroup(&self) -> u32 {
        match self {
            Mma::Hardware { subgroup } => *subgroup,
            Mma::Emulated => 32,
        }
    }

    /// The fragment prelude.
    pub fn prelude(&self) -> &'static str {
        match self {
            Mma::Hardware { .. } => include_str!("../../shaders/mma_hardware.wgsl"),
            Mma::Emulated => include_str!("../../shaders/mma_emulated.wgsl"),
        }
    }

    /// The WGSL extensions the prelude needs.
    pub fn enables(&self) -> Vec<&'static str> {
        match self {
            Mma::Hardware { .. } => vec!["wgpu_cooperative_matrix"],
            Mma::Emulated => vec![],
        }
    }
}

/// One variant of `shaders/similarity_mma.wgsl`: metric (0 dot, 1 cosine, 2 L2), vector output
/// stores, top-k's thresholded pass, and where the fragments run. f16 inputs only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct SimilarityMmaKernel {
    pub metric: u32,
    pub vec_out: bool,
    pub topk: bool,
    pub mma: Mma,
}

/// Output tile rows and columns, and the padded row pitches of the staged steps (32 head dims)
/// and of the sums (the shader's layout).
pub(crate) const BM: u32 = 64;
pub(crate) const BN: u32 = 64;
const AP: u32 = 40;
const CP: u32 = 68;

impl Variant for SimilarityMmaKernel {
    const NAME: &'static str = "similarity_mma";
    const SOURCE: &'static str = include_str!("../../shaders/similarity_mma.wgsl");
    fn bindings(&self) -> &'static [Binding] {
        // the same bindings as the SIMT kernel (the epilogue is shared)
        super::similarity::BINDINGS
    }
    fn dtype(&self) -> DType {
        DType::F16
    }
    fn constants(&self) -> Vec<(&'static str, u32)> {
        let sgs = self.mma.subgroup();
        vec![("WG", 4 * sgs), ("SGS", sgs), ("METRIC", self.metric), ("TOPK", self.topk as u32)]
    }
    /// The staged Q and K steps (f16) and the sums on their way to the epilogue (f32).
    fn workgroup_bytes(&self) -> u32 {
        2 * (BM + BN) * AP + 4 * BM * CP
    }
    fn preludes(&self) -> Vec<&'static str> {
        let mut v = vec![self.mma.prelude()];
        v.extend(epilogue_preludes(self.vec_out));
        v
    }
    fn enables(&self) -> Vec<&'static str> {
        self.mma.enables()
    }
}

impl SimilarityMmaKernel {
    /// Every variant on `mma`.
    #[cfg(test)]
    pub fn all(mma: Mma) -> impl Iterator<Item = SimilarityMmaKernel> {
        (0..3).flat_map(move |metric| {
            [(false, false), (true, false), (false, true), (true, true)]
                .into_iter()
                .map(move |(vec_out, topk)| SimilarityMmaKernel { metric, vec_out, topk, mma })
        })
    }
}

/// The self-check of the hardware path: a small similarity with tails in every dimension (2
/// heads, 70 queries, 90 keys, dim 40) on `mma` and on the SIMT kernel, with inputs whose
/// products and sums are exact in f32 (multiples of 1/4 up to 2), so the two must agree
/// bitwise. `Err` says how they differ, or what failed.
pub(crate) async fn self_check(ctx: &Context, mma: Mma) -> std::result::Result<(), String> {
    let run = async {
        let (qs, ks) = (Shape::new(1, 2, 70, 40), Shape::new(1, 2, 90, 40));
        let val = |i: usize, m: usize| half::f16::from_f32(((i * m) % 17) as f32 / 4.0 - 2.0);
        let q: Vec<half::f16> = (0..qs.numel()).map(|i| val(i, 7)).collect();
        let k: Vec<half::f16> = (0..ks.numel()).map(|i| val(i, 11)).collect();
        let (q, k) = (ctx.upload_async(&q, qs).await?, ctx.upload_async(&k, ks).await?);
        let p = SimilarityProblem::new(Operand::gpu(&q), Operand::gpu(&k), Similarity::Dot)?;
        let hw = ctx.zeros_async(p.out_shape(), Layout::Bhsd, DType::F32).await?;
        let simt = ctx.zeros_async(p.out_shape(), Layout::Bhsd, DType::F32).await?;
        let mut enc = ctx.encoder()?;
        super::similarity::record_with(ctx, &mut enc, &p, &q, &k, &hw, None, Some(mma)).await?;
        super::similarity::record_with(ctx, &mut enc, &p, &q, &k, &simt, None, None).await?;
        ctx.submit_and_download_async(enc, &[&hw, &simt]).await
    };
    let got = run.await.map_err(|e| e.to_string())?;
    if let Some(i) = got[0].iter().zip(&got[1]).position(|(a, b)| a != b) {
        return Err(format!("similarity score {i}: {} on tensor cores, {} on the SIMT kernel", got[0][i], got[1][i]));
    }
    attention_check(ctx, mma).await
}

/// The attention half of the self-check: causal f16 attention with GQA and tails (4 heads on 2,
/// 70 queries, 90 keys, dim 40) on `mma` and on the SIMT fused kernel; f16 weights and outputs
/// differ by rounding only (within 1e-2 of the largest output; a fault in the fragments, their
/// layout or the barriers is of the order of the outputs themselves).
async fn attention_check(ctx: &Context, mma: Mma) -> std::result::Result<(), String> {
    use super::attention::{choose_tile, record, KvSource, Resolved};
    let run = async {
        let (qs, ks) = (Shape::new(1, 4, 70, 40), Shape::new(1, 2, 90, 40));
        let val = |i: usize, m: usize| half::f16::from_f32(((i * m) % 23) as f32 / 11.0 - 1.0);
        let q: Vec<half::f16> = (0..qs.numel()).map(|i| val(i, 5)).collect();
        let k: Vec<half::f16> = (0..ks.numel()).map(|i| val(i, 7)).collect();
        let v: Vec<half::f16> = (0..ks.numel()).map(|i| val(i, 3)).collect();
        let (q, k, v) =
            (ctx.upload_async(&q, qs).await?, ctx.upload_async(&k, ks).await?, ctx.upload_async(&v, ks).await?);
        let opts = crate::options::AttentionOptions { causal: true, ..Default::default() };
        let p = ctx.attention_problem(&q, &k, &v, None, &opts)?;
        let tc = super::attention_mma::AttentionMmaKernel::choose(40, mma, ctx.caps(), DType::F16)
            .map_err(crate::error::Error::Unsupported)?;
        let simt = choose_tile(40, ctx.caps())?.kernel(DType::F16, false, crate::options::Loads::Scalar);
        let a = ctx.zeros_async(qs, Layout::Bhsd, DType::F16).await?;
        let b = ctx.zeros_async(qs, Layout::Bhsd, DType::F16).await?;
        let mut enc = ctx.encoder()?;
        record(ctx, &mut enc, &p, Resolved::TensorCores(tc), &q, KvSource::Tensors(&k, &v), None, &a, None).await?;
        record(ctx, &mut enc, &p, Resolved::Fused(simt), &q, KvSource::Tensors(&k, &v), None, &b, None).await?;
        ctx.submit_and_download_async(enc, &[&a, &b]).await
    };
    let got = run.await.map_err(|e| e.to_string())?;
    let scale = got[1].iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-3);
    match got[0]
        .iter()
        .zip(&got[1])
        .position(|(a, b)| (a - b).abs().partial_cmp(&(1e-2 * scale)) != Some(std::cmp::Ordering::Less))
    {
        None => Ok(()),
        Some(i) => {
            Err(format!("attention output {i}: {} on tensor cores, {} on the SIMT kernel", got[0][i], got[1][i]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::ContextOptions;
    use crate::tensor_cores::TensorCores;

    /// The self-check's comparison on the emulated twin (the hardware path runs it on the
    /// device): the two kernels agree bitwise on its exact data.
    #[test]
    #[cfg_attr(cpu_only_tests, ignore = "WGPU_ATTENTION_TESTS=cpu-only: needs a GPU adapter")]
    fn self_check_passes_on_the_twin() {
        let ctx = Context::with_options_blocking(ContextOptions {
            tensor_cores: TensorCores::Emulated,
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("GPU test found no adapter ({e})"));
        assert_eq!(pollster::block_on(self_check(&ctx, Mma::Emulated)), Ok(()));
    }
}
