//! Host side of `shaders/attention.wgsl` (fused and split-K attention; CPU twin:
//! `cpu::attention`): the variant type, the pure choice of variant, tile and split, and the
//! launcher.

use super::attention_decode::{self, DecodeKernel};
use super::attention_merge::{self, MergeKernel};
use super::attention_mma::{self, AttentionMmaKernel};
use super::similarity_mma::Mma;
use super::{b, flags, Access, Binding, Kernel, Params, ScoreArgs, Variant, PARAMS};
use crate::caps::Caps;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::options::{AttentionVariant, Loads};
use crate::paged::PagedKvCache;
use crate::plan::{Grid, Rows};
use crate::problem::AttentionProblem;
use crate::record::{Arg, Launch};
use crate::shape::{DType, Layout, Shape};
use crate::tensor::{Mask, Tensor};

/// Threads per workgroup.
const WG: u32 = 256;
/// Query rows per workgroup.
pub(crate) const BR: u32 = 64;
/// Keys per tile.
const BC: u32 = 64;

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
        4 * (self.kc * (BR + 4) + kv + self.bc * (BR + 4) + red) + 8
    }

    fn preludes(&self) -> Vec<&'static str> {
        preludes(self.loads, self.paged, self.sg)
    }
}

/// The preludes of the attention kernels (fused and decode): the score rules, Q/K/V loads,
/// where K and V live, and the row reductions.
pub(crate) fn preludes(loads: Loads, paged: bool, sg: bool) -> Vec<&'static str> {
    vec![
        include_str!("../../shaders/masking.wgsl"),
        match loads {
            Loads::Vec4 => include_str!("../../shaders/qkv_vec4.wgsl"),
            Loads::Scalar => include_str!("../../shaders/qkv_scalar.wgsl"),
        },
        if paged {
            include_str!("../../shaders/kv_paged.wgsl")
        } else {
            include_str!("../../shaders/kv_contiguous.wgsl")
        },
        if sg {
            include_str!("../../shaders/rows_subgroup.wgsl")
        } else {
            include_str!("../../shaders/rows_workgroup.wgsl")
        },
    ]
}

/// Head dim `d` padded to a supported width.
fn padded_dim(d: usize) -> u32 {
    [32u32, 64, 128, 256].into_iter().find(|&p| p as usize >= d).unwrap_or(256)
}

/// The tile's workgroup-memory sizes for padded head dim `dp`, larger first: (head-dim chunk of
/// Q and K, keys per V chunk, keys per tile). Larger chunks mean fewer barriers per key; the
/// last fits 16 KiB (WebGPU's default limit).
fn chunkings(dp: u32) -> [(u32, u32, u32); 3] {
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
        AttentionKernel { dtype, dp, kc, vk, bc, sg, split, loads, paged: false }
    }
}

impl AttentionKernel {
    /// Every variant [`choose_tile`] can return, for `dtype`.
    #[cfg(test)]
    pub fn all(dtype: DType) -> impl Iterator<Item = AttentionKernel> {
        [32u32, 64, 128, 256].into_iter().flat_map(move |dp| {
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
                            })
                        })
                    })
                })
            })
        })
    }
}

/// Whether the kernels may reduce over 8 consecutive invocations with subgroup operations:
/// the device has subgroups and they are never narrower than 8 lanes.
pub(crate) fn subgroups_of_8(caps: &Caps) -> bool {
    caps.subgroups && caps.subgroup_min_size >= 8
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
fn forced_split_len(nk: usize) -> usize {
    nk.div_ceil(2).div_ceil(BC as usize).max(1) * BC as usize
}

/// What an attention call will run: the variant (never `Auto`) and its parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AttentionPlan {
    /// The variant that runs.
    pub variant: AttentionVariant,
    /// Query rows per workgroup (fused and split-K; decode: combined rows of the query heads that
    /// share a key/value head; 0 for unfused).
    pub rows_per_workgroup: usize,
    /// Key splits (1 unless split-K or decode).
    pub splits: usize,
    /// Keys per split (split-K; otherwise the key count).
    pub keys_per_split: usize,
    /// Workgroup memory of the main kernel, bytes.
    pub workgroup_bytes: u32,
    /// Scratch memory the call allocates, bytes (split-K partials; unfused scores).
    pub scratch_bytes: u64,
    /// Why this variant (for `Auto`) or that the forced variant fits.
    pub reason: String,
}

