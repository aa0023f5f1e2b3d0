//! Attention against an f64 reference: the CPU path (fused and unfused) in `<family>::cpu`, and
//! on the GPU every kernel variant the adapter supports (fused and split-K with vector and
//! scalar loads, unfused) against the reference and against each other in `<family>::gpu`,
//! with each variant the adapter cannot run checked for its refusal. By default the forced
//! variants run on one representative head-dim class (`common::runs_forced`); with
//! `WGPU_ATTENTION_FULL_MATRIX=1` on every case.
//! f32 tolerance: relative Frobenius error 1e-5 (GPU), 1e-6 (CPU, which accumulates in f64).

mod common;
use common::*;
use wgpu_attention::*;

attention_cases!(every_head_dim, {
    [1, 3, 16, 31, 32, 33, 40, 64, 80, 96, 128, 129, 200, 256].map(|d| Case::new(1, 2, 2, 37, 45, d))
});

attention_cases!(sequence_lengths_one_odd_and_large, {
    [(1, 1), (1, 7), (7, 1), (63, 65), (65, 31), (129, 257), (1, 4096), (1100, 1100)]
        .map(|(nq, nk)| Case::new(1, 1, 1, nq, nk, if nq * nk > 100_000 { 64 } else { 40 }))
});

attention_cases!(batches_and_grouped_heads, {
    [(3, 1, 1), (2, 4, 4), (2, 8, 2), (1, 6, 1), (2, 6, 3)]
        .into_iter()
        .flat_map(|(b, h, hkv)| [Case::new(b, h, hkv, 19, 33, 24), Case::new(b, h, hkv, 19, 33, 24).bshd()])
});

attention_cases!(causal_square_and_rectangular, {
    // nq < nk (decode/chunked prefill), nq == nk, nq > nk (first rows see nothing)
    [(5, 40), (33, 33), (70, 70), (40, 5), (1, 1), (100, 37)].map(|(nq, nk)| Case::new(2, 2, 1, nq, nk, 32).causal())
});

attention_cases!(key_lengths_including_zero, {
    let c = Case::new(4, 2, 2, 9, 50, 16).key_lengths(&[50, 0, 1, 33]);
    [c.clone(), c.causal()]
});

attention_cases!(boolean_masks_broadcast, {
    let (b, h, nq, nk) = (2, 3, 21, 40);
    [[1, 1, nq, nk], [b, 1, nq, nk], [1, h, nq, nk], [b, h, nq, nk]].map(|shape| {
        let mut c = Case::new(b, h, h, nq, nk, 16);
        c.bool_mask = Some(shape);
        c
    })
});

attention_cases!(additive_masks_with_neg_inf, {
    let (b, h, nq, nk) = (2, 2, 17, 70);
    [[1, 1, nq, nk], [b, h, nq, nk]].map(|shape| {
        let mut c = Case::new(b, h, 1, nq, nk, 48).causal();
        c.add_mask = Some(shape);
        c
    })
});

attention_cases!(large_scores_do_not_overflow, {
    // |q|,|k| up to 100 with d = 1..64 and scale 1: scores reach ~1e4 (and 6e5 at d = 64)
    [1, 64].map(|d| {
        let mut c = Case::new(1, 2, 2, 33, 47, d);
        c.amp = 100.0;
        c.scale = Some(1.0);
        c
    })
});

attention_cases!(custom_scale_and_bshd, {
    let mut c = Case::new(2, 4, 2, 31, 29, 80).bshd().causal().key_lengths(&[29, 11]);
    c.scale = Some(0.05);
    [c]
});

