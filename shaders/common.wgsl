// Prelude of every kernel, after the header that src/kernels/mod.rs generates (the variant's
// constants, the F_* flag bits, ZSAT, ZNONE and F32_MAX).
//
// Every tensor argument is described by a View: element index of (b, h, s, 0) is
//   base + b * sb + h * sh + s * ss
// computed in wrapping u32 arithmetic, where b, h, s are global indices and `base` is
// (tensor offset - start of the bound window) modulo 2^32. The true index always lies
// inside the bound window, so the wrapped result is exact.
struct View { base: u32, sb: u32, sh: u32, ss: u32 }

// Must match `Params` in src/kernels/mod.rs (a unit test compares every member's offset).
struct Params {
    // the chunk of (batch * head) slices and query rows this dispatch covers
    bh0: u32, nbh: u32, r0: u32, nr: u32,
    // problem: query heads, query heads per key/value head, query rows, key count
    heads: u32, group: u32, nq: u32, nk: u32,
    // head dim (or reduction length), F_* flags, keys per split (merge: the number of splits;
    // top-k: inputs per segment), top-k: index of the first input element
    d: u32, flags: u32, split_len: u32, idx0: u32,
    // top-k: first input of each row to read (attention, F_VARLEN: sequences in the pack),
    // output slots per row, slot of the first segment;
    // the sliding window's bound on the left
    start: u32, out_stride: u32, out_offset: u32, wleft: u32,
    // the window's bound on the right; paged KV cache: table entries per sequence, log2 page size
    wright: u32, max_blocks: u32, page_shift: u32, _pad0: u32,
    // input prescales, output factors (applied in turn, each saturating)
    pre: f32, kpre: f32, post: f32, post2: f32,
    // the score transform (src/problem/mod.rs, ScoreTransform): z = x * pre + mask * mscale,
    // s = z * unit, weights exp2(max(z - zmax, floor) * ex), lse overflows past |zmax| > zcap;
    // soft-capping z = cap_out * tanh(z * cap_in)
    mscale: f32, unit: f32, ex: f32, floor: f32,
    zcap: f32, cap_in: f32, cap_out: f32, cap_lim: f32,
    v0: View, v1: View, v2: View, v3: View, v4: View, v5: View,
}

const NEG_INF_BITS: u32 = 0xff800000u;
const POS_INF_BITS: u32 = 0x7f800000u;
const LN2: f32 = 0.6931471805599453;

@group(0) @binding(0) var<uniform> P: Params;

fn vidx(v: View, b: u32, h: u32, s: u32) -> u32 {
    return v.base + b * v.sb + h * v.sh + s * v.ss;
}

// Linear workgroup index over a 3-D grid (grids over the per-dimension limit wrap into y, z).
fn linear_wg(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + nwg.x * (wid.y + nwg.y * wid.z);
}

// The output tile of a matrix-product workgroup: P.nbh (batch, head) pairs from P.bh0, each
// P.nr rows from P.r0 in blocks of `tm` by `cols` columns in blocks of `tn`, column blocks
// fastest. `ok` is false past the grid (the workgroup does nothing).
struct GemmTile {
    ok: bool,
    bh: u32,
    row0: u32,
    col0: u32,
}

fn gemm_tile(wid: vec3<u32>, nwg: vec3<u32>, tm: u32, tn: u32, cols: u32) -> GemmTile {
    let row_blocks = (P.nr + tm - 1u) / tm;
    let col_blocks = (cols + tn - 1u) / tn;
    let wg = linear_wg(wid, nwg);
    let rest = wg / col_blocks;
    return GemmTile(wg < P.nbh * row_blocks * col_blocks, P.bh0 + rest / row_blocks, P.r0 + (rest % row_blocks) * tm, (wg % col_blocks) * tn);
}

// A score carried as z, saturated to [-ZSAT, ZSAT]; NaN (from overflowing sums of unscanned
// inputs) becomes -ZSAT. Comparisons, not min/max, so that NaN is handled on every backend.
fn zsat(z: f32) -> f32 {
    if (abs(z) <= ZSAT) {
        return z;
    }
    return select(-ZSAT, ZSAT, z > 0.0);
}

// An output value saturated to [-F32_MAX, F32_MAX]; NaN becomes 0.
fn fsat(x: f32) -> f32 {
    if (abs(x) <= F32_MAX) {
        return x;
    }
    if (x > 0.0) {
        return F32_MAX;
    }
    if (x < 0.0) {
        return -F32_MAX;
    }
    return 0.0;
}

// An output value in the storage type: saturated to the largest finite `elem` (ELEM_MAX,
// from the header: 65504 for f16), NaN as 0.
fn to_elem(x: f32) -> elem {
    return elem(clamp(fsat(x), -ELEM_MAX, ELEM_MAX));
}

// The unnormalised weight of score z under running maximum zmax (both carried as z).
// The difference is clamped before it is multiplied, so nothing overflows.
fn weight(z: f32, zmax: f32) -> f32 {
    return exp2(max(z - zmax, P.floor) * P.ex);
}

// Natural log-sum-exp of a row from its running maximum and sum: -inf for an empty row (every
// key masked), +-inf when the true value is beyond f32.
fn lse_of(zmax: f32, l: f32) -> f32 {
    if (l <= 0.0) {
        return bitcast<f32>(NEG_INF_BITS);
    }
    if (zmax > P.zcap) {
        return bitcast<f32>(POS_INF_BITS);
    }
    if (zmax < -P.zcap) {
        return bitcast<f32>(NEG_INF_BITS);
    }
    return zmax * P.unit + log2(l) * LN2;
}
