//! Regressions for the edges found by testing as a new user would. Each of these failed before
//! the validation layer and the overflow-safe score transform (a dropped key, NaN, a panic, a
//! wrapped offset accepted, or an `Ok` whose encoder panicked at `finish()`).

mod common;
use common::*;
use wgpu::util::DeviceExt;
use wgpu_attention::*;

/// One query against two keys, with an additive mask: (q, k, v, shapes).
fn two_keys(seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>, Shape, Shape) {
    (
        rand_vec(seed, 4, 1.0),
        rand_vec(seed + 1, 8, 1.0),
        rand_vec(seed + 2, 8, 1.0),
        Shape::new(1, 1, 1, 4),
        Shape::new(1, 1, 2, 4),
    )
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

/// Every backend and, on the GPU, every variant: (name, output, lse if the variant has one).
fn run_everywhere(
    ctx: Option<&Context>,
    q: &HostTensor,
    k: &HostTensor,
    v: &HostTensor,
    mask: Option<&HostMask>,
    opts: &AttentionOptions,
) -> Vec<(String, Vec<f32>, Option<Vec<f32>>)> {
    let mut runs = vec![];
    let (o, l) = Backend::Cpu.attention_with_lse(q, k, v, mask, opts).unwrap();
    runs.push(("cpu".to_string(), o, Some(l)));
    let Some(ctx) = ctx else { return runs };
    let be = Backend::Gpu(ctx.clone());
    for variant in [AttentionVariant::Auto].into_iter().chain(AttentionVariant::ALL) {
        if !runs_forced(variant, q.shape().dim) {
            continue;
        }
        let o = AttentionOptions { variant, ..*opts };
        if variant == AttentionVariant::TensorCores {
            // f32 inputs: refused (tests/tensor_cores.rs runs its extremes in f16)
            assert!(be.attention(q, k, v, mask, &o).is_err());
        } else if variant == AttentionVariant::Unfused {
            runs.push((format!("gpu {variant}"), be.attention(q, k, v, mask, &o).unwrap(), None));
        } else if matches!(
            variant,
            AttentionVariant::Fused(Loads::Vec4)
                | AttentionVariant::SplitK(Loads::Vec4)
                | AttentionVariant::Decode(Loads::Vec4)
        ) {
            if q.shape().dim % 4 == 0 {
                let (out, l) = be.attention_with_lse(q, k, v, mask, &o).unwrap();
                runs.push((format!("gpu {variant}"), out, Some(l)));
            }
        } else {
            let (out, l) = be.attention_with_lse(q, k, v, mask, &o).unwrap();
            runs.push((format!("gpu {variant}"), out, Some(l)));
        }
    }
    runs
}

fn additive_extremes(ctx: Option<&Context>) {
    let (q, k, v, qs, ks) = two_keys(1);
    let (hq, hk, hv) =
        (HostTensor::new(&q, qs).unwrap(), HostTensor::new(&k, ks).unwrap(), HostTensor::new(&v, ks).unwrap());
    let s0 = dot(&q, &k[..4]) / 2.0; // scale 1/sqrt(4)
                                     // -3e38 is a value, not a dropped key: with key 1 dropped, key 0 takes all the weight
    let m = [-3.0e38f32, f32::NEG_INFINITY];
    let mask = HostMask::additive(&m, [1, 1, 1, 2]).unwrap();
    for (what, o, l) in run_everywhere(ctx, &hq, &hk, &hv, Some(&mask), &AttentionOptions::default()) {
        assert_agree(&format!("-3e38 {what}"), &o, &v[..4], 1e-6);
        if let Some(l) = l {
            assert!(approx::relative_eq!(l[0] as f64, s0 - 3.0e38, max_relative = 1e-6), "{what}: lse {}", l[0]);
        }
    }
    // +3e38: key 0 dominates, the lse is near 3e38 (representable), no NaN
    let m = [3.0e38f32, 0.0];
    let mask = HostMask::additive(&m, [1, 1, 1, 2]).unwrap();
    for (what, o, l) in run_everywhere(ctx, &hq, &hk, &hv, Some(&mask), &AttentionOptions::default()) {
        assert_agree(&format!("+3e38 {what}"), &o, &v[..4], 1e-6);
        if let Some(l) = l {
            assert!(approx::relative_eq!(l[0] as f64, 3.0e38 + s0, max_relative = 1e-6), "{what}: lse {}", l[0]);
        }
    }
    // both keys at -3e38 plus their scores: the scores decide, as without the mask
    let m = [-3.0e38f32, -3.0e38];
    let mask = HostMask::additive(&m, [1, 1, 1, 2]).unwrap();
    let (want, _) = cpu::attention(&hq, &hk, &hv, None, &AttentionOptions::default()).unwrap();
    for (what, o, _) in run_everywhere(ctx, &hq, &hk, &hv, Some(&mask), &AttentionOptions::default()) {
        // 3e38 has an ulp of 2e31: the scores vanish in it, so the keys tie (weights 1/2 each)
        let tie: Vec<f32> = (0..4).map(|i| (v[i] + v[4 + i]) / 2.0).collect();
        assert!(o.iter().all(|x| x.is_finite()), "{what}");
        assert!(rel_err(&o, &to_f64(&tie)) < 1e-5 || rel_err(&o, &to_f64(&want)) < 1e-5, "{what}: {o:?}");
    }
}

#[test]
fn additive_extremes_are_values_cpu() {
    additive_extremes(None);
}

gpu_test! {
    fn additive_extremes_are_values_gpu() {
        additive_extremes(Some(&shared_gpu()));
    }
}

fn scale_extremes(ctx: Option<&Context>) {
    let s = Shape::new(1, 2, 3, 64);
    let (q, k, v) = (rand_vec(1, s.numel(), 1.0), rand_vec(2, s.numel(), 1.0), rand_vec(3, s.numel(), 1.0));
    let (hq, hk, hv) =
        (HostTensor::new(&q, s).unwrap(), HostTensor::new(&k, s).unwrap(), HostTensor::new(&v, s).unwrap());
    let mut backends = vec![Backend::Cpu];
    backends.extend(ctx.map(|c| Backend::Gpu(c.clone())));
    // 1e38 gave NaN: now refused before any work, on every path
    for bad in [1e38f32, -1e31, 1e-35, 1e-45] {
        for be in &backends {
            let e = be
                .attention(&hq, &hk, &hv, None, &AttentionOptions { scale: Some(bad), ..Default::default() })
                .unwrap_err();
            assert!(matches!(e, Error::InvalidArgument { argument: "scale", .. }), "{bad}: {e}");
        }
    }
    // the largest accepted scale: the softmax becomes an argmax, computed without overflow
    for scale in [2f32.powi(100), -(2f32.powi(100)), 1e20, 0.0] {
        let opts = AttentionOptions { scale: Some(scale), ..Default::default() };
        let runs = run_everywhere(ctx, &hq, &hk, &hv, None, &opts);
        let cpu = &runs[0].1;
        for (what, o, l) in &runs {
            assert!(o.iter().all(|x| x.is_finite()), "scale {scale} {what}");
            assert_agree(&format!("scale {scale} {what}"), o, cpu, 1e-5);
            if let Some(l) = l {
                assert!(l.iter().all(|x| !x.is_nan()), "scale {scale} {what}: lse {l:?}");
            }
        }
    }
}

#[test]
fn scale_extremes_cpu() {
    scale_extremes(None);
}

gpu_test! {
    fn scale_extremes_gpu() {
        scale_extremes(Some(&shared_gpu()));
    }
}

fn softmax_extremes(ctx: Option<&Context>) {
    let mut backends = vec![Backend::Cpu];
    backends.extend(ctx.map(|c| Backend::Gpu(c.clone())));
    let s = Shape::new(1, 1, 1, 4);
    for (x, t, want) in [
        // x / T overflows f32: the result (an argmax) is representable and computed
        ([1e30f32, 5e29, 0.0, -1e30], 1e-10f32, [1.0f32, 0.0, 0.0, 0.0]),
        ([3e38, -3e38, 0.0, 3e38], 1.0, [0.5, 0.0, 0.0, 0.5]),
        ([-3e38, -3e38, -3e38, -3e38], 2f32.powi(-100), [0.25, 0.25, 0.25, 0.25]),
        ([1.0, 2.0, 3.0, 4.0], 2f32.powi(100), [0.25, 0.25, 0.25, 0.25]),
    ] {
        let hx = HostTensor::new(&x, s).unwrap();
        for be in &backends {
            let y = be.softmax(&hx, None, &SoftmaxOptions { temperature: t, ..Default::default() }).unwrap();
            assert_agree(&format!("{x:?} / {t} on {}", be.describe()), &y, &want, 1e-6);
        }
    }
    // an additive mask with a tiny temperature: x/T (up to 4e20) outweighs the mask (1e10)...
    let x = [1.0f32, 2.0, 3.0, 4.0];
    let m = [1e10f32, -1e10, f32::NEG_INFINITY, 0.0];
    let mask = HostMask::additive(&m, [1, 1, 1, 4]).unwrap();
    let hx = HostTensor::new(&x, s).unwrap();
    for be in &backends {
        let y = be.softmax(&hx, Some(&mask), &SoftmaxOptions { temperature: 1e-20, ..Default::default() }).unwrap();
        assert_agree(&format!("masked, T 1e-20, on {}", be.describe()), &y, &[0.0, 0.0, 0.0, 1.0], 1e-6);
        // ... and at T = 1 the mask decides
        let y2 = be.softmax(&hx, Some(&mask), &SoftmaxOptions { temperature: 1.0, ..Default::default() }).unwrap();
        assert_agree(&format!("masked, T 1, on {}", be.describe()), &y2, &[1.0, 0.0, 0.0, 0.0], 1e-6);
        // the mask's extremes are values too
        let m3 = [3e38f32, -3e38, f32::NEG_INFINITY, 0.0];
        let mask3 = HostMask::additive(&m3, [1, 1, 1, 4]).unwrap();
        let y3 = be.softmax(&hx, Some(&mask3), &SoftmaxOptions { temperature: 1e-20, ..Default::default() }).unwrap();
        assert_agree(&format!("masked +-3e38 on {}", be.describe()), &y3, &[1.0, 0.0, 0.0, 0.0], 1e-6);
    }
    // temperatures out of range: refused on every path
    for t in [1e-45f32, 1e-31, 1e31, 0.0, -1.0, f32::INFINITY] {
        for be in &backends {
            let e = be.softmax(&hx, None, &SoftmaxOptions { temperature: t, ..Default::default() }).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument { argument: "temperature", .. }), "{t}: {e}");
        }
    }
}

