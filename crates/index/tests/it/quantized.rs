//! int8 quantization: recall with rescoring against brute force, per metric; the dump round
//! trip; rebuilds; small indexes that have not calibrated yet.

use latentdb_index::{
    FORMAT_VERSION, Hit, Index, IndexParams, Metric, QUANTIZED_FORMAT_VERSION, Quantization, bench,
};

use crate::common::data;

const N: usize = 20_000;
const DIM: usize = 64;
const QUERIES: usize = 200;

fn params(quantization: Quantization) -> IndexParams {
    IndexParams {
        quantization,
        ..IndexParams::default()
    }
}

fn build(metric: Metric, quantization: Quantization, flat: &[f32]) -> Index {
    let idx = Index::new(metric, DIM, params(quantization)).unwrap();
    // In batches, as the database feeds it: calibration happens within the first batch.
    let pts: Vec<(u32, &[f32])> = flat
        .chunks_exact(DIM)
        .enumerate()
        .map(|(i, v)| (i as u32, v))
        .collect();
    // On one thread the linking order is fixed, so recall is the same on every run (built in
    // parallel, it moved by about 0.02 from run to run, as much as the margin tested below).
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(|| {
        for batch in pts.chunks(5_000) {
            idx.insert_batch(batch).unwrap();
        }
    });
    idx
}

/// Searches for `k * oversampling` candidates and rescores them with the original vectors,
/// as the database does with vectors read from storage.
fn search_rescored(idx: &Index, base: &[f32], q: &[f32], k: usize, ef: usize) -> Vec<Hit> {
    let hits = idx.search(q, idx.candidates_for(k), Some(ef)).unwrap();
    idx.rescore(q, &hits, k, |id, buf: &mut Vec<f32>| {
        let start = id as usize * DIM;
        buf.extend_from_slice(&base[start..start + DIM]);
        Ok::<bool, latentdb_index::Error>(true)
    })
    .unwrap()
}

fn recall_at(
    idx: &Index,
    base: &[f32],
    queries: &[f32],
    truth: &[Vec<u32>],
    ef: usize,
    rescore: bool,
) -> f64 {
    let results: Vec<Vec<u32>> = queries
        .chunks_exact(DIM)
        .map(|q| {
            let hits = if rescore {
                search_rescored(idx, base, q, 10, ef)
            } else {
                idx.search(q, 10, Some(ef)).unwrap()
            };
            hits.iter().map(|h| h.id).collect()
        })
        .collect();
    bench::recall(&results, truth, 10)
}

#[test]
fn rescored_int8_recall_keeps_up_with_f32_at_ef_32_and_64() {
    let base = data(N, DIM, 42);
    let queries = data(QUERIES, DIM, 4242);
    for metric in [Metric::Cosine, Metric::L2, Metric::Dot] {
        let truth = bench::ground_truth(metric, DIM, &base, &queries, 10);
        let f32_idx = build(metric, Quantization::None, &base);
        let int8 = build(metric, Quantization::Int8, &base);
        assert!(int8.quantized() && !f32_idx.quantized());
        // Codes take a quarter of the f32 memory (plus one correction per point).
        let (a, b) = (int8.vector_bytes(), f32_idx.vector_bytes());
        assert_eq!(b, N * DIM * 4);
        assert_eq!(a, N * DIM + N * 4);
        // All the index holds: vectors or codes plus at least the layer-0 links (2M + 1
        // u32 per point) and ids; the int8 index saves what its vectors save.
        let (ma, mb) = (int8.memory_bytes(), f32_idx.memory_bytes());
        assert!(mb >= b + N * (2 * 16 + 1) * 4 + N * 4, "{mb}");
        assert!(ma >= a + N * (2 * 16 + 1) * 4 + N * 4, "{ma}");
        assert!(mb - ma >= (b - a) * 9 / 10, "f32 {mb}, int8 {ma}");
        for ef in [32, 64] {
            let full = recall_at(&f32_idx, &base, &queries, &truth, ef, false);
            let rescored = recall_at(&int8, &base, &queries, &truth, ef, true);
            let raw = recall_at(&int8, &base, &queries, &truth, ef, false);
            eprintln!(
                "{metric} ef {ef}: f32 {full:.4}, int8 rescored {rescored:.4}, int8 raw {raw:.4}"
            );
            // The target is 0.005 (measured on 100k x 384 by `latentdb bench ann`);
            // the test allows 0.015 on this smaller, harder set.
            assert!(
                rescored >= full - 0.015,
                "{metric} ef {ef}: rescored int8 recall {rescored} < f32 {full} - 0.015"
            );
        }
    }
}

