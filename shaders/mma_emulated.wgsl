// Prelude: the plain-WGSL twin of mma_hardware.wgsl, so that the tile logic of the tensor-core
// kernels (staging, tails, masks, the softmax, the epilogue) runs and is tested where there are
// no cooperative matrices. A virtual subgroup is 32 consecutive invocations (lane = local index
// % 32, whatever the real subgroup size); a C fragment is 8 f32 per lane (lane l: row l / 2,
// columns (l % 2) * 8 .. + 8); A and B fragments are where they lie in workgroup memory (offset
// and strides), read by each lane as it multiplies: valid because the kernels leave Hs unchanged
// between loading a fragment and multiplying it (the hardware path needs the same barriers).

struct FragA {
    off: u32,
    stride: u32,
}

// element (k, n) at off + k * sk + n * sn
struct FragB {
    off: u32,
    sk: u32,
    sn: u32,
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
    return FragB(off, 1u, stride);
}

fn load_bt(off: u32, stride: u32, lane: u32) -> FragB {
    return FragB(off, stride, 1u);
}

fn mma(a: FragA, b: FragB, c: FragC, lane: u32) -> FragC {
    let r = lane / 2u;
    let c0 = (lane % 2u) * 8u;
    var lo = c.lo;
    var hi = c.hi;
    for (var k = 0u; k < 16u; k++) {
        let x = f32(Hs[a.off + r * a.stride + k]);
        let bk = b.off + k * b.sk + c0 * b.sn;
        let s = b.sn;
        lo += x * vec4<f32>(f32(Hs[bk]), f32(Hs[bk + s]), f32(Hs[bk + 2u * s]), f32(Hs[bk + 3u * s]));
        hi += x * vec4<f32>(f32(Hs[bk + 4u * s]), f32(Hs[bk + 5u * s]), f32(Hs[bk + 6u * s]), f32(Hs[bk + 7u * s]));
    }
    return FragC(lo, hi);
}

fn store_c(c: FragC, off: u32, stride: u32, lane: u32) {
    let o = off + (lane / 2u) * stride + (lane % 2u) * 8u;
    for (var j = 0u; j < 4u; j++) {
        Fs[o + j] = c.lo[j];
        Fs[o + 4u + j] = c.hi[j];
    }
}

fn load_c(off: u32, stride: u32, lane: u32) -> FragC {
    let o = off + (lane / 2u) * stride + (lane % 2u) * 8u;
    return FragC(vec4<f32>(Fs[o], Fs[o + 1u], Fs[o + 2u], Fs[o + 3u]), vec4<f32>(Fs[o + 4u], Fs[o + 5u], Fs[o + 6u], Fs[o + 7u]));
}