attention_cases!(split_k_decode_with_every_option, {
    // few queries against many keys: Auto takes the split-K path (partials merged by log-sum-exp)
    let mut cases: Vec<Case> = [(1, 1024, 64), (1, 4099, 128), (3, 2500, 40), (16, 1500, 256), (7, 1030, 1)]
        .map(|(nq, nk, d)| Case::new(1, 2, 1, nq, nk, d))
        .to_vec();
    cases.push(Case::new(3, 4, 2, 2, 3000, 64).causal().key_lengths(&[3000, 0, 700]));
    let mut c = Case::new(2, 2, 2, 4, 2048, 32).bshd();
    c.bool_mask = Some([2, 1, 4, 2048]);
    cases.push(c);
    let mut c = Case::new(1, 2, 2, 5, 1500, 48);
    c.add_mask = Some([1, 2, 5, 1500]);
    c.scale = Some(0.5);
    cases.push(c);
    // every key of a batch masked through key length 0, causal with nq > visible keys
    cases.push(Case::new(2, 1, 1, 9, 1024, 16).key_lengths(&[0, 5]).causal());
    cases
});

attention_cases!(sliding_windows, {
    let mut cases = vec![
        // width 0: with causal only the query's own key
        Case::new(1, 2, 2, 33, 33, 16).causal().window(0, None),
        Case::new(1, 2, 1, 40, 40, 24).window(5, Some(3)),
        Case::new(2, 2, 2, 19, 50, 32).window(1000, Some(1000)), // wider than the sequence
        Case::new(2, 4, 2, 40, 40, 16).causal().window(7, None).bshd(),
        Case::new(1, 2, 2, 5, 40, 8).window(3, Some(0)), // nq < nk: positions 35..39
        Case::new(1, 2, 2, 40, 5, 8).window(2, Some(2)), // nq > nk: early rows see nothing
        // the widest window, with negative query positions (an overflow on the CPU path before)
        Case::new(1, 2, 2, 12, 5, 8).window(usize::MAX, Some(usize::MAX)),
        Case::new(1, 2, 2, 70, 70, 40).window(10, Some(0)).key_lengths(&[50]),
        Case::new(1, 1, 1, 200, 200, 64).causal().window(31, None), // windows cut across key tiles
    ];
    let mut c = Case::new(2, 2, 2, 21, 40, 16).window(6, Some(6));
    c.bool_mask = Some([2, 1, 21, 40]);
    cases.push(c);
    // few queries, many keys: split-K with the window skipping whole splits
    cases.push(Case::new(1, 2, 1, 2, 3000, 64).window(300, Some(0)));
    cases.push(Case::new(1, 2, 1, 1, 4100, 32).window(0, None).causal());
    cases
});

attention_cases!(soft_capping, {
    [1.0f32, 5.0, 30.0, 1e4].into_iter().flat_map(|cap| {
        let mut c = Case::new(1, 2, 2, 29, 37, 32).softcap(cap);
        c.amp = 6.0; // scores up to ~50: the small caps bite
        let mut d = c.clone().causal();
        d.add_mask = Some([1, 2, 29, 37]);
        [c, d]
    })
});

attention_cases!(alibi_slopes, {
    [
        Case::new(1, 4, 2, 33, 33, 16).alibi().causal(),
        Case::new(1, 2, 2, 9, 47, 32).alibi().causal(), // nq < nk
        Case::new(1, 2, 2, 47, 9, 32).alibi(),          // nq > nk, both sides
        Case::new(2, 2, 1, 30, 60, 24).alibi().bshd().key_lengths(&[60, 17]),
        Case::new(1, 2, 1, 2, 2500, 32).alibi().causal(), // split-K
    ]
});

attention_cases!(sinks_with_fully_masked_rows, {
    [
        Case::new(2, 2, 2, 17, 30, 16).sinks(),
        Case::new(2, 2, 1, 9, 30, 16).sinks().key_lengths(&[0, 12]), // batch 0: every key masked
        Case::new(1, 2, 2, 20, 6, 8).sinks().causal(),               // nq > nk: early rows see nothing
        Case::new(1, 2, 1, 3, 2600, 32).sinks(),                     // split-K: the merge adds the sink
        Case::new(1, 2, 1, 3, 2600, 32).sinks().window(10, Some(0)).causal(),
    ]
});

attention_cases!(every_option_at_once, {
    let mut c = Case::new(2, 4, 2, 23, 61, 40).causal().window(17, None).softcap(20.0).alibi().sinks().bshd();
    c.add_mask = Some([2, 1, 23, 61]);
    c.key_lengths = Some(vec![61, 30]);
    c.amp = 3.0;
    let mut decode = Case::new(2, 4, 1, 1, 3000, 64).window(500, Some(0)).softcap(30.0).alibi().sinks();
    decode.key_lengths = Some(vec![3000, 1000]);
    [c, decode]
});

