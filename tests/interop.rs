//! Using the crate inside an application that already drives a GPU: its device, its buffers,
//! its command encoder; a context shared across threads; async download.

mod common;
use common::*;
use wgpu::util::DeviceExt;
use wgpu_attention::*;

fn assert_send_sync<T: Send + Sync>() {}

/// The application's own device (as an engine would create it).
fn app_device() -> (wgpu::Device, wgpu::Queue, wgpu::AdapterInfo) {
    pollster::block_on(async {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
        desc.backends -= wgpu::Backends::GL; // the GL adapter on llvmpipe compiles for minutes
        let instance = wgpu::Instance::new(desc);
        let adapter = instance.request_adapter(&wgpu::RequestAdapterOptions::default()).await.expect("an adapter");
        let (d, q) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                required_features: adapter.features() & wgpu::Features::SHADER_F16,
                required_limits: adapter.limits(),
                ..Default::default()
            })
            .await
            .expect("a device");
        (d, q, adapter.get_info())
    })
}

gpu_test! {
fn callers_device_buffers_and_encoder() {
    assert_send_sync::<Context>();
    let (device, queue, info) = app_device();
    let ctx = Context::from_device(device.clone(), queue.clone());
    // the caller's adapter, reported truthfully
    assert_eq!((ctx.info().adapter.as_str(), ctx.info().backend), (info.name.as_str(), info.backend));

    // One application buffer holding q, k and v at offsets that are not 256-byte aligned.
    let (qs, ks) = (Shape::new(2, 4, 33, 24), Shape::new(2, 2, 50, 24));
    let (q, k, v) = (rand_vec(1, qs.numel(), 1.0), rand_vec(2, ks.numel(), 1.0), rand_vec(3, ks.numel(), 1.0));
    let (oq, ok, ov) = (3usize, 3 + qs.numel() + 5, 3 + qs.numel() + 5 + ks.numel() + 7);
    let mut packed = vec![0.0f32; ov + ks.numel() + 1];
    packed[oq..oq + q.len()].copy_from_slice(&q);
    packed[ok..ok + k.len()].copy_from_slice(&k);
    packed[ov..ov + v.len()].copy_from_slice(&v);
    let app_buf = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("app qkv"),
        contents: bytemuck::cast_slice(&packed),
        usage: wgpu::BufferUsages::STORAGE,
    });
    let out_buf = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("app out"),
        size: ((qs.numel() + 11) * 4) as u64,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let tq = Tensor::from_buffer(&ctx, app_buf.clone(), oq as u64, qs, Layout::Bhsd, DType::F32).unwrap();
    let tk = Tensor::from_buffer(&ctx, app_buf.clone(), ok as u64, ks, Layout::Bhsd, DType::F32).unwrap();
    let tv = Tensor::from_buffer(&ctx, app_buf.clone(), ov as u64, ks, Layout::Bhsd, DType::F32).unwrap();
    let tout = Tensor::from_buffer(&ctx, out_buf.clone(), 11, qs, Layout::Bhsd, DType::F32).unwrap();
    let opts = AttentionOptions { causal: true, ..Default::default() };

    // Record into the application's encoder; the application submits and reads back itself.
    let staging = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: out_buf.size(),
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut enc = device.create_command_encoder(&Default::default());
    ctx.encode_attention(&mut enc, &AttentionCall { q: &tq, k: &tk, v: &tv, mask: None, out: &tout, lse: None }, &opts).unwrap();
    enc.copy_buffer_to_buffer(&out_buf, 0, &staging, 0, out_buf.size());
    queue.submit([enc.finish()]);
    staging.map_async(wgpu::MapMode::Read, .., |r| r.unwrap());
    device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
    let got: Vec<f32> = bytemuck::cast_slice(&staging.get_mapped_range(..).unwrap())[11..11 + qs.numel()].to_vec();

    let hq = HostTensor::new(&q, qs).unwrap();
    let (hk, hv) = (HostTensor::new(&k, ks).unwrap(), HostTensor::new(&v, ks).unwrap());
    let (want, _) = cpu::attention(&hq, &hk, &hv, None, &opts).unwrap();
    assert_close("caller buffers", &got, &to_f64(&want), 1e-5);
    // the crate's own download works on caller tensors with COPY_SRC, too
    assert_close("download", &tout.download_blocking(&ctx).unwrap(), &to_f64(&want), 1e-5);
}
}

