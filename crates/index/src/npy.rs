//! A small reader and writer for NumPy `.npy` files of shape `[n, d]` in C order: float32
//! vectors (base and query sets) and integer ids (ground truth).
//!
//! Supported: format versions 1.0, 2.0 and 3.0; dtypes `<f4` (vectors) and `<i4`, `<u4`,
//! `<i8`, `<u8` (ids). Anything else — another dtype, big endian, Fortran order, a shape that
//! is not 2-d, a length that does not match the shape — is an [`Error::Npy`].

use std::fs;
use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

const MAGIC: &[u8] = b"\x93NUMPY";

/// A row-major 2-d array.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix<T> {
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// `rows * cols` values, row after row.
    pub data: Vec<T>,
}

impl<T> Matrix<T> {
    /// Row `i` (panics when out of range, like slice indexing).
    pub fn row(&self, i: usize) -> &[T] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }
}

fn npy_err(path: &Path, reason: impl Into<String>) -> Error {
    Error::Npy {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

struct Header {
    descr: String,
    fortran: bool,
    shape: Vec<usize>,
    data_start: usize,
}

fn parse_header(path: &Path, bytes: &[u8]) -> Result<Header> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(npy_err(path, "not a .npy file (bad magic)"));
    }
    let (len, start): (usize, usize) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(npy_err(path, format!("unsupported format version {v}"))),
    };
    let end = start
        .checked_add(len)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| npy_err(path, "truncated header"))?;
    let text =
        std::str::from_utf8(&bytes[start..end]).map_err(|_| npy_err(path, "header is not text"))?;
    let field = |key: &str| -> Result<&str> {
        let at = text
            .find(&format!("'{key}'"))
            .ok_or_else(|| npy_err(path, format!("header lacks '{key}'")))?;
        let rest = &text[at + key.len() + 2..];
        let colon = rest
            .find(':')
            .ok_or_else(|| npy_err(path, "malformed header"))?;
        Ok(rest[colon + 1..].trim_start())
    };
    let descr = field("descr")?;
    let descr = descr
        .strip_prefix('\'')
        .and_then(|d| d.split('\'').next())
        .ok_or_else(|| npy_err(path, "malformed descr"))?
        .to_string();
    let fortran = field("fortran_order")?.starts_with("True");
    let shape_text = field("shape")?;
    let inner = shape_text
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| npy_err(path, "malformed shape"))?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| npy_err(path, format!("bad shape entry {s:?}")))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Header {
        descr,
        fortran,
        shape,
        data_start: end,
    })
}

fn read_2d(path: &Path, accept: &[&str]) -> Result<(Header, Vec<u8>)> {
    let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
    let h = parse_header(path, &bytes)?;
    if !accept.contains(&h.descr.as_str()) {
        return Err(npy_err(
            path,
            format!("dtype {} is not one of {}", h.descr, accept.join(", ")),
        ));
    }
    if h.fortran {
        return Err(npy_err(
            path,
            "Fortran order is not supported (save with C order)",
        ));
    }
    if h.shape.len() != 2 {
        return Err(npy_err(path, format!("shape {:?} is not [n, d]", h.shape)));
    }
    let item = if h.descr.ends_with('8') { 8 } else { 4 };
    let want = h.shape[0]
        .checked_mul(h.shape[1])
        .and_then(|n| n.checked_mul(item));
    if want != Some(bytes.len() - h.data_start) {
        return Err(npy_err(path, "data length does not match the shape"));
    }
    let data = bytes[h.data_start..].to_vec();
    Ok((h, data))
}

/// Reads a float32 `[n, d]` C-order array.
pub fn read_f32(path: &Path) -> Result<Matrix<f32>> {
    let (h, bytes) = read_2d(path, &["<f4"])?;
    let data = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok(Matrix {
        rows: h.shape[0],
        cols: h.shape[1],
        data,
    })
}

/// Reads an integer `[n, k]` C-order array of ids (`<i4`, `<u4`, `<i8`, `<u8`); negative or
/// too large ids are errors.
pub fn read_ids(path: &Path) -> Result<Matrix<u32>> {
    let (h, bytes) = read_2d(path, &["<i4", "<u4", "<i8", "<u8"])?;
    let bad = || npy_err(path, "an id is negative or above u32::MAX");
    let data = match h.descr.as_str() {
        "<i4" => bytes
            .chunks_exact(4)
            .map(|b| u32::try_from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])).map_err(|_| bad()))
            .collect::<Result<Vec<_>>>()?,
        "<u4" => bytes
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        _ => {
            let signed = h.descr == "<i8";
            bytes
                .chunks_exact(8)
                .map(|b| {
                    let a: [u8; 8] = b.try_into().expect("8 bytes");
                    let v = if signed {
                        i64::from_le_bytes(a).try_into().ok()
                    } else {
                        Some(u64::from_le_bytes(a))
                    };
                    v.and_then(|v: u64| u32::try_from(v).ok()).ok_or_else(bad)
                })
                .collect::<Result<Vec<_>>>()?
        }
    };
    Ok(Matrix {
        rows: h.shape[0],
        cols: h.shape[1],
        data,
    })
}

