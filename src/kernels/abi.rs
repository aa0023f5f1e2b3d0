//! What the host and every kernel agree on: bindings and how they are declared, the flag bits
//! and the uniform block of parameters (`Params`, the `Params` of `shaders/common.wgsl`), and
//! the [`Variant`] trait each kernel variant implements.

use crate::problem::ScoreTransform;
use crate::shape::DType;

/// How a binding is declared in WGSL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Access {
    /// `var<uniform>`.
    Uniform,
    /// `var<storage, read>`.
    Read,
    /// `var<storage, read_write>`.
    ReadWrite,
}

/// One binding of a kernel: slot in group 0, the argument it carries, how it is declared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Binding {
    pub slot: u32,
    pub name: &'static str,
    pub access: Access,
}

pub(crate) const fn b(slot: u32, name: &'static str, access: Access) -> Binding {
    Binding { slot, name, access }
}

/// Binding 0 of every kernel: the [`Params`] uniform block.
pub(crate) const PARAMS: Binding = b(0, "params", Access::Uniform);

/// Flag bits of [`Params::flags`], emitted into every shader header as `F_*`.
pub(crate) mod flags {
    pub const CAUSAL: u32 = 1;
    pub const MASK: u32 = 2;
    pub const MASK_ADDITIVE: u32 = 4;
    pub const KEY_LENGTHS: u32 = 8;
    pub const LSE: u32 = 16;
    /// A sliding window bounds the keys on the left (`Params::wleft`) ...
    pub const WINDOW_LEFT: u32 = 32;
    /// ... and on the right (`Params::wright`).
    pub const WINDOW_RIGHT: u32 = 64;
    /// Soft-capping (`Params::cap_in`, `cap_out`).
    pub const SOFTCAP: u32 = 128;
    /// ALiBi slopes in the per-head parameters.
    pub const ALIBI: u32 = 256;
    /// Sinks in the per-head parameters.
    pub const SINK: u32 = 512;
    /// Keys come from a paged cache: `KEY_LENGTHS` holds the sequence lengths.
    pub const PAGED: u32 = 1024;
    /// Fixed reduction order (split-K): key tiles start at multiples of the tile from the
    /// split's start, whatever the rows' first key.
    pub const FIXED: u32 = 2048;
    /// A pack of sequences in one dispatch (attention.wgsl): `MASK` holds `cu_seqlens_k` and
    /// `KEY_LENGTHS` `cu_seqlens_q`, `Params::start` the number of sequences.
    pub const VARLEN: u32 = 4096;
    /// Every flag with its WGSL name.
    pub const ALL: [(&str, u32); 13] = [
        ("F_CAUSAL", CAUSAL),
        ("F_MASK", MASK),
        ("F_MASK_ADDITIVE", MASK_ADDITIVE),
        ("F_KEY_LENGTHS", KEY_LENGTHS),
        ("F_LSE", LSE),
        ("F_WINDOW_LEFT", WINDOW_LEFT),
        ("F_WINDOW_RIGHT", WINDOW_RIGHT),
        ("F_SOFTCAP", SOFTCAP),
        ("F_ALIBI", ALIBI),
        ("F_SINK", SINK),
        ("F_PAGED", PAGED),
        ("F_FIXED", FIXED),
        ("F_VARLEN", VARLEN),
    ];
}

/// One tensor view: element index of `(b, h, s, 0)` is `base + b·sb + h·sh + s·ss` (wrapping
/// u32). Must match `View` in `shaders/common.wgsl` (checked by the tests below).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct ViewParams {
    pub base: u32,
    pub sb: u32,
    pub sh: u32,
    pub ss: u32,
}

