#!/usr/bin/env python3
"""PyTorch on the same shapes and dtypes as an attn-bench run, JSON out in attn-bench's schema.

    python3 benches/torch_reference.py --cases ours.json --json torch.json [--device cuda|cpu]
        [--threads N] [--runs 10] [--warmup 2]

--runs and --warmup default to the values attn-bench used (from its command line), else 10 and 2.

--cases takes an `attn-bench --json` file: every distinct case in its results is run here.
Per case and operation:
  attention          scaled_dot_product_attention with each backend that applies
                     (flash, efficient, cudnn, math; on CPU: flash and math), impl "torch-<backend>"
  attention_backward the backward of scaled_dot_product_attention per backend (its forward run
                     once, untimed; timed: torch.autograd.grad of the output for q, k, v with a
                     fixed output gradient), impl "torch-<backend>"
  attention_unfused  matmul, softmax, matmul ("torch-matmul")
  similarity         matmul times 1/sqrt(d) ("torch-matmul"); cosine: normalize + matmul
  softmax            torch.softmax over the last dim
  topk               matmul + torch.topk ("torch-matmul-topk"), and, where faiss is installed,
                     faiss's exact IndexFlatIP ("faiss-flat-ip", CPU, timed with its index built)
KV-cache and window cases (attn-bench's `batch`, `lens`, `page_size`, `window` fields) run the
same way with an explicit boolean mask: each sequence's keys below its length, its queries at its
last Nq positions (causal and the window by those positions). A paged case keeps K and V in
pools of pages dealt out of order, as attn-bench does; PyTorch has no paged attention, so each
run first gathers the sequences' keys through the block table (timed with the attention, as a
runtime without a paged kernel would pay it). On CUDA, FlexAttention (`torch-flex`, compiled,
with a block mask built once) runs the mask cases too, where it is available.
Times: CUDA events around each run (kernel_ms) and host wall time with synchronisation
(wall_ms); on CPU, wall time only. FLOPs: attn-bench's (4*BH*Nq*Nk*D for attention, halved when
causal; 4*H*D per attended pair with mixed lengths or a window), 2*BH*Nq*Nk*D for similarity.
rel_err: first batch*head slice (head 0 of every sequence for KV-cache cases) against float64
math. Causal with Nq != Nk uses the bottom-right aligned mask, as attn-bench does.
"""
import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F

try:
    import faiss
except ImportError:
    faiss = None

try:
    from torch.nn.attention import SDPBackend, sdpa_kernel
except ImportError:  # very old torch
    SDPBackend = None


def stats(ms):
    if not ms:
        return None
    return {"median": statistics.median(ms), "min": min(ms), "max": max(ms)}


def flops(c):
    if c.get("flops"):
        return c["flops"]
    base = c["bh"] * c["nq"] * c["nk"] * c["d"]
    if c["op"] in ("attention", "attention_unfused"):
        return 4.0 * base * (0.5 if c["causal"] else 1.0)
    if c["op"] in ("similarity", "cosine", "topk"):
        return 2.0 * base
    return 0.0


def nbytes(c):
    e = 4.0 if c["dtype"] == "f32" else 2.0
    bh, nq, nk, d = c["bh"], c["nq"], c["nk"], c["d"]
    if c["op"] == "attention":
        kv_tokens = sum(c["lens"]) if c.get("lens") else c.get("batch", 1) * nk
        return e * (2 * bh * nq * d + 2 * heads(c) * kv_tokens * d)
    if c["op"] == "attention_unfused":
        return e * (2 * bh * nq * d + 2 * bh * nk * d) + 4.0 * bh * nq * nk
    if c["op"] == "attention_backward":
        return e * (3 * bh * nq * d + 2 * bh * nk * d) + 4.0 * (bh * nq * d + 2 * bh * nk * d)
    if c["op"] in ("similarity", "cosine"):
        return e * (bh * nq * d + bh * nk * d) + 4.0 * bh * nq * nk
    if c["op"] == "topk":
        return e * (nq * d + nk * d) + 8.0 * nq * c.get("k", 0)
    return 2.0 * e * bh * nq * nk


