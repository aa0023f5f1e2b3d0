//! Which attention variant runs a call, pure: the choice among fused, split-K, decode,
//! tensor-core and unfused kernels for a problem on a device, or the reason a forced one cannot
//! run.

use crate::kernels::attention_decode::{self, DecodeKernel};
use crate::kernels::attention_mma::AttentionMmaKernel;
use crate::kernels::similarity_mma::Mma;
use crate::kernels::Variant;
use crate::caps::Caps;
use crate::error::{Error, Result};
use crate::options::{AttentionConfig, AttentionVariant, Loads};
use crate::problem::AttentionProblem;
use crate::shape::DType;
use super::attention::*;


/// Keys per block in the fixed reduction order (`AttentionOptions::fixed_order`): the split-K
/// kernel's split length, whatever the call.
pub const FIXED_ORDER_BLOCK: usize = 512;

/// What an attention call will run: the variant (never `Auto`) and its parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AttentionPlan {
    /// The variant that runs.
    pub variant: AttentionVariant,
    /// Query rows per workgroup (fused and split-K; decode: combined rows of the query heads that
    /// share a key/value head; 0 for unfused).
    pub rows_per_workgroup: usize,
    /// Key splits (1 unless split-K or decode).
    pub splits: usize,
    /// Keys per split (split-K; otherwise the key count).
    pub keys_per_split: usize,
    /// Workgroup memory of the main kernel, bytes.
    pub workgroup_bytes: u32,
    /// Scratch memory the call allocates, bytes (split-K partials; unfused scores).
    pub scratch_bytes: u64,
    /// Why this variant (for `Auto`) or that the forced variant fits.
    pub reason: String,
    /// The tile shape that runs, with the field of the variant's kernel set (none for
    /// unfused): pass it back in `AttentionOptions::config`, with `variant`, to run the same.
    pub config: AttentionConfig,
}

/// The variant that runs, with its kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Resolved {
    Fused(AttentionKernel),
    SplitK { kernel: AttentionKernel, split_len: usize, splits: usize },
    Decode { kernel: DecodeKernel, split_len: usize, splits: usize },
    TensorCores(AttentionMmaKernel),
    Unfused,
}

/// f16's largest finite value: the bound on f32 inputs converted for the tensor cores.
pub(crate) const F16_MAX: f32 = 65504.0;

/// Where a call could run on matrix fragments (f16 inputs on a context with tensor cores or
/// their twin), or why not.
pub(crate) type TensorCoreChoice = std::result::Result<Mma, String>;

/// Combined query rows per key/value head (query heads per key/value head × queries) up to which
/// `Auto` chooses the decode kernel.
pub(crate) const DECODE_ROWS: usize = 16;

