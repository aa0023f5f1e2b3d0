//! A paged KV cache, as serving engines keep it (vLLM's paged attention): K and V stored in
//! pages of `page_size` tokens, `[num_pages, page_size, kv_heads, head_dim]` each, and a block
//! table per sequence saying which pages hold its tokens, in order.
//!
//! [`PagedKvCache`] lives on the GPU ([`Context::append_kv`], [`Context::paged_attention`]);
//! [`HostKvCache`] is its CPU twin ([`cpu::append_kv`](crate::cpu::append_kv),
//! [`cpu::paged_attention`](crate::cpu::paged_attention)). Both read K and V through the block
//! table: nothing is gathered into a contiguous copy.

use crate::context::Context;
use crate::error::{Error, Result};
use crate::problem::{check_operand, Operand};
use crate::shape::{DType, Element, Layout, Shape};
use crate::tensor::Tensor;

/// The shape of a page pool: `num_pages` pages of `page_size` tokens (a power of two), each
/// token `kv_heads × head_dim` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PageGeometry {
    /// Pages in the pool.
    pub num_pages: usize,
    /// Tokens per page, a power of two.
    pub page_size: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Head dimension.
    pub head_dim: usize,
}

impl PageGeometry {
    /// Checks the geometry: every dimension at least 1, the page size a power of two, the
    /// element count countable.
    pub fn check(&self) -> Result<()> {
        for (v, dim) in [
            (self.num_pages, "num_pages"),
            (self.page_size, "page_size"),
            (self.kv_heads, "kv_heads"),
            (self.head_dim, "head_dim"),
        ] {
            if v == 0 {
                return Err(Error::EmptyDimension { argument: "cache", dim });
            }
        }
        if !self.page_size.is_power_of_two() {
            return Err(Error::InvalidArgument {
                argument: "page_size",
                message: format!("{} is not a power of two", self.page_size),
            });
        }
        check_operand(
            "cache",
            &Operand { shape: self.pool_shape(), layout: Layout::Bhsd, dtype: DType::F32, max_abs: None },
        )
    }

    /// Tokens in the pool.
    pub fn tokens(&self) -> usize {
        self.num_pages.saturating_mul(self.page_size)
    }

    /// One pool as a tensor shape, `[1, 1, tokens · kv_heads, head_dim]` (saturating): what
    /// [`PagedKvCache::k`] and [`PagedKvCache::v`] hold, and the room a buffer given to
    /// [`PagedKvCache::from_buffers`] needs from its offset.
    pub fn pool_shape(&self) -> Shape {
        Shape::new(1, 1, self.tokens().saturating_mul(self.kv_heads), self.head_dim)
    }

    /// Element index of head `hk` of token `token`.
    #[inline]
    pub(crate) fn row(&self, token: usize, hk: usize) -> usize {
        (token * self.kv_heads + hk) * self.head_dim
    }
}

/// Which pages hold each sequence's tokens, and how long each sequence is.
///
/// `table` is `[batch, blocks_per_seq]` row-major: sequence `b`'s token `j` is token
/// `j % page_size` of page `table[b · blocks_per_seq + j / page_size]`. `seq_lens[b]` is its
/// length, counting the tokens of the call (an append writes its tokens at the last positions;
/// attention reads every position below the length). Entries past a sequence's length are not
/// read. Pages may be shared between sequences (a common prefix), in any order.
///
/// Checked against the cache before any dispatch: lengths within the table's capacity, and every
/// entry a length reaches a valid page ([`Error::InvalidArgument`] naming `block_table`).
#[derive(Debug, Clone, Copy)]
pub struct BlockTable<'a> {
    table: &'a [u32],
    blocks_per_seq: usize,
    seq_lens: &'a [u32],
}

impl<'a> BlockTable<'a> {
    /// A table of `seq_lens.len()` sequences with `blocks_per_seq` entries each.
    pub fn new(table: &'a [u32], blocks_per_seq: usize, seq_lens: &'a [u32]) -> Result<Self> {
        if blocks_per_seq == 0 {
            return Err(Error::EmptyDimension { argument: "block_table", dim: "blocks_per_seq" });
        }
        if seq_lens.is_empty() {
            return Err(Error::EmptyDimension { argument: "seq_lens", dim: "batch" });
        }
        let expected = seq_lens
            .len()
            .checked_mul(blocks_per_seq)
            .ok_or_else(|| Error::TooLarge { argument: "block_table", message: "its size overflows usize".into() })?;
        if table.len() != expected {
            return Err(Error::LengthMismatch { argument: "block_table", expected, got: table.len() });
        }
        Ok(BlockTable { table, blocks_per_seq, seq_lens })
    }

