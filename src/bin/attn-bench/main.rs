//! attn-bench: what each operation costs on this machine's GPU and on the CPU path.
//!
//!     attn-bench --suite quick --backend both --json out.json --plot out.svg
//!     attn-bench --op attention --bh 16 --nq 4096 --nk 4096 --d 128 --causal --dtype f16
//!     attn-bench --op topk --nq 256 --nk 200000 --d 128 --k 10 --backend both
//!     attn-bench --list-adapters
//!
//! Times: kernel (timestamp queries around every compute pass, summed), wall (submit to
//! completion on resident data) and end to end (upload, compute, readback), as median, min and
//! max over `--runs` after `--warmup`. FLOPs follow FlashAttention: 4·BH·Nq·Nk·D, halved when
//! causal.

mod measure;
mod output;
mod suites;

use std::process::ExitCode;

use clap::Parser;
use wgpu_attention::{AttentionVariant, Context, ContextOptions};

use measure::{Record, Settings};
use suites::{Case, Dt, Op};

#[derive(Parser, Debug)]
#[command(name = "attn-bench", version, about = "Benchmarks wgpu-attention's kernels against its CPU path")]
struct Args {
    /// Named suites to run (quick, prefill, decode, similarity, softmax); repeatable.
    #[arg(long)]
    suite: Vec<String>,
    /// A free-shape case: the operation (with --bh --nq --nk --d).
    #[arg(long, value_enum)]
    op: Option<Op>,
    /// Batch × heads of the free-shape case.
    #[arg(long, default_value_t = 8)]
    bh: usize,
    /// Queries (rows, for softmax) of the free-shape case.
    #[arg(long, default_value_t = 1024)]
    nq: usize,
    /// Keys (columns, for softmax) of the free-shape case; default = nq.
    #[arg(long)]
    nk: Option<usize>,
    /// Head dim of the free-shape case.
    #[arg(long, default_value_t = 64)]
    d: usize,
    /// Causal masking for the free-shape case.
    #[arg(long)]
    causal: bool,
    /// Results per query of a free-shape top-k case (`--op topk`: --nq queries, --nk keys, --d dims).
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// Element type of the free-shape case.
    #[arg(long, value_enum, default_value_t = Dt::F32)]
    dtype: Dt,
    /// Attention kernel variant(s) to run: auto (the crate chooses), fused-vec4, fused-scalar,
    /// split-k-vec4, split-k-scalar, unfused; repeatable, to compare variants in one run.
    #[arg(long, default_value = "auto")]
    variant: Vec<String>,
    /// gpu, cpu or both (both adds the GPU/CPU time ratio).
    #[arg(long, default_value = "gpu")]
    backend: String,
    /// Timed runs per case.
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Untimed runs before timing (the first compiles the pipeline).
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// End-to-end runs (upload, compute, readback) per GPU case.
    #[arg(long, default_value_t = 3)]
    e2e_runs: usize,
    /// Skip the CPU path for cases above this many GFLOP (GB for softmax).
    #[arg(long, default_value_t = 200.0)]
    cpu_max_gflop: f64,
    /// Stop adding CPU runs after this many seconds per case.
    #[arg(long, default_value_t = 20.0)]
    cpu_budget: f64,
    /// Write every figure, with adapter, driver, backend and features, to this JSON file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Write an SVG chart of attention throughput against sequence length.
    #[arg(long)]
    plot: Option<std::path::PathBuf>,
    /// List the adapters wgpu sees and exit.
    #[arg(long)]
    list_adapters: bool,
    /// Use the adapter whose name contains this (case-insensitive).
    #[arg(long)]
    adapter: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.list_adapters {
        let adapters = pollster::block_on(wgpu_attention::list_adapters());
        if adapters.is_empty() {
            println!("no adapters found");
        }
        for a in adapters {
            println!("{} | {:?} | {:?} | {} {}", a.name, a.backend, a.device_type, a.driver, a.driver_info);
        }
        return ExitCode::SUCCESS;
    }
    let (gpu, cpu) = match args.backend.as_str() {
        "gpu" => (true, false),
        "cpu" => (false, true),
        "both" => (true, true),
        other => {
            eprintln!("error: --backend must be gpu, cpu or both, not {other:?}");
            return ExitCode::FAILURE;
        }
    };
    let mut cases: Vec<Case> = vec![];
    for s in &args.suite {
        match suites::suite(s) {
            Some(c) => cases.extend(c),
            None => {
                eprintln!("error: unknown suite {s:?}; suites: {}", suites::SUITES.join(", "));
                return ExitCode::FAILURE;
            }
        }
    }
    if let Some(op) = args.op {
        if args.bh == 0 || args.nq == 0 || args.nk == Some(0) || (args.d == 0 && op != Op::Softmax) {
            eprintln!("error: --bh, --nq, --nk and --d must be at least 1");
            return ExitCode::FAILURE;
        }
        let nk = args.nk.unwrap_or(args.nq);
        cases.push(match op {
            Op::Topk => Case::topk("custom", args.dtype, args.nq, nk, args.d, args.k),
            _ => Case::new("custom", op, args.dtype, args.bh, args.nq, nk, args.d, args.causal),
        });
    }
    if cases.is_empty() {
        cases = suites::suite("quick").unwrap_or_default();
    }
    let mut variants = vec![];
    for name in &args.variant {
        let all = [AttentionVariant::Auto].into_iter().chain(AttentionVariant::ALL);
        match all.clone().find(|v| v.name() == name) {
            Some(v) => variants.push(v),
            None => {
                let names: Vec<_> = all.map(|v| v.name()).collect();
                eprintln!("error: unknown --variant {name:?}; variants: {}", names.join(", "));
                return ExitCode::FAILURE;
            }
        }
    }
    // each attention case once per variant asked for
    let cases: Vec<Case> = cases
        .into_iter()
        .flat_map(|c| {
            let vs = if c.op == Op::Attention { variants.clone() } else { vec![AttentionVariant::Auto] };
            vs.into_iter().map(move |variant| Case { variant, ..c.clone() })
        })
        .collect();