fn write_2d(path: &Path, descr: &str, rows: usize, cols: usize, body: &[u8]) -> Result<()> {
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // Pad with spaces so that magic + version + length + header + '\n' is a multiple of 64.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    let len = u16::try_from(header.len()).map_err(|_| npy_err(path, "header too long"))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(body);
    let mut f = fs::File::create(path).map_err(|e| Error::io(path, e))?;
    f.write_all(&out).map_err(|e| Error::io(path, e))
}

/// Writes a float32 `[rows, cols]` C-order array (`data.len()` must be `rows * cols`).
pub fn write_f32(path: &Path, rows: usize, cols: usize, data: &[f32]) -> Result<()> {
    if rows.checked_mul(cols) != Some(data.len()) {
        return Err(Error::InvalidArgument(format!(
            "{} values do not fill {rows} x {cols}",
            data.len()
        )));
    }
    let body: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
    write_2d(path, "<f4", rows, cols, &body)
}

/// Writes ids as an int32 `[rows, cols]` C-order array (the usual ground-truth format).
pub fn write_ids(path: &Path, rows: usize, cols: usize, data: &[u32]) -> Result<()> {
    if rows.checked_mul(cols) != Some(data.len()) {
        return Err(Error::InvalidArgument(format!(
            "{} values do not fill {rows} x {cols}",
            data.len()
        )));
    }
    let body = data
        .iter()
        .map(|&x| i32::try_from(x).map(i32::to_le_bytes))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| Error::InvalidArgument("id above i32::MAX".into()))?
        .concat();
    write_2d(path, "<i4", rows, cols, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.npy");
        let data: Vec<f32> = (0..12).map(|i| i as f32 * 0.5).collect();
        write_f32(&p, 3, 4, &data).unwrap();
        let m = read_f32(&p).unwrap();
        assert_eq!((m.rows, m.cols), (3, 4));
        assert_eq!(m.data, data);
        assert_eq!(m.row(1), &data[4..8]);
        let bytes = fs::read(&p).unwrap();
        assert_eq!((bytes.len() - 48) % 64, 0, "header aligned to 64");
        let g = dir.path().join("gt.npy");
        write_ids(&g, 2, 2, &[1, 2, 3, 4]).unwrap();
        assert_eq!(read_ids(&g).unwrap().data, vec![1, 2, 3, 4]);
        assert!(
            matches!(read_f32(&g), Err(Error::Npy { .. })),
            "dtype checked"
        );
        assert!(read_ids(&p).is_err());
    }

    #[test]
    fn rejects_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.npy");
        let header = |h: &str, body: &[u8]| {
            let mut out = MAGIC.to_vec();
            out.extend_from_slice(&[1, 0]);
            out.extend_from_slice(&(h.len() as u16).to_le_bytes());
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(body);
            out
        };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"garbage".to_vec(), "magic"),
            (
                header(
                    "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 1), }",
                    &[0; 8],
                ),
                "dtype",
            ),
            (
                header(
                    "{'descr': '>f4', 'fortran_order': False, 'shape': (1, 1), }",
                    &[0; 4],
                ),
                "dtype",
            ),
            (
                header(
                    "{'descr': '<f4', 'fortran_order': True, 'shape': (1, 1), }",
                    &[0; 4],
                ),
                "Fortran",
            ),
            (
                header(
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }",
                    &[0; 16],
                ),
                "shape",
            ),
            (
                header(
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }",
                    &[0; 12],
                ),
                "length",
            ),
            (
                header(
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (2, x), }",
                    &[0; 12],
                ),
                "shape entry",
            ),
            ([MAGIC, &[1, 0, 255, 0], b"{'de"].concat(), "truncated"),
        ];
        for (bytes, what) in cases {
            fs::write(&p, &bytes).unwrap();
            match read_f32(&p) {
                Err(Error::Npy { reason, .. }) => {
                    assert!(
                        reason.to_lowercase().contains(&what.to_lowercase()),
                        "{what}: {reason}"
                    )
                }
                other => panic!("{what}: {other:?}"),
            }
        }
        let neg = header(
            "{'descr': '<i4', 'fortran_order': False, 'shape': (1, 1), }",
            &(-1i32).to_le_bytes(),
        );
        fs::write(&p, neg).unwrap();
        assert!(read_ids(&p).is_err());
        assert!(matches!(
            read_f32(&dir.path().join("none.npy")),
            Err(Error::Io { .. })
        ));
        assert!(write_f32(&p, 2, 2, &[1.0]).is_err());
    }
}
