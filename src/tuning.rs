//! Tuning, pure: how `Auto` picks the attention kernels' configuration on a context
//! ([`Tuning`]), the shape classes calls are grouped by ([`ShapeClass`]), and the tables of
//! tuned choices ([`TuningTable`]) with their text form, for an application to persist, and the
//! built-in tables for the adapters we have swept. The timing itself is `ops/tuning.rs`.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::options::{AttentionConfig, AttentionVariant};

/// How `AttentionVariant::Auto` chooses the kernel and its configuration on a context
/// (`ContextOptions::tuning`). In every mode `Auto`'s order is: the context's tuned entry for
/// the call's [`ShapeClass`] (measured here, or imported with `Context::import_tuning`), then
/// the built-in table for the adapter, then the heuristic. An entry that cannot run a call (a
/// smaller device, an option the kernel lacks) is passed over for the next.
///
/// ```no_run
/// use std::time::Duration;
/// use wgpu_attention::{Context, ContextOptions, Tuning};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // time the candidates the first time each shape class is seen, for at most 2 s each
/// let ctx = Context::with_options_blocking(ContextOptions {
///     tuning: Tuning::OnFirstUse { budget: Duration::from_secs(2) },
///     ..Default::default()
/// })?;
/// // ... calls ...; then keep what was measured for the next run
/// std::fs::write("tuning.txt", ctx.tuning_table().to_string())?;
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Tuning {
    /// The heuristic alone: no table is consulted (imported entries are kept, unused).
    Off,
    /// Tuned entries (imported) and the built-in table, then the heuristic. Nothing is timed.
    #[default]
    BuiltIn,
    /// As `BuiltIn`, and the first contiguous-K/V attention call of a shape class with no entry
    /// times the candidates (`Context::attention_candidates`) on the call's own inputs before
    /// it runs, keeping the fastest for the context. Each candidate runs once untimed (which
    /// compiles it) and three times timed; candidates are started only while `budget` lasts
    /// (the heuristic's choice first, so one is always measured), so a first call may take
    /// `budget` plus one candidate's compile and runs longer. The timing work is submitted on
    /// the context's queue before the call's own: calls recorded into a caller's encoder
    /// (`encode_*`) tune at recording time.
    OnFirstUse {
        /// How long the candidates of one shape class may be started for.
        budget: Duration,
    },
}

/// The class of an attention call that shares a tuned configuration: element type, head dim
/// rounded up to a multiple of 16, query and key counts and batch × heads rounded up to powers
/// of two, query heads per key/value head, causal or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShapeClass {
    /// `true` for f16 inputs, `false` for f32.
    pub f16: bool,
    /// Head dim rounded up to a multiple of 16.
    pub head_dim: u32,
    /// Queries per sequence, rounded up to a power of two.
    pub queries: u64,
    /// Keys per sequence, rounded up to a power of two.
    pub keys: u64,
    /// Batch × query heads, rounded up to a power of two.
    pub slices: u64,
    /// Query heads per key/value head.
    pub group: u32,
    /// Causal masking.
    pub causal: bool,
}

impl ShapeClass {
    /// The class of a call with `slices` batch × query heads, `nq` queries and `nk` keys of head
    /// dim `d`, `group` query heads per key/value head.
    pub fn of(dtype: DType, slices: usize, nq: usize, nk: usize, d: usize, group: usize, causal: bool) -> Self {
        let up = |n: usize| (n.max(1) as u64).next_power_of_two();
        ShapeClass {
            f16: dtype == DType::F16,
            head_dim: d.next_multiple_of(16).max(16) as u32,
            queries: up(nq),
            keys: up(nk),
            slices: up(slices),
            group: group.max(1) as u32,
            causal,
        }
    }
}

/// `f16 d128 q4096 k4096 s16 g1 causal` (`full` where not causal).
impl std::fmt::Display for ShapeClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} d{} q{} k{} s{} g{} {}",
            if self.f16 { "f16" } else { "f32" },
            self.head_dim,
            self.queries,
            self.keys,
            self.slices,
            self.group,
            if self.causal { "causal" } else { "full" }
        )
    }
}

