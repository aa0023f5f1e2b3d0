//! Quantized KV caches (q8_0, q4_0, fp8 e4m3): the quantizers against reference quantizers
//! written here from the published formats (ggml's `quantize_row_q8_0_ref` /
//! `quantize_row_q4_0_ref`, OCP's e4m3), bit for bit; the pools' documented layout; attention
//! over quantized pages (CPU and GPU) against the f64 reference over the dequantized values;
//! GPU appends bit-identical to the host's; bad formats refused; and the accuracy cost against
//! an f16 cache, reported.

mod common;
use common::*;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use wgpu_attention::*;

// ---- reference quantizers, from the formats ----

/// f32 -> f16 bits, round to nearest even, from IEEE 754's definition: of the finite f16
/// values around x (the `half` crate's conversion and its two neighbours, as candidates), the
/// nearest, the even one on a tie; infinity from half an ulp past the largest.
fn ref_f16_bits(x: f32) -> u16 {
    let sign = if x.is_sign_negative() { 0x8000u16 } else { 0 };
    let a = x.abs() as f64;
    if a >= 65520.0 {
        return sign | 0x7c00;
    }
    let c = half::f16::from_f32(x.abs()).to_bits().min(0x7bff) as i32;
    let (mut best, mut best_err) = (0u16, f64::INFINITY);
    for bits in (c - 1).max(0)..=(c + 1).min(0x7bff) {
        let err = (ref_f16_value(bits as u16) - a).abs();
        if err < best_err || (err == best_err && bits % 2 == 0) {
            best = bits as u16;
            best_err = err;
        }
    }
    sign | best
}

fn ref_f16_value(bits: u16) -> f64 {
    let e = ((bits >> 10) & 31) as i32;
    let m = (bits & 1023) as f64;
    let v = if e == 0 { m * 2f64.powi(-24) } else { (1.0 + m / 1024.0) * 2f64.powi(e - 15) };
    if bits & 0x8000 != 0 {
        -v
    } else {
        v
    }
}

/// ggml's `quantize_row_q8_0_ref` for one block: (scale bits, values).
fn ref_q8_0(x: &[f32]) -> (u16, Vec<i8>) {
    let mut amax = 0.0f32;
    for &v in x {
        amax = amax.max(v.abs());
    }
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    // roundf: halfway cases away from zero
    let qs = x.iter().map(|v| (v * id).round() as i8).collect();
    (ref_f16_bits(d), qs)
}

/// ggml's `quantize_row_q4_0_ref` for one block: (scale bits, 16 bytes).
fn ref_q4_0(x: &[f32]) -> (u16, Vec<u8>) {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let qs = (0..16)
        .map(|j| {
            let x0 = x[j] * id;
            let x1 = x[16 + j] * id;
            // (int8_t)(x + 8.5f): truncation toward zero; then MIN(15, .)
            let a = ((x0 + 8.5).trunc() as i32).min(15) as u8;
            let b = ((x1 + 8.5).trunc() as i32).min(15) as u8;
            a | (b << 4)
        })
        .collect();
    (ref_f16_bits(d), qs)
}

/// Every finite e4m3 value (OCP), by code 0..=0x7e.
fn e4m3_values() -> Vec<f64> {
    (0u8..=0x7e)
        .map(|c| {
            let e = (c >> 3) as i32;
            let m = (c & 7) as f64;
            if e == 0 {
                m / 8.0 * 2f64.powi(-6)
            } else {
                (1.0 + m / 8.0) * 2f64.powi(e - 7)
            }
        })
        .collect()
}

/// The e4m3 code nearest to x (ties to the even code), saturating at 448, by search.
fn ref_e4m3(x: f32, values: &[f64]) -> u8 {
    let a = (x.abs() as f64).min(448.0);
    let mut best = 0usize;
    for (c, v) in values.iter().enumerate() {
        let (e, eb) = ((v - a).abs(), (values[best] - a).abs());
        if e < eb || (e == eb && c % 2 == 0) {
            best = c;
        }
    }
    (best as u8) | if x.is_sign_negative() { 0x80 } else { 0 }
}

// ---- blocks ----

/// Blocks that test the quantizers' edges: random at several magnitudes, all zeros, a single
/// value, ties (values landing on .5 after scaling), equal magnitudes of both signs, values at
/// the f16 scale's limits (largest and subnormal scales).
fn edge_blocks() -> Vec<Vec<f32>> {
    let mut v: Vec<Vec<f32>> = vec![];
    for (i, amp) in [1.0f32, 1e-3, 37.5, 3e4, 1e5, 7e-5].into_iter().enumerate() {
        for s in 0..20 {
            v.push(rand_vec(1000 + 31 * i as u64 + s, 32, amp));
        }
    }
    v.push(vec![0.0; 32]);
    let mut one = vec![0.0; 32];
    one[7] = -2.5;
    v.push(one);
    // q8_0 ties: amax 127 gives d 1, id 1; values k + 0.5 round away from zero
    v.push((0..32).map(|j| if j == 0 { 127.0 } else { j as f32 - 16.5 }).collect());
    // q4_0 ties: max -8 gives d 1, id 1; x + 8.5 lands on integers for x = k + 0.5
    v.push((0..32).map(|j| if j == 0 { -8.0 } else { (j % 16) as f32 * 0.5 - 4.0 }).collect());
    // both signs of the largest magnitude (q4_0 keeps the first)
    v.push((0..32).map(|j| if j == 3 { 6.0 } else if j == 9 { -6.0 } else { j as f32 * 0.1 }).collect());
    // the largest q8_0 scale f16 holds, and a scale in f16's subnormal range
    v.push((0..32).map(|j| if j == 0 { 127.0 * 65504.0 } else { j as f32 * 1e5 }).collect());
    v.push((0..32).map(|j| (j as f32 - 15.0) * 3e-7).collect());
    v
}

