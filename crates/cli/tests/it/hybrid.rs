//! Lexical and hybrid retrieval from the command line: `search --mode/--explain/--weights` and
//! `collection create --stemmer/--stopwords/--no-lexical`.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn run(data: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_latentdb"))
        .arg("--data")
        .arg(data)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        pipe.write_all(s.as_bytes()).unwrap();
    }
    drop(pipe);
    child.wait_with_output().unwrap()
}

fn lines(o: &Output) -> Vec<Value> {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

fn fails_with(o: &Output, needle: &str) {
    assert!(!o.status.success(), "expected a failure");
    assert_ne!(o.status.code(), Some(0));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(needle), "{err}");
}

fn ids(hits: &[Value]) -> Vec<&str> {
    hits.iter().map(|h| h["id"].as_str().unwrap()).collect()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// A vectors-only collection (no model) with texts: lexical search needs no embedder.
fn fixture(d: &Path) {
    lines(&run(
        d,
        &["collection", "create", "c", "--dim", "3", "--json"],
        None,
    ));
    let docs = r#"{"id":"a","text":"the quick brown fox jumps over the fence","vector":[1,0,0]}
{"id":"b","text":"lazy dogs sleep all day long","vector":[0,1,0]}
{"id":"c","text":"a fox and a dog","vector":[0,0,1]}
{"id":"d","vector":[0.9,0.1,0]}"#;
    lines(&run(
        d,
        &["upsert", "c", "--file", "-", "--json"],
        Some(docs),
    ));
}

#[test]
fn search_mode_lexical_and_hybrid_with_explain() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fixture(d);

    let hits = lines(&run(
        d,
        &[
            "search", "c", "--text", "fox", "--mode", "lexical", "--json",
        ],
        None,
    ));
    // Only the texts with "fox", the shorter first; no explanation unless asked.
    assert_eq!(ids(&hits), ["c", "a"]);
    assert!(f(&hits[0]["score"]) > f(&hits[1]["score"]));
    assert!(hits.iter().all(|h| h.get("explain").is_none()));

    let hits = lines(&run(
        d,
        &[
            "search",
            "c",
            "--text",
            "fox",
            "--mode",
            "lexical",
            "--explain",
            "--json",
        ],
        None,
    ));
    for (i, h) in hits.iter().enumerate() {
        let e = &h["explain"];
        assert_eq!(e["lexical_rank"], i + 1, "{h}");
        assert!(
            (f(&e["lexical_score"]) - f(&h["score"])).abs() < 1e-4,
            "{h}"
        );
        assert_eq!(e["dense_rank"], Value::Null, "{h}");
        for k in ["dense_score", "fused_score"] {
            assert!(e.get(k).is_some(), "{h} lacks explain.{k}");
        }
    }

    // Hybrid: the caller's vector for the dense leg, the text for the lexical one.
    let hits = lines(&run(
        d,
        &[
            "search",
            "c",
            "--vector",
            "[0,0,1]",
            "--text",
            "fox",
            "--mode",
            "hybrid",
            "--fusion",
            "rrf",
            "--rrf-k",
            "2",
            "--weights",
            "1,1",
            "--depth",
            "10",
            "-k",
            "3",
            "--explain",
            "--json",
        ],
        None,
    ));
    assert_eq!(hits[0]["id"], "c");
    let e = &hits[0]["explain"];
    assert_eq!(e["dense_rank"], 1);
    assert_eq!(e["lexical_rank"], 1);
    // RRF with k = 2: 1/3 from each leg.
    assert!((f(&e["fused_score"]) - 2.0 / 3.0).abs() < 1e-4, "{e}");
    assert!((f(&hits[0]["score"]) - 2.0 / 3.0).abs() < 1e-4);

    // The lexical weight alone: the vector no longer matters.
    let hits = lines(&run(
        d,
        &[
            "search",
            "c",
            "--vector",
            "[0,1,0]",
            "--text",
            "fox",
            "--mode",
            "hybrid",
            "--fusion",
            "rrf",
            "--weights",
            "0,1",
            "-k",
            "2",
            "--json",
        ],
        None,
    ));
    assert_eq!(ids(&hits), ["c", "a"]);

    // BM25 parameters: b = 0 removes the length normalisation, so both score the same.
    let hits = lines(&run(
        d,
        &[
            "search", "c", "--text", "fox", "--mode", "lexical", "--b", "0", "--k1", "1.2",
            "--json",
        ],
        None,
    ));
    assert!((f(&hits[0]["score"]) - f(&hits[1]["score"])).abs() < 1e-4);

    // Text output: the explanation is a column after the score.
    let o = run(
        d,
        &[
            "search",
            "c",
            "--text",
            "fox",
            "--mode",
            "lexical",
            "--explain",
        ],
        None,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    let first: Vec<&str> = text.lines().next().unwrap().split('\t').collect();
    assert_eq!(&first[..2], ["1", "c"]);
    assert!(first[3].starts_with("dense=- lexical=#1:"), "{}", first[3]);

    // A plain vector search is unchanged: four fields, dense scores.
    let hits = lines(&run(
        d,
        &["search", "c", "--vector", "[1,0,0]", "-k", "2", "--json"],
        None,
    ));
    assert_eq!(ids(&hits), ["a", "d"]);
    assert_eq!(hits[0].as_object().unwrap().len(), 4);
}

#[test]
fn bad_search_flags_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fixture(d);
    let hybrid = ["search", "c", "--text", "fox", "--mode", "hybrid"];
    for (weights, needle) in [
        ("1", "expected two numbers D,L"),
        ("1,2,3", "expected two numbers D,L"),
        ("1,x", "\"x\" is not a number"),
        ("nan,1", "is not a number"),
        ("-1,1", "is not a number >= 0"),
    ] {
        let mut args = hybrid.to_vec();
        args.extend(["--weights", weights]);
        let o = run(d, &args, None);
        fails_with(&o, needle);
        fails_with(&o, "--weights");
    }
    // Caught by the library: both weights 0, an out-of-range rrf_k or b.
    for extra in [
        &["--weights", "0,0"][..],
        &["--rrf-k", "0"][..],
        &["--b", "2"][..],
    ] {
        let mut args = hybrid.to_vec();
        args.extend(extra);
        let o = run(d, &args, None);
        assert!(!o.status.success(), "{extra:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.starts_with("error: "), "{err}");
    }
    fails_with(
        &run(
            d,
            &["search", "c", "--text", "fox", "--mode", "fuzzy"],
            None,
        ),
        "invalid value 'fuzzy'",
    );
    fails_with(
        &run(
            d,
            &[
                "search", "c", "--text", "fox", "--mode", "hybrid", "--fusion", "avg",
            ],
            None,
        ),
        "invalid value 'avg'",
    );
    // A lexical search needs a text.
    let o = run(
        d,
        &["search", "c", "--vector", "[1,0,0]", "--mode", "lexical"],
        None,
    );
    assert!(!o.status.success());
}

#[test]
fn collection_create_takes_lexical_settings() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let created = lines(&run(
        d,
        &[
            "collection",
            "create",
            "stemmed",
            "--dim",
            "2",
            "--stemmer",
            "english",
            "--stopwords",
            "none",
            "--json",
        ],
        None,
    ));
    let lexical = &created[0]["lexical"];
    assert_eq!(lexical["enabled"], true, "{lexical}");
    assert_eq!(lexical["analyzer"]["stemmer"], "english", "{lexical}");
    assert_eq!(lexical["analyzer"]["stopwords"], "none", "{lexical}");

    lines(&run(
        d,
        &["collection", "create", "plain", "--dim", "2", "--json"],
        None,
    ));
    lines(&run(
        d,
        &[
            "collection",
            "create",
            "unstemmed",
            "--dim",
            "2",
            "--stemmer",
            "none",
            "--json",
        ],
        None,
    ));
    lines(&run(
        d,
        &[
            "collection",
            "create",
            "off",
            "--dim",
            "2",
            "--no-lexical",
            "--json",
        ],
        None,
    ));
    let info = lines(&run(d, &["collection", "info", "off", "--json"], None));
    assert_eq!(info[0]["lexical"]["enabled"], false);
    // The defaults are shown for a collection created without lexical flags.
    let list = lines(&run(d, &["collection", "list", "--json"], None));
    let plain = list.iter().find(|c| c["name"] == "plain").unwrap();
    assert_eq!(plain["lexical"]["enabled"], true);
    assert_eq!(plain["lexical"]["analyzer"]["stopwords"], "english");
    assert_eq!(plain["lexical"]["analyzer"]["stemmer"], "english");
    let unstemmed = list.iter().find(|c| c["name"] == "unstemmed").unwrap();
    assert_eq!(unstemmed["lexical"]["analyzer"]["stemmer"], Value::Null);
    assert_eq!(list.len(), 4);

    // The stemmer applies: "jumping" finds "jumps"; without it, it does not.
    for name in ["stemmed", "unstemmed"] {
        lines(&run(
            d,
            &["upsert", name, "--file", "-", "--json"],
            Some(r#"{"id":"j","text":"the cow jumps","vector":[1,0]}"#),
        ));
    }
    let hits = lines(&run(
        d,
        &[
            "search", "stemmed", "--text", "jumping", "--mode", "lexical", "--json",
        ],
        None,
    ));
    assert_eq!(ids(&hits), ["j"]);
    let hits = lines(&run(
        d,
        &[
            "search",
            "unstemmed",
            "--text",
            "jumping",
            "--mode",
            "lexical",
            "--json",
        ],
        None,
    ));
    assert!(hits.is_empty(), "{hits:?}");
    // Without a lexical index, a lexical search fails.
    let o = run(
        d,
        &["search", "off", "--text", "cow", "--mode", "lexical"],
        None,
    );
    assert!(!o.status.success());

    // Bad settings: an unknown stemmer, conflicting flags, an unknown stopword list; nothing
    // is created.
    fails_with(
        &run(
            d,
            &[
                "collection",
                "create",
                "x",
                "--dim",
                "2",
                "--stemmer",
                "klingon",
            ],
            None,
        ),
        "klingon",
    );
    fails_with(
        &run(
            d,
            &[
                "collection",
                "create",
                "x",
                "--dim",
                "2",
                "--no-lexical",
                "--stemmer",
                "english",
            ],
            None,
        ),
        "cannot be used with",
    );
    fails_with(
        &run(
            d,
            &[
                "collection",
                "create",
                "x",
                "--dim",
                "2",
                "--stopwords",
                "french",
            ],
            None,
        ),
        "invalid value 'french'",
    );
    assert_eq!(
        lines(&run(d, &["collection", "list", "--json"], None)).len(),
        4
    );
}
