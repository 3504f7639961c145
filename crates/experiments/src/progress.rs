//! Progress reporting for long phases: training steps, sampler steps, metric evaluation.
//!
//! A [`Phase`] shows an indicatif progress bar (label, position/total, rate, ETA and a free message such as
//! `loss 0.123`) when stderr is a terminal, and otherwise writes plain lines to stderr: one each time the work
//! crosses a tenth of the total or [`PLAIN_INTERVAL`] has passed since the last line, and one at the end with
//! the elapsed time. The environment variable [`ENV_VAR`] (`MANIFOLD_GEN_PROGRESS=plain|bar|off`) overrides
//! the choice.
//!
//! ```
//! use experiments::progress::{Mode, Phase};
//!
//! let mut phase = Phase::with_mode("train", 100, Mode::Off);
//! for step in 0..100 {
//!     phase.inc(1);
//!     phase.set_message(format!("loss {:.3}", 1.0 / (step + 1) as f64));
//! }
//! assert_eq!(phase.position(), 100);
//! let _elapsed = phase.finish();
//! ```

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Once;
use std::time::{Duration, Instant};

/// The environment variable that overrides the output mode: `plain`, `bar` or `off` (case-insensitive).
pub const ENV_VAR: &str = "MANIFOLD_GEN_PROGRESS";

/// In plain mode, a line is written at the latest this long after the previous one (if there was progress).
pub const PLAIN_INTERVAL: Duration = Duration::from_secs(30);

/// In bar mode, the stored message is pushed to the bar at most this often.
const MESSAGE_INTERVAL: Duration = Duration::from_millis(100);

/// How a [`Phase`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// An indicatif progress bar on stderr.
    Bar,
    /// Plain log lines on stderr, throttled (see [`should_print`]).
    Plain,
    /// Nothing.
    Off,
}

impl Mode {
    /// `plain`, `bar` or `off`, case-insensitive, surrounding whitespace ignored; `None` otherwise.
    pub fn parse(value: &str) -> Option<Mode> {
        match value.trim().to_ascii_lowercase().as_str() {
            "plain" => Some(Mode::Plain),
            "bar" => Some(Mode::Bar),
            "off" => Some(Mode::Off),
            _ => None,
        }
    }

    /// The mode named by [`ENV_VAR`] if set to a valid value, else [`Mode::Bar`] when stderr is a terminal and
    /// [`Mode::Plain`] otherwise. An invalid value is reported once on stderr and ignored.
    pub fn from_env() -> Mode {
        if let Ok(value) = std::env::var(ENV_VAR) {
            match Mode::parse(&value) {
                Some(mode) => return mode,
                None => {
                    static WARN: Once = Once::new();
                    WARN.call_once(|| eprintln!("{ENV_VAR}={value:?} ignored: expected plain, bar or off"));
                }
            }
        }
        if std::io::stderr().is_terminal() {
            Mode::Bar
        } else {
            Mode::Plain
        }
    }
}

/// Whether plain mode writes a line now: the position `pos` has moved past `last_pos` (the position of the
/// previous line, 0 at the start) and either crossed a multiple of a tenth of `total` or `since_last`
/// (the time since the previous line, or since the start) reached [`PLAIN_INTERVAL`].
///
/// Never at or past the end (`pos >= total > 0`): the end line written by [`Phase::finish`] covers it.
/// With an unknown total (`total == 0`) only the time rule applies.
pub fn should_print(pos: u64, total: u64, last_pos: u64, since_last: Duration) -> bool {
    if pos <= last_pos || (total > 0 && pos >= total) {
        return false;
    }
    let decile = |p: u64| u128::from(p) * 10 / u128::from(total);
    (total > 0 && decile(pos) > decile(last_pos)) || since_last >= PLAIN_INTERVAL
}

/// One long phase of work, reported on stderr according to a [`Mode`].
///
/// Updating the position or the message is cheap (a few comparisons and a clock read), so it can be done at
/// every step; rendering is throttled. [`Phase::finish`] writes the end line and returns the elapsed time;
/// dropping a phase without finishing it leaves the bar where it stopped (or, in plain mode, writes a
/// `stopped` line).
#[derive(Debug)]
pub struct Phase {
    label: String,
    total: u64,
    pos: u64,
    message: String,
    start: Instant,
    out: Output,
    finished: bool,
}

#[derive(Debug)]
enum Output {
    Bar { bar: ProgressBar, last_push: Instant, dirty: bool },
    Plain { last_pos: u64, last_time: Instant, lines: u64 },
    Off,
}

impl Phase {
    /// A phase of `total` units of work (0 when unknown) in the mode chosen by [`Mode::from_env`].
    pub fn new(label: &str, total: u64) -> Phase {
        Phase::with_mode(label, total, Mode::from_env())
    }

    /// A phase reported in an explicit `mode`.
    pub fn with_mode(label: &str, total: u64, mode: Mode) -> Phase {
        let now = Instant::now();
        let out = match mode {
            Mode::Bar => {
                let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
                bar.set_style(bar_style(total));
                bar.set_prefix(label.to_string());
                bar.enable_steady_tick(Duration::from_secs(1));
                Output::Bar { bar, last_push: now, dirty: false }
            }
            Mode::Plain => Output::Plain { last_pos: 0, last_time: now, lines: 0 },
            Mode::Off => Output::Off,
        };
        Phase { label: label.to_string(), total, pos: 0, message: String::new(), start: now, out, finished: false }
    }

