//! The fast CPU path's element-wise loops over rows of scores: an exponential that vectorises,
//! row maxima and sums with independent lanes, and the online-softmax step. Each public
//! function runs the same generic body compiled for AVX-512 or AVX2 + FMA when the processor has
//! them (detected once by `std`), and for the baseline otherwise.

/// Lanes of the independent accumulators (a multiple of every vector width used).
const LANES: usize = 16;

/// `e^x` for `x <= 0` (also correct up to about 88), to about 1 ulp; `e^x` below `2^-125`
/// (including `x = -inf`) is 0. Branch-free, so loops over it vectorise.
///
/// `e^x = 2^n · e^r` with `n = round(x · log2 e)` and `r = x - n ln 2` (in two parts, so that
/// `r` keeps its precision), `|r| <= ln 2 / 2`, and `e^r` by a degree-7 polynomial (the classic
/// single-precision minimax coefficients).
#[inline(always)]
fn exp_one<const F: bool>(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4; // 0.693359375: few bits, so n · LN2_HI is exact
    const LN2_LO: f32 = -2.121_944_4e-4;
    const P: [f32; 6] = [1.987_569_2e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5];
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23: adding and subtracting it rounds to an integer
    let xc = x.clamp(-87.0, 88.0);
    let shifted = madd::<F>(xc, LOG2_E, ROUND);
    let n = shifted - ROUND;
    let r = madd::<F>(-n, LN2_LO, madd::<F>(-n, LN2_HI, xc));
    let r2 = r * r;
    let mut p = P[0];
    for c in &P[1..] {
        p = madd::<F>(p, r, *c);
    }
    let p = madd::<F>(p, r2, r) + 1.0;
    // n sits in the low mantissa bits of `shifted` (offset by ROUND's bits): 2^n's exponent
    // field without a float-to-int conversion (which would not vectorise)
    let scale = f32::from_bits(shifted.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127) << 23);
    if x < -87.0 {
        0.0
    } else {
        p * scale
    }
}

/// `a · b + c`, fused where `F` says the target has FMA (a fused multiply-add without it is a
/// slow library call).
#[inline(always)]
fn madd<const F: bool>(a: f32, b: f32, c: f32) -> f32 {
    if F {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// The larger of two non-NaN values, as one `max` instruction.
#[inline(always)]
fn max2(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}

#[inline(always)]
fn max_of(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for l in 0..LANES {
            acc[l] = max2(acc[l], c[l]);
        }
    }
    tail.iter().fold(acc.iter().fold(f32::NEG_INFINITY, |a, &b| max2(a, b)), |a, &b| max2(a, b))
}

/// `x ← e^(x - m)` over `xs`, returning the sum of the results.
#[inline(always)]
fn exp_sub_sum<const F: bool>(xs: &mut [f32], m: f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut chunks = xs.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            c[l] = exp_one::<F>(c[l] - m);
            acc[l] += c[l];
        }
    }
    let mut sum = acc.iter().sum::<f32>();
    for x in chunks.into_remainder() {
        *x = exp_one::<F>(*x - m);
        sum += *x;
    }
    sum
}

#[inline(always)]
fn online_rows_impl<const F: bool>(s: &mut [f32], width: usize, m: &mut [f32], l: &mut [f32], alpha: &mut [f32]) {
    for (r, row) in s.chunks_exact_mut(width).enumerate() {
        let m_new = max2(m[r], max_of(row));
        if m_new == f32::NEG_INFINITY {
            // nothing kept yet: the row's weights are zero and its state unchanged
            row.iter_mut().for_each(|x| *x = 0.0);
            alpha[r] = 1.0;
            continue;
        }
        let sum = exp_sub_sum::<F>(row, m_new);
        alpha[r] = exp_one::<F>(m[r] - m_new);
        l[r] = l[r] * alpha[r] + sum;
        m[r] = m_new;
    }
}

#[inline(always)]
fn softmax_rows_impl<const F: bool>(s: &mut [f32], width: usize, sink: f32) {
    for row in s.chunks_exact_mut(width) {
        let m = max2(max_of(row), sink);
        if m == f32::NEG_INFINITY {
            row.iter_mut().for_each(|x| *x = 0.0);
            continue;
        }
        let inv = 1.0 / (exp_sub_sum::<F>(row, m) + exp_one::<F>(sink - m));
        row.iter_mut().for_each(|x| *x *= inv);
    }
}

