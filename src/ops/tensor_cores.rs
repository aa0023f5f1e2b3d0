//! The tensor-core path's use on a context: where a call may run on matrix fragments, and the
//! self-checks that run the first time a context would use them on hardware (against the SIMT
//! kernels): the similarity check once (a mismatch switches the context to SIMT), and the
//! attention check once per head-dim class and rows per workgroup (a class that fails runs SIMT).

use crate::context::Context;
use crate::error::Result;
use crate::kernels::attention_mma::AttentionMmaKernel;
use crate::kernels::attention_plan::{resolve, AttentionPlan, Resolved};
use crate::kernels::similarity_mma::Mma;
use crate::problem::AttentionProblem;
use crate::options::Similarity;
use crate::problem::{Operand, SimilarityProblem};
use crate::shape::{DType, Layout, Shape};
use crate::tensor_cores::TensorCoreState;

impl Context {
    /// Where a call with inputs of `dtype` could run on matrix fragments, or why not (f32 only
    /// with `allow_f32`, the call's opt-in).
    pub(crate) async fn tensor_core_choice(&self, dtype: crate::shape::DType, allow_f32: bool) -> Result<Mma, String> {
        if dtype != crate::shape::DType::F16 && !allow_f32 {
            return Err(
                "the tensor-core kernels take f16 inputs (f32 with AttentionOptions::f32_on_tensor_cores)".into()
            );
        }
        match self.mma().await {
            Some(m) => Ok(m),
            None => Err(match self.tensor_cores() {
                TensorCoreState::Inactive(why) => format!("tensor cores are not in use: {why}"),
                other => format!("tensor cores: {other}"),
            }),
        }
    }

    /// Where the similarity GEMM of a call with inputs of `dtype` runs on matrix fragments: f16
    /// on a context with tensor cores (after their self-check) or their twin; `None` for SIMT.
    pub(crate) async fn fragments_for(&self, dtype: DType) -> Option<Mma> {
        if dtype == DType::F16 {
            self.mma().await
        } else {
            None
        }
    }

    /// Where the fragment kernels run on this context, if anywhere, once the hardware path has
    /// passed its self-check (run here the first time).
    pub(crate) async fn mma(&self) -> Option<Mma> {
        let subgroup = match self.tensor_cores() {
            TensorCoreState::Emulated => return Some(Mma::Emulated),
            TensorCoreState::Inactive(_) => return None,
            TensorCoreState::Active { subgroup_size } => subgroup_size,
        };
        let mma = Mma::Hardware { subgroup };
        let mut checked = self.inner.tensor_cores_checked.lock().await;
        if !*checked {
            *checked = true;
            if let Err(why) = self_check(self, mma).await {
                let why = format!("the self-check against the SIMT kernels failed: {why}");
                log::warn!("wgpu-attention: tensor cores disabled on {}: {why}", self.inner.info.adapter);
                *self.inner.tensor_cores.lock().unwrap_or_else(|e| e.into_inner()) = TensorCoreState::Inactive(why);
                return None;
            }
        }
        match self.tensor_cores() {
            TensorCoreState::Active { .. } => Some(mma),
            _ => None,
        }
    }

    /// The attention variant for `p` (see `resolve` for the flags). `Auto` with no configuration
    /// takes the tuned or built-in entry for the call's shape class where there is one and it
    /// can run the call (`ops/tuning.rs`), else the heuristic. Where the variant is the
    /// tensor-core kernel on hardware, its head-dim class passed the self-check on this context
    /// first (run here the first time the class is used), or the call is resolved again without
    /// tensor cores (`Auto` runs SIMT, saying why; a forced variant is refused with the reason).
    pub(crate) async fn resolve_attention(
        &self,
        p: &AttentionProblem<'_>,
        aligned: bool,
        lse: bool,
        paged: bool,
        whole: bool,
    ) -> Result<(Resolved, AttentionPlan)> {
        if let Some((choice, source)) = self.tuned_choice(p).filter(|_| !p.fixed_order) {
            let forced = AttentionProblem { variant: choice.variant, config: choice.config, ..p.clone() };
            match self.resolve_checked(&forced, aligned, lse, paged, whole).await {
                Ok((r, mut plan)) => {
                    plan.reason =
                        format!("auto: {source} entry for {}: {} {}", Self::shape_class(p), plan.variant, plan.config);
                    return Ok((r, plan));
                }
                Err(e) => log::debug!("wgpu-attention: {source} entry passed over: {e}"),
            }
        }
        self.resolve_checked(p, aligned, lse, paged, whole).await
    }

