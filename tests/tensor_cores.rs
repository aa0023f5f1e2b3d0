//! Tensor cores (cooperative matrices): detection and the context option, and the fragment
//! kernels' tile logic through their emulated twin (plain WGSL, any adapter) against the f64
//! reference and against the SIMT kernels. On an adapter without cooperative matrices (lavapipe)
//! only the hardware instructions themselves go untested here.

mod common;
use common::*;
use half::f16;
use wgpu_attention::*;

fn with(tc: TensorCores) -> Result<Context> {
    Context::with_options_blocking(ContextOptions { tensor_cores: tc, ..Default::default() })
}

fn emulated() -> Context {
    let ctx = with(TensorCores::Emulated).unwrap_or_else(|e| panic!("GPU test found no adapter ({e})"));
    assert_eq!(ctx.tensor_cores(), TensorCoreState::Emulated);
    ctx
}

gpu_test! {
fn the_option_and_what_the_context_reports() {
    let auto = with(TensorCores::Auto).unwrap();
    let off = with(TensorCores::Off).unwrap();
    assert_eq!(off.info().tensor_cores, TensorCoreState::Inactive("off (ContextOptions::tensor_cores)".into()));
    assert_eq!(with(TensorCores::Emulated).unwrap().info().tensor_cores, TensorCoreState::Emulated);
    match auto.info().tensor_cores {
        TensorCoreState::Active { subgroup_size } => {
            // a tensor-core adapter: the f16 similarity below runs there (after the self-check)
            assert!(auto.info().features.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX));
            assert!(subgroup_size > 0);
            assert!(with(TensorCores::Required).is_ok());
        }
        TensorCoreState::Inactive(why) => {
            assert!(!why.is_empty());
            let e = with(TensorCores::Required).unwrap_err();
            assert!(matches!(e, Error::Unsupported(ref m) if m.contains("tensor cores were required") && m.contains(&why)), "{e}");
        }
        TensorCoreState::Emulated => panic!("Auto never emulates"),
    }
    assert!(auto.info().to_string().contains("tensor cores "), "{}", auto.info());
    // a caller's device: its adapter is unknown, or known
    let (device, queue) = (auto.device().clone(), auto.queue().clone());
    let TensorCoreState::Inactive(why) = Context::from_device(device.clone(), queue).tensor_cores() else {
        panic!("from_device cannot know the adapter's configurations")
    };
    if device.features().contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX) {
        // (a tensor-core adapter: the feature is there, its configurations are not)
        assert!(why.contains("configurations are unknown"), "{why}");
    } else {
        assert!(why.contains("EXPERIMENTAL_COOPERATIVE_MATRIX"), "{why}");
    }
}
}

/// f64 similarity of f16-rounded inputs, [heads, nq, nk] (one batch, BHSD).
fn reference(q: &[f32], qs: Shape, k: &[f32], ks: Shape, metric: Similarity) -> Vec<f64> {
    let group = qs.heads / ks.heads;
    let d = qs.dim;
    let mut out = vec![];
    for h in 0..qs.heads {
        for i in 0..qs.seq {
            let qv: Vec<f64> = q[(h * qs.seq + i) * d..][..d].iter().map(|&x| x as f64).collect();
            for j in 0..ks.seq {
                let kv: Vec<f64> = k[((h / group) * ks.seq + j) * d..][..d].iter().map(|&x| x as f64).collect();
                let dot: f64 = qv.iter().zip(&kv).map(|(a, b)| a * b).sum();
                let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
                out.push(match metric {
                    Similarity::Dot => dot,
                    Similarity::ScaledDot(s) => dot * s.map_or(1.0 / (d as f64).sqrt(), |s| s as f64),
                    Similarity::Cosine if norm(&qv) * norm(&kv) == 0.0 => 0.0,
                    Similarity::Cosine => dot / (norm(&qv) * norm(&kv)),
                    Similarity::L2 => -qv.iter().zip(&kv).map(|(a, b)| (a - b).powi(2)).sum::<f64>(),
                });
            }
        }
    }
    out
}

