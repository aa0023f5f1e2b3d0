//! Exact top-k search over key vectors from a file, e.g. embeddings from any embedding model.
//!
//!     cargo run --release --example search -- --keys keys.npy [--queries queries.npy]
//!         [--k 10] [--metric cosine|dot|l2] [--dim D] [--f16] [--cpu]   (--help for details)
//!
//! Files: `.npy` (what `np.save` writes: a 2-D float32, float64 or float16 array, one vector a
//! row) or raw little-endian f32 (any other name; give `--dim`). Without `--queries`, queries are
//! read from stdin, one per line, values separated by spaces or commas. For each query the k best
//! keys are printed, best first, as `rank  row  score` (row = the key's row in the file).

use std::io::BufRead;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};
mod npy;
use npy::{read_npy, read_raw_f32, Matrix};
use wgpu_attention::*;

/// Exact top-k search over key vectors from a file, on the best GPU adapter (or the CPU path).
#[derive(Parser, Debug)]
#[command(name = "search")]
struct Args {
    /// Keys: .npy (2-D float32/float64/float16, one vector a row) or raw little-endian f32.
    #[arg(long)]
    keys: PathBuf,
    /// Queries, same formats; without it, queries are read from stdin, one per line.
    #[arg(long)]
    queries: Option<PathBuf>,
    /// How many keys to return per query (1..=min(keys, 1024)).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1024))]
    k: u32,
    /// Similarity.
    #[arg(long, value_enum, default_value_t = MetricArg::Cosine)]
    metric: MetricArg,
    /// Vector length of raw f32 files (.npy files carry their own).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    dim: Option<u32>,
    /// Store the keys as f16 on the GPU.
    #[arg(long)]
    f16: bool,
    /// Run on the CPU path instead of a GPU adapter.
    #[arg(long, conflicts_with = "f16")]
    cpu: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum MetricArg {
    Cosine,
    Dot,
    L2,
}

fn load(path: &std::path::Path, dim: Option<usize>) -> std::result::Result<Matrix, String> {
    let name = path.display();
    let bytes = std::fs::read(path).map_err(|e| format!("reading {name}: {e}"))?;
    let m = if path.extension().is_some_and(|e| e == "npy") {
        read_npy(&bytes)
    } else {
        read_raw_f32(&bytes, dim.ok_or(format!("{name} is not .npy: give --dim for raw f32"))?)
    };
    m.map_err(|e| format!("{name}: {e}"))
}

fn run() -> std::result::Result<(), String> {
    let args = Args::parse();
    let k = args.k as usize;
    let metric = match args.metric {
        MetricArg::Cosine => Metric::Cosine,
        MetricArg::Dot => Metric::Dot,
        MetricArg::L2 => Metric::L2,
    };
    let dim = args.dim.map(|d| d as usize);
    let keys = load(&args.keys, dim)?;
    if let Some(d) = dim.filter(|&d| d != keys.cols) {
        return Err(format!("--dim {d}, but the keys have {} columns", keys.cols));
    }
    let queries = match &args.queries {
        Some(p) => load(p, Some(keys.cols))?,
        None => {
            let mut data = vec![];
            for (n, line) in std::io::stdin().lock().lines().enumerate() {
                let line = line.map_err(|e| e.to_string())?;
                if line.trim().is_empty() {
                    continue;
                }
                let row: Vec<f32> = line
                    .split(|c: char| c.is_whitespace() || c == ',')
                    .filter(|s| !s.is_empty())
                    .map(|s| s.parse::<f32>().map_err(|_| format!("stdin line {}: {s:?} is not a number", n + 1)))
                    .collect::<std::result::Result<_, _>>()?;
                if row.len() != keys.cols {
                    return Err(format!("stdin line {}: {} values, the keys have {}", n + 1, row.len(), keys.cols));
                }
                data.extend(row);
            }
            Matrix { rows: data.len() / keys.cols, cols: keys.cols, data }
        }
    };
    if queries.rows == 0 {
        return Err("no queries".into());
    }
    if queries.cols != keys.cols {
        return Err(format!("queries have dim {}, keys {}", queries.cols, keys.cols));
    }
    if k > keys.rows {
        return Err(format!("--k {k} asks for more keys than the {} in {}", keys.rows, args.keys.display()));
    }
    let top = if args.cpu {
        eprintln!("CPU path ({} threads), {} keys of dim {}", rayon::current_num_threads(), keys.rows, keys.cols);
        let t = std::time::Instant::now();
        let top = cpu::top_k(&queries.data, &keys.data, keys.cols, k, metric).map_err(|e| e.to_string())?;
        eprintln!("search: {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
        top
    } else {
        let t = std::time::Instant::now();
        let ctx = Context::new_blocking().map_err(|e| format!("{e} (use --cpu for the CPU path)"))?;
        if ctx.info().device_type == wgpu::DeviceType::Cpu {
            eprintln!(
                "note: the only adapter, {}, is a software rasteriser (the CPU emulating a GPU); \
                 --cpu runs the CPU path, which is faster on the same cores",
                ctx.info().adapter
            );
        }
        let dtype = if args.f16 { DType::F16 } else { DType::F32 };
        let mut index = Index::new(&ctx, keys.cols, metric, dtype).map_err(|e| e.to_string())?;
        index.add(&keys.data).map_err(|e| e.to_string())?;
        // a first search compiles the kernels: not part of the search time
        index.search(&queries.data[..keys.cols], k).map_err(|e| e.to_string())?;
        eprintln!(
            "{}; {} keys of dim {} ({:?}); device, upload and kernel compilation {:.1} ms",
            ctx.info().adapter,
            keys.rows,
            keys.cols,
            dtype,
            t.elapsed().as_secs_f64() * 1e3
        );
        let t = std::time::Instant::now();
        let top = index.search(&queries.data, k).map_err(|e| e.to_string())?.top;
        eprintln!("search: {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
        top
    };
    eprintln!("{} queries, k = {k}, {metric:?}", queries.rows);
    for q in 0..top.nq {
        println!("query {q}");
        for (r, (i, s)) in top.indices_of(q).iter().zip(top.scores_of(q)).enumerate() {
            println!("{:>4}  {i:>8}  {s:.6}", r + 1);
        }
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
