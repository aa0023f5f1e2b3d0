//! The fast CPU path against the crate's f64 reference (`cpu::reference`), on seeded inputs:
//! every operation, f32 and f16, both layouts, GQA, the attention options, and sizes on either
//! side of the fast path's blocks (64 query rows, 128 keys, 1024 top-k keys) up to key splits
//! for decoding; and inputs beyond f32's safe range, which must give the reference's result.

mod common;
use common::*;
use wgpu_attention::half::f16;
use wgpu_attention::*;

fn f16s(v: &[f32]) -> Vec<f16> {
    v.iter().map(|&x| f16::from_f32(x)).collect()
}

/// (batch, heads, kv heads, nq, nk, d, layout)
const SHAPES: [(usize, usize, usize, usize, usize, usize, Layout); 8] = [
    (1, 1, 1, 1, 1, 1, Layout::Bhsd),
    (1, 2, 1, 63, 127, 16, Layout::Bhsd),
    (2, 2, 2, 64, 128, 64, Layout::Bshd),
    (1, 4, 2, 65, 129, 33, Layout::Bhsd),
    (1, 8, 2, 1, 5000, 128, Layout::Bhsd), // GQA decode: key splits
    (2, 3, 3, 130, 300, 7, Layout::Bshd),
    (1, 1, 1, 300, 40, 256, Layout::Bhsd),
    (3, 2, 1, 2, 2100, 24, Layout::Bshd),
];

fn options<'a>(lens: &'a [u32], slopes: &'a [f32], sinks: &'a [f32]) -> Vec<AttentionOptions<'a>> {
    vec![
        AttentionOptions::default(),
        AttentionOptions { causal: true, ..Default::default() },
        AttentionOptions {
            key_lengths: Some(lens),
            window: Some(Window { left: 40, right: Some(3) }),
            ..Default::default()
        },
        AttentionOptions {
            causal: true,
            softcap: Some(5.0),
            alibi_slopes: Some(slopes),
            sinks: Some(sinks),
            ..Default::default()
        },
    ]
}

#[test]
fn attention_fast_equals_reference() {
    for (n, &(b, h, hkv, nq, nk, d, layout)) in SHAPES.iter().enumerate() {
        let (qs, ks) = (Shape::new(b, h, nq, d), Shape::new(b, hkv, nk, d));
        let (q, k, v) = (
            rand_vec(n as u64, qs.numel(), 1.0),
            rand_vec(50 + n as u64, ks.numel(), 1.0),
            rand_vec(90 + n as u64, ks.numel(), 1.0),
        );
        let lens: Vec<u32> = (0..b).map(|x| (nk - x * nk / 4) as u32).collect();
        let slopes: Vec<f32> = (0..h).map(|x| 0.1 * (x + 1) as f32).collect();
        let sinks: Vec<f32> = (0..h).map(|x| x as f32 - 1.0).collect();
        let bools = rand_bools(7 + n as u64, nq * nk, 0.7);
        let mask = HostMask::bool(&bools, [1, 1, nq, nk]).unwrap();
        for (o, opts) in options(&lens, &slopes, &sinks).iter().enumerate() {
            for masked in [false, true] {
                let m = masked.then_some(&mask);
                let what = format!("shape {n} options {o} mask {masked}");
                let (hq, hk, hv) = (
                    HostTensor::with_layout(&q, qs, layout).unwrap(),
                    HostTensor::with_layout(&k, ks, layout).unwrap(),
                    HostTensor::with_layout(&v, ks, layout).unwrap(),
                );
                let (fo, fl) = cpu::attention(&hq, &hk, &hv, m, opts).unwrap();
                let (ro, rl) = cpu::reference::attention(&hq, &hk, &hv, m, opts).unwrap();
                assert_close(&what, &fo, &to_f64(&ro), 2e-6);
                assert_lse(&format!("{what} lse"), &fl, &to_f64(&rl), 2e-6);
                if nq * nk <= 40_000 {
                    let (fo, fw) = cpu::attention_unfused(&hq, &hk, &hv, m, opts).unwrap();
                    let (ro, rw) = cpu::reference::attention_unfused(&hq, &hk, &hv, m, opts).unwrap();
                    assert_close(&format!("{what} unfused"), &fo, &to_f64(&ro), 2e-6);
                    assert_close(&format!("{what} weights"), &fw, &to_f64(&rw), 2e-6);
                }
                // f16 inputs: the same rounded values on both paths
                let (q16, k16, v16) = (f16s(&q), f16s(&k), f16s(&v));
                let (hq, hk, hv) = (
                    HostTensor::with_layout(&q16, qs, layout).unwrap(),
                    HostTensor::with_layout(&k16, ks, layout).unwrap(),
                    HostTensor::with_layout(&v16, ks, layout).unwrap(),
                );
                let (fo, _) = cpu::attention(&hq, &hk, &hv, m, opts).unwrap();
                let (ro, _) = cpu::reference::attention(&hq, &hk, &hv, m, opts).unwrap();
                assert_close(&format!("{what} f16"), &fo, &to_f64(&ro), 2e-6);
            }
        }
    }
}

