//! One-shot helpers on host slices, on the GPU when there is one and on the CPU otherwise.

use std::sync::Once;

use crate::context::Context;
use crate::error::Result;
use crate::ops::topk::{Metric, TopK};
use crate::options::{AttentionOptions, Similarity, SoftmaxOptions};
use crate::shape::{Element, HostMask, HostTensor};
use crate::{cpu, Tensor};

/// Where the one-shot helpers run: a GPU [`Context`] or the CPU path.
///
/// ```
/// # use wgpu_attention::*;
/// # fn main() -> Result<()> {
/// let backend = Backend::auto(); // a hardware GPU if there is one, else the CPU path (said once)
/// let shape = Shape::new(1, 1, 3, 4);
/// let x: Vec<f32> = (0..12).map(|i| i as f32 / 12.0).collect();
/// let t = HostTensor::new(&x, shape)?;
/// let out = backend.attention(&t, &t, &t, None, &AttentionOptions::default())?;
/// assert_eq!(out.len(), 12);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub enum Backend {
    /// WGSL kernels on a GPU (or a software Vulkan driver).
    Gpu(Context),
    /// The multi-threaded CPU path (`wgpu_attention::cpu`).
    Cpu,
}

static FALLBACK_NOTICE: Once = Once::new();

impl Backend {
    /// The best hardware GPU adapter; otherwise the CPU path, saying why once on stderr. When the
    /// only adapter is a software rasteriser (device type `Cpu`, e.g. lavapipe or llvmpipe), the
    /// CPU path is chosen: it is the faster of the two on the same cores (BENCHMARKS.md).
    /// `WGPU_ATTENTION_BACKEND=cpu` or `=gpu` forces either (`gpu` accepts a software adapter).
    pub fn auto() -> Self {
        let forced = std::env::var("WGPU_ATTENTION_BACKEND").ok().map(|v| v.to_ascii_lowercase());
        if forced.as_deref() == Some("cpu") {
            return Backend::Cpu;
        }
        match Context::new_blocking() {
            Ok(ctx) if ctx.info().device_type != wgpu::DeviceType::Cpu || forced.as_deref() == Some("gpu") => {
                Backend::Gpu(ctx)
            }
            Ok(ctx) => {
                FALLBACK_NOTICE.call_once(|| {
                    eprintln!(
                        "wgpu-attention: the only adapter, {}, is a software rasteriser; using the CPU path \
                         (WGPU_ATTENTION_BACKEND=gpu to use it anyway)",
                        ctx.info().adapter
                    )
                });
                Backend::Cpu
            }
            Err(e) => {
                FALLBACK_NOTICE.call_once(|| eprintln!("wgpu-attention: {e}; using the CPU path"));
                Backend::Cpu
            }
        }
    }

    /// The CPU path.
    pub fn cpu() -> Self {
        Backend::Cpu
    }

    /// A short description: the adapter, or "CPU (n threads)".
    pub fn describe(&self) -> String {
        match self {
            Backend::Gpu(ctx) => ctx.info().to_string(),
            Backend::Cpu => format!("CPU ({} threads)", rayon::current_num_threads()),
        }
    }

    fn upload<T: Element>(ctx: &Context, t: &HostTensor<T>) -> Result<Tensor> {
        ctx.upload_with_layout(t.data, t.shape, t.layout)
    }

    /// Similarity scores `[batch, heads, nq, nk]`; see [`Context::similarity`].
    pub fn similarity<T: Element>(&self, q: &HostTensor<T>, k: &HostTensor<T>, metric: Similarity) -> Result<Vec<f32>> {
        match self {
            Backend::Cpu => cpu::similarity(q, k, metric),
            Backend::Gpu(ctx) => {
                cpu::similarity::check_host(q, k)?;
                let (qg, kg) = (Self::upload(ctx, q)?, Self::upload(ctx, k)?);
                ctx.similarity(&qg, &kg, metric)?.download_blocking(ctx)
            }
        }
    }

