// Similarity S = Q·Kᵀ per (batch, head): dot product, cosine, or the negated squared
// Euclidean distance -|q - k|².
// Header constants (src/kernels/similarity.rs): WG (threads), TM x TN (output tile), TK (head
// dims per step), METRIC (0 dot, 1 cosine, 2 negated squared L2).
// Views: v0 = q, v1 = k (key/value head h / group), v2 = scores [batch, heads, nq, nk] (f32).
// Q and K are multiplied by P.pre and P.kpre as they are loaded (powers of two that keep the
// sums in range), the result by P.post then P.post2 (the scale), each step saturating: a score
// beyond f32's range is reported as +-F32_MAX, never inf or NaN.
//
// A TM x TN output tile per workgroup, 4x4 outputs per thread, the head dim consumed TK at a
// time through workgroup memory. For cosine and L2 the squared norms of the rows and columns a
// thread touches are accumulated in the same loop; cosine of a zero vector is 0.

@group(0) @binding(1) var<storage, read> Q: array<elem>;
@group(0) @binding(2) var<storage, read> K: array<elem>;
@group(0) @binding(3) var<storage, read_write> S: array<f32>;

var<workgroup> As: array<f32, TK * TM>; // [TK][TM]
var<workgroup> Bs: array<f32, TK * TN>; // [TK][TN]

@compute @workgroup_size(WG)
fn similarity(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let row_blocks = (P.nr + TM - 1u) / TM;
    let col_blocks = (P.nk + TN - 1u) / TN;
    let wg = linear_wg(wid, nwg);
    if (wg >= P.nbh * row_blocks * col_blocks) {
        return;
    }
    let cb = wg % col_blocks;
    let rest = wg / col_blocks;
    let bh = P.bh0 + rest / row_blocks;
    let row0 = P.r0 + (rest % row_blocks) * TM;
    let row_end = P.r0 + P.nr;
    let col0 = cb * TN;
    let b = bh / P.heads;
    let h = bh % P.heads;
    let hk = h / P.group;
    let tx = t % 16u;
    let ty = t / 16u;

    var acc: array<vec4<f32>, 4>;
    var qn = vec4<f32>(0.0);
    var kn = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < P.d; k0 += TK) {
        for (var i = 0u; i < 4u; i++) {
            let e = t + i * WG;
            let r = e / TK;
            let kk = e % TK;
            let gk = k0 + kk;
            var a = 0.0;
            if (row0 + r < row_end && gk < P.d) {
                a = f32(Q[vidx(P.v0, b, h, row0 + r) + gk]) * P.pre;
            }
            As[kk * TM + r] = a;
            var bv = 0.0;
            if (col0 + r < P.nk && gk < P.d) {
                bv = f32(K[vidx(P.v1, b, hk, col0 + r) + gk]) * P.kpre;
            }
            Bs[kk * TN + r] = bv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            let a = vec4<f32>(As[kk * TM + ty * 4u], As[kk * TM + ty * 4u + 1u], As[kk * TM + ty * 4u + 2u], As[kk * TM + ty * 4u + 3u]);
            let bb = vec4<f32>(Bs[kk * TN + tx * 4u], Bs[kk * TN + tx * 4u + 1u], Bs[kk * TN + tx * 4u + 2u], Bs[kk * TN + tx * 4u + 3u]);
            acc[0] += a.x * bb;
            acc[1] += a.y * bb;
            acc[2] += a.z * bb;
            acc[3] += a.w * bb;
            if (METRIC != 0u) {
                qn += a * a;
                kn += bb * bb;
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let gr = row0 + ty * 4u + i;
        if (gr >= row_end) {
            continue;
        }
        let ob = vidx(P.v2, b, h, gr);
        for (var j = 0u; j < 4u; j++) {
            let gc = col0 + tx * 4u + j;
            if (gc < P.nk) {
                var v = acc[i][j];
                if (METRIC == 1u) {
                    let den = sqrt(qn[i]) * sqrt(kn[j]);
                    v = clamp(fsat(select(0.0, v / den, den > 0.0)), -1.0, 1.0);
                } else if (METRIC == 2u) {
                    v = -max(fsat(qn[i] + kn[j] - 2.0 * v), 0.0);
                }
                S[ob + gc] = fsat(fsat(fsat(v) * P.post) * P.post2);
            }
        }
    }
}
