//! A paged KV cache: appending through the block table (GPU pools equal to the CPU twin's), and
//! attention over pages (GPU, every variant that reads pages, and the CPU path) against an
//! independent f64 reference computed on each sequence's contiguous K and V, with every option;
//! the same result from the paged and the contiguous cache; bad tables refused before dispatch.

mod common;
use common::*;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use wgpu_attention::*;

const PS: usize = 16;

/// Sequences of the given final lengths, their pages scattered over the pool in a random order,
/// with their K and V (per sequence, `[kv_heads, len, d]`).
struct Seqs {
    g: PageGeometry,
    lens: Vec<u32>,
    blocks: usize,
    table: Vec<u32>,
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

impl Seqs {
    fn new(lens: &[u32], kv_heads: usize, d: usize, seed: u64) -> Self {
        let blocks = lens.iter().map(|&l| (l as usize).div_ceil(PS)).max().unwrap_or(1).max(1);
        let num_pages = lens.len() * blocks + 3;
        let mut pages: Vec<u32> = (0..num_pages as u32).collect();
        pages.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        let table: Vec<u32> = (0..lens.len() * blocks).map(|i| pages[i]).collect();
        let k = lens
            .iter()
            .enumerate()
            .map(|(b, &l)| rand_vec(seed + 10 + b as u64, kv_heads * l as usize * d, 1.0))
            .collect();
        let v = lens
            .iter()
            .enumerate()
            .map(|(b, &l)| rand_vec(seed + 50 + b as u64, kv_heads * l as usize * d, 1.0))
            .collect();
        Seqs {
            g: PageGeometry { num_pages, page_size: PS, kv_heads, head_dim: d },
            lens: lens.to_vec(),
            blocks,
            table,
            k,
            v,
        }
    }

    fn table(&self) -> BlockTable<'_> {
        BlockTable::new(&self.table, self.blocks, &self.lens).unwrap()
    }

    /// Tokens [from, to) of sequence b as `[1, kv_heads, to - from, d]`.
    fn slice(&self, x: &[f32], b: usize, from: usize, to: usize) -> Vec<f32> {
        let (l, d) = (self.lens[b] as usize, self.g.head_dim);
        (0..self.g.kv_heads).flat_map(|h| x[(h * l + from) * d..(h * l + to) * d].to_vec()).collect()
    }
}

/// Fills a GPU cache and its CPU twin the way a server would: each sequence's prompt (all but
/// its last token) appended alone, then one batched decode step appending the last token of
/// every sequence. Returns both caches.
fn fill(ctx: Option<&Context>, s: &Seqs) -> (Option<PagedKvCache>, HostKvCache) {
    let mut host = HostKvCache::new(s.g).unwrap();
    let gpu = ctx.map(|c| PagedKvCache::new(c, s.g, DType::F32).unwrap());
    let (kvh, d) = (s.g.kv_heads, s.g.head_dim);
    for b in 0..s.lens.len() {
        let l = s.lens[b] as usize;
        if l < 2 {
            continue;
        }
        let prompt = [l as u32 - 1];
        let row = &s.table[b * s.blocks..(b + 1) * s.blocks];
        let t = BlockTable::new(row, s.blocks, &prompt).unwrap();
        let shape = Shape::new(1, kvh, l - 1, d);
        let (k, v) = (s.slice(&s.k[b], b, 0, l - 1), s.slice(&s.v[b], b, 0, l - 1));
        cpu::append_kv(&mut host, &t, &HostTensor::new(&k, shape).unwrap(), &HostTensor::new(&v, shape).unwrap())
            .unwrap();
        if let (Some(ctx), Some(cache)) = (ctx, &gpu) {
            ctx.append_kv(cache, &t, &ctx.upload(&k, shape).unwrap(), &ctx.upload(&v, shape).unwrap()).unwrap();
        }
    }
    // the decode step: one token for every sequence of length >= 1, batched
    let live: Vec<usize> = (0..s.lens.len()).filter(|&b| s.lens[b] >= 1).collect();
    let lens: Vec<u32> = live.iter().map(|&b| s.lens[b]).collect();
    let table: Vec<u32> = live.iter().flat_map(|&b| s.table[b * s.blocks..(b + 1) * s.blocks].to_vec()).collect();
    let t = BlockTable::new(&table, s.blocks, &lens).unwrap();
    let shape = Shape::new(live.len(), kvh, 1, d);
    let last = |x: &[Vec<f32>]| -> Vec<f32> {
        live.iter().flat_map(|&b| s.slice(&x[b], b, s.lens[b] as usize - 1, s.lens[b] as usize)).collect()
    };
    let (k, v) = (last(&s.k), last(&s.v));
    cpu::append_kv(&mut host, &t, &HostTensor::new(&k, shape).unwrap(), &HostTensor::new(&v, shape).unwrap()).unwrap();
    if let (Some(ctx), Some(cache)) = (ctx, &gpu) {
        ctx.append_kv(cache, &t, &ctx.upload(&k, shape).unwrap(), &ctx.upload(&v, shape).unwrap()).unwrap();
    }
    (gpu, host)
}

