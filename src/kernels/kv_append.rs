//! Host side of `shaders/kv_append.wgsl`: new tokens' K and V written into a paged cache
//! through the block table (CPU twin: `cpu::append_kv`).

use super::{b, Access, Binding, Variant, PARAMS};
use crate::shape::DType;

/// Threads per workgroup (one element each).
pub(crate) const WG: u32 = 256;

/// The append kernel for one storage dtype, writing K, V or both (`write`: a quantized pool is
/// written by `kv_quantize` instead).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct KvAppendKernel {
    pub dtype: DType,
    pub write: [bool; 2],
}

impl Variant for KvAppendKernel {
    const NAME: &'static str = "kv_append";
    const SOURCE: &'static str = include_str!("../../shaders/kv_append.wgsl");

    fn bindings(&self) -> &'static [Binding] {
        const BINDINGS: [Binding; 7] = [
            PARAMS,
            b(1, "k_new", Access::Read),
            b(2, "v_new", Access::Read),
            b(3, "seq_lens", Access::Read),
            b(4, "block_table", Access::Read),
            b(5, "k_pages", Access::ReadWrite),
            b(6, "v_pages", Access::ReadWrite),
        ];
        &BINDINGS
    }
    fn dtype(&self) -> DType {
        self.dtype
    }
    fn constants(&self) -> Vec<(&'static str, u32)> {
        vec![("WG", WG), ("WK", self.write[0] as u32), ("WV", self.write[1] as u32)]
    }
    fn workgroup_bytes(&self) -> u32 {
        0
    }
}

