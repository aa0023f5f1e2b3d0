//! Faults: an allocation the device cannot satisfy is an `Err(OutOfMemory)` and the context
//! stays usable; after the device is lost every call is an `Err(DeviceLost)`, never a panic or
//! a hang, and a new context can be made.

mod common;
use common::*;
use wgpu_attention::*;

/// The driver's memory budget is the process's: the out-of-memory test fills its share, so the
/// tests here take turns (another test's allocations in between would take the room it frees).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

gpu_test! {
    fn out_of_memory_is_an_error_and_the_context_stays_usable() {
        let _turn = turn();
        // the driver's memory budget, capped for this context at the smallest share that leaves
        // room for the small work below (the budget counts memory already in use, by this
        // process's other contexts too, so the share is probed): an allocation past it is
        // refused by the device (wgpu's out-of-memory error), not by this crate's size checks.
        // The call checked after the failure runs once first, and the inputs of the failing
        // similarity are uploaded first: memory a caller frees goes back to wgpu's allocator,
        // which keeps its blocks per memory type, so a first small buffer of another type (a new
        // uniform block, an upload) can still be refused after the free.
        let s = Shape::new(1, 1, 4, 16);
        let (qs, ks) = (Shape::new(1, 1, 1 << 15, 4), Shape::new(1, 1, 1 << 13, 4));
        let (ctx, x, q, k) = [1u8, 2, 3, 5, 8, 13, 21, 34]
            .into_iter()
            .find_map(|p| {
                let ctx = Context::with_options_blocking(ContextOptions { memory_budget_percent: Some(p), ..Default::default() }).ok()?;
                let x = ctx.upload(&rand_vec(1, s.numel(), 1.0), s).ok()?;
                ctx.attention(&x, &x, &x, None, &AttentionOptions::default()).ok()?.download_blocking(&ctx).ok()?;
                let q = ctx.upload(&vec![0.5f32; qs.numel()], qs).ok()?;
                let k = ctx.upload(&vec![0.5f32; ks.numel()], ks).ok()?;
                Some((ctx, x, q, k))
            })
            .expect("a device within 34% of the memory budget");
        let mut held = vec![];
        let mut oom = None;
        // sizes double from 16 MiB; keep what fits, so the budget fills up either way
        let mut mib = 16usize;
        for i in 0..64 {
            eprintln!("out of memory: allocation {i}, {mib} MiB");
            let elems = (mib << 20) / 4;
            let bytes = (elems * 4) as u64;
            if bytes > ctx.caps().max_buffer {
                mib /= 2;
            }
            match ctx.zeros(Shape::new(1, 1, elems / 1024, 1024), Layout::Bhsd, DType::F32) {
                Ok(t) => held.push(t),
                Err(e) => {
                    oom = Some(e);
                    break;
                }
            }
            mib = (mib * 2).min((ctx.caps().max_buffer >> 20) as usize);
        }
        let e = oom.expect("no out-of-memory error within 64 allocations (does the driver report a memory budget?)");
        assert!(matches!(e, Error::OutOfMemory(_)), "{e}");
        // an operation whose output does not fit fails the same way, before anything runs
        let e = ctx.similarity(&q, &k, Similarity::Dot).unwrap_err(); // 1 GiB of scores
        assert!(matches!(e, Error::OutOfMemory(_)), "{e}");
        // freeing memory makes room again; the context works and computes right
        drop(held);
        let got = ctx.attention(&x, &x, &x, None, &AttentionOptions::default()).unwrap().download_blocking(&ctx).unwrap();
        let h = HostTensor::new(&rand_vec(1, s.numel(), 1.0), s).unwrap().data().to_vec();
        let hx = HostTensor::new(&h, s).unwrap();
        let (want, _) = cpu::attention(&hx, &hx, &hx, None, &AttentionOptions::default()).unwrap();
        assert_agree("after out of memory", &got, &want, 1e-5);
    }
}

