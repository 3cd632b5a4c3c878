//! The non-benchmark subcommands: thin adapters from clap arguments to the runtime. Failures
//! are [`CliError`]s, printed by `main`.

use crate::cli::{
    InspectArgs, LaunchArgs, NodeArgs, PlotArgs, PredictArgs, RunArgs, SplitArgs, TlsGenArgs,
};
use crate::error::CliError;
use lockstep_runtime::job::model_tables::StoredTables;
use lockstep_runtime::job::stored_transform::StoredTransform;
use lockstep_runtime::job::{self, predict, top_k};
use lockstep_runtime::{LaunchOptions, Manifest, NodeOptions};
use lockstep_tensor::{read_safetensors, DType};
use lockstep_trainer::data::{Fitted, Task};
use lockstep_trainer::model::Model;
use std::io::Write;
use std::path::Path;

/// `lockstep run -n N -- PROGRAM ...`
///
/// # Errors
/// The first failing rank, named.
pub fn run(a: &RunArgs) -> Result<(), CliError> {
    let stem = a
        .program
        .iter()
        .rev()
        .find(|p| p.ends_with(".py"))
        .or(a.program.first())
        .and_then(|p| std::path::Path::new(p).file_stem())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "run".into());
    let opts = lockstep_runtime::RunOptions {
        workers: a.nproc,
        program: a.program.clone(),
        run_dir: a
            .run_dir
            .clone()
            .unwrap_or_else(|| std::path::Path::new("runs").join(stem)),
        transport: a.transport.clone(),
        peer_timeout_ms: a.peer_timeout_ms,
        elastic: a.elastic,
        max_restarts: a.max_restarts,
    };
    Ok(lockstep_runtime::run_command(&opts)?)
}

/// `lockstep launch`
///
/// # Errors
/// The first failure, naming the node.
pub fn launch(a: &LaunchArgs) -> Result<(), CliError> {
    let mut sets = Vec::new();
    if let Some(t) = &a.transport {
        sets.push(format!("cluster.transport=\"{t}\""));
    }
    if let Some(g) = &a.aggregation {
        sets.push(format!("job.aggregation=\"{g}\""));
    }
    if let Some(e) = &a.elastic {
        let (min, max) = match e.split_once(':') {
            Some((a, b)) => (a, Some(b)),
            None => (e.as_str(), None),
        };
        let num = |v: &str| {
            v.trim()
                .parse::<usize>()
                .map_err(|_| CliError::ElasticArg { value: e.clone() })
        };
        sets.push(format!("job.elastic.min_workers={}", num(min)?));
        if let Some(max) = max {
            sets.push(format!("job.elastic.max_workers={}", num(max)?));
        }
    }
    sets.extend(a.sets.iter().cloned());
    sets.extend(observe_sets(&a.metrics_addr, a.trace));
    rdma_preflight(&a.manifest, &sets)?;
    let opts = LaunchOptions {
        manifest: a.manifest.clone(),
        workers: a.workers,
        sets,
        run_dir: a.run_dir.clone(),
        report: a.report.clone(),
        exe: std::env::current_exe().map_err(|source| CliError::CurrentExe { source })?,
        node_args: Vec::new(),
        resume: a.resume,
        max_restarts: a.max_restarts,
    };
    let report = lockstep_runtime::launch(&opts)?;
    // The job is done and its report written: a closed stdout (`| head`) is not a failure.
    let _ = writeln!(std::io::stdout(), "{}", report.summary());
    Ok(())
}

/// `launch` starts every node on this machine, so with `cluster.transport = "rdma"` one check
/// here says whether they can run RDMA: the job stops before any node starts, naming the one
/// missing piece (the build feature, libibverbs, kernel support, a device, an active port).
/// A manifest that does not load is left to the launch, whose error names the key and line.
fn rdma_preflight(manifest: &Path, sets: &[String]) -> Result<(), CliError> {
    use lockstep_runtime::manifest::TransportChoice;
    let Ok(m) = Manifest::load(manifest, sets) else {
        return Ok(());
    };
    if m.cluster.transport == TransportChoice::Rdma {
        lockstep_transport::rdma::open_device().map_err(|source| CliError::Rdma { source })?;
    }
    Ok(())
}

/// `--metrics-addr` and `--trace` as manifest overrides (so every node sees the same).
fn observe_sets(metrics_addr: &Option<String>, trace: bool) -> Vec<String> {
    let mut sets = Vec::new();
    if let Some(addr) = metrics_addr {
        sets.push(format!("observe.metrics_addr=\"{addr}\""));
    }
    if trace {
        sets.push("observe.trace=true".into());
    }
    sets
}

/// `lockstep plot`
///
/// # Errors
/// A missing or malformed `metrics.csv`, or an unwritable image.
pub fn plot(a: &PlotArgs) -> Result<(), CliError> {
    let out = lockstep_runtime::observe::plot::plot(&a.run_dir)?;
    println!("{}", out.display());
    Ok(())
}

