//! `--mma-probe`: microbenchmarks of the cooperative-matrix (tensor core) primitives as wgpu and
//! the driver compile them, to say what bounds the tensor-core kernels (issue 19): the 16x16x16
//! multiply-add from registers (the card's ceiling through wgpu), the same with its operands
//! loaded from workgroup memory every step (a GEMM's inner loop), the softmax hand-off of the
//! attention kernel (a score fragment stored to workgroup memory, read back by the lanes,
//! weights written as f16 and loaded again as an A fragment, with the kernel's two barriers), and
//! a workgroup barrier alone. Each runs 4 subgroups per workgroup over a grid of 2048 workgroups,
//! its loop count doubled until one dispatch takes at least 20 ms; times are wall clock around a
//! submit and wait (medians of 5, after a warm-up run that also keeps the clocks up). Hardware
//! cooperative matrices only: elsewhere it says so and measures nothing.

use std::time::Instant;

use wgpu_attention::{Context, TensorCoreState};

/// Workgroups per dispatch: enough to fill an H100/H200 (132 SMs) several times over.
const WORKGROUPS: u32 = 2048;
/// FLOPs of one 16x16x16 multiply-add.
const MMA_FLOP: f64 = 2.0 * 16.0 * 16.0 * 16.0;

/// One probe's result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Probe {
    /// Short name.
    pub name: &'static str,
    /// What one loop iteration of one subgroup does.
    pub what: &'static str,
    /// Loop iterations per subgroup in the timed dispatch.
    pub iterations: u32,
    /// Median wall time of one dispatch, ms.
    pub ms: f64,
    /// Nanoseconds per loop iteration per workgroup, the grid's workgroups spread over the
    /// device (ms / iterations / workgroups, so it is a throughput, not a latency).
    pub ns_per_iteration: f64,
    /// Multiply-add throughput, TFLOP/s (16x16x16 products only; none for the barrier probe).
    pub tflops: Option<f64>,
}

/// The probes: (name, what, 16x16x16 products per iteration per subgroup, loop body).
fn probes() -> [(&'static str, &'static str, u32, &'static str); 4] {
    [
        (
            "mma-registers",
            "4 multiply-adds, operands held in registers (2 A x 2 B fragments)",
            4,
            "        c0 = coopMultiplyAdd(a0, b0, c0);
        c1 = coopMultiplyAdd(a0, b1, c1);
        c2 = coopMultiplyAdd(a1, b0, c2);
        c3 = coopMultiplyAdd(a1, b1, c3);",
        ),
        (
            "mma-shared",
            "a 32x32 GEMM k-step: 2 A and 2 B fragments loaded from workgroup memory, 4 multiply-adds",
            4,
            "        let k = (i % 2u) * 16u;
        let x0 = coopLoadT<FragA>(&Hs[base + k], LD);
        let x1 = coopLoadT<FragA>(&Hs[base + 16u * LD + k], LD);
        let y0 = coopLoad<FragB>(&Hs[base + 32u * LD + k], LD);
        let y1 = coopLoad<FragB>(&Hs[base + 48u * LD + k], LD);
        c0 = coopMultiplyAdd(x0, y0, c0);
        c1 = coopMultiplyAdd(x0, y1, c1);
        c2 = coopMultiplyAdd(x1, y0, c2);
        c3 = coopMultiplyAdd(x1, y1, c3);",
        ),
        (
            "softmax-handoff",
            "S = A B into a fragment, stored to workgroup memory, each lane's share read back, exp2 \
             written as f16, loaded again as an A fragment, O += P B; two workgroup barriers",
            2,
            "        let s = coopMultiplyAdd(a0, b0, FragC());
        coopStoreT(s, &Fs[sg * 256u], 16u);
        workgroupBarrier();
        for (var e = lane; e < 256u; e += SG) {
            Hs[base + 64u * LD + (e / 16u) * 16u + e % 16u] = f16(exp2(Fs[sg * 256u + e] * 0.001 - 1.0));
        }
        workgroupBarrier();
        let p = coopLoadT<FragA>(&Hs[base + 64u * LD], 16u);
        c0 = coopMultiplyAdd(p, b1, c0);",
        ),
        (
            "barrier",
            "one workgroup-memory write and one workgroup barrier",
            0,
            "        Fs[t % 1024u] += 1.0;
        workgroupBarrier();",
        ),
    ]
}

/// Halves of workgroup memory per subgroup: a 32x32 A tile and a 32x32 B tile at row pitch LD
/// (40), then a 16x16 weight tile.
const LD: u32 = 40;
const PER_SUBGROUP: u32 = 64 * LD + 256;

/// The WGSL of one probe for subgroups of `sgs` lanes and `n` iterations.
pub fn shader(sgs: u32, n: u32, body: &str) -> String {
    format!(
        "enable f16;
enable wgpu_cooperative_matrix;
alias FragA = coop_mat16x16<f16, A>;
alias FragB = coop_mat16x16<f16, B>;
alias FragC = coop_mat16x16<f32, C>;
@group(0) @binding(0) var<storage, read_write> OUT: array<f32>;
const SG: u32 = {sgs}u;
const LD: u32 = {LD}u;
const PER: u32 = {PER_SUBGROUP}u;
var<workgroup> Hs: array<f16, 4u * PER>;
var<workgroup> Fs: array<f32, 1024>;
@compute @workgroup_size({wg})
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>) {{
    for (var i = t; i < 4u * PER; i += 4u * SG) {{
        Hs[i] = f16(f32(i % 7u) * 0.01);
    }}
    for (var i = t; i < 1024u; i += 4u * SG) {{
        Fs[i] = 0.0;
    }}
    workgroupBarrier();
    let sg = t / SG;
    let lane = t % SG;
    let base = sg * PER;
    let a0 = coopLoadT<FragA>(&Hs[base], LD);
    let a1 = coopLoadT<FragA>(&Hs[base + 16u * LD], LD);
    let b0 = coopLoad<FragB>(&Hs[base + 32u * LD], LD);
    let b1 = coopLoad<FragB>(&Hs[base + 48u * LD], LD);
    var c0 = FragC();
    var c1 = FragC();
    var c2 = FragC();
    var c3 = FragC();
    for (var i = 0u; i < {n}u; i++) {{
{body}
    }}
    workgroupBarrier();
    coopStoreT(c0 + c1 + c2 + c3, &Fs[sg * 256u], 16u);
    workgroupBarrier();
    if (t == 0u) {{
        OUT[wid.x] = Fs[17] + Fs[256u + 17u] + Fs[1000];
    }}
}}",
        wg = 4 * sgs
    )
}

