//! Similarity and softmax (GPU and CPU) against f64 references.

mod common;
use common::*;
use wgpu_attention::*;

/// f64 similarity reference, [b, h, nq, nk].
fn ref_similarity(q: &[f32], qs: Shape, k: &[f32], ks: Shape, layout: Layout, metric: Similarity) -> Vec<f64> {
    let group = qs.heads / ks.heads;
    let mut out = vec![];
    for b in 0..qs.batch {
        for h in 0..qs.heads {
            for i in 0..qs.seq {
                for j in 0..ks.seq {
                    let qv: Vec<f64> = (0..qs.dim).map(|x| at(q, qs, layout, b, h, i, x)).collect();
                    let kv: Vec<f64> = (0..qs.dim).map(|x| at(k, ks, layout, b, h / group, j, x)).collect();
                    let dot: f64 = qv.iter().zip(&kv).map(|(a, b)| a * b).sum();
                    out.push(match metric {
                        Similarity::Dot => dot,
                        Similarity::ScaledDot(s) => dot * s.map(|s| s as f64).unwrap_or(1.0 / (qs.dim as f64).sqrt()),
                        Similarity::Cosine => {
                            let n = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
                            let den = n(&qv) * n(&kv);
                            if den == 0.0 {
                                0.0
                            } else {
                                dot / den
                            }
                        }
                        Similarity::L2 => -qv.iter().zip(&kv).map(|(a, b)| (a - b).powi(2)).sum::<f64>(),
                    });
                }
            }
        }
    }
    out
}

fn check_similarity(ctx: Option<&Context>, qs: Shape, ks: Shape, layout: Layout, metric: Similarity, zero_rows: bool) {
    let seed = (qs.numel() + ks.numel()) as u64;
    let mut q = rand_vec(seed, qs.numel(), 1.0);
    let mut k = rand_vec(seed + 1, ks.numel(), 1.0);
    if zero_rows {
        // zero vectors: the first query row and the last key row of every (batch, head)
        for b in 0..qs.batch {
            for h in 0..qs.heads {
                let st = layout.strides(&qs);
                q[b * st.batch + h * st.head..][..qs.dim].fill(0.0);
            }
            for h in 0..ks.heads {
                let st = layout.strides(&ks);
                k[b * st.batch + h * st.head + (ks.seq - 1) * st.seq..][..ks.dim].fill(0.0);
            }
        }
    }
    let want = ref_similarity(&q, qs, &k, ks, layout, metric);
    let what = format!("{metric:?} {qs:?} {ks:?} {layout:?}");
    let (hq, hk) = (HostTensor::with_layout(&q, qs, layout).unwrap(), HostTensor::with_layout(&k, ks, layout).unwrap());
    assert_close(&format!("cpu {what}"), &cpu::similarity(&hq, &hk, metric).unwrap(), &want, 1e-5);
    assert_close(&format!("cpu reference {what}"), &cpu::reference::similarity(&hq, &hk, metric).unwrap(), &want, 1e-6);
    let Some(ctx) = ctx else { return };
    let (gq, gk) = (ctx.upload_with_layout(&q, qs, layout).unwrap(), ctx.upload_with_layout(&k, ks, layout).unwrap());
    let got = ctx.similarity(&gq, &gk, metric).unwrap().download_blocking(ctx).unwrap();
    assert_close(&format!("gpu {what}"), &got, &want, 1e-5);
    if zero_rows {
        assert!(got.iter().all(|x| x.is_finite()));
    }
}

fn similarity_all_metrics_and_shapes(ctx: Option<&Context>) {
    let metrics = [
        Similarity::Dot,
        Similarity::ScaledDot(None),
        Similarity::ScaledDot(Some(0.3)),
        Similarity::Cosine,
        Similarity::L2,
    ];
    for (b, h, hkv, nq, nk, d) in [
        (1, 1, 1, 1, 1, 1),
        (2, 3, 3, 17, 9, 3),
        (1, 4, 2, 65, 130, 40),
        (1, 2, 1, 1, 1100, 128),
        (1, 1, 1, 130, 67, 256),
        // more than one 128 x 128 GEMM tile each way, with a ragged head dim (not a multiple of
        // the 8-dim step) and grouped heads
        (1, 1, 1, 300, 260, 13),
        (2, 2, 1, 129, 129, 9),
    ] {
        for metric in metrics {
            for layout in [Layout::Bhsd, Layout::Bshd] {
                check_similarity(ctx, Shape::new(b, h, nq, d), Shape::new(b, hkv, nk, d), layout, metric, false);
            }
        }
    }
}

