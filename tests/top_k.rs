//! Exact top-k retrieval (GPU, CPU path, resident index) against a brute-force f64 reference.
//!
//! Float data: at every rank the returned key must score (in f64) within `tol` of the key the
//! reference ranks there, so only float near-ties may swap; reported scores within `tol`.
//! Integer-valued data (exact in f32): indices must be identical, ties to the lower index.

mod common;
use common::*;
use wgpu_attention::*;

/// f64 scores of every key for each query, larger = better (L2: negated squared distance).
fn ref_scores(q: &[f32], k: &[f32], d: usize, metric: Metric) -> Vec<Vec<f64>> {
    q.chunks(d)
        .map(|qr| {
            k.chunks(d)
                .map(|kr| {
                    let dot: f64 = qr.iter().zip(kr).map(|(a, b)| *a as f64 * *b as f64).sum();
                    match metric {
                        Metric::Dot => dot,
                        Metric::Cosine => {
                            let n = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
                            let den = n(qr) * n(kr);
                            if den == 0.0 {
                                0.0
                            } else {
                                dot / den
                            }
                        }
                        Metric::L2 => -qr.iter().zip(kr).map(|(a, b)| (*a as f64 - *b as f64).powi(2)).sum::<f64>(),
                    }
                })
                .collect()
        })
        .collect()
}

