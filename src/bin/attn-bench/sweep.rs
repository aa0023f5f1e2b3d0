//! `--sweep`: every kernel variant and configuration that can run an attention case
//! (`Context::attention_candidates`), timed side by side in one process and each checked against
//! the CPU path, with `Auto`'s choice beside them and the fastest correct one as the winner.

use serde::Serialize;
use wgpu_attention::Context;

use crate::measure::{self, Record, Settings};
use crate::suites::{Case, Dt, Op};

/// One case's sweep.
#[derive(Debug, Clone, Serialize)]
pub struct Sweep {
    /// The case, as the table labels it.
    pub case: String,
    /// Its shape class (`wgpu_attention::ShapeClass`): the tuning table's key.
    pub class: String,
    /// What `Auto` runs, timed the same way.
    pub auto: Record,
    /// Every candidate (forced variant and configuration), in the crate's order.
    pub candidates: Vec<Record>,
    /// The fastest candidate within the tolerance of the CPU path.
    pub winner: Option<Winner>,
    /// `Auto`'s time over the winner's (1: `Auto` already runs the best; 2: twice as slow).
    pub auto_over_winner: Option<f64>,
    /// Relative Frobenius error a candidate may have against the CPU path to win.
    pub tolerance: f64,
    /// Why the case was not swept, if it was not.
    pub error: Option<String>,
}

/// The winning candidate.
#[derive(Debug, Clone, Serialize)]
pub struct Winner {
    pub variant: String,
    pub config: String,
    /// Kernel median (wall where there are no timestamps), ms.
    pub ms: f64,
    pub rel_err: f64,
}

/// The error a candidate may have against the CPU path (relative Frobenius, first slice): f16
/// storage rounds the output to 11 bits and the tensor-core kernels round the weights too.
pub fn tolerance(dt: Dt) -> f64 {
    match dt {
        Dt::F32 => 1e-4,
        Dt::F16 => 1e-2,
    }
}

/// Sweeps attention case `c` on `ctx`: every candidate, or those of the variants in `only`
/// where it is not empty.
pub fn sweep(ctx: &Context, c: &Case, only: &[wgpu_attention::AttentionVariant], st: &Settings, label: &str) -> Sweep {
    let mut s = Sweep {
        case: label.to_string(),
        class: wgpu_attention::ShapeClass::of(
            match c.dtype {
                Dt::F32 => wgpu_attention::DType::F32,
                Dt::F16 => wgpu_attention::DType::F16,
            },
            c.bh,
            c.nq,
            c.nk,
            c.d,
            c.kv_group,
            c.causal,
        )
        .to_string(),
        auto: Record::new(c, "wgpu", "gpu", &ctx.info().adapter),
        candidates: vec![],
        winner: None,
        auto_over_winner: None,
        tolerance: tolerance(c.dtype),
        error: None,
    };
    if c.op != Op::Attention || c.page_size > 0 {
        s.error = Some("the sweep takes attention cases over contiguous K and V".into());
        return s;
    }
    let plans = {
        let (q, k, v) = measure::host_inputs(c);
        let listed = measure::gpu_case(ctx, c, &q, &k, &v).and_then(|g| {
            let opts = measure::attention_options(c, &g.lens);
            match (&g.k, &g.v) {
                (Some(k), Some(v)) => ctx.attention_candidates(&g.q, k, v, None, &opts, false),
                _ => Ok(vec![]),
            }
        });
        match listed {
            Ok(p) => p.into_iter().filter(|p| only.is_empty() || only.contains(&p.variant)).collect::<Vec<_>>(),
            Err(e) => {
                s.error = Some(e.to_string());
                return s;
            }
        }
    };
    let auto = Case { variant: Default::default(), config: Default::default(), ..c.clone() };
    s.auto = measure::run_gpu(ctx, &auto, st, "auto");
    for (i, plan) in plans.iter().enumerate() {
        let cand = Case { variant: plan.variant, config: plan.config, ..c.clone() };
        let tag = format!("{}/{} {} {}", i + 1, plans.len(), plan.variant, plan.config);
        eprintln!("  {tag}");
        s.candidates.push(measure::run_gpu(ctx, &cand, st, &tag));
    }
    let best = s
        .candidates
        .iter()
        .filter(|r| r.error.is_none() && r.rel_err.is_some_and(|e| e <= s.tolerance))
        .filter_map(|r| r.time_s().map(|t| (t, r)))
        .min_by(|a, b| a.0.total_cmp(&b.0));
    if let Some((t, r)) = best {
        s.winner = Some(Winner {
            variant: r.variant.clone().unwrap_or_default(),
            config: r.config.clone().unwrap_or_default(),
            ms: t * 1e3,
            rel_err: r.rel_err.unwrap_or(f64::NAN),
        });
        s.auto_over_winner = s.auto.time_s().map(|a| a / t);
    }
    s
}

/// The sweeps as a table: one line per candidate, the winner and `Auto`'s choice marked.
pub fn table(sweeps: &[Sweep]) -> String {
    let mut out = String::new();
    for s in sweeps {
        out += &format!("{}\n", s.case);
        if let Some(e) = &s.error {
            out += &format!("  not swept: {e}\n");
            continue;
        }
        let line = |r: &Record, mark: &str| {
            let t = r.time_s().map_or("-".to_string(), |t| format!("{:.3} ms", t * 1e3));
            let tf = r.tflops.map_or(String::new(), |x| format!(" {x:.2} TFLOP/s"));
            let err = r.rel_err.map_or("-".to_string(), |e| format!("{e:.1e}"));
            let why = r.error.as_deref().map_or(String::new(), |e| format!(" ({e})"));
            format!(
                "  {mark:<7} {:<16} {:<22} {t:>12}{tf} err {err}{why}\n",
                r.variant.as_deref().unwrap_or("-"),
                r.config.as_deref().unwrap_or("-")
            )
        };
        out += &line(&s.auto, "auto");
        for r in &s.candidates {
            let win = s.winner.as_ref().is_some_and(|w| {
                Some(&w.variant) == r.variant.as_ref() && Some(&w.config) == r.config.as_ref()
            });
            out += &line(r, if win { "winner" } else { "" });
        }
        if let Some(x) = s.auto_over_winner {
            out += &format!("  auto / winner: {x:.2}x\n");
        }
    }
    out
}

/// The winners as a tuning table for `ctx`'s adapter (the text `Context::import_tuning` takes,
/// and the form of the crate's built-in tables).
pub fn tuning_table(ctx: &Context, sweeps: &[Sweep]) -> wgpu_attention::TuningTable {
    let mut t = wgpu_attention::TuningTable::new(&ctx.tuning_table().adapter);
    for s in sweeps {
        let Some(w) = &s.winner else { continue };
        let variant = wgpu_attention::AttentionVariant::ALL.into_iter().find(|v| v.name() == w.variant);
        if let (Ok(class), Some(variant), Ok(config)) = (s.class.parse(), variant, w.config.parse()) {
            t.entries.insert(class, wgpu_attention::TunedChoice { variant, config });
        }
    }
    t
}
