#!/usr/bin/env bash
# Runs on the GPU machine (see scripts/prepare-device.sh): installs the carried Vulkan loader, runs
# every test executable on the GPU, then scripts/gpu-bench.sh (ours and PyTorch on the same shapes).
# Logs and JSON go to $OUT; a short summary is printed last.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-device-out}
mkdir -p "$out"
# (SKIP_LOADER=1 and VK_DRIVER_FILES=... allow a dry run elsewhere; NO_BENCH=1 skips the benchmark)
if [ -z "${SKIP_LOADER:-}" ]; then
  for f in .gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
export VK_DRIVER_FILES=${VK_DRIVER_FILES:-/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json}
# unpack the executables staged by prepare-device.sh (python's tarfile: xz may not be installed)
python3 -c 'import tarfile; tarfile.open(".devbin/bundle.tar.xz").extractall(".devbin")'
chmod +x .devbin/* .devbin/tests/* 2>/dev/null
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$out/gpu.txt" 2>&1
.devbin/attn-bench --list-adapters | tee "$out/adapters.txt"
summary=()
for t in .devbin/tests/*; do
  name=$(basename "$t")
  timeout 300 "$t" > "$out/test-$name.log" 2>&1
  summary+=("test $name: rc=$? $(grep -E '^test result' "$out/test-$name.log" | tail -1)")
done
.devbin/attention --nq 4096 --dim 128 --heads 16 --f16 > "$out/example-attention.txt" 2>&1
summary+=("example attention: $(grep -E 'agreement|GPU fused' "$out/example-attention.txt" | tr '\n' ' ')")
timeout 180 .devbin/decode --prompts 100,1000,4000,8000 --steps 64 > "$out/example-decode.txt" 2>&1
summary+=("example decode: rc=$? $(grep -E 'decode:|agreement' "$out/example-decode.txt" | tr '\n' ' ')")
if [ -z "${NO_BENCH:-}" ]; then
  # shellcheck disable=SC2086
  ATTN_BENCH=.devbin/attn-bench OUT="$out" timeout 420 scripts/gpu-bench.sh ${SUITES:-} > "$out/gpu-bench.txt" 2>&1
  summary+=("gpu-bench: rc=$?")
fi
echo "== summary"
cat "$out/gpu.txt"
printf '%s\n' "${summary[@]}"
[ -f "$out/joined.txt" ] && cut -c1-220 "$out/joined.txt"
