// Exact top-k selection per row: the best KP (k rounded up to a power of two) entries by
// (score descending, index ascending), so ties go to the lower index.
// Header constants (src/kernels/top_k.rs, TopKKernel): WG (threads), R (new inputs per round:
// CAP / 2, two or four per thread),
// KP (16..=1024, a power of two), CAP (buffer entries, 1024 or 2048, > KP), PAIRS (0: input is
// raw scores whose index is idx0 + position; 1: input is (score, index) pairs from an earlier
// selection).
// Bindings: 1 scores (f32), 2 indices (u32, PAIRS only), 3 out scores, 4 out indices.
// Views (b = h = 0): v0 scores, v1 indices (s = row); v2, v3 outputs addressed by slot of KP
// entries: row `row`, segment `seg` writes slot s = row * out_stride + out_offset + seg.
// P.nk: input length per row; P.start: first input read; P.split_len: inputs per segment.
//
// One workgroup per (row, segment) streams its inputs through a CAP-entry workgroup buffer:
// the best KP found so far are kept sorted at the front; each round appends the new inputs that
// beat the current KP-th best (atomically), and the buffer is bitonic-sorted when the next
// round might not fit (KP + R <= CAP). Sentinels (-inf, 0xffffffff) sort last.

@group(0) @binding(1) var<storage, read> SC: array<f32>;
@group(0) @binding(2) var<storage, read> IX: array<u32>;
@group(0) @binding(3) var<storage, read_write> OS: array<f32>;
@group(0) @binding(4) var<storage, read_write> OI: array<u32>;

// R, the new inputs per round, is half the buffer (R / WG per thread, coalesced): once the
// threshold is set few of them pass, so the buffer fills slowly and sorts are rare (a sort runs
// only when a round might not fit); each round costs two barriers, so fewer, larger rounds
// cost less.
const NONE: u32 = 0xffffffffu;

var<workgroup> bs: array<f32, CAP>;
var<workgroup> bi: array<u32, CAP>;
var<workgroup> fill: atomic<u32>;
var<workgroup> wfill: u32;

// a comes before b: higher score, then lower index
fn before(sa: f32, ia: u32, sb: f32, ib: u32) -> bool {
    return sa > sb || (sa == sb && ia < ib);
}

fn sort_buffer(t: u32) {
    for (var size = 2u; size <= CAP; size <<= 1u) {
        for (var stride = size >> 1u; stride > 0u; stride >>= 1u) {
            for (var p = t; p < CAP / 2u; p += WG) {
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
    let last = min(first + P.split_len, P.nk);
    let sb = vidx(P.v0, 0u, 0u, row);
    let ib = vidx(P.v1, 0u, 0u, row);
    let neg_inf = bitcast<f32>(NEG_INF_BITS);

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
    workgroupBarrier();
    for (var r0 = first; r0 < last; r0 += R) {
        let rend = min(r0 + R, last);
        for (var j = r0 + t; j < rend; j += WG) {
            let s = SC[sb + j];
            var ix = P.idx0 + j;
            if (PAIRS == 1u) {
                ix = IX[ib + j];
            }
            if (ix != NONE && before(s, ix, ts, ti)) {
                let slot = atomicAdd(&fill, 1u);
                bs[slot] = s;
                bi[slot] = ix;
            }
        }
        workgroupBarrier();
        if (t == 0u) {
            wfill = atomicLoad(&fill);
        }
        let n = workgroupUniformLoad(&wfill);
        if (n + R > CAP || rend == last) {
            sort_buffer(t);
            for (var i = KP + t; i < CAP; i += WG) {
                bs[i] = neg_inf;
                bi[i] = NONE;
            }
            if (t == 0u) {
                atomicStore(&fill, min(n, KP));
            }
            if (n >= KP) {
                ts = bs[KP - 1u];
                ti = bi[KP - 1u];
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
