//! Measures embedding throughput of a model on texts of 10-60 words taken from the shared
//! SpamAssassin corpus: sentences by default, or (`BENCH_TEXTS=slices`) each document's first
//! 10..=60 words.
//!
//! `cargo run --release -p latentdb-embed --example bench_embed -- [MODEL] [N] [BATCH...]`
//! MODEL is `default` (fetched into the model cache if absent) or a model directory.
//! Set `RAYON_NUM_THREADS` to fix the thread count.

use latentdb_embed::fetch::{fetch_default, models_dir};
use latentdb_embed::{EmbedOptions, Embedder, LoadOptions, ModelSpec, bench};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let spec = ModelSpec::parse(&args.next().unwrap_or_else(|| "default".into()));
    let n: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(1024);
    let mut batches: Vec<usize> = args.map(|s| s.parse()).collect::<Result<_, _>>()?;
    if batches.is_empty() {
        batches = vec![1, 32];
    }
    if spec == ModelSpec::Default {
        fetch_default(&models_dir())?;
    }
    let embedder = Embedder::load_with(&spec, &LoadOptions::default())?;
    let corpus = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/datasets/spamassassin-subjects/corpus.jsonl"
    ))?;
    // Default: real sentences of 10-60 words (split at . ! ? and line breaks); with
    // BENCH_TEXTS=slices, each document's first 10..=60 words (cycling), which are longer.
    let slices = std::env::var("BENCH_TEXTS").is_ok_and(|v| v == "slices");
    let mut texts = Vec::new();
    'docs: for (i, line) in corpus.lines().enumerate() {
        let doc: serde_json::Value = serde_json::from_str(line)?;
        let body = doc["text"].as_str().unwrap_or("");
        if slices {
            let words: Vec<&str> = body.split_whitespace().collect();
            let want = 10 + (i * 7) % 51;
            if words.len() >= want {
                texts.push(words[..want].join(" "));
            }
        } else {
            for sentence in body.split(['.', '!', '?', '\n']) {
                let words: Vec<&str> = sentence.split_whitespace().collect();
                if (10..=60).contains(&words.len()) {
                    texts.push(words.join(" "));
                }
                if texts.len() == n {
                    break 'docs;
                }
            }
        }
        if texts.len() == n {
            break;
        }
    }
    println!(
        "model {} ({}), {} texts of 10-60 words ({}), {} rayon threads",
        embedder.identity().name,
        embedder.identity().pooling,
        texts.len(),
        if slices {
            "document slices"
        } else {
            "sentences"
        },
        rayon::current_num_threads()
    );
    for batch_size in batches {
        let opts = EmbedOptions {
            batch_size,
            ..EmbedOptions::default()
        };
        let report = bench::run(&embedder, &texts, &opts)?;
        println!("{report}");
    }
    Ok(())
}
