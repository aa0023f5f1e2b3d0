//! Host side of `shaders/attention.wgsl` (fused and split-K attention; CPU twin:
//! `cpu::attention`): the variant type, the pure choice of variant, tile and split, and the
//! launcher.

use super::{b, Access, Binding, Variant, PARAMS};
use crate::caps::Caps;
use crate::error::{Error, Result};
use crate::kv_dtype::KvDType;
use crate::options::Loads;
use crate::shape::DType;

/// Threads per workgroup.
pub(crate) const WG: u32 = 256;
/// Query rows per workgroup.
pub(crate) const BR: u32 = 64;
/// Keys per tile.
pub(crate) const BC: u32 = 64;

/// One variant of `shaders/attention.wgsl`: storage dtype, head dim padded to 32/64/128/256
/// (`dp`), the head-dim chunk of the Q/K tiles (`kc`), keys per V chunk (`vk`) and keys per tile
/// (`bc`: 64, or 32 on devices with 16 KiB) that size its workgroup memory, row reductions by
/// subgroup shuffles or through workgroup memory (`sg`),
/// split-K or not, vector or scalar loads, contiguous K/V or a paged cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct AttentionKernel {
    pub dtype: DType,
    pub dp: u32,
    pub kc: u32,
    pub vk: u32,
    pub bc: u32,
    pub sg: bool,
    pub split: bool,
    pub loads: Loads,
    pub paged: bool,
    /// The element types of K and V (a plain type is `dtype`'s; quantized: paged pools only).
    pub kv: [KvDType; 2],
}

/// The bindings of the fused kernels over contiguous K and V (also the tensor-core kernel's).
pub(crate) const CONTIGUOUS_BINDINGS: [Binding; 9] = [
    PARAMS,
    b(1, "q", Access::Read),
    b(2, "mask", Access::Read),
    b(3, "key_lengths", Access::Read),
    b(4, "k", Access::Read),
    b(5, "v", Access::Read),
    b(6, "out", Access::ReadWrite),
    b(7, "lse", Access::ReadWrite),
    b(8, "heads", Access::Read),
];

/// The bindings of the fused kernels over a paged cache.
pub(crate) const PAGED_BINDINGS: [Binding; 10] = [
    PARAMS,
    b(1, "q", Access::Read),
    b(2, "mask", Access::Read),
    b(3, "seq_lens", Access::Read),
    b(4, "k_pages", Access::Read),
    b(5, "v_pages", Access::Read),
    b(6, "out", Access::ReadWrite),
    b(7, "lse", Access::ReadWrite),
    b(8, "heads", Access::Read),
    b(9, "block_table", Access::Read),
];

impl Variant for AttentionKernel {
    const NAME: &'static str = "attention";
    const SOURCE: &'static str = include_str!("../../shaders/attention.wgsl");
    fn bindings(&self) -> &'static [Binding] {
        if self.paged {
            &PAGED_BINDINGS
        } else {
            &CONTIGUOUS_BINDINGS
        }
    }

    fn dtype(&self) -> DType {
        self.dtype
    }

    fn constants(&self) -> Vec<(&'static str, u32)> {
        vec![
            ("WG", WG),
            ("BR", BR),
            ("BC", self.bc),
            ("KC", self.kc),
            ("VK", self.vk),
            ("DP", self.dp),
            ("NV", self.dp / 32),
            ("SG", self.sg as u32),
            ("SPLIT", self.split as u32),
            ("VEC", if self.loads == Loads::Vec4 { 4 } else { 1 }),
            ("ROW_LANES", 8),
        ]
    }

    /// `Qs` (KC x (BR + 4)), the shared K/V chunk region, `Ps` (BC x (BR + 4)), the reduction
    /// buffer (without subgroups) and the two key bounds.
    fn workgroup_bytes(&self) -> u32 {
        let kv = (self.kc * (self.bc + 4)).max(self.vk * self.dp);
        let red = if self.sg { 0 } else { 2 * WG };
        4 * (self.kc * (BR + 4) + kv + self.bc * (BR + 4) + red) + 32
    }

    fn preludes(&self) -> Vec<&'static str> {
        preludes(self.paged, self.sg)
    }
    fn generated(&self) -> String {
        super::loads::qkv(self.loads, self.kv[0], self.kv[1])
    }
}

