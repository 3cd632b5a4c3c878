//! What every `lockstep bench` shares: run subject and reference interleaved (A B A B ...) for
//! `--repeat N` repetitions, reduce each to its median and min-max, pair every subject sample
//! with its neighbouring reference sample for the ratio, flag noisy rows, read the machine's
//! load average, and print the table.
//!
//! A row is *noisy* when its ratio spread (max - min over the pairs) is wider than
//! [`NOISY_WIDTH`] of the median ratio: its median should then not be trusted to compare runs.

use serde_json::{Map, Value};

/// Ratio spread (max - min), as a fraction of the median ratio, above which a row is noisy.
pub const NOISY_WIDTH: f64 = 0.25;

/// Median and extremes of a set of samples.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Spread {
    /// Median (mean of the two middle samples for an even count).
    pub median: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
}

impl Spread {
    /// The spread of `v` (all zeros when empty).
    pub fn of(v: &[f64]) -> Spread {
        if v.is_empty() {
            return Spread::default();
        }
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        let median = if n % 2 == 1 {
            s[n / 2]
        } else {
            (s[n / 2 - 1] + s[n / 2]) / 2.0
        };
        Spread {
            median,
            min: s[0],
            max: s[n - 1],
        }
    }

    /// `median (min-max)` with `prec` decimals; just the median when min == max.
    pub fn cell(&self, prec: usize) -> String {
        if self.min == self.max {
            return format!("{:.prec$}", self.median);
        }
        format!(
            "{:.prec$} ({:.prec$}-{:.prec$})",
            self.median, self.min, self.max
        )
    }
}

/// A subject measured against a reference, sample by sample.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Paired {
    /// Repetitions (pairs).
    pub repeat: usize,
    /// The subject's samples.
    pub subject: Spread,
    /// The reference's samples.
    pub reference: Spread,
    /// subject / reference of each pair.
    pub ratio: Spread,
    /// Ratio spread wider than [`NOISY_WIDTH`] of the median ratio.
    pub noisy: bool,
}

impl Paired {
    /// Pair `subject[i]` with `reference[i]`.
    pub fn new(subject: &[f64], reference: &[f64]) -> Paired {
        let ratios: Vec<f64> = subject.iter().zip(reference).map(|(s, r)| s / r).collect();
        let ratio = Spread::of(&ratios);
        Paired {
            repeat: ratios.len(),
            subject: Spread::of(subject),
            reference: Spread::of(reference),
            ratio,
            noisy: ratio.max - ratio.min > NOISY_WIDTH * ratio.median,
        }
    }

    /// JSON fields of a row: `<subject>` and `<reference>` hold the medians, `_min` / `_max`
    /// their extremes; `ratio` (median), `ratio_min`, `ratio_max`, `repeat` and `noisy`.
    pub fn json(&self, subject: &str, reference: &str) -> Map<String, Value> {
        let mut m = Map::new();
        let mut put = |k: String, v: f64| {
            m.insert(k, Value::from(v));
        };
        for (key, s) in [(subject, &self.subject), (reference, &self.reference)] {
            put(key.to_string(), s.median);
            put(format!("{key}_min"), s.min);
            put(format!("{key}_max"), s.max);
        }
        put("ratio".into(), self.ratio.median);
        put("ratio_min".into(), self.ratio.min);
        put("ratio_max".into(), self.ratio.max);
        m.insert("repeat".into(), Value::from(self.repeat));
        m.insert("noisy".into(), Value::from(self.noisy));
        m
    }

    /// `noisy` or empty, for the table's last column.
    pub fn flag(&self) -> &'static str {
        if self.noisy {
            "noisy"
        } else {
            ""
        }
    }
}

/// Work done and seconds taken by one chunk of a sample (throughput = work / secs).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Chunk {
    /// Bytes, samples, ... moved or processed.
    pub work: f64,
    /// Seconds it took.
    pub secs: f64,
}