def causal_mask(nq, nk, device):
    # bottom-right alignment: query i sees keys j <= i + nk - nq
    i = torch.arange(nq, device=device).unsqueeze(1)
    j = torch.arange(nk, device=device).unsqueeze(0)
    return j <= i + (nk - nq)


def heads(c):
    return c["bh"] // max(c.get("batch", 1), 1)


def seq_lens(c):
    return c["lens"] if c.get("lens") else [c["nk"]] * max(c.get("batch", 1), 1)


def needs_mask(c):
    """Mixed lengths or a window: an explicit mask (plain causal has is_causal)."""
    return bool(c.get("lens")) or c.get("window") is not None


def kv_mask(c, device, rows=None):
    """[batch, 1, nq, nk] boolean: key j of sequence b is kept for query i when j < len_b,
    j <= the query's position if causal, and j >= the position - window. Positions are
    end - nq + i, with end the sequence's length over a paged cache and nk over contiguous
    tensors (attn-bench's key lengths do not move the queries). `rows` restricts to a range of
    query rows."""
    nq, nk = c["nq"], c["nk"]
    r0, r1 = rows if rows else (0, nq)
    lens = torch.tensor(seq_lens(c), device=device).view(-1, 1, 1, 1)
    i = torch.arange(r0, r1, device=device).view(1, 1, -1, 1)
    j = torch.arange(nk, device=device).view(1, 1, 1, -1)
    pos = (lens if c.get("page_size") else nk) - nq + i
    keep = j < lens
    if c["causal"]:
        keep = keep & (j <= pos)
    if c.get("window") is not None:
        keep = keep & (j >= pos - c["window"])
    return keep


