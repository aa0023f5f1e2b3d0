//! Fused attention on the best adapter present, checked against the CPU path.
//!
//!     cargo run --release --example attention -- [--batch B] [--heads H] [--kv-heads HKV]
//!         [--nq NQ] [--nk NK] [--dim D] [--causal] [--f16] [--runs N]
//!
//! Prints the adapter, the agreement with the CPU path, and the time of each.

use std::time::Instant;

use wgpu_attention::*;

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name} takes a number, got {v:?}")))
        .unwrap_or(default)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (b, h) = (arg(&args, "--batch", 1), arg(&args, "--heads", 8));
    let hkv = arg(&args, "--kv-heads", h);
    let nq = arg(&args, "--nq", 1024);
    let (nk, d, runs) = (arg(&args, "--nk", nq), arg(&args, "--dim", 64), arg(&args, "--runs", 5).max(1));
    let causal = args.iter().any(|a| a == "--causal");
    let f16 = args.iter().any(|a| a == "--f16");

    let ctx = Context::new_blocking()?;
    println!("adapter: {}", ctx.info());
    let (qs, ks) = (Shape::new(b, h, nq, d), Shape::new(b, hkv, nk, d));
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
            })
            .collect()
    };
    let (mut q, mut k, mut v) = (rnd(qs.numel()), rnd(ks.numel()), rnd(ks.numel()));
    if f16 {
        // the CPU path sees the same (rounded) values as the GPU
        for x in q.iter_mut().chain(k.iter_mut()).chain(v.iter_mut()) {
            *x = half::f16::from_f32(*x).to_f32();
        }
    }
    let opts = AttentionOptions { causal, ..Default::default() };
    let up = |x: &[f32], s: Shape| -> Result<Tensor> {
        if f16 {
            ctx.upload(&x.iter().map(|&v| half::f16::from_f32(v)).collect::<Vec<_>>(), s)
        } else {
            ctx.upload(x, s)
        }
    };
    let (gq, gk, gv) = (up(&q, qs)?, up(&k, ks)?, up(&v, ks)?);

    // warm-up (compiles the pipeline), then time kernel submissions until the device is idle
    let out = ctx.attention(&gq, &gk, &gv, None, &opts)?;
    ctx.wait()?;
    let mut times = vec![];
    for _ in 0..runs {
        let t = Instant::now();
        let mut enc = ctx.device().create_command_encoder(&Default::default());
        ctx.encode_attention(&mut enc, &gq, &gk, &gv, None, &opts, &out, None)?;
        ctx.queue().submit([enc.finish()]);
        ctx.wait()?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let gpu_s = times[times.len() / 2];
    let got = out.download_blocking(&ctx)?;

    let t = Instant::now();
    let (hq, hk, hv) = (HostTensor::new(&q, qs)?, HostTensor::new(&k, ks)?, HostTensor::new(&v, ks)?);
    let (want, _) = cpu::attention(&hq, &hk, &hv, None, &opts)?;
    let cpu_s = t.elapsed().as_secs_f64();

    let num: f64 = got.iter().zip(&want).map(|(a, b)| (*a as f64 - *b as f64).powi(2)).sum();
    let den: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum();
    let max_abs = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    let flops = 4.0 * (b * h * nq * nk * d) as f64 * if causal { 0.5 } else { 1.0 };
    println!(
        "shape: batch {b}, heads {h} (kv {hkv}), nq {nq}, nk {nk}, dim {d}, causal {causal}, {}",
        if f16 { "f16" } else { "f32" }
    );
    println!(
        "agreement with the CPU path: relative error {:.2e}, max abs {:.2e}",
        (num / den.max(1e-300)).sqrt(),
        max_abs
    );
    println!("GPU fused attention: {:.3} ms median of {runs} ({:.1} GFLOP/s)", gpu_s * 1e3, flops / gpu_s / 1e9);
    println!(
        "CPU path ({} threads): {:.3} ms ({:.2} GFLOP/s); GPU/CPU speed ratio {:.1}x",
        rayon::current_num_threads(),
        cpu_s * 1e3,
        flops / cpu_s / 1e9,
        cpu_s / gpu_s
    );
    Ok(())
}
