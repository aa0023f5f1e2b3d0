//! Turning one operation into dispatches: buffer windows that fit the device's binding limit,
//! grids that fit its per-dimension workgroup limit (3-D, linearised in the kernels), and the shared parameter block.
//!
//! Work is split over (batch·head slice, query rows). Each chunk binds, for every tensor, the
//! smallest aligned window of its buffer that the chunk touches; the kernel addresses elements
//! through a [`ViewParams`] whose `base` is `tensor offset - window start` modulo 2³², so
//! indices computed from global (b, h, s) in wrapping u32 arithmetic land exactly in the window.

use wgpu::util::DeviceExt;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::pipeline::Family;
use crate::shape::DType;

/// Flags in [`Params::flags`]; must match `F_*` in `shaders/common.wgsl`.
pub(crate) mod flags {
    pub const CAUSAL: u32 = 1;
    pub const MASK: u32 = 2;
    pub const MASK_ADDITIVE: u32 = 4;
    pub const KEY_LENGTHS: u32 = 8;
    pub const LSE: u32 = 16;
}

/// One tensor view; must match `View` in `shaders/common.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct ViewParams {
    pub base: u32,
    pub sb: u32,
    pub sh: u32,
    pub ss: u32,
}

/// The uniform block of every kernel; must match `Params` in `shaders/common.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct Params {
    pub bh0: u32,
    pub nbh: u32,
    pub r0: u32,
    pub nr: u32,
    pub heads: u32,
    pub group: u32,
    pub nq: u32,
    pub nk: u32,
    pub d: u32,
    pub flags: u32,
    pub scale: f32,
    /// Split-K attention: keys per split; its merge: the number of splits; top-k: inputs per segment.
    pub split_len: u32,
    /// Top-k: index of the first input element (raw scores).
    pub idx0: u32,
    /// Top-k: first input element of each row to read.
    pub start: u32,
    /// Top-k: output slots (of k entries) per row.
    pub out_stride: u32,
    /// Top-k: slot of the first segment's output.
    pub out_offset: u32,
    pub views: [ViewParams; 6],
}

/// Which sequence positions of a tensor a chunk touches.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Rows {
    /// Indexed by query row: the chunk's rows.
    Query,
    /// All `n` positions (keys and values).
    All(usize),
}

/// A tensor argument of a kernel: buffer, element offset, strides and how it is indexed.
#[derive(Clone, Debug)]
pub(crate) struct Arg<'a> {
    pub name: &'static str,
    pub buffer: &'a wgpu::Buffer,
    pub elem: u64,
    pub offset: u64,
    pub sb: u64,
    pub sh: u64,
    pub ss: u64,
    /// Contiguous elements per row.
    pub row_len: u64,
    /// Head index = query head / group (1 for query-indexed tensors).
    pub group: usize,
    pub rows: Rows,
    /// Index of this argument's view in [`Params::views`] (None: bound whole, no view).
    pub view: Option<usize>,
    pub binding: u32,
}

impl<'a> Arg<'a> {
    /// A tensor argument from a [`crate::Tensor`].
    pub fn tensor(
        name: &'static str,
        t: &'a crate::Tensor,
        group: usize,
        rows: Rows,
        view: usize,
        binding: u32,
    ) -> Self {
        let st = t.layout.strides(&t.shape);
        Arg {
            name,
            buffer: &t.buffer,
            elem: t.dtype.size(),
            offset: t.offset,
            sb: st.batch as u64,
            sh: st.head as u64,
            ss: st.seq as u64,
            row_len: t.shape.dim as u64,
            group,
            rows,
            view: Some(view),
            binding,
        }
    }

    /// A `[rows, row_len]` row-major buffer of 4-byte elements (f32 or u32), addressed with
    /// b = h = 0 and s = row.
    pub fn matrix(
        name: &'static str,
        buffer: &'a wgpu::Buffer,
        row_len: usize,
        rows: Rows,
        view: usize,
        binding: u32,
    ) -> Self {
        Arg {
            name,
            buffer,
            elem: 4,
            offset: 0,
            sb: 0,
            sh: 0,
            ss: row_len as u64,
            row_len: row_len as u64,
            group: 1,
            rows,
            view: Some(view),
            binding,
        }
    }