/// The reference: each sequence alone, contiguous, its queries at its last positions.
fn reference(s: &Seqs, q: &[f32], heads: usize, nq: usize, c: &Case) -> (Vec<f64>, Vec<f64>) {
    let (kvh, d) = (s.g.kv_heads, s.g.head_dim);
    let scale = c.scale.map_or(1.0 / (d as f64).sqrt(), |x| x as f64);
    let (mut out, mut lse) = (vec![], vec![]);
    for b in 0..s.lens.len() {
        let l = s.lens[b] as usize;
        let qs = Shape::new(1, heads, nq, d);
        let qb = &q[b * qs.numel()..(b + 1) * qs.numel()];
        let ks = Shape::new(1, kvh, l, d);
        let rm = RefMask { causal: c.causal, window: c.window.map(|w| (w.left, w.right)), ..Default::default() };
        let (o, ls, _) = ref_attention_with(
            qb,
            qs,
            Layout::Bhsd,
            &s.k[b],
            ks,
            Layout::Bhsd,
            &s.v[b],
            Layout::Bhsd,
            scale,
            &rm,
            &c.ref_scores(),
        );
        out.extend(o);
        lse.extend(ls);
    }
    (out, lse)
}

/// Every path over the paged cache against the reference, for the options of `c` (its b, h,
/// hkv, d and nq are used; nk comes from the table).
fn check_paged(ctx: Option<&Context>, lens: &[u32], c: &Case) {
    let s = Seqs::new(lens, c.hkv, c.d, c.seed);
    let (gpu, host) = fill(ctx, &s);
    let qs = Shape::new(lens.len(), c.h, c.nq, c.d);
    let q = rand_vec(c.seed + 99, qs.numel(), 1.0);
    let (want, want_lse) = reference(&s, &q, c.h, c.nq, c);
    let what = format!("lens {lens:?} {c:?}");
    let table = s.table();
    let opts = c.opts();
    let (out, lse) = cpu::paged_attention(&HostTensor::new(&q, qs).unwrap(), &host, &table, &opts).unwrap();
    assert_close(&format!("cpu paged {what}"), &out, &want, 1e-5);
    assert_lse(&format!("cpu paged lse {what}"), &lse, &want_lse, 1e-5);
    let (out, lse) = cpu::reference::paged_attention(&HostTensor::new(&q, qs).unwrap(), &host, &table, &opts).unwrap();
    assert_close(&format!("cpu reference paged {what}"), &out, &want, 1e-6);
    assert_lse(&format!("cpu reference paged lse {what}"), &lse, &want_lse, 1e-6);
    let (Some(ctx), Some(cache)) = (ctx, gpu) else { return };
    // the GPU pools hold exactly what the CPU twin's do
    assert_eq!(cache.k().download_blocking(ctx).unwrap(), host.k().unwrap(), "K pools");
    assert_eq!(cache.v().download_blocking(ctx).unwrap(), host.v().unwrap(), "V pools");
    let gq = ctx.upload(&q, qs).unwrap();
    for variant in [AttentionVariant::Auto].into_iter().chain(AttentionVariant::ALL) {
        let o = AttentionOptions { variant, ..opts };
        let tag = format!("gpu paged {variant} {what}");
        let case = Case::new(lens.len(), c.h, c.hkv, c.nq, 1, c.d);
        if variant == AttentionVariant::Unfused || !expect_supported(ctx, &case, variant, true) {
            let e = ctx.paged_attention_with_lse(&gq, &cache, &table, &o).unwrap_err();
            assert!(matches!(e, Error::Unsupported(_)), "{tag}: {e}");
            continue;
        }
        if !runs_forced(variant, c.d) {
            continue;
        }
        let plan = ctx.plan_paged_attention(&gq, &cache, &table, &o, true).unwrap();
        if variant != AttentionVariant::Auto {
            assert_eq!(plan.variant, variant);
        }
        let (got, l) = ctx.paged_attention_with_lse(&gq, &cache, &table, &o).unwrap();
        assert_close(&tag, &got.download_blocking(ctx).unwrap(), &want, 1e-5);
        assert_lse(&format!("{tag} lse"), &l.download_blocking(ctx).unwrap(), &want_lse, 1e-5);
    }
    // the same result from the contiguous cache, sequence by sequence
    let (got, _) = ctx.paged_attention_with_lse(&gq, &cache, &table, &opts).unwrap();
    let got = got.download_blocking(ctx).unwrap();
    for b in 0..lens.len() {
        let l = lens[b] as usize;
        if l == 0 {
            continue;
        }
        let (one_q, kv) = (Shape::new(1, c.h, c.nq, c.d), Shape::new(1, c.hkv, l, c.d));
        let n = one_q.numel();
        let contiguous = ctx
            .attention(
                &ctx.upload(&q[b * n..(b + 1) * n], one_q).unwrap(),
                &ctx.upload(&s.k[b], kv).unwrap(),
                &ctx.upload(&s.v[b], kv).unwrap(),
                None,
                &opts,
            )
            .unwrap()
            .download_blocking(ctx)
            .unwrap();
        assert_agree(
            &format!("paged vs contiguous, sequence {b}, {what}"),
            &got[b * n..(b + 1) * n],
            &contiguous,
            1e-5,
        );
    }
}

