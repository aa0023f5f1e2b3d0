//! Launching `shaders/kv_append.wgsl`: the buffers, parameters and dispatches of a checked call
//! (the variant itself is `kernels/kv_append.rs`).

use crate::kernels::{Kernel, Params};
use crate::context::Context;
use crate::error::Result;
use crate::pages::PageGeometry;
use crate::paged::PagedKvCache;
use crate::plan::{ArgSpec, Grid, Rows};
use crate::problem::AppendProblem;
use crate::record::{Arg, Launch};
use crate::tensor::Tensor;
use crate::kernels::kv_append::*;
use crate::kernels::kv_quantize::{KvQuantizeKernel, WG as QWG};

impl<'a> Arg<'a> {
    /// A page pool `[pages, page_size, kv_heads, head_dim]`: bound whole, addressed by head
    /// (stride `head_dim`) and pool token (stride `kv_heads · head_dim`). Query head `h` reads
    /// key/value head `h / group`.
    pub fn pool(name: &'static str, t: &'a Tensor, g: &PageGeometry, group: usize, view: usize, slot: u32) -> Self {
        let d = g.head_dim as u64;
        Arg {
            buffer: &t.buffer,
            spec: ArgSpec {
                name,
                elem: t.dtype.size(),
                offset: t.offset,
                sb: 0,
                sh: d,
                ss: g.kv_heads as u64 * d,
                row_len: d,
                group,
                rows: Rows::All(g.tokens()),
                viewed: true,
                buffer_size: t.buffer.size(),
            },
            view: Some(view),
            slot,
        }
    }

    /// Pool `v` (false: K, true: V) of `cache`: a plain pool as [`Arg::pool`]; a quantized one
    /// bound whole as words, its view addressing values (head stride `head_dim`, token stride
    /// `kv_heads · head_dim`) with the first scale word in the view's batch stride.
    pub fn cache_pool(
        name: &'static str,
        cache: &'a PagedKvCache,
        v: bool,
        group: usize,
        view: usize,
        slot: u32,
    ) -> Self {
        let (t, kind) = if v { (&cache.v, cache.format.v) } else { (&cache.k, cache.format.k) };
        let g = &cache.geometry;
        if !kind.is_quantized() {
            return Arg::pool(name, t, g, group, view, slot);
        }
        let d = g.head_dim as u64;
        let scales = g.quant_layout(kind).scales as u64;
        Arg {
            buffer: &t.buffer,
            spec: ArgSpec { sb: scales, sh: d, ss: g.kv_heads as u64 * d, ..ArgSpec::whole(name, t.buffer.size()) },
            view: Some(view),
            slot,
        }
    }
}

/// Appends `k_new`, `v_new` (`[batch, kv_heads, n_new, head_dim]`) to `cache` for a checked
/// problem; `seq_lens` and `table` are the block table's buffers. Plain pools are written by
/// `kv_append`, quantized ones by `kv_quantize` (one dispatch per pool).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn record(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    p: &AppendProblem<'_>,
    k_new: &Tensor,
    v_new: &Tensor,
    cache: &PagedKvCache,
    seq_lens: &wgpu::Buffer,
    table: &wgpu::Buffer,
) -> Result<()> {
    let g = &p.geometry;
    let (batch, d) = (k_new.shape.batch, g.head_dim);
    let grid = Grid { bh: batch * g.kv_heads, heads: g.kv_heads, nq: p.n_new, row_tile: 1 };
    let params = Params {
        heads: g.kv_heads as u32,
        nq: p.n_new as u32,
        d: d as u32,
        max_blocks: p.table.blocks_per_seq() as u32,
        page_shift: g.page_size.trailing_zeros(),
        ..Params::unscaled()
    };
    let types = [cache.format.k, cache.format.v];
    let write = types.map(|t| !t.is_quantized());
    if write.iter().any(|&w| w) {
        let workgroups = |nbh: usize, nr: usize| (nbh * nr * d).div_ceil(WG as usize) as u64;
        Launch {
            kernel: Kernel::KvAppend(KvAppendKernel { dtype: cache.dtype(), write }),
            grid,
            args: vec![
                Arg::tensor("k_new", k_new, 1, Rows::Query, 0, 1),
                Arg::tensor("v_new", v_new, 1, Rows::Query, 1, 2),
                Arg::whole("seq_lens", seq_lens, 3),
                Arg::whole("block_table", table, 4),
                Arg::pool("k_pages", &cache.k, g, 1, 2, 5),
                Arg::pool("v_pages", &cache.v, g, 1, 3, 6),
            ],
            params,
            workgroups: &workgroups,
        }
        .record(ctx, encoder)
        .await?;
    }
    for (i, (t, new)) in types.into_iter().zip([k_new, v_new]).enumerate() {
        if !t.is_quantized() {
            continue;
        }
        let kernel = KvQuantizeKernel { dtype: cache.dtype(), pool: t };
        let per_row = d / kernel.values_per_invocation() as usize;
        let workgroups = move |nbh: usize, nr: usize| (nbh * nr * per_row).div_ceil(QWG as usize) as u64;
        let name = if i == 0 { "k_pages" } else { "v_pages" };
        Launch {
            kernel: Kernel::KvQuantize(kernel),
            grid,
            args: vec![
                Arg::tensor(if i == 0 { "k_new" } else { "v_new" }, new, 1, Rows::Query, 0, 1),
                Arg::whole("seq_lens", seq_lens, 3),
                Arg::whole("block_table", table, 4),
                Arg::cache_pool(name, cache, i == 1, 1, 2, 5),
            ],
            params,
            workgroups: &workgroups,
        }
        .record(ctx, encoder)
        .await?;
    }
    Ok(())
}
