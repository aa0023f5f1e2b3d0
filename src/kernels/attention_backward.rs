//! Host side of `shaders/attention_backward.wgsl`: the five passes of the attention backward
//! (row statistics, dK/dV over key blocks, the sums of a split pass 1, dQ over query blocks, the
//! sinks' gradient; CPU twin: `cpu::attention_backward`).

use super::attention::{padded_dim, subgroups_of_8};
use super::{b, Access, Binding, Variant, PARAMS};
use crate::caps::Caps;
use crate::error::{Error, Result};
use crate::shape::DType;

/// Invocations per workgroup.
pub(crate) const WG: u32 = 256;

/// The passes, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Pass {
    /// D = rowsum(dO ∘ O), the log-sum-exp in z units and the sink's share, per query row.
    RowStats = 0,
    /// dK and dV, one workgroup per (batch, key/value head, block of keys).
    KeyBlocks = 1,
    /// dQ, one workgroup per (batch · head, block of query rows).
    QueryBlocks = 2,
    /// d_sinks, one workgroup per query head.
    Sinks = 3,
    /// dK and dV as the sums of a split pass 1's partial sums, one invocation per element.
    SplitSums = 4,
}

/// One pipeline of the backward: the inputs' dtype, the pass, the padded head dim and how a
/// key's (pass 1) or row's (pass 2) lanes sum their partial dot products.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct AttentionBackwardKernel {
    pub dtype: DType,
    pub pass: Pass,
    pub dp: u32,
    /// Sums over a key's lanes by subgroup shuffles (the device's subgroups are never narrower
    /// than 8 lanes), else through workgroup memory.
    pub sg: bool,
    /// Keys (pass 1) or query rows (pass 2) per group of lanes: 1, or 2 up to padded dim 128.
    pub kp: u32,
}

impl AttentionBackwardKernel {
    /// The kernel of `pass` for head dim `d` (1 to `MAX_HEAD_DIM`, 256: padded to 32, 64, 128
    /// or 256), with subgroup sums when `caps` allow them and `kp` keys (rows) per group of
    /// lanes (see [`keys_per_lanes`]).
    ///
    /// Passes 0, 3 and 4 walk the head dim at run time and reduce nothing over lanes: they are
    /// built once (padded dim 32, no subgroups) whatever the head dim and device.
    pub fn new(dtype: DType, pass: Pass, d: usize, caps: &Caps, kp: u32) -> Self {
        match pass {
            Pass::KeyBlocks | Pass::QueryBlocks => {
                AttentionBackwardKernel { dtype, pass, dp: padded_dim(d), sg: subgroups_of_8(caps), kp }
            }
            Pass::RowStats | Pass::Sinks | Pass::SplitSums => {
                AttentionBackwardKernel { dtype, pass, dp: 32, sg: false, kp: 1 }
            }
        }
    }

    /// Invocations sharing one key (pass 1) or one query row (pass 2): each holds 16 of the
    /// padded head dim (32 at 256), so that four vectors of them stay in registers.
    pub fn lanes(&self) -> u32 {
        (self.dp / 16).min(8)
    }

    /// Keys (pass 1) or query rows (pass 2) per group of lanes.
    pub fn per_lanes(&self) -> u32 {
        self.kp
    }

    /// Keys (pass 1) or query rows (pass 2) per workgroup.
    pub fn block(&self) -> u32 {
        WG / self.lanes() * self.per_lanes()
    }

    /// Query rows staged per step of pass 1 and keys per step of pass 2: 4 KiB of each matrix
    /// (8 KiB of workgroup memory for both).
    fn staged(&self) -> u32 {
        1024 / self.dp
    }

