//! kubectl bound to a cluster: the one built with the control plane, else the one on PATH.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Result, testbin};

/// `kubectl` with `KUBECONFIG` set to `kubeconfig`.
pub fn command(kubeconfig: &Path) -> Command {
    let bin = testbin("kubectl").unwrap_or_else(|_| PathBuf::from("kubectl"));
    let mut cmd = Command::new(bin);
    cmd.env("KUBECONFIG", kubeconfig);
    cmd
}

/// Runs kubectl with `args` against `kubeconfig`; its stdout, or its stderr as the error.
pub fn run(kubeconfig: &Path, args: &[&str]) -> Result<String> {
    let out = command(kubeconfig).args(args).output().map_err(|e| format!("kubectl: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("kubectl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}
