//! Finding or installing libtorch 2.13.0 (the version tch 0.26 is built against), and the environment that
//! cargo and the binaries it builds need to use it.
//!
//! Resolution order:
//! 1. `LIBTORCH` set: that folder, after checking its version.
//! 2. `LIBTORCH_USE_PYTORCH` set: the `torch/` folder of the Python on the path (or `$PYTHON`).
//! 3. The per-user cache: `$MANIFOLD_GEN_CACHE` (default `$XDG_CACHE_HOME/manifold-gen`, else
//!    `~/.cache/manifold-gen`) holds `torch-2.13.0/venv`, a virtual environment with `torch==2.13.0` from
//!    PyPI, shared by every clone on the machine. It is created on first use; later runs find it through
//!    a marker file without starting Python.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The torch version tch 0.26 expects.
pub const TORCH_VERSION: &str = "2.13.0";

/// A usable libtorch.
pub struct Libtorch {
    /// The folder holding `include/` and `lib/` (a standalone libtorch or a wheel's `torch/` folder).
    pub root: PathBuf,
    /// Where it came from, for messages.
    pub source: String,
    /// The Python that holds this libtorch (the project's own environment when `own_env`), if any.
    pub python: Option<PathBuf>,
    /// Whether `python` is the project's own environment (xtask may install packages into it).
    pub own_env: bool,
}

impl Libtorch {
    /// Environment variables for cargo (build and run time).
    pub fn env(&self) -> Vec<(String, String)> {
        let lib = self.root.join("lib");
        let mut ld = lib.display().to_string();
        if let Ok(old) = std::env::var("LD_LIBRARY_PATH") {
            if !old.is_empty() && !old.split(':').any(|p| Path::new(p) == lib) {
                ld = format!("{ld}:{old}");
            }
        }
        vec![
            ("LIBTORCH".into(), self.root.display().to_string()),
            ("LIBTORCH_CXX11_ABI".into(), "1".into()),
            ("LD_LIBRARY_PATH".into(), ld),
        ]
    }

    /// Applies [`Libtorch::env`] to a command, and removes `LIBTORCH_USE_PYTORCH` so that the build script
    /// uses exactly this folder.
    pub fn apply(&self, cmd: &mut Command) {
        cmd.env_remove("LIBTORCH_USE_PYTORCH");
        for (k, v) in self.env() {
            cmd.env(k, v);
        }
    }
}

/// The cache folder shared by every clone on this machine.
pub fn cache_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("MANIFOLD_GEN_CACHE").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("manifold-gen"));
    }
    let home = std::env::var_os("HOME")
        .context("neither MANIFOLD_GEN_CACHE nor HOME is set: set MANIFOLD_GEN_CACHE to a writable folder")?;
    Ok(PathBuf::from(home).join(".cache").join("manifold-gen"))
}

/// Finds or installs libtorch, printing what it does on stderr.
pub fn ensure() -> Result<Libtorch> {
    if let Some(root) = std::env::var_os("LIBTORCH").filter(|d| !d.is_empty()) {
        let root = PathBuf::from(root);
        check_folder(&root).with_context(|| format!("LIBTORCH={} is not usable", root.display()))?;
        return Ok(Libtorch { root, source: "LIBTORCH".into(), python: None, own_env: false });
    }
    if std::env::var_os("LIBTORCH_USE_PYTORCH").is_some_and(|v| !v.is_empty()) {
        let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        let root = torch_dir_of(Path::new(&python)).context("LIBTORCH_USE_PYTORCH is set")?;
        return Ok(Libtorch {
            root,
            source: format!("{python} (LIBTORCH_USE_PYTORCH)"),
            python: Some(python.into()),
            own_env: false,
        });
    }
    let base = cache_dir()?.join(format!("torch-{TORCH_VERSION}"));
    let venv = base.join("venv");
    let marker = base.join("ready");
    if let Ok(text) = std::fs::read_to_string(&marker) {
        let root = PathBuf::from(text.trim());
        if root.join("lib").join("libtorch_cpu.so").exists() {
            return Ok(Libtorch {
                root,
                source: format!("cache {}", base.display()),
                python: Some(venv.join("bin/python")),
                own_env: true,
            });
        }
    }
    install(&base, &venv)?;
    let python = venv.join("bin/python");
    let root = torch_dir_of(&python)?;
    check_folder(&root)?;
    let tmp = base.join(format!("ready.tmp{}", std::process::id()));
    std::fs::write(&tmp, root.display().to_string()).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &marker).with_context(|| format!("cannot write {}", marker.display()))?;
    Ok(Libtorch { root, source: format!("cache {}", base.display()), python: Some(python), own_env: true })
}

