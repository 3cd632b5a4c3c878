//! The `lockstep` binary: parse the command line, set up logging, dispatch to the layer that does
//! the work, and turn errors into a message and a non-zero exit status.

use clap::Parser;
use lockstep::cli::{Cli, Command, TlsCommand};
use lockstep::error::CliError;
use std::process::ExitCode;

fn main() -> ExitCode {
    // A replacement's time to join is measured from here.
    let _ = lockstep_runtime::node::process_started();
    lockstep::logging::init();
    let cli = Cli::parse();
    let result: Result<(), CliError> = match cli.command {
        Command::Launch(a) => lockstep::commands::launch(&a),
        Command::Node(a) => lockstep::commands::node(&a),
        Command::Run(a) => lockstep::commands::run(&a),
        Command::Inspect(a) => lockstep::commands::inspect(&a),
        Command::Predict(a) => lockstep::commands::predict(&a),
        Command::Split(a) => lockstep::commands::split(&a),
        Command::Plot(a) => lockstep::commands::plot(&a),
        Command::Report(a) => lockstep::commands::report(&a),
        #[cfg(feature = "bench")]
        Command::Bench(b) => lockstep::bench::run(&b).map_err(CliError::from),
        Command::Tls(TlsCommand::Gen(a)) => lockstep::commands::tls_gen(&a),
        #[cfg(feature = "bench")]
        Command::BenchWorker(a) => lockstep::bench::worker(&a).map_err(CliError::from),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lockstep: error: {e}");
            ExitCode::FAILURE
        }
    }
}