#[test]
fn paged_attention_fast_equals_reference() {
    let g = PageGeometry { num_pages: 64, page_size: 16, kv_heads: 2, head_dim: 32 };
    // pages dealt out of order, sequences of 1, 200 and 700 tokens; 3 new queries each
    let lens = [1u32, 200, 700];
    let blocks = 44;
    let mut entries = vec![0u32; 3 * blocks];
    let mut next = (0..64u32).rev();
    for (s, &l) in lens.iter().enumerate() {
        for e in entries[s * blocks..s * blocks + (l as usize).div_ceil(16)].iter_mut() {
            *e = next.next().unwrap();
        }
    }
    let table = BlockTable::new(&entries, blocks, &lens).unwrap();
    let mut cache = HostKvCache::new(g).unwrap();
    let n = g.tokens() * 2 * 32;
    cache.k_mut().unwrap().copy_from_slice(&rand_vec(1, n, 1.0));
    cache.v_mut().unwrap().copy_from_slice(&rand_vec(2, n, 1.0));
    let qs = Shape::new(3, 4, 1, 32);
    let q = rand_vec(3, qs.numel(), 1.0);
    let slopes = [0.2f32, 0.1, 0.05, 0.3];
    for opts in [
        AttentionOptions::default(),
        AttentionOptions { causal: true, window: Some(Window { left: 100, right: None }), ..Default::default() },
        AttentionOptions {
            alibi_slopes: Some(&slopes),
            softcap: Some(3.0),
            sinks: Some(&slopes),
            ..Default::default()
        },
    ] {
        let hq = HostTensor::new(&q, qs).unwrap();
        let (fo, fl) = cpu::paged_attention(&hq, &cache, &table, &opts).unwrap();
        let (ro, rl) = cpu::reference::paged_attention(&hq, &cache, &table, &opts).unwrap();
        assert_close("paged", &fo, &to_f64(&ro), 2e-6);
        assert_lse("paged lse", &fl, &to_f64(&rl), 2e-6);
    }
}

#[test]
fn similarity_softmax_weighted_sum_fast_equal_reference() {
    for (n, &(b, h, hkv, nq, nk, d, layout)) in SHAPES.iter().enumerate().filter(|(_, s)| s.3 * s.4 <= 40_000) {
        let (qs, ks) = (Shape::new(b, h, nq, d), Shape::new(b, hkv, nk, d));
        let (mut q, k) = (rand_vec(n as u64, qs.numel(), 1.0), rand_vec(60 + n as u64, ks.numel(), 1.0));
        q[..d].fill(0.0); // a zero query row: cosine 0
        let (hq, hk) =
            (HostTensor::with_layout(&q, qs, layout).unwrap(), HostTensor::with_layout(&k, ks, layout).unwrap());
        for metric in [
            Similarity::Dot,
            Similarity::ScaledDot(None),
            Similarity::ScaledDot(Some(-0.3)),
            Similarity::Cosine,
            Similarity::L2,
        ] {
            let got = cpu::similarity(&hq, &hk, metric).unwrap();
            let want = cpu::reference::similarity(&hq, &hk, metric).unwrap();
            assert_close(&format!("similarity {metric:?} shape {n}"), &got, &to_f64(&want), 2e-6);
        }
        // softmax of rows of the scores (nk columns), with each rule
        let s = Shape::new(b, h, nq, nk);
        let x = rand_vec(70 + n as u64, s.numel(), 4.0);
        let hx = HostTensor::with_layout(&x, s, layout).unwrap();
        let lens: Vec<u32> = (0..b).map(|i| (nk / (i + 1)) as u32).collect();
        let add: Vec<f32> = rand_vec(8, nq * nk, 3.0)
            .iter()
            .enumerate()
            .map(|(i, &a)| if i % 5 == 0 { f32::NEG_INFINITY } else { a })
            .collect();
        let mask = HostMask::additive(&add, [1, 1, nq, nk]).unwrap();
        for (t, causal, kl, m) in
            [(1.0, false, None, None), (0.25, true, Some(&lens[..]), None), (3.0, false, None, Some(&mask))]
        {
            let opts = SoftmaxOptions { temperature: t, causal, key_lengths: kl };
            let got = cpu::softmax(&hx, m, &opts).unwrap();
            let want = cpu::reference::softmax(&hx, m, &opts).unwrap();
            assert_close(&format!("softmax shape {n} T {t}"), &got, &to_f64(&want), 2e-6);
        }
        // weights · v, v f32 and f16
        let w = cpu::softmax(&HostTensor::new(&x, s).unwrap(), None, &SoftmaxOptions::default()).unwrap();
        let hw = HostTensor::new(&w, s).unwrap();
        let v = rand_vec(80 + n as u64, ks.numel(), 1.0);
        let hv = HostTensor::with_layout(&v, ks, layout).unwrap();
        assert_close(
            &format!("weighted sum shape {n}"),
            &cpu::weighted_sum(&hw, &hv).unwrap(),
            &to_f64(&cpu::reference::weighted_sum(&hw, &hv).unwrap()),
            2e-6,
        );
        let v16 = f16s(&v);
        let hv = HostTensor::with_layout(&v16, ks, layout).unwrap();
        assert_close(
            &format!("weighted sum f16 shape {n}"),
            &cpu::weighted_sum(&hw, &hv).unwrap(),
            &to_f64(&cpu::reference::weighted_sum(&hw, &hv).unwrap()),
            2e-6,
        );
    }
}

