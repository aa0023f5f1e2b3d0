//! One-shot helpers on host slices, on the GPU when there is one and on the CPU otherwise.

use std::sync::Once;

use crate::context::Context;
use crate::error::Result;
use crate::host::{HostMask, HostTensor};
use crate::retrieval::{Metric, TopK};
use crate::options::{AttentionOptions, Similarity, SoftmaxOptions};
use crate::problem::Operand;
use crate::shape::{Element, Shape};
use crate::{cpu, Tensor};

/// Where the one-shot helpers run: a GPU [`Context`] or the CPU path.
///
/// Both run the same validation: an invalid call gets the same [`Error`](crate::Error) on
/// either, before any work (and each input is scanned for NaN/inf once).
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
    /// The fast multi-threaded CPU path (`wgpu_attention::cpu`).
    Cpu,
}

static FALLBACK_NOTICE: Once = Once::new();

impl Backend {
    /// The best hardware GPU adapter; otherwise the CPU path, saying why once (a `log` warning). When the
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
                    log::warn!(
                        "the only adapter, {}, is a software rasteriser; using the CPU path \
                         (WGPU_ATTENTION_BACKEND=gpu to use it anyway)",
                        ctx.info().adapter
                    )
                });
                Backend::Cpu
            }
            Err(e) => {
                FALLBACK_NOTICE.call_once(|| log::warn!("{e}; using the CPU path"));
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

    /// Uploads a host tensor whose values were scanned already (its operand holds the magnitude).
    fn upload<T: Element>(ctx: &Context, t: &HostTensor<T>, op: &Operand) -> Result<Tensor> {
        pollster::block_on(ctx.upload_scanned(t.data(), t.shape(), t.layout(), op.max_abs))
    }

    /// Similarity scores `[batch, heads, nq, nk]`; see [`Context::similarity`].
    pub fn similarity<T: Element>(&self, q: &HostTensor<T>, k: &HostTensor<T>, metric: Similarity) -> Result<Vec<f32>> {
        let p = cpu::similarity::problem(q, k, metric)?;
        match self {
            Backend::Cpu => Ok(cpu::similarity::similarity_checked(&p, q, k)),
            Backend::Gpu(ctx) => {
                let (qg, kg) = (Self::upload(ctx, q, &p.q)?, Self::upload(ctx, k, &p.k)?);
                pollster::block_on(ctx.similarity_checked(&p, &qg, &kg))?.download_blocking(ctx)
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
        if let Backend::Cpu = self {
            // the fast path scans the input in the pass that reads it
            return cpu::softmax(x, mask, opts);
        }
        let p = cpu::softmax::problem(x, mask, opts)?;
        match self {
            Backend::Cpu => Ok(cpu::softmax::softmax_checked(&p, x, mask)),
            Backend::Gpu(ctx) => {
                let m = mask.map(|m| ctx.upload_mask(m)).transpose()?;
                let xg = Self::upload(ctx, x, &p.x)?;
                pollster::block_on(ctx.softmax_checked(&p, &xg, m.as_ref()))?.download_blocking(ctx)
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
        let p = cpu::attention::problem(q, k, v, mask, opts)?;
        match self {
            Backend::Cpu => Ok(cpu::attention::attention_checked(&p, q, k, v, mask).0),
            Backend::Gpu(ctx) => {
                let (m, qg, kg, vg) = Self::upload_qkv(ctx, &p, q, k, v, mask)?;
                pollster::block_on(ctx.attention_checked(&p, (&qg, &kg, &vg), m.as_ref(), false))?
                    .0
                    .download_blocking(ctx)
            }
        }
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
        let p = cpu::attention::problem(q, k, v, mask, opts)?;
        match self {
            Backend::Cpu => Ok(cpu::attention::attention_checked(&p, q, k, v, mask)),
            Backend::Gpu(ctx) => {
                let (m, qg, kg, vg) = Self::upload_qkv(ctx, &p, q, k, v, mask)?;
                let (o, l) = pollster::block_on(ctx.attention_checked(&p, (&qg, &kg, &vg), m.as_ref(), true))?;
                let l = l.ok_or_else(|| crate::Error::Gpu("no log-sum-exp recorded".into()))?;
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
        let p = cpu::attention::problem(q, k, v, mask, opts)?;
        match self {
            Backend::Cpu => Ok(cpu::attention::attention_unfused_checked(&p, q, k, v, mask)),
            Backend::Gpu(ctx) => {
                let (m, qg, kg, vg) = Self::upload_qkv(ctx, &p, q, k, v, mask)?;
                let (o, w) = pollster::block_on(ctx.attention_unfused_checked(&p, (&qg, &kg, &vg), m.as_ref()))?;
                Ok((o.download_blocking(ctx)?, w.download_blocking(ctx)?))
            }
        }
    }

    /// `weights · v` (weights f32 `[batch, heads, nq, nk]`, `v` `[batch, kv_heads, nk, d]`), in
    /// `v`'s layout; see [`Context::weighted_sum`].
    pub fn weighted_sum<T: Element>(&self, weights: &HostTensor<f32>, v: &HostTensor<T>) -> Result<Vec<f32>> {
        let p = cpu::weighted_sum::problem(weights, v)?;
        match self {
            Backend::Cpu => {
                Ok(cpu::to_layout(cpu::weighted_sum::weighted_sum_checked(&p, weights, v), &p.out_shape(), v.layout()))
            }
            Backend::Gpu(ctx) => {
                let (w, vg) = (Self::upload(ctx, weights, &p.weights)?, Self::upload(ctx, v, &p.v)?);
                pollster::block_on(ctx.weighted_sum_checked(&p, &w, &vg))?.download_blocking(ctx)
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn upload_qkv<T: Element>(
        ctx: &Context,
        p: &crate::problem::AttentionProblem,
        q: &HostTensor<T>,
        k: &HostTensor<T>,
        v: &HostTensor<T>,
        mask: Option<&HostMask>,
    ) -> Result<(Option<crate::Mask>, Tensor, Tensor, Tensor)> {
        let m = mask.map(|m| ctx.upload_mask(m)).transpose()?;
        Ok((m, Self::upload(ctx, q, &p.q)?, Self::upload(ctx, k, &p.k)?, Self::upload(ctx, v, &p.v)?))
    }

    /// Exact top-k of `keys` (`[nk, d]`) for each of `queries` (`[nq, d]`); see [`Context::top_k`]
    /// and [`cpu::top_k`].
    pub fn top_k(&self, queries: &[f32], keys: &[f32], d: usize, k: usize, metric: Metric) -> Result<TopK> {
        let (p, mq, mk) = cpu::top_k::problem(queries, keys, d, k, metric)?;
        match self {
            Backend::Cpu => Ok(cpu::top_k::top_k_checked(&p, queries, keys, mq, mk)),
            Backend::Gpu(ctx) => {
                let q = pollster::block_on(ctx.upload_scanned(
                    queries,
                    Shape::new(1, 1, p.nq, d),
                    crate::Layout::Bhsd,
                    Some(mq),
                ))?;
                let kt = pollster::block_on(ctx.upload_scanned(
                    keys,
                    Shape::new(1, 1, p.nk, d),
                    crate::Layout::Bhsd,
                    Some(mk),
                ))?;
                pollster::block_on(ctx.top_k_checked(&p, &q, &kt, true))
            }
        }
    }
}
