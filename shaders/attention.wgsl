// Fused attention O = softmax(scale * Q Kᵀ + mask) V, never storing the nq x nk scores.
// Header constants (src/kernels/attention.rs, AttentionKernel): WG (threads), BC (keys per
// tile), VK (keys per V chunk), KC (head-dim chunk of K tiles), BR (query rows per workgroup),
// DP (head dim padded: 32/64/128/256), TPR (threads per query row = WG / BR), NJ = DP / TPR
// (output columns per thread), NS = BC / TPR (scores per thread per key tile), SPLIT (1:
// split-K; each workgroup takes P.split_len keys and writes partial results), VEC (4: vector
// loads of Q, K, V; 1: scalar loads).
// Bindings: 1 q, 2 mask, 3 key lengths (paged: sequence lengths), 4 k, 5 v, 6 out, 7 lse (f32),
// 8 per-head parameters (ALiBi slope and sink, z units); the paged variant adds 9, the block
// table. Views: v0 q, v1 k, v2 v (key/value head h / group; paged: head stride sh and token
// stride ss of the page pool), v3 mask, v4 out, v5 lse (row length 1).
// With SPLIT = 1, binding 7 holds partials instead: row i of v5 holds, for each split s at
// s * (d + 2), the raw accumulator (d values), the running maximum (as z) and the sum l;
// attention_merge.wgsl combines them.
//
// Scores are carried as z (common.wgsl, ScoreTransform in src/problem/mod.rs): Q is
// pre-multiplied by P.pre when staged, so S = Q Kᵀ is the z of the dot product; the mask term
// enters as add * P.mscale; weights are exp2(max(z - m, P.floor) * P.ex). No sentinel value
// stands for a dropped key: keep/drop is a bit per score, so every finite mask value is added.
// V is pre-multiplied by P.kpre and the output by P.post (powers of two that keep the
// accumulator in range).
//
// The options (masking.wgsl): the key loop covers only [key_start of the first row, key_limit
// of the last row), so a sliding window costs in proportion to its width; within, each score is
// capped, biased and masked by score_z, and a sink enters as the running maximum and a weight of
// 1 before any key (with SPLIT, attention_merge.wgsl adds it once).
//
// Each workgroup owns BR query rows (held in workgroup memory) and walks key tiles of BC
// keys: S = Q Kᵀ through K chunks of KC dims; masking; online softmax (running max m,
// per-thread partial sum l, accumulator rescaled by the weight of m_old under m_new);
// O += P V through V chunks of VK keys. Per-thread arrays have constant sizes and constant trip
// counts so that they stay in registers. Fully masked rows give 0 and lse = -inf.

// Q (binding 1), K (4) and V (5) and their load4_q/k/v come from a prelude: qkv_vec4.wgsl
// (VEC = 4: one vector load per 4 elements) or qkv_scalar.wgsl (VEC = 1); k_index and v_index
// (where key j's row starts) from kv_contiguous.wgsl or kv_paged.wgsl.
@group(0) @binding(6) var<storage, read_write> O: array<elem>;
@group(0) @binding(7) var<storage, read_write> LSE: array<f32>;
@group(0) @binding(8) var<storage, read> HEADS: array<f32>;

const KCP: u32 = KC + 1u;

var<workgroup> Qs: array<f32, BR * DP>;
var<workgroup> Ks: array<f32, BC * KCP>;
var<workgroup> Vs: array<f32, VK * DP>;
var<workgroup> Ps: array<f32, BR * BC>;
var<workgroup> red: array<f32, WG>;
var<workgroup> wkbegin: u32;
var<workgroup> wkend: u32;

