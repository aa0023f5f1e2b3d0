//! Tensors over the binding limit and grids over the per-dimension workgroup limit still compute
//! correctly: the device is opened with lowered limits so that lavapipe takes the split paths.
//! (A binding over the limit would be a wgpu validation error, so passing here proves the split.)

mod common;
use common::*;
use wgpu_attention::*;

fn small_device() -> Option<Context> {
    shared_gpu()?;
    let limits = wgpu::Limits {
        max_storage_buffer_binding_size: 64 << 10,
        max_compute_workgroups_per_dimension: 7,
        max_compute_workgroup_storage_size: 16 << 10,
        ..Default::default()
    };
    Some(Context::with_options_blocking(ContextOptions { limits: Some(limits), ..Default::default() }).unwrap())
}

#[test]
fn split_over_slices_and_rows() {
    let Some(ctx) = small_device() else { return };
    assert_eq!(ctx.limits().max_storage_buffer_binding_size, 64 << 10);
    // q: 2*3*300*40*4 = 288 KB; scores per head 300*200*4 = 240 KB: both need splitting.
    let mut c = Case::new(2, 3, 3, 300, 200, 40);
    check_case(Some(&ctx), &c);
    // BSHD: a key head's window spans all heads of its batch (100*3*40*4 = 48 KB fits); the
    // queries (300*3*40*4 = 144 KB per batch) are split by rows.
    c.layout = Layout::Bshd;
    c.nk = 100;
    c.causal = true;
    c.key_lengths = Some(vec![100, 77]);
    check_case(Some(&ctx), &c);
    let mut c = Case::new(2, 4, 2, 150, 90, 64);
    c.bool_mask = Some([2, 4, 150, 90]);
    check_case(Some(&ctx), &c);
    let mut c = Case::new(1, 2, 1, 190, 100, 128);
    c.add_mask = Some([1, 1, 190, 100]);
    check_case(Some(&ctx), &c);
}

#[test]
fn small_workgroup_storage_limits_head_dim() {
    let Some(ctx) = small_device() else { return };
    // 16 KiB of workgroup memory fits head dims up to 128 (smaller tiles); 256 needs more.
    let s = Shape::new(1, 1, 4, 256);
    let x = ctx.upload(&rand_vec(1, s.numel(), 1.0), s).unwrap();
    let e = ctx.attention(&x, &x, &x, None, &AttentionOptions::default()).unwrap_err();
    assert!(matches!(e, Error::Unsupported(ref m) if m.contains("head dim 256")), "{e}");
    // the unfused path has no such limit
    assert!(ctx.attention_unfused(&x, &x, &x, None, &AttentionOptions::default()).is_ok());
}

#[test]
fn one_slice_over_the_limit_is_a_clear_error() {
    let Some(ctx) = small_device() else { return };
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

#[test]
fn more_than_65535_workgroups_on_default_limits() {
    // softmax runs one workgroup per row: 70,000 rows is past the 65,535 per-dimension limit.
    let Some(ctx) = shared_gpu() else { return };
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

#[test]
fn split_k_under_lowered_limits() {
    let Some(ctx) = small_device() else { return };
    let mut c = Case::new(2, 4, 2, 3, 1500, 8); // one key head: 1500*8*4 = 48 KB
    c.causal = true;
    c.key_lengths = Some(vec![1500, 999]);
    check_case(Some(&ctx), &c);
}