#[test]
fn q8_0_blocks_match_the_reference_bit_for_bit() {
    for (i, x) in edge_blocks().iter().enumerate() {
        let b = quantize_q8_0(x.as_slice().try_into().unwrap()).unwrap();
        let (d, qs) = ref_q8_0(x);
        assert_eq!(b.d.to_bits(), d, "block {i}: scale");
        assert_eq!(b.qs.to_vec(), qs, "block {i}: values");
        // dequantized: q · d in f32
        let y = dequantize_q8_0(&b);
        for j in 0..32 {
            assert_eq!(y[j], qs[j] as f32 * ref_f16_value(d) as f32);
        }
    }
}

#[test]
fn q4_0_blocks_match_the_reference_bit_for_bit() {
    for (i, x) in edge_blocks().iter().enumerate() {
        // the q4_0 scale is max / 8: keep it within f16
        if x.iter().any(|v| v.abs() > 8.0 * 65504.0) {
            continue;
        }
        let b = quantize_q4_0(x.as_slice().try_into().unwrap()).unwrap();
        let (d, qs) = ref_q4_0(x);
        assert_eq!(b.d.to_bits(), d, "block {i}: scale");
        assert_eq!(b.qs.to_vec(), qs, "block {i}: values");
        let y = dequantize_q4_0(&b);
        for j in 0..16 {
            let s = ref_f16_value(d) as f32;
            assert_eq!(y[j], ((qs[j] & 15) as i32 - 8) as f32 * s);
            assert_eq!(y[j + 16], ((qs[j] >> 4) as i32 - 8) as f32 * s);
        }
    }
}

#[test]
fn quantizers_refuse_non_finite_values_and_scales_past_f16() {
    let mut x = [0.5f32; 32];
    x[4] = f32::NAN;
    assert!(matches!(quantize_q8_0(&x), Err(Error::NonFinite { argument: "values", index: 4, .. })));
    x[4] = f32::NEG_INFINITY;
    assert!(matches!(quantize_q4_0(&x), Err(Error::NonFinite { argument: "values", index: 4, .. })));
    // amax / 127 at 65520 or more rounds to infinity in f16
    x[4] = 127.0 * 65520.0;
    assert!(matches!(quantize_q8_0(&x), Err(Error::InvalidArgument { argument: "values", .. })));
    x[4] = 127.0 * 65504.0;
    assert!(quantize_q8_0(&x).is_ok());
    x[4] = -8.0 * 65520.0;
    assert!(matches!(quantize_q4_0(&x), Err(Error::InvalidArgument { argument: "values", .. })));
}

#[test]
fn fp8_codes_match_the_nearest_e4m3_value() {
    let values = e4m3_values();
    let mut xs: Vec<f32> = rand_vec(5, 4000, 500.0);
    xs.extend(rand_vec(6, 2000, 0.02));
    // every midpoint between neighbouring values (ties), and just either side of it
    for w in values.windows(2) {
        let mid = ((w[0] + w[1]) / 2.0) as f32;
        xs.extend([mid, f32::from_bits(mid.to_bits() - 1), f32::from_bits(mid.to_bits() + 1), -mid]);
    }
    xs.extend([0.0, -0.0, 448.0, 449.0, 464.0, 1e9, -1e9, 1e-30]);
    for x in xs {
        let c = fp8_e4m3_from_f32(x);
        assert_eq!(c, ref_e4m3(x, &values), "{x:e}");
        let back = fp8_e4m3_to_f32(c) as f64;
        let want = values[(c & 0x7f) as usize] * if c & 0x80 != 0 { -1.0 } else { 1.0 };
        assert_eq!(back, want, "{x:e}");
    }
}

// ---- caches ----

