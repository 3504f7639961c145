//! Project automation. Run as `cargo xtask COMMAND`; `cargo xtask help` lists the commands.
//!
//! xtask never depends on tch, so that it builds on a machine with no libtorch yet: its first job is to
//! find or install libtorch (see [`libtorch`]) and run cargo with the environment that needs.

mod layering;
mod libtorch;
mod smoke;

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

const HELP: &str = "\
cargo xtask COMMAND

commands:
  setup                 find or install libtorch 2.13.0 and print where it is
  env                   print shell exports so that plain `cargo build` / `cargo test` work
  test [--slow]         fmt check, clippy -D warnings, layering checks, every test and doctest, then
                        every experiment's --quick variant once (release build) with a check of its
                        run folder and summary schema (--slow, or CI=true, also runs the slow tests)
  smoke                 only the --quick experiment runs of `test`, into target/smoke/
  bench [ARGS..]        criterion benches (ARGS go to cargo bench, e.g. `-- sphere`)
  bench peers [--json FILE] [--quick] [--threads N]
                        the same workloads in NumPy/SciPy and PyTorch eager, with the throughput
                        ratio ours/peer (--threads: libtorch and rayon threads of both sides)
  experiment NAME ..    run an experiment in release mode (`cargo xtask experiment help` lists them)
  help                  this text

environment:
  LIBTORCH              use this libtorch 2.13.0 folder (a standalone libtorch or a wheel's torch/)
  LIBTORCH_USE_PYTORCH  use the torch of the Python on the path ($PYTHON, default python3)
  MANIFOLD_GEN_CACHE    where xtask keeps its own libtorch (default ~/.cache/manifold-gen)
";

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, rest) = match args.split_first() {
        Some((c, r)) => (c.as_str(), r),
        None => ("help", &[][..]),
    };
    match cmd {
        "setup" => {
            let t = libtorch::ensure()?;
            println!("libtorch {} at {} (from {})", libtorch::TORCH_VERSION, t.root.display(), t.source);
            if let Some(python) = &t.python {
                println!("python environment: {}", python.display());
            }
            Ok(())
        }
        "env" => {
            let t = libtorch::ensure()?;
            println!("export LIBTORCH={}", shell_quote(&t.root.display().to_string()));
            println!("export LIBTORCH_CXX11_ABI=1");
            println!(
                "export LD_LIBRARY_PATH={}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}",
                shell_quote(&t.root.join("lib").display().to_string())
            );
            println!("unset LIBTORCH_USE_PYTORCH");
            Ok(())
        }
        "test" | "ci" => test(rest),
        "smoke" => {
            let t = libtorch::ensure()?;
            smoke::run(&root(), |args| cargo(&t, args), |cmd| t.apply(cmd))
        }
        "bench" => bench(rest),
        "experiment" => experiment(rest),
        "help" | "-h" | "--help" => {
            print!("{HELP}");
            Ok(())
        }
        other => bail!("unknown command `{other}`; `cargo xtask help` lists the commands"),
    }
}

/// The workspace root (the parent of xtask/).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives inside the workspace").to_path_buf()
}

fn shell_quote(s: &str) -> String {
    if s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+:=,".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// A cargo command in the workspace root with libtorch's environment.
fn cargo(t: &libtorch::Libtorch, args: &[&str]) -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root()).args(args);
    t.apply(&mut cmd);
    cmd
}

fn run_step(name: &str, mut cmd: Command) -> Result<()> {
    eprintln!("xtask: {name}");
    let status = cmd.status().with_context(|| format!("cannot start {name}"))?;
    if !status.success() {
        bail!("{name} failed");
    }
    Ok(())
}

fn test(args: &[String]) -> Result<()> {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    let mut slow = ci;
    for a in args {
        match a.as_str() {
            "--slow" => slow = true,
            other => bail!("unknown option `{other}` for test (allowed: --slow)"),
        }
    }
    let t = libtorch::ensure()?;
    eprintln!("xtask: libtorch {} from {}", libtorch::TORCH_VERSION, t.source);
    // A fresh clone gains nothing from incremental compilation, and its caches were about 8 GB of the
    // test build; leave the developer's own setting alone otherwise.
    let incremental_off = ci && std::env::var_os("CARGO_INCREMENTAL").is_none();
    let with_env = |mut cmd: Command| {
        if incremental_off {
            cmd.env("CARGO_INCREMENTAL", "0");
        }
        cmd
    };
    report_disk("before the build");
    run_step("cargo fmt --check", cargo(&t, &["fmt", "--all", "--check"]))?;
    layering::check(&root())?;
    eprintln!("xtask: layering ok");
    run_step(
        "cargo clippy -D warnings",
        with_env(cargo(&t, &["clippy", "--workspace", "--all-targets", "--all-features", "--", "-D", "warnings"])),
    )?;
    let mut tests = with_env(cargo(&t, &["test", "--workspace", "--all-targets", "--all-features"]));
    let mut docs = with_env(cargo(&t, &["test", "--workspace", "--doc", "--all-features"]));
    if slow {
        tests.env("MANIFOLD_GEN_SLOW_TESTS", "1");
        docs.env("MANIFOLD_GEN_SLOW_TESTS", "1");
    }
    run_step("cargo test (unit, integration, benches in test mode)", tests)?;
    run_step("cargo test --doc", docs)?;
    report_disk("after the tests");
    eprintln!("xtask: smoke runs of every experiment's --quick variant (release build)");
    smoke::run(&root(), |args| with_env(cargo(&t, args)), |cmd| t.apply(cmd))?;
    report_disk("after the smoke runs");
    eprintln!("xtask: all checks passed");
    Ok(())
}

