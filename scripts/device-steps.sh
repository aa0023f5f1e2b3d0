# Sourced by the device scripts (device-run.sh, device-followup.sh), from the repository root,
# with TOTAL_LIMIT's default in DEFAULT_LIMIT: sets final ($OUT), w (a folder for logs), total,
# start and bin ($DEVBIN or .devbin); defines note, pack, left and step; unpacks the Vulkan loader
# (unless SKIP_LOADER is set) and the staged executables.
final=${OUT:-device-out}
mkdir -p "$final"
w=$(mktemp -d)
total=${TOTAL_LIMIT:-$DEFAULT_LIMIT}
start=$SECONDS
bin=${DEVBIN:-.devbin}

note() { echo "$*" | tee -a "$final/summary.txt"; }
pack() { tar czf "$final/logs.tar.gz" -C "$w" . 2>/dev/null; }
left() { echo $((total - (SECONDS - start))); }
# step NAME SECONDS COMMAND...: runs COMMAND with at most SECONDS (less where the run's total
# would pass TOTAL_LIMIT), its output in NAME.log; notes the outcome; returns its status
step() {
  local name=$1 secs=$2 l s rc
  shift 2
  l=$(left)
  if [ "$l" -lt 15 ]; then
    note "$name: skipped, the run's $total s are used up"
    return 124
  fi
  [ "$secs" -gt "$l" ] && secs=$l
  s=$SECONDS
  timeout "$secs" "$@" > "$w/$name.log" 2>&1
  rc=$?
  note "$name: rc=$rc $((SECONDS - s))s$([ $rc -eq 124 ] && echo " (stopped at its limit of ${secs}s)") $(grep -E '^test result' "$w/$name.log" | tail -1)"
  pack
  return $rc
}

: > "$final/summary.txt"
if [ -z "${SKIP_LOADER:-}" ]; then
  for f in .gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
export VK_DRIVER_FILES=${VK_DRIVER_FILES:-/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json}
if [ -f "$bin/bundle.tar.xz" ]; then
  # the executables staged by prepare-device.sh (python's tarfile: xz may not be installed)
  python3 -c "import tarfile, sys; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" "$bin/bundle.tar.xz" "$bin"
fi
chmod +x "$bin"/* "$bin"/tests/* 2>/dev/null
