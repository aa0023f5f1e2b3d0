// Similarity S = Q·Kᵀ per (batch, head): dot product, cosine, or the negated squared
// Euclidean distance -|q - k|².
// Header constants (src/kernels/similarity.rs): WG (256 threads), TM x TN (128 x 128 output
// tile), TK (16 head dims per step), METRIC (0 dot, 1 cosine, 2 negated squared L2), TOPK (1:
// top-k's scoring pass, below).
// Preludes: scores_vec4.wgsl (S as vec4: 4-aligned rows of whole vec4s get vector stores) or
// scores_scalar.wgsl, then similarity_epilogue.wgsl (bindings 4-8, the scores from the sums,
// their stores, top-k's thresholded lists: see there).
// Bindings: 1 q, 2 k, 3 scores (f32), 4-8 (similarity_epilogue.wgsl). Views: v0 q, v1 k
// (key/value head h / group), v2 scores [batch, heads, nq, nk], v3-v5 (similarity_epilogue.wgsl).
// Dot and L2: Q and K are multiplied by P.pre and P.kpre as they are staged (powers of two that
// keep the sums in range), the result by P.post then P.post2 (the scale), each step saturating:
// a score beyond f32's range is reported as +-F32_MAX, never inf or NaN. L2 is
// -max(|q|² + |k|² - 2 q·k, 0) from the precomputed squared norms. Cosine: each row is brought
// to unit length as it is staged (ldexp by its row_norms exponent, times its factor), so the
// dot product is the cosine, clamped to [-1, 1]; a zero vector scores 0.
//
// A GEMM tile: thread (tx, ty) = (t % 16, t / 16) owns rows 4ty..4ty+3 and 64+4ty..64+4ty+3 and
// columns 4tx..4tx+3 and 64+4tx..64+4tx+3 of the tile (8 x 8 outputs in 16 named vec4
// registers). Q and K are staged TK dims at a time, dim-major (rows as vec4, padded by 4 floats
// so that the transposed stores do not conflict); the next step's global loads are issued into
// registers before this step's products (so they are in flight during 16 x 64 FMAs) and stored
// after the next barrier. Each dim reads two vec4 of Q and two of K per thread for 64 FMAs.

@group(0) @binding(1) var<storage, read> Q: array<elem>;
@group(0) @binding(2) var<storage, read> K: array<elem>;

// row pitch of the staged tiles in vec4 (TM + 4 floats)
const AP: u32 = (TM + 4u) / 4u;

var<workgroup> As: array<vec4<f32>, TK * AP>;
var<workgroup> Bs: array<vec4<f32>, TK * AP>;

// Four consecutive elements from index i of Q (or K), those from the n-th on as 0.
fn load4q(i: u32, n: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    for (var c = 0u; c < 4u; c++) {
        if (c < n) {
            v[c] = f32(Q[i + c]);
        }
    }
    return v;
}

fn load4k(i: u32, n: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    for (var c = 0u; c < 4u; c++) {
        if (c < n) {
            v[c] = f32(K[i + c]);
        }
    }
    return v;
}

// Writes row `gr` (if in range) of the thread's outputs: columns gc..gc+3 and gc+64..gc+67.
fn store_row(b: u32, h: u32, hk: u32, gr: u32, row_end: u32, gc: u32, x: vec4<f32>, y: vec4<f32>) {
    if (gr >= row_end) {
        return;
    }
    store4_row(b, h, hk, gr, gc, x);
    store4_row(b, h, hk, gr, gc + 64u, y);
}

