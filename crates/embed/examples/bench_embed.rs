//! Measures embedding throughput of a model on texts of 10-60 words taken from the shared
//! SpamAssassin corpus (each document's words, cut to a length that cycles through 10..=60).
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
        "/../../../shared/datasets/spamassassin-subjects/corpus.jsonl"
    ))?;
    let mut texts = Vec::new();
    for (i, line) in corpus.lines().enumerate() {
        let doc: serde_json::Value = serde_json::from_str(line)?;
        let words: Vec<&str> = doc["text"]
            .as_str()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let want = 10 + (i * 7) % 51;
        if words.len() >= want {
            texts.push(words[..want].join(" "));
        }
        if texts.len() == n {
            break;
        }
    }
    println!(
        "model {} ({}), {} texts of 10-60 words, {} rayon threads",
        embedder.identity().name,
        embedder.identity().pooling,
        texts.len(),
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
