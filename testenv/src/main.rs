//! `testenv up DIR [--node]` starts a detached control plane (and a node that runs pods from
//! the images of `make image`) whose state lives in DIR and prints the `export KUBECONFIG=...`
//! line; `testenv down DIR` stops it, leaves nothing behind and deletes DIR.
//! `testenv node-check` says in one line whether this machine can run the node.
//! `testenv leftovers DIR` lists what a stopped cluster in DIR left behind (processes, mounts,
//! the bridge, cgroups, kube-proxy's rules) and fails if anything.
//! `testenv serving-cert DIR NAME...` writes a CA (`ca.crt`) and a serving certificate for the
//! names (`tls.crt`, `tls.key`), for the development token server over TLS.

use std::path::PathBuf;
use std::process::ExitCode;

use testenv::{ControlPlane, Lifetime, Options};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.as_slice() {
        [cmd, dir] if cmd == "up" => up(PathBuf::from(dir), false),
        [cmd, dir, flag] if cmd == "up" && flag == "--node" => up(PathBuf::from(dir), true),
        [cmd] if cmd == "node-check" => testenv::node::preflight().map(|()| println!("ok")),
        [cmd, dir] if cmd == "leftovers" => leftovers(&PathBuf::from(dir)),
        [cmd, dir, names @ ..] if cmd == "serving-cert" && !names.is_empty() => serving_cert(dir, names),
        [cmd, dir] if cmd == "down" => testenv::stop_detached(&PathBuf::from(dir)).map(|()| {
            eprintln!("control plane in {dir} stopped and removed");
        }),
        _ => Err("usage: testenv up DIR [--node] | testenv down DIR | testenv node-check | testenv leftovers DIR | testenv serving-cert DIR NAME...".to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("testenv: {e}");
            ExitCode::FAILURE
        }
    }
}

fn up(dir: PathBuf, node: bool) -> Result<(), String> {
    if dir.join("kube-apiserver.pid").exists() {
        return Err(format!("a control plane already runs in {}: stop it with `testenv down`", dir.display()));
    }
    let started = std::time::Instant::now();
    let options =
        Options { node_images: if node { Some(testenv::node_images()?) } else { None }, ..Options::default() };
    let cp = ControlPlane::start_with(&dir, Lifetime::Detached, &options)?;
    let pids = cp.pids();
    let kubeconfig = cp.detach();
    eprintln!(
        "control plane{} (Kubernetes {}) ready in {:.1}s; processes: {}",
        if node { " and node" } else { "" },
        testenv::kubernetes_version(),
        started.elapsed().as_secs_f64(),
        pids.iter().map(|(n, p)| format!("{n}={p}")).collect::<Vec<_>>().join(" ")
    );
    println!("export KUBECONFIG={}", kubeconfig.display());
    Ok(())
}

fn serving_cert(dir: &str, names: &[String]) -> Result<(), String> {
    let (ca, cert, key) = testenv::pki::serving_cert(names)?;
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    for (name, pem) in [("ca.crt", ca), ("tls.crt", cert), ("tls.key", key)] {
        std::fs::write(dir.join(name), pem).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn leftovers(dir: &std::path::Path) -> Result<(), String> {
    let mut found = testenv::node::leftovers(dir);
    let needle = dir.to_string_lossy().into_owned();
    for entry in std::fs::read_dir("/proc").map_err(|e| e.to_string())?.flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&needle) && !cmdline.contains("testenv leftovers") {
            found.push(format!("process {}: {}", entry.file_name().to_string_lossy(), cmdline.trim()));
        }
    }
    if found.is_empty() {
        println!("nothing left behind by {}", dir.display());
        Ok(())
    } else {
        Err(format!("left behind:\n  {}", found.join("\n  ")))
    }
}
