//! Autoregressive decoding over a paged KV cache, on the best adapter present and on the CPU.
//!
//!     cargo run --release --example decode -- [--prompts 3,50,257,700] [--steps 32]
//!         [--heads 8] [--kv-heads 2] [--dim 64] [--page-size 16] [--vocab 512] [--window W]
//!         [--kv-dtype f32|q8_0|q4_0|fp8]
//!
//! A toy one-layer model with random weights generates tokens for several sequences at once,
//! each with its own prompt length. Each sequence's K and V live in pages of a shared pool,
//! handed out in shuffled order (a block table per sequence). Prompts are prefilled in chunks
//! (append the chunk's K/V, then causal attention of the chunk over the cache); then every step
//! appends one token per sequence and decodes all sequences in one call.
//!
//! The same loop runs twice: attention on the GPU (`append_kv`, `paged_attention`) and on the
//! CPU (`cpu::append_kv`, `cpu::paged_attention`); projections run on the CPU in both. It prints
//! the decode rate of each (tokens per second, all sequences together), checks each step's
//! attention output of one against the other, and the generated tokens.
//!
//! With `--kv-dtype q8_0` (or `q4_0`, `fp8`) both caches are quantized (by the GPU's append and
//! the CPU's, to the same bits), and the GPU loop also runs over an f32 cache: the example
//! prints the decode rate over each and how far the quantized cache's attention outputs and
//! tokens are from the f32 cache's.

use std::time::Instant;

use clap::Parser;
use wgpu_attention::*;

/// A toy autoregressive decode over a paged KV cache, on the GPU and on the CPU path.
#[derive(Parser, Debug)]
#[command(name = "decode")]
struct Args {
    /// Prompt length of each sequence, comma-separated (each at least 1).
    #[arg(long, value_delimiter = ',', default_values_t = [3u32, 50, 257, 700], value_parser = clap::value_parser!(u32).range(1..))]
    prompts: Vec<u32>,
    /// Tokens generated per sequence.
    #[arg(long, default_value_t = 32)]
    steps: u32,
    /// Query heads.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    heads: u32,
    /// Key/value heads (a divisor of --heads).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    kv_heads: u32,
    /// Head dimension (1..=256).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=256))]
    dim: u32,
    /// Tokens per page (a power of two).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    page_size: u32,
    /// Vocabulary size of the toy model.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    vocab: u32,
    /// Sliding window: each token attends to itself and the W tokens before it.
    #[arg(long)]
    window: Option<u32>,
    /// The KV cache's element type: f32, q8_0, q4_0 or fp8 (e4m3, scale 1 per head); the dim
    /// must be a multiple of 32 for q8_0 and q4_0, of 4 for fp8.
    #[arg(long, default_value = "f32")]
    kv_dtype: KvDType,
}

/// Deterministic values in [-1, 1) (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * scale).collect()
    }
}

/// One attention layer with random weights: embeddings `[vocab, hidden]`, projections to
/// `heads` query heads and `kv_heads` key/value heads of `dim`, an output projection, and
/// logits against the embeddings (tied).
struct Model {
    vocab: usize,
    hidden: usize,
    heads: usize,
    kv_heads: usize,
    dim: usize,
    embed: Vec<f32>,
    wq: Vec<f32>,
    wk: Vec<f32>,
    wv: Vec<f32>,
    wo: Vec<f32>,
}

/// `x · w` for `x` of `n` values and `w` `[n, m]` row-major.
fn matvec(x: &[f32], w: &[f32], m: usize) -> Vec<f32> {
    let mut y = vec![0.0f32; m];
    for (xi, row) in x.iter().zip(w.chunks(m)) {
        y.iter_mut().zip(row).for_each(|(a, b)| *a += xi * b);
    }
    y
}