#[test]
fn softmax_extremes_cpu() {
    softmax_extremes(None);
}

gpu_test! {
    fn softmax_extremes_gpu() {
        softmax_extremes(Some(&shared_gpu()));
    }
}

#[test]
fn similarity_beyond_f32_saturates_and_cosine_of_huge_vectors_is_exact() {
    // on both paths: scores beyond f32 are ±MAX, cosine is scale-free
    let s = Shape::new(1, 1, 2, 4);
    let q = [1e20f32, 1e20, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0];
    let k = [1e20f32, 1e20, 0.0, 0.0, -1e20, 0.0, 0.0, 0.0];
    let (hq, hk) = (HostTensor::new(&q, s).unwrap(), HostTensor::new(&k, s).unwrap());
    let dot = cpu::similarity(&hq, &hk, Similarity::Dot).unwrap();
    assert_eq!(dot[0], f32::MAX);
    assert_eq!(dot[1], -f32::MAX);
    let cos = cpu::similarity(&hq, &hk, Similarity::Cosine).unwrap();
    assert_agree("cosine", &cos, &[1.0, -std::f32::consts::FRAC_1_SQRT_2, std::f32::consts::FRAC_1_SQRT_2, -1.0], 1e-6);
}

gpu_test! {
    fn similarity_extremes_gpu_equals_cpu() {
        let ctx = shared_gpu();
        let s = Shape::new(1, 1, 2, 4);
        let q = [1e20f32, 1e20, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0];
        let k = [1e20f32, 1e20, 0.0, 0.0, -1e20, 0.0, 0.0, 0.0];
        let (hq, hk) = (HostTensor::new(&q, s).unwrap(), HostTensor::new(&k, s).unwrap());
        for metric in [Similarity::Dot, Similarity::Cosine, Similarity::L2, Similarity::ScaledDot(Some(1e-30))] {
            let want = cpu::similarity(&hq, &hk, metric).unwrap();
            let got = Backend::Gpu(ctx.clone()).similarity(&hq, &hk, metric).unwrap();
            assert_agree(&format!("{metric:?}"), &got, &want, 1e-6);
        }
    }
}