/// f16 similarity on `ctx` (emulated or hardware fragments) against the f64 reference and the
/// SIMT kernels, across shapes and metrics.
fn similarity_cases(ctx: &Context) {
    let simt = with(TensorCores::Off).unwrap();
    // tails in every dimension (rows, keys, dims around the 64-tile and the 32-dim step), GQA,
    // and one of everything
    for (heads, kv_heads, nq, nk, d) in [
        (1, 1, 1, 1, 1),
        (4, 2, 70, 130, 40),
        (1, 1, 64, 64, 32),
        (2, 1, 129, 65, 128),
        (3, 3, 33, 200, 7),
        (1, 1, 300, 500, 64),
    ] {
        let (qs, ks) = (Shape::new(1, heads, nq, d), Shape::new(1, kv_heads, nk, d));
        let seed = (nq * 1000 + nk + d) as u64;
        let mut q: Vec<f32> = rand_vec(seed, qs.numel(), 2.0).iter().map(|&x| f16::from_f32(x).to_f32()).collect();
        let k: Vec<f32> = rand_vec(seed + 1, ks.numel(), 2.0).iter().map(|&x| f16::from_f32(x).to_f32()).collect();
        // a zero query row (cosine 0)
        q[..d].fill(0.0);
        let to16 = |v: &[f32]| v.iter().map(|&x| f16::from_f32(x)).collect::<Vec<f16>>();
        for metric in [Similarity::Dot, Similarity::ScaledDot(Some(0.3)), Similarity::Cosine, Similarity::L2] {
            let what = format!("{metric:?} heads {heads}/{kv_heads} nq {nq} nk {nk} d {d}");
            let want = reference(&q, qs, &k, ks, metric);
            let run = |c: &Context| {
                let (gq, gk) = (c.upload(&to16(&q), qs).unwrap(), c.upload(&to16(&k), ks).unwrap());
                c.similarity(&gq, &gk, metric).unwrap().download_blocking(c).unwrap()
            };
            let got = run(ctx);
            assert_close(&format!("{} {what}", ctx.tensor_cores()), &got, &want, 1e-5);
            let other = run(&simt);
            assert_close(&format!("simt {what}"), &other, &want, 1e-5);
        }
    }
}

gpu_test! {
fn emulated_similarity_matches_the_reference_and_the_simt_kernel() {
    similarity_cases(&emulated());
}
}

/// The hardware path, on an adapter with tensor cores only (`cargo test --test tensor_cores --
/// --ignored`, as scripts/device-run.sh does): the self-check passes, every similarity and
/// attention case matches, and one case of each run 100 times gives bitwise the same results
/// (no races).
#[test]
#[ignore = "needs an adapter with cooperative matrices (run with --ignored there)"]
fn hardware_similarity_and_attention_on_tensor_cores() {
    let ctx = with(TensorCores::Required).unwrap_or_else(|e| panic!("no tensor cores here: {e}"));
    similarity_cases(&ctx);
    attention_cases(&ctx, &[64, 80, 96, 128]);
    extremes(&ctx);
    paged_case(&ctx);
    assert!(matches!(ctx.tensor_cores(), TensorCoreState::Active { .. }), "self-check: {}", ctx.tensor_cores());
    let (qs, ks) = (Shape::new(1, 8, 1000, 128), Shape::new(1, 8, 1000, 128));
    let h = |s, n| rand_vec(s, n, 1.0).into_iter().map(f16::from_f32).collect::<Vec<f16>>();
    let (q, k) = (ctx.upload(&h(71, qs.numel()), qs).unwrap(), ctx.upload(&h(72, ks.numel()), ks).unwrap());
    let first = ctx.similarity(&q, &k, Similarity::Dot).unwrap().download_blocking(&ctx).unwrap();
    for run in 1..100 {
        let again = ctx.similarity(&q, &k, Similarity::Dot).unwrap().download_blocking(&ctx).unwrap();
        assert!(again == first, "similarity run {run} differs from the first");
    }
    // attention, causal, the same way
    let v = ctx.upload(&h(73, ks.numel()), ks).unwrap();
    let opts = AttentionOptions { causal: true, variant: AttentionVariant::TensorCores, ..Default::default() };
    let first = ctx.attention(&q, &k, &v, None, &opts).unwrap().download_blocking(&ctx).unwrap();
    for run in 1..100 {
        let again = ctx.attention(&q, &k, &v, None, &opts).unwrap().download_blocking(&ctx).unwrap();
        assert!(again == first, "attention run {run} differs from the first");
    }
}

