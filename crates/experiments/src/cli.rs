//! The options every experiment shares (`--quick`, `--seed N`, `--config FILE`, `--out DIR`, `--device`)
//! and the resolution of an experiment's configuration: the default (or quick) configuration, overridden by
//! the fields of a JSON file, then by `--seed`, then validated, all before any work starts.

use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The parsed command line of one experiment.
#[derive(Debug, Clone)]
pub struct Options {
    /// The experiment's name.
    pub experiment: String,
    /// `--quick`: the small variant (under a minute).
    pub quick: bool,
    /// `--seed N`: overrides the configuration's seed.
    pub seed: Option<u64>,
    /// `--config FILE`: a JSON object whose fields override the default configuration's.
    pub config: Option<PathBuf>,
    /// `--out DIR`: the run folder (default `runs/<experiment>-<UTC time>`); an existing folder with
    /// checkpoints is resumed.
    pub out: Option<PathBuf>,
    /// `--device cpu|cuda|cuda:N` (default cpu).
    pub device: tch::Device,
    /// Options of the experiment itself, as `(name, value)` pairs (e.g. `("--dataset", "fire")`).
    pub extra: Vec<(String, String)>,
}

/// Parses `args` (after the experiment's name). `extra_names` lists the experiment's own options that take
/// a value; any other unknown option is an error naming it.
pub fn parse(experiment: &str, args: &[String], extra_names: &[&str]) -> Result<Options> {
    let mut o = Options {
        experiment: experiment.to_string(),
        quick: false,
        seed: None,
        config: None,
        out: None,
        device: tch::Device::Cpu,
        extra: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().cloned().with_context(|| format!("{name} needs a value"));
        match a.as_str() {
            "--quick" => o.quick = true,
            "--seed" => {
                let v = value("--seed")?;
                o.seed = Some(v.parse().with_context(|| format!("--seed {v}: expected a non-negative integer"))?)
            }
            "--config" => o.config = Some(PathBuf::from(value("--config")?)),
            "--out" => o.out = Some(PathBuf::from(value("--out")?)),
            "--device" => o.device = parse_device(&value("--device")?)?,
            name if extra_names.contains(&name) => {
                let v = value(name)?;
                o.extra.push((name.to_string(), v))
            }
            other => bail!("unknown option `{other}` for {experiment}; `experiments help` lists them"),
        }
    }
    Ok(o)
}

/// `cpu`, `cuda` or `cuda:N`.
pub fn parse_device(s: &str) -> Result<tch::Device> {
    match s {
        "cpu" => Ok(tch::Device::Cpu),
        "cuda" => Ok(tch::Device::Cuda(0)),
        _ => match s.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
            Some(n) => Ok(tch::Device::Cuda(n)),
            None => bail!("--device {s}: expected cpu, cuda or cuda:N"),
        },
    }
}

impl Options {
    /// The value of an experiment option, if given.
    pub fn extra(&self, name: &str) -> Option<&str> {
        self.extra.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The run folder: `--out`, or `runs/<experiment>[-quick]-<UTC time>`.
    pub fn out_dir(&self) -> PathBuf {
        self.out.clone().unwrap_or_else(|| {
            let secs =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            let quick = if self.quick { "-quick" } else { "" };
            PathBuf::from("runs").join(format!("{}{quick}-{}", self.experiment, utc_stamp(secs)))
        })
    }

    /// Resolves the configuration: `base` (the default or quick configuration), overridden field by field
    /// by the JSON object in `--config` (nested objects merge; unknown fields are errors naming their path),
    /// then `--seed` through `set_seed`.
    pub fn resolve<C: Serialize + DeserializeOwned>(&self, base: C, set_seed: impl FnOnce(&mut C, u64)) -> Result<C> {
        let mut config = match &self.config {
            Some(path) => merge_file(base, path)?,
            None => base,
        };
        if let Some(seed) = self.seed {
            set_seed(&mut config, seed);
        }
        Ok(config)
    }
}

/// Overrides the fields of `base` with the JSON object in `path`.
pub fn merge_file<C: Serialize + DeserializeOwned>(base: C, path: &Path) -> Result<C> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read the config {}", path.display()))?;
    merge_json(base, &text).with_context(|| format!("invalid config {}", path.display()))
}

