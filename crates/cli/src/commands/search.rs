//! `latentdb search | compact`

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};
use serde_json::{Value, json};

use latentdb::fusion::FusionMethod;
use latentdb::{Bm25Params, Database, HitExplain, SearchHit, SearchMode, SearchRequest};

use crate::cli::NameArg;
use crate::output::Out;

/// Arguments of `search`.
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// The collection name.
    pub name: String,
    /// The query vector as a JSON array of numbers, e.g. '[0.1, 0.2, 0.3]'. A dense search
    /// takes --vector or --text; lexical and hybrid searches may take both (the vector for
    /// the dense leg, the text for the lexical one).
    #[arg(long, value_name = "JSON", required_unless_present = "text")]
    pub vector: Option<String>,
    /// A text query: embedded with the collection's model for a dense search (collections
    /// created with one), matched by BM25 against the stored texts for a lexical search, both
    /// for a hybrid one.
    #[arg(long)]
    pub text: Option<String>,
    /// A task naming the query instruction (NQ, MSMARCO, ... or one stored with the
    /// collection); instruction models only.
    #[arg(long, requires = "text", conflicts_with = "instruction")]
    pub task: Option<String>,
    /// A query instruction sentence; instruction models only.
    #[arg(long, requires = "text")]
    pub instruction: Option<String>,
    /// How many results.
    #[arg(short, long, default_value_t = 10)]
    pub k: usize,
    /// Candidate list size (>= k); default: the collection's ef_search.
    #[arg(long)]
    pub ef: Option<usize>,
    /// A metadata filter, e.g. '{"year": {"$gte": 2020}, "lang": {"$in": ["en", "fr"]}}'.
    #[arg(long, value_name = "JSON")]
    pub filter: Option<String>,
    /// Brute-force search (exact, slower).
    #[arg(long)]
    pub exact: bool,
    /// Include each hit's vector.
    #[arg(long)]
    pub with_vectors: bool,
    #[command(flatten)]
    pub hybrid: HybridArgs,
    /// Show each hit's dense and lexical rank and score and its fused score.
    #[arg(long)]
    pub explain: bool,
}

/// A retrieval mode on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Nearest vectors (the query vector or the embedded query text).
    Dense,
    /// BM25 over the stored texts (needs --text; no model needed).
    Lexical,
    /// Dense and lexical, fused.
    Hybrid,
}

impl From<ModeArg> for SearchMode {
    fn from(m: ModeArg) -> SearchMode {
        match m {
            ModeArg::Dense => SearchMode::Dense,
            ModeArg::Lexical => SearchMode::Lexical,
            ModeArg::Hybrid => SearchMode::Hybrid,
        }
    }
}

/// A fusion method on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FusionArg {
    /// Reciprocal-rank fusion: weight / (rrf_k + rank).
    Rrf,
    /// Distribution-based score fusion (scores scaled by mean +- 3 standard deviations).
    Dbsf,
    /// Scores scaled to [0, 1] by each leg's minimum and maximum.
    Minmax,
}

impl From<FusionArg> for FusionMethod {
    fn from(f: FusionArg) -> FusionMethod {
        match f {
            FusionArg::Rrf => FusionMethod::Rrf,
            FusionArg::Dbsf => FusionMethod::Dbsf,
            FusionArg::Minmax => FusionMethod::MinMax,
        }
    }
}

/// The fusion overrides shared by `search` and `eval`: unset flags keep the collection's
/// lexical settings.
#[derive(Debug, Clone, Args)]
pub struct FusionArgs {
    /// Hybrid: how the dense and lexical results are fused [default: the collection's, minmax].
    #[arg(long, value_enum)]
    pub fusion: Option<FusionArg>,
    /// Hybrid with rrf: the rank constant K, > 0 [default: the collection's].
    #[arg(long, value_name = "K", allow_negative_numbers = true)]
    pub rrf_k: Option<f32>,
    /// Hybrid: the weights of the dense and lexical results, e.g. 1,0.5 [default: the
    /// collection's, 0.5,0.5].
    #[arg(long, value_name = "D,L", value_parser = parse_weights, allow_hyphen_values = true)]
    pub weights: Option<[f32; 2]>,
    /// Hybrid: candidates taken from each leg before fusion, 1 to 10000 (less than -k counts
    /// as -k) [default: the collection's, 100].
    #[arg(long, value_name = "N")]
    pub depth: Option<usize>,
}

