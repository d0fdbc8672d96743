//! A real, local Kubernetes control plane: etcd, kube-apiserver and kube-controller-manager
//! built from their Go modules by `make testbins`, started on free loopback ports; and, on
//! request, a real node beside it ([`node`]: containerd, the kubelet, kube-scheduler and
//! kube-proxy) that runs pods from locally built images.
//!
//! The same code backs `make cluster` (detached processes that outlive the launcher) and the
//! Rust end-to-end tests ([`shared`]: one control plane per test binary, stopped when the test
//! binary exits, even when it is killed).

use std::fs;
use std::io::{self, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

pub mod node;
pub mod pki;

/// Versions pinned for the whole test environment; `make testbins` builds exactly these.
const VERSIONS: &str = include_str!("../../hack/testbins.env");

/// Opt-in to run the end-to-end tests against the cluster in `$KUBECONFIG` instead.
pub const EXISTING_CLUSTER_ENV: &str = "GDTO_E2E_EXISTING_CLUSTER";

const START_DEADLINE: Duration = Duration::from_secs(120);

pub type Result<T> = std::result::Result<T, String>;

/// The Kubernetes version the environment is pinned to, e.g. `v1.36.3`.
pub fn kubernetes_version() -> &'static str {
    VERSIONS.lines().find_map(|l| l.strip_prefix("K8S_VERSION=")).expect("hack/testbins.env names K8S_VERSION").trim()
}

/// Where `make testbins` puts the binaries (`$TESTBINS_DIR` overrides).
pub fn testbins_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TESTBINS_DIR") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache"));
    cache.join("groupdocs-token-operator/testbins").join(kubernetes_version())
}

/// Path of one test binary, or an error that says how to build it.
pub fn testbin(name: &str) -> Result<PathBuf> {
    let path = testbins_dir().join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} is missing: run `make testbins` (or set {EXISTING_CLUSTER_ENV}=1 with KUBECONFIG for an existing cluster)",
            path.display()
        ))
    }
}

/// How the processes relate to the launching process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifetime {
    /// Killed with the launching process (tests). Uses `PR_SET_PDEATHSIG`.
    Attached,
    /// Own session, outlives the launcher (`make cluster`); stop with [`stop_detached`].
    Detached,
}

/// What to start besides the control plane.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Also start a node ([`node`]) and import these OCI image tarballs into it (the
    /// sandbox image [`node::PAUSE_IMAGE`] among them).
    pub node_images: Option<Vec<PathBuf>>,
}

/// A running control plane (or a handle on an existing cluster).
pub struct ControlPlane {
    dir: PathBuf,
    kubeconfig: PathBuf,
    processes: Vec<Process>,
    owns_dir: bool,
    /// How kube-apiserver was started, to start it again after [`ControlPlane::stop_apiserver`].
    apiserver: Option<(PathBuf, Vec<String>, Lifetime)>,
    /// The node's directory, when a node runs.
    node: Option<node::Layout>,
}

struct Process {
    name: &'static str,
    child: Child,
}

impl ControlPlane {
    /// Starts etcd, kube-apiserver and kube-controller-manager under `dir`, which must be empty
    /// or absent, and waits until the API server is ready and the default namespace exists.
    pub fn start(dir: &Path, lifetime: Lifetime) -> Result<Self> {
        ControlPlane::start_with(dir, lifetime, &Options::default())
    }

