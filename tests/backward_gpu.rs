//! The backward pass on the GPU (`Context::attention_backward`, `shaders/attention_backward.wgsl`)
//! against the f64 reference backward (`cpu::reference::attention_backward`, itself checked
//! against finite differences in tests/backward.rs) on the seeded case families: every option
//! alone and combined, GQA, BSHD, head dims 1 to 256, sizes across the kernels' blocks; f16
//! inputs; run-to-run bits; rows that keep nothing; extremes finite; the encoder form; bad
//! arguments refused, naming them.

mod common;
use common::*;
use wgpu_attention::*;

/// Gradients in BHSD order, whatever the case's layout.
struct Grads {
    dq: Vec<f32>,
    dk: Vec<f32>,
    dv: Vec<f32>,
    d_sinks: Option<Vec<f32>>,
}

/// `x` (in `layout`) reordered to BHSD.
fn bhsd(x: &[f32], s: Shape, layout: Layout) -> Vec<f32> {
    let mut out = Vec::with_capacity(s.numel());
    for b in 0..s.batch {
        for h in 0..s.heads {
            for i in 0..s.seq {
                for c in 0..s.dim {
                    out.push(at(x, s, layout, b, h, i, c) as f32);
                }
            }
        }
    }
    out
}

/// The reference gradients of `L = Σ dO · O` (the crate's f64 forward and backward), BHSD.
fn reference(c: &Case, data: &CaseData, d_o: &[f32]) -> Grads {
    let (r, _) = backward_grads(c, data, d_o);
    Grads {
        dq: bhsd(&r.dq, data.qs, c.layout),
        dk: bhsd(&r.dk, data.ks, c.layout),
        dv: bhsd(&r.dv, data.ks, c.layout),
        d_sinks: r.d_sinks,
    }
}

/// The GPU's forward (with the log-sum-exp) and backward of the same case.
fn on_gpu(ctx: &Context, c: &Case, data: &CaseData, d_o: &[f32]) -> Grads {
    on_gpu_with_keys(ctx, c, data, d_o, None)
}

/// As `on_gpu`, with `AttentionConfig::backward_keys` set to `keys` for the backward.
fn on_gpu_with_keys(ctx: &Context, c: &Case, data: &CaseData, d_o: &[f32], keys: Option<u32>) -> Grads {
    let up = |v: &[f32], s| ctx.upload_with_layout(v, s, c.layout).unwrap();
    let (q, k, v) = (up(&data.q, data.qs), up(&data.k, data.ks), up(&data.v, data.ks));
    let mask = host_mask(c, data).map(|m| ctx.upload_mask(&m).unwrap());
    let mut opts = c.opts();
    let (o, lse) = ctx.attention_with_lse(&q, &k, &v, mask.as_ref(), &opts).unwrap();
    let d_o = up(d_o, data.qs);
    let call = AttentionBackwardCall { q: &q, k: &k, v: &v, mask: mask.as_ref(), o: &o, lse: &lse, d_o: &d_o };
    opts.config.backward_keys = keys;
    let g = ctx.attention_backward(&call, &opts).unwrap();
    assert_eq!((g.dq.dtype(), g.dq.layout()), (DType::F32, Layout::Bhsd));
    Grads {
        dq: g.dq.download_blocking(ctx).unwrap(),
        dk: g.dk.download_blocking(ctx).unwrap(),
        dv: g.dv.download_blocking(ctx).unwrap(),
        d_sinks: g.d_sinks.map(|t| t.download_blocking(ctx).unwrap()),
    }
}

fn agree(what: &str, got: &Grads, want: &Grads, tol: f64) {
    assert_agree(&format!("dq {what}"), &got.dq, &want.dq, tol);
    assert_agree(&format!("dk {what}"), &got.dk, &want.dk, tol);
    assert_agree(&format!("dv {what}"), &got.dv, &want.dv, tol);
    match (&got.d_sinks, &want.d_sinks) {
        (Some(a), Some(b)) => assert_agree(&format!("d_sinks {what}"), a, b, tol),
        (None, None) => {}
        _ => panic!("{what}: d_sinks present on one side only"),
    }
}

