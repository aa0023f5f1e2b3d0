// Prelude: buffer slots for new entries, claimed once per subgroup (an exclusive prefix sum
// of the lanes' counts and one atomic add on `fill` by the first active lane). Call from
// uniform control flow.

fn claim(count: u32) -> u32 {
    let before_me = subgroupExclusiveAdd(count);
    let total = subgroupAdd(count);
    var first = 0u;
    if (total > 0u) {
        // the first active lane (rank 0 among them) claims for all
        if (subgroupExclusiveAdd(1u) == 0u) {
            first = atomicAdd(&fill, total);
        }
        first = subgroupBroadcastFirst(first);
    }
    return first + before_me;
}
