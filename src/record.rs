//! Recording a planned kernel launch into a command encoder: the pipeline from the cache, one
//! dispatch per chunk of [`crate::plan::plan`], each with its own parameters and bind group.

use crate::context::Context;
use crate::error::{Error, Result};
use crate::kernels::{Kernel, Params, ViewParams};
use crate::plan::{grid_3d, plan, ArgSpec, Grid, Rows};
use crate::reuse::BindKey;
use crate::tensor::{Mask, Tensor};

/// A buffer argument of a launch: the buffer, how it is addressed, which view of [`Params`]
/// describes it (none: bound whole), and its binding slot.
#[derive(Clone, Debug)]
pub(crate) struct Arg<'a> {
    pub buffer: &'a wgpu::Buffer,
    pub spec: ArgSpec,
    pub view: Option<usize>,
    pub slot: u32,
}

impl<'a> Arg<'a> {
    /// A tensor argument.
    pub fn tensor(name: &'static str, t: &'a Tensor, group: usize, rows: Rows, view: usize, slot: u32) -> Self {
        let st = t.strides;
        Arg {
            buffer: &t.buffer,
            spec: ArgSpec {
                name,
                elem: t.dtype.size(),
                offset: t.offset,
                sb: st.batch as u64,
                sh: st.head as u64,
                ss: st.seq as u64,
                row_len: t.shape.dim as u64,
                group,
                rows,
                viewed: true,
                buffer_size: t.buffer.size(),
            },
            view: Some(view),
            slot,
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
        slot: u32,
    ) -> Self {
        Arg { buffer, spec: ArgSpec::matrix(name, row_len, rows, buffer.size()), view: Some(view), slot }
    }

    /// A small buffer bound whole (key lengths, placeholders).
    pub fn whole(name: &'static str, buffer: &'a wgpu::Buffer, slot: u32) -> Self {
        Arg { buffer, spec: ArgSpec::whole(name, buffer.size()), view: None, slot }
    }

    /// The mask argument (view 3), or the placeholder when there is none.
    pub fn mask(ctx: &'a Context, mask: Option<&'a Mask>, heads: usize, slot: u32) -> Self {
        match mask {
            Some(m) => {
                let [mb, mh, nq, nk] = m.shape;
                Arg {
                    buffer: &m.buffer,
                    spec: ArgSpec {
                        name: "mask",
                        elem: 4,
                        offset: 0,
                        sb: if mb == 1 { 0 } else { (mh * nq * nk) as u64 },
                        sh: if mh == 1 { 0 } else { (nq * nk) as u64 },
                        ss: nk as u64,
                        row_len: nk as u64,
                        // broadcast heads have stride 0, so the head index does not matter
                        group: if mh == 1 { heads } else { 1 },
                        rows: Rows::Query,
                        viewed: true,
                        buffer_size: m.buffer.size(),
                    },
                    view: Some(3),
                    slot,
                }
            }
            None => Arg::whole("mask", &ctx.inner.placeholder_read, slot),
        }
    }
}

/// A kernel launch over all chunks.
pub(crate) struct Launch<'a> {
    pub kernel: Kernel,
    pub grid: Grid,
    pub args: Vec<Arg<'a>>,
    /// Parameters common to every chunk (the chunk fields and views are filled in).
    pub params: Params,
    /// Workgroups for a chunk of `(nbh, nr)`.
    pub workgroups: &'a (dyn Fn(usize, usize) -> u64 + Sync),
}