gpu_test! {
fn context_shared_across_threads() {
    let ctx = shared_gpu();
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let ctx = ctx.clone();
            std::thread::spawn(move || {
                let s = Shape::new(1, 2, 20 + i, 16 + 16 * i);
                let x = rand_vec(i as u64, s.numel(), 1.0);
                let h = HostTensor::new(&x, s).unwrap();
                let got = Backend::Gpu(ctx).attention(&h, &h, &h, None, &AttentionOptions::default()).unwrap();
                let (want, _) = cpu::attention(&h, &h, &h, None, &AttentionOptions::default()).unwrap();
                assert_close(&format!("thread {i}"), &got, &to_f64(&want), 1e-5);
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}
}

gpu_test! {
fn racing_threads_compile_each_variant_once() {
    // a fresh context: eight threads ask for the same two variants at once (64 queries: the
    // fused kernel alone, no split and no merge)
    let ctx = gpu();
    let s = Shape::new(1, 2, 64, 32);
    let x = ctx.upload(&rand_vec(5, s.numel(), 1.0), s).unwrap();
    let barrier = std::sync::Barrier::new(8);
    std::thread::scope(|scope| {
        for i in 0..8 {
            let (ctx, x, barrier) = (&ctx, &x, &barrier);
            scope.spawn(move || {
                barrier.wait();
                if i % 2 == 0 {
                    ctx.attention(x, x, x, None, &AttentionOptions::default()).unwrap();
                } else {
                    ctx.softmax(x, None, &SoftmaxOptions::default()).unwrap();
                }
            });
        }
    });
    assert_eq!(ctx.compiled_pipelines(), 2, "one attention and one softmax variant, each compiled once");
    ctx.attention(&x, &x, &x, None, &AttentionOptions::default()).unwrap();
    assert_eq!(ctx.compiled_pipelines(), 2, "cached");
}
}

gpu_test! {
fn auto_backend_prefers_hardware_and_else_the_cpu_path() {
    let ctx = shared_gpu();
    let software = ctx.info().device_type == wgpu::DeviceType::Cpu;
    match (software, Backend::auto()) {
        (false, Backend::Gpu(c)) => assert!(!c.info().adapter.is_empty()),
        (true, Backend::Cpu) => {}
        (s, b) => {
            panic!("best adapter {} (software: {s}), but Backend::auto chose {}", ctx.info().adapter, b.describe())
        }
    }
}
}

gpu_test! {
fn kernel_time_from_timestamp_queries() {
    let ctx = shared_gpu();
    assert!(ctx.info().features.contains(wgpu::Features::TIMESTAMP_QUERY), "lavapipe has TIMESTAMP_QUERY");
    let s = Shape::new(1, 4, 256, 64);
    let x = ctx.upload(&rand_vec(8, s.numel(), 1.0), s).unwrap();
    let out = ctx.zeros(s, Layout::Bhsd, DType::F32).unwrap();
    let w = ctx.zeros(Shape::new(1, 4, 256, 256), Layout::Bhsd, DType::F32).unwrap();
    let o = AttentionOptions::default();
    ctx.attention(&x, &x, &x, None, &o).unwrap(); // compile outside the measurement
    let t0 = std::time::Instant::now();
    let fused = ctx.time_gpu(|enc| ctx.encode_attention(enc, &AttentionCall { q: &x, k: &x, v: &x, mask: None, out: &out, lse: None }, &o)).unwrap().unwrap();
    let wall = t0.elapsed().as_secs_f64();
    assert!(fused > 0.0 && fused <= wall, "kernel {fused} s, wall {wall} s");
    // three kernels (similarity, softmax, weighted sum) are summed
    ctx.attention_unfused(&x, &x, &x, None, &o).unwrap();
    let unfused =
        ctx.time_gpu(|enc| ctx.encode_attention_unfused(enc, &AttentionCall { q: &x, k: &x, v: &x, mask: None, out: &out, lse: None }, &w, &o)).unwrap().unwrap();
    assert!(unfused > 0.0);
    // an empty measurement is zero
    assert_eq!(ctx.time_gpu(|_| Ok(())).unwrap(), Some(0.0));
}
}

gpu_test! {
fn one_submission_for_the_work_and_its_readback() {
    let ctx = shared_gpu();
    let (qs, ks) = (Shape::new(1, 2, 5, 16), Shape::new(1, 2, 40, 16));
    let q = ctx.upload(&rand_vec(71, qs.numel(), 1.0), qs).unwrap();
    let k = ctx.upload(&rand_vec(72, ks.numel(), 1.0), ks).unwrap();
    let v = ctx.upload(&rand_vec(73, ks.numel(), 1.0), ks).unwrap();
    let want = ctx.attention(&q, &k, &v, None, &AttentionOptions::default()).unwrap().download_blocking(&ctx).unwrap();
    // the caller's encoder: attention and a softmax, both read back with it in one submission,
    // the second as a strided view (every other row of the scores) in f16
    let out = ctx.zeros(qs, Layout::Bhsd, DType::F32).unwrap();
    let x = rand_vec(74, 6 * 8, 3.0);
    let xt = ctx.upload(&x, Shape::new(1, 1, 6, 8)).unwrap();
    let sm = ctx.zeros(Shape::new(1, 1, 6, 8), Layout::Bhsd, DType::F32).unwrap();
    let mut enc = ctx.device().create_command_encoder(&Default::default());
    ctx.encode_attention(&mut enc, &AttentionCall::new(&q, &k, &v, &out), &AttentionOptions::default()).unwrap();
    ctx.encode_softmax(&mut enc, &xt, None, &SoftmaxOptions::default(), &sm).unwrap();
    let every_other = Tensor::from_buffer_strided(
        &ctx,
        sm.buffer().clone(),
        0,
        Shape::new(1, 1, 3, 8),
        Strides { batch: 48, head: 48, seq: 16 },
        DType::F32,
    )
    .unwrap();
    let got = ctx.submit_and_download(enc, &[&out, &every_other]).unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0], want, "attention through submit_and_download");
    let soft = cpu::softmax(&HostTensor::new(&x, Shape::new(1, 1, 6, 8)).unwrap(), None, &SoftmaxOptions::default()).unwrap();
    for (r, row) in got[1].chunks(8).enumerate() {
        for (g, w) in row.iter().zip(&soft[2 * r * 8..2 * r * 8 + 8]) {
            assert!((g - w).abs() < 1e-6, "softmax row {}: {g} vs {w}", 2 * r);
        }
    }
    // async twin, same values
    let mut enc = ctx.device().create_command_encoder(&Default::default());
    ctx.encode_attention(&mut enc, &AttentionCall::new(&q, &k, &v, &out), &AttentionOptions::default()).unwrap();
    let again = pollster::block_on(ctx.submit_and_download_async(enc, &[&out])).unwrap();
    assert_eq!(again[0], want);
    // a tensor that cannot be copied from: an error naming it, nothing submitted
    let no_copy = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 256,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    let t = Tensor::from_buffer(&ctx, no_copy, 0, Shape::new(1, 1, 4, 16), Layout::Bhsd, DType::F32).unwrap();
    let enc = ctx.device().create_command_encoder(&Default::default());
    let e = ctx.submit_and_download(enc, &[&out, &t]).unwrap_err();
    assert!(matches!(e, Error::BufferUsage { argument: "tensor", needed: "COPY_SRC", .. }), "{e}");
    // another context's tensor
    let other = Context::new_blocking().unwrap();
    let foreign = other.zeros(Shape::new(1, 1, 1, 4), Layout::Bhsd, DType::F32).unwrap();
    let enc = ctx.device().create_command_encoder(&Default::default());
    let e = ctx.submit_and_download(enc, &[&foreign]).unwrap_err();
    assert_eq!(e, Error::ForeignTensor { argument: "tensor" });
}
}

