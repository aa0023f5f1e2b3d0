// Prelude: reductions over the ROW_LANES consecutive invocations of a row (t & ~(ROW_LANES - 1)
// .. t | (ROW_LANES - 1); ROW_LANES a power of two from the header) by subgroup shuffles, for
// subgroups at least that wide (no barrier; call from uniform control flow). `slot` (0 or 1)
// only matters to the workgroup-memory twin, rows_workgroup.wgsl.

fn row_max(x: f32, t: u32, slot: u32) -> f32 {
    var m = x;
    for (var o = 1u; o < ROW_LANES; o <<= 1u) {
        m = max(m, subgroupShuffleXor(m, o));
    }
    return m;
}

fn row_sum(x: f32, t: u32, slot: u32) -> f32 {
    var s = x;
    for (var o = 1u; o < ROW_LANES; o <<= 1u) {
        s += subgroupShuffleXor(s, o);
    }
    return s;
}

// Four sums at once (one shuffle per step for all four).
fn row_sum4(x: vec4<f32>, t: u32) -> vec4<f32> {
    var s = x;
    for (var o = 1u; o < ROW_LANES; o <<= 1u) {
        s += subgroupShuffleXor(s, o);
    }
    return s;
}