gpu_test! {
fn emulated_scoring_in_top_k_across_thresholded_chunks() {
    // integer data (exact in f16 and f32): the same indices as the SIMT context, over chunks
    // (lowered binding limit) whose later passes keep only scores above the running k-th best
    let limits = wgpu::Limits {
        max_storage_buffer_binding_size: 64 << 10,
        max_compute_workgroup_storage_size: 32 << 10,
        ..Default::default()
    };
    let ctx = |tc| {
        Context::with_options_blocking(ContextOptions { limits: Some(limits.clone()), tensor_cores: tc, ..Default::default() })
            .unwrap()
    };
    let (emu, simt) = (ctx(TensorCores::Emulated), ctx(TensorCores::Off));
    let (nq, nk, d) = (5, 9000, 20);
    let ints = |seed, n| rand_vec(seed, n, 3.5).into_iter().map(|x| f16::from_f32(x.round())).collect::<Vec<f16>>();
    let (q, keys) = (ints(51, nq * d), ints(52, nk * d));
    for metric in [Metric::Dot, Metric::L2, Metric::Cosine] {
        for k in [1, 16, 200] {
            let run = |c: &Context| {
                let (gq, gk) = (c.upload(&q, Shape::new(1, 1, nq, d)).unwrap(), c.upload(&keys, Shape::new(1, 1, nk, d)).unwrap());
                c.top_k(&gq, &gk, k, metric).unwrap()
            };
            let (a, b) = (run(&emu), run(&simt));
            if metric == Metric::Cosine {
                // cosines are not exact: the same scores within rounding
                for (x, y) in a.scores.iter().zip(&b.scores) {
                    assert!((x - y).abs() < 1e-5, "{metric:?} k {k}: {x} vs {y}");
                }
            } else {
                assert_eq!(a, b, "{metric:?} k {k}");
            }
        }
    }
}
}

gpu_test! {
fn emulated_unfused_attention_scores() {
    let ctx = emulated();
    let (qs, ks) = (Shape::new(2, 4, 37, 64), Shape::new(2, 2, 90, 64));
    let h = |s, n| rand_vec(s, n, 1.0).into_iter().map(f16::from_f32).collect::<Vec<f16>>();
    let (q, k, v) = (h(61, qs.numel()), h(62, ks.numel()), h(63, ks.numel()));
    let opts = AttentionOptions { causal: true, ..Default::default() };
    let got = ctx
        .attention_unfused(&ctx.upload(&q, qs).unwrap(), &ctx.upload(&k, ks).unwrap(), &ctx.upload(&v, ks).unwrap(), None, &opts)
        .unwrap()
        .0
        .download_blocking(&ctx)
        .unwrap();
    let (hq, hk, hv) =
        (HostTensor::new(&q, qs).unwrap(), HostTensor::new(&k, ks).unwrap(), HostTensor::new(&v, ks).unwrap());
    let want: Vec<f64> = cpu::reference::attention(&hq, &hk, &hv, None, &opts).unwrap().0.iter().map(|&x| x as f64).collect();
    // f16 output
    assert_close("emulated unfused attention", &got, &want, 2e-3);
}
}

/// f16 attention on `ctx`'s tensor-core kernel (forced, and chosen by `Auto` where the call
/// suits it) against the f64 reference of the f16-rounded inputs and against the SIMT kernel.
/// Every head-dim class up to 64 with options, and the head dims `wide` (GQA, causal, a mask, a
/// window, a growing maximum; at 96 and 128 on 32 KiB of workgroup memory, the kernel with 32
/// query rows per workgroup).
fn attention_cases(ctx: &Context, wide: &[usize]) {
    attention_cases_where(ctx, wide, |_| true)
}

