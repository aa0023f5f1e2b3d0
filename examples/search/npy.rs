//! Reading key and query matrices from files: NumPy `.npy` (what `np.save` writes) and raw
//! little-endian f32.

use wgpu_attention::{Error, Result};

/// A row-major matrix read from a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    /// Rows.
    pub rows: usize,
    /// Columns (the vector dimension).
    pub cols: usize,
    /// `rows * cols` values, row-major.
    pub data: Vec<f32>,
}

fn bad(message: impl Into<String>) -> Error {
    Error::InvalidArgument { argument: "file", message: message.into() }
}

/// Parses a `.npy` file: a 1-D or 2-D array of little-endian `f4`, `f8` or `f2`, C order
/// (format versions 1, 2 and 3). 1-D arrays are one row. f8 and f2 are converted to f32.
pub fn read_npy(bytes: &[u8]) -> Result<Matrix> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("not a .npy file (no \\x93NUMPY magic)"));
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        v => return Err(bad(format!(".npy format version {v} is not supported"))),
    };
    let header = bytes.get(start..start + header_len).ok_or_else(|| bad("truncated .npy header"))?;
    let header = std::str::from_utf8(header).map_err(|_| bad(".npy header is not text"))?;
    let field = |name: &str| -> Result<&str> {
        let at = header.find(&format!("'{name}'")).ok_or_else(|| bad(format!(".npy header lacks '{name}'")))?;
        let rest = &header[at + name.len() + 2..];
        Ok(rest.trim_start().trim_start_matches(':').trim_start())
    };
    let descr = field("descr")?;
    let elem = if descr.starts_with("'<f4'") {
        4
    } else if descr.starts_with("'<f8'") {
        8
    } else if descr.starts_with("'<f2'") {
        2
    } else {
        return Err(bad(format!(
            "dtype {} is not supported (use float32, float64 or float16, little-endian)",
            descr.split(',').next().unwrap_or("")
        )));
    };
    if field("fortran_order")?.starts_with("True") {
        return Err(bad("Fortran-order arrays are not supported (save with np.ascontiguousarray)"));
    }
    let shape = field("shape")?;
    let inner =
        shape.strip_prefix('(').and_then(|s| s.split(')').next()).ok_or_else(|| bad("unreadable .npy shape"))?;
    let dims: Vec<usize> = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| bad(format!("unreadable .npy shape {shape:?}"))))
        .collect::<Result<_>>()?;
    let (rows, cols) = match dims[..] {
        [n] => (1, n),
        [r, c] => (r, c),
        _ => return Err(bad(format!("expected a 1-D or 2-D array, got shape {dims:?}"))),
    };
    let body = &bytes[start + header_len..];
    let n = rows * cols;
    if body.len() < n * elem {
        return Err(bad(format!("truncated .npy data: {} bytes for {n} values of {elem} bytes", body.len())));
    }
    let data = match elem {
        4 => body[..n * 4].chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        8 => body[..n * 8].chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f32).collect(),
        _ => body[..n * 2].chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
    };
    Ok(Matrix { rows, cols, data })
}

/// Parses raw little-endian f32 values as rows of `dim`.
pub fn read_raw_f32(bytes: &[u8], dim: usize) -> Result<Matrix> {
    if dim == 0 || !bytes.len().is_multiple_of(4 * dim) || bytes.is_empty() {
        return Err(bad(format!("{} bytes are not a whole number of rows of {dim} f32 values", bytes.len())));
    }
    let data: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    Ok(Matrix { rows: data.len() / dim, cols: dim, data })
}