/// Chooses (or checks a forced) variant for `p` on a device with `caps`. `aligned` says whether
/// the Q, K and V element offsets are multiples of 4 (vector loads); `lse` whether the
/// log-sum-exp is wanted; `whole` whether every input buffer fits one binding (the decode kernel
/// runs as one dispatch over whole buffers); `tc` where matrix fragments run for this call, if
/// anywhere. Pure: no device.
pub(crate) fn resolve(
    p: &AttentionProblem,
    caps: &Caps,
    aligned: bool,
    lse: bool,
    paged: bool,
    whole: bool,
    tc: &TensorCoreChoice,
) -> Result<(Resolved, AttentionPlan)> {
    let d = p.dims;
    let vec4_ok = d.d.is_multiple_of(4) && aligned;
    let auto_loads = if vec4_ok { Loads::Vec4 } else { Loads::Scalar };
    let check_loads = |loads: Loads| -> Result<()> {
        if loads == Loads::Vec4 && !vec4_ok {
            return Err(Error::Unsupported(format!(
                "{} needs a head dim that is a multiple of 4 (got {}) and Q, K, V element offsets that are multiples of 4",
                AttentionVariant::Fused(Loads::Vec4).name(),
                d.d
            )));
        }
        Ok(())
    };
    let partial_bytes = |splits: usize| (splits * d.slices() * d.nq * (d.d + 2) * 4) as u64;
    let unfused = |reason: String| -> Result<(Resolved, AttentionPlan)> {
        if paged {
            return Err(Error::Unsupported(format!("the unfused variant does not read a paged cache ({reason})")));
        }
        if lse {
            return Err(Error::Unsupported(format!("the unfused variant does not produce the log-sum-exp ({reason})")));
        }
        let scores = (d.slices() * d.nq * d.nk * 4) as u64;
        Ok((
            Resolved::Unfused,
            AttentionPlan {
                variant: AttentionVariant::Unfused,
                rows_per_workgroup: 0,
                splits: 1,
                keys_per_split: d.nk,
                workgroup_bytes: super::similarity::SimilaritySimtKernel {
                    dtype: p.dtype,
                    metric: 0,
                    vec_out: false,
                    topk: false,
                }
                .workgroup_bytes(),
                scratch_bytes: 2 * scores,
                reason,
                config: AttentionConfig::default(),
            },
        ))
    };
    let fused = |loads: Loads, split: Option<usize>, reason: String| -> Result<(Resolved, AttentionPlan)> {
        let kernel = choose_tile_with(d.d, caps, p.config.simt_chunk)?.kernel(p.dtype, split.is_some(), loads);
        let (resolved, splits, keys) = match split {
            Some(len) => {
                // (one split, empty, when every paged sequence is empty)
                let splits = d.nk.div_ceil(len).max(1);
                (Resolved::SplitK { kernel, split_len: len, splits }, splits, len)
            }
            None => (Resolved::Fused(kernel), 1, d.nk),
        };
        let variant = if split.is_some() { AttentionVariant::SplitK(loads) } else { AttentionVariant::Fused(loads) };
        Ok((
            resolved,
            AttentionPlan {
                variant,
                rows_per_workgroup: BR as usize,
                splits,
                keys_per_split: keys,
                workgroup_bytes: kernel.workgroup_bytes(),
                scratch_bytes: if split.is_some() { partial_bytes(splits) } else { 0 },
                reason,
                config: AttentionConfig { simt_chunk: Some(kernel.kc), ..Default::default() },
            },
        ))
    };
    // the decode kernel: rows of every query head of a key/value head per workgroup, split-K
    let decode = |loads: Loads, reason: String| -> std::result::Result<(Resolved, AttentionPlan), String> {
        if !whole {
            return Err("the decode kernel binds whole buffers, and an input is over the binding limit".into());
        }
        let rows = d.group() * d.nq;
        let mut kernel = attention_decode::choose(d.d, rows, caps, p.dtype, loads)?;
        kernel.paged = paged;
        let row_blocks = rows.div_ceil(kernel.rows as usize);
        let blocks = d.batch * d.kv_heads * row_blocks;
        let split_row = (d.slices() * d.nq * (d.d + 2) * 4) as u64;
        if split_row > caps.max_binding {
            return Err("the decode kernel's partials would be over the binding limit".into());
        }
        let len = match p.config.decode_split {
            None => attention_decode::split_len(blocks, d.nk, split_row, caps.max_binding),
            Some(l) if l == 0 || l % 16 != 0 => {
                return Err(format!("config.decode_split: keys per split must be a positive multiple of 16 (got {l})"))
            }
            Some(l) => {
                let splits = d.nk.div_ceil(l as usize).max(1) as u64;
                if split_row.saturating_mul(splits) > caps.max_binding {
                    return Err(format!(
                        "config.decode_split: {splits} splits of {l} keys need {} bytes of partials, over the binding limit {}",
                        split_row.saturating_mul(splits),
                        caps.max_binding
                    ));
                }
                l as usize
            }
        };
        let splits = d.nk.div_ceil(len).max(1);
        let wgs = (blocks * splits) as u64;
        let max_dim = caps.max_workgroups_per_dim.max(1) as u64;
        if wgs > max_dim.saturating_mul(max_dim).saturating_mul(max_dim) {
            return Err(format!("the decode kernel's {wgs} workgroups exceed the device's grid"));
        }
        Ok((
            Resolved::Decode { kernel, split_len: len, splits },
            AttentionPlan {
                variant: AttentionVariant::Decode(loads),
                rows_per_workgroup: kernel.rows as usize,
                splits,
                keys_per_split: len,
                workgroup_bytes: kernel.workgroup_bytes(),
                scratch_bytes: split_row * splits as u64,
                reason,
                config: AttentionConfig { decode_split: Some(len as u32), ..Default::default() },
            },
        ))
    };
    // the tensor-core kernel: f16, head dims up to 128, unsplit
    let tensor_cores = |reason: String| -> std::result::Result<(Resolved, AttentionPlan), String> {
        let mma = tc.clone()?;
        if p.dtype != DType::F16 {
            if !p.f32_on_tensor_cores {
                return Err(
                    "the tensor-core kernel takes f16 inputs (f32 with AttentionOptions::f32_on_tensor_cores)".into()
                );
            }
            // f32 rounded to f16 at staging: every magnitude known and within f16's range
            for (name, op) in [("q", &p.q), ("k", &p.k), ("v", &p.v)] {
                match op.max_abs {
                    None => {
                        return Err(format!(
                            "f32 on tensor cores needs the inputs' magnitudes, and {name}'s is unknown (not uploaded through the crate)"
                        ))
                    }
                    Some(m) if m > F16_MAX => {
                        return Err(format!("f32 on tensor cores: {name} holds magnitudes up to {m:e}, over f16's 65504"))
                    }
                    _ => {}
                }
            }
        }
        let c = p.config;
        let keys = c.tc_keys.unwrap_or(super::attention_mma::KEYS[0]);
        // an error names the configured fields it may come from
        let named = |e: String| {
            let set: Vec<&str> =
                [("config.tc_rows", c.tc_rows), ("config.tc_keys", c.tc_keys), ("config.tc_stages", c.tc_stages), ("config.tc_softmax", c.tc_softmax)]
                    .into_iter()
                    .filter_map(|(n, v)| v.map(|_| n))
                    .collect();
            if set.is_empty() {
                e
            } else {
                format!("{}: {e}", set.join(", "))
            }
        };
        let kernel = match c.tc_rows {
            None => AttentionMmaKernel::choose(d.d, keys, mma, caps, p.dtype, auto_loads).map_err(named)?,
            Some(rows) => AttentionMmaKernel::with(d.d, rows, keys, mma, caps, p.dtype, auto_loads).map_err(named)?,
        };
        let softmax_regs = match c.tc_softmax {
            None | Some(0) => false,
            Some(1) => true,
            Some(v) => return Err(format!("config.tc_softmax: 0 (workgroup memory) or 1 (registers), got {v}")),
        };
        let kernel = kernel.pipelined(c.tc_stages.unwrap_or(1), softmax_regs).map_err(named)?;
        Ok((
            Resolved::TensorCores(kernel),
            AttentionPlan {
                variant: AttentionVariant::TensorCores,
                rows_per_workgroup: kernel.rows as usize,
                splits: 1,
                keys_per_split: d.nk,
                workgroup_bytes: kernel.workgroup_bytes(),
                scratch_bytes: 0,
                reason,
                config: AttentionConfig {
                    tc_rows: Some(kernel.rows),
                    tc_keys: Some(kernel.keys),
                    tc_stages: Some(kernel.stages),
                    tc_softmax: Some(kernel.softmax_regs as u32),
                    ..Default::default()
                },
            },
        ))
    };
    if p.fixed_order {
        // one kernel for every call: split-K in fixed blocks of keys from key 0
        let loads = match p.variant {
            AttentionVariant::Auto => auto_loads,
            AttentionVariant::SplitK(loads) => {
                check_loads(loads)?;
                loads
            }
            v => {
                return Err(Error::Unsupported(format!(
                    "fixed_order: only split-k reduces over keys in fixed blocks (every call the same kernel), not {v}"
                )))
            }
        };
        choose_tile(d.d, caps)?;
        let reason = format!("fixed order: blocks of {FIXED_ORDER_BLOCK} keys from key 0, merged in order");
        return fused(loads, Some(FIXED_ORDER_BLOCK), reason);
    }
    match p.variant {
        AttentionVariant::TensorCores => tensor_cores("forced".into()).map_err(Error::Unsupported),
        AttentionVariant::Decode(loads) => {
            check_loads(loads)?;
            decode(loads, "forced".into()).map_err(Error::Unsupported)
        }
        AttentionVariant::Auto => {
            let rows = d.group() * d.nq;
            let mut not_decode = String::new();
            if rows <= DECODE_ROWS {
                let reason =
                    format!("auto: {rows} query rows per key/value head against {} keys: the decode kernel", d.nk);
                match decode(auto_loads, reason) {
                    Ok(r) => return Ok(r),
                    Err(why) => not_decode = format!(" (not the decode kernel: {why})"),
                }
            }
            if let Err(e) = choose_tile(d.d, caps) {
                return unfused(format!("auto: the fused kernels do not fit this device ({e}){not_decode}"));
            }
            let br = BR as usize;
            let split = split_len(d.slices(), d.nq.div_ceil(br), d.nk);
            let mut not_tc = String::new();
            if split.is_none() {
                match tensor_cores(format!("auto: the tensor-core kernel covers the call{not_decode}")) {
                    Ok(r) => return Ok(r),
                    Err(why) => not_tc = format!(" (not on tensor cores: {why})"),
                }
            }
            let not_decode = format!("{not_decode}{not_tc}");
            match split {
                Some(len) => fused(
                    auto_loads,
                    Some(len),
                    format!(
                        "auto: {} query blocks are too few for {} keys, so the keys are split{not_decode}",
                        d.slices() * d.nq.div_ceil(br),
                        d.nk
                    ),
                ),
                None => fused(auto_loads, None, format!("auto: the fused kernel covers the call{not_decode}")),
            }
        }
        AttentionVariant::Fused(loads) => {
            check_loads(loads)?;
            fused(loads, None, "forced".into())
        }
        AttentionVariant::SplitK(loads) => {
            check_loads(loads)?;
            choose_tile(d.d, caps)?;
            let len = split_len(d.slices(), d.nq.div_ceil(BR as usize), d.nk).unwrap_or(forced_split_len(d.nk));
            fused(loads, Some(len), "forced".into())
        }
        AttentionVariant::Unfused => unfused("forced".into()),
    }
}

