//! Collections with an embedder: the model settings stored with a collection, the cache of
//! loaded models, embedding documents' text on upsert and text queries on search, and
//! refusing a model that differs from the collection's.
//!
//! A collection created with a model stores [`EmbedderSettings`] as its `spec.embedder`: how
//! to find the model again (`default` or a directory), its [`ModelIdentity`] (name, type,
//! sha256 of the weights and of the head, pooling, token limit, dimension), the default query
//! instruction and named tasks. The model is loaded on first use and checked against the
//! stored identity, so a model directory whose weights changed is refused instead of mixing
//! vector spaces. Embedding runs before any collection lock is taken.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use latentdb_embed::{
    EmbedOptions, Embedder, Instruction, LoadOptions, ModelIdentity, ModelSpec, tasks,
};
use latentdb_storage::{CollectionInfo, CollectionSpec, Document};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::database::Database;
use crate::error::{Error, Result};
use crate::search::SearchRequest;

/// The instruction NV-Embed-style models put on queries when a request names none: NVIDIA's
/// instruction for question answering retrieval (the `NQ` task).
pub const DEFAULT_QUERY_INSTRUCTION: &str =
    "Given a question, retrieve passages that answer the question";

/// Texts per forward pass when embedding documents and queries.
pub const EMBED_BATCH: usize = 32;

/// What a collection stores about its embedder (its `spec.embedder`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbedderSettings {
    /// How to load the model: `default`, or an absolute model directory.
    pub model: String,
    /// The identity of the model the collection was created with.
    pub identity: ModelIdentity,
    /// The instruction for queries that name none (instruction models only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_instruction: Option<String>,
    /// Named query instructions of this collection, used before the built-in tasks.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tasks: BTreeMap<String, String>,
}

impl EmbedderSettings {
    /// Settings for a collection embedded by `embedder`, loaded from `spec`.
    pub fn new(spec: &ModelSpec, embedder: &Embedder) -> Result<EmbedderSettings> {
        let model = match spec {
            ModelSpec::Default => "default".to_string(),
            ModelSpec::Dir(dir) => absolute(dir)?.to_string_lossy().into_owned(),
        };
        let identity = embedder.identity().clone();
        let query_instruction =
            (identity.model_type == "nvembed").then(|| DEFAULT_QUERY_INSTRUCTION.to_string());
        Ok(EmbedderSettings {
            model,
            identity,
            query_instruction,
            tasks: BTreeMap::new(),
        })
    }

    /// The settings stored in a collection's `spec.embedder`, if it has an embedder.
    pub fn of(collection: &str, value: &Value) -> Result<Option<EmbedderSettings>> {
        if value.is_null() {
            return Ok(None);
        }
        serde_json::from_value(value.clone())
            .map(Some)
            .map_err(|e| Error::ModelMismatch {
                collection: collection.to_string(),
                reason: format!("its stored embedder settings are unreadable: {e}"),
            })
    }

    /// The model spec to load.
    pub fn spec(&self) -> ModelSpec {
        ModelSpec::parse(&self.model)
    }

    /// The query instruction for a request naming `task` or `instruction` (at most one).
    pub fn query_instruction(
        &self,
        task: Option<&str>,
        instruction: Option<&str>,
    ) -> Result<Option<Instruction>> {
        match (task, instruction) {
            (Some(_), Some(_)) => Err(Error::InvalidArgument(
                "give a task or an instruction, not both".into(),
            )),
            (None, Some(text)) if text.trim().is_empty() => Ok(None),
            (None, Some(text)) => Ok(Some(if text.starts_with("Instruct:") {
                Instruction::Raw(text.to_string())
            } else {
                Instruction::Text(text.to_string())
            })),
            (Some(name), None) => {
                if let Some(text) = self.tasks.get(name) {
                    return Ok(Some(Instruction::Text(text.clone())));
                }
                let task = tasks::task(name).map_err(|_| {
                    let mut known: Vec<String> = self.tasks.keys().cloned().collect();
                    known.extend(tasks::tasks().into_iter().map(|t| t.name));
                    Error::InvalidArgument(format!(
                        "unknown task `{name}`; known tasks: {}",
                        known.join(", ")
                    ))
                })?;
                Ok(Some(Instruction::Task(task.name)))
            }
            (None, None) => Ok(self
                .query_instruction
                .as_ref()
                .filter(|s| !s.is_empty())
                .map(|s| Instruction::Text(s.clone()))),
        }
    }
}

