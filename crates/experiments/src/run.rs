//! Run folders (STYLE.md "Runs"): every run writes to its own folder the resolved configuration, a meta
//! file (git revision, rustc, libtorch version, device, seed), metrics as JSON lines and `summary.json`.
//! Every whole-file write goes to a temporary file that is then renamed, so an interrupted run never leaves
//! a half-written file behind.

use anyhow::{Context, Result};
use serde::Serialize;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, flushed, then renamed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().with_context(|| format!("{} has no file name", path.display()))?;
    let tmp = dir.join(format!(".{}.tmp{}", name.to_string_lossy(), std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        f.write_all(bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
        f.sync_all().with_context(|| format!("cannot flush {}", tmp.display()))?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))
}

/// Serialises `value` as pretty JSON into `path`, atomically.
pub fn write_json_atomic(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).context("cannot serialise to JSON")?;
    write_atomic(path, text.as_bytes())
}

/// What a run was made with.
#[derive(Debug, Clone, Serialize)]
pub struct Meta {
    /// Experiment name.
    pub experiment: String,
    /// The run's seed.
    pub seed: u64,
    /// `git rev-parse HEAD` of the working tree (with `-dirty` when it has changes), or `unknown`.
    pub git_revision: String,
    /// `rustc --version` of the toolchain on the path, or `unknown`.
    pub rustc: String,
    /// The libtorch version tch was built against.
    pub libtorch: String,
    /// The device the run used.
    pub device: String,
    /// Start time, seconds since the Unix epoch.
    pub started_unix: u64,
}

impl Meta {
    /// Collects the meta data of a run starting now.
    pub fn collect(experiment: &str, seed: u64, device: tch::Device) -> Self {
        let run = |cmd: &str, args: &[&str]| {
            Command::new(cmd)
                .args(args)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        };
        let mut git_revision = run("git", &["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into());
        if run("git", &["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty()) {
            git_revision.push_str("-dirty");
        }
        Meta {
            experiment: experiment.to_string(),
            seed,
            git_revision,
            rustc: run("rustc", &["--version"]).unwrap_or_else(|| "unknown".into()),
            libtorch: "2.13.0 (tch 0.26)".to_string(),
            device: format!("{device:?}"),
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        }
    }
}

/// A run's folder.
#[derive(Debug, Clone)]
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// Creates (or reuses) `path` and writes `config.json` and `meta.json` into it.
    pub fn create(path: &Path, config: &impl Serialize, meta: &Meta) -> Result<Self> {
        std::fs::create_dir_all(path).with_context(|| format!("cannot create the run folder {}", path.display()))?;
        let dir = RunDir { path: path.to_path_buf() };
        write_json_atomic(&dir.file("config.json"), config)?;
        write_json_atomic(&dir.file("meta.json"), meta)?;
        Ok(dir)
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A file inside the folder.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Appends one JSON object as a line of `metrics.jsonl`.
    pub fn append_metric(&self, record: &impl Serialize) -> Result<()> {
        let path = self.file("metrics.jsonl");
        let line = serde_json::to_string(record).context("cannot serialise a metric record")?;
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        writeln!(f, "{line}").with_context(|| format!("cannot write {}", path.display()))
    }

    /// Writes `summary.json` atomically.
    pub fn write_summary(&self, summary: &impl Serialize) -> Result<()> {
        write_json_atomic(&self.file("summary.json"), summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mg-run-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn run_folder_holds_config_meta_metrics_and_summary() {
        let d = temp_dir("folder");
        let meta = Meta::collect("unit", 7, tch::Device::Cpu);
        let run = RunDir::create(&d, &serde_json::json!({"seed": 7}), &meta).unwrap();
        run.append_metric(&serde_json::json!({"step": 1, "loss": 0.5})).unwrap();
        run.append_metric(&serde_json::json!({"step": 2, "loss": 0.25})).unwrap();
        run.write_summary(&serde_json::json!({"ok": true})).unwrap();
        let metrics = std::fs::read_to_string(run.file("metrics.jsonl")).unwrap();
        assert_eq!(metrics.lines().count(), 2);
        let meta_back: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.file("meta.json")).unwrap()).unwrap();
        assert_eq!(meta_back["seed"], 7);
        assert_eq!(meta_back["experiment"], "unit");
        let leftovers: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left behind: {leftovers:?}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn atomic_write_replaces_whole_files() {
        let d = temp_dir("atomic");
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("x.json");
        write_atomic(&p, b"first version, longer").unwrap();
        write_atomic(&p, b"second").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "second");
        assert!(write_atomic(&d.join("missing").join("x"), b"y").is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
