//! What the first call of an operation costs, and what `prepare_attention` and a pipeline cache
//! kept from an earlier run save: a prefill and a paged decode step, each on fresh contexts.
//!
//!     cargo run --release --example first_call -- [--f16]
//!
//! On Mesa's lavapipe, set `MESA_SHADER_CACHE_DISABLE=true` to see the cost without Mesa's own
//! disk cache (which otherwise keeps compiled shaders across runs by itself).

use std::time::Instant;

use wgpu_attention::*;

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// One prefill call and one paged decode step (append + attention) on `ctx`: their times.
fn calls(ctx: &Context, dtype: DType) -> Result<(f64, f64)> {
    let (b, h, hkv, n, d) = (1, 8, 2, 512, 64);
    let up = |s: Shape| -> Result<Tensor> {
        let x: Vec<f32> = (0..s.numel()).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
        match dtype {
            DType::F32 => ctx.upload(&x, s),
            DType::F16 => ctx.upload(&x.iter().map(|&v| half::f16::from_f32(v)).collect::<Vec<_>>(), s),
        }
    };
    let (q, kv) = (up(Shape::new(b, h, n, d))?, up(Shape::new(b, hkv, n, d))?);
    let t = Instant::now();
    let causal = AttentionOptions { causal: true, ..Default::default() };
    ctx.attention(&q, &kv, &kv, None, &causal)?;
    ctx.wait()?;
    let prefill = ms(t);
    let g = PageGeometry { num_pages: 64, page_size: 16, kv_heads: hkv, head_dim: d };
    let cache = PagedKvCache::new(ctx, g, dtype)?;
    let pages: Vec<u32> = (0..64).collect();
    let table = BlockTable::new(&pages, 64, &[300])?;
    let (q1, kv1) = (up(Shape::new(1, h, 1, d))?, up(Shape::new(1, hkv, 1, d))?);
    let t = Instant::now();
    ctx.append_kv(&cache, &table, &kv1, &kv1)?;
    ctx.paged_attention(&q1, &cache, &table, &AttentionOptions::default())?;
    ctx.wait()?;
    Ok((prefill, ms(t)))
}

/// The shapes `calls` runs, for `prepare_attention`.
fn prepare(ctx: &Context, dtype: DType) -> Result<()> {
    let causal = AttentionOptions { causal: true, ..Default::default() };
    let prefill = AttentionShapes {
        q: Shape::new(1, 8, 512, 64),
        kv: Shape::new(1, 2, 512, 64),
        dtype,
        paged: false,
        lse: false,
    };
    ctx.prepare_attention(&prefill, &causal)?;
    let decode =
        AttentionShapes { q: Shape::new(1, 8, 1, 64), kv: Shape::new(1, 2, 300, 64), dtype, paged: true, lse: false };
    ctx.prepare_attention(&decode, &AttentionOptions::default())?;
    Ok(())
}

fn main() -> Result<()> {
    let dtype = if std::env::args().any(|a| a == "--f16") { DType::F16 } else { DType::F32 };
    let t = Instant::now();
    let ctx = Context::new_blocking()?;
    println!("adapter: {}", ctx.info());
    println!("context: {:.0} ms", ms(t));
    let cold = calls(&ctx, dtype)?;
    let warm = calls(&ctx, dtype)?;
    println!("first calls (compile + run): prefill {:.0} ms, decode step {:.0} ms", cold.0, cold.1);
    println!("same calls again: prefill {:.1} ms, decode step {:.1} ms", warm.0, warm.1);
    let data = ctx.pipeline_cache_data();

    let fresh = Context::new_blocking()?;
    let t = Instant::now();
    prepare(&fresh, dtype)?;
    let prep = ms(t);
    let after = calls(&fresh, dtype)?;
    println!(
        "prepare_attention on a fresh context: {prep:.0} ms; then the first calls: prefill {:.1} ms, decode step {:.0} ms \
         (the append kernel is not part of an attention plan)",
        after.0, after.1
    );

    match data {
        Some(bytes) => {
            let loaded = Context::new_blocking()?;
            // SAFETY: the bytes are what pipeline_cache_data returned on this adapter, in this process
            unsafe { loaded.load_pipeline_cache(&bytes) };
            let first = calls(&loaded, dtype)?;
            println!(
                "pipeline cache ({} KiB) loaded into a fresh context: first calls prefill {:.0} ms, decode step {:.0} ms",
                bytes.len() / 1024,
                first.0,
                first.1
            );
        }
        None => println!("no pipeline cache on this device (PIPELINE_CACHE missing)"),
    }
    Ok(())
}
