#!/usr/bin/env bash
# A short second device run (stage with scripts/prepare-device.sh, then the device tool:
#   run  command: "bash scripts/device-followup.sh"   carry: [".gl", ".devbin"]   timeout_s: 240),
# for the questions the main run (scripts/device-run.sh) left open, at most TOTAL_LIMIT seconds
# (200 by default), each step's files in $OUT as it ends:
#   1. the GPU backward's tests (tests/backward_gpu) and the two tests fixed after the first run
#   2. the backward suite (each backward case beside its forward) joined with PyTorch's SDPA
#      backward on the same card (backward.json, torch-backward-join.json, joined-backward.json)
#   3. decode f16, 32 heads x 32768 keys, d 128, with this build and with the one in
#      .devbin/attn-bench-e9e34d5 (the build of 2026-11-27's 0.228 ms), side by side
# Files back: summary.txt (a line per step and the tables), logs.tar.gz (every log), the JSON.
# Dry run elsewhere: SKIP_LOADER=1 VK_DRIVER_FILES=<an ICD> DEVBIN=<a folder of binaries>
# BACKWARD_CASES="--suite backward-cpu" DECODE_CASE="--op attention --bh 4 --nq 1 --nk 2048 --d 64".
set -uo pipefail
cd "$(dirname "$0")/.."
DEFAULT_LIMIT=200
# shellcheck source=scripts/device-steps.sh
. scripts/device-steps.sh
note "== follow-up run $(date -u +%FT%TZ), limit ${total}s"

# 1. the tests
step test-backward_gpu 40 "$bin/tests/backward_gpu"
step test-attention-f16 40 "$bin/tests/attention" f16_storage_with_f32_statistics
step test-tensor_cores-option 20 "$bin/tests/tensor_cores" the_option_and_what_the_context_reports

# 2. the backward beside the forward, and PyTorch's
# shellcheck disable=SC2086
step backward 60 "$bin/attn-bench" ${BACKWARD_CASES:---suite backward} --runs 3 --warmup 1 --e2e-runs 0 --gpu-budget 3 \
  --json "$final/backward.json"
if python3 -c 'import torch' 2>/dev/null; then
  step torch-backward 45 python3 benches/torch_reference.py --cases "$final/backward.json" --json "$final/torch-backward-join.json" --device cuda
  step join-backward 10 python3 scripts/join_bench.py "$final/backward.json" "$final/torch-backward-join.json" --json="$final/joined-backward.json"
fi

grep -E '^attention' "$w/backward.log" >> "$final/summary.txt"
[ -f "$w/join-backward.log" ] && cat "$w/join-backward.log" >> "$final/summary.txt"

# 3. decode, this build and e9e34d5's
for b in attn-bench attn-bench-e9e34d5; do
  [ -x "$bin/$b" ] || { note "decode-$b: no $bin/$b"; continue; }
  # shellcheck disable=SC2086
  step "decode-$b" 25 "$bin/$b" ${DECODE_CASE:---op attention --bh 32 --nq 1 --nk 32768 --d 128} --dtype f16 \
    --runs 5 --warmup 2 --e2e-runs 0 --gpu-budget 3
  grep -E '^attention' "$w/decode-$b.log" | tee -a "$final/summary.txt"
done
note "== done in $((SECONDS - start))s"