/// Overrides the fields of `base` with the JSON object `text`; errors name the path of the bad field.
pub fn merge_json<C: Serialize + DeserializeOwned>(base: C, text: &str) -> Result<C> {
    let patch: serde_json::Value = serde_json::from_str(text).context("not valid JSON")?;
    if !patch.is_object() {
        bail!("expected a JSON object of configuration fields");
    }
    let mut value = serde_json::to_value(&base).context("cannot serialise the default configuration")?;
    merge_values(&mut value, patch);
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        anyhow::anyhow!("field `{path}`: {}", e.into_inner())
    })
}

/// Merges `patch` into `base`: objects field by field (recursively), anything else replaced. A tagged
/// enum (an object with a different `kind` or `solver` tag) is replaced whole.
fn merge_values(base: &mut serde_json::Value, patch: serde_json::Value) {
    use serde_json::Value;
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            let retagged = ["kind", "solver"].iter().any(|tag| p.get(*tag).is_some_and(|t| b.get(*tag) != Some(t)));
            if retagged {
                *b = p;
                return;
            }
            for (k, v) in p {
                match b.get_mut(&k) {
                    Some(slot) => merge_values(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, p) => *slot = p,
    }
}

/// The dotted paths at which two JSON values differ, with both values (`path: a -> b`); empty when equal.
pub fn json_diff(a: &serde_json::Value, b: &serde_json::Value) -> Vec<String> {
    fn walk(path: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
        use serde_json::Value;
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
                keys.sort();
                keys.dedup();
                for k in keys {
                    let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                    walk(&p, x.get(k).unwrap_or(&Value::Null), y.get(k).unwrap_or(&Value::Null), out);
                }
            }
            _ if a != b => out.push(format!("{}: {a} -> {b}", if path.is_empty() { "(root)" } else { path })),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk("", a, b, &mut out);
    out
}

/// `YYYYmmdd-HHMMSS` (UTC) of a Unix time.
pub fn utc_stamp(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}{m:02}{d:02}-{:02}{:02}{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        a: f64,
        b: u64,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        seed: u64,
        inner: Inner,
    }

    fn base() -> Outer {
        Outer { seed: 1, inner: Inner { a: 0.5, b: 3 } }
    }

    #[test]
    fn merge_overrides_nested_fields_only() {
        let c = merge_json(base(), r#"{"inner": {"b": 7}}"#).unwrap();
        assert_eq!(c, Outer { seed: 1, inner: Inner { a: 0.5, b: 7 } });
    }

    #[test]
    fn merge_errors_name_the_field() {
        let e = format!("{:#}", merge_json(base(), r#"{"inner": {"bb": 7}}"#).unwrap_err());
        assert!(e.contains("inner") && e.contains("bb"), "{e}");
        let e = format!("{:#}", merge_json(base(), r#"{"inner": {"a": "x"}}"#).unwrap_err());
        assert!(e.contains("inner.a"), "{e}");
        assert!(merge_json(base(), "[1]").is_err());
        assert!(merge_json(base(), "{").is_err());
    }

    #[test]
    fn options_parse_and_resolve() {
        let args: Vec<String> = ["--quick", "--seed", "9", "--dataset", "fire"].iter().map(|s| s.to_string()).collect();
        let o = parse("so3", &args, &["--dataset"]).unwrap();
        assert!(o.quick);
        assert_eq!(o.extra("--dataset"), Some("fire"));
        let c = o.resolve(base(), |c, s| c.seed = s).unwrap();
        assert_eq!(c.seed, 9);
        let bad: Vec<String> = ["--sed", "9"].iter().map(|s| s.to_string()).collect();
        assert!(format!("{}", parse("so3", &bad, &[]).unwrap_err()).contains("--sed"));
        let bad: Vec<String> = ["--seed", "-1"].iter().map(|s| s.to_string()).collect();
        assert!(parse("so3", &bad, &[]).is_err());
        assert!(parse_device("tpu").is_err());
        assert_eq!(parse_device("cuda:1").unwrap(), tch::Device::Cuda(1));
    }

    #[test]
    fn json_diff_names_the_paths() {
        let a = serde_json::json!({"train": {"steps": 10, "lr": 0.1}, "seed": 0});
        let b = serde_json::json!({"train": {"steps": 20, "lr": 0.1}, "seed": 0});
        assert_eq!(json_diff(&a, &b), vec!["train.steps: 10 -> 20".to_string()]);
        assert!(json_diff(&a, &a).is_empty());
    }

    #[test]
    fn utc_stamps() {
        assert_eq!(utc_stamp(0), "19700101-000000");
        assert_eq!(utc_stamp(951_782_400 + 3661), "20000229-010101");
        assert_eq!(utc_stamp(1_795_000_000), "20261118-110640");
    }
}
