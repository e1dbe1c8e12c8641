//! The S3 target against a real S3 implementation (moto) on loopback.

use latentdb_backup::{Target, list, verify};

use crate::common;
use crate::moto::Moto;

fn s3_damage(target: &Target, file: &str, bytes: Option<Vec<u8>>) {
    match bytes {
        Some(bytes) => target.put(file, &bytes).unwrap(),
        None => target.delete(file).unwrap(),
    }
}

#[test]
fn s3_round_trip_kill_and_damage_against_moto() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("backups");
    common::round_trip(&moto.target("s3://backups/rt"));
    common::killed_mid_upload(&moto.target("s3://backups/killed"));
    common::verify_catches_damage(&moto.target("s3://backups/damage"), &s3_damage);
    // Backups at the bucket's root list too; the prefixes above are locations without a
    // manifest of their own, so they are not backups.
    let root = moto.target("s3://backups");
    common::round_trip(&root);
    let names: Vec<String> = list(&root).unwrap().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["b1", "b2"]);
    // Called from inside a tokio runtime (a gRPC handler that forgot spawn_blocking), the
    // target still works instead of panicking.
    let inside = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(async { verify(&root.child("b1").unwrap()) });
    assert_eq!(inside.unwrap().files, 3);
    // A missing bucket is an error, not an empty listing.
    let err = list(&moto.target("s3://no-such-bucket/x")).unwrap_err();
    assert_eq!(err.kind(), latentdb_types::ErrorKind::Internal, "{err}");
}

/// `Target::open("s3://…")` takes its endpoint, credentials and `AWS_ALLOW_HTTP` from the
/// standard environment variables: run in a child process of this test binary, so that this
/// process's environment is not changed.
#[test]
fn s3_target_from_the_environment() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("envbucket");
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["s3::env_child", "--exact", "--ignored", "--nocapture"])
        .env("AWS_ENDPOINT_URL", moto.endpoint())
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("LATENTDB_BACKUP_ENV_CHILD", "s3://envbucket/p")
        .status()
        .unwrap();
    assert!(status.success(), "{status}");
    // What the child wrote is there.
    let written = moto.target("s3://envbucket/p/b1");
    assert_eq!(verify(&written).unwrap().files, 3);
}

#[test]
#[ignore = "run by s3_target_from_the_environment in a child process with AWS_* set"]
fn env_child() {
    let url = std::env::var("LATENTDB_BACKUP_ENV_CHILD").expect("run by the parent test");
    let target = Target::open(&url).unwrap();
    common::round_trip(&target);
}