/// Why two identities are not the same model, or `None` when they are.
pub fn identity_difference(stored: &ModelIdentity, found: &ModelIdentity) -> Option<String> {
    let what = if stored.weights_sha256 != found.weights_sha256 {
        format!(
            "weights sha256 {} vs {}",
            short(&stored.weights_sha256),
            short(&found.weights_sha256)
        )
    } else if stored.head_sha256 != found.head_sha256 {
        format!(
            "head sha256 {} vs {}",
            stored.head_sha256.as_deref().map_or("none", short),
            found.head_sha256.as_deref().map_or("none", short)
        )
    } else if stored.lora_sha256 != found.lora_sha256 {
        format!(
            "LoRA sha256 {} vs {}",
            stored.lora_sha256.as_deref().map_or("none", short),
            found.lora_sha256.as_deref().map_or("none", short)
        )
    } else if stored.model_type != found.model_type {
        format!("type {} vs {}", stored.model_type, found.model_type)
    } else if stored.pooling != found.pooling {
        format!("pooling {:?} vs {:?}", stored.pooling, found.pooling)
    } else if stored.dimension != found.dimension {
        format!("dimension {} vs {}", stored.dimension, found.dimension)
    } else if stored.max_length != found.max_length {
        format!("max length {} vs {}", stored.max_length, found.max_length)
    } else {
        return None;
    };
    Some(format!(
        "the collection was embedded with model `{}` ({}) but the model offered is `{}` ({}): {what}; \
         vectors of different models cannot be mixed (create a new collection for this model)",
        stored.name,
        stored.path.display(),
        found.name,
        found.path.display()
    ))
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

fn absolute(dir: &Path) -> Result<PathBuf> {
    std::fs::canonicalize(dir).map_err(|e| {
        Error::Embed(latentdb_embed::Error::Io {
            path: dir.to_path_buf(),
            source: e,
        })
    })
}

/// Loaded models, shared by the collections that use them.
#[derive(Default)]
pub(crate) struct Embedders {
    /// By model spec string (`default` or an absolute directory).
    loaded: Mutex<HashMap<String, Arc<Embedder>>>,
    models_dir: Option<PathBuf>,
}

impl std::fmt::Debug for Embedders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedders")
            .field("loaded", &self.loaded.lock().len())
            .finish()
    }
}

impl Embedders {
    /// A cache that loads models from `models_dir` (`None`: the default model cache).
    pub(crate) fn new(models_dir: Option<PathBuf>) -> Embedders {
        Embedders {
            loaded: Mutex::new(HashMap::new()),
            models_dir,
        }
    }

    /// Loads (once) the model for `spec`. Loading holds the cache lock: concurrent first uses
    /// wait for one load instead of loading twice.
    pub(crate) fn load(&self, spec: &ModelSpec) -> Result<Arc<Embedder>> {
        let key = match spec {
            ModelSpec::Default => "default".to_string(),
            ModelSpec::Dir(d) => absolute(d)?.to_string_lossy().into_owned(),
        };
        let mut loaded = self.loaded.lock();
        if let Some(e) = loaded.get(&key) {
            return Ok(e.clone());
        }
        let opts = LoadOptions {
            models_dir: self.models_dir.clone(),
            ..LoadOptions::default()
        };
        let spec = match spec {
            ModelSpec::Default => ModelSpec::Default,
            ModelSpec::Dir(_) => ModelSpec::Dir(PathBuf::from(&key)),
        };
        let e = Arc::new(Embedder::load_with(&spec, &opts)?);
        loaded.insert(key, e.clone());
        Ok(e)
    }
}

