//! The latent-attention head: mean-pooling initialisation, save/reload, training gradients.

use candle_core::{DType, Device, Tensor};
use latentdb_embed::pooling::{l2_normalize, masked_mean};
use latentdb_embed::{BackboneRef, ErrorKind, HeadConfig, LatentHead};

fn backbone() -> BackboneRef {
    BackboneRef {
        name: "test-backbone".into(),
        weights_sha256: "00".repeat(32),
    }
}

fn inputs(d: usize) -> (Tensor, Tensor) {
    let dev = Device::Cpu;
    let states = Tensor::randn(0f32, 1.0, (3, 7, d), &dev).expect("randn");
    let mask = Tensor::from_vec(
        vec![
            1f32, 1., 1., 1., 1., 1., 1., //
            1., 1., 1., 0., 0., 0., 0., //
            0., 0., 1., 1., 1., 0., 0.,
        ],
        (3, 7),
        &dev,
    )
    .expect("mask");
    (states, mask)
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .expect("sub")
        .abs()
        .expect("abs")
        .flatten_all()
        .expect("flat")
        .max(0)
        .expect("max")
        .to_scalar::<f32>()
        .expect("scalar")
}

#[test]
fn fresh_head_computes_mean_pooling() {
    let head =
        LatentHead::new_mean_pooling(HeadConfig::default_for(32, backbone()), 1).expect("head");
    assert!(head.is_identity());
    let (states, mask) = inputs(32);
    let got = head.forward(&states, &mask).expect("forward");
    let want = l2_normalize(&masked_mean(&states, &mask).expect("mean")).expect("norm");
    assert!(max_diff(&got, &want) <= 1e-6);
}

#[test]
fn save_and_reload_embed_identically() {
    let head =
        LatentHead::new_mean_pooling(HeadConfig::default_for(32, backbone()), 2).expect("head");
    // Make it non-trivial: train one step so the head is no longer the identity.
    let (trained, states, mask) = train_one_step(&head);
    let dir = tempfile::tempdir().expect("tempdir");
    trained.save(dir.path()).expect("save");
    let reloaded = LatentHead::load(dir.path()).expect("load");
    assert!(
        !reloaded.is_identity(),
        "the trained head must not be the identity"
    );
    assert_eq!(reloaded.config(), trained.config());
    assert_eq!(
        reloaded.tensors_sha256().expect("sha"),
        trained.tensors_sha256().expect("sha")
    );
    let a = trained.forward(&states, &mask).expect("forward");
    let b = reloaded.forward(&states, &mask).expect("forward");
    assert!(max_diff(&a, &b) <= 1e-6);
    let mean = l2_normalize(&masked_mean(&states, &mask).expect("mean")).expect("norm");
    assert!(
        max_diff(&b, &mean) > 1e-4,
        "a trained head must differ from the mean"
    );
}

fn train_one_step(head: &LatentHead) -> (LatentHead, Tensor, Tensor) {
    use candle_nn::Optimizer;
    let (states, mask) = inputs(32);
    let (varmap, trainable) = head.trainable(&Device::Cpu).expect("trainable");
    let mut opt = candle_nn::AdamW::new(
        varmap.all_vars(),
        candle_nn::ParamsAdamW {
            lr: 1e-2,
            ..Default::default()
        },
    )
    .expect("adamw");
    let target = Tensor::randn(0f32, 1.0, (3, 32), &Device::Cpu).expect("randn");
    for _ in 0..3 {
        let out = trainable.forward(&states, &mask).expect("forward");
        let loss = (out - &target)
            .expect("sub")
            .sqr()
            .expect("sqr")
            .mean_all()
            .expect("mean");
        opt.backward_step(&loss).expect("step");
    }
    (trainable, states, mask)
}

#[test]
fn every_trainable_tensor_receives_a_gradient_once_trained() {
    let head =
        LatentHead::new_mean_pooling(HeadConfig::default_for(32, backbone()), 3).expect("head");
    let (trained, states, mask) = train_one_step(&head);
    let (varmap, t2) = trained.trainable(&Device::Cpu).expect("trainable");
    let target = Tensor::randn(0f32, 1.0, (3, 32), &Device::Cpu).expect("randn");
    let out = t2.forward(&states, &mask).expect("forward");
    let loss = (out - &target)
        .expect("sub")
        .sqr()
        .expect("sqr")
        .mean_all()
        .expect("mean");
    let grads = loss.backward().expect("backward");
    let data = varmap.data().lock().expect("lock");
    assert_eq!(data.len(), 14);
    for (name, var) in data.iter() {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let norm = g
            .to_dtype(DType::F32)
            .expect("dtype")
            .sqr()
            .expect("sqr")
            .sum_all()
            .expect("sum")
            .to_scalar::<f32>()
            .expect("scalar");
        assert!(norm > 0.0, "zero gradient for {name}");
    }
}

#[test]
fn loading_a_missing_or_bad_head_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = LatentHead::load(dir.path()).expect_err("no head there");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    std::fs::write(dir.path().join("head.json"), b"{not json").expect("write");
    let err = LatentHead::load(dir.path()).expect_err("not json");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    // A valid config whose weights file is missing.
    let head =
        LatentHead::new_mean_pooling(HeadConfig::default_for(32, backbone()), 4).expect("head");
    head.save(dir.path()).expect("save");
    std::fs::remove_file(dir.path().join("head.safetensors")).expect("rm");
    let err = LatentHead::load(dir.path()).expect_err("no weights");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
}
