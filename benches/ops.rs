//! Criterion benches of every operation at sizes a software rasteriser finishes in minutes.
//! Each GPU iteration records, submits and waits for the device before the clock stops.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use wgpu_attention::*;

fn data(n: usize, seed: u64) -> Vec<f32> {
    (0..n).map(|i| (((i as u64 + seed) * 2654435761 % 1000) as f32) / 500.0 - 1.0).collect()
}

fn bench(c: &mut Criterion) {
    let ctx = Context::new_blocking().expect("the GPU benches need an adapter (lavapipe works)");
    eprintln!("adapter: {}", ctx.info());
    let mut g = c.benchmark_group("gpu");
    g.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    for &(bh, n, d) in &[(4usize, 128usize, 64usize), (4, 256, 64)] {
        let s = Shape::new(1, bh, n, d);
        let q = ctx.upload(&data(s.numel(), 1), s).unwrap();
        let k = ctx.upload(&data(s.numel(), 2), s).unwrap();
        let v = ctx.upload(&data(s.numel(), 3), s).unwrap();
        let out = ctx.zeros(s, Layout::Bhsd, DType::F32).unwrap();
        let scores = ctx.zeros(Shape::new(1, bh, n, n), Layout::Bhsd, DType::F32).unwrap();
        let probs = ctx.zeros(Shape::new(1, bh, n, n), Layout::Bhsd, DType::F32).unwrap();
        let o = AttentionOptions::default();
        let id = format!("{bh}x{n}x{d}");
        let flops = (4 * bh * n * n * d) as u64;
        let run = |f: &dyn Fn(&mut wgpu::CommandEncoder) -> Result<()>| {
            ctx.record_and_submit(f).unwrap();
            ctx.wait().unwrap();
        };
        g.throughput(Throughput::Elements(flops));
        g.bench_function(BenchmarkId::new("attention", &id), |b| {
            b.iter(|| {
                run(&|enc| {
                    ctx.encode_attention(
                        enc,
                        &AttentionCall { q: &q, k: &k, v: &v, mask: None, out: &out, lse: None },
                        &o,
                    )
                })
            })
        });
        g.bench_function(BenchmarkId::new("attention_unfused", &id), |b| {
            b.iter(|| {
                run(&|enc| {
                    ctx.encode_attention_unfused(
                        enc,
                        &AttentionCall { q: &q, k: &k, v: &v, mask: None, out: &out, lse: None },
                        &probs,
                        &o,
                    )
                })
            })
        });
        g.throughput(Throughput::Elements(flops / 2));
        g.bench_function(BenchmarkId::new("similarity", &id), |b| {
            b.iter(|| run(&|enc| ctx.encode_similarity(enc, &q, &k, Similarity::ScaledDot(None), &scores)))
        });
        g.throughput(Throughput::Bytes((2 * bh * n * n * 4) as u64));
        g.bench_function(BenchmarkId::new("softmax", &id), |b| {
            b.iter(|| run(&|enc| ctx.encode_softmax(enc, &scores, None, &SoftmaxOptions::default(), &probs)))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("cpu");
    g.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    let s = Shape::new(1, 4, 128, 64);
    let (q, k) = (data(s.numel(), 1), data(s.numel(), 2));
    let (hq, hk) = (HostTensor::new(&q, s).unwrap(), HostTensor::new(&k, s).unwrap());
    g.throughput(Throughput::Elements((4 * 4 * 128 * 128 * 64) as u64));
    g.bench_function("attention/4x128x64", |b| {
        b.iter(|| black_box(cpu::attention(&hq, &hk, &hk, None, &AttentionOptions::default()).unwrap()))
    });
    g.bench_function("similarity/4x128x64", |b| {
        b.iter(|| black_box(cpu::similarity(&hq, &hk, Similarity::Dot).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