    /// `resolve`, then the tensor-core class check (see `resolve_attention`).
    async fn resolve_checked(
        &self,
        p: &AttentionProblem<'_>,
        aligned: bool,
        lse: bool,
        paged: bool,
        whole: bool,
    ) -> Result<(Resolved, AttentionPlan)> {
        let tc = self.tensor_core_choice(p.dtype, p.f32_on_tensor_cores).await;
        let r = resolve(p, self.caps(), aligned, lse, paged, whole, &tc)?;
        if let Resolved::TensorCores(k) = r.0 {
            if let Err(why) = self.attention_class_check(k).await {
                return resolve(p, self.caps(), aligned, lse, paged, whole, &Err(why));
            }
        }
        Ok(r)
    }

    /// Whether the head-dim class and rows per workgroup of `k` passed the attention self-check
    /// on this context (run now, once per class; the twin needs none: its results are the
    /// tests' to check).
    pub(crate) async fn attention_class_check(&self, k: AttentionMmaKernel) -> std::result::Result<(), String> {
        let mut classes = self.inner.attention_classes.lock().await;
        if let Some(r) = classes.get(&k.class()) {
            return r.clone();
        }
        if !matches!(k.mma, Mma::Hardware { .. }) {
            return Ok(());
        }
        let r = attention_check(self, k).await.map_err(|why| {
            let why = format!(
                "the tensor-core attention self-check at head dims {}-{} with {} rows per workgroup, {} keys per tile, staging depth {} and z in {} failed on this device: {why}",
                k.dp - 15,
                k.dp,
                k.rows,
                k.keys,
                k.stages,
                if k.softmax_regs { "registers" } else { "workgroup memory" }
            );
            log::warn!("wgpu-attention: {why}; that class runs SIMT");
            why
        });
        classes.insert(k.class(), r.clone());
        r
    }

    /// The attention self-checks run on this context so far: per head-dim class (the padded
    /// head dim, a multiple of 16) and query rows per workgroup of the tensor-core kernel,
    /// whether it passed (`Err`: why not; that class runs on the SIMT kernels). Empty until a
    /// call runs on hardware tensor cores.
    pub fn tensor_core_checks(&self) -> Vec<TensorCoreCheck> {
        let classes = pollster::block_on(self.inner.attention_classes.lock());
        classes
            .iter()
            .map(|(&(head_dim, rows, keys, stages, softmax_regs), r)| TensorCoreCheck {
                head_dim: head_dim as usize,
                rows: rows as usize,
                keys: keys as usize,
                stages: stages as usize,
                softmax_in_registers: softmax_regs,
                result: r.clone(),
            })
            .collect()
    }
}

/// One attention self-check of the tensor-core path on a context (see
/// [`Context::tensor_core_checks`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TensorCoreCheck {
    /// The head-dim class: head dims `head_dim - 15 ..= head_dim` run the same kernel.
    pub head_dim: usize,
    /// Query rows per workgroup of the checked kernel.
    pub rows: usize,
    /// Keys per tile of the checked kernel.
    pub keys: usize,
    /// Its staging depth.
    pub stages: usize,
    /// Whether its softmax keeps z in registers.
    pub softmax_in_registers: bool,
    /// `Ok` where the kernel agreed with the SIMT kernel; otherwise how it differed.
    pub result: std::result::Result<(), String>,
}

