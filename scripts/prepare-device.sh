#!/usr/bin/env bash
# Run here (not on the GPU machine): stages what a GPU run needs. Downloads the Vulkan/GL loader
# packages the GPU machine lacks into .gl/, builds the release binaries and the test executables,
# and packs them, stripped, into .devbin/bundle.tar.xz (both ignored by git; a run carries at most
# 64 MiB in all, and the executables are ~67 MiB unpacked, ~6 MiB packed). Then, with the device tool:
#   run  command: "bash scripts/device-run.sh"   carry: [".gl", ".devbin"]
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.devbin/' .git/info/exclude 2>/dev/null || echo '/.devbin/' >> .git/info/exclude
[ -n "$(ls .gl/*.deb 2>/dev/null)" ] || bash scripts/fetch-vulkan-loader.sh
cargo build --release --features cli --bins --examples
target=${CARGO_TARGET_DIR:-target}
stage=$(mktemp -d)
mkdir -p "$stage/tests"
cp "$target"/release/attn-bench "$target"/release/examples/{attention,search,decode} "$stage/"
# (with wgpu's counters, as `cargo test --all-features` has them: the soak test reads them)
cargo test --release --features counters --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["executable"])' \
  | while read -r exe; do cp "$exe" "$stage/tests/$(basename "$exe" | sed 's/-[0-9a-f]*$//')"; done
strip "$stage"/* "$stage"/tests/* 2>/dev/null || true
rm -rf .devbin && mkdir -p .devbin
tar cJf .devbin/bundle.tar.xz -C "$stage" .
rm -rf "$stage"
tar tJvf .devbin/bundle.tar.xz
du -sh .devbin .gl
