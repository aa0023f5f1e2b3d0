//! Host side of `shaders/attention.wgsl` (fused and split-K attention; CPU twin:
//! `cpu::attention`): the variant type, the pure choice of variant, tile and split, and the
//! launcher.

use super::attention_merge::{self, MergeKernel};
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
/// Keys per tile.
const BC: u32 = 32;
/// Keys per V chunk.
const VK: u32 = 8;
/// Head-dim chunk of K tiles.
const KC: u32 = 32;

/// One variant of `shaders/attention.wgsl`: storage dtype, query rows per workgroup (`br`), head
/// dim padded to 32/64/128/256 (`dp`), split-K or not, vector or scalar loads, contiguous K/V
/// or a paged cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct AttentionKernel {
    pub dtype: DType,
    pub br: u32,
    pub dp: u32,
    pub split: bool,
    pub loads: Loads,
    pub paged: bool,
}

impl Variant for AttentionKernel {
    const NAME: &'static str = "attention";
    const SOURCE: &'static str = include_str!("../../shaders/attention.wgsl");
    fn bindings(&self) -> &'static [Binding] {
        const CONTIGUOUS: [Binding; 9] = [
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
        const PAGED: [Binding; 10] = [
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
        let tpr = WG / self.br;
        vec![
            ("WG", WG),
            ("BC", BC),
            ("VK", VK),
            ("KC", KC),
            ("BR", self.br),
            ("DP", self.dp),
            ("TPR", tpr),
            ("NJ", self.dp / tpr),
            ("NS", BC / tpr),
            ("SPLIT", self.split as u32),
            ("VEC", if self.loads == Loads::Vec4 { 4 } else { 1 }),
        ]
    }

    /// `Qs`, `Ks` (rows padded by one), `Vs`, `Ps`, the reduction buffer and `wkend`.
    fn workgroup_bytes(&self) -> u32 {
        4 * (self.br * self.dp + BC * (KC + 1) + VK * self.dp + self.br * BC + WG + 2)
    }

    fn preludes(&self) -> Vec<&'static str> {
        vec![
            include_str!("../../shaders/masking.wgsl"),
            match self.loads {
                Loads::Vec4 => include_str!("../../shaders/qkv_vec4.wgsl"),
                Loads::Scalar => include_str!("../../shaders/qkv_scalar.wgsl"),
            },
            if self.paged {
                include_str!("../../shaders/kv_paged.wgsl")
            } else {
                include_str!("../../shaders/kv_contiguous.wgsl")
            },
        ]
    }
}

/// Head dim `d` padded to a supported width.
fn padded_dim(d: usize) -> u32 {
    [32u32, 64, 128, 256].into_iter().find(|&p| p as usize >= d).unwrap_or(256)
}

/// Row tiles for padded head dim `dp`, largest first (at most 16 output columns per thread).
fn row_tiles(dp: u32) -> impl Iterator<Item = u32> {
    let first = match dp {
        32 | 64 => 64,
        128 => 32,
        _ => 16,
    };
    [64u32, 32, 16, 8].into_iter().filter(move |&br| br <= first)
}

impl AttentionKernel {
    /// Every variant [`choose_tile`] can return, for `dtype`.
    #[cfg(test)]
    pub fn all(dtype: DType) -> impl Iterator<Item = AttentionKernel> {
        [32u32, 64, 128, 256].into_iter().flat_map(move |dp| {
            row_tiles(dp).flat_map(move |br| {
                [false, true].into_iter().flat_map(move |split| {
                    [Loads::Vec4, Loads::Scalar].into_iter().flat_map(move |loads| {
                        [false, true].into_iter().map(move |paged| AttentionKernel {
                            dtype,
                            br,
                            dp,
                            split,
                            loads,
                            paged,
                        })
                    })
                })
            })
        })
    }
}

