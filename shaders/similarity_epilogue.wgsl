// Prelude of similarity.wgsl and similarity_mma.wgsl (after scores_vec4.wgsl or
// scores_scalar.wgsl): the scores from the accumulated sums, their stores, and top-k's
// thresholded lists.
// Bindings: 4 and 5 the row norms of Q and K (row_norms.wgsl; cosine and L2 only); TOPK only: 6
// the rows' thresholds, 7 the key indices of the kept scores, 8 the rows' counts. Views: v2 the
// scores [batch, heads, nq, nk], v3 Q norms, v4 K norms (row length 2 for cosine: an exponent
// and a factor; 1 for L2), v5 the thresholds (one per query row).
// TOPK (one slice, b = h = 0): instead of writing every score, a score is kept only where it
// beats its row's threshold (the k-th best score of the keys before this chunk; every key here
// has a higher index, so a tie cannot win); kept scores are appended to the row's list in S and
// SI (indices idx0 + column), its length counted in CNT[row] (zeroed before the pass). The
// order within a list is arbitrary; the selection that reads it is exact.

@group(0) @binding(4) var<storage, read> QN: array<f32>;
@group(0) @binding(5) var<storage, read> KN: array<f32>;
@group(0) @binding(6) var<storage, read> TS: array<f32>;
@group(0) @binding(7) var<storage, read_write> SI: array<u32>;
@group(0) @binding(8) var<storage, read_write> CNT: array<atomic<u32>>;

// The score of one output from its accumulated product (cosine: already of unit rows).
fn finish(v: f32, qn: f32, kn: f32) -> f32 {
    if (METRIC == 1u) {
        return clamp(fsat(v), -1.0, 1.0);
    }
    var x = v;
    if (METRIC == 2u) {
        x = -max(fsat(qn + kn - 2.0 * v), 0.0);
    }
    return fsat(fsat(fsat(x) * P.post) * P.post2);
}

// Writes the scores of row `gr` (in range), columns gc..gc+3 (those below P.nk), from their
// accumulated products `x`; TOPK: appends those above the row's threshold to its list.
fn store4_row(b: u32, h: u32, hk: u32, gr: u32, gc: u32, x: vec4<f32>) {
    var qn = 0.0;
    if (METRIC == 2u) {
        qn = QN[vidx(P.v3, b, h, gr)];
    }
    var f = vec4<f32>(0.0);
    for (var c = 0u; c < 4u; c++) {
        var kn = 0.0;
        if (METRIC == 2u) {
            kn = KN[vidx(P.v4, b, hk, min(gc + c, P.nk - 1u))];
        }
        f[c] = finish(x[c], qn, kn);
    }
    let ob = vidx(P.v2, b, h, gr);
    if (TOPK == 1u) {
        let thr = TS[vidx(P.v5, 0u, 0u, gr)];
        var keep = vec4<bool>(false);
        for (var c = 0u; c < 4u; c++) {
            keep[c] = gc + c < P.nk && f[c] > thr;
        }
        let n = u32(keep.x) + u32(keep.y) + u32(keep.z) + u32(keep.w);
        if (n > 0u) {
            var o = ob + atomicAdd(&CNT[gr], n);
            for (var c = 0u; c < 4u; c++) {
                if (keep[c]) {
                    store1(o, f[c]);
                    SI[o] = P.idx0 + gc + c;
                    o++;
                }
            }
        }
        return;
    }
    if (gc + 4u <= P.nk && (ob + gc) % 4u == 0u) {
        store4(ob + gc, f);
    } else {
        for (var c = 0u; c < 4u; c++) {
            if (gc + c < P.nk) {
                store1(ob + gc + c, f[c]);
            }
        }
    }
}