/// The preludes of the attention kernels (fused and decode): the score rules, where K and V
/// live, and the row reductions (the Q/K/V loads are rendered: `kernels/loads.rs`).
pub(crate) fn preludes(paged: bool, sg: bool) -> Vec<&'static str> {
    vec![
        include_str!("../../shaders/masking.wgsl"),
        if paged {
            include_str!("../../shaders/kv_paged.wgsl")
        } else {
            include_str!("../../shaders/kv_contiguous.wgsl")
        },
        super::row_reductions(sg),
    ]
}

/// Head dim `d` padded to a supported width.
pub(crate) fn padded_dim(d: usize) -> u32 {
    [32u32, 64, 128, 256].into_iter().find(|&p| p as usize >= d).unwrap_or(256)
}

/// The tile's workgroup-memory sizes for padded head dim `dp`, larger first: (head-dim chunk of
/// Q and K, keys per V chunk, keys per tile). Larger chunks mean fewer barriers per key; the
/// last fits 16 KiB (WebGPU's default limit).
pub(crate) fn chunkings(dp: u32) -> [(u32, u32, u32); 3] {
    [(32.min(dp), (4096 / dp).min(BC), BC), (16, (2048 / dp).min(BC), BC), (8, (512 / dp).min(32), 32)]
}

/// The shape of the fused kernel's tile on a device: padded head dim, chunking, reductions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tile {
    pub dp: u32,
    pub kc: u32,
    pub vk: u32,
    pub bc: u32,
    pub sg: bool,
}

impl Tile {
    pub(crate) fn kernel(self, dtype: DType, split: bool, loads: Loads) -> AttentionKernel {
        let Tile { dp, kc, vk, bc, sg } = self;
        AttentionKernel { dtype, dp, kc, vk, bc, sg, split, loads, paged: false, kv: [dtype.into(); 2] }
    }
}

impl AttentionKernel {
    /// Every variant [`choose_tile`] can return, for `dtype`, and paged variants over quantized
    /// pools (vector loads of Q, head dim 32, with and without split).
    #[cfg(test)]
    pub fn all(dtype: DType) -> impl Iterator<Item = AttentionKernel> {
        let plain = [32u32, 64, 128, 256].into_iter().flat_map(move |dp| {
            chunkings(dp).into_iter().flat_map(move |(kc, vk, bc)| {
                [false, true].into_iter().flat_map(move |sg| {
                    [false, true].into_iter().flat_map(move |split| {
                        [Loads::Vec4, Loads::Scalar].into_iter().flat_map(move |loads| {
                            [false, true].into_iter().map(move |paged| AttentionKernel {
                                dtype,
                                dp,
                                kc,
                                vk,
                                bc,
                                sg,
                                split,
                                loads,
                                paged,
                                kv: [dtype.into(); 2],
                            })
                        })
                    })
                })
            })
        });
        // (the quantized loads are the same text at every tile: one head dim, both splits)
        let quantized = [false, true].into_iter().flat_map(move |split| {
            let (kc, vk, bc) = chunkings(32)[0];
            quantized_pairs(dtype).into_iter().map(move |kv| AttentionKernel {
                dtype,
                dp: 32,
                kc,
                vk,
                bc,
                sg: true,
                split,
                loads: Loads::Vec4,
                paged: true,
                kv,
            })
        });
        plain.chain(quantized)
    }
}

