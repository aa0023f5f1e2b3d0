#!/usr/bin/env python3
"""PyTorch's scaled_dot_product_attention backward beside its forward, per backend, JSON out.

    python3 benches/torch_backward.py --json out.json [--device cuda|cpu] [--threads N]
        [--case BHxNxD[:dtype][:causal]]... [--runs 10] [--warmup 2]

Each case runs the forward (timed alone) and then the backward of the same forward
(`torch.autograd.grad(o, (q, k, v), do)` on a graph kept for the timed runs), with every SDPA
backend that accepts it (CUDA: flash, cudnn, efficient, math; CPU: flash, math). The figure that
issue 23 asks for is backward / forward time per backend (FlashAttention-2 reports about 2.5x at
its best). Times: CUDA events around each run on a GPU, wall time on the CPU; medians of --runs.
FLOPs follow the FlashAttention convention: forward 4*BH*N*N*D, backward 2.5x that (the five
matrix products of the backward against the forward's two), each halved when causal.

Default cases: the issue's targets, 16x4096x128 f16 (GPU) and 4x512x64 f32 with 2 threads (CPU).
"""
import argparse
import datetime
import json
import platform
import statistics
import time

import torch
import torch.nn.functional as F

try:
    from torch.nn.attention import SDPBackend, sdpa_kernel
except ImportError:  # very old torch
    SDPBackend = None


def parse_case(s):
    parts = s.split(":")
    bh, n, d = (int(x) for x in parts[0].lower().split("x"))
    dtype = parts[1] if len(parts) > 1 and parts[1] else "f32"
    causal = len(parts) > 2 and parts[2] in ("causal", "1", "true")
    return {"bh": bh, "n": n, "d": d, "dtype": dtype, "causal": causal}


def backends(device):
    if SDPBackend is None:
        return [("default", None)]
    names = ["flash", "cudnn", "efficient", "math"] if device == "cuda" else ["flash", "math"]
    table = {
        "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "math": SDPBackend.MATH,
    }
    if hasattr(SDPBackend, "CUDNN_ATTENTION"):
        table["cudnn"] = SDPBackend.CUDNN_ATTENTION
    return [(n, table[n]) for n in names if n in table]


def timed(fn, device, warmup, runs):
    for _ in range(warmup):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    ms = []
    for _ in range(runs):
        if device == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            torch.cuda.synchronize()
            ms.append(a.elapsed_time(b))
        else:
            t = time.perf_counter()
            fn()
            ms.append((time.perf_counter() - t) * 1e3)
    return {"median": statistics.median(ms), "min": min(ms), "max": max(ms)}


def run_case(c, device, warmup, runs):
    dt = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[c["dtype"]]
    g = torch.Generator(device="cpu").manual_seed(0)
    shape = (1, c["bh"], c["n"], c["d"])
    mk = lambda: torch.randn(shape, generator=g).to(device=device, dtype=dt).requires_grad_(True)
    q, k, v = mk(), mk(), mk()
    do = torch.randn(shape, generator=g).to(device=device, dtype=dt)
    fwd_flops = 4.0 * c["bh"] * c["n"] * c["n"] * c["d"] * (0.5 if c["causal"] else 1.0)
    out = []
    for name, be in backends(device):
        rec = dict(c, impl=f"torch-{name}", device=device)
        try:
            ctx = sdpa_kernel(be) if be is not None else torch.enable_grad()
            with ctx:
                fwd = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=c["causal"])
                o = fwd()
                bwd = lambda: torch.autograd.grad(o, (q, k, v), do, retain_graph=True)
                rec["forward_ms"] = timed(lambda: fwd(), device, warmup, runs)
                rec["backward_ms"] = timed(bwd, device, warmup, runs)
        except Exception as e:  # a backend that refuses the case says why
            rec["error"] = str(e).splitlines()[0][:200]
            out.append(rec)
            continue
        f, b = rec["forward_ms"]["median"], rec["backward_ms"]["median"]
        rec["backward_over_forward"] = b / f
        rec["forward_tflops"] = fwd_flops / f / 1e9
        rec["backward_tflops"] = 2.5 * fwd_flops / b / 1e9
        out.append(rec)
        del o
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", required=True)
    ap.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--case", action="append", default=[])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    a = ap.parse_args()
    device = a.device if a.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if a.threads:
        torch.set_num_threads(a.threads)
    cases = a.case or (
        ["16x4096x128:f16", "16x4096x128:f16:causal", "32x4096x64:f16", "16x4096x128:f32"]
        if device == "cuda"
        else ["4x512x64:f32", "4x512x64:f32:causal"]
    )
    results = []
    for s in cases:
        for r in run_case(parse_case(s), device, a.warmup, a.runs):
            results.append(r)
            err = r.get("error")
            print(
                f"{s:>24} {r['impl']:>16}: "
                + (f"error: {err}" if err else
                   f"fwd {r['forward_ms']['median']:.3f} ms, bwd {r['backward_ms']['median']:.3f} ms, "
                   f"bwd/fwd {r['backward_over_forward']:.2f}x, bwd {r['backward_tflops']:.1f} TFLOP/s"),
                flush=True,
            )
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "runs": a.runs,
        "warmup": a.warmup,
    }
    with open(a.json, "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
