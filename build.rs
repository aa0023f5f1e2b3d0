//! `WGPU_ATTENTION_TESTS=cpu-only` at build time sets `cfg(cpu_only_tests)`: the GPU tests are
//! then compiled as ignored, so a run without a GPU reports them as ignored rather than passed.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(cpu_only_tests)");
    println!("cargo::rerun-if-env-changed=WGPU_ATTENTION_TESTS");
    println!("cargo::rerun-if-changed=build.rs");
    if std::env::var("WGPU_ATTENTION_TESTS").is_ok_and(|v| v == "cpu-only") {
        println!("cargo::rustc-cfg=cpu_only_tests");
    }
}
