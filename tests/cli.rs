//! The command-line tools behave like tools: `--help` works, bad values and unknown flags are
//! refused with a usage error (exit code 2), errors print their message, and attn-bench's output
//! is labelled and scaled. Runs attn-bench on the CPU path (no adapter needed) and the examples
//! up to their argument checks (or on `--cpu`).
//!
//! Built with the `cli` feature (`cargo test --all-features`, the README's test command), which
//! builds attn-bench; the examples are those `cargo test` builds beside the tests.

use std::path::PathBuf;
use std::process::{Command, Output};

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_attn-bench")).args(args).output().expect("attn-bench runs")
}

/// An example built by `cargo test` (in `target/<profile>/examples`, beside `deps`).
fn example(name: &str, args: &[&str]) -> Output {
    let exe = std::env::current_exe().expect("test path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target/<profile>");
    let path: PathBuf = dir.join("examples").join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    let how = "run the tests with `cargo test --all-features`, which builds the examples";
    let built = std::fs::metadata(&path).and_then(|m| m.modified());
    // its source: `examples/<name>.rs`, or the files of `examples/<name>/` (the newest counts)
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples");
    let modified = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified());
    let source = modified(&dir.join(format!("{name}.rs"))).or_else(|_| {
        std::fs::read_dir(dir.join(name))?
            .map(|e| modified(&e?.path()))
            .collect::<std::io::Result<Vec<_>>>()?
            .into_iter()
            .max()
            .ok_or_else(|| std::io::Error::other("no source files"))
    });
    match (built, source) {
        (Ok(b), Ok(s)) => assert!(b >= s, "{} is older than its source: {how}", path.display()),
        _ => panic!("{} is not built: {how}", path.display()),
    }
    Command::new(path).args(args).output().expect("the example runs")
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn attn_bench_help_lists_every_suite_and_refuses_bad_values() {
    let (out, _) = text(&bench(&["--help"]));
    let (list, _) = text(&bench(&["--list-suites"]));
    for s in [
        "quick",
        "prefill",
        "decode",
        "paged",
        "window",
        "window-cpu",
        "similarity",
        "softmax",
        "topk",
        "topk-cpu",
        "cpu",
        "targets",
        "sweep",
        "backward",
        "backward-cpu",
    ] {
        assert!(out.contains(&format!("- {s}:")), "--help lacks suite {s}:\n{out}");
        assert!(list.lines().any(|l| l.starts_with(&format!("{s} ("))), "--list-suites lacks {s}:\n{list}");
    }
    for bad in
        [&["--suite", "nope"][..], &["--backend", "gpus"], &["--op", "attn"], &["--frobnicate"], &["--runs", "x"], &["--tensor-cores", "maybe"]]
    {
        let o = bench(bad);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{bad:?} should be a usage error: {err}");
        assert!(err.starts_with("error:"), "{bad:?}: {err}");
    }
}

#[test]
fn attn_bench_mma_probe_needs_the_gpu_and_says_so() {
    // (on a GPU without hardware cooperative matrices it refuses too, naming them)
    let o = bench(&["--backend", "cpu", "--mma-probe", "probe.json"]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("--mma-probe runs on the GPU"), "{err}");
    assert!(bench(&["--help"]).stdout.windows(11).any(|w| w == b"--mma-probe"));
}

