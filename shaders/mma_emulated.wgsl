// Prelude: the plain-WGSL twin of mma_hardware.wgsl, so that the tile logic of the tensor-core
// kernels (staging, tails, epilogue) runs and is tested where there are no cooperative matrices.
// A virtual subgroup is 32 consecutive invocations (lane = local index % 32, whatever the real
// subgroup size); a C fragment is 8 f32 per lane (lane l: row l / 2, columns (l % 2) * 8 .. + 8);
// A and B fragments are where they lie in workgroup memory (offset and stride), read by each lane
// as it multiplies: valid because the kernels leave As and Bs unchanged between loading a
// fragment and multiplying it (the hardware path needs the same barriers).

struct FragA {
    off: u32,
    stride: u32,
}

struct FragB {
    off: u32,
    stride: u32,
}

struct FragC {
    lo: vec4<f32>,
    hi: vec4<f32>,
}

fn frag_zero() -> FragC {
    return FragC(vec4<f32>(0.0), vec4<f32>(0.0));
}

fn load_a(off: u32, stride: u32, lane: u32) -> FragA {
    return FragA(off, stride);
}

fn load_b(off: u32, stride: u32, lane: u32) -> FragB {
    return FragB(off, stride);
}

fn mma(a: FragA, b: FragB, c: FragC, lane: u32) -> FragC {
    let r = lane / 2u;
    let c0 = (lane % 2u) * 8u;
    var lo = c.lo;
    var hi = c.hi;
    for (var k = 0u; k < 16u; k++) {
        let x = f32(As[a.off + r * a.stride + k]);
        let bk = b.off + c0 * b.stride + k;
        let s = b.stride;
        lo += x * vec4<f32>(f32(Bs[bk]), f32(Bs[bk + s]), f32(Bs[bk + 2u * s]), f32(Bs[bk + 3u * s]));
        hi += x * vec4<f32>(f32(Bs[bk + 4u * s]), f32(Bs[bk + 5u * s]), f32(Bs[bk + 6u * s]), f32(Bs[bk + 7u * s]));
    }
    return FragC(lo, hi);
}

fn store_c(c: FragC, off: u32, stride: u32, lane: u32) {
    let o = off + (lane / 2u) * stride + (lane % 2u) * 8u;
    for (var j = 0u; j < 4u; j++) {
        Cs[o + j] = c.lo[j];
        Cs[o + 4u + j] = c.hi[j];
    }
}
