//! Backup bench: capture stall, writer latency during a backup, backup and restore times, and
//! top-10 equality of a restored copy, on N × 384 documents. Prints one JSON object.
//!
//! ```text
//! cargo run --release --example backup_bench -- [DOCS=100000] [BASELINE_SECS=5] [BATCH=50]
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use latentdb::backup::{self, BackupOptions};
use latentdb::{CollectionSpec, Database, Document, Metric, SearchRequest};
use parking_lot::Mutex;

const DIM: usize = 384;

fn vector(seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..DIM)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 2000) as f32 / 1000.0 - 1.0
        })
        .collect()
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn top10(db: &Database, queries: &[Vec<f32>]) -> Vec<Vec<String>> {
    queries
        .iter()
        .map(|q| {
            let mut req = SearchRequest::vector(q.clone());
            req.k = 10;
            db.search("c", &req)
                .expect("search")
                .into_iter()
                .map(|h| h.id.into_string())
                .collect()
        })
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let docs: u64 = args
        .first()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(100_000);
    let baseline_secs: u64 = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(5);
    // The writer's batch size; one batch every BATCH ms makes 1,000 documents/s.
    let batch_size: u64 = args
        .get(2)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(50)
        .max(2);
    let tmp = tempfile::tempdir()?;
    let db = Arc::new(Database::open(tmp.path().join("db"))?);
    db.create_collection(CollectionSpec::new("c", DIM, Metric::Cosine))?;
    let t = Instant::now();
    for start in (0..docs).step_by(2_000) {
        let batch = (start..(start + 2_000).min(docs))
            .map(|n| Document::new(format!("d{n}"), vector(n)).with_text(format!("doc {n}")))
            .collect();
        db.upsert("c", batch)?;
    }
    let load_s = t.elapsed().as_secs_f64();
    db.flush()?; // the index dump now matches storage: a quiet backup includes it

    // 1. A backup of the quiet database, restored: top-10 of 100 queries equal.
    let queries: Vec<Vec<f32>> = (0..100).map(|i| vector(1_000_000_007 + i)).collect();
    let quiet = tmp.path().join("quiet");
    let quiet = quiet.to_str().ok_or("path")?.to_owned();
    let t = Instant::now();
    let quiet_report = db.backup(&quiet, &BackupOptions::default())?;
    let quiet_backup_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    backup::restore(&quiet, &tmp.path().join("restored-quiet"))?;
    let quiet_restore_s = t.elapsed().as_secs_f64();
    let source_top = top10(&db, &queries);
    let restored = Database::open(tmp.path().join("restored-quiet"))?;
    let same_top10 = top10(&restored, &queries)
        .iter()
        .zip(&source_top)
        .filter(|(a, b)| a == b)
        .count();
    drop(restored);

    // 2. A writer at 1,000 documents/s (a batch of BATCH every BATCH ms on a fixed schedule): its
    //    latency before the backups, and while backups run back to back for as long again.
    let stop = Arc::new(AtomicBool::new(false));
    let during = Arc::new(AtomicBool::new(false));
    let lat: Arc<Mutex<(Vec<f64>, Vec<f64>)>> = Arc::default();
    let writer = {
        let (db, stop, during, lat) = (db.clone(), stop.clone(), during.clone(), lat.clone());
        std::thread::spawn(move || {
            let mut n = docs;
            let mut next = Instant::now();
            let mut written = 0u64;
            let began = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let batch = (0..batch_size)
                    .map(|k| {
                        // Half new documents, half replacements.
                        let id = if k % 2 == 0 {
                            n + k
                        } else {
                            (n * 31 + k) % docs
                        };
                        Document::new(format!("d{id}"), vector(id ^ n))
                    })
                    .collect();
                db.upsert("c", batch).expect("upsert");
                let ms = t.elapsed().as_secs_f64() * 1e3;
                let mut l = lat.lock();
                if during.load(Ordering::Relaxed) {
                    l.1.push(ms);
                } else {
                    l.0.push(ms);
                }
                drop(l);
                n += batch_size;
                written += batch_size;
                next += Duration::from_millis(batch_size);
                if let Some(rest) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(rest);
                }
            }
            written as f64 / began.elapsed().as_secs_f64()
        })
    };
    std::thread::sleep(Duration::from_secs(baseline_secs));
    let (mut live_reports, mut live_backup_s) = (Vec::new(), Vec::new());
    let window = Instant::now();
    during.store(true, Ordering::Relaxed);
    while live_reports.is_empty() || window.elapsed() < Duration::from_secs(baseline_secs) {
        let live = tmp.path().join(format!("live-{}", live_reports.len()));
        let live = live.to_str().ok_or("path")?.to_owned();
        let t = Instant::now();
        live_reports.push((live.clone(), db.backup(&live, &BackupOptions::default())?));
        live_backup_s.push(t.elapsed().as_secs_f64());
    }
    during.store(false, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let writer_docs_per_s = writer.join().map_err(|_| "writer panicked")?;
    let (live, live_report) = live_reports.last().ok_or("no backup")?.clone();
    let t = Instant::now();
    backup::restore(&live, &tmp.path().join("restored-live"))?;
    let live_restore_s = t.elapsed().as_secs_f64();

    let (mut base, mut dur) = std::mem::take(&mut *lat.lock());
    let out = serde_json::json!({
        "docs": docs,
        "dim": DIM,
        "writer_batch": batch_size,
        "load_s": load_s,
        "quiet": {
            "backup_s": quiet_backup_s,
            "bytes": quiet_report.bytes,
            "index_included": quiet_report.collections[0].index_included,
            "restore_s": quiet_restore_s,
            "top10_equal_of_100": same_top10,
        },
        "under_writer": {
            "backups": live_reports.len(),
            "capture_ms_max": live_reports.iter().map(|(_, r)| r.capture_ms).fold(0.0, f64::max),
            "backup_s": live_backup_s,
            "writer_docs_per_s": writer_docs_per_s,
            "bytes": live_report.bytes,
            "index_included": live_report.collections[0].index_included,
            "restore_s": live_restore_s,
            "writer_batches_baseline": base.len(),
            "writer_p50_ms_baseline": percentile(&mut base, 0.5),
            "writer_p99_ms_baseline": percentile(&mut base, 0.99),
            "writer_batches_during": dur.len(),
            "writer_p50_ms_during": percentile(&mut dur, 0.5),
            "writer_p99_ms_during": percentile(&mut dur, 0.99),
            "writer_max_ms_during": dur.iter().copied().fold(0.0, f64::max),
        },
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