/// The self-check of the hardware path: a small similarity with tails in every dimension (2
/// heads, 70 queries, 90 keys, dim 40) on `mma` and on the SIMT kernel, with inputs whose
/// products and sums are exact in f32 (multiples of 1/4 up to 2), so the two must agree
/// bitwise. `Err` says how they differ, or what failed.
async fn self_check(ctx: &Context, mma: Mma) -> std::result::Result<(), String> {
    let run = async {
        let (qs, ks) = (Shape::new(1, 2, 70, 40), Shape::new(1, 2, 90, 40));
        let val = |i: usize, m: usize| half::f16::from_f32(((i * m) % 17) as f32 / 4.0 - 2.0);
        let q: Vec<half::f16> = (0..qs.numel()).map(|i| val(i, 7)).collect();
        let k: Vec<half::f16> = (0..ks.numel()).map(|i| val(i, 11)).collect();
        let (q, k) = (ctx.upload_async(&q, qs).await?, ctx.upload_async(&k, ks).await?);
        let p = SimilarityProblem::new(Operand::gpu(&q), Operand::gpu(&k), Similarity::Dot)?;
        let hw = ctx.zeros_async(p.out_shape(), Layout::Bhsd, DType::F32).await?;
        let simt = ctx.zeros_async(p.out_shape(), Layout::Bhsd, DType::F32).await?;
        let mut enc = ctx.encoder()?;
        crate::launch::similarity::record(ctx, &mut enc, &p, &q, &k, &hw, None, Some(mma)).await?;
        crate::launch::similarity::record(ctx, &mut enc, &p, &q, &k, &simt, None, None).await?;
        ctx.submit_and_download_async(enc, &[&hw, &simt]).await
    };
    let got = run.await.map_err(|e| e.to_string())?;
    match got[0].iter().zip(&got[1]).position(|(a, b)| a != b) {
        Some(i) => Err(format!("similarity score {i}: {} on tensor cores, {} on the SIMT kernel", got[0][i], got[1][i])),
        None => Ok(()),
    }
}

