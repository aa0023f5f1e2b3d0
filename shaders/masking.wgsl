// Prelude for the families that mask scores (softmax, attention): the mask at binding 2
// (one word per element, view v3), per-batch key lengths at binding 3 (over a paged cache:
// the sequence lengths), and the score rules shared by both, in the order AttentionOptions
// documents: scale (in the caller's z), soft-cap, ALiBi, mask, window, causal, key lengths.
// The family declares HEADS: per query head, the ALiBi slope and the sink, in z units.

@group(0) @binding(2) var<storage, read> MASK: array<u32>;
@group(0) @binding(3) var<storage, read> KEY_LENGTHS: array<u32>;

// Whether the mask keeps score (b, h, row, j); its additive term goes to *add. Boolean masks:
// nonzero keeps. Additive masks: only -inf drops a key; every finite value (even -3e38) is added.
fn mask_keep(b: u32, h: u32, row: u32, j: u32, add: ptr<function, f32>) -> bool {
    *add = 0.0;
    if ((P.flags & F_MASK) == 0u) {
        return true;
    }
    let w = MASK[vidx(P.v3, b, h, row) + j];
    if ((P.flags & F_MASK_ADDITIVE) != 0u) {
        if (w == NEG_INF_BITS) {
            return false;
        }
        *add = bitcast<f32>(w);
        return true;
    }
    return w != 0u;
}

// F_VARLEN (attention over a pack of P.start sequences): binding 3 holds cu_seqlens_q and
// binding 2 cu_seqlens_k (P.start + 1 entries each; masks and key lengths do not apply).
// Device offsets are not checked on the host: each entry is clamped to the packed rows (P.nq,
// P.nk) and a decreasing pair gives an empty sequence, so nothing is read or written outside
// the tensors whatever the offsets hold.
fn cu_q(s: u32) -> u32 {
    return min(KEY_LENGTHS[s], P.nq);
}

fn cu_k(s: u32) -> u32 {
    return min(MASK[s], P.nk);
}

// The query rows of batch b (with F_VARLEN, of sequence b).
fn q_rows(b: u32) -> u32 {
    if ((P.flags & F_VARLEN) != 0u) {
        let e = cu_q(b + 1u);
        return e - min(cu_q(b), e);
    }
    return P.nq;
}

// The keys of batch b: the tensor's, over a paged cache the sequence's length, in a pack the
// sequence's.
fn kv_len(b: u32) -> u32 {
    if ((P.flags & F_PAGED) != 0u) {
        return KEY_LENGTHS[b];
    }
    if ((P.flags & F_VARLEN) != 0u) {
        let e = cu_k(b + 1u);
        return e - min(cu_k(b), e);
    }
    return P.nk;
}

// The position of query `row` of batch b (bottom-right aligned: the last query sits at the
// last key). Positions stay within +-2^30 (the kernels' dimensions are bounded there).
fn qpos(b: u32, row: u32) -> i32 {
    return i32(row) + i32(kv_len(b)) - i32(q_rows(b));
}

// Keys [key_start, key_limit) can be kept for query `row` of batch b: its window, the causal
// diagonal and the key length (or sequence length) bound them; masks decide within.
fn key_start(b: u32, row: u32) -> u32 {
    if ((P.flags & F_WINDOW_LEFT) != 0u) {
        return u32(max(qpos(b, row) - i32(P.wleft), 0));
    }
    return 0u;
}

fn key_limit(b: u32, row: u32) -> u32 {
    var lim = kv_len(b);
    if ((P.flags & F_KEY_LENGTHS) != 0u) {
        lim = min(lim, KEY_LENGTHS[b]);
    }
    let p = qpos(b, row);
    if ((P.flags & F_CAUSAL) != 0u) {
        lim = min(lim, u32(max(p + 1, 0)));
    }
    if ((P.flags & F_WINDOW_RIGHT) != 0u) {
        lim = min(lim, u32(max(p + i32(P.wright) + 1, 0)));
    }
    return lim;
}

// tanh to f32 accuracy near 0 too (exp-based formulas lose it there to cancellation).
fn tanh_acc(x: f32) -> f32 {
    let a = abs(x);
    if (a < 0.25) {
        let x2 = x * x;
        return x * (1.0 + x2 * (-0.33333334 + x2 * (0.13333334 + x2 * (-0.053968254 + x2 * 0.021869488))));
    }
    let e = exp(-2.0 * a);
    return sign(x) * (1.0 - e) / (1.0 + e);
}

// The z of a kept score from the z of its (scaled) dot product and its mask term: soft-cap,
// ALiBi (query position qp, key j, query head h), mask; saturated, NaN-free.
fn score_z(z_dot: f32, add: f32, h: u32, qp: i32, j: u32) -> f32 {
    var z = zsat(z_dot);
    if ((P.flags & F_SOFTCAP) != 0u) {
        z = P.cap_out * tanh_acc(clamp(z, -P.cap_lim, P.cap_lim) * P.cap_in);
    }
    if ((P.flags & F_ALIBI) != 0u) {
        z -= HEADS[2u * h] * f32(abs(qp - i32(j)));
    }
    return zsat(z + add * P.mscale);
}

// The sink of query head h in z units, or ZNONE without sinks.
fn sink_z(h: u32) -> f32 {
    if ((P.flags & F_SINK) != 0u) {
        return HEADS[2u * h + 1u];
    }
    return ZNONE;
}