gpu_test! {
fn a_handle_with_a_binding_cache_reuses_bind_groups() {
    let ctx = shared_gpu();
    let step = ctx.with_binding_cache();
    assert_eq!((ctx.cached_bind_groups(), step.cached_bind_groups()), (0, 0));
    let (qs, ks) = (Shape::new(1, 4, 1, 32), Shape::new(1, 2, 300, 32));
    // tensors of the context work on the handle
    let q = ctx.upload(&rand_vec(81, qs.numel(), 1.0), qs).unwrap();
    let k = ctx.upload(&rand_vec(82, ks.numel(), 1.0), ks).unwrap();
    let v = ctx.upload(&rand_vec(83, ks.numel(), 1.0), ks).unwrap();
    let opts = AttentionOptions { causal: false, ..Default::default() };
    let want = ctx.attention(&q, &k, &v, None, &opts).unwrap().download_blocking(&ctx).unwrap();
    assert_eq!(ctx.cached_bind_groups(), 0, "the plain context keeps none");
    let outs = [step.zeros(qs, Layout::Bhsd, DType::F32).unwrap(), step.zeros(qs, Layout::Bhsd, DType::F32).unwrap()];
    let mut counts = vec![];
    for i in 0..6 {
        let out = &outs[i / 3];
        let mut enc = step.device().create_command_encoder(&Default::default());
        step.encode_attention(&mut enc, &AttentionCall::new(&q, &k, &v, out), &opts).unwrap();
        let got = step.submit_and_download(enc, &[out]).unwrap().remove(0);
        assert_eq!(got, want, "call {i}");
        counts.push(step.cached_bind_groups());
    }
    // the first call makes the bind groups (GQA decode: split keys, then the merge), repeats reuse
    // them; the second output buffer needs its own
    assert!(counts[0] >= 1, "{counts:?}");
    assert_eq!(counts[1..3], [counts[0]; 2], "{counts:?}");
    assert!(counts[3] > counts[0] && counts[4..] == [counts[3]; 2], "{counts:?}");
    // a clone shares the cache
    assert_eq!(step.clone().cached_bind_groups(), counts[5]);
}
}
