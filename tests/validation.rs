//! One validation layer: each invalid call gets the same `Err` (same variant, same argument,
//! same numbers) from the CPU path, `Backend::Cpu`, `Backend::Gpu` and the GPU operations on
//! uploaded tensors (for bad values, the GPU refuses them at upload, naming the same element).
//! Device-only errors (outputs, buffers, f16 support) are checked on the GPU.

mod common;
use common::*;
use wgpu_attention::*;

fn t(n: usize) -> Vec<f32> {
    rand_vec(n as u64, n, 1.0)
}

/// An attention call on host data.
#[derive(Clone)]
struct Call {
    qs: Shape,
    ks: Shape,
    vs: Shape,
    /// (tensor 0 q / 1 k / 2 v, index, value) planted in the data
    bad_value: Option<(usize, usize, f32)>,
    mask: Option<(MaskKind, [usize; 4])>,
    scale: Option<f32>,
    causal: bool,
    key_lengths: Option<Vec<u32>>,
    softcap: Option<f32>,
    alibi: Option<Vec<f32>>,
    sinks: Option<Vec<f32>>,
}

impl Call {
    fn new(qs: Shape, ks: Shape, vs: Shape) -> Self {
        Call {
            qs,
            ks,
            vs,
            bad_value: None,
            mask: None,
            scale: None,
            causal: false,
            key_lengths: None,
            softcap: None,
            alibi: None,
            sinks: None,
        }
    }
    fn data(&self) -> [Vec<f32>; 3] {
        let mut d = [t(self.qs.numel()), t(self.ks.numel()), t(self.vs.numel())];
        if let Some((which, i, x)) = self.bad_value {
            d[which][i] = x;
        }
        d
    }
    fn opts(&self) -> AttentionOptions<'_> {
        AttentionOptions {
            scale: self.scale,
            causal: self.causal,
            key_lengths: self.key_lengths.as_deref(),
            softcap: self.softcap,
            alibi_slopes: self.alibi.as_deref(),
            sinks: self.sinks.as_deref(),
            ..Default::default()
        }
    }
}

/// The errors of every path for one invalid attention call (all must fail).
fn attention_errors(call: &Call, ctx: Option<&Context>) -> Vec<(String, Error)> {
    let [q, k, v] = call.data();
    let (hq, hk, hv) = (
        HostTensor::new(&q, call.qs).unwrap(),
        HostTensor::new(&k, call.ks).unwrap(),
        HostTensor::new(&v, call.vs).unwrap(),
    );
    let mvals_b: Vec<bool>;
    let mvals_a: Vec<f32>;
    let mask = match call.mask {
        Some((MaskKind::Bool, s)) => {
            mvals_b = vec![true; s.iter().product()];
            Some(HostMask::bool(&mvals_b, s).unwrap())
        }
        Some((MaskKind::Additive, s)) => {
            mvals_a = vec![0.5; s.iter().product()];
            Some(HostMask::additive(&mvals_a, s).unwrap())
        }
        None => None,
    };
    let opts = call.opts();
    let m = mask.as_ref();
    let mut errs = vec![];
    let mut push =
        |what: &str, r: Result<()>| errs.push((what.to_string(), r.expect_err(&format!("{what} must fail"))));
    push("cpu::attention", cpu::attention(&hq, &hk, &hv, m, &opts).map(|_| ()));
    push("cpu::attention_unfused", cpu::attention_unfused(&hq, &hk, &hv, m, &opts).map(|_| ()));
    let mut backends = vec![Backend::Cpu];
    backends.extend(ctx.map(|c| Backend::Gpu(c.clone())));
    for be in &backends {
        let name = if matches!(be, Backend::Cpu) { "Backend::Cpu" } else { "Backend::Gpu" };
        push(&format!("{name}.attention"), be.attention(&hq, &hk, &hv, m, &opts).map(|_| ()));
        push(&format!("{name}.attention_with_lse"), be.attention_with_lse(&hq, &hk, &hv, m, &opts).map(|_| ()));
        push(&format!("{name}.attention_unfused"), be.attention_unfused(&hq, &hk, &hv, m, &opts).map(|_| ()));
    }
    let Some(ctx) = ctx else { return errs };
    // the GPU operations on uploaded tensors
    let uploads: Result<Vec<Tensor>> =
        [(&q, call.qs), (&k, call.ks), (&v, call.vs)].into_iter().map(|(x, s)| ctx.upload(x, s)).collect();
    let (gq, gk, gv) = match uploads {
        Ok(u) => (u[0].clone(), u[1].clone(), u[2].clone()),
        Err(e) => {
            // bad values: refused at upload, naming the same element
            errs.push(("Context::upload".into(), e));
            return errs;
        }
    };
    let gm = m.map(|m| ctx.upload_mask(m).unwrap());
    let gm = gm.as_ref();
    push("Context::attention", ctx.attention(&gq, &gk, &gv, gm, &opts).map(|_| ()));
    push("Context::attention_with_lse", ctx.attention_with_lse(&gq, &gk, &gv, gm, &opts).map(|_| ()));
    push("Context::attention_unfused", ctx.attention_unfused(&gq, &gk, &gv, gm, &opts).map(|_| ()));
    push("Context::plan_attention", ctx.plan_attention(&gq, &gk, &gv, gm, &opts, true).map(|_| ()));
    let out = ctx.zeros(call.qs, Layout::Bhsd, DType::F32).unwrap();
    let mut enc = ctx.device().create_command_encoder(&Default::default());
    push(
        "Context::encode_attention",
        ctx.encode_attention(
            &mut enc,
            &AttentionCall { q: &gq, k: &gk, v: &gv, mask: gm, out: &out, lse: None },
            &opts,
        ),
    );
    errs
}

