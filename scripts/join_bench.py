#!/usr/bin/env python3
"""Joins an attn-bench JSON and a torch_reference.py JSON into one table.

    python3 scripts/join_bench.py ours.json torch.json [--markdown] [--json=joined.json]

One row per case and GPU kernel (its variant and configuration: runs with several `--variant`s
or `--config`s have several rows per case): our wgpu kernel and our CPU path (time, TFLOP/s or GB/s), each PyTorch
implementation's time, and the ratio columns ours/PyTorch = PyTorch time / our time against the
fastest PyTorch implementation (> 1: we are faster). Times are kernel medians where the tool
had them (timestamp queries, CUDA events), wall medians otherwise.

--json=PATH also writes the joined results (card, driver, commit, date; per case: the variant
that ran, our kernel ms, the best PyTorch ms and backend, the ratio), the form committed under
benchmarks/device/.
"""
import json
import sys


def t_ms(r):
    if r is None or r.get("error"):
        return None
    s = r.get("kernel_ms") or r.get("wall_ms")
    return s["median"] if s else None


def scaled(x, unit):
    """x units/s with an SI prefix: 1.23 TFLOP/s, 450 MFLOP/s (never 0.00123 TF)."""
    for div, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= div:
            return f"{x / div:.3g} {prefix}{unit}"
    return f"{x:.3g} {unit}"


def rate(r):
    if r is None or r.get("error"):
        return "-"
    if r.get("tflops"):
        return scaled(r["tflops"] * 1e12, "FLOP/s")
    if r.get("gbps"):
        return scaled(r["gbps"] * 1e9, "B/s")
    return "-"


def kv_note(r):
    """How a case holds its keys and its window, as attn-bench's table shows it."""
    parts = []
    lens = r.get("lens") or []
    if lens:
        store = f"paged {r['page_size']}" if r.get("page_size") else "contiguous"
        parts.append(f"{r.get('batch', 1)} seqs {min(lens)}-{max(lens)}, {store}")
    elif r.get("page_size"):
        parts.append(f"paged {r['page_size']}")
    if r.get("window") is not None:
        parts.append(f"window {r['window']}")
    return ", ".join(parts) or "-"


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    markdown = "--markdown" in sys.argv
    if len(args) != 2:
        sys.exit(__doc__)
    ours = json.load(open(args[0]))
    torch = json.load(open(args[1]))
    key = lambda r: (r["op"], r["dtype"], r["bh"], r["nq"], r["nk"], r["d"], r["causal"], r.get("k", 0),
                     kv_note(r))
    # a row per case and GPU kernel (variant and configuration: `--variant` and `--config` runs
    # have several per case); the CPU path's record joins every row of its case
    kernel = lambda r: " ".join(x for x in (r.get("variant"), r.get("config")) if x)
    cases, ours_by, cpu_by = [], {}, {}
    for r in ours["results"]:
        if r["impl"] == "wgpu":
            k = key(r) + (kernel(r),)
            if k not in ours_by:
                cases.append(k)
            ours_by.setdefault(k, {})["wgpu"] = r
        else:
            cpu_by.setdefault(key(r), {})[r["impl"]] = r
    for base in cpu_by:
        if not any(k[:-1] == base for k in cases):
            cases.append(base + ("",))
    for k in cases:
        ours_by.setdefault(k, {}).update(cpu_by.get(k[:-1], {}))
    torch_by = {}
    torch_impls = []
    for r in torch["results"]:
        torch_by.setdefault(key(r), {})[r["impl"]] = r
        if r["impl"] not in torch_impls:
            torch_impls.append(r["impl"])

    header = ["op", "dtype", "BH", "Nq", "Nk", "D", "causal", "k", "kv / window", "wgpu kernel", "wgpu ms", "wgpu rate",
              "cpu ms"]
    header += [f"{t} ms" for t in torch_impls]
    header += ["best reference", "wgpu/ref", "cpu/ref"]
    rows = []
    for k in cases:
        o, t = ours_by.get(k, {}), torch_by.get(k[:-1], {})
        g, c = o.get("wgpu"), o.get("cpu")
        tt = {name: t_ms(t.get(name)) for name in torch_impls}
        best = min(((v, n) for n, v in tt.items() if v), default=None)
        fmt = lambda v: f"{v:.3f}" if v is not None else "-"
        ratio = lambda ours_t: f"{best[0] / ours_t:.3f}" if best and ours_t else "-"
        op, dt, bh, nq, nk, d, causal, kk, kv, kern = k
        rows.append([op, dt, str(bh), str(nq), str(nk), str(d), "yes" if causal else "no", str(kk) if kk else "-", kv,
                     kern or "-", fmt(t_ms(g)), rate(g), fmt(t_ms(c))]
                    + [fmt(tt[n]) for n in torch_impls]
                    + [best[1] if best else "-", ratio(t_ms(g)), ratio(t_ms(c))])
    json_out = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--json=")), None)
    if json_out:
        joined = []
        for k in cases:
            o, t = ours_by.get(k, {}), torch_by.get(k[:-1], {})
            g = o.get("wgpu")
            tt = {name: t_ms(t.get(name)) for name in torch_impls}
            best = min(((v, n) for n, v in tt.items() if v), default=None)
            op, dt, bh, nq, nk, d, causal, kk, kv, _ = k
            ours_t = t_ms(g)
            joined.append({
                "op": op, "dtype": dt, "bh": bh, "nq": nq, "nk": nk, "d": d, "causal": causal, "k": kk, "kv": kv,
                "variant": g.get("variant") if g else None, "config": g.get("config") if g else None,
                "ours_ms": ours_t, "ours_tflops": g.get("tflops") if g else None, "ours_gbps": g.get("gbps") if g else None,
                "ours_error": g.get("error") if g else "not run",
                "best_torch_ms": best[0] if best else None, "best_torch": best[1] if best else None,
                "torch_ms": tt,
                "ratio": best[0] / ours_t if best and ours_t else None,
            })
        adapter = ours.get("adapter") or {}
        doc = {"card": adapter.get("name"), "driver": adapter.get("driver"), "commit": ours.get("commit"),
               "date": ours.get("date"), "command": ours.get("command"), "torch_version": torch.get("torch_version"),
               "ratio": "best PyTorch time / our time (> 1: ours is faster)", "cases": joined}
        with open(json_out, "w") as f:
            json.dump(doc, f, indent=1)
    faiss_v = f", faiss {torch['faiss_version']}" if torch.get("faiss_version") else ""
    print(f"ours: {ours['adapter']['name'] if ours.get('adapter') else 'CPU path'}; "
          f"torch {torch.get('torch_version')}{faiss_v}: {torch['adapter']['name']}; ratios are reference time / our time "
          f"against the fastest reference")
    if markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join("---" for _ in header) + "|")
        for r in rows:
            print("| " + " | ".join(r) + " |")
        return
    w = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    print(" | ".join(h.ljust(w[i]) for i, h in enumerate(header)))
    print("-|-".join("-" * x for x in w))
    for r in rows:
        print(" | ".join(c.ljust(w[i]) for i, c in enumerate(r)))


if __name__ == "__main__":
    main()
