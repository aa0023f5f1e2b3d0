//! Kernel configurations as data: every candidate `Context::attention_candidates` lists for a
//! call (each tensor-core rows per workgroup on the emulated twin, each SIMT chunk fused and
//! split-K, each decode split) runs, forced with its variant and configuration, as its plan
//! says, and matches the f64 reference; a configuration the device cannot run is refused naming
//! the field.

mod common;
use common::*;
use half::f16;
use wgpu_attention::*;

fn emulated() -> Context {
    Context::with_options_blocking(ContextOptions { tensor_cores: TensorCores::Emulated, ..Default::default() })
        .unwrap_or_else(|e| panic!("GPU test found no adapter ({e})"))
}

/// Every candidate for case `c` (f16 inputs) on `ctx` against the f64 reference of the
/// f16-rounded inputs; returns the (variant, config) pairs run.
fn every_candidate(ctx: &Context, c: &Case) -> Vec<(AttentionVariant, AttentionConfig)> {
    let mut data = case_data(c);
    for v in [&mut data.q, &mut data.k, &mut data.v] {
        v.iter_mut().for_each(|x| *x = f16::from_f32(*x).to_f32());
    }
    let (want, want_lse, _) = case_reference(c, &data);
    let h16 = |v: &[f32]| v.iter().map(|&x| f16::from_f32(x)).collect::<Vec<f16>>();
    let up = |v: &[f32], s| ctx.upload(&h16(v), s).unwrap();
    let (q, k, v) = (up(&data.q, data.qs), up(&data.k, data.ks), up(&data.v, data.ks));
    let mut plans = ctx.attention_candidates(&q, &k, &v, None, &c.opts(), true).unwrap();
    if !full_matrix() {
        // (each tensor-core configuration compiles a kernel: by default each rows per workgroup
        // with the default tile, and 32 rows with every other option changed at once (64-key
        // tiles, staging depth 2, z in registers: independent switches of the same body); every
        // combination in the full matrix)
        // (and the SIMT kernels' default and smallest chunks)
        let chunk0 = ctx.plan_attention(&q, &k, &v, None, &AttentionOptions { variant: AttentionVariant::Fused(Loads::Vec4), ..c.opts() }, true).unwrap().config.simt_chunk;
        plans.retain(|p| p.config.simt_chunk.is_none() || p.config.simt_chunk == chunk0 || p.config.simt_chunk == Some(8));
        plans.retain(|p| {
            let c = p.config;
            let changed = [c.tc_keys != Some(32), c.tc_stages != Some(1), c.tc_softmax != Some(0)];
            let n = changed.iter().filter(|&&x| x).count();
            c.tc_rows.is_none() || n == 0 || (c.tc_rows == Some(32) && n == 3)
        });
    }
    let mut ran = vec![];
    for plan in plans {
        let what = format!("{} {} on {c:?}", plan.variant, plan.config);
        let opts = AttentionOptions { variant: plan.variant, config: plan.config, ..c.opts() };
        let again = ctx.plan_attention(&q, &k, &v, None, &opts, true).unwrap();
        assert_eq!((again.variant, again.config), (plan.variant, plan.config), "{what}");
        let (o, l) = ctx.attention_with_lse(&q, &k, &v, None, &opts).unwrap();
        // f16 output (and f16 weights on the tensor-core kernel)
        assert_close(&what, &o.download_blocking(ctx).unwrap(), &want, 3e-3);
        assert_lse(&format!("lse {what}"), &l.download_blocking(ctx).unwrap(), &want_lse, 1e-4);
        ran.push((plan.variant, plan.config));
    }
    ran
}

