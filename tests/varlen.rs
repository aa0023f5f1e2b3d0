//! Packed variable-length attention (`Context::attention_varlen`, `cpu::attention_varlen`):
//! against the f64 reference computed sequence by sequence and against the padded batched call,
//! with empty, one-token and tile-edge sequences, every option, thousands of sequences in a
//! pack; batch invariance checked bitwise; bad offsets refused with the argument named. The
//! same for the one-dispatch call with device offsets (`attention_varlen_buffers`), and its
//! behaviour on offsets that are not a pack.

mod common;
use common::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use wgpu_attention::*;

/// One sequence's parts of a pack: query and key counts, its q, k and v rows.
type Parts = (usize, usize, Vec<f32>, Vec<f32>, Vec<f32>);

/// A pack: each sequence's query and key counts, and the packed BSHD data
/// (`[total, heads, d]`).
struct Pack {
    nq: Vec<usize>,
    nk: Vec<usize>,
    h: usize,
    hkv: usize,
    d: usize,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    cu_q: Vec<u32>,
    cu_k: Vec<u32>,
}

fn cumulative(n: &[usize]) -> Vec<u32> {
    let mut c = vec![0u32];
    for &x in n {
        c.push(c[c.len() - 1] + x as u32);
    }
    c
}

impl Pack {
    fn new(nq: &[usize], nk: &[usize], h: usize, hkv: usize, d: usize, seed: u64) -> Self {
        let (tq, tk) = (nq.iter().sum::<usize>(), nk.iter().sum::<usize>());
        Pack {
            nq: nq.to_vec(),
            nk: nk.to_vec(),
            h,
            hkv,
            d,
            q: rand_vec(seed, tq * h * d, 1.0),
            k: rand_vec(seed + 1, tk * hkv * d, 1.0),
            v: rand_vec(seed + 2, tk * hkv * d, 1.0),
            cu_q: cumulative(nq),
            cu_k: cumulative(nk),
        }
    }

    /// The pack of `others` with `one` inserted at position `at` (for invariance).
    fn with_inserted(one: &Pack, others: &Pack, at: usize) -> Pack {
        let split = |x: &[f32], cu: &[u32], w: usize| -> Vec<Vec<f32>> {
            cu.windows(2).map(|c| x[c[0] as usize * w..c[1] as usize * w].to_vec()).collect()
        };
        let (wq, wk) = (one.h * one.d, one.hkv * one.d);
        let mut parts: Vec<Parts> = others
            .nq
            .iter()
            .zip(&others.nk)
            .zip(split(&others.q, &others.cu_q, wq))
            .zip(split(&others.k, &others.cu_k, wk).into_iter().zip(split(&others.v, &others.cu_k, wk)))
            .map(|(((&a, &b), q), (k, v))| (a, b, q, k, v))
            .collect();
        parts.insert(at, (one.nq[0], one.nk[0], one.q.clone(), one.k.clone(), one.v.clone()));
        let nq: Vec<usize> = parts.iter().map(|p| p.0).collect();
        let nk: Vec<usize> = parts.iter().map(|p| p.1).collect();
        Pack {
            cu_q: cumulative(&nq),
            cu_k: cumulative(&nk),
            nq,
            nk,
            h: one.h,
            hkv: one.hkv,
            d: one.d,
            q: parts.iter().flat_map(|p| p.2.clone()).collect(),
            k: parts.iter().flat_map(|p| p.3.clone()).collect(),
            v: parts.iter().flat_map(|p| p.4.clone()).collect(),
        }
    }

    fn shapes(&self) -> (Shape, Shape) {
        (Shape::new(1, self.h, *self.cu_q.last().unwrap() as usize, self.d), Shape::new(1, self.hkv, *self.cu_k.last().unwrap() as usize, self.d))
    }

