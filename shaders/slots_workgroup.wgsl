// Prelude: buffer slots for new entries, claimed by one atomic add on `fill` per invocation
// that has any (devices without subgroup operations).

fn claim(count: u32) -> u32 {
    if (count == 0u) {
        return 0u;
    }
    return atomicAdd(&fill, count);
}