/// Lengths around the page size, and one long sequence (split-K decode).
const LENS: [u32; 6] = [1, PS as u32 - 1, PS as u32, PS as u32 + 1, 37, 3000];

macro_rules! paged_cases {
    ($name:ident, $lens:expr, $case:expr) => {
        mod $name {
            use super::*;
            #[test]
            fn cpu() {
                check_paged(None, &$lens, &$case);
            }
            gpu_test! {
                fn gpu() {
                    check_paged(Some(&shared_gpu()), &$lens, &$case);
                }
            }
        }
    };
}

paged_cases!(decode, LENS, Case::new(6, 4, 2, 1, 1, 64));
paged_cases!(decode_odd_head_dim, [5u32, 16, 33], Case::new(3, 2, 1, 1, 1, 40));
paged_cases!(decode_every_option, LENS, Case::new(6, 4, 2, 1, 1, 32).window(20, Some(0)).softcap(30.0).alibi().sinks());
paged_cases!(prefill_chunk_causal, [4u32, 17, 40, 64], Case::new(4, 2, 2, 4, 1, 32).causal());
paged_cases!(
    prefill_chunk_with_options,
    [4u32, 17, 40, 64],
    Case::new(4, 4, 1, 4, 1, 16).causal().window(9, None).alibi().sinks()
);
paged_cases!(longer_chunk_than_sequence, [2u32, 20], Case::new(2, 2, 2, 5, 1, 16).causal().sinks());

