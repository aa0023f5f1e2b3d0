//! Tensors over the binding limit and grids over the per-dimension workgroup limit still compute
//! correctly: the device is opened with lowered limits so that lavapipe takes the split paths.
//! (A binding over the limit would be a wgpu validation error, so passing here proves the split.)

mod common;
use common::*;
use wgpu_attention::*;

fn small_device() -> Context {
    let limits = wgpu::Limits {
        max_storage_buffer_binding_size: 64 << 10,
        max_compute_workgroups_per_dimension: 7,
        max_compute_workgroup_storage_size: 16 << 10,
        ..Default::default()
    };
    Context::with_options_blocking(ContextOptions { limits: Some(limits), ..Default::default() }).unwrap()
}

gpu_test! {
fn split_over_slices_and_rows() {
    let ctx = small_device();
    assert_eq!(ctx.limits().max_storage_buffer_binding_size, 64 << 10);
    // q: 2*3*300*40*4 = 288 KB; scores per head 300*200*4 = 240 KB: both need splitting.
    let mut c = Case::new(2, 3, 3, 300, 200, 40);
    check_gpu(&ctx, &c);
    // BSHD: a key head's window spans all heads of its batch (100*3*40*4 = 48 KB fits); the
    // queries (300*3*40*4 = 144 KB per batch) are split by rows.
    c.layout = Layout::Bshd;
    c.nk = 100;
    c.causal = true;
    c.key_lengths = Some(vec![100, 77]);
    check_gpu(&ctx, &c);
    let mut c = Case::new(2, 4, 2, 150, 90, 64);
    c.bool_mask = Some([2, 4, 150, 90]);
    check_gpu(&ctx, &c);
    let mut c = Case::new(1, 2, 1, 190, 100, 128);
    c.add_mask = Some([1, 1, 190, 100]);
    check_gpu(&ctx, &c);
}
}

gpu_test! {
fn small_workgroup_storage_limits_the_fused_kernels() {
    // 16 KiB of workgroup memory (WebGPU's default) fits the fused kernels' 32-key tile at
    // every head dim, with the log-sum-exp
    let ctx = small_device();
    let c = Case::new(1, 2, 1, 50, 40, 256);
    check_gpu(&ctx, &c);
    let s = Shape::new(1, 1, 4, 256);
    let x = ctx.upload(&rand_vec(1, s.numel(), 1.0), s).unwrap();
    let plan = ctx.plan_attention(&x, &x, &x, None, &AttentionOptions::default(), true).unwrap();
    assert_eq!(plan.variant, AttentionVariant::Fused(Loads::Vec4), "{plan:?}");
    assert!(plan.workgroup_bytes <= 16 << 10, "{plan:?}");
    // 12 KiB fits none: Auto falls back to the unfused variant; forcing a fused one is refused,
    // and so is the log-sum-exp (which the unfused variant does not produce). check_gpu_without_lse
    // asserts each refusal against expect_supported.
    let limits = wgpu::Limits { max_compute_workgroup_storage_size: 12 << 10, ..Default::default() };
    let ctx = Context::with_options_blocking(ContextOptions { limits: Some(limits), ..Default::default() }).unwrap();
    check_gpu_without_lse(&ctx, &Case::new(1, 2, 1, 4, 30, 64));
    let x = ctx.upload(&rand_vec(1, s.numel(), 1.0), s).unwrap();
    let forced = AttentionOptions { variant: AttentionVariant::Fused(Loads::Vec4), ..Default::default() };
    let e = ctx.attention(&x, &x, &x, None, &forced).unwrap_err();
    assert!(matches!(e, Error::Unsupported(ref m) if m.contains("head dim 256")), "{e}");
    let e = ctx.attention_with_lse(&x, &x, &x, None, &AttentionOptions::default()).unwrap_err();
    assert!(matches!(e, Error::Unsupported(ref m) if m.contains("log-sum-exp")), "{e}");
    let plan = ctx.plan_attention(&x, &x, &x, None, &AttentionOptions::default(), false).unwrap();
    assert_eq!(plan.variant, AttentionVariant::Unfused, "{plan:?}");
}
}

/// The output of every variant the device supports without the log-sum-exp, against the reference.
fn check_gpu_without_lse(ctx: &Context, c: &Case) {
    let data = case_data(c);
    let (want, _, _) = case_reference(c, &data);
    let (q, k, v) = (
        ctx.upload(&data.q, data.qs).unwrap(),
        ctx.upload(&data.k, data.ks).unwrap(),
        ctx.upload(&data.v, data.ks).unwrap(),
    );
    for variant in [AttentionVariant::Auto].into_iter().chain(AttentionVariant::ALL) {
        if !runs_forced(variant, c.d) && expect_supported(ctx, c, variant, false) {
            continue;
        }
        let opts = AttentionOptions { variant, ..c.opts() };
        match ctx.attention(&q, &k, &v, None, &opts) {
            Ok(o) => assert_close(&format!("{variant}"), &o.download_blocking(ctx).unwrap(), &want, 1e-5),
            Err(e) => {
                assert!(!expect_supported(ctx, c, variant, false), "{variant} refused: {e}");
                assert!(matches!(e, Error::Unsupported(_)), "{e}");
            }
        }
    }
}