impl std::str::FromStr for ShapeClass {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let w: Vec<&str> = s.split_whitespace().collect();
        let [dt, d, q, k, sl, g, causal] = w[..] else {
            return Err(format!("{s:?}: expected `f16 d128 q4096 k4096 s16 g1 causal`"));
        };
        let num = |w: &str, p: &str| -> std::result::Result<u64, String> {
            w.strip_prefix(p).and_then(|n| n.parse().ok()).ok_or_else(|| format!("{w:?}: expected {p}<number>"))
        };
        let pow2 = |w: &str, p: &str| {
            let n = num(w, p)?;
            if n.is_power_of_two() {
                Ok(n)
            } else {
                Err(format!("{w:?}: not a power of two"))
            }
        };
        let head_dim = num(d, "d")?;
        if head_dim == 0 || head_dim % 16 != 0 || head_dim > u32::MAX as u64 {
            return Err(format!("{d:?}: the head dim class is a positive multiple of 16"));
        }
        let group = num(g, "g")?;
        if group == 0 || group > u32::MAX as u64 {
            return Err(format!("{g:?}: the group is a positive number"));
        }
        Ok(ShapeClass {
            f16: match dt {
                "f16" => true,
                "f32" => false,
                _ => return Err(format!("{dt:?}: f16 or f32")),
            },
            head_dim: head_dim as u32,
            queries: pow2(q, "q")?,
            keys: pow2(k, "k")?,
            slices: pow2(sl, "s")?,
            group: group as u32,
            causal: match causal {
                "causal" => true,
                "full" => false,
                _ => return Err(format!("{causal:?}: causal or full")),
            },
        })
    }
}

/// One tuned choice: the variant and its configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TunedChoice {
    /// Never `Auto`.
    pub variant: AttentionVariant,
    /// The configuration (`AttentionPlan::config` of the candidate that won).
    pub config: AttentionConfig,
}

/// The similarity kernel a tuning entry names: the SIMT kernel (`shaders/similarity.wgsl`) or
/// the tensor-core one (`shaders/similarity_mma.wgsl`, f16 on a context with tensor cores).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SimilarityKernel {
    /// The SIMT kernel.
    Simt,
    /// The tensor-core kernel (where the context has tensor cores and its workgroup memory fits).
    TensorCores,
}

impl SimilarityKernel {
    /// Both, in the order the text form lists them.
    pub const ALL: [SimilarityKernel; 2] = [SimilarityKernel::Simt, SimilarityKernel::TensorCores];

    /// The name in a table's text form: `simt` or `tensor-cores`.
    pub fn name(self) -> &'static str {
        match self {
            SimilarityKernel::Simt => "simt",
            SimilarityKernel::TensorCores => "tensor-cores",
        }
    }
}

impl std::fmt::Display for SimilarityKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Tuned choices per [`ShapeClass`] for one adapter and driver (`adapter`, as
/// the crate writes it: PCI vendor and device ids, driver and version; a table is used only on
/// the adapter and driver it was made on): attention's variant and configuration, and which
/// similarity kernel runs (`Context::similarity`; its classes have group 1 and `full`).
///
/// Its text form (`Display` / `FromStr`) is what an application persists:
///
/// ```text
/// wgpu-attention tuning v1
/// adapter 0x10de:0x2335 NVIDIA 570.86
/// f16 d128 q4096 k4096 s16 g1 full = tensor-cores tc_rows=64
/// similarity f16 d128 q4096 k4096 s16 g1 full = simt
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TuningTable {
    /// The adapter and driver the entries were measured on.
    pub adapter: String,
    /// Attention's choices.
    pub entries: BTreeMap<ShapeClass, TunedChoice>,
    /// Similarity's choices.
    pub similarity: BTreeMap<ShapeClass, SimilarityKernel>,
}

const HEADER: &str = "wgpu-attention tuning v1";
/// What starts a similarity entry's line.
const SIMILARITY: &str = "similarity ";

impl TuningTable {
    /// An empty table for `adapter`.
    pub fn new(adapter: &str) -> Self {
        TuningTable { adapter: adapter.to_string(), entries: BTreeMap::new(), similarity: BTreeMap::new() }
    }

    /// Entries (attention's and similarity's).
    pub fn len(&self) -> usize {
        self.entries.len() + self.similarity.len()
    }

    /// Whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.similarity.is_empty()
    }

    /// Attention's choice for `class`, if any.
    pub fn get(&self, class: &ShapeClass) -> Option<TunedChoice> {
        self.entries.get(class).copied()
    }

    /// Similarity's kernel for `class`, if any.
    pub fn get_similarity(&self, class: &ShapeClass) -> Option<SimilarityKernel> {
        self.similarity.get(class).copied()
    }
}