impl Launch<'_> {
    /// Records every chunk's dispatch into `encoder` (validation errors become `Err`).
    pub async fn record(&self, ctx: &Context, encoder: &mut wgpu::CommandEncoder) -> Result<()> {
        self.record_at_most(ctx, encoder, usize::MAX).await
    }

    /// [`Launch::record`] for a kernel that must run in at most `max_chunks` dispatches: a call
    /// that needs more (binding or grid limits) is refused before anything is recorded.
    pub async fn record_at_most(
        &self,
        ctx: &Context,
        encoder: &mut wgpu::CommandEncoder,
        max_chunks: usize,
    ) -> Result<()> {
        ctx.check_alive()?;
        let specs: Vec<ArgSpec> = self.args.iter().map(|a| a.spec).collect();
        let chunks = plan(ctx.caps(), self.grid, &specs, self.workgroups)?;
        if chunks.len() > max_chunks {
            return Err(Error::Unsupported(format!(
                "the {} kernel runs in at most {max_chunks} dispatch(es), and this call needs {} (binding or grid limits)",
                self.kernel.name(),
                chunks.len()
            )));
        }
        let pipeline = ctx.pipeline(self.kernel).await?;
        let layout = ctx.bind_group_layout(self.kernel).await?;
        let mut recorded = Vec::with_capacity(chunks.len());
        for ch in &chunks {
            let mut p = self.params;
            p.bh0 = ch.bh0 as u32;
            p.nbh = ch.nbh as u32;
            p.r0 = ch.r0 as u32;
            p.nr = ch.nr as u32;
            for (a, w) in self.args.iter().zip(&ch.windows) {
                if let Some(v) = a.view {
                    let s = &a.spec;
                    // strides wrap like the kernel's arithmetic (see crate::plan)
                    p.views[v] = ViewParams { base: w.base, sb: s.sb as u32, sh: s.sh as u32, ss: s.ss as u32 };
                }
            }
            // the same parameter block (a call repeated with the same shapes) binds the same
            // uniform buffer: no allocation per call
            let bytes = bytemuck::bytes_of(&p);
            let ubuf = match ctx.inner.uniforms.get(bytes) {
                Some(b) => b,
                None => {
                    let b = ctx.buffer_with(bytes, wgpu::BufferUsages::UNIFORM, "params").await?;
                    ctx.inner.uniforms.insert(bytes, &b);
                    b
                }
            };
            let groups = grid_3d(ctx.caps(), (self.workgroups)(ch.nbh, ch.nr))?;
            recorded.push((ubuf, ch, groups));
        }
        // bind groups made here, kept (where the caller holds a cache) once they proved valid
        let fresh = ctx
            .scoped_async(|| {
                let mut fresh = vec![];
                for (ubuf, ch, (x, y, z)) in &recorded {
                    let key = ctx.bindings.as_ref().map(|_| BindKey {
                        kernel: self.kernel,
                        entries: std::iter::once((0, ubuf.clone(), 0, ubuf.size()))
                            .chain(
                                self.args
                                    .iter()
                                    .zip(&ch.windows)
                                    .map(|(a, w)| (a.slot, a.buffer.clone(), w.start, w.len)),
                            )
                            .collect(),
                    });
                    let cached = match (&ctx.bindings, &key) {
                        (Some(cache), Some(key)) => cache.get(key),
                        _ => None,
                    };
                    let bg = match cached {
                        Some(bg) => bg,
                        None => {
                            let mut entries =
                                vec![wgpu::BindGroupEntry { binding: 0, resource: ubuf.as_entire_binding() }];
                            for (a, w) in self.args.iter().zip(&ch.windows) {
                                entries.push(wgpu::BindGroupEntry {
                                    binding: a.slot,
                                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                        buffer: a.buffer,
                                        offset: w.start,
                                        size: std::num::NonZeroU64::new(w.len),
                                    }),
                                });
                            }
                            let bg = ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
                                label: Some(self.kernel.name()),
                                layout: &layout,
                                entries: &entries,
                            });
                            if let Some(key) = key {
                                fresh.push((key, bg.clone()));
                            }
                            bg
                        }
                    };
                    let stamps = crate::timestamps::next_pass(&ctx.inner.timing);
                    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some(self.kernel.name()),
                        timestamp_writes: stamps.as_ref().map(|(qs, i)| wgpu::ComputePassTimestampWrites {
                            query_set: qs,
                            beginning_of_pass_write_index: Some(*i),
                            end_of_pass_write_index: Some(*i + 1),
                        }),
                    });
                    pass.set_pipeline(&pipeline);
                    pass.set_bind_group(0, &bg, &[]);
                    pass.dispatch_workgroups(*x, *y, *z);
                }
                Ok(fresh)
            })
            .await?;
        if let Some(cache) = &ctx.bindings {
            for (key, bg) in fresh {
                cache.insert(key, &bg);
            }
        }
        Ok(())
    }
}