impl Database {
    /// Creates a collection whose documents and queries are embedded by `model` (`default` or
    /// a model directory). The dimension comes from the model (`spec.dimension` must be 0 or
    /// equal to it); the model's identity is stored with the collection.
    pub fn create_collection_with_model(
        &self,
        mut spec: CollectionSpec,
        model: &ModelSpec,
    ) -> Result<CollectionInfo> {
        let embedder = self.embedders().load(model)?;
        let dim = embedder.dimension();
        if spec.dimension != 0 && spec.dimension != dim {
            return Err(Error::InvalidArgument(format!(
                "dimension {} differs from the model's {dim}",
                spec.dimension
            )));
        }
        spec.dimension = dim;
        let settings = EmbedderSettings::new(model, &embedder)?;
        spec.embedder = serde_json::to_value(&settings)
            .map_err(|e| Error::InvalidArgument(format!("embedder settings: {e}")))?;
        self.create_collection(spec)
    }

    /// The embedder settings of a collection, `None` for a vectors-only collection.
    pub fn embedder_settings(&self, collection: &str) -> Result<Option<EmbedderSettings>> {
        let info = self.collection_info(collection)?;
        EmbedderSettings::of(collection, &info.embedder)
    }

    /// The collection's model, loaded on first use and checked against the stored identity;
    /// `None` for a vectors-only collection.
    pub fn embedder(&self, collection: &str) -> Result<Option<Arc<Embedder>>> {
        let Some(settings) = self.embedder_settings(collection)? else {
            return Ok(None);
        };
        let embedder = self.embedders().load(&settings.spec())?;
        if let Some(reason) = identity_difference(&settings.identity, embedder.identity()) {
            return Err(Error::ModelMismatch {
                collection: collection.to_string(),
                reason,
            });
        }
        Ok(Some(embedder))
    }

    /// Checks that `model` is the collection's model: an error naming both models when it is
    /// not (or when the collection has no embedder).
    pub fn check_model(&self, collection: &str, model: &ModelSpec) -> Result<Arc<Embedder>> {
        let Some(settings) = self.embedder_settings(collection)? else {
            return Err(Error::ModelMismatch {
                collection: collection.to_string(),
                reason: "it stores vectors only and has no model".into(),
            });
        };
        let offered = self.embedders().load(model)?;
        if let Some(reason) = identity_difference(&settings.identity, offered.identity()) {
            return Err(Error::ModelMismatch {
                collection: collection.to_string(),
                reason,
            });
        }
        Ok(offered)
    }

    /// Adds or replaces a named query instruction of a collection with an embedder.
    pub fn set_task(&self, collection: &str, name: &str, instruction: &str) -> Result<()> {
        let Some(mut settings) = self.embedder_settings(collection)? else {
            return Err(Error::InvalidArgument(format!(
                "collection {collection:?} has no embedder"
            )));
        };
        if name.is_empty() {
            return Err(Error::InvalidArgument("a task needs a name".into()));
        }
        settings
            .tasks
            .insert(name.to_string(), instruction.to_string());
        let value = serde_json::to_value(&settings)
            .map_err(|e| Error::InvalidArgument(format!("embedder settings: {e}")))?;
        self.update_embedder_settings(collection, value)
    }