/// Runs `call` on every path and checks they all give one error, which `check` accepts.
fn same_error_everywhere(ctx: Option<&Context>, call: Call, check: impl Fn(&Error) -> bool) {
    let errs = attention_errors(&call, ctx);
    let planted = call.bad_value;
    let (first_what, first) = &errs[0];
    assert!(check(first), "{first_what}: unexpected error {first}");
    assert!(!first.to_string().is_empty());
    for (what, e) in &errs[1..] {
        if what == "Context::upload" {
            // data the GPU refuses at upload, before the call is made: the planted value (even
            // where the call has other faults too), or the same empty dimension
            let same = match (e, first) {
                (Error::NonFinite { argument: "data", index: i, value: v }, _) => {
                    planted.is_some_and(|(_, j, w)| (*i, v.to_bits()) == (j, w.to_bits()))
                }
                (Error::EmptyDimension { argument: "data", dim: d }, Error::EmptyDimension { dim: e, .. }) => d == e,
                _ => false,
            };
            assert!(same, "{what}: {e} vs {first_what}: {first}");
        } else {
            assert_eq!(e, first, "{what} vs {first_what}");
        }
    }
}

/// Every invalid attention call of the suite, with the error it must give.
/// An expected error, as a predicate.
type Check = Box<dyn Fn(&Error) -> bool>;