    fn varlen(&self) -> Varlen<'_> {
        Varlen::new(&self.cu_q, &self.cu_k).unwrap()
    }

    /// The f64 reference, each sequence alone: output `[total_q, h, d]` and lse `[h, total_q]`.
    fn reference(&self, c: &Case) -> (Vec<f64>, Vec<f64>) {
        let (h, d) = (self.h, self.d);
        let total = *self.cu_q.last().unwrap() as usize;
        let mut out = vec![0.0; total * h * d];
        let mut lse = vec![f64::NEG_INFINITY; h * total];
        let scale = c.scale.map_or(1.0 / (d as f64).sqrt(), |s| s as f64);
        for b in 0..self.nq.len() {
            let (q0, nq, k0, nk) = (self.cu_q[b] as usize, self.nq[b], self.cu_k[b] as usize, self.nk[b]);
            if nq == 0 {
                continue;
            }
            if nk == 0 {
                // no keys: zeros, and the sink's log-sum-exp (or -inf)
                for hh in 0..h {
                    for i in 0..nq {
                        lse[hh * total + q0 + i] = c.sinks.as_ref().map_or(f64::NEG_INFINITY, |s| s[hh] as f64);
                    }
                }
                continue;
            }
            let qs = Shape::new(1, h, nq, d);
            let ks = Shape::new(1, self.hkv, nk, d);
            let rm = RefMask { causal: c.causal, window: c.window.map(|w| (w.left, w.right)), ..Default::default() };
            let (o, l, _) = ref_attention_with(
                &self.q[q0 * h * d..(q0 + nq) * h * d],
                qs,
                Layout::Bshd,
                &self.k[k0 * self.hkv * d..(k0 + nk) * self.hkv * d],
                ks,
                Layout::Bshd,
                &self.v[k0 * self.hkv * d..(k0 + nk) * self.hkv * d],
                Layout::Bshd,
                scale,
                &rm,
                &c.ref_scores(),
            );
            out[q0 * h * d..(q0 + nq) * h * d].copy_from_slice(&o);
            for hh in 0..h {
                for i in 0..nq {
                    lse[hh * total + q0 + i] = l[hh * nq + i];
                }
            }
        }
        (out, lse)
    }

    fn cpu(&self, opts: &AttentionOptions) -> Result<(Vec<f32>, Vec<f32>)> {
        let (qs, ks) = self.shapes();
        let q = HostTensor::with_layout(&self.q, qs, Layout::Bshd)?;
        let k = HostTensor::with_layout(&self.k, ks, Layout::Bshd)?;
        let v = HostTensor::with_layout(&self.v, ks, Layout::Bshd)?;
        cpu::attention_varlen(&q, &k, &v, &self.varlen(), opts)
    }

    fn gpu(&self, ctx: &Context, opts: &AttentionOptions) -> Result<(Vec<f32>, Vec<f32>)> {
        let (qs, ks) = self.shapes();
        let q = ctx.upload_with_layout(&self.q, qs, Layout::Bshd)?;
        let k = ctx.upload_with_layout(&self.k, ks, Layout::Bshd)?;
        let v = ctx.upload_with_layout(&self.v, ks, Layout::Bshd)?;
        let (o, l) = ctx.attention_varlen_with_lse(&q, &k, &v, &self.varlen(), opts)?;
        Ok((o.download_blocking(ctx)?, l.download_blocking(ctx)?))
    }

    /// The pack in one dispatch, its offsets in device buffers (`attention_varlen_buffers`).
    fn gpu_buffers(&self, ctx: &Context, opts: &AttentionOptions) -> Result<(Vec<f32>, Vec<f32>)> {
        let (qs, ks) = self.shapes();
        let q = ctx.upload_with_layout(&self.q, qs, Layout::Bshd)?;
        let k = ctx.upload_with_layout(&self.k, ks, Layout::Bshd)?;
        let v = ctx.upload_with_layout(&self.v, ks, Layout::Bshd)?;
        let (cq, ck) = (ctx.upload_offsets(&self.cu_q)?, ctx.upload_offsets(&self.cu_k)?);
        let offsets = VarlenBuffers::new(&cq, &ck, self.nq.len())?;
        let (o, l) = ctx.attention_varlen_buffers_with_lse(&q, &k, &v, &offsets, opts)?;
        Ok((o.download_blocking(ctx)?, l.download_blocking(ctx)?))
    }
}

/// Lengths with an empty sequence, one-token ones, and lengths around the kernels' tiles.
fn mixed() -> (Vec<usize>, Vec<usize>) {
    (vec![3, 0, 1, 63, 64, 65, 2, 5], vec![10, 4, 1, 63, 64, 130, 0, 300])
}

fn cases() -> Vec<Case> {
    let base = Case::new(1, 4, 2, 1, 1, 32);
    vec![
        base.clone(),
        base.clone().causal(),
        base.clone().causal().window(20, Some(3)).softcap(25.0).alibi().sinks(),
        Case::new(1, 2, 2, 1, 1, 40).causal().sinks(),
    ]
}

fn check(ctx: Option<&Context>) {
    let (nq, nk) = mixed();
    for (i, c) in cases().iter().enumerate() {
        let pack = Pack::new(&nq, &nk, c.h, c.hkv, c.d, 100 + i as u64);
        let (want, want_lse) = pack.reference(c);
        let what = format!("{c:?}");
        let opts = c.opts();
        let (o, l) = pack.cpu(&opts).unwrap();
        assert_close(&format!("cpu {what}"), &o, &want, 1e-5);
        assert_lse(&format!("cpu lse {what}"), &l, &want_lse, 1e-5);
        let (qs, ks) = pack.shapes();
        let (r, _) = cpu::reference::attention_varlen(
            &HostTensor::with_layout(&pack.q, qs, Layout::Bshd).unwrap(),
            &HostTensor::with_layout(&pack.k, ks, Layout::Bshd).unwrap(),
            &HostTensor::with_layout(&pack.v, ks, Layout::Bshd).unwrap(),
            &pack.varlen(),
            &opts,
        )
        .unwrap();
        assert_close(&format!("cpu reference {what}"), &r, &want, 1e-6);
        if let Some(ctx) = ctx {
            let (o, l) = pack.gpu(ctx, &opts).unwrap();
            assert_close(&format!("gpu {what}"), &o, &want, 1e-5);
            assert_lse(&format!("gpu lse {what}"), &l, &want_lse, 1e-5);
            // recorded into the caller's encoder: the same bits
            let (qs, ks) = pack.shapes();
            let up = |x: &[f32], s| ctx.upload_with_layout(x, s, Layout::Bshd).unwrap();
            let (q, k, v) = (up(&pack.q, qs), up(&pack.k, ks), up(&pack.v, ks));
            let out = ctx.zeros(qs, Layout::Bshd, DType::F32).unwrap();
            let varlen = pack.varlen();
            let mut enc = ctx.device().create_command_encoder(&Default::default());
            let call = VarlenCall { q: &q, k: &k, v: &v, varlen: &varlen, out: &out, lse: None };
            ctx.encode_attention_varlen(&mut enc, &call, &opts).unwrap();
            ctx.queue().submit([enc.finish()]);
            assert_eq!(out.download_blocking(ctx).unwrap(), o, "encoded {what}");
        }
    }
}

#[test]
fn cpu_varlen_matches_the_reference_per_sequence() {
    check(None);
}

gpu_test! {
    fn gpu_varlen_matches_the_reference_per_sequence() {
        check(Some(&shared_gpu()));
    }
}

