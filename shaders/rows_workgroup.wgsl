// Prelude: reductions over the ROW_LANES consecutive invocations of a row (t & ~(ROW_LANES - 1)
// .. t | (ROW_LANES - 1)) through workgroup memory, for devices without subgroups that wide (two
// barriers each: call from uniform control flow). Two slots, so that two rows reduce side by
// side.

var<workgroup> red: array<f32, 2u * WG>;

fn row_max(x: f32, t: u32, slot: u32) -> f32 {
    workgroupBarrier();
    red[2u * t + slot] = x;
    workgroupBarrier();
    let base = 2u * (t & ~(ROW_LANES - 1u)) + slot;
    var m = red[base];
    for (var i = 1u; i < ROW_LANES; i++) {
        m = max(m, red[base + 2u * i]);
    }
    return m;
}

fn row_sum(x: f32, t: u32, slot: u32) -> f32 {
    workgroupBarrier();
    red[2u * t + slot] = x;
    workgroupBarrier();
    let base = 2u * (t & ~(ROW_LANES - 1u)) + slot;
    var s = red[base];
    for (var i = 1u; i < ROW_LANES; i++) {
        s += red[base + 2u * i];
    }
    return s;
}

// Four sums at once (as four row_sum, alternating slots).
fn row_sum4(x: vec4<f32>, t: u32) -> vec4<f32> {
    return vec4<f32>(row_sum(x.x, t, 0u), row_sum(x.y, t, 1u), row_sum(x.z, t, 0u), row_sum(x.w, t, 1u));
}
