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
mod mma_probe;
mod sweep;

use std::process::ExitCode;

use clap::Parser;
use wgpu_attention::{AttentionConfig, AttentionVariant, Context, ContextOptions, KvDType};

use measure::{Record, Settings};
use suites::{Case, Dt, Op, Suite};

/// `ContextOptions::tensor_cores` for the GPU context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum TensorCoresArg {
    /// Where the adapter has them (the default).
    Auto,
    /// Never.
    Off,
    /// Fail where the adapter does not have them.
    Required,
    /// Their plain-WGSL twin, on any adapter (for testing the sweep and the tile logic).
    Emulated,
}

impl TensorCoresArg {
    fn option(self) -> wgpu_attention::TensorCores {
        use wgpu_attention::TensorCores as T;
        match self {
            TensorCoresArg::Auto => T::Auto,
            TensorCoresArg::Off => T::Off,
            TensorCoresArg::Required => T::Required,
            TensorCoresArg::Emulated => T::Emulated,
        }
    }
}

/// Where the cases run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BackendArg {
    /// The GPU adapter (or software Vulkan).
    Gpu,
    /// The crate's CPU path.
    Cpu,
    /// Both, side by side, with the GPU's speed-up over the CPU path.
    Both,
}

#[derive(Parser, Debug)]
#[command(name = "attn-bench", version, about = "Benchmarks wgpu-attention's kernels against its CPU path")]
struct Args {
    /// Named suites to run; repeatable (`--list-suites` shows their cases).
    #[arg(long, value_enum)]
    suite: Vec<Suite>,
    /// Print each suite's cases and exit.
    #[arg(long)]
    list_suites: bool,
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
    /// Key/value heads of the free-shape attention case (GQA: they divide --bh); default: --bh.
    #[arg(long)]
    kv_heads: Option<usize>,
    /// Causal masking for the free-shape case.
    #[arg(long)]
    causal: bool,
    /// Results per query of a free-shape top-k case (`--op topk`: --nq queries, --nk keys, --d dims).
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// Element type of the free-shape case.
    #[arg(long, value_enum, default_value_t = Dt::F32)]
    dtype: Dt,
    /// KV-cache element type(s) of the attention cases: f32, f16, q8_0, q4_0, fp8 (e4m3, with
    /// per-head scales from the data); repeatable, to compare types in one run. With this
    /// option every attention case runs over a paged cache (16 tokens a page where the case is
    /// contiguous), once per type; a plain type must be the case's dtype (others are skipped).
    #[arg(long)]
    kv_dtype: Vec<String>,
    /// Run each attention case twice: as asked, and in the fixed reduction order
    /// (`AttentionOptions::fixed_order`), side by side, to measure what the order costs.
    #[arg(long)]
    fixed_order: bool,
    /// Attention kernel variant(s) to run: auto (the crate chooses), fused-vec4, fused-scalar,
    /// split-k-vec4, split-k-scalar, decode-vec4, decode-scalar, unfused; repeatable, to compare
    /// variants in one run.
    #[arg(long, default_value = "auto")]
    variant: Vec<String>,
    /// Kernel configuration(s) of attention and backward cases, as `AttentionConfig` writes
    /// them (e.g. `tc_rows=32`, `simt_chunk=16`, `backward_keys=2`; `default` for none);
    /// repeatable: each such case runs once per distinct configuration of the fields that apply
    /// to it (`backward_keys` to the backward, the others to the forward), side by side, the
    /// configuration in its record.
    #[arg(long, default_value = "default")]
    config: Vec<String>,
    /// Where to run.
    #[arg(long, value_enum, default_value_t = BackendArg::Gpu)]
    backend: BackendArg,
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
    /// Run each GPU case on a context (device) of its own, made for it and dropped after it,
    /// so that no case runs on a device state an earlier case left (in one long run on an H200,
    /// every case after the third ran 3-5x slower than alone; see BENCHMARKS.md).
    #[arg(long)]
    fresh_context: bool,
    /// After each GPU case, record what the context holds (the crate's caches, wgpu's live
    /// objects and memory, the allocator's totals: `Context::diagnostics`) in the reports and
    /// print it: for finding what grows over a long run.
    #[arg(long)]
    diag: bool,
    /// Stop adding timed GPU runs after this many seconds per case.
    #[arg(long, default_value_t = 30.0)]
    gpu_budget: f64,
    /// Write every figure, with adapter, driver, backend and features, to this JSON file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Write one CSV row per result (with the report's commit, profile, adapter and driver).
    #[arg(long)]
    csv: Option<std::path::PathBuf>,
    /// Write one JSON object per line per result (each with the report's context).
    #[arg(long)]
    jsonl: Option<std::path::PathBuf>,
    /// Write an SVG chart of attention throughput against sequence length.
    #[arg(long)]
    plot: Option<std::path::PathBuf>,
    /// Sweep the attention cases instead of measuring them: every kernel variant and
    /// configuration that can run each case (those of the `--variant`s given, if any), timed
    /// side by side and checked against the CPU path, `Auto`'s choice beside them; writes every
    /// candidate's time and error and the winner to this JSON file (after each case).
    #[arg(long)]
    sweep: Option<std::path::PathBuf>,
    /// Instead of cases: microbenchmarks of the tensor-core primitives as wgpu compiles them
    /// (multiply-add from registers and from workgroup memory, the attention kernel's softmax
    /// hand-off, a barrier), written to this JSON file; hardware cooperative matrices only.
    #[arg(long)]
    mma_probe: Option<std::path::PathBuf>,
    /// List the adapters wgpu sees and exit.
    #[arg(long)]
    list_adapters: bool,
    /// With --list-adapters: each adapter's features, subgroup sizes, key limits and
    /// cooperative-matrix (tensor core) configurations.
    #[arg(long)]
    verbose: bool,
    /// Use the adapter whose name contains this (case-insensitive).
    #[arg(long)]
    adapter: Option<String>,
    /// Tensor cores (cooperative matrices) on the GPU context.
    #[arg(long, value_enum, default_value_t = TensorCoresArg::Auto)]
    tensor_cores: TensorCoresArg,
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
        if args.verbose {
            print_adapter_details();
        }
        return ExitCode::SUCCESS;
    }
    if args.list_suites {
        print!("{}", output::list_suites());
        return ExitCode::SUCCESS;
    }
    let (gpu, cpu) = match args.backend {
        BackendArg::Gpu => (true, false),
        BackendArg::Cpu => (false, true),
        BackendArg::Both => (true, true),
    };
    let build = output::Build::this();
    if build.profile == "debug" {
        eprintln!("warning: a debug build: the CPU path's figures are far below a release build's (cargo attn-bench builds release)");
    }
    let mut cases: Vec<Case> = args.suite.iter().flat_map(|&s| suites::suite(s)).collect();
    if let Some(op) = args.op {
        if args.bh == 0 || args.nq == 0 || args.nk == Some(0) || (args.d == 0 && op != Op::Softmax) {
            eprintln!("error: --bh, --nq, --nk and --d must be at least 1");
            return ExitCode::FAILURE;
        }
        let nk = args.nk.unwrap_or(args.nq);
        cases.push(match op {
            Op::Topk => Case::topk("custom", args.dtype, args.nq, nk, args.d, args.k),
            // softmax rows have no head dim
            Op::Softmax => Case::new("custom", op, args.dtype, args.bh, args.nq, nk, 0, false),
            _ => {
                let kv_group = match args.kv_heads {
                    Some(kv) if kv > 0 && args.bh % kv == 0 && matches!(op, Op::Attention | Op::AttentionBackward) => args.bh / kv,
                    Some(kv) => {
                        eprintln!("error: --kv-heads {kv} must divide --bh {} (attention and its backward only)", args.bh);
                        return ExitCode::FAILURE;
                    }
                    None => 1,
                };
                Case { kv_group, ..Case::new("custom", op, args.dtype, args.bh, args.nq, nk, args.d, args.causal) }
            }
        });
    }
    if cases.is_empty() {
        cases = suites::suite(Suite::Quick);
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
    let mut configs = vec![];
    for text in &args.config {
        match if text == "default" { Ok(AttentionConfig::default()) } else { text.parse::<AttentionConfig>() } {
            Ok(c) => configs.push(c),
            Err(e) => {
                eprintln!("error: --config {text:?}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    // each attention case once per KV-cache type asked for, over a paged cache
    let mut kv_types = vec![];
    for name in &args.kv_dtype {
        match name.parse::<KvDType>() {
            Ok(t) => kv_types.push(t),
            Err(e) => {
                eprintln!("error: --kv-dtype: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let cases: Vec<Case> = if kv_types.is_empty() {
        cases
    } else {
        cases
            .into_iter()
            .flat_map(|c| {
                let types = if c.op == Op::Attention { kv_types.clone() } else { vec![] };
                let plain = c.clone();
                let dt = match c.dtype {
                    suites::Dt::F32 => KvDType::F32,
                    suites::Dt::F16 => KvDType::F16,
                };
                let expanded: Vec<Case> = types
                    .into_iter()
                    .filter(|t| t.is_quantized() || *t == dt)
                    .map(|t| Case {
                        kv_dtype: Some(t.name().to_string()),
                        page_size: if c.page_size == 0 { 16 } else { c.page_size },
                        ..c.clone()
                    })
                    .collect();
                if c.op == Op::Attention {
                    expanded
                } else {
                    vec![plain]
                }
            })
            .collect()
    };
    // with --fixed-order, each attention case also in the fixed reduction order
    let cases: Vec<Case> = if args.fixed_order {
        cases
            .into_iter()
            .flat_map(|c| {
                let fixed = (c.op == Op::Attention).then(|| Case { fixed_order: true, ..c.clone() });
                std::iter::once(c).chain(fixed)
            })
            .collect()
    } else {
        cases
    };
    // each attention case once per variant asked for
    let cases: Vec<Case> = cases
        .into_iter()
        .flat_map(|c| {
            let vs = if c.op == Op::Attention { variants.clone() } else { vec![AttentionVariant::Auto] };
            vs.into_iter().map(move |variant| Case { variant, ..c.clone() })
        })
        .collect();
    // each attention and backward case once per configuration asked for, counting only the
    // fields that apply to it (`backward_keys` to the backward, the others to the forward); a
    // case that names its own configuration, as a suite's may, keeps it
    let cases: Vec<Case> = cases
        .into_iter()
        .flat_map(|c| {
            let mut cs: Vec<AttentionConfig> = vec![];
            if !c.config.is_default() || !matches!(c.op, Op::Attention | Op::AttentionBackward) {
                return vec![c];
            }
            for &k in &configs {
                let k = match c.op {
                    Op::AttentionBackward => AttentionConfig { backward_keys: k.backward_keys, ..Default::default() },
                    _ => AttentionConfig { backward_keys: None, ..k },
                };
                if !cs.contains(&k) {
                    cs.push(k);
                }
            }
            cs.into_iter().map(|config| Case { config, ..c.clone() }).collect()
        })
        .collect();

    let ctx = if gpu {
        match Context::with_options_blocking(ContextOptions {
            adapter_name: args.adapter.clone(),
            tensor_cores: args.tensor_cores.option(),
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
    let mut context = output::Context::new(&build, ctx.as_ref().map(|c| c.info()).as_ref());
    context.bare_dispatch_readback_ms = ctx.as_ref().and_then(|c| measure::bare_dispatch_readback(c, 50));
    eprintln!("{}", context.header());
    let st = Settings {
        warmup: args.warmup,
        runs: args.runs.max(1),
        e2e_runs: args.e2e_runs,
        cpu_max_gflop: args.cpu_max_gflop,
        cpu_budget: args.cpu_budget,
        gpu_budget: args.gpu_budget,
    };

    if let Some(path) = &args.mma_probe {
        let Some(ctx) = &ctx else {
            eprintln!("error: --mma-probe runs on the GPU (not with --backend cpu)");
            return ExitCode::FAILURE;
        };
        return run_mma_probe(ctx, &context, path);
    }
    if let (Some(path), Some(ctx)) = (&args.sweep, &ctx) {
        let only: Vec<AttentionVariant> = variants.iter().copied().filter(|v| *v != AttentionVariant::Auto).collect();
        return run_sweeps(ctx, &cases, &only, &st, &context, path);
    }
    let mut records: Vec<Record> = vec![];
    for (i, c) in cases.iter().enumerate() {
        let variant = if c.variant == AttentionVariant::Auto { String::new() } else { format!(" {}", c.variant) };
        let dims = if c.op == Op::Softmax {
            format!("{}x{}x{}", c.bh, c.nq, c.nk)
        } else {
            format!("{}x{}x{}x{}", c.bh, c.nq, c.nk, c.d)
        };
        let label = format!(
            "[{}/{}] {}{variant} {} {dims}",
            i + 1,
            cases.len(),
            output::op_name(c.op),
            output::dtype_name(c.dtype)
        );
        let kv = c.kv_dtype.as_ref().map_or(String::new(), |t| format!(" kv {t} paged"))
            + if c.fixed_order { " fixed order" } else { "" };
        eprintln!("{label}{}{kv}", if c.causal { " causal" } else { "" });
        let g = match (&ctx, args.fresh_context) {
            (Some(shared), true) => {
                // a new device for this case (the shared one is dropped at the end)
                let fresh = Context::with_options_blocking(ContextOptions {
                    adapter_name: args.adapter.clone(),
            tensor_cores: args.tensor_cores.option(),
                    ..Default::default()
                });
                Some(match fresh {
                    Ok(f) => measure::run_gpu(&f, c, &st, "GPU"),
                    Err(e) => {
                        let mut r = Record::new(c, "wgpu", "gpu", &shared.info().adapter);
                        r.error = Some(format!("a fresh context failed: {e}"));
                        r
                    }
                })
            }
            (Some(ctx), false) => {
                let mut r = measure::run_gpu(ctx, c, &st, "GPU");
                if args.diag {
                    let d = measure::diagnostics(ctx);
                    eprintln!("  diag: {d}");
                    r.diag = Some(d);
                }
                Some(r)
            }
            (None, _) => None,
        };
        let cp = cpu.then(|| measure::run_cpu(c, &st, "CPU"));
        if let (Some(mut g), Some(cp)) = (g.clone(), cp.clone()) {
            if let (Some(tg), Some(tc)) = (g.time_s(), cp.time_s()) {
                g.gpu_speedup = Some(tc / tg);
            }
            records.push(g);
            records.push(cp);
        } else {
            records.extend(g);
            records.extend(cp);
        }
        // after every case, so a run stopped part way (a time limit) keeps what it measured
        if let Err(e) = write_reports(&args, &context, &records) {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    }

    println!("{}", context.header());
    println!("{}", output::table(&records));
    for line in output::resident_lines(&context, &records) {
        println!("{line}");
    }
    for w in output::warnings(&records) {
        eprintln!("warning: {w}");
    }
    let info = ctx.as_ref().map(|c| c.info());
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
    if let Err(e) = write_reports(&args, &context, &records) {
        eprintln!("{e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// `--mma-probe`: the tensor-core microbenchmarks, printed and written to `path` as JSON.
fn run_mma_probe(ctx: &Context, context: &output::Context, path: &std::path::Path) -> ExitCode {
    #[derive(serde::Serialize)]
    struct ProbeReport<'a> {
        #[serde(flatten)]
        context: &'a output::Context,
        probes: &'a [mma_probe::Probe],
    }
    let probes = match mma_probe::run(ctx) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let written = serde_json::to_string_pretty(&ProbeReport { context, probes: &probes })
        .map_err(|e| e.to_string())
        .and_then(|t| std::fs::write(path, t).map_err(|e| format!("writing {}: {e}", path.display())));
    println!("{}", context.header());
    print!("{}", mma_probe::table(&probes));
    if let Err(e) = written {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// `--sweep`: each attention case (once, whatever `--variant` asked) swept on `ctx`, the JSON
/// rewritten after each.
fn run_sweeps(
    ctx: &Context,
    cases: &[Case],
    only: &[AttentionVariant],
    st: &Settings,
    context: &output::Context,
    path: &std::path::Path,
) -> ExitCode {
    #[derive(serde::Serialize)]
    struct SweepReport<'a> {
        #[serde(flatten)]
        context: &'a output::Context,
        sweeps: &'a [sweep::Sweep],
        /// The winners as a tuning table (`Context::import_tuning`'s text).
        tuning_table: String,
    }
    let mut seen = std::collections::HashSet::new();
    let cases: Vec<&Case> = cases
        .iter()
        .filter(|c| c.op == Op::Attention && seen.insert(format!("{:?}", Case { variant: Default::default(), ..(*c).clone() })))
        .collect();
    let st = Settings { e2e_runs: 0, ..*st };
    let mut sweeps = vec![];
    for (i, c) in cases.iter().enumerate() {
        let label = format!(
            "[{}/{}] attention {} {}x{}x{}x{}{}",
            i + 1,
            cases.len(),
            output::dtype_name(c.dtype),
            c.bh,
            c.nq,
            c.nk,
            c.d,
            if c.causal { " causal" } else { "" }
        );
        eprintln!("{label}");
        sweeps.push(sweep::sweep(ctx, c, only, &st, &label));
        let report = SweepReport { context, sweeps: &sweeps, tuning_table: sweep::tuning_table(ctx, &sweeps).to_string() };
        let written = serde_json::to_string_pretty(&report)
            .map_err(|e| e.to_string())
            .and_then(|t| std::fs::write(path, t).map_err(|e| format!("writing {}: {e}", path.display())));
        if let Err(e) = written {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    }
    println!("{}", context.header());
    print!("{}", sweep::table(&sweeps));
    print!("{}", sweep::tuning_table(ctx, &sweeps));
    if cases.is_empty() {
        eprintln!("error: --sweep: no attention case among those asked for");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Writes the `--json`, `--csv` and `--jsonl` reports (each whole, replacing the file).
fn write_reports(args: &Args, context: &output::Context, records: &[Record]) -> Result<(), String> {
    if let Some(path) = &args.json {
        let report = output::Report { context, results: records };
        let text = serde_json::to_string_pretty(&report).map_err(|e| format!("error: serialising the report: {e}"))?;
        std::fs::write(path, text).map_err(|e| format!("error: writing {}: {e}", path.display()))?;
    }
    for (path, text) in [
        (&args.csv, args.csv.as_ref().map(|_| output::csv(context, records))),
        (&args.jsonl, args.jsonl.as_ref().map(|_| output::jsonl(context, records))),
    ] {
        if let (Some(path), Some(text)) = (path, text) {
            std::fs::write(path, text).map_err(|e| format!("error: writing {}: {e}", path.display()))?;
        }
    }
    Ok(())
}

/// Prints what each adapter offers that the kernels care about (for `--list-adapters --verbose`).
fn print_adapter_details() {
    let inst = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    for a in pollster::block_on(inst.enumerate_adapters(wgpu::Backends::all())) {
        let info = a.get_info();
        let l = a.limits();
        println!("\n{} ({:?})", info.name, info.backend);
        println!("  features: {:?}", a.features());
        println!("  subgroup sizes: {}..{}", info.subgroup_min_size, info.subgroup_max_size);
        println!(
            "  limits: storage binding {} B, buffer {} B, workgroup storage {} B, invocations {}",
            l.max_storage_buffer_binding_size,
            l.max_buffer_size,
            l.max_compute_workgroup_storage_size,
            l.max_compute_invocations_per_workgroup
        );
        let coop = a.cooperative_matrix_properties();
        if coop.is_empty() {
            println!("  cooperative matrices: none");
        }
        for p in coop {
            println!(
                "  cooperative matrix {}x{}x{}: {:?} x {:?} -> {:?}{}",
                p.m_size,
                p.n_size,
                p.k_size,
                p.ab_type,
                p.ab_type,
                p.cr_type,
                if p.saturating_accumulation { " (saturating)" } else { "" }
            );
        }
    }
}
