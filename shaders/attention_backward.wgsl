// The backward pass of attention (FlashAttention-2's shape, SIMT): gradients dQ, dK, dV (and of
// the sink logits) from Q, K, V, the forward's output O and log-sum-exp, and the output's
// gradient dO, recomputing each weight from its score, so no nq x nk buffer exists and no
// atomics are used (every gradient element has one writer, and sums run in a fixed order: the
// result is the same bits run to run). CPU twin: cpu::attention_backward (and its f64
// reference, cpu::reference::attention_backward).
//
// Header constants (src/kernels/attention_backward.rs): PASS (which of the five passes this
// pipeline runs), WG (256 invocations), DP (head dim padded to 32/64/128/256), ROW_LANES (L:
// the invocations that share KP keys in pass 1, KP query rows in pass 2), NC = DP / (4 L) (the
// vec4 registers each of them holds per vector and key or row), NS = WG / L (groups of lanes
// per workgroup), KP (1 or 2), KB = NS KP (keys, pass 1, or query rows, pass 2, per
// workgroup), TQ (query rows, pass 1, or keys, pass 2, staged per step).
//
// Bindings: 1 q, 2 mask (masking.wgsl), 3 key lengths, 4 k, 5 v, 6 o, 7 d_o, 8 per-head
// parameters (ALiBi slope and sink, z units), 9 lse (natural, f32), 10 row statistics (f32,
// three per query row: D = rowsum(dO * O), the log-sum-exp in z units, the sink's share of
// d_sinks; then, where pass 1 is split, its partial sums), 11 dq, 12 dk, 13 dv (f32, BHSD,
// contiguous), 14 d_sinks (f32, one per query head).
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
// Passes (each its own dispatch, in the order 0, 1, 4, 2, 3; 4 only where pass 1 is split, 3
// only with sinks):
//   0: one invocation per query row: D, lse_z and the sink share into the row statistics.
//   1: one workgroup per (batch, key/value head, block of KB keys). The L consecutive
//      invocations of group s hold keys s, s + NS (KP of them): each NC vec4 of every key's
//      k, v, dK and dV in registers, lane l the head-dim quads l, l + L, l + 2L, ... (so the L
//      lanes read L consecutive vec4 of a staged row: no bank conflicts). The query rows of
//      every query head of the group (GQA: dK and dV summed over the group) are staged TQ at a
//      time (Q and dO, as vec4 rows); for each row, each staged quad feeds the KP keys' partial
//      dot products q·k and dO·v, which are summed over the L lanes in one four-wide sum
//      (rows_subgroup.wgsl by shuffles, or rows_workgroup.wgsl); then each lane updates its
//      quads. Row tiles whose keys lie wholly outside this block's (causal, windows, key
//      lengths) are skipped. dK and dV are written once (split: the group's rows divided
//      among P.start workgroups per key block, each writing its partial sums for pass 4).
//   2: one workgroup per (batch x head, block of KB query rows), the same split of KP rows'
//      q, dO and dQ over L lanes; keys staged TQ at a time (K and V), only those inside the
//      block's rows' key range; dQ written once.
//   3: one workgroup per query head: d_sinks as a tree sum of the rows' sink shares.
//   4: where pass 1 is split (P.start > 1 splits of P.split_len of the group's query rows, head
//      after head, so that few keys still make many workgroups), one invocation per element of
//      dK and dV: the splits' partial sums (in STATS from element P.idx0: per split, key/value
//      slice and key, d of dK then d of dV) added in split order.
//
// Every register vector of passes 1 and 2 is a named variable, `k_{x}_{c}` for quad c of key
// (row) x: the loops `//#for NAME in COUNT {` ... `//#}` are unrolled in the text before
// compiling (src/kernels/unroll.rs), because NVIDIA's compiler (580) kept even constant-size
// arrays indexed in constant-trip loops in local memory: the first version (whole head dims in
// arrays indexed by the runtime head dim) ran at 53-169x the forward's time on an H200, the
// second (arrays of KP NC vec4 indexed in constant-trip loops) at 16-18x.

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

