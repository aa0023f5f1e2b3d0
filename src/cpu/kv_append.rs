//! CPU twin of `shaders/kv_append.wgsl`: new tokens' K and V written into a host page pool
//! through the block table.

use crate::error::Result;
use crate::host::{scan, HostTensor};
use crate::pages::{BlockTable, HostKvCache};
use crate::problem::{AppendProblem, Operand};
use crate::shape::Element;

/// Appends `k_new` and `v_new` (`[batch, kv_heads, n_new, head_dim]`) to `cache`: sequence `b`'s
/// new tokens go to its last `n_new` positions (`seq_lens[b] - n_new ..`), in the pages its
/// table names. Checked as on the GPU (the same errors), values scanned for NaN and infinities.
/// Quantized pools quantize the new rows ([`KvDType`](crate::KvDType)): a block whose scale
/// passes f16's range is refused naming `values` (rows before it are already written).
///
/// ```
/// use wgpu_attention::{cpu, BlockTable, HostKvCache, HostTensor, PageGeometry, Shape};
/// let g = PageGeometry { num_pages: 2, page_size: 4, kv_heads: 1, head_dim: 2 };
/// let mut cache = HostKvCache::<f32>::new(g)?;
/// // a sequence now 3 tokens long, in page 1: its third token is new
/// let (pages, lens) = ([1u32], [3u32]);
/// let k = [5.0f32, 6.0];
/// let t = HostTensor::new(&k, Shape::new(1, 1, 1, 2))?;
/// cpu::append_kv(&mut cache, &BlockTable::new(&pages, 1, &lens)?, &t, &t)?;
/// assert_eq!(&cache.k().unwrap()[(4 + 2) * 2..(4 + 3) * 2], &[5.0, 6.0]); // page 1, slot 2
/// # Ok::<(), wgpu_attention::Error>(())
/// ```
pub fn append_kv<T: Element>(
    cache: &mut HostKvCache<T>,
    table: &BlockTable,
    k_new: &HostTensor<T>,
    v_new: &HostTensor<T>,
) -> Result<()> {
    let g = cache.geometry();
    let p = AppendProblem::new(Operand::host(k_new), Operand::host(v_new), g, T::DTYPE, *table)?;
    scan("k_new", k_new.data())?;
    scan("v_new", v_new.data())?;
    for (b, &len) in table.seq_lens().iter().enumerate() {
        for t in 0..p.n_new {
            let token = table.token(&g, b, len as usize - p.n_new + t);
            for hk in 0..g.kv_heads {
                cache.write_row(false, token, hk, k_new.row(b, hk, t))?;
                cache.write_row(true, token, hk, v_new.row(b, hk, t))?;
            }
        }
    }
    Ok(())
}