/// The attention self-check of one kernel class (`AttentionMmaKernel::class`): causal f16
/// attention with GQA and tails (4 heads on 2, 70 queries, 90 keys, the class's widest head dim)
/// on that tensor-core kernel and on the SIMT fused kernel; f16 weights and outputs differ by
/// rounding only (within 1e-2 of the largest output; a fault in the fragments, their layout or
/// the barriers is of the order of the outputs themselves).
pub(crate) async fn attention_check(ctx: &Context, kernel: AttentionMmaKernel) -> std::result::Result<(), String> {
    let d = kernel.dp as usize;
    use crate::kernels::attention::choose_tile;
    use crate::kernels::attention_plan::Resolved;
    use crate::launch::attention::{record, KvSource};
    let run = async {
        let (qs, ks) = (Shape::new(1, 4, 70, d), Shape::new(1, 2, 90, d));
        let val = |i: usize, m: usize| half::f16::from_f32(((i * m) % 23) as f32 / 11.0 - 1.0);
        let q: Vec<half::f16> = (0..qs.numel()).map(|i| val(i, 5)).collect();
        let k: Vec<half::f16> = (0..ks.numel()).map(|i| val(i, 7)).collect();
        let v: Vec<half::f16> = (0..ks.numel()).map(|i| val(i, 3)).collect();
        let (q, k, v) =
            (ctx.upload_async(&q, qs).await?, ctx.upload_async(&k, ks).await?, ctx.upload_async(&v, ks).await?);
        let opts = crate::options::AttentionOptions { causal: true, ..Default::default() };
        let p = ctx.attention_problem(&q, &k, &v, None, &opts)?;
        // the class's kernel, f16, vector loads, contiguous
        let tc = AttentionMmaKernel {
            dtype: DType::F16,
            loads: crate::options::Loads::Vec4,
            paged: false,
            kv: [crate::KvDType::F16; 2],
            ..kernel
        };
        // (vector loads: the SIMT variant the tests compile too at head dim 128)
        let simt = choose_tile(d, ctx.caps())?.kernel(DType::F16, false, crate::options::Loads::Vec4);
        let a = ctx.zeros_async(qs, Layout::Bhsd, DType::F16).await?;
        let b = ctx.zeros_async(qs, Layout::Bhsd, DType::F16).await?;
        let mut enc = ctx.encoder()?;
        record(ctx, &mut enc, &p, Resolved::TensorCores(tc), &q, KvSource::Tensors(&k, &v), None, &a, None).await?;
        record(ctx, &mut enc, &p, Resolved::Fused(simt), &q, KvSource::Tensors(&k, &v), None, &b, None).await?;
        ctx.submit_and_download_async(enc, &[&a, &b]).await
    };
    let got = run.await.map_err(|e| e.to_string())?;
    let scale = got[1].iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-3);
    match got[0]
        .iter()
        .zip(&got[1])
        .position(|(a, b)| (a - b).abs().partial_cmp(&(1e-2 * scale)) != Some(std::cmp::Ordering::Less))
    {
        None => Ok(()),
        Some(i) => {
            Err(format!("attention output {i}: {} on tensor cores, {} on the SIMT kernel", got[0][i], got[1][i]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::ContextOptions;
    use crate::tensor_cores::TensorCores;

    /// The self-check's comparison on the emulated twin (the hardware path runs it on the
    /// device): the two kernels agree bitwise on its exact data.
    #[test]
    #[cfg_attr(cpu_only_tests, ignore = "WGPU_ATTENTION_TESTS=cpu-only: needs a GPU adapter")]
    fn self_check_passes_on_the_twin() {
        let ctx = Context::with_options_blocking(ContextOptions {
            tensor_cores: TensorCores::Emulated,
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("GPU test found no adapter ({e})"));
        assert_eq!(pollster::block_on(self_check(&ctx, Mma::Emulated)), Ok(()));
        assert!(ctx.tensor_core_checks().is_empty(), "the twin runs no class check");
        // the attention check at the widest class (on 32 KiB: 32 rows per workgroup; the same
        // kernel as tests/tensor_cores.rs's at head dim 128, so a shader cache serves both)
        for d in [128] {
            let k = AttentionMmaKernel::choose(d, 32, Mma::Emulated, ctx.caps(), DType::F16, crate::options::Loads::Vec4)
                .unwrap();
            assert_eq!(pollster::block_on(attention_check(&ctx, k)), Ok(()), "d {d}");
        }
    }

    /// A head-dim class whose check failed runs SIMT: `Auto` says why, a forced `TensorCores`
    /// is refused with the reason, other classes still run on the fragments (a failure entered
    /// by hand on the twin, whose classes are otherwise not checked).
    #[test]
    #[cfg_attr(cpu_only_tests, ignore = "WGPU_ATTENTION_TESTS=cpu-only: needs a GPU adapter")]
    fn a_class_that_failed_its_check_runs_simt() {
        use crate::options::{AttentionOptions, AttentionVariant};
        let ctx = Context::with_options_blocking(ContextOptions {
            tensor_cores: TensorCores::Emulated,
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("GPU test found no adapter ({e})"));
        let k = AttentionMmaKernel::choose(64, 32, Mma::Emulated, ctx.caps(), DType::F16, crate::options::Loads::Vec4)
            .unwrap();
        pollster::block_on(ctx.inner.attention_classes.lock()).insert(k.class(), Err("a test's failure".into()));
        let plan = |d: usize, variant| {
            let s = Shape::new(1, 2, 256, d);
            let x = ctx.zeros(s, Layout::Bhsd, DType::F16).unwrap();
            ctx.plan_attention(&x, &x, &x, None, &AttentionOptions { variant, ..Default::default() }, false)
        };
        let p = plan(64, AttentionVariant::Auto).unwrap();
        assert!(p.variant != AttentionVariant::TensorCores && p.reason.contains("a test's failure"), "{}", p.reason);
        let e = plan(60, AttentionVariant::TensorCores).unwrap_err();
        assert!(e.to_string().contains("a test's failure"), "{e}");
        assert_eq!(plan(32, AttentionVariant::Auto).unwrap().variant, AttentionVariant::TensorCores);
        let checks = ctx.tensor_core_checks();
        assert_eq!(checks.len(), 1);
        assert_eq!((checks[0].head_dim, checks[0].rows, checks[0].keys, checks[0].stages), (64, 64, 32, 1));
        assert!(checks[0].result.is_err());
    }
}
