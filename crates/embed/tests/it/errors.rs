//! Every failure to load a model says whose fault it is, and never echoes unbounded input.

use std::path::{Path, PathBuf};

use latentdb_embed::tasks::task;
use latentdb_embed::{Embedder, ErrorKind, LoadOptions, ModelSpec};

use crate::common::fixture;

/// An error message that quotes a 16 KiB path or name stays short.
const MAX_MESSAGE: usize = 600;

fn load_err(dir: &Path) -> latentdb_embed::Error {
    Embedder::load(&ModelSpec::Dir(dir.to_path_buf())).expect_err("must not load")
}

/// A copy of the tiny NV-Embed model in a directory with a very long name.
fn tiny_copy(root: &Path) -> PathBuf {
    // Long (3000 characters), but within what a file system allows.
    let mut dir = root.to_path_buf();
    for i in 0..15 {
        dir.push(format!("{i:03}{}", "d".repeat(197)));
    }
    std::fs::create_dir_all(&dir).expect("mkdir");
    for f in std::fs::read_dir(fixture("nvembed-tiny")).expect("ls") {
        let f = f.expect("entry");
        std::fs::copy(f.path(), dir.join(f.file_name())).expect("copy");
    }
    dir
}

#[test]
fn a_model_directory_that_does_not_exist_is_not_found() {
    let long = format!("/no/such/{}/model", "x".repeat(16 * 1024));
    let err = load_err(Path::new(&long));
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.is_caller_fault());
    let msg = err.to_string();
    assert!(msg.len() < MAX_MESSAGE, "{} chars", msg.len());
    assert!(msg.ends_with("/model"), "{msg}");
}

#[test]
fn the_default_model_not_installed_is_a_failed_precondition() {
    let empty = tempfile::tempdir().expect("tempdir");
    let err = Embedder::load_with(
        &ModelSpec::Default,
        &LoadOptions {
            models_dir: Some(empty.path().to_path_buf()),
            ..LoadOptions::default()
        },
    )
    .expect_err("not installed");
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
    assert!(err.to_string().contains("latentdb model fetch"), "{err}");
}

#[test]
fn a_directory_without_a_model_is_the_callers_fault() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tiny_copy(tmp.path());
    Embedder::from_dir(&dir, &LoadOptions::default()).expect("the intact copy loads");

    // No config.json.
    std::fs::rename(dir.join("config.json"), dir.join("config.json.bak")).expect("mv");
    let err = load_err(&dir);
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.to_string().len() < MAX_MESSAGE, "{err}");

    // A config that is not JSON.
    std::fs::write(dir.join("config.json"), b"{ not json").expect("write");
    let err = load_err(&dir);
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(err.to_string().len() < MAX_MESSAGE, "{err}");

    // An unsupported model type with a huge name.
    let config = format!(r#"{{"model_type": "{}"}}"#, "m".repeat(16 * 1024));
    std::fs::write(dir.join("config.json"), config).expect("write");
    let err = load_err(&dir);
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(err.to_string().len() < MAX_MESSAGE, "{err}");
    std::fs::rename(dir.join("config.json.bak"), dir.join("config.json")).expect("mv");

    // A tokenizer that is not a tokenizer.
    let tok = std::fs::read(dir.join("tokenizer.json")).expect("read");
    std::fs::write(dir.join("tokenizer.json"), b"{}").expect("write");
    let err = load_err(&dir);
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(err.to_string().len() < MAX_MESSAGE, "{err}");
    std::fs::write(dir.join("tokenizer.json"), tok).expect("restore");

    // Weights that are not a safetensors file.
    std::fs::write(dir.join("model.safetensors"), b"garbage").expect("write");
    let err = load_err(&dir);
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(err.to_string().len() < MAX_MESSAGE, "{err}");
}

#[test]
fn an_unknown_task_name_is_an_invalid_argument_echoed_bounded() {
    let name = "t".repeat(16 * 1024);
    let err = task(&name).expect_err("unknown task");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    let msg = err.to_string();
    assert!(msg.len() < 2048, "{} chars", msg.len());
    assert!(msg.contains("NQ"), "the known tasks are listed: {msg}");
}