/// The reference top-k: (score desc, index asc).
fn ref_top(scores: &[f64], k: usize) -> Vec<u32> {
    let mut idx: Vec<u32> = (0..scores.len() as u32).collect();
    idx.sort_by(|&a, &b| scores[b as usize].total_cmp(&scores[a as usize]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

fn check(what: &str, got: &TopK, refs: &[Vec<f64>], k: usize, metric: Metric, tol: f64, exact: bool) {
    assert_eq!((got.nq, got.k), (refs.len(), k), "{what}: shape");
    for (qi, sc) in refs.iter().enumerate() {
        let want = ref_top(sc, k);
        let gi = got.indices_of(qi);
        let gs = got.scores_of(qi);
        let scale = sc.iter().fold(1.0f64, |a, s| a.max(s.abs()));
        if exact {
            assert_eq!(gi, &want[..], "{what}: query {qi}");
        }
        let mut seen = std::collections::HashSet::new();
        for r in 0..k {
            let g = gi[r] as usize;
            assert!(g < sc.len() && seen.insert(g), "{what}: query {qi} rank {r}: bad or repeated index {g}");
            let (sg, sw) = (sc[g], sc[want[r] as usize]);
            assert!(
                approx::abs_diff_eq!(sg, sw, epsilon = tol * scale),
                "{what}: query {qi} rank {r}: got key {g} (score {sg}), want key {} (score {sw})",
                want[r]
            );
            let reported = if metric == Metric::L2 { -(gs[r] as f64) } else { gs[r] as f64 };
            assert!(
                approx::abs_diff_eq!(reported, sg, epsilon = tol * scale),
                "{what}: query {qi} rank {r}: reported score {} vs {sg}",
                gs[r]
            );
        }
    }
}

/// `<name>::cpu` runs `$body` without a GPU context, `<name>::gpu` with one.
macro_rules! both {
    ($name:ident, |$ctx:ident| $body:block) => {
        mod $name {
            use super::*;
            fn run($ctx: Option<&Context>) $body
            #[test]
            fn cpu() {
                run(None)
            }
            gpu_test! {
                fn gpu() {
                    run(Some(&shared_gpu()))
                }
            }
        }
    };
}

#[allow(clippy::too_many_arguments)]
fn run_all(ctx: Option<&Context>, q: &[f32], keys: &[f32], d: usize, k: usize, metric: Metric, tol: f64, exact: bool) {
    let refs = ref_scores(q, keys, d, metric);
    let what = format!("nq {} nk {} d {d} k {k} {metric:?}", q.len() / d, keys.len() / d);
    check(&format!("cpu {what}"), &cpu::top_k(q, keys, d, k, metric).unwrap(), &refs, k, metric, tol.min(1e-6), exact);
    let reference = cpu::reference::top_k(q, keys, d, k, metric).unwrap();
    check(&format!("cpu reference {what}"), &reference, &refs, k, metric, tol.min(1e-6), exact);
    if let Some(ctx) = ctx {
        check(
            &format!("gpu {what}"),
            &Backend::Gpu(ctx.clone()).top_k(q, keys, d, k, metric).unwrap(),
            &refs,
            k,
            metric,
            tol,
            exact,
        );
    }
}

both!(random_sizes_all_metrics, |ctx| {
    for (nq, nk, d, k) in
        [(1, 1, 1, 1), (2, 7, 3, 7), (5, 1000, 16, 10), (3, 1000, 32, 1000), (4, 65537, 32, 100), (2, 20000, 128, 1024)]
    {
        let q = rand_vec(nk as u64, nq * d, 1.0);
        let keys = rand_vec(nk as u64 + 1, nk * d, 1.0);
        for metric in [Metric::Dot, Metric::Cosine, Metric::L2] {
            run_all(ctx, &q, &keys, d, k, metric, 1e-5, false);
        }
    }
});

both!(two_hundred_thousand_keys, |ctx| {
    let (nq, nk, d) = (8, 200_000, 64);
    let q = rand_vec(11, nq * d, 1.0);
    let keys = rand_vec(12, nk * d, 1.0);
    for (k, metric) in [(1, Metric::Dot), (10, Metric::Cosine), (256, Metric::L2)] {
        run_all(ctx, &q, &keys, d, k, metric, 1e-5, false);
    }
});

both!(integer_data_with_duplicates_is_exact_and_ties_go_to_the_lower_index, |ctx| {
    // values in -2..=2: every score is exact in f32, and most keys tie with many others.
    let (nq, nk, d) = (6, 5000, 8);
    let int = |seed, n| rand_vec(seed, n, 2.5).into_iter().map(|x| x.round()).collect::<Vec<f32>>();
    let q = int(21, nq * d);
    let mut keys = int(22, nk * d);
    // plant exact duplicates of key 4000 at lower and higher positions
    let dup: Vec<f32> = keys[4000 * d..4001 * d].to_vec();
    for at in [3, 1234, 4999] {
        keys[at * d..(at + 1) * d].copy_from_slice(&dup);
    }
    for k in [1, 10, 300, 1024] {
        for metric in [Metric::Dot, Metric::L2] {
            run_all(ctx, &q, &keys, d, k, metric, 0.0, true);
        }
    }
});

both!(zero_vectors_under_cosine_score_zero, |ctx| {
    let d = 4;
    let keys = vec![0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
    let q = vec![0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0];
    let mut backends = vec![Backend::Cpu];
    if let Some(c) = ctx {
        backends.push(Backend::Gpu(c.clone()));
    }
    for be in backends {
        let t = be.top_k(&q, &keys, d, 4, Metric::Cosine).unwrap();
        // the zero query scores 0 against everything: positions in order
        assert_eq!(t.indices_of(0), &[0, 1, 2, 3], "{}", be.describe());
        assert!(t.scores_of(0).iter().all(|&s| s == 0.0));
        // key 1 first, then the zero keys (0 and 3, lower first), then key 2
        assert_eq!(t.indices_of(1), &[1, 0, 3, 2], "{}", be.describe());
        assert!(t.scores.iter().all(|s| s.is_finite()));
    }
});

gpu_test! {
fn chunk_boundaries_under_lowered_limits() {
    let limits = wgpu::Limits {
        max_storage_buffer_binding_size: 64 << 10,
        max_compute_workgroups_per_dimension: 5,
        max_compute_workgroup_storage_size: 32 << 10,
        ..Default::default()
    };
    let ctx = Context::with_options_blocking(ContextOptions { limits: Some(limits), ..Default::default() }).unwrap();
    // 64 KiB bindings: at most ~1000 keys of dim 16 per chunk, so 5000 keys take several chunks
    let (nq, nk, d) = (3, 5000, 16);
    let q = rand_vec(31, nq * d, 1.0);
    let keys = rand_vec(32, nk * d, 1.0);
    for (k, metric) in [(1, Metric::Dot), (37, Metric::L2), (512, Metric::Cosine)] {
        let refs = ref_scores(&q, &keys, d, metric);
        let got = Backend::Gpu(ctx.clone()).top_k(&q, &keys, d, k, metric).unwrap();
        check(&format!("lowered limits k {k} {metric:?}"), &got, &refs, k, metric, 1e-5, false);
    }
    let int: Vec<f32> = keys.iter().map(|x| (x * 3.0).round()).collect();
    let qi: Vec<f32> = q.iter().map(|x| (x * 3.0).round()).collect();
    let refs = ref_scores(&qi, &int, d, Metric::Dot);
    let got = Backend::Gpu(ctx).top_k(&qi, &int, d, 1000, Metric::Dot).unwrap();
    check("lowered limits, integer data", &got, &refs, 1000, Metric::Dot, 0.0, true);
    // k over 512 needs 16 KiB + 8 bytes of workgroup memory: a clear error on a 16 KiB device
    let small =
        Context::with_options_blocking(ContextOptions { limits: Some(wgpu::Limits::default()), ..Default::default() })
            .unwrap();
    let e = Backend::Gpu(small.clone()).top_k(&qi, &int, d, 1000, Metric::Dot).unwrap_err();
    assert!(matches!(e, Error::Unsupported(ref m) if m.contains("k = 1000")), "{e}");
    assert!(Backend::Gpu(small).top_k(&qi, &int, d, 512, Metric::Dot).is_ok());
}
}

gpu_test! {
fn thresholded_chunks_when_every_or_no_key_passes() {
    // After the first chunk, keys are scored against each query's current k-th best and only
    // better scores are kept. Integer data (exact): query 0 scores ascend with the key index (every
    // later key passes), 1 and 2 descend (none passes), 3 repeats 0..7 (ties never pass: the lower
    // index wins). With and without subgroups (slots claimed per subgroup or per invocation).
    let limits = wgpu::Limits {
        max_storage_buffer_binding_size: 64 << 10,
        max_compute_workgroup_storage_size: 32 << 10,
        ..Default::default()
    };
    let (nq, nk, d) = (4, 10_000, 4);
    let q = [1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0];
    let keys: Vec<f32> = (0..nk).flat_map(|i| [i as f32, (nk - i) as f32, (i % 7) as f32, 1.0]).collect();
    let refs = ref_scores(&q, &keys, d, Metric::Dot);
    for disable in [wgpu::Features::empty(), wgpu::Features::SUBGROUP] {
        let ctx = Context::with_options_blocking(ContextOptions {
            limits: Some(limits.clone()),
            disable_features: disable,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(ctx.caps().subgroups, disable.is_empty());
        for k in [1, 10, 100, 1000] {
            let got = Backend::Gpu(ctx.clone()).top_k(&q[..nq * d], &keys, d, k, Metric::Dot).unwrap();
            check(&format!("thresholded k {k} without {disable:?}"), &got, &refs, k, Metric::Dot, 0.0, true);
        }
        // float data across the same chunking, every metric
        let qf = rand_vec(41, 5 * 8, 1.0);
        let kf = rand_vec(42, 3000 * 8, 1.0);
        for metric in [Metric::Dot, Metric::Cosine, Metric::L2] {
            let refs = ref_scores(&qf, &kf, 8, metric);
            let got = Backend::Gpu(ctx.clone()).top_k(&qf, &kf, 8, 20, metric).unwrap();
            check(&format!("thresholded float {metric:?} without {disable:?}"), &got, &refs, 20, metric, 1e-5, false);
        }
    }
}
}

both!(invalid_requests_are_errors, |ctx| {
    let mut backends = vec![Backend::Cpu];
    if let Some(c) = ctx {
        backends.push(Backend::Gpu(c.clone()));
    }
    let keys = rand_vec(1, 40, 1.0);
    for be in &backends {
        for k in [0, 11, 2000] {
            let e = be.top_k(&keys[..4], &keys, 4, k, Metric::Dot).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument { argument: "k", .. }), "{e}");
        }
        let e = be.top_k(&keys[..3], &keys, 4, 1, Metric::Dot).unwrap_err();
        assert!(matches!(e, Error::LengthMismatch { argument: "queries", .. }), "{e}");
        let mut bad = keys.clone();
        bad[7] = f32::NAN;
        let e = be.top_k(&keys[..4], &bad, 4, 1, Metric::Dot).unwrap_err();
        assert!(matches!(e, Error::NonFinite { .. }), "{e}");
    }
    let big: Vec<f32> = rand_vec(2, 2048 * 4, 1.0);
    let e = cpu::top_k(&big[..4], &big, 4, 1025, Metric::Dot).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { argument: "k", .. }), "{e}");
});

gpu_test! {
fn resident_index_grows_and_returns_ids() {
    let ctx = shared_gpu();
    let d = 24;
    for metric in [Metric::Dot, Metric::Cosine, Metric::L2] {
        let mut index = Index::new(&ctx, d, metric, DType::F32).unwrap();
        let mut all = vec![];
        let mut ids = vec![];
        for (batch, n) in [700usize, 1, 3000, 50].into_iter().enumerate() {
            let keys = rand_vec(40 + batch as u64, n * d, 1.0);
            let these: Vec<u64> = (0..n as u64).map(|i| 1_000_000 * (batch as u64 + 1) + i).collect();
            index.add_with_ids(&keys, &these).unwrap();
            all.extend(keys);
            ids.extend(these);
        }
        assert_eq!(index.len(), 3751);
        let q = rand_vec(49, 5 * d, 1.0);
        let found = index.search(&q, 20).unwrap();
        let refs = ref_scores(&q, &all, d, metric);
        check(&format!("index {metric:?}"), &found.top, &refs, 20, metric, 1e-5, false);
        let want_ids: Vec<u64> = found.top.indices.iter().map(|&i| ids[i as usize]).collect();
        assert_eq!(found.ids, Some(want_ids));
        // a second search on the same resident keys
        let again = index.search(&q[..d], 3).unwrap();
        assert_eq!(again.top.indices_of(0), &found.top.indices_of(0)[..3]);
    }
    // mixing adds with and without ids is refused
    let mut index = Index::new(&ctx, 2, Metric::Dot, DType::F32).unwrap();
    index.add(&[1.0, 2.0]).unwrap();
    assert!(matches!(index.add_with_ids(&[1.0, 2.0], &[5]), Err(Error::InvalidArgument { argument: "ids", .. })));
    assert!(matches!(index.search(&[1.0, 2.0], 2), Err(Error::InvalidArgument { argument: "k", .. })));
    let empty = Index::new(&ctx, 2, Metric::Dot, DType::F32).unwrap();
    assert!(empty.search(&[1.0, 2.0], 1).is_err());
}
}

gpu_test! {
fn f16_index_with_odd_dim() {
    let ctx = shared_gpu();
    if !f16_supported(&ctx) {
        return;
    }
    let (nk, d) = (3000, 33);
    let round = |v: Vec<f32>| v.into_iter().map(|x| half::f16::from_f32(x).to_f32()).collect::<Vec<_>>();
    let keys = round(rand_vec(51, nk * d, 1.0));
    let q = round(rand_vec(52, 4 * d, 1.0));
    for metric in [Metric::Dot, Metric::L2] {
        let mut index = Index::new(&ctx, d, metric, DType::F16).unwrap();
        index.add(&keys[..1000 * d]).unwrap();
        index.add(&keys[1000 * d..]).unwrap();
        let found = index.search(&q, 50).unwrap();
        // f16 storage of f16-representable inputs: the scores are exact up to f32 accumulation
        check(&format!("f16 index {metric:?}"), &found.top, &ref_scores(&q, &keys, d, metric), 50, metric, 1e-5, false);
        assert!(found.ids.is_none());
    }
}
}