@compute @workgroup_size(WG)
fn attention(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let row_blocks = (P.nr + BR - 1u) / BR;
    var nsplit = 1u;
    if (SPLIT == 1u) {
        nsplit = (P.nk + P.split_len - 1u) / P.split_len;
    }
    let wg = linear_wg(wid, nwg);
    if (wg >= P.nbh * row_blocks * nsplit) {
        return;
    }
    let split = wg % nsplit;
    let rest = wg / nsplit;
    let bh = P.bh0 + rest / row_blocks;
    let row_first = P.r0 + (rest % row_blocks) * BR;
    let row_end = min(P.r0 + P.nr, row_first + BR);
    let b = bh / P.heads;
    let h = bh % P.heads;
    let hk = h / P.group;
    let r = t / TPR;
    let c = t % TPR;
    let row = row_first + r;
    let row_ok = row < row_end;

    for (var e = t; e < BR * DP / 4u; e += WG) {
        let rr = e / (DP / 4u);
        let dd = (e % (DP / 4u)) * 4u;
        var x = vec4<f32>(0.0);
        if (row_first + rr < row_end && dd < P.d) {
            x = load4_q(vidx(P.v0, b, h, row_first + rr) + dd, min(P.d - dd, 4u)) * P.pre;
        }
        let o = rr * DP + dd;
        Qs[o] = x.x;
        Qs[o + 1u] = x.y;
        Qs[o + 2u] = x.z;
        Qs[o + 3u] = x.w;
    }
    var split_begin = 0u;
    if (SPLIT == 1u) {
        split_begin = split * P.split_len;
    }
    if (t == 0u) {
        // keys before this and past that are masked for every row of the block (or belong to
        // another split): the loop skips them, whole tiles at a time
        var kb = max(split_begin, key_start(b, row_first));
        var ke = key_limit(b, row_end - 1u);
        if (SPLIT == 1u) {
            ke = min(ke, split_begin + P.split_len);
        }
        wkbegin = kb;
        wkend = ke;
    }
    let k_begin = workgroupUniformLoad(&wkbegin);
    let kend = workgroupUniformLoad(&wkend);
    let row_start = key_start(b, row);
    let row_lim = key_limit(b, row);
    let qp = qpos(b, row);

    // a sink enters as the running maximum and a weight of 1 (in one thread of the row) before
    // any key; with SPLIT the merge adds it, once
    var m = ZNONE;
    var l = 0.0;
    if (SPLIT == 0u) {
        m = sink_z(h);
        l = select(0.0, 1.0, (P.flags & F_SINK) != 0u && c == 0u);
    }
    var acc: array<f32, NJ>;
    var s: array<f32, NS>;
    var ntiles = 0u;
    if (kend > k_begin) {
        ntiles = (kend - k_begin + BC - 1u) / BC;
    }
    for (var kt = 0u; kt < ntiles; kt++) {
        let k0 = k_begin + kt * BC;
        for (var u = 0u; u < NS; u++) {
            s[u] = 0.0;
        }
        for (var d0 = 0u; d0 < DP; d0 += KC) {
            if (d0 < P.d) {
                workgroupBarrier();
                for (var e = t; e < BC * KC / 4u; e += WG) {
                    let kk = e / (KC / 4u);
                    let dd = (e % (KC / 4u)) * 4u;
                    var x = vec4<f32>(0.0);
                    if (k0 + kk < kend && d0 + dd < P.d) {
                        x = load4_k(k_index(b, hk, k0 + kk) + d0 + dd, min(P.d - d0 - dd, 4u));
                    }
                    let o = kk * KCP + dd;
                    Ks[o] = x.x;
                    Ks[o + 1u] = x.y;
                    Ks[o + 2u] = x.z;
                    Ks[o + 3u] = x.w;
                }
                workgroupBarrier();
                for (var dd = 0u; dd < KC; dd++) {
                    let qv = Qs[r * DP + d0 + dd];
                    for (var u = 0u; u < NS; u++) {
                        s[u] += qv * Ks[(c + u * TPR) * KCP + dd];
                    }
                }
            }
        }
        // mask, then the new running max of each row across its TPR threads
        var keep = 0u;
        var pm = ZNONE;
        for (var u = 0u; u < NS; u++) {
            let j = k0 + c + u * TPR;
            var add = 0.0;
            if (row_ok && j >= row_start && j < row_lim && j < kend && mask_keep(b, h, row, j, &add)) {
                s[u] = score_z(s[u], add, h, qp, j);
                keep |= 1u << u;
                pm = max(pm, s[u]);
            }
        }
        red[t] = pm;
        workgroupBarrier();
        var mnew = m;
        for (var q = 0u; q < TPR; q++) {
            mnew = max(mnew, red[r * TPR + q]);
        }
        let alpha = weight(m, mnew);
        m = mnew;
        l *= alpha;
        for (var j = 0u; j < NJ; j++) {
            acc[j] *= alpha;
        }
        for (var u = 0u; u < NS; u++) {
            var p = 0.0;
            if ((keep & (1u << u)) != 0u) {
                p = weight(s[u], mnew);
            }
            l += p;
            Ps[r * BC + c + u * TPR] = p;
        }
        // O += P V, VK keys at a time
        for (var v0 = 0u; v0 < BC; v0 += VK) {
            workgroupBarrier();
            for (var e = t; e < VK * DP / 4u; e += WG) {
                let kk = e / (DP / 4u);
                let dd = (e % (DP / 4u)) * 4u;
                var x = vec4<f32>(0.0);
                if (k0 + v0 + kk < kend && dd < P.d) {
                    x = load4_v(v_index(b, hk, k0 + v0 + kk) + dd, min(P.d - dd, 4u)) * P.kpre;
                }
                let o = kk * DP + dd;
                Vs[o] = x.x;
                Vs[o + 1u] = x.y;
                Vs[o + 2u] = x.z;
                Vs[o + 3u] = x.w;
            }
            workgroupBarrier();
            for (var kk = 0u; kk < VK; kk++) {
                let p = Ps[r * BC + v0 + kk];
                for (var j = 0u; j < NJ; j++) {
                    acc[j] += p * Vs[kk * DP + c + j * TPR];
                }
            }
        }
    }

    workgroupBarrier();
    red[t] = l;
    workgroupBarrier();
    var lsum = 0.0;
    for (var q = 0u; q < TPR; q++) {
        lsum += red[r * TPR + q];
    }
    if (row_ok && SPLIT == 1u) {
        let pb = vidx(P.v5, b, h, row) + split * (P.d + 2u);
        for (var j = 0u; j < NJ; j++) {
            let dd = c + j * TPR;
            if (dd < P.d) {
                LSE[pb + dd] = acc[j];
            }
        }
        if (c == 0u) {
            LSE[pb + P.d] = m;
            LSE[pb + P.d + 1u] = lsum;
        }
    } else if (row_ok) {
        let inv = select(0.0, 1.0 / lsum, lsum > 0.0);
        let ob = vidx(P.v4, b, h, row);
        for (var j = 0u; j < NJ; j++) {
            let dd = c + j * TPR;
            if (dd < P.d) {
                O[ob + dd] = to_elem(acc[j] * inv * P.post);
            }
        }
        if (c == 0u && (P.flags & F_LSE) != 0u) {
            LSE[vidx(P.v5, b, h, row)] = lse_of(m, lsum);
        }
    }
}
