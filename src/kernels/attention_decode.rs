//! Host side of `shaders/attention_decode.wgsl`: attention for few query rows against many keys
//! (decode), as split-K partials that `attention_merge` combines (CPU twin: `cpu::attention`).
//! The launcher is shared with the fused kernel (`attention::record`); this file holds the
//! variant type and the pure choices of rows per workgroup and split.

use super::{b, Access, Binding, Variant, PARAMS};
use crate::caps::Caps;
use crate::kv_dtype::KvDType;
use crate::options::Loads;
use crate::shape::DType;

/// Threads per workgroup: 16 key groups of 8 lanes.
pub(crate) const WG: u32 = 128;
/// Key groups per workgroup.
pub(crate) const NG: u32 = WG / 8;

/// One variant of `shaders/attention_decode.wgsl`: storage dtype, head dim padded to 32/64/128
/// (`dp`), rows per workgroup (`rows`: 1, 2 or 4), row reductions by subgroup shuffles or through
/// workgroup memory (`sg`), vector or scalar loads, contiguous K/V or a paged cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct DecodeKernel {
    pub dtype: DType,
    pub dp: u32,
    pub rows: u32,
    pub sg: bool,
    pub loads: Loads,
    pub paged: bool,
    /// The element types of K and V (a plain type is `dtype`'s; quantized: paged pools only).
    pub kv: [KvDType; 2],
}

impl Variant for DecodeKernel {
    const NAME: &'static str = "attention_decode";
    const SOURCE: &'static str = include_str!("../../shaders/attention_decode.wgsl");
    fn bindings(&self) -> &'static [Binding] {
        const CONTIGUOUS: [Binding; 8] = [
            PARAMS,
            b(1, "q", Access::Read),
            b(2, "mask", Access::Read),
            b(3, "key_lengths", Access::Read),
            b(4, "k", Access::Read),
            b(5, "v", Access::Read),
            b(7, "partials", Access::ReadWrite),
            b(8, "heads", Access::Read),
        ];
        const PAGED: [Binding; 9] = [
            PARAMS,
            b(1, "q", Access::Read),
            b(2, "mask", Access::Read),
            b(3, "seq_lens", Access::Read),
            b(4, "k_pages", Access::Read),
            b(5, "v_pages", Access::Read),
            b(7, "partials", Access::ReadWrite),
            b(8, "heads", Access::Read),
            b(9, "block_table", Access::Read),
        ];
        if self.paged {
            &PAGED
        } else {
            &CONTIGUOUS
        }
    }

    fn dtype(&self) -> DType {
        self.dtype
    }

    fn constants(&self) -> Vec<(&'static str, u32)> {
        vec![
            ("WG", WG),
            ("R", self.rows),
            ("DP", self.dp),
            ("VEC", if self.loads == Loads::Vec4 { 4 } else { 1 }),
            ("ROW_LANES", 8),
        ]
    }

    /// The staged rows of Q, the groups' maxima and sums, their accumulators (for the merge),
    /// the reduction buffer (without subgroups) and the two key bounds.
    fn workgroup_bytes(&self) -> u32 {
        let red = if self.sg { 0 } else { 2 * WG };
        4 * (self.rows * self.dp + 2 * self.rows * NG + NG * self.dp + red) + 8
    }

    fn preludes(&self) -> Vec<&'static str> {
        super::attention::preludes(self.paged, self.sg)
    }
    fn generated(&self) -> String {
        super::loads::qkv(self.loads, self.kv[0], self.kv[1])
    }
}