/// The option families of tests/backward.rs, and shapes across the kernels' blocks (128, 64 and
/// 32 keys per workgroup of pass 1 and rows of pass 2 for padded head dims 32, 64 and 128-256;
/// staged steps of 32 down to 4 rows or keys; pass 1 split over query rows where its key blocks
/// are few), head dims 1 to 256.
fn cases() -> Vec<Case> {
    let mut v = backward_cases();
    v.extend([
        Case::new(1, 4, 1, 150, 300, 64).causal().sinks(),
        Case::new(2, 2, 2, 65, 129, 33).window(40, Some(7)).alibi(),
        Case { bool_mask: Some([2, 1, 70, 130]), ..Case::new(2, 2, 1, 70, 130, 16).softcap(5.0) },
        Case::new(1, 2, 2, 1, 513, 128).key_lengths(&[300]),
        Case::new(1, 1, 1, 67, 70, 256).causal(),
        Case::new(1, 2, 1, 17, 200, 100).bshd(),
        // pass 1 split over the group's rows (few key blocks, 600 rows: two splits, the second
        // starting inside the second head)
        Case::new(1, 3, 1, 200, 220, 32).causal().sinks(),
        // MQA, 8 heads over one key/value head: 9 splits of 267 rows, most starting inside a head
        Case::new(1, 8, 1, 300, 100, 16).window(60, None),
    ]);
    v
}

gpu_test! {
    fn the_gpu_backward_matches_the_reference() {
        let ctx = shared_gpu();
        for c in cases() {
            let data = case_data(&c);
            let d_o = rand_vec(c.seed + 11, data.qs.numel(), 1.0);
            let got = on_gpu(&ctx, &c, &data, &d_o);
            agree(&format!("{c:?}"), &got, &reference(&c, &data, &d_o), 1e-4);
            // the same bits run to run (one writer per element, sums in a fixed order)
            let again = on_gpu(&ctx, &c, &data, &d_o);
            assert!(got.dq == again.dq && got.dk == again.dk && got.dv == again.dv && got.d_sinks == again.d_sinks, "{c:?}");
        }
    }
}

/// Seeded random cases: shapes across the kernels' blocks and pass 1's splits (GQA groups up to
/// 4, up to 300 rows and keys, fewer at large head dims), head dims of every padded class,
/// options drawn independently.
fn random_cases(n: usize, seed: u64) -> Vec<Case> {
    use rand::{Rng, SeedableRng};
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let (b, hkv, group) = (r.random_range(1..=2), r.random_range(1..=2), r.random_range(1..=4));
            let (mut nq, mut nk): (usize, usize) = (r.random_range(1..=300), r.random_range(1..=300));
            let d = [1, 3, 8, 16, 24, 33, 64, 100, 128, 256][r.random_range(0..10)];
            // (the f64 reference's cost: at most ~2M score-dims a case)
            while b * hkv * group * nq * nk * d > 2 << 20 {
                if nq > nk {
                    nq = nq.div_ceil(2);
                } else {
                    nk = nk.div_ceil(2);
                }
            }
            let mut c = Case { seed: 1000 + i as u64, ..Case::new(b, hkv * group, hkv, nq, nk, d) };
            if r.random_bool(0.5) {
                c = c.causal();
            }
            if r.random_bool(0.3) {
                c = c.window(r.random_range(0..100), r.random_bool(0.5).then(|| r.random_range(0..20)));
            }
            if r.random_bool(0.3) {
                c = c.softcap(r.random_range(2.0..30.0));
            }
            if r.random_bool(0.3) {
                c = c.alibi();
            }
            if r.random_bool(0.3) {
                c = c.sinks();
            }
            if r.random_bool(0.3) {
                c = c.bshd();
            }
            if r.random_bool(0.2) {
                c = c.key_lengths(&(0..b).map(|_| r.random_range(0..=nk as u32)).collect::<Vec<_>>());
            } else if r.random_bool(0.2) {
                c = Case { bool_mask: Some([b, hkv * group, nq, nk]), ..c };
            }
            c
        })
        .collect()
}