gpu_test! {
    fn unscanned_huge_values_give_finite_results() {
        // values the crate never scanned (a caller's buffer): scores beyond f32 saturate, no NaN
        let ctx = shared_gpu();
        let s = Shape::new(1, 1, 3, 8);
        let mut x = rand_vec(7, s.numel(), 1.0);
        for (i, v) in x.iter_mut().enumerate() {
            *v *= if i % 3 == 0 { 3e37 } else { 1e19 };
        }
        let buf = ctx.device().create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: bytemuck::cast_slice(&x),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        });
        let t = Tensor::from_buffer(&ctx, buf, 0, s, Layout::Bhsd, DType::F32).unwrap();
        // (f32 inputs: every variant but the tensor-core one, which refuses them)
        for variant in [AttentionVariant::Auto].into_iter().chain(AttentionVariant::ALL) {
            if variant == AttentionVariant::TensorCores || !runs_forced(variant, s.dim) {
                continue;
            }
            let o = ctx.attention(&t, &t, &t, None, &AttentionOptions { variant, ..Default::default() }).unwrap();
            let got = o.download_blocking(&ctx).unwrap();
            assert!(got.iter().all(|v| v.is_finite()), "{variant}: {got:?}");
        }
        for metric in [Similarity::Dot, Similarity::Cosine, Similarity::L2] {
            let got = ctx.similarity(&t, &t, metric).unwrap().download_blocking(&ctx).unwrap();
            assert!(got.iter().all(|v| v.is_finite()), "{metric:?}: {got:?}");
        }
        // cosine is scale-free: of rows near 3e38 (their inverse lengths are subnormal, which
        // some GPUs flush to 0) it still equals the CPU's
        let got = ctx.similarity(&t, &t, Similarity::Cosine).unwrap().download_blocking(&ctx).unwrap();
        let hx = HostTensor::new(&x, s).unwrap();
        let want = cpu::similarity(&hx, &hx, Similarity::Cosine).unwrap();
        assert_agree("cosine of unscanned huge rows", &got, &want, 1e-5);
        let w = ctx.softmax(&t, None, &SoftmaxOptions::default()).unwrap();
        assert!(w.download_blocking(&ctx).unwrap().iter().all(|v| v.is_finite()));
        let ws = ctx.weighted_sum(&Tensor::from_buffer(&ctx, t.buffer().clone(), 0, Shape::new(1, 1, 3, 3), Layout::Bhsd, DType::F32).unwrap(), &t).unwrap();
        assert!(ws.download_blocking(&ctx).unwrap().iter().all(|v| v.is_finite()));
    }
}

