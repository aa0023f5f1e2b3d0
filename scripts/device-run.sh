#!/usr/bin/env bash
# Runs on the GPU machine (stage with scripts/prepare-device.sh, then the device tool:
#   run  command: "bash scripts/device-run.sh"   carry: [".gl", ".devbin"]   timeout_s: 480).
# At most 7 minutes (TOTAL_LIMIT seconds, 420 by default), in this order, each step with its
# own time limit and cut short where the total would run out:
#   1. adapter, features, clocks and power limits; a clock/power/throttle monitor for the run
#   2. the hardware correctness tests (tensor cores: layouts, every attention case at d 16-128
#      against the f64 reference, extremes, paged, determinism): a failure drops tensor cores
#      from the sweeps (--tensor-cores off)
#   2a. the tensor-core microbenchmarks (attn-bench --mma-probe; mma-probe.json in the logs, its
#      table in summary.txt)
#   3. the sweeps: every kernel configuration of the tuning cases (suite `sweep`: f16 d 128,
#      causal, d 64, GQA 32/8) beside Auto's choice, and f16 similarity on tensor cores and on
#      the SIMT kernel
#   4. suite `targets` (one case per target), each case on a fresh device, joined with PyTorch;
#      then suite `kv-quant`: decode over f16, q8_0, q4_0 and fp8 pages (kv-quant.json in the logs),
#      and suite `varlen`: packed variable-length prefill beside the padded call (varlen.json);
#      PyTorch's SDPA backward beside its forward (torch-backward.json)
#   5. the long run: suite `targets` again in one process on one device with --diag, compared
#      case by case with step 4's fresh-device times
#   6. every other test executable, in the time left (those that need the build machine's files
#      are skipped by name)
# Every file comes back from $OUT (at most 8: the device tool's limit), each written as its step
# ends, so a stopped run returns what it measured: summary.txt (a line per step), logs.tar.gz
# (every log, repacked after each step), sweep.json, ours.json, torch.json, joined.json (the form
# committed under benchmarks/device/), longrun.json, gpu-monitor.csv.
# Dry run elsewhere: SKIP_LOADER=1 VK_DRIVER_FILES=<an ICD> DEVBIN=<a folder of binaries> (no
# nvidia-smi or torch: those steps say so and the rest runs), with small cases:
# SWEEP_CASES="--op attention --bh 4 --nq 200 --d 64 --dtype f16" TARGET_CASES="--suite quick"
# KVQ_CASES="--op attention --bh 4 --nq 1 --nk 2048 --d 128 --dtype f16" VARLEN_CASES="--suite varlen-cpu".
set -uo pipefail
cd "$(dirname "$0")/.."
DEFAULT_LIMIT=420
# shellcheck source=scripts/device-steps.sh
. scripts/device-steps.sh
export WGPU_ATTENTION_FULL_MATRIX=${WGPU_ATTENTION_FULL_MATRIX:-1}

# 1. the adapter and its clocks; the monitor runs until the end
note "== device run $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), limit ${total}s"
if command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem,power.limit --format=csv \
    > "$w/gpu.txt" 2>&1
  nvidia-smi -q -d CLOCK,POWER,PERFORMANCE > "$w/clocks.txt" 2>&1
  nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,temperature.gpu,utilization.gpu,memory.used,clocks_throttle_reasons.active \
    --format=csv -lms 500 > "$final/gpu-monitor.csv" 2>&1 &
  monitor=$!
  note "gpu: $(tail -1 "$w/gpu.txt")"
else
  note "gpu: no nvidia-smi (dry run): no clocks, no monitor"
  monitor=
fi
step adapters 20 "$bin/attn-bench" --list-adapters --verbose

# 2. correctness on the hardware first
tc=auto
if step hardware-tests 75 "$bin/tests/tensor_cores" --ignored --test-threads 1; then
  note "tensor cores: the hardware tests passed"
else
  tc=off
  note "tensor cores: the hardware tests did not pass (hardware-tests.log): the sweeps run without them"
fi

# 2a. the tensor-core primitives as wgpu compiles them (multiply-add from registers and from
# workgroup memory, the attention kernel's softmax hand-off, a barrier): what bounds the kernels
if [ "$tc" != off ]; then
  step mma-probe 30 "$bin/attn-bench" --mma-probe "$w/mma-probe.json" --tensor-cores required
  grep -E '^(mma-|softmax-handoff|barrier)' "$w/mma-probe.log" >> "$final/summary.txt"
fi