gpu_test! {
    fn random_cases_match_the_reference() {
        // (BACKWARD_CASES and BACKWARD_SEED change the count, 32, and the seed, 23)
        let var = |k: &str, d: u64| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
        let ctx = shared_gpu();
        for (i, c) in random_cases(var("BACKWARD_CASES", 32) as usize, var("BACKWARD_SEED", 23)).into_iter().enumerate() {
            let data = case_data(&c);
            let d_o = rand_vec(c.seed + 11, data.qs.numel(), 1.0);
            // the adapter's default, then 1 and 2 keys per group of lanes in turn (2 only up to
            // head dim 128)
            let keys = [None, Some(1), Some(2)][i % 3].filter(|&k| k == 1 || c.d <= 128);
            let got = on_gpu_with_keys(&ctx, &c, &data, &d_o, keys);
            agree(&format!("{c:?} backward_keys {keys:?}"), &got, &reference(&c, &data, &d_o), 1e-4);
        }
    }
}

gpu_test! {
    fn lanes_sum_through_workgroup_memory_without_subgroups() {
        // a key's (row's) lanes sum their partial dot products through workgroup memory on
        // devices without subgroups (4 and 8 lanes), with options that cut rows and keys
        let ctx = gpu_without_subgroups();
        for c in [Case::new(2, 2, 2, 65, 129, 33).window(40, Some(7)).alibi(), Case::new(1, 4, 2, 20, 70, 128).causal().sinks().softcap(5.0)] {
            let data = case_data(&c);
            let d_o = rand_vec(c.seed + 11, data.qs.numel(), 1.0);
            let want = reference(&c, &data, &d_o);
            for keys in [1, 2] {
                let got = on_gpu_with_keys(&ctx, &c, &data, &d_o, Some(keys));
                agree(&format!("no subgroups, {keys} keys per group of lanes {c:?}"), &got, &want, 1e-4);
            }
        }
    }
}

gpu_test! {
    fn f16_inputs_widen_to_f32_sums() {
        let ctx = shared_gpu();
        if !f16_supported(&ctx) {
            return;
        }
        for c in [Case::new(1, 2, 1, 20, 30, 16).causal(), Case::new(2, 4, 2, 70, 90, 64).sinks().alibi()] {
            let data = case_data(&c);
            let d_o = rand_vec(6, data.qs.numel(), 1.0);
            let h = |x: &[f32]| x.iter().map(|&y| half::f16::from_f32(y)).collect::<Vec<_>>();
            let (q16, k16, v16, do16) = (h(&data.q), h(&data.k), h(&data.v), h(&d_o));
            let (q, k, v) = (ctx.upload(&q16, data.qs).unwrap(), ctx.upload(&k16, data.ks).unwrap(), ctx.upload(&v16, data.ks).unwrap());
            let opts = c.opts();
            let (o, lse) = ctx.attention_with_lse(&q, &k, &v, None, &opts).unwrap();
            assert_eq!(o.dtype(), DType::F16);
            let d_o16 = ctx.upload(&do16, data.qs).unwrap();
            let call = AttentionBackwardCall { q: &q, k: &k, v: &v, mask: None, o: &o, lse: &lse, d_o: &d_o16 };
            let g = ctx.attention_backward(&call, &opts).unwrap();
            // the reference of the rounded inputs; O is stored as f16 (its rounding enters D)
            let back = |x: &[half::f16]| x.iter().map(|y| y.to_f32()).collect::<Vec<_>>();
            let rounded = CaseData { q: back(&q16), k: back(&k16), v: back(&v16), ..data };
            let want = reference(&c, &rounded, &back(&do16));
            let got = Grads {
                dq: g.dq.download_blocking(&ctx).unwrap(),
                dk: g.dk.download_blocking(&ctx).unwrap(),
                dv: g.dv.download_blocking(&ctx).unwrap(),
                d_sinks: g.d_sinks.map(|t| t.download_blocking(&ctx).unwrap()),
            };
            agree(&format!("f16 {c:?}"), &got, &want, 2e-3);
        }
    }
}