/// Rows 0 and 4 with every key masked give zeros and lse -inf, on every path and variant.
fn fully_masked_case() -> (Vec<bool>, Vec<f32>, Vec<f32>, Shape, Shape) {
    let (nq, nk) = (6, 9);
    let mut m = vec![true; nq * nk];
    for j in 0..nk {
        m[j] = false;
        m[4 * nk + j] = false;
    }
    let (shape, kshape) = (Shape::new(1, 1, nq, 8), Shape::new(1, 1, nk, 8));
    (m, rand_vec(1, shape.numel(), 1.0), rand_vec(2, kshape.numel(), 1.0), shape, kshape)
}

fn check_fully_masked(be: &Backend, variant: AttentionVariant) {
    let (m, q, k, shape, kshape) = fully_masked_case();
    let mask = HostMask::bool(&m, [1, 1, 6, 9]).unwrap();
    let (hq, hk) = (HostTensor::new(&q, shape).unwrap(), HostTensor::new(&k, kshape).unwrap());
    let opts = AttentionOptions { variant, ..Default::default() };
    let what = format!("{} {variant}", be.describe());
    if variant != AttentionVariant::Unfused {
        let (out, lse) = be.attention_with_lse(&hq, &hk, &hk, Some(&mask), &opts).unwrap();
        for row in [0, 4] {
            assert!(out[row * 8..row * 8 + 8].iter().all(|&x| x == 0.0), "{what}: row {row} not zero");
            assert_eq!(lse[row], f32::NEG_INFINITY, "{what}");
        }
        assert!(out.iter().all(|x| x.is_finite()));
    }
    let (o2, w) = be.attention_unfused(&hq, &hk, &hk, Some(&mask), &opts).unwrap();
    assert!(w[..9].iter().chain(&w[4 * 9..5 * 9]).all(|&x| x == 0.0), "{what}");
    assert!(o2[..8].iter().all(|&x| x == 0.0), "{what}");
}

#[test]
fn fully_masked_rows_give_zeros_and_neg_inf_lse_cpu() {
    check_fully_masked(&Backend::Cpu, AttentionVariant::Auto);
}

gpu_test! {
    fn fully_masked_rows_give_zeros_and_neg_inf_lse_gpu() {
        let be = Backend::Gpu(shared_gpu());
        // (f32 inputs: the tensor-core variant refuses them; tests/tensor_cores.rs covers its
        // fully masked rows)
        for variant in [AttentionVariant::Auto].into_iter().chain(AttentionVariant::ALL) {
            if variant != AttentionVariant::TensorCores {
                check_fully_masked(&be, variant);
            }
        }
    }
}