/// The pack with device offsets, one dispatch: every case against the f64 reference, f16
/// too, recorded into the caller's encoder, and with a fully masked row.
fn check_buffers(ctx: &Context) {
    let (nq, nk) = mixed();
    let mut cs = cases();
    cs.push(Case::new(1, 3, 1, 1, 1, 7).causal().window(5, None).sinks());
    for (i, c) in cs.iter().enumerate() {
        let pack = Pack::new(&nq, &nk, c.h, c.hkv, c.d, 200 + i as u64);
        let (want, want_lse) = pack.reference(c);
        let what = format!("{c:?}");
        let (o, l) = pack.gpu_buffers(ctx, &c.opts()).unwrap();
        assert_close(&format!("gpu buffers {what}"), &o, &want, 1e-5);
        assert_lse(&format!("gpu buffers lse {what}"), &l, &want_lse, 1e-5);
    }
    // f16 inputs
    if f16_supported(ctx) {
        let c = cases()[2].clone();
        let pack = Pack::new(&nq, &nk, c.h, c.hkv, c.d, 300);
        let (want, _) = pack.reference(&c);
        let h = |x: &[f32]| x.iter().map(|&y| half::f16::from_f32(y)).collect::<Vec<_>>();
        let (qs, ks) = pack.shapes();
        let q = ctx.upload_with_layout(&h(&pack.q), qs, Layout::Bshd).unwrap();
        let k = ctx.upload_with_layout(&h(&pack.k), ks, Layout::Bshd).unwrap();
        let v = ctx.upload_with_layout(&h(&pack.v), ks, Layout::Bshd).unwrap();
        let (cq, ck) = (ctx.upload_offsets(&pack.cu_q).unwrap(), ctx.upload_offsets(&pack.cu_k).unwrap());
        let offsets = VarlenBuffers::new(&cq, &ck, pack.nq.len()).unwrap();
        let o = ctx.attention_varlen_buffers(&q, &k, &v, &offsets, &c.opts()).unwrap();
        let got: Vec<f32> = o.download_blocking(ctx).unwrap();
        assert_close("gpu buffers f16", &got, &want, 2e-2);
    }
    // recorded into the caller's encoder: the same bits as the allocating call
    let c = &cases()[1];
    let pack = Pack::new(&nq, &nk, c.h, c.hkv, c.d, 201);
    let (want, _) = pack.gpu_buffers(ctx, &c.opts()).unwrap();
    let (qs, ks) = pack.shapes();
    let up = |x: &[f32], s| ctx.upload_with_layout(x, s, Layout::Bshd).unwrap();
    let (q, k, v) = (up(&pack.q, qs), up(&pack.k, ks), up(&pack.v, ks));
    let out = ctx.zeros(qs, Layout::Bshd, DType::F32).unwrap();
    let (cq, ck) = (ctx.upload_offsets(&pack.cu_q).unwrap(), ctx.upload_offsets(&pack.cu_k).unwrap());
    let offsets = VarlenBuffers::new(&cq, &ck, pack.nq.len()).unwrap();
    let mut enc = ctx.device().create_command_encoder(&Default::default());
    let call = VarlenBuffersCall { q: &q, k: &k, v: &v, offsets: &offsets, out: &out, lse: None };
    ctx.encode_attention_varlen_buffers(&mut enc, &call, &c.opts()).unwrap();
    ctx.queue().submit([enc.finish()]);
    assert_eq!(out.download_blocking(ctx).unwrap(), want, "encoded");
}

gpu_test! {
    fn gpu_varlen_with_device_offsets_matches_the_reference() {
        check_buffers(&shared_gpu());
    }
}

