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
use latentdb_storage::Document;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result, bounded};
use crate::search::{SearchMode, SearchRequest};

/// The instruction NV-Embed-style models put on queries when a request names none: NVIDIA's
/// instruction for question answering retrieval (the `NQ` task).
pub const DEFAULT_QUERY_INSTRUCTION: &str =
    "Given a question, retrieve passages that answer the question";

/// Texts per forward pass when embedding documents and queries.
pub const EMBED_BATCH: usize = 32;

/// The most task names an "unknown task" error lists.
const MAX_TASKS_NAMED: usize = 32;

/// The most named tasks a collection stores.
pub const MAX_TASKS: usize = 256;

/// The longest task name, in characters.
pub const MAX_TASK_NAME_CHARS: usize = 128;

/// The longest task instruction, in bytes.
pub const MAX_INSTRUCTION_BYTES: usize = 4096;

/// Checks a named task before it is stored with a collection's `settings`.
pub(crate) fn check_task(settings: &EmbedderSettings, name: &str, instruction: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::InvalidArgument("a task needs a name".into()));
    }
    if name.chars().count() > MAX_TASK_NAME_CHARS {
        return Err(Error::InvalidArgument(format!(
            "task name {:?} is over {MAX_TASK_NAME_CHARS} characters",
            bounded(name)
        )));
    }
    if instruction.len() > MAX_INSTRUCTION_BYTES {
        return Err(Error::InvalidArgument(format!(
            "the instruction of task {:?} is {} bytes, the limit is {MAX_INSTRUCTION_BYTES}",
            bounded(name),
            instruction.len()
        )));
    }
    if !settings.tasks.contains_key(name) && settings.tasks.len() >= MAX_TASKS {
        return Err(Error::ResourceExhausted(format!(
            "the collection has {MAX_TASKS} tasks, the limit"
        )));
    }
    Ok(())
}

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
                    let mut known: Vec<String> = self.tasks.keys().map(|k| bounded(k)).collect();
                    known.extend(tasks::tasks().into_iter().map(|t| t.name));
                    let more = known.len().saturating_sub(MAX_TASKS_NAMED);
                    known.truncate(MAX_TASKS_NAMED);
                    if more > 0 {
                        known.push(format!("and {more} more"));
                    }
                    Error::InvalidArgument(format!(
                        "unknown task `{}`; known tasks: {}",
                        bounded(name),
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
        bounded(&stored.name),
        bounded(&stored.path.to_string_lossy()),
        bounded(&found.name),
        bounded(&found.path.to_string_lossy())
    ))
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

fn absolute(dir: &Path) -> Result<PathBuf> {
    std::fs::canonicalize(dir).map_err(|e| match e.kind() {
        // A directory the caller named that is not there is theirs to fix.
        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory => {
            Error::NotFound(format!(
                "model directory {:?} does not exist",
                bounded(&dir.to_string_lossy())
            ))
        }
        std::io::ErrorKind::InvalidFilename => Error::InvalidArgument(format!(
            "model directory {:?} is not a valid path: {e}",
            bounded(&dir.to_string_lossy())
        )),
        _ => Error::Embed(latentdb_embed::Error::Io {
            path: dir.to_path_buf(),
            source: e,
        }),
    })
}

/// Loaded models, shared by the collections that use them, at most `max` at a time.
///
/// The cache holds each model by its spec; a model is *in use* while a caller holds its
/// `Arc` (an embedding call, a tuning run). Loading a model past the limit evicts the least
/// recently used model not in use; when every loaded model is in use, the load fails with
/// [`Error::ResourceExhausted`] instead of growing memory without bound.
pub(crate) struct Embedders {
    loaded: Mutex<Loaded>,
    models_dir: Option<PathBuf>,
    allow_paths: bool,
    max: usize,
}

/// The cache's state: models by spec string (`default` or an absolute directory), each with
/// the tick of its last use.
#[derive(Default)]
struct Loaded {
    models: HashMap<String, (Arc<Embedder>, u64)>,
    tick: u64,
}

impl std::fmt::Debug for Embedders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedders")
            .field("loaded", &self.loaded.lock().models.len())
            .field("max", &self.max)
            .field("allow_paths", &self.allow_paths)
            .finish()
    }
}

impl Embedders {
    /// A cache that loads models from `models_dir` (`None`: the default model cache), keeps
    /// at most `max` loaded, and (unless `allow_paths`) lets callers name only models under
    /// the models directory.
    pub(crate) fn new(models_dir: Option<PathBuf>, allow_paths: bool, max: usize) -> Embedders {
        Embedders {
            loaded: Mutex::new(Loaded::default()),
            models_dir,
            allow_paths,
            max: max.max(1),
        }
    }

    /// The models root: where `default` and, when paths are not allowed, every model a caller
    /// names must be.
    fn root(&self) -> PathBuf {
        self.models_dir
            .clone()
            .unwrap_or_else(latentdb_embed::models_dir)
    }

    /// The spec to load for a model a *caller* named (creating a collection, offering a model
    /// for ingestion), under the database's model path policy. A collection's stored spec is
    /// not checked again: it was accepted when the collection was created.
    pub(crate) fn caller_spec(&self, spec: &ModelSpec) -> Result<ModelSpec> {
        let ModelSpec::Dir(dir) = spec else {
            return Ok(ModelSpec::Default);
        };
        if self.allow_paths {
            return Ok(spec.clone());
        }
        let plain = dir.components().next().is_some()
            && dir
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !plain {
            return Err(Error::FailedPrecondition(format!(
                "model {:?} is not allowed: this database loads only `default` or a model \
                 named by a relative path (no `..`) under its models directory; the server's \
                 operator can allow any directory with --allow-model-paths",
                bounded(&dir.to_string_lossy())
            )));
        }
        Ok(ModelSpec::Dir(self.root().join(dir)))
    }