/// [`attention_cases`] on the cases `keep` selects (and every case of `wide`).
fn attention_cases_where(ctx: &Context, wide: &[usize], keep: impl Fn(&Case) -> bool) {
    let simt = with(TensorCores::Off).unwrap();
    let base = |b, h, hkv, nq, nk, d| Case::new(b, h, hkv, nq, nk, d);
    let mut cases = vec![
        base(1, 1, 1, 1, 1, 16),
        base(1, 2, 2, 70, 90, 40),
        base(2, 4, 2, 65, 200, 64).causal(),
        base(1, 3, 1, 33, 47, 7).bshd(),
        base(2, 2, 1, 100, 130, 24).key_lengths(&[130, 57]),
        // every row of batch 1 fully masked: zeros and lse -inf
        base(2, 2, 2, 40, 50, 32).key_lengths(&[50, 0]),
        base(1, 2, 2, 80, 120, 32).window(20, Some(5)),
        base(1, 2, 2, 64, 96, 48).softcap(5.0).alibi().sinks(),
        base(1, 1, 1, 129, 300, 64),
    ];
    let mut masked = base(2, 2, 2, 50, 77, 32);
    masked.bool_mask = Some([2, 1, 50, 77]);
    cases.push(masked);
    let mut additive = base(1, 4, 2, 40, 64, 16).causal();
    additive.add_mask = Some([1, 4, 40, 64]);
    cases.push(additive);
    // a growing maximum along the keys: the reference moves and the output is rescaled
    let mut growing = base(1, 1, 1, 64, 256, 32);
    growing.amp = 6.0;
    cases.push(growing);
    cases.retain(|c| keep(c));
    for &d in wide {
        cases.push(base(2, 4, 2, 70, 130, d).causal());
        cases.push(base(1, 2, 2, 80, 120, d).window(20, Some(5)));
        let mut masked = base(1, 4, 2, 66, 77, d);
        masked.bool_mask = Some([1, 1, 66, 77]);
        cases.push(masked);
        let mut growing = base(1, 2, 1, 64, 200, d);
        growing.amp = 6.0;
        cases.push(growing);
    }
    for c in cases {
        let mut data = case_data(&c);
        let round = |v: &mut Vec<f32>| v.iter_mut().for_each(|x| *x = f16::from_f32(*x).to_f32());
        round(&mut data.q);
        round(&mut data.k);
        round(&mut data.v);
        if c.amp > 1.0 {
            // keys whose scores grow with their position
            for (i, x) in data.k.iter_mut().enumerate() {
                *x = f16::from_f32(*x * (1.0 + (i / c.d) as f32 / 64.0)).to_f32();
            }
        }
        let (want, want_lse, _) = case_reference(&c, &data);
        let what = format!("{c:?}");
        let h16 = |v: &[f32]| v.iter().map(|&x| f16::from_f32(x)).collect::<Vec<f16>>();
        let run = |cx: &Context, variant| {
            let up = |v: &[f32], s| cx.upload_with_layout(&h16(v), s, c.layout).unwrap();
            let (q, k, v) = (up(&data.q, data.qs), up(&data.k, data.ks), up(&data.v, data.ks));
            let mask = host_mask(&c, &data).map(|m| cx.upload_mask(&m).unwrap());
            let opts = AttentionOptions { variant, ..c.opts() };
            let plan = cx.plan_attention(&q, &k, &v, mask.as_ref(), &opts, true).unwrap();
            let (o, l) = cx.attention_with_lse(&q, &k, &v, mask.as_ref(), &opts).unwrap();
            (plan, o.download_blocking(cx).unwrap(), l.download_blocking(cx).unwrap())
        };
        let (plan, got, lse) = run(ctx, AttentionVariant::TensorCores);
        assert_eq!(plan.variant, AttentionVariant::TensorCores);
        // f16 output, f16 weights
        assert_close(&format!("{} {what}", ctx.tensor_cores()), &got, &want, 3e-3);
        assert_lse(&format!("{} lse {what}", ctx.tensor_cores()), &lse, &want_lse, 1e-4);
        let (_, other, _) = run(&simt, AttentionVariant::Auto);
        assert_agree(&format!("vs simt {what}"), &got, &other, 3e-3);
        // Auto takes the tensor cores for calls with enough query blocks
        let (auto, _, _) = run(ctx, AttentionVariant::Auto);
        let decode = c.h / c.hkv * c.nq <= 16;
        assert!(
            decode || auto.variant == AttentionVariant::TensorCores || auto.variant.name().starts_with("split-k"),
            "{what}: auto chose {} ({})",
            auto.variant,
            auto.reason
        );
    }
}

gpu_test! {
fn emulated_attention_with_every_option() {
    // (each head-dim class compiles its own kernel: 80 and 96 in the full matrix)
    attention_cases(&emulated(), if full_matrix() { &[80, 96, 128] } else { &[128] });
}
}

gpu_test! {
fn tensor_core_attention_is_refused_where_it_cannot_run() {
    let ctx = emulated();
    let s = Shape::new(1, 2, 64, 32);
    let forced = AttentionOptions { variant: AttentionVariant::TensorCores, ..Default::default() };
    // f32 inputs
    let x = ctx.upload(&rand_vec(1, s.numel(), 1.0), s).unwrap();
    let e = ctx.attention(&x, &x, &x, None, &forced).unwrap_err();
    assert!(matches!(e, Error::Unsupported(ref m) if m.contains("f16")), "{e}");
    // head dim over 128
    let big = Shape::new(1, 1, 64, 160);
    let y = ctx.upload(&vec![f16::ONE; big.numel()], big).unwrap();
    let e = ctx.attention(&y, &y, &y, None, &forced).unwrap_err();
    assert!(matches!(e, Error::Unsupported(ref m) if m.contains("128")), "{e}");
    // a context without tensor cores says why
    let off = with(TensorCores::Off).unwrap();
    let z = off.upload(&vec![f16::ONE; s.numel()], s).unwrap();
    let e = off.attention(&z, &z, &z, None, &forced).unwrap_err();
    assert!(matches!(e, Error::Unsupported(ref m) if m.contains("off")), "{e}");
}
}

gpu_test! {
fn emulated_attention_at_the_extremes_of_f16_and_of_the_scale() {
    extremes(&emulated());
}
}