/// The uniform block of every kernel. Must match `Params` in `shaders/common.wgsl` (checked by
/// the tests below: size and every member's offset).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct Params {
    /// The chunk of (batch·head) slices and query rows this dispatch covers.
    pub bh0: u32,
    pub nbh: u32,
    pub r0: u32,
    pub nr: u32,
    /// Query heads, query heads per key/value head, query rows, key count (or columns).
    pub heads: u32,
    pub group: u32,
    pub nq: u32,
    pub nk: u32,
    /// Head dim (or reduction length), `F_*` flags, keys per split (merge: the number of splits;
    /// top-k: inputs per segment), top-k: index of the first input element.
    pub d: u32,
    pub flags: u32,
    pub split_len: u32,
    pub idx0: u32,
    /// Top-k: first input of each row to read (attention over a pack, `F_VARLEN`: the number of
    /// sequences), output slots per row, slot of the first segment.
    pub start: u32,
    pub out_stride: u32,
    pub out_offset: u32,
    /// Sliding window: keys at most `wleft` before and `wright` after the query's position.
    pub wleft: u32,
    pub wright: u32,
    /// Paged KV cache: block-table entries per sequence, log2 of the page size.
    pub max_blocks: u32,
    pub page_shift: u32,
    pub _pad0: u32,
    /// Input prescales (attention: Q and V; similarity: Q and K; weighted sum: V in `kpre`).
    pub pre: f32,
    pub kpre: f32,
    /// Output factors, applied in turn (each saturating).
    pub post: f32,
    pub post2: f32,
    /// The score transform ([`ScoreTransform`]): mask factor, unit, exponent factor, floor, cap.
    pub mscale: f32,
    pub unit: f32,
    pub ex: f32,
    pub floor: f32,
    pub zcap: f32,
    /// Soft-capping in the kernels' units: `z = cap_out · tanh(clamp(z, ±cap_lim) · cap_in)`
    /// (`cap_lim · cap_in` = 20, where tanh is 1 in f32).
    pub cap_in: f32,
    pub cap_out: f32,
    pub cap_lim: f32,
    pub views: [ViewParams; 6],
}

impl Params {
    /// The problem's dimensions (heads, group, query rows, keys, head dim), the rest default.
    pub fn of_dims(d: &crate::problem::Dims) -> Self {
        Params {
            heads: d.heads as u32,
            group: d.group() as u32,
            nq: d.nq as u32,
            nk: d.nk as u32,
            d: d.d as u32,
            ..Params::default()
        }
    }

    /// Fills the score-transform fields.
    pub fn with_transform(mut self, t: &ScoreTransform) -> Self {
        self.pre = t.pre;
        self.mscale = t.mask;
        self.unit = t.unit;
        self.ex = t.ex;
        self.floor = t.floor;
        self.zcap = t.zcap;
        self
    }

    /// Neutral factors: no prescale, no post-scale.
    pub fn unscaled() -> Self {
        Params { pre: 1.0, kpre: 1.0, post: 1.0, post2: 1.0, ..Default::default() }
    }
}

/// What every variant type provides.
pub(crate) trait Variant {
    /// The family's name: its WGSL file (`shaders/<NAME>.wgsl`), its entry point, its launcher
    /// module and its CPU twin.
    const NAME: &'static str;
    /// The family's WGSL body.
    const SOURCE: &'static str;
    /// Its bindings, slot 0 (the parameters) first.
    fn bindings(&self) -> &'static [Binding];
    /// Storage dtype (`elem` in the shader).
    fn dtype(&self) -> DType;
    /// The header constants of this variant (`const NAME: u32 = V;`).
    fn constants(&self) -> Vec<(&'static str, u32)>;
    /// Workgroup memory it declares, bytes.
    fn workgroup_bytes(&self) -> u32;
    /// Preludes it needs after `common.wgsl` (e.g. `masking.wgsl`).
    fn preludes(&self) -> Vec<&'static str> {
        vec![]
    }
    /// WGSL extensions it enables beyond `f16` (e.g. `wgpu_cooperative_matrix`).
    fn enables(&self) -> Vec<&'static str> {
        vec![]
    }
    /// WGSL rendered for this variant from templates, after the preludes (e.g. the loads of
    /// quantized K and V, `kernels/loads.rs`).
    fn generated(&self) -> String {
        String::new()
    }
}