gpu_test! {
    fn rows_that_keep_nothing_give_zero_gradients_and_extremes_stay_finite() {
        let ctx = shared_gpu();
        // causal with 6 queries over 3 keys: rows 0-2 keep nothing (lse -inf)
        let c = Case::new(1, 2, 1, 6, 3, 4).causal();
        let data = case_data(&c);
        let g = on_gpu(&ctx, &c, &data, &rand_vec(1, data.qs.numel(), 1.0));
        for h in 0..2 {
            for i in 0..3 {
                let row = &g.dq[(h * 6 + i) * 4..][..4];
                assert!(row.iter().all(|&x| x == 0.0), "head {h} row {i}: {row:?}");
            }
        }
        // large scores, soft-cap near saturation over long rows, a large output gradient
        for c in [
            Case { amp: 1e3, ..Case::new(1, 2, 1, 8, 40, 16).sinks() },
            Case { amp: 30.0, ..Case::new(1, 2, 2, 3, 4000, 8).softcap(50.0) },
        ] {
            let data = case_data(&c);
            let d_o = rand_vec(5, data.qs.numel(), 1e3);
            let g = on_gpu(&ctx, &c, &data, &d_o);
            let all = g.dq.iter().chain(&g.dk).chain(&g.dv).chain(g.d_sinks.iter().flatten());
            assert!(all.into_iter().all(|x| x.is_finite()), "{c:?}");
            if c.amp < 100.0 {
                assert_agree(&format!("dv {c:?}"), &g.dv, &reference(&c, &data, &d_o).dv, 1e-4);
            }
        }
    }
}

gpu_test! {
    fn the_encoder_form_writes_the_callers_tensors() {
        let ctx = shared_gpu();
        let c = Case::new(2, 4, 2, 9, 11, 8).causal().sinks();
        let data = case_data(&c);
        let d_o = rand_vec(3, data.qs.numel(), 1.0);
        let want = on_gpu(&ctx, &c, &data, &d_o);
        let (q, k, v) = (ctx.upload(&data.q, data.qs).unwrap(), ctx.upload(&data.k, data.ks).unwrap(), ctx.upload(&data.v, data.ks).unwrap());
        let opts = c.opts();
        let (o, lse) = ctx.attention_with_lse(&q, &k, &v, None, &opts).unwrap();
        let d_o = ctx.upload(&d_o, data.qs).unwrap();
        let call = AttentionBackwardCall { q: &q, k: &k, v: &v, mask: None, o: &o, lse: &lse, d_o: &d_o };
        let z = |s| ctx.zeros(s, Layout::Bhsd, DType::F32).unwrap();
        let (dq, dk, dv, ds) = (z(data.qs), z(data.ks), z(data.ks), z(Shape::new(1, 4, 1, 1)));
        let grads = AttentionGradOutputs { dq: &dq, dk: &dk, dv: &dv, d_sinks: Some(&ds) };
        let mut enc = ctx.device().create_command_encoder(&Default::default());
        ctx.encode_attention_backward(&mut enc, &call, &grads, &opts).unwrap();
        ctx.queue().submit([enc.finish()]);
        assert_eq!(dq.download_blocking(&ctx).unwrap(), want.dq);
        assert_eq!(dk.download_blocking(&ctx).unwrap(), want.dk);
        assert_eq!(dv.download_blocking(&ctx).unwrap(), want.dv);
        assert_eq!(Some(ds.download_blocking(&ctx).unwrap()), want.d_sinks);
        // refused, naming the argument: a missing or unwanted d_sinks, a wrong shape, a view
        // that is not contiguous from the start, an output that is an input
        let name = |e: Error| match e {
            Error::ShapeMismatch { argument, .. } | Error::InvalidArgument { argument, .. } | Error::Aliasing { argument, .. } => argument,
            other => panic!("{other}"),
        };
        let mut enc = ctx.device().create_command_encoder(&Default::default());
        let mut run = |g: AttentionGradOutputs, o: &AttentionOptions| name(ctx.encode_attention_backward(&mut enc, &call, &g, o).unwrap_err());
        assert_eq!(run(AttentionGradOutputs { d_sinks: None, ..grads }, &opts), "d_sinks");
        let plain = AttentionOptions { sinks: None, ..c.opts() };
        assert_eq!(run(grads, &plain), "d_sinks");
        assert_eq!(run(AttentionGradOutputs { dk: &dq, ..grads }, &opts), "dk");
        let big = z(Shape::new(2, 4, 10, 8));
        // dq's shape at offset 8 of a larger buffer, rows 10 apart
        let strides = Strides { batch: 4 * 10 * 8, head: 10 * 8, seq: 8 };
        let rows = Tensor::from_buffer_strided(&ctx, big.buffer().clone(), 8, data.qs, strides, DType::F32).unwrap();
        assert_eq!(run(AttentionGradOutputs { dq: &rows, ..grads }, &opts), "dq");
        let q32 = ctx.upload(&data.q, data.qs).unwrap();
        let call2 = AttentionBackwardCall { q: &q32, ..call };
        let e = ctx.encode_attention_backward(&mut enc, &call2, &AttentionGradOutputs { dq: &q32, ..grads }, &opts).unwrap_err();
        assert_eq!(name(e), "dq");
    }
}

