//! A real node beside the control plane: containerd with runc and the CNI bridge plugin (from
//! Debian, `hack/host-deps.sh`), the kubelet, kube-scheduler and kube-proxy (built by
//! `make testbins`), on a bridge network created on this machine.
//!
//! What keeps it contained:
//! - containerd and the kubelet run in a private mount namespace held by a `sleep` process, so
//!   every mount they make (the kubelet's root, Secret volumes, container root filesystems,
//!   network namespace files) disappears with them;
//! - pods live under their own cgroup root ([`CGROUP_ROOT`]), so teardown finds and kills
//!   every container process there;
//! - traffic stays on this machine: pods have no default route, only the bridge's subnet and
//!   the Service range through the gateway; on the host the Service range is routed nowhere
//!   (an `unreachable` route) except through kube-proxy's rules; nothing is masqueraded;
//! - teardown removes kube-proxy's rules (`kube-proxy --cleanup`), the route and the bridge.
//!
//! Needs root, cgroups and the packages of `hack/host-deps.sh`; [`preflight`] says what is
//! missing in one line.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::Result;

pub const NODE_NAME: &str = "gdto-node";
/// The bridge the pods sit on; its address is the node's and the host's address for pods.
pub const BRIDGE: &str = "gdto0";
pub const POD_SUBNET: &str = "10.217.0.0/24";
pub const GATEWAY: &str = "10.217.0.1";
/// The API server's `--service-cluster-ip-range` (the `kubernetes` Service is its first address).
pub const SERVICE_SUBNET: &str = "10.0.0.0/24";
/// cgroup (v1 hierarchies and v2 alike) under which the kubelet puts every pod.
pub const CGROUP_ROOT: &str = "gdto-node";
/// The sandbox ("pause") image, built by `make image` into `target/image/pause.oci.tar`.
pub const PAUSE_IMAGE: &str = "localhost/gdto-pause:1";
/// How often the kubelet syncs each pod, and so refreshes its Secret volumes (the default is
/// 1 minute; a shorter one keeps the tests' token lifetimes short).
pub const SYNC_FREQUENCY: &str = "10s";

const NODE_READY_DEADLINE: Duration = Duration::from_secs(120);

/// Host programs the node needs, with the package that brings each.
const HOST_PROGRAMS: &[(&str, &str)] = &[
    ("containerd", "containerd"),
    ("ctr", "containerd"),
    ("runc", "runc"),
    ("/usr/lib/cni/bridge", "containernetworking-plugins"),
    ("/usr/lib/cni/host-local", "containernetworking-plugins"),
    ("/usr/lib/cni/loopback", "containernetworking-plugins"),
    ("iptables", "iptables"),
    ("ip", "iproute2"),
    ("unshare", "util-linux"),
    ("nsenter", "util-linux"),
];

/// Why this machine cannot run the node, in one line, or `Ok`.
pub fn preflight() -> Result<()> {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        return Err("the test node needs root (containerd, the kubelet and a bridge)".into());
    }
    for (program, package) in HOST_PROGRAMS {
        if find_program(program).is_none() {
            return Err(format!("{program} is missing: run ./hack/host-deps.sh (Debian package {package})"));
        }
    }
    for bin in ["kubelet", "kube-scheduler", "kube-proxy"] {
        crate::testbin(bin)?;
    }
    if !Path::new("/sys/fs/cgroup/memory").is_dir() && !Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        return Err("no memory cgroup controller under /sys/fs/cgroup".into());
    }
    if Path::new("/sys/class/net").join(BRIDGE).exists() {
        return Err(format!(
            "network device {BRIDGE} exists: another test node runs on this machine (stop it: `make cluster-down` or `make demo-down`)"
        ));
    }
    Ok(())
}

