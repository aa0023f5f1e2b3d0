// Fused attention O = softmax(scale * Q Kᵀ + mask) V for f16 inputs on 16x16x16 matrix fragments:
// tensor cores through cooperative matrices (mma_hardware.wgsl) or their plain-WGSL twin
// (mma_emulated.wgsl). The score rules are attention.wgsl's (masking.wgsl: scale, soft-cap,
// ALiBi, masks, window, causal, key lengths, sinks); f32 sums, row statistics and log-sum-exp; f16
// output. No split-K (the variant selector routes few-query calls elsewhere).
// Header constants (src/kernels/attention_mma.rs): BR (query rows per workgroup: 64, 32 or 16),
// BC (keys per tile: 32 or 64; at most 32 per invocation in the softmax: BC / TPR <= 32),
// STAGES (1: each K or V tile loaded from global memory and staged in turn; 2: the next tile's
// loads issued before the current products, held in registers until its staging), SMR (1: a
// row's z kept in registers between the softmax's two passes; 0: written back to Fs),
// WG (BR / 16 subgroups of SGS), SGS (the subgroup size the hardware path runs with; 32 for the
// twin), DP (head dim padded to a multiple of 16, at most 128), TPR (invocations per query row in
// the softmax and the epilogue: WG / BR).
// Preludes: mma_*.wgsl, loads.wgsl rendered for vector or scalar loads (Q, K, V at bindings 1, 4, 5, read 4
// elements at a time), kv_contiguous.wgsl or kv_paged.wgsl (K and V through a block table),
// masking.wgsl, and rows_subgroup.wgsl (a row's maximum and sum over its TPR invocations by
// subgroup shuffles) or rows_workgroup.wgsl (through workgroup memory; ROW_LANES = TPR).
// Bindings and views: as attention.wgsl without SPLIT (6 out, 7 lse, 8 per-head parameters;
// paged: 9 the block table; v0 q, v1 k, v2 v, v3 mask, v4 out, v5 lse).
//
// A workgroup takes BR query rows (subgroup s: rows 16 s .., held as A fragments for the whole
// pass) and walks the keys in tiles of BC. Q is staged once, raw f16 (rows padded to DP + 8:
// 16-byte aligned fragments; 4 head dims per read, one vector load with vector loads). Per
// tile: K staged; S = Q Kᵀ on fragments (f32) through workgroup memory to the softmax (TPR
// invocations per row, their maximum and sum by subgroup shuffles where the adapter has them;
// z = S * P.pre, then the rules of masking.wgsl); the weights P written as f16; V staged where K
// was; O += P V on fragments. The weights are taken against a reference maximum that moves only
// when a row's maximum grows by more than 8 (log2 units): weights stay below 2^8 (f16), and the
// output fragments (which cannot be indexed) are rescaled through workgroup memory only then;
// the final division by the row sum is exact whatever the reference. Every loop and barrier is
// workgroup-uniform; rows past the end do empty work.

@group(0) @binding(6) var<storage, read_write> OUT: array<elem>;
@group(0) @binding(7) var<storage, read_write> LSE: array<f32>;
@group(0) @binding(8) var<storage, read> HEADS: array<f32>;

const QP: u32 = DP + 8u;
const PP: u32 = BC + 8u;
const SP: u32 = BC + 4u;
// groups of 4 head dims per staged row (staging reads 4 elements at a time)
const DG: u32 = DP / 4u;
// (header constants: CPT = BC / TPR, the columns of a key tile per invocation in the
// softmax; NPRE, a tile's groups per invocation with STAGES 2, held in registers between load
// and staging, 0 with STAGES 1)
// Hs: Q (BR x QP), the K or V tile (BC x QP), the weights P (BR x PP)
const KVB: u32 = BR * QP;
const PB: u32 = KVB + BC * QP;

var<workgroup> Hs: array<f16, BR * QP + BC * QP + BR * PP>;
var<workgroup> Fs: array<f32, BR * SP>;
var<workgroup> scale_row: array<f32, BR>;
var<workgroup> wkbegin: u32;
var<workgroup> wkend: u32;
var<workgroup> moved: atomic<u32>;
var<workgroup> wmoved: u32;

// Four staged values as f16 into Hs from element `o`.
fn put4(o: u32, x: vec4<f32>) {
    Hs[o] = f16(x.x);
    Hs[o + 1u] = f16(x.y);
    Hs[o + 2u] = f16(x.z);
    Hs[o + 3u] = f16(x.w);
}