fn empty_sequences(ctx: Option<&Context>) {
    // sequences of length 0: nothing to attend to; zeros (and -inf, or the sink)
    let g = PageGeometry { num_pages: 4, page_size: 4, kv_heads: 1, head_dim: 8 };
    let (lens, table) = ([0u32, 0], [0u32, 1]);
    let t = BlockTable::new(&table, 1, &lens).unwrap();
    let q = rand_vec(1, 2 * 2 * 8, 1.0);
    let qs = Shape::new(2, 2, 1, 8);
    let sinks = [0.5f32, -1.0];
    for sink in [None, Some(&sinks[..])] {
        let opts = AttentionOptions { sinks: sink, ..Default::default() };
        let want_lse: Vec<f32> = (0..4).map(|r| sink.map_or(f32::NEG_INFINITY, |s| s[r % 2])).collect();
        let host = HostKvCache::new(g).unwrap();
        let (o, l) = cpu::paged_attention(&HostTensor::new(&q, qs).unwrap(), &host, &t, &opts).unwrap();
        assert!(o.iter().all(|&x| x == 0.0));
        assert_eq!(l, want_lse);
        if let Some(ctx) = ctx {
            let cache = PagedKvCache::new(ctx, g, DType::F32).unwrap();
            // every variant that reads a paged cache (split-K: one empty split)
            for variant in
                [AttentionVariant::Auto, AttentionVariant::Fused(Loads::Vec4), AttentionVariant::SplitK(Loads::Scalar)]
            {
                let opts = AttentionOptions { variant, ..opts };
                let (o, l) = ctx.paged_attention_with_lse(&ctx.upload(&q, qs).unwrap(), &cache, &t, &opts).unwrap();
                assert!(o.download_blocking(ctx).unwrap().iter().all(|&x| x == 0.0), "{variant:?}");
                // (the sink's log-sum-exp through the split-K merge's score transform: within
                // an ulp or two)
                for (got, want) in l.download_blocking(ctx).unwrap().iter().zip(&want_lse) {
                    assert!(
                        got == want || approx::relative_eq!(got, want, max_relative = 1e-6),
                        "{variant:?}: {got} vs {want}"
                    );
                }
            }
        }
    }
}

#[test]
fn empty_sequences_cpu() {
    empty_sequences(None);
}

gpu_test! {
    fn empty_sequences_gpu() {
        empty_sequences(Some(&shared_gpu()));
    }
}

