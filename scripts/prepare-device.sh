#!/usr/bin/env bash
# Run here (not on the GPU machine): stages what a GPU run needs. Downloads the Vulkan/GL loader
# packages the GPU machine lacks into .gl/, builds the release binaries and the test executables,
# and copies them into .devbin/ (both ignored by git). Then, with the device tool:
#   run  command: "bash scripts/device-run.sh"   carry: [".gl", ".devbin"]
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.devbin/' .git/info/exclude 2>/dev/null || echo '/.devbin/' >> .git/info/exclude
[ -n "$(ls .gl/*.deb 2>/dev/null)" ] || bash scripts/fetch-vulkan-loader.sh
cargo build --release --bins --examples
rm -rf .devbin && mkdir -p .devbin/tests
cp target/release/attn-bench target/release/examples/attention target/release/examples/search .devbin/
cargo test --release --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["executable"])' \
  | while read -r exe; do cp "$exe" ".devbin/tests/$(basename "$exe" | sed 's/-[0-9a-f]*$//')"; done
# symbols are not needed there, and a run carries at most 64 MiB
strip .devbin/* .devbin/tests/* 2>/dev/null || true
ls -la .devbin .devbin/tests
du -sh .devbin .gl
