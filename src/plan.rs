//! Dispatch planning, pure: how one kernel launch is split into dispatches whose buffer windows
//! fit the binding limit and whose grids fit the per-dimension workgroup limit.
//!
//! Work is split over (batch·head slice, query rows). Each chunk binds, for every tensor, the
//! smallest 16-byte-aligned window of its buffer that the chunk touches; the kernel addresses
//! elements through a view whose `base` is `tensor offset - window start` modulo 2³², so indices
//! computed from global (b, h, s) in wrapping u32 arithmetic land exactly in the window.
//!
//! Everything here takes numbers ([`Caps`], [`ArgSpec`]) and returns numbers: no device, so the
//! unit tests below cover chunk counts, windows, alignment and wrap-around directly.

use crate::caps::Caps;
use crate::error::{Error, Result};

/// Which sequence positions of a tensor a chunk touches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rows {
    /// Indexed by query row: the chunk's rows.
    Query,
    /// All `n` positions (keys and values).
    All(usize),
}

/// How a kernel argument is addressed: element size and offset, strides, and which rows a chunk
/// of (slices, query rows) touches. `viewed: false` binds the whole buffer (small buffers such as
/// key lengths or placeholders).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ArgSpec {
    pub name: &'static str,
    /// Bytes per element.
    pub elem: u64,
    /// Element index of (0, 0, 0, 0).
    pub offset: u64,
    pub sb: u64,
    pub sh: u64,
    pub ss: u64,
    /// Contiguous elements per row.
    pub row_len: u64,
    /// Head index = query head / group (1 for query-indexed tensors).
    pub group: usize,
    pub rows: Rows,
    pub viewed: bool,
    /// Size of the buffer, bytes.
    pub buffer_size: u64,
}

impl ArgSpec {
    /// A `[rows, row_len]` row-major buffer of 4-byte elements, addressed with b = h = 0 and
    /// s = row.
    pub fn matrix(name: &'static str, row_len: usize, rows: Rows, buffer_size: u64) -> Self {
        let n = row_len as u64;
        ArgSpec { name, elem: 4, offset: 0, sb: 0, sh: 0, ss: n, row_len: n, group: 1, rows, viewed: true, buffer_size }
    }

    /// A small buffer bound whole.
    pub fn whole(name: &'static str, buffer_size: u64) -> Self {
        ArgSpec { viewed: false, ..ArgSpec::matrix(name, 0, Rows::All(0), buffer_size) }
    }
}

/// The problem a kernel walks: `bh` slices of `heads` heads, `nq` query rows in tiles of `row_tile`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Grid {
    pub bh: usize,
    pub heads: usize,
    pub nq: usize,
    pub row_tile: usize,
}

/// One argument's bound window: byte start and length, and the view base.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Window {
    pub start: u64,
    pub len: u64,
    pub base: u32,
}

/// One dispatch: a range of slices and rows, with each argument's window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Chunk {
    pub bh0: usize,
    pub nbh: usize,
    pub r0: usize,
    pub nr: usize,
    pub windows: Vec<Window>,
}

/// The byte range `[lo, hi)` of `arg` that slices `[bh0, bh0+nbh)` and rows `[r0, r0+nr)` touch.
fn touched(arg: &ArgSpec, heads: usize, bh0: usize, nbh: usize, r0: usize, nr: usize) -> (u64, u64) {
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
        hi = hi.max(base + rb.saturating_sub(1) * arg.ss + arg.row_len);
    }
    (lo * arg.elem, hi * arg.elem)
}

