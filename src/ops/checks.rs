//! The device-side checks every operation shares: tensors of this context, dtypes the device
//! supports, and outputs that alias no input.

use crate::context::Context;
use crate::error::{Error, Result};
use crate::shape::DType;
use crate::tensor::{Mask, Tensor};

/// Largest dimension the kernels index (their arithmetic is 32-bit, causal offsets signed).
const MAX_GPU_DIM: usize = i32::MAX as usize;

/// A byte range of a buffer that a call reads or writes.
pub(crate) struct Region<'a> {
    name: &'static str,
    buffer: &'a wgpu::Buffer,
    start: u64,
    end: u64,
}

impl<'a> Region<'a> {
    pub fn tensor(name: &'static str, t: &'a Tensor) -> Self {
        let (start, end) = t.byte_range();
        Region { name, buffer: &t.buffer, start, end }
    }
    /// The first `bytes` of a buffer bound whole (offsets).
    pub fn words(name: &'static str, buffer: &'a wgpu::Buffer, bytes: u64) -> Self {
        Region { name, buffer, start: 0, end: bytes }
    }
    pub fn mask(m: &'a Mask) -> Self {
        Region { name: "mask", buffer: &m.buffer, start: 0, end: m.shape.iter().product::<usize>() as u64 * 4 }
    }
}

impl Context {
    /// Device-side checks of a call's tensors: each belongs to this context, f16 is available
    /// if used, and the dimensions fit the kernels' 32-bit indexing.
    pub(crate) fn check_tensors(&self, tensors: &[(&'static str, &Tensor)], mask: Option<&Mask>) -> Result<()> {
        self.check_alive()?;
        for (name, t) in tensors {
            self.check_owns(name, t.ctx_id)?;
        }
        if let Some(m) = mask {
            self.check_owns("mask", m.ctx_id)?;
        }
        for (name, t) in tensors {
            if t.dtype == DType::F16 && !self.supports_f16() {
                return Err(Error::F16Unsupported { argument: name });
            }
            let s = t.shape;
            if let Some(&big) = [s.batch * s.heads, s.seq, s.dim].iter().find(|&&x| x > MAX_GPU_DIM) {
                return Err(Error::TooLarge {
                    argument: name,
                    message: format!("dimension {big} exceeds the kernels' 32-bit indexing (at most {MAX_GPU_DIM})"),
                });
            }
        }
        Ok(())
    }
}

impl Context {
    /// [`Context::check_tensors`] for outputs, which also may not address an element twice
    /// (a strided view with overlapping rows would race).
    pub(crate) fn check_outputs(&self, outputs: &[(&'static str, &Tensor)]) -> Result<()> {
        self.check_tensors(outputs, None)?;
        for (argument, t) in outputs {
            if !t.is_injective() {
                return Err(Error::InvalidArgument {
                    argument,
                    message: format!(
                        "an output's elements must not share addresses, but strides {:?} over shape {:?} overlap",
                        t.strides,
                        t.shape.dims()
                    ),
                });
            }
        }
        Ok(())
    }
}

/// Outputs must not share a buffer with an input of the same call (wgpu cannot bind one buffer
/// read-only and read-write in one dispatch, so the caller's `finish()` would fail), nor overlap
/// another output.
pub(crate) fn check_aliasing(outputs: &[Region], inputs: &[Region]) -> Result<()> {
    for (i, o) in outputs.iter().enumerate() {
        for x in inputs {
            if o.buffer == x.buffer {
                return Err(Error::Aliasing { argument: o.name, other: x.name });
            }
        }
        for o2 in &outputs[i + 1..] {
            if o.buffer == o2.buffer && o.start < o2.end && o2.start < o.end {
                return Err(Error::Aliasing { argument: o2.name, other: o.name });
            }
        }
    }
    Ok(())
}
