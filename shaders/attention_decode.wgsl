// Attention for few query rows against many keys (decode): split-K partials for
// attention_merge.wgsl, one workgroup per (batch, key/value head, block of R rows, split).
// Header constants (src/kernels/attention_decode.rs, DecodeKernel): WG (128 threads), R (rows
// per workgroup: 1, 2 or 4), DP (head dim padded: 32/64/128), VEC (4: vector loads of Q, K, V;
// 1: scalar loads).
// The rows of a workgroup are the query rows of every query head that shares its key/value head
// (GQA/MQA): combined row c of key/value head hk is query head hk * P.group + c / P.nq, query
// row c % P.nq, so K and V are read once for all of them. P.split_len keys per split.
// Bindings: 1 q, 2 mask, 3 key lengths (paged: sequence lengths), 4 k, 5 v, 7 partials (f32),
// 8 per-head parameters (ALiBi slope and sink, z units); the paged variant adds 9, the block
// table. Views: v0 q, v1 k, v2 v (key/value heads; paged: head stride sh and token stride ss of
// the page pool), v3 mask, v5 partials: row i holds, for each split s at s * (d + 2), the raw
// accumulator (d values), the running maximum (as z) and the sum l, as the fused kernel's
// split-K partials (attention.wgsl); the merge adds the sink and writes the output and lse.
// Scores, masks and options as in attention.wgsl (score_z and the bounds of masking.wgsl).
//
// Work split: lane l = t % 8 of key group g = t / 8 holds head dims l * DP/8 .. of a key (NV4 =
// DP/32 vec4 of K and of V, loaded straight from memory: every key's row is read once, by 8
// consecutive lanes); Q is staged once in workgroup memory. For each key, each row's dot
// product is reduced over the 8 lanes (row_sum: subgroup shuffles, or workgroup memory), and
// each group keeps its own running maximum, sum and accumulator per row over the keys it visits
// (g, g + 16, ...): no cross-group traffic until the end, where the 16 groups are merged per row
// through workgroup memory. Accumulators are named variables, passed by pointer.

@group(0) @binding(7) var<storage, read_write> PART: array<f32>;
@group(0) @binding(8) var<storage, read> HEADS: array<f32>;

const NG: u32 = WG / 8u;
const NV4: u32 = DP / 32u;
const DL: u32 = DP / 8u;

var<workgroup> Qs: array<vec4<f32>, R * DP / 4u>;
var<workgroup> gm: array<f32, R * NG>;
var<workgroup> gl: array<f32, R * NG>;
var<workgroup> accs: array<vec4<f32>, NG * DP / 4u>;
var<workgroup> wkbegin: u32;
var<workgroup> wkend: u32;

// One row of the workgroup: where it is, and its bounds.
struct Row {
    ok: bool,
    h: u32,
    row: u32,
    lo: u32,
    hi: u32,
    qp: i32,
}

fn row_of(b: u32, hk: u32, c: u32) -> Row {
    var r: Row;
    r.ok = c < P.group * P.nq;
    let cc = select(0u, c, r.ok);
    r.h = hk * P.group + cc / P.nq;
    r.row = cc % P.nq;
    r.lo = key_start(b, r.row);
    r.hi = key_limit(b, r.row);
    r.qp = qpos(b, r.row);
    return r;
}

// Key j (lanes' dims in k0..k3 and v0..v3; `valid`: j is inside the split's range) for row `ri`
// of the workgroup: the score, reduced over the row's 8 lanes, then the online-softmax update of
// the group's running max m, sum l and accumulator a0..a3. Call from uniform control flow.
fn key_step(ri: u32, rw: Row, b: u32, j: u32, valid: bool, t: u32, lane: u32, simple: bool,
            k0: vec4<f32>, k1: vec4<f32>, k2: vec4<f32>, k3: vec4<f32>,
            v0: vec4<f32>, v1: vec4<f32>, v2: vec4<f32>, v3: vec4<f32>,
            m: ptr<function, f32>, l: ptr<function, f32>,
            a0: ptr<function, vec4<f32>>, a1: ptr<function, vec4<f32>>,
            a2: ptr<function, vec4<f32>>, a3: ptr<function, vec4<f32>>) {
    let qb = ri * (DP / 4u) + lane * NV4;
    var part = dot(Qs[qb], k0);
    if (NV4 > 1u) {
        part += dot(Qs[qb + 1u], k1);
    }
    if (NV4 > 2u) {
        part += dot(Qs[qb + 2u], k2) + dot(Qs[qb + 3u], k3);
    }
    let s = row_sum(part, t, 0u);
    var add = 0.0;
    if (!(valid && rw.ok && j >= rw.lo && j < rw.hi)) {
        return;
    }
    var z = 0.0;
    if (simple) {
        z = zsat(s);
    } else {
        if (!mask_keep(b, rw.h, rw.row, j, &add)) {
            return;
        }
        z = score_z(s, add, rw.h, rw.qp, j);
    }
    if (z > *m) {
        let al = weight(*m, z);
        *l *= al;
        *a0 *= al;
        *a1 *= al;
        *a2 *= al;
        *a3 *= al;
        *m = z;
    }
    let p = weight(z, *m);
    *l += p;
    *a0 += p * v0;
    *a1 += p * v1;
    *a2 += p * v2;
    *a3 += p * v3;
}

