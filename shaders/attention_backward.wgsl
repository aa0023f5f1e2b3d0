// The backward pass of attention (FlashAttention-2's shape, SIMT): gradients dQ, dK, dV (and of
// the sink logits) from Q, K, V, the forward's output O and log-sum-exp, and the output's
// gradient dO, recomputing each weight from its score, so no nq x nk buffer exists and no
// atomics are used (every gradient element has one writer, and sums run in a fixed order: the
// result is the same bits run to run). CPU twin: cpu::attention_backward (and its f64
// reference, cpu::reference::attention_backward).
//
// Header constants (src/kernels/attention_backward.rs): PASS (which of the four passes this
// pipeline runs), WG (64 invocations), DP (head dim padded to 32/64/128/256: the length of each
// invocation's private vectors), TQ (query rows staged per step of pass 1), TK (keys staged per
// step of pass 2).
//
// Bindings: 1 q, 2 mask (masking.wgsl), 3 key lengths, 4 k, 5 v, 6 o, 7 d_o, 8 per-head
// parameters (ALiBi slope and sink, z units), 9 lse (natural, f32), 10 row statistics (f32,
// three per query row: D = rowsum(dO * O), the log-sum-exp in z units, the sink's share of
// d_sinks), 11 dq, 12 dk, 13 dv (f32, BHSD, contiguous), 14 d_sinks (f32, one per query head).
// Views: v0 q (pass 0: lse, row length 1), v1 k, v2 v, v3 mask, v4 d_o, v5 o.
//
// Scores follow the forward exactly (masking.wgsl): Q is multiplied by P.pre, so q·k is the z
// of the dot product; score_z applies soft-cap, ALiBi and the mask term; the weight of key j
// for row i is p = weight(z, lse_z) = exp2(max(z - lse_z, P.floor) * P.ex) (common.wgsl),
// lse_z = lse / P.unit. With
// dp = dO_i · v_j and D_i = dO_i · O_i, the score's gradient is ds = p (dp - D_i); through the
// soft-cap's tanh t, d score / d (q·k) = scale · (1 - t²); so, with g = 1 - t² (1 without
// soft-cap) and scale = P.pre · P.unit:
//   dV_j += p dO_i,   dK_j += ds g P.unit (P.pre q_i),   dQ_i += ds g P.unit (P.pre k_j),
//   d_sink_h = -sum over rows of exp(sink_h - lse_i) D_i.
// A row whose log-sum-exp is not finite (-inf: nothing kept; +inf: beyond f32) contributes
// nothing. Results are saturated to +-F32_MAX, NaN-free.
//
// Passes (each its own dispatch, in this order):
//   0: one invocation per query row: D, lse_z and the sink share into the row statistics.
//   1: one workgroup per (batch, key/value head, block of WG keys), one key per invocation: the
//      query rows of every query head of the group (GQA: dK and dV summed over the group), TQ
//      rows of Q and dO at a time through workgroup memory; dK and dV written once.
//   2: one workgroup per (batch x head, block of WG query rows), one row per invocation: the
//      keys TK at a time through workgroup memory; dQ written once.
//   3: one workgroup per query head: d_sinks as a tree sum of the rows' sink shares.

@group(0) @binding(1) var<storage, read> Q: array<elem>;
@group(0) @binding(4) var<storage, read> K: array<elem>;
@group(0) @binding(5) var<storage, read> V: array<elem>;
@group(0) @binding(6) var<storage, read> O: array<elem>;
@group(0) @binding(7) var<storage, read> DO: array<elem>;
@group(0) @binding(8) var<storage, read> HEADS: array<f32>;
@group(0) @binding(9) var<storage, read> LSE: array<f32>;
@group(0) @binding(10) var<storage, read_write> STATS: array<f32>;
@group(0) @binding(11) var<storage, read_write> DQ: array<f32>;
@group(0) @binding(12) var<storage, read_write> DK: array<f32>;
@group(0) @binding(13) var<storage, read_write> DV: array<f32>;
@group(0) @binding(14) var<storage, read_write> DSINK: array<f32>;

// staged rows (pass 1) or keys (pass 2): two matrices of TQ (TK) x DP floats
const TS: u32 = max(TQ, TK);
var<workgroup> A: array<f32, TS * DP>;
var<workgroup> B: array<f32, TS * DP>;
// per staged row (pass 1): D, lse_z, first key, key limit, position; pass 3: the tree sum
var<workgroup> Rd: array<f32, WG>;
var<workgroup> Rl: array<f32, TQ>;
var<workgroup> Rs: array<u32, TQ>;
var<workgroup> Re: array<u32, TQ>;

