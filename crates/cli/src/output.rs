//! Printing results: JSON lines with `--json`, readable text otherwise.

use std::io::Write;

use serde_json::{Value, json};

use latentdb::{CollectionInfo, IndexParams, LexicalSettings, Record};

/// Where command output goes.
pub struct Out {
    json: bool,
    stdout: std::io::StdoutLock<'static>,
}

impl Out {
    pub fn new(json: bool) -> Self {
        Out {
            json,
            stdout: std::io::stdout().lock(),
        }
    }

    /// True in `--json` mode.
    pub fn is_json(&self) -> bool {
        self.json
    }

    /// Prints one JSON object on its own line.
    pub fn json(&mut self, value: &Value) -> anyhow::Result<()> {
        writeln!(self.stdout, "{value}")?;
        Ok(())
    }

    /// Prints a JSON object in `--json` mode and `text` otherwise.
    pub fn either(&mut self, value: &Value, text: impl FnOnce() -> String) -> anyhow::Result<()> {
        if self.json {
            self.json(value)
        } else {
            writeln!(self.stdout, "{}", text())?;
            Ok(())
        }
    }
}

/// A collection's information as JSON.
pub fn collection_json(info: &CollectionInfo) -> Value {
    let mut v = json!({
        "name": info.name,
        "count": info.count,
        "dimension": info.dimension,
        "metric": info.metric.as_str(),
        "created_ms": info.created_ms,
        "format_version": info.format_version,
    });
    if !info.embedder.is_null() {
        v["embedder"] = info.embedder.clone();
    }
    // The index settings in effect: the stored ones with every default filled in.
    v["index"] = IndexParams::from_json(&info.index)
        .ok()
        .and_then(|p| serde_json::to_value(p).ok())
        .unwrap_or_else(|| info.index.clone());
    // The lexical settings in effect: the stored ones with every default filled in.
    v["lexical"] = match LexicalSettings::from_json(&info.lexical) {
        Ok(s) => s.to_json(),
        Err(_) => info.lexical.clone(),
    };
    v
}

/// A collection's information as one readable line.
pub fn collection_text(info: &CollectionInfo) -> String {
    let quantization = IndexParams::from_json(&info.index).map_or("?", |p| p.quantization.as_str());
    format!(
        "{}\tdim={}\tmetric={}\tcount={}\tcreated_ms={}\tformat={}\tquantization={quantization}",
        info.name, info.dimension, info.metric, info.count, info.created_ms, info.format_version
    )
}

/// A document as JSON.
pub fn record_json(r: &Record, with_vector: bool) -> Value {
    let mut v = json!({
        "id": r.id,
        "text": r.text,
        "metadata": r.metadata,
    });
    if with_vector {
        v["vector"] = json!(r.vector);
    }
    v
}