    /// Every variant (the shader tests build each one).
    #[cfg(test)]
    pub fn all() -> impl Iterator<Item = AttentionBackwardKernel> {
        [DType::F32, DType::F16].into_iter().flat_map(|dtype| {
            let lanes = [Pass::KeyBlocks, Pass::QueryBlocks].into_iter().flat_map(move |pass| {
                [32u32, 64, 128, 256].into_iter().flat_map(move |dp| {
                    let kps: &[u32] = if dp <= 128 { &[1, 2] } else { &[1] };
                    kps.iter().flat_map(move |&kp| {
                        [true, false].into_iter().map(move |sg| AttentionBackwardKernel { dtype, pass, dp, sg, kp })
                    })
                })
            });
            let once = [Pass::RowStats, Pass::Sinks, Pass::SplitSums]
                .into_iter()
                .map(move |pass| AttentionBackwardKernel { dtype, pass, dp: 32, sg: false, kp: 1 });
            lanes.chain(once)
        })
    }
}

/// Keys (pass 1) or query rows (pass 2) per group of lanes for head dim `d`: `chosen`
/// (`AttentionConfig::backward_keys`) where it is 1, or 2 up to padded head dim 128; else 2 on
/// a CPU adapter (each staged row then feeds two keys: lavapipe's fastest) and 1 elsewhere
/// (half the registers: an H200's fastest, 59 ms against 76 ms at 16 x 4096² d 128).
pub(crate) fn keys_per_lanes(d: usize, cpu_adapter: bool, chosen: Option<u32>) -> Result<u32> {
    let wide = padded_dim(d) <= 128;
    match chosen {
        Some(1) => Ok(1),
        Some(2) if wide => Ok(2),
        Some(2) => Err(Error::Unsupported(format!(
            "config.backward_keys: 2 keys per group of lanes need head dim <= 128 (got {d}); use 1"
        ))),
        Some(k) => Err(Error::Unsupported(format!("config.backward_keys: 1 or 2 keys per group of lanes (got {k})"))),
        None => Ok(if cpu_adapter && wide { 2 } else { 1 }),
    }
}

impl Variant for AttentionBackwardKernel {
    const NAME: &'static str = "attention_backward";
    const SOURCE: &'static str = include_str!("../../shaders/attention_backward.wgsl");
    fn bindings(&self) -> &'static [Binding] {
        const BINDINGS: [Binding; 15] = [
            PARAMS,
            b(1, "q", Access::Read),
            b(2, "mask", Access::Read),
            b(3, "key_lengths", Access::Read),
            b(4, "k", Access::Read),
            b(5, "v", Access::Read),
            b(6, "o", Access::Read),
            b(7, "d_o", Access::Read),
            b(8, "heads", Access::Read),
            b(9, "lse", Access::Read),
            b(10, "stats", Access::ReadWrite),
            b(11, "dq", Access::ReadWrite),
            b(12, "dk", Access::ReadWrite),
            b(13, "dv", Access::ReadWrite),
            b(14, "d_sinks", Access::ReadWrite),
        ];
        &BINDINGS
    }
    fn dtype(&self) -> DType {
        self.dtype
    }
    fn constants(&self) -> Vec<(&'static str, u32)> {
        let l = self.lanes();
        vec![
            ("PASS", self.pass as u32),
            ("WG", WG),
            ("DP", self.dp),
            ("ROW_LANES", l),
            ("NC", self.dp / (4 * l)),
            ("KP", self.per_lanes()),
            ("NS", WG / l),
            ("KB", self.block()),
            ("TQ", self.staged()),
        ]
    }
    fn workgroup_bytes(&self) -> u32 {
        let t = self.staged();
        // A and B (t x DP floats each), Rd (WG floats), Rl, Rs, Re (t words each); without
        // subgroups, the lanes' reduction buffer (2 WG floats)
        let red = if self.sg { 0 } else { 2 * WG };
        4 * (2 * t * self.dp + WG + 3 * t + red)
    }
    fn preludes(&self) -> Vec<&'static str> {
        vec![include_str!("../../shaders/masking.wgsl"), super::row_reductions(self.sg)]
    }
}