/// Splits a launch so that every argument's window fits the binding limit and every chunk's
/// workgroups fit the grid. `workgroups(nbh, nr)` counts the workgroups of a chunk.
pub(crate) fn plan(
    caps: &Caps,
    grid: Grid,
    args: &[ArgSpec],
    workgroups: &dyn Fn(usize, usize) -> u64,
) -> Result<Vec<Chunk>> {
    let max_dim = caps.max_workgroups_per_dim.max(1) as u64;
    let max_wgs = max_dim.saturating_mul(max_dim).saturating_mul(max_dim).min(u32::MAX as u64);
    let max_binding = caps.max_binding;
    // 16-byte aligned windows keep 4-aligned element offsets 4-aligned (vector loads)
    let align = (caps.storage_alignment as u64).max(16);
    let (mut nbh, mut nr) = (grid.bh, grid.nq);
    'shrink: loop {
        let mut chunks = vec![];
        for bh0 in (0..grid.bh).step_by(nbh) {
            let cbh = nbh.min(grid.bh - bh0);
            for r0 in (0..grid.nq).step_by(nr) {
                let cnr = nr.min(grid.nq - r0);
                let shrink = |nbh: &mut usize, nr: &mut usize| {
                    if *nbh > 1 {
                        *nbh = nbh.div_ceil(2);
                        true
                    } else if *nr > grid.row_tile {
                        *nr = nr.div_ceil(2).div_ceil(grid.row_tile) * grid.row_tile;
                        true
                    } else {
                        false
                    }
                };
                if workgroups(cbh, cnr) > max_wgs {
                    if shrink(&mut nbh, &mut nr) {
                        continue 'shrink;
                    }
                    return Err(Error::TooLarge {
                        argument: "shape",
                        message: format!("one slice needs {} workgroups, over the device's grid", workgroups(cbh, cnr)),
                    });
                }
                let mut windows = Vec::with_capacity(args.len());
                for a in args {
                    if !a.viewed {
                        windows.push(Window { start: 0, len: a.buffer_size, base: 0 });
                        continue;
                    }
                    let (lo, hi) = touched(a, grid.heads, bh0, cbh, r0, cnr);
                    let start = lo / align * align;
                    let end = hi.div_ceil(16).saturating_mul(16).min(a.buffer_size);
                    if end - start > max_binding {
                        if shrink(&mut nbh, &mut nr) {
                            continue 'shrink;
                        }
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
                    let base = (a.offset.wrapping_sub(start / a.elem)) as u32;
                    windows.push(Window { start, len: end - start, base });
                }
                chunks.push(Chunk { bh0, nbh: cbh, r0, nr: cnr, windows });
            }
        }
        return Ok(chunks);
    }
}

