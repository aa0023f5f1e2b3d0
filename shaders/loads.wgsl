// The loads of Q, K and V by the attention kernels, as templates: src/kernels/loads.rs renders
// one section per tensor, replacing @X@ with its name (Q, K, V), @x@ with the name in lower
// case, @SLOT@ with its binding (1, 4, 5) and @VIEW@ with its view (v1 K, v2 V). Each defines
// the tensor's binding and load4_@x@(i, n): the 4 values from element index i, those from the
// (n+1)-th on read as 0.
//
// f32 and f16 tensors: `vec4` (one vector load per 4 elements: i is a multiple of 4 and n is 4,
// the head dim being a multiple of 4) or `scalar` (any head dim and offset).
//
// Quantized page pools (src/kv_dtype.rs): array<u32>, the values then the scales from word
// P.@VIEW@.sb (the view's batch stride, unused by a pool). i is a multiple of 4 (head dims are
// multiples of 32 for the block types, of 4 for fp8) and n is 4; the four values are in one
// word. A value is dequantized in f32 exactly as the CPU path does: q · d (q8_0),
// (q - 8) · d (q4_0), e4m3 · scale (fp8).
//#vec4
@group(0) @binding(@SLOT@) var<storage, read> @X@: array<vec4<elem>>;

fn load4_@x@(i: u32, n: u32) -> vec4<f32> {
    return vec4<f32>(@X@[i / 4u]);
}
//#scalar
@group(0) @binding(@SLOT@) var<storage, read> @X@: array<elem>;

fn load4_@x@(i: u32, n: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    for (var c = 0u; c < 4u; c++) {
        if (c < n) {
            v[c] = f32(@X@[i + c]);
        }
    }
    return v;
}
//#q8_0
@group(0) @binding(@SLOT@) var<storage, read> @X@: array<u32>;

fn load4_@x@(i: u32, n: u32) -> vec4<f32> {
    let w = @X@[i >> 2u];
    let d = scale_f16(@X@[P.@VIEW@.sb + (i >> 6u)], i >> 5u);
    // the bytes as unsigned, their sign bit flipped: q + 128
    let q = ((vec4<u32>(w) >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(255u)) ^ vec4<u32>(128u);
    return (vec4<f32>(q) - 128.0) * d;
}
//#q4_0
@group(0) @binding(@SLOT@) var<storage, read> @X@: array<u32>;

fn load4_@x@(i: u32, n: u32) -> vec4<f32> {
    let o = i & 31u;
    let w = @X@[(i >> 5u) * 4u + ((o & 15u) >> 2u)] >> select(0u, 4u, o >= 16u);
    let d = scale_f16(@X@[P.@VIEW@.sb + (i >> 6u)], i >> 5u);
    let q = (vec4<u32>(w) >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(15u);
    return (vec4<f32>(q) - 8.0) * d;
}
//#fp8
@group(0) @binding(@SLOT@) var<storage, read> @X@: array<u32>;

fn load4_@x@(i: u32, n: u32) -> vec4<f32> {
    let w = @X@[i >> 2u];
    let s = bitcast<f32>(@X@[P.@VIEW@.sb + (i % P.@VIEW@.ss) / P.@VIEW@.sh]);
    return vec4<f32>(fp8_e4m3(w & 255u), fp8_e4m3((w >> 8u) & 255u), fp8_e4m3((w >> 16u) & 255u), fp8_e4m3(w >> 24u)) * s;
}
//#helpers
// The f16 scale of block `blk` from its word (two per word, the even block in the low half),
// decoded from its bits (f16 subnormals included, whatever the device does with f16 denormals).
fn scale_f16(word: u32, blk: u32) -> f32 {
    let h = (word >> (16u * (blk & 1u))) & 0xffffu;
    let e = (h >> 10u) & 31u;
    let m = h & 1023u;
    var v = bitcast<f32>(((e + 112u) << 23u) | (m << 13u));
    if (e == 0u) {
        v = f32(m) * 5.9604644775390625e-8;
    }
    return select(v, -v, (h & 0x8000u) != 0u);
}

// An fp8 e4m3 code's value (OCP; 0x7f, NaN there and never written, reads as 480).
fn fp8_e4m3(c: u32) -> f32 {
    let e = (c >> 3u) & 15u;
    let m = c & 7u;
    var v = f32(m) * 0.001953125;
    if (e != 0u) {
        v = ldexp(f32(8u + m), i32(e) - 10);
    }
    return select(v, -v, (c & 128u) != 0u);
}
//#end
