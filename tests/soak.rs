//! A long run on one context: hundreds of mixed calls of varied shapes (attention fused and
//! decode, with and without GQA, causal or not, the log-sum-exp, calls recorded into the
//! caller's encoder through a binding cache; similarity, softmax, top-k; downloads), after
//! which the crate's caches and wgpu's live objects (the `counters` feature, on in the README's
//! test command) are no larger than after the first pass over the same kinds of call: nothing
//! grows with the number of calls. (On the H200, cases after the third ran 3-5x slower in one
//! process; this is the crate's side of that search. BENCHMARKS.md has the device's.)

mod common;
use common::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use wgpu_attention::*;

/// One call of kind `kind` (a fixed kernel variant per kind) with sizes from `r`.
fn call(ctx: &Context, cached: &Context, kind: usize, r: &mut ChaCha8Rng) {
    let up = |s: Shape, seed: u64| ctx.upload(&rand_vec(seed, s.numel(), 1.0), s).unwrap();
    let seed = r.random_range(0..1000u64);
    match kind {
        // fused attention (more than 16 combined rows, under 1024 keys), d 32, GQA or not
        0 | 1 => {
            let (group, nq, nk) = (1 + kind, r.random_range(20..80), r.random_range(1..300));
            let q = up(Shape::new(1, 2 * group, nq, 32), seed);
            let kv = Shape::new(1, 2, nk, 32);
            let (k, v) = (up(kv, seed + 1), up(kv, seed + 2));
            let opts = AttentionOptions { causal: r.random_bool(0.5), ..Default::default() };
            let (o, l) = ctx.attention_with_lse(&q, &k, &v, None, &opts).unwrap();
            if r.random_bool(0.3) {
                assert!(o.download_blocking(ctx).unwrap().iter().chain(&l.download_blocking(ctx).unwrap()).all(|x| !x.is_nan()));
            }
        }
        // decode: one query per sequence, recorded into the caller's encoder through a binding cache
        2 => {
            let nk = r.random_range(1..600);
            let q = up(Shape::new(2, 4, 1, 32), seed);
            let kv = Shape::new(2, 4, nk, 32);
            let (k, v) = (up(kv, seed + 1), up(kv, seed + 2));
            let out = cached.zeros(q.shape(), Layout::Bhsd, DType::F32).unwrap();
            let mut enc = cached.device().create_command_encoder(&Default::default());
            let call = AttentionCall::new(&q, &k, &v, &out);
            cached.encode_attention(&mut enc, &call, &AttentionOptions::default()).unwrap();
            cached.queue().submit([enc.finish()]);
        }
        3 => {
            let (nq, nk) = (r.random_range(1..100), r.random_range(1..200));
            let metric = if r.random_bool(0.5) { Similarity::Dot } else { Similarity::Cosine };
            let s = ctx.similarity(&up(Shape::new(1, 2, nq, 32), seed), &up(Shape::new(1, 2, nk, 32), seed + 1), metric).unwrap();
            if r.random_bool(0.3) {
                s.download_blocking(ctx).unwrap();
            }
        }
        4 => {
            let x = up(Shape::new(1, 2, r.random_range(1..50), r.random_range(1..200)), seed);
            ctx.softmax(&x, None, &SoftmaxOptions::default()).unwrap();
        }
        _ => {
            let nk = r.random_range(10..500);
            let t = ctx.top_k(&up(Shape::new(1, 1, 3, 32), seed), &up(Shape::new(1, 1, nk, 32), seed + 1), 5, Metric::Dot);
            assert_eq!(t.unwrap().indices.len(), 15);
        }
    }
}

const KINDS: usize = 6;

/// Buffers wgpu counts beyond those the crate's caches hold (the calls' own, which must be
/// freed), where wgpu's counters are on.
fn loose_buffers(d: &Diagnostics) -> Option<isize> {
    let held = d.uniform_buffers + d.staging_buffers.0 + d.scratch_buffers.0;
    d.wgpu.as_ref().map(|w| w.buffers - held as isize)
}

gpu_test! {
fn hundreds_of_mixed_calls_leave_nothing_growing() {
    let ctx = gpu();
    let mut r = ChaCha8Rng::seed_from_u64(7);
    let mut pass = |calls: usize| {
        let cached = ctx.with_binding_cache();
        for i in 0..calls {
            call(&ctx, &cached, i % KINDS, &mut r);
        }
        drop(cached);
        ctx.wait().unwrap();
        ctx.diagnostics()
    };
    // every kind of call, twice (its pipelines compiled, its caches filled once)
    let first = pass(2 * KINDS);
    let mut last = first.clone();
    for round in 1..=3 {
        let now = pass(100);
        let what = format!("after {} more calls:\n{now:#?}\nafter the first pass:\n{first:#?}", 100 * round);
        assert_eq!(now.compiled_pipelines, first.compiled_pipelines, "{what}");
        assert!(now.uniform_buffers <= 256, "{what}");
        assert!(now.staging_buffers.0 <= 4 * 13 && now.scratch_buffers.0 <= 13, "{what}");
        if let (Some(w), Some(w0)) = (&now.wgpu, &first.wgpu) {
            assert!(loose_buffers(&now) <= loose_buffers(&first), "{what}");
            assert_eq!(w.compute_pipelines, w0.compute_pipelines, "{what}");
            assert_eq!(w.shader_modules, w0.shader_modules, "{what}");
            assert_eq!(w.bind_group_layouts, w0.bind_group_layouts, "{what}");
            assert_eq!(w.pipeline_layouts, w0.pipeline_layouts, "{what}");
            assert!(w.bind_groups <= w0.bind_groups, "{what}");
            // (wgpu keeps retired command encoders for reuse: as many as were once in flight)
            assert!(w.command_encoders <= w0.command_encoders.max(64) && w.query_sets <= w0.query_sets, "{what}");
        } else {
            assert!(!cfg!(feature = "counters"), "counters on, none read");
        }
        // (the uniform blocks reach their bound of 256 and stay there)
        assert!(now.uniform_buffers >= last.uniform_buffers, "{what}");
        last = now;
    }
    if cfg!(feature = "counters") {
        assert!(first.wgpu.as_ref().is_some_and(|w| w.buffers > 0 && w.compute_pipelines > 0), "{first:#?}");
    }
}
}