gpu_test! {
    fn bad_calls_are_refused_naming_the_argument() {
        let ctx = shared_gpu();
        let c = Case::new(1, 2, 1, 3, 4, 8);
        let data = case_data(&c);
        let (q, k) = (ctx.upload(&data.q, data.qs).unwrap(), ctx.upload(&data.k, data.ks).unwrap());
        let opts = c.opts();
        let (o, lse) = ctx.attention_with_lse(&q, &k, &k, None, &opts).unwrap();
        let call = AttentionBackwardCall { q: &q, k: &k, v: &k, mask: None, o: &o, lse: &lse, d_o: &o };
        let name = |e: Error| match e {
            Error::ShapeMismatch { argument, .. } | Error::DTypeMismatch { argument, .. } | Error::InvalidArgument { argument, .. } => argument,
            other => panic!("{other}"),
        };
        let run = |call: AttentionBackwardCall| name(ctx.attention_backward(&call, &opts).unwrap_err());
        assert_eq!(run(AttentionBackwardCall { o: &k, ..call }), "o");
        assert_eq!(run(AttentionBackwardCall { d_o: &k, ..call }), "d_o");
        assert_eq!(run(AttentionBackwardCall { lse: &o, ..call }), "lse");
        assert_eq!(run(AttentionBackwardCall { v: &q, ..call }), "v");
        // head dims over 256: refused as the forward refuses them, naming q
        let s = Shape::new(1, 1, 2, 300);
        let x = ctx.upload(&vec![0.5f32; s.numel()], s).unwrap();
        let lse = ctx.zeros(Shape::new(1, 1, 2, 1), Layout::Bhsd, DType::F32).unwrap();
        let call = AttentionBackwardCall { q: &x, k: &x, v: &x, mask: None, o: &x, lse: &lse, d_o: &x };
        let e = ctx.attention_backward(&call, &AttentionOptions::default()).unwrap_err();
        assert!(matches!(e, Error::UnsupportedHeadDim { argument: "q", max: 256, .. }), "{e}");
        // keys per group of lanes: 1 or 2, and 2 only up to head dim 128
        let s = Shape::new(1, 1, 2, 200);
        let x = ctx.upload(&vec![0.5f32; s.numel()], s).unwrap();
        let (o, lse) = ctx.attention_with_lse(&x, &x, &x, None, &AttentionOptions::default()).unwrap();
        let wide = AttentionBackwardCall { q: &x, k: &x, v: &x, mask: None, o: &o, lse: &lse, d_o: &x };
        for keys in [2, 3, 0] {
            let bad = AttentionOptions { config: AttentionConfig { backward_keys: Some(keys), ..Default::default() }, ..Default::default() };
            let e = ctx.attention_backward(&wide, &bad).unwrap_err();
            assert!(matches!(&e, Error::Unsupported(m) if m.contains("config.backward_keys")), "{keys}: {e}");
        }
        assert!(ctx.attention_backward(&wide, &AttentionOptions { config: AttentionConfig { backward_keys: Some(1), ..Default::default() }, ..Default::default() }).is_ok());
    }
}
