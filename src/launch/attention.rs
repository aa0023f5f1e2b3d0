//! Launching `shaders/attention.wgsl`: the buffers, parameters and dispatches of a checked call
//! (the variant itself is `kernels/attention.rs`).

use crate::kernels::attention_decode::DecodeKernel;
use crate::kernels::attention_merge::MergeKernel;
use crate::kernels::attention_mma::AttentionMmaKernel;
use crate::kernels::{flags, Kernel, Params};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::paged::PagedKvCache;
use crate::plan::{Grid, Rows};
use crate::problem::AttentionProblem;
use crate::record::{Arg, Launch};
use crate::shape::{DType, Layout, Shape};
use crate::tensor::{Mask, Tensor};
use crate::kernels::attention::*;
use crate::kernels::attention_plan::Resolved;
use crate::launch::attention_merge;
use crate::launch::{masking_flags, ScoreArgs};

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
    /// A pack of `batch` sequences in one dispatch of the fused kernel: `k`, `v` and the query
    /// tensor `[1, heads, total, d]`, sequence `b`'s rows from `cu_q`/`cu_k` entries `b`,
    /// `b + 1` (device buffers of u32, at least `batch + 1` entries, read by the kernel).
    Packed { k: &'a Tensor, v: &'a Tensor, cu_q: &'a wgpu::Buffer, cu_k: &'a wgpu::Buffer, batch: usize },
}

impl KvSource<'_> {
    fn blocks_per_seq(&self) -> usize {
        match self {
            KvSource::Tensors(..) | KvSource::Packed { .. } => 0,
            KvSource::Paged { blocks_per_seq, .. } => *blocks_per_seq,
        }
    }
    fn page_shift(&self) -> u32 {
        match self {
            KvSource::Tensors(..) | KvSource::Packed { .. } => 0,
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
    let (mut fl, kl) = masking_flags(ctx, p, mask).await?;
    if lse.is_some() {
        fl |= flags::LSE;
    }
    if p.fixed_order {
        fl |= flags::FIXED;
    }
    // K and V: contiguous tensors, or page pools read through the block table
    let mut packed = None;
    let (k_arg, v_arg, lengths, table) = match &kv {
        KvSource::Packed { k, v, cu_q, cu_k, batch } => {
            if split.is_some() || !matches!(main, Main::Fused(_)) || mask.is_some() || kl.is_some() {
                return Err(Error::Unsupported(
                    "a pack in one dispatch runs on the unsplit fused kernel, without masks or key lengths".into(),
                ));
            }
            fl |= flags::VARLEN;
            packed = Some((*batch, *cu_k));
            (
                Arg::tensor("k", k, d.group(), Rows::All(d.nk), 1, 4),
                Arg::tensor("v", v, d.group(), Rows::All(d.nk), 2, 5),
                *cu_q,
                None,
            )
        }
        KvSource::Tensors(k, v) => (
            Arg::tensor("k", k, d.group(), Rows::All(d.nk), 1, 4),
            Arg::tensor("v", v, d.group(), Rows::All(d.nk), 2, 5),
            kl.as_ref().unwrap_or(&ctx.inner.placeholder_read),
            None,
        ),
        KvSource::Paged { cache, seq_lens, table, .. } => {
            let kv = [cache.format.k, cache.format.v];
            match &mut main {
                Main::Fused(k) => (k.paged, k.kv) = (true, kv),
                Main::Decode(k) => (k.paged, k.kv) = (true, kv),
                Main::TensorCores(k) => (k.paged, k.kv) = (true, kv),
            }
            fl |= flags::PAGED;
            (
                Arg::cache_pool("k_pages", cache, false, d.group(), 1, 4),
                Arg::cache_pool("v_pages", cache, true, d.group(), 2, 5),
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
        // a pack: nr / BR + batch row blocks per head cover every sequence's blocks
        Main::Fused(_) if packed.is_some() => (nbh * (nr / br + packed.map_or(0, |p| p.0))) as u64,
        Main::Fused(_) => (nbh * nr.div_ceil(br) * nsplit) as u64,
        Main::TensorCores(k) => (nbh * nr.div_ceil(k.rows as usize)) as u64,
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
            flags: fl,
            split_len: split.map_or(0, |s| s.0) as u32,
            max_blocks: kv.blocks_per_seq() as u32,
            start: packed.map_or(0, |p| p.0 as u32),
            page_shift: kv.page_shift(),
            kpre: vpre,
            post: vpost,
            post2: 1.0,
            ..Params::of_dims(&d)
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
    if let Some((_, cu_k)) = packed {
        // the pack's kernel reads cu_seqlens_k in the mask's slot, and passes a sequence index
        // as the batch index of every view (batch 1: its stride is 0)
        args[1] = Arg::whole("cu_seqlens_k", cu_k, 2);
        for a in args.iter_mut().filter(|a| a.view.is_some()) {
            a.spec.sb = 0;
        }
    }
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
    // (and so does a pack: its blocks are found from the offsets, not from a chunk's rows)
    let one = matches!(launch.kernel, Kernel::AttentionDecode(_)) || packed.is_some();
    let max_chunks = if one { 1 } else { usize::MAX };
    launch.record_at_most(ctx, encoder, max_chunks).await?;
    match partial {
        Some(partial) => {
            let kernel = MergeKernel { dtype: p.dtype };
            attention_merge::record(ctx, encoder, kernel, p, &partial, nsplit, out, lse, params, heads).await
        }
        None => Ok(()),
    }
}
