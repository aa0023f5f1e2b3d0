//! Strided views (`Tensor::from_buffer_strided`): every operation on views of one interleaved
//! buffer (a fused QKV projection `[batch, seq, heads_q + 2·heads_kv, dim]`, rows padded) gives
//! what it gives on contiguous copies of the same values; strided outputs write only their own
//! elements; overlapping outputs are refused.

mod common;
use common::*;
use wgpu::util::DeviceExt;
use wgpu_attention::*;

/// Tensors in BHSD order packed into one buffer laid out `[batch, seq, Σ heads, dim]` with `pad`
/// extra elements per (batch, seq) row and `lead` elements before everything; the padding holds
/// a sentinel.
struct Packed {
    buffer: wgpu::Buffer,
    strides: Strides,
    /// Element offset of each part.
    offsets: Vec<u64>,
    host: Vec<f32>,
}

const SENTINEL: f32 = 12345.0;

fn pack(ctx: &Context, parts: &[(&[f32], Shape)], pad: usize, lead: usize) -> Packed {
    let (b, s, d) = (parts[0].1.batch, parts[0].1.seq, parts[0].1.dim);
    let heads: usize = parts.iter().map(|p| p.1.heads).sum();
    let row = heads * d + pad;
    let strides = Strides { batch: s * row, head: d, seq: row };
    let mut host = vec![SENTINEL; lead + b * s * row];
    let mut offsets = vec![];
    let mut h0 = 0;
    for (data, shape) in parts {
        assert_eq!((shape.batch, shape.seq, shape.dim), (b, s, d));
        let off = lead + h0 * d;
        offsets.push(off as u64);
        for bi in 0..b {
            for hi in 0..shape.heads {
                for si in 0..s {
                    for di in 0..d {
                        let src = ((bi * shape.heads + hi) * s + si) * d + di;
                        host[off + bi * strides.batch + hi * strides.head + si * strides.seq + di] = data[src];
                    }
                }
            }
        }
        h0 += shape.heads;
    }
    let buffer = ctx.device().create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("packed"),
        contents: bytemuck::cast_slice(&host),
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
    });
    Packed { buffer, strides, offsets, host }
}

impl Packed {
    fn view(&self, ctx: &Context, i: usize, shape: Shape) -> Tensor {
        Tensor::from_buffer_strided(ctx, self.buffer.clone(), self.offsets[i], shape, self.strides, DType::F32).unwrap()
    }
}

fn get(ctx: &Context, t: &Tensor) -> Vec<f32> {
    t.download_blocking(ctx).unwrap()
}

/// A downloaded tensor's values in BHSD order.
fn bhsd(ctx: &Context, t: &Tensor) -> Vec<f32> {
    let (s, data) = (t.shape(), get(ctx, t));
    let mut out = Vec::with_capacity(s.numel());
    for b in 0..s.batch {
        for h in 0..s.heads {
            for i in 0..s.seq {
                for d in 0..s.dim {
                    out.push(at(&data, s, t.layout(), b, h, i, d) as f32);
                }
            }
        }
    }
    out
}

/// Shapes: (batch, heads, kv_heads, nq = nk, d, pad, lead) — aligned (vector loads) and not.
const SHAPES: [(usize, usize, usize, usize, usize, usize, usize); 4] =
    [(1, 1, 1, 1, 4, 0, 0), (2, 4, 2, 37, 16, 4, 8), (1, 3, 3, 20, 7, 1, 3), (2, 2, 1, 65, 32, 0, 1)];