/// Every (variant, configuration) that can run `p` on this device (arguments as [`resolve`]),
/// each once: the tensor-core kernel with each rows per workgroup, the fused and split-K SIMT
/// kernels with each head-dim chunk, the decode kernel at its heuristic split and at a quarter,
/// half, twice and four times it (the unfused chain, never faster, is left out). `p`'s variant
/// and configuration are ignored: these are what a sweep or a tuner times. Pure.
pub(crate) fn candidates(
    p: &AttentionProblem,
    caps: &Caps,
    aligned: bool,
    lse: bool,
    paged: bool,
    whole: bool,
    tc: &TensorCoreChoice,
) -> Vec<(Resolved, AttentionPlan)> {
    let d = p.dims;
    let loads = if d.d.is_multiple_of(4) && aligned { Loads::Vec4 } else { Loads::Scalar };
    let mut grid: Vec<(AttentionVariant, AttentionConfig)> = vec![];
    for rows in super::attention_mma::ROWS {
        for keys in super::attention_mma::KEYS {
            for stages in super::attention_mma::STAGES {
                for softmax in [0, 1] {
                    let config = AttentionConfig {
                        tc_rows: Some(rows),
                        tc_keys: Some(keys),
                        tc_stages: Some(stages),
                        tc_softmax: Some(softmax),
                        ..Default::default()
                    };
                    grid.push((AttentionVariant::TensorCores, config));
                }
            }
        }
    }
    for variant in [AttentionVariant::Fused(loads), AttentionVariant::SplitK(loads)] {
        for (kc, _, _) in chunkings(padded_dim(d.d)) {
            grid.push((variant, AttentionConfig { simt_chunk: Some(kc), ..Default::default() }));
        }
    }
    let try_one = |variant, config| {
        let q = AttentionProblem { variant, config, ..p.clone() };
        resolve(&q, caps, aligned, lse, paged, whole, tc).ok()
    };
    let decode = AttentionVariant::Decode(loads);
    if let Some((_, plan)) = try_one(decode, AttentionConfig::default()) {
        let base = plan.keys_per_split as u32;
        for len in [base / 4, base / 2, base, base * 2, base * 4] {
            let len = len.div_ceil(16).max(1) * 16;
            grid.push((decode, AttentionConfig { decode_split: Some(len), ..Default::default() }));
        }
    }
    let mut out: Vec<(Resolved, AttentionPlan)> = vec![];
    for (variant, config) in grid {
        if let Some((r, mut plan)) = try_one(variant, config) {
            // (decode splits past the key count are one split, as the largest that fits)
            let same = |o: &AttentionPlan| {
                let one_split = |x: &AttentionPlan| x.config.decode_split.is_some() && x.splits == 1;
                o.variant == plan.variant && (o.config == plan.config || (one_split(o) && one_split(&plan)))
            };
            if !out.iter().any(|(_, o)| same(o)) {
                plan.reason = "a candidate".into();
                out.push((r, plan));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shape::{Layout, Shape};

    fn no_tc() -> TensorCoreChoice {
        Err("off".into())
    }
    use crate::options::AttentionOptions;
    use crate::problem::Operand;

    fn problem(
        b: usize,
        h: usize,
        nq: usize,
        nk: usize,
        d: usize,
        variant: AttentionVariant,
    ) -> AttentionProblem<'static> {
        let op = |s| Operand { shape: s, layout: Layout::Bhsd, dtype: DType::F32, max_abs: None };
        let opts = AttentionOptions { variant, ..Default::default() };
        AttentionProblem::new(
            op(Shape::new(b, h, nq, d)),
            op(Shape::new(b, h, nk, d)),
            op(Shape::new(b, h, nk, d)),
            None,
            &opts,
        )
        .unwrap()
    }

    fn lavapipe() -> Caps {
        Caps { max_workgroup_storage: 32 << 10, max_invocations: 1024, ..Caps::baseline() }
    }

    #[test]
    fn auto_takes_the_tensor_cores_where_they_suit_the_call() {
        let h100 = Caps { max_workgroup_storage: 48 << 10, ..lavapipe() };
        let tc: TensorCoreChoice = Ok(Mma::Hardware { subgroup: 32 });
        let f16 = |nq, nk, d, variant| {
            let mut p = problem(1, 16, nq, nk, d, variant);
            p.dtype = DType::F16;
            p
        };
        let plan = |p: &AttentionProblem, paged| resolve(p, &h100, true, true, paged, true, &tc).map(|r| r.1);
        let p = plan(&f16(4096, 4096, 128, AttentionVariant::Auto), false).unwrap();
        assert_eq!(p.variant, AttentionVariant::TensorCores, "{}", p.reason);
        assert_eq!(p.rows_per_workgroup, 64);
        // d 128 with 64 rows needs about 40 KiB of workgroup memory: 32 rows on 32 KiB, none
        // on 16 KiB, where Auto says why
        let p = resolve(&f16(4096, 4096, 128, AttentionVariant::Auto), &lavapipe(), true, true, false, true, &tc)
            .unwrap()
            .1;
        assert_eq!((p.variant, p.rows_per_workgroup), (AttentionVariant::TensorCores, 32), "{}", p.reason);
        let tiny = Caps { max_workgroup_storage: 16 << 10, ..lavapipe() };
        let small =
            resolve(&f16(4096, 4096, 128, AttentionVariant::Auto), &tiny, true, true, false, true, &tc).unwrap().1;
        assert!(
            small.variant != AttentionVariant::TensorCores && small.reason.contains("workgroup memory"),
            "{}",
            small.reason
        );
        // a paged cache too
        let p = plan(&f16(4096, 4096, 64, AttentionVariant::Auto), true).unwrap();
        assert_eq!(p.variant, AttentionVariant::TensorCores, "{}", p.reason);
        // f32, head dims over 128, decode shapes: elsewhere, with the reason
        let p = plan(&problem(1, 16, 4096, 4096, 128, AttentionVariant::Auto), false).unwrap();
        assert!(p.variant != AttentionVariant::TensorCores);
        let p = plan(&f16(4096, 4096, 256, AttentionVariant::Auto), false).unwrap();
        assert!(p.variant != AttentionVariant::TensorCores && p.reason.contains("128"), "{}", p.reason);
        let p = plan(&f16(1, 32768, 128, AttentionVariant::Auto), false).unwrap();
        assert!(matches!(p.variant, AttentionVariant::Decode(_)), "{}", p.reason);
        // forced where it cannot run: the reason
        let e = resolve(&f16(64, 64, 64, AttentionVariant::TensorCores), &h100, true, true, false, true, &no_tc());
        assert!(matches!(e, Err(Error::Unsupported(ref m)) if m == "off"), "{e:?}");
    }

    #[test]
    fn tensor_core_rows_fit_the_memory_and_the_invocations() {
        use crate::kernels::attention_mma::ROWS;
        let tc = Mma::Hardware { subgroup: 32 };
        for caps in [lavapipe(), Caps { max_workgroup_storage: 48 << 10, ..lavapipe() }] {
            for d in 1..=128 {
                let all = AttentionMmaKernel::candidates(d, tc, &caps, DType::F16, Loads::Vec4);
                let k = AttentionMmaKernel::choose(d, 32, tc, &caps, DType::F16, Loads::Vec4).unwrap();
                assert_eq!(all[0], k, "the most rows first");
                for k in &all {
                    assert!(k.workgroup_bytes() <= caps.max_workgroup_storage && ROWS.contains(&k.rows));
                }
            }
        }
        // 48 KiB: 64 rows throughout; 32 KiB: 32 rows from head dim 81
        let big = Caps { max_workgroup_storage: 48 << 10, ..lavapipe() };
        assert_eq!(AttentionMmaKernel::choose(128, 32, tc, &big, DType::F16, Loads::Vec4).unwrap().rows, 64);
        assert_eq!(AttentionMmaKernel::choose(80, 32, tc, &lavapipe(), DType::F16, Loads::Vec4).unwrap().rows, 64);
        assert_eq!(AttentionMmaKernel::choose(81, 32, tc, &lavapipe(), DType::F16, Loads::Vec4).unwrap().rows, 32);
        // a configuration the device cannot run is refused with the reason
        let e = AttentionMmaKernel::with(128, 64, 32, tc, &lavapipe(), DType::F16, Loads::Vec4).unwrap_err();
        assert!(e.contains("workgroup memory") && e.contains("64 query rows"), "{e}");
        let e = AttentionMmaKernel::with(64, 48, 32, tc, &big, DType::F16, Loads::Vec4).unwrap_err();
        assert!(e.contains("query rows per workgroup"), "{e}");
        let few = Caps { max_invocations: 64, ..big };
        assert_eq!(AttentionMmaKernel::choose(64, 32, tc, &few, DType::F16, Loads::Vec4).unwrap().rows, 32);
        assert!(AttentionMmaKernel::with(64, 64, 32, tc, &few, DType::F16, Loads::Vec4).unwrap_err().contains("invocations"));
    }

    #[test]
    fn configurations_are_honoured_or_refused_naming_the_field() {
        let h100 = Caps { max_workgroup_storage: 48 << 10, ..lavapipe() };
        let tc: TensorCoreChoice = Ok(Mma::Hardware { subgroup: 32 });
        let with = |nq, nk, d, variant, config: &str| {
            let mut p = problem(1, 16, nq, nk, d, variant);
            p.dtype = DType::F16;
            p.config = config.parse().unwrap();
            p
        };
        let plan = |p: &AttentionProblem, caps: &Caps| resolve(p, caps, true, false, false, true, &tc).map(|r| r.1);
        // the tensor-core kernel's rows: honoured; too many for the memory: forced is refused,
        // Auto passes it over saying why
        let p = plan(&with(4096, 4096, 128, AttentionVariant::Auto, "tc_rows=32"), &h100).unwrap();
        assert_eq!((p.variant, p.rows_per_workgroup), (AttentionVariant::TensorCores, 32));
        assert_eq!(p.config.to_string(), "tc_rows=32,tc_keys=32,tc_stages=1,tc_softmax=0");
        let e = plan(&with(4096, 4096, 128, AttentionVariant::TensorCores, "tc_rows=64"), &lavapipe()).unwrap_err();
        assert!(matches!(e, Error::Unsupported(ref m) if m.starts_with("config.tc_rows") && m.contains("workgroup memory")), "{e}");
        let p = plan(&with(4096, 4096, 128, AttentionVariant::Auto, "tc_rows=64"), &lavapipe()).unwrap();
        assert!(p.variant != AttentionVariant::TensorCores && p.reason.contains("config.tc_rows"), "{}", p.reason);
        // keys per tile: 64 with 64 rows at d 128 is over 48 KiB; with 32 rows it fits
        let e = plan(&with(4096, 4096, 128, AttentionVariant::TensorCores, "tc_rows=64,tc_keys=64"), &h100).unwrap_err();
        assert!(matches!(e, Error::Unsupported(ref m) if m.starts_with("config.tc_rows, config.tc_keys")), "{e}");
        let p = plan(&with(4096, 4096, 128, AttentionVariant::TensorCores, "tc_keys=64"), &h100).unwrap();
        assert_eq!((p.rows_per_workgroup, p.config.tc_keys), (32, Some(64)));
        let e = plan(&with(64, 64, 64, AttentionVariant::TensorCores, "tc_keys=48"), &h100).unwrap_err();
        assert!(matches!(e, Error::Unsupported(ref m) if m.starts_with("config.tc_keys")), "{e}");
        // subgroups of 16 (one invocation per row): 64 keys would be 64 per invocation
        let narrow: TensorCoreChoice = Ok(Mma::Hardware { subgroup: 16 });
        let e = resolve(&with(64, 64, 64, AttentionVariant::TensorCores, "tc_keys=64"), &h100, true, false, false, true, &narrow)
            .unwrap_err();
        assert!(matches!(e, Error::Unsupported(ref m) if m.contains("at most 32 keys per invocation")), "{e}");
        // staging depth and softmax placement
        let p = plan(&with(4096, 4096, 64, AttentionVariant::TensorCores, "tc_stages=2,tc_softmax=1"), &h100).unwrap();
        assert_eq!(p.config.to_string(), "tc_rows=64,tc_keys=32,tc_stages=2,tc_softmax=1");
        let e = plan(&with(64, 64, 64, AttentionVariant::TensorCores, "tc_stages=3"), &h100).unwrap_err();
        assert!(matches!(e, Error::Unsupported(ref m) if m.starts_with("config.tc_stages") && m.contains("staging depth")), "{e}");
        let e = plan(&with(64, 64, 64, AttentionVariant::TensorCores, "tc_softmax=2"), &h100).unwrap_err();
        assert!(matches!(e, Error::Unsupported(ref m) if m.starts_with("config.tc_softmax")), "{e}");
        // the SIMT chunk: honoured (less memory with smaller chunks), or refused naming it
        let p8 = plan(&with(4096, 4096, 64, AttentionVariant::Fused(Loads::Vec4), "simt_chunk=8"), &h100).unwrap();
        let p32 = plan(&with(4096, 4096, 64, AttentionVariant::Fused(Loads::Vec4), "simt_chunk=32"), &h100).unwrap();
        assert_eq!((p8.config.simt_chunk, p32.config.simt_chunk), (Some(8), Some(32)));
        assert!(p8.workgroup_bytes < p32.workgroup_bytes);
        let e = plan(&with(64, 64, 64, AttentionVariant::Fused(Loads::Vec4), "simt_chunk=12"), &h100).unwrap_err();
        assert!(matches!(e, Error::Unsupported(ref m) if m.starts_with("config.simt_chunk")), "{e}");
        let small = Caps { max_workgroup_storage: 16 << 10, ..lavapipe() };
        let e = plan(&with(64, 64, 256, AttentionVariant::Fused(Loads::Vec4), "simt_chunk=32"), &small).unwrap_err();
        assert!(matches!(e, Error::Unsupported(ref m) if m.contains("config.simt_chunk") && m.contains("bytes")), "{e}");
        // the decode split
        let p = plan(&with(1, 32768, 128, AttentionVariant::Auto, "decode_split=512"), &h100).unwrap();
        assert_eq!((p.splits, p.keys_per_split), (64, 512));
        let e = plan(&with(1, 32768, 128, AttentionVariant::Decode(Loads::Vec4), "decode_split=100"), &h100).unwrap_err();
        assert!(matches!(e, Error::Unsupported(ref m) if m.starts_with("config.decode_split")), "{e}");
        let tight = Caps { max_binding: 1 << 20, ..h100.clone() };
        let e = plan(&with(1, 32768, 128, AttentionVariant::Decode(Loads::Vec4), "decode_split=16"), &tight).unwrap_err();
        assert!(matches!(e, Error::Unsupported(ref m) if m.contains("binding limit")), "{e}");
        // parsing
        assert!("tc_rows=32,tc_rows=16".parse::<AttentionConfig>().unwrap_err().contains("twice"));
        assert!("rows=32".parse::<AttentionConfig>().unwrap_err().contains("unknown field"));
        assert!("tc_rows=x".parse::<AttentionConfig>().unwrap_err().contains("not a number"));
        let all: AttentionConfig = "decode_split=512, simt_chunk=16,tc_rows=32".parse().unwrap();
        assert_eq!(all.to_string().parse::<AttentionConfig>(), Ok(all));
        assert!(AttentionConfig::default().is_default() && "".parse::<AttentionConfig>().unwrap().is_default());
    }

    #[test]
    fn candidates_run_as_planned_when_forced() {
        let h100 = Caps { max_workgroup_storage: 48 << 10, ..lavapipe() };
        let tc: TensorCoreChoice = Ok(Mma::Hardware { subgroup: 32 });
        for (nq, nk, d, caps, tc) in [
            (4096, 4096, 128, &h100, &tc),
            (4096, 4096, 128, &lavapipe(), &tc),
            (1, 32768, 128, &h100, &tc),
            (300, 300, 7, &lavapipe(), &no_tc()),
        ] {
            let mut p = problem(1, 8, nq, nk, d, AttentionVariant::Auto);
            p.dtype = DType::F16;
            let all = candidates(&p, caps, true, false, false, true, tc);
            assert!(all.len() >= 3, "{nq}x{nk} d {d}: {} candidates", all.len());
            for (i, (r, plan)) in all.iter().enumerate() {
                assert!(plan.variant != AttentionVariant::Unfused && !plan.config.is_default());
                assert!(!all[..i].iter().any(|(_, o)| o.variant == plan.variant && o.config == plan.config));
                let decode_one = |o: &AttentionPlan| o.config.decode_split.is_some() && o.splits == 1;
                assert!(!decode_one(plan) || !all[..i].iter().any(|(_, o)| decode_one(o)));
                let forced = AttentionProblem { variant: plan.variant, config: plan.config, ..p.clone() };
                let (again, again_plan) = resolve(&forced, caps, true, false, false, true, tc).unwrap();
                assert_eq!((&again, again_plan.config), (r, plan.config));
            }
            let tcs = all.iter().filter(|c| c.1.variant == AttentionVariant::TensorCores).count();
            let want = match tc {
                // each (rows, keys) pair with each staging depth and softmax placement
                Ok(m) => 4 * AttentionMmaKernel::candidates(d, *m, caps, DType::F16, Loads::Vec4).len(),
                Err(_) => 0,
            };
            assert_eq!(tcs, want, "{nq}x{nk} d {d}");
            // at d 128: 48 KiB runs 5 of the 6 (rows, keys) pairs, 32 KiB 3
            if d == 128 && tc.is_ok() {
                assert_eq!(want, 4 * if caps.max_workgroup_storage == 48 << 10 { 5 } else { 3 });
            }
        }
    }

    #[test]
    fn tiles_fit_the_memory() {
        let c = lavapipe();
        // 32 KiB: the smaller chunking at d 128 and 256; the larger at d 32
        let t = choose_tile(128, &c).unwrap();
        assert_eq!((t.dp, t.kc, t.vk), (128, 16, 16));
        assert_eq!(choose_tile(3, &c).unwrap().dp, 32);
        assert_eq!(choose_tile(256, &c).unwrap().dp, 256);
        // 48 KiB (an H100): the larger chunking throughout
        let big = Caps { max_workgroup_storage: 48 << 10, ..c.clone() };
        for d in [32, 64, 128, 256] {
            let t = choose_tile(d, &big).unwrap();
            assert_eq!(t.kc, 32, "d {d}");
        }
        for d in 1..=256 {
            for caps in [&c, &big] {
                let t = choose_tile(d, caps).unwrap();
                assert!(t.kernel(DType::F32, false, Loads::Scalar).workgroup_bytes() <= caps.max_workgroup_storage);
            }
        }
        // 16 KiB: the 32-key tile, every head dim; 12 KiB: none
        let small = Caps { max_workgroup_storage: 16 << 10, ..c.clone() };
        for d in [1, 64, 128, 256] {
            let t = choose_tile(d, &small).unwrap();
            assert_eq!(t.bc, 32);
            assert!(t.kernel(DType::F32, false, Loads::Scalar).workgroup_bytes() <= 16 << 10);
        }
        let tiny = Caps { max_workgroup_storage: 12 << 10, ..c.clone() };
        assert!(matches!(choose_tile(128, &tiny), Err(Error::Unsupported(ref m)) if m.contains("head dim 128")));
        let few = Caps { max_invocations: 128, ..c };
        assert!(matches!(choose_tile(64, &few), Err(Error::Unsupported(_))));
    }

    #[test]
    fn subgroup_reductions_need_subgroups_of_8() {
        let c = lavapipe();
        assert!(!choose_tile(64, &Caps { subgroups: false, ..c.clone() }).unwrap().sg);
        assert!(choose_tile(64, &Caps { subgroups: true, subgroup_min_size: 8, ..c.clone() }).unwrap().sg);
        assert!(!choose_tile(64, &Caps { subgroups: true, subgroup_min_size: 4, ..c }).unwrap().sg);
    }

    #[test]
    fn every_chosen_tile_is_a_listed_variant() {
        let all: Vec<_> = AttentionKernel::all(DType::F32).collect();
        for d in 1..=256 {
            for caps in [
                lavapipe(),
                Caps { max_workgroup_storage: 48 << 10, subgroups: true, subgroup_min_size: 32, ..lavapipe() },
                Caps { max_workgroup_storage: 16 << 10, ..lavapipe() },
            ] {
                let k = choose_tile(d, &caps).unwrap().kernel(DType::F32, false, Loads::Scalar);
                assert!(all.contains(&k), "{k:?}");
            }
        }
    }

    #[test]
    fn split_k_for_few_query_blocks_and_many_keys() {
        assert_eq!(split_len(4, 1, 2048), Some(256));
        assert_eq!(split_len(4, 1, 2048).unwrap() % BC as usize, 0);
        assert_eq!(split_len(1, 1, 1000), None, "under 1024 keys: unsplit");
        assert_eq!(split_len(256, 1, 100_000), None, "enough blocks already");
        assert_eq!(split_len(1, 1, 1 << 20), Some(16384), "at most 64 splits");
        let l = split_len(3, 2, 5000).unwrap();
        assert_eq!(l % BC as usize, 0);
        assert!(5000usize.div_ceil(l) >= 2);
    }

    #[test]
    fn auto_picks_by_shape_and_forced_variants_are_checked() {
        let c = lavapipe();
        let plan =
            |p: &AttentionProblem, aligned, lse| resolve(p, &c, aligned, lse, false, true, &no_tc()).map(|r| r.1);
        // prefill: fused with vector loads
        let p = problem(2, 8, 512, 512, 64, AttentionVariant::Auto);
        assert_eq!(plan(&p, true, false).unwrap().variant, AttentionVariant::Fused(Loads::Vec4));
        assert_eq!(plan(&p, false, false).unwrap().variant, AttentionVariant::Fused(Loads::Scalar));
        // decode: the decode kernel, keys split
        let p = problem(1, 4, 1, 4096, 128, AttentionVariant::Auto);
        let pl = plan(&p, true, true).unwrap();
        assert_eq!(pl.variant, AttentionVariant::Decode(Loads::Vec4));
        assert!(pl.splits >= 2 && pl.scratch_bytes > 0);
        // ... but not past head dim 128 (split-K instead, saying why), nor over whole buffers
        // beyond the binding limit
        let p = problem(1, 4, 1, 4096, 256, AttentionVariant::Auto);
        let pl = plan(&p, true, true).unwrap();
        assert_eq!(pl.variant, AttentionVariant::SplitK(Loads::Vec4));
        assert!(pl.reason.contains("up to 128"), "{}", pl.reason);
        let p = problem(1, 4, 1, 4096, 64, AttentionVariant::Auto);
        assert_eq!(
            resolve(&p, &c, true, true, false, false, &no_tc()).unwrap().1.variant,
            AttentionVariant::SplitK(Loads::Vec4)
        );
        let p = problem(1, 4, 1, 4096, 256, AttentionVariant::Decode(Loads::Scalar));
        assert!(matches!(plan(&p, true, false), Err(Error::Unsupported(ref m)) if m.contains("up to 128")));
        // odd head dim: scalar loads; forcing vec4 is refused
        let p = problem(1, 1, 20, 10, 3, AttentionVariant::Auto);
        assert_eq!(plan(&p, true, false).unwrap().variant, AttentionVariant::Fused(Loads::Scalar));
        let p = problem(1, 1, 10, 10, 3, AttentionVariant::Auto);
        assert_eq!(plan(&p, true, false).unwrap().variant, AttentionVariant::Decode(Loads::Scalar));
        let p = problem(1, 1, 10, 10, 3, AttentionVariant::Fused(Loads::Vec4));
        assert!(matches!(plan(&p, true, false), Err(Error::Unsupported(ref m)) if m.contains("multiple of 4")));
        // forced split-K on a small problem: two splits
        let p = problem(1, 1, 10, 200, 16, AttentionVariant::SplitK(Loads::Scalar));
        let pl = plan(&p, true, true).unwrap();
        assert_eq!((pl.splits, pl.keys_per_split), (2, 128));
        // unfused: no lse
        let p = problem(1, 1, 10, 100, 16, AttentionVariant::Unfused);
        assert!(plan(&p, true, false).is_ok());
        assert!(matches!(plan(&p, true, true), Err(Error::Unsupported(ref m)) if m.contains("log-sum-exp")));
        // a device too small for the fused kernels: auto falls back to unfused, forcing fused is refused
        let small = Caps { max_workgroup_storage: 12 << 10, ..c.clone() };
        let p = problem(1, 1, 4, 4, 256, AttentionVariant::Auto);
        assert_eq!(
            resolve(&p, &small, true, false, false, true, &no_tc()).unwrap().1.variant,
            AttentionVariant::Unfused
        );
        assert!(resolve(&p, &small, true, true, false, true, &no_tc()).is_err());
        let p = problem(1, 1, 4, 4, 256, AttentionVariant::Fused(Loads::Scalar));
        assert!(matches!(resolve(&p, &small, true, false, false, true, &no_tc()), Err(Error::Unsupported(_))));
    }
}
