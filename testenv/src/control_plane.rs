//! The control plane: etcd, kube-apiserver and kube-controller-manager started on free
//! loopback ports (and a node beside them when asked), their logs and pid files in one
//! directory, stopped in order.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::process::{self, Lifetime, Target, free_ports, free_ports_on, set_lifetime};
use crate::{EXISTING_CLUSTER_ENV, Result, kubectl, node, pki, testbin};

const START_DEADLINE: Duration = Duration::from_secs(120);
/// How long a control-plane process may take to stop after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// What to start besides the control plane.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Also start a node ([`node`]) and import these OCI image tarballs into it (the
    /// sandbox image [`node::PAUSE_IMAGE`] among them).
    pub node_images: Option<Vec<PathBuf>>,
    /// Flags appended to etcd's defaults (a later flag overrides an earlier one), e.g. a
    /// larger `--quota-backend-bytes` for a benchmark's hundreds of thousands of objects.
    pub etcd_args: Vec<String>,
    /// Flags appended to kube-apiserver's defaults, as [`Options::etcd_args`].
    pub apiserver_args: Vec<String>,
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
        etcd.args(&options.etcd_args);
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
        apiserver_args.extend(options.apiserver_args.iter().cloned());
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

        let kc = self.kubeconfig.clone();
        let mut run = |args: &[&str]| kubectl::run(&kc, args);
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
        kubectl::command(&self.kubeconfig)
    }

    /// Runs kubectl with `args` and returns its stdout, or its stderr as the error.
    pub fn kubectl_run(&self, args: &[&str]) -> Result<String> {
        kubectl::run(&self.kubeconfig, args)
    }

    /// Stops kube-apiserver alone (etcd and kube-controller-manager keep running), to test
    /// how clients ride out an API server outage.
    pub fn stop_apiserver(&mut self) {
        if let Some(i) = self.processes.iter().position(|p| p.name == "kube-apiserver") {
            let mut p = self.processes.remove(i);
            process::stop(&mut p.child, Target::Process, STOP_GRACE);
        }
    }

    /// Starts kube-apiserver again, on the same port with the same data, and waits until ready.
    pub fn start_apiserver(&mut self) -> Result<()> {
        let (bin, args, lifetime) = self.apiserver.clone().ok_or("no kube-apiserver to start")?;
        let mut cmd = Command::new(bin);
        cmd.args(&args);
        self.spawn("kube-apiserver", cmd, lifetime)?;
        testbin("kubectl")?;
        self.wait_ready()
    }

    /// Process ids of the running components, by name.
    pub fn pids(&self) -> Vec<(&'static str, u32)> {
        self.processes.iter().map(|p| (p.name, p.child.id())).collect()
    }

    /// The process id of component `name` (`etcd`, `kube-apiserver`, ...), while it runs here.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.processes.iter().find(|p| p.name == name).map(|p| p.child.id())
    }

    /// etcd's database file, whose size is what `--quota-backend-bytes` limits.
    pub fn etcd_db(&self) -> PathBuf {
        self.dir.join("etcd/member/snap/db")
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

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            let ready = |args: &[&str]| kubectl::run(&self.kubeconfig, args).is_ok();
            if ready(&["get", "--raw", "/readyz", "--request-timeout=5s"])
                && ready(&["get", "namespace", "default", "--request-timeout=5s"])
            {
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
            process::stop(&mut p.child, Target::Process, STOP_GRACE);
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
            process::stop_pid(pid, Duration::from_secs(15));
        }
    }
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(format!("remove {}: {e}", dir.display())),
        _ => Ok(()),
    }
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}
