//! One control plane per test binary ([`shared`]), started on first use and stopped when
//! the test binary exits, however it ends.

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::thread;

use crate::control_plane::{ControlPlane, Options};
use crate::process::Lifetime;
use crate::{EXISTING_CLUSTER_ENV, Result, kubectl};

static SHARED: OnceLock<std::result::Result<SharedControlPlane, String>> = OnceLock::new();
static SHARED_OPTIONS: OnceLock<Options> = OnceLock::new();

/// [`shared`], started with `options` (a node, for instance) if this is the first use.
pub fn shared_with(options: Options) -> &'static SharedControlPlane {
    let _ = SHARED_OPTIONS.set(options);
    shared()
}

/// What the tests see of the shared control plane.
#[derive(Clone, Debug)]
pub struct SharedControlPlane {
    pub kubeconfig: PathBuf,
    pub dir: PathBuf,
}

impl SharedControlPlane {
    /// `kubectl` bound to this cluster.
    pub fn kubectl(&self) -> Command {
        kubectl::command(&self.kubeconfig)
    }

    /// Runs kubectl with `args` and returns its stdout, or its stderr as the error.
    pub fn kubectl_run(&self, args: &[&str]) -> Result<String> {
        kubectl::run(&self.kubeconfig, args)
    }
}

/// The control plane of this test binary, started on first use. With
/// `GDTO_E2E_EXISTING_CLUSTER=1` it is the cluster in `$KUBECONFIG` instead.
///
/// The processes are started from a thread that lives as long as the test binary, with a
/// parent-death signal, so they die with the binary however it ends; an `atexit` hook also
/// stops them and removes their data on a normal exit.
pub fn shared() -> &'static SharedControlPlane {
    let result = SHARED.get_or_init(|| {
        if std::env::var_os(EXISTING_CLUSTER_ENV).is_some_and(|v| v == "1") {
            let cp = ControlPlane::existing()?;
            return Ok(SharedControlPlane { kubeconfig: cp.kubeconfig().to_path_buf(), dir: cp.dir().to_path_buf() });
        }
        let (tx, rx) = std::sync::mpsc::channel();
        thread::Builder::new()
            .name("testenv-control-plane".into())
            .spawn(move || {
                let dir = std::env::temp_dir().join(format!("gdto-testenv-{}", std::process::id()));
                let _ = fs::remove_dir_all(&dir);
                let options = SHARED_OPTIONS.get().cloned().unwrap_or_default();
                match ControlPlane::start_with(&dir, Lifetime::Attached, &options) {
                    Ok(cp) => {
                        let shared = SharedControlPlane {
                            kubeconfig: cp.kubeconfig().to_path_buf(),
                            dir: cp.dir().to_path_buf(),
                        };
                        *ATEXIT_PLANE.lock().unwrap_or_else(|e| e.into_inner()) = Some(cp);
                        unsafe { libc::atexit(stop_at_exit) };
                        let (cmd_tx, cmd_rx) = std::sync::mpsc::channel::<Job>();
                        let _ = COMMANDS.set(std::sync::Mutex::new(cmd_tx));
                        let _ = tx.send(Ok(shared));
                        // PR_SET_PDEATHSIG fires when the thread that started a process ends, so
                        // this thread lives as long as the test binary and starts every process.
                        while let Ok(job) = cmd_rx.recv() {
                            let mut plane = ATEXIT_PLANE.lock().unwrap_or_else(|e| e.into_inner());
                            if let Some(cp) = plane.as_mut() {
                                job(cp);
                            }
                        }
                        loop {
                            thread::park();
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            })
            .map_err(|e| e.to_string())?;
        rx.recv().map_err(|e| e.to_string())?
    });
    match result {
        Ok(cp) => cp,
        Err(e) => panic!("the test control plane did not start: {e}"),
    }
}

static ATEXIT_PLANE: std::sync::Mutex<Option<ControlPlane>> = std::sync::Mutex::new(None);

type Job = Box<dyn FnOnce(&mut ControlPlane) + Send>;
static COMMANDS: OnceLock<std::sync::Mutex<std::sync::mpsc::Sender<Job>>> = OnceLock::new();

/// Runs `f` on the shared control plane, on the thread that owns its processes (so a
/// process started by `f` also dies with the test binary). Not available against an
/// existing cluster.
pub fn with_shared<R: Send + 'static>(f: impl FnOnce(&mut ControlPlane) -> R + Send + 'static) -> Result<R> {
    shared();
    let sender = COMMANDS.get().ok_or("no local control plane (an existing cluster is in use)")?;
    let (tx, rx) = std::sync::mpsc::channel();
    let job: Job = Box::new(move |cp| {
        let _ = tx.send(f(cp));
    });
    sender.lock().map_err(|e| e.to_string())?.send(job).map_err(|e| e.to_string())?;
    rx.recv().map_err(|e| e.to_string())
}

extern "C" fn stop_at_exit() {
    if let Ok(mut guard) = ATEXIT_PLANE.lock()
        && let Some(mut cp) = guard.take()
    {
        cp.stop();
    }
}