def paged_layout(c, g):
    """A pool of pages dealt to the sequences in a shuffled order, and each sequence's gather
    index `[batch, nk]` into the pool's tokens (positions past a length read token 0, masked)."""
    ps, lens, nk = c["page_size"], seq_lens(c), c["nk"]
    num_pages = max(sum((l + ps - 1) // ps for l in lens), 1)
    order = torch.randperm(num_pages, generator=g)
    idx = torch.zeros((len(lens), nk), dtype=torch.long)
    at = 0
    for b, l in enumerate(lens):
        blocks = (l + ps - 1) // ps
        pages = order[at:at + blocks]
        at += blocks
        tok = (pages.view(-1, 1) * ps + torch.arange(ps).view(1, -1)).reshape(-1)[:l]
        idx[b, :l] = tok
    return num_pages, idx


def gather(pool, idx):
    """Pool `[tokens, heads, d]` through `[batch, nk]` -> `[batch, heads, nk, d]`."""
    return pool[idx].transpose(1, 2)


def make_inputs(c, device, dtype, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    bh, nq, nk, d = c["bh"], c["nq"], c["nk"], c["d"]
    if c["op"] == "softmax":
        x = torch.rand((1, bh, nq, nk), generator=g) * 2 - 1
        return (x.to(device=device, dtype=dtype),)
    if c["op"] == "topk":
        q = torch.rand((nq, d), generator=g) * 2 - 1
        k = torch.rand((nk, d), generator=g) * 2 - 1
        return (q.to(device=device, dtype=dtype), k.to(device=device, dtype=dtype))
    b = max(c.get("batch", 1), 1)
    h = bh // b
    q = torch.rand((b, h, nq, d), generator=g) * 2 - 1
    if c.get("page_size"):
        num_pages, idx = paged_layout(c, g)
        k = torch.rand((num_pages * c["page_size"], h, d), generator=g) * 2 - 1
        v = torch.rand((num_pages * c["page_size"], h, d), generator=g) * 2 - 1
        return tuple(t.to(device=device, dtype=dtype) for t in (q, k, v)) + (idx.to(device),)
    k = torch.rand((b, h, nk, d), generator=g) * 2 - 1
    v = torch.rand((b, h, nk, d), generator=g) * 2 - 1
    if c["op"] == "attention_backward":
        do = torch.rand((b, h, nq, d), generator=g) * 2 - 1
        q, k, v = (t.to(device=device, dtype=dtype).requires_grad_(True) for t in (q, k, v))
        return q, k, v, do.to(device=device, dtype=dtype)
    return tuple(t.to(device=device, dtype=dtype) for t in (q, k, v))


def contiguous_kv(inp):
    """(q, k, v) with a paged case's K and V gathered through its block table."""
    if len(inp) == 4:
        q, kp, vp, idx = inp
        return q, gather(kp, idx), gather(vp, idx)
    return inp


def implementations(c, device):
    """(impl name, fn(inputs) -> output) for this case."""
    op, causal, nq, nk, d = c["op"], c["causal"], c["nq"], c["nk"], c["d"]
    scale = 1.0 / math.sqrt(d) if d else 1.0
    out = []
    if op == "attention":
        mask = None
        is_causal = False
        if needs_mask(c):
            mask = kv_mask(c, device)
        elif causal:
            if nq == nk:
                is_causal = True
            else:
                mask = causal_mask(nq, nk, device)
        backends = []
        if SDPBackend is not None:
            names = ["FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH"] if device == "cuda" else ["FLASH_ATTENTION", "MATH"]
            backends = [(n.split("_")[0].lower(), getattr(SDPBackend, n)) for n in names if hasattr(SDPBackend, n)]

        for name, be in backends:
            def run(inp, be=be):
                q, k, v = contiguous_kv(inp)
                with sdpa_kernel(be):
                    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)
            out.append(("torch-" + name, run))
        if device == "cuda" and needs_mask(c):
            flex = flex_impl(c, device)
            if flex is not None:
                out.append(("torch-flex", flex))
    elif op == "attention_backward":
        names = ["FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH"] if device == "cuda" else ["FLASH_ATTENTION", "MATH"]
        for n in names:
            if SDPBackend is None or not hasattr(SDPBackend, n):
                continue
            be, state = getattr(SDPBackend, n), {}

            def run(inp, be=be, state=state):
                q, k, v, do = inp
                with sdpa_kernel(be):
                    if "o" not in state:  # the forward, once (the first warm-up run)
                        state["o"] = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
                    return torch.autograd.grad(state["o"], (q, k, v), do, retain_graph=True)[0]
            out.append(("torch-" + n.split("_")[0].lower(), run))
    elif op == "attention_unfused":
        def run(inp):
            q, k, v = inp
            s = (q @ k.transpose(-1, -2)) * scale
            if causal:
                s = s.masked_fill(~causal_mask(nq, nk, q.device), float("-inf"))
            return torch.softmax(s.float(), dim=-1).to(v.dtype) @ v
        out.append(("torch-matmul", run))
    elif op == "similarity":
        out.append(("torch-matmul", lambda inp: (inp[0] @ inp[1].transpose(-1, -2)) * scale))
    elif op == "cosine":
        out.append(("torch-matmul", lambda inp: F.normalize(inp[0], dim=-1) @ F.normalize(inp[1], dim=-1).transpose(-1, -2)))
    elif op == "softmax":
        out.append(("torch-softmax", lambda inp: torch.softmax(inp[0], dim=-1)))
    elif op == "topk":
        kk = c["k"]
        out.append(("torch-matmul-topk", lambda inp: torch.topk(inp[0] @ inp[1].T, kk, dim=-1).values))
        if faiss is not None and c["dtype"] == "f32":
            state = {}

            def run(inp):
                # the index is built once (keys added), then searched: as a resident index is used
                if "index" not in state:
                    index = faiss.IndexFlatIP(d)
                    index.add(inp[1].cpu().numpy())
                    state["index"] = index
                    state["q"] = inp[0].cpu().numpy()
                dist, _ = state["index"].search(state["q"], kk)
                return torch.from_numpy(dist)
            out.append(("faiss-flat-ip", run))
    return out


def flex_impl(c, device):
    """FlexAttention with the case's mask as a block mask (built once, outside the timing), or
    None where this torch has none."""
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    except ImportError:
        return None
    lens = torch.tensor(seq_lens(c), device=device)
    nq, nk, causal, window = c["nq"], c["nk"], c["causal"], c.get("window")

    paged = bool(c.get("page_size"))

    def mask_mod(b, h, i, j):
        pos = (lens[b] if paged else nk) - nq + i
        keep = j < lens[b]
        if causal:
            keep = keep & (j <= pos)
        if window is not None:
            keep = keep & (j >= pos - window)
        return keep

    state = {}
    compiled = torch.compile(flex_attention)

    def run(inp):
        q, k, v = contiguous_kv(inp)
        if "mask" not in state:
            state["mask"] = create_block_mask(mask_mod, q.shape[0], None, nq, nk, device=device)
        return compiled(q, k, v, block_mask=state["mask"])
    return run


def reference64(c, inp, fn_name):
    """First slice in float64 with the math definition (for KV-cache cases, head 0 of every
    sequence, its keys gathered; query rows in blocks, so long sequences fit)."""
    if c["op"] == "attention" and needs_mask(c):
        q, k, v = (t[:, :1].double() for t in contiguous_kv(inp))
        outs = []
        for r0 in range(0, c["nq"], 2048):
            r1 = min(r0 + 2048, c["nq"])
            s = (q[:, :, r0:r1] @ k.transpose(-1, -2)) / math.sqrt(c["d"])
            keep = kv_mask(c, s.device, (r0, r1))
            w = torch.softmax(s.masked_fill(~keep, float("-inf")), dim=-1).nan_to_num(0.0)
            outs.append(w @ v)
        return torch.cat(outs, dim=2)
    op, d = c["op"], c["d"]
    if op == "attention_backward":
        # dq of the first head, by autograd through the math definition in float64
        q, k, v, do = (t[:, :1].detach().double().requires_grad_(True) for t in inp)
        s = (q @ k.transpose(-1, -2)) / math.sqrt(d)
        if c["causal"]:
            s = s.masked_fill(~causal_mask(c["nq"], c["nk"], s.device), float("-inf"))
        o = torch.softmax(s, dim=-1) @ v
        return torch.autograd.grad(o, q, do)[0]
    sl = tuple(t[:, :1].double() for t in inp)
    if op == "softmax":
        return torch.softmax(sl[0], dim=-1)
    if op == "topk":
        q, k = inp[0][:1].double().cpu(), inp[1].double().cpu()
        return torch.topk(q @ k.T, c["k"], dim=-1).values
    q, k = sl[0], sl[1]
    if op == "cosine":
        return F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-1, -2)
    s = (q @ k.transpose(-1, -2)) / math.sqrt(d)
    if op == "similarity":
        return s
    if c["causal"]:
        s = s.masked_fill(~causal_mask(c["nq"], c["nk"], s.device), float("-inf"))
    return torch.softmax(s, dim=-1) @ sl[2]


def time_case(fn, inp, device, warmup, runs):
    for _ in range(warmup):
        fn(inp)
    if device == "cuda":
        torch.cuda.synchronize()
    kernel, wall = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        if device == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            out = fn(inp)
            b.record()
            torch.cuda.synchronize()
            kernel.append(a.elapsed_time(b))
        else:
            out = fn(inp)
        wall.append((time.perf_counter() - t0) * 1e3)
    return out, kernel, wall


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", required=True, help="an attn-bench --json file")
    ap.add_argument("--json", required=True, help="output file")
    ap.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    ap.add_argument("--runs", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--cpu-max-gflop", type=float, default=200.0, help="skip CPU cases above this")
    a = ap.parse_args()

    device = a.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if a.threads > 0:
        torch.set_num_threads(a.threads)
        if faiss is not None:
            faiss.omp_set_num_threads(a.threads)
    dev_name = torch.cuda.get_device_name() if device == "cuda" else f"CPU ({torch.get_num_threads()} threads)"

    with open(a.cases) as f:
        ours = json.load(f)
    theirs = ours.get("command", "").split()
    for name, default in (("runs", 10), ("warmup", 2)):
        if getattr(a, name) is None:
            flag = "--" + name
            setattr(a, name, int(theirs[theirs.index(flag) + 1]) if flag in theirs[:-1] else default)
    seen, cases = set(), []
    for r in ours["results"]:
        key = (r["suite"], r["op"], r["dtype"], r["bh"], r["nq"], r["nk"], r["d"], r["causal"], r.get("k", 0),
               r.get("batch", 1), tuple(r.get("lens") or ()), r.get("page_size", 0), r.get("window"))
        if key not in seen:
            seen.add(key)
            cases.append(dict({k: r[k] for k in ("suite", "op", "dtype", "bh", "nq", "nk", "d", "causal")},
                              k=r.get("k", 0), batch=r.get("batch", 1), lens=r.get("lens") or [],
                              page_size=r.get("page_size", 0), window=r.get("window"), flops=r.get("flops")))

    results = []
    for i, c in enumerate(cases):
        dtype = torch.float32 if c["dtype"] == "f32" else torch.float16
        kv = (f" {c['batch']} seqs {min(c['lens'])}-{max(c['lens'])}" if c["lens"] else "") + \
            (f" paged {c['page_size']}" if c["page_size"] else "") + \
            (f" window {c['window']}" if c["window"] is not None else "")
        print(f"[{i + 1}/{len(cases)}] {c['op']} {c['dtype']} {c['bh']}x{c['nq']}x{c['nk']}x{c['d']} k={c['k']}"
              f"{' causal' if c['causal'] else ''}{kv}", file=sys.stderr)
        work = max(flops(c), nbytes(c)) / 1e9
        try:
            inp = make_inputs(c, device, dtype)
        except Exception as e:  # out of memory, unsupported dtype
            inp, err = None, f"{type(e).__name__}: {e}".splitlines()[0]
        for name, fn in implementations(c, device):
            rec = dict(c, impl=name, backend="gpu" if device == "cuda" else "cpu", device=dev_name, runs=0,
                       kernel_ms=None, wall_ms=None, e2e_ms=None, tflops=None, gbps=None, rel_err=None,
                       gpu_speedup=None, error=None)
            if inp is None:
                rec["error"] = err
            elif device == "cpu" and work > a.cpu_max_gflop:
                rec["error"] = f"skipped: {work:.0f} GFLOP is over --cpu-max-gflop {a.cpu_max_gflop}"
            else:
                try:
                    out, kernel, wall = time_case(fn, inp, device, a.warmup, a.runs)
                    rec["runs"] = a.runs
                    rec["kernel_ms"], rec["wall_ms"] = stats(kernel), stats(wall)
                    t = (rec["kernel_ms"] or rec["wall_ms"])["median"] / 1e3
                    if t > 0:
                        rec["tflops"] = flops(c) / t / 1e12 if flops(c) else None
                        rec["gbps"] = nbytes(c) / t / 1e9
                    want = reference64(c, inp, name).cpu()
                    got = (out[:1] if c["op"] == "topk" else out[:, :1]).double().cpu()
                    num = torch.linalg.vector_norm(got - want).item()
                    den = torch.linalg.vector_norm(want).item()
                    rec["rel_err"] = num / den if den else num
                    del out
                except Exception as e:  # backend not applicable to this shape/dtype/device
                    rec["error"] = f"{type(e).__name__}: {e}".splitlines()[0][:200]
            results.append(rec)
            if device == "cuda":
                torch.cuda.empty_cache()
        del inp

    report = {
        "tool": "torch_reference",
        "torch_version": torch.__version__,
        "faiss_version": getattr(faiss, "__version__", None) if faiss is not None else None,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": " ".join(sys.argv),
        "host": {"os": platform.system().lower(), "arch": platform.machine(), "cpu_threads": torch.get_num_threads(),
                 "cpu_model": platform.processor() or None},
        "adapter": {"name": dev_name, "backend": "CUDA" if device == "cuda" else "CPU",
                    "device_type": "DiscreteGpu" if device == "cuda" else "Cpu",
                    "driver": torch.version.cuda if device == "cuda" else "", "features": []},
        "flop_convention": ours.get("flop_convention", ""),
        "results": results,
    }
    with open(a.json, "w") as f:
        json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