#[test]
fn top_k_fast_equals_reference() {
    for (nq, nk, d, k) in [
        (1usize, 1usize, 1usize, 1usize),
        (3, 1000, 16, 10),
        (5, 1025, 7, 100),
        (17, 5000, 64, 1),
        (2, 3000, 128, 1024),
    ] {
        let (q, mut keys) = (rand_vec(nk as u64, nq * d, 1.0), rand_vec(3, nk * d, 1.0));
        // duplicate keys: equal scores, ranked by index
        if nk > 10 {
            let first = keys[..d].to_vec();
            keys[5 * d..6 * d].copy_from_slice(&first);
            keys[(nk - 1) * d..].copy_from_slice(&first);
            keys[7 * d..8 * d].fill(0.0);
        }
        for metric in [Metric::Dot, Metric::Cosine, Metric::L2] {
            let got = cpu::top_k(&q, &keys, d, k, metric).unwrap();
            let want = cpu::reference::top_k(&q, &keys, d, k, metric).unwrap();
            assert_eq!(got.indices, want.indices, "nq {nq} nk {nk} d {d} k {k} {metric:?}");
            assert_eq!(got.scores, want.scores, "scores are re-computed in f64 as the reference's");
        }
    }
}

#[test]
fn beyond_f32_the_reference_answers() {
    // scores near 1e36 and values near 1e37: the fast path hands the call to the reference
    let s = Shape::new(1, 2, 9, 8);
    let q: Vec<f32> = rand_vec(1, s.numel(), 1e18);
    let v: Vec<f32> = rand_vec(2, s.numel(), 1e37);
    let (hq, hv) = (HostTensor::new(&q, s).unwrap(), HostTensor::new(&v, s).unwrap());
    let opts = AttentionOptions::default();
    let fast = cpu::attention(&hq, &hq, &hv, None, &opts).unwrap();
    let reference = cpu::reference::attention(&hq, &hq, &hv, None, &opts).unwrap();
    assert_eq!(fast, reference);
    assert!(fast.0.iter().all(|x| x.is_finite()));
    assert_eq!(
        cpu::similarity(&hq, &hq, Similarity::Dot).unwrap(),
        cpu::reference::similarity(&hq, &hq, Similarity::Dot).unwrap()
    );
    let t = cpu::top_k(&q[..8], &q, 8, 3, Metric::L2).unwrap();
    assert_eq!((t.indices, t.scores), {
        let r = cpu::reference::top_k(&q[..8], &q, 8, 3, Metric::L2).unwrap();
        (r.indices, r.scores)
    });
    // a huge additive mask value and a tiny temperature
    let add = vec![1e35f32; 81];
    let mask = HostMask::additive(&add, [1, 1, 9, 9]).unwrap();
    let small = rand_vec(3, 2 * 81, 100.0);
    let hx = HostTensor::new(&small, Shape::new(1, 2, 9, 9)).unwrap();
    let opts = SoftmaxOptions { temperature: 1e-30, ..Default::default() };
    assert_eq!(cpu::softmax(&hx, None, &opts).unwrap(), cpu::reference::softmax(&hx, None, &opts).unwrap());
    let d = SoftmaxOptions::default();
    assert_eq!(cpu::softmax(&hx, Some(&mask), &d).unwrap(), cpu::reference::softmax(&hx, Some(&mask), &d).unwrap());
}