#[inline(always)]
fn max_abs_bits_impl<const F: bool>(xs: &[f32], out: &mut u32) {
    let mut acc = [0u32; LANES];
    let lanes = xs.chunks_exact(LANES);
    let tail = lanes.remainder();
    for l in lanes {
        for i in 0..LANES {
            acc[i] = acc[i].max(l[i].to_bits() & 0x7fff_ffff);
        }
    }
    *out = tail.iter().fold(acc.into_iter().fold(*out, u32::max), |a, v| a.max(v.to_bits() & 0x7fff_ffff));
}

#[inline(always)]
fn div_into_impl<const F: bool>(dst: &mut [f32], src: &[f32], t: f32, bits: &mut u32) {
    let mut acc = [0u32; LANES];
    let (mut d, mut s) = (dst.chunks_exact_mut(LANES), src.chunks_exact(LANES));
    for (o, x) in (&mut d).zip(&mut s) {
        for i in 0..LANES {
            acc[i] = acc[i].max(x[i].to_bits() & 0x7fff_ffff);
            o[i] = if t == 1.0 { x[i] } else { x[i] / t };
        }
    }
    let mut m = acc.into_iter().fold(*bits, u32::max);
    for (o, x) in d.into_remainder().iter_mut().zip(s.remainder()) {
        m = m.max(x.to_bits() & 0x7fff_ffff);
        *o = if t == 1.0 { *x } else { x / t };
    }
    *bits = m;
}