// One output fragment of subgroup s, its rows multiplied by scale_row (through Fs).
fn rescale(o: FragC, s: u32, t: u32, lane: u32) -> FragC {
    store_c(o, 16u * s * SP, SP, lane);
    workgroupBarrier();
    for (var i = t; i < BR * 16u; i += WG) {
        let rr = i / 16u;
        Fs[rr * SP + i % 16u] *= scale_row[rr];
    }
    workgroupBarrier();
    let r = load_c(16u * s * SP, SP, lane);
    workgroupBarrier();
    return r;
}

// Four head dims of a K tile (a V tile where `is_v`) from key k0: element i of the tile's
// BC x DG groups; zeros past the tile, the keys' end and the head dim.
fn fetch(i: u32, k0: u32, kend: u32, b: u32, hk: u32, is_v: bool) -> vec4<f32> {
    let kk = i / DG;
    let dd = 4u * (i % DG);
    var x = vec4<f32>(0.0);
    if (i < BC * DG && k0 + kk < kend && dd < P.d) {
        let n = min(4u, P.d - dd);
        if (is_v) {
            x = load4_v(v_index(b, hk, k0 + kk) + dd, n);
        } else {
            x = load4_k(k_index(b, hk, k0 + kk) + dd, n);
        }
    }
    return x;
}

// Element i of the K/V tile into Hs.
fn stage(i: u32, x: vec4<f32>) {
    if (i < BC * DG) {
        put4(KVB + (i / DG) * QP + 4u * (i % DG), x);
    }
}

// Writes output columns 16 j .. of the block's rows from fragment `o` (scale_row: 1 / l).
fn write_fragment(o: FragC, j: u32, s: u32, t: u32, lane: u32, b: u32, h: u32, row_first: u32, row_end: u32) {
    store_c(o, 16u * s * SP, SP, lane);
    workgroupBarrier();
    for (var i = t; i < BR * 16u; i += WG) {
        let rr = i / 16u;
        let col = 16u * j + i % 16u;
        if (row_first + rr < row_end && col < P.d) {
            let x = (Fs[rr * SP + i % 16u] * scale_row[rr]) * P.kpre;
            OUT[vidx(P.v4, b, h, row_first + rr) + col] = to_elem(x * P.post);
        }
    }
    workgroupBarrier();
}

