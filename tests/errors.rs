//! Invalid inputs give `Err` naming the argument, before any dispatch, on both paths.

mod common;
use common::*;
use wgpu_attention::*;

fn t(n: usize) -> Vec<f32> {
    rand_vec(n as u64, n, 1.0)
}

/// Runs the same attention call on the CPU path and (if present) the GPU; both must fail alike.
fn both(
    ctx: Option<&Context>,
    qs: Shape,
    ks: Shape,
    vs: Shape,
    mask: Option<HostMask>,
    opts: AttentionOptions,
    check: impl Fn(&Error),
) {
    let (q, k, v) = (t(qs.numel()), t(ks.numel()), t(vs.numel()));
    let (hq, hk, hv) =
        (HostTensor::new(&q, qs).unwrap(), HostTensor::new(&k, ks).unwrap(), HostTensor::new(&v, vs).unwrap());
    let mut backends = vec![Backend::Cpu];
    if let Some(c) = ctx {
        backends.push(Backend::Gpu(c.clone()));
    }
    for be in backends {
        let e = be.attention(&hq, &hk, &hv, mask.as_ref(), &opts).expect_err("fused must fail");
        check(&e);
        let e = be.attention_unfused(&hq, &hk, &hv, mask.as_ref(), &opts).expect_err("unfused must fail");
        check(&e);
        assert!(!e.to_string().is_empty());
    }
}

#[test]
fn shape_errors_name_the_argument() {
    let ctx = shared_gpu();
    let c = ctx.as_ref();
    let s = Shape::new(2, 4, 8, 16);
    let o = AttentionOptions::default();
    both(c, s, Shape::new(3, 4, 8, 16), Shape::new(3, 4, 8, 16), None, o, |e| {
        assert!(matches!(e, Error::ShapeMismatch { argument: "k", dim: "batch", got: 3, expected: 2, .. }), "{e}")
    });
    both(c, s, Shape::new(2, 4, 8, 8), Shape::new(2, 4, 8, 8), None, o, |e| {
        assert!(matches!(e, Error::ShapeMismatch { argument: "k", dim: "dim", .. }), "{e}")
    });
    both(c, s, Shape::new(2, 3, 8, 16), Shape::new(2, 3, 8, 16), None, o, |e| {
        assert!(matches!(e, Error::HeadsNotDivisible { q_heads: 4, kv_heads: 3, .. }), "{e}")
    });
    both(c, s, s, Shape::new(2, 4, 9, 16), None, o, |e| {
        assert!(matches!(e, Error::ShapeMismatch { argument: "v", dim: "seq", got: 9, expected: 8, .. }), "{e}")
    });
    both(c, s, s, Shape::new(2, 2, 8, 16), None, o, |e| {
        assert!(matches!(e, Error::ShapeMismatch { argument: "v", dim: "heads", .. }), "{e}")
    });
    both(c, Shape::new(2, 4, 0, 16), s, s, None, o, |e| {
        assert!(matches!(e, Error::EmptyDimension { argument: "q", dim: "seq" }), "{e}")
    });
    let big = Shape::new(1, 1, 2, 257);
    both(c, big, big, big, None, o, |e| {
        assert!(matches!(e, Error::UnsupportedHeadDim { got: 257, max: 256, .. }), "{e}")
    });
}

#[test]
fn mask_key_length_and_scalar_errors() {
    let ctx = shared_gpu();
    let c = ctx.as_ref();
    let s = Shape::new(2, 4, 8, 16);
    let o = AttentionOptions::default();
    let m = vec![true; 3 * 8 * 8];
    both(c, s, s, s, Some(HostMask::bool(&m, [3, 1, 8, 8]).unwrap()), o, |e| {
        assert!(matches!(e, Error::MaskShape { got: [3, 1, 8, 8], .. }), "{e}")
    });
    let m2 = vec![true; 8 * 7];
    both(c, s, s, s, Some(HostMask::bool(&m2, [1, 1, 8, 7]).unwrap()), o, |e| {
        assert!(matches!(e, Error::MaskShape { .. }), "{e}")
    });
    let kl = [8u32, 9];
    both(c, s, s, s, None, AttentionOptions { key_lengths: Some(&kl), ..o }, |e| {
        assert!(matches!(e, Error::KeyLengths(m) if m.contains("entry 1 is 9")), "{e}")
    });
    let kl1 = [8u32];
    both(c, s, s, s, None, AttentionOptions { key_lengths: Some(&kl1), ..o }, |e| {
        assert!(matches!(e, Error::KeyLengths(_)), "{e}")
    });
    both(c, s, s, s, None, AttentionOptions { scale: Some(f32::NAN), ..o }, |e| {
        assert!(matches!(e, Error::InvalidArgument { argument: "scale", .. }), "{e}")
    });
    // host constructors
    assert!(matches!(HostMask::bool(&m, [1, 1, 8, 8]), Err(Error::LengthMismatch { argument: "mask", .. })));
    let nanmask = vec![f32::NAN; 64];
    assert!(matches!(
        HostMask::additive(&nanmask, [1, 1, 8, 8]),
        Err(Error::NonFinite { argument: "mask", index: 0, .. })
    ));
    assert!(matches!(HostTensor::new(&[1.0f32; 3], s), Err(Error::LengthMismatch { argument: "data", .. })));
}

