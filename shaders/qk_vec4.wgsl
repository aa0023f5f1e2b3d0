// Prelude of similarity_mma.wgsl for head dims that are a multiple of 4 with 4-aligned offsets:
// Q and K bound as arrays of vec4, one vector load per 4 elements. load4_*(i, n): i is a multiple
// of 4 and n is 4 (a group is whole or absent).

@group(0) @binding(1) var<storage, read> Q: array<vec4<elem>>;
@group(0) @binding(2) var<storage, read> K: array<vec4<elem>>;

fn load4_q(i: u32, n: u32) -> vec4<f32> {
    return vec4<f32>(Q[i / 4u]);
}

fn load4_k(i: u32, n: u32) -> vec4<f32> {
    return vec4<f32>(K[i / 4u]);
}
