use std::process::ExitCode;

use clap::Parser;
use groupdocs_token_operator::cli::{Cli, Command};
use groupdocs_token_operator::{crd, operator};

/// jemalloc: with glibc's allocator the churn of a cold start (every cached credential
/// replaced once its status is written) left peak RSS well above the steady state (figures
/// in the README's Scale section).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => operator::run(args).await,
        Command::Crd => {
            crd::all_crds_yaml().map(|yaml| print!("{yaml}")).map_err(|e| operator::StartError::Config(e.to_string()))
        }
        Command::Token(args) => operator::fetch_once(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("groupdocs-token-operator: {e}");
            ExitCode::FAILURE
        }
    }
}
