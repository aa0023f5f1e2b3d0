// Exact top-k selection per row: the best KP (k rounded up to a power of two) entries by
// (score descending, index ascending), so ties go to the lower index.
// Header constants (src/kernels/top_k.rs, TopKKernel): WG (threads), R (new inputs per round:
// 4 per thread), KP (16..=1024, a power of two), CAP (buffer entries, 2 R, > KP), PAIRS (0: the
// input is raw scores whose index is idx0 + position; 1: (score, index) pairs from an earlier
// selection or from the thresholded scoring pass), COUNTED (1: row `row` has CNT[row] inputs,
// the scoring pass's count; 0: P.nk).
// Prelude: slots_subgroup.wgsl or slots_workgroup.wgsl (`claim`, the buffer slots of a
// thread's new entries).
// Bindings: 1 scores (f32), 2 indices (u32, PAIRS only), 3 out scores, 4 out indices, 5 the
// per-row input counts (COUNTED only). Inputs are read as vec4 (the bindings are 16-byte
// windows): a row whose start is 4-aligned is read one vec4 per thread, others element-wise.
// Views (b = h = 0): v0 scores, v1 indices (s = row); v2, v3 outputs addressed by slot of KP
// entries: row `row`, segment `seg` writes slot s = row * out_stride + out_offset + seg.
// P.nk: input length per row (COUNTED: at most); P.start: first input read; P.split_len: inputs
// per segment.
//
// One workgroup per (row, segment) streams its inputs through a CAP-entry workgroup buffer:
// the best KP found so far are kept sorted at the front; each round every thread loads 4 inputs
// and appends those that beat the current KP-th best (its slots claimed once per thread or per
// subgroup); the kept and new entries (only those: the first n of the buffer, n rounded up to a
// power of two) are bitonic-sorted as soon as KP entries exist (so that the threshold filters
// early), when the next round might not fit, and at the end. Sentinels (-inf, NONE) sort last.

@group(0) @binding(1) var<storage, read> SC: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> IX: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read_write> OS: array<f32>;
@group(0) @binding(4) var<storage, read_write> OI: array<u32>;
@group(0) @binding(5) var<storage, read> CNT: array<u32>;

const NONE: u32 = 0xffffffffu;

var<workgroup> bs: array<f32, CAP>;
var<workgroup> bi: array<u32, CAP>;
var<workgroup> fill: atomic<u32>;
var<workgroup> wfill: u32;

// a comes before b: higher score, then lower index
fn before(sa: f32, ia: u32, sb: f32, ib: u32) -> bool {
    return sa > sb || (sa == sb && ia < ib);
}

// Bitonic sort of the first n entries (n a power of two, 2..=CAP), best first.
fn sort_first(t: u32, n: u32) {
    for (var size = 2u; size <= n; size <<= 1u) {
        for (var stride = size >> 1u; stride > 0u; stride >>= 1u) {
            for (var p = t; p < n / 2u; p += WG) {
                let lo = 2u * stride * (p / stride) + p % stride;
                let hi = lo + stride;
                // descending (best first) where the block of `size` is ascending-indexed
                let best_first = (lo & size) == 0u;
                let sl = bs[lo];
                let il = bi[lo];
                let sh = bs[hi];
                let ih = bi[hi];
                if (before(sh, ih, sl, il) == best_first) {
                    bs[lo] = sh;
                    bi[lo] = ih;
                    bs[hi] = sl;
                    bi[hi] = il;
                }
            }
            workgroupBarrier();
        }
    }
}

// Inputs i..i+n-1 (n <= 4) of the score array, as one vec4 when `whole` (n = 4, i 4-aligned);
// the missing ones -inf.
fn load_scores(i: u32, n: u32, whole: bool) -> vec4<f32> {
    if (whole) {
        return SC[i / 4u];
    }
    var v = vec4<f32>(bitcast<f32>(NEG_INF_BITS));
    for (var c = 0u; c < n; c++) {
        v[c] = SC[(i + c) / 4u][(i + c) % 4u];
    }
    return v;
}