/// Run `steps` measurements `repeat` times, interleaved, and return each repetition's
/// throughput, indexed `[step][rep]`: the median over its chunks of work / seconds (a chunk
/// that a burst of other work on the machine slowed does not move it).
///
/// Each repetition is `chunks` rounds of one chunk per step, in ABBA order (steps forward in
/// even rounds, backward in odd ones), so subject and reference share the machine's load at the
/// scale of one chunk, and a load that rises or falls through a repetition weighs on both
/// alike. `measure(step, rep)` runs one chunk. A chunk that took no time (a rank that does not
/// time) counts as 0.
///
/// # Errors
/// The first failing measurement.
pub fn interleave<E>(
    repeat: usize,
    steps: usize,
    chunks: usize,
    mut measure: impl FnMut(usize, usize) -> Result<Chunk, E>,
) -> Result<Vec<Vec<f64>>, E> {
    let mut out = vec![Vec::with_capacity(repeat); steps];
    for rep in 0..repeat {
        let mut rates = vec![Vec::new(); steps];
        for round in 0..chunks.max(1) {
            for i in 0..steps {
                let step = if round % 2 == 0 { i } else { steps - 1 - i };
                let c = measure(step, rep)?;
                rates[step].push(if c.secs > 0.0 { c.work / c.secs } else { 0.0 });
            }
        }
        for (samples, r) in out.iter_mut().zip(&rates) {
            samples.push(Spread::of(r).median);
        }
    }
    Ok(out)
}

/// The 1, 5 and 15 minute load averages (`/proc/loadavg`); zeros where unavailable.
pub fn loadavg() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut v = text.split_whitespace().map(|x| x.parse().unwrap_or(0.0));
    [(); 3].map(|_| v.next().unwrap_or(0.0))
}

/// Load averages at the start and end of a bench, as the report's `loadavg_start` /
/// `loadavg_end` and the table's footer show them.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// At the start.
    pub start: [f64; 3],
    /// At the end (after [`Load::finish`]).
    pub end: [f64; 3],
}

impl Load {
    /// Read the load average now.
    pub fn start() -> Load {
        let start = loadavg();
        Load { start, end: start }
    }

    /// Read it again at the end.
    pub fn finish(&mut self) {
        self.end = loadavg();
    }

    /// Add `loadavg` (`{"start": [1, 5, 15 min], "end": [...]}`) and, as before, the same
    /// figures as `loadavg_start` and `loadavg_end` to a JSON object.
    pub fn add_json(&self, m: &mut Map<String, Value>) {
        m.insert(
            "loadavg".into(),
            serde_json::json!({ "start": self.start.to_vec(), "end": self.end.to_vec() }),
        );
        m.insert("loadavg_start".into(), Value::from(self.start.to_vec()));
        m.insert("loadavg_end".into(), Value::from(self.end.to_vec()));
    }

    /// One line for the table's footer.
    pub fn line(&self) -> String {
        let f = |l: [f64; 3]| format!("{:.2} {:.2} {:.2}", l[0], l[1], l[2]);
        format!(
            "load average (1/5/15 min): start {}, end {}",
            f(self.start),
            f(self.end)
        )
    }
}

/// Print `rows` under `header` in right-aligned columns sized to fit.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < w.len() {
                w[i] = w[i].max(c.len());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:>width$}", width = w[i]))
            .collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

/// Write `value` as pretty JSON to `path`.
///
/// # Errors
/// A message naming the file.
pub fn write_json(path: &std::path::Path, value: &Value) -> crate::Result<()> {
    let text =
        serde_json::to_string_pretty(value).map_err(crate::BenchError::json("the figures"))?;
    std::fs::write(path, text).map_err(|source| crate::BenchError::WriteFile {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_and_pairs() {
        let s = Spread::of(&[3.0, 1.0, 2.0, 10.0]);
        assert_eq!((s.median, s.min, s.max), (2.5, 1.0, 10.0));
        let p = Paired::new(&[2.0, 2.2, 2.0], &[1.0, 1.0, 1.0]);
        assert_eq!(p.repeat, 3);
        assert!((p.ratio.median - 2.0).abs() < 1e-12);
        assert!(!p.noisy);
        let p = Paired::new(&[2.0, 3.0], &[1.0, 1.0]);
        assert!(p.noisy);
        let j = p.json("gbps", "reference_gbps");
        for k in [
            "gbps_min",
            "reference_gbps_max",
            "ratio_max",
            "repeat",
            "noisy",
        ] {
            assert!(j.contains_key(k), "{k}");
        }
    }

    #[test]
    fn interleaves_abba() {
        let mut order = Vec::new();
        let v = interleave::<()>(2, 2, 2, |s, r| {
            order.push((s, r));
            Ok(Chunk {
                work: (s * 10 + r) as f64,
                secs: 1.0,
            })
        })
        .unwrap();
        assert_eq!(
            order,
            [
                (0, 0),
                (1, 0),
                (1, 0),
                (0, 0),
                (0, 1),
                (1, 1),
                (1, 1),
                (0, 1)
            ]
        );
        assert_eq!(v, [vec![0.0, 1.0], vec![10.0, 11.0]]);
    }
}