// A finite f32 from a sum: saturated at +-F32_MAX, NaN as 0.
fn fin(x: f32) -> f32 {
    return select(0.0, clamp(x, -F32_MAX, F32_MAX), x == x);
}

// d score / d (scaled dot product), up to the scale: 1 - tanh² under soft-cap, else 1.
fn cap_slope(zd: f32) -> f32 {
    if ((P.flags & F_SOFTCAP) == 0u) {
        return 1.0;
    }
    let t = tanh_acc(clamp(zsat(zd), -P.cap_lim, P.cap_lim) * P.cap_in);
    return 1.0 - t * t;
}

@compute @workgroup_size(WG)
fn attention_backward(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let w = linear_wg(wid, nwg);
    let d = P.d;
    let kvh = P.heads / P.group;
    let batch = P.nbh / P.heads;
    if (PASS == 0u) {
        // ---- row statistics
        let gid = w * WG + lid;
        if (gid >= P.nbh * P.nq) {
            return;
        }
        let r = gid % P.nq;
        let bh = gid / P.nq;
        let b = bh / P.heads;
        let h = bh % P.heads;
        let l = LSE[vidx(P.v0, b, h, r)];
        let io = vidx(P.v5, b, h, r);
        let ig = vidx(P.v4, b, h, r);
        var dsum = 0.0;
        for (var c = 0u; c < d; c++) {
            dsum += f32(DO[ig + c]) * f32(O[io + c]);
        }
        dsum = fin(dsum);
        // a row with nothing kept (or beyond f32) weighs nothing: its lse_z above every z
        var lz = F32_MAX;
        if (abs(l) <= F32_MAX) {
            lz = l / P.unit;
        }
        var share = 0.0;
        let sz = sink_z(h);
        if ((P.flags & F_SINK) != 0u && lz < F32_MAX) {
            share = weight(sz, lz) * dsum;
        }
        STATS[3u * gid] = dsum;
        STATS[3u * gid + 1u] = lz;
        STATS[3u * gid + 2u] = share;
        return;
    }
    if (PASS == 3u) {
        // ---- d_sinks, one workgroup per query head
        let h = w;
        if (h >= P.heads) {
            return;
        }
        var s = 0.0;
        for (var b = 0u; b < batch; b++) {
            for (var r = lid; r < P.nq; r += WG) {
                s += STATS[3u * ((b * P.heads + h) * P.nq + r) + 2u];
            }
        }
        Rd[lid] = s;
        workgroupBarrier();
        for (var n = WG / 2u; n > 0u; n /= 2u) {
            if (lid < n) {
                Rd[lid] += Rd[lid + n];
            }
            workgroupBarrier();
        }
        if (lid == 0u) {
            DSINK[h] = fin(-Rd[0]);
        }
        return;
    }
    if (PASS == 1u) {
        // ---- dK and dV: one key per invocation
        let nkb = (P.nk + WG - 1u) / WG;
        if (w >= batch * kvh * nkb) {
            return;
        }
        let kb = w % nkb;
        let bk = w / nkb;
        let b = bk / kvh;
        let hk = bk % kvh;
        let j = kb * WG + lid;
        let live = j < P.nk;
        var kj: array<f32, DP>;
        var vj: array<f32, DP>;
        var dk: array<f32, DP>;
        var dv: array<f32, DP>;
        if (live) {
            let ik = vidx(P.v1, b, hk, j);
            let iv = vidx(P.v2, b, hk, j);
            for (var c = 0u; c < d; c++) {
                kj[c] = f32(K[ik + c]);
                vj[c] = f32(V[iv + c]);
            }
        }
        for (var hh = 0u; hh < P.group; hh++) {
            let h = hk * P.group + hh;
            for (var r0 = 0u; r0 < P.nq; r0 += TQ) {
                workgroupBarrier();
                for (var t = lid; t < TQ * d; t += WG) {
                    let r = r0 + t / d;
                    let c = t % d;
                    var qv = 0.0;
                    var gv = 0.0;
                    if (r < P.nq) {
                        qv = f32(Q[vidx(P.v0, b, h, r) + c]) * P.pre;
                        gv = f32(DO[vidx(P.v4, b, h, r) + c]);
                    }
                    A[t] = qv;
                    B[t] = gv;
                }
                if (lid < TQ) {
                    let r = r0 + lid;
                    var ks = 0u;
                    var ke = 0u;
                    var dsum = 0.0;
                    var lz = F32_MAX;
                    if (r < P.nq) {
                        let g = 3u * ((b * P.heads + h) * P.nq + r);
                        dsum = STATS[g];
                        lz = STATS[g + 1u];
                        ks = key_start(b, r);
                        ke = key_limit(b, r);
                    }
                    Rd[lid] = dsum;
                    Rl[lid] = lz;
                    Rs[lid] = ks;
                    Re[lid] = ke;
                }
                workgroupBarrier();
                if (live) {
                    for (var i = 0u; i < TQ; i++) {
                        let r = r0 + i;
                        var add = 0.0;
                        if (r >= P.nq || j < Rs[i] || j >= Re[i] || Rl[i] >= F32_MAX || !mask_keep(b, h, r, j, &add)) {
                            continue;
                        }
                        var zd = 0.0;
                        var dp = 0.0;
                        for (var c = 0u; c < d; c++) {
                            zd += A[i * d + c] * kj[c];
                            dp += B[i * d + c] * vj[c];
                        }
                        let z = score_z(zd, add, h, qpos(b, r), j);
                        let p = weight(z, Rl[i]);
                        let gs = p * (dp - Rd[i]) * cap_slope(zd) * P.unit;
                        for (var c = 0u; c < d; c++) {
                            dv[c] += p * B[i * d + c];
                            dk[c] += gs * A[i * d + c];
                        }
                    }
                }
            }
        }
        if (live) {
            let o = ((b * kvh + hk) * P.nk + j) * d;
            for (var c = 0u; c < d; c++) {
                DK[o + c] = fin(dk[c]);
                DV[o + c] = fin(dv[c]);
            }
        }
        return;
    }
    // ---- PASS 2, dQ: one query row per invocation
    let nrb = (P.nq + WG - 1u) / WG;
    if (w >= P.nbh * nrb) {
        return;
    }
    let rb = w % nrb;
    let bh = w / nrb;
    let b = bh / P.heads;
    let h = bh % P.heads;
    let hk = h / P.group;
    let r = rb * WG + lid;
    var qi: array<f32, DP>;
    var gi: array<f32, DP>;
    var dq: array<f32, DP>;
    var ks = 0u;
    var ke = 0u;
    var dsum = 0.0;
    var lz = F32_MAX;
    var qp = 0i;
    if (r < P.nq) {
        let iq = vidx(P.v0, b, h, r);
        let ig = vidx(P.v4, b, h, r);
        for (var c = 0u; c < d; c++) {
            qi[c] = f32(Q[iq + c]) * P.pre;
            gi[c] = f32(DO[ig + c]);
        }
        let g = 3u * (bh * P.nq + r);
        dsum = STATS[g];
        lz = STATS[g + 1u];
        ks = key_start(b, r);
        ke = key_limit(b, r);
        qp = qpos(b, r);
    }
    let live = r < P.nq && lz < F32_MAX;
    let nk = kv_len(b);
    for (var j0 = 0u; j0 < nk; j0 += TK) {
        workgroupBarrier();
        for (var t = lid; t < TK * d; t += WG) {
            let j = j0 + t / d;
            let c = t % d;
            var kv = 0.0;
            var vv = 0.0;
            if (j < nk) {
                kv = f32(K[vidx(P.v1, b, hk, j) + c]);
                vv = f32(V[vidx(P.v2, b, hk, j) + c]);
            }
            A[t] = kv;
            B[t] = vv;
        }
        workgroupBarrier();
        if (live) {
            for (var i = 0u; i < TK; i++) {
                let j = j0 + i;
                var add = 0.0;
                if (j < ks || j >= ke || !mask_keep(b, h, r, j, &add)) {
                    continue;
                }
                var zd = 0.0;
                var dp = 0.0;
                for (var c = 0u; c < d; c++) {
                    zd += qi[c] * A[i * d + c];
                    dp += gi[c] * B[i * d + c];
                }
                let z = score_z(zd, add, h, qp, j);
                let p = weight(z, lz);
                let gs = p * (dp - dsum) * cap_slope(zd) * P.unit;
                for (var c = 0u; c < d; c++) {
                    dq[c] += gs * (P.pre * A[i * d + c]);
                }
            }
        }
    }
    if (r < P.nq) {
        let o = (bh * P.nq + r) * d;
        for (var c = 0u; c < d; c++) {
            DQ[o + c] = fin(dq[c]);
        }
    }
}