fn load_indices(i: u32, n: u32, whole: bool) -> vec4<u32> {
    if (whole) {
        return IX[i / 4u];
    }
    var v = vec4<u32>(NONE);
    for (var c = 0u; c < n; c++) {
        v[c] = IX[(i + c) / 4u][(i + c) % 4u];
    }
    return v;
}

@compute @workgroup_size(WG)
fn top_k(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let nseg = (P.nk - P.start + P.split_len - 1u) / P.split_len;
    let wg = linear_wg(wid, nwg);
    if (wg >= P.nr * nseg) {
        return;
    }
    let row = P.r0 + wg / nseg;
    let seg = wg % nseg;
    let first = P.start + seg * P.split_len;
    var len = P.nk;
    if (COUNTED == 1u) {
        len = min(len, CNT[row]);
    }
    let last = min(first + P.split_len, len);
    let sb = vidx(P.v0, 0u, 0u, row);
    let ib = vidx(P.v1, 0u, 0u, row);
    let neg_inf = bitcast<f32>(NEG_INF_BITS);
    // every round starts 4-aligned relative to `first`
    let aligned = (sb + first) % 4u == 0u && (PAIRS == 0u || (ib + first) % 4u == 0u);

    for (var i = t; i < CAP; i += WG) {
        bs[i] = neg_inf;
        bi[i] = NONE;
    }
    if (t == 0u) {
        atomicStore(&fill, 0u);
    }
    // threshold: the current KP-th best (sentinel until KP entries are kept)
    var ts = neg_inf;
    var ti = NONE;
    var have = false;
    workgroupBarrier();
    for (var r0 = first; r0 < last; r0 += R) {
        let j = r0 + 4u * t;
        var n = 0u;
        if (j < last) {
            n = min(last - j, 4u);
        }
        var s = vec4<f32>(neg_inf);
        var ix = vec4<u32>(NONE);
        if (n > 0u) {
            s = load_scores(sb + j, n, aligned && n == 4u);
            if (PAIRS == 1u) {
                ix = load_indices(ib + j, n, aligned && n == 4u);
            } else {
                ix = P.idx0 + j + vec4<u32>(0u, 1u, 2u, 3u);
            }
        }
        var keep = vec4<bool>(false);
        for (var c = 0u; c < 4u; c++) {
            keep[c] = c < n && ix[c] != NONE && before(s[c], ix[c], ts, ti);
        }
        var slot = claim(u32(keep.x) + u32(keep.y) + u32(keep.z) + u32(keep.w));
        for (var c = 0u; c < 4u; c++) {
            if (keep[c]) {
                bs[slot] = s[c];
                bi[slot] = ix[c];
                slot++;
            }
        }
        workgroupBarrier();
        if (t == 0u) {
            wfill = atomicLoad(&fill);
        }
        let filled = workgroupUniformLoad(&wfill);
        if (filled + R > CAP || r0 + R >= last || (!have && filled >= KP)) {
            // the kept entries and the new ones: the first `filled` (the rest are sentinels)
            let m = max(filled, 2u);
            let n2 = 1u << (32u - countLeadingZeros(m - 1u));
            sort_first(t, n2);
            for (var i = KP + t; i < n2; i += WG) {
                bs[i] = neg_inf;
                bi[i] = NONE;
            }
            if (t == 0u) {
                atomicStore(&fill, min(filled, KP));
            }
            if (filled >= KP) {
                ts = bs[KP - 1u];
                ti = bi[KP - 1u];
                have = true;
            }
            workgroupBarrier();
        }
    }
    let ob = vidx(P.v2, 0u, 0u, row * P.out_stride + P.out_offset + seg);
    let oib = vidx(P.v3, 0u, 0u, row * P.out_stride + P.out_offset + seg);
    for (var i = t; i < KP; i += WG) {
        OS[ob + i] = bs[i];
        OI[oib + i] = bi[i];
    }
}
