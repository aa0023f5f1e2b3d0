//! A resident search index: keys uploaded once (normalised once for cosine), queried many times,
//! extended with [`Index::add`], with optional ids returned beside the winners.

use crate::context::Context;
use crate::error::{Error, Result};
use crate::host::scan;
use crate::retrieval::{Metric, TopK};
use crate::problem::TopKProblem;
use crate::shape::{DType, Layout, Shape};
use crate::tensor::Tensor;

/// The result of [`Index::search`]: positions and scores, and the ids of the winners if the
/// index holds ids.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchResult {
    /// Positions (insertion order) and scores, `[nq, k]`, best first.
    pub top: TopK,
    /// The id of each winner, `[nq, k]`, if keys were added with ids.
    pub ids: Option<Vec<u64>>,
}

/// Keys resident on the GPU for exact top-k search.
///
/// ```no_run
/// # use wgpu_attention::*;
/// # fn main() -> Result<()> {
/// let ctx = Context::new_blocking()?;
/// let mut index = Index::new(&ctx, 4, Metric::Cosine, DType::F32)?;
/// index.add_with_ids(&[1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0], &[100, 200])?;
/// let found = index.search(&[0.9, 0.1, 0.0, 0.0], 1)?;
/// assert_eq!(found.ids, Some(vec![100]));
/// # Ok(()) }
/// ```
pub struct Index {
    ctx: Context,
    dim: usize,
    /// Stored row length: `dim`, plus one zero column for f16 with odd `dim` (keeps rows 4-byte aligned).
    row: usize,
    metric: Metric,
    dtype: DType,
    buffer: Option<wgpu::Buffer>,
    capacity: usize,
    len: usize,
    ids: Option<Vec<u64>>,
    /// Largest magnitude of the stored (prepared) keys.
    max_abs: f32,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("dim", &self.dim)
            .field("metric", &self.metric)
            .field("dtype", &self.dtype)
            .field("len", &self.len)
            .finish()
    }
}

impl Index {
    /// An empty index of `dim`-dimensional keys stored as `dtype` (f16 needs `SHADER_F16`).
    pub fn new(ctx: &Context, dim: usize, metric: Metric, dtype: DType) -> Result<Self> {
        ctx.check_alive_now()?;
        if dim == 0 {
            return Err(Error::EmptyDimension { argument: "dim", dim: "dim" });
        }
        if dtype == DType::F16 && !ctx.supports_f16() {
            return Err(Error::F16Unsupported { argument: "dtype" });
        }
        let row = if dtype == DType::F16 && dim % 2 == 1 { dim + 1 } else { dim };
        Ok(Index {
            ctx: ctx.clone(),
            dim,
            row,
            metric,
            dtype,
            buffer: None,
            capacity: 0,
            len: 0,
            ids: None,
            max_abs: 0.0,
        })
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether the index holds no keys.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Key dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }
    /// Ranking metric.
    pub fn metric(&self) -> Metric {
        self.metric
    }

    /// Rows of `dim` values, normalised for cosine (zero rows stay zero), padded, as stored
    /// bytes, and their largest magnitude.
    fn prepare(&self, argument: &'static str, values: &[f32]) -> Result<(Vec<u8>, f32)> {
        if values.is_empty() || !values.len().is_multiple_of(self.dim) {
            return Err(Error::LengthMismatch {
                argument,
                expected: values.len().div_ceil(self.dim).max(1) * self.dim,
                got: values.len(),
            });
        }
        let mut max_abs = scan(argument, values)?;
        if self.metric == Metric::Cosine {
            max_abs = max_abs.min(1.0);
        }
        let mut rows = Vec::with_capacity(values.len() / self.dim * self.row);
        for r in values.chunks(self.dim) {
            let scale = if self.metric == Metric::Cosine {
                let n = r.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
                if n > 0.0 {
                    1.0 / n
                } else {
                    0.0
                }
            } else {
                1.0
            };
            rows.extend(r.iter().map(|&x| (x as f64 * scale) as f32));
            rows.extend(std::iter::repeat_n(0.0, self.row - self.dim));
        }
        let bytes = match self.dtype {
            DType::F32 => bytemuck::cast_slice(&rows).to_vec(),
            DType::F16 => {
                bytemuck::cast_slice(&rows.iter().map(|&x| half::f16::from_f32(x)).collect::<Vec<_>>()).to_vec()
            }
        };
        Ok((bytes, max_abs))
    }

    /// Appends keys (`[n, dim]` row-major). Refused once keys were added with ids.
    pub fn add(&mut self, keys: &[f32]) -> Result<()> {
        if self.ids.is_some() {
            return Err(Error::InvalidArgument {
                argument: "ids",
                message: "this index holds ids: use add_with_ids".into(),
            });
        }
        self.append(keys)
    }