/// The largest f16 values, extreme scales and additive terms on `ctx`'s tensor-core kernel:
/// finite results that agree with the SIMT kernel on the same f16 inputs (f16 output: within f16
/// rounding of the largest).
fn extremes(ctx: &Context) {
    let simt = with(TensorCores::Off).unwrap();
    let (qs, ks) = (Shape::new(1, 2, 64, 32), Shape::new(1, 2, 70, 32));
    let big = |seed, n| rand_vec(seed, n, 1.0).into_iter().map(|x| f16::from_f32(if x >= 0.0 { 65504.0 } else { -65504.0 * x.abs().max(0.5) })).collect::<Vec<f16>>();
    let small = |seed, n| rand_vec(seed, n, 1.0).into_iter().map(f16::from_f32).collect::<Vec<f16>>();
    let am: Vec<f32> = rand_vec(9, 2 * 64 * 70, 1.0).into_iter().map(|x| if x > 0.5 { f32::NEG_INFINITY } else { x * 3e38 }).collect();
    let mask = HostMask::additive(&am, [1, 2, 64, 70]).unwrap();
    for (what, q, k, v, scale, with_mask) in [
        ("f16 max", big(1, qs.numel()), big(2, ks.numel()), big(3, ks.numel()), None, false),
        ("scale 1e-30", small(4, qs.numel()), small(5, ks.numel()), small(6, ks.numel()), Some(1e-30), false),
        ("scale 1e30", small(7, qs.numel()), small(8, ks.numel()), small(9, ks.numel()), Some(1e30), false),
        ("additive +-3e38", small(10, qs.numel()), small(11, ks.numel()), small(12, ks.numel()), None, true),
    ] {
        let run = |cx: &Context, variant| {
            let (tq, tk, tv) = (cx.upload(&q, qs).unwrap(), cx.upload(&k, ks).unwrap(), cx.upload(&v, ks).unwrap());
            let m = with_mask.then(|| cx.upload_mask(&mask).unwrap());
            let opts = AttentionOptions { variant, scale, ..Default::default() };
            let (o, l) = cx.attention_with_lse(&tq, &tk, &tv, m.as_ref(), &opts).unwrap();
            (o.download_blocking(cx).unwrap(), l.download_blocking(cx).unwrap())
        };
        let (got, lse) = run(ctx, AttentionVariant::TensorCores);
        let (want, want_lse) = run(&simt, AttentionVariant::Auto);
        assert!(got.iter().all(|x| x.is_finite()), "{what}: not finite");
        assert_agree(&format!("{what}: vs simt"), &got, &want, 3e-3);
        for (a, b) in lse.iter().zip(&want_lse) {
            assert!(a == b || (a - b).abs() <= 1e-4 * b.abs().max(1.0), "{what}: lse {a} vs {b}");
        }
    }
}

gpu_test! {
fn f32_inputs_on_tensor_cores_by_opt_in() {
    let ctx = emulated();
    let c = Case::new(2, 4, 2, 70, 130, 40).causal();
    let data = case_data(&c);
    let (q, k, v) =
        (ctx.upload(&data.q, data.qs).unwrap(), ctx.upload(&data.k, data.ks).unwrap(), ctx.upload(&data.v, data.ks).unwrap());
    let opt_in = AttentionOptions { f32_on_tensor_cores: true, ..c.opts() };
    // Auto takes the tensor cores only with the opt-in
    let plan = ctx.plan_attention(&q, &k, &v, None, &opt_in, true).unwrap();
    assert_eq!(plan.variant, AttentionVariant::TensorCores, "{}", plan.reason);
    let plan = ctx.plan_attention(&q, &k, &v, None, &c.opts(), true).unwrap();
    assert!(plan.variant != AttentionVariant::TensorCores && plan.reason.contains("f32_on_tensor_cores"), "{}", plan.reason);
    // f32 output; the inputs rounded to f16: within f16 rounding of the f32 reference
    let (want, want_lse, _) = case_reference(&c, &data);
    let (o, l) = ctx.attention_with_lse(&q, &k, &v, None, &opt_in).unwrap();
    assert_eq!(o.dtype(), DType::F32);
    assert_close("f32 via f16 staging", &o.download_blocking(&ctx).unwrap(), &want, 3e-3);
    assert_lse("f32 via f16 staging lse", &l.download_blocking(&ctx).unwrap(), &want_lse, 1e-3);
    // over f16's range: Auto runs SIMT (exactly), forced is refused naming the input
    let mut huge = data.k.clone();
    huge[5] = 1e5;
    let kh = ctx.upload(&huge, data.ks).unwrap();
    let plan = ctx.plan_attention(&q, &kh, &v, None, &opt_in, true).unwrap();
    assert!(plan.variant != AttentionVariant::TensorCores && plan.reason.contains("65504"), "{}", plan.reason);
    let forced = AttentionOptions { variant: AttentionVariant::TensorCores, ..opt_in };
    let e = ctx.attention(&q, &kh, &v, None, &forced).unwrap_err();
    assert!(matches!(e, Error::Unsupported(ref m) if m.contains("k holds") && m.contains("65504")), "{e}");
    // magnitudes unknown (a caller's buffer): refused, saying so
    let raw = Tensor::from_buffer(&ctx, k.buffer().clone(), 0, data.ks, Layout::Bhsd, DType::F32).unwrap();
    let e = ctx.attention(&q, &raw, &v, None, &forced).unwrap_err();
    assert!(matches!(e, Error::Unsupported(ref m) if m.contains("unknown")), "{e}");
}
}