/// The pairs of K and V types the shader tests build over quantized pools.
#[cfg(test)]
pub(crate) fn quantized_pairs(dtype: DType) -> [[KvDType; 2]; 4] {
    [
        [KvDType::Q8_0, KvDType::Q8_0],
        [KvDType::Q4_0, KvDType::Q4_0],
        [KvDType::Fp8E4m3, KvDType::Fp8E4m3],
        [KvDType::Q8_0, dtype.into()],
    ]
}

/// Whether the kernels may reduce over 8 consecutive invocations with subgroup operations:
/// the device has subgroups and they are never narrower than 8 lanes.
pub(crate) fn subgroups_of_8(caps: &Caps) -> bool {
    caps.subgroups && caps.subgroup_min_size >= 8
}

/// The tile for head dim `d` with the head-dim chunk `chunk` (32, 16 or 8; `AttentionConfig::
/// simt_chunk`), or the larger chunking that fits the device's workgroup memory where `None`.
pub(crate) fn choose_tile_with(d: usize, caps: &Caps, chunk: Option<u32>) -> Result<Tile> {
    let Some(kc) = chunk else { return choose_tile(d, caps) };
    let largest = choose_tile(d, caps)?;
    let dp = padded_dim(d);
    let Some((kc, vk, bc)) = chunkings(dp).into_iter().find(|c| c.0 == kc) else {
        return Err(Error::Unsupported(format!(
            "config.simt_chunk: the fused kernel's head-dim chunks are 32, 16 and 8 (got {kc}; at head dim {d} 32 is {})",
            chunkings(dp)[0].0
        )));
    };
    let t = Tile { dp, kc, vk, bc, sg: largest.sg };
    let bytes = t.kernel(DType::F32, false, Loads::Scalar).workgroup_bytes();
    if bytes > caps.max_workgroup_storage {
        return Err(Error::Unsupported(format!(
            "config.simt_chunk: the fused kernel at head dim {d} with chunk {kc} needs {bytes} bytes of workgroup memory, the device allows {}",
            caps.max_workgroup_storage
        )));
    }
    Ok(t)
}

/// The tile for head dim `d`: the larger chunking where it fits the device's workgroup memory.
pub(crate) fn choose_tile(d: usize, caps: &Caps) -> Result<Tile> {
    if caps.max_invocations < WG {
        return Err(Error::Unsupported(format!(
            "fused attention needs {WG} invocations per workgroup, the device allows {}",
            caps.max_invocations
        )));
    }
    let dp = padded_dim(d);
    let sg = subgroups_of_8(caps);
    let tiles = chunkings(dp).map(|(kc, vk, bc)| Tile { dp, kc, vk, bc, sg });
    let bytes = |t: &Tile| t.kernel(DType::F32, false, Loads::Scalar).workgroup_bytes();
    tiles.iter().find(|t| bytes(t) <= caps.max_workgroup_storage).copied().ok_or_else(|| {
        Error::Unsupported(format!(
            "fused attention at head dim {d} needs {} bytes of workgroup memory, the device allows {}",
            bytes(&tiles[2]),
            caps.max_workgroup_storage
        ))
    })
}

/// Keys per split for split-K attention, or `None` to run unsplit: used when there are few
/// query blocks and many keys, so that at least ~256 workgroups share the keys, each taking at
/// least 256 keys (at most 64 splits).
pub(crate) fn split_len(slices: usize, row_blocks: usize, nk: usize) -> Option<usize> {
    let blocks = slices * row_blocks;
    if blocks >= 256 || nk < 1024 {
        return None;
    }
    let splits = 256usize.div_ceil(blocks).min(nk / 256).min(64);
    if splits < 2 {
        return None;
    }
    Some(nk.div_ceil(splits).div_ceil(BC as usize) * BC as usize)
}

/// Keys per split when split-K is forced: two splits (one when there are at most `BC` keys).
pub(crate) fn forced_split_len(nk: usize) -> usize {
    nk.div_ceil(2).div_ceil(BC as usize).max(1) * BC as usize
}
