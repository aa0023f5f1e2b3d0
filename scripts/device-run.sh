#!/usr/bin/env bash
# Runs on the GPU machine (see scripts/prepare-device.sh): installs the carried Vulkan loader, runs
# scripts/gpu-bench.sh (ours and PyTorch on the same shapes) on the idle GPU, then every test
# executable on the GPU.
# Logs and JSON go to $OUT; a short summary is printed last.
# Sized for a lease of ~15 minutes: suite `targets` (one case per speed target) with few runs by
# default; SUITES="prefill decode ..." and BENCH_ARGS="..." choose others. Every step has a time
# limit, and attn-bench writes its JSON after each case, so a stopped step keeps what it measured.
set -uo pipefail
cd "$(dirname "$0")/.."
# the device tool returns at most 8 files: logs are written to a work folder and packed at the end
final=${OUT:-device-out}
mkdir -p "$final"
out=$(mktemp -d)
# (SKIP_LOADER=1 and VK_DRIVER_FILES=... allow a dry run elsewhere; NO_BENCH=1 skips the benchmark,
# NO_TESTS=1 the tests)
if [ -z "${SKIP_LOADER:-}" ]; then
  for f in .gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
export VK_DRIVER_FILES=${VK_DRIVER_FILES:-/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json}
# unpack the executables staged by prepare-device.sh (python's tarfile: xz may not be installed)
python3 -c 'import tarfile; tarfile.open(".devbin/bundle.tar.xz").extractall(".devbin")'
chmod +x .devbin/* .devbin/tests/* 2>/dev/null
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$out/gpu.txt" 2>&1
.devbin/attn-bench --list-adapters --verbose | tee "$out/adapters.txt"
summary=()
# the benchmark first, on an idle GPU (a test process killed at its time limit can leave work
# behind on the device, which slowed a later benchmark 5x once)
if [ -z "${NO_BENCH:-}" ]; then
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader > "$out/gpu-before-bench.txt" 2>&1
  t0=$SECONDS
  # clocks, power and memory every half second while the benchmark runs
  nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,temperature.gpu,utilization.gpu,memory.used \
    --format=csv -lms 500 > "$out/gpu-monitor.csv" 2>&1 &
  monitor=$!
  # each case on a device of its own (--fresh-context): in one long run on a shared device,
  # later cases once ran 3-5x slower than alone
  # shellcheck disable=SC2086
  ATTN_BENCH=.devbin/attn-bench OUT="$out" BENCH_ARGS="${BENCH_ARGS:---runs 5 --warmup 1 --e2e-runs 1 --gpu-budget 6 --fresh-context}" \
    timeout "${BENCH_LIMIT:-240}" scripts/gpu-bench.sh ${SUITES:-targets} > "$out/gpu-bench.txt" 2>&1
  rc=$?
  kill "$monitor" 2>/dev/null
  summary+=("gpu-bench: rc=$rc $((SECONDS - t0))s (GPU before: $(cat "$out/gpu-before-bench.txt"))")
  # a stopped attn-bench leaves its JSON of the cases it finished: join what there is
  if [ $rc -ne 0 ] && [ -f "$out/ours.json" ] && [ ! -f "$out/joined.txt" ]; then
    timeout 90 python3 benches/torch_reference.py --cases "$out/ours.json" --json "$out/torch.json" --device cuda \
      >> "$out/gpu-bench.txt" 2>&1 && python3 scripts/join_bench.py "$out/ours.json" "$out/torch.json" > "$out/joined.txt"
  fi
fi
# then every test executable, one at a time (side by side, one once hung in the driver), each
# with a time limit, on the full matrix (every attention variant on every case: a GPU driver
# compiles in milliseconds what lavapipe compiles in seconds)
export WGPU_ATTENTION_FULL_MATRIX="${WGPU_ATTENTION_FULL_MATRIX:-1}"
t0=$SECONDS
for t in .devbin/tests/*; do
  [ -n "${NO_TESTS:-}" ] && break
  name=$(basename "$t")
  s=$SECONDS
  timeout "${TEST_LIMIT:-90}" "$t" > "$out/test-$name.log" 2>&1
  summary+=("test $name: rc=$? $((SECONDS - s))s $(grep -E '^test result' "$out/test-$name.log" | tail -1)")
done
summary+=("tests: $((SECONDS - t0))s in all")
# the tensor-core (cooperative-matrix) checks, ignored elsewhere: the self-check, every
# similarity case on the hardware path, 100 identical runs compared bitwise
if [ -z "${NO_TESTS:-}" ] && [ -x .devbin/tests/tensor_cores ]; then
  s=$SECONDS
  timeout "${TEST_LIMIT:-90}" .devbin/tests/tensor_cores --ignored > "$out/test-tensor_cores-hardware.log" 2>&1
  summary+=("tensor cores (hardware): rc=$? $((SECONDS - s))s $(grep -E '^test result' "$out/test-tensor_cores-hardware.log" | tail -1)")
fi
# f16 prefill on the tensor cores beside the SIMT kernel, same device, same run (Auto takes the
# tensor cores where the self-check passed; this says whether it should)
if [ -z "${NO_BENCH:-}" ]; then
  s=$SECONDS
  for shape in "--bh 16 --d 128" "--bh 32 --d 64"; do
    # shellcheck disable=SC2086
    timeout 60 .devbin/attn-bench --op attention $shape --nq 4096 --nk 4096 --dtype f16 --variant tensor-cores \
      --variant fused-vec4 --runs 5 --warmup 1 --e2e-runs 0 --gpu-budget 6 >> "$out/tc-vs-simt.txt" 2>&1
  done
  summary+=("tensor cores vs SIMT (f16 prefill): $((SECONDS - s))s, tc-vs-simt.txt")
fi
timeout 30 .devbin/attention --nq 4096 --dim 128 --heads 16 --f16 > "$out/example-attention.txt" 2>&1
summary+=("example attention: $(grep -E 'agreement|GPU fused' "$out/example-attention.txt" | tr '\n' ' ')")
timeout 30 .devbin/decode --prompts 100,1000,4000,8000 --steps 64 > "$out/example-decode.txt" 2>&1
summary+=("example decode: rc=$? $(grep -E 'decode:|agreement' "$out/example-decode.txt" | tr '\n' ' ')")
{
  echo "== summary"
  cat "$out/gpu.txt"
  printf '%s\n' "${summary[@]}"
} > "$out/summary.txt"
tar czf "$final/logs.tar.gz" -C "$out" .
for f in summary.txt joined.txt ours.json torch.json tc-vs-simt.txt; do [ -f "$out/$f" ] && cp "$out/$f" "$final/"; done
cat "$out/summary.txt"
[ -f "$out/joined.txt" ] && cut -c1-220 "$out/joined.txt"