fn bad_tables(ctx: Option<&Context>) {
    let g = PageGeometry { num_pages: 4, page_size: 4, kv_heads: 2, head_dim: 8 };
    let q = rand_vec(1, 2 * 2 * 8, 1.0);
    let qs = Shape::new(2, 2, 1, 8);
    let host = HostKvCache::new(g).unwrap();
    let gpu = ctx.map(|c| PagedKvCache::new(c, g, DType::F32).unwrap());
    let gq = ctx.map(|c| c.upload(&q, qs).unwrap());
    let o = AttentionOptions::default();
    let check = |table: &[u32], blocks: usize, lens: &[u32], want: &dyn Fn(&Error) -> bool| {
        let t = BlockTable::new(table, blocks, lens).unwrap();
        let e = cpu::paged_attention(&HostTensor::new(&q, qs).unwrap(), &host, &t, &o).unwrap_err();
        assert!(want(&e), "cpu: {e}");
        if let (Some(ctx), Some(cache), Some(gq)) = (ctx, &gpu, &gq) {
            assert_eq!(ctx.paged_attention(gq, cache, &t, &o).unwrap_err(), e, "the GPU gives the same error");
            let mut enc = ctx.device().create_command_encoder(&Default::default());
            let out = ctx.zeros(qs, Layout::Bhsd, DType::F32).unwrap();
            assert_eq!(
                ctx.encode_paged_attention(
                    &mut enc,
                    &PagedAttentionCall { q: gq, cache, table: &t, out: &out, lse: None },
                    &o
                )
                .unwrap_err(),
                e
            );
        }
    };
    let page_past = |e: &Error| matches!(e, Error::InvalidArgument { argument: "block_table", message } if message.contains("past the cache"));
    let too_long = |e: &Error| matches!(e, Error::InvalidArgument { argument: "block_table", message } if message.contains("more than its"));
    // a page index out of range, reached by the length
    check(&[0, 1, 2, 4], 2, &[8, 5], &page_past);
    check(&[0, 1, 2, u32::MAX], 2, &[8, 8], &page_past);
    // a table too short for its length
    check(&[0, 1, 2, 3], 2, &[9, 1], &too_long);
    // batch mismatch between the table and q
    let one = [3u32];
    let t = BlockTable::new(&[0, 1], 2, &one).unwrap();
    let e = cpu::paged_attention(&HostTensor::new(&q, qs).unwrap(), &host, &t, &o).unwrap_err();
    assert!(
        matches!(e, Error::ShapeMismatch { argument: "block_table", dim: "batch", got: 1, expected: 2, .. }),
        "{e}"
    );
    // wrong table length at construction
    assert!(matches!(
        BlockTable::new(&[0, 1, 2], 2, &[1, 1]),
        Err(Error::LengthMismatch { argument: "block_table", .. })
    ));
    // key lengths do not apply over a paged cache
    let t = BlockTable::new(&[0, 1, 2, 3], 2, &[3, 3]).unwrap();
    let kl = [1u32, 1];
    let e = cpu::paged_attention(
        &HostTensor::new(&q, qs).unwrap(),
        &host,
        &t,
        &AttentionOptions { key_lengths: Some(&kl), ..o },
    )
    .unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { argument: "key_lengths", .. }), "{e}");
    // a head dim other than the cache's
    let q3 = rand_vec(2, 2 * 2 * 4, 1.0);
    let e = cpu::paged_attention(&HostTensor::new(&q3, Shape::new(2, 2, 1, 4)).unwrap(), &host, &t, &o).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { argument: "cache", other: "q", dim: "dim", .. }), "{e}");
    // an empty q (only host tensors can be empty: no empty tensor uploads)
    let e = cpu::paged_attention(&HostTensor::new(&[], Shape::new(2, 2, 0, 8)).unwrap(), &host, &t, &o).unwrap_err();
    assert!(matches!(e, Error::EmptyDimension { argument: "q", dim: "seq" }), "{e}");
    // NaN or inf in a pool row the table reaches is refused, naming the pool and the index;
    // outside the sequences' rows it is never read
    let mut dirty = host.clone();
    let row = |token: usize, hk: usize| (token * g.kv_heads + hk) * g.head_dim;
    let unread = row(4 * 3 + 3, 1); // page 3, slot 3: past both sequences' 3 tokens
    dirty.v_mut().unwrap()[unread] = f32::NAN;
    assert!(cpu::paged_attention(&HostTensor::new(&q, qs).unwrap(), &dirty, &t, &o).is_ok());
    let read = row(4 * 2 + 1, 0) + 5; // page 2 (sequence 1's first), slot 1, head 0
    dirty.k_mut().unwrap()[read] = f32::INFINITY;
    let e = cpu::paged_attention(&HostTensor::new(&q, qs).unwrap(), &dirty, &t, &o).unwrap_err();
    assert_eq!(e, Error::NonFinite { argument: "k_pages", index: read, value: f32::INFINITY });
    // appends: two sequences writing one slot (a shared page), fewer tokens than new ones
    let mut host = host.clone();
    let kn = rand_vec(3, 2 * 2 * 8, 1.0);
    let kns = Shape::new(2, 2, 1, 8);
    let shared = BlockTable::new(&[0, 1, 0, 2], 2, &[2, 2]).unwrap();
    let e =
        cpu::append_kv(&mut host, &shared, &HostTensor::new(&kn, kns).unwrap(), &HostTensor::new(&kn, kns).unwrap())
            .unwrap_err();
    assert!(
        matches!(e, Error::InvalidArgument { argument: "block_table", ref message } if message.contains("both write")),
        "{e}"
    );
    let short = BlockTable::new(&[0, 1, 2, 3], 2, &[1, 0]).unwrap();
    let e2 =
        cpu::append_kv(&mut host, &short, &HostTensor::new(&kn, kns).unwrap(), &HostTensor::new(&kn, kns).unwrap())
            .unwrap_err();
    assert!(
        matches!(e2, Error::InvalidArgument { argument: "block_table", ref message } if message.contains("fewer than")),
        "{e2}"
    );
    if let (Some(ctx), Some(cache)) = (ctx, &gpu) {
        // a pool over the device's largest binding is refused when the cache is made
        let max = ctx.caps().max_binding as usize;
        let big = PageGeometry { num_pages: max / (16 * 2 * 8 * 4) + 1, page_size: 16, kv_heads: 2, head_dim: 8 };
        let too_large = PagedKvCache::new(ctx, big, DType::F32).unwrap_err();
        assert!(matches!(too_large, Error::TooLarge { argument: "geometry", .. }), "{too_large}");
        let g_kn = ctx.upload(&kn, kns).unwrap();
        assert_eq!(ctx.append_kv(cache, &shared, &g_kn, &g_kn).unwrap_err(), e);
        assert_eq!(ctx.append_kv(cache, &short, &g_kn, &g_kn).unwrap_err(), e2);
        // new tokens in the pool's own buffer: refused before recording
        let inside = Tensor::from_buffer(ctx, cache.k().buffer().clone(), 0, kns, Layout::Bhsd, DType::F32).unwrap();
        let ok = BlockTable::new(&[0, 1, 2, 3], 2, &[1, 1]).unwrap();
        assert!(matches!(ctx.append_kv(cache, &ok, &inside, &g_kn), Err(Error::Aliasing { .. })));
        // nothing was written by any refused call
        assert!(cache.k().download_blocking(ctx).unwrap().iter().all(|&x| x == 0.0));
    }
}

