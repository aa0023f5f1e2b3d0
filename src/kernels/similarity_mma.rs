//! Host side of `shaders/similarity_mma.wgsl`: f16 similarity on 16x16x16 matrix fragments,
//! on tensor cores (cooperative matrices) or their emulated twin (CPU twin: `cpu::similarity`).

use super::similarity::epilogue_preludes;
use super::{Binding, Variant};
use crate::shape::DType;

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

/// One variant of `shaders/similarity_mma.wgsl`: metric (0 dot, 1 cosine, 2 L2), vector loads of
/// Q and K (`vec_in`: a head dim that is a multiple of 4 and 4-aligned views), vector output
/// stores, top-k's thresholded pass, and where the fragments run. f16 inputs only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct SimilarityMmaKernel {
    pub metric: u32,
    pub vec_in: bool,
    pub vec_out: bool,
    pub topk: bool,
    pub mma: Mma,
}

/// Output tile rows and columns, and the padded row pitches of the staged steps (32 head dims)
/// and of the sums (the shader's layout).
pub(crate) const BM: u32 = 64;
pub(crate) const BN: u32 = 64;
pub(crate) const AP: u32 = 40;
pub(crate) const CP: u32 = 68;

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
        let mut v = vec![
            self.mma.prelude(),
            if self.vec_in {
                include_str!("../../shaders/qk_vec4.wgsl")
            } else {
                include_str!("../../shaders/qk_scalar.wgsl")
            },
        ];
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
            [(false, false), (true, false), (false, true), (true, true)].into_iter().flat_map(move |(vec_out, topk)| {
                [false, true].into_iter().map(move |vec_in| SimilarityMmaKernel { metric, vec_in, vec_out, topk, mma })
            })
        })
    }
}