#[test]
fn non_finite_inputs_are_refused() {
    let ctx = shared_gpu();
    let s = Shape::new(1, 1, 4, 4);
    let mut q = t(16);
    q[5] = f32::NAN;
    let k = t(16);
    let (hq, hk) = (HostTensor::new(&q, s).unwrap(), HostTensor::new(&k, s).unwrap());
    let mut backends = vec![Backend::Cpu];
    if let Some(c) = ctx.clone() {
        backends.push(Backend::Gpu(c));
    }
    for be in &backends {
        let e = be.attention(&hq, &hk, &hk, None, &AttentionOptions::default()).unwrap_err();
        assert!(matches!(e, Error::NonFinite { index: 5, .. }), "{e}");
        let e = be.similarity(&hq, &hk, Similarity::Dot).unwrap_err();
        assert!(matches!(e, Error::NonFinite { .. }), "{e}");
        let e = be.softmax(&hq, None, &SoftmaxOptions::default()).unwrap_err();
        assert!(matches!(e, Error::NonFinite { .. }), "{e}");
        let e = be.softmax(&hk, None, &SoftmaxOptions { temperature: 0.0, ..Default::default() }).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { argument: "temperature", .. }), "{e}");
    }
    if let Some(ctx) = ctx {
        let mut inf = t(16);
        inf[0] = f32::INFINITY;
        assert!(matches!(ctx.upload(&inf, s), Err(Error::NonFinite { argument: "data", index: 0, .. })));
    }
}

#[test]
fn gpu_argument_errors() {
    let Some(ctx) = shared_gpu() else { return };
    let s = Shape::new(1, 2, 8, 16);
    let q = ctx.upload(&t(s.numel()), s).unwrap();
    let o = AttentionOptions::default();
    // wrong output shape and dtype
    let bad = ctx.zeros(Shape::new(1, 2, 8, 8), Layout::Bhsd, DType::F32).unwrap();
    let mut enc = ctx.device().create_command_encoder(&Default::default());
    let e = ctx.encode_attention(&mut enc, &q, &q, &q, None, &o, &bad, None).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { argument: "out", dim: "dim", .. }), "{e}");
    if ctx.supports_f16() {
        let half_out = ctx.zeros(s, Layout::Bhsd, DType::F16).unwrap();
        let e = ctx.encode_attention(&mut enc, &q, &q, &q, None, &o, &half_out, None).unwrap_err();
        assert!(matches!(e, Error::DTypeMismatch { argument: "out", .. }), "{e}");
    }
    let lse_bad = ctx.zeros(Shape::new(1, 2, 8, 2), Layout::Bhsd, DType::F32).unwrap();
    let out = ctx.zeros(s, Layout::Bhsd, DType::F32).unwrap();
    let e = ctx.encode_attention(&mut enc, &q, &q, &q, None, &o, &out, Some(&lse_bad)).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { argument: "lse", .. }), "{e}");
    // mixed dtypes
    if f16_supported(&ctx) {
        let k16 = ctx.upload(&vec![half::f16::ONE; s.numel()], s).unwrap();
        let e = ctx.attention(&q, &k16, &k16, None, &o).unwrap_err();
        assert!(matches!(e, Error::DTypeMismatch { argument: "k", .. }), "{e}");
    }
    // caller buffer too small / without STORAGE
    let small = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 64,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    let e = Tensor::from_buffer(small.clone(), 0, s, Layout::Bhsd, DType::F32).unwrap_err();
    assert!(matches!(e, Error::BufferTooSmall { needed: 1024, got: 64, .. }), "{e}");
    let e = Tensor::from_buffer(small, 8, Shape::new(1, 1, 1, 16), Layout::Bhsd, DType::F32).unwrap_err();
    assert!(matches!(e, Error::BufferTooSmall { needed: 64, got: 32, .. }), "{e}");
    let uniform = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 4096,
        usage: wgpu::BufferUsages::UNIFORM,
        mapped_at_creation: false,
    });
    let e = Tensor::from_buffer(uniform, 0, s, Layout::Bhsd, DType::F32).unwrap_err();
    assert!(matches!(e, Error::BufferUsage { needed: "STORAGE", .. }), "{e}");
}

#[test]
fn wgpu_validation_errors_become_err() {
    // Output aliasing an input: read-only and read-write use of one buffer in one dispatch is a
    // wgpu validation error, which must come back as Err(Gpu), not a panic.
    let Some(ctx) = shared_gpu() else { return };
    let s = Shape::new(1, 1, 8, 16);
    let q = ctx.upload(&t(s.numel()), s).unwrap();
    let e = ctx
        .record_and_submit(|enc| ctx.encode_attention(enc, &q, &q, &q, None, &AttentionOptions::default(), &q, None));
    assert!(matches!(e, Err(Error::Gpu(_))), "{e:?}");
    // the context stays usable afterwards
    let out = ctx.attention(&q, &q, &q, None, &AttentionOptions::default()).unwrap();
    assert!(out.download_blocking(&ctx).unwrap().iter().all(|x| x.is_finite()));
}

#[test]
fn f16_without_the_feature_is_an_error() {
    let Some(_) = shared_gpu() else { return };
    let ctx = Context::with_options_blocking(ContextOptions {
        disable_features: wgpu::Features::SHADER_F16,
        ..Default::default()
    })
    .unwrap();
    assert!(!ctx.supports_f16());
    let x = vec![half::f16::ONE; 16];
    let e = ctx.upload(&x, Shape::new(1, 1, 4, 4)).unwrap_err();
    assert!(matches!(e, Error::F16Unsupported { argument: "data" }), "{e}");
    let e = ctx.zeros(Shape::new(1, 1, 4, 4), Layout::Bhsd, DType::F16).unwrap_err();
    assert!(matches!(e, Error::F16Unsupported { .. }), "{e}");
}

#[test]
fn no_adapter_by_name_is_an_error() {
    let e = Context::with_options_blocking(ContextOptions {
        adapter_name: Some("no such adapter 1234".into()),
        ..Default::default()
    })
    .unwrap_err();
    assert!(matches!(e, Error::NoAdapter(ref m) if m.contains("no such adapter 1234")), "{e}");
}