#[test]
fn bad_tables_are_refused_cpu() {
    bad_tables(None);
}

gpu_test! {
    fn bad_tables_are_refused_gpu() {
        bad_tables(Some(&shared_gpu()));
    }
}

gpu_test! {
    fn shared_prefix_pages_and_f16() {
        // two sequences share their first page (a common prompt); f16 pools where supported
        let ctx = shared_gpu();
        let dtypes: Vec<DType> = if f16_supported(&ctx) { vec![DType::F32, DType::F16] } else { vec![DType::F32] };
        for dtype in dtypes {
            let g = PageGeometry { num_pages: 6, page_size: 4, kv_heads: 1, head_dim: 8 };
            let prefix = rand_vec(5, 4 * 8, 1.0);
            let tails = [rand_vec(6, 3 * 8, 1.0), rand_vec(7, 5 * 8, 1.0)];
            let round = |v: &[f32]| -> Vec<f32> { v.iter().map(|&x| if dtype == DType::F16 { half::f16::from_f32(x).to_f32() } else { x }).collect() };
            let up = |v: &[f32], s| match dtype {
                DType::F32 => ctx.upload(v, s).unwrap(),
                DType::F16 => ctx.upload(&v.iter().map(|&x| half::f16::from_f32(x)).collect::<Vec<_>>(), s).unwrap(),
            };
            let cache = PagedKvCache::new(&ctx, g, dtype).unwrap();
            // the prefix, written once through sequence 0's table
            let t0 = BlockTable::new(&[3], 1, &[4]).unwrap();
            let p = up(&prefix, Shape::new(1, 1, 4, 8));
            ctx.append_kv(&cache, &t0, &p, &p).unwrap();
            // each tail after it, in its own pages; the prefix page is shared
            let lens = [7u32, 9];
            let table = [3u32, 5, 0, 3, 1, 4];
            for (b, tail) in tails.iter().enumerate() {
                let n = tail.len() / 8;
                let tb = BlockTable::new(&table[b * 3..b * 3 + 3], 3, &lens[b..b + 1]).unwrap();
                let t = up(tail, Shape::new(1, 1, n, 8));
                ctx.append_kv(&cache, &tb, &t, &t).unwrap();
            }
            let t = BlockTable::new(&table, 3, &lens).unwrap();
            let q = rand_vec(8, 2 * 2 * 8, 1.0);
            let qs = Shape::new(2, 2, 1, 8);
            let got = ctx.paged_attention(&up(&q, qs), &cache, &t, &AttentionOptions::default()).unwrap().download_blocking(&ctx).unwrap();
            for b in 0..2 {
                let kv: Vec<f32> = round(&prefix).into_iter().chain(round(&tails[b])).collect();
                let l = kv.len() / 8;
                let (want, _, _) = ref_attention(&round(&q[b * 16..b * 16 + 16]), Shape::new(1, 2, 1, 8), Layout::Bhsd, &kv, Shape::new(1, 1, l, 8), Layout::Bhsd, &kv, Layout::Bhsd, 1.0 / 8f64.sqrt(), &RefMask::none());
                let tol = if dtype == DType::F16 { 1e-3 } else { 1e-5 };
                assert_close(&format!("{dtype:?} sequence {b}"), &got[b * 16..b * 16 + 16], &want, tol);
            }
        }
    }
}