@compute @workgroup_size(WG)
fn similarity(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let tile = gemm_tile(wid, nwg, TM, TN, P.nk);
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

    // staging: thread t loads, for i = 0, 1, dims 4 (2i + t % 2).. of tile row t / 2 of Q and
    // of K (pairs of lanes read 32 contiguous bytes; the transposed stores do not conflict)
    let sr = t / 2u;
    let sq = t % 2u;
    let q_ok = row0 + sr < row_end;
    let k_ok = col0 + sr < P.nk;
    // (cosine: ldexp(x * pre, e) times the row's factor f; e = 0, f = 1 otherwise)
    var qf = 1.0;
    var kf = 1.0;
    var qe = 0;
    var ke = 0;
    if (METRIC == 1u) {
        let qi = vidx(P.v3, b, h, min(row0 + sr, row_end - 1u));
        let ki = vidx(P.v4, b, hk, min(col0 + sr, P.nk - 1u));
        qe = i32(QN[qi]);
        ke = i32(KN[ki]);
        qf = select(0.0, QN[qi + 1u], q_ok);
        kf = select(0.0, KN[ki + 1u], k_ok);
    }
    let q_base = vidx(P.v0, b, h, min(row0 + sr, row_end - 1u));
    let k_base = vidx(P.v1, b, hk, min(col0 + sr, P.nk - 1u));
    let st = (4u * sq) * AP + sr / 4u;
    let sc = sr % 4u;

    var r0a = vec4<f32>(0.0); var r0b = vec4<f32>(0.0); var r1a = vec4<f32>(0.0); var r1b = vec4<f32>(0.0);
    var r2a = vec4<f32>(0.0); var r2b = vec4<f32>(0.0); var r3a = vec4<f32>(0.0); var r3b = vec4<f32>(0.0);
    var r4a = vec4<f32>(0.0); var r4b = vec4<f32>(0.0); var r5a = vec4<f32>(0.0); var r5b = vec4<f32>(0.0);
    var r6a = vec4<f32>(0.0); var r6b = vec4<f32>(0.0); var r7a = vec4<f32>(0.0); var r7b = vec4<f32>(0.0);

    let steps = (P.d + TK - 1u) / TK;
    // the first step's values
    var xq0 = vec4<f32>(0.0); var xq1 = vec4<f32>(0.0);
    var xk0 = vec4<f32>(0.0); var xk1 = vec4<f32>(0.0);
    var dd = 4u * sq;
    if (q_ok && dd < P.d) { xq0 = ldexp(load4q(q_base + dd, min(P.d - dd, 4u)) * P.pre, vec4<i32>(qe)) * qf; }
    if (k_ok && dd < P.d) { xk0 = ldexp(load4k(k_base + dd, min(P.d - dd, 4u)) * P.kpre, vec4<i32>(ke)) * kf; }
    dd += 8u;
    if (q_ok && dd < P.d) { xq1 = ldexp(load4q(q_base + dd, min(P.d - dd, 4u)) * P.pre, vec4<i32>(qe)) * qf; }
    if (k_ok && dd < P.d) { xk1 = ldexp(load4k(k_base + dd, min(P.d - dd, 4u)) * P.kpre, vec4<i32>(ke)) * kf; }
    for (var s = 0u; s < steps; s++) {
        // the previous step's readers are done; store this step's values
        workgroupBarrier();
        As[st][sc] = xq0.x; As[st + AP][sc] = xq0.y; As[st + 2u * AP][sc] = xq0.z; As[st + 3u * AP][sc] = xq0.w;
        Bs[st][sc] = xk0.x; Bs[st + AP][sc] = xk0.y; Bs[st + 2u * AP][sc] = xk0.z; Bs[st + 3u * AP][sc] = xk0.w;
        let s8 = st + 8u * AP;
        As[s8][sc] = xq1.x; As[s8 + AP][sc] = xq1.y; As[s8 + 2u * AP][sc] = xq1.z; As[s8 + 3u * AP][sc] = xq1.w;
        Bs[s8][sc] = xk1.x; Bs[s8 + AP][sc] = xk1.y; Bs[s8 + 2u * AP][sc] = xk1.z; Bs[s8 + 3u * AP][sc] = xk1.w;
        workgroupBarrier();
        // the next step's loads, in flight during this step's products
        xq0 = vec4<f32>(0.0); xq1 = vec4<f32>(0.0);
        xk0 = vec4<f32>(0.0); xk1 = vec4<f32>(0.0);
        if (s + 1u < steps) {
            dd = (s + 1u) * TK + 4u * sq;
            if (q_ok && dd < P.d) { xq0 = ldexp(load4q(q_base + dd, min(P.d - dd, 4u)) * P.pre, vec4<i32>(qe)) * qf; }
            if (k_ok && dd < P.d) { xk0 = ldexp(load4k(k_base + dd, min(P.d - dd, 4u)) * P.kpre, vec4<i32>(ke)) * kf; }
            dd += 8u;
            if (q_ok && dd < P.d) { xq1 = ldexp(load4q(q_base + dd, min(P.d - dd, 4u)) * P.pre, vec4<i32>(qe)) * qf; }
            if (k_ok && dd < P.d) { xk1 = ldexp(load4k(k_base + dd, min(P.d - dd, 4u)) * P.kpre, vec4<i32>(ke)) * kf; }
        }
        for (var kk = 0u; kk < TK; kk++) {
            let a0 = As[kk * AP + ty];
            let a1 = As[kk * AP + 16u + ty];
            let b0 = Bs[kk * AP + tx];
            let b1 = Bs[kk * AP + 16u + tx];
            r0a += a0.x * b0; r0b += a0.x * b1;
            r1a += a0.y * b0; r1b += a0.y * b1;
            r2a += a0.z * b0; r2b += a0.z * b1;
            r3a += a0.w * b0; r3b += a0.w * b1;
            r4a += a1.x * b0; r4b += a1.x * b1;
            r5a += a1.y * b0; r5b += a1.y * b1;
            r6a += a1.z * b0; r6b += a1.z * b1;
            r7a += a1.w * b0; r7b += a1.w * b1;
        }
    }

    let ra = row0 + 4u * ty;
    let rb = ra + 64u;
    let gc = col0 + 4u * tx;
    store_row(b, h, hk, ra, row_end, gc, r0a, r0b);
    store_row(b, h, hk, ra + 1u, row_end, gc, r1a, r1b);
    store_row(b, h, hk, ra + 2u, row_end, gc, r2a, r2b);
    store_row(b, h, hk, ra + 3u, row_end, gc, r3a, r3b);
    store_row(b, h, hk, rb, row_end, gc, r4a, r4b);
    store_row(b, h, hk, rb + 1u, row_end, gc, r5a, r5b);
    store_row(b, h, hk, rb + 2u, row_end, gc, r6a, r6b);
    store_row(b, h, hk, rb + 3u, row_end, gc, r7a, r7b);
}
