//! Collections with an embedder and corpus ingestion, with the tiny random-weight NV-Embed
//! checkpoint in `tests/fixtures/nvembed-tiny` (weights are random: only identical inputs
//! are expected to be near each other).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use latentdb::embed::{EmbedOptions, Embedder, Instruction, ModelSpec};
use latentdb::ingest::{ChunkOptions, IngestEvent, IngestOptions, Ingester};
use latentdb::{CollectionSpec, Database, Document, Error, Metric, SearchRequest};
use serde_json::{Value, json};

fn tiny() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nvembed-tiny")
}

fn text_collection(db: &Database, name: &str) {
    db.create_collection_with_model(
        CollectionSpec::new(name, 0, Metric::Cosine),
        &ModelSpec::Dir(tiny()),
    )
    .unwrap();
}

fn text_doc(id: &str, text: &str, meta: Value) -> Document {
    Document {
        id: Some(id.into()),
        text: Some(text.into()),
        metadata: meta,
        vector: None,
    }
}

/// A text query without instruction: the same embedding as a passage of that text.
/// A dense text query without an instruction (scores are the model's cosine similarities).
fn plain(q: &str) -> SearchRequest {
    SearchRequest {
        instruction: Some(String::new()),
        mode: Some(latentdb::SearchMode::Dense),
        ..SearchRequest::text(q)
    }
}

#[test]
fn upsert_text_search_text_and_filters() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    text_collection(&db, "docs");
    let info = db.collection_info("docs").unwrap();
    assert_eq!(info.dimension, 64);
    let settings = db.embedder_settings("docs").unwrap().unwrap();
    assert_eq!(settings.identity.model_type, "nvembed");
    assert_eq!(settings.identity.weights_sha256.len(), 64);

    let texts = [
        ("a", "Rust is a systems programming language.", "en"),
        ("b", "Vector databases store embeddings.", "en"),
        ("c", "Der schnelle braune Fuchs springt.", "de"),
        ("d", "Une phrase en français.", "fr"),
    ];
    let docs = texts
        .iter()
        .map(|(id, t, lang)| text_doc(id, t, json!({"lang": lang})))
        .collect();
    db.upsert("docs", docs).unwrap();
    // A given vector is stored as is.
    let v: Vec<f32> = (0..64).map(|i| (i as f32 * 0.37).sin()).collect();
    db.upsert(
        "docs",
        vec![Document::new("v", v.clone()).with_text("given")],
    )
    .unwrap();
    assert_eq!(
        db.get("docs", &["v"]).unwrap()[0].as_ref().unwrap().vector,
        v
    );
    let stored = db.get("docs", &["b"]).unwrap()[0].clone().unwrap();
    assert_eq!(stored.vector.len(), 64);

    for (id, text, _) in &texts {
        let hits = db.search("docs", &plain(text)).unwrap();
        assert_eq!(hits[0].id, *id);
        assert!(hits[0].score > 0.9999, "{}", hits[0].score);
        assert_eq!(hits[0].text.as_deref(), Some(*text));
    }
    // Without a mode, a text query on a collection with a model and text is hybrid: the
    // dense and lexical legs fused.
    for (id, text, _) in &texts {
        let req = SearchRequest {
            explain: true,
            ..SearchRequest::text(*text)
        };
        let hits = db.search("docs", &req).unwrap();
        assert_eq!(hits[0].id, *id);
        let e = hits[0].explain.unwrap();
        assert_eq!(e.fused_score, Some(hits[0].score));
        // The tiny model's weights are random: its rank with the query instruction is not
        // reliably first, the exact words are.
        assert!(e.dense_rank.is_some() && e.lexical_rank == Some(1), "{e:?}");
    }
    // Filters apply to text queries.
    let req = SearchRequest {
        filter: Some(json!({"lang": "de"})),
        ..plain(texts[0].1)
    };
    let hits = db.search("docs", &req).unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].id, "c");
    // Batched text queries.
    let reqs: Vec<SearchRequest> = texts.iter().map(|(_, t, _)| plain(t)).collect();
    let all = db.search_batch("docs", &reqs).unwrap();
    for ((id, _, _), hits) in texts.iter().zip(all) {
        assert_eq!(hits[0].id, *id);
    }

    // Caller errors.
    let both = SearchRequest {
        vector: Some(v.clone()),
        ..plain("x")
    };
    assert!(matches!(
        db.search("docs", &both),
        Err(Error::InvalidArgument(_))
    ));
    let bad_task = SearchRequest {
        task: Some("NoSuchTask".into()),
        ..SearchRequest::text("x")
    };
    let e = db.search("docs", &bad_task).unwrap_err();
    assert!(
        e.is_caller_fault() && e.to_string().contains("unknown task"),
        "{e}"
    );
    db.create_collection(CollectionSpec::new("vecs", 3, Metric::Cosine))
        .unwrap();
    let e = db.search("vecs", &SearchRequest::text("x")).unwrap_err();
    assert!(e.to_string().contains("vectors only"), "{e}");
    let e = db
        .upsert("vecs", vec![text_doc("t", "no vector", Value::Null)])
        .unwrap_err();
    assert!(e.is_caller_fault(), "{e}");

    // Reopened, the model is loaded lazily from the stored settings.
    drop(db);
    let db = Database::open(dir.path()).unwrap();
    let hits = db.search("docs", &plain(texts[1].1)).unwrap();
    assert_eq!(hits[0].id, "b");
}