#[test]
fn attn_bench_times_the_backward_on_both_paths_and_checks_it() {
    let o = bench(&[
        "--backend", "both", "--op", "attention_backward", "--bh", "2", "--nq", "20", "--nk", "30", "--d", "8", "--causal",
        "--runs", "2", "--warmup", "0", "--e2e-runs", "0",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    let rows: Vec<Vec<&str>> = out
        .lines()
        .filter(|l| l.starts_with("attention_backward"))
        .map(|l| l.split('|').map(str::trim).collect())
        .collect();
    assert_eq!(rows.len(), 2, "a GPU and a CPU row:\n{out}");
    let gpu = rows.iter().find(|r| r[8] == "wgpu").unwrap_or_else(|| panic!("no wgpu row:\n{out}"));
    // dQ of the first head against the CPU path's
    let e: f64 = gpu[14].parse().unwrap_or_else(|_| panic!("error cell {:?}:\n{out}", gpu[14]));
    assert!(e < 1e-4, "{out}");
    assert!(rows.iter().any(|r| r[8] == "cpu" && r[10].contains('±')), "{out}");
}

#[test]
fn attn_bench_runs_each_case_once_per_config_and_refuses_a_bad_one() {
    let o = bench(&[
        "--op", "attention_backward", "--bh", "2", "--nq", "20", "--nk", "30", "--d", "8", "--config", "backward_keys=1",
        "--config", "backward_keys=2", "--runs", "2", "--warmup", "0", "--e2e-runs", "0",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    for c in ["backward_keys=1", "backward_keys=2"] {
        assert!(out.lines().any(|l| l.starts_with("attention_backward") && l.contains(&format!("wgpu ({c})"))), "{c}:\n{out}");
    }
    let o = bench(&["--op", "attention", "--config", "frobnicate=1"]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("--config") && err.contains("frobnicate"), "{err}");
}

#[test]
fn attn_bench_reports_are_labelled_scaled_and_carry_their_context() {
    let dir = std::env::temp_dir().join(format!("attn-bench-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (csv, jsonl, json) = (dir.join("r.csv"), dir.join("r.jsonl"), dir.join("r.json"));
    let o = bench(&[
        "--backend",
        "cpu",
        "--op",
        "softmax",
        "--bh",
        "2",
        "--nq",
        "16",
        "--nk",
        "32",
        "--runs",
        "3",
        "--warmup",
        "0",
        "--csv",
        csv.to_str().unwrap(),
        "--jsonl",
        jsonl.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    // the header: commit, build profile, and (no adapter) what ran instead
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    assert!(out.contains("commit ") && out.contains(&format!("{profile} build")), "{out}");
    assert!(out.contains("no GPU adapter (CPU path only)"), "{out}");
    if profile == "debug" {
        assert!(err.contains("warning: a debug build"), "{err}");
    }
    let row = out.lines().find(|l| l.starts_with("softmax")).unwrap_or_else(|| panic!("no softmax row:\n{out}"));
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    assert_eq!(&cells[..6], &["softmax", "f32", "2", "16", "32", "-"], "{row}");
    assert!(cells[10].contains('±'), "wall time, median ± sd: {row}");
    assert!(cells[13].ends_with("B/s") && !cells[13].starts_with("0.0"), "a scaled unit: {row}");
    // the files: the same op name, one row / line per result, the context on each
    let csv = std::fs::read_to_string(&csv).unwrap();
    assert!(csv.lines().nth(1).is_some_and(|l| l.starts_with("custom,softmax,f32,2,16,32,0,")), "{csv}");
    let line: serde_json::Value = serde_json::from_str(std::fs::read_to_string(&jsonl).unwrap().trim()).unwrap();
    assert_eq!((line["op"].as_str(), line["context"]["profile"].as_str()), (Some("softmax"), Some(profile)));
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(report["commit"].is_string() && report["results"][0]["wall_ms"]["sd"].is_number(), "{report}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn examples_parse_their_arguments() {
    for name in ["attention", "search", "decode"] {
        let o = example(name, &["--help"]);
        assert!(o.status.success() && text(&o).0.contains("Usage:"), "{name} --help: {:?}", text(&o));
        let o = example(name, &["--no-such-flag"]);
        assert_eq!(o.status.code(), Some(2), "{name}: unknown flags are refused: {:?}", text(&o));
    }
    for (name, args, says) in [
        ("attention", &["--dim", "0"][..], "--dim"),
        ("attention", &["--dim", "300"], "--dim"),
        ("attention", &["--nq", "many"], "--nq"),
        ("decode", &["--prompts", "3,0"], "--prompts"),
        ("decode", &["--page-size", "0"], "--page-size"),
        ("search", &["--keys", "k.npy", "--k", "0"], "--k"),
        ("search", &["--keys", "k.npy", "--metric", "euclid"], "--metric"),
        ("search", &["--keys", "k.npy", "--f16", "--cpu"], "--cpu"),
    ] {
        let o = example(name, args);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{name} {args:?}: {err}");
        assert!(err.contains(says), "{name} {args:?} should name {says}: {err}");
    }
    // errors past parsing print their message (exit code 1), before any device is made
    let o = example("decode", &["--heads", "8", "--kv-heads", "3"]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("error:") && err.contains("does not divide"), "{err}");
}

#[test]
fn search_refuses_k_beyond_the_keys_and_runs_on_the_cpu() {
    let dir = std::env::temp_dir().join(format!("search-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let keys = dir.join("keys.f32");
    let values: Vec<f32> = vec![1.0, 0.0, 0.0, 1.0, 0.7, 0.7];
    std::fs::write(&keys, values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    let queries = dir.join("queries.f32");
    std::fs::write(&queries, [0.0f32, 1.0].iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    let (k, q) = (keys.to_str().unwrap(), queries.to_str().unwrap());
    let o = example("search", &["--keys", k, "--queries", q, "--dim", "2", "--k", "5", "--cpu"]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("--k 5") && err.contains("3"), "names the k the user typed and the key count: {err}");
    let o = example("search", &["--keys", k, "--queries", q, "--dim", "2", "--k", "2", "--cpu", "--metric", "dot"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    let rows: Vec<Vec<&str>> = out.lines().skip(1).map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows.len(), 2, "{out}");
    assert_eq!((rows[0][1], rows[1][1]), ("1", "2"), "key 1 (0, 1) then key 2 (0.7, 0.7): {out}");
    assert!(err.contains("search:"), "the search time is reported: {err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--sweep` on the GPU: every candidate (of the decode kernel: its splits; every family's
/// configurations run in tests/configs.rs) timed and checked against the CPU path, `Auto`
/// beside them, a winner within the tolerance, and the winners as a tuning table a context
/// imports.
#[test]
#[cfg_attr(cpu_only_tests, ignore = "WGPU_ATTENTION_TESTS=cpu-only: needs a GPU adapter")]
fn attn_bench_sweeps_every_candidate_and_writes_the_winner() {
    let dir = std::env::temp_dir().join(format!("wgpu-attention-sweep-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("sweep.json");
    // the shapes of tests/configs.rs (the same kernels)
    let o = bench(&[
        "--op", "attention", "--bh", "4", "--kv-heads", "2", "--nq", "70", "--nk", "300", "--d", "24", "--causal",
        "--dtype", "f16", "--tensor-cores", "off", "--runs", "2", "--warmup", "1", "--variant", "decode-vec4",
        "--sweep", json.to_str().unwrap(),
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.contains("winner") && out.contains("auto / winner"), "{out}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let sweep = &report["sweeps"][0];
    assert_eq!(sweep["class"], "f16 d32 q128 k512 s4 g2 causal");
    let candidates = sweep["candidates"].as_array().unwrap();
    let tol = sweep["tolerance"].as_f64().unwrap();
    assert!(candidates.len() >= 3 && candidates.iter().all(|c| c["variant"] == "decode-vec4"), "{candidates:?}");
    for c in candidates {
        assert!(c["error"].is_null(), "{c}");
        assert!(c["rel_err"].as_f64().unwrap() <= tol, "{c}");
        assert!(c["kernel_ms"]["median"].as_f64().or(c["wall_ms"]["median"].as_f64()).is_some(), "{c}");
    }
    let winner = &sweep["winner"];
    assert!(candidates.iter().any(|c| c["variant"] == winner["variant"] && c["config"] == winner["config"]), "{winner}");
    let table: wgpu_attention::TuningTable = report["tuning_table"].as_str().unwrap().parse().unwrap();
    assert_eq!(table.len(), 1);
    let ctx = wgpu_attention::Context::with_options_blocking(wgpu_attention::ContextOptions {
        tensor_cores: wgpu_attention::TensorCores::Off,
        ..Default::default()
    })
    .unwrap();
    assert_eq!(ctx.import_tuning(&table), 1, "the sweep's table is this adapter's");
    std::fs::remove_dir_all(&dir).ok();
}
