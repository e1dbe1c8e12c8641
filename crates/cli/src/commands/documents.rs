//! `latentdb upsert | get | delete | count | scroll`

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::process::ExitCode;

use anyhow::{Context, bail};
use serde_json::json;

use latentdb::{Database, Document, Durability};

use crate::cli::{DeleteArgs, DurabilityArg, IdsArgs, NameArg, ScrollArgs, UpsertArgs};
use crate::output::{Out, record_json};

pub fn upsert(a: UpsertArgs, db: &Database, out: &mut Out) -> anyhow::Result<ExitCode> {
    if a.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    // Fail before reading anything if the collection is unknown.
    db.collection_info(&a.name)?;
    let reader: Box<dyn BufRead> = if a.file.as_os_str() == "-" {
        Box::new(BufReader::new(std::io::stdin().lock()))
    } else {
        let f = File::open(&a.file).with_context(|| format!("cannot open {}", a.file.display()))?;
        Box::new(BufReader::new(f))
    };
    let durability = match a.durability {
        DurabilityArg::Sync => Durability::Sync,
        DurabilityArg::Buffered => Durability::Buffered,
    };
    let mut batch = Vec::with_capacity(a.batch_size);
    let mut first_line = 1usize;
    let mut upserted = 0usize;
    let commit = |batch: &mut Vec<Document>, first: usize, upserted: &mut usize| {
        let n = batch.len();
        db.upsert_with(&a.name, std::mem::take(batch), durability)
            .with_context(|| {
                format!(
                    "batch of lines {first}-{} rejected ({} documents upserted before it)",
                    first + n - 1,
                    upserted
                )
            })?;
        *upserted += n;
        anyhow::Ok(())
    };
    for (i, line) in reader.lines().enumerate() {
        let lineno = i + 1;
        let line = line.with_context(|| format!("cannot read line {lineno}"))?;
        if line.trim().is_empty() {
            continue;
        }
        if batch.is_empty() {
            first_line = lineno;
        }
        let doc: Document = serde_json::from_str(&line).with_context(|| {
            format!("line {lineno} is not a document ({upserted} documents upserted before it)")
        })?;
        batch.push(doc);
        if batch.len() == a.batch_size {
            commit(&mut batch, first_line, &mut upserted)?;
        }
    }
    if !batch.is_empty() {
        commit(&mut batch, first_line, &mut upserted)?;
    }
    if durability == Durability::Buffered {
        db.flush()?;
    }
    out.either(&json!({"upserted": upserted}), || {
        format!("upserted {upserted}")
    })?;
    Ok(ExitCode::SUCCESS)
}

pub fn get(a: IdsArgs, db: &Database, out: &mut Out) -> anyhow::Result<ExitCode> {
    let docs = db.get(&a.name, &a.ids)?;
    let mut missing = Vec::new();
    for (id, doc) in a.ids.iter().zip(&docs) {
        match doc {
            Some(r) => out.json(&record_json(r, true))?,
            None => missing.push(id.as_str()),
        }
    }
    if missing.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("error: not found: {}", missing.join(", "));
        Ok(ExitCode::FAILURE)
    }
}

pub fn delete(a: DeleteArgs, db: &Database, out: &mut Out) -> anyhow::Result<ExitCode> {
    let deleted = if a.all {
        db.delete_all(&a.name)?
    } else if let Some(filter) = &a.filter {
        let filter: serde_json::Value =
            serde_json::from_str(filter).context("--filter is not valid JSON")?;
        if filter.as_object().is_some_and(|m| m.is_empty()) {
            bail!("--filter '{{}}' matches every document: use --all to delete them all");
        }
        db.delete_by_filter(&a.name, &filter)?.len() as u64
    } else {
        db.delete(&a.name, &a.ids)?.len() as u64
    };
    out.either(&json!({"deleted": deleted}), || {
        format!("deleted {deleted}")
    })?;
    Ok(ExitCode::SUCCESS)
}

pub fn count(a: NameArg, db: &Database, out: &mut Out) -> anyhow::Result<ExitCode> {
    let n = db.count(&a.name)?;
    out.either(&json!({"count": n}), || n.to_string())?;
    Ok(ExitCode::SUCCESS)
}

pub fn scroll(a: ScrollArgs, db: &Database, out: &mut Out) -> anyhow::Result<ExitCode> {
    let page = db.scroll(&a.name, a.after.as_deref(), a.limit)?;
    for r in &page.records {
        out.json(&record_json(r, a.with_vectors))?;
    }
    let cursor = json!({"next_cursor": page.next_cursor});
    if out.is_json() {
        out.json(&cursor)?;
    } else if let Some(c) = &page.next_cursor {
        eprintln!("more: --after {c}");
    }
    Ok(ExitCode::SUCCESS)
}