fn find_program(program: &str) -> Option<PathBuf> {
    if program.starts_with('/') {
        return Path::new(program).is_file().then(|| PathBuf::from(program));
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Runs a host command; its stderr becomes the error.
pub(crate) fn run(program: &str, args: &[&str]) -> Result<String> {
    let path = find_program(program).unwrap_or_else(|| PathBuf::from(program));
    let out = Command::new(&path).args(args).output().map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("{program} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Creates the bridge with the gateway address, and the guard route for the Service range.
pub fn create_network() -> Result<()> {
    run("ip", &["link", "add", BRIDGE, "type", "bridge"])?;
    run("ip", &["addr", "add", &format!("{GATEWAY}/24"), "dev", BRIDGE])?;
    run("ip", &["link", "set", BRIDGE, "up"])?;
    // Service addresses are only ever rewritten by kube-proxy's rules; a packet that escapes
    // them is refused here instead of leaving through the default route.
    run("ip", &["route", "add", "unreachable", SERVICE_SUBNET])?;
    Ok(())
}

/// Creates the pods' cgroup root in every hierarchy (the kubelet requires it to exist). A v1
/// cpuset cgroup starts with no CPUs or memory nodes, so it gets its parent's.
pub fn create_cgroup_root() -> Result<()> {
    let base = Path::new("/sys/fs/cgroup");
    let dirs: Vec<PathBuf> = if base.join("cgroup.controllers").exists() {
        vec![base.join(CGROUP_ROOT)]
    } else {
        fs::read_dir(base)
            .map_err(|e| e.to_string())?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir() && !p.ends_with("unified"))
            .map(|p| p.join(CGROUP_ROOT))
            .collect()
    };
    for dir in dirs {
        fs::create_dir_all(&dir).map_err(|e| format!("create cgroup {}: {e}", dir.display()))?;
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let parent = dir.parent().unwrap_or(base).join(file);
            if let Ok(value) = fs::read_to_string(&parent) {
                fs::write(dir.join(file), value.trim()).map_err(|e| format!("{}: {e}", dir.join(file).display()))?;
            }
        }
    }
    Ok(())
}

/// Where the node keeps its files, under the control plane's directory.
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    pub fn new(cluster_dir: &Path) -> Layout {
        Layout { dir: cluster_dir.join("node") }
    }
    pub fn containerd_socket(&self) -> PathBuf {
        self.dir.join("containerd/containerd.sock")
    }
    fn p(&self, rel: &str) -> String {
        self.dir.join(rel).to_string_lossy().into_owned()
    }
}

/// Writes containerd's, the CNI's, the kubelet's and kube-proxy's configuration.
pub fn write_config(layout: &Layout, kubelet_port: u16, ca_file: &Path) -> Result<()> {
    let io = |e: std::io::Error| e.to_string();
    for d in ["containerd", "cni/net.d", "cni/ipam", "kubelet", "kubelet-pki", "pod-logs", "volume-plugins"] {
        fs::create_dir_all(layout.dir.join(d)).map_err(io)?;
    }
    let containerd = format!(
        r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{ttrpc}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # This sandbox's root lacks CAP_SYS_RESOURCE, so runc may not lower oom_score_adj.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni_conf}"
"#,
        root = layout.p("containerd/root"),
        state = layout.p("containerd/state"),
        sock = layout.containerd_socket().display(),
        ttrpc = layout.p("containerd/containerd.sock.ttrpc"),
        opt = layout.p("containerd/opt"),
        cni_conf = layout.p("cni/net.d"),
    );
    fs::write(layout.dir.join("containerd/config.toml"), containerd).map_err(io)?;

    let cni = format!(
        r#"{{
  "cniVersion": "0.4.0",
  "name": "gdto",
  "plugins": [
    {{"type": "bridge", "bridge": "{BRIDGE}", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {{"type": "host-local", "ranges": [[{{"subnet": "{POD_SUBNET}", "gateway": "{GATEWAY}", "rangeStart": "10.217.0.10"}}]],
              "routes": [{{"dst": "{SERVICE_SUBNET}"}}], "dataDir": "{ipam}"}}}},
    {{"type": "loopback"}}
  ]
}}
"#,
        ipam = layout.p("cni/ipam")
    );
    fs::write(layout.dir.join("cni/net.d/10-gdto.conflist"), cni).map_err(io)?;

    let kubelet = format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine has a hybrid cgroup v1 hierarchy, which kubelets from 1.35 on refuse by default.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /{CGROUP_ROOT}
address: {GATEWAY}
port: {kubelet_port}
readOnlyPort: 0
healthzPort: 0
containerRuntimeEndpoint: unix://{sock}
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: {ca}}}
authorization:
  mode: Webhook
