// Prelude of the families that mask scores (softmax, attention): the mask at binding 2
// (one word per element, view v3) and per-batch key lengths at binding 3.

@group(0) @binding(2) var<storage, read> MASK: array<u32>;
@group(0) @binding(3) var<storage, read> KEY_LENGTHS: array<u32>;

// Whether the mask keeps score (b, h, row, j); its additive term goes to *add. Boolean masks:
// nonzero keeps. Additive masks: only -inf drops a key; every finite value (even -3e38) is added.
fn mask_keep(b: u32, h: u32, row: u32, j: u32, add: ptr<function, f32>) -> bool {
    *add = 0.0;
    if ((P.flags & F_MASK) == 0u) {
        return true;
    }
    let w = MASK[vidx(P.v3, b, h, row) + j];
    if ((P.flags & F_MASK_ADDITIVE) != 0u) {
        if (w == NEG_INF_BITS) {
            return false;
        }
        *add = bitcast<f32>(w);
        return true;
    }
    return w != 0u;
}

// Keys [0, key_limit) can be kept by batch b's key length and, when causal, by query `row`
// (bottom-right alignment: key j is visible to query i when j <= i + nk - nq).
fn key_limit(b: u32, row: u32) -> u32 {
    var lim = P.nk;
    if ((P.flags & F_KEY_LENGTHS) != 0u) {
        lim = min(lim, KEY_LENGTHS[b]);
    }
    if ((P.flags & F_CAUSAL) != 0u) {
        let c = i32(row) + i32(P.nk) - i32(P.nq) + 1;
        lim = min(lim, u32(max(c, 0)));
    }
    return lim;
}
