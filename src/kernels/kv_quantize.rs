//! Host side of `shaders/kv_quantize.wgsl`: new tokens' K or V quantized into one page pool
//! (q8_0, q4_0, fp8 e4m3) through the block table (CPU twin: `cpu::append_kv`, whose
//! quantizers give the same bits).

use super::{b, Access, Binding, Variant, PARAMS};
use crate::kv_dtype::KvDType;
use crate::shape::DType;

/// Threads per workgroup (one block of 32 values, or one word of 4 fp8 values, each).
pub(crate) const WG: u32 = 64;

/// The quantizing append for one input dtype and one quantized pool type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct KvQuantizeKernel {
    pub dtype: DType,
    pub pool: KvDType,
}

impl KvQuantizeKernel {
    /// Values per invocation.
    pub fn values_per_invocation(&self) -> u32 {
        if self.pool == KvDType::Fp8E4m3 {
            4
        } else {
            crate::kv_dtype::QK as u32
        }
    }

    /// Every variant.
    #[cfg(test)]
    pub fn all() -> impl Iterator<Item = KvQuantizeKernel> {
        [DType::F32, DType::F16].into_iter().flat_map(|dtype| {
            [KvDType::Q8_0, KvDType::Q4_0, KvDType::Fp8E4m3]
                .into_iter()
                .map(move |pool| KvQuantizeKernel { dtype, pool })
        })
    }
}

impl Variant for KvQuantizeKernel {
    const NAME: &'static str = "kv_quantize";
    const SOURCE: &'static str = include_str!("../../shaders/kv_quantize.wgsl");

    fn bindings(&self) -> &'static [Binding] {
        const BINDINGS: [Binding; 5] = [
            PARAMS,
            b(1, "new", Access::Read),
            b(3, "seq_lens", Access::Read),
            b(4, "block_table", Access::Read),
            b(5, "pool", Access::ReadWrite),
        ];
        &BINDINGS
    }
    fn dtype(&self) -> DType {
        self.dtype
    }
    fn constants(&self) -> Vec<(&'static str, u32)> {
        vec![("WG", WG), ("QT", self.pool.code()), ("GV", self.values_per_invocation())]
    }
    fn workgroup_bytes(&self) -> u32 {
        0
    }
}
