#!/usr/bin/env python3
"""Renders an attn-bench JSON report as a Markdown table (our kernels' rows).

    python3 scripts/bench_table.py ours.json [--impl wgpu]
"""
import json
import sys

from join_bench import kv_note  # the same case description as the joined table


def dims(x):
    """BH×Nq×Nk×D, or BH×Nq×Nk for softmax (rows have no head dim)."""
    if x["op"] == "softmax":
        return f"{x['bh']}×{x['nq']}×{x['nk']}"
    return f"{x['bh']}×{x['nq']}×{x['nk']}×{x['d']}"


def main():
    argv = sys.argv[1:]
    impl = "wgpu"
    if "--impl" in argv:
        i = argv.index("--impl")
        impl = argv[i + 1] if i + 1 < len(argv) else sys.exit(__doc__)
        argv = argv[:i] + argv[i + 2:]
    args = [a for a in argv if not a.startswith("--")]
    if not args:
        sys.exit(__doc__)
    r = json.load(open(args[0]))
    print("| op | dtype | BH×Nq×Nk×D | causal | k | kv / window | variant | kernel ms (med ±sd [min–max]) | wall ms | e2e ms | GFLOP/s | GB/s | rel err vs CPU | GPU speed-up over CPU path |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for x in r["results"]:
        if x["impl"] != impl or (args[1:] and x["op"] not in args[1:]):
            continue
        if x.get("error"):
            print(f"| {x['op']} | {x['dtype']} | {dims(x)} | | | {kv_note(x)} | | not run: {x['error']} | | | | | | |")
            continue
        sd = lambda s: f" ±{s['sd']:.2f}" if "sd" in s else ""
        ms = lambda s: f"{s['median']:.2f}{sd(s)} [{s['min']:.2f}–{s['max']:.2f}]" if s else "-"
        med = lambda s: f"{s['median']:.2f}" if s else "-"
        g = f"{x['tflops'] * 1e3:.2f}" if x.get("tflops") else "-"
        gb = f"{x['gbps']:.2f}" if x.get("gbps") else "-"
        err = f"{x['rel_err']:.1e}" if x.get("rel_err") is not None else "-"
        ratio = f"{x['gpu_speedup']:.2f}" if x.get("gpu_speedup") else "-"
        k = str(x.get("k") or "-")
        print(f"| {x['op']} | {x['dtype']} | {dims(x)} | {'yes' if x['causal'] else 'no'} | {k} | {kv_note(x)} | {x.get('variant') or '-'} | "
              f"{ms(x['kernel_ms'])} | {med(x['wall_ms'])} | {med(x['e2e_ms'])} | {g} | {gb} | {err} | {ratio} |")
    a = r.get("adapter") or {}
    where = f"{a['name']} (driver {a['driver']})" if a else "CPU path only"
    print(f"\n{r['date']}, commit {r.get('commit', '?')} ({r.get('profile', '?')} build), {where}: `{r['command']}`")


if __name__ == "__main__":
    main()
