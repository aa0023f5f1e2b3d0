//! Tensor cores through wgpu's cooperative matrices: the context option, the state a context
//! reports, and detection from an adapter's features and configurations (pure). The self-check
//! that runs the first time a context would use them is `ops/tensor_cores.rs`.

/// Whether a context runs the f16 kernels that have a tensor-core variant (today similarity,
/// and with it top-k's scoring and unfused attention's scores) on cooperative matrices.
///
/// ```no_run
/// # use wgpu_attention::*;
/// # fn main() -> Result<()> {
/// // SIMT kernels only (e.g. to compare against the tensor-core path, or to rule it out)
/// let ctx = Context::with_options_blocking(ContextOptions { tensor_cores: TensorCores::Off, ..Default::default() })?;
/// println!("tensor cores: {}", ctx.tensor_cores()); // "inactive: off (ContextOptions::tensor_cores)"
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TensorCores {
    /// Where the adapter offers them: `EXPERIMENTAL_COOPERATIVE_MATRIX` with a 16x16x16
    /// f16 x f16 -> f32 configuration and one fixed subgroup size. The first use on a context
    /// runs a self-check against the SIMT kernels and falls back to those on a mismatch.
    #[default]
    Auto,
    /// Never: the SIMT kernels.
    Off,
    /// As `Auto`, but creating the context fails ([`Error::Unsupported`](crate::Error)) where
    /// the adapter does not offer them.
    Required,
    /// The tensor-core kernels with their matrix operations emulated in plain WGSL, on any
    /// adapter: the same staging, tails and epilogue, for testing (slower than SIMT).
    Emulated,
}

/// Whether a context uses tensor cores ([`Context::tensor_cores`](crate::Context::tensor_cores), `ContextInfo::tensor_cores`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TensorCoreState {
    /// On cooperative matrices (until the self-check says otherwise, if it has not run yet).
    Active {
        /// The subgroup size the kernels are built for.
        subgroup_size: u32,
    },
    /// The emulated twin ([`TensorCores::Emulated`]).
    Emulated,
    /// Not used, and why.
    Inactive(String),
}

impl std::fmt::Display for TensorCoreState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TensorCoreState::Active { subgroup_size } => write!(f, "active (subgroups of {subgroup_size})"),
            TensorCoreState::Emulated => write!(f, "emulated"),
            TensorCoreState::Inactive(why) => write!(f, "inactive: {why}"),
        }
    }
}

/// Whether an adapter offers what the tensor-core kernels need: the feature, a 16x16x16
/// f16 x f16 -> f32 configuration, and one subgroup size (the kernels' workgroups are 4
/// subgroups). `Ok(subgroup size)`, or why not.
pub(crate) fn support(
    features: wgpu::Features,
    configs: &[wgpu::CooperativeMatrixProperties],
    subgroup_min: u32,
    subgroup_max: u32,
) -> std::result::Result<u32, String> {
    if !features.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX) {
        return Err("the adapter has no EXPERIMENTAL_COOPERATIVE_MATRIX".into());
    }
    let wanted = |c: &&wgpu::CooperativeMatrixProperties| {
        (c.m_size, c.n_size, c.k_size) == (16, 16, 16)
            && c.ab_type == wgpu::CooperativeScalarType::F16
            && c.cr_type == wgpu::CooperativeScalarType::F32
    };
    if !configs.iter().any(|c| wanted(&c)) {
        return Err(format!(
            "the adapter lists no 16x16x16 f16 x f16 -> f32 cooperative matrix (it lists {})",
            configs
                .iter()
                .map(|c| format!("{}x{}x{} {:?}->{:?}", c.m_size, c.n_size, c.k_size, c.ab_type, c.cr_type))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if subgroup_min != subgroup_max || subgroup_min == 0 || subgroup_min > 64 {
        return Err(format!(
            "the adapter's subgroup size is not one fixed size up to 64 ({subgroup_min}..{subgroup_max})"
        ));
    }
    Ok(subgroup_min)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wgpu::{CooperativeMatrixProperties as P, CooperativeScalarType as T};

    fn cfg(m: u32, n: u32, k: u32, ab: T, cr: T) -> P {
        P { m_size: m, n_size: n, k_size: k, ab_type: ab, cr_type: cr, saturating_accumulation: false }
    }

    #[test]
    fn detection_needs_the_feature_the_configuration_and_a_fixed_subgroup_size() {
        let f = wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
        let h100 = [cfg(16, 16, 16, T::F16, T::F16), cfg(16, 16, 16, T::F16, T::F32), cfg(16, 8, 16, T::F16, T::F32)];
        assert_eq!(support(f, &h100, 32, 32), Ok(32));
        assert!(support(wgpu::Features::empty(), &h100, 32, 32)
            .unwrap_err()
            .contains("EXPERIMENTAL_COOPERATIVE_MATRIX"));
        let e = support(f, &[cfg(16, 16, 16, T::F16, T::F16), cfg(8, 8, 8, T::F16, T::F32)], 32, 32).unwrap_err();
        assert!(e.contains("16x16x16 f16 x f16 -> f32") && e.contains("8x8x8"), "{e}");
        assert!(support(f, &h100, 32, 64).unwrap_err().contains("32..64"));
        assert!(support(f, &h100, 0, 0).is_err());
    }
}
