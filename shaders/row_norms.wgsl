// Row norms for cosine and L2 similarity, once per row of Q or K (not per output tile).
// Header constants (src/kernels/row_norms.rs): WG (threads: one row each), METRIC (1 cosine,
// 2 L2). Bindings: 1 x (rows of d elements), 2 norms (f32). Views: v0 x, v1 norms (row length 2
// for cosine, 1 for L2).
// With y = x * P.pre (the similarity's power-of-two prescale):
//   cosine: a power of two 2^e that brings the row's largest |y| into [1/2, 1), and the factor
//           f = 1 / sqrt(sum (y 2^e)^2), so that ldexp(y, e) * f has unit length: no square
//           underflows or overflows, and no factor is ever a subnormal (which GPUs that flush
//           subnormals would read as 0: 1 / |y| is one for |y| > 2^126). Stored as (e, f). A row
//           whose largest |y| is zero, subnormal or not finite gets f = 0 (it scores 0);
//   L2:     sum y^2, the squared length.
// Non-finite inputs give a factor that turns the row's scores into 0 (the similarity kernel
// saturates NaN to 0), never a NaN output.

@group(0) @binding(1) var<storage, read> X: array<elem>;
@group(0) @binding(2) var<storage, read_write> N: array<f32>;

const MIN_NORMAL: f32 = 1.17549435e-38;

@compute @workgroup_size(WG)
fn row_norms(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let row_blocks = (P.nr + WG - 1u) / WG;
    let wg = linear_wg(wid, nwg);
    if (wg >= P.nbh * row_blocks) {
        return;
    }
    let bh = P.bh0 + wg / row_blocks;
    let row = P.r0 + (wg % row_blocks) * WG + t;
    if (row >= P.r0 + P.nr) {
        return;
    }
    let b = bh / P.heads;
    let h = bh % P.heads;
    let base = vidx(P.v0, b, h, row);
    var out = 0.0;
    if (METRIC == 1u) {
        var m = 0.0;
        for (var i = 0u; i < P.d; i++) {
            m = max(m, abs(f32(X[base + i]) * P.pre));
        }
        var e = 0;
        if (m >= MIN_NORMAL && m <= F32_MAX) {
            e = -frexp(m).exp;
            var s = 0.0;
            for (var i = 0u; i < P.d; i++) {
                let y = ldexp(f32(X[base + i]) * P.pre, e);
                s += y * y;
            }
            out = 1.0 / sqrt(s);
        }
        let o = vidx(P.v1, b, h, row);
        N[o] = f32(e);
        N[o + 1u] = out;
        return;
    } else {
        for (var i = 0u; i < P.d; i++) {
            let y = f32(X[base + i]) * P.pre;
            out += y * y;
        }
    }
    N[vidx(P.v1, b, h, row)] = out;
}
