// Fused attention O = softmax(scale * Q Kᵀ + mask) V, never storing the nq x nk scores.
// Header constants (src/kernels/attention.rs, AttentionKernel): WG (256 threads), BR (64 query
// rows per workgroup), BC (64 or 32 keys per tile), KC (head-dim chunk of the Q and K tiles), VK (keys
// per V chunk), DP (head dim padded: 32/64/128/256), NV = DP / 32 (output vec4 columns per thread
// and row), SG (1: row max and sum by subgroup shuffles; 0: through workgroup memory), SPLIT (1:
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
// Work split (register micro-tiles): thread t is lane tx = t % 8 of row pair ty = t / 8; it owns
// query rows 2ty and 2ty+1 of the block, keys 4tx..4tx+3 and (with BC = 64) 32+4tx..32+4tx+3
// of each key tile (a 2 x 8 tile of S in four vec4 registers; 2 x 4 with BC = 32, the tile of
// devices with 16 KiB of workgroup memory), and output columns 4(tx + 8i)..+3, i < NV, of
// its two rows (2 x NV vec4 accumulators). The 8 lanes of a row pair are consecutive
// invocations, so with subgroups of 8 or more they share a subgroup and reduce a row's max and
// sum by shuffle-xor, without a barrier. Q and K chunks are staged dim-major (Qs: rows as vec2,
// Ks: keys as vec4, rows padded by 4 floats), so one vec2 and two vec4 loads feed 16 FMAs; the
// weights P go to workgroup memory key-major (Ps: a vec2 per key and row pair) and V chunks
// row-major, so one vec2 and NV vec4 loads feed 8·NV FMAs. The online-softmax rescale touches
// only the thread's own accumulators. Every accumulator is a named variable (no dynamically
// indexed per-thread array, which some drivers place in slow local memory). Fully masked rows
// give 0 and lse = -inf.

// Q (binding 1), K (4) and V (5) and their load4_q/k/v come from loads.wgsl, rendered for
// vector loads (VEC = 4: one per 4 elements), scalar loads (VEC = 1) or quantized page pools
// (dequantized in registers); k_index and v_index (where key j's row starts) from kv_contiguous.wgsl or kv_paged.wgsl; row_max and row_sum
// (over the 8 lanes of a row pair) from rows_subgroup.wgsl (SG = 1) or rows_workgroup.wgsl.
@group(0) @binding(6) var<storage, read_write> O: array<elem>;
@group(0) @binding(7) var<storage, read_write> LSE: array<f32>;
@group(0) @binding(8) var<storage, read> HEADS: array<f32>;

// padded row pitch of the dim-major tiles, in vec2 (Qs, Ps) and vec4 (Ks) units
const P2: u32 = (BR + 4u) / 2u;
const P4: u32 = (BC + 4u) / 4u;
// K chunk and V chunk share one region (they are never live together)
const KV4: u32 = max(KC * P4, VK * DP / 4u);

var<workgroup> Qs: array<vec2<f32>, KC * P2>;
var<workgroup> KVs: array<vec4<f32>, KV4>;
var<workgroup> Ps: array<vec2<f32>, BC * P2>;
// the block's rows as workgroup 0 found them: (sequence, first row, end row, first packed row),
// and its keys: (first key, key end, first packed key)
var<workgroup> wrows: vec4<u32>;
var<workgroup> wkeys: vec4<u32>;
// F_VARLEN: where the block's sequence starts in the packed Q (and the output, the lse); the
// keys' start is `koff` (kv_contiguous.wgsl). 0 otherwise.
var<private> qoff: u32;

// The last sequence s of the pack with cu_q(s) / BR + s <= g (0 if none): the owner of row
// block g (F_VARLEN).
fn seq_of_block(g: u32) -> u32 {
    var lo = 0u;
    var hi = max(P.start, 1u) - 1u;
    while (lo < hi) {
        let mid = (lo + hi + 1u) / 2u;
        if (cu_q(mid) / BR + mid <= g) {
            lo = mid;
        } else {
            hi = mid - 1u;
        }
    }
    return lo;
}

// Saturates four z values (NaN to -ZSAT), as zsat.
fn zsat4(z: vec4<f32>) -> vec4<f32> {
    return select(select(vec4<f32>(-ZSAT), vec4<f32>(ZSAT), z > vec4<f32>(0.0)), z, abs(z) <= vec4<f32>(ZSAT));
}

