//! The backward pass (`cpu::attention_backward`, `cpu::reference::attention_backward`): the f64
//! reference against central finite differences of the tests' own f64 forward
//! (`common::ref_attention_with`, written independently of the crate) for every option and
//! their combinations; the fast path against the reference over shapes that cross its blocks,
//! f16 inputs, extremes, run-to-run determinism; bad arguments refused, naming them.

mod common;
use common::*;
use wgpu_attention::*;

/// `L = Σ dO · O` of the tests' f64 forward.
fn loss(c: &Case, data: &CaseData, d_o: &[f32]) -> f64 {
    let (out, _, _) = case_reference(c, data);
    out.iter().zip(d_o).map(|(o, g)| o * *g as f64).sum()
}

/// Central differences of the loss over each element that `pick` selects (the step is what
/// f32 makes of ±h: the exact difference of the perturbed inputs divides).
fn numeric(c: &Case, data: &CaseData, d_o: &[f32], pick: for<'x> fn(&'x mut CaseData, &'x mut Case) -> &'x mut Vec<f32>) -> Vec<f64> {
    let h = 1e-3f32;
    let (mut dd, mut cc) = (clone_data(data), c.clone());
    let n = pick(&mut dd, &mut cc).len();
    (0..n)
        .map(|e| {
            let x = pick(&mut dd, &mut cc)[e];
            let (up, down) = (x + h, x - h);
            pick(&mut dd, &mut cc)[e] = up;
            let lu = loss(&cc, &dd, d_o);
            pick(&mut dd, &mut cc)[e] = down;
            let ld = loss(&cc, &dd, d_o);
            pick(&mut dd, &mut cc)[e] = x;
            (lu - ld) / (up as f64 - down as f64)
        })
        .collect()
}

fn clone_data(d: &CaseData) -> CaseData {
    CaseData {
        q: d.q.clone(),
        k: d.k.clone(),
        v: d.v.clone(),
        qs: d.qs,
        ks: d.ks,
        bmask: d.bmask.clone(),
        amask: d.amask.clone(),
    }
}

#[test]
fn the_reference_backward_matches_finite_differences() {
    for c in backward_cases() {
        let data = case_data(&c);
        let d_o = rand_vec(c.seed + 11, data.qs.numel(), 1.0);
        let (r, _) = backward_grads(&c, &data, &d_o);
        let what = format!("{c:?}");
        assert_close(&format!("dq {what}"), &r.dq, &numeric(&c, &data, &d_o, |d, _| &mut d.q), 2e-4);
        assert_close(&format!("dk {what}"), &r.dk, &numeric(&c, &data, &d_o, |d, _| &mut d.k), 2e-4);
        assert_close(&format!("dv {what}"), &r.dv, &numeric(&c, &data, &d_o, |d, _| &mut d.v), 2e-4);
        match &c.sinks {
            Some(_) => {
                let num = numeric(&c, &data, &d_o, |_, c| c.sinks.as_mut().unwrap());
                assert_close(&format!("d_sinks {what}"), r.d_sinks.as_ref().unwrap(), &num, 2e-4);
            }
            None => assert!(r.d_sinks.is_none(), "{what}"),
        }
    }
}

#[test]
fn the_fast_path_matches_the_reference() {
    let mut cs = backward_cases();
    // shapes across the fast path's blocks (64 query rows, 128 keys), odd sizes, GQA
    cs.push(Case::new(1, 4, 1, 150, 300, 64).causal().sinks());
    cs.push(Case::new(2, 2, 2, 65, 129, 33).window(40, Some(7)).alibi());
    cs.push(Case { bool_mask: Some([2, 1, 70, 130]), ..Case::new(2, 2, 1, 70, 130, 16).softcap(5.0) });
    cs.push(Case::new(1, 2, 2, 1, 513, 128).key_lengths(&[300]));
    for c in cs {
        let data = case_data(&c);
        let d_o = rand_vec(c.seed + 11, data.qs.numel(), 1.0);
        let (r, f) = backward_grads(&c, &data, &d_o);
        let what = format!("{c:?}");
        assert_agree(&format!("dq {what}"), &f.dq, &r.dq, 1e-5);
        assert_agree(&format!("dk {what}"), &f.dk, &r.dk, 1e-5);
        assert_agree(&format!("dv {what}"), &f.dv, &r.dv, 1e-5);
        if let (Some(a), Some(b)) = (&f.d_sinks, &r.d_sinks) {
            assert_agree(&format!("d_sinks {what}"), a, b, 1e-5);
        }
        // the same bits run to run (every block has one owner)
        let (_, again) = backward_grads(&c, &data, &d_o);
        assert_eq!(f, again, "{what}");
    }
}

#[test]
fn rows_that_keep_nothing_give_zero_gradients() {
    // causal with 6 queries over 3 keys: rows 0-2 keep nothing (lse -inf)
    let c = Case::new(1, 2, 1, 6, 3, 4).causal();
    let data = case_data(&c);
    let d_o = rand_vec(1, data.qs.numel(), 1.0);
    let (r, f) = backward_grads(&c, &data, &d_o);
    for g in [&r, &f] {
        for h in 0..2 {
            for i in 0..3 {
                let row = &g.dq[(h * 6 + i) * 4..][..4];
                assert!(row.iter().all(|&x| x == 0.0), "head {h} row {i}: {row:?}");
            }
        }
        assert!(g.dq.iter().chain(&g.dk).chain(&g.dv).all(|x| x.is_finite()));
    }
}

