//! `latentdb embed`, `latentdb model ...`, `latentdb bench embed`

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::process::ExitCode;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use latentdb::embed::{
    EmbedOptions, Embedder, Instruction, ModelSpec, bench, fetch_default, models_dir,
};

use crate::cli::{BenchEmbedArgs, EmbedArgs, ModelArg, ModelCommand};
use crate::output::Out;

fn load(model: &ModelArg) -> anyhow::Result<Embedder> {
    let spec = ModelSpec::parse(&model.model);
    Embedder::load(&spec).with_context(|| format!("cannot load model {:?}", model.model))
}

/// Lines read per embedding round, so memory stays bounded on long inputs.
const CHUNK_LINES: usize = 1024;

pub fn embed(a: EmbedArgs, out: &mut Out) -> anyhow::Result<ExitCode> {
    if a.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let embedder = load(&a.model)?;
    let opts = EmbedOptions {
        instruction: a.instruction.as_deref().map(Instruction::parse),
        max_length: a.max_length,
        batch_size: a.batch_size,
    };
    let stdin = std::io::stdin().lock();
    let mut texts = Vec::with_capacity(CHUNK_LINES);
    let mut stdout = std::io::stdout().lock();
    let mut flush = |texts: &mut Vec<String>| -> anyhow::Result<()> {
        for v in embedder.embed(texts, &opts)? {
            writeln!(stdout, "{}", Value::from(v))?;
        }
        texts.clear();
        Ok(())
    };
    for (i, line) in stdin.lines().enumerate() {
        let line = line.with_context(|| format!("cannot read line {}", i + 1))?;
        let text: String = serde_json::from_str(&line)
            .with_context(|| format!("line {} is not a JSON string (e.g. \"some text\")", i + 1))?;
        texts.push(text);
        if texts.len() == CHUNK_LINES {
            flush(&mut texts)?;
        }
    }
    if !texts.is_empty() {
        flush(&mut texts)?;
    }
    let _ = out;
    Ok(ExitCode::SUCCESS)
}

pub fn model(cmd: ModelCommand, out: &mut Out) -> anyhow::Result<ExitCode> {
    match cmd {
        ModelCommand::Fetch => {
            let dir = models_dir();
            if !out.is_json() {
                eprintln!("installing all-MiniLM-L6-v2 into {} ...", dir.display());
            }
            let path = fetch_default(&dir).context("cannot install the default model")?;
            out.either(&json!({"model": "default", "path": path}), || {
                format!("installed all-MiniLM-L6-v2 at {}", path.display())
            })?;
        }
        ModelCommand::Rollback(_) => anyhow::bail!("model rollback needs a database (--data DIR)"),
        ModelCommand::Info(m) => {
            let embedder = load(&m)?;
            let id = embedder.identity();
            let v = serde_json::to_value(id)?;
            out.either(&v, || {
                format!(
                    "{} ({}): dimension {}, pooling {:?}, max length {}, weights sha256 {}, path {}",
                    id.name,
                    id.model_type,
                    id.dimension,
                    id.pooling,
                    id.max_length,
                    id.weights_sha256,
                    id.path.display()
                )
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn bench(a: BenchEmbedArgs, out: &mut Out) -> anyhow::Result<ExitCode> {
    if a.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let f = File::open(&a.input).with_context(|| format!("cannot open {}", a.input.display()))?;
    let mut texts = Vec::new();
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let line = line.with_context(|| format!("cannot read line {}", i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let text = match serde_json::from_str::<Value>(&line) {
            Ok(Value::String(s)) => s,
            Ok(Value::Object(o)) => match o.get("text") {
                Some(Value::String(s)) => s.clone(),
                _ => bail!("line {}: a JSON object needs a \"text\" string", i + 1),
            },
            _ => line,
        };
        texts.push(text);
        if a.limit.is_some_and(|l| texts.len() >= l) {
            break;
        }
    }
    let embedder = load(&a.model)?;
    let opts = EmbedOptions {
        batch_size: a.batch_size,
        ..EmbedOptions::default()
    };
    let report = match a.threads {
        Some(t) => bench::run_with_threads(&embedder, &texts, &opts, t)?,
        None => bench::run(&embedder, &texts, &opts)?,
    };
    let mut v = serde_json::to_value(&report)?;
    v["model"] = json!(embedder.identity().name);
    out.either(&v, || report.to_string())?;
    Ok(ExitCode::SUCCESS)
}
