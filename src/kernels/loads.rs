//! The loads of Q, K and V by the attention kernels, rendered from the templates of
//! `shaders/loads.wgsl`: plain tensors by vector or scalar loads, quantized page pools
//! (q8_0, q4_0, fp8 e4m3) dequantized in registers.

use crate::kv_dtype::KvDType;
use crate::options::Loads;

const TEMPLATES: &str = include_str!("../../shaders/loads.wgsl");

/// The template section `name` (between `//#name` and the next `//#`).
fn section(name: &str) -> &'static str {
    let start = TEMPLATES.find(&format!("//#{name}\n")).map(|i| i + name.len() + 4);
    let start = start.unwrap_or_else(|| panic!("shaders/loads.wgsl has no section {name}"));
    let len = TEMPLATES[start..].find("//#").unwrap_or(TEMPLATES.len() - start);
    &TEMPLATES[start..start + len]
}

/// One tensor's binding and `load4_x`: `x` is `q`, `k` or `v`.
fn render(kind: &str, x: &str, slot: u32, view: &str) -> String {
    section(kind)
        .replace("@X@", &x.to_uppercase())
        .replace("@x@", x)
        .replace("@SLOT@", &slot.to_string())
        .replace("@VIEW@", view)
}

/// The loads of Q (by `loads`), K and V (pools of `k` and `v`; a plain type loads by `loads`).
pub(crate) fn qkv(loads: Loads, k: KvDType, v: KvDType) -> String {
    let plain = match loads {
        Loads::Vec4 => "vec4",
        Loads::Scalar => "scalar",
    };
    let kind = |t: KvDType| match t {
        KvDType::Q8_0 => "q8_0",
        KvDType::Q4_0 => "q4_0",
        KvDType::Fp8E4m3 => "fp8",
        _ => plain,
    };
    let mut s = render(plain, "q", 1, "v0");
    s.push_str(&render(kind(k), "k", 4, "v1"));
    s.push_str(&render(kind(v), "v", 5, "v2"));
    if k.is_quantized() || v.is_quantized() {
        s.push_str(section("helpers"));
    }
    s
}
