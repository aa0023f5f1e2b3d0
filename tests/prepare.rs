//! Compiling ahead of time and keeping compiled pipelines across runs: `prepare_attention`
//! compiles exactly what the call then runs (the call compiles nothing more), and a context that
//! loads another's pipeline-cache data computes the same results.

mod common;
use common::*;
use wgpu_attention::*;

/// Prepares `shapes` on a fresh context, then runs the call: it must compile nothing more, and
/// agree with the CPU path.
fn prepared_call_compiles_nothing(shapes: AttentionShapes, opts: &AttentionOptions) {
    let ctx = gpu();
    let plan = ctx.prepare_attention(&shapes, opts).unwrap();
    let compiled = ctx.compiled_pipelines();
    assert!(compiled >= 1, "{shapes:?}: prepare compiled nothing");
    let (qs, ks) = (shapes.q, shapes.kv);
    let (q, k, v) = (rand_vec(1, qs.numel(), 1.0), rand_vec(2, ks.numel(), 1.0), rand_vec(3, ks.numel(), 1.0));
    let upload = |x: &[f32], s: Shape| match shapes.dtype {
        DType::F32 => ctx.upload(x, s).unwrap(),
        DType::F16 => {
            let h: Vec<half::f16> = x.iter().map(|&v| half::f16::from_f32(v)).collect();
            ctx.upload(&h, s).unwrap()
        }
    };
    let got = if shapes.paged {
        // one sequence per batch entry, its pages in order, filled by append (whose kernel is
        // not part of the attention plan: counted after it)
        let blocks = ks.seq.div_ceil(16);
        let g = PageGeometry { num_pages: ks.batch * blocks, page_size: 16, kv_heads: ks.heads, head_dim: ks.dim };
        let cache = PagedKvCache::new(&ctx, g, shapes.dtype).unwrap();
        let table: Vec<u32> = (0..(ks.batch * blocks) as u32).collect();
        let lens = vec![ks.seq as u32; ks.batch];
        let bt = BlockTable::new(&table, blocks, &lens).unwrap();
        ctx.append_kv(&cache, &bt, &upload(&k, ks), &upload(&v, ks)).unwrap();
        let after_append = ctx.compiled_pipelines();
        let out = ctx.paged_attention(&upload(&q, qs), &cache, &bt, opts).unwrap().download_blocking(&ctx).unwrap();
        (out, after_append)
    } else {
        let (gq, gk, gv) = (upload(&q, qs), upload(&k, ks), upload(&v, ks));
        let out = if shapes.lse {
            ctx.attention_with_lse(&gq, &gk, &gv, None, opts).unwrap().0
        } else {
            ctx.attention(&gq, &gk, &gv, None, opts).unwrap()
        };
        assert_eq!(ctx.plan_attention(&gq, &gk, &gv, None, opts, shapes.lse).unwrap(), plan);
        (out.download_blocking(&ctx).unwrap(), compiled)
    };
    let (got, before) = got;
    assert_eq!(ctx.compiled_pipelines(), before, "{shapes:?} {opts:?}: the call compiled more than prepare did");
    let round = |x: &[f32]| -> Vec<f32> {
        x.iter().map(|&v| if shapes.dtype == DType::F16 { half::f16::from_f32(v).to_f32() } else { v }).collect()
    };
    let (hq, hk, hv) = (round(&q), round(&k), round(&v));
    let (want, _) = cpu::attention(
        &HostTensor::new(&hq, qs).unwrap(),
        &HostTensor::new(&hk, ks).unwrap(),
        &HostTensor::new(&hv, ks).unwrap(),
        None,
        opts,
    )
    .unwrap();
    let tol = if shapes.dtype == DType::F16 { 2e-3 } else { 1e-5 };
    let want64: Vec<f64> = want.iter().map(|&x| x as f64).collect();
    assert_close(&format!("prepared {shapes:?}"), &got, &want64, tol);
}

fn shapes(b: usize, h: usize, hkv: usize, nq: usize, nk: usize, d: usize, dtype: DType) -> AttentionShapes {
    AttentionShapes { q: Shape::new(b, h, nq, d), kv: Shape::new(b, hkv, nk, d), dtype, paged: false, lse: false }
}

gpu_test! {
    fn prepare_compiles_what_each_variant_runs() {
        let auto = AttentionOptions::default();
        // prefill (fused), decode with GQA (decode kernel and merge), few queries against many
        // keys at head dim 256 (split-K and merge), causal with the log-sum-exp
        prepared_call_compiles_nothing(shapes(1, 2, 2, 70, 90, 64, DType::F32), &auto);
        prepared_call_compiles_nothing(shapes(1, 8, 2, 1, 3000, 64, DType::F32), &auto);
        prepared_call_compiles_nothing(shapes(1, 2, 1, 2, 3000, 256, DType::F32), &auto);
        let causal = AttentionOptions { causal: true, ..Default::default() };
        prepared_call_compiles_nothing(AttentionShapes { lse: true, ..shapes(2, 2, 2, 33, 33, 40, DType::F32) }, &causal);
        // forced unfused (its three kernels), odd head dim (scalar loads)
        let unfused = AttentionOptions { variant: AttentionVariant::Unfused, ..Default::default() };
        prepared_call_compiles_nothing(shapes(1, 2, 2, 9, 30, 16, DType::F32), &unfused);
        prepared_call_compiles_nothing(shapes(1, 1, 1, 5, 7, 3, DType::F32), &auto);
        // a paged decode step in f16 where the adapter has f16
        let ctx = shared_gpu();
        if f16_supported(&ctx) {
            prepared_call_compiles_nothing(AttentionShapes { paged: true, ..shapes(2, 4, 2, 1, 100, 64, DType::F16) }, &auto);
            prepared_call_compiles_nothing(shapes(1, 2, 2, 64, 64, 32, DType::F16), &auto);
        }
        // a call that cannot be prepared gets the call's error
        let bad = AttentionShapes { kv: Shape::new(1, 3, 10, 64), ..shapes(1, 2, 2, 4, 10, 64, DType::F32) };
        assert!(matches!(ctx.prepare_attention(&bad, &auto), Err(Error::HeadsNotDivisible { .. })));
    }
}

gpu_test! {
    fn pipeline_cache_data_loads_into_a_new_context() {
        let s = Shape::new(1, 2, 20, 32);
        let data = rand_vec(9, s.numel(), 1.0);
        let run = |ctx: &Context| {
            let t = ctx.upload(&data, s).unwrap();
            ctx.attention(&t, &t, &t, None, &AttentionOptions::default()).unwrap().download_blocking(ctx).unwrap()
        };
        let first = gpu();
        let want = run(&first);
        if !first.info().features.contains(wgpu::Features::PIPELINE_CACHE) {
            // documented: no data where the device lacks the feature, and the info says so
            assert!(first.pipeline_cache_data().is_none());
            assert!(first.info().missing_features().iter().any(|(f, _)| *f == wgpu::Features::PIPELINE_CACHE));
            return;
        }
        let bytes = first.pipeline_cache_data().expect("the cache holds the compiled pipeline");
        assert!(!bytes.is_empty());
        assert!(first.pipeline_cache_key().is_some());
        let second = gpu();
        // SAFETY: the bytes are what pipeline_cache_data returned on this adapter
        assert!(unsafe { second.load_pipeline_cache(&bytes) });
        assert_eq!(run(&second), want, "the same results through the loaded cache");
    }
}
