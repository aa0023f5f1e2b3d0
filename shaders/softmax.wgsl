// Softmax over the last dimension: y = softmax(x / temperature + mask) over kept columns,
// masked columns 0, fully masked rows all 0.
// Scores are carried as z = x * P.pre + mask * P.mscale (common.wgsl, ScoreTransform in
// src/problem/mod.rs): no x / temperature is ever formed, so it cannot overflow.
// The options of attention (window, soft-cap, ALiBi, sink) apply too when the unfused
// attention runs through here (masking.wgsl): x is then the scaled scores.
// Header constants (src/kernels/softmax.rs): WG. Views: v0 = x (columns = P.nk), v3 = mask,
// v4 = y. Bindings: 1 x, 2 mask, 3 key lengths, 4 y, 5 per-head parameters.
//
// One workgroup per row. Each thread keeps a running (max, sum) over its columns (online
// softmax), the pairs are merged in a tree, then each thread writes its columns.

@group(0) @binding(1) var<storage, read> X: array<elem>;
@group(0) @binding(4) var<storage, read_write> Y: array<elem>;
@group(0) @binding(5) var<storage, read> HEADS: array<f32>;

var<workgroup> red_m: array<f32, WG>;
var<workgroup> red_l: array<f32, WG>;

@compute @workgroup_size(WG)
fn softmax(
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
    let xb = vidx(P.v0, b, h, row);
    let first = key_start(b, row);
    let lim = key_limit(b, row);
    let qp = qpos(b, row);

    // a sink: the running maximum and a weight of 1, in thread 0
    var m = sink_z(h);
    var l = select(0.0, 1.0, (P.flags & F_SINK) != 0u && t == 0u);
    for (var j = first + t; j < lim; j += WG) {
        var add = 0.0;
        if (!mask_keep(b, h, row, j, &add)) {
            continue;
        }
        let z = score_z(f32(X[xb + j]) * P.pre, add, h, qp, j);
        if (z > m) {
            l = l * weight(m, z) + 1.0;
            m = z;
        } else {
            l += weight(z, m);
        }
    }
    red_m[t] = m;
    red_l[t] = l;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (t < s) {
            let m2 = red_m[t + s];
            let mm = max(red_m[t], m2);
            red_l[t] = red_l[t] * weight(red_m[t], mm) + red_l[t + s] * weight(m2, mm);
            red_m[t] = mm;
        }
        workgroupBarrier();
    }
    let mx = red_m[0];
    let inv = select(0.0, 1.0 / red_l[0], red_l[0] > 0.0);

    let yb = vidx(P.v4, b, h, row);
    for (var j = t; j < P.nk; j += WG) {
        var y = 0.0;
        var add = 0.0;
        if (j >= first && j < lim && mask_keep(b, h, row, j, &add)) {
            y = weight(score_z(f32(X[xb + j]) * P.pre, add, h, qp, j), mx) * inv;
        }
        Y[yb + j] = elem(y);
    }
}
