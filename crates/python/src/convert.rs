//! Conversions between Python objects and the facade's types: JSON values (metadata,
//! filters), vectors (numpy arrays or sequences of numbers) and id lists.

use numpy::{
    PyArray1, PyArray2, PyArrayDescrMethods, PyArrayMethods, PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde_json::{Map, Number, Value};

use crate::errors::invalid;

/// Nesting deeper than this is refused (instead of exhausting the stack).
const MAX_DEPTH: usize = 64;

/// A JSON value as a Python object (`dict`, `list`, `str`, `int`, `float`, `bool`, `None`).
pub(crate) fn to_py<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any()
            }
        }
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(a) => {
            let items = a
                .iter()
                .map(|x| to_py(py, x))
                .collect::<PyResult<Vec<_>>>()?;
            PyList::new(py, items)?.into_any()
        }
        Value::Object(o) => map_to_py(py, o)?.into_any(),
    })
}

/// A JSON object as a `dict`.
pub(crate) fn map_to_py<'py>(
    py: Python<'py>,
    m: &Map<String, Value>,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in m {
        d.set_item(k, to_py(py, v)?)?;
    }
    Ok(d)
}

/// A Python object as JSON: `None`, `bool`, `int` (64-bit), finite `float`, `str`, lists and
/// tuples, dicts with `str` keys, and numpy scalars (through `.item()`). `what` names the
/// argument in errors.
pub(crate) fn from_py(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Value> {
    from_py_at(obj, what, 0)
}

fn from_py_at(obj: &Bound<'_, PyAny>, what: &str, depth: usize) -> PyResult<Value> {
    let py = obj.py();
    if depth > MAX_DEPTH {
        return Err(invalid(
            py,
            format!("{what}: nested more than {MAX_DEPTH} levels deep"),
        ));
    }
    if obj.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if obj.is_instance_of::<PyInt>() {
        if let Ok(i) = obj.extract::<i64>() {
            return Ok(Value::from(i));
        }
        if let Ok(u) = obj.extract::<u64>() {
            return Ok(Value::from(u));
        }
        return Err(invalid(
            py,
            format!("{what}: the integer {} does not fit in 64 bits", short(obj)),
        ));
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        let x = f.value();
        return Number::from_f64(x).map(Value::Number).ok_or_else(|| {
            invalid(
                py,
                format!("{what}: {x} is not a finite number (JSON has no NaN or infinity)"),
            )
        });
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Value::String(s.to_str()?.to_string()));
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        let mut m = Map::new();
        for (k, v) in d.iter() {
            let Ok(key) = k.cast::<PyString>() else {
                return Err(invalid(
                    py,
                    format!("{what}: keys must be str, got {}", type_name(&k)),
                ));
            };
            let key = key.to_str()?.to_string();
            let value = from_py_at(&v, what, depth + 1)?;
            m.insert(key, value);
        }
        return Ok(Value::Object(m));
    }
    if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
        let mut out = Vec::new();
        for item in obj.try_iter()? {
            out.push(from_py_at(&item?, what, depth + 1)?);
        }
        return Ok(Value::Array(out));
    }
    // numpy scalars and 0-d arrays (np.float32(1.5), np.int64(3), np.bool_(True)).
    if is_numpy_generic(obj) {
        let item = obj.call_method0("item")?;
        if !is_numpy_generic(&item) {
            return from_py_at(&item, what, depth + 1);
        }
    }
    Err(invalid(
        py,
        format!(
            "{what}: a {} cannot be stored as JSON (use dict, list, str, int, float, bool or None)",
            type_name(obj)
        ),
    ))
}

fn is_numpy_generic(obj: &Bound<'_, PyAny>) -> bool {
    let ty = obj.get_type();
    ty.module()
        .map(|m| m.to_string_lossy().starts_with("numpy"))
        .unwrap_or(false)
        && obj.hasattr("item").unwrap_or(false)
}

/// The type name of `obj`, for messages.
pub(crate) fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "object".into())
}

