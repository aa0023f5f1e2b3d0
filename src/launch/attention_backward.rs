//! Launching `shaders/attention_backward.wgsl`: the buffers, parameters and three to five
//! dispatches of a checked backward call (the variant itself is `kernels/attention_backward.rs`).

use crate::backward_call::{AttentionBackwardCall, AttentionGradOutputs};
use crate::context::Context;
use crate::error::Result;
use crate::kernels::attention_backward::{keys_per_lanes, AttentionBackwardKernel, Pass, WG};
use crate::kernels::{Kernel, Params};
use crate::launch::{masking_flags, ScoreArgs};
use crate::plan::{Grid, Rows};
use crate::problem::AttentionProblem;
use crate::record::{Arg, Launch};
use crate::shape::Shape;

/// Records the backward passes of a checked call into `encoder`.
pub(crate) async fn record(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    p: &AttentionProblem<'_>,
    x: &AttentionBackwardCall<'_>,
    g: &AttentionGradOutputs<'_>,
) -> Result<()> {
    let d = p.dims;
    let transform = p.transform()?;
    let so = ScoreArgs::new(ctx, &p.score_options(), &transform, d.heads).await?;
    let (fl, kl) = masking_flags(ctx, p, x.mask).await?;
    let rows = d.slices() * d.nq;
    let cpu_adapter = ctx.info().device_type == wgpu::DeviceType::Cpu;
    let kp = keys_per_lanes(d.d, cpu_adapter, p.config.backward_keys)?;
    let kernel = |pass| AttentionBackwardKernel::new(p.dtype, pass, d.d, ctx.caps(), kp);
    // keys (pass 1) and query rows (pass 2) per workgroup
    let kb = kernel(Pass::KeyBlocks).block() as usize;
    let kv_heads = d.heads / d.group();
    // pass 1 split over the group's query rows where its key blocks alone make few workgroups;
    // the splits' partial sums of dK and dV follow the row statistics in one scratch tensor
    let group_rows = d.group() * d.nq;
    let per_split = d.batch * kv_heads * d.nk * 2 * d.d;
    let room = (ctx.caps().max_binding / 4).min(MAX_PARTIALS) as usize;
    // (a software rasteriser runs a few workgroups at a time: more only cost it the partial sums)
    let target = if cpu_adapter { CPU_SPLIT_TARGET } else { SPLIT_TARGET };
    let key_groups = d.batch * kv_heads * d.nk.div_ceil(kb);
    let splits = split_count(key_groups, group_rows, per_split, room.saturating_sub(3 * rows), target);
    let split_len = group_rows.div_ceil(splits).max(1);
    let splits = group_rows.div_ceil(split_len).max(1);
    let partials = if splits > 1 { splits * per_split } else { 0 };
    // D, the log-sum-exp in z units and the sink's share, per query row, then the partial sums:
    // each pass writes every entry it leaves for a later one, so the context's shared scratch
    // serves
    let stats = ctx.scratch_f32(Shape::new(1, 1, (3 * rows + partials).max(1), 1)).await?;
    let params = so.apply(
        Params {
            flags: fl,
            post: 1.0,
            post2: 1.0,
            kpre: 1.0,
            start: splits as u32,
            split_len: split_len as u32,
            idx0: (3 * rows) as u32,
            ..Params::of_dims(&d)
        }
        .with_transform(&transform),
    );
    let heads = so.heads.as_ref().unwrap_or(&ctx.inner.placeholder_read);
    let read = &ctx.inner.placeholder_read;
    let lengths = kl.as_ref().unwrap_or(read);
    let wg = WG as usize;
    for pass in [Pass::RowStats, Pass::KeyBlocks, Pass::SplitSums, Pass::QueryBlocks, Pass::Sinks] {
        if (pass == Pass::Sinks && g.d_sinks.is_none()) || (pass == Pass::SplitSums && splits == 1) {
            continue;
        }
        let scores = matches!(pass, Pass::KeyBlocks | Pass::QueryBlocks);
        let args = vec![
            if scores { Arg::tensor("q", x.q, 1, Rows::Query, 0, 1) } else { Arg::whole("q", read, 1) },
            if scores { Arg::mask(ctx, x.mask, d.heads, 2) } else { Arg::whole("mask", read, 2) },
            Arg::whole("key_lengths", if scores { lengths } else { read }, 3),
            if scores { Arg::tensor("k", x.k, d.group(), Rows::All(d.nk), 1, 4) } else { Arg::whole("k", read, 4) },
            if scores { Arg::tensor("v", x.v, d.group(), Rows::All(d.nk), 2, 5) } else { Arg::whole("v", read, 5) },
            if pass == Pass::RowStats { Arg::tensor("o", x.o, 1, Rows::Query, 5, 6) } else { Arg::whole("o", read, 6) },
            if !matches!(pass, Pass::Sinks | Pass::SplitSums) {
                Arg::tensor("d_o", x.d_o, 1, Rows::Query, 4, 7)
            } else {
                Arg::whole("d_o", read, 7)
            },
            Arg::whole("heads", heads, 8),
            // pass 0 reads the log-sum-exp through view 0 (it reads no queries)
            if pass == Pass::RowStats {
                Arg::tensor("lse", x.lse, 1, Rows::Query, 0, 9)
            } else {
                Arg::whole("lse", read, 9)
            },
            Arg::whole("stats", &stats.buffer, 10),
            Arg::whole("dq", &g.dq.buffer, 11),
            Arg::whole("dk", &g.dk.buffer, 12),
            Arg::whole("dv", &g.dv.buffer, 13),
            Arg::whole("d_sinks", g.d_sinks.map_or(&ctx.inner.placeholder_write, |t| &t.buffer), 14),
        ];
        let workgroups = move |_: usize, _: usize| -> u64 {
            (match pass {
                Pass::RowStats => rows.div_ceil(wg),
                Pass::KeyBlocks => d.batch * kv_heads * d.nk.div_ceil(kb) * splits,
                Pass::SplitSums => (d.batch * kv_heads * d.nk * d.d).div_ceil(wg),
                Pass::QueryBlocks => d.slices() * d.nq.div_ceil(kb),
                Pass::Sinks => d.heads,
            }) as u64
        };
        let launch = Launch {
            kernel: Kernel::AttentionBackward(kernel(pass)),
            grid: Grid { bh: d.slices(), heads: d.heads, nq: d.nq, row_tile: d.nq.max(1) },
            args,
            params,
            workgroups: &workgroups,
        };
        // one dispatch per pass: passes 1 and 3 read every row of their slices
        launch.record_at_most(ctx, encoder, 1).await?;
    }
    Ok(())
}

