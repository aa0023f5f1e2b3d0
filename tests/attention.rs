//! Fused and unfused attention (GPU) and the CPU path against an f64 reference.
//! f32 tolerance: relative Frobenius error 1e-5 (GPU), 1e-6 (CPU, which accumulates in f64).

mod common;
use common::*;
use wgpu_attention::*;

#[test]
fn every_head_dim() {
    let ctx = shared_gpu();
    for d in [1, 3, 16, 31, 32, 33, 40, 64, 80, 96, 128, 129, 200, 256] {
        check_case(ctx.as_ref(), &Case::new(1, 2, 2, 37, 45, d));
    }
}

#[test]
fn sequence_lengths_one_odd_and_large() {
    let ctx = shared_gpu();
    for (nq, nk) in [(1, 1), (1, 7), (7, 1), (63, 65), (65, 31), (129, 257), (1, 4096), (1100, 1100)] {
        let d = if nq * nk > 100_000 { 64 } else { 40 };
        check_case(ctx.as_ref(), &Case::new(1, 1, 1, nq, nk, d));
    }
}

#[test]
fn batches_and_grouped_heads() {
    let ctx = shared_gpu();
    for (b, h, hkv) in [(3, 1, 1), (2, 4, 4), (2, 8, 2), (1, 6, 1), (2, 6, 3)] {
        let mut c = Case::new(b, h, hkv, 19, 33, 24);
        check_case(ctx.as_ref(), &c);
        c.layout = Layout::Bshd;
        check_case(ctx.as_ref(), &c);
    }
}

#[test]
fn causal_square_and_rectangular() {
    let ctx = shared_gpu();
    // nq < nk (decode/chunked prefill), nq == nk, nq > nk (first rows see nothing).
    for (nq, nk) in [(5, 40), (33, 33), (70, 70), (40, 5), (1, 1), (100, 37)] {
        let mut c = Case::new(2, 2, 1, nq, nk, 32);
        c.causal = true;
        check_case(ctx.as_ref(), &c);
    }
}

#[test]
fn key_lengths_including_zero() {
    let ctx = shared_gpu();
    let mut c = Case::new(4, 2, 2, 9, 50, 16);
    c.key_lengths = Some(vec![50, 0, 1, 33]);
    check_case(ctx.as_ref(), &c);
    c.causal = true;
    check_case(ctx.as_ref(), &c);
}

#[test]
fn boolean_masks_broadcast() {
    let ctx = shared_gpu();
    let (b, h, nq, nk) = (2, 3, 21, 40);
    for shape in [[1, 1, nq, nk], [b, 1, nq, nk], [1, h, nq, nk], [b, h, nq, nk]] {
        let mut c = Case::new(b, h, h, nq, nk, 16);
        c.bool_mask = Some(shape);
        check_case(ctx.as_ref(), &c);
    }
}

#[test]
fn additive_masks_with_neg_inf() {
    let ctx = shared_gpu();
    let (b, h, nq, nk) = (2, 2, 17, 70);
    for shape in [[1, 1, nq, nk], [b, h, nq, nk]] {
        let mut c = Case::new(b, h, 1, nq, nk, 48);
        c.add_mask = Some(shape);
        c.causal = true;
        check_case(ctx.as_ref(), &c);
    }
}

#[test]
fn fully_masked_rows_give_zeros_and_neg_inf_lse() {
    let ctx = shared_gpu();
    let (nq, nk) = (6, 9);
    // rows 0 and 4 masked entirely
    let mut m = vec![true; nq * nk];
    for j in 0..nk {
        m[j] = false;
        m[4 * nk + j] = false;
    }
    let shape = Shape::new(1, 1, nq, 8);
    let kshape = Shape::new(1, 1, nk, 8);
    let q = rand_vec(1, shape.numel(), 1.0);
    let k = rand_vec(2, kshape.numel(), 1.0);
    let mask = HostMask::bool(&m, [1, 1, nq, nk]).unwrap();
    let (hq, hk) = (HostTensor::new(&q, shape).unwrap(), HostTensor::new(&k, kshape).unwrap());
    let mut backends = vec![Backend::Cpu];
    if let Some(ctx) = ctx {
        backends.push(Backend::Gpu(ctx));
    }
    for be in backends {
        let (out, lse) = be.attention_with_lse(&hq, &hk, &hk, Some(&mask), &AttentionOptions::default()).unwrap();
        for row in [0, 4] {
            assert!(out[row * 8..row * 8 + 8].iter().all(|&x| x == 0.0), "{}: row {row} not zero", be.describe());
            assert_eq!(lse[row], f32::NEG_INFINITY, "{}", be.describe());
        }
        assert!(out.iter().all(|x| x.is_finite()));
        let (o2, w) = be.attention_unfused(&hq, &hk, &hk, Some(&mask), &AttentionOptions::default()).unwrap();
        assert!(w[..nk].iter().chain(&w[4 * nk..5 * nk]).all(|&x| x == 0.0));
        assert!(o2[..8].iter().all(|&x| x == 0.0));
    }
}