fn invalid_attention_calls() -> Vec<(Call, Check)> {
    let s = Shape::new(2, 4, 8, 16);
    let c = |qs, ks, vs| Call::new(qs, ks, vs);
    let base = c(s, s, s);
    vec![
        (
            c(s, Shape::new(3, 4, 8, 16), Shape::new(3, 4, 8, 16)),
            Box::new(|e| matches!(e, Error::ShapeMismatch { argument: "k", dim: "batch", got: 3, expected: 2, .. })),
        ),
        (
            c(s, Shape::new(2, 4, 8, 8), Shape::new(2, 4, 8, 8)),
            Box::new(|e| matches!(e, Error::ShapeMismatch { argument: "k", dim: "dim", .. })),
        ),
        (
            c(s, Shape::new(2, 3, 8, 16), Shape::new(2, 3, 8, 16)),
            Box::new(|e| matches!(e, Error::HeadsNotDivisible { q_heads: 4, kv_heads: 3, .. })),
        ),
        (
            c(s, s, Shape::new(2, 4, 9, 16)),
            Box::new(|e| matches!(e, Error::ShapeMismatch { argument: "v", dim: "seq", got: 9, expected: 8, .. })),
        ),
        (
            c(s, s, Shape::new(2, 2, 8, 16)),
            Box::new(|e| matches!(e, Error::ShapeMismatch { argument: "v", dim: "heads", .. })),
        ),
        (
            c(s, s, Shape::new(2, 4, 8, 12)),
            Box::new(|e| matches!(e, Error::ShapeMismatch { argument: "v", other: "q", dim: "dim", .. })),
        ),
        (
            c(Shape::new(2, 4, 0, 16), s, s),
            Box::new(|e| matches!(e, Error::EmptyDimension { argument: "q", dim: "seq" })),
        ),
        (
            c(s, s, Shape::new(2, 4, 8, 0)),
            Box::new(|e| matches!(e, Error::EmptyDimension { argument: "v", dim: "dim" })),
        ),
        (
            {
                let b = Shape::new(1, 1, 2, 257);
                c(b, b, b)
            },
            Box::new(|e| matches!(e, Error::UnsupportedHeadDim { got: 257, max: 256, .. })),
        ),
        (
            Call { mask: Some((MaskKind::Bool, [3, 1, 8, 8])), ..base.clone() },
            Box::new(|e| matches!(e, Error::MaskShape { got: [3, 1, 8, 8], .. })),
        ),
        (
            Call { mask: Some((MaskKind::Additive, [1, 1, 8, 7])), ..base.clone() },
            Box::new(|e| matches!(e, Error::MaskShape { .. })),
        ),
        (
            Call { mask: Some((MaskKind::Bool, [1, 2, 8, 8])), ..base.clone() },
            Box::new(|e| matches!(e, Error::MaskShape { .. })),
        ),
        (
            Call { key_lengths: Some(vec![8, 9]), ..base.clone() },
            Box::new(|e| matches!(e, Error::KeyLengths(m) if m.contains("entry 1 is 9"))),
        ),
        (
            Call { key_lengths: Some(vec![8]), ..base.clone() },
            Box::new(|e| matches!(e, Error::KeyLengths(m) if m.contains("1 entries"))),
        ),
        (
            Call { scale: Some(f32::NAN), ..base.clone() },
            Box::new(|e| matches!(e, Error::InvalidArgument { argument: "scale", .. })),
        ),
        (
            Call { scale: Some(f32::INFINITY), ..base.clone() },
            Box::new(|e| matches!(e, Error::InvalidArgument { argument: "scale", .. })),
        ),
        (
            Call { scale: Some(1e38), ..base.clone() },
            Box::new(|e| matches!(e, Error::InvalidArgument { argument: "scale", .. })),
        ),
        (
            Call { scale: Some(1e-45), ..base.clone() },
            Box::new(|e| matches!(e, Error::InvalidArgument { argument: "scale", .. })),
        ),
        (
            Call { bad_value: Some((0, 5, f32::NAN)), ..base.clone() },
            Box::new(|e| matches!(e, Error::NonFinite { argument: "q", index: 5, .. })),
        ),
        (
            Call { bad_value: Some((2, 100, f32::NEG_INFINITY)), ..base.clone() },
            Box::new(|e| matches!(e, Error::NonFinite { argument: "v", index: 100, .. })),
        ),
        (
            Call { softcap: Some(0.0), ..base.clone() },
            Box::new(|e| matches!(e, Error::InvalidArgument { argument: "softcap", .. })),
        ),
        (
            Call { softcap: Some(f32::NAN), ..base.clone() },
            Box::new(|e| matches!(e, Error::InvalidArgument { argument: "softcap", .. })),
        ),
        (
            Call { alibi: Some(vec![0.5; 3]), ..base.clone() },
            Box::new(|e| matches!(e, Error::LengthMismatch { argument: "alibi_slopes", expected: 4, got: 3 })),
        ),
        (
            Call { alibi: Some(vec![0.5, 0.5, 1e30, 0.5]), ..base.clone() },
            Box::new(|e| matches!(e, Error::InvalidArgument { argument: "alibi_slopes", .. })),
        ),
        (
            Call { sinks: Some(vec![0.0, f32::NAN, 0.0, 0.0]), ..base.clone() },
            Box::new(|e| matches!(e, Error::NonFinite { argument: "sinks", index: 1, .. })),
        ),
        (
            Call { sinks: Some(vec![0.0; 5]), ..base.clone() },
            Box::new(|e| matches!(e, Error::LengthMismatch { argument: "sinks", expected: 4, got: 5 })),
        ),
        // several faults at once: the documented order decides (shapes before values)
        (
            Call {
                bad_value: Some((0, 0, f32::NAN)),
                key_lengths: Some(vec![1]),
                ..c(s, Shape::new(2, 4, 8, 8), Shape::new(2, 4, 8, 8))
            },
            Box::new(|e| matches!(e, Error::ShapeMismatch { argument: "k", dim: "dim", .. })),
        ),
        (
            Call { bad_value: Some((1, 3, f32::NAN)), scale: Some(f32::NAN), ..base.clone() },
            Box::new(|e| matches!(e, Error::InvalidArgument { argument: "scale", .. })),
        ),
    ]
}