/// Creates the virtual environment (if absent) and installs torch into it.
fn install(base: &Path, venv: &Path) -> Result<()> {
    std::fs::create_dir_all(base).with_context(|| {
        format!("cannot create the cache folder {} (set MANIFOLD_GEN_CACHE to a writable folder)", base.display())
    })?;
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    if !venv.join("bin/python").exists() {
        eprintln!("xtask: creating a Python environment for libtorch in {}", venv.display());
        let partial = base.join(format!("venv.partial{}", std::process::id()));
        let status = Command::new(&python).args(["-m", "venv"]).arg(&partial).status();
        match status {
            Err(e) => bail!("cannot run `{python}` ({e}): libtorch is installed from PyPI and needs python3 with venv and pip (Debian: apt-get install python3 python3-venv python3-pip), or set LIBTORCH to an existing libtorch {TORCH_VERSION}"),
            Ok(s) if !s.success() => {
                let _ = std::fs::remove_dir_all(&partial);
                bail!("`{python} -m venv` failed: install the venv module (Debian: apt-get install python3-venv), or set LIBTORCH to an existing libtorch {TORCH_VERSION}")
            }
            Ok(_) => {}
        }
        if std::fs::rename(&partial, venv).is_err() {
            // Another process won the race; use its environment.
            let _ = std::fs::remove_dir_all(&partial);
        }
    }
    let vpy = venv.join("bin/python");
    let pip_ok =
        Command::new(&vpy).args(["-m", "pip", "--version"]).output().map(|o| o.status.success()).unwrap_or(false);
    if !pip_ok {
        bail!("the Python environment {} has no pip: install pip for python3 (Debian: apt-get install python3-pip python3-venv) and delete that folder, or set LIBTORCH to an existing libtorch {TORCH_VERSION}", venv.display());
    }
    eprintln!(
        "xtask: installing torch=={TORCH_VERSION} from PyPI into {} (about 5 GB, once per machine)",
        venv.display()
    );
    let status = Command::new(&vpy)
        .args(["-m", "pip", "install", "--disable-pip-version-check", &format!("torch=={TORCH_VERSION}")])
        .status()
        .context("cannot run pip")?;
    if !status.success() {
        bail!("`pip install torch=={TORCH_VERSION}` failed (see pip's output above): check that PyPI is reachable and the disk has about 6 GB free, then run again; or set LIBTORCH to an existing libtorch {TORCH_VERSION}");
    }
    Ok(())
}

/// Makes sure `python` can import `modules`, installing `packages` with pip when it is the project's own
/// environment; otherwise errors with what to install.
pub fn ensure_python_packages(python: &Path, own_env: bool, modules: &[&str], packages: &[&str]) -> Result<()> {
    let probe = format!("import {}", modules.join(", "));
    let have = Command::new(python).args(["-c", &probe]).output().map(|o| o.status.success()).unwrap_or(false);
    if have {
        return Ok(());
    }
    if !own_env {
        bail!(
            "{} cannot import {}: `pip install {}` into it",
            python.display(),
            modules.join(", "),
            packages.join(" ")
        );
    }
    eprintln!("xtask: installing {} into the project's Python environment", packages.join(" "));
    let status = Command::new(python)
        .args(["-m", "pip", "install", "--disable-pip-version-check"])
        .args(packages)
        .status()
        .context("cannot run pip")?;
    if !status.success() {
        bail!("`pip install {}` failed (see pip's output above): check that PyPI is reachable", packages.join(" "));
    }
    Ok(())
}

/// Asks a Python for its torch folder and checks its version.
fn torch_dir_of(python: &Path) -> Result<PathBuf> {
    let out = Command::new(python)
        .args(["-c", "import os, torch; print(torch.__version__); print(os.path.dirname(torch.__file__))"])
        .output()
        .with_context(|| format!("cannot run {}: install python3 or set LIBTORCH", python.display()))?;
    if !out.status.success() {
        bail!("{} cannot import torch: `pip install torch=={TORCH_VERSION}` into it, or unset LIBTORCH_USE_PYTORCH to let xtask install its own", python.display());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let version = lines.next().unwrap_or_default().trim().to_string();
    let dir = PathBuf::from(lines.next().unwrap_or_default().trim());
    check_version(&version, &format!("the torch of {}", python.display()))?;
    Ok(dir)
}

fn check_version(version: &str, what: &str) -> Result<()> {
    let plain = version.split('+').next().unwrap_or_default();
    if plain != TORCH_VERSION {
        bail!("{what} is version {version}, but tch 0.26 needs libtorch {TORCH_VERSION}: install torch=={TORCH_VERSION}, or unset LIBTORCH / LIBTORCH_USE_PYTORCH to let xtask install its own");
    }
    Ok(())
}

/// Checks that a folder holds a libtorch of the right version.
fn check_folder(root: &Path) -> Result<()> {
    if !root.join("lib").join("libtorch_cpu.so").exists() && !root.join("lib").join("libtorch.so").exists() {
        bail!("{} has no lib/libtorch_cpu.so: point LIBTORCH at a libtorch folder (holding include/ and lib/) or at a torch wheel's torch/ folder", root.display());
    }
    let version = if let Ok(v) = std::fs::read_to_string(root.join("build-version")) {
        v
    } else if let Ok(py) = std::fs::read_to_string(root.join("version.py")) {
        py.lines()
            .find_map(|l| {
                l.strip_prefix("__version__ = ").map(|v| v.trim_matches(|c| c == '\'' || c == '"').to_string())
            })
            .unwrap_or_default()
    } else {
        bail!("cannot tell the libtorch version of {} (no build-version or version.py)", root.display());
    };
    check_version(version.trim(), &format!("libtorch in {}", root.display()))
}