/// Sequences of the given final lengths, pages scattered, with their K and V (per sequence,
/// `[kv_heads, len, d]`); K with a few outlier channels where `outliers`.
struct Seqs {
    g: PageGeometry,
    lens: Vec<u32>,
    blocks: usize,
    table: Vec<u32>,
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

const PS: usize = 16;

impl Seqs {
    fn new(lens: &[u32], kv_heads: usize, d: usize, seed: u64) -> Self {
        let blocks = lens.iter().map(|&l| (l as usize).div_ceil(PS)).max().unwrap_or(1).max(1);
        let num_pages = lens.len() * blocks + 2;
        let mut pages: Vec<u32> = (0..num_pages as u32).collect();
        pages.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        let table = pages[..lens.len() * blocks].to_vec();
        let gen = |off: u64| -> Vec<Vec<f32>> {
            lens.iter().enumerate().map(|(b, &l)| rand_vec(seed + off + b as u64, kv_heads * l as usize * d, 1.0)).collect()
        };
        let (k, v) = (gen(10), gen(50));
        Seqs { g: PageGeometry { num_pages, page_size: PS, kv_heads, head_dim: d }, lens: lens.to_vec(), blocks, table, k, v }
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

/// Each row of `x` (`[.., d]`) as the reference quantizer of `t` stores it, dequantized
/// (`scales`: fp8's per head, rows cycling over `kv_heads` heads of `[kv_heads, len, d]`).
fn dequantized(x: &[f32], t: KvDType, d: usize, len: usize, scales: &[f32]) -> Vec<f32> {
    let values = e4m3_values();
    let mut out = Vec::with_capacity(x.len());
    for (r, row) in x.chunks(d).enumerate() {
        match t {
            KvDType::Q8_0 => {
                for blk in row.chunks(32) {
                    let (s, qs) = ref_q8_0(blk);
                    out.extend(qs.iter().map(|&q| q as f32 * ref_f16_value(s) as f32));
                }
            }
            KvDType::Q4_0 => {
                for blk in row.chunks(32) {
                    let (s, qs) = ref_q4_0(blk);
                    let s = ref_f16_value(s) as f32;
                    let lo: Vec<f32> = qs.iter().map(|&q| ((q & 15) as i32 - 8) as f32 * s).collect();
                    let hi: Vec<f32> = qs.iter().map(|&q| ((q >> 4) as i32 - 8) as f32 * s).collect();
                    out.extend(lo);
                    out.extend(hi);
                }
            }
            KvDType::Fp8E4m3 => {
                // the crate's e4m3 codes (checked against the search above, value by value, in
                // fp8_codes_match_the_nearest_e4m3_value), decoded from the format's table
                let s = scales[r / len];
                out.extend(row.iter().map(|&v| {
                    let c = fp8_e4m3_from_f32(v * (1.0 / s));
                    (values[(c & 0x7f) as usize] as f32) * if c & 0x80 != 0 { -1.0 } else { 1.0 } * s
                }));
            }
            _ => out.extend(row.iter().copied()),
        }
    }
    out
}

/// Fills a host cache (and a GPU one) the way a server does: each prompt (all but its last
/// token) alone, then one batched step appending every sequence's last token.
fn fill<T: Element>(ctx: Option<&Context>, s: &Seqs, format: &KvFormat, dtype: DType) -> (Option<PagedKvCache>, HostKvCache<T>) {
    let mut host = HostKvCache::<T>::with_format(s.g, format).unwrap();
    let gpu = ctx.map(|c| PagedKvCache::with_format(c, s.g, dtype, format).unwrap());
    let (kvh, d) = (s.g.kv_heads, s.g.head_dim);
    let conv = |x: &[f32]| -> Vec<T> { x.iter().map(|&v| T::from_f32(v)).collect() };
    let mut append = |table: &BlockTable, k: Vec<f32>, v: Vec<f32>, shape: Shape| {
        let (k, v) = (conv(&k), conv(&v));
        cpu::append_kv(&mut host, table, &HostTensor::new(&k, shape).unwrap(), &HostTensor::new(&v, shape).unwrap()).unwrap();
        if let (Some(ctx), Some(cache)) = (ctx, &gpu) {
            ctx.append_kv(cache, table, &ctx.upload(&k, shape).unwrap(), &ctx.upload(&v, shape).unwrap()).unwrap();
        }
    };
    for b in 0..s.lens.len() {
        let l = s.lens[b] as usize;
        if l < 2 {
            continue;
        }
        let prompt = [l as u32 - 1];
        let t = BlockTable::new(&s.table[b * s.blocks..(b + 1) * s.blocks], s.blocks, &prompt).unwrap();
        append(&t, s.slice(&s.k[b], b, 0, l - 1), s.slice(&s.v[b], b, 0, l - 1), Shape::new(1, kvh, l - 1, d));
    }
    let live: Vec<usize> = (0..s.lens.len()).filter(|&b| s.lens[b] >= 1).collect();
    let lens: Vec<u32> = live.iter().map(|&b| s.lens[b]).collect();
    let table: Vec<u32> = live.iter().flat_map(|&b| s.table[b * s.blocks..(b + 1) * s.blocks].to_vec()).collect();
    let t = BlockTable::new(&table, s.blocks, &lens).unwrap();
    let last = |x: &[Vec<f32>]| -> Vec<f32> {
        live.iter().flat_map(|&b| s.slice(&x[b], b, s.lens[b] as usize - 1, s.lens[b] as usize)).collect()
    };
    append(&t, last(&s.k), last(&s.v), Shape::new(live.len(), kvh, 1, d));
    (gpu, host)
}

/// The f64 reference over each sequence's dequantized K and V.
fn reference(s: &Seqs, format: &KvFormat, q: &[f32], c: &Case) -> (Vec<f64>, Vec<f64>) {
    let (kvh, d) = (s.g.kv_heads, s.g.head_dim);
    let scale = 1.0 / (d as f64).sqrt();
    let ones = vec![1.0f32; kvh];
    let (ks, vs) = (format.k_scales.clone().unwrap_or(ones.clone()), format.v_scales.clone().unwrap_or(ones));
    let (mut out, mut lse) = (vec![], vec![]);
    for b in 0..s.lens.len() {
        let l = s.lens[b] as usize;
        let qs = Shape::new(1, c.h, c.nq, d);
        let qb = &q[b * qs.numel()..(b + 1) * qs.numel()];
        let kd = dequantized(&s.k[b], format.k, d, l.max(1), &ks);
        let vd = dequantized(&s.v[b], format.v, d, l.max(1), &vs);
        let rm = RefMask { causal: c.causal, window: c.window.map(|w| (w.left, w.right)), ..Default::default() };
        let kvs = Shape::new(1, kvh, l, d);
        let (o, ls, _) =
            ref_attention_with(qb, qs, Layout::Bhsd, &kd, kvs, Layout::Bhsd, &vd, Layout::Bhsd, scale, &rm, &c.ref_scores());
        out.extend(o);
        lse.extend(ls);
    }
    (out, lse)
}

/// The host cache's words decoded by the documented layout equal the reference quantizer's
/// blocks; the GPU's words equal the host's.
fn check_layout(s: &Seqs, host_words: &[u32], t: KvDType, x: &[Vec<f32>], scales: &[f32]) {
    let g = s.g;
    let n = g.num_pages * g.page_size * g.kv_heads * g.head_dim;
    let byte = |i: usize| (host_words[i / 4] >> (8 * (i % 4))) as u8;
    let first_scale = match t {
        KvDType::Q4_0 => n / 8,
        _ => n / 4,
    };
    let values = e4m3_values();
    for (b, xb) in x.iter().enumerate() {
        let l = s.lens[b] as usize;
        for j in 0..l {
            let token = s.table[b * s.blocks + j / PS] as usize * PS + j % PS;
            for hk in 0..g.kv_heads {
                let at = (token * g.kv_heads + hk) * g.head_dim;
                let row = &xb[(hk * l + j) * g.head_dim..][..g.head_dim];
                for (c, blk) in row.chunks(32).enumerate() {
                    let bi = at / 32 + c;
                    let scale = || (host_words[first_scale + bi / 2] >> (16 * (bi % 2))) as u16;
                    match t {
                        KvDType::Q8_0 => {
                            let (d, qs) = ref_q8_0(blk);
                            assert_eq!(scale(), d, "q8_0 scale of block {bi}");
                            let got: Vec<i8> = (0..32).map(|i| byte(bi * 32 + i) as i8).collect();
                            assert_eq!(got, qs, "q8_0 block {bi}");
                        }
                        KvDType::Q4_0 => {
                            let (d, qs) = ref_q4_0(blk);
                            assert_eq!(scale(), d, "q4_0 scale of block {bi}");
                            let got: Vec<u8> = (0..16).map(|i| byte(bi * 16 + i)).collect();
                            assert_eq!(got, qs, "q4_0 block {bi}");
                        }
                        _ => {}
                    }
                }
                if t == KvDType::Fp8E4m3 {
                    assert_eq!(f32::from_bits(host_words[first_scale + hk]), scales[hk]);
                    for (i, &v) in row.iter().enumerate() {
                        assert_eq!(byte(at + i), ref_e4m3(v * (1.0 / scales[hk]), &values), "fp8 value {}", at + i);
                    }
                }
            }
        }
    }
}

/// Attention over a quantized cache: the host pools' layout against the reference quantizer;
/// the CPU fast path and reference against the f64 reference over the dequantized values; on
/// the GPU, the pools bit-identical to the host's and each variant given against the same
/// reference.
fn check_quantized(ctx: Option<&Context>, lens: &[u32], c: &Case, format: &KvFormat, variants: &[AttentionVariant]) {
    check_typed::<f32>(ctx, lens, c, format, variants, 1e-5)
}

/// [`check_quantized`] with queries and new tokens in `T` (the reference takes the inputs
/// rounded to `T`), the GPU results within `tol`.
fn check_typed<T: Element>(
    ctx: Option<&Context>,
    lens: &[u32],
    c: &Case,
    format: &KvFormat,
    variants: &[AttentionVariant],
    tol: f64,
) {
    let mut s = Seqs::new(lens, c.hkv, c.d, c.seed);
    let round = |v: &mut Vec<f32>| v.iter_mut().for_each(|x| *x = T::from_f32(*x).to_f32());
    s.k.iter_mut().chain(s.v.iter_mut()).for_each(round);
    let (gpu, host) = fill::<T>(ctx, &s, format, T::DTYPE);
    let qs = Shape::new(lens.len(), c.h, c.nq, c.d);
    let mut q = rand_vec(c.seed + 99, qs.numel(), 1.0);
    round(&mut q);
    let q16: Vec<T> = q.iter().map(|&x| T::from_f32(x)).collect();
    let (want, want_lse) = reference(&s, format, &q, c);
    let what = format!("{}/{} lens {lens:?} {c:?}", format.k, format.v);
    let ones = vec![1.0f32; c.hkv];
    for (words, t, x, sc) in [
        (host.k_words(), format.k, &s.k, format.k_scales.as_ref().unwrap_or(&ones)),
        (host.v_words(), format.v, &s.v, format.v_scales.as_ref().unwrap_or(&ones)),
    ] {
        if let Some(w) = words {
            check_layout(&s, w, t, x, sc);
        }
    }
    let table = s.table();
    let opts = c.opts();
    let hq = HostTensor::new(&q16, qs).unwrap();
    let (out, lse) = cpu::paged_attention(&hq, &host, &table, &opts).unwrap();
    assert_close(&format!("cpu {what}"), &out, &want, 1e-5);
    assert_lse(&format!("cpu lse {what}"), &lse, &want_lse, 1e-5);
    let (out, _) = cpu::reference::paged_attention(&hq, &host, &table, &opts).unwrap();
    assert_close(&format!("cpu reference {what}"), &out, &want, 1e-6);
    let (Some(ctx), Some(cache)) = (ctx, gpu) else { return };
    for (pool, words, plain) in [(cache.k(), host.k_words(), host.k()), (cache.v(), host.v_words(), host.v())] {
        let got = pool.download_blocking(ctx).unwrap();
        match (words, plain) {
            (Some(w), _) => assert_eq!(bytemuck::cast_slice::<f32, u32>(&got), w, "GPU words {what}"),
            (None, Some(p)) => assert!(got.iter().zip(p).all(|(a, b)| *a == b.to_f32()), "GPU pool {what}"),
            (None, None) => unreachable!(),
        }
    }
    let gq = ctx.upload(&q16, qs).unwrap();
    for &variant in variants {
        let o = AttentionOptions { variant, ..opts };
        let tag = format!("gpu {variant} {what}");
        let (got, l) = ctx.paged_attention_with_lse(&gq, &cache, &table, &o).unwrap_or_else(|e| panic!("{tag}: {e}"));
        if variant != AttentionVariant::Auto {
            let plan = ctx.plan_paged_attention(&gq, &cache, &table, &o, true).unwrap();
            assert_eq!(plan.variant, variant, "{tag}");
        }
        assert_close(&tag, &got.download_blocking(ctx).unwrap(), &want, tol);
        assert_lse(&format!("{tag} lse"), &l.download_blocking(ctx).unwrap(), &want_lse, tol.max(1e-5));
    }
}

const LENS: [u32; 5] = [1, PS as u32 + 1, 37, 2, 300];

fn q8_q4() -> KvFormat {
    KvFormat::new(KvDType::Q8_0, KvDType::Q4_0)
}
fn fp8() -> KvFormat {
    KvFormat::uniform(KvDType::Fp8E4m3).with_fp8_scales(Some(vec![0.004, 0.002]), Some(vec![1.0 / 448.0, 0.01]))
}

#[test]
fn cpu_decode_over_q8_0_keys_and_q4_0_values() {
    check_quantized(None, &LENS, &Case::new(5, 4, 2, 1, 1, 64), &q8_q4(), &[]);
}

#[test]
fn cpu_prefill_chunk_over_fp8_with_every_option() {
    let c = Case::new(5, 4, 2, 3, 1, 32).causal().window(20, None).softcap(30.0).alibi().sinks();
    check_quantized(None, &LENS, &c, &fp8(), &[]);
}

#[test]
fn cpu_q4_0_keys_q8_0_values_grouped() {
    let f = KvFormat::new(KvDType::Q4_0, KvDType::Q8_0);
    check_quantized(None, &LENS, &Case::new(5, 8, 1, 2, 1, 96).causal(), &f, &[]);
}

gpu_test! {
    fn gpu_decode_reads_q8_0_and_q4_0_in_place() {
        let c = Case::new(5, 4, 2, 1, 1, 64).sinks();
        let v = [AttentionVariant::Auto, AttentionVariant::Decode(Loads::Vec4)];
        check_quantized(Some(&shared_gpu()), &LENS, &c, &q8_q4(), &v);
    }
}

gpu_test! {
    fn gpu_fused_and_split_k_read_fp8_in_place() {
        let c = Case::new(5, 4, 2, 3, 1, 32).causal().window(20, None).softcap(30.0).alibi();
        let v = [AttentionVariant::Auto, AttentionVariant::SplitK(Loads::Vec4)];
        check_quantized(Some(&shared_gpu()), &LENS, &c, &fp8(), &v);
    }
}

gpu_test! {
    fn gpu_tensor_core_twin_dequantizes_at_staging() {
        // f16 queries over q8_0 keys and q4_0 values, a prefill chunk on the emulated
        // tensor-core kernel: the pools dequantized as K and V tiles are staged
        let ctx = Context::with_options_blocking(ContextOptions { tensor_cores: TensorCores::Emulated, ..Default::default() })
            .unwrap_or_else(|e| panic!("GPU test found no adapter ({e})"));
        if !f16_supported(&ctx) {
            return;
        }
        let c = Case::new(5, 4, 2, 20, 1, 64).causal().sinks();
        check_typed::<half::f16>(Some(&ctx), &[1, 17, 37, 2, 90], &c, &q8_q4(), &[AttentionVariant::TensorCores], 3e-3);
    }
}

gpu_test! {
    fn gpu_every_type_pair_and_variant() {
        if !full_matrix() {
            return;
        }
        let ctx = shared_gpu();
        for t in [KvDType::Q8_0, KvDType::Q4_0, KvDType::Fp8E4m3] {
            for d in [32, 128] {
                let f = KvFormat::new(t, KvDType::F32);
                let v = [AttentionVariant::Decode(Loads::Vec4), AttentionVariant::Fused(Loads::Vec4), AttentionVariant::SplitK(Loads::Scalar)];
                check_quantized(Some(&ctx), &LENS, &Case::new(5, 4, 2, 1, 1, d), &f, &v);
            }
        }
    }
}

gpu_test! {
    fn gpu_append_of_f16_tokens_quantizes_as_the_host() {
        let ctx = shared_gpu();
        if !f16_supported(&ctx) {
            return;
        }
        let s = Seqs::new(&[3, 40, 17], 3, 32, 71);
        for format in [q8_q4(), KvFormat::uniform(KvDType::Fp8E4m3)] {
            let (gpu, host) = fill::<half::f16>(Some(&ctx), &s, &format, DType::F16);
            let gpu = gpu.unwrap();
            for (pool, words) in [(gpu.k(), host.k_words()), (gpu.v(), host.v_words())] {
                let got = pool.download_blocking(&ctx).unwrap();
                assert_eq!(bytemuck::cast_slice::<f32, u32>(&got), words.unwrap(), "{}/{}", format.k, format.v);
            }
        }
    }
}

gpu_test! {
    fn gpu_append_of_edge_blocks_quantizes_as_the_host() {
        // the blocks at the quantizers' edges (ties, zeros, scales at f16's limits), through
        // the GPU's integer arithmetic
        let ctx = shared_gpu();
        let blocks = edge_blocks();
        let n = blocks.len();
        let g = PageGeometry { num_pages: n.div_ceil(PS), page_size: PS, kv_heads: 1, head_dim: 32 };
        let x: Vec<f32> = blocks.concat();
        let pages: Vec<u32> = (0..g.num_pages as u32).collect();
        let lens = [n as u32];
        let table = BlockTable::new(&pages, pages.len(), &lens).unwrap();
        let shape = Shape::new(1, 1, n, 32);
        for t in [KvDType::Q8_0, KvDType::Q4_0] {
            // q4_0's scale is max / 8: the block at q8_0's largest scale is past it
            let x: Vec<f32> = x.iter().map(|&v| if t == KvDType::Q4_0 { v.clamp(-5e5, 5e5) } else { v }).collect();
            let f = KvFormat::uniform(t);
            let mut host = HostKvCache::<f32>::with_format(g, &f).unwrap();
            let hx = HostTensor::new(&x, shape).unwrap();
            cpu::append_kv(&mut host, &table, &hx, &hx).unwrap();
            let cache = PagedKvCache::with_format(&ctx, g, DType::F32, &f).unwrap();
            let gx = ctx.upload(&x, shape).unwrap();
            ctx.append_kv(&cache, &table, &gx, &gx).unwrap();
            let got = cache.k().download_blocking(&ctx).unwrap();
            assert_eq!(bytemuck::cast_slice::<f32, u32>(&got), host.k_words().unwrap(), "{t}");
        }
    }
}

#[test]
fn formats_are_checked() {
    let g = PageGeometry { num_pages: 2, page_size: 4, kv_heads: 2, head_dim: 40 };
    // 40 is not a multiple of 32
    let e = HostKvCache::<f32>::with_format(g, &KvFormat::uniform(KvDType::Q8_0)).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { argument: "head_dim", ref message } if message.contains("32")), "{e}");
    // fp8 takes multiples of 4
    assert!(HostKvCache::<f32>::with_format(g, &KvFormat::uniform(KvDType::Fp8E4m3)).is_ok());
    let g6 = PageGeometry { head_dim: 6, ..g };
    assert!(HostKvCache::<f32>::with_format(g6, &KvFormat::uniform(KvDType::Fp8E4m3)).is_err());
    // a plain pool in another dtype than the cache's
    let e = HostKvCache::<f32>::with_format(g, &KvFormat::new(KvDType::F16, KvDType::Fp8E4m3)).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { argument: "k_dtype", .. }), "{e}");
    // fp8 scales: one per head, positive and normal
    let bad = KvFormat::uniform(KvDType::Fp8E4m3).with_fp8_scales(Some(vec![1.0]), None);
    assert!(matches!(HostKvCache::<f32>::with_format(g, &bad), Err(Error::LengthMismatch { argument: "k_scales", .. })));
    let bad = KvFormat::uniform(KvDType::Fp8E4m3).with_fp8_scales(None, Some(vec![1.0, 0.0]));
    assert!(matches!(HostKvCache::<f32>::with_format(g, &bad), Err(Error::InvalidArgument { argument: "v_scales", .. })));
    let bad = KvFormat::uniform(KvDType::Q8_0).with_fp8_scales(Some(vec![1.0, 1.0]), None);
    let g64 = PageGeometry { head_dim: 64, ..g };
    assert!(matches!(HostKvCache::<f32>::with_format(g64, &bad), Err(Error::InvalidArgument { argument: "k_scales", .. })));
    // bytes per token
    let c = HostKvCache::<f32>::with_format(g64, &KvFormat::new(KvDType::Q8_0, KvDType::Q4_0)).unwrap();
    assert_eq!(c.bytes_per_token(), 2 * (68 + 36));
    // a non-finite value appended is refused naming it
    let mut c = HostKvCache::<f32>::with_format(g64, &KvFormat::uniform(KvDType::Q4_0)).unwrap();
    let mut x = vec![0.5f32; 2 * 64];
    x[70] = f32::INFINITY;
    let t = HostTensor::new(&x, Shape::new(1, 2, 1, 64)).unwrap();
    let (pages, lens) = ([0u32], [1u32]);
    let e = cpu::append_kv(&mut c, &BlockTable::new(&pages, 1, &lens).unwrap(), &t, &t).unwrap_err();
    assert!(matches!(e, Error::NonFinite { argument: "k_new", index: 70, .. }), "{e}");
}

