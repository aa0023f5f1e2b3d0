// Prelude of similarity_mma.wgsl for any head dim or alignment: Q and K bound as arrays of
// `elem`. load4_*(i, n): the 4 elements from element index i, those from the (n+1)-th on read as 0.

@group(0) @binding(1) var<storage, read> Q: array<elem>;
@group(0) @binding(2) var<storage, read> K: array<elem>;

fn load4_q(i: u32, n: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    for (var c = 0u; c < 4u; c++) {
        if (c < n) {
            v[c] = f32(Q[i + c]);
        }
    }
    return v;
}

fn load4_k(i: u32, n: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    for (var c = 0u; c < 4u; c++) {
        if (c < n) {
            v[c] = f32(K[i + c]);
        }
    }
    return v;
}
