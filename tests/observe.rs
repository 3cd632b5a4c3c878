//! Seeing a run, end to end with the real binary: a 2-worker credit run with `--metrics-addr
//! 127.0.0.1:0 --trace` is scraped over HTTP while it trains; afterwards `metrics.csv`,
//! `trace.json` and `curves.svg` are checked against the report, and `lockstep predict
//! --input/--output` is checked against the held-out path and on a file missing a feature.

mod common;
use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(300);
const MANIFEST: &str = "examples/credit/cluster.toml";
const EPOCHS: u64 = 12;

/// One scrape: `GET /metrics` over a plain TCP connection, the body as text.
fn scrape(addr: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    assert!(head.starts_with("HTTP/1.1 200"), "scrape answered {head}");
    // The body of a `Connection: close` response may be chunked by hyper.
    Some(
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_string()
        },
    )
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}

/// The exposition as `series (name{labels}) -> value`, checking every line's syntax and that
/// every sample belongs to a family declared with `# TYPE`.
fn parse_exposition(text: &str) -> BTreeMap<String, f64> {
    let mut types = BTreeMap::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            types.insert(name.to_string(), kind.to_string());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample line: series value");
        let value: f64 = value.parse().unwrap_or_else(|e| panic!("{line}: {e}"));
        let name = series.split('{').next().unwrap();
        let family = ["_total", "_bucket", "_count", "_sum", "_info"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| types.contains_key(*f)))
            .unwrap_or(name);
        assert!(types.contains_key(family), "{name} has no # TYPE line");
        assert!(
            name.starts_with("lockstep_"),
            "{name} lacks the lockstep_ prefix"
        );
        samples.insert(series.to_string(), value);
    }
    assert!(
        text.trim_end().ends_with("# EOF"),
        "exposition does not end with # EOF"
    );
    samples
}

fn value(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("no series {series} in {:?}", samples.keys()))
}