    /// [`ControlPlane::start`], and a node when `options` ask for one. The API server then
    /// listens on the node bridge's gateway address (reachable from the host and from pods)
    /// instead of loopback, and authorises the kubelet as a node.
    pub fn start_with(dir: &Path, lifetime: Lifetime, options: &Options) -> Result<Self> {
        let with_node = options.node_images.is_some();
        if with_node {
            node::preflight()?;
        }
        fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let dir = dir.canonicalize().map_err(|e| e.to_string())?;
        let bins =
            [testbin("etcd")?, testbin("kube-apiserver")?, testbin("kube-controller-manager")?, testbin("kubectl")?];
        let extra_ips = if with_node { vec![node::GATEWAY.to_string()] } else { Vec::new() };
        let pki = pki::write(&dir.join("pki"), &extra_ips).map_err(|e| format!("certificates: {e}"))?;
        let [etcd_port, etcd_peer_port, api_port] = free_ports();
        let api_host = if with_node { node::GATEWAY } else { "127.0.0.1" };
        let server = format!("https://{api_host}:{api_port}");
        let kubeconfig = dir.join("kubeconfig");
        fs::write(&kubeconfig, pki::kubeconfig(&pki, &server)).map_err(|e| e.to_string())?;

        let mut cp = ControlPlane {
            dir: dir.clone(),
            kubeconfig,
            processes: Vec::new(),
            owns_dir: true,
            apiserver: None,
            node: None,
        };
        if with_node {
            // From here on, a failure tears the bridge down again (Drop).
            node::create_network()?;
            cp.node = Some(node::Layout::new(&dir));
        }
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{etcd_peer_port}");
        let mut etcd = Command::new(&bins[0]);
        etcd.args([
            "--data-dir",
            &path_str(&dir.join("etcd")),
            "--listen-client-urls",
            &etcd_url,
            "--advertise-client-urls",
            &etcd_url,
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
            "--initial-cluster",
            &format!("default={peer_url}"),
            "--unsafe-no-fsync",
            "--log-level",
            "warn",
        ]);
        cp.spawn("etcd", etcd, lifetime)?;

        let p = |name: &str| path_str(&pki.dir.join(name));
        let mut apiserver_args: Vec<String> = [
            format!("--etcd-servers={etcd_url}").as_str(),
            &format!("--bind-address={api_host}"),
            &format!("--advertise-address={api_host}"),
            &format!("--secure-port={api_port}"),
            &format!("--cert-dir={}", path_str(&dir.join("apiserver-certs"))),
            &format!("--tls-cert-file={}", p("apiserver.crt")),
            &format!("--tls-private-key-file={}", p("apiserver.key")),
            &format!("--client-ca-file={}", p("ca.crt")),
            "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            &format!("--service-account-key-file={}", p("sa.pub")),
            &format!("--service-account-signing-key-file={}", p("sa.key")),
            "--service-cluster-ip-range=10.0.0.0/24",
            "--api-audiences=https://kubernetes.default.svc.cluster.local",
            "--enable-priority-and-fairness=true",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        if with_node {
            apiserver_args.retain(|a| !a.starts_with("--authorization-mode="));
            apiserver_args.extend([
                "--authorization-mode=Node,RBAC".to_string(),
                "--enable-admission-plugins=NodeRestriction".to_string(),
                format!("--kubelet-client-certificate={}", p("apiserver-kubelet-client.crt")),
                format!("--kubelet-client-key={}", p("apiserver-kubelet-client.key")),
                "--kubelet-preferred-address-types=InternalIP".to_string(),
            ]);
        }
        cp.apiserver = Some((bins[1].clone(), apiserver_args, lifetime));
        cp.start_apiserver()?;

        let mut kcm = Command::new(&bins[2]);
        kcm.args([
            &format!("--kubeconfig={}", path_str(&cp.kubeconfig)),
            &format!("--authentication-kubeconfig={}", path_str(&cp.kubeconfig)),
            &format!("--authorization-kubeconfig={}", path_str(&cp.kubeconfig)),
            "--bind-address=127.0.0.1",
            "--secure-port=0",
            "--leader-elect=false",
            "--controllers=*",
            &format!("--service-account-private-key-file={}", p("sa.key")),
            &format!("--root-ca-file={}", p("ca.crt")),
            "--use-service-account-credentials=false",
        ]);
        cp.spawn("kube-controller-manager", kcm, lifetime)?;
        if let Some(images) = &options.node_images {
            cp.start_node(&pki, &server, images, lifetime)?;
        }
        Ok(cp)
    }

    /// containerd and the kubelet in a private mount namespace, then kube-scheduler and
    /// kube-proxy; waits until the node is Ready.
    fn start_node(&mut self, pki: &pki::Pki, server: &str, images: &[PathBuf], lifetime: Lifetime) -> Result<()> {
        let layout = node::Layout::new(&self.dir);
        let [kubelet_port] = free_ports_on(node::GATEWAY);
        let ca = pki.dir.join("ca.crt");
        node::write_config(&layout, kubelet_port, &ca)?;
        let node_kubeconfig = layout.dir.join("kubelet.kubeconfig");
        fs::write(&node_kubeconfig, pki::kubeconfig_for(pki, server, "kubelet").map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;

        self.spawn("node-holder", node::holder_command(&layout)?, lifetime)?;
        let holder = self.processes.last().map(|p| p.child.id()).unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !node::holder_ready(holder) {
            if Instant::now() > deadline {
                return Err(format!(
                    "the node's mount namespace holder did not start\n{}",
                    self.log_tail("node-holder")
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
        node::create_cgroup_root()?;
        let containerd = PathBuf::from("containerd");
        self.spawn("containerd", node::in_namespace(holder, &containerd, &node::containerd_args(&layout)), lifetime)?;
        node::wait_containerd(&layout, Duration::from_secs(30))
            .map_err(|e| format!("{e}\n{}", self.log_tail("containerd")))?;
        for image in images {
            node::import_image(&layout.containerd_socket(), image)?;
        }
        let kubelet_args = node::kubelet_args(&layout, &node_kubeconfig);
        self.spawn("kubelet", node::in_namespace(holder, &testbin("kubelet")?, &kubelet_args), lifetime)?;

        let kubeconfig = path_str(&self.kubeconfig);
        let mut scheduler = Command::new(testbin("kube-scheduler")?);
        scheduler.args([
            format!("--kubeconfig={kubeconfig}"),
            format!("--authentication-kubeconfig={kubeconfig}"),
            format!("--authorization-kubeconfig={kubeconfig}"),
            "--bind-address=127.0.0.1".into(),
            "--secure-port=0".into(),
            "--leader-elect=false".into(),
        ]);
        self.spawn("kube-scheduler", scheduler, lifetime)?;
        let [proxy_metrics_port] = free_ports();
        let proxy_config = node::write_proxy_config(&layout, &self.kubeconfig, proxy_metrics_port)?;
        let mut proxy = Command::new(testbin("kube-proxy")?);
        proxy.arg(format!("--config={}", proxy_config.display()));
        self.spawn("kube-proxy", proxy, lifetime)?;

        let kubectl = testbin("kubectl")?;
        let kc = self.kubeconfig.clone();
        let mut run = |args: &[&str]| -> Result<String> {
            let out = Command::new(&kubectl).env("KUBECONFIG", &kc).args(args).output().map_err(|e| e.to_string())?;
            if out.status.success() {
                Ok(String::from_utf8_lossy(&out.stdout).into_owned())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).into_owned())
            }
        };
        let processes = &mut self.processes;
        let mut exited_name = None;
        let mut exited = || {
            let (name, status) = processes.iter_mut().find_map(|p| Some((p.name, p.child.try_wait().ok()??)))?;
            exited_name = Some(name);
            Some(format!("{name} exited with {status}"))
        };
        let ready = node::wait_node_ready(&mut run, &mut exited);
        let tail = self.log_tail(exited_name.unwrap_or("kubelet"));
        ready.map_err(|e| format!("{e}\n{tail}"))
    }

    /// True when a node runs beside this control plane.
    pub fn has_node(&self) -> bool {
        self.node.is_some()
    }

    /// Imports an OCI image tarball into the node's container runtime.
    pub fn load_image(&self, tarball: &Path) -> Result<()> {
        let layout = self.node.as_ref().ok_or("no node runs beside this control plane")?;
        node::import_image(&layout.containerd_socket(), tarball)
    }

    /// A handle on the cluster in `$KUBECONFIG`; nothing is started or stopped.
    pub fn existing() -> Result<Self> {
        let kubeconfig = std::env::var_os("KUBECONFIG")
            .map(PathBuf::from)
            .ok_or_else(|| format!("{EXISTING_CLUSTER_ENV} is set but KUBECONFIG is not"))?;
        Ok(ControlPlane {
            dir: std::env::temp_dir(),
            kubeconfig,
            processes: Vec::new(),
            owns_dir: false,
            apiserver: None,
            node: None,
        })
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `kubectl` (the one built with the control plane, else the one on PATH) bound to this cluster.
    pub fn kubectl(&self) -> Command {
        let bin = testbin("kubectl").unwrap_or_else(|_| PathBuf::from("kubectl"));
        let mut cmd = Command::new(bin);
        cmd.env("KUBECONFIG", &self.kubeconfig);
        cmd
    }

    /// Runs kubectl with `args` and returns its stdout, or its stderr as the error.
    pub fn kubectl_run(&self, args: &[&str]) -> Result<String> {
        let out = self.kubectl().args(args).output().map_err(|e| format!("kubectl: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!("kubectl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
        }
    }

    /// Stops kube-apiserver alone (etcd and kube-controller-manager keep running), to test
    /// how clients ride out an API server outage.
    pub fn stop_apiserver(&mut self) {
        if let Some(i) = self.processes.iter().position(|p| p.name == "kube-apiserver") {
            let mut p = self.processes.remove(i);
            terminate(&mut p.child);
        }
    }

    /// Starts kube-apiserver again, on the same port with the same data, and waits until ready.
    pub fn start_apiserver(&mut self) -> Result<()> {
        let (bin, args, lifetime) = self.apiserver.clone().ok_or("no kube-apiserver to start")?;
        let mut cmd = Command::new(bin);
        cmd.args(&args);
        self.spawn("kube-apiserver", cmd, lifetime)?;
        self.wait_ready(&testbin("kubectl")?)
    }

    /// Process ids of the running components, by name.
    pub fn pids(&self) -> Vec<(&'static str, u32)> {
        self.processes.iter().map(|p| (p.name, p.child.id())).collect()
    }

    fn spawn(&mut self, name: &'static str, mut cmd: Command, lifetime: Lifetime) -> Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{name}.log")))
            .map_err(|e| e.to_string())?;
        cmd.stdin(Stdio::null()).stdout(log.try_clone().map_err(|e| e.to_string())?).stderr(log);
        set_lifetime(&mut cmd, lifetime);
        let child = cmd.spawn().map_err(|e| format!("start {name}: {e}"))?;
        fs::write(self.dir.join(format!("{name}.pid")), child.id().to_string()).map_err(|e| e.to_string())?;
        self.processes.push(Process { name, child });
        Ok(())
    }

    fn wait_ready(&mut self, kubectl: &Path) -> Result<()> {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            let ready = Command::new(kubectl)
                .env("KUBECONFIG", &self.kubeconfig)
                .args(["get", "--raw", "/readyz", "--request-timeout=5s"])
                .output()
                .is_ok_and(|o| o.status.success());
            let default_ns = ready
                && Command::new(kubectl)
                    .env("KUBECONFIG", &self.kubeconfig)
                    .args(["get", "namespace", "default", "--request-timeout=5s"])
                    .output()
                    .is_ok_and(|o| o.status.success());
            if default_ns {
                return Ok(());
            }
            let exited = self.processes.iter_mut().find_map(|p| Some((p.name, p.child.try_wait().ok()??)));
            if let Some((name, status)) = exited {
                return Err(format!("{name} exited with {status}\n{}", self.log_tail(name)));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "kube-apiserver not ready within {START_DEADLINE:?}\n{}",
                    self.log_tail("kube-apiserver")
                ));
            }
            thread::sleep(Duration::from_millis(250));
        }
    }

    /// The last lines of a component's log, for failure messages.
    pub fn log_tail(&self, name: &str) -> String {
        let mut text = String::new();
        let _ = fs::File::open(self.dir.join(format!("{name}.log"))).and_then(|mut f| f.read_to_string(&mut text));
        let lines: Vec<&str> = text.lines().collect();
        format!("--- last lines of {name}.log ---\n{}", lines[lines.len().saturating_sub(40)..].join("\n"))
    }

    /// Stops every process (the node first, then kube-controller-manager, etcd last) and
    /// deletes the data.
    pub fn stop(&mut self) {
        if let Some(layout) = self.node.take() {
            let pids: Vec<(&str, Option<i32>)> = NODE_PROCESSES
                .iter()
                .map(|name| (*name, self.processes.iter().find(|p| p.name == *name).map(|p| p.child.id() as i32)))
                .collect();
            for e in node::teardown(&layout, &pids, testbin("kube-proxy").ok().as_deref()) {
                eprintln!("testenv: node teardown: {e}");
            }
            for p in self.processes.iter_mut().filter(|p| NODE_PROCESSES.contains(&p.name)) {
                let _ = p.child.kill();
                let _ = p.child.wait();
            }
            self.processes.retain(|p| !NODE_PROCESSES.contains(&p.name));
        }
        while let Some(mut p) = self.processes.pop() {
            terminate(&mut p.child);
        }
        if self.owns_dir {
            let _ = fs::remove_dir_all(&self.dir);
            self.owns_dir = false;
        }
    }

    /// Leaves the processes running (detached mode) and forgets them.
    pub fn detach(mut self) -> PathBuf {
        self.processes.clear();
        self.node = None;
        self.owns_dir = false;
        self.kubeconfig.clone()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The node's processes, in the order they are stopped.
const NODE_PROCESSES: [&str; 5] = ["kube-proxy", "kube-scheduler", "kubelet", "containerd", "node-holder"];

/// Stops a control plane started with [`Lifetime::Detached`] from its pid files and removes `dir`.
pub fn stop_detached(dir: &Path) -> Result<()> {
    let pid_of = |name: &str| fs::read_to_string(dir.join(format!("{name}.pid"))).ok()?.trim().parse::<i32>().ok();
    let layout = node::Layout::new(dir);
    if layout.dir.exists() {
        let pids: Vec<(&str, Option<i32>)> = NODE_PROCESSES.iter().map(|n| (*n, pid_of(n))).collect();
        for e in node::teardown(&layout, &pids, testbin("kube-proxy").ok().as_deref()) {
            eprintln!("testenv: node teardown: {e}");
        }
    }
    for name in ["kube-controller-manager", "kube-apiserver", "etcd"] {
        if let Some(pid) = pid_of(name) {
            stop_pid(pid, Duration::from_secs(15));
        }
    }
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(format!("remove {}: {e}", dir.display())),
        _ => Ok(()),
    }
}

/// SIGTERM, then SIGKILL after `grace`, to a process that may not be our child.
pub(crate) fn stop_pid(pid: i32, grace: Duration) {
    // SAFETY: plain syscalls on a pid we started; a stale pid simply fails with ESRCH.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + grace;
    while process_alive(pid) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    if process_alive(pid) {
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

fn process_alive(pid: i32) -> bool {
    // A zombie (our own child, not reaped yet) still answers kill(0) but has ended.
    let zombie = fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')));
    !zombie && unsafe { libc::kill(pid, 0) == 0 }
}

static SHARED: OnceLock<std::result::Result<SharedControlPlane, String>> = OnceLock::new();
static SHARED_OPTIONS: OnceLock<Options> = OnceLock::new();

/// Where `make image` leaves the OCI image tarballs (`$GDTO_IMAGE_DIR` overrides).
pub fn image_dir() -> PathBuf {
    std::env::var_os("GDTO_IMAGE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/image"))
}

/// The image tarballs a node loads: every `*.oci.tar` of [`image_dir`], the sandbox image's
/// `pause.oci.tar` required.
pub fn node_images() -> Result<Vec<PathBuf>> {
    let dir = image_dir();
    let mut images: Vec<PathBuf> = fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}: run `make image`", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".oci.tar"))
        .collect();
    images.sort();
    if !images.iter().any(|p| p.ends_with("pause.oci.tar")) {
        return Err(format!("{}/pause.oci.tar is missing: run `make image`", dir.display()));
    }
    Ok(images)
}

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
    pub fn kubectl(&self) -> Command {
        let bin = testbin("kubectl").unwrap_or_else(|_| PathBuf::from("kubectl"));
        let mut cmd = Command::new(bin);
        cmd.env("KUBECONFIG", &self.kubeconfig);
        cmd
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
            return Ok(SharedControlPlane { kubeconfig: cp.kubeconfig.clone(), dir: cp.dir.clone() });
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
                        let shared = SharedControlPlane { kubeconfig: cp.kubeconfig.clone(), dir: cp.dir.clone() };
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

fn set_lifetime(cmd: &mut Command, lifetime: Lifetime) {
    use std::os::unix::process::CommandExt;
    match lifetime {
        Lifetime::Attached => unsafe {
            cmd.pre_exec(|| {
                // SAFETY: async-signal-safe syscall between fork and exec.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        },
        Lifetime::Detached => {
            cmd.process_group(0);
        }
    }
}

fn terminate(child: &mut Child) {
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn free_ports<const N: usize>() -> [u16; N] {
    free_ports_on("127.0.0.1")
}

fn free_ports_on<const N: usize>(ip: &str) -> [u16; N] {
    // Hold every listener until all ports are chosen so that they differ.
    let listeners: Vec<TcpListener> = (0..N).map(|_| TcpListener::bind((ip, 0)).expect("bind a free port")).collect();
    std::array::from_fn(|i| listeners[i].local_addr().expect("local addr").port())
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}
