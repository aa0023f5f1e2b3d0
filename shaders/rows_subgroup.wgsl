// Prelude: reductions over the 8 consecutive invocations t & ~7 .. t | 7 (a row's lanes) by
// subgroup shuffles, for subgroups of 8 lanes or more (no barrier; call from uniform control
// flow). `slot` (0 or 1) only matters to the workgroup-memory twin, rows_workgroup.wgsl.

fn row_max(x: f32, t: u32, slot: u32) -> f32 {
    var m = max(x, subgroupShuffleXor(x, 1u));
    m = max(m, subgroupShuffleXor(m, 2u));
    return max(m, subgroupShuffleXor(m, 4u));
}

fn row_sum(x: f32, t: u32, slot: u32) -> f32 {
    var s = x + subgroupShuffleXor(x, 1u);
    s += subgroupShuffleXor(s, 2u);
    return s + subgroupShuffleXor(s, 4u);
}