#[test]
fn attention_errors_cpu_paths() {
    for (call, check) in invalid_attention_calls() {
        same_error_everywhere(None, call, check);
    }
}

gpu_test! {
    fn attention_errors_every_path() {
        let ctx = shared_gpu();
        for (call, check) in invalid_attention_calls() {
            same_error_everywhere(Some(&ctx), call, check);
        }
    }
}

/// Softmax, similarity, weighted sum and top-k: each invalid call, every path, one error.
fn other_ops(ctx: Option<&Context>) {
    let mut backends = vec![Backend::Cpu];
    backends.extend(ctx.map(|c| Backend::Gpu(c.clone())));
    let s = Shape::new(2, 2, 4, 6);
    let x = t(s.numel());
    let hx = HostTensor::new(&x, s).unwrap();
    // softmax
    let kl_bad = [6u32, 7];
    let kl_short = [6u32];
    let softmax_cases: Vec<(SoftmaxOptions, Check)> = vec![
        (
            SoftmaxOptions { temperature: 0.0, ..Default::default() },
            Box::new(|e| matches!(e, Error::InvalidArgument { argument: "temperature", .. })),
        ),
        (
            SoftmaxOptions { temperature: -1.0, ..Default::default() },
            Box::new(|e| matches!(e, Error::InvalidArgument { argument: "temperature", .. })),
        ),
        (
            SoftmaxOptions { temperature: 1e-45, ..Default::default() },
            Box::new(|e| matches!(e, Error::InvalidArgument { argument: "temperature", .. })),
        ),
        (
            SoftmaxOptions { temperature: 1e31, ..Default::default() },
            Box::new(|e| matches!(e, Error::InvalidArgument { argument: "temperature", .. })),
        ),
        (
            SoftmaxOptions { temperature: f32::NAN, ..Default::default() },
            Box::new(|e| matches!(e, Error::InvalidArgument { argument: "temperature", .. })),
        ),
        (
            SoftmaxOptions { key_lengths: Some(&kl_bad), ..Default::default() },
            Box::new(|e| matches!(e, Error::KeyLengths(m) if m.contains("entry 1 is 7"))),
        ),
        (
            SoftmaxOptions { key_lengths: Some(&kl_short), ..Default::default() },
            Box::new(|e| matches!(e, Error::KeyLengths(_))),
        ),
    ];
    for (opts, check) in &softmax_cases {
        let first = cpu::softmax(&hx, None, opts).unwrap_err();
        assert!(check(&first), "{first}");
        for be in &backends {
            assert_eq!(be.softmax(&hx, None, opts).unwrap_err(), first, "{}", be.describe());
        }
        if let Some(ctx) = ctx {
            let gx = ctx.upload(&x, s).unwrap();
            assert_eq!(ctx.softmax(&gx, None, opts).unwrap_err(), first);
        }
    }
    let mvals = vec![true; 2 * 4 * 6];
    let bad_mask = HostMask::bool(&mvals, [2, 1, 4, 6]).unwrap();
    let hx1 = HostTensor::new(&x[..24], Shape::new(1, 1, 4, 6)).unwrap();
    let first = cpu::softmax(&hx1, Some(&bad_mask), &SoftmaxOptions::default()).unwrap_err();
    assert!(matches!(first, Error::MaskShape { got: [2, 1, 4, 6], batch: 1, .. }), "{first}");
    for be in &backends {
        assert_eq!(be.softmax(&hx1, Some(&bad_mask), &SoftmaxOptions::default()).unwrap_err(), first);
    }
    let mut nan = x.clone();
    nan[7] = f32::NAN;
    let hn = HostTensor::new(&nan, s).unwrap();
    let first = cpu::softmax(&hn, None, &SoftmaxOptions::default()).unwrap_err();
    assert!(matches!(first, Error::NonFinite { argument: "x", index: 7, .. }), "{first}");
    for be in &backends {
        assert_eq!(be.softmax(&hn, None, &SoftmaxOptions::default()).unwrap_err(), first);
    }
    // similarity
    let k = t(2 * 2 * 5 * 6);
    let hk_dim = HostTensor::new(&k[..2 * 2 * 5 * 3], Shape::new(2, 2, 5, 3)).unwrap();
    let hk = HostTensor::new(&k, Shape::new(2, 2, 5, 6)).unwrap();
    let sim_cases: Vec<(HostTensor, Similarity, Check)> = vec![
        (hk_dim, Similarity::Dot, Box::new(|e| matches!(e, Error::ShapeMismatch { argument: "k", dim: "dim", .. }))),
        (
            hk,
            Similarity::ScaledDot(Some(f32::NAN)),
            Box::new(|e| matches!(e, Error::InvalidArgument { argument: "scale", .. })),
        ),
        (
            HostTensor::new(&k[..3 * 5 * 6], Shape::new(1, 3, 5, 6)).unwrap(),
            Similarity::Cosine,
            Box::new(|e| matches!(e, Error::ShapeMismatch { argument: "k", dim: "batch", .. })),
        ),
    ];
    for (hk, metric, check) in &sim_cases {
        let first = cpu::similarity(&hx, hk, *metric).unwrap_err();
        assert!(check(&first), "{first}");
        for be in &backends {
            assert_eq!(be.similarity(&hx, hk, *metric).unwrap_err(), first, "{}", be.describe());
        }
        if let Some(ctx) = ctx {
            let (gq, gk) = (ctx.upload(hx.data(), hx.shape()).unwrap(), ctx.upload(hk.data(), hk.shape()).unwrap());
            assert_eq!(ctx.similarity(&gq, &gk, *metric).unwrap_err(), first);
        }
    }
    // weighted sum (CPU and GPU operations)
    let w = t(2 * 2 * 4 * 5);
    let hw = HostTensor::new(&w, Shape::new(2, 2, 4, 5)).unwrap();
    let v_bad = t(2 * 2 * 6 * 3);
    let hv_bad = HostTensor::new(&v_bad, Shape::new(2, 2, 6, 3)).unwrap();
    let first = cpu::weighted_sum(&hw, &hv_bad).unwrap_err();
    assert!(
        matches!(first, Error::ShapeMismatch { argument: "v", other: "weights", dim: "seq", got: 6, expected: 5 }),
        "{first}"
    );
    if let Some(ctx) = ctx {
        let (gw, gv) = (ctx.upload(&w, hw.shape()).unwrap(), ctx.upload(&v_bad, hv_bad.shape()).unwrap());
        assert_eq!(ctx.weighted_sum(&gw, &gv).unwrap_err(), first);
    }
    // top-k
    let keys = t(40);
    for be in &backends {
        for (q, d, k, check) in [
            (&keys[..4], 4, 0, "k"),
            (&keys[..4], 4, 11, "k"),
            (&keys[..3], 4, 1, "queries"),
            (&keys[..4], 0, 1, "queries"),
        ] {
            let e = be.top_k(q, &keys, d, k, Metric::Dot).unwrap_err();
            assert_eq!(e, cpu::top_k(q, &keys, d, k, Metric::Dot).unwrap_err(), "{}", be.describe());
            let named = match &e {
                Error::InvalidArgument { argument, .. } | Error::LengthMismatch { argument, .. } => *argument,
                other => panic!("{other}"),
            };
            assert_eq!(named, check, "{e}");
        }
    }
}

