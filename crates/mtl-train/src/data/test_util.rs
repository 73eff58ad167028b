//! Helpers of the data tests: the shared data folder, temporary files, short constructors.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{read_table, RawTable, ReadOptions};
use crate::error::Result;

/// The shared data folder: `$MTL_SHARED`, else `shared/` beside the workspace.
pub fn shared() -> PathBuf {
    std::env::var_os("MTL_SHARED").map_or_else(
        || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared")),
        PathBuf::from,
    )
}

pub fn data(file: &str) -> PathBuf {
    shared().join("data").join(file)
}

/// A temporary file holding `contents`, removed on drop.
pub struct TempFile(pub PathBuf);

impl TempFile {
    pub fn new(name: &str, contents: &[u8]) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("mtl-data-test-{}-{n}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        Self(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub fn try_read(path: &Path) -> Result<RawTable> {
    read_table(path, &ReadOptions::default())
}

pub fn read(path: &Path) -> RawTable {
    try_read(path).unwrap()
}

pub fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

pub fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}