@compute @workgroup_size(WG)
fn attention_mma(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let row_blocks = (P.nr + BR - 1u) / BR;
    let wg = linear_wg(wid, nwg);
    // (uniform per workgroup)
    if (wg >= P.nbh * row_blocks) {
        return;
    }
    let bh = P.bh0 + wg / row_blocks;
    let row_first = P.r0 + (wg % row_blocks) * BR;
    let row_end = min(P.r0 + P.nr, row_first + BR);
    let b = bh / P.heads;
    let h = bh % P.heads;
    let hk = h / P.group;
    let sg = t / SGS;
    let lane = t % SGS;
    let r = t / TPR;
    let part = t % TPR;
    let row = row_first + r;
    let ok = row < row_end;

    if (t == 0u) {
        wkbegin = key_start(b, row_first);
        wkend = key_limit(b, row_end - 1u);
    }
    let k_begin = workgroupUniformLoad(&wkbegin);
    let kend = workgroupUniformLoad(&wkend);
    let lo = key_start(b, row);
    let hi = min(key_limit(b, row), kend);
    let qp = qpos(b, row);

    // Q, once: raw f16, zeros past the rows and the head dim
    for (var i = t; i < BR * DG; i += WG) {
        let rr = i / DG;
        let dd = 4u * (i % DG);
        var x = vec4<f32>(0.0);
        if (row_first + rr < row_end && dd < P.d) {
            x = load4_q(vidx(P.v0, b, h, row_first + rr) + dd, min(4u, P.d - dd));
        }
        put4(rr * QP + dd, x);
    }

    // the subgroup's Q rows as A fragments for the whole pass (Hs keeps them too: the twin's
    // fragments read it)
    workgroupBarrier();
    let qa = 16u * sg * QP;
    let q0 = load_a(qa, QP, lane);
    var q1 = q0; var q2 = q0; var q3 = q0; var q4 = q0; var q5 = q0; var q6 = q0; var q7 = q0;
    if (DP > 16u) { q1 = load_a(qa + 16u, QP, lane); }
    if (DP > 32u) { q2 = load_a(qa + 32u, QP, lane); }
    if (DP > 48u) { q3 = load_a(qa + 48u, QP, lane); }
    if (DP > 64u) { q4 = load_a(qa + 64u, QP, lane); }
    if (DP > 80u) { q5 = load_a(qa + 80u, QP, lane); }
    if (DP > 96u) { q6 = load_a(qa + 96u, QP, lane); }
    if (DP > 112u) { q7 = load_a(qa + 112u, QP, lane); }

    // the reference maximum (a sink enters as it, with a weight of 1 in part 0 of the row)
    var m = sink_z(h);
    var l = select(0.0, 1.0, (P.flags & F_SINK) != 0u && part == 0u);
    var o0 = frag_zero(); var o1 = frag_zero(); var o2 = frag_zero(); var o3 = frag_zero();
    var o4 = frag_zero(); var o5 = frag_zero(); var o6 = frag_zero(); var o7 = frag_zero();

    var ntiles = 0u;
    if (kend > k_begin) {
        ntiles = (kend - k_begin + BC - 1u) / BC;
    }
    // STAGES 2: the tile in flight, this invocation's groups of it (named registers: the
    // template loops are unrolled in the text, src/kernels/unroll.rs, since a private array
    // indexed in a loop may live in local memory)
    //#for n in NPRE {
    var pre_{n} = vec4<f32>(0.0);
    //#}
    if (STAGES == 2u && ntiles > 0u) {
        //#for n in NPRE {
        pre_{n} = fetch({n}u * WG + t, k_begin, kend, b, hk, false);
        //#}
    }
    for (var kt = 0u; kt < ntiles; kt++) {
        let k0 = k_begin + kt * BC;
        // the previous tile's readers of the K/V tile, P and Fs are done
        workgroupBarrier();
        if (t == 0u) {
            atomicStore(&moved, 0u);
        }
        if (STAGES == 2u) {
            //#for n in NPRE {
            stage({n}u * WG + t, pre_{n});
            //#}
        } else {
            for (var i = t; i < BC * DG; i += WG) {
                stage(i, fetch(i, k0, kend, b, hk, false));
            }
        }
        workgroupBarrier();
        // STAGES 2: V's loads in flight during the products
        if (STAGES == 2u) {
            //#for n in NPRE {
            pre_{n} = fetch({n}u * WG + t, k0, kend, b, hk, true);
            //#}
        }
        // S = Q Kᵀ: the subgroup's 16 rows x BC keys, 16 keys at a time
        for (var nb = 0u; nb < BC; nb += 16u) {
            let kb = KVB + nb * QP;
            var sc = mma(q0, load_b(kb, QP, lane), frag_zero(), lane);
            if (DP > 16u) { sc = mma(q1, load_b(kb + 16u, QP, lane), sc, lane); }
            if (DP > 32u) { sc = mma(q2, load_b(kb + 32u, QP, lane), sc, lane); }
            if (DP > 48u) { sc = mma(q3, load_b(kb + 48u, QP, lane), sc, lane); }
            if (DP > 64u) { sc = mma(q4, load_b(kb + 64u, QP, lane), sc, lane); }
            if (DP > 80u) { sc = mma(q5, load_b(kb + 80u, QP, lane), sc, lane); }
            if (DP > 96u) { sc = mma(q6, load_b(kb + 96u, QP, lane), sc, lane); }
            if (DP > 112u) { sc = mma(q7, load_b(kb + 112u, QP, lane), sc, lane); }
            store_c(sc, 16u * sg * SP + nb, SP, lane);
        }
        workgroupBarrier();

        // V where K was (every fragment of K has been read)
        if (STAGES == 2u) {
            //#for n in NPRE {
            stage({n}u * WG + t, pre_{n});
            //#}
        } else {
            for (var i = t; i < BC * DG; i += WG) {
                stage(i, fetch(i, k0, kend, b, hk, true));
            }
        }
        // the softmax: this invocation's CPT keys of its row, as z with the score rules (SMR 1:
        // z kept in registers for the second pass)
        var keep = 0u;
        var tmax = ZNONE;
        //#for c in CPT {
        var zr_{c} = 0.0;
        {
            let col = part * CPT + {c}u;
            let j = k0 + col;
            var add = 0.0;
            if (ok && j >= lo && j < hi && mask_keep(b, h, row, j, &add)) {
                let z = score_z(Fs[r * SP + col] * P.pre, add, h, qp, j);
                if (SMR == 1u) {
                    zr_{c} = z;
                } else {
                    Fs[r * SP + col] = z;
                }
                keep |= 1u << {c}u;
                tmax = max(tmax, z);
            }
        }
        //#}
        let mn = max(m, row_max(tmax, t, 0u));
        var alpha = 1.0;
        if ((mn - m) * P.ex > 8.0) {
            alpha = weight(m, mn);
            m = mn;
        }
        l *= alpha;
        if (part == 0u) {
            scale_row[r] = alpha;
            if (alpha != 1.0) {
                atomicStore(&moved, 1u);
            }
        }
        //#for c in CPT {
        {
            let col = part * CPT + {c}u;
            var p = 0.0;
            if ((keep & (1u << {c}u)) != 0u) {
                if (SMR == 1u) {
                    p = weight(zr_{c}, m);
                } else {
                    p = weight(Fs[r * SP + col], m);
                }
            }
            let ph = f16(p);
            Hs[PB + r * PP + col] = ph;
            l += f32(ph);
        }
        //#}
        workgroupBarrier();
        if (t == 0u) {
            wmoved = atomicLoad(&moved);
        }
        // the output rows whose reference moved (none before the first tile's products)
        if (workgroupUniformLoad(&wmoved) != 0u && kt > 0u) {
            o0 = rescale(o0, sg, t, lane);
            if (DP > 16u) { o1 = rescale(o1, sg, t, lane); }
            if (DP > 32u) { o2 = rescale(o2, sg, t, lane); }
            if (DP > 48u) { o3 = rescale(o3, sg, t, lane); }
            if (DP > 64u) { o4 = rescale(o4, sg, t, lane); }
            if (DP > 80u) { o5 = rescale(o5, sg, t, lane); }
            if (DP > 96u) { o6 = rescale(o6, sg, t, lane); }
            if (DP > 112u) { o7 = rescale(o7, sg, t, lane); }
        }
        // STAGES 2: the next K tile's loads in flight during the products
        if (STAGES == 2u && kt + 1u < ntiles) {
            //#for n in NPRE {
            pre_{n} = fetch({n}u * WG + t, k0 + BC, kend, b, hk, false);
            //#}
        }
        // O += P V: the subgroup's 16 rows, 16 keys at a time
        for (var kk = 0u; kk < BC; kk += 16u) {
            let a = load_a(PB + 16u * sg * PP + kk, PP, lane);
            let vb = KVB + kk * QP;
            o0 = mma(a, load_bt(vb, QP, lane), o0, lane);
            if (DP > 16u) { o1 = mma(a, load_bt(vb + 16u, QP, lane), o1, lane); }
            if (DP > 32u) { o2 = mma(a, load_bt(vb + 32u, QP, lane), o2, lane); }
            if (DP > 48u) { o3 = mma(a, load_bt(vb + 48u, QP, lane), o3, lane); }
            if (DP > 64u) { o4 = mma(a, load_bt(vb + 64u, QP, lane), o4, lane); }
            if (DP > 80u) { o5 = mma(a, load_bt(vb + 80u, QP, lane), o5, lane); }
            if (DP > 96u) { o6 = mma(a, load_bt(vb + 96u, QP, lane), o6, lane); }
            if (DP > 112u) { o7 = mma(a, load_bt(vb + 112u, QP, lane), o7, lane); }
        }
    }

    // the row sums, then the normalised output, a fragment at a time
    let lsum = row_sum(l, t, 0u);
    if (part == 0u) {
        scale_row[r] = select(0.0, 1.0 / lsum, lsum > 0.0);
        if (ok && (P.flags & F_LSE) != 0u) {
            LSE[vidx(P.v5, b, h, row)] = lse_of(m, lsum);
        }
    }
    workgroupBarrier();
    write_fragment(o0, 0u, sg, t, lane, b, h, row_first, row_end);
    if (DP > 16u) { write_fragment(o1, 1u, sg, t, lane, b, h, row_first, row_end); }
    if (DP > 32u) { write_fragment(o2, 2u, sg, t, lane, b, h, row_first, row_end); }
    if (DP > 48u) { write_fragment(o3, 3u, sg, t, lane, b, h, row_first, row_end); }
    if (DP > 64u) { write_fragment(o4, 4u, sg, t, lane, b, h, row_first, row_end); }
    if (DP > 80u) { write_fragment(o5, 5u, sg, t, lane, b, h, row_first, row_end); }
    if (DP > 96u) { write_fragment(o6, 6u, sg, t, lane, b, h, row_first, row_end); }
    if (DP > 112u) { write_fragment(o7, 7u, sg, t, lane, b, h, row_first, row_end); }
}