impl Model {
    fn new(vocab: usize, heads: usize, kv_heads: usize, dim: usize) -> Self {
        let hidden = heads * dim;
        let mut r = Rng(0x9e37_79b9_7f4a_7c15);
        let s = 1.0 / (hidden as f32).sqrt();
        Model {
            vocab,
            hidden,
            heads,
            kv_heads,
            dim,
            embed: r.vec(vocab * hidden, 1.0),
            wq: r.vec(hidden * heads * dim, s),
            wk: r.vec(hidden * kv_heads * dim, s),
            wv: r.vec(hidden * kv_heads * dim, s),
            wo: r.vec(heads * dim * hidden, s),
        }
    }

    fn embedding(&self, token: usize) -> &[f32] {
        &self.embed[token * self.hidden..(token + 1) * self.hidden]
    }

    /// Q, K and V rows of a token: `[heads · dim]`, `[kv_heads · dim]` twice.
    fn qkv(&self, token: usize) -> [Vec<f32>; 3] {
        let x = self.embedding(token);
        let kvw = self.kv_heads * self.dim;
        [matvec(x, &self.wq, self.heads * self.dim), matvec(x, &self.wk, kvw), matvec(x, &self.wv, kvw)]
    }

    /// The next token after `token` given its attention output `[heads · dim]`: residual,
    /// output projection, logits against the embeddings, argmax.
    fn next_token(&self, token: usize, attn: &[f32]) -> usize {
        let mut h = matvec(attn, &self.wo, self.hidden);
        h.iter_mut().zip(self.embedding(token)).for_each(|(a, x)| *a += x);
        let logit = |t: usize| self.embedding(t).iter().zip(&h).map(|(a, b)| a * b).sum::<f32>();
        (0..self.vocab).max_by(|&a, &b| logit(a).total_cmp(&logit(b))).unwrap_or(0)
    }
}

/// Tokens `[seqs][n]` as the `[seqs, heads, n, dim]` (BHSD) tensors of their Q, K and V.
fn project(m: &Model, tokens: &[Vec<usize>]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let rows: Vec<Vec<[Vec<f32>; 3]>> = tokens.iter().map(|ts| ts.iter().map(|&t| m.qkv(t)).collect()).collect();
    // tensor `which` (0 = Q, 1 = K, 2 = V) of `heads` heads, sequence by sequence, head by head
    let bhsd = |which: usize, heads: usize| -> Vec<f32> {
        let mut out = vec![];
        for seq in &rows {
            for h in 0..heads {
                for row in seq {
                    out.extend_from_slice(&row[which][h * m.dim..(h + 1) * m.dim]);
                }
            }
        }
        out
    };
    (bhsd(0, m.heads), bhsd(1, m.kv_heads), bhsd(2, m.kv_heads))
}

/// Where attention runs: the GPU or the CPU, each with its own cache.
enum Path {
    Gpu(Context, Box<PagedKvCache>),
    Cpu(HostKvCache),
}

impl Path {
    /// Appends `n` new tokens per sequence and attends their queries over the cache: the
    /// attention output, `[seqs, heads, n, dim]`. On the GPU, a resident table (if given) takes
    /// the step's lengths and is bound by both calls (no table buffers per call).
    fn step(
        &mut self,
        m: &Model,
        table: &BlockTable,
        resident: Option<&mut DeviceBlockTable>,
        (q, k, v): (Vec<f32>, Vec<f32>, Vec<f32>),
        n: usize,
        opts: &AttentionOptions,
    ) -> Result<Vec<f32>> {
        let b = table.batch();
        let (qs, ks) = (Shape::new(b, m.heads, n, m.dim), Shape::new(b, m.kv_heads, n, m.dim));
        match self {
            Path::Gpu(ctx, cache) => {
                let table: &dyn PagedTable = match resident {
                    Some(r) => {
                        r.set_seq_lens(ctx, table.seq_lens())?;
                        r
                    }
                    None => table,
                };
                ctx.append_kv(cache, table, &ctx.upload(&k, ks)?, &ctx.upload(&v, ks)?)?;
                ctx.paged_attention(&ctx.upload(&q, qs)?, cache, table, opts)?.download_blocking(ctx)
            }
            Path::Cpu(cache) => {
                cpu::append_kv(cache, table, &HostTensor::new(&k, ks)?, &HostTensor::new(&v, ks)?)?;
                Ok(cpu::paged_attention(&HostTensor::new(&q, qs)?, cache, table, opts)?.0)
            }
        }
    }
}