#[test]
fn other_operations_cpu_paths() {
    other_ops(None);
}

gpu_test! {
    fn other_operations_every_path() {
        other_ops(Some(&shared_gpu()));
    }
}

#[test]
fn host_constructors_check_their_data() {
    let m = vec![true; 3 * 8 * 8];
    assert!(matches!(HostMask::bool(&m, [1, 1, 8, 8]), Err(Error::LengthMismatch { argument: "mask", .. })));
    let nanmask = vec![f32::NAN; 64];
    assert!(matches!(
        HostMask::additive(&nanmask, [1, 1, 8, 8]),
        Err(Error::NonFinite { argument: "mask", index: 0, .. })
    ));
    let inf = [0.0, f32::INFINITY];
    assert!(matches!(HostMask::additive(&inf, [1, 1, 1, 2]), Err(Error::NonFinite { argument: "mask", index: 1, .. })));
    let ok = [0.0, f32::NEG_INFINITY, -3e38, 3e38];
    assert!(HostMask::additive(&ok, [1, 1, 2, 2]).is_ok(), "finite values and -inf are accepted");
    assert!(matches!(HostMask::bool(&[], [0, 1, 1, 1]), Err(Error::EmptyDimension { argument: "mask", .. })));
    assert!(matches!(
        HostTensor::new(&[1.0f32; 3], Shape::new(2, 4, 8, 16)),
        Err(Error::LengthMismatch { argument: "data", .. })
    ));
}