/// Defines `pub(crate) fn $name` that runs `$body` (an `#[inline(always)]` function) compiled
/// for the best instruction set the processor has.
macro_rules! multiversion {
    ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) => $body:ident) => {
        $(#[$doc])*
        pub(crate) fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                fn avx512($($arg: $ty),*) {
                    $body::<true>($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) {
                    $body::<true>($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512vl") {
                    // SAFETY: the processor has the features `avx512` is compiled for.
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: as above, for `avx2`.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body::<BASE_FMA>($($arg),*)
        }
    };
}

/// Whether the baseline build has a fused multiply-add instruction (aarch64 always does).
const BASE_FMA: bool = cfg!(any(target_arch = "aarch64", target_feature = "fma"));

multiversion! {
    /// One online-softmax step for each row of `s` (rows of `width` scores, `-inf` where
    /// masked): with `m` and `l` the rows' running max and sum, the scores become
    /// `e^(s - m_new)` (0 where masked), `l ← l · alpha + Σ`, `m ← m_new`, and `alpha` receives
    /// `e^(m_old - m_new)`, the factor the row's accumulator must be rescaled by (1 for a row
    /// with nothing kept so far).
    fn online_rows(s: &mut [f32], width: usize, m: &mut [f32], l: &mut [f32], alpha: &mut [f32]) => online_rows_impl
}

multiversion! {
    /// Softmax of each row of `s` (rows of `width`, `-inf` where masked) in place, the
    /// denominator also counting `e^sink` (`-inf`: no sink); a row with nothing kept (and no
    /// sink) becomes zeros.
    fn softmax_rows(s: &mut [f32], width: usize, sink: f32) => softmax_rows_impl
}

/// One row of the backward's block: `s ← e^(scale · s - lse)` (the weights, from raw dot
/// products) and `dp ← s · (dp - di) · scale` (the dot products' gradients).
#[inline(always)]
fn backward_row_impl<const F: bool>(s: &mut [f32], dp: &mut [f32], scale: f32, lse: f32, di: f32) {
    for (x, g) in s.iter_mut().zip(dp.iter_mut()) {
        let w = exp_one::<F>(madd::<F>(*x, scale, -lse));
        *x = w;
        *g = w * (*g - di) * scale;
    }
}

multiversion! {
    /// One row of the backward pass's block in place, for scores without soft-cap, ALiBi or
    /// mask: the raw dot products `s` become the weights `e^(scale · s - lse)` and `dp` (the
    /// output gradient's dot products with V) becomes `w · (dp - di) · scale`, the gradient of
    /// the dot products (`di` the row's `rowsum(dO ∘ O)`).
    fn backward_row(s: &mut [f32], dp: &mut [f32], scale: f32, lse: f32, di: f32) => backward_row_impl
}

multiversion! {
    /// `out ← max(out, bits of |x|)` over `xs`: for non-negative floats the bit patterns order
    /// as the values do, so this is the largest magnitude's pattern; NaN and infinities are the
    /// patterns from `0x7f80_0000` up.
    fn max_abs_bits(xs: &[f32], out: &mut u32) => max_abs_bits_impl
}

multiversion! {
    /// `dst ← src / t`, element-wise, while `bits ← max(bits, bits of |src|)` as
    /// [`max_abs_bits`] does (one pass scans and scales).
    fn div_into(dst: &mut [f32], src: &[f32], t: f32, bits: &mut u32) => div_into_impl
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backward_rows_are_the_formula() {
        let (mut s, mut dp) = (vec![0.5f32, -2.0, 3.0, 0.0, 1.25], vec![1.0f32, -0.5, 0.25, 2.0, 0.0]);
        let (s0, dp0) = (s.clone(), dp.clone());
        let (scale, lse, di) = (0.7f32, 2.5f32, 0.3f32);
        backward_row(&mut s, &mut dp, scale, lse, di);
        for e in 0..s.len() {
            let w = ((s0[e] * scale) as f64 - lse as f64).exp();
            assert!((s[e] as f64 - w).abs() <= 1e-6 * w.max(1e-30), "{e}");
            let g = w * (dp0[e] - di) as f64 * scale as f64;
            assert!((dp[e] as f64 - g).abs() <= 1e-6 * g.abs().max(1e-6), "{e}");
        }
    }

    #[test]
    fn exp_is_accurate_and_zero_below_range() {
        let mut worst = 0.0f64;
        for i in 0..=200_000 {
            let x = -87.0 + 87.0 * 1.1 * i as f32 / 200_000.0;
            let got = exp_one::<false>(x) as f64;
            let want = (x as f64).exp();
            assert!((exp_one::<true>(x) as f64 - want).abs() <= 3e-7 * want, "{x}");
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 3e-7, "relative error {worst:e}");
        for x in [f32::NEG_INFINITY, -1e30, -88.0, -100.0] {
            assert_eq!(exp_one::<false>(x), 0.0, "{x}");
        }
        assert_eq!(exp_one::<false>(0.0), 1.0);
        assert!((exp_one::<false>(2.0) - 2.0f32.exp()).abs() < 1e-5);
    }

    #[test]
    fn online_steps_equal_one_softmax() {
        // two blocks of one row, then a row that stays masked
        let row: Vec<f32> = (0..37).map(|i| ((i * 7) % 11) as f32 * 0.9 - 3.0).collect();
        let (mut m, mut l, mut a) = ([f32::NEG_INFINITY; 2], [0.0f32; 2], [0.0f32; 2]);
        let mut acc = 0.0f64; // Σ p_j · j, rescaled like an accumulator
        for block in row.chunks(20) {
            let mut s: Vec<f32> = block.to_vec();
            s.resize(20, f32::NEG_INFINITY);
            s.extend([f32::NEG_INFINITY; 20]);
            online_rows(&mut s, 20, &mut m, &mut l, &mut a);
            acc *= a[0] as f64;
            let base = if block.len() == 20 { 0 } else { 20 };
            acc += s[..20].iter().enumerate().map(|(j, p)| *p as f64 * (base + j) as f64).sum::<f64>();
            assert_eq!((m[1], l[1], a[1]), (f32::NEG_INFINITY, 0.0, 1.0));
            assert!(s[20..].iter().all(|&p| p == 0.0));
        }
        let mx = row.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b as f64));
        let sum: f64 = row.iter().map(|&x| (x as f64 - mx).exp()).sum();
        let mean: f64 = row.iter().enumerate().map(|(j, &x)| (x as f64 - mx).exp() * j as f64).sum::<f64>() / sum;
        assert!((m[0] as f64 - mx).abs() < 1e-6 && ((l[0] as f64 - sum) / sum).abs() < 1e-5);
        assert!((acc / l[0] as f64 - mean).abs() < 1e-4, "{} vs {mean}", acc / l[0] as f64);
        let mut s = row.clone();
        s.push(f32::NEG_INFINITY);
        softmax_rows(&mut s, 38, f32::NEG_INFINITY);
        assert!((s.iter().sum::<f32>() - 1.0).abs() < 1e-6 && s[37] == 0.0);
    }
}