    /// Sequences in the batch.
    pub fn batch(&self) -> usize {
        self.seq_lens.len()
    }
    /// Entries per sequence.
    pub fn blocks_per_seq(&self) -> usize {
        self.blocks_per_seq
    }
    /// The table, `[batch, blocks_per_seq]`.
    pub fn table(&self) -> &'a [u32] {
        self.table
    }
    /// Each sequence's length.
    pub fn seq_lens(&self) -> &'a [u32] {
        self.seq_lens
    }

    /// The longest sequence.
    pub fn max_len(&self) -> usize {
        self.seq_lens.iter().map(|&l| l as usize).max().unwrap_or(0)
    }

    /// Checks the table against a pool: every length within the table's capacity, every entry
    /// a length reaches a page of the pool.
    pub(crate) fn check(&self, g: &PageGeometry) -> Result<()> {
        let capacity = self.blocks_per_seq.saturating_mul(g.page_size);
        for (b, &len) in self.seq_lens.iter().enumerate() {
            let len = len as usize;
            if len > capacity {
                return Err(Error::InvalidArgument {
                    argument: "block_table",
                    message: format!(
                        "sequence {b} has {len} tokens, more than its {} blocks of {} hold",
                        self.blocks_per_seq, g.page_size
                    ),
                });
            }
            let row = &self.table[b * self.blocks_per_seq..][..len.div_ceil(g.page_size)];
            if let Some((i, &page)) = row.iter().enumerate().find(|(_, &p)| p as usize >= g.num_pages) {
                return Err(Error::InvalidArgument {
                    argument: "block_table",
                    message: format!("sequence {b}'s block {i} is page {page}, past the cache's {} pages", g.num_pages),
                });
            }
        }
        Ok(())
    }

    /// The pool token that holds position `j` of sequence `b` (the table was checked).
    #[inline]
    pub(crate) fn token(&self, g: &PageGeometry, b: usize, j: usize) -> usize {
        self.table[b * self.blocks_per_seq + j / g.page_size] as usize * g.page_size + j % g.page_size
    }
}

/// A paged KV cache on the GPU: two page pools of [`PageGeometry`], K and V, in one dtype.
///
/// Each pool is bound whole, so it must fit one storage binding of the device (128 MiB on some
/// drivers, e.g. lavapipe; several GiB on discrete GPUs). Attention over the cache does not know
/// its values' magnitudes (they may come from the caller's buffers or several appends): where
/// scores or weighted sums of V pass f32's range, they saturate, where attention over uploaded
/// contiguous tensors rescales instead (README, "Extreme values").
#[derive(Debug, Clone)]
pub struct PagedKvCache {
    pub(crate) k: Tensor,
    pub(crate) v: Tensor,
    pub(crate) geometry: PageGeometry,
}

/// Each pool is bound whole by the kernels: it must fit one storage binding of the device.
fn check_binding(ctx: &Context, geometry: &PageGeometry, dtype: DType) -> Result<()> {
    let bytes = (geometry.pool_shape().numel() as u64).saturating_mul(dtype.size());
    let max = ctx.caps().max_binding;
    if bytes > max {
        return Err(Error::TooLarge {
            argument: "geometry",
            message: format!(
                "each pool is {bytes} bytes, and the kernels bind a pool whole: this device binds at most \
                 {max} bytes (max_storage_buffer_binding_size); use fewer pages (several caches) or f16"
            ),
        });
    }
    Ok(())
}

impl PagedKvCache {
    /// A zeroed cache of `geometry` in `dtype` (f16 needs `SHADER_F16`). Each pool must fit one
    /// storage binding of the device (`Err(TooLarge)` naming `geometry` otherwise).
    pub fn new(ctx: &Context, geometry: PageGeometry, dtype: DType) -> Result<Self> {
        geometry.check()?;
        check_binding(ctx, &geometry, dtype)?;
        let k = ctx.zeros(geometry.pool_shape(), Layout::Bhsd, dtype)?;
        let v = ctx.zeros(geometry.pool_shape(), Layout::Bhsd, dtype)?;
        Ok(PagedKvCache { k, v, geometry })
    }