    let ctx = if gpu {
        match Context::with_options_blocking(ContextOptions {
            adapter_name: args.adapter.clone(),
            ..Default::default()
        }) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("error: {e} (use --backend cpu for the CPU path alone)");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    if let Some(c) = &ctx {
        eprintln!("adapter: {}", c.info());
    }
    let st = Settings {
        warmup: args.warmup,
        runs: args.runs.max(1),
        e2e_runs: args.e2e_runs,
        cpu_max_gflop: args.cpu_max_gflop,
        cpu_budget: args.cpu_budget,
    };

    let mut records: Vec<Record> = vec![];
    for (i, c) in cases.iter().enumerate() {
        let variant = if c.variant == AttentionVariant::Auto { String::new() } else { format!(" {}", c.variant) };
        let label =
            format!("[{}/{}] {:?}{variant} {:?} {}x{}x{}x{}", i + 1, cases.len(), c.op, c.dtype, c.bh, c.nq, c.nk, c.d);
        eprintln!("{label}{}", if c.causal { " causal" } else { "" });
        let g = ctx.as_ref().map(|ctx| measure::run_gpu(ctx, c, &st, &label));
        let cp = cpu.then(|| measure::run_cpu(c, &st, &label));
        if let (Some(mut g), Some(cp)) = (g.clone(), cp.clone()) {
            if let (Some(tg), Some(tc)) = (g.time_s(), cp.time_s()) {
                g.gpu_cpu_ratio = Some(tc / tg);
            }
            records.push(g);
            records.push(cp);
        } else {
            records.extend(g);
            records.extend(cp);
        }
    }

    println!("{}", output::table(&records));
    let info = ctx.as_ref().map(|c| c.info().clone());
    let adapter = info.as_ref().map(|i| output::Adapter {
        name: i.adapter.clone(),
        backend: format!("{:?}", i.backend),
        device_type: format!("{:?}", i.device_type),
        driver: i.driver.clone(),
        features: i.features.iter_names().map(|(n, _)| n.to_string()).collect(),
    });
    if let Some(path) = &args.plot {
        let title = match &info {
            Some(i) => format!("attention throughput, {}", i.adapter),
            None => "attention throughput, CPU path".into(),
        };
        match output::svg(&records, &title) {
            Some(svg) => {
                if let Err(e) = std::fs::write(path, svg) {
                    eprintln!("error: writing {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            }
            None => eprintln!("note: no fused attention cases with nq = nk to plot; {} not written", path.display()),
        }
    }
    if let Some(path) = &args.json {
        let report = output::Report {
            tool: "attn-bench",
            crate_version: env!("CARGO_PKG_VERSION"),
            date: output::now_utc(),
            command: std::env::args().collect::<Vec<_>>().join(" "),
            host: output::host(),
            adapter,
            flop_convention: "attention 4*BH*Nq*Nk*D (halved when causal); similarity 2*BH*Nq*Nk*D",
            results: records,
        };
        let text = match serde_json::to_string_pretty(&report) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: serialising the report: {e}");
                return ExitCode::FAILURE;
            }
        };
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("error: writing {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
