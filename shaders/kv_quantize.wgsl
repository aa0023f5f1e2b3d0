// Appends new tokens to one quantized page pool (q8_0, q4_0 or fp8 e4m3; src/kv_dtype.rs has
// the layout and the formats), quantizing on the GPU exactly as the host does: token t of the
// n_new (P.nr rows of the chunk) of sequence b lands at position seq_lens[b] - n_new + t, that
// is pool token (TABLE[b][pos >> page_shift] << page_shift) | (pos & (page_size - 1)).
// Header constants (src/kernels/kv_quantize.rs): WG, QT (1 q8_0, 2 q4_0, 3 fp8), GV (values
// per invocation: a block of 32, or the 4 values of one word for fp8).
// Bindings: 1 new values, 3 seq_lens (u32), 4 block table (u32), 5 the pool (u32 words: values,
// then scales from word P.v2.sb). Views: v0 the new values ([batch, kv_heads, n_new, d]), v2 the
// pool (head stride sh = d, token stride ss = kv_heads * d, in values).
//
// Every step after the loads is exact integer arithmetic on the bits of correctly rounded f32
// products (Vulkan rounds f32 multiplication correctly), so no contraction into a fused
// multiply-add and no approximate division can change a bit: the divisions (absmax / 127 and
// the reciprocals) are long divisions of the mantissas, the conversions to f16 and e4m3 round
// to nearest even on the bits, and roundf and (int8_t)(x + 8.5f) are evaluated on the bits.
// Two blocks share a scale word, so scales are merged with atomics.

@group(0) @binding(1) var<storage, read> XN: array<elem>;
@group(0) @binding(3) var<storage, read> SEQ_LENS: array<u32>;
@group(0) @binding(4) var<storage, read> TABLE: array<u32>;
@group(0) @binding(5) var<storage, read_write> POOL: array<atomic<u32>>;

// x / 127, correctly rounded, for x >= 2^-100.
fn div127(x: f32) -> f32 {
    let b = bitcast<u32>(x);
    let e = i32(b >> 23u) - 150;
    let n = ((b & 0x7fffffu) | 0x800000u) << 7u;
    var q = n / 127u;
    let r = n - q * 127u;
    var sh = 0;
    if (q >= 0x1000000u) {
        let lost = q & 1u;
        q = q >> 1u;
        sh = 1;
        if (lost == 1u && (r != 0u || (q & 1u) == 1u)) {
            q = q + 1u;
        }
    } else if (r >= 64u) {
        q = q + 1u;
    }
    return ldexp(f32(q), e - 7 + sh);
}

// 1 / x, correctly rounded, for normal x whose reciprocal is normal.
fn recip(x: f32) -> f32 {
    let b = bitcast<u32>(x);
    let e = i32((b >> 23u) & 255u) - 150;
    let m = (b & 0x7fffffu) | 0x800000u;
    var q = 1u;
    var k = -23 - e;
    if (m != 0x800000u) {
        // q = floor(2^47 / m) in [2^23, 2^24), by long division
        var r = 0x800000u;
        q = 0u;
        for (var i = 0u; i < 24u; i++) {
            r = r << 1u;
            q = q << 1u;
            if (r >= m) {
                r = r - m;
                q = q | 1u;
            }
        }
        if (2u * r > m || (2u * r == m && (q & 1u) == 1u)) {
            q = q + 1u;
        }
        k = -47 - e;
    }
    let v = ldexp(f32(q), k);
    return select(v, -v, (b >> 31u) != 0u);
}

// The f16 bits of x, rounded to nearest even; 65520 and above saturate to 65504.
fn f16_bits(x: f32) -> u32 {
    let b = bitcast<u32>(x);
    let s = (b >> 16u) & 0x8000u;
    let a = b & 0x7fffffffu;
    if (a >= 0x477ff000u) {
        return s | 0x7bffu;
    }
    if (a >= 0x38800000u) {
        return s | (((a + 0xfffu + ((a >> 13u) & 1u)) >> 13u) - (112u << 10u));
    }
    return s | u32(round(bitcast<f32>(a) * 16777216.0));
}

// roundf(p) for |p| < 128 (half away from zero), from the bits of p.
fn round_away(p: f32) -> i32 {
    let b = bitcast<u32>(p);
    let a = b & 0x7fffffffu;
    var r = 0u;
    if (a >= 0x3f000000u) {
        let e = i32(a >> 23u) - 127;
        let m = (a & 0x7fffffu) | 0x800000u;
        r = (m + (1u << u32(22 - e))) >> u32(23 - e);
    }
    return select(i32(r), -i32(r), (b >> 31u) != 0u);
}

