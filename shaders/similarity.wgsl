// Similarity S = Q·Kᵀ per (batch, head): dot product (times `scale`), cosine, or the negated
// squared Euclidean distance -|q - k|² (times `scale`).
// Header constants: METRIC (0 dot, 1 cosine, 2 negated squared L2).
// Views: v0 = q, v1 = k (key/value head h / group), v2 = scores [batch, heads, nq, nk] (f32).
//
// A 64x64 output tile per workgroup of 256 threads, 4x4 outputs per thread, the head dim
// consumed 16 at a time through workgroup memory. For cosine and L2 the squared norms of the
// rows and columns a thread touches are accumulated in the same loop; cosine of a zero vector is 0.

@group(0) @binding(1) var<storage, read> Q: array<elem>;
@group(0) @binding(2) var<storage, read> K: array<elem>;
@group(0) @binding(3) var<storage, read_write> S: array<f32>;

const TM: u32 = 64u;
const TN: u32 = 64u;
const TK: u32 = 16u;

var<workgroup> As: array<f32, 1024>; // [TK][TM]
var<workgroup> Bs: array<f32, 1024>; // [TK][TN]

@compute @workgroup_size(256)
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
            let e = t + i * 256u;
            let r = e / TK;
            let kk = e % TK;
            let gk = k0 + kk;
            var a = 0.0;
            if (row0 + r < row_end && gk < P.d) {
                a = f32(Q[vidx(P.v0, b, h, row0 + r) + gk]);
            }
            As[kk * TM + r] = a;
            var bv = 0.0;
            if (col0 + r < P.nk && gk < P.d) {
                bv = f32(K[vidx(P.v1, b, hk, col0 + r) + gk]);
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
                    v = select(0.0, v / den, den > 0.0);
                } else if (METRIC == 2u) {
                    v = -max(qn[i] + kn[j] - 2.0 * v, 0.0);
                }
                S[ob + gc] = v * P.scale;
            }
        }
    }
}
