//! The element types of a KV cache's pools ([`KvDType`]): f32 and f16 values, and the quantized
//! formats q8_0, q4_0 (ggml's blocks) and fp8 e4m3 (OCP, with an f32 scale per key/value head).
//!
//! Quantized pools are stored as 32-bit words, the same on the host ([`HostKvCache`]) and on
//! the GPU ([`PagedKvCache`]): the values first, then the scales.
//!
//! | type | values | scales | bits per value |
//! |---|---|---|---|
//! | q8_0 | one `i8` per value, 4 per word, element `i` in byte `i % 4` of word `i / 4` | one f16 per block of 32 values along the head dim (`absmax / 127`), two per word (block `2w` in the low half) | 8.5 |
//! | q4_0 | 16 bytes per block of 32: byte `j` holds value `j` (low nibble) and value `j + 16` (high nibble), each `q + 8` | as q8_0 (`max / -8`, `max` the value of largest magnitude) | 4.5 |
//! | fp8 e4m3 | one byte per value, 4 per word | one f32 per key/value head | 8 |
//!
//! A block's bytes are ggml's (`block_q8_0::qs`, `block_q4_0::qs`), its scale ggml's `d`; a
//! value dequantizes to `q · d` (q8_0) or `(q - 8) · d` (q4_0), in f32, exactly as ggml's
//! `dequantize_row_q8_0` / `_q4_0`. Values are quantized as ggml's reference quantizers do
//! (`quantize_row_q8_0_ref`, `quantize_row_q4_0_ref`), with two documented exceptions: a block
//! whose largest magnitude is below 2^-100 is stored as the all-zero block (ggml stores ±127s
//! against a scale that rounds to 0: the same dequantized zeros), and a scale past f16's range
//! (a q8_0 block with a value of magnitude `127 · 65520` or more, q4_0 `8 · 65520`) is refused on
//! the host and saturated to 65504 by the GPU append of values it could not scan.
//!
//! [`HostKvCache`]: crate::HostKvCache
//! [`PagedKvCache`]: crate::PagedKvCache

use half::f16;

use crate::error::{Error, Result};
use crate::shape::DType;

/// Values per block of q8_0 and q4_0.
pub const QK: usize = 32;

/// Largest finite fp8 e4m3 value (OCP): values beyond saturate to it.
pub const FP8_E4M3_MAX: f32 = 448.0;

/// Blocks whose largest magnitude is below this are stored as all-zero blocks (their f16
/// scale is 0 either way).
pub(crate) const TINY: f32 = f32::from_bits(27 << 23); // 2^-100

/// The element type of one pool (K or V) of a KV cache.
///
/// ```
/// use wgpu_attention::KvDType;
/// let t: KvDType = "q4_0".parse()?;
/// assert_eq!((t, t.bits_per_value()), (KvDType::Q4_0, 4.5));
/// // a q8_0 block at head dim 128: 4 blocks of 32 values, 34 bytes each
/// assert_eq!(KvDType::Q8_0.bytes_per_row(128), 136);
/// assert!(KvDType::Q8_0.check_head_dim(100).is_err()); // not a multiple of 32
/// # Ok::<(), wgpu_attention::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum KvDType {
    /// 32-bit floats.
    F32,
    /// 16-bit floats.
    #[default]
    F16,
    /// ggml's q8_0: blocks of 32 values along the head dim, an f16 scale (`absmax / 127`) and
    /// 32 `i8` values each, 8.5 bits per value. Head dims that are multiples of 32.
    Q8_0,
    /// ggml's q4_0: blocks of 32 values, an f16 scale (`max / -8`, `max` the value of largest
    /// magnitude) and 32 4-bit values offset by 8, 4.5 bits per value. Head dims that are
    /// multiples of 32.
    Q4_0,
    /// fp8 e4m3 (OCP: 4 exponent bits, 3 mantissa bits, largest 448, no infinities), with an f32
    /// scale per key/value head: a value `x` is stored as `e4m3(x · (1 / scale))`, rounded to
    /// nearest even and saturated at ±448, and read as `e4m3 · scale`. Head dims that are
    /// multiples of 4.
    Fp8E4m3,
}

