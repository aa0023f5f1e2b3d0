//! Attention over a paged KV cache, and appending to one (`shaders/attention.wgsl` with
//! `kv_paged.wgsl`, `shaders/kv_append.wgsl`; `cpu::paged_attention`, `cpu::append_kv`).

use std::collections::HashMap;

use super::attention::ScoreOptions;
use super::{check_operand, same_dtype, AttentionProblem, Dims, Operand};
use crate::error::{Error, Result};
use crate::options::AttentionOptions;
use crate::pages::{BlockTable, PageGeometry};
use crate::shape::{DType, Layout, Shape, MAX_HEAD_DIM};

/// A checked attention call over a paged cache: the attention problem (with `nk` the longest
/// sequence) and the cache's table and geometry.
#[derive(Clone, Debug)]
pub(crate) struct PagedProblem<'a> {
    pub attn: AttentionProblem<'a>,
    pub table: BlockTable<'a>,
}

/// Checks the cache against the queries' (or new tokens') shape: head dim, heads, dtype.
fn check_cache(argument: &'static str, t: &Operand, g: &PageGeometry, cache_dtype: DType) -> Result<()> {
    g.check()?;
    let s = t.shape;
    if s.dim != g.head_dim {
        return Err(Error::ShapeMismatch {
            argument: "cache",
            other: argument,
            dim: "dim",
            got: g.head_dim,
            expected: s.dim,
        });
    }
    // the cache is what the call works on: the queries or new tokens must match it
    same_dtype(argument, t, cache_dtype)
}

impl<'a> PagedProblem<'a> {
    /// Checks, in this order: `q` (non-empty, countable); the cache's geometry, head dim (that
    /// of `q`, at most 256) and dtype; heads (the cache's divide `q`'s); the block table (one
    /// row per batch of `q`, lengths and pages within the cache); no key lengths (the table's
    /// lengths stand for them); the scale; the score options. Masks do not apply over a paged
    /// cache.
    pub fn new(
        q: Operand,
        g: PageGeometry,
        cache_dtype: DType,
        table: BlockTable<'a>,
        opts: &AttentionOptions<'a>,
    ) -> Result<Self> {
        check_operand("q", &q)?;
        check_cache("q", &q, &g, cache_dtype)?;
        let s = q.shape;
        if s.dim > MAX_HEAD_DIM {
            return Err(Error::UnsupportedHeadDim { argument: "q", got: s.dim, max: MAX_HEAD_DIM });
        }
        if !s.heads.is_multiple_of(g.kv_heads) {
            return Err(Error::HeadsNotDivisible { argument: "cache", q_heads: s.heads, kv_heads: g.kv_heads });
        }
        if table.batch() != s.batch {
            return Err(Error::ShapeMismatch {
                argument: "block_table",
                other: "q",
                dim: "batch",
                got: table.batch(),
                expected: s.batch,
            });
        }
        table.check(&g)?;
        if opts.key_lengths.is_some() {
            return Err(Error::InvalidArgument {
                argument: "key_lengths",
                message: "over a paged cache the block table's sequence lengths bound the keys".into(),
            });
        }
        let scale = opts.scale_for(s.dim);
        super::check_multiplier("scale", scale, true, "the scale")?;
        let so = ScoreOptions::new(opts, s.heads)?;
        let nk = table.max_len();
        let dims = Dims { batch: s.batch, heads: s.heads, kv_heads: g.kv_heads, nq: s.seq, nk, d: s.dim };
        let kv = Operand {
            shape: Shape::new(s.batch, g.kv_heads, nk.max(1), s.dim),
            layout: Layout::Bhsd,
            dtype: cache_dtype,
            max_abs: None,
        };
        let attn = AttentionProblem {
            dims,
            dtype: q.dtype,
            q,
            k: kv,
            v: kv,
            causal: opts.causal,
            key_lengths: None,
            scale,
            window: so.window,
            softcap: so.softcap,
            alibi_slopes: so.alibi_slopes,
            sinks: so.sinks,
            variant: opts.variant,
            f32_on_tensor_cores: opts.f32_on_tensor_cores,
            config: opts.config,
            fixed_order: opts.fixed_order,
        };
        attn.transform()?;
        Ok(PagedProblem { attn, table })
    }
}

/// A checked append of `n_new` tokens per sequence into a paged cache.
#[derive(Clone, Debug)]
pub(crate) struct AppendProblem<'a> {
    pub geometry: PageGeometry,
    pub table: BlockTable<'a>,
    pub n_new: usize,
}

impl<'a> AppendProblem<'a> {
    /// Checks, in this order: `k_new` and `v_new` (non-empty, countable, the same shape
    /// `[batch, kv_heads, n_new, head_dim]` and dtype as the cache's); the block table (one row per
    /// batch, every length at least `n_new`, lengths and pages within the cache); that no two
    /// new tokens land in the same slot of a page.
    pub fn new(k: Operand, v: Operand, g: PageGeometry, cache_dtype: DType, table: BlockTable<'a>) -> Result<Self> {
        check_operand("k_new", &k)?;
        check_operand("v_new", &v)?;
        check_cache("k_new", &k, &g, cache_dtype)?;
        let (ks, vs) = (k.shape, v.shape);
        if ks.heads != g.kv_heads {
            return Err(Error::ShapeMismatch {
                argument: "k_new",
                other: "cache",
                dim: "heads",
                got: ks.heads,
                expected: g.kv_heads,
            });
        }
        for (dim, got, expected) in [
            ("batch", vs.batch, ks.batch),
            ("heads", vs.heads, ks.heads),
            ("seq", vs.seq, ks.seq),
            ("dim", vs.dim, ks.dim),
        ] {
            if got != expected {
                return Err(Error::ShapeMismatch { argument: "v_new", other: "k_new", dim, got, expected });
            }
        }
        same_dtype("v_new", &v, k.dtype)?;
        if table.batch() != ks.batch {
            return Err(Error::ShapeMismatch {
                argument: "block_table",
                other: "k_new",
                dim: "batch",
                got: table.batch(),
                expected: ks.batch,
            });
        }
        let n_new = ks.seq;
        if let Some((b, &len)) = table.seq_lens().iter().enumerate().find(|(_, &l)| (l as usize) < n_new) {
            return Err(Error::InvalidArgument {
                argument: "block_table",
                message: format!(
                    "sequence {b} has length {len}, fewer than the {n_new} new tokens (lengths count the appended tokens)"
                ),
            });
        }
        table.check(&g)?;
        // two new tokens in one slot would race: refuse (pages may be shared for reading only)
        let mut slots = HashMap::new();
        for (b, &len) in table.seq_lens().iter().enumerate() {
            for j in len as usize - n_new..len as usize {
                if let Some(other) = slots.insert(table.token(&g, b, j), b) {
                    return Err(Error::InvalidArgument {
                        argument: "block_table",
                        message: format!(
                            "sequences {other} and {b} would both write token {} of the pool (pages shared by sequences are read-only)",
                            table.token(&g, b, j)
                        ),
                    });
                }
            }
        }
        Ok(AppendProblem { geometry: g, table, n_new })
    }
}