/// A short `repr` for messages.
fn short(obj: &Bound<'_, PyAny>) -> String {
    let s = obj
        .repr()
        .map(|r| r.to_string_lossy().into_owned())
        .unwrap_or_default();
    if s.chars().count() > 40 {
        format!("{}...", s.chars().take(40).collect::<String>())
    } else {
        s
    }
}

/// A metadata object: a dict, or `None` for none.
pub(crate) fn metadata_from(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Value> {
    if obj.is_none() {
        return Ok(Value::Null);
    }
    if !obj.is_instance_of::<PyDict>() {
        return Err(invalid(
            obj.py(),
            format!("{what} must be a dict or None, got {}", type_name(obj)),
        ));
    }
    from_py(obj, what)
}

/// A filter: a dict (see the filter syntax), or `None`.
pub(crate) fn filter_from(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Value>> {
    match obj {
        None => Ok(None),
        Some(o) if o.is_none() => Ok(None),
        Some(o) => {
            if !o.is_instance_of::<PyDict>() {
                return Err(invalid(
                    o.py(),
                    format!("filter must be a dict, got {}", type_name(o)),
                ));
            }
            from_py(o, "filter").map(Some)
        }
    }
}

/// A list of strings from a `str` (one) or an iterable of `str` (not a bare `str` iterated
/// per character).
pub(crate) fn strings_from(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<String>> {
    let py = obj.py();
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(vec![s.to_str()?.to_string()]);
    }
    let iter = obj.try_iter().map_err(|_| {
        invalid(
            py,
            format!(
                "{what} must be a str or a list of str, got {}",
                type_name(obj)
            ),
        )
    })?;
    let mut out = Vec::new();
    for (i, item) in iter.enumerate() {
        let item = item?;
        let Ok(s) = item.cast::<PyString>() else {
            return Err(invalid(
                py,
                format!("{what}[{i}] must be a str, got {}", type_name(&item)),
            ));
        };
        out.push(s.to_str()?.to_string());
    }
    Ok(out)
}

/// Optional strings, one per document: an iterable of `str` or `None`.
pub(crate) fn optional_strings_from(
    obj: &Bound<'_, PyAny>,
    what: &str,
) -> PyResult<Vec<Option<String>>> {
    let py = obj.py();
    if obj.is_instance_of::<PyString>() {
        return Err(invalid(
            py,
            format!("{what} must be a list of str, not a str"),
        ));
    }
    let iter = obj.try_iter().map_err(|_| {
        invalid(
            py,
            format!("{what} must be a list of str, got {}", type_name(obj)),
        )
    })?;
    let mut out = Vec::new();
    for (i, item) in iter.enumerate() {
        let item = item?;
        if item.is_none() {
            out.push(None);
            continue;
        }
        let Ok(s) = item.cast::<PyString>() else {
            return Err(invalid(
                py,
                format!(
                    "{what}[{i}] must be a str or None, got {}",
                    type_name(&item)
                ),
            ));
        };
        out.push(Some(s.to_str()?.to_string()));
    }
    Ok(out)
}

/// The dtype rule, in one message.
const DTYPE_RULE: &str =
    "vectors must be float32 (float64 is converted); use .astype(numpy.float32)";

/// One vector: a 1-d numpy array of float32/float64, or a sequence of numbers.
pub(crate) fn vector_from(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<f32>> {
    let py = obj.py();
    if let Ok(arr) = obj.cast::<PyUntypedArray>() {
        if arr.ndim() != 1 {
            return Err(invalid(
                py,
                format!(
                    "{what} must be 1-dimensional, got an array of shape {:?}",
                    arr.shape()
                ),
            ));
        }
        return matrix_rows(arr, what).map(|mut rows| rows.pop().unwrap_or_default());
    }
    if obj.is_instance_of::<PyString>() {
        return Err(invalid(
            py,
            format!("{what} must be a sequence of numbers, not a str"),
        ));
    }
    numbers_from(obj, what)
}

/// A sequence of numbers (not numpy) as f32s.
fn numbers_from(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<f32>> {
    let py = obj.py();
    let iter = obj.try_iter().map_err(|_| {
        invalid(
            py,
            format!(
                "{what} must be a sequence of numbers, got {}",
                type_name(obj)
            ),
        )
    })?;
    let mut out = Vec::new();
    for (i, item) in iter.enumerate() {
        let item = item?;
        if item.is_instance_of::<PyBool>() || item.is_instance_of::<PyString>() {
            return Err(invalid(
                py,
                format!("{what}[{i}] must be a number, got {}", type_name(&item)),
            ));
        }
        let x: f64 = item.extract().map_err(|_| {
            invalid(
                py,
                format!("{what}[{i}] must be a number, got {}", type_name(&item)),
            )
        })?;
        out.push(x as f32);
    }
    Ok(out)
}

/// Vectors, one per row: a 2-d numpy array of float32/float64, or a sequence of vectors
/// (each a 1-d array or a sequence of numbers).
pub(crate) fn vectors_from(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<Vec<f32>>> {
    let py = obj.py();
    if let Ok(arr) = obj.cast::<PyUntypedArray>() {
        if arr.ndim() != 2 {
            return Err(invalid(
                py,
                format!(
                    "{what} must be a 2-dimensional array (one row per document), got shape {:?}",
                    arr.shape()
                ),
            ));
        }
        return matrix_rows(arr, what);
    }
    if obj.is_instance_of::<PyString>() {
        return Err(invalid(
            py,
            format!("{what} must be a list of vectors, not a str"),
        ));
    }
    let iter = obj.try_iter().map_err(|_| {
        invalid(
            py,
            format!(
                "{what} must be a 2-d array or a list of vectors, got {}",
                type_name(obj)
            ),
        )
    })?;
    let mut out = Vec::new();
    for (i, item) in iter.enumerate() {
        out.push(vector_from(&item?, &format!("{what}[{i}]"))?);
    }
    Ok(out)
}

/// The rows of a 1-d (one row) or 2-d float array.
fn matrix_rows(arr: &Bound<'_, PyUntypedArray>, what: &str) -> PyResult<Vec<Vec<f32>>> {
    let py = arr.py();
    let dtype = arr.dtype();
    let rows = if dtype.is_equiv_to(&numpy::dtype::<f32>(py)) {
        copy_rows::<f32>(arr, |x| x)
    } else if dtype.is_equiv_to(&numpy::dtype::<f64>(py)) {
        copy_rows::<f64>(arr, |x| x as f32)
    } else {
        return Err(invalid(
            py,
            format!("{what} has dtype {dtype}: {DTYPE_RULE}"),
        ));
    };
    rows.ok_or_else(|| invalid(py, format!("{what}: the array is being written elsewhere")))
}

fn copy_rows<T: numpy::Element + Copy>(
    arr: &Bound<'_, PyUntypedArray>,
    f: impl Fn(T) -> f32,
) -> Option<Vec<Vec<f32>>> {
    if let Ok(a) = arr.cast::<PyArray1<T>>() {
        let ro = a.try_readonly().ok()?;
        return Some(vec![ro.as_array().iter().map(|&x| f(x)).collect()]);
    }
    let a = arr.cast::<PyArray2<T>>().ok()?;
    let ro = a.try_readonly().ok()?;
    let view = ro.as_array();
    Some(
        view.rows()
            .into_iter()
            .map(|r| r.iter().map(|&x| f(x)).collect())
            .collect(),
    )
}

/// A vector as a 1-d float32 numpy array.
pub(crate) fn vector_to_numpy<'py>(py: Python<'py>, v: &[f32]) -> Bound<'py, PyArray1<f32>> {
    PyArray1::from_slice(py, v)
}

/// Vectors of one dimension as a 2-d float32 numpy array (`(0, dim)` when empty).
pub(crate) fn matrix_to_numpy<'py>(
    py: Python<'py>,
    rows: &[Vec<f32>],
    dim: usize,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let mut flat = Vec::with_capacity(rows.len() * dim);
    for r in rows {
        if r.len() != dim {
            return Err(crate::errors::new(
                py,
                latentdb::ErrorKind::Internal,
                format!(
                    "internal error: a vector of dimension {} among {dim}",
                    r.len()
                ),
            ));
        }
        flat.extend_from_slice(r);
    }
    PyArray1::from_vec(py, flat).reshape([rows.len(), dim])
}