/// `lockstep report`
///
/// # Errors
/// A directory with neither a report nor progress.
pub fn report(a: &PlotArgs) -> Result<(), CliError> {
    let text = lockstep_runtime::observe::summary::summary(&a.run_dir)?;
    print!("{text}");
    Ok(())
}

/// `lockstep node`
///
/// # Errors
/// Any failure of this node.
pub fn node(a: &NodeArgs) -> Result<(), CliError> {
    let mut sets = a.sets.clone();
    sets.extend(observe_sets(&a.metrics_addr, a.trace));
    let opts = NodeOptions {
        manifest: a.manifest.clone(),
        node: a.node.clone(),
        sets,
        workers: a.workers,
        run_dir: a.run_dir.clone(),
        report: a.report.clone(),
        coordinator: a.coordinator.clone(),
        announce: a.announce.clone(),
        resume: a.resume,
    };
    Ok(lockstep_runtime::node::run(&opts)?)
}

/// `lockstep inspect`: a checkpoint directory (`round-*/`) or a safetensors file.
///
/// # Errors
/// An unreadable or invalid file.
pub fn inspect(a: &InspectArgs) -> Result<(), CliError> {
    let file = if a.checkpoint.is_dir() {
        let dir = &a.checkpoint;
        match lockstep_runtime::checkpoint::verify(dir) {
            Ok(meta) => {
                println!("checkpoint {}: complete, checksum verified", dir.display());
                println!("  next round: {}", meta.round);
                println!(
                    "  data cursor: epoch {}, batch {}",
                    meta.cursor.epoch, meta.cursor.batch_in_epoch
                );
                println!(
                    "  seed: {}, optimizer steps: {}",
                    meta.seed, meta.optimizer_step
                );
                println!("  state sha256: {}", meta.state_sha256);
                println!("  weights sha256: {}", meta.weights_sha256);
            }
            Err(why) => println!("checkpoint {}: NOT usable: {why}", dir.display()),
        }
        dir.join("state.safetensors")
    } else {
        a.checkpoint.clone()
    };
    let set = read_safetensors(&file)?;
    println!("{}", file.display());
    let mut meta: Vec<_> = set.metadata.iter().collect();
    meta.sort();
    for (k, v) in meta {
        println!("  {k}: {v}");
    }
    let mut total = 0usize;
    for (name, t) in &set.tensors {
        let sum = match t.dtype() {
            DType::F32 => t
                .to_vec::<f32>()
                .map(|v| v.iter().map(|&x| f64::from(x)).sum::<f64>())
                .unwrap_or(f64::NAN),
            _ => f64::NAN,
        };
        total += t.numel();
        println!(
            "  {name:<24} {:<5} {:<16} sum {sum:.6}",
            t.dtype(),
            t.shape().to_string()
        );
    }
    println!("  {} tensors, {total} values", set.tensors.len());
    Ok(())
}

/// `lockstep predict`
///
/// # Errors
/// Manifest, data or model errors.
pub fn predict(a: &PredictArgs) -> Result<(), CliError> {
    let m = Manifest::load(&a.manifest, &a.sets)?;
    if let (Some(input), Some(output)) = (&a.input, &a.output) {
        return predict_file(a, &m, input, output);
    }
    if let (Some(k), Some(users), Some(output)) = (a.top_k, &a.users, &a.output) {
        return predict_top_k(a, &m, k, users, output);
    }
    if a.output.is_some() {
        return Err(CliError::OutputWithout);
    }
    let stored = model_transform(&a.model)?;
    let split = job::load_split_with(&m, stored.as_ref())?;
    let mut model = job::build(&m, &split)?;
    load_params(model.as_mut(), &a.model)?;
    let mut test = split.test.all();
    if let Some(n) = a.limit {
        let idx: Vec<usize> = (0..n.min(test.rows)).collect();
        test = split.test.batch(&idx);
    }
    if let Some(mut tables) = StoredTables::load(&a.model, model.as_mut(), m.job.seed)? {
        tables.install(model.as_mut(), &test.x, test.rows)?;
    }
    let pred = model.predict(&test.x, test.rows)?;
    let k = model.out_dim();
    for (i, row) in pred.chunks(k).enumerate().take(20) {
        println!(
            "row {i}: {:?}",
            row.iter().map(|v| format!("{v:.4}")).collect::<Vec<_>>()
        );
    }
    let metrics = job::evaluate(model.as_mut(), split.task, &test)?;
    println!("held-out metrics over {} rows: {metrics:?}", test.rows);
    Ok(())
}

