// Appends new tokens' K and V to a paged cache: token t of the n_new (P.nr rows of the chunk)
// of sequence b lands at position seq_lens[b] - n_new + t, that is token
// (TABLE[b][pos >> page_shift] << page_shift) | (pos & (page_size - 1)) of the page pools.
// Header constants (src/kernels/kv_append.rs): WG; WK, WV (1: write the K, V pool; a
// quantized pool is written by kv_quantize.wgsl instead).
// Bindings: 1 k_new, 2 v_new, 3 seq_lens (u32), 4 block table (u32), 5 K pool, 6 V pool.
// Views: v0 k_new, v1 v_new ([batch, kv_heads, n_new, d]; slices b * kv_heads + hk), v2 K pool,
// v3 V pool (head stride sh, token stride ss). One invocation copies one element. The host
// checked the table and that no two new tokens share a slot.

@group(0) @binding(1) var<storage, read> KN: array<elem>;
@group(0) @binding(2) var<storage, read> VN: array<elem>;
@group(0) @binding(3) var<storage, read> SEQ_LENS: array<u32>;
@group(0) @binding(4) var<storage, read> TABLE: array<u32>;
@group(0) @binding(5) var<storage, read_write> KP: array<elem>;
@group(0) @binding(6) var<storage, read_write> VP: array<elem>;

@compute @workgroup_size(WG)
fn kv_append(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let e = linear_wg(wid, nwg) * WG + t;
    if (e >= P.nbh * P.nr * P.d) {
        return;
    }
    let dd = e % P.d;
    let rest = e / P.d;
    let tok = P.r0 + rest % P.nr;
    let bh = P.bh0 + rest / P.nr;
    let b = bh / P.heads;
    let hk = bh % P.heads;
    let pos = SEQ_LENS[b] - P.nq + tok;
    let page = TABLE[b * P.max_blocks + (pos >> P.page_shift)];
    let slot = (page << P.page_shift) | (pos & ((1u << P.page_shift) - 1u));
    if (WK == 1u) {
        KP[P.v2.base + hk * P.v2.sh + slot * P.v2.ss + dd] = KN[vidx(P.v0, b, hk, tok) + dd];
    }
    if (WV == 1u) {
        VP[P.v3.base + hk * P.v3.sh + slot * P.v3.ss + dd] = VN[vidx(P.v1, b, hk, tok) + dd];
    }
}
