// Merge of split-K attention partials: for each query row, the splits' raw accumulators
// acc_s, maxima m_s (base 2) and sums l_s combine as
//   M = max m_s,  L = Σ l_s 2^(m_s - M),  O = Σ acc_s 2^(m_s - M) / L,  lse = (M + log2 L) ln 2.
// A row no split kept anything for gives O = 0, lse = -inf.
// Bindings: 1 partials (f32), 2 out, 3 lse (f32). Views: v0 partials (row split * nq + i,
// d + 2 values), v1 out, v2 lse. P.split_len is the number of splits.

@group(0) @binding(1) var<storage, read> PART: array<f32>;
@group(0) @binding(2) var<storage, read_write> O: array<elem>;
@group(0) @binding(3) var<storage, read_write> LSE: array<f32>;

const LN2: f32 = 0.6931471805599453;

@compute @workgroup_size(64)
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
    var mx = NEG;
    for (var s = 0u; s < nsplit; s++) {
        mx = max(mx, PART[vidx(P.v0, b, h, s * P.nq + row) + P.d]);
    }
    var l = 0.0;
    for (var s = 0u; s < nsplit; s++) {
        let pb = vidx(P.v0, b, h, s * P.nq + row);
        l += PART[pb + P.d + 1u] * exp2(PART[pb + P.d] - mx);
    }
    let inv = select(0.0, 1.0 / l, l > 0.0);
    let ob = vidx(P.v1, b, h, row);
    for (var dd = t; dd < P.d; dd += 64u) {
        var acc = 0.0;
        for (var s = 0u; s < nsplit; s++) {
            let pb = vidx(P.v0, b, h, s * P.nq + row);
            acc += PART[pb + dd] * exp2(PART[pb + P.d] - mx);
        }
        O[ob + dd] = elem(acc * inv);
    }
    if (t == 0u && (P.flags & F_LSE) != 0u) {
        LSE[vidx(P.v2, b, h, row)] = select(bitcast<f32>(NEG_INF_BITS), (mx + log2(l)) * LN2, l > 0.0);
    }
}