#[test]
fn element_counts_that_overflow_are_errors() {
    // before: a panic in debug builds, a wrapped count accepted in release
    let huge = Shape::new(1 << 20, 1 << 20, 1 << 20, 1 << 20);
    assert_eq!(huge.numel(), usize::MAX, "saturates instead of wrapping");
    assert!(matches!(huge.checked_numel("x"), Err(Error::TooLarge { argument: "x", .. })));
    assert!(matches!(HostTensor::new(&[0.0f32; 4], huge), Err(Error::TooLarge { argument: "data", .. })));
    assert!(matches!(
        HostMask::bool(&[true], [1 << 20, 1 << 20, 1 << 20, 1 << 20]),
        Err(Error::TooLarge { argument: "mask", .. })
    ));
    // strides of such a shape saturate rather than wrap
    let st = Layout::Bshd.strides(&Shape::new(1, 1 << 32, 1 << 32, 1 << 32));
    assert_eq!(st.batch, usize::MAX);
}

gpu_test! {
    fn offsets_and_sizes_that_overflow_are_errors() {
        let ctx = shared_gpu();
        let t = ctx.upload(&[1.0f32; 16], Shape::new(1, 1, 4, 4)).unwrap();
        let s = Shape::new(1, 1, 4, 4);
        // 2^62 elements of 4 bytes wrapped to byte offset 0 and was accepted
        for offset in [1u64 << 62, u64::MAX / 4 + 1, u64::MAX] {
            let e = Tensor::from_buffer(&ctx, t.buffer().clone(), offset, s, Layout::Bhsd, DType::F32).unwrap_err();
            assert!(matches!(e, Error::TooLarge { argument: "buffer", .. }), "{offset}: {e}");
        }
        let huge = Shape::new(1 << 20, 1 << 20, 1 << 20, 1 << 20);
        assert!(matches!(Tensor::from_buffer(&ctx, t.buffer().clone(), 0, huge, Layout::Bhsd, DType::F32), Err(Error::TooLarge { .. })));
        assert!(matches!(ctx.zeros(huge, Layout::Bhsd, DType::F32), Err(Error::TooLarge { .. })));
        assert!(matches!(ctx.upload(&[0.0f32; 4], huge), Err(Error::TooLarge { .. })));
        // elements that fit usize but whose bytes do not fit the device
        let big = Shape::new(1 << 16, 1 << 16, 1 << 16, 1);
        assert!(matches!(ctx.zeros(big, Layout::Bhsd, DType::F32), Err(Error::TooLarge { .. })));
        assert!(matches!(Mask::from_buffer(&ctx, t.buffer().clone(), [1 << 20, 1 << 20, 1 << 20, 1 << 20], MaskKind::Bool), Err(Error::TooLarge { .. })));
    }
}

