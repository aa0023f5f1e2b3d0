//! Block tables resident on the GPU ([`DeviceBlockTable`]), and what a paged call accepts as its
//! block table ([`PagedTable`]: host slices, uploaded by the call, or a resident table, bound as
//! it is).

use crate::context::Context;
use crate::error::{Error, Result};
use crate::pages::BlockTable;

mod sealed {
    /// The resident buffers of a table (sequence lengths, entries) and the id of the context
    /// that made them; `None` for host slices.
    pub trait Sealed {
        fn resident(&self) -> Option<(&wgpu::Buffer, &wgpu::Buffer, u64)>;
    }
}

/// A block table argument of [`Context::append_kv`] and [`Context::paged_attention`] (and their
/// twins): a host [`BlockTable`], uploaded by each call, or a [`DeviceBlockTable`], which lives
/// on the device and is bound as it is (no buffer is created per call). Implemented by these two
/// only.
pub trait PagedTable: sealed::Sealed + Sync + std::fmt::Debug {
    /// The table as host slices: what the call checks against the cache before any dispatch.
    fn view(&self) -> BlockTable<'_>;
}

impl sealed::Sealed for BlockTable<'_> {
    fn resident(&self) -> Option<(&wgpu::Buffer, &wgpu::Buffer, u64)> {
        None
    }
}

impl PagedTable for BlockTable<'_> {
    fn view(&self) -> BlockTable<'_> {
        *self
    }
}

/// A block table that lives on the GPU: a batch's sequence lengths and page entries in two
/// buffers of fixed capacity (`batch` sequences of `blocks_per_seq` entries), made once and
/// rewritten in place between steps ([`update`](Self::update), [`set_seq_lens`](Self::set_seq_lens)).
/// Paged calls bind its buffers as they are; a host mirror is kept for the checks each call
/// makes against the cache (lengths within capacity, pages within the pool), so a bad table is
/// still an `Err`, never an out-of-range read.
///
/// Updates go through the queue (`write_buffer`): they take effect at the next submission, before
/// its command buffers run. A call recorded into your own encoder
/// ([`Context::encode_paged_attention`]) reads the table as it is when that encoder is
/// submitted: submit a step's work before updating the table for the next step.
///
/// ```no_run
/// # use wgpu_attention::*;
/// # fn main() -> Result<()> {
/// let ctx = Context::new_blocking()?;
/// let g = PageGeometry { num_pages: 64, page_size: 16, kv_heads: 2, head_dim: 64 };
/// let cache = PagedKvCache::new(&ctx, g, DType::F32)?;
/// // two sequences with prompts of different lengths, 4 pages each
/// let pages: Vec<u32> = (0..8).collect();
/// let mut lens = vec![20u32, 3];
/// let mut table = DeviceBlockTable::new(&ctx, &BlockTable::new(&pages, 4, &lens)?)?;
/// // (prefill: append each prompt's K and V, then attend)
/// for _step in 0..3 {
///     // each sequence grows by one token: only the lengths change
///     for l in lens.iter_mut() {
///         *l += 1;
///     }
///     table.set_seq_lens(&ctx, &lens)?;
///     let k_new = ctx.upload(&vec![0.5f32; 2 * 2 * 64], Shape::new(2, 2, 1, 64))?;
///     ctx.append_kv(&cache, &table, &k_new, &k_new)?;
///     let q = ctx.upload(&vec![0.1f32; 2 * 8 * 64], Shape::new(2, 8, 1, 64))?;
///     let out = ctx.paged_attention(&q, &cache, &table, &AttentionOptions::default())?;
///     # let _ = out;
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct DeviceBlockTable {
    seq_lens: wgpu::Buffer,
    entries: wgpu::Buffer,
    host_lens: Vec<u32>,
    host_table: Vec<u32>,
    blocks_per_seq: usize,
    ctx_id: u64,
}

impl DeviceBlockTable {
    /// A resident copy of `table` on `ctx`'s device, its capacity `table`'s batch and entries
    /// per sequence.
    pub fn new(ctx: &Context, table: &BlockTable) -> Result<Self> {
        pollster::block_on(async {
            let seq_lens = ctx.create_init(bytemuck::cast_slice(table.seq_lens()), "seq_lens").await?;
            let entries = ctx.create_init(bytemuck::cast_slice(table.table()), "block_table").await?;
            Ok(DeviceBlockTable {
                seq_lens,
                entries,
                host_lens: table.seq_lens().to_vec(),
                host_table: table.table().to_vec(),
                blocks_per_seq: table.blocks_per_seq(),
                ctx_id: ctx.id(),
            })
        })
    }

    /// Rewrites the table in place: `table` must have the same batch and entries per sequence
    /// (`Err(ShapeMismatch)` naming `block_table` otherwise). Takes effect at the next submission.
    pub fn update(&mut self, ctx: &Context, table: &BlockTable) -> Result<()> {
        ctx.check_owns("block_table", self.ctx_id)?;
        for (dim, got, expected) in [
            ("batch", table.batch(), self.host_lens.len()),
            ("blocks_per_seq", table.blocks_per_seq(), self.blocks_per_seq),
        ] {
            if got != expected {
                return Err(Error::ShapeMismatch { argument: "block_table", other: "the resident table", dim, got, expected });
            }
        }
        ctx.check_alive()?;
        ctx.queue().write_buffer(&self.entries, 0, bytemuck::cast_slice(table.table()));
        ctx.queue().write_buffer(&self.seq_lens, 0, bytemuck::cast_slice(table.seq_lens()));
        self.host_table.copy_from_slice(table.table());
        self.host_lens.copy_from_slice(table.seq_lens());
        Ok(())
    }

    /// Rewrites the sequence lengths only (the common step of decoding: each sequence one token
    /// longer, in pages it already has). `lens` must have one entry per sequence
    /// (`Err(LengthMismatch)` naming `seq_lens`). Takes effect at the next submission.
    pub fn set_seq_lens(&mut self, ctx: &Context, lens: &[u32]) -> Result<()> {
        ctx.check_owns("block_table", self.ctx_id)?;
        if lens.len() != self.host_lens.len() {
            return Err(Error::LengthMismatch { argument: "seq_lens", expected: self.host_lens.len(), got: lens.len() });
        }
        ctx.check_alive()?;
        ctx.queue().write_buffer(&self.seq_lens, 0, bytemuck::cast_slice(lens));
        self.host_lens.copy_from_slice(lens);
        Ok(())
    }

    /// Sequences in the batch.
    pub fn batch(&self) -> usize {
        self.host_lens.len()
    }

    /// Entries per sequence.
    pub fn blocks_per_seq(&self) -> usize {
        self.blocks_per_seq
    }
}

impl sealed::Sealed for DeviceBlockTable {
    fn resident(&self) -> Option<(&wgpu::Buffer, &wgpu::Buffer, u64)> {
        Some((&self.seq_lens, &self.entries, self.ctx_id))
    }
}

impl PagedTable for DeviceBlockTable {
    fn view(&self) -> BlockTable<'_> {
        BlockTable::from_checked_parts(&self.host_table, self.blocks_per_seq, &self.host_lens)
    }
}

/// The resident buffers of a table argument, if it has them.
pub(crate) fn resident(table: &dyn PagedTable) -> Option<(&wgpu::Buffer, &wgpu::Buffer, u64)> {
    sealed::Sealed::resident(table)
}