impl KvDType {
    /// Every type.
    pub const ALL: [KvDType; 5] = [KvDType::F32, KvDType::F16, KvDType::Q8_0, KvDType::Q4_0, KvDType::Fp8E4m3];

    /// The name used by the benchmarks and `FromStr`: `f32`, `f16`, `q8_0`, `q4_0`, `fp8`.
    pub fn name(&self) -> &'static str {
        match self {
            KvDType::F32 => "f32",
            KvDType::F16 => "f16",
            KvDType::Q8_0 => "q8_0",
            KvDType::Q4_0 => "q4_0",
            KvDType::Fp8E4m3 => "fp8",
        }
    }

    /// Storage bits per value, scales included (fp8's per-head scale not counted).
    pub fn bits_per_value(&self) -> f64 {
        match self {
            KvDType::F32 => 32.0,
            KvDType::F16 => 16.0,
            KvDType::Q8_0 => 8.5,
            KvDType::Q4_0 => 4.5,
            KvDType::Fp8E4m3 => 8.0,
        }
    }

    /// The plain dtype of an f32 or f16 pool; `None` for the quantized types.
    pub fn plain(&self) -> Option<DType> {
        match self {
            KvDType::F32 => Some(DType::F32),
            KvDType::F16 => Some(DType::F16),
            _ => None,
        }
    }

    /// Whether values are stored quantized (q8_0, q4_0, fp8).
    pub fn is_quantized(&self) -> bool {
        self.plain().is_none()
    }

    /// Bytes of one `head_dim` row of one head, scales included (fp8's per-head scale not
    /// counted); the head dim is assumed valid for the type ([`check_head_dim`](Self::check_head_dim)).
    pub fn bytes_per_row(&self, head_dim: usize) -> usize {
        match self {
            KvDType::F32 => 4 * head_dim,
            KvDType::F16 => 2 * head_dim,
            KvDType::Q8_0 => head_dim / QK * (2 + QK),
            KvDType::Q4_0 => head_dim / QK * (2 + QK / 2),
            KvDType::Fp8E4m3 => head_dim,
        }
    }

    /// Whether the type can store rows of `head_dim` values: the block types need multiples
    /// of 32, fp8 multiples of 4 (4 values per word); `Err(InvalidArgument)` naming
    /// `head_dim` with the reason.
    pub fn check_head_dim(&self, head_dim: usize) -> Result<()> {
        let need = match self {
            KvDType::Q8_0 | KvDType::Q4_0 => QK,
            KvDType::Fp8E4m3 => 4,
            _ => 1,
        };
        if !head_dim.is_multiple_of(need) {
            return Err(Error::InvalidArgument {
                argument: "head_dim",
                message: format!(
                    "{} stores rows in {} of {need} values along the head dim, and {head_dim} is not a multiple of {need}",
                    self.name(),
                    if need == QK { "blocks" } else { "words" }
                ),
            });
        }
        Ok(())
    }

    /// Words of the values of a quantized pool of `n` values (`None` for f32 and f16).
    pub(crate) fn value_words(&self, n: usize) -> Option<usize> {
        match self {
            KvDType::Q8_0 | KvDType::Fp8E4m3 => Some(n / 4),
            KvDType::Q4_0 => Some(n / 8),
            _ => None,
        }
    }

    /// Words of a quantized pool of `n` values over `kv_heads` heads: values, then scales
    /// (`None` for f32 and f16).
    pub(crate) fn pool_words(&self, n: usize, kv_heads: usize) -> Option<usize> {
        let scales = match self {
            KvDType::Q8_0 | KvDType::Q4_0 => (n / QK).div_ceil(2),
            KvDType::Fp8E4m3 => kv_heads,
            _ => return None,
        };
        Some(self.value_words(n)? + scales)
    }

    /// The code the shaders use: 0 plain, 1 q8_0, 2 q4_0, 3 fp8.
    pub(crate) fn code(&self) -> u32 {
        match self {
            KvDType::F32 | KvDType::F16 => 0,
            KvDType::Q8_0 => 1,
            KvDType::Q4_0 => 2,
            KvDType::Fp8E4m3 => 3,
        }
    }
}

impl From<DType> for KvDType {
    fn from(d: DType) -> Self {
        match d {
            DType::F32 => KvDType::F32,
            DType::F16 => KvDType::F16,
        }
    }
}

