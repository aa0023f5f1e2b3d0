// Merge of split-K attention partials: for each query row, the splits' raw accumulators acc_s,
// running maxima m_s (carried as z) and sums l_s combine, with the sink z_k of the row's head
// (if any, counted once, in the denominator only), as
//   M = max(m_s, z_k),  w_s = weight(m_s, M),  L = Σ l_s w_s + weight(z_k, M),
//   O = Σ acc_s w_s / L · post,  lse = lse_of(M, L)
// (weight and lse_of in common.wgsl, with the call's score transform). A row no split kept
// anything for gives O = 0, lse = -inf (or the sink).
// Header constants (src/kernels/attention_merge.rs): WG. Bindings: 1 partials (f32), 2 out,
// 3 lse (f32), 4 per-head parameters (ALiBi slope, sink). Views: v0 partials (row i: d + 2
// values per split), v1 out, v2 lse. P.split_len is the number of splits.

@group(0) @binding(1) var<storage, read> PART: array<f32>;
@group(0) @binding(2) var<storage, read_write> O: array<elem>;
@group(0) @binding(3) var<storage, read_write> LSE: array<f32>;
@group(0) @binding(4) var<storage, read> HEADS: array<f32>;

@compute @workgroup_size(WG)
fn attention_merge(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let wg = linear_wg(wid, nwg);
    if (wg >= P.nbh * P.nr) {
        return;
    }
    let bh = P.bh0 + wg / P.nr;
    let row = P.r0 + wg % P.nr;
    let b = bh / P.heads;
    let h = bh % P.heads;
    let nsplit = P.split_len;
    let has_sink = (P.flags & F_SINK) != 0u;
    var mx = ZNONE;
    if (has_sink) {
        mx = HEADS[2u * h + 1u];
    }
    for (var s = 0u; s < nsplit; s++) {
        mx = max(mx, PART[(vidx(P.v0, b, h, row) + s * (P.d + 2u)) + P.d]);
    }
    var l = 0.0;
    if (has_sink) {
        l = weight(HEADS[2u * h + 1u], mx);
    }
    for (var s = 0u; s < nsplit; s++) {
        let pb = (vidx(P.v0, b, h, row) + s * (P.d + 2u));
        l += PART[pb + P.d + 1u] * weight(PART[pb + P.d], mx);
    }
    let inv = select(0.0, 1.0 / l, l > 0.0);
    let ob = vidx(P.v1, b, h, row);
    for (var dd = t; dd < P.d; dd += WG) {
        var acc = 0.0;
        for (var s = 0u; s < nsplit; s++) {
            let pb = (vidx(P.v0, b, h, row) + s * (P.d + 2u));
            acc += PART[pb + dd] * weight(PART[pb + P.d], mx);
        }
        O[ob + dd] = to_elem(acc * inv * P.post);
    }
    if (t == 0u && (P.flags & F_LSE) != 0u) {
        LSE[vidx(P.v2, b, h, row)] = lse_of(mx, l);
    }
}