gpu_test! {
    fn gpu_device_offsets_bad_calls_and_bad_contents() {
        let ctx = shared_gpu();
        let pack = Pack::new(&[2, 3], &[4, 1], 2, 1, 8, 1);
        let (qs, ks) = pack.shapes();
        let q = ctx.upload_with_layout(&pack.q, qs, Layout::Bshd).unwrap();
        let k = ctx.upload_with_layout(&pack.k, ks, Layout::Bshd).unwrap();
        let (cq, ck) = (ctx.upload_offsets(&pack.cu_q).unwrap(), ctx.upload_offsets(&pack.cu_k).unwrap());
        let arg = |e: Error| match e {
            Error::InvalidArgument { argument, .. } => argument,
            other => panic!("{other}"),
        };
        // host offsets checked on upload; buffers too small, not storage, no sequences
        assert_eq!(arg(ctx.upload_offsets(&[0, 3, 2]).unwrap_err()), "offsets");
        assert_eq!(arg(VarlenBuffers::new(&cq, &ck, 3).unwrap_err()), "cu_seqlens_q");
        assert_eq!(arg(VarlenBuffers::new(&cq, &ck, 0).unwrap_err()), "batch");
        let plain = ctx.device().create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: 64,
            usage: wgpu::BufferUsages::UNIFORM,
            mapped_at_creation: false,
        });
        assert_eq!(arg(VarlenBuffers::new(&cq, &plain, 2).unwrap_err()), "cu_seqlens_k");
        let offsets = VarlenBuffers::new(&cq, &ck, 2).unwrap();
        // options the one dispatch cannot honour are refused with the reason
        let fixed = AttentionOptions { fixed_order: true, ..Default::default() };
        let e = ctx.attention_varlen_buffers(&q, &k, &k, &offsets, &fixed).unwrap_err();
        assert!(e.to_string().contains("fixed_order"), "{e}");
        let split = AttentionOptions { variant: AttentionVariant::SplitK(Loads::Scalar), ..Default::default() };
        let e = ctx.attention_varlen_buffers(&q, &k, &k, &offsets, &split).unwrap_err();
        assert!(e.to_string().contains("variant"), "{e}");
        let lens = [1u32, 1];
        let kl = AttentionOptions { key_lengths: Some(&lens), ..Default::default() };
        assert_eq!(arg(ctx.attention_varlen_buffers(&q, &k, &k, &offsets, &kl).unwrap_err()), "key_lengths");
        // an output in an offsets buffer: refused before recording
        let o = AttentionOptions::default();
        let big = ctx.upload_offsets(&(0..=200u32).collect::<Vec<_>>()).unwrap();
        let offsets_big = VarlenBuffers::new(&cq, &big, 2).unwrap();
        let out = Tensor::from_buffer(&ctx, big.clone(), 64, Shape::new(1, 1, 1, 8), Layout::Bhsd, DType::F32).unwrap();
        let q1 = ctx.upload(&[0.5f32; 8], Shape::new(1, 1, 1, 8)).unwrap();
        let call = VarlenBuffersCall { q: &q1, k: &k, v: &k, offsets: &offsets_big, out: &out, lse: None };
        let mut enc = ctx.device().create_command_encoder(&Default::default());
        let e = ctx.encode_attention_varlen_buffers(&mut enc, &call, &o).unwrap_err();
        assert!(matches!(e, Error::Aliasing { .. }), "{e}");
        // offsets that are not a pack (written by a faulty step): no error can be seen without
        // a readback, so the kernel clamps: nothing is read or written outside the tensors,
        // the results are finite, and a later valid call is right
        for (bad_q, bad_k) in [([0u32, 9, 2], [0u32, 1, 5]), ([7, 0, 5], [0, 99, 5]), ([0, 2, 5], [u32::MAX, 0, 3])] {
            let bq = ctx.device().create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size: 12,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let bk = ctx.device().create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size: 12,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            ctx.queue().write_buffer(&bq, 0, bytemuck::cast_slice(&bad_q));
            ctx.queue().write_buffer(&bk, 0, bytemuck::cast_slice(&bad_k));
            let bad = VarlenBuffers::new(&bq, &bk, 2).unwrap();
            let got: Vec<f32> = ctx.attention_varlen_buffers(&q, &k, &k, &bad, &o).unwrap().download_blocking(&ctx).unwrap();
            assert!(got.iter().all(|x| x.is_finite()), "{bad_q:?} {bad_k:?}: {got:?}");
        }
        let (want, _) = pack.reference(&Case::new(1, 2, 1, 1, 1, 8));
        let (got, _) = pack.gpu_buffers(&ctx, &o).unwrap();
        assert_close("after bad offsets", &got, &want, 1e-5);
    }
}

#[test]
fn varlen_equals_the_padded_call() {
    // every sequence padded to the longest with key lengths, in one batched call: the rows of
    // the pack's sequences are the padded call's (non-causal: the padded call aligns causal
    // masks to its padded key count)
    let (nq, nk) = (vec![4usize, 1, 7], vec![9usize, 30, 2]);
    let pack = Pack::new(&nq, &nk, 2, 1, 16, 7);
    let (mq, mk) = (7, 30);
    let (b, h, d) = (3, 2, 16);
    let mut q = vec![0.0f32; b * h * mq * d];
    let (mut k, mut v) = (vec![0.0f32; b * mk * d], vec![0.0f32; b * mk * d]);
    for s in 0..b {
        for i in 0..nq[s] {
            for hh in 0..h {
                let src = ((pack.cu_q[s] as usize + i) * h + hh) * d;
                q[((s * h + hh) * mq + i) * d..][..d].copy_from_slice(&pack.q[src..src + d]);
            }
        }
        for j in 0..nk[s] {
            let src = (pack.cu_k[s] as usize + j) * d;
            k[(s * mk + j) * d..][..d].copy_from_slice(&pack.k[src..src + d]);
            v[(s * mk + j) * d..][..d].copy_from_slice(&pack.v[src..src + d]);
        }
    }
    let lens: Vec<u32> = nk.iter().map(|&x| x as u32).collect();
    let opts = AttentionOptions { key_lengths: Some(&lens), ..Default::default() };
    let (qs, ks) = (Shape::new(b, h, mq, d), Shape::new(b, 1, mk, d));
    let (padded, _) = cpu::attention(
        &HostTensor::new(&q, qs).unwrap(),
        &HostTensor::new(&k, ks).unwrap(),
        &HostTensor::new(&v, ks).unwrap(),
        None,
        &opts,
    )
    .unwrap();
    let (packed, _) = pack.cpu(&AttentionOptions::default()).unwrap();
    for s in 0..b {
        for i in 0..nq[s] {
            for hh in 0..h {
                let got = &packed[((pack.cu_q[s] as usize + i) * h + hh) * d..][..d];
                let want = &padded[((s * h + hh) * mq + i) * d..][..d];
                assert_agree(&format!("sequence {s} row {i} head {hh}"), got, want, 1e-6);
            }
        }
    }
}