gpu_test! {
fn every_attention_candidate_matches_the_reference() {
    let ctx = emulated();
    // GQA, causal, tails in rows and keys; head dim 24 (the 32-wide classes: cheap to compile)
    let ran = every_candidate(&ctx, &Case::new(1, 4, 2, 70, 300, 24).causal());
    let has = |f: &dyn Fn(&AttentionConfig) -> bool, variant: &str| {
        ran.iter().filter(|(v, c)| v.name().starts_with(variant) && f(c)).count()
    };
    // every rows per workgroup, 64-key tiles, staging depth 2, z in registers
    assert!(has(&|c| c.tc_rows.is_some(), "tensor-cores") >= 4, "{ran:?}");
    for rows in [64, 32, 16] {
        assert!(has(&|c| c.tc_rows == Some(rows), "tensor-cores") >= 1, "{ran:?}");
    }
    assert!(has(&|c| c.tc_keys == Some(64), "tensor-cores") >= 1, "{ran:?}");
    assert!(has(&|c| c.tc_stages == Some(2), "tensor-cores") >= 1, "{ran:?}");
    assert!(has(&|c| c.tc_softmax == Some(1), "tensor-cores") >= 1, "{ran:?}");
    assert!(has(&|c| c.simt_chunk == Some(8), "fused") == 1 && has(&|c| c.simt_chunk.is_some(), "fused") >= 2, "{ran:?}");
    assert!(has(&|c| c.simt_chunk == Some(8), "split-k") == 1 && has(&|c| c.simt_chunk.is_some(), "split-k") >= 2, "{ran:?}");
    assert!(has(&|c| c.decode_split.is_some(), "decode") >= 2, "{ran:?}");
    if full_matrix() {
        // the widest class (on 32 KiB: 32 and 16 rows), a window
        every_candidate(&ctx, &Case::new(1, 2, 2, 70, 130, 128).window(40, Some(3)));
    }
}
}

gpu_test! {
fn a_configuration_the_device_cannot_run_is_refused_naming_it() {
    let ctx = emulated();
    let s = Shape::new(1, 2, 64, 128);
    let x = ctx.upload(&vec![f16::ONE; s.numel()], s).unwrap();
    let forced = |variant, config: &str| AttentionOptions { variant, config: config.parse().unwrap(), ..Default::default() };
    // 64 rows at head dim 128 need about 40 KiB of workgroup memory
    let opts = forced(AttentionVariant::TensorCores, "tc_rows=64");
    if ctx.caps().max_workgroup_storage < 40 << 10 {
        let e = ctx.attention(&x, &x, &x, None, &opts).unwrap_err();
        assert!(matches!(e, Error::Unsupported(ref m) if m.starts_with("config.tc_rows")), "{e}");
        // Auto passes the tensor cores over, saying why
        let auto = forced(AttentionVariant::Auto, "tc_rows=64");
        let plan = ctx.plan_attention(&x, &x, &x, None, &auto, false).unwrap();
        assert!(plan.variant != AttentionVariant::TensorCores && plan.reason.contains("config.tc_rows"), "{}", plan.reason);
    }
    let e = ctx.attention(&x, &x, &x, None, &forced(AttentionVariant::TensorCores, "tc_rows=48")).unwrap_err();
    assert!(matches!(e, Error::Unsupported(ref m) if m.contains("config.tc_rows")), "{e}");
    let e = ctx.attention(&x, &x, &x, None, &forced(AttentionVariant::Fused(Loads::Vec4), "simt_chunk=4")).unwrap_err();
    assert!(matches!(e, Error::Unsupported(ref m) if m.starts_with("config.simt_chunk")), "{e}");
    let e = ctx.attention(&x, &x, &x, None, &forced(AttentionVariant::Decode(Loads::Vec4), "decode_split=8")).unwrap_err();
    assert!(matches!(e, Error::Unsupported(ref m) if m.starts_with("config.decode_split")), "{e}");
}
}

/// f16 inputs of case `c` on `ctx`, with the f64 reference of the rounded inputs.
fn f16_inputs(ctx: &Context, c: &Case) -> ((Tensor, Tensor, Tensor), Vec<f64>) {
    let mut data = case_data(c);
    for v in [&mut data.q, &mut data.k, &mut data.v] {
        v.iter_mut().for_each(|x| *x = f16::from_f32(*x).to_f32());
    }
    let (want, _, _) = case_reference(c, &data);
    let h16 = |v: &[f32]| v.iter().map(|&x| f16::from_f32(x)).collect::<Vec<f16>>();
    let up = |v: &[f32], s| ctx.upload(&h16(v), s).unwrap();
    ((up(&data.q, data.qs), up(&data.k, data.ks), up(&data.v, data.ks)), want)
}