impl std::fmt::Display for KvDType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for KvDType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(KvDType::F32),
            "f16" => Ok(KvDType::F16),
            "q8_0" | "q8" => Ok(KvDType::Q8_0),
            "q4_0" | "q4" => Ok(KvDType::Q4_0),
            "fp8" | "fp8_e4m3" | "e4m3" => Ok(KvDType::Fp8E4m3),
            _ => Err(Error::InvalidArgument {
                argument: "kv_dtype",
                message: format!("{s:?} is not one of f32, f16, q8_0, q4_0, fp8"),
            }),
        }
    }
}

/// One q8_0 block, as ggml's `block_q8_0`: the scale `d` and 32 values; value `j` is
/// `qs[j] · d`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockQ8_0 {
    /// The scale, `absmax / 127` rounded to f16.
    pub d: f16,
    /// The values.
    pub qs: [i8; QK],
}

/// One q4_0 block, as ggml's `block_q4_0`: the scale `d` and 16 bytes; value `j < 16` is
/// `((qs[j] & 15) - 8) · d`, value `j + 16` is `((qs[j] >> 4) - 8) · d`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockQ4_0 {
    /// The scale, `max / -8` rounded to f16 (`max` the value of largest magnitude, the first
    /// one where two have it).
    pub d: f16,
    /// The values, two per byte.
    pub qs: [u8; QK / 2],
}

/// The smallest magnitude whose block scale passes f16's range (`None`: no block scale).
pub(crate) fn max_storable(t: KvDType) -> Option<f32> {
    match t {
        KvDType::Q8_0 => Some(127.0 * 65520.0),
        KvDType::Q4_0 => Some(8.0 * 65520.0),
        _ => None,
    }
}

/// The f16 of a block's scale, or `Err(InvalidArgument)` where it passes f16's range.
fn scale_f16(argument: &'static str, d: f32, what: &str) -> Result<f16> {
    let h = f16::from_f32(d);
    if h.is_infinite() {
        return Err(Error::InvalidArgument {
            argument,
            message: format!("a {what} block's scale {d:e} is past f16's range (its values are too large for {what})"),
        });
    }
    Ok(h)
}

/// Refuses NaN and infinities in a block.
fn check_finite(argument: &'static str, x: &[f32]) -> Result<()> {
    match x.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(Error::NonFinite { argument, index, value: x[index] }),
        None => Ok(()),
    }
}

/// Quantizes 32 values to a q8_0 block, as ggml's `quantize_row_q8_0_ref` (see the module
/// docs for the two exceptions). NaN and infinities, and values whose scale passes f16's range,
/// are refused naming `values`.
///
/// ```
/// use wgpu_attention::{quantize_q8_0, dequantize_q8_0};
/// let x: Vec<f32> = (0..32).map(|i| i as f32 - 16.0).collect();
/// let b = quantize_q8_0(x.as_slice().try_into().unwrap())?;
/// assert_eq!(b.qs[0], -127); // -16 is the largest magnitude
/// let y = dequantize_q8_0(&b);
/// assert!(x.iter().zip(&y).all(|(a, b)| (a - b).abs() <= 16.0 / 127.0));
/// # Ok::<(), wgpu_attention::Error>(())
/// ```
pub fn quantize_q8_0(x: &[f32; QK]) -> Result<BlockQ8_0> {
    check_finite("values", x)?;
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    if amax < TINY {
        return Ok(BlockQ8_0 { d: f16::ZERO, qs: [0; QK] });
    }
    let d = amax / 127.0;
    let id = 1.0 / d;
    let dh = scale_f16("values", d, "q8_0")?;
    let mut qs = [0i8; QK];
    for (q, v) in qs.iter_mut().zip(x) {
        *q = (v * id).round() as i8;
    }
    Ok(BlockQ8_0 { d: dh, qs })
}