syncFrequency: {SYNC_FREQUENCY}
failSwapOn: false
podLogsDir: {logs}
volumePluginDir: {plugins}
resolvConf: /etc/resolv.conf
serializeImagePulls: false
# Images are imported, never pulled: never collect them, never evict for disk.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {{memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}}
maxPods: 30
"#,
        sock = layout.containerd_socket().display(),
        ca = ca_file.display(),
        logs = layout.p("pod-logs"),
        plugins = layout.p("volume-plugins"),
    );
    fs::write(layout.dir.join("kubelet.yaml"), kubelet).map_err(io)?;
    Ok(())
}

/// kube-proxy's configuration: iptables mode, changing no kernel setting it can leave alone.
pub fn write_proxy_config(layout: &Layout, kubeconfig: &Path, metrics_port: u16) -> Result<PathBuf> {
    let path = layout.dir.join("kube-proxy.yaml");
    let text = format!(
        r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: {kubeconfig}
hostnameOverride: {NODE_NAME}
clusterCIDR: {POD_SUBNET}
mode: iptables
iptables:
  localhostNodePorts: false
nodePortAddresses: ["{GATEWAY}/32"]
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
metricsBindAddress: 127.0.0.1:{metrics_port}
healthzBindAddress: ""
"#,
        kubeconfig = kubeconfig.display()
    );
    fs::write(&path, text).map_err(|e| e.to_string())?;
    Ok(path)
}

/// Host folders where containerd 1.6 and its CNI library keep state they cannot be told to
/// keep elsewhere (network namespace files, shim sockets, the CNI result cache). Inside the
/// node's mount namespace each gets a private tmpfs, so nothing of it reaches the host.
const PRIVATE_HOST_DIRS: [&str; 3] = ["/run/netns", "/run/containerd", "/var/lib/cni"];

/// Command line of the process that holds the node's private mount namespace: it mounts the
/// private folders, then sleeps. `layout` records which of those folders it had to create on
/// the host, so that teardown removes them again.
pub fn holder_command(layout: &Layout) -> Result<Command> {
    let created: Vec<&str> = PRIVATE_HOST_DIRS.iter().copied().filter(|d| !Path::new(d).exists()).collect();
    fs::create_dir_all(&layout.dir).map_err(|e| e.to_string())?;
    fs::write(layout.dir.join("created-host-dirs"), created.join("\n")).map_err(|e| e.to_string())?;
    let script = format!(
        "set -e; for d in {}; do mkdir -p $d; mount -t tmpfs -o mode=0755 gdto-node $d; done; exec sleep infinity",
        PRIVATE_HOST_DIRS.join(" ")
    );
    let mut cmd = Command::new(find_program("unshare").unwrap_or_else(|| "unshare".into()));
    cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c", &script]);
    Ok(cmd)
}

/// True once the holder has mounted its folders and sleeps.
pub fn holder_ready(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep")
}

/// `program args...` run inside the holder's mount namespace.
pub fn in_namespace(holder_pid: u32, program: &Path, args: &[String]) -> Command {
    let mut cmd = Command::new(find_program("nsenter").unwrap_or_else(|| "nsenter".into()));
    cmd.arg(format!("--target={holder_pid}")).arg("--mount").arg("--").arg(program).args(args);
    cmd
}

pub fn containerd_args(layout: &Layout) -> Vec<String> {
    vec!["--config".into(), layout.p("containerd/config.toml"), "--log-level".into(), "warn".into()]
}

pub fn kubelet_args(layout: &Layout, kubeconfig: &Path) -> Vec<String> {
    vec![
        format!("--config={}", layout.p("kubelet.yaml")),
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--hostname-override={NODE_NAME}"),
        format!("--node-ip={GATEWAY}"),
        format!("--root-dir={}", layout.p("kubelet")),
        format!("--cert-dir={}", layout.p("kubelet-pki")),
        "--v=1".into(),
    ]
}

/// Waits until containerd answers on its socket.
pub fn wait_containerd(layout: &Layout, deadline: Duration) -> Result<()> {
    let sock = layout.containerd_socket();
    let start = Instant::now();
    loop {
        if ctr(&sock, &["version"]).is_ok() {
            return Ok(());
        }
        if start.elapsed() > deadline {
            return Err(format!("containerd did not answer on {} within {deadline:?}", sock.display()));
        }
        thread::sleep(Duration::from_millis(200));
    }
}

fn ctr(sock: &Path, args: &[&str]) -> Result<String> {
    let mut all = vec!["--address", sock.to_str().unwrap_or_default(), "--namespace", "k8s.io"];
    all.extend_from_slice(args);
    run("ctr", &all)
}

