//! The .npy reader against files written by numpy (tests/data, made with np.save).

#[path = "../examples/search/npy.rs"]
mod npy;
use npy::{read_npy, read_raw_f32};
use wgpu_attention::Error;

const WANT: [f32; 12] = [-1.375, -1.125, -0.875, -0.625, -0.375, -0.125, 0.125, 0.375, 0.625, 0.875, 1.125, 1.375];

/// A fixture: from the source tree, or from tests/data below the working directory (a test
/// executable copied to another machine, as for the GPU runs).
fn file(name: &str) -> Vec<u8> {
    let built = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&built).or_else(|_| std::fs::read(format!("tests/data/{name}"))).unwrap()
}

#[test]
fn reads_float_arrays_written_by_numpy() {
    for name in ["f32_3x4.npy", "f64_3x4.npy", "f16_3x4.npy"] {
        let m = read_npy(&file(name)).unwrap();
        assert_eq!((m.rows, m.cols), (3, 4), "{name}");
        assert_eq!(m.data, WANT, "{name}");
    }
    let v = read_npy(&file("f32_vec5.npy")).unwrap();
    assert_eq!((v.rows, v.cols, v.data), (1, 5, vec![1.0, 2.0, 3.0, 4.0, 5.0]));
}

#[test]
fn refuses_what_it_cannot_read() {
    for (name, needle) in [("fortran.npy", "Fortran"), ("int32.npy", "not supported")] {
        let e = read_npy(&file(name)).unwrap_err();
        assert!(
            matches!(e, Error::InvalidArgument { argument: "file", ref message } if message.contains(needle)),
            "{name}: {e}"
        );
    }
    assert!(read_npy(b"not numpy at all").is_err());
    let mut truncated = file("f32_3x4.npy");
    truncated.truncate(truncated.len() - 4);
    assert!(read_npy(&truncated).unwrap_err().to_string().contains("truncated"));
}

#[test]
fn raw_f32_rows() {
    let bytes: Vec<u8> = WANT.iter().flat_map(|x| x.to_le_bytes()).collect();
    let m = read_raw_f32(&bytes, 4).unwrap();
    assert_eq!((m.rows, m.cols, m.data), (3, 4, WANT.to_vec()));
    assert!(read_raw_f32(&bytes, 5).is_err());
    assert!(read_raw_f32(&bytes, 0).is_err());
}