/// Quantizes 32 values to a q4_0 block, as ggml's `quantize_row_q4_0_ref` (see the module docs
/// for the two exceptions). NaN and infinities, and values whose scale passes f16's range, are
/// refused naming `values`.
pub fn quantize_q4_0(x: &[f32; QK]) -> Result<BlockQ4_0> {
    check_finite("values", x)?;
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    if amax < TINY {
        // ggml's scale, max / -8, is ±0 in f16 (-0 for an all-zero block)
        let d = if max < 0.0 { f16::ZERO } else { f16::NEG_ZERO };
        return Ok(BlockQ4_0 { d, qs: [0x88; QK / 2] });
    }
    let d = max / -8.0;
    let id = 1.0 / d;
    let dh = scale_f16("values", d, "q4_0")?;
    let mut qs = [0u8; QK / 2];
    for (j, q) in qs.iter_mut().enumerate() {
        let x0 = x[j] * id;
        let x1 = x[j + QK / 2] * id;
        let a = ((x0 + 8.5) as i8).min(15) as u8;
        let b = ((x1 + 8.5) as i8).min(15) as u8;
        *q = a | (b << 4);
    }
    Ok(BlockQ4_0 { d: dh, qs })
}

/// The 32 values of a q8_0 block (`qs[j] · d` in f32).
pub fn dequantize_q8_0(b: &BlockQ8_0) -> [f32; QK] {
    let d = b.d.to_f32();
    b.qs.map(|q| q as f32 * d)
}

/// The 32 values of a q4_0 block.
pub fn dequantize_q4_0(b: &BlockQ4_0) -> [f32; QK] {
    let d = b.d.to_f32();
    let mut y = [0.0f32; QK];
    for j in 0..QK / 2 {
        y[j] = ((b.qs[j] & 15) as i32 - 8) as f32 * d;
        y[j + QK / 2] = ((b.qs[j] >> 4) as i32 - 8) as f32 * d;
    }
    y
}

/// The fp8 e4m3 code of `x` (OCP): rounded to nearest even, saturated at ±448 (no infinities;
/// NaN is refused by the callers, and encodes as 0x7f here).
///
/// ```
/// use wgpu_attention::{fp8_e4m3_from_f32, fp8_e4m3_to_f32};
/// assert_eq!(fp8_e4m3_from_f32(1.0), 0x38);
/// assert_eq!(fp8_e4m3_to_f32(fp8_e4m3_from_f32(1000.0)), 448.0); // saturates
/// assert_eq!(fp8_e4m3_to_f32(fp8_e4m3_from_f32(-0.0019531)), -0.001953125); // smallest subnormal
/// ```
pub fn fp8_e4m3_from_f32(x: f32) -> u8 {
    if x.is_nan() {
        return 0x7f;
    }
    let bits = x.to_bits();
    let sign = ((bits >> 24) & 0x80) as u8;
    let a = bits & 0x7fff_ffff;
    let code = if a >= 0x43e0_0000 {
        // 448 and above saturate
        0x7e
    } else if a < 0x3c80_0000 {
        // below 2^-6: subnormal, multiples of 2^-9 (the product is exact)
        (f32::from_bits(a) * 512.0).round_ties_even() as u32
    } else {
        // round the mantissa to 3 bits, to nearest even (a carry moves into the exponent)
        let r = (a + 0x7_ffff + ((a >> 20) & 1)) >> 20;
        (r - (120 << 3)).min(0x7e)
    };
    sign | code as u8
}

/// The value of an fp8 e4m3 code (0x7f and 0xff, NaN in OCP, read as ±480: never written by
/// the quantizer).
pub fn fp8_e4m3_to_f32(c: u8) -> f32 {
    let e = ((c >> 3) & 15) as i32;
    let m = (c & 7) as f32;
    let v = if e == 0 { m * (1.0 / 512.0) } else { (8.0 + m) * 2f32.powi(e - 10) };
    if c & 0x80 != 0 {
        -v
    } else {
        v
    }
}

/// Every e4m3 code's value, by code.
fn fp8_table() -> &'static [f32; 256] {
    static TABLE: std::sync::OnceLock<[f32; 256]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| std::array::from_fn(|c| fp8_e4m3_to_f32(c as u8)))
}

/// The f16 scale of a block, from a scale word.
#[inline]
fn half_of(word: u32, block: usize) -> f32 {
    f16::from_bits((word >> (16 * (block & 1))) as u16).to_f32()
}

/// A quantized pool as stored on the host and on the GPU: 32-bit words, values then scales.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QuantLayout {
    pub dtype: KvDType,
    /// Values per row (the head dim).
    pub d: usize,
    /// The first scale word.
    pub scales: usize,
}