/// The retrieval flags of `search`.
#[derive(Debug, Clone, Args)]
pub struct HybridArgs {
    /// dense, lexical or hybrid [default: with --text, on a collection whose lexical index
    /// holds documents, hybrid when there is a vector (--vector, or the text embedded by the
    /// collection's model) and lexical otherwise; dense in every other case].
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
    #[command(flatten)]
    pub fusion: FusionArgs,
    /// Lexical and hybrid: BM25's term-frequency saturation k1 [default: the collection's,
    /// 1.2].
    #[arg(long = "k1", value_name = "X", allow_negative_numbers = true)]
    pub k1: Option<f32>,
    /// Lexical and hybrid: BM25's length normalisation b, in [0, 1] [default: the
    /// collection's, 0.75].
    #[arg(long = "b", value_name = "X", allow_negative_numbers = true)]
    pub b: Option<f32>,
}

/// Parses `--weights D,L`: exactly two finite numbers, the dense and the lexical weight.
pub fn parse_weights(s: &str) -> Result<[f32; 2], String> {
    const USAGE: &str = "expected two numbers D,L (the dense and the lexical weight), e.g. 1,0.5";
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    let [d, l] = parts.as_slice() else {
        return Err(format!("{USAGE}; got {} value(s)", parts.len()));
    };
    let number = |x: &str| -> Result<f32, String> {
        match x.parse::<f32>() {
            Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
            _ => Err(format!("{USAGE}; {x:?} is not a number >= 0")),
        }
    };
    Ok([number(d)?, number(l)?])
}

impl HybridArgs {
    /// The BM25 parameters asked for: both flags, or one and the collection's value of the
    /// other (`None`: neither flag, the collection's).
    fn bm25(&self, db: &Database, collection: &str) -> anyhow::Result<Option<Bm25Params>> {
        Ok(match (self.k1, self.b) {
            (None, None) => None,
            (Some(k1), Some(b)) => Some(Bm25Params { k1, b }),
            (k1, b) => {
                let stored = db.lexical_settings(collection)?.bm25;
                Some(Bm25Params {
                    k1: k1.unwrap_or(stored.k1),
                    b: b.unwrap_or(stored.b),
                })
            }
        })
    }
}

/// A hit's explanation as JSON (absent parts are null).
pub fn explain_json(e: &HitExplain) -> Value {
    json!({
        "dense_rank": e.dense_rank,
        "dense_score": e.dense_score,
        "lexical_rank": e.lexical_rank,
        "lexical_score": e.lexical_score,
        "fused_score": e.fused_score,
    })
}

/// A hit's explanation as one readable column, e.g. `dense=#2:0.912 lexical=#1:3.210
/// fused=0.833` (`-` for a leg the hit was not in).
pub fn explain_text(e: &HitExplain) -> String {
    let leg = |rank: Option<usize>, score: Option<f32>| match (rank, score) {
        (Some(r), Some(s)) => format!("#{r}:{s:.6}"),
        (Some(r), None) => format!("#{r}"),
        _ => "-".into(),
    };
    let mut s = format!(
        "dense={} lexical={}",
        leg(e.dense_rank, e.dense_score),
        leg(e.lexical_rank, e.lexical_score)
    );
    if let Some(f) = e.fused_score {
        s.push_str(&format!(" fused={f:.6}"));
    }
    s
}

/// A hit as JSON: id, score, metadata, text, and the vector and explanation when present.
fn hit_json(hit: &SearchHit) -> Value {
    let mut v = json!({
        "id": hit.id,
        "score": hit.score,
        "metadata": hit.metadata,
        "text": hit.text,
    });
    if let Some(vec) = &hit.vector {
        v["vector"] = json!(vec);
    }
    if let Some(e) = &hit.explain {
        v["explain"] = explain_json(e);
    }
    v
}