/// What one run of the loop produced.
struct Run {
    tokens: Vec<Vec<usize>>,
    /// Each decode step's attention output.
    outputs: Vec<Vec<f32>>,
    prefill_s: f64,
    decode_s: f64,
}

/// Pages for each sequence, dealt from a shuffled pool: `[seqs, blocks]`.
fn deal_pages(seqs: usize, blocks: usize) -> Vec<u32> {
    let mut pages: Vec<u32> = (0..(seqs * blocks) as u32).collect();
    let mut r = Rng(0x51_7cc1_b727_220a);
    for i in (1..pages.len()).rev() {
        let j = ((r.next() + 1.0) / 2.0 * (i + 1) as f32) as usize;
        pages.swap(i, j.min(i));
    }
    pages
}

#[allow(clippy::too_many_arguments)]
fn run(
    mut path: Path,
    m: &Model,
    prompts: &[Vec<usize>],
    steps: usize,
    pages: &[u32],
    blocks: usize,
    opts: &AttentionOptions,
) -> Result<Run> {
    const CHUNK: usize = 64;
    let seqs = prompts.len();
    let mut tokens: Vec<Vec<usize>> = prompts.to_vec();
    let mut last = vec![0usize; seqs];
    // prefill, one sequence at a time (prompts differ in length), in chunks of CHUNK tokens:
    // each chunk's K/V appended, then its queries attend causally over the cache
    let t = Instant::now();
    for (s, prompt) in prompts.iter().enumerate() {
        let row = &pages[s * blocks..(s + 1) * blocks];
        let mut out = vec![];
        for (c, chunk) in prompt.chunks(CHUNK).enumerate() {
            let len = [(c * CHUNK + chunk.len()) as u32];
            let table = BlockTable::new(row, blocks, &len)?;
            let opts = AttentionOptions { causal: true, ..*opts };
            out = path.step(m, &table, None, project(m, &[chunk.to_vec()]), chunk.len(), &opts)?;
        }
        // the prompt's last query row gives the first generated token
        let n = prompt.len() - (prompt.len() - 1) / CHUNK * CHUNK;
        let row: Vec<f32> =
            (0..m.heads).flat_map(|h| out[(h * n + n - 1) * m.dim..(h * n + n) * m.dim].iter().copied()).collect();
        last[s] = m.next_token(prompt[prompt.len() - 1], &row);
    }
    let prefill_s = t.elapsed().as_secs_f64();
    // decode: every sequence's newest token appended and attended in one call per step, through
    // a block table resident on the GPU (its lengths rewritten in place each step)
    let lens: Vec<u32> = tokens.iter().map(|t| t.len() as u32).collect();
    let mut resident = match &path {
        Path::Gpu(ctx, _) => Some(DeviceBlockTable::new(ctx, &BlockTable::new(pages, blocks, &lens)?)?),
        Path::Cpu(_) => None,
    };
    let mut outputs = vec![];
    let t = Instant::now();
    for _ in 0..steps {
        for (s, ts) in tokens.iter_mut().enumerate() {
            ts.push(last[s]);
        }
        let lens: Vec<u32> = tokens.iter().map(|t| t.len() as u32).collect();
        let table = BlockTable::new(pages, blocks, &lens)?;
        let newest: Vec<Vec<usize>> = last.iter().map(|&t| vec![t]).collect();
        let out = path.step(m, &table, resident.as_mut(), project(m, &newest), 1, opts)?;
        for (s, l) in last.iter_mut().enumerate() {
            *l = m.next_token(*l, &out[s * m.heads * m.dim..(s + 1) * m.heads * m.dim]);
        }
        outputs.push(out);
    }
    Ok(Run { tokens, outputs, prefill_s, decode_s: t.elapsed().as_secs_f64() })
}