// The dims of a key's row that lane `lane` holds, vec4 `i` (zero past the head dim).
fn kv_load(is_v: bool, base: u32, lane: u32, i: u32) -> vec4<f32> {
    let dd = lane * DL + 4u * i;
    if (dd >= P.d) {
        return vec4<f32>(0.0);
    }
    if (is_v) {
        return load4_v(base + dd, min(P.d - dd, 4u));
    }
    return load4_k(base + dd, min(P.d - dd, 4u));
}

// Merges row ri over the key groups and writes its partial (uniform control flow: barriers).
fn merge_row(ri: u32, rw: Row, b: u32, split: u32, t: u32, lane: u32, g: u32, m: f32, l: f32,
             a0: vec4<f32>, a1: vec4<f32>, a2: vec4<f32>, a3: vec4<f32>) {
    workgroupBarrier();
    if (lane == 0u) {
        gm[ri * NG + g] = m;
        gl[ri * NG + g] = l;
    }
    workgroupBarrier();
    var mm = gm[ri * NG];
    for (var i = 1u; i < NG; i++) {
        mm = max(mm, gm[ri * NG + i]);
    }
    var ll = 0.0;
    for (var i = 0u; i < NG; i++) {
        ll += gl[ri * NG + i] * weight(gm[ri * NG + i], mm);
    }
    let w = weight(m, mm);
    let ab = g * (DP / 4u) + lane * NV4;
    accs[ab] = a0 * w;
    if (NV4 > 1u) {
        accs[ab + 1u] = a1 * w;
    }
    if (NV4 > 2u) {
        accs[ab + 2u] = a2 * w;
        accs[ab + 3u] = a3 * w;
    }
    workgroupBarrier();
    if (rw.ok) {
        let pb = vidx(P.v5, b, rw.h, rw.row) + split * (P.d + 2u);
        for (var e = t; e < DP / 4u; e += WG) {
            var s = vec4<f32>(0.0);
            for (var i = 0u; i < NG; i++) {
                s += accs[i * (DP / 4u) + e];
            }
            for (var c = 0u; c < 4u; c++) {
                if (4u * e + c < P.d) {
                    PART[pb + 4u * e + c] = s[c];
                }
            }
        }
        if (t == 0u) {
            PART[pb + P.d] = mm;
            PART[pb + P.d + 1u] = ll;
        }
    }
}