gpu_test! {
fn gpu_argument_errors() {
    let ctx = shared_gpu();
    let s = Shape::new(1, 2, 8, 16);
    let q = ctx.upload(&t(s.numel()), s).unwrap();
    let o = AttentionOptions::default();
    // wrong output shape and dtype
    let bad = ctx.zeros(Shape::new(1, 2, 8, 8), Layout::Bhsd, DType::F32).unwrap();
    let mut enc = ctx.device().create_command_encoder(&Default::default());
    let e = ctx.encode_attention(&mut enc, &AttentionCall { q: &q, k: &q, v: &q, mask: None, out: &bad, lse: None }, &o).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { argument: "out", dim: "dim", .. }), "{e}");
    if ctx.supports_f16() {
        let half_out = ctx.zeros(s, Layout::Bhsd, DType::F16).unwrap();
        let e = ctx.encode_attention(&mut enc, &AttentionCall { q: &q, k: &q, v: &q, mask: None, out: &half_out, lse: None }, &o).unwrap_err();
        assert!(matches!(e, Error::DTypeMismatch { argument: "out", .. }), "{e}");
    }
    let lse_bad = ctx.zeros(Shape::new(1, 2, 8, 2), Layout::Bhsd, DType::F32).unwrap();
    let out = ctx.zeros(s, Layout::Bhsd, DType::F32).unwrap();
    let e = ctx.encode_attention(&mut enc, &AttentionCall { q: &q, k: &q, v: &q, mask: None, out: &out, lse: Some(&lse_bad) }, &o).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { argument: "lse", .. }), "{e}");
    let w_bad = ctx.zeros(Shape::new(1, 2, 8, 9), Layout::Bhsd, DType::F32).unwrap();
    let e = ctx.encode_attention_unfused(&mut enc, &AttentionCall { q: &q, k: &q, v: &q, mask: None, out: &out, lse: None }, &w_bad, &o).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { argument: "weights", .. }), "{e}");
    let e = ctx.encode_softmax(&mut enc, &q, None, &SoftmaxOptions::default(), &bad).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { argument: "out", .. }), "{e}");
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
    let e = Tensor::from_buffer(&ctx, small.clone(), 0, s, Layout::Bhsd, DType::F32).unwrap_err();
    assert!(matches!(e, Error::BufferTooSmall { needed: 1024, got: 64, .. }), "{e}");
    let e = Tensor::from_buffer(&ctx, small.clone(), 8, Shape::new(1, 1, 1, 16), Layout::Bhsd, DType::F32).unwrap_err();
    assert!(matches!(e, Error::BufferTooSmall { needed: 64, got: 32, .. }), "{e}");
    let e = Mask::from_buffer(&ctx, small, [1, 1, 4, 5], MaskKind::Bool).unwrap_err();
    assert!(matches!(e, Error::BufferTooSmall { needed: 80, got: 64, .. }), "{e}");
    let uniform = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 4096,
        usage: wgpu::BufferUsages::UNIFORM,
        mapped_at_creation: false,
    });
    let e = Tensor::from_buffer(&ctx, uniform, 0, s, Layout::Bhsd, DType::F32).unwrap_err();
    assert!(matches!(e, Error::BufferUsage { needed: "STORAGE", .. }), "{e}");
}
}

