use std::process::ExitCode;

use clap::Parser;
use groupdocs_token_operator::cli::{Cli, Command};
use groupdocs_token_operator::{crd, devserver, operator};

/// jemalloc: with glibc's allocator the churn of a cold start (every cached credential
/// replaced once its status is written) left peak RSS about 20 MiB above the steady state.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => operator::run(args).await,
        Command::Crd => {
            print!("{}", crd::crd_yaml());
            Ok(())
        }
        Command::Token(args) => operator::fetch_once(args).await,
        Command::DevServer(args) => devserver::serve_forever(args).await.map_err(|e| e.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("groupdocs-token-operator: {e}");
            ExitCode::FAILURE
        }
    }
}
