// Prelude of similarity.wgsl where every output row is whole vec4s (row length and strides
// multiples of 4, 4-aligned offset): the scores bound as vec4, four per store.

@group(0) @binding(3) var<storage, read_write> S: array<vec4<f32>>;

fn store1(i: u32, x: f32) {
    S[i / 4u][i % 4u] = x;
}

fn store4(i: u32, v: vec4<f32>) {
    S[i / 4u] = v;
}