// Scores of keys j0..j0+3 for one row: the transform, masks and bounds of score_z and
// masking.wgsl; bit c of *keep is set for each key kept. `plain`: nothing but the saturation
// applies and every key lies in [lo, hi).
fn mask4(s: vec4<f32>, plain: bool, b: u32, h: u32, row: u32, ok: bool, j0: u32, lo: u32, hi: u32, qp: i32, keep: ptr<function, u32>) -> vec4<f32> {
    if (plain) {
        *keep = 15u;
        return zsat4(s);
    }
    var r = s;
    var k = 0u;
    for (var c = 0u; c < 4u; c++) {
        let j = j0 + c;
        var add = 0.0;
        if (ok && j >= lo && j < hi && mask_keep(b, h, row, j, &add)) {
            r[c] = score_z(s[c], add, h, qp, j);
            k |= 1u << c;
        }
    }
    *keep = k;
    return r;
}

// The weights of four scores under running max m (0 for dropped keys).
fn weights4(s: vec4<f32>, keep: u32, m: f32) -> vec4<f32> {
    let w = exp2(max(s - vec4<f32>(m), vec4<f32>(P.floor)) * P.ex);
    let kb = vec4<u32>(keep) & vec4<u32>(1u, 2u, 4u, 8u);
    return select(vec4<f32>(0.0), w, kb != vec4<u32>(0u));
}

// The largest kept score of four (ZNONE if none).
fn max4(s: vec4<f32>, keep: u32) -> f32 {
    let kb = vec4<u32>(keep) & vec4<u32>(1u, 2u, 4u, 8u);
    let x = select(vec4<f32>(ZNONE), s, kb != vec4<u32>(0u));
    return max(max(x.x, x.y), max(x.z, x.w));
}

// Writes columns col..col+3 of an output row (those below d), scaled, in the storage type.
fn store4(base: u32, col: u32, x: vec4<f32>) {
    for (var c = 0u; c < 4u; c++) {
        if (col + c < P.d) {
            O[base + col + c] = to_elem(x[c] * P.post);
        }
    }
}

// Writes columns col..col+3 of a partial accumulator row (those below d).
fn store4_partial(base: u32, col: u32, x: vec4<f32>) {
    for (var c = 0u; c < 4u; c++) {
        if (col + c < P.d) {
            LSE[base + col + c] = x[c];
        }
    }
}

// Writes one row's result, lane tx's columns 4(tx + 8i)..: with SPLIT the raw accumulator and
// (lane 0) the running max m and sum l of this split into the partials, else the normalised
// output and (lane 0, if wanted) the log-sum-exp.
fn write_row(b: u32, h: u32, row: u32, split: u32, tx: u32, m: f32, l: f32,
             o0: vec4<f32>, o1: vec4<f32>, o2: vec4<f32>, o3: vec4<f32>,
             o4: vec4<f32>, o5: vec4<f32>, o6: vec4<f32>, o7: vec4<f32>) {
    let c0 = 4u * tx;
    if (SPLIT == 1u) {
        let pb = vidx(P.v5, b, h, qoff + row) + split * (P.d + 2u);
        store4_partial(pb, c0, o0);
        if (NV > 1u) { store4_partial(pb, c0 + 32u, o1); }
        if (NV > 2u) { store4_partial(pb, c0 + 64u, o2); store4_partial(pb, c0 + 96u, o3); }
        if (NV > 4u) {
            store4_partial(pb, c0 + 128u, o4); store4_partial(pb, c0 + 160u, o5);
            store4_partial(pb, c0 + 192u, o6); store4_partial(pb, c0 + 224u, o7);
        }
        if (tx == 0u) {
            LSE[pb + P.d] = m;
            LSE[pb + P.d + 1u] = l;
        }
        return;
    }
    let inv = select(0.0, 1.0 / l, l > 0.0);
    let ob = vidx(P.v4, b, h, qoff + row);
    store4(ob, c0, o0 * inv);
    if (NV > 1u) { store4(ob, c0 + 32u, o1 * inv); }
    if (NV > 2u) { store4(ob, c0 + 64u, o2 * inv); store4(ob, c0 + 96u, o3 * inv); }
    if (NV > 4u) {
        store4(ob, c0 + 128u, o4 * inv); store4(ob, c0 + 160u, o5 * inv);
        store4(ob, c0 + 192u, o6 * inv); store4(ob, c0 + 224u, o7 * inv);
    }
    if (tx == 0u && (P.flags & F_LSE) != 0u) {
        LSE[vidx(P.v5, b, h, qoff + row)] = lse_of(m, l);
    }
}