    /// Sets the position (units of work done).
    pub fn set_position(&mut self, pos: u64) {
        self.pos = pos;
        self.update();
    }

    /// Adds `n` units of work done.
    pub fn inc(&mut self, n: u64) {
        self.set_position(self.pos.saturating_add(n));
    }

    /// Changes the total (0 when unknown).
    pub fn set_total(&mut self, total: u64) {
        if total == self.total {
            return;
        }
        let was_known = self.total > 0;
        self.total = total;
        if let Output::Bar { bar, .. } = &self.out {
            bar.set_length(total);
            if was_known != (total > 0) {
                bar.set_style(bar_style(total));
            }
        }
    }

    /// Stores a free message (for example `loss 0.123`), shown at the next throttled render.
    pub fn set_message(&mut self, msg: impl Into<String>) {
        self.message = msg.into();
        if let Output::Bar { dirty, .. } = &mut self.out {
            *dirty = true;
        }
        self.update();
    }

    /// Units of work done so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Total units of work (0 when unknown).
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Time since the phase started.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Ends the phase: the bar is completed and left on screen, or the plain end line is written with the
    /// elapsed time. Returns the elapsed time.
    pub fn finish(mut self) -> Duration {
        let elapsed = self.start.elapsed();
        match &mut self.out {
            Output::Bar { bar, .. } => {
                bar.set_position(self.pos);
                bar.set_message(self.message.clone());
                bar.finish();
            }
            Output::Plain { .. } => eprintln!("{}", self.end_line("done", elapsed)),
            Output::Off => {}
        }
        self.finished = true;
        elapsed
    }

    /// Pushes the state to the output, throttled.
    fn update(&mut self) {
        match &mut self.out {
            Output::Bar { bar, last_push, dirty } => {
                bar.set_position(self.pos);
                if *dirty {
                    let now = Instant::now();
                    if now.duration_since(*last_push) >= MESSAGE_INTERVAL {
                        bar.set_message(self.message.clone());
                        *last_push = now;
                        *dirty = false;
                    }
                }
            }
            Output::Plain { last_pos, last_time, lines } => {
                let now = Instant::now();
                if should_print(self.pos, self.total, *last_pos, now.duration_since(*last_time)) {
                    *last_pos = self.pos;
                    *last_time = now;
                    *lines += 1;
                    let line = progress_line(&self.label, self.pos, self.total, &self.message, self.start.elapsed());
                    eprintln!("{line}");
                }
            }
            Output::Off => {}
        }
    }

    fn end_line(&self, verb: &str, elapsed: Duration) -> String {
        let of_total = if self.total > 0 { format!("/{}", self.total) } else { String::new() };
        let mut line = format!(
            "{}: {verb} {}{of_total} in {} ({})",
            self.label,
            self.pos,
            fmt_duration(elapsed),
            fmt_rate(self.pos, elapsed)
        );
        if !self.message.is_empty() {
            line.push_str(", ");
            line.push_str(&self.message);
        }
        line
    }
}

impl Drop for Phase {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        match &self.out {
            Output::Bar { bar, .. } => bar.abandon(),
            Output::Plain { .. } => eprintln!("{}", self.end_line("stopped at", self.start.elapsed())),
            Output::Off => {}
        }
    }
}

/// The sampler's observer: after step `step_idx` (from 0) of `n_steps`, the position is `step_idx + 1` and the
/// total `n_steps`.
impl sample::Progress for Phase {
    fn on_step(&mut self, step_idx: usize, n_steps: usize) {
        self.set_total(n_steps as u64);
        self.set_position(step_idx as u64 + 1);
    }
}

fn bar_style(total: u64) -> ProgressStyle {
    let template = if total > 0 {
        "{prefix} [{bar:30}] {pos}/{len} ({per_sec}, eta {eta}) {msg}"
    } else {
        "{prefix} {spinner} {pos} ({per_sec}, {elapsed}) {msg}"
    };
    ProgressStyle::with_template(template).expect("a valid indicatif template").progress_chars("=> ")
}

/// `label: pos/total (pct%), rate, eta ..., message`.
fn progress_line(label: &str, pos: u64, total: u64, message: &str, elapsed: Duration) -> String {
    let mut line = if total > 0 {
        let pct = 100.0 * pos as f64 / total as f64;
        let mut l = format!("{label}: {pos}/{total} ({pct:.0}%), {}", fmt_rate(pos, elapsed));
        if pos > 0 {
            let eta = elapsed.mul_f64(total.saturating_sub(pos) as f64 / pos as f64);
            l.push_str(&format!(", eta {}", fmt_duration(eta)));
        }
        l
    } else {
        format!("{label}: {pos}, {}, elapsed {}", fmt_rate(pos, elapsed), fmt_duration(elapsed))
    };
    if !message.is_empty() {
        line.push_str(", ");
        line.push_str(message);
    }
    line
}