    /// Fills in the vector of each document that has text and no vector, with the
    /// collection's model (passages carry no instruction), batched across the documents.
    /// Documents with a vector are left as they are; a vectors-only collection is left to
    /// storage validation.
    pub(crate) fn embed_documents(&self, collection: &str, docs: &mut [Document]) -> Result<()> {
        let todo: Vec<usize> = docs
            .iter()
            .enumerate()
            .filter(|(_, d)| d.vector.is_none() && d.text.is_some())
            .map(|(i, _)| i)
            .collect();
        if todo.is_empty() {
            return Ok(());
        }
        let Some(embedder) = self.embedder(collection)? else {
            return Ok(());
        };
        let texts: Vec<&str> = todo
            .iter()
            .map(|&i| docs[i].text.as_deref().unwrap_or(""))
            .collect();
        let opts = EmbedOptions {
            batch_size: EMBED_BATCH,
            ..EmbedOptions::default()
        };
        let vectors = embedder.embed(&texts, &opts)?;
        for (&i, v) in todo.iter().zip(vectors) {
            docs[i].vector = Some(v);
        }
        Ok(())
    }

    /// Requests with their text queries embedded (those with a vector are kept as they are).
    pub(crate) fn embed_queries<'r>(
        &self,
        collection: &str,
        reqs: &'r [SearchRequest],
    ) -> Result<Vec<Cow<'r, SearchRequest>>> {
        let mut out: Vec<Cow<'r, SearchRequest>> = reqs.iter().map(Cow::Borrowed).collect();
        let todo: Vec<usize> = (0..reqs.len())
            .filter(|&i| reqs[i].text.is_some())
            .collect();
        for r in reqs {
            if r.text.is_some() && r.vector.is_some() {
                return Err(Error::InvalidArgument(
                    "give a query vector or a query text, not both".into(),
                ));
            }
        }
        if todo.is_empty() {
            return Ok(out);
        }
        let Some(settings) = self.embedder_settings(collection)? else {
            return Err(Error::InvalidArgument(format!(
                "collection {collection:?} stores vectors only; text queries need a collection \
                 created with a model"
            )));
        };
        let embedder = self.embedder(collection)?.ok_or_else(|| {
            Error::InvalidArgument(format!("collection {collection:?} has no embedder"))
        })?;
        // Group by instruction so each group is one batched embed call.
        let mut groups: Vec<(Option<Instruction>, Vec<usize>)> = Vec::new();
        for &i in &todo {
            let instr = settings
                .query_instruction(reqs[i].task.as_deref(), reqs[i].instruction.as_deref())?;
            match groups.iter_mut().find(|(g, _)| *g == instr) {
                Some((_, members)) => members.push(i),
                None => groups.push((instr, vec![i])),
            }
        }
        for (instruction, members) in groups {
            let texts: Vec<&str> = members
                .iter()
                .map(|&i| reqs[i].text.as_deref().unwrap_or(""))
                .collect();
            let opts = EmbedOptions {
                instruction,
                batch_size: EMBED_BATCH,
                ..EmbedOptions::default()
            };
            let vectors = embedder.embed(&texts, &opts)?;
            for (&i, v) in members.iter().zip(vectors) {
                let mut r = reqs[i].clone();
                r.vector = Some(v);
                r.text = None;
                out[i] = Cow::Owned(r);
            }
        }
        Ok(out)
    }

    /// The ids of the chunks of parent documents `ids` (`{id}#{n}` with metadata `parent` =
    /// `id`), found by an id-range scan per parent.
    pub(crate) fn chunk_ids_of(&self, collection: &str, ids: &[&str]) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for id in ids {
            let prefix = format!("{id}#");
            let mut after = prefix.clone();
            loop {
                let page = self.scroll(collection, Some(&after), 256)?;
                let mut more = page.next_cursor.is_some();
                for r in &page.records {
                    if !r.id.starts_with(&prefix) {
                        more = false;
                        break;
                    }
                    if r.metadata.get("parent").and_then(Value::as_str) == Some(id) {
                        out.push(r.id.clone());
                    }
                }
                match (more, page.records.last()) {
                    (true, Some(last)) => after = last.id.clone(),
                    _ => break,
                }
            }
        }
        Ok(out)
    }
}