/// Runs every probe on `ctx` (hardware tensor cores only).
pub fn run(ctx: &Context) -> Result<Vec<Probe>, String> {
    let sgs = match ctx.tensor_cores() {
        TensorCoreState::Active { subgroup_size } => subgroup_size,
        other => return Err(format!("--mma-probe needs hardware cooperative matrices: {other}")),
    };
    let dev = ctx.device();
    let out = dev.create_buffer(&wgpu::BufferDescriptor {
        label: Some("mma probe"),
        size: 4 * WORKGROUPS as u64,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    let mut results = vec![];
    for (name, what, products, body) in probes() {
        let mut n = 256u32;
        loop {
            let pipeline = pipeline(ctx, &shader(sgs, n, body))?;
            let bind = dev.create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &pipeline.get_bind_group_layout(0),
                entries: &[wgpu::BindGroupEntry { binding: 0, resource: out.as_entire_binding() }],
            });
            let once = || -> Result<f64, String> {
                let start = Instant::now();
                ctx.record_and_submit(|enc| {
                    let mut pass = enc.begin_compute_pass(&Default::default());
                    pass.set_pipeline(&pipeline);
                    pass.set_bind_group(0, &bind, &[]);
                    pass.dispatch_workgroups(WORKGROUPS, 1, 1);
                    Ok(())
                })
                .map_err(|e| e.to_string())?;
                ctx.wait().map_err(|e| e.to_string())?;
                Ok(start.elapsed().as_secs_f64() * 1e3)
            };
            let first = once()?;
            if first < 20.0 && n < 1 << 20 {
                n *= 2;
                continue;
            }
            let mut t: Vec<f64> = (0..5).map(|_| once()).collect::<Result<_, _>>()?;
            t.sort_by(f64::total_cmp);
            let ms = t[2];
            let flop = WORKGROUPS as f64 * 4.0 * n as f64 * products as f64 * MMA_FLOP;
            results.push(Probe {
                name,
                what,
                iterations: n,
                ms,
                ns_per_iteration: ms * 1e6 / n as f64 / WORKGROUPS as f64,
                tflops: (products > 0).then(|| flop / (ms * 1e-3) / 1e12),
            });
            break;
        }
    }
    Ok(results)
}

/// The compute pipeline of `src`, wgpu's validation errors as `Err`.
fn pipeline(ctx: &Context, src: &str) -> Result<wgpu::ComputePipeline, String> {
    let dev = ctx.device();
    let scope = dev.push_error_scope(wgpu::ErrorFilter::Validation);
    let module = dev.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("mma probe"),
        source: wgpu::ShaderSource::Wgsl(src.into()),
    });
    let pipeline = dev.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some("mma probe"),
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    });
    match pollster::block_on(scope.pop()) {
        Some(e) => Err(format!("the probe shader does not compile: {e}")),
        None => Ok(pipeline),
    }
}

/// The probes as a table.
pub fn table(results: &[Probe]) -> String {
    let mut s = String::from(
        "probe | iterations | ms | ns / iteration / workgroup | TFLOP/s | what\n---|---:|---:|---:|---:|---\n",
    );
    for r in results {
        let tf = r.tflops.map_or("-".to_string(), |x| format!("{x:.1}"));
        s.push_str(&format!(
            "{} | {} | {:.2} | {:.3} | {tf} | {}\n",
            r.name, r.iterations, r.ms, r.ns_per_iteration, r.what
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every probe is valid WGSL with cooperative matrices (naga, as wgpu takes it), for the
    /// subgroup sizes tensor-core adapters have, so that a device run fails only on the device.
    #[test]
    fn every_probe_shader_validates() {
        for sgs in [32, 64] {
            for (name, _, _, body) in probes() {
                let src = shader(sgs, 256, body);
                let module =
                    naga::front::wgsl::parse_str(&src).unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(&src)));
                naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
                    .validate(&module)
                    .unwrap_or_else(|e| panic!("{name}, subgroups of {sgs}: {e:?}"));
            }
        }
    }
}