// The staged values in flight: the next chunk's, loaded into registers before the current
// chunk's products (so that global latency overlaps them) and stored after the next barrier.
// A Q/K chunk element e holds (q, k) in (r0, r1), element e + WG in (r2, r3); a V chunk element
// e + i WG holds its vec4 in r_i.
var<private> r0: vec4<f32>;
var<private> r1: vec4<f32>;
var<private> r2: vec4<f32>;
var<private> r3: vec4<f32>;

// Where one block's staging reads: its batch, heads, rows and key range.
struct Block {
    b: u32,
    h: u32,
    hk: u32,
    row_first: u32,
    row_end: u32,
    kend: u32,
}

// Element e of the Q/K chunk at head dim d0 for the key tile at k0: row (e / 2) % 64 and dim
// quad 2 (e / 128) + e % 2, so pairs of lanes read 32 contiguous bytes and the transposed
// stores do not conflict. Zeros outside the rows, keys and head dim.
fn qk_element(e: u32, d0: u32, k0: u32, bl: Block) -> array<vec4<f32>, 2> {
    var x = array<vec4<f32>, 2>(vec4<f32>(0.0), vec4<f32>(0.0));
    let rr = (e / 2u) % BR;
    let dd = d0 + 4u * (2u * (e / (2u * BR)) + e % 2u);
    if (e < BR * KC / 4u && dd < P.d) {
        if (bl.row_first + rr < bl.row_end) {
            x[0] = load4_q(vidx(P.v0, bl.b, bl.h, qoff + bl.row_first + rr) + dd, min(P.d - dd, 4u)) * P.pre;
        }
        if (rr < BC && k0 + rr < bl.kend) {
            x[1] = load4_k(k_index(bl.b, bl.hk, k0 + rr) + dd, min(P.d - dd, 4u));
        }
    }
    return x;
}

fn fetch_qk(t: u32, d0: u32, k0: u32, bl: Block) {
    let a = qk_element(t, d0, k0, bl);
    r0 = a[0];
    r1 = a[1];
    if (BR * KC / 4u > WG) {
        let c = qk_element(t + WG, d0, k0, bl);
        r2 = c[0];
        r3 = c[1];
    }
}

fn qk_store(e: u32, xq: vec4<f32>, xk: vec4<f32>) {
    if (e >= BR * KC / 4u) {
        return;
    }
    let rr = (e / 2u) % BR;
    let qd = 2u * (e / (2u * BR)) + e % 2u;
    let qi = 4u * qd * P2 + rr / 2u;
    let hh = rr % 2u;
    Qs[qi][hh] = xq.x;
    Qs[qi + P2][hh] = xq.y;
    Qs[qi + 2u * P2][hh] = xq.z;
    Qs[qi + 3u * P2][hh] = xq.w;
    if (rr < BC) {
        let ki = 4u * qd * P4 + rr / 4u;
        let qq = rr % 4u;
        KVs[ki][qq] = xk.x;
        KVs[ki + P4][qq] = xk.y;
        KVs[ki + 2u * P4][qq] = xk.z;
        KVs[ki + 3u * P4][qq] = xk.w;
    }
}

// Element e of the V chunk of keys k0 + v0 ..: key e / (DP / 4), dims 4 (e % (DP / 4)) ..,
// prescaled; zeros outside the keys and head dim.
fn v_element(e: u32, v0: u32, k0: u32, bl: Block) -> vec4<f32> {
    let kk = e / (DP / 4u);
    let dd = (e % (DP / 4u)) * 4u;
    if (e < VK * DP / 4u && k0 + v0 + kk < bl.kend && dd < P.d) {
        return load4_v(v_index(bl.b, bl.hk, k0 + v0 + kk) + dd, min(P.d - dd, 4u)) * P.kpre;
    }
    return vec4<f32>(0.0);
}

