//! A paged KV cache's layout, as plain data: the geometry of its page pools ([`PageGeometry`]),
//! the block tables that map a sequence's positions to pages ([`BlockTable`]), and the host
//! cache that the CPU path reads and writes ([`HostKvCache`]). Imported by the validation layer,
//! the CPU path and the GPU cache (`paged.rs`) alike; nothing here touches a device.

use crate::error::{Error, Result};
use crate::shape::{DType, Element, Shape};

/// The shape of a page pool: `num_pages` pages of `page_size` tokens (a power of two), each
/// token `kv_heads × head_dim` values.
///
/// ```
/// use wgpu_attention::PageGeometry;
/// let g = PageGeometry { num_pages: 1024, page_size: 16, kv_heads: 8, head_dim: 128 };
/// g.check()?;
/// assert_eq!(g.tokens(), 16384);
/// assert!(PageGeometry { page_size: 12, ..g }.check().is_err()); // not a power of two
/// # Ok::<(), wgpu_attention::Error>(())
/// ```
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
        // each pool's element count and f32 byte count must be countable
        let n = self.pool_shape().checked_numel("cache")?;
        (n as u64)
            .checked_mul(DType::F32.size())
            .ok_or_else(|| Error::TooLarge { argument: "cache", message: format!("{n} elements overflow a 64-bit byte count") })?;
        Ok(())
    }

    /// Tokens in the pool.
    pub fn tokens(&self) -> usize {
        self.num_pages.saturating_mul(self.page_size)
    }

    /// One pool as a tensor shape, `[1, 1, tokens · kv_heads, head_dim]` (saturating): what
    /// [`PagedKvCache::k`](crate::PagedKvCache::k) and [`PagedKvCache::v`](crate::PagedKvCache::v) hold, and the room a buffer given to
    /// [`PagedKvCache::from_buffers`](crate::PagedKvCache::from_buffers) needs from its offset.
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
/// To keep a table on the GPU across steps, see [`DeviceBlockTable`](crate::DeviceBlockTable).
///
/// ```
/// use wgpu_attention::{BlockTable, Error};
/// // two sequences, 3 entries each; sequence 0 (20 tokens) in pages 4, 9; sequence 1 (3 tokens)
/// // in page 2 (entries past a sequence's length are not read)
/// let (table, lens) = ([4u32, 9, 0, 2, 0, 0], [20u32, 3]);
/// let t = BlockTable::new(&table, 3, &lens)?;
/// assert_eq!((t.batch(), t.max_len()), (2, 20));
/// let e = BlockTable::new(&table[..5], 3, &lens).unwrap_err();
/// assert!(matches!(e, Error::LengthMismatch { argument: "block_table", expected: 6, got: 5 }));
/// # Ok::<(), Error>(())
/// ```
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

    /// A table from parts that [`new`](Self::new) accepted before (a resident table's mirror).
    pub(crate) fn from_checked_parts(table: &'a [u32], blocks_per_seq: usize, seq_lens: &'a [u32]) -> Self {
        BlockTable { table, blocks_per_seq, seq_lens }
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

/// The CPU twin of [`PagedKvCache`](crate::PagedKvCache): two page pools in host memory, whose sizes always match
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
    /// A zeroed cache of `geometry`: two pools of `num_pages · page_size · kv_heads · head_dim`
    /// elements each.
    ///
    /// A geometry whose pools cannot be allocated in host memory is refused with
    /// `Err(TooLarge)` naming `geometry` (never a panic or an abort), as is one whose size
    /// overflows.
    ///
    /// ```
    /// use wgpu_attention::{HostKvCache, PageGeometry};
    /// let g = PageGeometry { num_pages: 8, page_size: 16, kv_heads: 2, head_dim: 64 };
    /// let cache = HostKvCache::<f32>::new(g)?;
    /// assert_eq!(cache.k().len(), 8 * 16 * 2 * 64);
    /// // 2^61 elements per pool: refused, not a panic (and a size the system cannot reserve,
    /// // e.g. 2^40 elements on a machine that does not overcommit, is refused, not an abort)
    /// let absurd = PageGeometry { num_pages: 1 << 40, page_size: 1 << 16, kv_heads: 1, head_dim: 32 };
    /// assert!(HostKvCache::<f32>::new(absurd).is_err());
    /// # Ok::<(), wgpu_attention::Error>(())
    /// ```
    pub fn new(geometry: PageGeometry) -> Result<Self> {
        geometry.check()?;
        let n = geometry.pool_shape().numel();
        let alloc = || {
            zeroed_vec::<T>(n).ok_or_else(|| Error::TooLarge {
                argument: "geometry",
                message: format!(
                    "its pools need 2 x {} bytes of host memory, which could not be allocated",
                    (n as u64).saturating_mul(std::mem::size_of::<T>() as u64)
                ),
            })
        };
        let k = alloc()?;
        let v = alloc()?;
        Ok(HostKvCache { k, v, geometry })
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

/// `n` zeroed elements, or `None` where the allocation is refused (or its size overflows). Zero
/// bits are the value 0 for every [`Element`] (f32 and f16), and the memory is obtained zeroed
/// (pages the system has not touched yet stay untouched until written).
fn zeroed_vec<T: Element>(n: usize) -> Option<Vec<T>> {
    if n == 0 || std::mem::size_of::<T>() == 0 {
        return Some(Vec::new());
    }
    let layout = std::alloc::Layout::array::<T>(n).ok()?;
    // SAFETY: `layout` has a non-zero size (checked above); the pointer, if not null, is
    // allocated by the global allocator with `T`'s layout for `n` elements, all zero bits,
    // which is a valid `T` (`Element: Pod`); the Vec takes ownership with length = capacity = n.
    unsafe {
        let p = std::alloc::alloc_zeroed(layout) as *mut T;
        if p.is_null() {
            return None;
        }
        Some(Vec::from_raw_parts(p, n, n))
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