impl std::fmt::Display for TuningTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{HEADER}")?;
        writeln!(f, "adapter {}", self.adapter)?;
        for (class, c) in &self.entries {
            writeln!(f, "{class} = {} {}", c.variant, c.config)?;
        }
        for (class, k) in &self.similarity {
            writeln!(f, "{SIMILARITY}{class} = {k}")?;
        }
        Ok(())
    }
}

/// Parses what `Display` writes; blank lines and lines starting with `#` are skipped. An
/// unknown header, variant or field is an `Err(InvalidArgument)` naming the line.
impl std::str::FromStr for TuningTable {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = |line: usize, why: String| Error::InvalidArgument {
            argument: "tuning table",
            message: format!("line {line}: {why}"),
        };
        let mut lines =
            s.lines().enumerate().map(|(i, l)| (i + 1, l.trim())).filter(|(_, l)| !l.is_empty() && !l.starts_with('#'));
        match lines.next() {
            Some((_, HEADER)) => {}
            Some((i, other)) => return Err(bad(i, format!("{other:?}: expected {HEADER:?}"))),
            None => return Err(bad(0, "empty".into())),
        }
        let adapter = match lines.next() {
            Some((_, l)) if l.starts_with("adapter ") => l["adapter ".len()..].trim().to_string(),
            Some((i, other)) => return Err(bad(i, format!("{other:?}: expected `adapter <vendor:device driver>`"))),
            None => return Err(bad(1, "no adapter line".into())),
        };
        let mut table = TuningTable::new(&adapter);
        for (i, l) in lines {
            if let Some(rest) = l.strip_prefix(SIMILARITY) {
                let (class, kernel) =
                    rest.split_once('=').ok_or_else(|| bad(i, "expected `similarity <class> = <kernel>`".into()))?;
                let class: ShapeClass = class.trim().parse().map_err(|e| bad(i, e))?;
                let kernel =
                    SimilarityKernel::ALL.into_iter().find(|k| k.name() == kernel.trim()).ok_or_else(|| {
                        bad(i, format!("{:?}: not a similarity kernel (simt, tensor-cores)", kernel.trim()))
                    })?;
                if table.similarity.insert(class, kernel).is_some() {
                    return Err(bad(i, format!("similarity {class} given twice")));
                }
                continue;
            }
            let (class, choice) =
                l.split_once('=').ok_or_else(|| bad(i, "expected `<class> = <variant> <config>`".into()))?;
            let class: ShapeClass = class.trim().parse().map_err(|e| bad(i, e))?;
            let mut w = choice.split_whitespace();
            let name = w.next().ok_or_else(|| bad(i, "no variant".into()))?;
            let variant = AttentionVariant::ALL
                .into_iter()
                .find(|v| v.name() == name)
                .ok_or_else(|| bad(i, format!("{name:?}: not a variant")))?;
            let config: AttentionConfig = w.collect::<Vec<_>>().join(",").parse().map_err(|e| bad(i, e))?;
            if table.entries.insert(class, TunedChoice { variant, config }).is_some() {
                return Err(bad(i, format!("{class} given twice")));
            }
        }
        Ok(table)
    }
}

