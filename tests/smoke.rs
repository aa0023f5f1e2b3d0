mod common;
use common::*;
use wgpu_attention::*;

#[test]
fn smoke_attention() {
    let Some(ctx) = shared_gpu() else { return };
    eprintln!("{}", ctx.info());
    let shape = Shape::new(1, 2, 37, 16);
    let q = rand_vec(1, shape.numel(), 1.0);
    let k = rand_vec(2, shape.numel(), 1.0);
    let v = rand_vec(3, shape.numel(), 1.0);
    let opts = AttentionOptions::default();
    let (gq, gk, gv) = (ctx.upload(&q, shape).unwrap(), ctx.upload(&k, shape).unwrap(), ctx.upload(&v, shape).unwrap());
    let out = ctx.attention(&gq, &gk, &gv, None, &opts).unwrap().download_blocking(&ctx).unwrap();
    let (want, _, _) = ref_attention(&q, shape, Layout::Bhsd, &k, shape, Layout::Bhsd, &v, Layout::Bhsd, 0.25, &RefMask::none());
    assert_close("fused", &out, &want, 1e-5);
    let (o2, _) = ctx.attention_unfused(&gq, &gk, &gv, None, &opts).unwrap();
    assert_close("unfused", &o2.download_blocking(&ctx).unwrap(), &want, 1e-5);
    let s = ctx.similarity(&gq, &gk, Similarity::Cosine).unwrap().download_blocking(&ctx).unwrap();
    let cs = cpu::similarity(&HostTensor::new(&q, shape).unwrap(), &HostTensor::new(&k, shape).unwrap(), Similarity::Cosine).unwrap();
    assert_close("cosine", &s, &to_f64(&cs), 1e-5);
}
