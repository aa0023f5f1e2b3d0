//! Host side of `shaders/attention_mma.wgsl`: fused f16 attention on 16x16x16 matrix fragments,
//! on tensor cores (cooperative matrices) or their emulated twin (CPU twin: `cpu::attention`).
//! Launched by `attention::record` (the variant `AttentionVariant::TensorCores`).

use super::attention::{CONTIGUOUS_BINDINGS, PAGED_BINDINGS};
use super::similarity_mma::Mma;
use super::{Binding, Variant};
use crate::caps::Caps;
use crate::kv_dtype::KvDType;
use crate::options::Loads;
use crate::shape::DType;

/// Query rows per workgroup the kernel can be built with (the shader's `BR`; one subgroup per
/// 16 rows), largest first: the order in which [`AttentionMmaKernel::choose`] tries them.
pub(crate) const ROWS: [u32; 3] = [64, 32, 16];
/// Keys per tile the kernel can be built with (the shader's `BC`), the default first.
pub(crate) const KEYS: [u32; 2] = [32, 64];
/// Largest head dim.
pub(crate) const MAX_DIM: usize = 128;

/// One variant of `shaders/attention_mma.wgsl`: storage dtype (f16; f32 inputs are rounded to
/// f16 as they are staged), head dim padded to a multiple of 16 (`dp`), where the fragments
/// run, and how Q, K, V are read while staging (4 elements at a time, as one vector load where
/// `loads` is `Vec4`), and whether K and V come from a paged cache. No split.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct AttentionMmaKernel {
    pub dtype: DType,
    pub dp: u32,
    pub mma: Mma,
    pub loads: Loads,
    /// K and V in a paged cache, read through its block table (else contiguous tensors).
    pub paged: bool,
    /// A row's maximum and sum by subgroup shuffles (else through workgroup memory).
    pub sg: bool,
    /// Query rows per workgroup (one of [`ROWS`]): 64 where the workgroup memory allows, fewer
    /// where it does not (head dims 96-128 on 32 KiB), the same WGSL either way.
    pub rows: u32,
    /// Keys per tile (one of [`KEYS`]): 32 unless configured (64 halves the barriers per key
    /// and needs more workgroup memory).
    pub keys: u32,
    /// Staging depth: 1 (each K or V tile loaded, then staged) or 2 (the next tile's loads
    /// issued before the current products and held in registers).
    pub stages: u32,
    /// Whether a row's z stays in registers between the softmax's two passes (else it is
    /// written back to workgroup memory and read again).
    pub softmax_regs: bool,
    /// The element types of K and V (a plain type is `dtype`'s; quantized: paged pools only,
    /// dequantized as they are staged).
    pub kv: [KvDType; 2],
}

/// Staging depths the kernel can be built with, the default first.
pub(crate) const STAGES: [u32; 2] = [1, 2];

impl Variant for AttentionMmaKernel {
    const NAME: &'static str = "attention_mma";
    const SOURCE: &'static str = include_str!("../../shaders/attention_mma.wgsl");
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
        let sgs = self.mma.subgroup();
        let tpr = self.threads() / self.rows;
        vec![
            ("WG", self.threads()),
            ("SGS", sgs),
            ("DP", self.dp),
            ("BR", self.rows),
            ("BC", self.keys),
            ("STAGES", self.stages),
            ("SMR", self.softmax_regs as u32),
            ("TPR", tpr),
            ("ROW_LANES", tpr),
            ("CPT", self.keys / tpr),
            ("NPRE", if self.stages == 2 { (self.keys * self.dp / 4).div_ceil(self.threads()) } else { 0 }),
        ]
    }
    /// Q, the K/V tile and the weights (f16); the scores (f32); the rows' scales; the key
    /// bounds and the rescale flag; without subgroups, the reduction buffer.
    fn workgroup_bytes(&self) -> u32 {
        let (qp, br, bc) = (self.dp + 8, self.rows, self.keys);
        let red = if self.sg { 0 } else { 8 * self.threads() };
        2 * (br * qp + bc * qp + br * (bc + 8)) + 4 * br * (bc + 4) + 4 * br + 16 + red
    }
    /// The loads of Q, K and V (quantized pools dequantized in registers, then staged as f16).
    fn generated(&self) -> String {
        super::loads::qkv(self.loads, self.kv[0], self.kv[1])
    }
    fn preludes(&self) -> Vec<&'static str> {
        vec![
            self.mma.prelude(),
            include_str!("../../shaders/masking.wgsl"),
            if self.paged {
                include_str!("../../shaders/kv_paged.wgsl")
            } else {
                include_str!("../../shaders/kv_contiguous.wgsl")
            },
            super::row_reductions(self.sg),
        ]
    }
    fn enables(&self) -> Vec<&'static str> {
        // f32 storage still stages f16 fragments
        let mut e = if self.dtype == DType::F32 { vec!["f16"] } else { vec![] };
        e.extend(self.mma.enables());
        e
    }
}

impl AttentionMmaKernel {
    /// Invocations per workgroup: one subgroup per 16 query rows.
    pub fn threads(&self) -> u32 {
        self.rows / 16 * self.mma.subgroup()
    }