/// Units per second, or seconds per unit below one unit per second.
fn fmt_rate(pos: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    if pos == 0 || secs <= 0.0 {
        return "-/s".to_string();
    }
    let rate = pos as f64 / secs;
    if rate >= 100.0 {
        format!("{rate:.0}/s")
    } else if rate >= 1.0 {
        format!("{rate:.1}/s")
    } else {
        format!("{:.1}s/it", 1.0 / rate)
    }
}

/// `12.3s`, `4m 05s`, `2h 03m`.
fn fmt_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else if secs < 3600.0 {
        let s = secs as u64;
        format!("{}m {:02}s", s / 60, s % 60)
    } else {
        let s = secs as u64;
        format!("{}h {:02}m", s / 3600, (s % 3600) / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sample::Progress;

    const NOW: Duration = Duration::ZERO;

    #[test]
    fn plain_lines_at_each_tenth_of_the_work() {
        assert!(!should_print(9, 100, 0, NOW));
        assert!(should_print(10, 100, 0, NOW));
        assert!(!should_print(10, 100, 10, NOW));
        assert!(!should_print(19, 100, 10, NOW));
        assert!(should_print(20, 100, 19, NOW));
        assert!(should_print(35, 100, 5, NOW));
        // Never at the end (the end line covers it), never without progress.
        assert!(!should_print(100, 100, 90, PLAIN_INTERVAL));
        assert!(!should_print(5, 100, 5, PLAIN_INTERVAL));
        // Small totals: every step crosses a tenth.
        assert!((1..5).all(|p| should_print(p, 5, p - 1, NOW)));
        // Huge totals do not overflow.
        assert!(should_print(u64::MAX / 2, u64::MAX, 0, NOW));
    }

    #[test]
    fn plain_lines_every_interval_in_between() {
        assert!(should_print(11, 100, 10, PLAIN_INTERVAL));
        assert!(!should_print(11, 100, 10, PLAIN_INTERVAL - Duration::from_millis(1)));
        // Unknown total: time only.
        assert!(!should_print(1000, 0, 0, Duration::from_secs(29)));
        assert!(should_print(1000, 0, 0, Duration::from_secs(30)));
    }

    #[test]
    fn plain_phase_writes_nine_lines_for_a_fast_phase() {
        let mut phase = Phase::with_mode("test", 1000, Mode::Plain);
        for step in 0..1000 {
            phase.on_step(step, 1000);
            phase.set_message(format!("loss {step}"));
        }
        let Output::Plain { lines, last_pos, .. } = &phase.out else { panic!("plain mode") };
        assert_eq!((*lines, *last_pos), (9, 900));
        assert_eq!(phase.position(), 1000);
        assert!(phase.finish() < Duration::from_secs(60));
    }

    #[test]
    fn sampler_observer_sets_position_and_adapts_total() {
        let mut phase = Phase::with_mode("sample", 10, Mode::Off);
        phase.on_step(0, 20);
        assert_eq!((phase.position(), phase.total()), (1, 20));
        phase.on_step(19, 20);
        assert_eq!(phase.position(), 20);
        phase.inc(5);
        assert_eq!(phase.position(), 25);
        phase.finish();
    }

    #[test]
    fn bar_mode_without_a_terminal_and_drop_without_finish_are_clean() {
        let mut phase = Phase::with_mode("bar", 0, Mode::Bar);
        phase.set_total(50);
        for _ in 0..50 {
            phase.inc(1);
            phase.set_message("loss 0.5");
        }
        phase.set_total(0);
        drop(phase);
        let mut plain = Phase::with_mode("plain", 10, Mode::Plain);
        plain.set_position(3);
        drop(plain);
    }

    #[test]
    fn modes_parse_and_lines_read_well() {
        assert_eq!(Mode::parse(" Plain "), Some(Mode::Plain));
        assert_eq!(Mode::parse("BAR"), Some(Mode::Bar));
        assert_eq!(Mode::parse("off"), Some(Mode::Off));
        assert_eq!(Mode::parse("quiet"), None);
        assert_eq!(
            progress_line("train", 250, 1000, "loss 0.123", Duration::from_secs(5)),
            "train: 250/1000 (25%), 50.0/s, eta 15.0s, loss 0.123"
        );
        assert_eq!(progress_line("eval", 3, 0, "", Duration::from_secs(6)), "eval: 3, 2.0s/it, elapsed 6.0s");
        assert_eq!(fmt_duration(Duration::from_secs(245)), "4m 05s");
        assert_eq!(fmt_duration(Duration::from_secs(7380)), "2h 03m");
        assert_eq!(fmt_rate(0, Duration::from_secs(1)), "-/s");
        assert_eq!(fmt_rate(1500, Duration::from_secs(1)), "1500/s");
        let mut phase = Phase::with_mode("train", 1000, Mode::Off);
        phase.set_position(1000);
        phase.set_message("loss 0.1");
        assert_eq!(phase.end_line("done", Duration::from_secs(10)), "train: done 1000/1000 in 10.0s (100/s), loss 0.1");
        phase.finish();
    }
}