#[test]
fn similarity_cpu() {
    similarity_all_metrics_and_shapes(None);
}

gpu_test! {
    fn similarity_gpu() {
        similarity_all_metrics_and_shapes(Some(&shared_gpu()));
    }
}

fn cosine_of_zero_vectors_is_zero(ctx: Option<&Context>) {
    check_similarity(ctx, Shape::new(2, 2, 5, 16), Shape::new(2, 1, 7, 16), Layout::Bhsd, Similarity::Cosine, true);
}

#[test]
fn cosine_of_zero_vectors_is_zero_cpu() {
    cosine_of_zero_vectors_is_zero(None);
}

gpu_test! {
    fn cosine_of_zero_vectors_is_zero_gpu() {
        cosine_of_zero_vectors_is_zero(Some(&shared_gpu()));
    }
}

/// f64 softmax reference over [b, h, rows, cols] stored in `layout`, output in `layout`.
fn ref_softmax(x: &[f32], s: Shape, layout: Layout, temp: f64, mask: &RefMask) -> Vec<f64> {
    let mut out = vec![0.0; s.numel()];
    let st = layout.strides(&s);
    for b in 0..s.batch {
        for h in 0..s.heads {
            for i in 0..s.seq {
                let v: Vec<Option<f64>> = (0..s.dim)
                    .map(|j| mask.term(b, h, i, j, s.seq, s.dim).map(|a| at(x, s, layout, b, h, i, j) / temp + a))
                    .collect();
                let m = v.iter().flatten().cloned().fold(f64::NEG_INFINITY, f64::max);
                if m == f64::NEG_INFINITY {
                    continue;
                }
                let l: f64 = v.iter().flatten().map(|y| (y - m).exp()).sum();
                for j in 0..s.dim {
                    if let Some(y) = v[j] {
                        out[b * st.batch + h * st.head + i * st.seq + j] = (y - m).exp() / l;
                    }
                }
            }
        }
    }
    out
}

