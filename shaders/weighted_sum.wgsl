// Weighted sum O = P·V per (batch, head): weights P [batch, heads, nq, nk] (f32) times values
// V [batch, kv_heads, nk, d] (key/value head h / group), out O [batch, heads, nq, d].
// Views: v0 = weights (row length P.nk), v1 = values, v2 = out.
// Header constants (src/kernels/weighted_sum.rs): WG (threads), TM x TN (output tile), TK
// (keys per step). V is multiplied by P.kpre as it is loaded and the output by P.post (powers
// of two that keep the sums in range); outputs beyond f32 saturate at +-F32_MAX.
//
// A TM (rows) x TN (head dim) output tile per workgroup, 4x4 outputs per thread, the keys
// consumed TK at a time through workgroup memory.

@group(0) @binding(1) var<storage, read> W: array<f32>;
@group(0) @binding(2) var<storage, read> V: array<elem>;
@group(0) @binding(3) var<storage, read_write> O: array<elem>;

var<workgroup> As: array<f32, TK * TM>; // [TK][TM]
var<workgroup> Bs: array<f32, TK * TN>; // [TK][TN]

@compute @workgroup_size(WG)
fn weighted_sum(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let tile = gemm_tile(wid, nwg, TM, TN, P.d);
    if (!tile.ok) {
        return;
    }
    let bh = tile.bh;
    let row0 = tile.row0;
    let row_end = P.r0 + P.nr;
    let col0 = tile.col0;
    let b = bh / P.heads;
    let h = bh % P.heads;
    let hk = h / P.group;
    let tx = t % 16u;
    let ty = t / 16u;

    // a 4 x 4 tile per invocation: rows acc_0 .. acc_3 (named, not an indexed array)
    var acc_0 = vec4<f32>(0.0);
    var acc_1 = vec4<f32>(0.0);
    var acc_2 = vec4<f32>(0.0);
    var acc_3 = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < P.nk; k0 += TK) {
        for (var i = 0u; i < 4u; i++) {
            let e = t + i * WG;
            // weights tile: row r, key kk (keys contiguous in memory)
            let r = e / TK;
            let kk = e % TK;
            var a = 0.0;
            if (row0 + r < row_end && k0 + kk < P.nk) {
                a = W[vidx(P.v0, b, h, row0 + r) + k0 + kk];
            }
            As[kk * TM + r] = a;
            // values tile: key kv, column c (columns contiguous in memory)
            let kv = e / TN;
            let c = e % TN;
            var bv = 0.0;
            if (k0 + kv < P.nk && col0 + c < P.d) {
                bv = f32(V[vidx(P.v1, b, hk, k0 + kv) + col0 + c]) * P.kpre;
            }
            Bs[kv * TN + c] = bv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            let a = vec4<f32>(As[kk * TM + ty * 4u], As[kk * TM + ty * 4u + 1u], As[kk * TM + ty * 4u + 2u], As[kk * TM + ty * 4u + 3u]);
            let bb = vec4<f32>(Bs[kk * TN + tx * 4u], Bs[kk * TN + tx * 4u + 1u], Bs[kk * TN + tx * 4u + 2u], Bs[kk * TN + tx * 4u + 3u]);
            acc_0 += a.x * bb;
            acc_1 += a.y * bb;
            acc_2 += a.z * bb;
            acc_3 += a.w * bb;
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let gr = row0 + ty * 4u + i;
        if (gr >= row_end) {
            continue;
        }
        let ob = vidx(P.v2, b, h, gr);
        // (a select, not an index: an array indexed at run time may live in local memory)
        let row = select(select(select(acc_3, acc_2, i == 2u), acc_1, i == 1u), acc_0, i == 0u);
        for (var j = 0u; j < 4u; j++) {
            let gc = col0 + tx * 4u + j;
            if (gc < P.d) {
                O[ob + gc] = to_elem(row[j] * P.post);
            }
        }
    }
}
