//! Integration tests of latentdb-backup: the local target, S3 against a real moto server on
//! loopback, and the manifest decoder under arbitrary input.

mod common;
mod local;
mod manifest_fuzz;
mod moto;
mod s3;
