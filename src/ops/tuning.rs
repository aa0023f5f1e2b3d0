//! Tuning on a context: the entry `Auto` looks up for a call's shape class (tuned here or
//! imported, then built in), the timing of the candidates the first time a class is seen
//! (`Tuning::OnFirstUse`), and the tuned table's export and import.

use std::time::Instant;

use crate::context::Context;
use crate::error::Result;
use crate::kernels::attention_plan::{candidates, Resolved};
use crate::kernels::similarity_mma::Mma;
use crate::launch::attention::{record, KvSource};
use crate::launch::similarity;
use crate::options::AttentionVariant;
use crate::problem::AttentionProblem;
use crate::problem::SimilarityProblem;
use crate::shape::Layout;
use crate::tensor::{Mask, Tensor};
use crate::tuning::{ShapeClass, SimilarityKernel, TunedChoice, Tuning, TuningTable};

/// Timed runs per candidate (after one untimed run, which compiles it); the fastest counts.
const TIMED_RUNS: usize = 3;

impl Context {
    /// How `Auto` chooses the attention kernels' configuration on this context
    /// (`ContextOptions::tuning`).
    pub fn tuning(&self) -> Tuning {
        *self.inner.tuning.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes how `Auto` chooses (e.g. on a context made with [`Context::from_device`], which
    /// takes no options). Entries already tuned or imported are kept.
    pub fn set_tuning(&self, tuning: Tuning) {
        *self.inner.tuning.lock().unwrap_or_else(|e| e.into_inner()) = tuning;
    }

    /// The tuned choices of this context (measured here with [`Tuning::OnFirstUse`], or
    /// imported), labelled with this adapter and driver: write its text form
    /// (`to_string()`) to persist it, and pass it to [`Context::import_tuning`] in a later run.
    pub fn tuning_table(&self) -> TuningTable {
        self.inner.tuned.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Adds the entries of `table` (replacing this context's for the same shape classes) and
    /// returns how many it added. A table made on another adapter or driver is ignored (0, with
    /// a `log` warning): its winners need not be this device's. An entry that cannot run a call
    /// (another device's limits) is passed over by `Auto` for the next choice.
    ///
    /// ```no_run
    /// # use wgpu_attention::*;
    /// # fn main() -> Result<()> {
    /// let ctx = Context::new_blocking()?;
    /// if let Ok(text) = std::fs::read_to_string("tuning.txt") {
    ///     let added = ctx.import_tuning(&text.parse()?);
    ///     println!("{added} tuned shape classes");
    /// }
    /// # Ok(()) }
    /// ```
    pub fn import_tuning(&self, table: &TuningTable) -> usize {
        let mut tuned = self.inner.tuned.lock().unwrap_or_else(|e| e.into_inner());
        if table.adapter != tuned.adapter {
            log::warn!(
                "wgpu-attention: a tuning table of {:?} ignored on {:?} (another adapter or driver)",
                table.adapter,
                tuned.adapter
            );
            return 0;
        }
        tuned.entries.extend(table.entries.iter().map(|(k, v)| (*k, *v)));
        tuned.similarity.extend(table.similarity.iter().map(|(k, v)| (*k, *v)));
        table.len()
    }

    /// The shape class of `p`.
    pub(crate) fn shape_class(p: &AttentionProblem) -> ShapeClass {
        let d = p.dims;
        ShapeClass::of(p.dtype, d.slices(), d.nq, d.nk, d.d, d.group(), p.causal)
    }

    /// The entry `Auto` takes for `p` (tuned first, then built in) with where it comes from;
    /// `None` for a forced variant or configuration, with tuning off, or where there is none.
    pub(crate) fn tuned_choice(&self, p: &AttentionProblem) -> Option<(TunedChoice, &'static str)> {
        if p.variant != AttentionVariant::Auto || !p.config.is_default() || self.tuning() == Tuning::Off {
            return None;
        }
        let class = Self::shape_class(p);
        if let Some(c) = self.inner.tuned.lock().unwrap_or_else(|e| e.into_inner()).get(&class) {
            return Some((c, "the context's tuned"));
        }
        self.inner.built_in.as_ref().and_then(|t| t.get(&class)).map(|c| (c, "the built-in"))
    }

    /// With [`Tuning::OnFirstUse`], for an `Auto` call whose shape class has no entry: times
    /// every candidate on the call's inputs (into scratch outputs) while the budget lasts and
    /// keeps the fastest. A failure of the tuning itself is logged, not returned: the call runs
    /// as the heuristic says.
    pub(crate) async fn tune_if_new(
        &self,
        p: &AttentionProblem<'_>,
        (q, k, v): (&Tensor, &Tensor, &Tensor),
        mask: Option<&Mask>,
        aligned: bool,
        lse: bool,
        whole: bool,
    ) {
        let Tuning::OnFirstUse { budget } = self.tuning() else { return };
        if p.variant != AttentionVariant::Auto || !p.config.is_default() || p.fixed_order {
            return;
        }
        let class = Self::shape_class(p);
        let _one_at_a_time = self.inner.tuning_run.lock().await;
        if self.tuning_table().get(&class).is_some() {
            return;
        }
        let started = Instant::now();
        match self.time_candidates(p, (q, k, v), mask, aligned, lse, whole, budget).await {
            Ok(Some((choice, ms, timed, of))) => {
                log::info!(
                    "wgpu-attention: tuned {class}: {} {} ({ms:.3} ms; {timed} of {of} candidates timed in {:.1} s)",
                    choice.variant,
                    choice.config,
                    started.elapsed().as_secs_f64()
                );
                self.inner.tuned.lock().unwrap_or_else(|e| e.into_inner()).entries.insert(class, choice);
            }
            Ok(None) => log::warn!("wgpu-attention: tuning {class}: no candidate ran"),
            Err(e) => log::warn!("wgpu-attention: tuning {class} failed: {e}"),
        }
    }

    /// Times the candidates for `p` (the heuristic's choice first); the fastest with its time
    /// (ms), how many were timed and how many there were.
    #[allow(clippy::too_many_arguments)]
    async fn time_candidates(
        &self,
        p: &AttentionProblem<'_>,
        (q, k, v): (&Tensor, &Tensor, &Tensor),
        mask: Option<&Mask>,
        aligned: bool,
        lse: bool,
        whole: bool,
        budget: std::time::Duration,
    ) -> Result<Option<(TunedChoice, f64, usize, usize)>> {
        let tc = self.tensor_core_choice(p.dtype, p.f32_on_tensor_cores).await;
        let mut all = candidates(p, self.caps(), aligned, lse, false, whole, &tc);
        let (heuristic, _) = crate::kernels::attention_plan::resolve(p, self.caps(), aligned, lse, false, whole, &tc)?;
        if let Some(i) = all.iter().position(|(r, _)| *r == heuristic) {
            all.swap(0, i);
        }
        let out = self.zeros_async(p.out_shape(), Layout::Bhsd, q.dtype()).await?;
        let lse_t = match lse {
            true => Some(self.zeros_async(p.lse_shape(), Layout::Bhsd, crate::shape::DType::F32).await?),
            false => None,
        };
        let started = Instant::now();
        let mut best: Option<(TunedChoice, f64)> = None;
        let mut timed = 0;
        for (r, plan) in &all {
            if timed > 0 && started.elapsed() > budget {
                break;
            }
            if let Resolved::TensorCores(kernel) = r {
                if self.attention_class_check(*kernel).await.is_err() {
                    continue;
                }
            }
            let run = || -> Result<f64> {
                let t = Instant::now();
                let kernel = self.time_gpu(|enc| {
                    pollster::block_on(record(self, enc, p, *r, q, KvSource::Tensors(k, v), mask, &out, lse_t.as_ref()))
                })?;
                Ok(kernel.unwrap_or_else(|| t.elapsed().as_secs_f64()))
            };
            let ms = match run().and_then(|_| (0..TIMED_RUNS).map(|_| run()).collect::<Result<Vec<f64>>>()) {
                Ok(t) => t.into_iter().fold(f64::INFINITY, f64::min) * 1e3,
                Err(e) => {
                    log::warn!("wgpu-attention: tuning candidate {} {} failed: {e}", plan.variant, plan.config);
                    continue;
                }
            };
            timed += 1;
            if best.as_ref().is_none_or(|b| ms < b.1) {
                best = Some((TunedChoice { variant: plan.variant, config: plan.config }, ms));
            }
        }
        Ok(best.map(|(c, ms)| (c, ms, timed, all.len())))
    }

    /// The class of a similarity call: its dtype, head dim, rows, keys, slices and group
    /// (never causal).
    pub(crate) fn similarity_class(p: &SimilarityProblem) -> ShapeClass {
        let d = p.dims;
        ShapeClass::of(p.dtype, d.slices(), d.nq, d.nk, d.d, d.group(), false)
    }

    /// Which similarity kernel runs a checked call, and why. Without tensor cores for the
    /// call's dtype: SIMT. Otherwise, unless tuning is off: the context's tuned entry for the
    /// call's class, then the built-in table's; with `Tuning::OnFirstUse` and no entry, both
    /// kernels timed on the call's own inputs (`timed`: q and k; `None` only reports what would
    /// happen), writing a scratch output (never the caller's), and the faster kept for the
    /// context. Last, the heuristic: tensor cores.
    pub(crate) async fn similarity_route(
        &self,
        p: &SimilarityProblem,
        timed: Option<(&Tensor, &Tensor)>,
    ) -> Result<(Option<Mma>, String)> {
        let Some(mma) = self.fragments_for(p.dtype).await else {
            return Ok((None, "SIMT: no tensor cores for this dtype on this context".into()));
        };
        let pick = |k: SimilarityKernel| match k {
            SimilarityKernel::Simt => None,
            SimilarityKernel::TensorCores => Some(mma),
        };
        let tuning = self.tuning();
        if tuning == Tuning::Off {
            return Ok((Some(mma), "tensor cores: the heuristic (tuning is off)".into()));
        }
        let class = Self::similarity_class(p);
        let tuned = || self.inner.tuned.lock().unwrap_or_else(|e| e.into_inner()).get_similarity(&class);
        if let Some(k) = tuned() {
            return Ok((pick(k), format!("{k}: the context's tuned entry for {class}")));
        }
        if let Some(k) = self.inner.built_in.as_ref().and_then(|t| t.get_similarity(&class)) {
            return Ok((pick(k), format!("{k}: the built-in entry for {class}")));
        }
        if let (Tuning::OnFirstUse { .. }, Some((q, k))) = (tuning, timed) {
            let _one_at_a_time = self.inner.tuning_run.lock().await;
            if let Some(k) = tuned() {
                return Ok((pick(k), format!("{k}: the context's tuned entry for {class}")));
            }
            let out = self.zeros_async(p.out_shape(), Layout::Bhsd, crate::shape::DType::F32).await?;
            let out = &out;
            let mut best: Option<(SimilarityKernel, f64)> = None;
            for kernel in SimilarityKernel::ALL {
                let run = || -> Result<f64> {
                    let t = Instant::now();
                    let gpu = self.time_gpu(|enc| {
                        pollster::block_on(similarity::record(self, enc, p, q, k, out, None, pick(kernel)))
                    })?;
                    Ok(gpu.unwrap_or_else(|| t.elapsed().as_secs_f64()))
                };
                match run().and_then(|_| (0..TIMED_RUNS).map(|_| run()).collect::<Result<Vec<f64>>>()) {
                    Ok(t) => {
                        let ms = t.into_iter().fold(f64::INFINITY, f64::min) * 1e3;
                        if best.is_none_or(|b| ms < b.1) {
                            best = Some((kernel, ms));
                        }
                    }
                    Err(e) => log::warn!("wgpu-attention: tuning similarity {class}: {kernel} failed: {e}"),
                }
            }
            if let Some((kernel, ms)) = best {
                log::info!("wgpu-attention: tuned similarity {class}: {kernel} ({ms:.3} ms)");
                self.inner.tuned.lock().unwrap_or_else(|e| e.into_inner()).similarity.insert(class, kernel);
                return Ok((pick(kernel), format!("{kernel}: timed on this call's inputs for {class} ({ms:.3} ms)")));
            }
        }
        Ok((Some(mma), "tensor cores: the heuristic (f16 on a context with tensor cores)".into()))
    }
}