/// The row tile for head dim `d` and `nq` queries: the smallest row count that covers `nq` (few
/// queries waste less work on empty rows), else the largest that fits the workgroup memory.
pub(crate) fn choose_tile(d: usize, nq: usize, caps: &Caps) -> Result<(u32, u32)> {
    if caps.max_invocations < WG {
        return Err(Error::Unsupported(format!(
            "fused attention needs {WG} invocations per workgroup, the device allows {}",
            caps.max_invocations
        )));
    }
    let dp = padded_dim(d);
    let bytes = |br| {
        AttentionKernel { dtype: DType::F32, br, dp, split: false, loads: Loads::Scalar, paged: false }
            .workgroup_bytes()
    };
    let fitting: Vec<u32> = row_tiles(dp).filter(|&br| bytes(br) <= caps.max_workgroup_storage).collect();
    fitting.iter().rev().find(|&&br| br as usize >= nq).or(fitting.first()).map(|&br| (br, dp)).ok_or_else(|| {
        Error::Unsupported(format!(
            "fused attention at head dim {d} needs {} bytes of workgroup memory, the device allows {}",
            bytes(8),
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
    /// Query rows per workgroup (fused and split-K; 0 for unfused).
    pub rows_per_workgroup: usize,
    /// Key splits (1 unless split-K).
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
    Unfused,
}

/// Chooses (or checks a forced) variant for `p` on a device with `caps`. `aligned` says whether
/// the Q, K and V element offsets are multiples of 4 (vector loads); `lse` whether the
/// log-sum-exp is wanted. Pure: no device.
pub(crate) fn resolve(
    p: &AttentionProblem,
    caps: &Caps,
    aligned: bool,
    lse: bool,
    paged: bool,
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
                workgroup_bytes: super::similarity::SimilarityKernel { dtype: p.dtype, metric: 0 }.workgroup_bytes(),
                scratch_bytes: 2 * scores,
                reason,
            },
        ))
    };
    let fused = |loads: Loads, split: Option<usize>, reason: String| -> Result<(Resolved, AttentionPlan)> {
        let (br, dp) = choose_tile(d.d, d.nq, caps)?;
        let kernel = AttentionKernel { dtype: p.dtype, br, dp, split: split.is_some(), loads, paged: false };
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
                rows_per_workgroup: br as usize,
                splits,
                keys_per_split: keys,
                workgroup_bytes: kernel.workgroup_bytes(),
                scratch_bytes: if split.is_some() { partial_bytes(splits) } else { 0 },
                reason,
            },
        ))
    };
    match p.variant {
        AttentionVariant::Auto => {
            let (br, _) = match choose_tile(d.d, d.nq, caps) {
                Ok(t) => t,
                Err(e) => return unfused(format!("auto: the fused kernels do not fit this device ({e})")),
            };
            match split_len(d.slices(), d.nq.div_ceil(br as usize), d.nk) {
                Some(len) => fused(
                    auto_loads,
                    Some(len),
                    format!(
                        "auto: {} query blocks are too few for {} keys, so the keys are split",
                        d.slices() * d.nq.div_ceil(br as usize),
                        d.nk
                    ),
                ),
                None => fused(auto_loads, None, "auto: the fused kernel covers the call".into()),
            }
        }
        AttentionVariant::Fused(loads) => {
            check_loads(loads)?;
            fused(loads, None, "forced".into())
        }
        AttentionVariant::SplitK(loads) => {
            check_loads(loads)?;
            let (br, _) = choose_tile(d.d, d.nq, caps)?;
            let len = split_len(d.slices(), d.nq.div_ceil(br as usize), d.nk).unwrap_or(forced_split_len(d.nk));
            fused(loads, Some(len), "forced".into())
        }
        AttentionVariant::Unfused => unfused("forced".into()),
    }
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
    let (mut kernel, split) = match resolved {
        Resolved::Fused(kernel) => (kernel, None),
        Resolved::SplitK { kernel, split_len, splits } => (kernel, Some((split_len, splits))),
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
            kernel.paged = true;
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
    let br = kernel.br as usize;
    let nsplit = split.map_or(1, |s| s.1);
    // split-K partials: per query row, for each split, the raw accumulator, the running max and
    // sum (a row's splits side by side, so that chunks of rows bind small windows)
    let partial = match split {
        Some(_) => Some(
            ctx.zeros_async(Shape::new(d.batch, d.heads, d.nq, nsplit * (d.d + 2)), Layout::Bhsd, DType::F32).await?,
        ),
        None => None,
    };
    let workgroups = |nbh: usize, nr: usize| (nbh * nr.div_ceil(br) * nsplit) as u64;
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
    Launch {
        kernel: Kernel::Attention(kernel),
        grid: Grid { bh: d.slices(), heads: d.heads, nq: d.nq, row_tile: br },
        args,
        params,
        workgroups: &workgroups,
    }
    .record(ctx, encoder)
    .await?;
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
    fn tiles_cover_few_queries_and_fit_the_memory() {
        let c = lavapipe();
        assert_eq!(choose_tile(64, 1, &c).unwrap(), (8, 64));
        assert_eq!(choose_tile(64, 20, &c).unwrap(), (32, 64));
        assert_eq!(choose_tile(64, 1000, &c).unwrap(), (64, 64));
        assert_eq!(choose_tile(3, 1000, &c).unwrap(), (64, 32));
        assert_eq!(choose_tile(256, 1000, &c).unwrap(), (16, 256));
        // 16 KiB: d 256 does not fit at all, d 128 with smaller tiles
        let small = Caps { max_workgroup_storage: 16 << 10, ..c.clone() };
        assert!(matches!(choose_tile(256, 4, &small), Err(Error::Unsupported(ref m)) if m.contains("head dim 256")));
        let (br, _) = choose_tile(128, 1000, &small).unwrap();
        assert!(
            AttentionKernel { dtype: DType::F32, br, dp: 128, split: false, loads: Loads::Vec4, paged: false }
                .workgroup_bytes()
                <= 16 << 10
        );
        let few = Caps { max_invocations: 128, ..c };
        assert!(matches!(choose_tile(64, 4, &few), Err(Error::Unsupported(_))));
    }

    #[test]
    fn every_chosen_tile_is_a_listed_variant() {
        let all: Vec<_> = AttentionKernel::all(DType::F32).collect();
        for d in 1..=256 {
            for nq in [1, 7, 8, 9, 33, 100, 5000] {
                let (br, dp) = choose_tile(d, nq, &lavapipe()).unwrap();
                let k = AttentionKernel { dtype: DType::F32, br, dp, split: false, loads: Loads::Scalar, paged: false };
                assert!(all.contains(&k), "{k:?}");
            }
        }
    }

    #[test]
    fn split_k_for_few_query_blocks_and_many_keys() {
        assert_eq!(split_len(4, 1, 2048), Some(256));
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
        let plan = |p: &AttentionProblem, aligned, lse| resolve(p, &c, aligned, lse, false).map(|r| r.1);
        // prefill: fused with vector loads
        let p = problem(2, 8, 512, 512, 64, AttentionVariant::Auto);
        assert_eq!(plan(&p, true, false).unwrap().variant, AttentionVariant::Fused(Loads::Vec4));
        assert_eq!(plan(&p, false, false).unwrap().variant, AttentionVariant::Fused(Loads::Scalar));
        // decode: split-K
        let p = problem(1, 4, 1, 4096, 128, AttentionVariant::Auto);
        let pl = plan(&p, true, true).unwrap();
        assert_eq!(pl.variant, AttentionVariant::SplitK(Loads::Vec4));
        assert!(pl.splits >= 2 && pl.scratch_bytes > 0);
        // odd head dim: scalar loads; forcing vec4 is refused
        let p = problem(1, 1, 10, 10, 3, AttentionVariant::Auto);
        assert_eq!(plan(&p, true, false).unwrap().variant, AttentionVariant::Fused(Loads::Scalar));
        let p = problem(1, 1, 10, 10, 3, AttentionVariant::Fused(Loads::Vec4));
        assert!(matches!(plan(&p, true, false), Err(Error::Unsupported(ref m)) if m.contains("multiple of 4")));
        // forced split-K on a small problem: two splits
        let p = problem(1, 1, 10, 100, 16, AttentionVariant::SplitK(Loads::Scalar));
        let pl = plan(&p, true, true).unwrap();
        assert_eq!((pl.splits, pl.keys_per_split), (2, 64));
        // unfused: no lse
        let p = problem(1, 1, 10, 100, 16, AttentionVariant::Unfused);
        assert!(plan(&p, true, false).is_ok());
        assert!(matches!(plan(&p, true, true), Err(Error::Unsupported(ref m)) if m.contains("log-sum-exp")));
        // a device too small for the fused kernels: auto falls back to unfused, forcing fused is refused
        let small = Caps { max_workgroup_storage: 16 << 10, ..c.clone() };
        let p = problem(1, 1, 4, 4, 256, AttentionVariant::Auto);
        assert_eq!(resolve(&p, &small, true, false, false).unwrap().1.variant, AttentionVariant::Unfused);
        assert!(resolve(&p, &small, true, true, false).is_err());
        let p = problem(1, 1, 4, 4, 256, AttentionVariant::Fused(Loads::Scalar));
        assert!(matches!(resolve(&p, &small, true, false, false), Err(Error::Unsupported(_))));
    }
}
