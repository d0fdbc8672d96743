//! kubectl against the test binary's control plane ([`crate::control_plane`]).

use std::io::Write as _;
use std::path::Path;
use std::process::{Output, Stdio};

use crate::control_plane;

/// Runs kubectl; its stdout, or a panic with its stderr.
pub fn kubectl(args: &[&str]) -> String {
    kubectl_ok(args).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs kubectl; its stdout, or its stderr as the error.
pub fn kubectl_ok(args: &[&str]) -> Result<String, String> {
    control_plane().kubectl_run(args)
}

/// Runs kubectl with the credentials of `kubeconfig` (a ServiceAccount's, for instance); the
/// whole output, for tests that expect a refusal.
pub fn kubectl_as(kubeconfig: &Path, args: &[&str]) -> Output {
    control_plane().kubectl().env("KUBECONFIG", kubeconfig).args(args).output().expect("run kubectl")
}

/// Runs kubectl with `input` on its standard input (`-f -`); its stdout, or its stderr as the
/// error.
pub fn kubectl_with_input(args: &[&str], input: &str) -> Result<String, String> {
    let mut child = control_plane()
        .kubectl()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl");
    child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write to kubectl");
    let out = child.wait_with_output().expect("run kubectl");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}