// min(15, (int8_t)(p + 8.5f)) for |p| <= 8 (1 + 2^-20), from the bits of p: p + 8.5 in fixed
// point with 26 fractional bits (exact for |p| >= 2^-3), rounded to f32's 24 bits, truncated.
fn q4_nibble(p: f32) -> u32 {
    let b = bitcast<u32>(p);
    let a = b & 0x7fffffffu;
    if (a < 0x3e000000u) {
        return 8u;
    }
    let fx = ((a & 0x7fffffu) | 0x800000u) << ((a >> 23u) - 124u);
    var s = (17u << 25u) + fx;
    if ((b >> 31u) != 0u) {
        s = (17u << 25u) - fx;
    }
    let bits = 32u - countLeadingZeros(s);
    if (bits > 24u) {
        let drop = bits - 24u;
        var r = s >> drop;
        let rem = s & ((1u << drop) - 1u);
        let half = 1u << (drop - 1u);
        if (rem > half || (rem == half && (r & 1u) == 1u)) {
            r = r + 1u;
        }
        s = r << drop;
    }
    return min(15u, s >> 26u);
}

// The e4m3 code of v (OCP), rounded to nearest even, saturated at 448.
fn fp8_code(v: f32) -> u32 {
    let b = bitcast<u32>(v);
    let s = (b >> 24u) & 0x80u;
    let a = b & 0x7fffffffu;
    var c = 0x7eu;
    if (a < 0x3c800000u) {
        c = u32(round(bitcast<f32>(a) * 512.0));
    } else if (a < 0x43e00000u) {
        c = min(((a + 0x7ffffu + ((a >> 20u) & 1u)) >> 20u) - 960u, 0x7eu);
    }
    return s | c;
}

// Stores block blk's f16 scale into its half of the shared scale word.
fn store_scale(blk: u32, h: u32) {
    let w = P.v2.sb + (blk >> 1u);
    let sh = 16u * (blk & 1u);
    atomicAnd(&POOL[w], ~(0xffffu << sh));
    atomicOr(&POOL[w], h << sh);
}

@compute @workgroup_size(WG)
fn kv_quantize(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let groups = P.d / GV;
    let e = linear_wg(wid, nwg) * WG + t;
    if (e >= P.nbh * P.nr * groups) {
        return;
    }
    let g = e % groups;
    let rest = e / groups;
    let tok = P.r0 + rest % P.nr;
    let bh = P.bh0 + rest / P.nr;
    let b = bh / P.heads;
    let hk = bh % P.heads;
    let pos = SEQ_LENS[b] - P.nq + tok;
    let page = TABLE[b * P.max_blocks + (pos >> P.page_shift)];
    let slot = (page << P.page_shift) | (pos & ((1u << P.page_shift) - 1u));
    let src = vidx(P.v0, b, hk, tok) + g * GV;
    // the element index in the pool of this group's first value
    let dst = hk * P.v2.sh + slot * P.v2.ss + g * GV;
    if (QT == 3u) {
        let inv = recip(bitcast<f32>(atomicLoad(&POOL[P.v2.sb + hk])));
        var w = 0u;
        for (var j = 0u; j < 4u; j++) {
            w = w | (fp8_code(f32(XN[src + j]) * inv) << (8u * j));
        }
        atomicStore(&POOL[dst >> 2u], w);
        return;
    }
    var x: array<f32, 32>;
    var amax = 0.0;
    var mx = 0.0;
    for (var j = 0u; j < 32u; j++) {
        x[j] = f32(XN[src + j]);
        if (amax < abs(x[j])) {
            amax = abs(x[j]);
            mx = x[j];
        }
    }
    let blk = dst >> 5u;
    if (amax < 7.888609052210118e-31) {
        // below 2^-100: the all-zero block
        let zero = select(0u, 0x88888888u, QT == 2u);
        for (var w = 0u; w < GV / select(4u, 8u, QT == 2u); w++) {
            atomicStore(&POOL[select(blk * 8u, blk * 4u, QT == 2u) + w], zero);
        }
        // ggml's scale is ±0 in f16: q4_0's max / -8 is -0 for an all-zero block
        store_scale(blk, select(0u, select(0x8000u, 0u, mx < 0.0), QT == 2u));
        return;
    }
    if (QT == 1u) {
        let d = div127(amax);
        let id = recip(d);
        for (var w = 0u; w < 8u; w++) {
            var packed = 0u;
            for (var j = 0u; j < 4u; j++) {
                packed = packed | ((u32(round_away(x[4u * w + j] * id)) & 255u) << (8u * j));
            }
            atomicStore(&POOL[blk * 8u + w], packed);
        }
        store_scale(blk, f16_bits(d));
    } else {
        let d = mx * -0.125;
        let id = recip(d);
        for (var w = 0u; w < 4u; w++) {
            var packed = 0u;
            for (var j = 0u; j < 4u; j++) {
                let lo = q4_nibble(x[4u * w + j] * id);
                let hi = q4_nibble(x[4u * w + j + 16u] * id);
                packed = packed | ((lo | (hi << 4u)) << (8u * j));
            }
            atomicStore(&POOL[blk * 4u + w], packed);
        }
        store_scale(blk, f16_bits(d));
    }
}