gpu_test! {
fn attention_on_fused_qkv_views_equals_contiguous() {
    let ctx = shared_gpu();
    for (i, &(b, h, hkv, n, d, pad, lead)) in SHAPES.iter().enumerate() {
        let (qs, ks) = (Shape::new(b, h, n, d), Shape::new(b, hkv, n, d));
        let (q, k, v) = (rand_vec(10 + i as u64, qs.numel(), 1.0), rand_vec(20 + i as u64, ks.numel(), 1.0), rand_vec(30 + i as u64, ks.numel(), 1.0));
        let p = pack(&ctx, &[(&q, qs), (&k, ks), (&v, ks)], pad, lead);
        let (sq, sk, sv) = (p.view(&ctx, 0, qs), p.view(&ctx, 1, ks), p.view(&ctx, 2, ks));
        assert_eq!(sq.is_contiguous(), qs.numel() == d, "one row is contiguous, more are interleaved");
        assert_eq!(sq.layout(), Layout::Bshd, "seq stride > head stride: outputs are [b, s, h, d]");
        // the view reads back as its values, in its layout
        assert_eq!(bhsd(&ctx, &sq), q, "download of a view");
        let (cq, ck, cv) = (ctx.upload(&q, qs).unwrap(), ctx.upload(&k, ks).unwrap(), ctx.upload(&v, ks).unwrap());
        let lens: Vec<u32> = (0..b).map(|x| (n - x * n / 3).max(1) as u32).collect();
        let options = [
            AttentionOptions::default(),
            AttentionOptions { causal: true, ..Default::default() },
            AttentionOptions { key_lengths: Some(&lens), window: Some(Window { left: 5, right: Some(2) }), ..Default::default() },
        ];
        for (j, o) in options.iter().enumerate() {
            for variant in [AttentionVariant::Auto, AttentionVariant::Fused(Loads::Scalar), AttentionVariant::SplitK(Loads::Scalar), AttentionVariant::Unfused] {
                let o = AttentionOptions { variant, ..*o };
                let what = format!("shape {i}, options {j}, {variant:?}");
                let want = ctx.attention(&cq, &ck, &cv, None, &o).unwrap();
                let got = ctx.attention(&sq, &sk, &sv, None, &o).unwrap();
                assert_eq!(got.layout(), Layout::Bshd);
                assert_close(&what, &bhsd(&ctx, &got), &to_f64(&bhsd(&ctx, &want)), 1e-5);
                if variant != AttentionVariant::Unfused {
                    let (_, lse) = ctx.attention_with_lse(&sq, &sk, &sv, None, &o).unwrap();
                    let (_, want_lse) = ctx.attention_with_lse(&cq, &ck, &cv, None, &o).unwrap();
                    assert_lse(&format!("{what} lse"), &get(&ctx, &lse), &to_f64(&get(&ctx, &want_lse)), 1e-5);
                }
            }
        }
        // the plan: vector loads only when offset and strides are multiples of 4
        let plan = ctx.plan_attention(&sq, &sk, &sv, None, &AttentionOptions::default(), false).unwrap();
        let vec4 = d % 4 == 0 && p.strides.seq.is_multiple_of(4) && p.offsets.iter().all(|o| o % 4 == 0);
        let vec4_plan = matches!(
            plan.variant,
            AttentionVariant::Fused(Loads::Vec4) | AttentionVariant::SplitK(Loads::Vec4) | AttentionVariant::Decode(Loads::Vec4)
        );
        assert_eq!(vec4_plan, vec4, "shape {i}: {}", plan.variant);
    }
}
}

gpu_test! {
fn similarity_softmax_weighted_sum_on_views() {
    let ctx = shared_gpu();
    for (i, &(b, h, hkv, n, d, pad, lead)) in SHAPES.iter().enumerate() {
        let (qs, ks) = (Shape::new(b, h, n, d), Shape::new(b, hkv, n, d));
        let (q, k) = (rand_vec(40 + i as u64, qs.numel(), 1.0), rand_vec(50 + i as u64, ks.numel(), 1.0));
        let p = pack(&ctx, &[(&q, qs), (&k, ks)], pad, lead);
        let (sq, sk) = (p.view(&ctx, 0, qs), p.view(&ctx, 1, ks));
        let (cq, ck) = (ctx.upload(&q, qs).unwrap(), ctx.upload(&k, ks).unwrap());
        for metric in [Similarity::Dot, Similarity::ScaledDot(None), Similarity::Cosine] {
            let got = get(&ctx, &ctx.similarity(&sq, &sk, metric).unwrap());
            let want = get(&ctx, &ctx.similarity(&cq, &ck, metric).unwrap());
            assert_close(&format!("similarity {metric:?}, shape {i}"), &got, &to_f64(&want), 1e-5);
        }
        // softmax over the rows of a view (its last dimension), output in the view's layout
        let (got, want) = (ctx.softmax(&sq, None, &SoftmaxOptions::default()).unwrap(), ctx.softmax(&cq, None, &SoftmaxOptions::default()).unwrap());
        assert_close(&format!("softmax, shape {i}"), &bhsd(&ctx, &got), &to_f64(&bhsd(&ctx, &want)), 1e-6);
        // weights (contiguous) times a strided v
        let w = ctx.softmax(&ctx.similarity(&cq, &ck, Similarity::Dot).unwrap(), None, &SoftmaxOptions::default()).unwrap();
        let got = bhsd(&ctx, &ctx.weighted_sum(&w, &sk).unwrap());
        let want = bhsd(&ctx, &ctx.weighted_sum(&w, &ck).unwrap());
        assert_close(&format!("weighted sum, shape {i}"), &got, &to_f64(&want), 1e-5);
    }
}
}