impl DecodeKernel {
    /// Every variant, for `dtype`, and paged variants over quantized pools (vector loads of Q).
    #[cfg(test)]
    pub fn all(dtype: DType) -> impl Iterator<Item = DecodeKernel> {
        let plain = [32u32, 64, 128].into_iter().flat_map(move |dp| {
            [1u32, 2, 4].into_iter().flat_map(move |rows| {
                [false, true].into_iter().flat_map(move |sg| {
                    [Loads::Vec4, Loads::Scalar].into_iter().flat_map(move |loads| {
                        [false, true]
                            .into_iter()
                            .map(move |paged| DecodeKernel { dtype, dp, rows, sg, loads, paged, kv: [dtype.into(); 2] })
                    })
                })
            })
        });
        // (the quantized loads are the same text for every tile: one head dim and rows)
        let quantized = super::attention::quantized_pairs(dtype).into_iter().map(move |kv| DecodeKernel {
            dtype,
            dp: 128,
            rows: 4,
            sg: true,
            loads: Loads::Vec4,
            paged: true,
            kv,
        });
        plain.chain(quantized)
    }
}

/// The decode kernel for head dim `d` with `rows` combined query rows per key/value head (query
/// heads per key/value head × queries), or why it does not apply: head dims up to 128, and the
/// workgroup memory of the device.
pub(crate) fn choose(d: usize, rows: usize, caps: &Caps, dtype: DType, loads: Loads) -> Result<DecodeKernel, String> {
    if d > 128 {
        return Err(format!("the decode kernel takes head dims up to 128 (got {d})"));
    }
    if caps.max_invocations < WG {
        return Err(format!("the decode kernel needs {WG} invocations per workgroup"));
    }
    let dp = [32u32, 64, 128].into_iter().find(|&p| p as usize >= d).unwrap_or(128);
    let rows = match rows {
        0 | 1 => 1,
        2 => 2,
        _ => 4,
    };
    let sg = super::attention::subgroups_of_8(caps);
    let k = DecodeKernel { dtype, dp, rows, sg, loads, paged: false, kv: [dtype.into(); 2] };
    if k.workgroup_bytes() > caps.max_workgroup_storage {
        return Err(format!(
            "the decode kernel at head dim {d} needs {} bytes of workgroup memory, the device allows {}",
            k.workgroup_bytes(),
            caps.max_workgroup_storage
        ));
    }
    Ok(k)
}

/// Keys per split for `blocks` workgroups per split (batch × key/value heads × row blocks) over
/// `nk` keys: enough splits that about 1024 workgroups share the keys (several per compute unit
/// of a large GPU; wgpu does not report the count), each taking at least 256 keys, at most 256
/// splits, and the partials (`partial_row_bytes` per split) within `max_binding`.
pub(crate) fn split_len(blocks: usize, nk: usize, partial_row_bytes: u64, max_binding: u64) -> usize {
    let by_binding = (max_binding / partial_row_bytes.max(1)).max(1) as usize;
    let splits = 1024usize.div_ceil(blocks.max(1)).min(nk / 256).clamp(1, 256).min(by_binding);
    nk.div_ceil(splits).div_ceil(16).max(1) * 16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_fits_and_splits() {
        let lavapipe = Caps { max_workgroup_storage: 32 << 10, max_invocations: 1024, ..Caps::baseline() };
        for d in [1, 33, 64, 128] {
            for rows in [1, 2, 3, 4, 8] {
                let k = choose(d, rows, &lavapipe, DType::F32, Loads::Scalar).unwrap();
                assert!(k.workgroup_bytes() <= 32 << 10);
                assert!(DecodeKernel::all(DType::F32).any(|x| x == k));
            }
        }
        assert!(choose(129, 1, &lavapipe, DType::F32, Loads::Scalar).unwrap_err().contains("up to 128"));
        // 32 heads x 32k keys: 32 splits of 1024 keys
        assert_eq!(split_len(32, 32768, 1 << 10, 1 << 30), 1024);
        // few keys: one split
        assert_eq!(split_len(8, 300, 1 << 10, 1 << 30), 304);
        // a small binding limits the splits
        let l = split_len(1, 1 << 20, 1 << 20, 4 << 20);
        assert!((1usize << 20).div_ceil(l) <= 4);
    }
}
