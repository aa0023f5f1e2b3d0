// Prelude of attention.wgsl: K and V in a paged cache, [pages, page_size, kv_heads, d] each,
// read through the block table (binding 9, P.max_blocks entries per sequence): key j of
// sequence b is token (TABLE[b][j >> page_shift] << page_shift) | (j & (page_size - 1)) of the
// page pool. Views v1, v2: base, head stride sh (d), token stride ss (kv_heads * d). The block
// table was checked on the host: every entry a sequence's length reaches is a valid page.

@group(0) @binding(9) var<storage, read> TABLE: array<u32>;

// (the pack's first key, F_VARLEN, which paged calls do not use: always 0)
var<private> koff: u32;

fn token(b: u32, j: u32) -> u32 {
    let page = TABLE[b * P.max_blocks + (j >> P.page_shift)];
    return (page << P.page_shift) | (j & ((1u << P.page_shift) - 1u));
}

fn k_index(b: u32, hk: u32, j: u32) -> u32 {
    return P.v1.base + hk * P.v1.sh + token(b, j) * P.v1.ss;
}

fn v_index(b: u32, hk: u32, j: u32) -> u32 {
    return P.v2.base + hk * P.v2.sh + token(b, j) * P.v2.ss;
}
