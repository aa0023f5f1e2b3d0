//! Preludes shared by several kernel families, chosen per variant.

/// The prelude of a row's reductions over `ROW_LANES` consecutive invocations (`row_max`,
/// `row_sum`, `row_sum4`): subgroup shuffles where `sg` (the device's subgroups are at least
/// that wide), else workgroup memory (the variant then counts its `red` buffer).
pub(crate) fn row_reductions(sg: bool) -> &'static str {
    if sg {
        include_str!("../../shaders/rows_subgroup.wgsl")
    } else {
        include_str!("../../shaders/rows_workgroup.wgsl")
    }
}