#[test]
fn large_scores_do_not_overflow() {
    // |q|,|k| up to 100 with d = 1..64 and scale 1: scores reach ~1e4 (and 6e5 at d = 64).
    let ctx = shared_gpu();
    for d in [1, 64] {
        let mut c = Case::new(1, 2, 2, 33, 47, d);
        c.amp = 100.0;
        c.scale = Some(1.0);
        check_case(ctx.as_ref(), &c);
    }
}

#[test]
fn custom_scale_and_bshd() {
    let ctx = shared_gpu();
    let mut c = Case::new(2, 4, 2, 31, 29, 80);
    c.scale = Some(0.05);
    c.layout = Layout::Bshd;
    c.causal = true;
    c.key_lengths = Some(vec![29, 11]);
    check_case(ctx.as_ref(), &c);
}

#[test]
fn f16_storage_with_f32_statistics() {
    // Inputs rounded to f16 are the reference's inputs; the output is stored as f16, so the
    // tolerance is f16 rounding: relative Frobenius error 1e-3.
    let Some(ctx) = shared_gpu() else { return };
    if !f16_supported(&ctx) {
        return;
    }
    for (nq, nk, d, causal) in [(37, 45, 64, false), (64, 64, 128, true), (1, 300, 256, false), (20, 20, 3, true)] {
        let mut c = Case::new(2, 2, 1, nq, nk, d);
        c.causal = causal;
        let data = case_data(&c);
        let round = |v: &[f32]| v.iter().map(|&x| half::f16::from_f32(x)).collect::<Vec<_>>();
        let (q16, k16, v16) = (round(&data.q), round(&data.k), round(&data.v));
        let widen = |v: &[half::f16]| v.iter().map(|x| x.to_f32()).collect::<Vec<_>>();
        let rounded = CaseData { q: widen(&q16), k: widen(&k16), v: widen(&v16), ..data };
        let (want, want_lse, _) = case_reference(&c, &rounded);
        let opts = AttentionOptions { causal, ..Default::default() };
        let (q, k, v) = (
            ctx.upload(&q16, rounded.qs).unwrap(),
            ctx.upload(&k16, rounded.ks).unwrap(),
            ctx.upload(&v16, rounded.ks).unwrap(),
        );
        assert_eq!(q.dtype(), DType::F16);
        let (o, l) = ctx.attention_with_lse(&q, &k, &v, None, &opts).unwrap();
        assert_eq!(o.dtype(), DType::F16);
        assert_close("f16 fused", &o.download_blocking(&ctx).unwrap(), &want, 1e-3);
        assert_lse("f16 lse", &l.download_blocking(&ctx).unwrap(), &want_lse, 1e-5);
        let (o, _) = ctx.attention_unfused(&q, &k, &v, None, &opts).unwrap();
        assert_close("f16 unfused", &o.download_blocking(&ctx).unwrap(), &want, 1e-3);
    }
}

#[test]
fn split_k_decode_with_every_option() {
    // Few queries against many keys take the split-K path (partials merged by log-sum-exp).
    let ctx = shared_gpu();
    for (nq, nk, d) in [(1, 1024, 64), (1, 4099, 128), (3, 2500, 40), (16, 1500, 256), (7, 1030, 1)] {
        check_case(ctx.as_ref(), &Case::new(1, 2, 1, nq, nk, d));
    }
    let mut c = Case::new(3, 4, 2, 2, 3000, 64);
    c.causal = true;
    c.key_lengths = Some(vec![3000, 0, 700]);
    check_case(ctx.as_ref(), &c);
    let mut c = Case::new(2, 2, 2, 4, 2048, 32);
    c.bool_mask = Some([2, 1, 4, 2048]);
    c.layout = Layout::Bshd;
    check_case(ctx.as_ref(), &c);
    let mut c = Case::new(1, 2, 2, 5, 1500, 48);
    c.add_mask = Some([1, 2, 5, 1500]);
    c.scale = Some(0.5);
    check_case(ctx.as_ref(), &c);
    // every key of row 0 masked through key length 0 in one batch, causal with nq > visible keys
    let mut c = Case::new(2, 1, 1, 9, 1024, 16);
    c.key_lengths = Some(vec![0, 5]);
    c.causal = true;
    check_case(ctx.as_ref(), &c);
}
