// Prelude: reductions over the 8 consecutive invocations t & ~7 .. t | 7 (a row's lanes)
// through workgroup memory, for devices without subgroups of 8 (two barriers each: call from
// uniform control flow). Two slots, so that two rows reduce side by side.

var<workgroup> red: array<f32, 2u * WG>;

fn row_max(x: f32, t: u32, slot: u32) -> f32 {
    workgroupBarrier();
    red[2u * t + slot] = x;
    workgroupBarrier();
    let base = 2u * (t & ~7u) + slot;
    var m = red[base];
    for (var i = 1u; i < 8u; i++) {
        m = max(m, red[base + 2u * i]);
    }
    return m;
}

fn row_sum(x: f32, t: u32, slot: u32) -> f32 {
    workgroupBarrier();
    red[2u * t + slot] = x;
    workgroupBarrier();
    let base = 2u * (t & ~7u) + slot;
    var s = red[base];
    for (var i = 1u; i < 8u; i++) {
        s += red[base + 2u * i];
    }
    return s;
}