gpu_test! {
fn top_k_over_padded_key_rows() {
    let ctx = shared_gpu();
    for (nk, d, pad, lead) in [(1usize, 3usize, 1usize, 0usize), (300, 16, 4, 4), (1000, 9, 3, 1)] {
        let (keys, queries) = (rand_vec(nk as u64, nk * d, 1.0), rand_vec(7, 5 * d, 1.0));
        let p = pack(&ctx, &[(&keys, Shape::new(1, 1, nk, d))], pad, lead);
        let view = p.view(&ctx, 0, Shape::new(1, 1, nk, d));
        let q = ctx.upload(&queries, Shape::new(1, 1, 5, d)).unwrap();
        let contiguous = ctx.upload(&keys, Shape::new(1, 1, nk, d)).unwrap();
        for metric in [Metric::Dot, Metric::Cosine, Metric::L2] {
            let k = nk.min(10);
            let got = ctx.top_k(&q, &view, k, metric).unwrap();
            let want = ctx.top_k(&q, &contiguous, k, metric).unwrap();
            assert_eq!(got.indices, want.indices, "nk {nk}, {metric:?}");
            assert_close(&format!("nk {nk}, {metric:?}"), &got.scores, &to_f64(&want.scores), 1e-6);
        }
    }
}
}

gpu_test! {
fn paged_cache_from_views() {
    let ctx = shared_gpu();
    let (b, h, hkv, d, n) = (2usize, 4usize, 2usize, 16usize, 7usize);
    let g = PageGeometry { num_pages: 8, page_size: 4, kv_heads: hkv, head_dim: d };
    let entries = [0u32, 1, 2, 3, 4, 5, 6, 7];
    let table = BlockTable::new(&entries, 4, &[7, 7]).unwrap();
    // a prefill of 7 tokens per sequence from a fused [b, n, h + 2 hkv, d] projection
    let (qs, ks) = (Shape::new(b, h, n, d), Shape::new(b, hkv, n, d));
    let (q, k, v) = (rand_vec(1, qs.numel(), 1.0), rand_vec(2, ks.numel(), 1.0), rand_vec(3, ks.numel(), 1.0));
    let p = pack(&ctx, &[(&q, qs), (&k, ks), (&v, ks)], 2, 1);
    let o = AttentionOptions { causal: true, ..Default::default() };
    let mut results = vec![];
    for strided in [false, true] {
        let cache = PagedKvCache::new(&ctx, g, DType::F32).unwrap();
        let (tq, tk, tv) = if strided {
            (p.view(&ctx, 0, qs), p.view(&ctx, 1, ks), p.view(&ctx, 2, ks))
        } else {
            (ctx.upload(&q, qs).unwrap(), ctx.upload(&k, ks).unwrap(), ctx.upload(&v, ks).unwrap())
        };
        ctx.append_kv(&cache, &table, &tk, &tv).unwrap();
        let out = ctx.paged_attention(&tq, &cache, &table, &o).unwrap();
        results.push(bhsd(&ctx, &out));
    }
    assert_close("paged attention from views", &results[1], &to_f64(&results[0]), 1e-5);
}
}