/// The shader of [`hardware_fragment_layouts`] for subgroups of `subgroup_size`.
fn layout_shader(subgroup_size: u32) -> String {
    format!(
        "enable f16;
enable wgpu_cooperative_matrix;
@group(0) @binding(0) var<storage, read> M: array<f32>;
@group(0) @binding(1) var<storage, read_write> OUT: array<f32>;
var<workgroup> Hs: array<f16, 1024>;
var<workgroup> Fs: array<f32, 2048>;
const S: u32 = 24u;
@compute @workgroup_size({subgroup_size})
fn main(@builtin(local_invocation_index) t: u32) {{
    // M (16 x 16, row-major) at 0 with stride S; the identity at 512 with stride S
    for (var i = t; i < 256u; i += {subgroup_size}u) {{
        Hs[(i / 16u) * S + i % 16u] = f16(M[i]);
        Hs[512u + (i / 16u) * S + i % 16u] = select(f16(0.0), f16(1.0), i / 16u == i % 16u);
    }}
    workgroupBarrier();
    let a = coopLoadT<coop_mat16x16<f16, A>>(&Hs[0], S);
    let ib = coopLoadT<coop_mat16x16<f16, B>>(&Hs[512], S);
    let ia = coopLoadT<coop_mat16x16<f16, A>>(&Hs[512], S);
    let b = coopLoad<coop_mat16x16<f16, B>>(&Hs[0], S);
    let c1 = coopMultiplyAdd(a, ib, coop_mat16x16<f32, C>());
    let c2 = coopMultiplyAdd(ia, b, coop_mat16x16<f32, C>());
    coopStoreT(c1, &Fs[0], S);
    coopStoreT(c2, &Fs[512], S);
    workgroupBarrier();
    for (var i = t; i < 256u; i += {subgroup_size}u) {{
        OUT[i] = Fs[(i / 16u) * S + i % 16u];
        OUT[256u + i] = Fs[512u + (i / 16u) * S + i % 16u];
    }}
    workgroupBarrier();
    coopStore(c1, &Fs[0], S);
    workgroupBarrier();
    for (var i = t; i < 256u; i += {subgroup_size}u) {{
        OUT[512u + i] = Fs[(i / 16u) * S + i % 16u];
        Fs[1024u + (i / 16u) * S + i % 16u] = M[i];
    }}
    workgroupBarrier();
    let c3 = coopLoadT<coop_mat16x16<f32, C>>(&Fs[1024], S);
    let c4 = coopMultiplyAdd(ia, ib, c3);
    coopStoreT(c4, &Fs[1536], S);
    workgroupBarrier();
    for (var i = t; i < 256u; i += {subgroup_size}u) {{
        OUT[768u + i] = Fs[1536u + (i / 16u) * S + i % 16u];
    }}
}}"
    )
}

/// The layout shader is valid WGSL with cooperative matrices (naga, as wgpu would take it), so
/// that the hardware test fails only on what the hardware does.
#[test]
fn the_fragment_layout_shader_validates() {
    for sgs in [32, 64] {
        let src = layout_shader(sgs);
        let module = naga::front::wgsl::parse_str(&src).unwrap_or_else(|e| panic!("{}", e.emit_to_string(&src)));
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
            .validate(&module)
            .unwrap_or_else(|e| panic!("subgroups of {sgs}: {e:?}"));
    }
}