/// The variant that runs, with its kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Resolved {
    Fused(AttentionKernel),
    SplitK { kernel: AttentionKernel, split_len: usize, splits: usize },
    Decode { kernel: DecodeKernel, split_len: usize, splits: usize },
    TensorCores(AttentionMmaKernel),
    Unfused,
}

/// f16's largest finite value: the bound on f32 inputs converted for the tensor cores.
const F16_MAX: f32 = 65504.0;

/// Where a call could run on matrix fragments (f16 inputs on a context with tensor cores or
/// their twin), or why not.
pub(crate) type TensorCoreChoice = std::result::Result<Mma, String>;

/// Combined query rows per key/value head (query heads per key/value head × queries) up to which
/// `Auto` chooses the decode kernel.
const DECODE_ROWS: usize = 16;

/// Chooses (or checks a forced) variant for `p` on a device with `caps`. `aligned` says whether
/// the Q, K and V element offsets are multiples of 4 (vector loads); `lse` whether the
/// log-sum-exp is wanted; `whole` whether every input buffer fits one binding (the decode kernel
/// runs as one dispatch over whole buffers); `tc` where matrix fragments run for this call, if
/// anywhere. Pure: no device.
pub(crate) fn resolve(
    p: &AttentionProblem,
    caps: &Caps,
    aligned: bool,
    lse: bool,
    paged: bool,
    whole: bool,
    tc: &TensorCoreChoice,
) -> Result<(Resolved, AttentionPlan)> {
    let d = p.dims;
    let vec4_ok = d.d.is_multiple_of(4) && aligned;
    let auto_loads = if vec4_ok { Loads::Vec4 } else { Loads::Scalar };
    let check_loads = |loads: Loads| -> Result<()> {
        if loads == Loads::Vec4 && !vec4_ok {
            return Err(Error::Unsupported(format!(
                "{} needs a head dim that is a multiple of 4 (got {}) and Q, K, V element offsets that are multiples of 4",
                AttentionVariant::Fused(Loads::Vec4).name(),
                d.d
            )));
        }
        Ok(())
    };
    let partial_bytes = |splits: usize| (splits * d.slices() * d.nq * (d.d + 2) * 4) as u64;
    let unfused = |reason: String| -> Result<(Resolved, AttentionPlan)> {
        if paged {
            return Err(Error::Unsupported(format!("the unfused variant does not read a paged cache ({reason})")));
        }
        if lse {
            return Err(Error::Unsupported(format!("the unfused variant does not produce the log-sum-exp ({reason})")));
        }
        let scores = (d.slices() * d.nq * d.nk * 4) as u64;
        Ok((
            Resolved::Unfused,
            AttentionPlan {
                variant: AttentionVariant::Unfused,
                rows_per_workgroup: 0,
                splits: 1,
                keys_per_split: d.nk,
                workgroup_bytes: super::similarity::SimilarityKernel {
                    dtype: p.dtype,
                    metric: 0,
                    vec_out: false,
                    topk: false,
                }
                .workgroup_bytes(),
                scratch_bytes: 2 * scores,
                reason,
            },
        ))
    };
    let fused = |loads: Loads, split: Option<usize>, reason: String| -> Result<(Resolved, AttentionPlan)> {
        let kernel = choose_tile(d.d, caps)?.kernel(p.dtype, split.is_some(), loads);
        let (resolved, splits, keys) = match split {
            Some(len) => {
                // (one split, empty, when every paged sequence is empty)
                let splits = d.nk.div_ceil(len).max(1);
                (Resolved::SplitK { kernel, split_len: len, splits }, splits, len)
            }
            None => (Resolved::Fused(kernel), 1, d.nk),
        };
        let variant = if split.is_some() { AttentionVariant::SplitK(loads) } else { AttentionVariant::Fused(loads) };
        Ok((
            resolved,
            AttentionPlan {
                variant,
                rows_per_workgroup: BR as usize,
                splits,
                keys_per_split: keys,
                workgroup_bytes: kernel.workgroup_bytes(),
                scratch_bytes: if split.is_some() { partial_bytes(splits) } else { 0 },
                reason,
            },
        ))
    };
    // the decode kernel: rows of every query head of a key/value head per workgroup, split-K
    let decode = |loads: Loads, reason: String| -> std::result::Result<(Resolved, AttentionPlan), String> {
        if !whole {
            return Err("the decode kernel binds whole buffers, and an input is over the binding limit".into());
        }
        let rows = d.group() * d.nq;
        let mut kernel = attention_decode::choose(d.d, rows, caps, p.dtype, loads)?;
        kernel.paged = paged;
        let row_blocks = rows.div_ceil(kernel.rows as usize);
        let blocks = d.batch * d.kv_heads * row_blocks;
        let split_row = (d.slices() * d.nq * (d.d + 2) * 4) as u64;
        if split_row > caps.max_binding {
            return Err("the decode kernel's partials would be over the binding limit".into());
        }
        let len = attention_decode::split_len(blocks, d.nk, split_row, caps.max_binding);
        let splits = d.nk.div_ceil(len).max(1);
        let wgs = (blocks * splits) as u64;
        let max_dim = caps.max_workgroups_per_dim.max(1) as u64;
        if wgs > max_dim.saturating_mul(max_dim).saturating_mul(max_dim) {
            return Err(format!("the decode kernel's {wgs} workgroups exceed the device's grid"));
        }
        Ok((
            Resolved::Decode { kernel, split_len: len, splits },
            AttentionPlan {
                variant: AttentionVariant::Decode(loads),
                rows_per_workgroup: kernel.rows as usize,
                splits,
                keys_per_split: len,
                workgroup_bytes: kernel.workgroup_bytes(),
                scratch_bytes: split_row * splits as u64,
                reason,
            },
        ))
    };
    // the tensor-core kernel: f16, head dims up to 128, unsplit
    let tensor_cores = |reason: String| -> std::result::Result<(Resolved, AttentionPlan), String> {
        let mma = tc.clone()?;
        if p.dtype != DType::F16 {
            if !p.f32_on_tensor_cores {
                return Err(
                    "the tensor-core kernel takes f16 inputs (f32 with AttentionOptions::f32_on_tensor_cores)".into()
                );
            }
            // f32 rounded to f16 at staging: every magnitude known and within f16's range
            for (name, op) in [("q", &p.q), ("k", &p.k), ("v", &p.v)] {
                match op.max_abs {
                    None => {
                        return Err(format!(
                            "f32 on tensor cores needs the inputs' magnitudes, and {name}'s is unknown (not uploaded through the crate)"
                        ))
                    }
                    Some(m) if m > F16_MAX => {
                        return Err(format!("f32 on tensor cores: {name} holds magnitudes up to {m:e}, over f16's 65504"))
                    }
                    _ => {}
                }
            }
        }
        let kernel = AttentionMmaKernel::choose(d.d, mma, caps, p.dtype, auto_loads)?;
        Ok((
            Resolved::TensorCores(kernel),
            AttentionPlan {
                variant: AttentionVariant::TensorCores,
                rows_per_workgroup: attention_mma::BR as usize,
                splits: 1,
                keys_per_split: d.nk,
                workgroup_bytes: kernel.workgroup_bytes(),
                scratch_bytes: 0,
                reason,
            },
        ))
    };
    match p.variant {
        AttentionVariant::TensorCores => tensor_cores("forced".into()).map_err(Error::Unsupported),
        AttentionVariant::Decode(loads) => {
            check_loads(loads)?;
            decode(loads, "forced".into()).map_err(Error::Unsupported)
        }
        AttentionVariant::Auto => {
            let rows = d.group() * d.nq;
            let mut not_decode = String::new();
            if rows <= DECODE_ROWS {
                let reason =
                    format!("auto: {rows} query rows per key/value head against {} keys: the decode kernel", d.nk);
                match decode(auto_loads, reason) {
                    Ok(r) => return Ok(r),
                    Err(why) => not_decode = format!(" (not the decode kernel: {why})"),
                }
            }
            if let Err(e) = choose_tile(d.d, caps) {
                return unfused(format!("auto: the fused kernels do not fit this device ({e}){not_decode}"));
            }
            let br = BR as usize;
            let split = split_len(d.slices(), d.nq.div_ceil(br), d.nk);
            let mut not_tc = String::new();
            if split.is_none() {
                match tensor_cores(format!("auto: the tensor-core kernel covers the call{not_decode}")) {
                    Ok(r) => return Ok(r),
                    Err(why) => not_tc = format!(" (not on tensor cores: {why})"),
                }
            }
            let not_decode = format!("{not_decode}{not_tc}");
            match split {
                Some(len) => fused(
                    auto_loads,
                    Some(len),
                    format!(
                        "auto: {} query blocks are too few for {} keys, so the keys are split{not_decode}",
                        d.slices() * d.nq.div_ceil(br),
                        d.nk
                    ),
                ),
                None => fused(auto_loads, None, format!("auto: the fused kernel covers the call{not_decode}")),
            }
        }
        AttentionVariant::Fused(loads) => {
            check_loads(loads)?;
            fused(loads, None, "forced".into())
        }
        AttentionVariant::SplitK(loads) => {
            check_loads(loads)?;
            choose_tile(d.d, caps)?;
            let len = split_len(d.slices(), d.nq.div_ceil(BR as usize), d.nk).unwrap_or(forced_split_len(d.nk));
            fused(loads, Some(len), "forced".into())
        }
        AttentionVariant::Unfused => unfused("forced".into()),
    }
}