/// Pass 1's workgroups aimed at where its key blocks alone are fewer (a GPU's SMs several times
/// over; on a CPU adapter, its threads), and the fewest query rows (of a group, head after head)
/// a split takes.
const SPLIT_TARGET: usize = 512;
const CPU_SPLIT_TARGET: usize = 16;
const SPLIT_MIN_ROWS: usize = 256;
/// The most floats of partial sums (1 GiB): a split pass 1 that would need more takes fewer
/// splits.
const MAX_PARTIALS: u64 = 1 << 28;

/// Splits of pass 1 for `key_groups` workgroups of keys over `group_rows` query rows each, with
/// `per_split` floats of partial sums per split and `room` floats for them all: 1 (no split)
/// where the key blocks make `target` workgroups, else as many as bring them there, each at
/// least `SPLIT_MIN_ROWS` rows, within `room`.
fn split_count(key_groups: usize, group_rows: usize, per_split: usize, room: usize, target: usize) -> usize {
    if key_groups == 0 || key_groups >= target || group_rows < 2 * SPLIT_MIN_ROWS {
        return 1;
    }
    let n = target.div_ceil(key_groups).min(group_rows / SPLIT_MIN_ROWS).min(room / per_split.max(1));
    if n < 2 {
        1
    } else {
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_1_splits_only_where_its_key_blocks_are_few() {
        // enough key blocks, too few rows, no room: no split
        let t = SPLIT_TARGET;
        assert_eq!(split_count(512, 1 << 20, 1, usize::MAX, t), 1);
        assert_eq!(split_count(4, 511, 1, usize::MAX, t), 1);
        assert_eq!(split_count(4, 1 << 20, 100, 150, t), 1);
        // 4 key blocks over 4096 rows: 16 splits of 256 rows (64 workgroups, the rows' limit)
        assert_eq!(split_count(4, 4096, 1, usize::MAX, t), 16);
        // 64 key blocks (1 x 4096 keys at d 128) over 32 x 4096 rows (MQA): 8 splits
        assert_eq!(split_count(64, 32 * 4096, 1, usize::MAX, t), 8);
        // room for 3 splits' partial sums
        assert_eq!(split_count(4, 4096, 100, 399, t), 3);
        // a CPU adapter's smaller target: 16 key blocks are enough
        assert_eq!(split_count(16, 4096, 1, usize::MAX, CPU_SPLIT_TARGET), 1);
        assert_eq!(split_count(3, 4096, 1, usize::MAX, CPU_SPLIT_TARGET), 6);
    }
}
