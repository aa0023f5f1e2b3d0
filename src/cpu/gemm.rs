//! Matrix products for the fast CPU path, through the `gemm` family's f32 kernel (`gemm-f32`:
//! pure Rust, SIMD kernels chosen at run time; the `gemm` front crate would also build its
//! complex and f64 kernels, which nothing here uses). Views are checked against their slices before the unsafe call, so a
//! product never reads or writes outside them.
//!
//! Chosen over `matrixmultiply` by measurement on this project's 2-core AVX-512 machine
//! (single thread, GFLOP/s, gemm vs matrixmultiply): `64×256×64` with Kᵀ strided 87 vs 78,
//! `64×64×256` (P·V) 92 vs 67, `256×4096×128` 91 vs 86; matrixmultiply led only on `256×256×64`
//! (87 vs 71). The attention blocks are the first two shapes.

/// A strided f32 matrix: element `(r, c)` is `data[r · rs + c · cs]`.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> Mat<'a> {
    /// A row-major `rows × cols` matrix.
    pub fn rows(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Mat { data, rows, cols, rs: cols, cs: 1 }
    }
    /// Rows of `cols` values, `stride` apart.
    pub fn strided(data: &'a [f32], rows: usize, cols: usize, stride: usize) -> Self {
        Mat { data, rows, cols, rs: stride, cs: 1 }
    }
    /// The transpose (no copy).
    pub fn t(self) -> Self {
        Mat { rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs, ..self }
    }
}

/// The largest index a `rows × cols` view with strides `rs`, `cs` reads, plus one.
fn extent(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * rs + (cols - 1) * cs + 1
    }
}

/// `c = alpha · a · b + beta · c` with `c` row-major, `rows × cols` at row stride `ldc`.
/// With `beta == 0` the old contents of `c` are not read.
pub(crate) fn gemm(alpha: f32, a: Mat, b: Mat, beta: f32, c: &mut [f32], ldc: usize) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "inner dimensions");
    assert!(extent(a.rows, a.cols, a.rs, a.cs) <= a.data.len(), "lhs view outside its slice");
    assert!(extent(b.rows, b.cols, b.rs, b.cs) <= b.data.len(), "rhs view outside its slice");
    assert!(ldc >= n && extent(m, n, ldc, 1) <= c.len(), "output view outside its slice");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        // an empty sum: make the result explicit, c = beta · c
        for r in 0..m {
            c[r * ldc..r * ldc + n].iter_mut().for_each(|x| *x = if beta == 0.0 { 0.0 } else { *x * beta });
        }
        return;
    }
    // gemm's convention: dst = alpha · dst + beta · lhs · rhs, strides column first. Its
    // kernels prefer a column-major destination, so where `c`'s rows are longer than one element
    // (ldc > 1) the product is taken as its transpose, cᵀ = bᵀ · aᵀ (what the `gemm` crate's
    // front end does before calling the same f32 kernel; the strides here are never negative).
    let (m, n, dst_cs, dst_rs, lhs, rhs) =
        if ldc > 1 { (n, m, ldc, 1, b.t(), a.t()) } else { (m, n, 1, ldc, a, b) };
    let f = gemm_f32::gemm::f32::get_gemm_fn();
    // SAFETY: every index each view reaches is within its slice (checked above), `c` does not
    // alias `a` or `b` (it is borrowed mutably), and the dimensions and strides fit isize
    // (they index slices).
    unsafe {
        f(
            m,
            n,
            k,
            c.as_mut_ptr(),
            dst_cs as isize,
            dst_rs as isize,
            beta != 0.0,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            beta,
            alpha,
            false,
            false,
            false,
            gemm_common::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_match_the_definition() {
        let (m, k, n) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.11).cos()).collect();
        // a · bᵀ with b stored [n, k]
        let mut c = vec![1.0f32; m * n];
        gemm(2.0, Mat::rows(&a, m, k), Mat::rows(&b, n, k).t(), 0.5, &mut c, n);
        for r in 0..m {
            for col in 0..n {
                let want: f32 = 2.0 * (0..k).map(|i| a[r * k + i] * b[col * k + i]).sum::<f32>() + 0.5;
                assert!((c[r * n + col] - want).abs() < 1e-5, "({r}, {col})");
            }
        }
        // k = 0 scales c
        let mut c = vec![3.0f32; 4];
        gemm(1.0, Mat::rows(&[], 2, 0), Mat::rows(&[], 0, 2), 0.0, &mut c, 2);
        assert_eq!(c, [0.0; 4]);
    }
}
