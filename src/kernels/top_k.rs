//! Exact top-k retrieval on the GPU: chunked scoring with `shaders/similarity.wgsl`, selection
//! and merging with `shaders/top_k.wgsl`, all recorded in one submission (no host round trip
//! per chunk). CPU twin: `cpu::top_k`.

use super::{b, Access, Binding, Variant, PARAMS};
use crate::caps::Caps;
use crate::error::{Error, Result};
use crate::problem::TopKProblem;
use crate::shape::DType;

/// One variant of `shaders/top_k.wgsl`: entries kept per row (`kp`, a power of two), buffer
/// entries (`cap`), whether the input is raw scores or (score, index) pairs (`pairs`), whether
/// each row's length is its count from the thresholded scoring pass (`counted`), and whether
/// slots are claimed per subgroup (`sg`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct TopKKernel {
    pub kp: u32,
    pub cap: u32,
    pub pairs: bool,
    pub counted: bool,
    pub sg: bool,
}

impl Variant for TopKKernel {
    const NAME: &'static str = "top_k";
    const SOURCE: &'static str = include_str!("../../shaders/top_k.wgsl");
    fn bindings(&self) -> &'static [Binding] {
        const BINDINGS: [Binding; 6] = [
            PARAMS,
            b(1, "scores", Access::Read),
            b(2, "indices", Access::Read),
            b(3, "out_scores", Access::ReadWrite),
            b(4, "out_indices", Access::ReadWrite),
            b(5, "counts", Access::Read),
        ];
        &BINDINGS
    }

    fn dtype(&self) -> DType {
        DType::F32
    }
    fn constants(&self) -> Vec<(&'static str, u32)> {
        vec![
            ("WG", self.threads()),
            ("R", self.cap / 2),
            ("KP", self.kp),
            ("CAP", self.cap),
            ("PAIRS", self.pairs as u32),
            ("COUNTED", self.counted as u32),
        ]
    }
    /// The candidate buffer (scores and indices), its fill counter and its uniform copy.
    fn workgroup_bytes(&self) -> u32 {
        8 * self.cap + 8
    }
    fn preludes(&self) -> Vec<&'static str> {
        vec![if self.sg {
            include_str!("../../shaders/slots_subgroup.wgsl")
        } else {
            include_str!("../../shaders/slots_workgroup.wgsl")
        }]
    }
}

/// Which input a selection reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Input {
    /// Every score of a chunk, indexed by position.
    Scores,
    /// (score, index) pairs, each row as long as its count from the thresholded scoring pass.
    Lists,
    /// (score, index) pairs: the kept entries and the segments' bests.
    Merge,
}

impl TopKKernel {
    /// The variant keeping `kp` entries from `input`.
    pub(crate) fn new(kp: usize, input: Input, caps: &Caps) -> Self {
        TopKKernel {
            kp: kp as u32,
            cap: if kp <= 512 { 1024 } else { 2048 },
            pairs: input != Input::Scores,
            counted: input == Input::Lists,
            sg: caps.subgroups,
        }
    }

    /// Threads per workgroup: 4 new inputs each per round of `cap / 2`.
    fn threads(&self) -> u32 {
        self.cap / 8
    }

    /// Every variant.
    #[cfg(test)]
    pub fn all() -> impl Iterator<Item = TopKKernel> {
        [16usize, 32, 64, 128, 256, 512, 1024].into_iter().flat_map(|kp| {
            [Input::Scores, Input::Lists, Input::Merge].into_iter().flat_map(move |input| {
                [false, true]
                    .into_iter()
                    .map(move |subgroups| TopKKernel::new(kp, input, &Caps { subgroups, ..Caps::baseline() }))
            })
        })
    }
}

/// How a top-k call is cut: keys per chunk (scored and selected at once), inputs per
/// selection segment, segments per chunk, and entries kept per row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TopKPlan {
    pub kp: usize,
    pub chunk: usize,
    pub seg: usize,
    pub nseg: usize,
}

impl TopKPlan {
    /// Candidate slots per query (the running best plus one per segment).
    pub fn slots(&self) -> usize {
        1 + self.nseg
    }
}

/// Chunk sizing for a top-k call with `key_bytes` bytes per key element, pure: the scores of a
/// chunk (`[nq, chunk]` f32) and the chunk's keys must each fit one binding (at most 256 MiB).
pub(crate) fn plan(p: &TopKProblem, key_bytes: u64, caps: &Caps) -> Result<TopKPlan> {
    let kp = p.k.next_power_of_two().max(16);
    let need = TopKKernel::new(kp, Input::Scores, caps).workgroup_bytes();
    if need > caps.max_workgroup_storage {
        return Err(Error::Unsupported(format!(
            "k = {} needs {need} bytes of workgroup memory, the device allows {}",
            p.k, caps.max_workgroup_storage
        )));
    }
    let max_binding = caps.max_binding.min(256 << 20) as usize;
    let by_scores = max_binding / (4 * p.nq);
    let by_keys = max_binding.saturating_sub(256) / (p.d * key_bytes as usize);
    let chunk = by_scores.min(by_keys).min(p.nk.next_multiple_of(64)) / 64 * 64;
    if chunk == 0 {
        return Err(Error::TooLarge {
            argument: "queries",
            message: format!(
                "{} queries of dim {} leave no room for a chunk of keys in one binding; search fewer at a time",
                p.nq, p.d
            ),
        });
    }
    let seg = (8 * kp).max(8192);
    Ok(TopKPlan { kp, chunk, seg, nseg: chunk.div_ceil(seg) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retrieval::Metric;

    fn problem(nq: usize, nk: usize, d: usize, k: usize) -> TopKProblem {
        TopKProblem::new(nq, nk, d, d, k, Metric::Dot).unwrap()
    }

    #[test]
    fn chunks_fit_the_binding_and_segments_cover_them() {
        let caps = Caps { max_binding: 128 << 20, max_workgroup_storage: 32 << 10, ..Caps::baseline() };
        let pl = plan(&problem(256, 200_000, 128, 10), 4, &caps).unwrap();
        assert_eq!(pl.kp, 16);
        assert!(pl.chunk * 256 * 4 <= 128 << 20 && pl.chunk * 128 * 4 <= 128 << 20);
        assert_eq!(pl.chunk % 64, 0);
        assert!(pl.nseg * pl.seg >= pl.chunk);
        // few keys: one chunk rounded up to 64
        let pl = plan(&problem(2, 100, 8, 100), 4, &caps).unwrap();
        assert_eq!((pl.kp, pl.chunk, pl.nseg), (128, 128, 1));
        // k > 512 needs 16 KiB + 8 bytes of workgroup memory
        let small = Caps { max_workgroup_storage: 16 << 10, ..caps.clone() };
        assert!(matches!(plan(&problem(1, 2000, 8, 600), 4, &small), Err(Error::Unsupported(_))));
        assert!(plan(&problem(1, 2000, 8, 512), 4, &small).is_ok());
        // so many queries that no chunk fits
        let tiny = Caps { max_binding: 64 << 10, ..caps };
        assert!(matches!(
            plan(&problem(20_000, 100, 8, 1), 4, &tiny),
            Err(Error::TooLarge { argument: "queries", .. })
        ));
    }
}
