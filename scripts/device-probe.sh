#!/usr/bin/env bash
# Runs on the GPU machine after scripts/device-run.sh has unpacked .devbin (or unpacks it): short
# probes that locate a bottleneck or a hang, printed compactly. Usage: scripts/device-probe.sh
set -uo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .devbin/attn-bench ]; then
  for f in .gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
  python3 -c 'import tarfile; tarfile.open(".devbin/bundle.tar.xz").extractall(".devbin")'
  chmod +x .devbin/* .devbin/tests/* 2>/dev/null
fi
export VK_DRIVER_FILES=${VK_DRIVER_FILES:-/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json}
echo "== interop tests one at a time"
for t in callers_device_buffers_and_encoder context_shared_across_threads racing_threads_compile_each_variant_once \
  auto_backend_prefers_hardware_and_else_the_cpu_path kernel_time_from_timestamp_queries; do
  timeout 25 .devbin/tests/interop --exact "$t" --test-threads=1 > /tmp/probe.log 2>&1
  echo "$t: rc=$? $(grep -E '^test result' /tmp/probe.log)"
done
echo "== scaling (kernel ms)"
b() { timeout 40 .devbin/attn-bench "$@" --runs 3 --warmup 1 --e2e-runs 0 2>/dev/null | grep -E '^(attention|similarity|softmax) ' | awk -F'|' '{print $1 "|" $3 "|" $4 "|" $5 "|" $6 "|" $9 "|" $10 "|" $13 "|" $14}'; }
b --op softmax --bh 16 --nq 4096 --nk 4096
b --op softmax --bh 16 --nq 4096 --nk 1024
b --op softmax --bh 16 --nq 4096 --nk 8192
b --op softmax --bh 1 --nq 4096 --nk 4096
b --op similarity --bh 16 --nq 4096 --nk 4096 --d 128
b --op similarity --bh 16 --nq 4096 --nk 4096 --d 16
b --op similarity --bh 1 --nq 4096 --nk 4096 --d 128
b --op similarity --bh 16 --nq 4096 --nk 4096 --d 128 --dtype f16
b --op attention --bh 32 --nq 1 --nk 32768 --d 128 --dtype f16 --variant decode-vec4 --variant split-k-vec4
