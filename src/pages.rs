//! A paged KV cache's layout, as plain data: the geometry of its page pools ([`PageGeometry`]),
//! the block tables that map a sequence's positions to pages ([`BlockTable`]), and the host
//! cache that the CPU path reads and writes ([`HostKvCache`]). Imported by the validation layer,
//! the CPU path and the GPU cache (`paged.rs`) alike; nothing here touches a device.

use crate::error::{Error, Result};
use crate::kv_dtype::KvDType;
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

    /// Words of a quantized pool of type `t` (`None` for f32 and f16): [`KvDType`]'s layout.
    pub(crate) fn pool_words(&self, t: KvDType) -> Option<usize> {
        t.pool_words(self.pool_shape().numel(), self.kv_heads)
    }

    /// The layout of a quantized pool of type `t`.
    pub(crate) fn quant_layout(&self, t: KvDType) -> crate::kv_dtype::QuantLayout {
        crate::kv_dtype::QuantLayout::new(t, self.head_dim, self.pool_shape().numel())
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

    /// Sequence `b` alone, as a one-sequence table (`len`: its length, `[seq_lens()[b]]`, held
    /// by the caller).
    pub(crate) fn sequence<'s>(&'s self, b: usize, len: &'s [u32; 1]) -> BlockTable<'s> {
        let bps = self.blocks_per_seq;
        BlockTable { table: &self.table[b * bps..(b + 1) * bps], blocks_per_seq: bps, seq_lens: len }
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

/// The element types of a KV cache's two pools, and fp8's per-head scales
/// ([`PagedKvCache::with_format`](crate::PagedKvCache::with_format),
/// [`HostKvCache::with_format`]).
///
/// A plain pool (f32 or f16) must be in the cache's dtype (that of its queries and new tokens);
/// the quantized types take queries and new tokens in either. An fp8 pool's scales are one per
/// key/value head, positive and finite (`None`: 1 for every head; [`fp8_scales_for`](crate::fp8_scales_for)
/// computes them from sample values).
///
/// ```
/// use wgpu_attention::{KvDType, KvFormat};
/// // q8_0 keys and q4_0 values; fp8 keys with 2 heads' scales
/// let f = KvFormat::new(KvDType::Q8_0, KvDType::Q4_0);
/// let g = KvFormat::new(KvDType::Fp8E4m3, KvDType::F16).with_fp8_scales(Some(vec![0.5, 0.25]), None);
/// # let _ = (f, g);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KvFormat {
    /// The K pool's type.
    pub k: KvDType,
    /// The V pool's type.
    pub v: KvDType,
    /// fp8 K scales, one per key/value head (`None`: all 1).
    pub k_scales: Option<Vec<f32>>,
    /// fp8 V scales, one per key/value head (`None`: all 1).
    pub v_scales: Option<Vec<f32>>,
}

impl KvFormat {
    /// K and V types, fp8 scales 1.
    pub fn new(k: KvDType, v: KvDType) -> Self {
        KvFormat { k, v, k_scales: None, v_scales: None }
    }

    /// The same type for K and V.
    pub fn uniform(t: KvDType) -> Self {
        KvFormat::new(t, t)
    }

    /// With fp8 scales for K and V (each one per key/value head, or `None` for all 1).
    pub fn with_fp8_scales(self, k: Option<Vec<f32>>, v: Option<Vec<f32>>) -> Self {
        KvFormat { k_scales: k, v_scales: v, ..self }
    }

    /// Checks the format against the cache's geometry and dtype: plain pools in `dtype`, head
    /// dims the types can store, fp8 scales one per head and valid. Returns the pools' initial
    /// scale words (fp8 only).
    pub(crate) fn check(&self, g: &PageGeometry, dtype: DType) -> Result<[Vec<f32>; 2]> {
        let mut scales = [vec![], vec![]];
        for (i, (t, s, arg, sarg)) in
            [(self.k, &self.k_scales, "k_dtype", "k_scales"), (self.v, &self.v_scales, "v_dtype", "v_scales")].into_iter().enumerate()
        {
            if let Some(p) = t.plain() {
                if p != dtype {
                    return Err(Error::InvalidArgument {
                        argument: arg,
                        message: format!(
                            "a plain pool is in the cache's dtype ({dtype:?}: that of its queries and new tokens), not {p:?}"
                        ),
                    });
                }
            }
            t.check_head_dim(g.head_dim)?;
            match (t, s) {
                (KvDType::Fp8E4m3, Some(s)) => {
                    crate::kv_dtype::check_fp8_scales(sarg, s, g.kv_heads)?;
                    scales[i] = s.clone();
                }
                (KvDType::Fp8E4m3, None) => scales[i] = vec![1.0; g.kv_heads],
                (_, Some(_)) => {
                    return Err(Error::InvalidArgument {
                        argument: sarg,
                        message: format!("scales apply to fp8 pools, and this pool is {t}"),
                    })
                }
                _ => {}
            }
        }
        Ok(scales)
    }
}

/// One host pool: plain values, or a quantized pool's words (values, then scales).
#[derive(Debug, Clone, PartialEq)]
enum Pool<T> {
    Values(Vec<T>),
    Words(Vec<u32>),
}

/// The CPU twin of [`PagedKvCache`](crate::PagedKvCache): two page pools in host memory, whose sizes always match
/// their geometry (read and written as slices, never resized).
///
/// Filled by [`cpu::append_kv`](crate::cpu::append_kv) (which refuses NaN and infinities) or
/// directly through [`k_mut`](Self::k_mut) / [`v_mut`](Self::v_mut);
/// [`cpu::paged_attention`](crate::cpu::paged_attention) checks the rows it reads and refuses
/// non-finite values there (`Err(NonFinite)` naming `k_pages` or `v_pages`).
///
/// Pools may be quantized ([`with_format`](Self::with_format)): q8_0, q4_0 or fp8 e4m3, K and V
/// independently, stored as the GPU stores them (see [`KvDType`]), quantized by
/// [`cpu::append_kv`](crate::cpu::append_kv) and read in place by the attention.
#[derive(Debug, Clone, PartialEq)]
pub struct HostKvCache<T = f32> {
    k: Pool<T>,
    v: Pool<T>,
    format: KvFormat,
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
    /// assert_eq!(cache.k().unwrap().len(), 8 * 16 * 2 * 64);
    /// // 2^61 elements per pool: refused, not a panic (and a size the system cannot reserve,
    /// // e.g. 2^40 elements on a machine that does not overcommit, is refused, not an abort)
    /// let absurd = PageGeometry { num_pages: 1 << 40, page_size: 1 << 16, kv_heads: 1, head_dim: 32 };
    /// assert!(HostKvCache::<f32>::new(absurd).is_err());
    /// # Ok::<(), wgpu_attention::Error>(())
    /// ```
    pub fn new(geometry: PageGeometry) -> Result<Self> {
        Self::with_format(geometry, &KvFormat::uniform(T::DTYPE.into()))
    }

    /// A zeroed cache of `geometry` whose pools have the types of `format` (checked: plain pools
    /// in `T`, head dims the types can store, fp8 scales). Quantized pools take
    /// [`KvDType::bytes_per_row`] per token and head.
    ///
    /// ```
    /// use wgpu_attention::{cpu, BlockTable, HostKvCache, HostTensor, KvDType, KvFormat, PageGeometry, Shape};
    /// let g = PageGeometry { num_pages: 2, page_size: 16, kv_heads: 1, head_dim: 32 };
    /// let mut cache = HostKvCache::<f32>::with_format(g, &KvFormat::new(KvDType::Q8_0, KvDType::Q4_0))?;
    /// assert_eq!(cache.bytes_per_token(), 34 + 18);
    /// let (pages, lens) = ([1u32], [3u32]);
    /// let x: Vec<f32> = (0..3 * 32).map(|i| (i as f32 * 0.37).sin()).collect();
    /// let t = HostTensor::new(&x, Shape::new(1, 1, 3, 32))?;
    /// cpu::append_kv(&mut cache, &BlockTable::new(&pages, 1, &lens)?, &t, &t)?;
    /// assert!(cache.k().is_none() && cache.k_words().is_some()); // stored quantized
    /// # Ok::<(), wgpu_attention::Error>(())
    /// ```
    pub fn with_format(geometry: PageGeometry, format: &KvFormat) -> Result<Self> {
        geometry.check()?;
        let scales = format.check(&geometry, T::DTYPE)?;
        let n = geometry.pool_shape().numel();
        let too_large = |bytes: usize| Error::TooLarge {
            argument: "geometry",
            message: format!("its pools need 2 x {bytes} bytes of host memory, which could not be allocated"),
        };
        let pool = |t: KvDType, s: &[f32]| -> Result<Pool<T>> {
            match geometry.pool_words(t) {
                None => Ok(Pool::Values(
                    zeroed_vec::<T>(n).ok_or_else(|| too_large(n.saturating_mul(std::mem::size_of::<T>())))?,
                )),
                Some(words) => {
                    let mut w = zeroed_vec::<u32>(words).ok_or_else(|| too_large(words.saturating_mul(4)))?;
                    let first = geometry.quant_layout(t).scales;
                    for (h, s) in s.iter().enumerate() {
                        w[first + h] = s.to_bits();
                    }
                    Ok(Pool::Words(w))
                }
            }
        };
        let k = pool(format.k, &scales[0])?;
        let v = pool(format.v, &scales[1])?;
        let format = KvFormat { k_scales: None, v_scales: None, ..format.clone() }.with_fp8_scales(
            (format.k == KvDType::Fp8E4m3).then(|| scales[0].clone()),
            (format.v == KvDType::Fp8E4m3).then(|| scales[1].clone()),
        );
        Ok(HostKvCache { k, v, format, geometry })
    }

    /// The pools' geometry.
    pub fn geometry(&self) -> PageGeometry {
        self.geometry
    }

    /// The pools' types (and fp8 scales).
    pub fn format(&self) -> &KvFormat {
        &self.format
    }

    /// Bytes of K and V per token, all key/value heads (fp8's per-head scales not counted).
    pub fn bytes_per_token(&self) -> usize {
        let g = &self.geometry;
        g.kv_heads * (self.format.k.bytes_per_row(g.head_dim) + self.format.v.bytes_per_row(g.head_dim))
    }

    /// The K pool, `[num_pages, page_size, kv_heads, head_dim]` row-major; `None` when it is
    /// quantized (see [`k_words`](Self::k_words)).
    pub fn k(&self) -> Option<&[T]> {
        match &self.k {
            Pool::Values(v) => Some(v),
            Pool::Words(_) => None,
        }
    }

    /// The V pool, same layout as [`k`](Self::k).
    pub fn v(&self) -> Option<&[T]> {
        match &self.v {
            Pool::Values(v) => Some(v),
            Pool::Words(_) => None,
        }
    }

    /// The K pool, writable in place (`None` when quantized).
    pub fn k_mut(&mut self) -> Option<&mut [T]> {
        match &mut self.k {
            Pool::Values(v) => Some(v),
            Pool::Words(_) => None,
        }
    }

    /// The V pool, writable in place (`None` when quantized).
    pub fn v_mut(&mut self) -> Option<&mut [T]> {
        match &mut self.v {
            Pool::Values(v) => Some(v),
            Pool::Words(_) => None,
        }
    }

    /// A quantized K pool's words, as the GPU stores them (values, then scales; see
    /// [`KvDType`]); `None` for a plain pool.
    pub fn k_words(&self) -> Option<&[u32]> {
        match &self.k {
            Pool::Words(w) => Some(w),
            Pool::Values(_) => None,
        }
    }

    /// A quantized V pool's words; `None` for a plain pool.
    pub fn v_words(&self) -> Option<&[u32]> {
        match &self.v {
            Pool::Words(w) => Some(w),
            Pool::Values(_) => None,
        }
    }

    /// Head `hk` of pool token `token` of K (`v: false`) or V, dequantized or widened to f32,
    /// appended to `out`.
    pub(crate) fn read_row(&self, v: bool, token: usize, hk: usize, out: &mut Vec<f32>) {
        let g = &self.geometry;
        let at = g.row(token, hk);
        let (pool, t) = if v { (&self.v, self.format.v) } else { (&self.k, self.format.k) };
        match pool {
            Pool::Values(x) => out.extend(x[at..at + g.head_dim].iter().map(|x| x.to_f32())),
            Pool::Words(w) => g.quant_layout(t).read_row(w, at, hk, out),
        }
    }

    /// Writes head `hk` of pool token `token` of K or V (values checked finite by the caller).
    pub(crate) fn write_row(&mut self, v: bool, token: usize, hk: usize, x: &[T]) -> Result<()> {
        let g = self.geometry;
        let at = g.row(token, hk);
        let (pool, t) = if v { (&mut self.v, self.format.v) } else { (&mut self.k, self.format.k) };
        match pool {
            Pool::Values(p) => {
                p[at..at + g.head_dim].copy_from_slice(x);
                Ok(())
            }
            Pool::Words(w) => {
                let row: Vec<f32> = x.iter().map(|x| x.to_f32()).collect();
                g.quant_layout(t).write_row(w, at, hk, &row)
            }
        }
    }
}

/// `n` zeroed elements, or `None` where the allocation is refused (or its size overflows). Zero
/// bits are the value 0 for every [`Element`] (f32 and f16), and the memory is obtained zeroed
/// (pages the system has not touched yet stay untouched until written).
fn zeroed_vec<T: bytemuck::Pod>(n: usize) -> Option<Vec<T>> {
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
