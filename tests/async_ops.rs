//! The async forms: every one-shot operation awaited on a plain executor with no thread polling
//! the device gives what its blocking form gives; the futures are `Send` (they can be spawned on
//! a multi-threaded runtime); errors are the blocking forms' errors; several calls interleave on
//! one thread.

mod common;
use common::*;
use std::future::Future;
use wgpu_attention::*;

fn assert_send<F: Future + Send>(f: F) -> F {
    f
}

gpu_test! {
fn every_operation_awaited_equals_blocking() {
    let ctx = shared_gpu();
    let (b, h, hkv, n, d) = (2usize, 4usize, 2usize, 33usize, 16usize);
    let (qs, ks) = (Shape::new(b, h, n, d), Shape::new(b, hkv, n, d));
    let (q, k, v) = (rand_vec(1, qs.numel(), 1.0), rand_vec(2, ks.numel(), 1.0), rand_vec(3, ks.numel(), 1.0));
    let o = AttentionOptions { causal: true, ..Default::default() };
    let g = PageGeometry { num_pages: 32, page_size: 4, kv_heads: hkv, head_dim: d };
    let entries: Vec<u32> = (0..32).collect();
    let lens = [n as u32, n as u32];
    let table = BlockTable::new(&entries, 16, &lens).unwrap();
    let keys = rand_vec(4, 500 * d, 1.0);

    // blocking forms
    let (tq, tk, tv) = (ctx.upload(&q, qs).unwrap(), ctx.upload(&k, ks).unwrap(), ctx.upload(&v, ks).unwrap());
    let get = |t: &Tensor| t.download_blocking(&ctx).unwrap();
    let want_attn = get(&ctx.attention(&tq, &tk, &tv, None, &o).unwrap());
    let (wo, wl) = ctx.attention_with_lse(&tq, &tk, &tv, None, &o).unwrap();
    let (uo, uw) = ctx.attention_unfused(&tq, &tk, &tv, None, &o).unwrap();
    let want_sim = get(&ctx.similarity(&tq, &tk, Similarity::Cosine).unwrap());
    let want_soft = get(&ctx.softmax(&tq, None, &SoftmaxOptions::default()).unwrap());
    let want_ws = get(&ctx.weighted_sum(&uw, &tv).unwrap());
    let flat = |x: &[f32], rows| ctx.upload(x, Shape::new(1, 1, rows, d)).unwrap();
    let want_top = ctx.top_k(&flat(&q[..5 * d], 5), &flat(&keys, 500), 7, Metric::Cosine).unwrap();
    let mut index = Index::new(&ctx, d, Metric::L2, DType::F32).unwrap();
    index.add(&keys).unwrap();
    let want_search = index.search(&q[..3 * d], 4).unwrap();
    let cache = PagedKvCache::new(&ctx, g, DType::F32).unwrap();
    ctx.append_kv(&cache, &table, &tk, &tv).unwrap();
    let want_paged = get(&ctx.paged_attention(&tq, &cache, &table, &o).unwrap());

    // async forms, on an executor that only polls the futures
    let fut = assert_send(async {
        let q = ctx.upload_async(&q, qs).await?;
        let k = ctx.upload_async(&k, ks).await?;
        let v = ctx.upload_with_layout_async(&v, ks, Layout::Bhsd).await?;
        let attn = ctx.attention_async(&q, &k, &v, None, &o).await?.download(&ctx).await?;
        let (lo, ll) = ctx.attention_with_lse_async(&q, &k, &v, None, &o).await?;
        let (fo, fw) = ctx.attention_unfused_async(&q, &k, &v, None, &o).await?;
        let sim = ctx.similarity_async(&q, &k, Similarity::Cosine).await?.download(&ctx).await?;
        let soft = ctx.softmax_async(&q, None, &SoftmaxOptions::default()).await?.download(&ctx).await?;
        let ws = ctx.weighted_sum_async(&fw, &v).await?.download(&ctx).await?;
        let qf = ctx.upload_async(&q.download(&ctx).await?[..5 * d], Shape::new(1, 1, 5, d)).await?;
        let kf = ctx.upload_async(&keys, Shape::new(1, 1, 500, d)).await?;
        let top = ctx.top_k_async(&qf, &kf, 7, Metric::Cosine).await?;
        let search = index.search_async(&q.download(&ctx).await?[..3 * d], 4).await?;
        let cache = PagedKvCache::new(&ctx, g, DType::F32)?;
        ctx.append_kv_async(&cache, &table, &k, &v).await?;
        let paged = ctx.paged_attention_async(&q, &cache, &table, &o).await?.download(&ctx).await?;
        let (plo, pll) = ctx.paged_attention_with_lse_async(&q, &cache, &table, &o).await?;
        let lse = (ll.download(&ctx).await?, pll.download(&ctx).await?, lo.download(&ctx).await?, plo.download(&ctx).await?);
        Ok::<_, Error>((attn, lse, fo.download(&ctx).await?, fw.download(&ctx).await?, sim, soft, ws, top, search, paged))
    });
    let (attn, (lse, plse, lo, plo), fo, fw, sim, soft, ws, top, search, paged) =
        within(120, "the async operations", || futures::executor::block_on(fut)).unwrap();
    // the same kernels on the same inputs: bit for bit
    assert_eq!(attn, want_attn);
    assert_eq!((lo, lse), (get(&wo), get(&wl)));
    assert_eq!((fo, fw), (get(&uo), get(&uw)));
    assert_eq!((sim, soft, ws), (want_sim, want_soft, want_ws));
    assert_eq!((top.indices, top.scores), (want_top.indices, want_top.scores));
    assert_eq!((search.top.indices, search.top.scores), (want_search.top.indices, want_search.top.scores));
    assert_eq!(paged, want_paged);
    assert_eq!(plo, want_paged);
    assert_eq!(plse.len(), b * h * n);
}
}