# 3. the sweeps
# shellcheck disable=SC2086
step sweep 120 "$bin/attn-bench" ${SWEEP_CASES:---suite sweep} --sweep "$final/sweep.json" --tensor-cores "$tc" \
  --runs 5 --warmup 1 --gpu-budget 3
for t in $([ "$tc" = off ] && echo off || echo auto off); do
  # shellcheck disable=SC2086
  step "similarity-tc-$t" 25 "$bin/attn-bench" ${SIMILARITY_CASE:---op similarity --bh 16 --nq 4096 --d 128} --dtype f16 \
    --tensor-cores "$t" --runs 5 --warmup 1 --e2e-runs 0 --gpu-budget 3 --json "$w/similarity-tc-$t.json"
done

# 4. the targets, each on a fresh device, and PyTorch on the same cases
# shellcheck disable=SC2086
step targets 100 "$bin/attn-bench" ${TARGET_CASES:---suite targets} --fresh-context --tensor-cores "$tc" --runs 5 --warmup 1 \
  --e2e-runs 1 --gpu-budget 4 --json "$final/ours.json"
if python3 -c 'import torch' 2>/dev/null; then
  step torch 75 python3 benches/torch_reference.py --cases "$final/ours.json" --json "$final/torch.json" --device cuda
  step join 10 python3 scripts/join_bench.py "$final/ours.json" "$final/torch.json" --json="$final/joined.json"
else
  note "torch: python3 cannot import torch (dry run): not joined"
fi

# 4a. PyTorch's attention backward beside its forward (issue 23's reference: backward / forward)
if python3 -c 'import torch' 2>/dev/null; then
  step torch-backward 40 python3 benches/torch_backward.py --device cuda --runs 5 --warmup 1 --json "$w/torch-backward.json"
fi

# 4b. the quantized KV cache: decode over f16, q8_0, q4_0 and fp8 pages, side by side
# shellcheck disable=SC2086
step kv-quant 45 "$bin/attn-bench" ${KVQ_CASES:---suite kv-quant} --kv-dtype f16 --kv-dtype q8_0 --kv-dtype q4_0 \
  --kv-dtype fp8 --runs 5 --warmup 1 --e2e-runs 0 --gpu-budget 3 --json "$w/kv-quant.json"
pack

# 4c. packed variable-length prefill beside the same data padded
step varlen 45 "$bin/attn-bench" ${VARLEN_CASES:---suite varlen} --runs 5 --warmup 1 --e2e-runs 0 --gpu-budget 3 \
  --json "$w/varlen.json"
pack

# 5. the long run: the same cases in one process on one device, with what the context holds
# shellcheck disable=SC2086
step longrun 75 "$bin/attn-bench" ${TARGET_CASES:---suite targets} --diag --tensor-cores "$tc" --runs 5 --warmup 1 --e2e-runs 1 \
  --gpu-budget 4 --json "$final/longrun.json"
python3 - "$final/ours.json" "$final/longrun.json" > "$w/longrun-vs-fresh.txt" 2>&1 <<'EOF'
import json, sys
def times(path):
    try:
        rs = json.load(open(path))["results"]
    except Exception as e:
        print(f"{path}: {e}")
        return {}
    t = lambda r: (r.get("kernel_ms") or r.get("wall_ms") or {}).get("median")
    key = lambda r: (r["op"], r["dtype"], r["bh"], r["nq"], r["nk"], r["d"], r["causal"])
    return {key(r): t(r) for r in rs if r["impl"] == "wgpu" and t(r)}
fresh, long = times(sys.argv[1]), times(sys.argv[2])
for k, t in long.items():
    if k in fresh:
        print(f"{' '.join(map(str, k))}: long run {t:.3f} ms, fresh device {fresh[k]:.3f} ms, {t / fresh[k]:.2f}x")
EOF
cat "$w/longrun-vs-fresh.txt" >> "$final/summary.txt"
pack

# 6. the other tests, in the time left (cli and layers need the build machine's files)
# (4 threads: with 16, tests/tensor_cores deadlocked on the H200 in 6 of 7 runs, every thread
# asleep on futexes, most in the NVIDIA driver's priority-inheritance mutexes; with 4 threads
# (2 runs) or 1 (1 run) it passed)
for t in "$bin"/tests/*; do
  name=$(basename "$t")
  case "$name" in
    cli|layers|npy) note "test $name: skipped by name (needs the build machine's files)"; continue ;;
  esac
  step "test-$name" 60 "$t" --test-threads 4 || true
done

[ -n "$monitor" ] && kill "$monitor" 2>/dev/null
note "== done in $((SECONDS - start))s"
pack
cat "$final/summary.txt"
