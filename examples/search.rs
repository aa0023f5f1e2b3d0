//! Exact top-k search over key vectors from a file, e.g. embeddings from any embedding model.
//!
//!     cargo run --release --example search -- --keys keys.npy [--queries queries.npy]
//!         [--k 10] [--metric cosine|dot|l2] [--dim D] [--f16] [--cpu]
//!
//! Files: `.npy` (what `np.save` writes: a 2-D float32, float64 or float16 array, one vector a
//! row) or raw little-endian f32 (any other name; give `--dim`). Without `--queries`, queries are
//! read from stdin, one per line, values separated by spaces or commas. For each query the k best
//! keys are printed, best first, as `rank  row  score` (row = the key's row in the file).

use std::io::BufRead;

use wgpu_attention::npy::{read_npy, read_raw_f32, Matrix};
use wgpu_attention::*;

fn value<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).map(String::as_str)
}

fn load(path: &str, dim: Option<usize>) -> std::result::Result<Matrix, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("reading {path}: {e}"))?;
    let m = if path.ends_with(".npy") {
        read_npy(&bytes)
    } else {
        read_raw_f32(&bytes, dim.ok_or(format!("{path} is not .npy: give --dim for raw f32"))?)
    };
    m.map_err(|e| format!("{path}: {e}"))
}

fn run() -> std::result::Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let keys_path = value(&args, "--keys").ok_or(
        "usage: search --keys FILE [--queries FILE] [--k N] [--metric cosine|dot|l2] [--dim D] [--f16] [--cpu]",
    )?;
    let k: usize = value(&args, "--k").unwrap_or("10").parse().map_err(|_| "--k takes a number")?;
    let dim = value(&args, "--dim").map(|d| d.parse::<usize>().map_err(|_| "--dim takes a number")).transpose()?;
    let metric = match value(&args, "--metric").unwrap_or("cosine") {
        "cosine" => Metric::Cosine,
        "dot" => Metric::Dot,
        "l2" => Metric::L2,
        m => return Err(format!("--metric must be cosine, dot or l2, not {m:?}")),
    };
    let keys = load(keys_path, dim)?;
    let queries = match value(&args, "--queries") {
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
    let k = k.min(keys.rows);
    let t = std::time::Instant::now();
    let top = if args.iter().any(|a| a == "--cpu") {
        eprintln!("CPU path, {} keys of dim {}", keys.rows, keys.cols);
        cpu::top_k(&queries.data, &keys.data, keys.cols, k, metric).map_err(|e| e.to_string())?
    } else {
        let ctx = Context::new_blocking().map_err(|e| format!("{e} (use --cpu for the CPU path)"))?;
        eprintln!("{}; {} keys of dim {}", ctx.info().adapter, keys.rows, keys.cols);
        let dtype = if args.iter().any(|a| a == "--f16") { DType::F16 } else { DType::F32 };
        let mut index = Index::new(&ctx, keys.cols, metric, dtype).map_err(|e| e.to_string())?;
        index.add(&keys.data).map_err(|e| e.to_string())?;
        index.search(&queries.data, k).map_err(|e| e.to_string())?.top
    };
    eprintln!("{} queries, k = {k}, {metric:?}: {:.1} ms", queries.rows, t.elapsed().as_secs_f64() * 1e3);
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
