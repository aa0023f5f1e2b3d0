//! Host side of `shaders/attention.wgsl` (fused) and `shaders/weighted_sum.wgsl`, and the
//! unfused path built from similarity, softmax and weighted sum.

use crate::context::Context;
use crate::dispatch::{flags, Arg, Grid, Launch, Params, Rows};
use crate::error::{Error, Result};
use crate::ops::softmax::mask_arg;
use crate::ops::{check_dtype, check_out, key_lengths_buffer};
use crate::options::{
    check_key_lengths, check_mask_shape, check_qkv, check_scalar, AttentionOptions, Dims, Similarity, SoftmaxOptions,
};
use crate::pipeline::Family;
use crate::shape::{DType, Layout, MaskKind, Shape};
use crate::tensor::{Mask, Tensor};

/// Tile parameters of one fused-attention variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AttentionTile {
    /// Query rows per workgroup.
    pub br: u32,
    /// Head dim padded to 32, 64, 128 or 256.
    pub dp: u32,
}

const WG: u32 = 256;
const BC: u32 = 32;
const VK: u32 = 8;
const KC: u32 = 32;

impl AttentionTile {
    /// Workgroup memory this variant needs, in bytes (must match `attention.wgsl`).
    pub fn workgroup_bytes(&self) -> u32 {
        4 * (self.br * self.dp + BC * (KC + 1) + VK * self.dp + self.br * BC + WG + 1)
    }

    /// The tile for head dim `d` and `nq` queries: the smallest row count that covers `nq`
    /// (few queries waste less work on empty rows), else the largest that fits `max_bytes` of
    /// workgroup memory.
    pub fn choose(d: usize, nq: usize, max_bytes: u32, max_invocations: u32) -> Result<Self> {
        if max_invocations < WG {
            return Err(Error::Unsupported(format!(
                "fused attention needs {WG} invocations per workgroup, the device allows {max_invocations}"
            )));
        }
        let dp = [32u32, 64, 128, 256].into_iter().find(|&p| p as usize >= d).unwrap_or(256);
        let fitting: Vec<AttentionTile> = Self::candidates(dp).filter(|t| t.workgroup_bytes() <= max_bytes).collect();
        fitting.iter().rev().find(|t| t.br as usize >= nq).or(fitting.first()).copied().ok_or_else(|| {
            Error::Unsupported(format!(
                "head dim {d} needs {} bytes of workgroup memory, the device allows {max_bytes}",
                AttentionTile { br: 8, dp }.workgroup_bytes()
            ))
        })
    }

    /// Tiles for padded head dim `dp`, largest first (at most 16 output columns per thread).
    fn candidates(dp: u32) -> impl Iterator<Item = AttentionTile> {
        let first = match dp {
            32 | 64 => 64,
            128 => 32,
            _ => 16,
        };
        [64u32, 32, 16, 8].into_iter().filter(move |&br| br <= first).map(move |br| AttentionTile { br, dp })
    }

    /// Every tile [`AttentionTile::choose`] can return.
    pub fn all() -> impl Iterator<Item = AttentionTile> {
        [32u32, 64, 128, 256].into_iter().flat_map(Self::candidates)
    }

    pub(crate) fn consts(&self, split: bool, vec4: bool) -> Vec<(&'static str, u32)> {
        let tpr = WG / self.br;
        vec![
            ("BR", self.br),
            ("DP", self.dp),
            ("KC", KC),
            ("TPR", tpr),
            ("NJ", self.dp / tpr),
            ("NS", BC / tpr),
            ("SPLIT", split as u32),
            ("VEC", if vec4 { 4 } else { 1 }),
        ]
    }
}