gpu_test! {
    fn f16_storage_with_f32_statistics() {
        // Inputs rounded to f16 are the reference's inputs; the output is stored as f16, so the
        // tolerance is f16 rounding: relative Frobenius error 1e-3. Every variant.
        let ctx = shared_gpu();
        if !f16_supported(&ctx) {
            return;
        }
        // (head dims 128 and 256 run the same f16 staging as 64 with the tiles of the f32
        // cases above: in the full matrix only)
        let mut shapes = vec![(37, 45, 64, false), (20, 20, 3, true), (2, 2000, 64, false)];
        if full_matrix() {
            shapes.extend([(64, 64, 128, true), (1, 300, 256, false)]);
        }
        for (nq, nk, d, causal) in shapes {
            let mut c = Case::new(2, 2, 1, nq, nk, d);
            c.causal = causal;
            let data = case_data(&c);
            let round = |v: &[f32]| v.iter().map(|&x| half::f16::from_f32(x)).collect::<Vec<_>>();
            let (q16, k16, v16) = (round(&data.q), round(&data.k), round(&data.v));
            let widen = |v: &[half::f16]| v.iter().map(|x| x.to_f32()).collect::<Vec<_>>();
            let rounded = CaseData { q: widen(&q16), k: widen(&k16), v: widen(&v16), ..data };
            let (want, want_lse, _) = case_reference(&c, &rounded);
            let (q, k, v) = (
                ctx.upload(&q16, rounded.qs).unwrap(),
                ctx.upload(&k16, rounded.ks).unwrap(),
                ctx.upload(&v16, rounded.ks).unwrap(),
            );
            assert_eq!(q.dtype(), DType::F16);
            for variant in [AttentionVariant::Auto].into_iter().chain(AttentionVariant::ALL) {
                let opts = AttentionOptions { causal, variant, ..Default::default() };
                let what = format!("f16 {variant} nq {nq} nk {nk} d {d}");
                let supported = if variant == AttentionVariant::TensorCores {
                    // f16 inputs: the tensor-core kernel takes them where the adapter has tensor
                    // cores (then the result is checked below), and is refused elsewhere
                    let active = matches!(ctx.tensor_cores(), TensorCoreState::Active { .. });
                    let planned = ctx.plan_attention(&q, &k, &v, None, &opts, true).is_ok();
                    assert!(!planned || active, "{what}: planned without tensor cores");
                    assert!(planned || !active || d % 16 != 0, "{what}: refused with tensor cores active");
                    planned
                } else {
                    expect_supported(&ctx, &c, variant, false)
                };
                if !supported {
                    assert!(matches!(ctx.attention(&q, &k, &v, None, &opts), Err(Error::Unsupported(_))), "{what}");
                    continue;
                }
                // (f16 forced: in the full matrix; by default Auto's choices, whose f16
                // staging the forced variants share, and the unfused chain)
                if !runs_forced(variant, d) || (!full_matrix() && !matches!(variant, AttentionVariant::Auto | AttentionVariant::Unfused)) {
                    continue;
                }
                if variant == AttentionVariant::Unfused {
                    let o = ctx.attention(&q, &k, &v, None, &opts).unwrap();
                    assert_close(&what, &o.download_blocking(&ctx).unwrap(), &want, 1e-3);
                    continue;
                }
                let (o, l) = ctx.attention_with_lse(&q, &k, &v, None, &opts).unwrap();
                assert_eq!(o.dtype(), DType::F16);
                assert_close(&what, &o.download_blocking(&ctx).unwrap(), &want, 1e-3);
                assert_lse(&what, &l.download_blocking(&ctx).unwrap(), &want_lse, 1e-5);
            }
        }
    }
}

gpu_test! {
    fn the_plan_says_what_runs() {
        let ctx = shared_gpu();
        let q = ctx.zeros(Shape::new(1, 4, 1, 64), Layout::Bhsd, DType::F32).unwrap();
        let kv = ctx.zeros(Shape::new(1, 4, 4096, 64), Layout::Bhsd, DType::F32).unwrap();
        let plan = ctx.plan_attention(&q, &kv, &kv, None, &AttentionOptions::default(), true).unwrap();
        assert_eq!(plan.variant, AttentionVariant::Decode(Loads::Vec4), "{plan:?}");
        assert!(plan.splits > 1 && plan.scratch_bytes > 0 && plan.reason.contains("decode"));
        // head dim 256: the fused kernel with the keys split, and the plan says why not decode
        let q = ctx.zeros(Shape::new(1, 4, 1, 256), Layout::Bhsd, DType::F32).unwrap();
        let kv = ctx.zeros(Shape::new(1, 4, 4096, 256), Layout::Bhsd, DType::F32).unwrap();
        let plan = ctx.plan_attention(&q, &kv, &kv, None, &AttentionOptions::default(), true).unwrap();
        assert_eq!(plan.variant, AttentionVariant::SplitK(Loads::Vec4), "{plan:?}");
        assert!(plan.splits > 1 && plan.reason.contains("split") && plan.reason.contains("up to 128"), "{plan:?}");
        let big = ctx.zeros(Shape::new(1, 4, 512, 64), Layout::Bhsd, DType::F32).unwrap();
        let plan = ctx.plan_attention(&big, &big, &big, None, &AttentionOptions::default(), false).unwrap();
        assert_eq!((plan.variant, plan.splits, plan.scratch_bytes), (AttentionVariant::Fused(Loads::Vec4), 1, 0));
        // an element offset that is not a multiple of 4: scalar loads, and vec4 is refused
        let shifted = Tensor::from_buffer(&ctx, big.buffer().clone(), 1, Shape::new(1, 4, 100, 64), Layout::Bhsd, DType::F32).unwrap();
        let plan = ctx.plan_attention(&shifted, &big, &big, None, &AttentionOptions::default(), false).unwrap();
        assert_eq!(plan.variant, AttentionVariant::Fused(Loads::Scalar));
        let forced = AttentionOptions { variant: AttentionVariant::Fused(Loads::Vec4), ..Default::default() };
        assert!(matches!(ctx.plan_attention(&shifted, &big, &big, None, &forced, false), Err(Error::Unsupported(_))));
    }
}

