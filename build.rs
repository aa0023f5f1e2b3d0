//! `WGPU_ATTENTION_TESTS=cpu-only` at build time sets `cfg(cpu_only_tests)`: the GPU tests are
//! then compiled as ignored, so a run without a GPU reports them as ignored rather than passed.
//!
//! With the `cli` feature (attn-bench), the git commit of a checkout is recorded in
//! `WGPU_ATTENTION_GIT_COMMIT` for the benchmark's reports (rebuilt when HEAD moves). Without it
//! nothing is read, so a dependent's build never depends on git.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(cpu_only_tests)");
    println!("cargo::rerun-if-env-changed=WGPU_ATTENTION_TESTS");
    println!("cargo::rerun-if-changed=build.rs");
    if std::env::var("WGPU_ATTENTION_TESTS").is_ok_and(|v| v == "cpu-only") {
        println!("cargo::rustc-cfg=cpu_only_tests");
    }
    if std::env::var_os("CARGO_FEATURE_CLI").is_some() {
        record_commit();
    }
}

/// The commit of HEAD (with "-dirty" when tracked files differ from it), if this is a git checkout.
fn record_commit() {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) else { return };
    // HEAD, the branch it names, and the index (staged and committed changes) move the commit
    println!("cargo::rerun-if-changed={dir}/HEAD");
    println!("cargo::rerun-if-changed={dir}/index");
    if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
        println!("cargo::rerun-if-changed={dir}/{r}");
    }
    if let Some(commit) = git(&["rev-parse", "--short=12", "HEAD"]) {
        let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
        println!("cargo::rustc-env=WGPU_ATTENTION_GIT_COMMIT={commit}{}", if dirty { "-dirty" } else { "" });
    }
}