/// A sequence alone and among random others, at each given position: bitwise the same output
/// and log-sum-exp, on the CPU path and on the GPU.
fn check_invariance(ctx: Option<&Context>, others: usize, positions: &[usize]) {
    let c = Case::new(1, 4, 2, 1, 1, 32).causal().sinks();
    let one = Pack::new(&[37], &[300], 4, 2, 32, 5);
    let mut r = ChaCha8Rng::seed_from_u64(others as u64);
    let nq: Vec<usize> = (0..others).map(|_| r.random_range(0..70)).collect();
    let nk: Vec<usize> = nq.iter().map(|&q| q + r.random_range(0..400)).collect();
    let rest = Pack::new(&nq, &nk, 4, 2, 32, 77);
    let opts = c.opts();
    let alone_cpu = one.cpu(&opts).unwrap();
    let alone_gpu = ctx.map(|ctx| (one.gpu(ctx, &opts).unwrap(), one.gpu_buffers(ctx, &opts).unwrap()));
    let total = 37 * 4;
    for &at in positions {
        let pack = Pack::with_inserted(&one, &rest, at);
        let q0 = pack.cu_q[at] as usize;
        let tq = *pack.cu_q.last().unwrap() as usize;
        let mine = |(o, l): &(Vec<f32>, Vec<f32>)| -> (Vec<u32>, Vec<u32>) {
            let o = o[q0 * 4 * 32..][..total * 32].iter().map(|x| x.to_bits()).collect();
            let l = (0..4).flat_map(|h| l[h * tq + q0..][..37].iter().map(|x| x.to_bits()).collect::<Vec<_>>()).collect();
            (o, l)
        };
        let bits = |(o, l): &(Vec<f32>, Vec<f32>)| -> (Vec<u32>, Vec<u32>) {
            (o.iter().map(|x| x.to_bits()).collect(), l.iter().map(|x| x.to_bits()).collect())
        };
        assert_eq!(mine(&pack.cpu(&opts).unwrap()), bits(&alone_cpu), "cpu: among {others} at {at}");
        if let (Some(ctx), Some((alone, alone_buffers))) = (ctx, &alone_gpu) {
            // the call with host offsets at every 8th position (a dispatch per sequence), the
            // one dispatch with device offsets at every position
            if at % 8 == 0 || at == others {
                assert_eq!(mine(&pack.gpu(ctx, &opts).unwrap()), bits(alone), "gpu: among {others} at {at}");
            }
            let got = mine(&pack.gpu_buffers(ctx, &opts).unwrap());
            assert_eq!(got, bits(alone_buffers), "gpu, device offsets: among {others} at {at}");
        }
    }
}

#[test]
fn cpu_results_do_not_depend_on_the_pack() {
    check_invariance(None, 1, &[0, 1]);
    check_invariance(None, 7, &(0..8).collect::<Vec<_>>());
    check_invariance(None, 63, &(0..64).collect::<Vec<_>>());
}

gpu_test! {
    fn gpu_results_do_not_depend_on_the_pack() {
        let ctx = shared_gpu();
        check_invariance(Some(&ctx), 1, &[0, 1]);
        check_invariance(Some(&ctx), 7, &(0..8).collect::<Vec<_>>());
        check_invariance(Some(&ctx), 63, &(0..64).collect::<Vec<_>>());
    }
}

fn thousands(ctx: Option<&Context>) {
    // 2000 sequences of 0-3 queries over 0-5 keys
    let mut r = ChaCha8Rng::seed_from_u64(9);
    let nq: Vec<usize> = (0..2000).map(|_| r.random_range(0..4)).collect();
    let nk: Vec<usize> = (0..2000).map(|_| r.random_range(0..6)).collect();
    let c = Case::new(1, 2, 1, 1, 1, 8).sinks();
    let pack = Pack::new(&nq, &nk, 2, 1, 8, 3);
    let (want, want_lse) = pack.reference(&c);
    let (o, l) = match ctx {
        Some(ctx) => pack.gpu(ctx, &c.opts()).unwrap(),
        None => pack.cpu(&c.opts()).unwrap(),
    };
    assert_close("2000 sequences", &o, &want, 1e-5);
    assert_lse("2000 sequences lse", &l, &want_lse, 1e-5);
    if let Some(ctx) = ctx {
        // and in one dispatch, the offsets on the device
        let (o, l) = pack.gpu_buffers(ctx, &c.opts()).unwrap();
        assert_close("2000 sequences, device offsets", &o, &want, 1e-5);
        assert_lse("2000 sequences lse, device offsets", &l, &want_lse, 1e-5);
    }
}

#[test]
fn cpu_thousands_of_sequences_in_a_pack() {
    thousands(None);
}

gpu_test! {
    fn gpu_thousands_of_sequences_in_a_pack() {
        thousands(Some(&shared_gpu()));
    }
}

fn bad_offsets(ctx: Option<&Context>) {
    let pack = Pack::new(&[2, 3], &[4, 1], 2, 1, 8, 1);
    let (qs, ks) = pack.shapes();
    let run = |cu_q: &[u32], cu_k: &[u32], opts: &AttentionOptions| -> Error {
        let varlen = match Varlen::new(cu_q, cu_k) {
            Ok(v) => v,
            Err(e) => return e,
        };
        match ctx {
            Some(ctx) => {
                let q = ctx.upload_with_layout(&pack.q, qs, Layout::Bshd).unwrap();
                let k = ctx.upload_with_layout(&pack.k, ks, Layout::Bshd).unwrap();
                ctx.attention_varlen(&q, &k, &k, &varlen, opts).unwrap_err()
            }
            None => {
                let q = HostTensor::with_layout(&pack.q, qs, Layout::Bshd).unwrap();
                let k = HostTensor::with_layout(&pack.k, ks, Layout::Bshd).unwrap();
                cpu::attention_varlen(&q, &k, &k, &varlen, opts).unwrap_err()
            }
        }
    };
    let o = AttentionOptions::default();
    let named = |e: Error, arg: &str| {
        let name = match &e {
            Error::InvalidArgument { argument, .. } | Error::LengthMismatch { argument, .. } => *argument,
            _ => "",
        };
        assert_eq!(name, arg, "{e}");
    };
    // not increasing
    named(run(&[0, 3, 2], &[0, 4, 5], &o), "cu_seqlens_q");
    named(run(&[0, 2, 5], &[0, 5, 4], &o), "cu_seqlens_k");
    // not starting at 0
    named(run(&[1, 2, 5], &[0, 4, 5], &o), "cu_seqlens_q");
    // beyond the tensor, and short of it (the totals)
    named(run(&[0, 2, 6], &[0, 4, 5], &o), "cu_seqlens_q");
    named(run(&[0, 2, 5], &[0, 4, 4], &o), "cu_seqlens_k");
    // wrong counts
    named(run(&[0, 2, 5], &[0, 5], &o), "cu_seqlens_k");
    named(run(&[5], &[5], &o), "cu_seqlens_q");
    // key lengths: the offsets give them
    let lens = [1u32, 1];
    named(run(&[0, 2, 5], &[0, 4, 5], &AttentionOptions { key_lengths: Some(&lens), ..o }), "key_lengths");
}

