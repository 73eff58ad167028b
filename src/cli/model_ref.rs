//! `--model`: a local directory or a Hugging Face id (`org/name`, optionally `@revision`),
//! resolved in the standard Hugging Face cache (`HF_HUB_CACHE`, else `HF_HOME/hub`, else
//! `~/.cache/huggingface/hub`; `models--org--name/snapshots/<commit>`, with `refs/<revision>`
//! naming the commit). Nothing is downloaded: this build has no network code, as with
//! `HF_HUB_OFFLINE=1` everywhere.

use std::path::{Path, PathBuf};

use super::error::CliError;

/// `--model`, as the commands take it.
#[derive(clap::Args)]
pub struct ModelArg {
    /// A model directory (config.json, model.safetensors, tokenizer.json; for predict, eval
    /// and a multi-task server, one `mtl train` wrote) or a cached Hugging Face id
    /// (org/name[@revision]).
    #[arg(long)]
    model: String,
}

impl ModelArg {
    /// The directory and the name to show ([`resolve`]).
    pub fn resolve(&self) -> Result<(PathBuf, String), CliError> {
        resolve(&self.model)
    }
}

/// The directory `--model` means, and the name to show for it (the id for a cached model).
pub fn resolve(spec: &str) -> Result<(PathBuf, String), CliError> {
    let path = Path::new(spec);
    if path.is_dir() {
        return Ok((path.to_path_buf(), spec.to_string()));
    }
    let cache = cache_dir();
    let Some((id, revision)) = parse_id(spec) else {
        return Err(CliError::ModelNotFound(format!(
            "--model {spec}: no such directory{}",
            fetch_hint(spec)
        )));
    };
    match snapshot(&cache, id, revision) {
        Some(dir) => Ok((dir, spec.to_string())),
        None => Err(CliError::ModelNotFound(format!(
            "--model {spec}: no such directory, and Hugging Face model `{id}` (revision {revision}) \
             is not in the cache {} (looked for {}); download it there first \
             (`huggingface-cli download {id}`, or set HF_HUB_CACHE / HF_HOME){}",
            cache.display(),
            cache.join(folder_name(id)).display(),
            fetch_hint(spec)
        ))),
    }
}

/// `org/name[@revision]` -> (`org/name`, revision, default `main`); `None` for what cannot be
/// an id (absolute or relative paths, more or fewer than one `/`).
fn parse_id(spec: &str) -> Option<(&str, &str)> {
    let (id, revision) = spec.split_once('@').unwrap_or((spec, "main"));
    let parts: Vec<&str> = id.split('/').collect();
    let valid = |s: &str| {
        !s.is_empty()
            && !s.starts_with('.')
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    (parts.len() == 2 && parts.iter().all(|p| valid(p)) && !revision.is_empty())
        .then_some((id, revision))
}

/// The Hugging Face hub cache folder.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HF_HUB_CACHE").filter(|v| !v.is_empty()) {
        return dir.into();
    }
    if let Some(home) = std::env::var_os("HF_HOME").filter(|v| !v.is_empty()) {
        return Path::new(&home).join("hub");
    }
    match std::env::var_os("HOME") {
        Some(home) => Path::new(&home).join(".cache/huggingface/hub"),
        None => PathBuf::from(".cache/huggingface/hub"),
    }
}

/// The cache folder of a model id: `models--org--name`.
fn folder_name(id: &str) -> String {
    format!("models--{}", id.replace('/', "--"))
}

/// The snapshot folder of `id` at `revision` (a branch or tag through `refs/`, or a commit
/// hash), when it holds a `config.json`.
#[cfg(feature = "hub")]
fn snapshot(cache: &Path, id: &str, revision: &str) -> Option<PathBuf> {
    use hf_hub::{Cache, Repo, RepoType};
    let repo = Repo::with_revision(id.to_string(), RepoType::Model, revision.to_string());
    if let Some(config) = Cache::new(cache.to_path_buf())
        .repo(repo)
        .get("config.json")
    {
        return config.parent().map(Path::to_path_buf);
    }
    let by_commit = cache.join(folder_name(id)).join("snapshots").join(revision);
    by_commit.join("config.json").is_file().then_some(by_commit)
}

/// Without the `hub` feature, ids are not looked up.
#[cfg(not(feature = "hub"))]
fn snapshot(_cache: &Path, _id: &str, _revision: &str) -> Option<PathBuf> {
    None
}

fn fetch_hint(spec: &str) -> &'static str {
    if spec.starts_with("models/")
        || (spec.contains("all-MiniLM-L6-v2") && !spec.contains("sentence-transformers/"))
    {
        "; run scripts/fetch-model.sh to fetch all-MiniLM-L6-v2 into models/"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_paths_are_told_apart() {
        assert_eq!(
            parse_id("sentence-transformers/all-MiniLM-L6-v2"),
            Some(("sentence-transformers/all-MiniLM-L6-v2", "main"))
        );
        assert_eq!(parse_id("org/name@v1.0"), Some(("org/name", "v1.0")));
        for path in [
            "./models/x",
            "/abs/path",
            "a/b/c",
            "name",
            "../x/y",
            "org/name@",
        ] {
            assert_eq!(parse_id(path), None, "{path}");
        }
    }

    #[test]
    #[cfg(feature = "hub")]
    fn resolves_refs_and_commits_in_a_cache() {
        let cache = tempfile::tempdir().unwrap();
        let repo = cache.path().join("models--org--name");
        let commit = "0123456789abcdef0123456789abcdef01234567";
        std::fs::create_dir_all(repo.join("snapshots").join(commit)).unwrap();
        std::fs::write(
            repo.join("snapshots").join(commit).join("config.json"),
            "{}",
        )
        .unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), commit).unwrap();
        let expected = repo.join("snapshots").join(commit);
        assert_eq!(
            snapshot(cache.path(), "org/name", "main"),
            Some(expected.clone())
        );
        assert_eq!(snapshot(cache.path(), "org/name", commit), Some(expected));
        assert_eq!(snapshot(cache.path(), "org/name", "v2"), None);
        assert_eq!(snapshot(cache.path(), "org/other", "main"), None);
    }
}
