//! The local directory target.

use std::fs;

use latentdb_backup::{BackupWriter, Target, WriterOptions, list, list_url};
use latentdb_types::ErrorKind;

use crate::common;

fn local_damage(target: &Target, file: &str, bytes: Option<Vec<u8>>) {
    let path = std::path::Path::new(&target.url()).join(file);
    match bytes {
        Some(bytes) => fs::write(path, bytes).unwrap(),
        None => fs::remove_file(path).unwrap(),
    }
}

#[test]
fn local_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    common::round_trip(&Target::local(dir.path()));
    // No temporary files are left beside the chunks.
    let leftovers: Vec<_> = fs::read_dir(dir.path().join("b1/c/docs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn local_killed_mid_upload_is_not_a_backup() {
    let dir = tempfile::tempdir().unwrap();
    common::killed_mid_upload(&Target::local(dir.path()));
    // Through a file:// URL too; a file beside the backups is ignored.
    fs::write(dir.path().join("stray.txt"), b"x").unwrap();
    let url = format!("file://{}", dir.path().display());
    assert_eq!(list_url(&url).unwrap().len(), 1);
}

#[test]
fn local_verify_catches_damage() {
    let dir = tempfile::tempdir().unwrap();
    common::verify_catches_damage(&Target::local(dir.path()), &local_damage);
}

#[test]
fn listing_a_missing_root_is_empty_and_a_file_target_fails() {
    let dir = tempfile::tempdir().unwrap();
    assert!(
        list(&Target::local(dir.path().join("absent")))
            .unwrap()
            .is_empty()
    );
    let file = dir.path().join("plain-file");
    fs::write(&file, b"x").unwrap();
    let err = BackupWriter::create(&Target::local(&file), WriterOptions::default()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Internal, "{err}");
}