/// Imports an OCI image tarball into the node's containerd (for `imagePullPolicy: Never`).
pub fn import_image(socket: &Path, tarball: &Path) -> Result<()> {
    ctr(socket, &["images", "import", "--no-unpack=false", tarball.to_str().unwrap_or_default()])
        .map(|_| ())
        .map_err(|e| format!("import {}: {e}", tarball.display()))
}

/// Waits until the node reports Ready; `exited` names a node process that ended meanwhile.
pub fn wait_node_ready(
    kubectl: &mut dyn FnMut(&[&str]) -> Result<String>,
    exited: &mut dyn FnMut() -> Option<String>,
) -> Result<()> {
    let start = Instant::now();
    loop {
        if let Some(what) = exited() {
            return Err(what);
        }
        let status =
            kubectl(&["get", "node", NODE_NAME, "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"])
                .unwrap_or_default();
        if status.trim() == "True" {
            return Ok(());
        }
        if start.elapsed() > NODE_READY_DEADLINE {
            let why = kubectl(&[
                "get",
                "node",
                NODE_NAME,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].message}",
            ])
            .unwrap_or_else(|e| e);
            return Err(format!("node {NODE_NAME} not Ready within {NODE_READY_DEADLINE:?}: {why}"));
        }
        thread::sleep(Duration::from_millis(500));
    }
}

/// Removes everything the node put on the host, whatever state it is in: every process in
/// the pods' cgroups and in the node's mount namespace, kube-proxy's rules, the guard route
/// and the bridge. `pids` are the node's own processes (kubelet, kube-scheduler, kube-proxy,
/// containerd, the namespace holder), stopped in that order. Errors are collected, not fatal.
pub fn teardown(layout: &Layout, pids: &[(&str, Option<i32>)], proxy_bin: Option<&Path>) -> Vec<String> {
    let mut errors = Vec::new();
    let holder = pids.iter().find(|(n, _)| *n == "node-holder").and_then(|(_, p)| *p);
    let holder_ns = holder.and_then(|p| fs::read_link(format!("/proc/{p}/ns/mnt")).ok());
    for (name, pid) in pids {
        if let Some(pid) = pid
            && *name != "node-holder"
            && *name != "containerd"
        {
            crate::process::stop_pid(*pid, Duration::from_secs(10));
        }
    }
    kill_cgroup_tree(&mut errors);
    if let Some((_, Some(pid))) = pids.iter().find(|(n, _)| *n == "containerd") {
        crate::process::stop_pid(*pid, Duration::from_secs(10));
    }
    // containerd's shims outlive it; they are the last processes in the namespace.
    if let Some(ns) = &holder_ns {
        for pid in processes_in_mount_namespace(ns) {
            // SAFETY: plain signal to a process of the node's own mount namespace.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    if let Some(pid) = holder {
        crate::process::stop_pid(pid, Duration::from_secs(5));
    }
    if let Some(bin) = proxy_bin
        && let Err(e) = run(&bin.to_string_lossy(), &["--cleanup"])
    {
        errors.push(e);
    }
    // The kubelet's own chains (KUBE-FIREWALL, KUBE-KUBELET-CANARY, ...) outlive it.
    for (save, restore) in [("iptables-save", "iptables-restore"), ("ip6tables-save", "ip6tables-restore")] {
        if let Err(e) = remove_kube_rules(save, restore) {
            errors.push(e);
        }
    }
    let created = fs::read_to_string(layout.dir.join("created-host-dirs")).unwrap_or_default();
    for dir in created.lines().filter(|d| PRIVATE_HOST_DIRS.contains(d)) {
        let _ = fs::remove_dir(dir); // only if still empty
    }
    let _ = run("ip", &["route", "del", "unreachable", SERVICE_SUBNET]);
    if Path::new("/sys/class/net").join(BRIDGE).exists()
        && let Err(e) = run("ip", &["link", "del", BRIDGE])
    {
        errors.push(e);
    }
    // Mounts of the node's namespace are gone with it; anything still mounted under the
    // node's directory (a namespace that did not die) is detached lazily.
    for mount in mounts_under(&layout.dir).into_iter().rev() {
        let _ = run("umount", &["-l", &mount]);
    }
    errors
}

/// Rewrites every table without the rules and chains whose names start with `KUBE-`; all
/// other rules stay as they were (iptables-restore replaces the tables atomically).
fn remove_kube_rules(save: &str, restore: &str) -> Result<()> {
    let Ok(rules) = run(save, &[]) else {
        return Ok(()); // no such tool or no such family: nothing to remove
    };
    if !rules.contains("KUBE-") {
        return Ok(());
    }
    let kept: String = rules.lines().filter(|l| !l.contains("KUBE-")).map(|l| format!("{l}\n")).collect();
    let path = find_program(restore).ok_or(format!("{restore} is missing"))?;
    let mut child = Command::new(path)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("{restore}: {e}"))?;
    use std::io::Write as _;
    child.stdin.take().ok_or("no stdin")?.write_all(kept.as_bytes()).map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{restore}: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn kill_cgroup_tree(errors: &mut Vec<String>) {
    let roots: Vec<PathBuf> = fs::read_dir("/sys/fs/cgroup")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path().join(CGROUP_ROOT)).filter(|p| p.is_dir()).collect())
        .unwrap_or_default();
    let roots = if Path::new("/sys/fs/cgroup").join(CGROUP_ROOT).is_dir() {
        vec![Path::new("/sys/fs/cgroup").join(CGROUP_ROOT)]
    } else {
        roots
    };
    for _ in 0..50 {
        let mut any = false;
        for root in &roots {
            for dir in cgroup_dirs(root) {
                for pid in fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default().lines() {
                    if let Ok(pid) = pid.trim().parse::<i32>() {
                        any = true;
                        // SAFETY: plain signal to a process in the node's pod cgroups.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
            }
        }
        if !any {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    for root in &roots {
        // Deepest first: a cgroup can only be removed once its children are.
        for dir in cgroup_dirs(root).into_iter().rev() {
            if let Err(e) = fs::remove_dir(&dir)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                errors.push(format!("remove cgroup {}: {e}", dir.display()));
            }
        }
    }
}

/// `root` and every cgroup below it, parents before children.
fn cgroup_dirs(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if let Ok(entries) = fs::read_dir(&out[i]) {
            let children: Vec<PathBuf> =
                entries.filter_map(|e| e.ok()).filter(|e| e.path().is_dir()).map(|e| e.path()).collect();
            out.extend(children);
        }
        i += 1;
    }
    out.into_iter().filter(|d| d.exists()).collect()
}

fn processes_in_mount_namespace(ns: &Path) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id() as i32;
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| fs::read_link(format!("/proc/{pid}/ns/mnt")).is_ok_and(|l| l == ns))
        .collect()
}