/// Tokens `[from_b, to_b)` of every sequence as one `[batch, kv_heads, n, d]` tensor (each
/// sequence's range of the same length `n`).
fn batch_slice(s: &Seqs, x: &[Vec<f32>], ranges: &[(usize, usize)]) -> Vec<f32> {
    ranges.iter().enumerate().flat_map(|(b, &(from, to))| s.slice(&x[b], b, from, to)).collect()
}

gpu_test! {
    fn resident_tables_decode_like_host_tables() {
        let ctx = shared_gpu();
        let s = Seqs::new(&[37, 5, 70], 2, 32, 41);
        let (batch, steps, heads) = (s.lens.len(), 4usize, 4usize);
        let prompt: Vec<u32> = s.lens.iter().map(|&l| l - steps as u32).collect();
        // two caches: one fed through host tables, one through a resident table
        let host_cache = PagedKvCache::new(&ctx, s.g, DType::F32).unwrap();
        let dev_cache = PagedKvCache::new(&ctx, s.g, DType::F32).unwrap();
        // prefill: one token of every sequence per call (append takes the same count from each);
        // a sequence whose prompt is done rewrites its last token with the same values
        let mut lens = vec![0u32; batch];
        let mut resident = DeviceBlockTable::new(&ctx, &BlockTable::new(&s.table, s.blocks, &lens).unwrap()).unwrap();
        let shape = Shape::new(batch, 2, 1, 32);
        let append = |lens: &[u32], resident: &mut DeviceBlockTable| {
            let r: Vec<(usize, usize)> = lens.iter().map(|&l| (l as usize - 1, l as usize)).collect();
            let k = ctx.upload(&batch_slice(&s, &s.k, &r), shape).unwrap();
            let v = ctx.upload(&batch_slice(&s, &s.v, &r), shape).unwrap();
            ctx.append_kv(&host_cache, &BlockTable::new(&s.table, s.blocks, lens).unwrap(), &k, &v).unwrap();
            resident.set_seq_lens(&ctx, lens).unwrap();
            ctx.append_kv(&dev_cache, &*resident, &k, &v).unwrap();
        };
        for pos in 0..*prompt.iter().max().unwrap() {
            for (l, &p) in lens.iter_mut().zip(&prompt) {
                *l = (pos + 1).min(p);
            }
            append(&lens, &mut resident);
        }
        // decode steps: every sequence one token longer, attention over it
        for step in 0..steps {
            for l in lens.iter_mut() {
                *l += 1;
            }
            append(&lens, &mut resident);
            let host_table = BlockTable::new(&s.table, s.blocks, &lens).unwrap();
            let q = ctx.upload(&rand_vec(500 + step as u64, batch * heads * 32, 1.0), Shape::new(batch, heads, 1, 32)).unwrap();
            let opts = AttentionOptions::default();
            let want = ctx.paged_attention(&q, &host_cache, &host_table, &opts).unwrap().download_blocking(&ctx).unwrap();
            let got = ctx.paged_attention(&q, &dev_cache, &resident, &opts).unwrap().download_blocking(&ctx).unwrap();
            assert_eq!(got, want, "step {step}: the resident table reads what the host table does");
            // the encode form binds it too
            let out = ctx.zeros(Shape::new(batch, heads, 1, 32), Layout::Bhsd, DType::F32).unwrap();
            let mut enc = ctx.device().create_command_encoder(&Default::default());
            let call = PagedAttentionCall { q: &q, cache: &dev_cache, table: &resident, out: &out, lse: None };
            ctx.encode_paged_attention(&mut enc, &call, &opts).unwrap();
            ctx.queue().submit([enc.finish()]);
            assert_eq!(out.download_blocking(&ctx).unwrap(), want, "step {step}: encoded");
        }
        assert_eq!(
            dev_cache.k().download_blocking(&ctx).unwrap(),
            host_cache.k().download_blocking(&ctx).unwrap(),
            "the pools written through both tables are the same"
        );
        // bad updates are refused and leave the table as it was
        let other = [0u32; 4];
        let e = resident.update(&ctx, &BlockTable::new(&other, 2, &[1, 1]).unwrap()).unwrap_err();
        assert!(matches!(e, Error::ShapeMismatch { argument: "block_table", dim: "batch", .. }), "{e}");
        let e = resident.set_seq_lens(&ctx, &[1, 2]).unwrap_err();
        assert!(matches!(e, Error::LengthMismatch { argument: "seq_lens", expected: 3, got: 2 }), "{e}");
        // a length past the table's capacity is caught by the call's check of the mirror
        let over = vec![(s.blocks * PS + 1) as u32; batch];
        resident.set_seq_lens(&ctx, &over).unwrap();
        let q = ctx.upload(&vec![0.1f32; batch * heads * 32], Shape::new(batch, heads, 1, 32)).unwrap();
        let e = ctx.paged_attention(&q, &dev_cache, &resident, &AttentionOptions::default()).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { argument: "block_table", .. }), "{e}");
        // another context's table
        let other_ctx = gpu();
        let e = resident.set_seq_lens(&other_ctx, &lens).unwrap_err();
        assert!(matches!(e, Error::ForeignTensor { argument: "block_table" }), "{e}");
    }
}

gpu_test! {
    fn dtype_errors_name_the_tokens_or_queries_not_the_cache() {
        let ctx = shared_gpu();
        if !f16_supported(&ctx) {
            return;
        }
        let g = PageGeometry { num_pages: 2, page_size: 16, kv_heads: 1, head_dim: 8 };
        let cache = PagedKvCache::new(&ctx, g, DType::F16).unwrap();
        let (pages, lens) = ([0u32], [1u32]);
        let table = BlockTable::new(&pages, 1, &lens).unwrap();
        let f32_tokens = ctx.upload(&[0.5f32; 8], Shape::new(1, 1, 1, 8)).unwrap();
        let e = ctx.append_kv(&cache, &table, &f32_tokens, &f32_tokens).unwrap_err();
        assert_eq!(e, Error::DTypeMismatch { argument: "k_new", got: DType::F32, expected: DType::F16 });
        let q = ctx.upload(&[0.5f32; 8], Shape::new(1, 1, 1, 8)).unwrap();
        let e = ctx.paged_attention(&q, &cache, &table, &AttentionOptions::default()).unwrap_err();
        assert_eq!(e, Error::DTypeMismatch { argument: "q", got: DType::F32, expected: DType::F16 });
    }
}
