//! Launching `shaders/attention_backward.wgsl`: the buffers, parameters and four dispatches of a
//! checked backward call (the variant itself is `kernels/attention_backward.rs`).

use crate::backward_call::{AttentionBackwardCall, AttentionGradOutputs};
use crate::context::Context;
use crate::error::Result;
use crate::kernels::attention_backward::{AttentionBackwardKernel, Pass, WG};
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
    // D, the log-sum-exp in z units and the sink's share, per query row: pass 0 writes every
    // entry before passes 1-3 read, so the context's shared scratch serves
    let stats = ctx.scratch_f32(Shape::new(1, 1, rows.max(1), 3)).await?;
    let params = so.apply(
        Params {
            heads: d.heads as u32,
            group: d.group() as u32,
            nq: d.nq as u32,
            nk: d.nk as u32,
            d: d.d as u32,
            flags: fl,
            post: 1.0,
            post2: 1.0,
            kpre: 1.0,
            ..Params::default()
        }
        .with_transform(&transform),
    );
    let heads = so.heads.as_ref().unwrap_or(&ctx.inner.placeholder_read);
    let read = &ctx.inner.placeholder_read;
    let lengths = kl.as_ref().unwrap_or(read);
    let wg = WG as usize;
    let kernel = |pass| AttentionBackwardKernel::new(p.dtype, pass, d.d, ctx.caps());
    // keys (pass 1) and query rows (pass 2) per workgroup
    let kb = kernel(Pass::KeyBlocks).block() as usize;
    let kv_heads = d.heads / d.group();
    for pass in [Pass::RowStats, Pass::KeyBlocks, Pass::QueryBlocks, Pass::Sinks] {
        if pass == Pass::Sinks && g.d_sinks.is_none() {
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
            if pass != Pass::Sinks {
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
                Pass::KeyBlocks => d.batch * kv_heads * d.nk.div_ceil(kb),
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
