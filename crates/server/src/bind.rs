//! Writes bound to a collection's identity, and deleting every document: thin calls into the
//! library.

use latentdb::Database;

use crate::error::ServiceError;

/// The identity of the collection named `name` now (a stream binds to it at its first
/// message).
pub(crate) fn uid(db: &Database, name: &str) -> Result<u64, ServiceError> {
    Ok(db.collection_uid(name)?)
}

/// Upserts `docs` into the collection `name` if it is still the one with identity `uid`
/// (`NOT_FOUND` if it was dropped, even if re-created since).
pub(crate) fn upsert(
    db: &Database,
    name: &str,
    uid: u64,
    docs: Vec<latentdb::Document>,
) -> Result<Vec<String>, ServiceError> {
    Ok(db.upsert_bound(name, uid, docs, None)?.ids)
}

/// Deletes every document of the collection; returns how many there were.
pub(crate) fn delete_all(db: &Database, name: &str) -> Result<u64, ServiceError> {
    Ok(db.delete_all(name)?)
}