    /// A small buffer bound whole (key lengths, placeholders).
    pub fn whole(name: &'static str, buffer: &'a wgpu::Buffer, binding: u32) -> Self {
        Arg {
            name,
            buffer,
            elem: 4,
            offset: 0,
            sb: 0,
            sh: 0,
            ss: 0,
            row_len: 0,
            group: 1,
            rows: Rows::All(0),
            view: None,
            binding,
        }
    }
}

/// The problem a kernel walks: `bh` slices of `heads` heads, `nq` query rows in tiles of `row_tile`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Grid {
    pub bh: usize,
    pub heads: usize,
    pub nq: usize,
    pub row_tile: usize,
}

/// One dispatch: a range of slices and rows, with each argument's window.
#[derive(Debug)]
pub(crate) struct Chunk {
    pub bh0: usize,
    pub nbh: usize,
    pub r0: usize,
    pub nr: usize,
    /// `(byte start, byte len, view base)` per argument.
    pub windows: Vec<(u64, u64, u32)>,
}

/// The byte window `[start, end)` of `arg` that slices `[bh0, bh0+nbh)` and rows `[r0, r0+nr)` touch.
fn window(arg: &Arg, heads: usize, bh0: usize, nbh: usize, r0: usize, nr: usize) -> (u64, u64) {
    if arg.view.is_none() {
        return (0, arg.buffer.size());
    }
    let (ra, rb) = match arg.rows {
        Rows::Query => (r0 as u64, (r0 + nr) as u64),
        Rows::All(n) => (0, n as u64),
    };
    let (mut lo, mut hi) = (u64::MAX, 0u64);
    let mut last = None;
    for bh in bh0..bh0 + nbh {
        let (b, hh) = ((bh / heads) as u64, ((bh % heads) / arg.group) as u64);
        if last == Some((b, hh)) {
            continue;
        }
        last = Some((b, hh));
        let base = arg.offset + b * arg.sb + hh * arg.sh;
        lo = lo.min(base + ra * arg.ss);
        hi = hi.max(base + (rb - 1) * arg.ss + arg.row_len);
    }
    (lo * arg.elem, hi * arg.elem)
}

/// Splits the work so that every argument's window fits the binding limit and every chunk's
/// workgroups fit the grid.
pub(crate) fn plan(
    ctx: &Context,
    grid: Grid,
    args: &[Arg],
    workgroups: &dyn Fn(usize, usize) -> u64,
) -> Result<Vec<Chunk>> {
    let max_dim = ctx.limits().max_compute_workgroups_per_dimension.max(1) as u64;
    let max_wgs = max_dim.saturating_mul(max_dim).saturating_mul(max_dim).min(u32::MAX as u64);
    let max_binding = ctx.limits().max_storage_buffer_binding_size;
    // 16-byte aligned windows keep 4-aligned element offsets 4-aligned (vector loads)
    let align = ctx.limits().min_storage_buffer_offset_alignment.max(16) as u64;
    let (mut nbh, mut nr) = (grid.bh, grid.nq);
    'shrink: loop {
        let mut chunks = vec![];
        for bh0 in (0..grid.bh).step_by(nbh) {
            let cbh = nbh.min(grid.bh - bh0);
            for r0 in (0..grid.nq).step_by(nr) {
                let cnr = nr.min(grid.nq - r0);
                if workgroups(cbh, cnr) > max_wgs {
                    if nbh > 1 {
                        nbh = nbh.div_ceil(2);
                    } else if nr > grid.row_tile {
                        nr = nr.div_ceil(2).div_ceil(grid.row_tile) * grid.row_tile;
                    } else {
                        return Err(Error::TooLarge {
                            argument: "shape",
                            message: format!(
                                "one slice needs {} workgroups, over the device's grid",
                                workgroups(cbh, cnr)
                            ),
                        });
                    }
                    continue 'shrink;
                }
                let mut windows = Vec::with_capacity(args.len());
                for a in args {
                    let (lo, hi) = window(a, grid.heads, bh0, cbh, r0, cnr);
                    let start = if a.view.is_some() { lo / align * align } else { 0 };
                    let end = hi.div_ceil(16) * 16;
                    let end = end.min(a.buffer.size());
                    if end - start > max_binding {
                        if nbh > 1 {
                            nbh = nbh.div_ceil(2);
                        } else if nr > grid.row_tile {
                            nr = nr.div_ceil(2).div_ceil(grid.row_tile) * grid.row_tile;
                        } else {
                            let hint = if a.sh < a.ss {
                                " (in Layout::Bshd one head's rows are interleaved with the other heads of its batch, \
                                 so the window spans them all; Layout::Bhsd needs less)"
                            } else {
                                ""
                            };
                            return Err(Error::TooLarge {
                                argument: a.name,
                                message: format!(
                                    "one slice needs a {} byte binding, over the device's max_storage_buffer_binding_size {}{hint}",
                                    end - start,
                                    max_binding
                                ),
                            });
                        }
                        continue 'shrink;
                    }
                    let base = (a.offset.wrapping_sub(start / a.elem)) as u32;
                    windows.push((start, end - start, base));
                }
                chunks.push(Chunk { bh0, nbh: cbh, r0, nr: cnr, windows });
            }
        }
        return Ok(chunks);
    }
}