/// The fragment layouts the kernels assume, on the hardware (`--ignored`, tensor-core adapters
/// only): with one operand the identity, `coopLoadT` of A gives the matrix row-major, `coopLoad`
/// of B reads element (k, n) at n * stride + k, `coopStoreT` writes row-major and `coopStore`
/// column-major, and `coopLoadT` of C (the kernels' `load_c`, after a rescale) reads row-major
/// into the accumulator's layout (I x I + M = M + I); strides padded past 16 as the kernels' are.
#[test]
#[ignore = "needs an adapter with cooperative matrices (run with --ignored there)"]
fn hardware_fragment_layouts() {
    let ctx = with(TensorCores::Required).unwrap_or_else(|e| panic!("no tensor cores here: {e}"));
    let TensorCoreState::Active { subgroup_size } = ctx.tensor_cores() else { panic!("{}", ctx.tensor_cores()) };
    let src = layout_shader(subgroup_size);
    let m: Vec<f32> = (0..256).map(|i| (i as f32) - 100.0).collect();
    let dev = ctx.device();
    let module = dev.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: None,
        source: wgpu::ShaderSource::Wgsl(src.into()),
    });
    let pipeline = dev.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: None,
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    });
    let input = ctx.upload(&m, Shape::new(1, 1, 16, 16)).unwrap();
    let out = ctx.zeros(Shape::new(1, 1, 64, 16), Layout::Bhsd, DType::F32).unwrap();
    let bind = dev.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[
            wgpu::BindGroupEntry { binding: 0, resource: input.buffer().as_entire_binding() },
            wgpu::BindGroupEntry { binding: 1, resource: out.buffer().as_entire_binding() },
        ],
    });
    let mut enc = dev.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind, &[]);
        pass.dispatch_workgroups(1, 1, 1);
    }
    let got = ctx.submit_and_download(enc, &[&out]).unwrap().remove(0);
    let transposed: Vec<f32> = (0..256).map(|i| m[(i % 16) * 16 + i / 16]).collect();
    assert_eq!(&got[..256], &m[..], "coopLoadT A x I, coopStoreT: M row-major");
    assert_eq!(&got[256..512], &transposed[..], "I x coopLoad B: B(k, n) = M[n][k], so C = Mᵀ");
    assert_eq!(&got[512..768], &transposed[..], "coopStore: column-major");
    let plus_identity: Vec<f32> = (0..256).map(|i| m[i] + if i / 16 == i % 16 { 1.0 } else { 0.0 }).collect();
    assert_eq!(&got[768..], &plus_identity[..], "coopLoadT C (load_c) as the accumulator: I x I + M");
}

gpu_test! {
fn emulated_attention_without_subgroups() {
    // a row's maximum and sum through workgroup memory instead of subgroup shuffles
    let ctx = Context::with_options_blocking(ContextOptions {
        tensor_cores: TensorCores::Emulated,
        disable_features: wgpu::Features::SUBGROUP,
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("GPU test found no adapter ({e})"));
    assert!(!ctx.caps().subgroups);
    // (the reductions are the same code for every head dim: by default the cases of the 32-wide
    // class, GQA, causal, masks, key lengths, a window and a growing maximum among them; every
    // case in the full matrix)
    if full_matrix() {
        attention_cases(&ctx, &[128]);
    } else {
        attention_cases_where(&ctx, &[], |c| c.d.div_ceil(16) * 16 == 32);
    }
}
}

gpu_test! {
fn emulated_kernels_read_unaligned_views_like_aligned_ones() {
    // Q, K, V one element into their buffers: the fragment kernels stage them with scalar
    // loads instead of vector loads, and the results are bitwise those of the aligned copies
    use wgpu::util::DeviceExt;
    let ctx = emulated();
    let (qs, ks) = (Shape::new(1, 4, 70, 40), Shape::new(1, 2, 90, 40));
    let h16 = |v: Vec<f32>| v.into_iter().map(f16::from_f32).collect::<Vec<f16>>();
    let (q, k, v) = (h16(rand_vec(1, qs.numel(), 1.0)), h16(rand_vec(2, ks.numel(), 1.0)), h16(rand_vec(3, ks.numel(), 1.0)));
    let shifted = |data: &[f16], s: Shape| {
        let mut host = vec![f16::ZERO];
        host.extend_from_slice(data);
        let buffer = ctx.device().create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("shifted"),
            contents: bytemuck::cast_slice(&host),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        });
        Tensor::from_buffer(&ctx, buffer, 1, s, Layout::Bhsd, DType::F16).unwrap()
    };
    let aligned = (ctx.upload(&q, qs).unwrap(), ctx.upload(&k, ks).unwrap(), ctx.upload(&v, ks).unwrap());
    let unaligned = (shifted(&q, qs), shifted(&k, ks), shifted(&v, ks));
    let opts = AttentionOptions { causal: true, variant: AttentionVariant::TensorCores, ..Default::default() };
    let run = |(q, k, v): &(Tensor, Tensor, Tensor)| {
        let a = ctx.attention(q, k, v, None, &opts).unwrap().download_blocking(&ctx).unwrap();
        let s = ctx.similarity(q, k, Similarity::Cosine).unwrap().download_blocking(&ctx).unwrap();
        (a, s)
    };
    let (want_a, want_s) = run(&aligned);
    let (got_a, got_s) = run(&unaligned);
    assert!(want_a.iter().any(|&x| x != 0.0) && want_s.iter().any(|&x| x != 0.0));
    for (what, got, want) in [("attention", &got_a, &want_a), ("similarity", &got_s, &want_s)] {
        let first = got.iter().zip(want.iter()).position(|(a, b)| a.to_bits() != b.to_bits());
        assert!(first.is_none(), "{what}: element {first:?} differs between the unaligned and the aligned views");
    }
}
}

