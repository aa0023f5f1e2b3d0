// Prelude: 16x16x16 matrix fragments on cooperative matrices (tensor cores, through wgpu's
// EXPERIMENTAL_COOPERATIVE_MATRIX), f16 A and B, f32 C. mma_emulated.wgsl is its plain-WGSL twin:
// a kernel written against these functions runs on either. The kernel declares the workgroup
// arrays Hs (f16: A and B operands) and Fs (f32: C values). Call from uniform control flow (a
// subgroup's lanes together); `lane` only matters to the twin.

alias FragA = coop_mat16x16<f16, A>;
alias FragB = coop_mat16x16<f16, B>;
alias FragC = coop_mat16x16<f32, C>;

fn frag_zero() -> FragC {
    return FragC();
}

// A: the 16x16 block of Hs from element `off`, row-major, `stride` elements per row.
fn load_a(off: u32, stride: u32, lane: u32) -> FragA {
    return coopLoadT<FragA>(&Hs[off], stride);
}

// B, column-major: element (k, n) at off + n * stride + k (a row-major tile of keys, read as
// its transpose).
fn load_b(off: u32, stride: u32, lane: u32) -> FragB {
    return coopLoad<FragB>(&Hs[off], stride);
}

// B, row-major: element (k, n) at off + k * stride + n.
fn load_bt(off: u32, stride: u32, lane: u32) -> FragB {
    return coopLoadT<FragB>(&Hs[off], stride);
}

fn mma(a: FragA, b: FragB, c: FragC, lane: u32) -> FragC {
    return coopMultiplyAdd(a, b, c);
}

// C into Fs from element `off`, row-major, `stride` elements per row.
fn store_c(c: FragC, off: u32, stride: u32, lane: u32) {
    coopStoreT(c, &Fs[off], stride);
}

// C from Fs, as store_c wrote it.
fn load_c(off: u32, stride: u32, lane: u32) -> FragC {
    return coopLoadT<FragC>(&Fs[off], stride);
}