    /// Loads (once) the model for `spec`, evicting the least recently used idle model when
    /// the cache is full. Loading holds the cache lock: concurrent first uses wait for one
    /// load instead of loading twice.
    pub(crate) fn load(&self, spec: &ModelSpec) -> Result<Arc<Embedder>> {
        let key = match spec {
            ModelSpec::Default => "default".to_string(),
            ModelSpec::Dir(d) => absolute(d)?.to_string_lossy().into_owned(),
        };
        let mut guard = self.loaded.lock();
        let loaded = &mut *guard;
        loaded.tick += 1;
        if let Some((e, used)) = loaded.models.get_mut(&key) {
            *used = loaded.tick;
            return Ok(e.clone());
        }
        if loaded.models.len() >= self.max {
            // Only the cache holds an idle model's `Arc`.
            let idle = loaded
                .models
                .iter()
                .filter(|(_, (e, _))| Arc::strong_count(e) == 1)
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone());
            match idle {
                Some(k) => {
                    tracing::info!(model = %k, "unloading the least recently used model");
                    loaded.models.remove(&k);
                }
                None => {
                    return Err(Error::ResourceExhausted(format!(
                        "{} models are loaded and all in use (the limit is {}); retry when a \
                         request finishes",
                        loaded.models.len(),
                        self.max
                    )));
                }
            }
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
        loaded.models.insert(key, (e.clone(), loaded.tick));
        Ok(e)
    }
}

/// Fills in the vector of each document that has text and no vector with `embedder`
/// (passages carry no instruction), batched across the documents; true when any was.
pub(crate) fn embed_passages(embedder: &Embedder, docs: &mut [Document]) -> Result<bool> {
    let todo: Vec<usize> = needs_embedding(docs);
    if todo.is_empty() {
        return Ok(false);
    }
    let texts: Vec<&str> = todo
        .iter()
        .map(|&i| docs[i].text.as_deref().unwrap_or(""))
        .collect();
    let opts = EmbedOptions {
        batch_size: EMBED_BATCH,
        ..EmbedOptions::default()
    };
    let vectors = embed_recorded(embedder, &texts, &opts)?;
    for (&i, v) in todo.iter().zip(vectors) {
        docs[i].vector = Some(v);
    }
    Ok(true)
}

/// `embedder.embed`, recording the batch's duration and text count per model
/// (`latentdb_embed_batch_duration_seconds`, `latentdb_embed_texts_total`).
fn embed_recorded(
    embedder: &Embedder,
    texts: &[&str],
    opts: &EmbedOptions,
) -> Result<Vec<Vec<f32>>> {
    let model = embedder.identity().name.clone();
    let _span = tracing::debug_span!("embed", model = %model, texts = texts.len()).entered();
    let start = std::time::Instant::now();
    let vectors = embedder.embed(texts, opts)?;
    metrics::histogram!("latentdb_embed_batch_duration_seconds", "model" => model.clone())
        .record(start.elapsed().as_secs_f64());
    metrics::counter!("latentdb_embed_texts_total", "model" => model).increment(texts.len() as u64);
    Ok(vectors)
}

/// The documents that have text and no vector.
pub(crate) fn needs_embedding(docs: &[Document]) -> Vec<usize> {
    docs.iter()
        .enumerate()
        .filter(|(_, d)| d.vector.is_none() && d.text.is_some())
        .map(|(i, _)| i)
        .collect()
}

/// Checks that no dense request gives both a vector and a text; the indexes of those whose
/// text must be embedded (a text and no vector, not a lexical search).
pub(crate) fn text_queries(reqs: &[SearchRequest]) -> Result<Vec<usize>> {
    if reqs
        .iter()
        .any(|r| r.text.is_some() && r.vector.is_some() && r.mode == Some(SearchMode::Dense))
    {
        return Err(Error::InvalidArgument(
            "a dense search takes a query vector or a query text, not both".into(),
        ));
    }
    Ok((0..reqs.len())
        .filter(|&i| {
            let r = &reqs[i];
            r.text.is_some() && r.vector.is_none() && r.mode != Some(SearchMode::Lexical)
        })
        .collect())
}

/// Embeds the text queries `todo` of `reqs` into `out` with the collection's `settings` and
/// `embedder`, one batched call per distinct query instruction.
pub(crate) fn embed_query_texts<'r>(
    settings: &EmbedderSettings,
    embedder: &Embedder,
    reqs: &'r [SearchRequest],
    todo: &[usize],
    out: &mut [Cow<'r, SearchRequest>],
) -> Result<()> {
    let mut groups: Vec<(Option<Instruction>, Vec<usize>)> = Vec::new();
    for &i in todo {
        let instr =
            settings.query_instruction(reqs[i].task.as_deref(), reqs[i].instruction.as_deref())?;
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
        let vectors = embed_recorded(embedder, &texts, &opts)?;
        for (&i, v) in members.iter().zip(vectors) {
            let mut r = reqs[i].clone();
            // The text stays: the lexical leg of a hybrid search needs it.
            r.vector = Some(v);
            out[i] = Cow::Owned(r);
        }
    }
    Ok(())
}