@compute @workgroup_size(WG)
fn attention_decode(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let kv_heads = P.heads / P.group;
    let row_blocks = (P.group * P.nq + R - 1u) / R;
    let nsplit = (P.nk + P.split_len - 1u) / P.split_len;
    let wg = linear_wg(wid, nwg);
    // (uniform per workgroup)
    if (wg >= (P.nbh / P.group) * row_blocks * nsplit) {
        return;
    }
    let split = wg % nsplit;
    let rest = wg / nsplit;
    let rb = rest % row_blocks;
    let bkh = P.bh0 / P.group + rest / row_blocks;
    let b = bkh / kv_heads;
    let hk = bkh % kv_heads;
    let lane = t % 8u;
    let g = t / 8u;

    let r0 = row_of(b, hk, rb * R);
    let r1 = row_of(b, hk, rb * R + 1u);
    let r2 = row_of(b, hk, rb * R + 2u);
    let r3 = row_of(b, hk, rb * R + 3u);
    for (var e = t; e < R * DP / 4u; e += WG) {
        let ri = e / (DP / 4u);
        let dd = (e % (DP / 4u)) * 4u;
        let rw = row_of(b, hk, rb * R + ri);
        var x = vec4<f32>(0.0);
        if (rw.ok && dd < P.d) {
            x = load4_q(vidx(P.v0, b, rw.h, rw.row) + dd, min(P.d - dd, 4u)) * P.pre;
        }
        Qs[e] = x;
    }
    let split_begin = split * P.split_len;
    if (t == 0u) {
        // the keys some row of the block may keep, within the split
        var kb = 0xffffffffu;
        var ke = 0u;
        for (var i = 0u; i < R; i++) {
            let rw = row_of(b, hk, rb * R + i);
            if (rw.ok) {
                kb = min(kb, rw.lo);
                ke = max(ke, rw.hi);
            }
        }
        wkbegin = max(kb, split_begin);
        wkend = min(ke, split_begin + P.split_len);
    }
    let k_begin = workgroupUniformLoad(&wkbegin);
    let kend = workgroupUniformLoad(&wkend);
    let simple = (P.flags & (F_MASK | F_SOFTCAP | F_ALIBI)) == 0u;

    var m0 = ZNONE; var m1 = ZNONE; var m2 = ZNONE; var m3 = ZNONE;
    var l0 = 0.0; var l1 = 0.0; var l2 = 0.0; var l3 = 0.0;
    var a00 = vec4<f32>(0.0); var a01 = vec4<f32>(0.0); var a02 = vec4<f32>(0.0); var a03 = vec4<f32>(0.0);
    var a10 = vec4<f32>(0.0); var a11 = vec4<f32>(0.0); var a12 = vec4<f32>(0.0); var a13 = vec4<f32>(0.0);
    var a20 = vec4<f32>(0.0); var a21 = vec4<f32>(0.0); var a22 = vec4<f32>(0.0); var a23 = vec4<f32>(0.0);
    var a30 = vec4<f32>(0.0); var a31 = vec4<f32>(0.0); var a32 = vec4<f32>(0.0); var a33 = vec4<f32>(0.0);

    var steps = 0u;
    if (kend > k_begin) {
        steps = (kend - k_begin + NG - 1u) / NG;
    }
    for (var st = 0u; st < steps; st++) {
        let j = k_begin + st * NG + g;
        let valid = j < kend;
        let jj = select(k_begin, j, valid);
        let kb = k_index(b, hk, jj);
        let vb = v_index(b, hk, jj);
        let k0 = kv_load(false, kb, lane, 0u);
        let v0 = kv_load(true, vb, lane, 0u) * P.kpre;
        var k1 = vec4<f32>(0.0); var k2 = vec4<f32>(0.0); var k3 = vec4<f32>(0.0);
        var v1 = vec4<f32>(0.0); var v2 = vec4<f32>(0.0); var v3 = vec4<f32>(0.0);
        if (NV4 > 1u) {
            k1 = kv_load(false, kb, lane, 1u);
            v1 = kv_load(true, vb, lane, 1u) * P.kpre;
        }
        if (NV4 > 2u) {
            k2 = kv_load(false, kb, lane, 2u);
            k3 = kv_load(false, kb, lane, 3u);
            v2 = kv_load(true, vb, lane, 2u) * P.kpre;
            v3 = kv_load(true, vb, lane, 3u) * P.kpre;
        }
        key_step(0u, r0, b, j, valid, t, lane, simple, k0, k1, k2, k3, v0, v1, v2, v3, &m0, &l0, &a00, &a01, &a02, &a03);
        if (R > 1u) {
            key_step(1u, r1, b, j, valid, t, lane, simple, k0, k1, k2, k3, v0, v1, v2, v3, &m1, &l1, &a10, &a11, &a12, &a13);
        }
        if (R > 2u) {
            key_step(2u, r2, b, j, valid, t, lane, simple, k0, k1, k2, k3, v0, v1, v2, v3, &m2, &l2, &a20, &a21, &a22, &a23);
            key_step(3u, r3, b, j, valid, t, lane, simple, k0, k1, k2, k3, v0, v1, v2, v3, &m3, &l3, &a30, &a31, &a32, &a33);
        }
    }
    merge_row(0u, r0, b, split, t, lane, g, m0, l0, a00, a01, a02, a03);
    if (R > 1u) {
        merge_row(1u, r1, b, split, t, lane, g, m1, l1, a10, a11, a12, a13);
    }
    if (R > 2u) {
        merge_row(2u, r2, b, split, t, lane, g, m2, l2, a20, a21, a22, a23);
        merge_row(3u, r3, b, split, t, lane, g, m3, l3, a30, a31, a32, a33);
    }
}