gpu_test! {
fn the_tuner_picks_a_valid_candidate_and_its_table_round_trips() {
    // (a budget of zero: the heuristic's candidate alone is timed, whose kernels the other tests
    // compile; the device run's sweeps time them all)
    let budget = std::time::Duration::ZERO;
    let ctx = Context::with_options_blocking(ContextOptions {
        tensor_cores: TensorCores::Emulated,
        tuning: Tuning::OnFirstUse { budget },
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("GPU test found no adapter ({e})"));
    // the shapes of every_attention_candidate_matches_the_reference (its kernels)
    let c = Case::new(1, 4, 2, 70, 300, 24).causal();
    let ((q, k, v), want) = f16_inputs(&ctx, &c);
    let plan = |cx: &Context, opts: &AttentionOptions| cx.plan_attention(&q, &k, &v, None, opts, false).unwrap();
    assert!(ctx.tuning_table().is_empty());
    let heuristic = plan(&ctx, &c.opts());
    assert!(!heuristic.reason.contains("tuned"), "planning does not tune: {}", heuristic.reason);
    // the first call tunes its shape class, then runs the winner
    let out = ctx.attention(&q, &k, &v, None, &c.opts()).unwrap();
    assert_close("tuned call", &out.download_blocking(&ctx).unwrap(), &want, 3e-3);
    let table = ctx.tuning_table();
    assert_eq!(table.len(), 1, "{table}");
    let (class, choice) = table.entries.iter().next().map(|(k, v)| (*k, *v)).unwrap();
    assert_eq!(class.to_string(), "f16 d32 q128 k512 s4 g2 causal");
    let candidates = ctx.attention_candidates(&q, &k, &v, None, &c.opts(), false).unwrap();
    assert!(candidates.iter().any(|p| (p.variant, p.config) == (choice.variant, choice.config)), "{table}");
    let tuned = plan(&ctx, &c.opts());
    assert_eq!((tuned.variant, tuned.config), (choice.variant, choice.config));
    assert!(tuned.reason.contains("the context's tuned entry for f16 d32"), "{}", tuned.reason);
    // a second call of the class tunes nothing more; a forced variant ignores the table
    ctx.attention(&q, &k, &v, None, &c.opts()).unwrap();
    assert_eq!(ctx.tuning_table(), table);
    let forced = AttentionOptions { variant: AttentionVariant::Fused(Loads::Vec4), ..c.opts() };
    assert_eq!(plan(&ctx, &forced).reason, "forced");

    // export and import: the text form round-trips, and another context of this adapter uses it
    let parsed: TuningTable = table.to_string().parse().unwrap();
    assert_eq!(parsed, table);
    let other = Context::with_options_blocking(ContextOptions { tensor_cores: TensorCores::Emulated, ..Default::default() })
        .unwrap();
    assert_eq!(other.tuning(), Tuning::BuiltIn);
    let (oq, ok, ov) = f16_inputs(&other, &c).0;
    let plan_other = |opts: &AttentionOptions| other.plan_attention(&oq, &ok, &ov, None, opts, false).unwrap();
    assert_eq!(other.import_tuning(&parsed), 1);
    let imported = plan_other(&c.opts());
    assert_eq!((imported.variant, imported.config), (choice.variant, choice.config));
    assert!(imported.reason.contains("tuned entry"), "{}", imported.reason);
    // tuning off: the heuristic, the entries kept
    other.set_tuning(Tuning::Off);
    assert_eq!(plan_other(&c.opts()).reason, heuristic.reason);
    other.set_tuning(Tuning::BuiltIn);
    // an entry that cannot run the call is passed over (64 rows at head dim 128 on 32 KiB)
    let wide = Case::new(1, 2, 2, 70, 130, 128);
    let ((wq, wk, wv), _) = f16_inputs(&other, &wide);
    let class = format!("{}", ShapeClass::of(DType::F16, 2, 70, 130, 128, 1, false));
    let text = format!("wgpu-attention tuning v1\nadapter {}\n{class} = tensor-cores tc_rows=64\n", parsed.adapter);
    assert_eq!(other.import_tuning(&text.parse().unwrap()), 1);
    let p = other.plan_attention(&wq, &wk, &wv, None, &wide.opts(), false).unwrap();
    if other.caps().max_workgroup_storage < 40 << 10 {
        assert!(!p.reason.contains("tuned") && p.config.tc_rows != Some(64), "{}", p.reason);
    }
    // a table from another adapter or driver is ignored
    let foreign = TuningTable { adapter: format!("{} (another driver)", parsed.adapter), ..parsed.clone() };
    let third = Context::with_options_blocking(ContextOptions { tensor_cores: TensorCores::Emulated, ..Default::default() })
        .unwrap();
    assert_eq!(third.import_tuning(&foreign), 0);
    assert!(third.tuning_table().is_empty());
}
}

gpu_test! {
fn similarity_follows_its_tuning_entries() {
    // f16 similarity on a context with (emulated) tensor cores: the heuristic's tensor cores, an
    // imported entry's SIMT kernel (the same bits as a context without tensor cores), tuning
    // off, and OnFirstUse timing both kernels on the first call of a class
    let h = |n: usize, seed: u64| rand_vec(seed, n, 1.0).into_iter().map(f16::from_f32).collect::<Vec<f16>>();
    let (qs, ks) = (Shape::new(1, 2, 40, 32), Shape::new(1, 2, 70, 32));
    let (qh, kh) = (h(qs.numel(), 1), h(ks.numel(), 2));
    let run = |ctx: &Context| {
        let (q, k) = (ctx.upload(&qh, qs).unwrap(), ctx.upload(&kh, ks).unwrap());
        let plan = ctx.plan_similarity(&q, &k, Similarity::ScaledDot(None)).unwrap();
        (plan, ctx.similarity(&q, &k, Similarity::ScaledDot(None)).unwrap().download_blocking(ctx).unwrap())
    };
    let simt_ctx = Context::with_options_blocking(ContextOptions { tensor_cores: TensorCores::Off, ..Default::default() })
        .unwrap_or_else(|e| panic!("GPU test found no adapter ({e})"));
    let (plan, simt) = run(&simt_ctx);
    assert_eq!(plan.kernel, SimilarityKernel::Simt, "{}", plan.reason);
    // the f64 reference
    let (qf, kf): (Vec<f64>, Vec<f64>) =
        (qh.iter().map(|x| x.to_f64()).collect(), kh.iter().map(|x| x.to_f64()).collect());
    let want: Vec<f64> = (0..2)
        .flat_map(|hd| (0..40).flat_map(move |i| (0..70).map(move |j| (hd, i, j))))
        .map(|(hd, i, j)| {
            let dot: f64 = (0..32).map(|c| qf[(hd * 40 + i) * 32 + c] * kf[(hd * 70 + j) * 32 + c]).sum();
            dot / (32f64).sqrt()
        })
        .collect();
    assert_close("SIMT", &simt, &want, 1e-5);

    let ctx = emulated();
    // (the two kernels can give the same bits: which one ran shows in the pipelines compiled)
    let compiled = || ctx.diagnostics().compiled_pipelines;
    let (plan, tc) = run(&ctx);
    assert_eq!(plan.kernel, SimilarityKernel::TensorCores, "{}", plan.reason);
    assert!(plan.reason.contains("heuristic"), "{}", plan.reason);
    assert_close("tensor cores (emulated)", &tc, &want, 1e-5);
    let after_tc = compiled();
    run(&ctx);
    assert_eq!(compiled(), after_tc, "the same kernel again");
    let class = ShapeClass::of(DType::F16, 2, 40, 70, 32, 1, false);
    let text = format!("wgpu-attention tuning v1\nadapter {}\nsimilarity {class} = simt\n", ctx.tuning_table().adapter);
    assert_eq!(ctx.import_tuning(&text.parse().unwrap()), 1);
    let (plan, tuned) = run(&ctx);
    assert_eq!(plan.kernel, SimilarityKernel::Simt, "{}", plan.reason);
    assert!(plan.reason.contains("tuned entry for f16 d32 q64 k128 s2 g1 full"), "{}", plan.reason);
    assert_eq!(tuned, simt, "the entry's SIMT kernel");
    assert_eq!(compiled(), after_tc + 1, "the SIMT kernel compiled for the entry");
    ctx.set_tuning(Tuning::Off);
    assert_eq!(run(&ctx).0.kernel, SimilarityKernel::TensorCores);
    assert_eq!(compiled(), after_tc + 1, "tuning off: the tensor-core kernel again");

    let timing = Context::with_options_blocking(ContextOptions {
        tensor_cores: TensorCores::Emulated,
        tuning: Tuning::OnFirstUse { budget: std::time::Duration::from_secs(5) },
        ..Default::default()
    })
    .unwrap();
    assert!(run(&timing).0.reason.contains("heuristic"), "planning does not time");
    let (_, got) = run(&timing);
    assert_close("tuned on first use", &got, &want, 1e-5);
    let table = timing.tuning_table();
    assert_eq!((table.len(), table.similarity.len()), (1, 1), "{table}");
    let chosen = table.get_similarity(&class).unwrap();
    let (plan, _) = run(&timing);
    assert_eq!(plan.kernel, chosen, "{}", plan.reason);
    assert!(plan.reason.contains("tuned entry"), "{}", plan.reason);
    assert_eq!(table.to_string().parse::<TuningTable>().unwrap(), table);
}
}
