//! Loading checkpoint tensors from `model.safetensors` or a sharded index.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;

use crate::error::{Error, Result, read_json};

const SINGLE: &str = "model.safetensors";
const INDEX: &str = "model.safetensors.index.json";

#[derive(Deserialize)]
struct Index {
    weight_map: HashMap<String, String>,
}

/// The weight files of a model directory: one `model.safetensors`, or the shards named by
/// `model.safetensors.index.json`.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join(SINGLE);
    if single.exists() {
        return Ok(vec![single]);
    }
    let index_path = dir.join(INDEX);
    if !index_path.exists() {
        return Err(Error::MissingFile(single));
    }
    let index: Index = read_json(&index_path)?;
    let shards: BTreeSet<&String> = index.weight_map.values().collect();
    shards
        .into_iter()
        .map(|s| {
            if s.contains('/') || s.contains('\\') || s.starts_with('.') {
                Err(Error::Weights(format!(
                    "bad shard name `{}` in {INDEX}",
                    crate::error::bounded(s)
                )))
            } else {
                Ok(dir.join(s))
            }
        })
        .collect()
}

/// The names of all tensors a model directory stores, read from the index or from the
/// single file's header (no tensor data is read).
pub fn weight_names(dir: &Path) -> Result<BTreeSet<String>> {
    let single = dir.join(SINGLE);
    if !single.exists() {
        let index_path = dir.join(INDEX);
        if index_path.exists() {
            let index: Index = read_json(&index_path)?;
            return Ok(index.weight_map.into_keys().collect());
        }
        return Err(Error::MissingFile(single));
    }
    let header = read_header(&single)?;
    Ok(header
        .as_object()
        .map(|o| o.keys().filter(|k| *k != "__metadata__").cloned().collect())
        .unwrap_or_default())
}

fn read_header(path: &Path) -> Result<serde_json::Value> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(|e| Error::io(path, e))?;
    let n = u64::from_le_bytes(len);
    if n > 100_000_000 {
        return Err(Error::Weights(format!(
            "{}: implausible header size {n}",
            crate::error::shown(path)
        )));
    }
    let mut buf = vec![0u8; n as usize];
    f.read_exact(&mut buf).map_err(|e| Error::io(path, e))?;
    serde_json::from_slice(&buf).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Loads every tensor of a model directory onto `device`, converted to `dtype`.
pub(crate) fn load_dir(
    dir: &Path,
    device: &Device,
    dtype: DType,
) -> Result<HashMap<String, Tensor>> {
    let mut all = HashMap::new();
    for file in weight_files(dir)? {
        if !file.exists() {
            return Err(Error::MissingFile(file));
        }
        let tensors = candle_core::safetensors::load(&file, device)
            .map_err(|e| Error::Weights(format!("{}: {e}", crate::error::shown(&file))))?;
        for (name, t) in tensors {
            let t = if t.dtype() == dtype || !is_float(t.dtype()) {
                t
            } else {
                t.to_dtype(dtype)?
            };
            all.insert(name, t);
        }
    }
    Ok(all)
}

fn is_float(d: DType) -> bool {
    matches!(d, DType::F16 | DType::BF16 | DType::F32 | DType::F64)
}

/// Checks that `tensors` holds exactly the planned names with the planned shapes, ignoring
/// names for which `ignore` returns true.
pub(crate) fn check_plan(
    tensors: &HashMap<String, Tensor>,
    plan: &[(String, Vec<usize>)],
    ignore: impl Fn(&str) -> bool,
) -> Result<()> {
    let mut missing = Vec::new();
    for (name, shape) in plan {
        match tensors.get(name) {
            None => missing.push(name.clone()),
            Some(t) if t.dims() != shape.as_slice() => {
                return Err(Error::Weights(format!(
                    "tensor `{name}` has shape {:?}, expected {shape:?}",
                    t.dims()
                )));
            }
            Some(_) => {}
        }
    }
    if !missing.is_empty() {
        missing.sort();
        return Err(Error::Weights(format!(
            "missing tensors: {}",
            crate::error::bounded_list(&missing)
        )));
    }
    let planned: BTreeSet<&str> = plan.iter().map(|(n, _)| n.as_str()).collect();
    let mut unused: Vec<&str> = tensors
        .keys()
        .map(String::as_str)
        .filter(|n| !planned.contains(n) && !ignore(n))
        .collect();
    if !unused.is_empty() {
        unused.sort();
        return Err(Error::Weights(format!(
            "unused tensors: {}",
            crate::error::bounded_list(&unused)
        )));
    }
    Ok(())
}