gpu_test! {
    fn a_lost_device_fails_every_call_and_a_new_context_works() {
        let _turn = turn();
        let ctx = gpu();
        let s = Shape::new(1, 2, 8, 16);
        let data = rand_vec(2, s.numel(), 1.0);
        let x = ctx.upload(&data, s).unwrap();
        let mask = ctx.upload_mask(&HostMask::bool(&[true; 64], [1, 1, 8, 8]).unwrap()).unwrap();
        let out = ctx.zeros(s, Layout::Bhsd, DType::F32).unwrap();
        let keys = ctx.upload(&data[..128], Shape::new(1, 1, 8, 16)).unwrap();
        let mut index = Index::new(&ctx, 16, Metric::Dot, DType::F32).unwrap();
        index.add(&data[..64]).unwrap();
        let o = AttentionOptions::default();
        ctx.device().destroy();
        let lost = |what: &str, e: Error| {
            // (progress on stderr: shown with --nocapture, to name a call that hangs)
            eprintln!("lost device: {what} returned");
            assert!(matches!(e, Error::DeviceLost(_)), "{what}: {e}")
        };
        within(60, "calls on a lost device", || {
            lost("zeros", ctx.zeros(s, Layout::Bhsd, DType::F32).unwrap_err());
            lost("upload", ctx.upload(&data, s).unwrap_err());
            lost("upload_mask", ctx.upload_mask(&HostMask::bool(&[true; 64], [1, 1, 8, 8]).unwrap()).unwrap_err());
            lost("attention", ctx.attention(&x, &x, &x, Some(&mask), &o).unwrap_err());
            lost("attention_with_lse", ctx.attention_with_lse(&x, &x, &x, None, &o).unwrap_err());
            lost("attention_unfused", ctx.attention_unfused(&x, &x, &x, None, &o).unwrap_err());
            lost("plan_attention", ctx.plan_attention(&x, &x, &x, None, &o, true).unwrap_err());
            let mut enc = ctx.device().create_command_encoder(&Default::default());
            lost("encode_attention", ctx.encode_attention(&mut enc, &AttentionCall { q: &x, k: &x, v: &x, mask: None, out: &out, lse: None }, &o).unwrap_err());
            lost("softmax", ctx.softmax(&x, None, &SoftmaxOptions::default()).unwrap_err());
            lost("similarity", ctx.similarity(&x, &x, Similarity::Cosine).unwrap_err());
            lost("top_k", ctx.top_k(&keys, &keys, 2, Metric::Dot).unwrap_err());
            lost("download", x.download_blocking(&ctx).unwrap_err());
            lost("wait", ctx.wait().unwrap_err());
            lost("time_gpu", ctx.time_gpu(|_| Ok(())).unwrap_err());
            lost("Index::search", index.search(&data[..16], 1).unwrap_err());
            lost("Index::add", index.add(&data[..16]).unwrap_err());
            lost("Index::new", Index::new(&ctx, 16, Metric::Dot, DType::F32).unwrap_err());
            let hx = HostTensor::new(&data, s).unwrap();
            lost("Backend::Gpu", Backend::Gpu(ctx.clone()).attention(&hx, &hx, &hx, None, &o).unwrap_err());
            let msg = ctx.attention(&x, &x, &x, None, &o).unwrap_err().to_string();
            assert!(msg.contains("lost"), "the error says so: {msg}");
        });
        // a new context works
        let fresh = gpu();
        let y = fresh.upload(&data, s).unwrap();
        assert!(fresh.attention(&y, &y, &y, None, &o).unwrap().download_blocking(&fresh).unwrap().iter().all(|v| v.is_finite()));
    }
}

gpu_test! {
    fn a_lost_callers_device_is_noticed_and_can_be_reported() {
        let _turn = turn();
        // a device the crate did not create: its lost callback is the caller's, so the crate
        // notices the loss at the first call that uploads, records or reads back
        let (device, queue) = pollster::block_on(async {
            let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
            desc.backends -= wgpu::Backends::GL;
            let instance = wgpu::Instance::new(desc);
            let adapter = instance.request_adapter(&Default::default()).await.unwrap();
            adapter.request_device(&wgpu::DeviceDescriptor { required_limits: adapter.limits(), ..Default::default() }).await.unwrap()
        });
        let ctx = Context::from_device(device.clone(), queue);
        let s = Shape::new(1, 1, 4, 8);
        let x = ctx.upload(&rand_vec(3, s.numel(), 1.0), s).unwrap();
        device.destroy();
        within(60, "calls on a lost caller's device", || {
            let e = ctx.attention(&x, &x, &x, None, &AttentionOptions::default()).unwrap_err();
            assert!(matches!(e, Error::DeviceLost(_)), "{e}");
            // from then on, every call
            assert!(matches!(ctx.zeros(s, Layout::Bhsd, DType::F32), Err(Error::DeviceLost(_))));
            assert!(matches!(x.download_blocking(&ctx), Err(Error::DeviceLost(_))));
        });
        // a caller who watches the device says so directly
        let ctx2 = Context::from_device(device, ctx.queue().clone());
        ctx2.mark_device_lost("reported by the application");
        let e = ctx2.zeros(s, Layout::Bhsd, DType::F32).unwrap_err();
        assert_eq!(e, Error::DeviceLost("reported by the application".into()));
    }
}