/// A 3-D grid of at least `total` workgroups within the per-dimension limit (the kernels
/// linearise it and skip the excess).
pub(crate) fn grid_3d(ctx: &Context, total: u64) -> Result<(u32, u32, u32)> {
    let max = ctx.limits().max_compute_workgroups_per_dimension.max(1) as u64;
    let x = total.clamp(1, max);
    let y = total.div_ceil(x).clamp(1, max);
    let z = total.div_ceil(x * y);
    if z > max {
        return Err(Error::TooLarge {
            argument: "shape",
            message: format!("{total} workgroups exceed the device's grid"),
        });
    }
    Ok((x as u32, y as u32, z as u32))
}

/// A recorded kernel launch over all chunks.
pub(crate) struct Launch<'a> {
    pub family: Family,
    pub dtype: DType,
    pub consts: Vec<(&'static str, u32)>,
    pub grid: Grid,
    pub args: Vec<Arg<'a>>,
    /// Parameters common to every chunk (chunk fields and views are filled in).
    pub params: Params,
    /// Workgroups for a chunk of `(nbh, nr)`.
    pub workgroups: &'a dyn Fn(usize, usize) -> u64,
}

impl Launch<'_> {
    /// Records every chunk's dispatch into `encoder` (validation errors become `Err`).
    pub fn record(&self, ctx: &Context, encoder: &mut wgpu::CommandEncoder) -> Result<()> {
        let pipeline = ctx.inner.cache.get(ctx, self.family, self.dtype, &self.consts)?;
        let layout = ctx.inner.cache.bind_group_layout(self.family)?;
        let chunks = plan(ctx, self.grid, &self.args, self.workgroups)?;
        ctx.scoped(|| {
            for ch in &chunks {
                let mut p = self.params;
                p.bh0 = ch.bh0 as u32;
                p.nbh = ch.nbh as u32;
                p.r0 = ch.r0 as u32;
                p.nr = ch.nr as u32;
                for (a, w) in self.args.iter().zip(&ch.windows) {
                    if let Some(v) = a.view {
                        p.views[v] = ViewParams { base: w.2, sb: a.sb as u32, sh: a.sh as u32, ss: a.ss as u32 };
                    }
                }
                let ubuf = ctx.device().create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("wgpu-attention params"),
                    contents: bytemuck::bytes_of(&p),
                    usage: wgpu::BufferUsages::UNIFORM,
                });
                let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: ubuf.as_entire_binding() }];
                for (a, w) in self.args.iter().zip(&ch.windows) {
                    entries.push(wgpu::BindGroupEntry {
                        binding: a.binding,
                        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: a.buffer,
                            offset: w.0,
                            size: std::num::NonZeroU64::new(w.1),
                        }),
                    });
                }
                let bg = ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some(self.family.entry()),
                    layout,
                    entries: &entries,
                });
                let (x, y, z) = grid_3d(ctx, (self.workgroups)(ch.nbh, ch.nr))?;
                let stamps = crate::timing::next_pass(&ctx.inner.timing);
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some(self.family.entry()),
                    timestamp_writes: stamps.as_ref().map(|(qs, i)| wgpu::ComputePassTimestampWrites {
                        query_set: qs,
                        beginning_of_pass_write_index: Some(*i),
                        end_of_pass_write_index: Some(*i + 1),
                    }),
                });
                pass.set_pipeline(&pipeline);
                pass.set_bind_group(0, &bg, &[]);
                pass.dispatch_workgroups(x, y, z);
            }
            Ok(())
        })
    }
}