/// Prints the size of target/ and the free space on its disk (a full disk shows up as a linker crash
/// otherwise). Nothing is printed where `df`/`du` are missing.
fn report_disk(when: &str) {
    let target = root().join("target");
    let probe = if target.exists() { target.clone() } else { root() };
    // Field `field` of line `line` of a command's output, as a number of KiB.
    let kib = |cmd: &str, arg: &str, path: &Path, line: usize, field: usize| -> Option<f64> {
        let out = Command::new(cmd).arg(arg).arg(path).output().ok()?;
        String::from_utf8(out.stdout).ok()?.lines().nth(line)?.split_whitespace().nth(field)?.parse().ok()
    };
    let free = kib("df", "-Pk", &probe, 1, 3);
    let used = kib("du", "-sk", &target, 0, 0);
    let gib = |k: f64| k / (1024.0 * 1024.0);
    match (free, used) {
        (Some(f), Some(u)) => eprintln!("xtask: disk {when}: target/ {:.1} GiB, {:.1} GiB free", gib(u), gib(f)),
        (Some(f), None) => eprintln!("xtask: disk {when}: {:.1} GiB free", gib(f)),
        _ => {}
    }
    if free.is_some_and(|f| gib(f) < 4.0) {
        eprintln!(
            "xtask: warning: less than 4 GiB free; the test build needs several GiB (see the README, section Two commands)"
        );
    }
}

fn bench(args: &[String]) -> Result<()> {
    let t = libtorch::ensure()?;
    if args.first().map(String::as_str) == Some("peers") {
        return bench_peers(&t, &args[1..]);
    }
    let mut cmd = cargo(&t, &["bench", "-p", "benches"]);
    cmd.args(args);
    run_step("cargo bench", cmd)
}

/// The peer harness: our side (a release binary of the benches crate) times each workload and writes its
/// inputs and outputs; a Python script runs the same work in NumPy/SciPy (the base score and smoother
/// workloads) or PyTorch eager (the MAD training step and sampling), checks both against a reference or
/// against each other, and prints the ratios.
fn bench_peers(t: &libtorch::Libtorch, args: &[String]) -> Result<()> {
    let mut json = None;
    let mut quick = false;
    let mut threads = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--json" => json = Some(it.next().context("--json needs a file name")?.clone()),
            "--quick" => quick = true,
            "--threads" => {
                let n = it.next().context("--threads needs a count")?;
                threads = Some(n.parse::<usize>().ok().filter(|&n| n >= 1).context("--threads needs a count >= 1")?);
            }
            other => bail!("unknown option `{other}` for bench peers (allowed: --json FILE, --quick, --threads N)"),
        }
    }
    let (python, own_env) = peer_python(t)?;
    let torch = format!("torch=={}", libtorch::TORCH_VERSION);
    libtorch::ensure_python_packages(&python, own_env, &["torch", "numpy", "scipy"], &[&torch, "numpy", "scipy"])?;
    let dir = root().join("target").join("peers");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut ours = cargo(t, &["run", "--release", "--quiet", "-p", "benches", "--bin", "peers", "--"]);
    ours.arg("--dir").arg(&dir);
    if quick {
        ours.arg("--quick");
    }
    if let Some(n) = threads {
        ours.arg("--threads").arg(n.to_string());
    }
    // libgomp's threads spin at every barrier: on a shared machine a spinning thread keeps the core the
    // thread it waits for needs, and both sides run 10 to 100 times slower, at random (measured here:
    // 3 to 250 training steps per second from one run to the next). Passive waiting makes the figures
    // repeatable; the same for both sides, unless the caller chose a policy.
    let wait_policy = std::env::var("OMP_WAIT_POLICY").unwrap_or_else(|_| "PASSIVE".into());
    eprintln!("xtask: OMP_WAIT_POLICY={wait_policy} for both sides");
    ours.env("OMP_WAIT_POLICY", &wait_policy);
    run_step("our side of the peer benches", ours)?;
    let mut peer = Command::new(&python);
    peer.arg(root().join("benches").join("peers").join("peers.py")).arg("--dir").arg(&dir);
    if let Some(j) = json {
        peer.arg("--json").arg(j);
    }
    if quick {
        peer.arg("--quick");
    }
    if let Some(n) = threads {
        peer.arg("--threads").arg(n.to_string());
    }
    // The peer's torch brings its own libtorch: do not point it at ours.
    peer.env_remove("LIBTORCH_USE_PYTORCH").env("OMP_WAIT_POLICY", &wait_policy);
    run_step("the peer side (NumPy/SciPy, PyTorch eager)", peer)
}

/// The Python of the peer side and whether it is the project's own environment: the one that holds our
/// libtorch, else the project's cached environment (which has torch 2.13.0) when `LIBTORCH` points
/// elsewhere, else `$PYTHON` or `python3`.
fn peer_python(t: &libtorch::Libtorch) -> Result<(PathBuf, bool)> {
    if let Some(p) = &t.python {
        return Ok((p.clone(), t.own_env));
    }
    let cached = libtorch::cache_dir()?.join(format!("torch-{}", libtorch::TORCH_VERSION)).join("venv/bin/python");
    if cached.exists() {
        return Ok((cached, true));
    }
    Ok((PathBuf::from(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())), false))
}

fn experiment(args: &[String]) -> Result<()> {
    let t = libtorch::ensure()?;
    let mut cmd = cargo(&t, &["run", "--release", "--quiet", "-p", "experiments", "--"]);
    cmd.args(args);
    run_step("experiments", cmd)
}