#[test]
fn instruction_reaches_the_model_and_is_kept_out_of_pooling() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    text_collection(&db, "q");
    let e = Embedder::load(&ModelSpec::Dir(tiny())).unwrap();
    let q = "how do vector databases work";
    let instr = "Given a question, retrieve passages that answer the question";
    let opts = EmbedOptions {
        instruction: Some(Instruction::Text(instr.into())),
        ..EmbedOptions::default()
    };
    let (ids, skip) = e.tokenize(&[q], &opts).unwrap();
    assert!(
        skip > 5,
        "the instruction's tokens are masked from pooling: {skip}"
    );
    let masked = e.forward_batch(&[&ids[0]], skip).unwrap().remove(0);
    let unmasked = e.forward_batch(&[&ids[0]], 0).unwrap().remove(0);
    let no_instr = e.embed(&[q], &EmbedOptions::default()).unwrap().remove(0);
    db.upsert(
        "q",
        vec![
            Document::new("masked", masked),
            Document::new("unmasked", unmasked),
            Document::new("no-instruction", no_instr),
        ],
    )
    .unwrap();
    let cos = |hits: &[latentdb::SearchHit], id: &str| {
        hits.iter().find(|h| h.id == id).map(|h| h.score).unwrap()
    };
    // The query embedded by the database with this instruction is exactly the vector pooled
    // without the instruction tokens (and differs from pooling over them).
    let req = SearchRequest {
        instruction: Some(instr.into()),
        k: 3,
        exact: true,
        ..SearchRequest::text(q)
    };
    let hits = db.search("q", &req).unwrap();
    assert_eq!(hits[0].id, "masked");
    assert!(cos(&hits, "masked") > 0.99999);
    assert!(cos(&hits, "unmasked") < 0.9999, "{hits:?}");
    assert!(cos(&hits, "no-instruction") < 0.9999, "{hits:?}");
    // The collection's default query instruction for NV-Embed is this one; the `NQ` task is
    // NVIDIA's same instruction; a stored task takes precedence over built-in ones.
    let hits = db
        .search(
            "q",
            &SearchRequest {
                k: 3,
                exact: true,
                ..SearchRequest::text(q)
            },
        )
        .unwrap();
    assert_eq!(hits[0].id, "masked");
    let nq = SearchRequest {
        task: Some("NQ".into()),
        k: 3,
        exact: true,
        ..SearchRequest::text(q)
    };
    assert_eq!(db.search("q", &nq).unwrap()[0].id, "masked");
    db.set_task("q", "mine", "Retrieve nothing in particular")
        .unwrap();
    let mine = SearchRequest {
        task: Some("mine".into()),
        k: 3,
        exact: true,
        ..SearchRequest::text(q)
    };
    let hits = db.search("q", &mine).unwrap();
    assert!(
        cos(&hits, "masked") < 0.9999,
        "a different instruction, a different query"
    );
    // No instruction: the passage embedding.
    let hits = db
        .search(
            "q",
            &SearchRequest {
                k: 3,
                exact: true,
                ..plain(q)
            },
        )
        .unwrap();
    assert_eq!(hits[0].id, "no-instruction");
}