#[test]
fn rescored_scores_are_exact_and_ordered() {
    let base = data(5_000, DIM, 7);
    let idx = build(Metric::Cosine, Quantization::Int8, &base);
    let exact = build(Metric::Cosine, Quantization::None, &base);
    for q in data(20, DIM, 8).chunks_exact(DIM) {
        let got = search_rescored(&idx, &base, q, 10, 64);
        assert_eq!(got.len(), 10);
        for w in got.windows(2) {
            assert!(w[0].score >= w[1].score);
        }
        let truth = exact.exact_search_filtered(q, 5_000, &|_| true).unwrap();
        for h in &got {
            let t = truth.iter().find(|t| t.id == h.id).unwrap();
            assert!(
                (t.score - h.score).abs() < 1e-5,
                "{} vs {}",
                t.score,
                h.score
            );
        }
    }
    // Stored vectors whose f32 squares underflow (components around 1e-30, valid under
    // cosine) are scored exactly too, through the checked path.
    let q = &base[..DIM];
    let hits = idx.search(q, 30, Some(64)).unwrap();
    let scaled = |scale: f32| {
        idx.rescore(q, &hits, 10, |id, buf: &mut Vec<f32>| {
            let start = id as usize * DIM;
            buf.extend(base[start..start + DIM].iter().map(|x| x * scale));
            Ok::<bool, latentdb_index::Error>(true)
        })
        .unwrap()
    };
    let (plain, tiny) = (scaled(1.0), scaled(1e-30));
    assert_eq!(plain.len(), tiny.len());
    for (a, b) in plain.iter().zip(&tiny) {
        assert_eq!(a.id, b.id);
        assert!(
            (a.score - b.score).abs() < 1e-5,
            "{} vs {}",
            a.score,
            b.score
        );
    }
    // A point the caller no longer has is dropped; a vector of the wrong size is internal.
    let hits = idx.search(&base[..DIM], 30, Some(64)).unwrap();
    let kept = idx
        .rescore(&base[..DIM], &hits, 10, |id, buf: &mut Vec<f32>| {
            if id % 2 == 0 {
                return Ok::<bool, latentdb_index::Error>(false);
            }
            let start = id as usize * DIM;
            buf.extend_from_slice(&base[start..start + DIM]);
            Ok(true)
        })
        .unwrap();
    assert!(!kept.is_empty() && kept.iter().all(|h| h.id % 2 == 1));
    let err = idx
        .rescore(&base[..DIM], &hits, 10, |_, buf: &mut Vec<f32>| {
            buf.push(1.0);
            Ok::<bool, latentdb_index::Error>(true)
        })
        .unwrap_err();
    assert!(!err.is_caller_fault(), "{err}");
}

#[test]
fn a_small_int8_index_stays_f32_until_it_calibrates() {
    let base = data(2_000, DIM, 3);
    let idx = Index::new(Metric::Cosine, DIM, params(Quantization::Int8)).unwrap();
    let pts: Vec<(u32, &[f32])> = base
        .chunks_exact(DIM)
        .enumerate()
        .map(|(i, v)| (i as u32, v))
        .collect();
    idx.insert_batch(&pts[..500]).unwrap();
    assert!(!idx.quantized());
    assert_eq!(idx.candidates_for(10), 10);
    let before = idx.search(&base[..DIM], 5, None).unwrap();
    assert_eq!(before[0].id, 0);
    idx.insert_batch(&pts[500..]).unwrap();
    assert!(idx.quantized());
    assert_eq!(idx.candidates_for(10), 30);
    // Points inserted before and after the switch are found.
    for id in [0u32, 499, 500, 1_999] {
        let q = &base[id as usize * DIM..(id as usize + 1) * DIM];
        let got = search_rescored(&idx, &base, q, 1, 64);
        assert_eq!(got[0].id, id);
    }
    // The decoded vector is close to the prepared one.
    let v = idx.vector(1_999).unwrap();
    let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 0.05, "{norm}");
}

