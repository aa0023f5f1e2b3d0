// Prelude prepended to every kernel family (after the generated header).
//
// Every tensor argument is described by a View: element index of (b, h, s, 0) is
//   base + b * sb + h * sh + s * ss
// computed in wrapping u32 arithmetic, where b, h, s are global indices and `base` is
// (tensor offset - start of the bound window) modulo 2^32. The true index always lies
// inside the bound window, so the wrapped result is exact.
struct View { base: u32, sb: u32, sh: u32, ss: u32 }

// Must match `Params` in src/dispatch.rs.
struct Params {
    // the chunk of (batch * head) slices and query rows this dispatch covers
    bh0: u32, nbh: u32, r0: u32, nr: u32,
    // problem: query heads, query heads per key/value head, query rows, key count
    heads: u32, group: u32, nq: u32, nk: u32,
    // head dim (or reduction length), F_* flags, score scale (or 1/temperature),
    // keys per split (split-K attention and its merge: the number of splits)
    d: u32, flags: u32, scale: f32, split_len: u32,
    // top-k selection: index of the first input element (raw scores), first input element of
    // each row to read, output slots per row and the slot of this dispatch's first segment
    idx0: u32, start: u32, out_stride: u32, out_offset: u32,
    v0: View, v1: View, v2: View, v3: View, v4: View, v5: View,
}

const F_CAUSAL: u32 = 1u;
const F_MASK: u32 = 2u;
const F_MASK_ADDITIVE: u32 = 4u;
const F_KEY_LENGTHS: u32 = 8u;
const F_LSE: u32 = 16u;

// Stand-in for -inf in running maxima (WGSL has no infinity literal).
const NEG: f32 = -3.0e38;
const NEG_INF_BITS: u32 = 0xff800000u;

@group(0) @binding(0) var<uniform> P: Params;

fn vidx(v: View, b: u32, h: u32, s: u32) -> u32 {
    return v.base + b * v.sb + h * v.sh + s * v.ss;
}

// Linear workgroup index over a 3-D grid (grids over the per-dimension limit wrap into y, z).
fn linear_wg(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + nwg.x * (wid.y + nwg.y * wid.z);
}