fn softmax_options_masks_and_shapes(ctx: Option<&Context>) {
    // (shape, temperature, causal, key lengths, mask shape, additive mask, input amplitude)
    type SoftmaxCase = (Shape, f32, bool, Option<Vec<u32>>, Option<[usize; 4]>, bool, f32);
    let cases: Vec<SoftmaxCase> = vec![
        (Shape::new(1, 1, 1, 1), 1.0, false, None, None, false, 1.0),
        (Shape::new(2, 3, 7, 300), 0.5, false, None, None, false, 3.0),
        (Shape::new(1, 2, 5, 4097), 2.0, false, None, None, false, 1.0),
        (Shape::new(2, 2, 9, 40), 1.0, true, Some(vec![40, 3]), None, false, 1.0),
        (Shape::new(2, 2, 40, 9), 1.0, true, None, None, false, 1.0),
        (Shape::new(2, 3, 6, 33), 1.0, false, Some(vec![0, 33]), Some([2, 1, 6, 33]), false, 1.0),
        (Shape::new(2, 3, 6, 33), 0.7, true, None, Some([1, 3, 6, 33]), true, 1.0),
        // magnitude 1e4 inputs
        (Shape::new(1, 1, 4, 100), 1.0, false, None, None, false, 1.0e4),
        // the GPU kernel's register tiers: up to 1024, 2048 and 4096 columns per row (then
        // streamed: 4097 above), at their edges, with masks, causal rows and key lengths
        (Shape::new(1, 2, 3, 1025), 1.0, false, None, Some([1, 2, 3, 1025]), false, 1.0),
        (Shape::new(2, 1, 3, 2048), 0.3, true, Some(vec![2048, 1500]), None, false, 1.0),
        (Shape::new(1, 1, 2, 2049), 1.0, false, None, Some([1, 1, 2, 2049]), true, 1.0),
        (Shape::new(1, 1, 2, 4096), 1.0, true, None, None, false, 1.0),
    ];
    for (s, temp, causal, kl, mshape, additive, amp) in cases {
        let x = rand_vec(s.numel() as u64, s.numel(), amp);
        let bm = mshape.map(|m| rand_bools(3, m.iter().product(), 0.6)).unwrap_or_default();
        let am: Vec<f32> = mshape
            .map(|m| {
                rand_vec(4, m.iter().product(), 1.0)
                    .into_iter()
                    .zip(&bm)
                    .map(|(v, &k)| if k { v } else { f32::NEG_INFINITY })
                    .collect()
            })
            .unwrap_or_default();
        let rm = RefMask {
            causal,
            key_lengths: kl.as_deref(),
            bool_mask: if additive { None } else { mshape.map(|m| (&bm[..], m)) },
            add_mask: if additive { mshape.map(|m| (&am[..], m)) } else { None },
            ..Default::default()
        };
        let opts = SoftmaxOptions { temperature: temp, causal, key_lengths: kl.as_deref() };
        let hmask =
            mshape
                .map(|m| if additive { HostMask::additive(&am, m).unwrap() } else { HostMask::bool(&bm, m).unwrap() });
        for layout in [Layout::Bhsd, Layout::Bshd] {
            let want = ref_softmax(&x, s, layout, temp as f64, &rm);
            let what =
                format!("{s:?} {layout:?} T={temp} causal={causal} kl={kl:?} mask={mshape:?} additive={additive}");
            let hx = HostTensor::with_layout(&x, s, layout).unwrap();
            assert_close(&format!("cpu {what}"), &cpu::softmax(&hx, hmask.as_ref(), &opts).unwrap(), &want, 1e-5);
            let reference = cpu::reference::softmax(&hx, hmask.as_ref(), &opts).unwrap();
            assert_close(&format!("cpu reference {what}"), &reference, &want, 1e-6);
            if let Some(ctx) = ctx {
                let gx = ctx.upload_with_layout(&x, s, layout).unwrap();
                let gm = hmask.as_ref().map(|m| ctx.upload_mask(m).unwrap());
                let y = ctx.softmax(&gx, gm.as_ref(), &opts).unwrap();
                assert_eq!(y.layout(), layout);
                assert_close(&format!("gpu {what}"), &y.download_blocking(ctx).unwrap(), &want, 1e-5);
            }
        }
    }
}

#[test]
fn softmax_cpu() {
    softmax_options_masks_and_shapes(None);
}

gpu_test! {
    fn softmax_gpu() {
        softmax_options_masks_and_shapes(Some(&shared_gpu()));
    }
}

gpu_test! {
    fn softmax_gpu_reductions_through_workgroup_memory() {
        // the row reductions without subgroup operations
        softmax_options_masks_and_shapes(Some(&gpu_without_subgroups()));
    }
}

gpu_test! {
fn softmax_f16() {
    let ctx = shared_gpu();
    if !f16_supported(&ctx) {
        return;
    }
    let s = Shape::new(2, 2, 5, 1000);
    let x16: Vec<half::f16> = rand_vec(9, s.numel(), 4.0).into_iter().map(half::f16::from_f32).collect();
    let x32: Vec<f32> = x16.iter().map(|v| v.to_f32()).collect();
    let want = ref_softmax(&x32, s, Layout::Bhsd, 1.0, &RefMask::none());
    let y = ctx.softmax(&ctx.upload(&x16, s).unwrap(), None, &SoftmaxOptions::default()).unwrap();
    assert_eq!(y.dtype(), DType::F16);
    assert_close("f16 softmax", &y.download_blocking(&ctx).unwrap(), &want, 1e-3);
}
}
