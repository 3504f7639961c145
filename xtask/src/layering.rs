//! The layering invariants of docs/ARCHITECTURE.md, checked with `cargo tree`.

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Command;

/// Allowed workspace dependencies (normal and build edges) of each workspace crate.
/// `None` means any workspace crate is allowed.
const ALLOWED: &[(&str, Option<&[&str]>)] = &[
    ("geom", Some(&[])),
    ("scores", Some(&["geom"])),
    ("sample", Some(&["geom", "scores"])),
    ("train", Some(&["geom", "scores"])),
    ("mflow", Some(&["geom"])),
    ("experiments", None),
    ("benches", None),
    ("xtask", Some(&[])),
];

/// Crates that must not appear anywhere in xtask's dependency tree.
const XTASK_FORBIDDEN: &[&str] = &["tch", "torch-sys"];

/// Runs every check; errors name the crate and the edge that breaks the rules.
pub fn check(root: &Path) -> Result<()> {
    let members = workspace_members(root)?;
    for member in &members {
        let Some((_, allowed)) = ALLOWED.iter().find(|(n, _)| n == member) else {
            bail!("workspace crate `{member}` has no entry in xtask's layering table (xtask/src/layering.rs): add its allowed dependencies there and in docs/ARCHITECTURE.md");
        };
        let deps = tree(root, member, Some(1))?;
        for dep in deps.iter().filter(|d| members.contains(d) && *d != member) {
            if let Some(allowed) = allowed {
                if !allowed.contains(&dep.as_str()) {
                    bail!("layering: `{member}` depends on `{dep}`, but it may only depend on {allowed:?} (docs/ARCHITECTURE.md)");
                }
            }
        }
    }
    let xtask_deps = tree(root, "xtask", None)?;
    if let Some(bad) = xtask_deps.iter().find(|d| XTASK_FORBIDDEN.contains(&d.as_str())) {
        bail!("layering: xtask depends (directly or not) on `{bad}`; xtask must build without libtorch");
    }
    Ok(())
}

/// Names of the workspace's crates, from `cargo tree --workspace --depth 0`.
fn workspace_members(root: &Path) -> Result<Vec<String>> {
    let out = cargo_tree(root, &["--workspace", "--depth", "0"])?;
    Ok(out.lines().filter_map(crate_name).collect())
}

/// Names in the dependency tree (normal and build edges) of one crate.
fn tree(root: &Path, krate: &str, depth: Option<usize>) -> Result<Vec<String>> {
    let mut args = vec!["-p".to_string(), krate.to_string()];
    if let Some(d) = depth {
        args.extend(["--depth".to_string(), d.to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = cargo_tree(root, &args)?;
    Ok(out.lines().skip(1).filter_map(crate_name).collect())
}

fn cargo_tree(root: &Path, extra: &[&str]) -> Result<String> {
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(root)
        .args(["tree", "--edges", "normal,build", "--prefix", "none", "--format", "{p}"])
        .args(extra)
        .output()
        .context("cannot run cargo tree")?;
    if !out.status.success() {
        bail!("cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The crate name at the start of a `cargo tree --prefix none` line.
fn crate_name(line: &str) -> Option<String> {
    line.split_whitespace().next().filter(|s| !s.is_empty()).map(str::to_string)
}