fn main() -> std::process::ExitCode {
    match decode() {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("MISMATCH: the GPU and CPU paths disagree beyond the tolerance");
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Largest difference between the GPU's and the CPU path's attention outputs (f32 cache, values
/// of order 1) that counts as agreement.
const TOLERANCE: f32 = 1e-4;

/// Runs both paths; `Ok(false)` when they disagree.
fn decode() -> Result<bool> {
    let args = Args::parse();
    let prompts: Vec<usize> = args.prompts.iter().map(|&p| p as usize).collect();
    let steps = args.steps as usize;
    let (heads, dim, kv_heads) = (args.heads as usize, args.dim as usize, args.kv_heads as usize);
    let (page_size, vocab) = (args.page_size as usize, args.vocab as usize);
    let window = args.window.map(|w| Window { left: w as usize, right: None });
    if heads % kv_heads != 0 {
        return Err(Error::InvalidArgument {
            argument: "--kv-heads",
            message: format!("{kv_heads} does not divide --heads {heads}"),
        });
    }

    let m = Model::new(vocab, heads, kv_heads, dim);
    let seqs = prompts.len();
    let longest = prompts.iter().max().copied().unwrap_or(0) + steps;
    let blocks = longest.div_ceil(page_size);
    let g = PageGeometry { num_pages: seqs * blocks, page_size, kv_heads, head_dim: dim };
    let pages = deal_pages(seqs, blocks);
    let mut r = Rng(7);
    let prompt_tokens: Vec<Vec<usize>> = prompts
        .iter()
        .map(|&n| (0..n).map(|_| ((r.next() + 1.0) / 2.0 * vocab as f32) as usize % vocab).collect())
        .collect();
    let opts = AttentionOptions { window, ..Default::default() };

    let ctx = Context::new_blocking()?;
    if ctx.info().device_type == wgpu::DeviceType::Cpu {
        println!(
            "note: the only adapter, {}, is a software rasteriser (the CPU emulating a GPU): \
             expect the CPU path to be faster here",
            ctx.info().adapter
        );
    }
    println!("adapter: {}", ctx.info());
    println!(
        "{seqs} sequences, prompts {prompts:?}, {steps} decode steps; heads {heads} (kv {kv_heads}), dim {dim}, \
         pages of {page_size} tokens ({} in the pool){}",
        g.num_pages,
        window.map_or(String::new(), |w| format!(", window {}", w.left))
    );
    let format = KvFormat::uniform(args.kv_dtype);
    if args.kv_dtype != KvDType::F32 {
        let host = HostKvCache::<f32>::with_format(g, &format)?;
        println!("KV cache: {}, {} bytes per token (f32: {})", args.kv_dtype, host.bytes_per_token(), 2 * kv_heads * dim * 4);
    }
    // a first GPU run compiles the pipelines; the second is timed
    let warm = PagedKvCache::with_format(&ctx, g, DType::F32, &format)?;
    run(Path::Gpu(ctx.clone(), Box::new(warm)), &m, &prompt_tokens, steps.min(2), &pages, blocks, &opts)?;
    let gpu_cache = PagedKvCache::with_format(&ctx, g, DType::F32, &format)?;
    let gpu = run(Path::Gpu(ctx.clone(), Box::new(gpu_cache)), &m, &prompt_tokens, steps, &pages, blocks, &opts)?;
    let cpu = run(Path::Cpu(HostKvCache::with_format(g, &format)?), &m, &prompt_tokens, steps, &pages, blocks, &opts)?;
    // a quantized cache: the same GPU loop over an f32 cache, to compare with
    let plain = if args.kv_dtype == KvDType::F32 {
        None
    } else {
        let warm = PagedKvCache::new(&ctx, g, DType::F32)?;
        run(Path::Gpu(ctx.clone(), Box::new(warm)), &m, &prompt_tokens, steps.min(2), &pages, blocks, &opts)?;
        let cache = PagedKvCache::new(&ctx, g, DType::F32)?;
        Some(run(Path::Gpu(ctx, Box::new(cache)), &m, &prompt_tokens, steps, &pages, blocks, &opts)?)
    };

    // each step's attention outputs, while both paths generated the same tokens so far
    let mut max_diff = 0.0f32;
    let mut compared = 0;
    for (step, (a, b)) in gpu.outputs.iter().zip(&cpu.outputs).enumerate() {
        // the step's inputs: each sequence's prompt and its first step + 1 generated tokens
        let same_so_far = gpu.tokens.iter().zip(&cpu.tokens).all(|(x, y)| {
            let upto = x.len() - steps + step + 1;
            x[..upto] == y[..upto]
        });
        if !same_so_far {
            break;
        }
        max_diff = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(max_diff, f32::max);
        compared += 1;
    }
    let same_tokens: usize =
        gpu.tokens.iter().zip(&cpu.tokens).map(|(x, y)| x.iter().zip(y).filter(|(a, b)| a == b).count()).sum();
    let total: usize = gpu.tokens.iter().map(Vec::len).sum();
    let rate = |r: &Run| (seqs * steps) as f64 / r.decode_s;
    println!("prefill: GPU {:.1} ms, CPU {:.1} ms", gpu.prefill_s * 1e3, cpu.prefill_s * 1e3);
    println!(
        "decode: GPU {:.1} tokens/s, CPU {:.1} tokens/s ({} threads); GPU speed-up over the CPU path {:.2}x (<1: the CPU path is faster)",
        rate(&gpu),
        rate(&cpu),
        rayon::current_num_threads(),
        rate(&gpu) / rate(&cpu)
    );
    let ok = max_diff <= TOLERANCE && (compared > 0 || steps == 0);
    println!(
        "agreement: {}: max |GPU - CPU| attention output {max_diff:.2e} (tolerance {TOLERANCE:.0e}) over {compared} of \
         {steps} steps; {same_tokens} of {total} tokens equal",
        if ok { "OK" } else { "MISMATCH" }
    );
    if let Some(f) = &plain {
        // the quantized cache against the f32 one: each step's attention outputs while both
        // generated the same tokens so far, and the tokens
        let (mut num, mut den, mut steps_cmp) = (0.0f64, 0.0f64, 0);
        for (step, (a, b)) in gpu.outputs.iter().zip(&f.outputs).enumerate() {
            let same = gpu.tokens.iter().zip(&f.tokens).all(|(x, y)| {
                let upto = x.len() - steps + step + 1;
                x[..upto] == y[..upto]
            });
            if !same {
                break;
            }
            num += a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum::<f64>();
            den += b.iter().map(|y| (*y as f64).powi(2)).sum::<f64>();
            steps_cmp += 1;
        }
        let equal: usize =
            gpu.tokens.iter().zip(&f.tokens).map(|(x, y)| x.iter().zip(y).filter(|(a, b)| a == b).count()).sum();
        println!(
            "{} cache against an f32 cache (GPU): decode {:.1} vs {:.1} tokens/s ({:.2}x); attention output relative \
             error {:.2e} over {steps_cmp} of {steps} steps; {equal} of {total} tokens equal",
            args.kv_dtype,
            rate(&gpu),
            rate(f),
            rate(&gpu) / rate(f),
            if den > 0.0 { (num / den).sqrt() } else { num.sqrt() },
        );
    }
    Ok(ok)
}