#[test]
fn cpu_bad_offsets_are_refused_naming_them() {
    bad_offsets(None);
}

gpu_test! {
    fn gpu_bad_offsets_are_refused_naming_them() {
        bad_offsets(Some(&shared_gpu()));
    }
}

/// Ragged calls over a paged cache, a serving step: sequences with cached prefixes of different
/// lengths, some prefilling a chunk, some decoding one token, one idle. The prefixes and then
/// the step's tokens are appended with `append_kv_varlen` (the GPU's pools equal the CPU's),
/// and the step's queries attended with `paged_attention_varlen`, against the f64 reference of
/// each sequence over its contiguous keys.
fn ragged(ctx: Option<&Context>) {
    let (kvh, h, d, ps) = (2usize, 4usize, 32usize, 16usize);
    let cached = [0usize, 17, 40, 5, 64];
    let new = [5usize, 1, 0, 20, 1];
    let total: Vec<usize> = cached.iter().zip(&new).map(|(a, b)| a + b).collect();
    let blocks = total.iter().map(|t| t.div_ceil(ps)).max().unwrap();
    let g = PageGeometry { num_pages: cached.len() * blocks + 1, page_size: ps, kv_heads: kvh, head_dim: d };
    let mut pages: Vec<u32> = (0..g.num_pages as u32).collect();
    let mut r = ChaCha8Rng::seed_from_u64(4);
    for i in (1..pages.len()).rev() {
        pages.swap(i, r.random_range(0..=i));
    }
    let table: Vec<u32> = pages[..cached.len() * blocks].to_vec();
    // each sequence's K and V, [kvh, total, d]
    let kv: Vec<(Vec<f32>, Vec<f32>)> =
        (0..cached.len()).map(|b| (rand_vec(60 + b as u64, kvh * total[b] * d, 1.0), rand_vec(90 + b as u64, kvh * total[b] * d, 1.0))).collect();
    // tokens [from, to) of every sequence, packed BSHD [sum, kvh, d]
    let pack = |x: usize, from: &dyn Fn(usize) -> usize, to: &dyn Fn(usize) -> usize| -> Vec<f32> {
        let mut p = vec![];
        for (b, s) in kv.iter().enumerate() {
            let src = if x == 0 { &s.0 } else { &s.1 };
            for t in from(b)..to(b) {
                for hk in 0..kvh {
                    p.extend_from_slice(&src[(hk * total[b] + t) * d..][..d]);
                }
            }
        }
        p
    };
    let cached_lens: Vec<u32> = cached.iter().map(|&c| c as u32).collect();
    let total_lens: Vec<u32> = total.iter().map(|&t| t as u32).collect();
    let c = Case::new(1, h, kvh, 1, 1, d).causal().window(30, None).sinks();
    let opts = c.opts();
    let q = rand_vec(7, new.iter().sum::<usize>() * h * d, 1.0);
    let qs = Shape::new(1, h, new.iter().sum(), d);
    let cu_q = cumulative(&new);
    // (the table's lengths, the offsets, packed K, packed V) of each append
    type Append<'a> = (&'a [u32], Vec<u32>, Vec<f32>, Vec<f32>);
    let steps: [Append; 2] = [
        (&cached_lens, cumulative(&cached), pack(0, &|_| 0, &|b| cached[b]), pack(1, &|_| 0, &|b| cached[b])),
        (&total_lens, cumulative(&new), pack(0, &|b| cached[b], &|b| total[b]), pack(1, &|b| cached[b], &|b| total[b])),
    ];
    let mut host = HostKvCache::<f32>::new(g).unwrap();
    let gpu = ctx.map(|ctx| PagedKvCache::new(ctx, g, DType::F32).unwrap());
    for (lens, cu, k, v) in &steps {
        let t = BlockTable::new(&table, blocks, lens).unwrap();
        let s = Shape::new(1, kvh, *cu.last().unwrap() as usize, d);
        let (hk, hv) = (HostTensor::with_layout(k, s, Layout::Bshd).unwrap(), HostTensor::with_layout(v, s, Layout::Bshd).unwrap());
        cpu::append_kv_varlen(&mut host, &t, &hk, &hv, cu).unwrap();
        if let (Some(ctx), Some(cache)) = (ctx, &gpu) {
            let (gk, gv) = (ctx.upload_with_layout(k, s, Layout::Bshd).unwrap(), ctx.upload_with_layout(v, s, Layout::Bshd).unwrap());
            ctx.append_kv_varlen(cache, &t, &gk, &gv, cu).unwrap();
        }
    }
    // the reference: each sequence with new tokens, its queries at its last positions
    let tq = *cu_q.last().unwrap() as usize;
    let mut want = vec![0.0f64; tq * h * d];
    let mut want_lse = vec![f64::NEG_INFINITY; h * tq];
    for b in 0..cached.len() {
        let (q0, nq) = (cu_q[b] as usize, new[b]);
        if nq == 0 {
            continue;
        }
        let rm = RefMask { causal: true, window: c.window.map(|w| (w.left, w.right)), ..Default::default() };
        let ks = Shape::new(1, kvh, total[b], d);
        let (o, l, _) = ref_attention_with(
            &q[q0 * h * d..(q0 + nq) * h * d],
            Shape::new(1, h, nq, d),
            Layout::Bshd,
            &kv[b].0,
            ks,
            Layout::Bhsd,
            &kv[b].1,
            Layout::Bhsd,
            1.0 / (d as f64).sqrt(),
            &rm,
            &c.ref_scores(),
        );
        want[q0 * h * d..(q0 + nq) * h * d].copy_from_slice(&o);
        for hh in 0..h {
            for i in 0..nq {
                want_lse[hh * tq + q0 + i] = l[hh * nq + i];
            }
        }
    }
    let t = BlockTable::new(&table, blocks, &total_lens).unwrap();
    let hq = HostTensor::with_layout(&q, qs, Layout::Bshd).unwrap();
    let (o, l) = cpu::paged_attention_varlen(&hq, &host, &t, &cu_q, &opts).unwrap();
    assert_close("cpu ragged", &o, &want, 1e-5);
    assert_lse("cpu ragged lse", &l, &want_lse, 1e-5);
    let (Some(ctx), Some(cache)) = (ctx, gpu) else { return };
    assert_eq!(cache.k().download_blocking(ctx).unwrap(), host.k().unwrap(), "K pools");
    assert_eq!(cache.v().download_blocking(ctx).unwrap(), host.v().unwrap(), "V pools");
    let gq = ctx.upload_with_layout(&q, qs, Layout::Bshd).unwrap();
    let (o, l) = ctx.paged_attention_varlen_with_lse(&gq, &cache, &t, &cu_q, &opts).unwrap();
    let (o, l) = (o.download_blocking(ctx).unwrap(), l.download_blocking(ctx).unwrap());
    assert_close("gpu ragged", &o, &want, 1e-5);
    assert_lse("gpu ragged lse", &l, &want_lse, 1e-5);
    // recorded into the caller's encoder: the same bits
    let (eo, el) = (ctx.zeros(qs, Layout::Bshd, DType::F32).unwrap(), ctx.zeros(Shape::new(1, h, tq, 1), Layout::Bhsd, DType::F32).unwrap());
    let mut enc = ctx.device().create_command_encoder(&Default::default());
    ctx.encode_paged_attention_varlen(&mut enc, &gq, &cache, &t, &cu_q, &opts, &eo, Some(&el)).unwrap();
    ctx.queue().submit([enc.finish()]);
    assert_eq!(eo.download_blocking(ctx).unwrap(), o, "encoded ragged output");
    assert_eq!(el.download_blocking(ctx).unwrap(), l, "encoded ragged lse");
    // bad offsets and shared slots are refused before anything runs
    let e = ctx.paged_attention_varlen(&gq, &cache, &t, &cu_q[..4], &opts).unwrap_err();
    assert!(matches!(e, Error::LengthMismatch { argument: "cu_seqlens_q", .. }), "{e}");
    let shared = [table[0], table[1], table[2], table[3], table[4]];
    let one_page: Vec<u32> = shared.iter().flat_map(|&p| std::iter::repeat_n(p, blocks)).collect();
    let lens1 = [1u32; 5];
    let t1 = BlockTable::new(&one_page[..5 * blocks], blocks, &lens1).unwrap();
    let kn = ctx.upload_with_layout(&vec![0.5f32; 2 * kvh * d], Shape::new(1, kvh, 2, d), Layout::Bshd).unwrap();
    let both_first = [0u32, 1, 1, 1, 1, 2];
    // sequences 0 and 4 write slot 0 of their first pages, which differ: fine; the same page twice is refused
    let same: Vec<u32> = std::iter::repeat_n(table[0], 5 * blocks).collect();
    let ts = BlockTable::new(&same, blocks, &lens1).unwrap();
    assert!(ctx.append_kv_varlen(&cache, &t1, &kn, &kn, &both_first).is_ok());
    let e = ctx.append_kv_varlen(&cache, &ts, &kn, &kn, &both_first).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { argument: "block_table", .. }), "{e}");
}