gpu_test! {
    fn gpu_formats_are_checked() {
        let ctx = shared_gpu();
        let g = PageGeometry { num_pages: 2, page_size: 4, kv_heads: 2, head_dim: 40 };
        let e = PagedKvCache::with_format(&ctx, g, DType::F32, &KvFormat::uniform(KvDType::Q4_0)).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { argument: "head_dim", .. }), "{e}");
        let e = PagedKvCache::with_format(&ctx, g, DType::F32, &KvFormat::new(KvDType::F16, KvDType::F32)).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { argument: "k_dtype", .. }), "{e}");
        let g = PageGeometry { head_dim: 32, ..g };
        let cache = PagedKvCache::with_format(&ctx, g, DType::F32, &KvFormat::uniform(KvDType::Q8_0)).unwrap();
        assert_eq!(cache.bytes_per_token(), 2 * 2 * 34);
        // new tokens whose magnitudes (scanned at upload) pass q8_0's f16 scales are refused
        let (pages, lens) = ([0u32, 1], [1u32]);
        let table = BlockTable::new(&pages, 2, &lens).unwrap();
        let mut x = vec![0.5f32; 2 * 32];
        x[5] = 1e7;
        let big = ctx.upload(&x, Shape::new(1, 2, 1, 32)).unwrap();
        let ok = ctx.upload(&vec![0.5f32; 2 * 32], Shape::new(1, 2, 1, 32)).unwrap();
        let e = ctx.append_kv(&cache, &table, &big, &ok).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { argument: "k_new", .. }), "{e}");
        // queries in another dtype than the cache's
        let q = ctx.upload(&vec![half::f16::ONE; 4 * 32], Shape::new(1, 4, 1, 32));
        if let Ok(q) = q {
            let e = ctx.paged_attention(&q, &cache, &table, &AttentionOptions::default()).unwrap_err();
            assert!(matches!(e, Error::DTypeMismatch { .. }), "{e}");
        }
    }
}