/// Takes a planned tensor out of the map (the plan check has run, so absence is a bug in the
/// plan, reported as an error rather than a panic).
pub(crate) fn take(tensors: &mut HashMap<String, Tensor>, name: &str) -> Result<Tensor> {
    tensors
        .remove(name)
        .ok_or_else(|| Error::Internal(format!("planned tensor `{name}` is missing")))
}

/// Loads a small safetensors file of trainable tensors (a head, adapters) onto the CPU as f32.
pub(crate) fn load_f32_file(path: &Path) -> Result<HashMap<String, Tensor>> {
    if !path.exists() {
        return Err(Error::MissingFile(path.to_path_buf()));
    }
    candle_core::safetensors::load(path, &Device::Cpu)
        .map_err(|e| Error::Weights(format!("{}: {e}", crate::error::shown(path))))?
        .into_iter()
        .map(|(k, v)| Ok((k, v.to_dtype(DType::F32)?)))
        .collect()
}

/// Writes named tensors (detached, on the CPU) to `dir/weights_file` and `config` as pretty
/// JSON to `dir/config_file`, creating `dir` if needed. Each file is written atomically and
/// durably ([`crate::durable::write_file_atomically`]): weights first, then the config, so a
/// crash never leaves a config that names weights not yet on disk.
pub(crate) fn save_with_config(
    dir: &Path,
    weights_file: &str,
    named: Vec<(String, Tensor)>,
    config_file: &str,
    config: &impl serde::Serialize,
) -> Result<()> {
    crate::durable::create_dir_all_durably(dir).map_err(|e| Error::io(dir, e))?;
    let map: HashMap<String, Tensor> = named
        .into_iter()
        .map(|(k, v)| Ok((k, v.detach().to_device(&Device::Cpu)?)))
        .collect::<Result<_>>()?;
    let wpath = dir.join(weights_file);
    crate::durable::replace_file_with(
        &wpath,
        |tmp| -> Result<()> {
            candle_core::safetensors::save(&map, tmp)?;
            Ok(())
        },
        |e| Error::io(&wpath, e),
    )?;
    let cpath = dir.join(config_file);
    let json = serde_json::to_vec_pretty(config).map_err(|source| Error::Json {
        path: cpath.clone(),
        source,
    })?;
    crate::durable::write_file_atomically(&cpath, &json).map_err(|e| Error::io(&cpath, e))
}

/// Trainable copies of named tensors (f32 on `device`): the [`candle_nn::VarMap`] holding
/// them as variables, and the variables' tensors by name (to build the trainable module from).
pub(crate) fn to_varmap(
    named: Vec<(String, Tensor)>,
    device: &Device,
) -> Result<(candle_nn::VarMap, HashMap<String, Tensor>)> {
    let varmap = candle_nn::VarMap::new();
    let mut tensors = HashMap::new();
    {
        let mut data = varmap
            .data()
            .lock()
            .map_err(|_| Error::Internal("the variable map's lock is poisoned".into()))?;
        for (name, t) in named {
            let var = candle_core::Var::from_tensor(&t.to_device(device)?.to_dtype(DType::F32)?)?;
            tensors.insert(name.clone(), var.as_tensor().clone());
            data.insert(name, var);
        }
    }
    Ok((varmap, tensors))
}