#[test]
fn model_mismatch_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    std::fs::create_dir(&model).unwrap();
    for entry in std::fs::read_dir(tiny()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), model.join(entry.file_name())).unwrap();
    }
    let data = dir.path().join("db");
    {
        let db = Database::open(&data).unwrap();
        db.create_collection_with_model(
            CollectionSpec::new("c", 0, Metric::Cosine),
            &ModelSpec::Dir(model.clone()),
        )
        .unwrap();
        db.upsert("c", vec![text_doc("a", "hello", Value::Null)])
            .unwrap();
        // The same weights elsewhere are the same model.
        db.check_model("c", &ModelSpec::Dir(tiny())).unwrap();
        db.create_collection(CollectionSpec::new("v", 64, Metric::Cosine))
            .unwrap();
        let e = db.check_model("v", &ModelSpec::Dir(tiny())).unwrap_err();
        assert!(matches!(e, Error::ModelMismatch { .. }), "{e}");
        // A dimension that disagrees with the model.
        let e = db
            .create_collection_with_model(
                CollectionSpec::new("d", 8, Metric::Cosine),
                &ModelSpec::Dir(tiny()),
            )
            .unwrap_err();
        assert!(e.is_caller_fault(), "{e}");
    }
    // Change one weight of the model the collection was created with.
    let weights = model.join("model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let n = bytes.len();
    bytes[n - 4..].copy_from_slice(&0.5f32.to_le_bytes());
    std::fs::set_permissions(
        &weights,
        std::fs::metadata(dir.path()).unwrap().permissions(),
    )
    .unwrap();
    std::fs::write(&weights, bytes).unwrap();
    let db = Database::open(&data).unwrap();
    let e = db
        .upsert("c", vec![text_doc("b", "world", Value::Null)])
        .unwrap_err();
    assert!(matches!(e, Error::ModelMismatch { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("weights sha256") && msg.contains("cannot be mixed"),
        "{msg}"
    );
    assert!(e.is_caller_fault());
    assert!(matches!(
        db.search("c", &SearchRequest::text("hello")),
        Err(Error::ModelMismatch { .. })
    ));
    assert!(matches!(
        db.check_model("c", &ModelSpec::Dir(model)),
        Err(Error::ModelMismatch { .. })
    ));
    // Vector queries still work on the stored vectors.
    let v = db.get("c", &["a"]).unwrap()[0].clone().unwrap().vector;
    assert_eq!(
        db.search("c", &SearchRequest::vector(v)).unwrap()[0].id,
        "a"
    );
}

fn write_corpus(dir: &Path) {
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    let para = |n: usize| {
        (0..n)
            .map(|i| {
                format!(
                    "Sentence number {i} talks about topic {} in some detail.",
                    i % 5
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    std::fs::write(
        dir.join("long.txt"),
        format!("{}\n\n{}\n\n{}", para(12), para(9), para(15)),
    )
    .unwrap();
    std::fs::write(
        dir.join("sub/notes.md"),
        "# Notes\n\nShort *markdown* note.",
    )
    .unwrap();
    std::fs::write(
        dir.join("sub/page.html"),
        "<html><head><title>Page</title><script>ignored()</script></head><body><p>Hello &amp; welcome.</p></body></html>",
    )
    .unwrap();
    std::fs::write(
        dir.join("docs.jsonl"),
        concat!(
            "{\"id\": \"j1\", \"text\": \"First JSON document.\", \"metadata\": {\"lang\": \"en\"}}\n",
            "{\"id\": \"j2\", \"text\": broken}\n",
            "{\"id\": \"j3\", \"text\": \"Third JSON document.\", \"metadata\": {\"lang\": \"de\"}}\n",
        ),
    )
    .unwrap();
    std::fs::write(dir.join("image.png"), [0u8, 1, 2]).unwrap();
}

fn opts() -> IngestOptions {
    IngestOptions {
        chunk: ChunkOptions {
            max_tokens: 64,
            overlap: 16,
        },
        batch_size: 8,
        ..IngestOptions::default()
    }
}

#[test]
fn ingest_chunks_skips_replaces_resumes_and_deletes_parents() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus");
    write_corpus(&corpus);
    let db = Database::open(dir.path().join("db")).unwrap();
    text_collection(&db, "rag");
    let problems = Mutex::new(Vec::new());
    let started = Mutex::new(None);
    let on_event = |e: IngestEvent<'_>| match e {
        IngestEvent::Problem(p) => problems.lock().unwrap().push(p.to_string()),
        IngestEvent::Started { files, .. } => *started.lock().unwrap() = Some(files),
        IngestEvent::Progress(_) => {}
    };
    let stats = Ingester::new(&db)
        .run_with("rag", std::slice::from_ref(&corpus), &opts(), &on_event)
        .unwrap();
    assert_eq!(*started.lock().unwrap(), Some(4));
    assert_eq!(stats.files, 4);
    assert_eq!(stats.documents, 5, "{stats:?}");
    assert_eq!(stats.errors, 1);
    let problems = problems.into_inner().unwrap();
    assert!(problems[0].contains("docs.jsonl:2"), "{problems:?}");
    let total = db.count("rag").unwrap();
    assert_eq!(total, stats.chunks);
    let source = format!("{}/long.txt", corpus.to_string_lossy());
    let long_text = std::fs::read_to_string(corpus.join("long.txt")).unwrap();
    let page = db.scroll("rag", Some(&format!("{source}#")), 1000).unwrap();
    let chunks: Vec<_> = page
        .records
        .iter()
        .filter(|r| r.id.starts_with(&source))
        .collect();
    assert!(chunks.len() >= 3, "{}", chunks.len());
    for r in &chunks {
        let m = &r.metadata;
        assert_eq!(m["parent"], source.as_str());
        assert_eq!(m["source"], source.as_str());
        assert_eq!(m["chunk_count"], chunks.len());
        let (s, e) = (
            m["char_start"].as_u64().unwrap() as usize,
            m["char_end"].as_u64().unwrap() as usize,
        );
        let by_offsets: String = long_text.chars().skip(s).take(e - s).collect();
        assert_eq!(Some(by_offsets.as_str()), r.text.as_deref());
        assert_eq!(r.id, format!("{source}#{}", m["chunk_index"]));
    }
    // JSONL metadata is kept and filterable; HTML was stripped.
    let j3 = db.get("rag", &["j3#0"]).unwrap()[0].clone().unwrap();
    assert_eq!(j3.metadata["lang"], "de");
    assert_eq!(j3.metadata["parent"], "j3");
    let hits = db
        .search(
            "rag",
            &SearchRequest {
                filter: Some(json!({"lang": "de"})),
                ..plain("Third JSON document.")
            },
        )
        .unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].id, "j3#0");
    let html_id = format!("{}/sub/page.html#0", corpus.to_string_lossy());
    let html = db.get("rag", &[html_id.as_str()]).unwrap()[0]
        .clone()
        .unwrap();
    assert_eq!(html.text.as_deref(), Some("Page\n\nHello & welcome."));
    let hits = db
        .search("rag", &plain("Page\n\nHello & welcome."))
        .unwrap();
    assert_eq!(hits[0].id, html_id);

    // Unchanged: everything skipped, nothing written.
    let again = Ingester::new(&db)
        .run("rag", std::slice::from_ref(&corpus), &opts())
        .unwrap();
    assert_eq!(
        (again.skipped, again.chunks, again.documents),
        (5, 0, 0),
        "{again:?}"
    );
    assert_eq!(db.count("rag").unwrap(), total);

    // Interrupted: a document's last chunk and another's whole chunk set missing; a resumed
    // ingest completes them without duplicates.
    let last = format!("{source}#{}", chunks.len() - 1);
    db.delete("rag", &[last.as_str(), "j1#0"]).unwrap();
    let resumed = Ingester::new(&db)
        .run("rag", std::slice::from_ref(&corpus), &opts())
        .unwrap();
    assert_eq!(resumed.documents, 2, "{resumed:?}");
    assert_eq!(db.count("rag").unwrap(), total);

    // Changed: a shorter long.txt replaces all its old chunks.
    std::fs::write(corpus.join("long.txt"), "Now a single short sentence.").unwrap();
    let changed = Ingester::new(&db)
        .run("rag", std::slice::from_ref(&corpus), &opts())
        .unwrap();
    assert_eq!(
        (changed.documents, changed.chunks, changed.skipped),
        (1, 1, 4),
        "{changed:?}"
    );
    assert_eq!(db.count("rag").unwrap(), total - chunks.len() as u64 + 1);
    assert!(db.get("rag", &[last.as_str()]).unwrap()[0].is_none());

    // Different chunking re-chunks everything (the chunks depend on it).
    let mut other = opts();
    other.chunk.max_tokens = 32;
    let rechunked = Ingester::new(&db)
        .run("rag", std::slice::from_ref(&corpus), &other)
        .unwrap();
    assert_eq!(rechunked.skipped, 0);

    // Deleting a parent deletes its chunks.
    let before = db.count("rag").unwrap();
    let deleted = db.delete("rag", &[source.as_str()]).unwrap();
    assert_eq!(deleted, [format!("{source}#0")]);
    assert_eq!(db.count("rag").unwrap(), before - 1);

    // A glob restricts what directories yield.
    let db2 = Database::open(dir.path().join("db2")).unwrap();
    text_collection(&db2, "md");
    let only_md = IngestOptions {
        glob: Some("*.md".into()),
        ..opts()
    };
    let s = Ingester::new(&db2)
        .run("md", std::slice::from_ref(&corpus), &only_md)
        .unwrap();
    assert_eq!((s.files, s.documents, s.chunks), (1, 1, 1));

    // Bad options and collections without a model are caller errors.
    let bad = IngestOptions {
        chunk: ChunkOptions {
            max_tokens: 8,
            overlap: 8,
        },
        ..opts()
    };
    assert!(
        Ingester::new(&db)
            .run("rag", std::slice::from_ref(&corpus), &bad)
            .unwrap_err()
            .is_caller_fault()
    );
    db.create_collection(CollectionSpec::new("plain", 4, Metric::Cosine))
        .unwrap();
    let e = Ingester::new(&db)
        .run("plain", std::slice::from_ref(&corpus), &opts())
        .unwrap_err();
    assert!(
        e.is_caller_fault() && e.to_string().contains("no model"),
        "{e}"
    );
}

/// The evaluator asks its cancel hook between batches: a hook that says stop fails the call
/// with a Cancelled error after the first batch of the corpus (which stays stored); without
/// the hook, the same evaluation runs to the end.
#[test]
fn an_evaluation_stops_when_its_cancel_hook_says_so() {
    use latentdb::eval::{BeirDataset, EvalOptions, Evaluator};
    use std::sync::atomic::{AtomicUsize, Ordering};

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("beir");
    std::fs::create_dir_all(data.join("qrels")).unwrap();
    let corpus: String = (0..600)
        .map(|i| {
            format!("{{\"_id\": \"d{i}\", \"title\": \"\", \"text\": \"document number {i}\"}}\n")
        })
        .collect();
    std::fs::write(data.join("corpus.jsonl"), corpus).unwrap();
    std::fs::write(
        data.join("queries.jsonl"),
        "{\"_id\": \"q1\", \"text\": \"number 7\"}\n",
    )
    .unwrap();
    std::fs::write(
        data.join("qrels/test.tsv"),
        "query-id\tcorpus-id\tscore\nq1\td7\t1\n",
    )
    .unwrap();
    let ds = BeirDataset::open(&data).unwrap();
    let db = Database::open(dir.path().join("db")).unwrap();
    text_collection(&db, "e");

    let asked = AtomicUsize::new(0);
    let stop = || {
        asked.fetch_add(1, Ordering::Relaxed);
        true
    };
    let e = Evaluator::new(&db)
        .cancel_when(&stop)
        .evaluate_beir("e", &ds, &EvalOptions::default(), &|_| {})
        .unwrap_err();
    assert_eq!(e.kind(), latentdb::ErrorKind::Cancelled, "{e}");
    assert_eq!(
        asked.load(Ordering::Relaxed),
        1,
        "asked once, after the first batch"
    );
    assert_eq!(db.count("e").unwrap(), 256, "the first batch stays stored");

    let never = || false;
    db.delete_all("e").unwrap();
    let report = Evaluator::new(&db)
        .cancel_when(&never)
        .evaluate_beir("e", &ds, &EvalOptions::default(), &|_| {})
        .unwrap();
    assert_eq!((report.ingested, report.metrics.queries), (600, 1));
}