/// How a table names an adapter: PCI vendor and device ids, then the driver and its version
/// (`0x10de:0x2335 NVIDIA 570.86`), so that a table is not used on another card or driver.
pub fn adapter_key(info: &wgpu::AdapterInfo) -> String {
    format!("{:#06x}:{:#06x} {} {}", info.vendor, info.device, info.driver, info.driver_info).trim().to_string()
}

/// The built-in tables: the winners of `attn-bench --sweep` on the adapters we have swept, in
/// the text form (the device script writes the table a sweep gives, for adding here; the
/// sweeps are under `benchmarks/device/`).
const BUILT_IN: &[&str] = &[
    // NVIDIA H200, driver 580.159.04, Vulkan, 2026-12-04 (benchmarks/device/2026-12-04-h200/
    // sweep.json): the tensor-core kernel as written wins at d 128 unmasked; the SIMT split-K
    // kernel at d 64 (1.38x) and causal (1.07x). Similarity (the device script's
    // similarity-tc-auto/off steps, same run): f16 16x4096² d 128 took 8.1 ms on tensor cores
    // and 3.8 ms on the SIMT kernel
    "wgpu-attention tuning v1
adapter 0x10de:0x2335 NVIDIA 580.159.04
f16 d64 q4096 k4096 s32 g1 full = split-k-vec4 simt_chunk=8
f16 d128 q4096 k4096 s16 g1 full = tensor-cores tc_rows=64,tc_keys=32,tc_stages=1,tc_softmax=0
f16 d128 q4096 k4096 s16 g1 causal = split-k-vec4 simt_chunk=32
f16 d128 q4096 k4096 s32 g4 full = tensor-cores tc_rows=64,tc_keys=32,tc_stages=1,tc_softmax=0
similarity f16 d128 q4096 k4096 s16 g1 full = simt
",
];

/// The built-in table for `adapter` (as [`adapter_key`] writes it), if there is one.
pub(crate) fn built_in(adapter: &str) -> Option<TuningTable> {
    find_table(BUILT_IN, adapter)
}

