//! `testenv up DIR` starts a detached control plane whose state lives in DIR and prints the
//! `export KUBECONFIG=...` line; `testenv down DIR` stops it and deletes DIR.

use std::path::PathBuf;
use std::process::ExitCode;

use testenv::{ControlPlane, Lifetime};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.as_slice() {
        [cmd, dir] if cmd == "up" => up(PathBuf::from(dir)),
        [cmd, dir] if cmd == "down" => testenv::stop_detached(&PathBuf::from(dir)).map(|()| {
            eprintln!("control plane in {dir} stopped and removed");
        }),
        _ => Err("usage: testenv up DIR | testenv down DIR".to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("testenv: {e}");
            ExitCode::FAILURE
        }
    }
}

fn up(dir: PathBuf) -> Result<(), String> {
    if dir.join("kube-apiserver.pid").exists() {
        return Err(format!("a control plane already runs in {}: stop it with `testenv down`", dir.display()));
    }
    let started = std::time::Instant::now();
    let cp = ControlPlane::start(&dir, Lifetime::Detached)?;
    let pids = cp.pids();
    let kubeconfig = cp.detach();
    eprintln!(
        "control plane (Kubernetes {}) ready in {:.1}s; processes: {}",
        testenv::kubernetes_version(),
        started.elapsed().as_secs_f64(),
        pids.iter().map(|(n, p)| format!("{n}={p}")).collect::<Vec<_>>().join(" ")
    );
    println!("export KUBECONFIG={}", kubeconfig.display());
    Ok(())
}