gpu_test! {
fn emulated_attention_over_a_paged_cache() {
    paged_case(&emulated());
}
}

/// Chunked prefill over a paged f16 cache (pages scattered over the pool, sequences ending
/// inside a page) on the fragment kernel: against the f64 reference, and against the same kernel
/// over contiguous copies of each sequence.
fn paged_case(ctx: &Context) {
    let (kv_heads, heads, d, nq, ps) = (2, 4, 40, 20, 16);
    let lens = [70u32, 20, 130];
    let blocks = 130usize.div_ceil(ps);
    let num_pages = 29; // prime: page i * 7 % 29 scatters every sequence's pages
    let table: Vec<u32> = (0..lens.len() * blocks).map(|i| (i * 7 % num_pages) as u32).collect();
    let g = PageGeometry { num_pages, page_size: ps, kv_heads, head_dim: d };
    let cache = PagedKvCache::new(ctx, g, DType::F16).unwrap();
    let r16 = |v: Vec<f32>| v.into_iter().map(|x| f16::from_f32(x).to_f32()).collect::<Vec<f32>>();
    let h16 = |v: &[f32]| v.iter().map(|&x| f16::from_f32(x)).collect::<Vec<f16>>();
    let mut kv = vec![];
    for (b, &l) in lens.iter().enumerate() {
        let s = Shape::new(1, kv_heads, l as usize, d);
        let (k, v) = (r16(rand_vec(10 + b as u64, s.numel(), 1.0)), r16(rand_vec(20 + b as u64, s.numel(), 1.0)));
        let t = BlockTable::new(&table[b * blocks..(b + 1) * blocks], blocks, &lens[b..b + 1]).unwrap();
        ctx.append_kv(&cache, &t, &ctx.upload(&h16(&k), s).unwrap(), &ctx.upload(&h16(&v), s).unwrap()).unwrap();
        kv.push((k, v, s));
    }
    let qs = Shape::new(lens.len(), heads, nq, d);
    let q = r16(rand_vec(30, qs.numel(), 1.0));
    let opts = AttentionOptions { causal: true, variant: AttentionVariant::TensorCores, ..Default::default() };
    let gq = ctx.upload(&h16(&q), qs).unwrap();
    let t = BlockTable::new(&table, blocks, &lens).unwrap();
    assert_eq!(ctx.plan_paged_attention(&gq, &cache, &t, &opts, true).unwrap().variant, AttentionVariant::TensorCores);
    let (o, l) = ctx.paged_attention_with_lse(&gq, &cache, &t, &opts).unwrap();
    let (got, got_lse) = (o.download_blocking(ctx).unwrap(), l.download_blocking(ctx).unwrap());
    let n = qs.numel() / lens.len();
    for (b, (k, v, ks)) in kv.iter().enumerate() {
        let one = Shape::new(1, heads, nq, d);
        let qb = &q[b * n..(b + 1) * n];
        let rm = RefMask { causal: true, ..RefMask::none() };
        let scale = 1.0 / (d as f64).sqrt();
        let (want, want_lse, _) = ref_attention_with(
            qb,
            one,
            Layout::Bhsd,
            k,
            *ks,
            Layout::Bhsd,
            v,
            Layout::Bhsd,
            scale,
            &rm,
            &RefScores::default(),
        );
        let what = format!("sequence {b} (length {})", lens[b]);
        assert_close(&format!("paged {what}"), &got[b * n..(b + 1) * n], &want, 3e-3);
        assert_lse(&format!("paged lse {what}"), &got_lse[b * n / d..(b + 1) * n / d], &want_lse, 1e-4);
        let contiguous = ctx
            .attention(
                &ctx.upload(&h16(qb), one).unwrap(),
                &ctx.upload(&h16(k), *ks).unwrap(),
                &ctx.upload(&h16(v), *ks).unwrap(),
                None,
                &opts,
            )
            .unwrap()
            .download_blocking(ctx)
            .unwrap();
        assert_agree(&format!("paged vs contiguous {what}"), &got[b * n..(b + 1) * n], &contiguous, 1e-6);
    }
}