    /// A cache over a caller's two buffers of `ctx`'s device (no copy), each holding a pool of
    /// `geometry` from element `offset` (and fitting one storage binding, as for [`new`](Self::new)).
    ///
    /// The pools' values are not scanned (as for [`Tensor::from_buffer`]): NaN or infinities
    /// there give unspecified but finite results in the rows that read them, and since their
    /// magnitudes are unknown, scores or sums beyond f32's range saturate. Tokens written by
    /// [`Context::append_kv`] from uploaded tensors were scanned at upload.
    pub fn from_buffers(
        ctx: &Context,
        k: wgpu::Buffer,
        v: wgpu::Buffer,
        offset: u64,
        geometry: PageGeometry,
        dtype: DType,
    ) -> Result<Self> {
        geometry.check()?;
        check_binding(ctx, &geometry, dtype)?;
        let s = geometry.pool_shape();
        let k = Tensor::from_buffer(ctx, k, offset, s, Layout::Bhsd, dtype)?;
        let v = Tensor::from_buffer(ctx, v, offset, s, Layout::Bhsd, dtype)?;
        Ok(PagedKvCache { k, v, geometry })
    }

    /// The pools' geometry.
    pub fn geometry(&self) -> PageGeometry {
        self.geometry
    }
    /// Element type.
    pub fn dtype(&self) -> DType {
        self.k.dtype
    }
    /// The K pool, as a tensor `[1, 1, tokens · kv_heads, head_dim]`.
    pub fn k(&self) -> &Tensor {
        &self.k
    }
    /// The V pool, as a tensor `[1, 1, tokens · kv_heads, head_dim]`.
    pub fn v(&self) -> &Tensor {
        &self.v
    }
}

/// The CPU twin of [`PagedKvCache`]: two page pools in host memory, whose sizes always match
/// their geometry (read and written as slices, never resized).
///
/// Filled by [`cpu::append_kv`](crate::cpu::append_kv) (which refuses NaN and infinities) or
/// directly through [`k_mut`](Self::k_mut) / [`v_mut`](Self::v_mut);
/// [`cpu::paged_attention`](crate::cpu::paged_attention) checks the rows it reads and refuses
/// non-finite values there (`Err(NonFinite)` naming `k_pages` or `v_pages`).
#[derive(Debug, Clone, PartialEq)]
pub struct HostKvCache<T = f32> {
    k: Vec<T>,
    v: Vec<T>,
    geometry: PageGeometry,
}

impl<T: Element> HostKvCache<T> {
    /// A zeroed cache of `geometry`.
    pub fn new(geometry: PageGeometry) -> Result<Self> {
        geometry.check()?;
        let n = geometry.pool_shape().numel();
        let zero = T::from_f32(0.0);
        Ok(HostKvCache { k: vec![zero; n], v: vec![zero; n], geometry })
    }

    /// The pools' geometry.
    pub fn geometry(&self) -> PageGeometry {
        self.geometry
    }

    /// The K pool, `[num_pages, page_size, kv_heads, head_dim]` row-major.
    pub fn k(&self) -> &[T] {
        &self.k
    }

    /// The V pool, same layout as [`k`](Self::k).
    pub fn v(&self) -> &[T] {
        &self.v
    }

    /// The K pool, writable in place.
    pub fn k_mut(&mut self) -> &mut [T] {
        &mut self.k
    }

    /// The V pool, writable in place.
    pub fn v_mut(&mut self) -> &mut [T] {
        &mut self.v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(num_pages: usize, page_size: usize) -> PageGeometry {
        PageGeometry { num_pages, page_size, kv_heads: 2, head_dim: 8 }
    }

    #[test]
    fn tables_are_checked_against_the_pool() {
        let lens = [5u32, 0, 8];
        let table = [3u32, 1, 99, 7, 7, 7, 0, 2, 5];
        let t = BlockTable::new(&table, 3, &lens).unwrap();
        // page size 4: sequence 0 reaches blocks 0 and 1 (pages 3, 1); sequence 2 blocks 0, 1
        assert!(t.check(&g(8, 4)).is_ok());
        assert_eq!(t.token(&g(8, 4), 0, 5), 4 + 1, "page 1, slot 1");
        // page 7 of sequence 1 is past its length: not read, not checked; page 99 is reached
        // once sequence 0 is longer than 8
        let long = [9u32, 0, 8];
        let e = BlockTable::new(&table, 3, &long).unwrap().check(&g(8, 4)).unwrap_err();
        assert!(
            matches!(e, Error::InvalidArgument { argument: "block_table", ref message } if message.contains("page 99")),
            "{e}"
        );
        // a length over the table's capacity
        let over = [13u32, 0, 0];
        assert!(BlockTable::new(&table, 3, &over).unwrap().check(&g(200, 4)).is_err());
        // a page past a smaller pool
        assert!(t.check(&g(3, 4)).is_err());
        assert!(matches!(
            BlockTable::new(&table, 2, &lens),
            Err(Error::LengthMismatch { argument: "block_table", .. })
        ));
        let bad = PageGeometry { page_size: 6, ..g(4, 4) };
        assert!(matches!(bad.check(), Err(Error::InvalidArgument { argument: "page_size", .. })));
    }
}