    /// Appends keys with an id each, returned by [`Index::search`]. Refused if keys were added
    /// without ids before.
    pub fn add_with_ids(&mut self, keys: &[f32], ids: &[u64]) -> Result<()> {
        if self.ids.is_none() && self.len > 0 {
            return Err(Error::InvalidArgument {
                argument: "ids",
                message: "this index holds keys without ids: use add".into(),
            });
        }
        if ids.len() * self.dim != keys.len() {
            return Err(Error::LengthMismatch { argument: "ids", expected: keys.len() / self.dim, got: ids.len() });
        }
        self.append(keys)?;
        self.ids.get_or_insert_with(Vec::new).extend_from_slice(ids);
        Ok(())
    }

    fn append(&mut self, keys: &[f32]) -> Result<()> {
        self.ctx.check_alive_now()?;
        let (bytes, max_abs) = self.prepare("keys", keys)?;
        let n = keys.len() / self.dim;
        let row_bytes = self.row as u64 * self.dtype.size();
        if self.len + n > self.capacity {
            let cap = (self.len + n).max(self.capacity * 2).max(1024);
            let size = cap as u64 * row_bytes;
            self.ctx.check_buffer_size("keys", size).map_err(|_| Error::TooLarge {
                argument: "keys",
                message: format!(
                    "{} keys of dim {} need {size} bytes, over the device's max_buffer_size {}",
                    self.len + n,
                    self.dim,
                    self.ctx.limits().max_buffer_size
                ),
            })?;
            let ctx = self.ctx.clone();
            let old = self.buffer.take();
            let len_bytes = self.len as u64 * row_bytes;
            let buffer = ctx.scoped(|| {
                let b = ctx.device().create_buffer(&wgpu::BufferDescriptor {
                    label: Some("wgpu-attention index"),
                    size,
                    usage: crate::tensor::TENSOR_USAGE,
                    mapped_at_creation: false,
                });
                if let Some(old) = &old {
                    let mut enc = ctx.device().create_command_encoder(&Default::default());
                    enc.copy_buffer_to_buffer(old, 0, &b, 0, len_bytes);
                    ctx.queue().submit([enc.finish()]);
                }
                Ok(b)
            })?;
            self.buffer = Some(buffer);
            self.capacity = cap;
        }
        let buffer = self.buffer.as_ref().ok_or_else(|| Error::Gpu("index buffer missing".into()))?;
        self.ctx.scoped(|| {
            self.ctx.queue().write_buffer(buffer, self.len as u64 * row_bytes, &bytes);
            Ok(())
        })?;
        self.len += n;
        self.max_abs = self.max_abs.max(max_abs);
        Ok(())
    }

    /// The `k` best keys for each query (`[nq, dim]` row-major), best first, ties to the lower
    /// position; `k` in 1..=min(len, 1024).
    pub fn search(&self, queries: &[f32], k: usize) -> Result<SearchResult> {
        pollster::block_on(self.search_with(queries, k, true))
    }

    /// Async twin of [`Index::search`]: uploads, submission and readback are awaited (the
    /// readback polls the device, see [`Tensor::download`]); no thread waits.
    pub async fn search_async(&self, queries: &[f32], k: usize) -> Result<SearchResult> {
        self.search_with(queries, k, false).await
    }

    async fn search_with(&self, queries: &[f32], k: usize, block: bool) -> Result<SearchResult> {
        let buffer = self
            .buffer
            .as_ref()
            .ok_or(Error::InvalidArgument { argument: "index", message: "the index is empty".into() })?;
        let (bytes, q_max) = self.prepare("queries", queries)?;
        let nq = queries.len() / self.dim;
        // keys and queries are normalised already: cosine ranks by their dot product
        let metric = if self.metric == Metric::Cosine { Metric::Dot } else { self.metric };
        let p = TopKProblem::new(nq, self.len, self.row, self.row, k, metric)?;
        let ctx = &self.ctx;
        let q = Tensor {
            max_abs: Some(q_max),
            ..Tensor::from_buffer(
                ctx,
                ctx.create_init(&bytes, "queries").await?,
                0,
                Shape::new(1, 1, nq, self.row),
                Layout::Bhsd,
                self.dtype,
            )?
        };
        let keys = Tensor {
            max_abs: Some(self.max_abs),
            ..Tensor::from_buffer(
                ctx,
                buffer.clone(),
                0,
                Shape::new(1, 1, self.len, self.row),
                Layout::Bhsd,
                self.dtype,
            )?
        };
        let top = ctx.top_k_checked(&p, &q, &keys, block).await?;
        let ids = self.ids.as_ref().map(|ids| top.indices.iter().map(|&i| ids[i as usize]).collect());
        Ok(SearchResult { top, ids })
    }
}