#[test]
fn extremes_give_finite_gradients() {
    // large scores (the fast path hands these to the reference), long rows, f16 inputs
    for c in [Case { amp: 1e3, ..Case::new(1, 2, 1, 8, 40, 16).sinks() }, Case { amp: 30.0, ..Case::new(1, 2, 2, 3, 4000, 8).softcap(50.0) }] {
        let data = case_data(&c);
        let d_o = rand_vec(5, data.qs.numel(), 1e3);
        let (r, f) = backward_grads(&c, &data, &d_o);
        for g in [&r, &f] {
            assert!(g.dq.iter().chain(&g.dk).chain(&g.dv).all(|x| x.is_finite()), "{c:?}");
        }
        // (scores of 1e6 carry an f32 rounding of about 0.1 in the forward's log-sum-exp,
        // so the weights themselves are known to a few percent: only finiteness is asked there)
        if c.amp < 100.0 {
            assert_agree(&format!("dv {c:?}"), &f.dv, &r.dv, 1e-4);
        }
    }
    // f16 inputs: widened, f32 arithmetic; against the f32 reference of the same values
    let c = Case::new(1, 2, 1, 20, 30, 16).causal();
    let data = case_data(&c);
    let h = |x: &[f32]| x.iter().map(|&y| half::f16::from_f32(y)).collect::<Vec<_>>();
    let back = |x: &[half::f16]| x.iter().map(|y| y.to_f32()).collect::<Vec<_>>();
    let (q16, k16, v16) = (h(&data.q), h(&data.k), h(&data.v));
    let d_o = rand_vec(6, data.qs.numel(), 1.0);
    let do16 = h(&d_o);
    let (q, k, v) = (ht(&q16, data.qs), ht(&k16, data.ks), ht(&v16, data.ks));
    let (o, lse) = cpu::attention(&q, &k, &v, None, &c.opts()).unwrap();
    let o16 = h(&o);
    let (o, d_o) = (ht(&o16, data.qs), ht(&do16, data.qs));
    let call = cpu::BackwardInputs { q: &q, k: &k, v: &v, mask: None, o: &o, lse: &lse, d_o: &d_o };
    let g = cpu::attention_backward(&call, &c.opts()).unwrap();
    let (qf, kf, vf, of, df) = (back(&q16), back(&k16), back(&v16), back(&o16), back(&do16));
    let (q, k, v) = (ht(&qf, data.qs), ht(&kf, data.ks), ht(&vf, data.ks));
    let (o, d_o) = (ht(&of, data.qs), ht(&df, data.qs));
    let call = cpu::BackwardInputs { q: &q, k: &k, v: &v, mask: None, o: &o, lse: &lse, d_o: &d_o };
    let r = cpu::reference::attention_backward(&call, &c.opts()).unwrap();
    assert_agree("f16 dq", &g.dq, &r.dq, 1e-5);
    assert_agree("f16 dk", &g.dk, &r.dk, 1e-5);
}

fn ht<T>(x: &[T], s: Shape) -> HostTensor<'_, T> {
    HostTensor::new(x, s).unwrap()
}

#[test]
fn bad_arguments_are_refused_naming_them() {
    let c = Case::new(1, 2, 1, 3, 4, 8);
    let data = case_data(&c);
    let q = HostTensor::new(&data.q, data.qs).unwrap();
    let k = HostTensor::new(&data.k, data.ks).unwrap();
    let (o, lse) = cpu::attention(&q, &k, &k, None, &c.opts()).unwrap();
    let o = HostTensor::new(&o, data.qs).unwrap();
    let short = HostTensor::new(&data.k, data.ks).unwrap();
    let mut nan = data.q.clone();
    nan[5] = f32::NAN;
    let nan = HostTensor::new(&nan, data.qs).unwrap();
    let name = |e: Error| match e {
        Error::ShapeMismatch { argument, .. }
        | Error::LengthMismatch { argument, .. }
        | Error::NonFinite { argument, .. }
        | Error::InvalidArgument { argument, .. } => argument,
        other => panic!("{other}"),
    };
    let run = |o: &HostTensor<f32>, lse: &[f32], d_o: &HostTensor<f32>| {
        let call = cpu::BackwardInputs { q: &q, k: &k, v: &k, mask: None, o, lse, d_o };
        let a = cpu::attention_backward(&call, &c.opts()).unwrap_err();
        let b = cpu::reference::attention_backward(&call, &c.opts()).unwrap_err();
        assert_eq!(a, b);
        name(a)
    };
    assert_eq!(run(&short, &lse, &o), "o");
    assert_eq!(run(&o, &lse, &short), "d_o");
    assert_eq!(run(&o, &lse[1..], &o), "lse");
    let mut bad_lse = lse.clone();
    bad_lse[0] = f32::NAN;
    assert_eq!(run(&o, &bad_lse, &o), "lse");
    assert_eq!(run(&o, &lse, &nan), "d_o");
    assert_eq!(run(&nan, &lse, &o), "o");
}