// vec4 quads per padded row
const D4: u32 = DP / 4u;
// staged rows (pass 1: q·pre and dO) or keys (pass 2: k and v): TQ rows of D4 quads each
var<workgroup> A: array<vec4<f32>, TQ * D4>;
var<workgroup> B: array<vec4<f32>, TQ * D4>;
// per staged row (pass 1): D, lse_z, first key, key limit; pass 3: the tree sum
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

// Quad c4 (elements 4 c4 .. 4 c4 + 3 below d, zeros past it) of the row at element `base`.
fn quad(x: u32, base: u32, c4: u32) -> vec4<f32> {
    var r = vec4<f32>(0.0);
    let c = 4u * c4;
    for (var e = 0u; e < 4u; e++) {
        if (c + e < P.d) {
            let i = base + c + e;
            var v = 0.0;
            switch x {
                case 0u: { v = f32(Q[i]); }
                case 1u: { v = f32(K[i]); }
                case 2u: { v = f32(V[i]); }
                default: { v = f32(DO[i]); }
            }
            r[e] = v;
        }
    }
    return r;
}

// Writes quad c4 of a gradient row (elements below d) at `base` of DQ (0), DK (1) or DV (2),
// saturated, or (3) of a partial sum in STATS, as it is.
fn store_quad(x: u32, base: u32, c4: u32, g: vec4<f32>) {
    let c = 4u * c4;
    for (var e = 0u; e < 4u; e++) {
        if (c + e < P.d) {
            let v = fin(g[e]);
            switch x {
                case 0u: { DQ[base + c + e] = v; }
                case 1u: { DK[base + c + e] = v; }
                case 2u: { DV[base + c + e] = v; }
                default: { STATS[base + c + e] = g[e]; }
            }
        }
    }
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
    if (PASS == 4u) {
        // ---- dK and dV from pass 1's split partial sums, in split order
        let e = w * WG + lid;
        let n = batch * kvh * P.nk * d;
        if (e >= n) {
            return;
        }
        let c = e % d;
        let row = e / d;
        var sk = 0.0;
        var sv = 0.0;
        for (var s = 0u; s < P.start; s++) {
            let o = P.idx0 + (s * batch * kvh * P.nk + row) * 2u * d + c;
            sk += STATS[o];
            sv += STATS[o + d];
        }
        DK[e] = fin(sk);
        DV[e] = fin(sv);
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
    let slot = lid / ROW_LANES;
    let lane = lid % ROW_LANES;
    if (PASS == 1u) {
        // ---- dK and dV: ROW_LANES invocations per KP keys (slot + x NS, x < KP)
        // (split s of P.start takes the group's query rows [s P.split_len, (s + 1) P.split_len),
        // counted head after head)
        let nkb = (P.nk + KB - 1u) / KB;
        let ns = max(P.start, 1u);
        if (w >= batch * kvh * nkb * ns) {
            return;
        }
        let split = w % ns;
        let kb = (w / ns) % nkb;
        let bk = w / ns / nkb;
        let b = bk / kvh;
        let hk = bk % kvh;
        let j_lo = kb * KB;
        let j_hi = min(j_lo + KB, P.nk);
        // key x's quad c of k, v, dK and dV (named registers: see the header)
        //#for x in KP {
        //#for c in NC {
        var k_{x}_{c} = vec4<f32>(0.0);
        var v_{x}_{c} = vec4<f32>(0.0);
        var dk_{x}_{c} = vec4<f32>(0.0);
        var dv_{x}_{c} = vec4<f32>(0.0);
        //#}
        //#}
        //#for x in KP {
        if (j_lo + slot + {x}u * NS < P.nk) {
            let j = j_lo + slot + {x}u * NS;
            let ik = vidx(P.v1, b, hk, j);
            let iv = vidx(P.v2, b, hk, j);
            //#for c in NC {
            k_{x}_{c} = quad(1u, ik, lane + ROW_LANES * {c}u);
            v_{x}_{c} = quad(2u, iv, lane + ROW_LANES * {c}u);
            //#}
        }
        //#}
        let g_lo = split * P.split_len;
        let g_hi = min(g_lo + P.split_len, P.group * P.nq);
        for (var hh = g_lo / max(P.nq, 1u); hh < P.group && hh * P.nq < g_hi; hh++) {
            let h = hk * P.group + hh;
            // this split's rows of head h: [r_lo, r_end)
            let r_lo = max(g_lo, hh * P.nq) - hh * P.nq;
            let r_end = min(g_hi - hh * P.nq, P.nq);
            for (var r0 = r_lo; r0 < r_end; r0 += TQ) {
                // rows' key ranges only grow with the row: the tile touches this block iff
                // its last row reaches past the block's first key and its first row starts
                // before the block's end
                let r1 = min(r0 + TQ, r_end) - 1u;
                if (key_limit(b, r1) <= j_lo || key_start(b, r0) >= j_hi) {
                    continue;
                }
                workgroupBarrier();
                for (var t = lid; t < TQ * D4; t += WG) {
                    let r = r0 + t / D4;
                    var qv = vec4<f32>(0.0);
                    var gv = vec4<f32>(0.0);
                    if (r < r_end) {
                        qv = quad(0u, vidx(P.v0, b, h, r), t % D4) * P.pre;
                        gv = quad(3u, vidx(P.v4, b, h, r), t % D4);
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
                    if (r < r_end) {
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
                for (var i = 0u; i < TQ; i++) {
                    // (q·k, dO·v) of each of the KP keys, summed over the lanes: every
                    // invocation reduces (uniform control flow), then drops what it must
                    // this lane's quads of the staged row, read once for both uses
                    //#for c in NC {
                    let qa_{c} = A[i * D4 + lane + ROW_LANES * {c}u];
                    let ga_{c} = B[i * D4 + lane + ROW_LANES * {c}u];
                    //#}
                    var acc = vec4<f32>(0.0);
                    //#for c in NC {
                    //#for x in KP {
                    acc[2u * {x}u] += dot(qa_{c}, k_{x}_{c});
                    acc[2u * {x}u + 1u] += dot(ga_{c}, v_{x}_{c});
                    //#}
                    //#}
                    acc = row_sum4(acc, lid);
                    let r = r0 + i;
                    var pw = vec2<f32>(0.0);
                    var gw = vec2<f32>(0.0);
                    //#for x in KP {
                    {
                        let j = j_lo + slot + {x}u * NS;
                        var add = 0.0;
                        if (j < P.nk && r < r_end && j >= Rs[i] && j < Re[i] && Rl[i] < F32_MAX && mask_keep(b, h, r, j, &add)) {
                            let zd = acc[2u * {x}u];
                            let z = score_z(zd, add, h, qpos(b, r), j);
                            let p = weight(z, Rl[i]);
                            pw[{x}u] = p;
                            gw[{x}u] = p * (acc[2u * {x}u + 1u] - Rd[i]) * cap_slope(zd) * P.unit;
                        }
                    }
                    //#}
                    if (any(pw != vec2<f32>(0.0))) {
                        //#for c in NC {
                        //#for x in KP {
                        dv_{x}_{c} += pw[{x}u] * ga_{c};
                        dk_{x}_{c} += gw[{x}u] * qa_{c};
                        //#}
                        //#}
                    }
                }
            }
        }
        //#for x in KP {
        {
            let j = j_lo + slot + {x}u * NS;
            if (j < P.nk && ns == 1u) {
                let o = ((b * kvh + hk) * P.nk + j) * d;
                //#for c in NC {
                store_quad(1u, o, lane + ROW_LANES * {c}u, dk_{x}_{c});
                store_quad(2u, o, lane + ROW_LANES * {c}u, dv_{x}_{c});
                //#}
            } else if (j < P.nk) {
                // this split's partial sums, summed by pass 4
                let o = P.idx0 + ((split * batch * kvh + bk) * P.nk + j) * 2u * d;
                //#for c in NC {
                store_quad(3u, o, lane + ROW_LANES * {c}u, dk_{x}_{c});
                store_quad(3u, o + d, lane + ROW_LANES * {c}u, dv_{x}_{c});
                //#}
            }
        }
        //#}
        return;
    }
    // ---- PASS 2, dQ: ROW_LANES invocations per KP query rows (slot + x NS, x < KP)
    let nrb = (P.nq + KB - 1u) / KB;
    if (w >= P.nbh * nrb) {
        return;
    }
    let rb = w % nrb;
    let bh = w / nrb;
    let b = bh / P.heads;
    let h = bh % P.heads;
    let hk = h / P.group;
    // row x's quad c of q, dO and dQ (named registers: see the header)
    //#for x in KP {
    //#for c in NC {
    var q_{x}_{c} = vec4<f32>(0.0);
    var g_{x}_{c} = vec4<f32>(0.0);
    var dq_{x}_{c} = vec4<f32>(0.0);
    //#}
    //#}
    // per row: D, lse_z, first key, key limit, position
    var dsum = vec2<f32>(0.0);
    var lz = vec2<f32>(F32_MAX);
    var ks = vec2<u32>(0u);
    var ke = vec2<u32>(0u);
    var qp = vec2<i32>(0i);
    //#for x in KP {
    if (rb * KB + slot + {x}u * NS < P.nq) {
        let r = rb * KB + slot + {x}u * NS;
        let iq = vidx(P.v0, b, h, r);
        let ig = vidx(P.v4, b, h, r);
        //#for c in NC {
        q_{x}_{c} = quad(0u, iq, lane + ROW_LANES * {c}u) * P.pre;
        g_{x}_{c} = quad(3u, ig, lane + ROW_LANES * {c}u);
        //#}
        let g = 3u * (bh * P.nq + r);
        dsum[{x}u] = STATS[g];
        lz[{x}u] = STATS[g + 1u];
        ks[{x}u] = key_start(b, r);
        ke[{x}u] = key_limit(b, r);
        qp[{x}u] = qpos(b, r);
    }
    //#}
    // the keys any row of the block can keep (key ranges only grow with the row)
    let r_last = min(rb * KB + KB, P.nq) - 1u;
    let k_lo = key_start(b, rb * KB);
    let k_hi = key_limit(b, r_last);
    for (var j0 = k_lo; j0 < k_hi; j0 += TQ) {
        workgroupBarrier();
        for (var t = lid; t < TQ * D4; t += WG) {
            let j = j0 + t / D4;
            var kv = vec4<f32>(0.0);
            var vv = vec4<f32>(0.0);
            if (j < k_hi) {
                kv = quad(1u, vidx(P.v1, b, hk, j), t % D4);
                vv = quad(2u, vidx(P.v2, b, hk, j), t % D4);
            }
            A[t] = kv;
            B[t] = vv;
        }
        workgroupBarrier();
        for (var i = 0u; i < TQ; i++) {
            // this lane's quads of the staged key, read once for both uses
            //#for c in NC {
            let ka_{c} = A[i * D4 + lane + ROW_LANES * {c}u];
            let va_{c} = B[i * D4 + lane + ROW_LANES * {c}u];
            //#}
            var acc = vec4<f32>(0.0);
            //#for c in NC {
            //#for x in KP {
            acc[2u * {x}u] += dot(q_{x}_{c}, ka_{c});
            acc[2u * {x}u + 1u] += dot(g_{x}_{c}, va_{c});
            //#}
            //#}
            acc = row_sum4(acc, lid);
            let j = j0 + i;
            var gw = vec2<f32>(0.0);
            //#for x in KP {
            {
                let r = rb * KB + slot + {x}u * NS;
                var add = 0.0;
                if (r < P.nq && lz[{x}u] < F32_MAX && j >= ks[{x}u] && j < ke[{x}u] && mask_keep(b, h, r, j, &add)) {
                    let zd = acc[2u * {x}u];
                    let z = score_z(zd, add, h, qp[{x}u], j);
                    let p = weight(z, lz[{x}u]);
                    gw[{x}u] = p * (acc[2u * {x}u + 1u] - dsum[{x}u]) * cap_slope(zd) * P.unit;
                }
            }
            //#}
            if (any(gw != vec2<f32>(0.0))) {
                //#for c in NC {
                //#for x in KP {
                dq_{x}_{c} += gw[{x}u] * ka_{c};
                //#}
                //#}
            }
        }
    }
    //#for x in KP {
    {
        let r = rb * KB + slot + {x}u * NS;
        if (r < P.nq) {
            let o = (bh * P.nq + r) * d;
            //#for c in NC {
            store_quad(0u, o, lane + ROW_LANES * {c}u, dq_{x}_{c} * P.pre);
            //#}
        }
    }
    //#}
}
