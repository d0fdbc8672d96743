//! `groupdocs-dev-token-server [FLAGS]`: the development token server, until SIGTERM or SIGINT.
//! Every flag can also come from its `GDTO_DEV_*` variable (see `--help`).

use std::process::ExitCode;

use clap::Parser as _;
use groupdocs_dev_token_server::DevServerArgs;

#[tokio::main]
async fn main() -> ExitCode {
    let args = DevServerArgs::parse();
    match groupdocs_dev_token_server::serve(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("groupdocs-dev-token-server: {e}");
            ExitCode::FAILURE
        }
    }
}
