#!/usr/bin/env bash
# Our kernels and PyTorch on the same shapes, in one run, joined into one table.
#
#   scripts/gpu-bench.sh            GPU mode: suites prefill decode paged window similarity softmax topk on the
#                                   best adapter, against PyTorch on CUDA
#   scripts/gpu-bench.sh --cpu      CPU mode: suites quick and topk-cpu on our CPU path and the best
#                                   adapter (lavapipe here), against PyTorch on the CPU at the same
#                                   thread count, and faiss-cpu's IndexFlatIP where installed
#   scripts/gpu-bench.sh --cpu-path CPU path mode: suite cpu on our CPU path alone, against PyTorch
#                                   on the CPU at the same thread count and faiss-cpu
#   scripts/gpu-bench.sh [--cpu|--cpu-path] SUITE...   other suites
#
# Needs python3 with torch, and attn-bench: $ATTN_BENCH, else this checkout's, built with cargo,
# else .devbin/attn-bench (the GPU machine has no cargo). Writes ours.json,
# ours.svg, torch.json and joined.txt under $OUT (default bench-out/). $BENCH_ARGS goes to
# attn-bench (e.g. "--runs 5"); the PyTorch script takes the same runs and warm-up.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=gpu
suites=()
for a in "$@"; do
  case "$a" in
    --cpu) mode=cpu ;;
    --cpu-path) mode=cpu-path ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) suites+=("$a") ;;
  esac
done
out=${OUT:-bench-out}
mkdir -p "$out"
bin=${ATTN_BENCH:-}
if [ -z "$bin" ]; then
  if command -v cargo >/dev/null; then
    # where there is cargo, always the binary of this checkout (a staged .devbin may be stale)
    cargo build --release --features cli --bin attn-bench >&2
    bin="${CARGO_TARGET_DIR:-target}/release/attn-bench"
  elif [ -x .devbin/attn-bench ]; then
    bin=.devbin/attn-bench
  else
    echo "error: no attn-bench: set ATTN_BENCH, or stage .devbin with scripts/prepare-device.sh" >&2
    exit 1
  fi
fi
python3 -c 'import torch' 2>/dev/null || { echo "error: python3 cannot import torch (pip install torch)" >&2; exit 1; }
threads=${RAYON_NUM_THREADS:-$(nproc)}

if [ "$mode" = gpu ]; then
  [ ${#suites[@]} -gt 0 ] || suites=(prefill decode paged window similarity softmax topk)
  backend=gpu
  device=cuda
elif [ "$mode" = cpu ]; then
  [ ${#suites[@]} -gt 0 ] || suites=(quick topk-cpu)
  backend=both
  device=cpu
else
  [ ${#suites[@]} -gt 0 ] || suites=(cpu)
  backend=cpu
  device=cpu
fi
suite_args=()
for s in "${suites[@]}"; do suite_args+=(--suite "$s"); done

echo "== attn-bench (${suites[*]}, backend $backend)" >&2
# shellcheck disable=SC2086
"$bin" "${suite_args[@]}" --backend "$backend" ${BENCH_ARGS:-} --json "$out/ours.json" --plot "$out/ours.svg" | tee "$out/ours.txt"
echo "== PyTorch ($device, $threads threads)" >&2
python3 benches/torch_reference.py --cases "$out/ours.json" --json "$out/torch.json" --device "$device" --threads "$threads"
echo "== joined" >&2
python3 scripts/join_bench.py "$out/ours.json" "$out/torch.json" | tee "$out/joined.txt"
