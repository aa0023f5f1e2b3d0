//! Property tests over random shapes, masks and options (fixed seed, so CI is reproducible;
//! PROPTEST_CASES raises the count). Each case runs the CPU path, and on the GPU every kernel
//! variant, against the f64 reference. (`tests/fuzz.rs` covers invalid calls and extreme values.)

mod common;
use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use wgpu_attention::*;

const HEAD_DIMS: [usize; 9] = [1, 3, 16, 40, 64, 80, 96, 128, 256];

#[derive(Debug, Clone)]
enum MaskChoice {
    None,
    BoolBroadcast,
    BoolFull,
    Additive,
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        1usize..=2,
        1usize..=2,
        1usize..=3,
        1usize..=1100,
        1usize..=1100,
        prop::sample::select(HEAD_DIMS.to_vec()),
        any::<bool>(),
        any::<bool>(),
        prop_oneof![
            Just(MaskChoice::None),
            Just(MaskChoice::BoolBroadcast),
            Just(MaskChoice::BoolFull),
            Just(MaskChoice::Additive)
        ],
        any::<bool>(),
        any::<u64>(),
    )
        .prop_map(|(b, hkv, group, mut nq, mut nk, d, causal, bshd, mask, use_kl, seed)| {
            let h = hkv * group;
            // keep each case under ~2e7 multiply-adds so the f64 reference stays quick
            while b * h * nq * nk * d > 20_000_000 {
                nq = (nq * 3 / 4).max(1);
                nk = (nk * 3 / 4).max(1);
            }
            let mut c = Case::new(b, h, hkv, nq, nk, d);
            c.seed = seed;
            c.causal = causal;
            c.layout = if bshd { Layout::Bshd } else { Layout::Bhsd };
            match mask {
                MaskChoice::None => {}
                MaskChoice::BoolBroadcast => c.bool_mask = Some([1, 1, nq, nk]),
                MaskChoice::BoolFull => c.bool_mask = Some([b, h, nq, nk]),
                MaskChoice::Additive => c.add_mask = Some([b, 1, nq, nk]),
            }
            if use_kl {
                // includes 0 (every key masked) and nk
                c.key_lengths = Some((0..b).map(|i| ((seed >> (8 * i)) % (nk as u64 + 1)) as u32).collect());
            }
            c
        })
}

proptest! {
    #![proptest_config(Config {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24),
        rng_seed: RngSeed::Fixed(std::env::var("PROPTEST_RNG_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x5eed_a77e)),
        failure_persistence: None,
        ..Config::default()
    })]

    #[test]
    fn cpu_matches_reference(c in case_strategy()) {
        check_cpu(&c);
    }
}

gpu_test! {
    fn gpu_variants_match_reference() {
        let ctx = shared_gpu();
        let mut runner = proptest::test_runner::TestRunner::new(Config {
            cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24),
            rng_seed: RngSeed::Fixed(std::env::var("PROPTEST_RNG_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x5eed_a77e)),
            failure_persistence: None,
            ..Config::default()
        });
        runner
            .run(&case_strategy(), |c| {
                check_gpu(&ctx, &c);
                Ok(())
            })
            .unwrap();
    }
}