fn fetch_v(t: u32, v0: u32, k0: u32, bl: Block) {
    r0 = v_element(t, v0, k0, bl);
    if (VK * DP / 4u > WG) {
        r1 = v_element(t + WG, v0, k0, bl);
    }
    if (VK * DP / 4u > 2u * WG) {
        r2 = v_element(t + 2u * WG, v0, k0, bl);
        r3 = v_element(t + 3u * WG, v0, k0, bl);
    }
}

fn v_store(t: u32) {
    if (t < VK * DP / 4u) {
        KVs[t] = r0;
    }
    if (VK * DP / 4u > WG) {
        KVs[t + WG] = r1;
    }
    if (VK * DP / 4u > 2u * WG) {
        KVs[t + 2u * WG] = r2;
        KVs[t + 3u * WG] = r3;
    }
}

@compute @workgroup_size(WG)
fn attention(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    // F_VARLEN (one dispatch over a pack of P.start sequences, P.nbh = heads, P.nr = the
    // packed query rows): sequence s owns blocks [S_s, S_s + ceil(len_s / BR)) of the
    // P.nr / BR + P.start blocks per head, S_s = cu_q(s) / BR + s (increasing: README,
    // "Packed variable-length sequences"); the rest of [S_s, S_s+1) is empty and returns
    let varlen = (P.flags & F_VARLEN) != 0u;
    var row_blocks = (P.nr + BR - 1u) / BR;
    if (varlen) {
        row_blocks = P.nr / BR + P.start;
    }
    var nsplit = 1u;
    if (SPLIT == 1u) {
        nsplit = (P.nk + P.split_len - 1u) / P.split_len;
    }
    let wg = linear_wg(wid, nwg);
    // (uniform per workgroup: the whole workgroup returns or none of it)
    if (wg >= P.nbh * row_blocks * nsplit) {
        return;
    }
    let split = wg % nsplit;
    let rest = wg / nsplit;
    let bh = P.bh0 + rest / row_blocks;
    let h = bh % P.heads;
    let hk = h / P.group;
    let tx = t % 8u;
    let ty = t / 8u;

    var split_begin = 0u;
    if (SPLIT == 1u) {
        split_begin = split * P.split_len;
    }
    if (t == 0u) {
        var s = bh / P.heads;
        var rf = P.r0 + (rest % row_blocks) * BR;
        var re = min(P.r0 + P.nr, rf + BR);
        var q0 = 0u;
        var k0 = 0u;
        if (varlen) {
            let g = rest % row_blocks;
            s = seq_of_block(g);
            let first = cu_q(s) / BR + s;
            rf = select(0u, (g - first) * BR, g >= first);
            re = select(rf, min(q_rows(s), rf + BR), g >= first);
            q0 = cu_q(s);
            k0 = cu_k(s);
        }
        // keys before this and past that are masked for every row of the block (or belong to
        // another split): the loop skips them, whole tiles at a time
        var kb = max(split_begin, key_start(s, rf));
        if ((P.flags & F_FIXED) != 0u) {
            // the fixed reduction order: tiles at multiples of BC from the split's start
            kb = split_begin + (kb - split_begin) / BC * BC;
        }
        var ke = 0u;
        if (re > rf) {
            ke = key_limit(s, re - 1u);
        }
        if (SPLIT == 1u) {
            ke = min(ke, split_begin + P.split_len);
        }
        wrows = vec4<u32>(s, rf, re, q0);
        wkeys = vec4<u32>(kb, ke, k0, 0u);
    }
    let rows = workgroupUniformLoad(&wrows);
    let keys = workgroupUniformLoad(&wkeys);
    // (an empty block of a pack)
    if (rows.y >= rows.z) {
        return;
    }
    let b = rows.x;
    let row_first = rows.y;
    let row_end = rows.z;
    qoff = rows.w;
    koff = keys.z;
    let k_begin = keys.x;
    let kend = keys.y;
    let row_a = row_first + 2u * ty;
    let row_b = row_a + 1u;
    let ok_a = row_a < row_end;
    let ok_b = row_b < row_end;
    let lo_a = key_start(b, row_a);
    let hi_a = min(key_limit(b, row_a), kend);
    let lo_b = key_start(b, row_b);
    let hi_b = min(key_limit(b, row_b), kend);
    let qp_a = qpos(b, row_a);
    let qp_b = qpos(b, row_b);
    let simple = (P.flags & (F_MASK | F_SOFTCAP | F_ALIBI)) == 0u;

    // a sink enters as the running maximum and a weight of 1 (in lane 0 of the row) before
    // any key; with SPLIT the merge adds it, once
    var m_a = ZNONE;
    var m_b = ZNONE;
    var l_a = 0.0;
    var l_b = 0.0;
    if (SPLIT == 0u) {
        m_a = sink_z(h);
        m_b = m_a;
        let one = select(0.0, 1.0, (P.flags & F_SINK) != 0u && tx == 0u);
        l_a = one;
        l_b = one;
    }
    // the output accumulators: row a and row b, vec4 columns tx + 8i
    var oa0 = vec4<f32>(0.0); var oa1 = vec4<f32>(0.0); var oa2 = vec4<f32>(0.0); var oa3 = vec4<f32>(0.0);
    var oa4 = vec4<f32>(0.0); var oa5 = vec4<f32>(0.0); var oa6 = vec4<f32>(0.0); var oa7 = vec4<f32>(0.0);
    var ob0 = vec4<f32>(0.0); var ob1 = vec4<f32>(0.0); var ob2 = vec4<f32>(0.0); var ob3 = vec4<f32>(0.0);
    var ob4 = vec4<f32>(0.0); var ob5 = vec4<f32>(0.0); var ob6 = vec4<f32>(0.0); var ob7 = vec4<f32>(0.0);

    var ntiles = 0u;
    if (kend > k_begin) {
        ntiles = (kend - k_begin + BC - 1u) / BC;
    }
    // head-dim chunks that hold some of the head dim
    let nchunks = (min(P.d, DP) + KC - 1u) / KC;
    let bl = Block(b, h, hk, row_first, row_end, kend);
    if (ntiles > 0u) {
        fetch_qk(t, 0u, k_begin, bl);
    }
    for (var kt = 0u; kt < ntiles; kt++) {
        let k0 = k_begin + kt * BC;
        // S = Q Kᵀ for the thread's 2 rows x 8 keys, KC dims at a time
        var sa0 = vec4<f32>(0.0);
        var sa1 = vec4<f32>(0.0);
        var sb0 = vec4<f32>(0.0);
        var sb1 = vec4<f32>(0.0);
        for (var c = 0u; c < nchunks; c++) {
            workgroupBarrier();
            qk_store(t, r0, r1);
            qk_store(t + WG, r2, r3);
            workgroupBarrier();
            // the next chunk's loads (or the first V chunk's) fly during this chunk's products
            if (c + 1u < nchunks) {
                fetch_qk(t, (c + 1u) * KC, k0, bl);
            } else {
                fetch_v(t, 0u, k0, bl);
            }
            for (var dd = 0u; dd < KC; dd++) {
                let q = Qs[dd * P2 + ty];
                let ka = KVs[dd * P4 + tx];
                sa0 += q.x * ka;
                sb0 += q.y * ka;
                if (BC == 64u) {
                    let kb = KVs[dd * P4 + 8u + tx];
                    sa1 += q.x * kb;
                    sb1 += q.y * kb;
                }
            }
        }
        // mask and transform; the new running max of each row over its 8 lanes
        let ja = k0 + 4u * tx;
        let jb = ja + 32u;
        let plain_a = simple && ok_a && k0 >= lo_a && k0 + BC <= hi_a;
        let plain_b = simple && ok_b && k0 >= lo_b && k0 + BC <= hi_b;
        var ka0 = 0u;
        var ka1 = 0u;
        var kb0 = 0u;
        var kb1 = 0u;
        sa0 = mask4(sa0, plain_a, b, h, row_a, ok_a, ja, lo_a, hi_a, qp_a, &ka0);
        sb0 = mask4(sb0, plain_b, b, h, row_b, ok_b, ja, lo_b, hi_b, qp_b, &kb0);
        if (BC == 64u) {
            sa1 = mask4(sa1, plain_a, b, h, row_a, ok_a, jb, lo_a, hi_a, qp_a, &ka1);
            sb1 = mask4(sb1, plain_b, b, h, row_b, ok_b, jb, lo_b, hi_b, qp_b, &kb1);
        }
        let mn_a = max(m_a, row_max(max(max4(sa0, ka0), max4(sa1, ka1)), t, 0u));
        let mn_b = max(m_b, row_max(max(max4(sb0, kb0), max4(sb1, kb1)), t, 1u));
        let al_a = weight(m_a, mn_a);
        let al_b = weight(m_b, mn_b);
        m_a = mn_a;
        m_b = mn_b;
        let pa0 = weights4(sa0, ka0, mn_a);
        let pa1 = weights4(sa1, ka1, mn_a);
        let pb0 = weights4(sb0, kb0, mn_b);
        let pb1 = weights4(sb1, kb1, mn_b);
        l_a = l_a * al_a + dot(pa0 + pa1, vec4<f32>(1.0));
        l_b = l_b * al_b + dot(pb0 + pb1, vec4<f32>(1.0));
        oa0 *= al_a; oa1 *= al_a; oa2 *= al_a; oa3 *= al_a; oa4 *= al_a; oa5 *= al_a; oa6 *= al_a; oa7 *= al_a;
        ob0 *= al_b; ob1 *= al_b; ob2 *= al_b; ob3 *= al_b; ob4 *= al_b; ob5 *= al_b; ob6 *= al_b; ob7 *= al_b;
        // P, key-major: a vec2 (rows a, b) per key and row pair. (The previous tile's readers
        // of Ps passed the barriers of this tile's staging.)
        let pi = 4u * tx * P2 + ty;
        Ps[pi] = vec2<f32>(pa0.x, pb0.x);
        Ps[pi + P2] = vec2<f32>(pa0.y, pb0.y);
        Ps[pi + 2u * P2] = vec2<f32>(pa0.z, pb0.z);
        Ps[pi + 3u * P2] = vec2<f32>(pa0.w, pb0.w);
        if (BC == 64u) {
            let pj = pi + 32u * P2;
            Ps[pj] = vec2<f32>(pa1.x, pb1.x);
            Ps[pj + P2] = vec2<f32>(pa1.y, pb1.y);
            Ps[pj + 2u * P2] = vec2<f32>(pa1.z, pb1.z);
            Ps[pj + 3u * P2] = vec2<f32>(pa1.w, pb1.w);
        }
        // O += P V, VK keys at a time (past kend the weights and values are zeros)
        for (var v0 = 0u; v0 < BC; v0 += VK) {
            {
                workgroupBarrier();
                v_store(t);
                workgroupBarrier();
                // the next V chunk's loads (or the next tile's first Q/K chunk's) fly during
                // this chunk's products
                if (v0 + VK < BC) {
                    fetch_v(t, v0 + VK, k0, bl);
                } else if (kt + 1u < ntiles) {
                    fetch_qk(t, 0u, k0 + BC, bl);
                }
                for (var kk = 0u; kk < VK; kk++) {
                    let p = Ps[(v0 + kk) * P2 + ty];
                    let vb = kk * (DP / 4u) + tx;
                    let v_0 = KVs[vb];
                    oa0 += p.x * v_0;
                    ob0 += p.y * v_0;
                    if (NV > 1u) {
                        let v_1 = KVs[vb + 8u];
                        oa1 += p.x * v_1;
                        ob1 += p.y * v_1;
                    }
                    if (NV > 2u) {
                        let v_2 = KVs[vb + 16u];
                        let v_3 = KVs[vb + 24u];
                        oa2 += p.x * v_2;
                        ob2 += p.y * v_2;
                        oa3 += p.x * v_3;
                        ob3 += p.y * v_3;
                    }
                    if (NV > 4u) {
                        let v_4 = KVs[vb + 32u];
                        let v_5 = KVs[vb + 40u];
                        let v_6 = KVs[vb + 48u];
                        let v_7 = KVs[vb + 56u];
                        oa4 += p.x * v_4;
                        ob4 += p.y * v_4;
                        oa5 += p.x * v_5;
                        ob5 += p.y * v_5;
                        oa6 += p.x * v_6;
                        ob6 += p.y * v_6;
                        oa7 += p.x * v_7;
                        ob7 += p.y * v_7;
                    }
                }
            }
        }
    }

    let ls_a = row_sum(l_a, t, 0u);
    let ls_b = row_sum(l_b, t, 1u);
    if (ok_a) {
        write_row(b, h, row_a, split, tx, m_a, ls_a, oa0, oa1, oa2, oa3, oa4, oa5, oa6, oa7);
    }
    if (ok_b) {
        write_row(b, h, row_b, split, tx, m_b, ls_b, ob0, ob1, ob2, ob3, ob4, ob5, ob6, ob7);
    }
}
