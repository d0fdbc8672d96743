use std::process::ExitCode;

use clap::Parser;
use groupdocs_token_operator::cli::{Cli, Command};
use groupdocs_token_operator::{crd, devserver, operator};

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