/// A 3-D grid of at least `total` workgroups within the per-dimension limit (the kernels
/// linearise it and skip the excess).
pub(crate) fn grid_3d(caps: &Caps, total: u64) -> Result<(u32, u32, u32)> {
    let max = caps.max_workgroups_per_dim.max(1) as u64;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(binding: u64, per_dim: u32) -> Caps {
        Caps { max_binding: binding, max_workgroups_per_dim: per_dim, ..Caps::baseline() }
    }

    /// A BHSD tensor `[b, h, s, d]` of f32 at element offset `offset`, indexed by query row or whole.
    fn bhsd(name: &'static str, shape: [usize; 4], offset: u64, rows: Rows, group: usize) -> ArgSpec {
        let [b, h, s, d] = shape.map(|x| x as u64);
        ArgSpec {
            name,
            elem: 4,
            offset,
            sb: h * s * d,
            sh: s * d,
            ss: d,
            row_len: d,
            group,
            rows,
            viewed: true,
            buffer_size: (offset + b * h * s * d) * 4,
        }
    }

    /// Elements that a chunk's rows of `a` need, as global element indices.
    fn needed(a: &ArgSpec, heads: usize, ch: &Chunk) -> Vec<u64> {
        let mut v = vec![];
        let rows: Vec<u64> = match a.rows {
            Rows::Query => (ch.r0..ch.r0 + ch.nr).map(|r| r as u64).collect(),
            Rows::All(n) => (0..n as u64).collect(),
        };
        for bh in ch.bh0..ch.bh0 + ch.nbh {
            let (b, h) = ((bh / heads) as u64, ((bh % heads) / a.group) as u64);
            for &r in &rows {
                v.push(a.offset + b * a.sb + h * a.sh + r * a.ss);
                v.push(a.offset + b * a.sb + h * a.sh + r * a.ss + a.row_len - 1);
            }
        }
        v
    }

    /// Every element a chunk needs is inside its window, and the kernel's wrapping u32 index
    /// `base + b·sb + h·sh + s·ss` lands on it.
    fn check_windows(c: &Caps, grid: Grid, args: &[ArgSpec], chunks: &[Chunk]) {
        let mut covered = vec![vec![false; grid.nq]; grid.bh];
        for ch in chunks {
            for (a, w) in args.iter().zip(&ch.windows) {
                assert!(w.len <= c.max_binding, "{}: window {} over the limit {}", a.name, w.len, c.max_binding);
                assert_eq!(w.start % 16, 0, "{}: window start {} not 16-byte aligned", a.name, w.start);
                assert!(w.start + w.len <= a.buffer_size);
                for e in needed(a, grid.heads, ch) {
                    let byte = e * a.elem;
                    assert!(
                        byte >= w.start && byte + a.elem <= w.start + w.len,
                        "{}: element {e} outside window",
                        a.name
                    );
                    // what the kernel computes: (base + global offset without the tensor offset) mod 2^32
                    let rel = e - a.offset;
                    let idx = w.base.wrapping_add(rel as u32);
                    assert_eq!(idx as u64, (byte - w.start) / a.elem, "{}: wrapped index of element {e}", a.name);
                }
            }
            for (bh, rows) in covered.iter_mut().enumerate().skip(ch.bh0).take(ch.nbh) {
                for (r, c) in rows.iter_mut().enumerate().skip(ch.r0).take(ch.nr) {
                    assert!(!*c, "slice {bh} row {r} in two chunks");
                    *c = true;
                }
            }
        }
        assert!(covered.iter().flatten().all(|&x| x), "some (slice, row) not covered");
    }

    #[test]
    fn one_chunk_when_everything_fits() {
        let c = Caps::baseline();
        let grid = Grid { bh: 8, heads: 4, nq: 100, row_tile: 16 };
        let args = [bhsd("q", [2, 4, 100, 64], 0, Rows::Query, 1), bhsd("k", [2, 2, 300, 64], 0, Rows::All(300), 2)];
        let chunks = plan(&c, grid, &args, &|nbh, nr| (nbh * nr.div_ceil(16)) as u64).unwrap();
        assert_eq!(chunks.len(), 1);
        check_windows(&c, grid, &args, &chunks);
    }

    #[test]
    fn split_by_binding_limit_over_slices_then_rows() {
        // q is 2·3·300·40·4 = 288 KB, one head's keys 200·40·4 = 32 KB; a 64 KiB binding
        let c = caps(64 << 10, 65535);
        let grid = Grid { bh: 6, heads: 3, nq: 300, row_tile: 16 };
        let args = [
            bhsd("q", [2, 3, 300, 40], 7, Rows::Query, 1),
            bhsd("k", [2, 3, 200, 40], 3, Rows::All(200), 1),
            bhsd("out", [2, 3, 300, 40], 0, Rows::Query, 1),
        ];
        let chunks = plan(&c, grid, &args, &|nbh, nr| (nbh * nr.div_ceil(16)) as u64).unwrap();
        // one slice of q is 48 KB: one slice per chunk, whole rows
        assert_eq!(chunks.len(), 6);
        check_windows(&c, grid, &args, &chunks);
        // a 16 KiB binding: q rows must be split too (16 rows = 2.5 KB)
        let c = caps(16 << 10, 65535);
        let k_small = bhsd("k", [2, 3, 50, 40], 0, Rows::All(50), 1);
        let args = [args[0], k_small, args[2]];
        let chunks = plan(&c, grid, &args, &|nbh, nr| (nbh * nr.div_ceil(16)) as u64).unwrap();
        assert!(chunks.len() > 6);
        assert!(chunks.iter().all(|ch| ch.nr % 16 == 0 || ch.r0 + ch.nr == 300), "row chunks are whole tiles");
        check_windows(&c, grid, &args, &chunks);
    }

    #[test]
    fn split_by_workgroup_grid() {
        // 5 workgroups per dimension: at most 125 per dispatch
        let c = caps(1 << 30, 5);
        let grid = Grid { bh: 7, heads: 7, nq: 1000, row_tile: 8 };
        let args = [bhsd("x", [1, 7, 1000, 3], 0, Rows::Query, 1)];
        let wg = |nbh: usize, nr: usize| (nbh * nr.div_ceil(8)) as u64;
        let chunks = plan(&c, grid, &args, &wg).unwrap();
        assert!(chunks.iter().all(|ch| wg(ch.nbh, ch.nr) <= 125));
        check_windows(&c, grid, &args, &chunks);
        for ch in &chunks {
            let (x, y, z) = grid_3d(&c, wg(ch.nbh, ch.nr)).unwrap();
            assert!(x <= 5 && y <= 5 && z <= 5 && (x * y * z) as u64 >= wg(ch.nbh, ch.nr));
        }
    }

    #[test]
    fn grid_3d_wraps_and_refuses() {
        let c = caps(1 << 30, 65535);
        assert_eq!(grid_3d(&c, 1).unwrap(), (1, 1, 1));
        assert_eq!(grid_3d(&c, 70_000).unwrap(), (65535, 2, 1));
        let (x, y, z) = grid_3d(&c, 0).unwrap();
        assert_eq!(x * y * z, 0, "no workgroups for no work");
        let c = caps(1 << 30, 4);
        assert_eq!(grid_3d(&c, 64).unwrap(), (4, 4, 4));
        assert!(matches!(grid_3d(&c, 65), Err(Error::TooLarge { .. })));
    }

    #[test]
    fn one_slice_over_the_limit_is_refused_with_the_argument() {
        let c = caps(64 << 10, 65535);
        let grid = Grid { bh: 1, heads: 1, nq: 4, row_tile: 4 };
        let args = [bhsd("q", [1, 1, 4, 16], 0, Rows::Query, 1), bhsd("k", [1, 1, 2000, 16], 0, Rows::All(2000), 1)];
        let e = plan(&c, grid, &args, &|_, _| 1).unwrap_err();
        assert!(matches!(e, Error::TooLarge { argument: "k", .. }), "{e}");
        // BSHD keys: the message says why the window is large
        let mut k = bhsd("k", [1, 8, 300, 16], 0, Rows::All(300), 1);
        (k.sh, k.ss) = (16, 8 * 16);
        let grid = Grid { bh: 8, heads: 8, nq: 4, row_tile: 4 };
        let e = plan(&c, grid, &[k], &|_, _| 1).unwrap_err();
        assert!(matches!(e, Error::TooLarge { argument: "k", ref message } if message.contains("Bshd")), "{e}");
    }

    #[test]
    fn u32_wrap_around_of_large_offsets() {
        // a tensor 20 GiB into a 24 GiB buffer: offsets past 2^32 elements; the kernel's u32
        // arithmetic wraps, and the base makes it land in the window
        let c = caps(1 << 30, 65535);
        let off = (5u64 << 30) + 3;
        let mut q = bhsd("q", [1, 2, 1000, 64], off, Rows::Query, 1);
        q.buffer_size = 24 << 30;
        let grid = Grid { bh: 2, heads: 2, nq: 1000, row_tile: 16 };
        let chunks = plan(&c, grid, &[q], &|nbh, nr| (nbh * nr.div_ceil(16)) as u64).unwrap();
        assert!(chunks[0].windows[0].start > u32::MAX as u64);
        check_windows(&c, grid, &[q], &chunks);
        // a batch stride over 2^32 elements: b·sb wraps in u32 too
        let mut big = bhsd("k", [3, 1, 4, 4], 0, Rows::All(4), 1);
        big.sb = (1u64 << 32) + 16;
        big.buffer_size = (2 * big.sb + 16) * 4;
        let grid = Grid { bh: 3, heads: 1, nq: 1, row_tile: 1 };
        let chunks = plan(&c, grid, &[big], &|nbh, _| nbh as u64).unwrap();
        assert_eq!(chunks.len(), 3, "each batch in its own window");
        check_windows(&c, grid, &[big], &chunks);
    }

    #[test]
    fn whole_buffer_arguments_are_bound_whole() {
        let c = Caps::baseline();
        let grid = Grid { bh: 1, heads: 1, nq: 1, row_tile: 1 };
        let kl = ArgSpec::whole("key_lengths", 48);
        let chunks = plan(&c, grid, &[kl], &|_, _| 1).unwrap();
        assert_eq!(chunks[0].windows[0], Window { start: 0, len: 48, base: 0 });
    }
}
