//! Element types: what a tensor stores ([`DType`]) and the host types that match ([`Element`]).
//! Plain data, imported by every layer (errors name dtypes too).

/// Storage type of tensor elements.
///
/// ```
/// use wgpu_attention::{half::f16, DType, Element};
/// assert_eq!(DType::F16.size(), 2);
/// assert_eq!(<f16 as Element>::DTYPE, DType::F16);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit float.
    F32,
    /// 16-bit float (IEEE half); needs `SHADER_F16` on the GPU. Arithmetic stays in f32.
    F16,
}

impl DType {
    /// Bytes per element.
    pub const fn size(&self) -> u64 {
        match self {
            DType::F32 => 4,
            DType::F16 => 2,
        }
    }
}

/// Host element types that can be uploaded: `f32` and `half::f16`.
pub trait Element: bytemuck::Pod + Send + Sync + 'static {
    /// The matching [`DType`].
    const DTYPE: DType;
    /// The largest finite value (outputs stored in this type saturate there).
    const MAX: f32;
    /// Widen to f32.
    fn to_f32(self) -> f32;
    /// Narrow from f32 (round to nearest).
    fn from_f32(v: f32) -> Self;
}

impl Element for f32 {
    const DTYPE: DType = DType::F32;
    const MAX: f32 = f32::MAX;
    fn to_f32(self) -> f32 {
        self
    }
    fn from_f32(v: f32) -> Self {
        v
    }
}

impl Element for half::f16 {
    const DTYPE: DType = DType::F16;
    const MAX: f32 = 65504.0;
    fn to_f32(self) -> f32 {
        half::f16::to_f32(self)
    }
    fn from_f32(v: f32) -> Self {
        half::f16::from_f32(v)
    }
}