/// Mount points at or below `dir` in this process's mount namespace.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .filter(|m| m == &prefix || m.starts_with(&format!("{prefix}/")))
        .collect()
}

/// What a node leaves on the host while it runs; empty after a clean teardown.
pub fn leftovers(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if Path::new("/sys/class/net").join(BRIDGE).exists() {
        out.push(format!("network device {BRIDGE}"));
    }
    if fs::read_dir("/sys/fs/cgroup").is_ok_and(|mut d| d.any(|e| e.is_ok_and(|e| e.path().join(CGROUP_ROOT).exists())))
        || Path::new("/sys/fs/cgroup").join(CGROUP_ROOT).exists()
    {
        out.push(format!("cgroup {CGROUP_ROOT}"));
    }
    for save in ["iptables-save", "ip6tables-save"] {
        if run(save, &[]).is_ok_and(|rules| rules.contains("KUBE-")) {
            out.push(format!("KUBE-* rules in {save}"));
        }
    }
    if run("ip", &["route", "show", SERVICE_SUBNET]).is_ok_and(|r| !r.trim().is_empty()) {
        out.push(format!("route {SERVICE_SUBNET}"));
    }
    out.extend(mounts_under(dir).into_iter().map(|m| format!("mount {m}")));
    // State that would have reached the host without the namespace's private folders.
    let named = |dir: &str, prefix: &str| -> Vec<String> {
        fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.path().to_string_lossy().into_owned())
                    .filter(|p| p.rsplit('/').next().is_some_and(|n| n.starts_with(prefix)))
                    .collect()
            })
            .unwrap_or_default()
    };
    out.extend(named("/run/netns", "cni-").into_iter().map(|f| format!("file {f}")));
    out.extend(named("/var/lib/cni/results", "gdto-").into_iter().map(|f| format!("file {f}")));
    out
}
