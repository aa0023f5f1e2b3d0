// Prelude of similarity.wgsl for any output layout: the scores bound as f32, one per store.

@group(0) @binding(3) var<storage, read_write> S: array<f32>;

fn store1(i: u32, x: f32) {
    S[i] = x;
}

fn store4(i: u32, v: vec4<f32>) {
    S[i] = v.x;
    S[i + 1u] = v.y;
    S[i + 2u] = v.z;
    S[i + 3u] = v.w;
}
