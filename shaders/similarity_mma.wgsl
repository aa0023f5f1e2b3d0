// Similarity S = Q·Kᵀ per (batch, head) for f16 inputs on 16x16x16 matrix fragments: tensor
// cores through cooperative matrices (mma_hardware.wgsl) or their plain-WGSL twin
// (mma_emulated.wgsl); f32 sums; the epilogue of the SIMT kernel (similarity_epilogue.wgsl), so
// the same metrics, saturation and top-k thresholded lists.
// Header constants (src/kernels/similarity_mma.rs): WG (4 subgroups of SGS), SGS (the subgroup
// size the hardware path runs with; 32 for the twin), METRIC (0 dot, 1 cosine, 2 negated
// squared L2), TOPK. Preludes: mma_*.wgsl, qk_vec4.wgsl or qk_scalar.wgsl (Q, K at bindings 1,
// 2, read 4 elements at a time), scores_*.wgsl, similarity_epilogue.wgsl.
// Bindings and views: as similarity.wgsl.
//
// A 64 x 64 output tile per workgroup; subgroup s owns rows 32 (s / 2).. and columns 32 (s % 2)..
// (2 x 2 fragments). Head dims are staged 32 at a time, raw f16 (rows padded to 40 elements:
// 80-byte rows keep fragments 16-byte aligned), tails and out-of-range rows as zeros. The
// prescales are applied to the f32 sums instead (f16 products and their sums cannot leave f32's
// range): dot and L2 by P.pre * P.kpre, cosine by each row's 1 / |row| (from row_norms.wgsl). The
// sums go through workgroup memory (Fs) to the epilogue, 4 columns per invocation.

const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 32u;
const AP: u32 = 40u;
const CP: u32 = 68u;

// Hs: the Q step (rows 0..BM) then the K step (from KB); Fs: the sums
const KB: u32 = BM * AP;
// groups of 4 head dims per staged row
const BG: u32 = BK / 4u;
var<workgroup> Hs: array<f16, (BM + BN) * AP>;
var<workgroup> Fs: array<f32, BM * CP>;

// The factor that brings a raw row's sums to the staged units of the SIMT kernel: cosine, the
// row's 1 / |row| (pre * 2^e * f, row_norms.wgsl); otherwise the prescale.
fn row_scale(norms_i: u32, pre: f32, is_q: bool) -> f32 {
    if (METRIC != 1u) {
        return pre;
    }
    var e = 0.0;
    var f = 0.0;
    if (is_q) {
        e = QN[norms_i];
        f = QN[norms_i + 1u];
    } else {
        e = KN[norms_i];
        f = KN[norms_i + 1u];
    }
    return ldexp(pre * f, i32(e));
}

@compute @workgroup_size(WG)
fn similarity_mma(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let tile = gemm_tile(wid, nwg, BM, BN, P.nk);
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
    let sg = t / SGS;
    let lane = t % SGS;
    let ar = (sg / 2u) * 32u;
    let bc = (sg % 2u) * 32u;

    var c00 = frag_zero();
    var c01 = frag_zero();
    var c10 = frag_zero();
    var c11 = frag_zero();
    let steps = (P.d + BK - 1u) / BK;
    for (var s = 0u; s < steps; s++) {
        // the previous step's fragments are read; stage this step's dims
        workgroupBarrier();
        for (var i = t; i < BM * BG; i += WG) {
            let r = i / BG;
            let c = 4u * (i % BG);
            let dd = s * BK + c;
            let n = min(4u, P.d - min(dd, P.d));
            var xq = vec4<f32>(0.0);
            if (row0 + r < row_end && n > 0u) {
                xq = load4_q(vidx(P.v0, b, h, row0 + r) + dd, n);
            }
            var xk = vec4<f32>(0.0);
            if (col0 + r < P.nk && n > 0u) {
                xk = load4_k(vidx(P.v1, b, hk, col0 + r) + dd, n);
            }
            for (var j = 0u; j < 4u; j++) {
                Hs[r * AP + c + j] = f16(xq[j]);
                Hs[KB + r * AP + c + j] = f16(xk[j]);
            }
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk += 16u) {
            let a0 = load_a(ar * AP + kk, AP, lane);
            let a1 = load_a((ar + 16u) * AP + kk, AP, lane);
            let b0 = load_b(KB + bc * AP + kk, AP, lane);
            let b1 = load_b(KB + (bc + 16u) * AP + kk, AP, lane);
            c00 = mma(a0, b0, c00, lane);
            c01 = mma(a0, b1, c01, lane);
            c10 = mma(a1, b0, c10, lane);
            c11 = mma(a1, b1, c11, lane);
        }
    }
    store_c(c00, ar * CP + bc, CP, lane);
    store_c(c01, ar * CP + bc + 16u, CP, lane);
    store_c(c10, (ar + 16u) * CP + bc, CP, lane);
    store_c(c11, (ar + 16u) * CP + bc + 16u, CP, lane);
    workgroupBarrier();

    // epilogue: 4 columns per invocation
    for (var i = t; i < BM * (BN / 4u); i += WG) {
        let r = i / (BN / 4u);
        let g = (i % (BN / 4u)) * 4u;
        let gr = row0 + r;
        let gc = col0 + g;
        if (gr < row_end && gc < P.nk) {
            var x = vec4<f32>(Fs[r * CP + g], Fs[r * CP + g + 1u], Fs[r * CP + g + 2u], Fs[r * CP + g + 3u]);
            let sq = row_scale(vidx(P.v3, b, h, gr), P.pre, true);
            if (METRIC == 1u) {
                for (var c = 0u; c < 4u; c++) {
                    let sk = row_scale(vidx(P.v4, b, hk, min(gc + c, P.nk - 1u)), P.kpre, false);
                    x[c] = x[c] * sq * sk;
                }
            } else {
                x = x * (sq * P.kpre);
            }
            store4_row(b, h, hk, gr, gc, x);
        }
    }
}