impl QuantLayout {
    /// The layout of a pool of `n` values in rows of `d`.
    pub fn new(dtype: KvDType, d: usize, n: usize) -> Self {
        QuantLayout { dtype, d, scales: dtype.value_words(n).unwrap_or(0) }
    }

    /// Dequantizes the row of `d` values from element `at` (a multiple of `d`) of head `hk`,
    /// appending to `out`.
    pub fn read_row(&self, words: &[u32], at: usize, hk: usize, out: &mut Vec<f32>) {
        let byte = |i: usize| (words[i / 4] >> (8 * (i % 4))) as u8;
        match self.dtype {
            KvDType::Q8_0 => {
                for blk in at / QK..(at + self.d) / QK {
                    let d = half_of(words[self.scales + blk / 2], blk);
                    out.extend((0..QK).map(|j| byte(blk * QK + j) as i8 as f32 * d));
                }
            }
            KvDType::Q4_0 => {
                for blk in at / QK..(at + self.d) / QK {
                    let d = half_of(words[self.scales + blk / 2], blk);
                    let nib = |j: usize| {
                        let b = byte(blk * QK / 2 + j % 16);
                        (if j < 16 { b & 15 } else { b >> 4 }) as i32 - 8
                    };
                    out.extend((0..QK).map(|j| nib(j) as f32 * d));
                }
            }
            KvDType::Fp8E4m3 => {
                let s = f32::from_bits(words[self.scales + hk]);
                let lut = fp8_table();
                out.extend((at..at + self.d).map(|i| lut[byte(i) as usize] * s));
            }
            KvDType::F32 | KvDType::F16 => unreachable!("plain pools are not encoded"),
        }
    }

    /// Quantizes a row of `d` values into element `at` of head `hk` (values checked finite by
    /// the caller; block scales checked here).
    pub fn write_row(&self, words: &mut [u32], at: usize, hk: usize, x: &[f32]) -> Result<()> {
        let put = |words: &mut [u32], i: usize, b: u8| {
            let w = &mut words[i / 4];
            *w = (*w & !(0xff << (8 * (i % 4)))) | ((b as u32) << (8 * (i % 4)));
        };
        let mut scales = vec![];
        match self.dtype {
            KvDType::Q8_0 => {
                for (c, xs) in x.chunks_exact(QK).enumerate() {
                    let blk = at / QK + c;
                    let b = quantize_q8_0(xs.try_into().expect("32 values"))?;
                    for (j, q) in b.qs.iter().enumerate() {
                        put(words, blk * QK + j, *q as u8);
                    }
                    scales.push((blk, b.d));
                }
            }
            KvDType::Q4_0 => {
                for (c, xs) in x.chunks_exact(QK).enumerate() {
                    let blk = at / QK + c;
                    let b = quantize_q4_0(xs.try_into().expect("32 values"))?;
                    for (j, q) in b.qs.iter().enumerate() {
                        put(words, blk * QK / 2 + j, *q);
                    }
                    scales.push((blk, b.d));
                }
            }
            KvDType::Fp8E4m3 => {
                let inv = 1.0 / f32::from_bits(words[self.scales + hk]);
                for (j, v) in x.iter().enumerate() {
                    put(words, at + j, fp8_e4m3_from_f32(v * inv));
                }
            }
            KvDType::F32 | KvDType::F16 => unreachable!("plain pools are not encoded"),
        }
        for (blk, d) in scales {
            let w = &mut words[self.scales + blk / 2];
            let sh = 16 * (blk & 1);
            *w = (*w & !(0xffff << sh)) | ((d.to_bits() as u32) << sh);
        }
        Ok(())
    }
}

/// Checks fp8 scales: one per key/value head, positive normal floats with normal reciprocals
/// (between 2^-126 and 2^126).
pub(crate) fn check_fp8_scales(argument: &'static str, scales: &[f32], kv_heads: usize) -> Result<()> {
    if scales.len() != kv_heads {
        return Err(Error::LengthMismatch { argument, expected: kv_heads, got: scales.len() });
    }
    if let Some((i, s)) =
        scales.iter().enumerate().find(|(_, s)| !(s.is_normal() && **s > 0.0 && (1.0 / **s).is_normal()))
    {
        return Err(Error::InvalidArgument {
            argument,
            message: format!(
                "scale {i} is {s}: fp8 scales must be positive normal floats with normal reciprocals (2^-126 to 2^126)"
            ),
        });
    }
    Ok(())
}

