//! Atomic writes: a file through a temporary beside it, a directory by swapping in a complete
//! sibling, so a crash never leaves a half-written model or checkpoint.

use std::path::{Path, PathBuf};

use crate::error::{EncoderError, Result};

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> EncoderError + '_ {
    move |source| EncoderError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, then a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(io_error(path))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_error(path)(e)
    })
}

/// `dir` with `suffix` appended to its last component (`runs/model` -> `runs/model.partial`).
pub fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(suffix);
    dir.with_file_name(name)
}

/// An empty `<dir>.partial` to build a directory in before [`swap_dir`] puts it in place.
pub fn fresh_partial(dir: &Path) -> Result<PathBuf> {
    let partial = sibling(dir, ".partial");
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(io_error(&partial))?;
    }
    Ok(partial)
}

/// Replaces `dir` by `partial` (both complete directories) with renames only: `dir` moves to
/// `<dir>.old`, `partial` takes its place, then `<dir>.old` is removed.
pub fn swap_dir(partial: &Path, dir: &Path) -> Result<()> {
    let old = sibling(dir, ".old");
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(io_error(&old))?;
    }
    if dir.exists() {
        std::fs::rename(dir, &old).map_err(io_error(dir))?;
    }
    std::fs::rename(partial, dir).map_err(io_error(dir))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(io_error(&old))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swap_replaces_a_directory_and_leaves_no_siblings() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("model");
        for content in ["one", "two"] {
            let partial = fresh_partial(&dir).unwrap();
            std::fs::create_dir_all(&partial).unwrap();
            write_atomic(&partial.join("f.txt"), content.as_bytes()).unwrap();
            swap_dir(&partial, &dir).unwrap();
            assert_eq!(std::fs::read_to_string(dir.join("f.txt")).unwrap(), content);
        }
        let mut names: Vec<String> = std::fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["model"]);
        assert_eq!(
            sibling(Path::new("a/b.v1"), ".old"),
            Path::new("a/b.v1.old")
        );
    }
}
