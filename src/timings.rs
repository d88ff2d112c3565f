//! Stage timings of a build, for `--timings` (a table on stderr) and `--json` (a `stages`
//! object): how long each named stage took, in the order the stages ran, and the wall time
//! of the whole build. A [`Stopwatch`] measures; [`Timings`] is what it measured. Times are
//! only ever reported, never written into what is built, so an image is the same bytes
//! whether or not they are asked for.

use std::time::{Duration, Instant};

/// Measures named stages one after another, from the moment it is started.
#[derive(Debug)]
pub struct Stopwatch {
    start: Instant,
    stages: Vec<(&'static str, Duration)>,
}

impl Stopwatch {
    pub fn start() -> Stopwatch {
        Stopwatch {
            start: Instant::now(),
            stages: Vec::new(),
        }
    }

    /// Runs `f` as stage `name` and adds its time to the stage.
    pub fn time<T>(&mut self, name: &'static str, f: impl FnOnce() -> T) -> T {
        let t = Instant::now();
        let r = f();
        self.add(name, t.elapsed());
        r
    }

    /// Adds `d` to stage `name` (a new stage goes last).
    pub fn add(&mut self, name: &'static str, d: Duration) {
        tracing::debug!("stage {name}: {:.3}s", d.as_secs_f64());
        match self.stages.iter_mut().find(|(n, _)| *n == name) {
            Some((_, total)) => *total += d,
            None => self.stages.push((name, d)),
        }
    }

    /// The stages so far, and the time since [`Stopwatch::start`] as the total.
    pub fn finish(&self) -> Timings {
        Timings {
            stages: self.stages.clone(),
            total: self.start.elapsed(),
        }
    }
}

/// What a [`Stopwatch`] measured. The stages never overlap, so their sum is at most the
/// total; the rest of the total is the work between stages (argument checks, output paths).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timings {
    pub stages: Vec<(&'static str, Duration)>,
    pub total: Duration,
}

/// Seconds truncated to the millisecond. Truncating every figure keeps the stages' sum at
/// most the total in the reported figures too.
pub fn seconds(d: Duration) -> f64 {
    d.as_millis() as f64 / 1000.0
}

impl Timings {
    /// `{"resolve": 0.004, "tree": 0.031, …}`: the stages in the order they ran, seconds as
    /// [`seconds`] gives.
    pub fn stages_json(&self) -> StagesJson<'_> {
        StagesJson(&self.stages)
    }

    /// The table `--timings` prints: one row per stage (seconds, share of the total), then
    /// the total.
    pub fn table(&self) -> String {
        let width = self
            .stages
            .iter()
            .map(|(n, _)| n.len())
            .chain(["stage".len(), "total".len()])
            .max()
            .unwrap_or(5);
        let total = self.total.as_secs_f64();
        let share = |d: Duration| {
            if total > 0.0 {
                100.0 * d.as_secs_f64() / total
            } else {
                0.0
            }
        };
        let mut s = format!("{:<width$}  {:>9}  {:>6}\n", "stage", "seconds", "share");
        for (name, d) in &self.stages {
            s += &format!(
                "{name:<width$}  {:>9.3}  {:>5.1}%\n",
                seconds(*d),
                share(*d)
            );
        }
        s += &format!(
            "{:<width$}  {:>9.3}  {:>5.1}%\n",
            "total",
            seconds(self.total),
            100.0
        );
        s
    }
}

/// The stages as a JSON object whose keys keep the stages' order (a `serde_json::Map` would
/// sort them).
pub struct StagesJson<'a>(&'a [(&'static str, Duration)]);

impl serde::Serialize for StagesJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (name, d) in self.0 {
            m.serialize_entry(name, &seconds(*d))?;
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_stage_timed_twice_is_one_row_with_the_sum() {
        let mut w = Stopwatch::start();
        w.add("layers", ms(2));
        w.add("config", ms(1));
        w.add("layers", ms(3));
        let t = w.finish();
        assert_eq!(t.stages, [("layers", ms(5)), ("config", ms(1))]);
        assert!(t.total < Duration::from_secs(60));
    }

    #[test]
    fn time_returns_what_the_stage_returns() {
        let mut w = Stopwatch::start();
        let r: Result<u32, ()> = w.time("plan", || Ok(7));
        assert_eq!(r, Ok(7));
        assert_eq!(w.finish().stages[0].0, "plan");
    }

    #[test]
    fn the_json_keeps_stage_order_and_truncates_to_the_millisecond() {
        let t = Timings {
            stages: vec![("tree", Duration::from_micros(31_999)), ("archive", ms(2))],
            total: ms(40),
        };
        assert_eq!(
            serde_json::to_string(&t.stages_json()).unwrap(),
            r#"{"tree":0.031,"archive":0.002}"#
        );
    }

    #[test]
    fn the_table_aligns_every_stage_and_ends_with_the_total() {
        let t = Timings {
            stages: vec![("resolve", ms(250)), ("elf-check", ms(500))],
            total: ms(1000),
        };
        assert_eq!(
            t.table(),
            "stage        seconds   share\n\
             resolve        0.250   25.0%\n\
             elf-check      0.500   50.0%\n\
             total          1.000  100.0%\n"
        );
    }
}
