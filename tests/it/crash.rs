//! Crash safety: a child process upserts batches and reports each acknowledged one; it is killed
//! with SIGKILL mid-run, 20 times over the same database. After each kill every acknowledged
//! document is present and intact, and the database opens without error.
//!
//! The child is this same test binary, re-executed with `LATENTDB_CRASH_CHILD` set.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use latentdb::{CollectionSpec, Database, Metric};

const DIM: usize = 32;
const BATCH: u64 = 64;

/// The child: upsert batches forever, printing `ack R B` after batch B of round R returns.
#[test]
#[ignore = "child process of another test; spawned with --ignored --exact"]
fn crash_child() {
    let Ok(dir) = std::env::var("LATENTDB_CRASH_CHILD") else {
        panic!("run only as a child process of another test");
    };
    let round: u64 = std::env::var("LATENTDB_CRASH_ROUND")
        .unwrap()
        .parse()
        .unwrap();
    let db = Database::open(&dir).unwrap();
    if db.collection_info("c").is_err() {
        db.create_collection(CollectionSpec::new("c", DIM, Metric::Cosine))
            .unwrap();
    }
    for batch in 0.. {
        // Each round writes its own id range; every third batch also replaces documents of
        // the previous round with identical content, so replaces are exercised too.
        let base = (round * 1_000 + batch) * BATCH;
        let mut docs: Vec<_> = (base..base + BATCH)
            .map(|n| crate::common::doc(n, DIM))
            .collect();
        if round > 0 && batch.is_multiple_of(3) {
            let old = ((round - 1) * 1_000 + batch) * BATCH;
            docs.extend((old..old + 8).map(|n| crate::common::doc(n, DIM)));
        }
        db.upsert("c", docs).unwrap();
        println!("@ack {round} {batch}");
    }
}

#[test]
fn acknowledged_writes_survive_sigkill_20_times() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked: Vec<(u64, u64)> = Vec::new();
    for round in 0..20u64 {
        let mut child = Command::new(&exe)
            .args([
                "crash::crash_child",
                "--ignored",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("LATENTDB_CRASH_CHILD", dir.path())
            .env("LATENTDB_CRASH_ROUND", round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        // Kill after a varying number of acknowledgements, so the kill lands at different
        // points of a write.
        let kill_after = 1 + (round * 7) % 5;
        let mut this_round = 0;
        let started = Instant::now();
        while this_round < kill_after {
            let line = lines.next().expect("child exited early").unwrap();
            if let Some(ack) = parse_ack(&line) {
                acked.push(ack);
                this_round += 1;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "child too slow"
            );
        }
        child.kill().unwrap(); // SIGKILL
        // Acknowledgements already in the pipe count too.
        for line in lines.map_while(Result::ok) {
            acked.extend(parse_ack(&line));
        }
        child.wait().unwrap();

        let db = Database::open(dir.path()).expect("database must open after a crash");
        let mut expected = 0;
        for &(r, b) in &acked {
            let base = (r * 1_000 + b) * BATCH;
            let ids: Vec<String> = (base..base + BATCH)
                .map(|n| format!("doc-{n:08}"))
                .collect();
            for (n, got) in (base..).zip(db.get("c", &ids).unwrap()) {
                let rec = got.unwrap_or_else(|| panic!("round {round}: acknowledged doc {n} lost"));
                crate::common::assert_intact(&rec, n, DIM);
            }
            expected += BATCH;
        }
        let count = db.count("c").unwrap();
        assert!(
            count >= expected,
            "round {round}: count {count} < acknowledged {expected}"
        );
        // The count agrees with what is actually stored.
        let mut scrolled = 0;
        let mut cursor = None;
        loop {
            let page = db.scroll("c", cursor.as_deref(), 5_000).unwrap();
            scrolled += page.records.len() as u64;
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(
            scrolled, count,
            "round {round}: stored documents and count disagree"
        );
    }
    assert!(acked.len() >= 20 * 2);
}

/// Parses `@ack R B` anywhere in a line (libtest may print "test name ... " before it).
fn parse_ack(line: &str) -> Option<(u64, u64)> {
    let rest = &line[line.find("@ack ")? + 5..];
    let mut it = rest.split(' ').map(|x| x.trim().parse::<u64>());
    Some((it.next()?.ok()?, it.next()?.ok()?))
}