/// Scrape `dir`'s endpoint while the launch runs; the first scrape that saw rounds completed.
fn scrape_during(child: &mut Proc, dir: &Path) -> BTreeMap<String, f64> {
    let start = Instant::now();
    let mut seen = None;
    while start.elapsed() < LIMIT && child.try_wait().unwrap().is_none() {
        let endpoints: Option<Value> = std::fs::read(dir.join("endpoints.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        if let Some(addr) = endpoints.as_ref().and_then(|e| e["metrics"].as_str()) {
            if let Some(text) = scrape(addr) {
                let s = parse_exposition(&text);
                if s.get("lockstep_rounds_total").copied().unwrap_or(0.0) >= 2.0 {
                    seen = Some(s);
                    break;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    seen.expect("no scrape saw a completed round while the run was training")
}

fn check_scrape(s: &BTreeMap<String, f64>, report: &Value) {
    let rounds = value(s, "lockstep_rounds_total");
    let samples = value(s, "lockstep_samples_total");
    assert!(
        rounds < num(report, &["rounds"]),
        "scraped after training ended"
    );
    assert_eq!(
        value(s, "lockstep_rounds_planned"),
        num(report, &["rounds"])
    );
    assert_eq!(value(s, "lockstep_members"), 2.0);
    // 64 rows a round, except the short last batch of each epoch.
    assert!(samples <= rounds * 64.0 && samples > (rounds - EPOCHS as f64) * 64.0 - 64.0);
    let count = value(s, "lockstep_round_duration_seconds_count");
    assert!(
        (count - rounds).abs() <= 1.0,
        "{count} round times for {rounds} rounds"
    );
    for phase in ["compute", "communication", "waiting"] {
        let c = value(
            s,
            &format!("lockstep_round_phase_seconds_count{{phase=\"{phase}\"}}"),
        );
        assert!((c - rounds).abs() <= 1.0);
    }
    for (node, peer) in [("worker-0", "worker-1"), ("worker-1", "worker-0")] {
        let labels = format!("{{node=\"{node}\",peer=\"{peer}\"}}");
        assert!(value(s, &format!("lockstep_link_sent_bytes_total{labels}")) > 0.0);
        assert!(value(s, &format!("lockstep_link_received_bytes_total{labels}")) > 0.0);
    }
    assert!(s.contains_key("lockstep_train_loss"));
    assert_eq!(value(s, "lockstep_restarts_total"), 0.0);
    assert!(s
        .keys()
        .any(|k| k.starts_with("lockstep_checkpoint_duration_seconds")));
    assert!(s.keys().any(|k| k.starts_with("lockstep_run_info")));
}

fn check_csv(dir: &Path, report: &Value) {
    let text = std::fs::read_to_string(dir.join("metrics.csv")).expect("metrics.csv");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(
        header,
        [
            "round",
            "epoch",
            "elapsed_s",
            "train_loss",
            "samples_per_s",
            "eval_accuracy",
            "eval_auc",
            "eval_loss"
        ]
    );
    let rows: Vec<Vec<f64>> = lines
        .map(|l| l.split(',').map(|c| c.parse().unwrap()).collect())
        .collect();
    // One evaluation per epoch (eval_every = 0), the last at the last round.
    assert_eq!(rows.len() as u64, EPOCHS);
    let per_epoch = num(report, &["rounds"]) / EPOCHS as f64;
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r[0], per_epoch * (i + 1) as f64, "row {i} round");
    }
    let last = rows.last().unwrap();
    assert_eq!(last[6], num(report, &["eval", "auc"]));
    assert_eq!(last[5], num(report, &["eval", "accuracy"]));
}

fn check_trace(dir: &Path) {
    let doc: Value = serde_json::from_slice(&std::fs::read(dir.join("trace.json")).unwrap())
        .expect("trace.json parses");
    let events = doc["traceEvents"].as_array().unwrap();
    let mut processes = BTreeMap::new();
    for e in events.iter().filter(|e| e["name"] == "process_name") {
        processes.insert(
            e["pid"].as_u64().unwrap(),
            e["args"]["name"].as_str().unwrap(),
        );
    }
    let names: Vec<&str> = processes.values().copied().collect();
    assert_eq!(names, ["coordinator", "worker-0", "worker-1"]);
    let spans: Vec<&Value> = events.iter().filter(|e| e["ph"] == "X").collect();
    for (pid, node) in &processes {
        let mine: Vec<&&Value> = spans.iter().filter(|e| e["pid"] == *pid).collect();
        assert!(!mine.is_empty(), "no spans from {node}");
        if node.starts_with("worker") {
            for want in ["data", "forward/backward", "waiting", "optimizer step"] {
                assert!(
                    mine.iter().any(|e| e["name"] == want),
                    "{node} has no {want}"
                );
            }
            assert!(mine
                .iter()
                .any(|e| e["name"].as_str().unwrap().starts_with("allreduce bucket")));
        }
    }
    // Properly nested per thread: sorted by start, each span ends before its enclosing one.
    let mut by_thread: BTreeMap<(u64, u64), Vec<(i64, i64)>> = BTreeMap::new();
    for e in &spans {
        let (ts, dur) = (e["ts"].as_i64().unwrap(), e["dur"].as_i64().unwrap());
        let key = (e["pid"].as_u64().unwrap(), e["tid"].as_u64().unwrap());
        by_thread.entry(key).or_default().push((ts, ts + dur));
    }
    for (thread, mut v) in by_thread {
        v.sort_by_key(|&(s, e)| (s, -e));
        let mut open: Vec<i64> = Vec::new();
        for (s, e) in v {
            while open.last().is_some_and(|&end| end <= s) {
                open.pop();
            }
            if let Some(&end) = open.last() {
                assert!(
                    e <= end,
                    "thread {thread:?}: span {s}..{e} overlaps one ending at {end}"
                );
            }
            open.push(e);
        }
    }
}

/// Row indices of the held-out split, as `lockstep_trainer::data::load` draws them.
fn held_out_rows(
    m: &lockstep_runtime::Manifest,
    fitted: &lockstep_trainer::data::Fitted,
) -> Vec<usize> {
    use lockstep_trainer::data::{self, FileRecords, Format};
    let spec = m.job.data.resolved(&m.base_dir);
    let file = spec.path.display().to_string();
    let (schema, batches) = FileRecords::open(&spec.path, Format::Auto, &spec.label)
        .unwrap()
        .read_all()
        .unwrap();
    let kind = data::column_kind(&schema, &file, &spec.label).unwrap();
    let raw = data::extract(&batches, &file, &spec.label, kind).unwrap();
    let all: Vec<usize> = (0..raw.len()).collect();
    let targets = fitted.label.targets(&raw, &all, &file).unwrap();
    let strata = spec
        .stratify
        .then(|| fitted.label.strata(&targets))
        .flatten();
    data::split_rows(raw.len(), spec.test_fraction, strata.as_deref(), m.job.seed).1
}

fn check_predict(dir: &Path) {
    use arrow_array::cast::AsArray;
    use arrow_array::types::Float32Type;
    use arrow_array::Array;
    let model = dir.join("model.safetensors");
    let out = dir.join("predictions.parquet");
    let data = common::root().join("examples/data/credit_data.parquet");
    let args = [
        "predict",
        MANIFEST,
        "--model",
        model.to_str().unwrap(),
        "--input",
        data.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ];
    let res = run(&args, LIMIT);
    assert_ok(&res);
    let stdout = String::from_utf8_lossy(&res.stdout);
    assert!(stdout.contains("4454 rows predicted"), "{stdout}");
    assert!(
        stdout.contains("metrics against the label column: accuracy"),
        "{stdout}"
    );

    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(&out).unwrap(),
    )
    .unwrap()
    .build()
    .unwrap();
    let (mut probs, mut status) = (Vec::new(), Vec::new());
    for b in reader {
        let b = b.unwrap();
        let p = b
            .column_by_name("probability")
            .unwrap()
            .as_primitive::<Float32Type>();
        probs.extend(p.values().iter().copied());
        let s = b.column_by_name("Status").unwrap().as_string::<i32>();
        status.extend((0..s.len()).map(|i| s.value(i).to_string()));
        assert!(b.column_by_name("predicted").is_some());
    }
    assert_eq!(probs.len(), 4454);
    assert_eq!(status.len(), 4454);

    // The held-out path, in process: the same rows must get the same probabilities.
    let m = lockstep_runtime::Manifest::load(&common::root().join(MANIFEST), &[]).unwrap();
    let split = lockstep_runtime::job::load_split(&m).unwrap();
    let mut net = lockstep_runtime::job::build(&m, &split).unwrap();
    let set = lockstep_tensor::read_safetensors(&model).unwrap();
    let layout = net.layout().to_vec();
    for p in &layout {
        let t = set.get(&p.name).unwrap().to_vec::<f32>().unwrap();
        net.params_mut()[p.range()].copy_from_slice(&t);
    }
    let test = split.test.all();
    let expect = net.predict(&test.x, test.rows).unwrap();
    let rows = held_out_rows(&m, &split.fitted);
    assert_eq!(rows.len(), expect.len());
    for (i, &r) in rows.iter().enumerate() {
        assert!(
            (probs[r] - expect[i]).abs() <= 1e-6,
            "row {r}: file path {} vs held-out path {}",
            probs[r],
            expect[i]
        );
    }

    // A file without the feature columns is refused, naming the first missing one.
    let bad = dir.join("no-features.csv");
    std::fs::write(&bad, "Status,Seniority\ngood,3\nbad,1\n").unwrap();
    let bad_out = dir.join("bad.parquet");
    let args = [
        "predict",
        MANIFEST,
        "--model",
        model.to_str().unwrap(),
        "--input",
        bad.to_str().unwrap(),
        "--output",
        bad_out.to_str().unwrap(),
    ];
    let res = run(&args, LIMIT);
    assert!(!res.status.success());
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(stderr.contains("feature column 'Home'"), "{stderr}");
}

#[test]
fn a_run_is_observable_and_its_model_predicts_files() {
    let dir = run_dir("observe");
    let report_path = dir.path().join("report.json");
    let epochs = format!("job.epochs={EPOCHS}");
    let mut child = Command::new(exe())
        .args([
            "launch",
            MANIFEST,
            "--run-dir",
            dir.path().to_str().unwrap(),
        ])
        .args(["--metrics-addr", "127.0.0.1:0", "--trace", "--set", &epochs])
        .args(["--set", "job.checkpoint.every_rounds=50"])
        .current_dir(root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn_owned()
        .expect("start lockstep");
    let scraped = scrape_during(&mut child, dir.path());
    let out = wait_with_deadline(child, LIMIT);
    assert_ok(&out);
    let report: Value = serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
    check_scrape(&scraped, &report);
    check_csv(dir.path(), &report);
    check_trace(dir.path());
    let svg = std::fs::read_to_string(dir.path().join("curves.svg")).expect("curves.svg");
    assert!(svg.contains("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("train_loss") && svg.contains("eval_auc"));
    // `lockstep plot` renders the same file again from metrics.csv.
    std::fs::remove_file(dir.path().join("curves.svg")).unwrap();
    assert_ok(&run(&["plot", dir.path().to_str().unwrap()], LIMIT));
    assert!(dir.path().join("curves.svg").exists());
    let summary = run(&["report", dir.path().to_str().unwrap()], LIMIT);
    assert_ok(&summary);
    let text = String::from_utf8_lossy(&summary.stdout);
    assert!(
        text.contains("finished: ") && text.contains("auc "),
        "{text}"
    );
    assert!(text.contains("endpoint metrics: 127.0.0.1:"), "{text}");
    assert!(text.contains("checkpoints in "), "{text}");
    check_predict(dir.path());
    assert!(processes_mentioning(dir.path().to_str().unwrap()).is_empty());
}