gpu_test! {
    fn tensors_of_another_context_are_refused() {
        // before: a panic inside wgpu-core (ids looked up in the other instance's registry)
        let ctx = shared_gpu();
        let other = gpu();
        let s = Shape::new(1, 2, 4, 8);
        let x = rand_vec(1, s.numel(), 1.0);
        let mine = ctx.upload(&x, s).unwrap();
        let theirs = other.upload(&x, s).unwrap();
        let o = AttentionOptions::default();
        let e = ctx.attention(&theirs, &mine, &mine, None, &o).unwrap_err();
        assert_eq!(e, Error::ForeignTensor { argument: "q" });
        let e = ctx.attention(&mine, &mine, &theirs, None, &o).unwrap_err();
        assert_eq!(e, Error::ForeignTensor { argument: "v" });
        assert_eq!(ctx.softmax(&theirs, None, &SoftmaxOptions::default()).unwrap_err(), Error::ForeignTensor { argument: "x" });
        assert_eq!(ctx.similarity(&mine, &theirs, Similarity::Dot).unwrap_err(), Error::ForeignTensor { argument: "k" });
        let w = ctx.zeros(Shape::new(1, 2, 4, 4), Layout::Bhsd, DType::F32).unwrap();
        assert_eq!(ctx.weighted_sum(&w, &theirs).unwrap_err(), Error::ForeignTensor { argument: "v" });
        assert_eq!(theirs.download_blocking(&ctx).unwrap_err(), Error::ForeignTensor { argument: "tensor" });
        let kq = Shape::new(1, 1, 4, 8);
        let (kmine, ktheirs) = (ctx.upload(&x[..32], kq).unwrap(), other.upload(&x[..32], kq).unwrap());
        assert_eq!(ctx.top_k(&kmine, &ktheirs, 2, Metric::Dot).unwrap_err(), Error::ForeignTensor { argument: "keys" });
        // an output of the other context, and a mask of it
        let out = other.zeros(s, Layout::Bhsd, DType::F32).unwrap();
        let mut enc = ctx.device().create_command_encoder(&Default::default());
        assert_eq!(ctx.encode_attention(&mut enc, &AttentionCall { q: &mine, k: &mine, v: &mine, mask: None, out: &out, lse: None }, &o).unwrap_err(), Error::ForeignTensor { argument: "out" });
        let m = other.upload_mask(&HostMask::bool(&[true; 16], [1, 1, 4, 4]).unwrap()).unwrap();
        assert_eq!(ctx.attention(&mine, &mine, &mine, Some(&m), &o).unwrap_err(), Error::ForeignTensor { argument: "mask" });
        // a caller's buffer wrapped on the other context
        let wrapped = Tensor::from_buffer(&other, mine.buffer().clone(), 0, s, Layout::Bhsd, DType::F32).unwrap();
        assert_eq!(ctx.attention(&wrapped, &mine, &mine, None, &o).unwrap_err(), Error::ForeignTensor { argument: "q" });
        // nothing was recorded, and both contexts still work; clones share their context
        enc.finish();
        let clone = ctx.clone();
        assert!(clone.attention(&mine, &mine, &mine, None, &o).unwrap().download_blocking(&ctx).unwrap().iter().all(|v| v.is_finite()));
        assert!(other.attention(&theirs, &theirs, &theirs, None, &o).is_ok());
    }
}