/// The first table of `tables` (text) made on `adapter`; a table that does not parse is
/// skipped with a warning.
fn find_table(tables: &[&str], adapter: &str) -> Option<TuningTable> {
    tables.iter().find_map(|t| match t.parse::<TuningTable>() {
        Ok(t) if t.adapter == adapter => Some(t),
        Ok(_) => None,
        Err(e) => {
            log::warn!("wgpu-attention: a built-in tuning table does not parse: {e}");
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::Loads;

    fn table() -> TuningTable {
        let mut t = TuningTable::new("0x10de:0x2335 NVIDIA 570.86");
        let c = ShapeClass::of(DType::F16, 16, 4096, 4096, 128, 1, false);
        t.entries
            .insert(c, TunedChoice { variant: AttentionVariant::TensorCores, config: "tc_rows=64".parse().unwrap() });
        let c = ShapeClass::of(DType::F32, 32, 1, 30000, 100, 4, true);
        let config = "decode_split=512".parse().unwrap();
        t.entries.insert(c, TunedChoice { variant: AttentionVariant::Decode(Loads::Vec4), config });
        t.similarity.insert(ShapeClass::of(DType::F16, 16, 4096, 4096, 128, 1, false), SimilarityKernel::Simt);
        t.similarity.insert(ShapeClass::of(DType::F16, 1, 100, 2000, 64, 1, false), SimilarityKernel::TensorCores);
        t
    }

    #[test]
    fn classes_round_up() {
        let c = ShapeClass::of(DType::F16, 12, 3000, 4096, 100, 4, true);
        assert_eq!(c.to_string(), "f16 d112 q4096 k4096 s16 g4 causal");
        assert_eq!(c.to_string().parse::<ShapeClass>(), Ok(c));
        assert_eq!(ShapeClass::of(DType::F32, 0, 0, 0, 0, 0, false).to_string(), "f32 d16 q1 k1 s1 g1 full");
        for bad in ["f16 d100 q1 k1 s1 g1 full", "f16 d16 q3 k1 s1 g1 full", "f64 d16 q1 k1 s1 g1 full", "f16 d16 q1"] {
            assert!(bad.parse::<ShapeClass>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_text_form_round_trips_and_names_bad_lines() {
        let t = table();
        let text = t.to_string();
        assert!(text.starts_with("wgpu-attention tuning v1\nadapter 0x10de:0x2335 NVIDIA 570.86\n"), "{text}");
        assert!(text.contains("f16 d128 q4096 k4096 s16 g1 full = tensor-cores tc_rows=64"), "{text}");
        assert!(text.contains("\nsimilarity f16 d128 q4096 k4096 s16 g1 full = simt\n"), "{text}");
        assert!(text.contains("\nsimilarity f16 d64 q128 k2048 s1 g1 full = tensor-cores\n"), "{text}");
        assert_eq!(t.len(), 4);
        assert_eq!(text.parse::<TuningTable>().unwrap(), t);
        // comments and blank lines
        let commented = format!("# saved\n\n{text}\n# end\n");
        assert_eq!(commented.parse::<TuningTable>().unwrap(), t);
        for (bad, want) in [
            ("", "empty"),
            ("something else", "expected"),
            ("wgpu-attention tuning v1\nf16 d16 q1 k1 s1 g1 full = fused-vec4", "adapter"),
            ("wgpu-attention tuning v1\nadapter x\nf16 d16 q1 k1 s1 g1 full = warp-speed", "line 3"),
            ("wgpu-attention tuning v1\nadapter x\nf16 d16 q1 k1 s1 g1 full = fused-vec4 simt_chunk=x", "not a number"),
            ("wgpu-attention tuning v1\nadapter x\nf16 d16 q1 k1 s1 g1 full fused-vec4", "expected"),
            ("wgpu-attention tuning v1\nadapter x\nf16 d16 q1 k1 s1 g1 full = auto", "not a variant"),
            (
                "wgpu-attention tuning v1\nadapter x\nsimilarity f16 d16 q1 k1 s1 g1 full = fast",
                "not a similarity kernel",
            ),
            ("wgpu-attention tuning v1\nadapter x\nsimilarity f16 d16 q1 k1 s1 g1 full", "line 3"),
            ("wgpu-attention tuning v1\nadapter x\nsimilarity f16 d17 q1 k1 s1 g1 full = simt", "line 3"),
        ] {
            let e = bad.parse::<TuningTable>().unwrap_err();
            assert!(
                matches!(e, Error::InvalidArgument { argument: "tuning table", .. }) && e.to_string().contains(want),
                "{bad:?}: {e}"
            );
        }
        let twice = format!("{text}f16 d128 q4096 k4096 s16 g1 full = fused-vec4\n");
        assert!(twice.parse::<TuningTable>().unwrap_err().to_string().contains("twice"));
        let twice = format!("{text}similarity f16 d128 q4096 k4096 s16 g1 full = tensor-cores\n");
        assert!(twice.parse::<TuningTable>().unwrap_err().to_string().contains("twice"));
    }

    #[test]
    fn a_table_serves_only_its_adapter() {
        let t = table().to_string();
        let other = t.replace("570.86", "575.51");
        let tables = [other.as_str(), t.as_str()];
        assert_eq!(find_table(&tables, "0x10de:0x2335 NVIDIA 570.86"), Some(table()));
        assert_eq!(find_table(&tables, "0x10de:0x2330 NVIDIA 570.86"), None);
        assert_eq!(find_table(&["not a table"], "x"), None);
        // every built-in table parses
        for t in BUILT_IN {
            t.parse::<TuningTable>().unwrap();
        }
    }
}
