//! The real NV-Embed-v2 configuration: parsing, latent defaults, and the tensor plan.

use std::collections::BTreeSet;

use crate::common::fixture;
use latentdb_embed::ErrorKind;
use latentdb_embed::config::{LatentAttentionConfig, ModelConfig};
use latentdb_embed::weights::weight_names;

#[test]
fn nvembed_v2_config_resolves_latent_defaults() {
    let dir = fixture("nvembed-v2-config");
    let ModelConfig::NvEmbed(cfg) = ModelConfig::from_dir(&dir).expect("parse config") else {
        panic!("expected an nvembed config");
    };
    assert_eq!(cfg.latent, LatentAttentionConfig::default());
    assert_eq!(cfg.latent.num_latents_value, 512);
    assert_eq!(cfg.latent.num_cross_heads, 8);
    assert_eq!(cfg.latent.cross_dim_head, 4096);
    assert_eq!(cfg.latent.latent_dim, 4096);
    assert_eq!(cfg.latent.hidden_dim, 4096);
    assert!(cfg.latent.output_normalize);
    assert_eq!(cfg.text.hidden_size, 4096);
    assert_eq!(cfg.text.num_hidden_layers, 32);
    assert_eq!(cfg.text.num_key_value_heads, 8);
    assert_eq!(cfg.text.head_dim(), 128);
    assert!(cfg.is_mask_instruction);
}

#[test]
fn nvembed_v2_plan_is_exactly_the_index() {
    let dir = fixture("nvembed-v2-config");
    let ModelConfig::NvEmbed(cfg) = ModelConfig::from_dir(&dir).expect("parse config") else {
        panic!("expected an nvembed config");
    };
    let plan = cfg.tensor_plan();
    let planned: BTreeSet<String> = plan.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(planned.len(), plan.len(), "duplicate names in the plan");
    let stored = weight_names(&dir).expect("read index");
    assert_eq!(stored.len(), 304);
    let missing: Vec<_> = planned.difference(&stored).collect();
    let unused: Vec<_> = stored.difference(&planned).collect();
    assert!(missing.is_empty(), "planned but not stored: {missing:?}");
    assert!(unused.is_empty(), "stored but not planned: {unused:?}");
    // 7.85B parameters.
    let params: usize = plan.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
    assert!(
        (7_800_000_000..7_900_000_000).contains(&params),
        "{params} parameters"
    );
    // fp16 total size in the index metadata equals the plan's.
    let index: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("model.safetensors.index.json")).expect("index"),
    )
    .expect("json");
    assert_eq!(
        index["metadata"]["total_size"].as_u64(),
        Some(2 * params as u64)
    );
}

#[test]
fn tiny_checkpoint_tensors_match_its_plan() {
    let dir = fixture("nvembed-tiny");
    let ModelConfig::NvEmbed(cfg) = ModelConfig::from_dir(&dir).expect("parse config") else {
        panic!("expected an nvembed config");
    };
    assert_eq!(cfg.latent.num_latents_value, 16);
    assert_eq!(cfg.latent.num_cross_heads, 2);
    assert_eq!(cfg.latent.cross_dim_head, 32);
    assert_eq!(cfg.text.rope_theta, 1e6);
    let planned: BTreeSet<String> = cfg.tensor_plan().into_iter().map(|(n, _)| n).collect();
    assert_eq!(planned, weight_names(&dir).expect("header"));
}

#[test]
fn unsupported_configs_are_rejected() {
    let bad = serde_json::json!({"model_type": "gpt2"});
    let err = ModelConfig::from_value(bad).expect_err("gpt2 is not supported");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    let mismatched = serde_json::json!({
        "model_type": "nvembed",
        "text_config": {"vocab_size": 10, "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2},
        "latent_attention_config": {"latent_dim": 32}
    });
    let err = ModelConfig::from_value(mismatched).expect_err("mismatched latent dims");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
}