/// The main kernel of a fused-family launch.
#[derive(Clone, Copy)]
enum Main {
    Fused(AttentionKernel),
    Decode(DecodeKernel),
    TensorCores(AttentionMmaKernel),
}

/// Where an attention launch reads K and V.
pub(crate) enum KvSource<'a> {
    /// Contiguous tensors `[batch, kv_heads, nk, d]`.
    Tensors(&'a Tensor, &'a Tensor),
    /// A paged cache, through a block table (on the GPU: its table and lengths buffers).
    Paged { cache: &'a PagedKvCache, seq_lens: &'a wgpu::Buffer, table: &'a wgpu::Buffer, blocks_per_seq: usize },
}

impl KvSource<'_> {
    fn blocks_per_seq(&self) -> usize {
        match self {
            KvSource::Tensors(..) => 0,
            KvSource::Paged { blocks_per_seq, .. } => *blocks_per_seq,
        }
    }
    fn page_shift(&self) -> u32 {
        match self {
            KvSource::Tensors(..) => 0,
            KvSource::Paged { cache, .. } => cache.geometry.page_size.trailing_zeros(),
        }
    }
}

/// Fused (or split-K) attention into `out` (and `lse`): the launcher for a resolved variant.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn record(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    p: &AttentionProblem<'_>,
    resolved: Resolved,
    q: &Tensor,
    kv: KvSource<'_>,
    mask: Option<&Mask>,
    out: &Tensor,
    lse: Option<&Tensor>,
) -> Result<()> {
    let d = p.dims;
    // the main kernel (fused or decode) and its split, if the keys are split
    let (mut main, split) = match resolved {
        Resolved::Fused(kernel) => (Main::Fused(kernel), None),
        Resolved::SplitK { kernel, split_len, splits } => (Main::Fused(kernel), Some((split_len, splits))),
        Resolved::Decode { kernel, split_len, splits } => (Main::Decode(kernel), Some((split_len, splits))),
        Resolved::TensorCores(kernel) => (Main::TensorCores(kernel), None),
        Resolved::Unfused => return Err(Error::Unsupported("the unfused variant has its own launcher".into())),
    };
    let transform = p.transform()?;
    let so = ScoreArgs::new(ctx, &p.score_options(), &transform, d.heads).await?;
    let (vpre, vpost) = p.v_prescale();
    let mut fl = 0;
    if let Some(m) = mask {
        fl |= flags::MASK | if m.kind == crate::host::MaskKind::Additive { flags::MASK_ADDITIVE } else { 0 };
    }
    if p.causal {
        fl |= flags::CAUSAL;
    }
    if p.key_lengths.is_some() {
        fl |= flags::KEY_LENGTHS;
    }
    if lse.is_some() {
        fl |= flags::LSE;
    }
    let kl = match p.key_lengths {
        Some(kl) => Some(ctx.create_init(bytemuck::cast_slice(kl), "key_lengths").await?),
        None => None,
    };
    // K and V: contiguous tensors, or page pools read through the block table
    let (k_arg, v_arg, lengths, table) = match &kv {
        KvSource::Tensors(k, v) => (
            Arg::tensor("k", k, d.group(), Rows::All(d.nk), 1, 4),
            Arg::tensor("v", v, d.group(), Rows::All(d.nk), 2, 5),
            kl.as_ref().unwrap_or(&ctx.inner.placeholder_read),
            None,
        ),
        KvSource::Paged { cache, seq_lens, table, .. } => {
            match &mut main {
                Main::Fused(k) => k.paged = true,
                Main::Decode(k) => k.paged = true,
                Main::TensorCores(k) => k.paged = true,
            }
            fl |= flags::PAGED;
            let g = &cache.geometry;
            (
                Arg::pool("k_pages", &cache.k, g, d.group(), 1, 4),
                Arg::pool("v_pages", &cache.v, g, d.group(), 2, 5),
                *seq_lens,
                Some(Arg::whole("block_table", table, 9)),
            )
        }
    };
    let br = BR as usize;
    let nsplit = split.map_or(1, |s| s.1);
    // split-K partials: per query row, for each split, the raw accumulator, the running max and
    // sum (a row's splits side by side, so that chunks of rows bind small windows). With keys,
    // every entry is written before the merge reads it, so the context's shared scratch serves;
    // with none (every paged sequence empty) no workgroup runs, and zeros stand for the empty
    // split.
    let partial_shape = Shape::new(d.batch, d.heads, d.nq, nsplit * (d.d + 2));
    let partial = match split {
        Some(_) if d.nk > 0 => Some(ctx.scratch_f32(partial_shape).await?),
        Some(_) => Some(ctx.zeros_async(partial_shape, Layout::Bhsd, DType::F32).await?),
        None => None,
    };
    let workgroups = |nbh: usize, nr: usize| match main {
        Main::Fused(_) => (nbh * nr.div_ceil(br) * nsplit) as u64,
        Main::TensorCores(_) => (nbh * nr.div_ceil(attention_mma::BR as usize)) as u64,
        // one workgroup per (batch, key/value head, block of combined rows, split); always one
        // chunk of every slice and row (checked below)
        Main::Decode(k) => ((nbh / d.group()) * (d.group() * nr).div_ceil(k.rows as usize) * nsplit) as u64,
    };
    let (out_arg, lse_arg) = match (&partial, lse) {
        (Some(pt), _) => {
            (Arg::whole("out", &ctx.inner.placeholder_write, 6), Arg::tensor("partials", pt, 1, Rows::Query, 5, 7))
        }
        (None, Some(l)) => (Arg::tensor("out", out, 1, Rows::Query, 4, 6), Arg::tensor("lse", l, 1, Rows::Query, 5, 7)),
        (None, None) => {
            (Arg::tensor("out", out, 1, Rows::Query, 4, 6), Arg::whole("lse", &ctx.inner.placeholder_write, 7))
        }
    };
    let params = so.apply(
        Params {
            heads: d.heads as u32,
            group: d.group() as u32,
            nq: d.nq as u32,
            nk: d.nk as u32,
            d: d.d as u32,
            flags: fl,
            split_len: split.map_or(0, |s| s.0) as u32,
            max_blocks: kv.blocks_per_seq() as u32,
            page_shift: kv.page_shift(),
            kpre: vpre,
            post: vpost,
            post2: 1.0,
            ..Params::default()
        }
        .with_transform(&transform),
    );
    let heads = so.heads.as_ref().unwrap_or(&ctx.inner.placeholder_read);
    let mut args = vec![
        Arg::tensor("q", q, 1, Rows::Query, 0, 1),
        Arg::mask(ctx, mask, d.heads, 2),
        Arg::whole("key_lengths", lengths, 3),
        k_arg,
        v_arg,
        out_arg,
        lse_arg,
        Arg::whole("heads", heads, 8),
    ];
    args.extend(table);
    let launch = match main {
        Main::Fused(kernel) => Launch {
            kernel: Kernel::Attention(kernel),
            // chunks (where a binding limit splits the rows) in multiples of 16 rows, not of BR:
            // the kernel handles a ragged last block, and 64 rows of split-K partials could
            // themselves be over the limit
            grid: Grid { bh: d.slices(), heads: d.heads, nq: d.nq, row_tile: 16 },
            args,
            params,
            workgroups: &workgroups,
        },
        Main::TensorCores(kernel) => Launch {
            kernel: Kernel::AttentionMma(kernel),
            // (row chunks in multiples of 16: the kernel handles a ragged last block)
            grid: Grid { bh: d.slices(), heads: d.heads, nq: d.nq, row_tile: 16 },
            args,
            params,
            workgroups: &workgroups,
        },
        Main::Decode(kernel) => {
            // its bindings (binding 6, the output, is the merge's)
            args.retain(|a| a.slot != 6);
            Launch {
                kernel: Kernel::AttentionDecode(kernel),
                grid: Grid { bh: d.slices(), heads: d.heads, nq: d.nq, row_tile: d.nq.max(1) },
                args,
                params,
                workgroups: &workgroups,
            }
        }
    };
    // the decode kernel runs as one dispatch (its split partials are laid out for one)
    let max_chunks = if matches!(launch.kernel, Kernel::AttentionDecode(_)) { 1 } else { usize::MAX };
    launch.record_at_most(ctx, encoder, max_chunks).await?;
    match partial {
        Some(partial) => {
            let kernel = MergeKernel { dtype: p.dtype };
            attention_merge::record(ctx, encoder, kernel, p, &partial, nsplit, out, lse, params, heads).await
        }
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_tc() -> TensorCoreChoice {
        Err("off".into())
    }
    use crate::options::AttentionOptions;
    use crate::problem::Operand;

    fn problem(
        b: usize,
        h: usize,
        nq: usize,
        nk: usize,
        d: usize,
        variant: AttentionVariant,
    ) -> AttentionProblem<'static> {
        let op = |s| Operand { shape: s, layout: Layout::Bhsd, dtype: DType::F32, max_abs: None };
        let opts = AttentionOptions { variant, ..Default::default() };
        AttentionProblem::new(
            op(Shape::new(b, h, nq, d)),
            op(Shape::new(b, h, nk, d)),
            op(Shape::new(b, h, nk, d)),
            None,
            &opts,
        )
        .unwrap()
    }

    fn lavapipe() -> Caps {
        Caps { max_workgroup_storage: 32 << 10, max_invocations: 1024, ..Caps::baseline() }
    }

    #[test]
    fn auto_takes_the_tensor_cores_where_they_suit_the_call() {
        let h100 = Caps { max_workgroup_storage: 48 << 10, ..lavapipe() };
        let tc: TensorCoreChoice = Ok(Mma::Hardware { subgroup: 32 });
        let f16 = |nq, nk, d, variant| {
            let mut p = problem(1, 16, nq, nk, d, variant);
            p.dtype = DType::F16;
            p
        };
        let plan = |p: &AttentionProblem, paged| resolve(p, &h100, true, true, paged, true, &tc).map(|r| r.1);
        let p = plan(&f16(4096, 4096, 128, AttentionVariant::Auto), false).unwrap();
        assert_eq!(p.variant, AttentionVariant::TensorCores, "{}", p.reason);
        // (d 128 needs about 41 KiB of workgroup memory: not on 32 KiB, where Auto says why)
        let small = resolve(&f16(4096, 4096, 128, AttentionVariant::Auto), &lavapipe(), true, true, false, true, &tc)
            .unwrap()
            .1;
        assert!(
            small.variant != AttentionVariant::TensorCores && small.reason.contains("workgroup memory"),
            "{}",
            small.reason
        );
        // a paged cache too
        let p = plan(&f16(4096, 4096, 64, AttentionVariant::Auto), true).unwrap();
        assert_eq!(p.variant, AttentionVariant::TensorCores, "{}", p.reason);
        // f32, head dims over 128, decode shapes: elsewhere, with the reason
        let p = plan(&problem(1, 16, 4096, 4096, 128, AttentionVariant::Auto), false).unwrap();
        assert!(p.variant != AttentionVariant::TensorCores);
        let p = plan(&f16(4096, 4096, 256, AttentionVariant::Auto), false).unwrap();
        assert!(p.variant != AttentionVariant::TensorCores && p.reason.contains("128"), "{}", p.reason);
        let p = plan(&f16(1, 32768, 128, AttentionVariant::Auto), false).unwrap();
        assert!(matches!(p.variant, AttentionVariant::Decode(_)), "{}", p.reason);
        // forced where it cannot run: the reason
        let e = resolve(&f16(64, 64, 64, AttentionVariant::TensorCores), &h100, true, true, false, true, &no_tc());
        assert!(matches!(e, Err(Error::Unsupported(ref m)) if m == "off"), "{e:?}");
    }

    #[test]
    fn tiles_fit_the_memory() {
        let c = lavapipe();
        // 32 KiB: the smaller chunking at d 128 and 256; the larger at d 32
        let t = choose_tile(128, &c).unwrap();
        assert_eq!((t.dp, t.kc, t.vk), (128, 16, 16));
        assert_eq!(choose_tile(3, &c).unwrap().dp, 32);
        assert_eq!(choose_tile(256, &c).unwrap().dp, 256);
        // 48 KiB (an H100): the larger chunking throughout
        let big = Caps { max_workgroup_storage: 48 << 10, ..c.clone() };
        for d in [32, 64, 128, 256] {
            let t = choose_tile(d, &big).unwrap();
            assert_eq!(t.kc, 32, "d {d}");
        }
        for d in 1..=256 {
            for caps in [&c, &big] {
                let t = choose_tile(d, caps).unwrap();
                assert!(t.kernel(DType::F32, false, Loads::Scalar).workgroup_bytes() <= caps.max_workgroup_storage);
            }
        }
        // 16 KiB: the 32-key tile, every head dim; 12 KiB: none
        let small = Caps { max_workgroup_storage: 16 << 10, ..c.clone() };
        for d in [1, 64, 128, 256] {
            let t = choose_tile(d, &small).unwrap();
            assert_eq!(t.bc, 32);
            assert!(t.kernel(DType::F32, false, Loads::Scalar).workgroup_bytes() <= 16 << 10);
        }
        let tiny = Caps { max_workgroup_storage: 12 << 10, ..c.clone() };
        assert!(matches!(choose_tile(128, &tiny), Err(Error::Unsupported(ref m)) if m.contains("head dim 128")));
        let few = Caps { max_invocations: 128, ..c };
        assert!(matches!(choose_tile(64, &few), Err(Error::Unsupported(_))));
    }

    #[test]
    fn subgroup_reductions_need_subgroups_of_8() {
        let c = lavapipe();
        assert!(!choose_tile(64, &Caps { subgroups: false, ..c.clone() }).unwrap().sg);
        assert!(choose_tile(64, &Caps { subgroups: true, subgroup_min_size: 8, ..c.clone() }).unwrap().sg);
        assert!(!choose_tile(64, &Caps { subgroups: true, subgroup_min_size: 4, ..c }).unwrap().sg);
    }

    #[test]
    fn every_chosen_tile_is_a_listed_variant() {
        let all: Vec<_> = AttentionKernel::all(DType::F32).collect();
        for d in 1..=256 {
            for caps in [
                lavapipe(),
                Caps { max_workgroup_storage: 48 << 10, subgroups: true, subgroup_min_size: 32, ..lavapipe() },
                Caps { max_workgroup_storage: 16 << 10, ..lavapipe() },
            ] {
                let k = choose_tile(d, &caps).unwrap().kernel(DType::F32, false, Loads::Scalar);
                assert!(all.contains(&k), "{k:?}");
            }
        }
    }

    #[test]
    fn split_k_for_few_query_blocks_and_many_keys() {
        assert_eq!(split_len(4, 1, 2048), Some(256));
        assert_eq!(split_len(4, 1, 2048).unwrap() % BC as usize, 0);
        assert_eq!(split_len(1, 1, 1000), None, "under 1024 keys: unsplit");
        assert_eq!(split_len(256, 1, 100_000), None, "enough blocks already");
        assert_eq!(split_len(1, 1, 1 << 20), Some(16384), "at most 64 splits");
        let l = split_len(3, 2, 5000).unwrap();
        assert_eq!(l % BC as usize, 0);
        assert!(5000usize.div_ceil(l) >= 2);
    }

    #[test]
    fn auto_picks_by_shape_and_forced_variants_are_checked() {
        let c = lavapipe();
        let plan =
            |p: &AttentionProblem, aligned, lse| resolve(p, &c, aligned, lse, false, true, &no_tc()).map(|r| r.1);
        // prefill: fused with vector loads
        let p = problem(2, 8, 512, 512, 64, AttentionVariant::Auto);
        assert_eq!(plan(&p, true, false).unwrap().variant, AttentionVariant::Fused(Loads::Vec4));
        assert_eq!(plan(&p, false, false).unwrap().variant, AttentionVariant::Fused(Loads::Scalar));
        // decode: the decode kernel, keys split
        let p = problem(1, 4, 1, 4096, 128, AttentionVariant::Auto);
        let pl = plan(&p, true, true).unwrap();
        assert_eq!(pl.variant, AttentionVariant::Decode(Loads::Vec4));
        assert!(pl.splits >= 2 && pl.scratch_bytes > 0);
        // ... but not past head dim 128 (split-K instead, saying why), nor over whole buffers
        // beyond the binding limit
        let p = problem(1, 4, 1, 4096, 256, AttentionVariant::Auto);
        let pl = plan(&p, true, true).unwrap();
        assert_eq!(pl.variant, AttentionVariant::SplitK(Loads::Vec4));
        assert!(pl.reason.contains("up to 128"), "{}", pl.reason);
        let p = problem(1, 4, 1, 4096, 64, AttentionVariant::Auto);
        assert_eq!(
            resolve(&p, &c, true, true, false, false, &no_tc()).unwrap().1.variant,
            AttentionVariant::SplitK(Loads::Vec4)
        );
        let p = problem(1, 4, 1, 4096, 256, AttentionVariant::Decode(Loads::Scalar));
        assert!(matches!(plan(&p, true, false), Err(Error::Unsupported(ref m)) if m.contains("up to 128")));
        // odd head dim: scalar loads; forcing vec4 is refused
        let p = problem(1, 1, 20, 10, 3, AttentionVariant::Auto);
        assert_eq!(plan(&p, true, false).unwrap().variant, AttentionVariant::Fused(Loads::Scalar));
        let p = problem(1, 1, 10, 10, 3, AttentionVariant::Auto);
        assert_eq!(plan(&p, true, false).unwrap().variant, AttentionVariant::Decode(Loads::Scalar));
        let p = problem(1, 1, 10, 10, 3, AttentionVariant::Fused(Loads::Vec4));
        assert!(matches!(plan(&p, true, false), Err(Error::Unsupported(ref m)) if m.contains("multiple of 4")));
        // forced split-K on a small problem: two splits
        let p = problem(1, 1, 10, 200, 16, AttentionVariant::SplitK(Loads::Scalar));
        let pl = plan(&p, true, true).unwrap();
        assert_eq!((pl.splits, pl.keys_per_split), (2, 128));
        // unfused: no lse
        let p = problem(1, 1, 10, 100, 16, AttentionVariant::Unfused);
        assert!(plan(&p, true, false).is_ok());
        assert!(matches!(plan(&p, true, true), Err(Error::Unsupported(ref m)) if m.contains("log-sum-exp")));
        // a device too small for the fused kernels: auto falls back to unfused, forcing fused is refused
        let small = Caps { max_workgroup_storage: 12 << 10, ..c.clone() };
        let p = problem(1, 1, 4, 4, 256, AttentionVariant::Auto);
        assert_eq!(
            resolve(&p, &small, true, false, false, true, &no_tc()).unwrap().1.variant,
            AttentionVariant::Unfused
        );
        assert!(resolve(&p, &small, true, true, false, true, &no_tc()).is_err());
        let p = problem(1, 1, 4, 4, 256, AttentionVariant::Fused(Loads::Scalar));
        assert!(matches!(resolve(&p, &small, true, false, false, true, &no_tc()), Err(Error::Unsupported(_))));
    }
}
