//! Fused attention on the best adapter present, checked against the CPU path.
//!
//!     cargo run --release --example attention -- [--batch B] [--heads H] [--kv-heads HKV]
//!         [--nq NQ] [--nk NK] [--dim D] [--causal] [--f16] [--runs N]   (--help for details)
//!
//! Prints the adapter, the agreement with the CPU path (OK or MISMATCH against a stated
//! tolerance; a mismatch exits with status 1), and the time of each.

use std::time::Instant;

use clap::Parser;
use wgpu_attention::*;

/// Fused attention on the best adapter present, checked against the CPU path, both timed.
#[derive(Parser, Debug)]
#[command(name = "attention")]
struct Args {
    /// Batch size.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    batch: u32,
    /// Query heads.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    heads: u32,
    /// Key/value heads (a divisor of --heads; default: --heads).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    kv_heads: Option<u32>,
    /// Queries per head.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    nq: u32,
    /// Keys per head (default: --nq).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    nk: Option<u32>,
    /// Head dimension (1..=256).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=256))]
    dim: u32,
    /// Causal mask (bottom-right aligned).
    #[arg(long)]
    causal: bool,
    /// f16 inputs on the GPU (needs SHADER_F16).
    #[arg(long)]
    f16: bool,
    /// Timed GPU runs (the median is reported).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
}

/// Relative Frobenius error against the CPU path that counts as agreement: f32 inputs and
/// outputs (both accumulate in f32), and f16 inputs with f16 outputs (the GPU rounds each output
/// to f16, about 2^-11 relative).
const TOLERANCE_F32: f64 = 1e-5;
const TOLERANCE_F16: f64 = 2e-3;

fn main() -> std::process::ExitCode {
    match run() {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("MISMATCH: the GPU and the CPU path disagree beyond the tolerance");
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `n` random values in [-1, 1), or `Err` naming `argument` where the host cannot hold them
/// (never an abort).
fn random(seed: &mut u64, n: usize, argument: &'static str) -> Result<Vec<f32>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| Error::TooLarge {
        argument,
        message: format!("{n} values ({} bytes) do not fit in host memory", (n as u64).saturating_mul(4)),
    })?;
    v.extend((0..n).map(|_| {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        (*seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }));
    Ok(v)
}

/// Runs the GPU and the CPU path; `Ok(false)` when they disagree.
fn run() -> Result<bool> {
    let args = Args::parse();
    let (b, h, nq, d) = (args.batch as usize, args.heads as usize, args.nq as usize, args.dim as usize);
    let hkv = args.kv_heads.map_or(h, |x| x as usize);
    let nk = args.nk.map_or(nq, |x| x as usize);
    let (runs, causal, f16) = (args.runs as usize, args.causal, args.f16);

    let ctx = Context::new_blocking()?;
    println!("adapter: {}", ctx.info());
    let software = ctx.info().device_type == wgpu::DeviceType::Cpu;
    if software {
        println!(
            "note: {} is a software rasteriser, the CPU emulating a GPU: its times say little about a GPU, \
             and the CPU path below is the faster of the two on these cores (Backend::auto picks it)",
            ctx.info().adapter
        );
    }
    let (qs, ks) = (Shape::new(b, h, nq, d), Shape::new(b, hkv, nk, d));
    // sizes are checked before anything is allocated: each tensor must fit one GPU buffer
    let max_buffer = ctx.device().limits().max_buffer_size;
    let elem = if f16 { 2 } else { 4 };
    for (argument, s) in [("--nq", qs), ("--nk", ks)] {
        let n = s.checked_numel(argument)?;
        let bytes = (n as u64).saturating_mul(elem);
        if bytes > max_buffer {
            return Err(Error::TooLarge {
                argument,
                message: format!(
                    "a [{}, {}, {}, {}] tensor is {bytes} bytes; this device's buffers hold at most {max_buffer}",
                    s.batch, s.heads, s.seq, s.dim
                ),
            });
        }
    }
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut q = random(&mut seed, qs.numel(), "--nq")?;
    let mut k = random(&mut seed, ks.numel(), "--nk")?;
    let mut v = random(&mut seed, ks.numel(), "--nk")?;
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
        ctx.encode_attention(
            &mut enc,
            &AttentionCall { q: &gq, k: &gk, v: &gv, mask: None, out: &out, lse: None },
            &opts,
        )?;
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
    let rel = (num / den.max(1e-300)).sqrt();
    let tolerance = if f16 { TOLERANCE_F16 } else { TOLERANCE_F32 };
    let ok = rel <= tolerance;
    println!(
        "agreement with the CPU path: {}: relative error {rel:.2e} (tolerance {tolerance:.0e}), max abs {max_abs:.2e}",
        if ok { "OK" } else { "MISMATCH" }
    );
    println!("GPU fused attention: {:.3} ms median of {runs} ({:.1} GFLOP/s)", gpu_s * 1e3, flops / gpu_s / 1e9);
    println!(
        "CPU path ({} threads): {:.3} ms ({:.2} GFLOP/s)",
        rayon::current_num_threads(),
        cpu_s * 1e3,
        flops / cpu_s / 1e9
    );
    let speedup = cpu_s / gpu_s;
    if speedup >= 1.0 {
        println!(
            "{} is {speedup:.1}x faster than the CPU path",
            if software { "the software adapter" } else { "the GPU" }
        );
    } else {
        println!(
            "the CPU path is {:.1}x faster than {}",
            1.0 / speedup,
            if software { "the software adapter (as expected: no GPU here)" } else { "the GPU at this size" }
        );
    }
    Ok(ok)
}
