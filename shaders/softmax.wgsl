// Softmax over the last dimension: y = softmax(x / temperature + mask) over kept columns,
// masked columns 0, fully masked rows all 0.
// Scores are carried as z = x * P.pre + mask * P.mscale (common.wgsl, ScoreTransform in
// src/problem/mod.rs): no x / temperature is ever formed, so it cannot overflow.
// The options of attention (window, soft-cap, ALiBi, sink) apply too when the unfused
// attention runs through here (masking.wgsl): x is then the scaled scores.
// Header constants (src/kernels/softmax.rs): WG (256), E (elements per thread held in
// registers: 4, 8 or 16, for rows up to 16 * WG; 0: rows of any length, streamed twice).
// Views: v0 = x (columns = P.nk), v3 = mask, v4 = y. Bindings: 1 x, 2 mask, 3 key lengths,
// 4 y, 5 per-head parameters.
//
// One workgroup per row. With E > 0 each thread loads its columns t, t + WG, ... once into
// registers (coalesced), the row's maximum and sum are reduced over the workgroup (8 lanes by
// row_max/row_sum, subgroup shuffles where available, then the 32 partials through workgroup
// memory: two barriers per reduction), and each element is exponentiated once and written once.
// With E = 0 each thread keeps a running (max, sum) over its columns (online softmax), the
// pairs are merged, then each thread reads its columns again and writes them.
@group(0) @binding(1) var<storage, read> X: array<elem>;
@group(0) @binding(4) var<storage, read_write> Y: array<elem>;
@group(0) @binding(5) var<storage, read> HEADS: array<f32>;

var<workgroup> part: array<f32, WG / 8u>;

// The maximum (max = true) or sum of x over the workgroup (uniform control flow).
fn wg_reduce(x: f32, t: u32, max_: bool) -> f32 {
    var v = 0.0;
    if (max_) {
        v = row_max(x, t, 0u);
    } else {
        v = row_sum(x, t, 0u);
    }
    workgroupBarrier();
    if (t % 8u == 0u) {
        part[t / 8u] = v;
    }
    workgroupBarrier();
    var r = part[0];
    for (var i = 1u; i < WG / 8u; i++) {
        if (max_) {
            r = max(r, part[i]);
        } else {
            r += part[i];
        }
    }
    return r;
}

// The z of column j of the row (ZNONE where the column is masked or out of range).
fn col_z(xb: u32, b: u32, h: u32, row: u32, qp: i32, j: u32, first: u32, lim: u32, simple: bool) -> f32 {
    if (j < first || j >= lim) {
        return ZNONE;
    }
    if (simple) {
        return zsat(f32(X[xb + j]) * P.pre);
    }
    var add = 0.0;
    if (!mask_keep(b, h, row, j, &add)) {
        return ZNONE;
    }
    return score_z(f32(X[xb + j]) * P.pre, add, h, qp, j);
}

// The z of columns j0, j0 + WG, j0 + 2 WG, j0 + 3 WG without masks or score options: loads
// clamped into the row, ZNONE outside [first, lim).
fn zrow4(xb: u32, j0: u32, first: u32, lim: u32) -> vec4<f32> {
    let last = max(P.nk, 1u) - 1u;
    let j = vec4<u32>(j0, j0 + WG, j0 + 2u * WG, j0 + 3u * WG);
    let x = vec4<f32>(f32(X[xb + min(j.x, last)]), f32(X[xb + min(j.y, last)]), f32(X[xb + min(j.z, last)]), f32(X[xb + min(j.w, last)]));
    let z = select(select(vec4<f32>(-ZSAT), vec4<f32>(ZSAT), x > vec4<f32>(0.0)), x * P.pre, abs(x * P.pre) <= vec4<f32>(ZSAT));
    let inside = j >= vec4<u32>(first) & j < vec4<u32>(lim);
    return select(vec4<f32>(ZNONE), z, inside);
}

// Weights of four z under m; 0 for dropped columns (ZNONE).
fn w4(z: vec4<f32>, m: f32) -> vec4<f32> {
    let w = exp2(max(z - vec4<f32>(m), vec4<f32>(P.floor)) * P.ex);
    return select(vec4<f32>(0.0), w, z > vec4<f32>(ZNONE));
}

fn store4(yb: u32, j0: u32, y: vec4<f32>) {
    for (var c = 0u; c < 4u; c++) {
        let j = j0 + c * WG;
        if (j < P.nk) {
            Y[yb + j] = elem(y[c]);
        }
    }
}

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

    let yb = vidx(P.v4, b, h, row);
    if (E > 0u) {
        // the row in registers: column t + WG * (4i + c) in component c of zi
        let simple = (P.flags & (F_MASK | F_SOFTCAP | F_ALIBI)) == 0u;
        var z0 = vec4<f32>(ZNONE);
        var z1 = vec4<f32>(ZNONE);
        var z2 = vec4<f32>(ZNONE);
        var z3 = vec4<f32>(ZNONE);
        if (simple) {
            // every load first (clamped into the row, so none depends on a branch), then the
            // bounds as selects: all of a thread's loads are in flight at once
            z0 = zrow4(xb, t, first, lim);
            if (E > 4u) {
                z1 = zrow4(xb, t + 4u * WG, first, lim);
            }
            if (E > 8u) {
                z2 = zrow4(xb, t + 8u * WG, first, lim);
                z3 = zrow4(xb, t + 12u * WG, first, lim);
            }
        } else {
            for (var c = 0u; c < 4u; c++) {
                z0[c] = col_z(xb, b, h, row, qp, t + WG * c, first, lim, false);
                if (E > 4u) {
                    z1[c] = col_z(xb, b, h, row, qp, t + WG * (4u + c), first, lim, false);
                }
                if (E > 8u) {
                    z2[c] = col_z(xb, b, h, row, qp, t + WG * (8u + c), first, lim, false);
                    z3[c] = col_z(xb, b, h, row, qp, t + WG * (12u + c), first, lim, false);
                }
            }
        }
        let mz = max(max(z0, z1), max(z2, z3));
        let sink = sink_z(h);
        let m = max(wg_reduce(max(max(mz.x, mz.y), max(mz.z, mz.w)), t, true), sink);
        let p0 = w4(z0, m);
        let p1 = w4(z1, m);
        let p2 = w4(z2, m);
        let p3 = w4(z3, m);
        var l = wg_reduce(dot(p0 + p1 + p2 + p3, vec4<f32>(1.0)), t, false);
        if ((P.flags & F_SINK) != 0u) {
            l += weight(sink, m);
        }
        let inv = select(0.0, 1.0 / l, l > 0.0);
        store4(yb, t, p0 * inv);
        if (E > 4u) {
            store4(yb, t + 4u * WG, p1 * inv);
        }
        if (E > 8u) {
            store4(yb, t + 8u * WG, p2 * inv);
            store4(yb, t + 12u * WG, p3 * inv);
        }
        return;
    }

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
    let mx = wg_reduce(m, t, true);
    let lsum = wg_reduce(l * weight(m, mx), t, false);
    let inv = select(0.0, 1.0 / lsum, lsum > 0.0);

    for (var j = t; j < P.nk; j += WG) {
        var y = 0.0;
        var add = 0.0;
        if (j >= first && j < lim && mask_keep(b, h, row, j, &add)) {
            y = weight(score_z(f32(X[xb + j]) * P.pre, add, h, qp, j), mx) * inv;
        }
        Y[yb + j] = elem(y);
    }
}