    /// The variant for head dim `d` on `mma` reading with `loads`, with `keys` keys per tile:
    /// the most query rows per workgroup that the device runs, or why none fits (`d` over 128,
    /// or the device's workgroup memory or invocations). `Vec4` needs `d` a multiple of 4 and
    /// 4-aligned element offsets (the caller's check). Contiguous K and V (the launcher sets
    /// `paged`).
    pub fn choose(d: usize, keys: u32, mma: Mma, caps: &Caps, dtype: DType, loads: Loads) -> Result<Self, String> {
        let mut first_err = None;
        for rows in ROWS {
            match Self::with(d, rows, keys, mma, caps, dtype, loads) {
                Ok(k) => return Ok(k),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        Err(first_err.unwrap_or_default())
    }

    /// The variant for head dim `d` with `rows` query rows per workgroup and `keys` keys per
    /// tile, or why the device cannot run it.
    #[allow(clippy::too_many_arguments)]
    pub fn with(d: usize, rows: u32, keys: u32, mma: Mma, caps: &Caps, dtype: DType, loads: Loads) -> Result<Self, String> {
        if d > MAX_DIM {
            return Err(format!("the tensor-core kernel takes head dims up to {MAX_DIM} (got {d})"));
        }
        if !ROWS.contains(&rows) {
            return Err(format!("the tensor-core kernel takes {ROWS:?} query rows per workgroup (got {rows})"));
        }
        if !KEYS.contains(&keys) {
            return Err(format!("the tensor-core kernel takes {KEYS:?} keys per tile (got {keys})"));
        }
        let mut k = AttentionMmaKernel {
            dtype,
            dp: d.next_multiple_of(16).max(16) as u32,
            mma,
            loads,
            paged: false,
            sg: false,
            rows,
            keys,
            stages: STAGES[0],
            softmax_regs: false,
            kv: [dtype.into(); 2],
        };
        // a row's TPR invocations share a subgroup where subgroups are at least that wide
        let tpr = k.threads() / rows;
        k.sg = caps.subgroups && caps.subgroup_min_size >= tpr;
        if keys / tpr > 32 {
            return Err(format!(
                "the tensor-core kernel's softmax takes at most 32 keys per invocation: {keys} keys per tile need subgroups of at least {}",
                keys / 32 * 16
            ));
        }
        if k.workgroup_bytes() > caps.max_workgroup_storage {
            return Err(format!(
                "the tensor-core kernel at head dim {d} needs {} bytes of workgroup memory with {rows} query rows per workgroup and {keys} keys per tile, the device allows {}",
                k.workgroup_bytes(),
                caps.max_workgroup_storage
            ));
        }
        if k.threads() > caps.max_invocations {
            return Err(format!(
                "the tensor-core kernel needs {} invocations per workgroup, the device allows {}",
                k.threads(),
                caps.max_invocations
            ));
        }
        Ok(k)
    }

    /// This variant with staging depth `stages` (1 or 2) and the softmax's z in registers or
    /// not, or why not.
    pub fn pipelined(self, stages: u32, softmax_regs: bool) -> Result<Self, String> {
        if !STAGES.contains(&stages) {
            return Err(format!("the tensor-core kernel takes a staging depth of {STAGES:?} (got {stages})"));
        }
        Ok(AttentionMmaKernel { stages, softmax_regs, ..self })
    }

    /// What the self-check on hardware is run once for: everything that changes the kernel's
    /// body but the element type, the loads and where K and V live.
    pub fn class(&self) -> (u32, u32, u32, u32, bool) {
        (self.dp, self.rows, self.keys, self.stages, self.softmax_regs)
    }

    /// Every variant for head dim `d` that the device runs, most rows first.
    #[cfg(test)]
    pub fn candidates(d: usize, mma: Mma, caps: &Caps, dtype: DType, loads: Loads) -> Vec<Self> {
        let grid = ROWS.into_iter().flat_map(|r| KEYS.into_iter().map(move |k| (r, k)));
        grid.filter_map(|(r, k)| Self::with(d, r, k, mma, caps, dtype, loads).ok()).collect()
    }

    /// The variants on `mma` the naga tests validate: every head dim, element type, reduction,
    /// load and K/V source with each rows per workgroup at the default tile, and every tile
    /// option (keys per tile, staging depth, softmax placement, each a constant switch of the
    /// same body) with each rows per workgroup at the smallest and largest head dims.
    #[cfg(test)]
    pub fn all(mma: Mma) -> impl Iterator<Item = AttentionMmaKernel> {
        let of = move |dtype, dp, sg, loads, paged, rows, keys, stages, softmax_regs| AttentionMmaKernel {
            dtype,
            dp,
            mma,
            loads,
            paged,
            sg,
            rows,
            keys,
            stages,
            softmax_regs,
            kv: [dtype.into(); 2],
        };
        let mut v = vec![];
        for dtype in [DType::F16, DType::F32] {
            for dp in (1..=8).map(|i| 16 * i) {
                for sg in [false, true] {
                    for loads in [Loads::Vec4, Loads::Scalar] {
                        for paged in [false, true] {
                            for rows in ROWS {
                                v.push(of(dtype, dp, sg, loads, paged, rows, KEYS[0], STAGES[0], false));
                            }
                        }
                    }
                }
            }
        }
        for dp in [16, 128] {
            for sg in [false, true] {
                for paged in [false, true] {
                    for rows in ROWS {
                        for keys in KEYS {
                            for stages in STAGES {
                                for softmax_regs in [false, true] {
                                    v.push(of(DType::F16, dp, sg, Loads::Vec4, paged, rows, keys, stages, softmax_regs));
                                }
                            }
                        }
                    }
                }
            }
        }
        // quantized pools (the same loads at every tile: one head dim and rows)
        for kv in super::attention::quantized_pairs(DType::F16) {
            v.push(AttentionMmaKernel { kv, ..of(DType::F16, 64, true, Loads::Vec4, true, ROWS[0], KEYS[0], STAGES[0], false) });
        }
        v.into_iter()
    }
}
