//! Compiling ahead of time: the pipelines an attention call will need, before its first call
//! (which otherwise compiles them: seconds per variant on a software driver).
//!
//! Drivers differ in when they compile: a GPU driver when the pipeline is created, Mesa's
//! lavapipe when it is first dispatched. So preparing runs the call's variant once, on a small
//! problem that builds the same kernels (same head dim, heads, dtype, K/V source and, where the
//! kernel depends on them, query rows and key count), and waits for it.

use crate::context::Context;
use crate::error::Result;
use crate::kernels::attention_plan::AttentionPlan;
use crate::options::{AttentionOptions, AttentionVariant};
use crate::pages::{BlockTable, PageGeometry};
use crate::paged::PagedKvCache;
use crate::problem::{AttentionProblem, Operand};
use crate::shape::{DType, Layout, Shape};

/// The shapes of an attention call to prepare for: `q` is `[batch, heads, nq, d]`, `kv`
/// `[batch, kv_heads, nk, d]` (for a paged cache: the longest sequence's `nk`), in `dtype`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionShapes {
    /// Query shape.
    pub q: Shape,
    /// Key (and value) shape.
    pub kv: Shape,
    /// Element type of Q, K and V.
    pub dtype: DType,
    /// Whether K and V come from a paged cache ([`Context::paged_attention`]).
    pub paged: bool,
    /// Whether the call asks for the log-sum-exp (`attention_with_lse`, `paged_attention`).
    pub lse: bool,
}

impl Context {
    /// Compiles the pipelines that an attention call of these shapes and options will run on
    /// this context (the plan [`Context::plan_attention`] would report for tensors uploaded
    /// through this crate), so that the first call does not pay for them; returns that plan.
    /// Pipelines already compiled are not compiled again; they go through the driver's pipeline
    /// cache where there is one ([`Context::load_pipeline_cache`]).
    ///
    /// It runs the plan's variant once on a small problem with the same kernels and waits: a
    /// few milliseconds beyond the compilation. A call on views of your own buffers that are
    /// not 16-byte aligned runs the scalar-load variant instead, which this does not prepare.
    ///
    /// ```no_run
    /// use wgpu_attention::*;
    /// # fn main() -> Result<()> {
    /// let ctx = Context::new_blocking()?;
    /// let shapes = AttentionShapes {
    ///     q: Shape::new(1, 32, 1, 128),
    ///     kv: Shape::new(1, 8, 4096, 128),
    ///     dtype: DType::F16,
    ///     paged: true,
    ///     lse: false,
    /// };
    /// let plan = ctx.prepare_attention(&shapes, &AttentionOptions::default())?;
    /// println!("compiled for {} ({})", plan.variant, plan.reason);
    /// # Ok(()) }
    /// ```
    pub fn prepare_attention(&self, shapes: &AttentionShapes, opts: &AttentionOptions) -> Result<AttentionPlan> {
        pollster::block_on(self.prepare_attention_async(shapes, opts))
    }

    /// Async twin of [`Context::prepare_attention`].
    pub async fn prepare_attention_async(
        &self,
        shapes: &AttentionShapes,
        opts: &AttentionOptions<'_>,
    ) -> Result<AttentionPlan> {
        // the plan, as the call makes it (uploaded tensors: aligned, magnitudes known)
        let op = |shape| Operand { shape, layout: Layout::Bhsd, dtype: shapes.dtype, max_abs: Some(1.0) };
        let p = AttentionProblem::new(op(shapes.q), op(shapes.kv), op(shapes.kv), None, opts)?;
        self.check_alive()?;
        if shapes.dtype == DType::F16 && !self.supports_f16() {
            return Err(crate::error::Error::F16Unsupported { argument: "dtype" });
        }
        let max = self.caps().max_binding;
        let bytes = |s: Shape| (s.numel() as u64).saturating_mul(shapes.dtype.size());
        let whole = bytes(shapes.q) <= max && bytes(shapes.kv) <= max;
        let (_, plan) = self.resolve_attention(&p, true, shapes.lse, shapes.paged, whole).await?;

        // that variant, once, on one batch entry: the decode kernel's tile depends on the query
        // rows per key/value head, the unfused chain's softmax on the key count; nothing else
        // does (masks, causality, windows and lengths are parameters, not constants)
        let (q, kv) = (shapes.q, shapes.kv);
        let nq = if matches!(plan.variant, AttentionVariant::Decode(_)) { q.seq } else { 1 };
        let nk = if plan.variant == AttentionVariant::Unfused { kv.seq } else { kv.seq.min(64) };
        let forced = AttentionOptions { variant: plan.variant, key_lengths: None, ..*opts };
        let qt = self.zeros_async(Shape::new(1, q.heads, nq, q.dim), Layout::Bhsd, shapes.dtype).await?;
        let out = if shapes.paged {
            let g = PageGeometry { num_pages: nk.div_ceil(16), page_size: 16, kv_heads: kv.heads, head_dim: kv.dim };
            let cache = PagedKvCache::new(self, g, shapes.dtype)?;
            let pages: Vec<u32> = (0..g.num_pages as u32).collect();
            let lens = [nk as u32];
            let table = BlockTable::new(&pages, g.num_pages, &lens)?;
            if shapes.lse {
                self.paged_attention_with_lse_async(&qt, &cache, &table, &forced).await?.0
            } else {
                self.paged_attention_async(&qt, &cache, &table, &forced).await?
            }
        } else {
            let kt = self.zeros_async(Shape::new(1, kv.heads, nk, kv.dim), Layout::Bhsd, shapes.dtype).await?;
            if shapes.lse {
                self.attention_with_lse_async(&qt, &kt, &kt, None, &forced).await?.0
            } else {
                self.attention_async(&qt, &kt, &kt, None, &forced).await?
            }
        };
        // its result read back: the work has run (and been compiled, where a driver compiles
        // at first dispatch), without blocking the thread
        out.download(self).await?;
        Ok(plan)
    }
}