gpu_test! {
    fn outputs_that_alias_inputs_are_refused_before_recording() {
        // before: Ok, then the caller's encoder.finish() panicked
        let ctx = shared_gpu();
        let s = Shape::new(1, 2, 8, 16);
        let n = s.numel() as u64;
        // one buffer holding q, k, v and room for outputs
        let buf = ctx.zeros(Shape::new(1, 1, 1, 6 * n as usize), Layout::Bhsd, DType::F32).unwrap();
        let at = |i: u64, shape| Tensor::from_buffer(&ctx, buf.buffer().clone(), i * n, shape, Layout::Bhsd, DType::F32).unwrap();
        let (q, k, v) = (at(0, s), at(1, s), at(2, s));
        let other = ctx.upload(&rand_vec(3, s.numel(), 1.0), s).unwrap();
        let o = AttentionOptions::default();
        let mut enc = ctx.device().create_command_encoder(&Default::default());
        // the same tensor as input and output
        let e = ctx.encode_attention(&mut enc, &AttentionCall { q: &other, k: &other, v: &other, mask: None, out: &other, lse: None }, &o).unwrap_err();
        assert_eq!(e, Error::Aliasing { argument: "out", other: "q" });
        // disjoint ranges of one buffer: wgpu cannot bind it read-only and read-write at once
        let e = ctx.encode_attention(&mut enc, &AttentionCall { q: &q, k: &k, v: &v, mask: None, out: &at(3, s), lse: None }, &o).unwrap_err();
        assert_eq!(e, Error::Aliasing { argument: "out", other: "q" });
        // two outputs overlapping each other
        let outs = ctx.zeros(Shape::new(1, 1, 1, 2 * n as usize), Layout::Bhsd, DType::F32).unwrap();
        let out = Tensor::from_buffer(&ctx, outs.buffer().clone(), 0, s, Layout::Bhsd, DType::F32).unwrap();
        let lse = Tensor::from_buffer(&ctx, outs.buffer().clone(), 3, Shape::new(1, 2, 8, 1), Layout::Bhsd, DType::F32).unwrap();
        let e = ctx.encode_attention(&mut enc, &AttentionCall { q: &other, k: &other, v: &other, mask: None, out: &out, lse: Some(&lse) }, &o).unwrap_err();
        assert_eq!(e, Error::Aliasing { argument: "lse", other: "out" });
        // ... while disjoint outputs in one buffer are fine
        let lse_ok = Tensor::from_buffer(&ctx, outs.buffer().clone(), n, Shape::new(1, 2, 8, 1), Layout::Bhsd, DType::F32).unwrap();
        ctx.encode_attention(&mut enc, &AttentionCall { q: &other, k: &other, v: &other, mask: None, out: &out, lse: Some(&lse_ok) }, &o).unwrap();
        // the other operations
        let e = ctx.encode_softmax(&mut enc, &other, None, &SoftmaxOptions::default(), &other).unwrap_err();
        assert_eq!(e, Error::Aliasing { argument: "out", other: "x" });
        let scores = at(4, Shape::new(1, 2, 8, 8));
        let e = ctx.encode_similarity(&mut enc, &q, &k, Similarity::Dot, &scores).unwrap_err();
        assert_eq!(e, Error::Aliasing { argument: "out", other: "q" });
        let w = ctx.zeros(Shape::new(1, 2, 8, 8), Layout::Bhsd, DType::F32).unwrap();
        let e = ctx.encode_weighted_sum(&mut enc, &w, &other, &other).unwrap_err();
        assert_eq!(e, Error::Aliasing { argument: "out", other: "v" });
        let e = ctx.encode_attention_unfused(&mut enc, &AttentionCall { q: &other, k: &other, v: &other, mask: None, out: &out, lse: None }, &Tensor::from_buffer(&ctx, outs.buffer().clone(), 0, Shape::new(1, 2, 8, 8), Layout::Bhsd, DType::F32).unwrap(), &o).unwrap_err();
        assert!(matches!(e, Error::Aliasing { argument: "out", other: "weights" }), "{e}");
        // a caller's mask in the output's buffer
        let mask_buf = ctx.device().create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: bytemuck::cast_slice(&[1u32; 64 + 256]),
            usage: wgpu::BufferUsages::STORAGE,
        });
        let mask = Mask::from_buffer(&ctx, mask_buf.clone(), [1, 1, 8, 8], MaskKind::Bool).unwrap();
        let out_there = Tensor::from_buffer(&ctx, mask_buf, 64, s, Layout::Bhsd, DType::F32).unwrap();
        let e = ctx.encode_attention(&mut enc, &AttentionCall { q: &other, k: &other, v: &other, mask: Some(&mask), out: &out_there, lse: None }, &o).unwrap_err();
        assert_eq!(e, Error::Aliasing { argument: "out", other: "mask" });
        // the encoder holds only the one valid call, and finishes and runs
        ctx.queue().submit([enc.finish()]);
        ctx.wait().unwrap();
        assert!(out.download_blocking(&ctx).unwrap().iter().all(|v| v.is_finite()));
    }
}
