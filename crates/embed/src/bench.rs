//! Throughput measurement for `latentdb bench embed`.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::embedder::{EmbedOptions, Embedder};
use crate::error::{Error, Result};

/// The result of a benchmark run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    /// Number of texts embedded.
    pub texts: usize,
    /// Number of tokens (special tokens included, padding excluded).
    pub tokens: usize,
    /// Batch size used.
    pub batch_size: usize,
    /// Threads of the pool the run used.
    pub threads: usize,
    /// Wall-clock seconds of the embedding (tokenization included, model loading excluded).
    pub seconds: f64,
    /// Texts per second.
    pub texts_per_s: f64,
    /// Tokens per second.
    pub tokens_per_s: f64,
    /// Peak resident memory of the process in bytes (Linux `VmHWM`), if known.
    pub peak_rss_bytes: Option<u64>,
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} texts ({} tokens) in {:.2} s at batch {} on {} threads: {:.1} texts/s, {:.0} tokens/s",
            self.texts,
            self.tokens,
            self.seconds,
            self.batch_size,
            self.threads,
            self.texts_per_s,
            self.tokens_per_s
        )?;
        if let Some(p) = self.peak_rss_bytes {
            write!(f, ", peak memory {:.0} MiB", p as f64 / (1024.0 * 1024.0))?;
        }
        Ok(())
    }
}

/// Embeds `texts` with `opts` once (after a one-batch warm-up) and reports throughput, on the
/// current rayon pool.
pub fn run<S: AsRef<str> + Sync>(
    embedder: &Embedder,
    texts: &[S],
    opts: &EmbedOptions,
) -> Result<BenchReport> {
    if texts.is_empty() {
        return Err(Error::InvalidArgument("no texts to benchmark".into()));
    }
    let warm = texts.len().min(opts.batch_size.max(1));
    embedder.embed(&texts[..warm], opts)?;
    let (ids, _) = embedder.tokenize(texts, opts)?;
    let tokens = ids.iter().map(Vec::len).sum();
    let start = Instant::now();
    let vectors = embedder.embed(texts, opts)?;
    let seconds = start.elapsed().as_secs_f64().max(1e-9);
    debug_assert_eq!(vectors.len(), texts.len());
    Ok(BenchReport {
        texts: texts.len(),
        tokens,
        batch_size: opts.batch_size,
        threads: rayon::current_num_threads(),
        seconds,
        texts_per_s: texts.len() as f64 / seconds,
        tokens_per_s: tokens as f64 / seconds,
        peak_rss_bytes: peak_rss_bytes(),
    })
}

/// [`run`] on a dedicated pool of `threads` threads. The BERT encoder's CPU kernels run on
/// that pool; candle's own kernels (other architectures, non-f32 weights) size their work from
/// `RAYON_NUM_THREADS` (else the physical cores), so set that too for an exact thread count
/// there.
pub fn run_with_threads<S: AsRef<str> + Sync>(
    embedder: &Embedder,
    texts: &[S],
    opts: &EmbedOptions,
    threads: usize,
) -> Result<BenchReport> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()
        .map_err(|e| Error::Internal(format!("cannot build a pool of {threads} threads: {e}")))?;
    pool.install(|| run(embedder, texts, opts))
}

/// Peak resident memory of this process (Linux), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