gpu_test! {
fn calls_interleave_on_one_thread_and_errors_match() {
    let ctx = shared_gpu();
    let s = Shape::new(1, 2, 40, 8);
    let x = ctx.upload(&rand_vec(9, s.numel(), 1.0), s).unwrap();
    let y = ctx.upload(&rand_vec(10, s.numel(), 1.0), s).unwrap();
    let o = AttentionOptions::default();
    let (a, b) = futures::executor::block_on(async {
        let (a, b) = futures::join!(ctx.attention_async(&x, &x, &x, None, &o), ctx.attention_async(&y, &y, &y, None, &o));
        let (a, b) = (a.unwrap(), b.unwrap());
        futures::join!(a.download(&ctx), b.download(&ctx))
    });
    assert_eq!(a.unwrap(), ctx.attention(&x, &x, &x, None, &o).unwrap().download_blocking(&ctx).unwrap());
    assert_eq!(b.unwrap(), ctx.attention(&y, &y, &y, None, &o).unwrap().download_blocking(&ctx).unwrap());
    // an invalid call: the same error either way
    let odd = ctx.upload(&rand_vec(11, 2 * 40 * 9, 1.0), Shape::new(1, 2, 40, 9)).unwrap();
    let blocking = ctx.attention(&x, &odd, &odd, None, &o).unwrap_err();
    let awaited = futures::executor::block_on(ctx.attention_async(&x, &odd, &odd, None, &o)).unwrap_err();
    assert_eq!(blocking, awaited);
    assert!(matches!(awaited, Error::ShapeMismatch { argument: "k", .. }), "{awaited}");
}
}

gpu_test! {
fn spawned_on_another_thread() {
    // a Send future moved to (and completed on) a thread other than the one that made it
    let ctx = shared_gpu();
    let s = Shape::new(1, 1, 16, 8);
    let data = rand_vec(12, s.numel(), 1.0);
    let x = ctx.upload(&data, s).unwrap();
    let want = ctx.softmax(&x, None, &SoftmaxOptions::default()).unwrap().download_blocking(&ctx).unwrap();
    let fut = {
        let (ctx, x) = (ctx.clone(), x.clone());
        assert_send(async move { ctx.softmax_async(&x, None, &SoftmaxOptions::default()).await?.download(&ctx).await })
    };
    let got = std::thread::spawn(move || futures::executor::block_on(fut)).join().unwrap().unwrap();
    assert_eq!(got, want);
}
}
