#!/usr/bin/env bash
# A short device run (stage with scripts/prepare-device.sh, then the device tool:
#   run  command: "bash scripts/device-followup.sh"   carry: [".gl", ".devbin"]   timeout_s: 400),
# for the questions the main run (scripts/device-run.sh) leaves open, at most TOTAL_LIMIT seconds
# (360 by default), each step's files in $OUT as it ends:
#   1. the adapter and its clocks; the tensor-core hardware tests
#   2. the GPU backward's tests (tests/backward_gpu, its seeded random cases included)
#   3. the tensor-core microbenchmarks (attn-bench --mma-probe: mma-probe.json)
#   4. the backward suite (each backward case beside its forward; the backward with 1 and with
#      2 keys per group of lanes, AttentionConfig::backward_keys) joined with PyTorch's SDPA
#      backward on the same card (backward.json, torch-backward-join.json, joined-backward.json)
#   5. every other test executable, in the time left (those that need the build machine's files
#      are skipped by name)
# Files back: summary.txt (a line per step and the tables), logs.tar.gz (every log), the JSON.
# Dry run elsewhere: SKIP_LOADER=1 VK_DRIVER_FILES=<an ICD> DEVBIN=<a folder of binaries>
# BACKWARD_CASES="--suite backward-cpu" (no nvidia-smi, torch or tensor cores: those steps say so).
set -uo pipefail
cd "$(dirname "$0")/.."
DEFAULT_LIMIT=360
# shellcheck source=scripts/device-steps.sh
. scripts/device-steps.sh
note "== follow-up run $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), limit ${total}s"

# 1. the adapter; the tensor-core hardware tests
if command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem,power.limit --format=csv \
    > "$w/gpu.txt" 2>&1
  note "gpu: $(tail -1 "$w/gpu.txt")"
else
  note "gpu: no nvidia-smi (dry run)"
fi
step adapters 20 "$bin/attn-bench" --list-adapters --verbose
tc=auto
step hardware-tests 60 "$bin/tests/tensor_cores" --ignored --test-threads 1 || tc=off

# 2. the backward's tests
step test-backward_gpu 60 "$bin/tests/backward_gpu"

# 3. the tensor-core primitives (what bounds the tensor-core kernels)
if [ "$tc" != off ]; then
  step mma-probe 30 "$bin/attn-bench" --mma-probe "$final/mma-probe.json" --tensor-cores required
  grep -E '^(mma-|softmax-handoff|barrier)' "$w/mma-probe.log" >> "$final/summary.txt"
else
  note "mma-probe: skipped (the tensor-core hardware tests did not pass)"
fi

# 4. the backward beside the forward, and PyTorch's
# shellcheck disable=SC2086
step backward 100 "$bin/attn-bench" ${BACKWARD_CASES:---suite backward} --config backward_keys=1 --config backward_keys=2 \
  --runs 5 --warmup 1 --e2e-runs 0 --gpu-budget 3 --json "$final/backward.json"
grep -E '^attention' "$w/backward.log" >> "$final/summary.txt"
if python3 -c 'import torch' 2>/dev/null; then
  step torch-backward 50 python3 benches/torch_reference.py --cases "$final/backward.json" --json "$final/torch-backward-join.json" --device cuda
  step join-backward 10 python3 scripts/join_bench.py "$final/backward.json" "$final/torch-backward-join.json" --json="$final/joined-backward.json"
  [ -f "$w/join-backward.log" ] && cat "$w/join-backward.log" >> "$final/summary.txt"
else
  note "torch: not importable here: no PyTorch columns"
fi

# 5. the other tests, in the time left
# (4 threads: with 16, tests/tensor_cores deadlocked on the H200 in 6 of 7 runs, every thread
# asleep on futexes, most in the NVIDIA driver's priority-inheritance mutexes; with 4 threads
# (2 runs) or 1 (1 run) it passed)
for t in "$bin"/tests/*; do
  name=$(basename "$t")
  case "$name" in
    backward_gpu) continue ;;
    cli|layers|npy) note "test $name: skipped by name (needs the build machine's files)"; continue ;;
  esac
  step "test-$name" 45 "$t" --test-threads 4 || true
done
note "== done in $((SECONDS - start))s"
pack