gpu_test! {
fn strided_outputs_write_only_their_elements() {
    let ctx = shared_gpu();
    let (b, h, n, d) = (2usize, 3usize, 9usize, 8usize);
    let s = Shape::new(b, h, n, d);
    let x = rand_vec(5, s.numel(), 1.0);
    let t = ctx.upload(&x, s).unwrap();
    // the output: every row padded by 3 elements, [b, n, h, d + 3]
    let zeros = vec![0.0f32; s.numel()];
    let p = pack(&ctx, &[(&zeros, s)], 3, 2);
    let out = p.view(&ctx, 0, s);
    let mut enc = ctx.device().create_command_encoder(&Default::default());
    let o = AttentionOptions::default();
    ctx.encode_attention(&mut enc, &AttentionCall::new(&t, &t, &t, &out), &o).unwrap();
    ctx.queue().submit([enc.finish()]);
    let want = bhsd(&ctx, &ctx.attention(&t, &t, &t, None, &o).unwrap());
    assert_close("strided output", &bhsd(&ctx, &out), &to_f64(&want), 1e-6);
    // the padding keeps its sentinel
    let whole = Tensor::from_buffer(&ctx, p.buffer.clone(), 0, Shape::new(1, 1, 1, p.host.len()), Layout::Bhsd, DType::F32);
    let all = match whole {
        Ok(w) => get(&ctx, &w),
        // wider than one row allows: read it as rows of 1
        Err(_) => get(&ctx, &Tensor::from_buffer(&ctx, p.buffer.clone(), 0, Shape::new(1, 1, p.host.len(), 1), Layout::Bhsd, DType::F32).unwrap()),
    };
    let untouched = all.iter().zip(&p.host).filter(|(_, &h)| h == SENTINEL).all(|(&a, _)| a == SENTINEL);
    assert!(untouched, "a strided output wrote into its padding");
    // outputs of the other encode calls through a view
    let mut enc = ctx.device().create_command_encoder(&Default::default());
    ctx.encode_softmax(&mut enc, &t, None, &SoftmaxOptions::default(), &out).unwrap();
    ctx.queue().submit([enc.finish()]);
    let want = bhsd(&ctx, &ctx.softmax(&t, None, &SoftmaxOptions::default()).unwrap());
    assert_close("strided softmax output", &bhsd(&ctx, &out), &to_f64(&want), 1e-6);
}
}

gpu_test! {
fn views_are_checked() {
    let ctx = shared_gpu();
    let s = Shape::new(1, 2, 4, 8);
    let buf = ctx.zeros(Shape::new(1, 1, 8, 8), Layout::Bhsd, DType::F32).unwrap();
    // the last element must fit: (2-1)·8 + (4-1)·16 + 8 = 64 elements fit, a seq stride of 17 does not
    let ok = Strides { batch: 0, head: 8, seq: 16 };
    assert!(Tensor::from_buffer_strided(&ctx, buf.buffer().clone(), 0, s, ok, DType::F32).is_ok());
    let e = Tensor::from_buffer_strided(&ctx, buf.buffer().clone(), 0, s, Strides { seq: 17, ..ok }, DType::F32).unwrap_err();
    assert!(matches!(e, Error::BufferTooSmall { argument: "buffer", .. }), "{e}");
    let e = Tensor::from_buffer_strided(&ctx, buf.buffer().clone(), 0, s, Strides { seq: usize::MAX, ..ok }, DType::F32).unwrap_err();
    assert!(matches!(e, Error::TooLarge { argument: "strides", .. }), "{e}");
    // a broadcast view (head stride 0) is a valid input, and refused as an output
    let bcast = Tensor::from_buffer_strided(&ctx, buf.buffer().clone(), 0, s, Strides { head: 0, ..ok }, DType::F32).unwrap();
    let x = ctx.upload(&rand_vec(1, s.numel(), 1.0), s).unwrap();
    let two = ctx.upload(&rand_vec(2, s.numel(), 1.0), s).unwrap();
    ctx.attention(&x, &bcast, &bcast, None, &AttentionOptions::default()).unwrap();
    let mut enc = ctx.device().create_command_encoder(&Default::default());
    let e = ctx.encode_attention(&mut enc, &AttentionCall::new(&x, &two, &two, &bcast), &AttentionOptions::default()).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { argument: "out", ref message } if message.contains("overlap")), "{e}");
    // rows that overlap (seq stride 4 < dim 8) likewise
    let rows = Tensor::from_buffer_strided(&ctx, buf.buffer().clone(), 0, s, Strides { batch: 0, head: 32, seq: 4 }, DType::F32).unwrap();
    let e = ctx.encode_softmax(&mut enc, &x, None, &SoftmaxOptions::default(), &rows).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { argument: "out", .. }), "{e}");
    // a head stride equal to the seq stride's extent is fine; batch of 1 ignores its stride
    let exact = Tensor::from_buffer_strided(&ctx, buf.buffer().clone(), 0, s, Strides { batch: 1 << 40, head: 32, seq: 8 }, DType::F32);
    assert!(matches!(exact, Ok(ref t) if t.is_contiguous()), "{exact:?}");
}
}