#[test]
fn cpu_ragged_queries_over_a_paged_cache() {
    ragged(None);
}

gpu_test! {
    fn gpu_ragged_queries_over_a_paged_cache() {
        ragged(Some(&shared_gpu()));
    }
}

/// The fixed reduction order: a row's output and log-sum-exp bitwise the same from a prefill at
/// once (contiguous), a chunked prefill over a paged cache and decode steps over it, with a
/// window that starts rows' keys inside a block; other forced variants refused.
fn fixed_order(ctx: Option<&Context>) {
    let (h, hkv, d, n, ps) = (4usize, 2usize, 32usize, 700usize, 16usize);
    let c = Case::new(1, h, hkv, n, n, d).causal().window(300, None).sinks();
    let opts = AttentionOptions { fixed_order: true, ..c.opts() };
    let (qs, ks) = (Shape::new(1, h, n, d), Shape::new(1, hkv, n, d));
    let (q, k, v) = (rand_vec(1, qs.numel(), 1.0), rand_vec(2, ks.numel(), 1.0), rand_vec(3, ks.numel(), 1.0));
    // rows [r0, r1) of a [1, heads, n, d] BHSD tensor
    let rows = |x: &[f32], heads: usize, r0: usize, r1: usize| -> Vec<f32> {
        (0..heads).flat_map(|hh| x[(hh * n + r0) * d..(hh * n + r1) * d].to_vec()).collect()
    };
    let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    let g = PageGeometry { num_pages: n.div_ceil(ps), page_size: ps, kv_heads: hkv, head_dim: d };
    let pages: Vec<u32> = (0..g.num_pages as u32).rev().collect();
    let chunks = [(0usize, 100usize), (100, 350), (350, 600), (600, 700)];
    // (whole output, whole lse) and, per chunk and per decode row, (rows, output, lse)
    type Rows = (usize, usize, Vec<f32>, Vec<f32>);
    let (whole, parts): ((Vec<f32>, Vec<f32>), Vec<Rows>) = match ctx {
        None => {
            fn t(x: &[f32], s: Shape) -> HostTensor<'_, f32> {
                HostTensor::new(x, s).unwrap()
            }
            let whole = cpu::attention(&t(&q, qs), &t(&k, ks), &t(&v, ks), None, &opts).unwrap();
            let mut cache = HostKvCache::<f32>::new(g).unwrap();
            let mut parts = vec![];
            for &(r0, r1) in &chunks {
                let lens = [r1 as u32];
                let table = BlockTable::new(&pages, pages.len(), &lens).unwrap();
                let cs = Shape::new(1, hkv, r1 - r0, d);
                let (kc, vc, qc) = (rows(&k, hkv, r0, r1), rows(&v, hkv, r0, r1), rows(&q, h, r0, r1));
                cpu::append_kv(&mut cache, &table, &t(&kc, cs), &t(&vc, cs)).unwrap();
                let (o, l) = cpu::paged_attention(&t(&qc, Shape::new(1, h, r1 - r0, d)), &cache, &table, &opts).unwrap();
                parts.push((r0, r1, o, l));
            }
            for p in [510usize, 511, 512, 650, 699] {
                let lens = [p as u32 + 1];
                let table = BlockTable::new(&pages, pages.len(), &lens).unwrap();
                let qr = rows(&q, h, p, p + 1);
                let (o, l) = cpu::paged_attention(&t(&qr, Shape::new(1, h, 1, d)), &cache, &table, &opts).unwrap();
                parts.push((p, p + 1, o, l));
            }
            (whole, parts)
        }
        Some(ctx) => {
            let up = |x: &[f32], s| ctx.upload(x, s).unwrap();
            let (o, l) = ctx.attention_with_lse(&up(&q, qs), &up(&k, ks), &up(&v, ks), None, &opts).unwrap();
            let whole = (o.download_blocking(ctx).unwrap(), l.download_blocking(ctx).unwrap());
            let cache = PagedKvCache::new(ctx, g, DType::F32).unwrap();
            let mut parts = vec![];
            let attend = |r0: usize, r1: usize, parts: &mut Vec<_>| {
                let lens = [r1 as u32];
                let table = BlockTable::new(&pages, pages.len(), &lens).unwrap();
                let plan = ctx.plan_paged_attention(&up(&rows(&q, h, r0, r1), Shape::new(1, h, r1 - r0, d)), &cache, &table, &opts, true).unwrap();
                assert_eq!(plan.variant, AttentionVariant::SplitK(Loads::Vec4), "{}", plan.reason);
                let (o, l) = ctx.paged_attention_with_lse(&up(&rows(&q, h, r0, r1), Shape::new(1, h, r1 - r0, d)), &cache, &table, &opts).unwrap();
                parts.push((r0, r1, o.download_blocking(ctx).unwrap(), l.download_blocking(ctx).unwrap()));
            };
            for &(r0, r1) in &chunks {
                let lens = [r1 as u32];
                let table = BlockTable::new(&pages, pages.len(), &lens).unwrap();
                let cs = Shape::new(1, hkv, r1 - r0, d);
                ctx.append_kv(&cache, &table, &up(&rows(&k, hkv, r0, r1), cs), &up(&rows(&v, hkv, r0, r1), cs)).unwrap();
                attend(r0, r1, &mut parts);
            }
            for p in [510usize, 511, 512, 650, 699] {
                // a decode step: the row alone, its sequence p + 1 tokens long
                let lens = [p as u32 + 1];
                let table = BlockTable::new(&pages, pages.len(), &lens).unwrap();
                let (o, l) = ctx.paged_attention_with_lse(&up(&rows(&q, h, p, p + 1), Shape::new(1, h, 1, d)), &cache, &table, &opts).unwrap();
                parts.push((p, p + 1, o.download_blocking(ctx).unwrap(), l.download_blocking(ctx).unwrap()));
            }
            // other variants are refused in this mode, saying why
            let forced = AttentionOptions { variant: AttentionVariant::Fused(Loads::Vec4), ..opts };
            let e = ctx.attention(&up(&q, qs), &up(&k, ks), &up(&v, ks), None, &forced).unwrap_err();
            assert!(matches!(e, Error::Unsupported(ref m) if m.contains("fixed_order")), "{e}");
            (whole, parts)
        }
    };
    let (want, _) = {
        let rm = RefMask { causal: true, window: c.window.map(|w| (w.left, w.right)), ..Default::default() };
        let (o, l, _) = ref_attention_with(&q, qs, Layout::Bhsd, &k, ks, Layout::Bhsd, &v, Layout::Bhsd, 1.0 / (d as f64).sqrt(), &rm, &c.ref_scores());
        (o, l)
    };
    assert_close("fixed order, whole", &whole.0, &want, 1e-5);
    for (r0, r1, o, l) in &parts {
        assert_eq!(bits(o), bits(&rows(&whole.0, h, *r0, *r1)), "output of rows {r0}..{r1}");
        let wl: Vec<f32> = (0..h).flat_map(|hh| whole.1[hh * n + r0..hh * n + r1].to_vec()).collect();
        assert_eq!(bits(l), bits(&wl), "lse of rows {r0}..{r1}");
    }
}

#[test]
fn cpu_fixed_order_is_independent_of_how_keys_arrive() {
    fixed_order(None);
}

gpu_test! {
    fn gpu_fixed_order_is_independent_of_how_keys_arrive() {
        fixed_order(Some(&shared_gpu()));
    }
}
