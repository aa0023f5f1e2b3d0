// Prelude: 16x16x16 matrix fragments on cooperative matrices (tensor cores, through wgpu's
// EXPERIMENTAL_COOPERATIVE_MATRIX), f16 A and B, f32 C. mma_emulated.wgsl is its plain-WGSL twin:
// a kernel written against these functions runs on either. The kernel declares the workgroup
// arrays As, Bs (f16) and Cs (f32). Call from uniform control flow (a subgroup's lanes together);
// `lane` only matters to the twin.

alias FragA = coop_mat16x16<f16, A>;
alias FragB = coop_mat16x16<f16, B>;
alias FragC = coop_mat16x16<f32, C>;

fn frag_zero() -> FragC {
    return FragC();
}

// A: the 16x16 block of As from element `off`, row-major, `stride` elements per row.
fn load_a(off: u32, stride: u32, lane: u32) -> FragA {
    return coopLoadT<FragA>(&As[off], stride);
}

// B: the 16x16 block of Bs whose element (k, n) is at off + n * stride + k (column-major: a
// row-major tile of keys, read as its transpose).
fn load_b(off: u32, stride: u32, lane: u32) -> FragB {
    return coopLoad<FragB>(&Bs[off], stride);
}

fn mma(a: FragA, b: FragB, c: FragC, lane: u32) -> FragC {
    return coopMultiplyAdd(a, b, c);
}

// C into Cs from element `off`, row-major, `stride` elements per row.
fn store_c(c: FragC, off: u32, stride: u32, lane: u32) {
    coopStoreT(c, &Cs[off], stride);
}