/// Keys per split for split-K attention, or `None` to run unsplit: used when there are few
/// query blocks and many keys, so that at least ~256 workgroups share the keys, each taking
/// at least 256 keys (at most 64 splits).
fn split_len(slices: usize, row_blocks: usize, nk: usize) -> Option<usize> {
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

/// Checks shared by fused and unfused attention; returns dims and flags.
fn check_attention(
    ctx: &Context,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Mask>,
    opts: &AttentionOptions,
) -> Result<(Dims, u32)> {
    let dims = check_qkv(&q.shape, &k.shape, &v.shape)?;
    check_dtype(ctx, "q", q, None)?;
    check_dtype(ctx, "k", k, Some(q.dtype))?;
    check_dtype(ctx, "v", v, Some(q.dtype))?;
    check_scalar("scale", opts.scale_for(dims.d), false)?;
    check_key_lengths(opts.key_lengths, dims.batch, dims.nk)?;
    let mut fl = 0;
    if let Some(m) = mask {
        check_mask_shape(m.shape, dims.batch, dims.heads, dims.nq, dims.nk)?;
        fl |= flags::MASK | if m.kind == MaskKind::Additive { flags::MASK_ADDITIVE } else { 0 };
    }
    if opts.causal {
        fl |= flags::CAUSAL;
    }
    if opts.key_lengths.is_some() {
        fl |= flags::KEY_LENGTHS;
    }
    Ok((dims, fl))
}

impl Context {
    /// Fused attention `O = softmax(scale · Q Kᵀ + mask) V` into a new tensor shaped, typed and
    /// laid out like `q`. The nq×nk scores are never stored.
    ///
    /// `k` and `v` are `[batch, kv_heads, nk, d]` with `kv_heads` dividing `q`'s heads (GQA/MQA);
    /// `mask` is `[mb, mh, nq, nk]`. See [`AttentionOptions`] for scale, causal alignment and key
    /// lengths. Rows with every key masked give zeros.
    ///
    /// ```no_run
    /// # use wgpu_attention::*;
    /// # fn main() -> Result<()> {
    /// let ctx = Context::new_blocking()?;
    /// let shape = Shape::new(1, 2, 5, 8);
    /// let data: Vec<f32> = (0..shape.numel()).map(|i| (i as f32 * 0.37).sin()).collect();
    /// let q = ctx.upload(&data, shape)?;
    /// let opts = AttentionOptions { causal: true, ..Default::default() };
    /// let out = ctx.attention(&q, &q, &q, None, &opts)?.download_blocking(&ctx)?;
    /// assert_eq!(out.len(), shape.numel());
    /// # Ok(()) }
    /// ```
    pub fn attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Mask>,
        opts: &AttentionOptions,
    ) -> Result<Tensor> {
        check_qkv(&q.shape, &k.shape, &v.shape)?;
        let out = self.zeros(q.shape, q.layout, q.dtype)?;
        self.submit(|enc| self.encode_attention(enc, q, k, v, mask, opts, &out, None))?;
        Ok(out)
    }

    /// Like [`Context::attention`], also returning the per-row natural log-sum-exp of the kept
    /// scaled scores, an f32 tensor `[batch, heads, nq, 1]` (`-inf` for fully masked rows).
    pub fn attention_with_lse(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Mask>,
        opts: &AttentionOptions,
    ) -> Result<(Tensor, Tensor)> {
        let d = check_qkv(&q.shape, &k.shape, &v.shape)?;
        let out = self.zeros(q.shape, q.layout, q.dtype)?;
        let lse = self.zeros(Shape::new(d.batch, d.heads, d.nq, 1), Layout::Bhsd, DType::F32)?;
        self.submit(|enc| self.encode_attention(enc, q, k, v, mask, opts, &out, Some(&lse)))?;
        Ok((out, lse))
    }

    /// Records fused attention into `encoder`: no submit, no readback. `out` has `q`'s shape and
    /// dtype (any layout); `lse`, if given, is f32 `[batch, heads, nq, 1]`.
    ///
    /// With few queries and many keys (split-K), a temporary f32 buffer of
    /// `splits · batch · heads · nq · (d + 2)` partials is allocated for the call.
    #[allow(clippy::too_many_arguments)]
    pub fn encode_attention(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Mask>,
        opts: &AttentionOptions,
        out: &Tensor,
        lse: Option<&Tensor>,
    ) -> Result<()> {
        let (dims, mut fl) = check_attention(self, q, k, v, mask, opts)?;
        check_out(self, "out", out, q.shape, q.dtype)?;
        if let Some(l) = lse {
            check_out(self, "lse", l, Shape::new(dims.batch, dims.heads, dims.nq, 1), DType::F32)?;
            fl |= flags::LSE;
        }
        let lim = self.limits();
        let tile = AttentionTile::choose(
            dims.d,
            dims.nq,
            lim.max_compute_workgroup_storage_size,
            lim.max_compute_invocations_per_workgroup,
        )?;
        let kl = key_lengths_buffer(self, opts.key_lengths)?;
        let br = tile.br as usize;
        let slices = dims.batch * dims.heads;
        let split = split_len(slices, dims.nq.div_ceil(br), dims.nk);
        let nsplit = split.map_or(1, |s| dims.nk.div_ceil(s));
        // split-K partials: per query row and split, the raw accumulator, max and sum
        let partial = match split {
            Some(_) => Some(self.zeros(
                Shape::new(dims.batch, dims.heads, nsplit * dims.nq, dims.d + 2),
                Layout::Bhsd,
                DType::F32,
            )?),
            None => None,
        };
        let workgroups = |nbh: usize, nr: usize| (nbh * nr.div_ceil(br) * nsplit) as u64;
        let (out_arg, lse_arg) = match (&partial, lse) {
            (Some(p), _) => (
                Arg::whole("out", &self.inner.placeholder_write, 6),
                Arg::tensor("partials", p, 1, Rows::All(nsplit * dims.nq), 5, 7),
            ),
            (None, Some(l)) => {
                (Arg::tensor("out", out, 1, Rows::Query, 4, 6), Arg::tensor("lse", l, 1, Rows::Query, 5, 7))
            }
            (None, None) => {
                (Arg::tensor("out", out, 1, Rows::Query, 4, 6), Arg::whole("lse", &self.inner.placeholder_write, 7))
            }
        };
        Launch {
            family: Family::Attention,
            dtype: q.dtype,
            // vector loads when every Q/K/V row starts on a multiple of 4 elements (windows
            // start 16-byte aligned, so the bound views keep that alignment)
            consts: tile.consts(split.is_some(), dims.d % 4 == 0 && [q, k, v].iter().all(|t| t.offset % 4 == 0)),
            grid: Grid { bh: dims.batch * dims.heads, heads: dims.heads, nq: dims.nq, row_tile: br },
            args: vec![
                Arg::tensor("q", q, 1, Rows::Query, 0, 1),
                mask_arg(self, mask, dims.heads, 2),
                Arg::whole("key_lengths", kl.as_ref().unwrap_or(&self.inner.placeholder_read), 3),
                Arg::tensor("k", k, dims.group(), Rows::All(dims.nk), 1, 4),
                Arg::tensor("v", v, dims.group(), Rows::All(dims.nk), 2, 5),
                out_arg,
                lse_arg,
            ],
            params: Params {
                heads: dims.heads as u32,
                group: dims.group() as u32,
                nq: dims.nq as u32,
                nk: dims.nk as u32,
                d: dims.d as u32,
                flags: fl,
                scale: opts.scale_for(dims.d),
                split_len: split.unwrap_or(0) as u32,
                ..Default::default()
            },
            workgroups: &workgroups,
        }
        .record(self, encoder)?;
        let Some(partial) = partial else { return Ok(()) };
        let merge_groups = |nbh: usize, nr: usize| (nbh * nr) as u64;
        Launch {
            family: Family::AttentionMerge,
            dtype: q.dtype,
            consts: vec![],
            grid: Grid { bh: slices, heads: dims.heads, nq: dims.nq, row_tile: 1 },
            args: vec![
                Arg::tensor("partials", &partial, 1, Rows::All(nsplit * dims.nq), 0, 1),
                Arg::tensor("out", out, 1, Rows::Query, 1, 2),
                match lse {
                    Some(l) => Arg::tensor("lse", l, 1, Rows::Query, 2, 3),
                    None => Arg::whole("lse", &self.inner.placeholder_write, 3),
                },
            ],
            params: Params {
                heads: dims.heads as u32,
                group: 1,
                nq: dims.nq as u32,
                nk: dims.nk as u32,
                d: dims.d as u32,
                flags: fl & flags::LSE,
                split_len: nsplit as u32,
                ..Default::default()
            },
            workgroups: &merge_groups,
        }
        .record(self, encoder)
    }

    /// Unfused attention, step by step: scores (scaled dot), softmax with the same masking,
    /// then weights · V. Returns `(output, weights)`: output like `q`; weights f32
    /// `[batch, heads, nq, nk]`. Same semantics as [`Context::attention`].
    pub fn attention_unfused(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Mask>,
        opts: &AttentionOptions,
    ) -> Result<(Tensor, Tensor)> {
        let d = check_qkv(&q.shape, &k.shape, &v.shape)?;
        let out = self.zeros(q.shape, q.layout, q.dtype)?;
        let weights = self.zeros(Shape::new(d.batch, d.heads, d.nq, d.nk), Layout::Bhsd, DType::F32)?;
        self.submit(|enc| self.encode_attention_unfused(enc, q, k, v, mask, opts, &out, &weights))?;
        Ok((out, weights))
    }

    /// Records unfused attention into `encoder`: `weights` (f32 `[batch, heads, nq, nk]`)
    /// receives the softmax weights and `out` the output. The raw scores go to a temporary
    /// buffer of the same size, allocated here.
    #[allow(clippy::too_many_arguments)]
    pub fn encode_attention_unfused(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Mask>,
        opts: &AttentionOptions,
        out: &Tensor,
        weights: &Tensor,
    ) -> Result<()> {
        let (dims, _) = check_attention(self, q, k, v, mask, opts)?;
        let wshape = Shape::new(dims.batch, dims.heads, dims.nq, dims.nk);
        check_out(self, "weights", weights, wshape, DType::F32)?;
        check_out(self, "out", out, q.shape, q.dtype)?;
        let scores = self.zeros(wshape, Layout::Bhsd, DType::F32)?;
        self.encode_similarity(encoder, q, k, Similarity::ScaledDot(Some(opts.scale_for(dims.d))), &scores)?;
        let sm = SoftmaxOptions { temperature: 1.0, causal: opts.causal, key_lengths: opts.key_lengths };
        self.encode_softmax(encoder, &scores, mask, &sm, weights)?;
        self.encode_weighted_sum(encoder, weights, v, out)
    }

    /// `O[b, h, i] = Σ_j W[b, h, i, j] · V[b, h / group, j]` into a new tensor like `v` with
    /// `weights`' heads and rows.
    pub fn weighted_sum(&self, weights: &Tensor, v: &Tensor) -> Result<Tensor> {
        let w = weights.shape;
        let out = self.zeros(Shape::new(w.batch, w.heads, w.seq, v.shape.dim), v.layout, v.dtype)?;
        self.submit(|enc| self.encode_weighted_sum(enc, weights, v, &out))?;
        Ok(out)
    }

    /// Records [`Context::weighted_sum`] into `encoder`.
    pub fn encode_weighted_sum(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        weights: &Tensor,
        v: &Tensor,
        out: &Tensor,
    ) -> Result<()> {
        let (w, vs) = (weights.shape, v.shape);
        w.check_nonempty("weights")?;
        vs.check_nonempty("v")?;
        for (dim, got, expected) in [("batch", vs.batch, w.batch), ("seq", vs.seq, w.dim)] {
            if got != expected {
                return Err(Error::ShapeMismatch { argument: "v", other: "weights", dim, got, expected });
            }
        }
        if !w.heads.is_multiple_of(vs.heads) {
            return Err(Error::HeadsNotDivisible { argument: "v", q_heads: w.heads, kv_heads: vs.heads });
        }
        check_dtype(self, "weights", weights, Some(DType::F32))?;
        check_dtype(self, "v", v, None)?;
        check_out(self, "out", out, Shape::new(w.batch, w.heads, w.seq, vs.dim), v.dtype)?;
        let group = w.heads / vs.heads;
        let workgroups = |nbh: usize, nr: usize| (nbh * nr.div_ceil(64) * vs.dim.div_ceil(64)) as u64;
        Launch {
            family: Family::WeightedSum,
            dtype: v.dtype,
            consts: vec![],
            grid: Grid { bh: w.batch * w.heads, heads: w.heads, nq: w.seq, row_tile: 64 },
            args: vec![
                Arg::tensor("weights", weights, 1, Rows::Query, 0, 1),
                Arg::tensor("v", v, group, Rows::All(vs.seq), 1, 2),
                Arg::tensor("out", out, 1, Rows::Query, 2, 3),
            ],
            params: Params {
                heads: w.heads as u32,
                group: group as u32,
                nq: w.seq as u32,
                nk: w.dim as u32,
                d: vs.dim as u32,
                ..Default::default()
            },
            workgroups: &workgroups,
        }
        .record(self, encoder)
    }
}