/// K and V as an f16 cache holds them, `[kv_heads, nk, d]`: uniform in [-1, 1), and with
/// `outliers`, 4 channels of every head 20-50x larger (as real models' keys have).
fn accuracy_data(seed: u64, h: usize, nk: usize, d: usize, outliers: bool) -> Vec<f32> {
    let mut x = rand_vec(seed, h * nk * d, 1.0);
    if outliers {
        for (i, v) in x.iter_mut().enumerate() {
            let c = i % d;
            if [3, 40, 77, 120].contains(&c) {
                *v *= 20.0 + (c % 31) as f32;
            }
        }
    }
    x.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect()
}

/// f64 attention weights of one query per head over `[h, nk, d]` keys.
fn softmax_weights(q: &[f32], k: &[f32], h: usize, nk: usize, d: usize, scale: f64) -> Vec<f64> {
    let mut w = Vec::with_capacity(h * nk);
    for hh in 0..h {
        let qh = &q[hh * d..(hh + 1) * d];
        let s: Vec<f64> = k[hh * nk * d..(hh + 1) * nk * d]
            .chunks(d)
            .map(|kr| scale * qh.iter().zip(kr).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>())
            .collect();
        let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let l: f64 = s.iter().map(|x| (x - m).exp()).sum();
        w.extend(s.iter().map(|x| (x - m).exp() / l));
    }
    w
}

