//! The operator binary's start-up, without a cluster: bind errors and plain logs.
// A test: its helpers panic as the failure report, like its test functions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read as _;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const OPERATOR: &str = env!("CARGO_BIN_EXE_groupdocs-token-operator");

/// Runs `cmd` with stderr piped until it exits, or until `enough` holds for what it wrote to
/// stderr (then it is killed); fails the test after `deadline`. Returns the exit status
/// (`None` when killed) and stderr.
fn run_until(mut cmd: Command, deadline: Duration, enough: impl Fn(&str) -> bool) -> (Option<ExitStatus>, Vec<u8>) {
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("start");
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = stderr.read(&mut buf) {
            if tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let mut out = Vec::new();
    let status = loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(chunk) => out.extend(chunk),
            // The pipe closed: the process has exited (or closed stderr).
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break Some(child.wait().unwrap()),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        if enough(&String::from_utf8_lossy(&out)) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no outcome within {deadline:?}; stderr so far:\n{}", String::from_utf8_lossy(&out));
        }
    };
    let _ = reader.join();
    out.extend(rx.try_iter().flatten());
    (status, out)
}

/// The operator's `run`, with a kubeconfig that points nowhere and nothing from the
/// environment that could change the outcome.
fn operator_run(kubeconfig: &std::path::Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(OPERATOR);
    cmd.arg("run").args(args).env("KUBECONFIG", kubeconfig).env_remove("KUBERNETES_SERVICE_HOST");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("GDTO_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

#[test]
fn a_taken_metrics_or_probe_port_fails_start_up_with_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let busy = format!("127.0.0.1:{port}");
    for (flag, other) in [("--metrics-addr", "--probe-addr"), ("--probe-addr", "--metrics-addr")] {
        // A kubeconfig that does not exist: binding must fail before the client is built.
        let cmd = operator_run(std::path::Path::new("/nonexistent/kubeconfig"), &[flag, &busy, other, "127.0.0.1:0"]);
        let (status, stderr) = run_until(cmd, Duration::from_secs(60), |_| false);
        let stderr = String::from_utf8_lossy(&stderr);
        assert_eq!(status.and_then(|s| s.code()), Some(1), "{stderr}");
        assert!(stderr.contains(&format!("{flag} {busy}")) && stderr.contains("in use"), "{stderr}");
        assert!(!stderr.contains("Kubernetes client"), "bound after building the client: {stderr}");
    }
    drop(taken);
}

#[test]
fn text_logs_to_a_pipe_carry_no_colour_codes() {
    // A kubeconfig whose API server is a closed port: the operator starts and logs, then
    // fails to reach it; the test stops it once the start-up line is out.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: nowhere\n  cluster:\n    server: http://{closed}\n\
             contexts:\n- name: nowhere\n  context:\n    cluster: nowhere\n    user: nobody\n\
             users:\n- name: nobody\n  user: {{}}\ncurrent-context: nowhere\n"
        ),
    )
    .unwrap();
    let mut cmd = operator_run(
        &kubeconfig,
        &[
            "--metrics-addr",
            "127.0.0.1:0",
            "--probe-addr",
            "127.0.0.1:0",
            "--log-format",
            "text",
            "--log-level",
            "info",
        ],
    );
    // Colours would be wanted, were stderr a terminal.
    cmd.env_remove("NO_COLOR").env("TERM", "xterm-256color").env("CLICOLOR_FORCE", "1");
    let (_, stderr) = run_until(cmd, Duration::from_secs(60), |out| out.contains("starting groupdocs-token-operator"));
    let text = String::from_utf8_lossy(&stderr);
    assert!(text.contains("starting groupdocs-token-operator"), "{text}");
    assert!(text.contains(" INFO "), "plain level names: {text}");
    assert!(!stderr.windows(2).any(|w| w == b"\x1b["), "ANSI escape codes in: {text:?}");
}