gpu_test! {
fn one_slice_over_the_limit_is_a_clear_error() {
    let ctx = small_device();
    // one key head: 2000 * 16 * 4 = 128 KB > 64 KiB
    let qs = Shape::new(1, 1, 4, 16);
    let ks = Shape::new(1, 1, 2000, 16);
    let q = ctx.upload(&rand_vec(1, qs.numel(), 1.0), qs).unwrap();
    let k = ctx.upload(&rand_vec(2, ks.numel(), 1.0), ks).unwrap();
    let e = ctx.attention(&q, &k, &k, None, &AttentionOptions::default()).unwrap_err();
    assert!(matches!(e, Error::TooLarge { argument: "k", .. }), "{e}");
    // BSHD keys: the error says why the window is large
    let ks = Shape::new(1, 8, 300, 16);
    let qs = Shape::new(1, 8, 4, 16);
    let q = ctx.upload_with_layout(&rand_vec(1, qs.numel(), 1.0), qs, Layout::Bshd).unwrap();
    let k = ctx.upload_with_layout(&rand_vec(2, ks.numel(), 1.0), ks, Layout::Bshd).unwrap();
    let e = ctx.attention(&q, &k, &k, None, &AttentionOptions::default()).unwrap_err();
    assert!(matches!(e, Error::TooLarge { argument: "k", ref message } if message.contains("Bshd")), "{e}");
}
}

gpu_test! {
fn more_than_65535_workgroups_on_default_limits() {
    // softmax runs one workgroup per row: 70,000 rows is past the 65,535 per-dimension limit.
    let ctx = shared_gpu();
    let s = Shape::new(1, 2, 35_000, 3);
    let x = rand_vec(5, s.numel(), 2.0);
    let y = ctx
        .softmax(&ctx.upload(&x, s).unwrap(), None, &SoftmaxOptions::default())
        .unwrap()
        .download_blocking(&ctx)
        .unwrap();
    let want = cpu::softmax(&HostTensor::new(&x, s).unwrap(), None, &SoftmaxOptions::default()).unwrap();
    assert_close("70k rows", &y, &to_f64(&want), 1e-5);
}
}

gpu_test! {
fn split_k_under_lowered_limits() {
    let ctx = small_device();
    let mut c = Case::new(2, 4, 2, 3, 1500, 8); // one key head: 1500*8*4 = 48 KB
    c.causal = true;
    c.key_lengths = Some(vec![1500, 999]);
    check_gpu(&ctx, &c);
}
}

/// The CPU path's attention output (default options).
fn cpu_attention(q: &[f32], k: &[f32], v: &[f32], qs: Shape, ks: Shape) -> Vec<f32> {
    let h = |x, s| HostTensor::new(x, s).unwrap();
    cpu::attention(&h(q, qs), &h(k, ks), &h(v, ks), None, &AttentionOptions::default()).unwrap().0
}

gpu_test! {
fn decode_forced_over_the_binding_limit_is_refused_and_auto_routes_around_it() {
    let ctx = small_device();
    // one query per head over 1000 keys of dim 16: K is 2 * 1000 * 16 * 4 = 128 KB, over the
    // 64 KB binding limit (one head's keys fit), and the decode kernel binds whole buffers
    let (qs, ks) = (Shape::new(1, 4, 1, 16), Shape::new(1, 2, 1000, 16));
    let (q, k, v) = (rand_vec(91, qs.numel(), 1.0), rand_vec(92, ks.numel(), 1.0), rand_vec(93, ks.numel(), 1.0));
    let (tq, tk, tv) = (ctx.upload(&q, qs).unwrap(), ctx.upload(&k, ks).unwrap(), ctx.upload(&v, ks).unwrap());
    let forced = AttentionOptions { variant: AttentionVariant::Decode(Loads::Vec4), ..Default::default() };
    let e = ctx.attention(&tq, &tk, &tv, None, &forced).unwrap_err();
    assert!(matches!(e, Error::Unsupported(ref m) if m.contains("decode") && m.contains("binding limit")), "{e}");
    let auto = ctx.attention(&tq, &tk, &tv, None, &AttentionOptions::default()).unwrap().download_blocking(&ctx).unwrap();
    let want = cpu_attention(&q, &k, &v, qs, ks);
    for (g, w) in auto.iter().zip(&want) {
        assert!((g - w).abs() < 1e-5, "{g} vs {w}");
    }
}
}

gpu_test! {
fn decode_over_the_grid_limit() {
    // 2 workgroups per dimension (8 in all): 16 heads of decode need more than one dispatch
    let limits = wgpu::Limits { max_compute_workgroups_per_dimension: 2, ..Default::default() };
    let ctx = Context::with_options_blocking(ContextOptions { limits: Some(limits), ..Default::default() }).unwrap();
    let (qs, ks) = (Shape::new(1, 16, 1, 16), Shape::new(1, 16, 64, 16));
    let (q, k, v) = (rand_vec(94, qs.numel(), 1.0), rand_vec(95, ks.numel(), 1.0), rand_vec(96, ks.numel(), 1.0));
    let (tq, tk, tv) = (ctx.upload(&q, qs).unwrap(), ctx.upload(&k, ks).unwrap(), ctx.upload(&v, ks).unwrap());
    let want = cpu_attention(&q, &k, &v, qs, ks);
    let forced = AttentionOptions { variant: AttentionVariant::Decode(Loads::Vec4), ..Default::default() };
    for opts in [AttentionOptions::default(), forced] {
        match ctx.attention(&tq, &tk, &tv, None, &opts) {
            Ok(out) => {
                let got = out.download_blocking(&ctx).unwrap();
                for (g, w) in got.iter().zip(&want) {
                    assert!((g - w).abs() < 1e-5, "{:?}: {g} vs {w}", opts.variant);
                }
            }
            // only a forced decode may be refused, before anything runs
            Err(e) => assert!(
                opts.variant != AttentionVariant::Auto
                    && matches!(e, Error::Unsupported(ref m) if m.contains("decode") && m.contains("grid")),
                "{:?}: {e}",
                opts.variant
            ),
        }
    }
}
}