gpu_test! {
fn f16_without_the_feature_is_an_error() {
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
    let hx = HostTensor::new(&x, Shape::new(1, 1, 4, 4)).unwrap();
    let e = Backend::Gpu(ctx).softmax(&hx, None, &SoftmaxOptions::default()).unwrap_err();
    assert!(matches!(e, Error::F16Unsupported { .. }), "{e}");
}
}

gpu_test! {
fn no_adapter_by_name_is_an_error() {
    let e = Context::with_options_blocking(ContextOptions {
        adapter_name: Some("no such adapter 1234".into()),
        ..Default::default()
    })
    .unwrap_err();
    assert!(matches!(e, Error::NoAdapter(ref m) if m.contains("no such adapter 1234")), "{e}");
}
}

#[test]
fn host_caches_the_system_cannot_hold_are_refused_not_aborted() {
    // 2^61 elements per pool: past what an allocation can describe
    let absurd = PageGeometry { num_pages: 1 << 40, page_size: 1 << 16, kv_heads: 1, head_dim: 32 };
    let e = HostKvCache::<f32>::new(absurd).unwrap_err();
    assert!(matches!(e, Error::TooLarge { argument: "geometry", .. }), "{e}");
    // 2^40 elements per pool (4 TiB each): a machine that does not overcommit (Linux modes 0
    // and 2) refuses the allocation, which must be an Err; where it overcommits (mode 1) the
    // untouched zeroed pages are reserved and given back at once
    let huge = PageGeometry { num_pages: 1 << 26, page_size: 1 << 10, kv_heads: 4, head_dim: 4 };
    let r = HostKvCache::<f32>::new(huge);
    let overcommits = std::fs::read_to_string("/proc/sys/vm/overcommit_memory").is_ok_and(|m| m.trim() == "1");
    if !overcommits {
        let e = r.unwrap_err();
        assert!(matches!(e, Error::TooLarge { argument: "geometry", ref message } if message.contains("host memory")), "{e}");
    }
}
