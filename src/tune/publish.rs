//! The publish phase of a tuning run, and of a rollback: switching a collection to another
//! model version.
//!
//! The order makes every crash recoverable: the history naming the new live version is saved
//! first (durably), the collection switched last. The switch catches the shadow copy up with
//! the writes made since the snapshot (outside the writer lock, so writers keep going), then
//! takes the writer lock, catches up with the last few, and writes every vector and the new
//! settings in one storage transaction before releasing it (see
//! `Database::switch_model_locked`): a crash leaves the old model or the new one, never a mix.

use latentdb_embed::Embedder;

use super::snapshot::Shadow;
use super::versions::{self, ModelHistory};
use crate::database::Database;
use crate::embedding::EmbedderSettings;
use crate::error::{Error, Result};

/// Makes `settings` (embedded by `embedder`) the model of `collection`, with `shadow`'s
/// vectors. `history` already names the new live version and is saved before the switch; if
/// the switch fails, `previous` is saved back (best effort: a history ahead of its collection
/// is corrected whenever it is read).
#[allow(clippy::too_many_arguments)]
pub(super) fn switch(
    db: &Database,
    collection: &str,
    history: &ModelHistory,
    previous: &ModelHistory,
    settings: &EmbedderSettings,
    shadow: Shadow,
    embedder: &Embedder,
    progress: &dyn Fn(&str),
) -> Result<()> {
    versions::save(db, history)?;
    let switched = switch_collection(db, collection, settings, shadow, embedder, progress);
    if switched.is_err() {
        let _ = versions::save(db, previous);
    }
    switched
}

fn switch_collection(
    db: &Database,
    collection: &str,
    settings: &EmbedderSettings,
    mut shadow: Shadow,
    embedder: &Embedder,
    progress: &dyn Fn(&str),
) -> Result<()> {
    let caught_up = shadow.catch_up(db.storage(), collection, embedder)?;
    if caught_up > 0 {
        progress(&format!(
            "embedded {caught_up} documents written since the start with the new model"
        ));
    }
    progress("switching the collection to the new version");
    let value = serde_json::to_value(settings)
        .map_err(|e| Error::Internal(format!("embedder settings: {e}")))?;
    db.switch_model_locked(collection, |storage| {
        shadow.catch_up(storage, collection, embedder)?;
        Ok((shadow.into_documents(), value))
    })
}