/// The f64 weighted sums of `[h, nk, d]` values.
fn weighted_values(w: &[f64], v: &[f32], h: usize, nk: usize, d: usize) -> Vec<f64> {
    let mut out = vec![0.0; h * d];
    for hh in 0..h {
        for j in 0..nk {
            let p = w[hh * nk + j];
            for x in 0..d {
                out[hh * d + x] += p * v[(hh * nk + j) * d + x] as f64;
            }
        }
    }
    out
}

/// The accuracy cost of each type against an f16 cache, on the CPU path: the relative error of
/// the output and the KL divergence of the attention weights (f16 cache's || quantized
/// cache's), d 128, 4096 keys, 8 heads with one query each, on random K/V and on K/V with
/// outlier channels. Printed (`cargo test --test kv_quant accuracy -- --nocapture`) for
/// BENCHMARKS.md; q8_0 on random K/V must stay within the 1e-2, and every figure within
/// a bound that catches a broken quantizer.
#[test]
fn accuracy_against_an_f16_cache() {
    let (h, nk, d) = (8usize, 4096usize, 128usize);
    let g = PageGeometry { num_pages: nk / PS, page_size: PS, kv_heads: h, head_dim: d };
    let pages: Vec<u32> = (0..g.num_pages as u32).collect();
    let lens = [nk as u32];
    let table = BlockTable::new(&pages, pages.len(), &lens).unwrap();
    let qs = Shape::new(1, h, 1, d);
    let kvs = Shape::new(1, h, nk, d);
    let scale = 1.0 / (d as f64).sqrt();
    println!("| K/V | type | bits/value | output rel. error | KL(weights) mean | KL max |");
    println!("|---|---|---|---|---|---|");
    for outliers in [false, true] {
        let k = accuracy_data(1, h, nk, d, outliers);
        let v = accuracy_data(2, h, nk, d, outliers);
        let q: Vec<f32> = rand_vec(3, h * d, 1.0).iter().map(|&x| half::f16::from_f32(x).to_f32()).collect();
        let w16 = softmax_weights(&q, &k, h, nk, d, scale);
        let want = weighted_values(&w16, &v, h, nk, d);
        for t in [KvDType::Q8_0, KvDType::Q4_0, KvDType::Fp8E4m3] {
            // fp8: each head's scale from its own rows (the data is [h, nk, d])
            let per_head = |x: &[f32]| -> Vec<f32> { x.chunks(nk * d).map(|c| fp8_scales_for(c, 1, d)[0]).collect() };
            let f = KvFormat::uniform(t)
                .with_fp8_scales((t == KvDType::Fp8E4m3).then(|| per_head(&k)), (t == KvDType::Fp8E4m3).then(|| per_head(&v)));
            let mut cache = HostKvCache::<f32>::with_format(g, &f).unwrap();
            let (hk, hv) = (HostTensor::new(&k, kvs).unwrap(), HostTensor::new(&v, kvs).unwrap());
            cpu::append_kv(&mut cache, &table, &hk, &hv).unwrap();
            let (out, _) =
                cpu::paged_attention(&HostTensor::new(&q, qs).unwrap(), &cache, &table, &AttentionOptions::default()).unwrap();
            let err = rel_err(&out, &want);
            // the weights over the dequantized keys (the reference quantizer's)
            let ones = vec![1.0f32; h];
            let kd = dequantized(&k, t, d, nk, f.k_scales.as_ref().unwrap_or(&ones));
            let wq = softmax_weights(&q, &kd, h, nk, d, scale);
            let kl: Vec<f64> = w16
                .chunks(nk)
                .zip(wq.chunks(nk))
                .map(|(p, q)| p.iter().zip(q).filter(|(p, _)| **p > 0.0).map(|(p, q)| p * (p / q).ln()).sum())
                .collect();
            let (mean, max) = (kl.iter().sum::<f64>() / kl.len() as f64, kl.iter().cloned().fold(0.0, f64::max));
            println!(
                "| {} | {t} | {} | {err:.2e} | {mean:.2e} | {max:.2e} |",
                if outliers { "4 outlier channels (20-50x)" } else { "uniform" },
                t.bits_per_value()
            );
            // bounds that catch a broken quantizer (a wrong block or scale gives errors near 1)
            assert!(err < 0.6 && mean < 0.1, "{t}: error {err:e}, KL {mean:e}");
            if t == KvDType::Q8_0 && !outliers {
                assert!(err <= 1e-2, "q8_0 output error {err:e} over the target 1e-2");
            }
        }
    }
}