/// Copy the tensors of the safetensors file `path` into `model`, checking names and shapes.
fn load_params(model: &mut dyn Model, path: &Path) -> Result<(), CliError> {
    let set = read_safetensors(path)?;
    let layout = model.layout().to_vec();
    let params = model.params_mut();
    for p in &layout {
        let t = set.get(&p.name).ok_or_else(|| CliError::MissingTensor {
            path: path.to_path_buf(),
            name: p.name.clone(),
        })?;
        if t.shape().dims() != p.shape.as_slice() {
            return Err(CliError::TensorShape {
                path: path.to_path_buf(),
                name: p.name.clone(),
                got: t.shape().to_string(),
                want: p.shape.clone(),
            });
        }
        params[p.range()].copy_from_slice(&t.to_vec::<f32>()?);
    }
    Ok(())
}

/// The data transform a model was trained with: from the model's metadata, else from
/// `model.transform.json` beside it (models written before the metadata held it), else `None`.
fn model_transform(model: &Path) -> Result<Option<Fitted>, CliError> {
    if let Some(t) = StoredTransform::from_model(model)? {
        return Ok(Some(t.fitted));
    }
    Ok(predict::load_transform(model)?)
}

/// `lockstep predict --input DATA --output OUT.parquet`: the transform stored with the model
/// (refitted from the manifest's data when the model has none), every input row predicted.
fn predict_file(
    a: &PredictArgs,
    m: &Manifest,
    input: &Path,
    output: &Path,
) -> Result<(), CliError> {
    let fitted = match model_transform(&a.model)? {
        Some(f) => f,
        None => {
            eprintln!(
                "{} stores no data transform and {} is not there: refitting it from the manifest's data",
                a.model.display(),
                predict::transform_path(&a.model).display()
            );
            job::load_split(m)?.fitted.clone()
        }
    };
    let outputs = match fitted.label.task {
        Task::Multiclass => fitted.label.classes.len(),
        _ => 1,
    };
    let mut model = job::build_for_fitted(m, &fitted, outputs)?;
    load_params(model.as_mut(), &a.model)?;
    let mut tables = StoredTables::load(&a.model, model.as_mut(), m.job.seed)?;
    let job = predict::PredictFile {
        input: input.to_path_buf(),
        output: output.to_path_buf(),
        keep: a.keep.clone(),
    };
    let done = predict::predict_file(model.as_mut(), tables.as_mut(), &fitted, &job)?;
    println!(
        "{} rows predicted, written to {}",
        done.rows,
        output.display()
    );
    if let Some(metrics) = done.metrics {
        let shown: Vec<String> = metrics.iter().map(|(k, v)| format!("{k} {v:.4}")).collect();
        println!("metrics against the label column: {}", shown.join(", "));
    }
    Ok(())
}

/// `lockstep predict --top-k K --users FILE --output OUT.parquet`: the training split (read with
/// the model's transform) gives the candidates and what each user rated.
fn predict_top_k(
    a: &PredictArgs,
    m: &Manifest,
    k: usize,
    users: &Path,
    output: &Path,
) -> Result<(), CliError> {
    let stored = model_transform(&a.model)?;
    let split = job::load_split_with(m, stored.as_ref())?;
    let mut model = job::build(m, &split)?;
    load_params(model.as_mut(), &a.model)?;
    let Some(mut tables) = StoredTables::load(&a.model, model.as_mut(), m.job.seed)? else {
        return Err(
            lockstep_runtime::RuntimeError::from(top_k::TopKError::NotUserItem {
                features: split.feature_names.clone(),
                tables: Vec::new(),
            })
            .into(),
        );
    };
    let job = top_k::TopK {
        k,
        users: users.to_path_buf(),
        output: output.to_path_buf(),
    };
    let train = split.train.all();
    let rows = top_k::top_k(
        model.as_mut(),
        &mut tables,
        &split.feature_names,
        &train,
        &job,
    )?;
    println!("{rows} recommendations written to {}", output.display());
    Ok(())
}

/// `lockstep split`
///
/// # Errors
/// Manifest and data errors, or an output file that cannot be written, named.
pub fn split(a: &SplitArgs) -> Result<(), CliError> {
    let m = Manifest::load(&a.manifest, &a.sets)?;
    let done = lockstep_runtime::job::split_export::export(&m, &a.out)?;
    println!(
        "{} training and {} held-out rows written to {}",
        done.rows.0,
        done.rows.1,
        a.out.display()
    );
    Ok(())
}

/// `lockstep tls gen`
///
/// # Errors
/// A bad node name or a file that cannot be written, named.
pub fn tls_gen(a: &TlsGenArgs) -> Result<(), CliError> {
    let g = lockstep_transport::tls::gen::generate(&a.out, &a.nodes)?;
    println!(
        "{} {}",
        if g.new_ca { "CA:  " } else { "CA (reused):" },
        g.ca.display()
    );
    for (name, cert, key) in &g.nodes {
        println!("{name}: {} {}", cert.display(), key.display());
    }
    println!(
        "manifest: [cluster.tls] ca = \"{}\", cert = \"{}\", key = \"{}\" (relative to the manifest's folder)",
        g.ca.display(),
        a.out.join("{node}.pem").display(),
        a.out.join("{node}.key").display()
    );
    Ok(())
}
