//! A second process opening the same directory gets a clear "locked" error.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use latentdb::Database;

/// The child: open the database, say so, and hold it until stdin closes.
#[test]
#[ignore = "child process of another test; spawned with --ignored --exact"]
fn lock_holder_child() {
    let Ok(dir) = std::env::var("LATENTDB_LOCK_CHILD") else {
        panic!("run only as a child process of another test");
    };
    let _db = Database::open(&dir).unwrap();
    println!("opened");
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

#[test]
fn second_process_gets_the_lock_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "lock::lock_holder_child",
            "--ignored",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("LATENTDB_LOCK_CHILD", dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        let line = lines.next().expect("child exited").unwrap();
        // libtest may print "test name ... " on the same line first.
        if line.ends_with("opened") {
            break;
        }
    }
    let err = Database::open(dir.path()).unwrap_err();
    assert!(
        matches!(
            err,
            latentdb::Error::Storage(latentdb::storage::Error::Locked { .. })
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("locked by another process"),
        "{err}"
    );
    assert!(!err.is_caller_fault());

    drop(child.stdin.take()); // let the child exit
    child.wait().unwrap();
    Database::open(dir.path()).expect("opens once the other process is gone");
}