pub fn search(a: SearchArgs, db: &Database, out: &mut Out) -> anyhow::Result<ExitCode> {
    let vector: Option<Vec<f32>> = a
        .vector
        .as_deref()
        .map(serde_json::from_str)
        .transpose()
        .context("--vector must be a JSON array of numbers, e.g. '[0.1, 0.2]'")?;
    let filter: Option<Value> = a
        .filter
        .as_deref()
        .map(serde_json::from_str)
        .transpose()
        .context("--filter is not valid JSON")?;
    let bm25 = a.hybrid.bm25(db, &a.name)?;
    let fusion = &a.hybrid.fusion;
    let req = SearchRequest {
        k: a.k,
        ef: a.ef,
        filter,
        exact: a.exact,
        with_vectors: a.with_vectors,
        vector,
        text: a.text,
        task: a.task,
        instruction: a.instruction,
        mode: a.hybrid.mode.map(SearchMode::from),
        fusion: fusion.fusion.map(FusionMethod::from),
        rrf_k: fusion.rrf_k,
        weights: fusion.weights,
        depth: fusion.depth,
        bm25,
        explain: a.explain,
        ..SearchRequest::default()
    };
    for (rank, hit) in db.search(&a.name, &req)?.into_iter().enumerate() {
        out.either(&hit_json(&hit), || {
            // With --explain, the explanation is a column after the score.
            let explain = hit
                .explain
                .as_ref()
                .map(|e| format!("\t{}", explain_text(e)))
                .unwrap_or_default();
            format!(
                "{}\t{}\t{:.6}{explain}\t{}\t{}",
                rank + 1,
                hit.id,
                hit.score,
                Value::Object(hit.metadata.clone()),
                hit.text.as_deref().unwrap_or("")
            )
        })?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn compact(a: NameArg, db: &Database, out: &mut Out) -> anyhow::Result<ExitCode> {
    let r = db.compact(&a.name)?;
    out.either(&serde_json::to_value(&r)?, || {
        format!(
            "compacted {}: dropped {} tombstones, {} points, {:.2}s",
            a.name, r.dropped, r.after_total, r.seconds
        )
    })?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn weights_round_trip_any_two_numbers_at_least_zero() {
        let samples = [0.0f32, 1e-7, 0.1, 0.5, 1.0, 2.5, 100.0, 1e6, 3.4e38];
        for &d in &samples {
            for &l in &samples {
                for s in [
                    format!("{d},{l}"),
                    format!(" {d} , {l} "),
                    format!("{d:e},{l:e}"),
                ] {
                    assert_eq!(parse_weights(&s), Ok([d, l]), "{s}");
                }
            }
        }
    }

    #[test]
    fn bad_weights_are_refused_never_panic() {
        for s in [
            "", "1", "1,", ",1", "1,2,3", "a,b", "1;2", "nan,1", "1,inf", "-1,1", "1,-0.5",
            "1e39,1", "0x1,1", "1,,2",
        ] {
            let e = parse_weights(s).expect_err(s);
            assert!(e.contains("expected two numbers D,L"), "{s}: {e}");
        }
        // Every short string over a hostile alphabet parses or fails; none panics, and what
        // parses is two finite numbers >= 0.
        let alphabet: Vec<char> = "0123456789.,-+e naif\u{e9}".chars().collect();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 9) as usize;
            let s: String = (0..len)
                .map(|i| alphabet[((x >> (i * 5)) % alphabet.len() as u64) as usize])
                .collect();
            if let Ok([d, l]) = parse_weights(&s) {
                assert!(
                    d.is_finite() && l.is_finite() && d >= 0.0 && l >= 0.0,
                    "{s}"
                );
            }
        }
    }

    #[derive(Debug, Parser)]
    struct Cmd {
        #[command(flatten)]
        args: SearchArgs,
    }

    #[test]
    fn flags_parse_into_the_request_fields() {
        let cmd = Cmd::try_parse_from([
            "search",
            "c",
            "--text",
            "q",
            "--vector",
            "[1,0]",
            "--mode",
            "hybrid",
            "--fusion",
            "minmax",
            "--rrf-k",
            "5",
            "--weights",
            "0.3,0.7",
            "--depth",
            "40",
            "--k1",
            "0.9",
            "--b",
            "0.4",
            "--explain",
        ])
        .expect("parses");
        let a = cmd.args;
        assert_eq!(a.hybrid.mode, Some(ModeArg::Hybrid));
        assert_eq!(
            a.hybrid.fusion.fusion.map(FusionMethod::from),
            Some(FusionMethod::MinMax)
        );
        assert_eq!(a.hybrid.fusion.rrf_k, Some(5.0));
        assert_eq!(a.hybrid.fusion.weights, Some([0.3, 0.7]));
        assert_eq!(a.hybrid.fusion.depth, Some(40));
        assert_eq!((a.hybrid.k1, a.hybrid.b), (Some(0.9), Some(0.4)));
        assert!(a.explain);
        // Negative numbers reach the range checks instead of being taken for flags.
        let cmd =
            Cmd::try_parse_from(["search", "c", "--text", "q", "--rrf-k", "-1"]).expect("parses");
        assert_eq!(cmd.args.hybrid.fusion.rrf_k, Some(-1.0));
        let e = Cmd::try_parse_from(["search", "c", "--text", "q", "--weights", "-1,1"])
            .expect_err("negative weight");
        assert!(e.to_string().contains("is not a number >= 0"), "{e}");
        assert!(Cmd::try_parse_from(["search", "c", "--text", "q", "--mode", "all"]).is_err());
    }
}