#[test]
fn a_quantized_dump_round_trips_and_rebuilds_keep_the_codes() {
    let dir = tempfile::tempdir().unwrap();
    let base = data(6_000, DIM, 5);
    let idx = build(Metric::L2, Quantization::Int8, &base);
    for id in (0..6_000).step_by(7) {
        idx.delete(id);
    }
    idx.persist(dir.path(), 42).unwrap();
    let manifest = std::fs::read_to_string(dir.path().join("manifest.json")).unwrap();
    assert!(
        manifest.contains(&format!("\"format_version\": {QUANTIZED_FORMAT_VERSION}")),
        "{manifest}"
    );
    let (loaded, seq) = Index::load(dir.path()).unwrap().unwrap();
    assert_eq!(seq, 42);
    assert!(loaded.quantized());
    assert_eq!(loaded.params().quantization, Quantization::Int8);
    assert_eq!(loaded.vector_bytes(), idx.vector_bytes());
    let queries = data(30, DIM, 6);
    for q in queries.chunks_exact(DIM) {
        assert_eq!(
            idx.search(q, 30, Some(64)).unwrap(),
            loaded.search(q, 30, Some(64)).unwrap()
        );
    }
    // A rebuild drops the tombstones and keeps the calibration: same codes, same vectors.
    let before = idx.vector(1).unwrap();
    idx.rebuild();
    assert!(idx.quantized());
    assert_eq!(idx.stats().deleted, 0);
    assert_eq!(idx.vector(1).unwrap(), before);
    let got = search_rescored(&idx, &base, &base[DIM..2 * DIM], 1, 64);
    assert_eq!(got[0].id, 1);

    // An f32 dump keeps format version 1.
    let plain_dir = tempfile::tempdir().unwrap();
    build(Metric::L2, Quantization::None, &base[..100 * DIM])
        .persist(plain_dir.path(), 1)
        .unwrap();
    let manifest = std::fs::read_to_string(plain_dir.path().join("manifest.json")).unwrap();
    assert!(manifest.contains(&format!("\"format_version\": {FORMAT_VERSION}")));
}

#[test]
fn damaged_quantized_dumps_are_corrupt_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let base = data(2_000, DIM, 9);
    let idx = build(Metric::Cosine, Quantization::Int8, &base);
    idx.persist(dir.path(), 1).unwrap();
    let manifest_path = dir.path().join("manifest.json");
    let manifest = std::fs::read_to_string(&manifest_path).unwrap();
    let value: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    let edit = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v = value.clone();
        f(&mut v);
        std::fs::write(&manifest_path, serde_json::to_vec(&v).unwrap()).unwrap();
        let err = Index::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("corrupt"), "{err}");
    };
    // A range that is not ordered, a missing range, an index that does not ask for codes,
    // an f32 version with a range.
    edit(&|v| v["quantizer"] = serde_json::json!([1.0, -1.0]));
    edit(&|v| {
        v.as_object_mut().unwrap().remove("quantizer");
    });
    edit(&|v| v["params"]["quantization"] = serde_json::json!("none"));
    edit(&|v| v["format_version"] = serde_json::json!(FORMAT_VERSION));
    // A code above 127 (with a matching checksum) is caught by the parser.
    std::fs::write(&manifest_path, &manifest).unwrap();
    let name = value["vectors"]["name"].as_str().unwrap().to_string();
    let path = dir.path().join(&name);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[10] = 200;
    std::fs::write(&path, &bytes).unwrap();
    let mut v = value.clone();
    v["vectors"]["crc32"] = serde_json::json!(crc32(&bytes));
    std::fs::write(&manifest_path, serde_json::to_vec(&v).unwrap()).unwrap();
    let err = Index::load(dir.path()).unwrap_err();
    assert!(err.to_string().contains("above 127"), "{err}");
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(bytes);
    h.finalize()
}
