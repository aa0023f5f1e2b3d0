//! The attention options' part of a launch: flag bits, window and soft-cap fields, and the
//! per-head parameters as a buffer.

use crate::context::Context;
use crate::error::Result;
use crate::kernels::{flags, Params};
use crate::problem::{AttentionProblem, ScoreOptions, ScoreTransform};
use crate::tensor::Mask;

/// Windows are clamped to 2^30 positions: wider is the same as unbounded (no sequence the
/// kernels can bind is that long), and positions plus bounds stay within i32.
const MAX_WINDOW: usize = 1 << 30;

/// The attention options' part of a launch: flag bits, window and soft-cap fields, and the
/// per-head parameters (ALiBi slope and sink in z units) as a buffer, when needed.
pub(crate) struct ScoreArgs {
    pub flags: u32,
    fields: Params,
    pub heads: Option<wgpu::Buffer>,
}

impl ScoreArgs {
    /// For checked options, the call's score transform and its query heads.
    pub async fn new(ctx: &Context, so: &ScoreOptions<'_>, t: &ScoreTransform, heads: usize) -> Result<Self> {
        let mut flags = 0;
        let mut fields = Params::default();
        if let Some(w) = so.window {
            flags |= flags::WINDOW_LEFT;
            fields.wleft = w.left.min(MAX_WINDOW) as u32;
            if let Some(r) = w.right {
                flags |= flags::WINDOW_RIGHT;
                fields.wright = r.min(MAX_WINDOW) as u32;
            }
        }
        if let Some((cap_in, cap_out)) = so.cap_factors(t)? {
            flags |= flags::SOFTCAP;
            fields.cap_in = cap_in;
            fields.cap_out = cap_out;
            fields.cap_lim = 20.0 / cap_in;
        }
        if so.alibi_slopes.is_some() {
            flags |= flags::ALIBI;
        }
        if so.sinks.is_some() {
            flags |= flags::SINK;
        }
        let heads = if so.has_head_params() {
            Some(ctx.create_init(bytemuck::cast_slice(&so.head_params(t, heads)), "heads").await?)
        } else {
            None
        };
        Ok(ScoreArgs { flags, fields, heads })
    }

    /// `p` with the options' fields and flags.
    pub fn apply(&self, p: Params) -> Params {
        Params {
            flags: p.flags | self.flags,
            wleft: self.fields.wleft,
            wright: self.fields.wright,
            cap_in: self.fields.cap_in,
            cap_out: self.fields.cap_out,
            cap_lim: self.fields.cap_lim,
            ..p
        }
    }
}

/// The flag bits of an attention call's mask, causal alignment and key lengths, and the key
/// lengths as a buffer (binding 3) when the call has them: what the forward and backward
/// launchers share.
pub(crate) async fn masking_flags(
    ctx: &Context,
    p: &AttentionProblem<'_>,
    mask: Option<&Mask>,
) -> Result<(u32, Option<wgpu::Buffer>)> {
    let mut fl = 0;
    if let Some(m) = mask {
        fl |= flags::MASK | if m.kind == crate::host::MaskKind::Additive { flags::MASK_ADDITIVE } else { 0 };
    }
    if p.causal {
        fl |= flags::CAUSAL;
    }
    let kl = match p.key_lengths {
        Some(kl) => {
            fl |= flags::KEY_LENGTHS;
            Some(ctx.create_init(bytemuck::cast_slice(kl), "key_lengths").await?)
        }
        None => None,
    };
    Ok((fl, kl))
}
