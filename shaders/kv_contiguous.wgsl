// Prelude of attention.wgsl: K and V as contiguous tensors (views v1, v2). With F_VARLEN the
// kernel sets `koff`, the packed row of its sequence's first key.

var<private> koff: u32;

fn k_index(b: u32, hk: u32, j: u32) -> u32 {
    return vidx(P.v1, b, hk, koff + j);
}

fn v_index(b: u32, hk: u32, j: u32) -> u32 {
    return vidx(P.v2, b, hk, koff + j);
}