#[test]
fn split_key_ranges_merge_to_the_unsplit_result() {
    // the CPU twin of attention_merge.wgsl: partials of disjoint key ranges combine exactly
    let d = 5;
    let scores: Vec<f64> = rand_vec(3, 40, 4.0).iter().map(|&x| x as f64).collect();
    let v = rand_vec(4, 40 * d, 1.0);
    let partial = |j0: usize, j1: usize| {
        let m = scores[j0..j1].iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let mut p = cpu::AttentionPartial::empty(d);
        if j0 == j1 {
            return p;
        }
        p.max = m;
        for j in j0..j1 {
            let w = (scores[j] - m).exp();
            p.sum += w;
            for x in 0..d {
                p.acc[x] += w * v[j * d + x] as f64;
            }
        }
        p
    };
    let (whole, lse) = cpu::attention_merge(&[partial(0, 40)], None);
    for cuts in [vec![0, 13, 40], vec![0, 1, 2, 39, 40], vec![0, 20, 20, 40]] {
        let parts: Vec<_> = cuts.windows(2).map(|w| partial(w[0], w[1])).collect();
        let (o, l) = cpu::attention_merge(&parts, None);
        assert_agree(&format!("cuts {cuts:?}"), &o, &whole, 1e-12);
        assert!(approx::relative_eq!(l, lse, max_relative = 1e-6));
    }
    let (o, l) = cpu::attention_merge(&[cpu::AttentionPartial::empty(d), cpu::AttentionPartial::empty(d)], None);
    assert_eq!((o, l), (vec![0.0; d], f32::NEG_INFINITY));
}

gpu_test! {
    fn reductions_through_workgroup_memory_without_subgroups() {
        // the fused kernels' row max and sum without subgroup operations: a sample of every
        // family above (head dims, tails, GQA, causal, masks, key lengths, split-K, windows,
        // soft-capping, ALiBi and sinks)
        let ctx = gpu_without_subgroups();
        // (head dims 1, 64, 128 and 256: the same reductions with the tiles of the cases above,
        // in the full matrix only; 33 pads to 64, and the cases below cover 16, 32, 40 and 64)
        let dims: &[usize] = if full_matrix() { &[1, 33, 64, 128, 256] } else { &[33] };
        let mut cases: Vec<Case> = dims.iter().map(|&d| Case::new(1, 2, 1, 37, 70, d)).collect();
        cases.push(Case::new(2, 4, 2, 65, 130, 32).causal().key_lengths(&[130, 17]));
        cases.push(Case::new(1, 2, 1, 1, 3000, 64));
        cases.push(Case::new(1, 2, 2, 70, 70, 40).window(10, Some(0)).softcap(20.0).alibi().sinks());
        let mut c = Case::new(2, 2, 2, 21, 40, 16).bshd();
        c.add_mask = Some([2, 2, 21, 40]);
        cases.push(c);
        // (the forced variants with vector loads: the loads are orthogonal to the reductions,
        // and scalar loads run with subgroups above; both in the full matrix)
        let loads: &[Loads] = if full_matrix() { &[Loads::Vec4, Loads::Scalar] } else { &[Loads::Vec4] };
        for c in cases {
            check_gpu_loads(&ctx, &c, loads);
        }
    }
}