/// fp8 e4m3 scales for values of known magnitude: `max_abs / 448` per head (1 where a head is
/// all zeros), so that the largest value lands on e4m3's largest.
///
/// `values` is `[.., kv_heads, head_dim]` row-major (e.g. the keys of a prompt in BSHD, or a
/// pool's tokens); a call quantizing later values larger than these saturates them at 448 ×
/// scale.
///
/// ```
/// use wgpu_attention::fp8_scales_for;
/// let x = [1.0f32, -896.0, 0.5, 2.0]; // 2 tokens of 1 head, head dim 2
/// assert_eq!(fp8_scales_for(&x, 1, 2), vec![2.0]);
/// ```
pub fn fp8_scales_for(values: &[f32], kv_heads: usize, head_dim: usize) -> Vec<f32> {
    let mut m = vec![0.0f32; kv_heads];
    if kv_heads > 0 && head_dim > 0 {
        for (r, row) in values.chunks(head_dim).enumerate() {
            let h = r % kv_heads;
            m[h] = row.iter().filter(|v| v.is_finite()).fold(m[h], |a, v| a.max(v.abs()));
        }
    }
    m.into_iter().map(|a| if a > 0.0 { a / FP8_E4M3_MAX } else { 1.0 }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fp8_round_trips_every_code() {
        for c in 0u8..=255 {
            if c & 0x7f == 0x7f {
                continue;
            }
            let v = fp8_e4m3_to_f32(c);
            let back = fp8_e4m3_from_f32(v);
            // -0 encodes as 0x80
            assert_eq!(back, c, "code {c:#x} = {v}");
        }
        assert_eq!(fp8_e4m3_to_f32(0x7e), 448.0);
        assert_eq!(fp8_e4m3_from_f32(464.0), 0x7e);
        assert_eq!(fp8_e4m3_from_f32(-1e30), 0xfe);
        // halfway between 1 and 1.125 goes to the even mantissa (1); between 1.125 and 1.25 up
        assert_eq!(fp8_e4m3_from_f32(1.0625), 0x38);
        assert_eq!(fp8_e4m3_from_f32(1.1875), 0x3a);
        // the subnormal/normal boundary: 2^-6 - 2^-10 rounds up to 2^-6
        assert_eq!(fp8_e4m3_to_f32(fp8_e4m3_from_f32(0.015625 - 0.0009765625)), 0.015625);
    }

    use crate::pages::PageGeometry;

    #[test]
    fn layouts_round_trip() {
        let g = PageGeometry { num_pages: 2, page_size: 2, kv_heads: 3, head_dim: 64 };
        for t in [KvDType::Q8_0, KvDType::Q4_0, KvDType::Fp8E4m3] {
            let l = g.quant_layout(t);
            let mut w = vec![0u32; g.pool_words(t).unwrap()];
            if t == KvDType::Fp8E4m3 {
                for h in 0..3 {
                    w[l.scales + h] = (0.01f32 * (h + 1) as f32).to_bits();
                }
            }
            let x: Vec<f32> = (0..64).map(|i| ((i * 37) % 19) as f32 / 7.0 - 1.3).collect();
            l.write_row(&mut w, g.row(3, 2), 2, &x).unwrap();
            let mut y = vec![];
            l.read_row(&w, g.row(3, 2), 2, &mut y);
            // half a step (q8_0: 1.3/127/2; fp8: 1/16 of a value), q4_0 a whole step (1.3/8:
            // the side opposite the largest magnitude reaches 7 steps, not 8)
            let tol = match t {
                KvDType::Q4_0 => 0.17,
                KvDType::Fp8E4m3 => 0.09,
                _ => 0.006,
            };
            assert!(x.iter().zip(&y).all(|(a, b)| (a - b).abs() < tol), "{t}: {x:?} {y:?}");
            // other rows untouched
            let mut z = vec![];
            l.read_row(&w, g.row(2, 2), 2, &mut z);
            assert!(z.iter().all(|&v| v == 0.0));
        }
    }
}