    /// Softmax over the last dimension, in `x`'s layout; see [`Context::softmax`].
    pub fn softmax<T: Element>(
        &self,
        x: &HostTensor<T>,
        mask: Option<&HostMask>,
        opts: &SoftmaxOptions,
    ) -> Result<Vec<f32>> {
        match self {
            Backend::Cpu => cpu::softmax(x, mask, opts),
            Backend::Gpu(ctx) => {
                cpu::softmax::check_host(x, mask, opts)?;
                let m = mask.map(|m| ctx.upload_mask(m)).transpose()?;
                ctx.softmax(&Self::upload(ctx, x)?, m.as_ref(), opts)?.download_blocking(ctx)
            }
        }
    }

    /// Fused attention output, in `q`'s layout; see [`Context::attention`].
    pub fn attention<T: Element>(
        &self,
        q: &HostTensor<T>,
        k: &HostTensor<T>,
        v: &HostTensor<T>,
        mask: Option<&HostMask>,
        opts: &AttentionOptions,
    ) -> Result<Vec<f32>> {
        Ok(self.attention_with_lse(q, k, v, mask, opts)?.0)
    }

    /// Fused attention output and per-row log-sum-exp `[batch, heads, nq]`.
    pub fn attention_with_lse<T: Element>(
        &self,
        q: &HostTensor<T>,
        k: &HostTensor<T>,
        v: &HostTensor<T>,
        mask: Option<&HostMask>,
        opts: &AttentionOptions,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        match self {
            Backend::Cpu => cpu::attention(q, k, v, mask, opts),
            Backend::Gpu(ctx) => {
                cpu::attention::check_all(q, k, v, mask, opts)?;
                let m = mask.map(|m| ctx.upload_mask(m)).transpose()?;
                let (qg, kg, vg) = (Self::upload(ctx, q)?, Self::upload(ctx, k)?, Self::upload(ctx, v)?);
                let (o, l) = ctx.attention_with_lse(&qg, &kg, &vg, m.as_ref(), opts)?;
                Ok((o.download_blocking(ctx)?, l.download_blocking(ctx)?))
            }
        }
    }

    /// Unfused attention: `(output, weights)`; see [`Context::attention_unfused`].
    pub fn attention_unfused<T: Element>(
        &self,
        q: &HostTensor<T>,
        k: &HostTensor<T>,
        v: &HostTensor<T>,
        mask: Option<&HostMask>,
        opts: &AttentionOptions,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        match self {
            Backend::Cpu => cpu::attention_unfused(q, k, v, mask, opts),
            Backend::Gpu(ctx) => {
                cpu::attention::check_all(q, k, v, mask, opts)?;
                let m = mask.map(|m| ctx.upload_mask(m)).transpose()?;
                let (qg, kg, vg) = (Self::upload(ctx, q)?, Self::upload(ctx, k)?, Self::upload(ctx, v)?);
                let (o, w) = ctx.attention_unfused(&qg, &kg, &vg, m.as_ref(), opts)?;
                Ok((o.download_blocking(ctx)?, w.download_blocking(ctx)?))
            }
        }
    }

    /// Exact top-k of `keys` (`[nk, d]`) for each of `queries` (`[nq, d]`); see [`Context::top_k`]
    /// and [`cpu::top_k`].
    pub fn top_k(&self, queries: &[f32], keys: &[f32], d: usize, k: usize, metric: Metric) -> Result<TopK> {
        match self {
            Backend::Cpu => cpu::top_k(queries, keys, d, k, metric),
            Backend::Gpu(ctx) => {
                let rows = |v: &[f32], argument| -> Result<usize> {
                    if d == 0 || v.is_empty() || !v.len().is_multiple_of(d) {
                        return Err(crate::Error::LengthMismatch {
                            argument,
                            expected: v.len().div_ceil(d.max(1)).max(1) * d,
                            got: v.len(),
                        });
                    }
                    Ok(v.len() / d)
                };
                let (nq, nk) = (rows(queries, "queries")?, rows(keys, "keys")?);
                crate::ops::topk::check_top_k(nq, nk, d, d, k)?;
                let q = ctx.upload(queries, crate::Shape::new(1, 1, nq, d))?;
                let kt = ctx.upload(keys, crate::Shape::new(1, 1, nk, d))?;
                ctx.top_k(&q, &kt, k, metric)
            }
        }
    }
}
