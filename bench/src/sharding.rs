//! Sharding: `n` credentials split by a `shard` label over two operator processes
//! (`--credential-selector shard=a` and `shard=b`, each elected on a Lease of its own, as two
//! Helm releases run), against one process for the same population. The clients are split with
//! the credentials, so no client is fetched by both processes.

use std::time::Instant;

use futures::StreamExt;
use groupdocs_dev_token_server::DevServer;
use kube::Client;
use kube::api::{Api, PostParams};
use serde::{Deserialize, Serialize};
use test_support::{Operator, objects, process};

use crate::cluster::{self, CREATE_CONCURRENCY, Cluster};
use crate::operator::OperatorCommand;

/// The shards' label key and values.
const SHARD_LABEL: &str = "shard";
const SHARDS: [&str; 2] = ["a", "b"];
/// Where the Leases live: the ServiceAccount's namespace, where the chart's Role lets it
/// write Leases.
const LEASE_NAMESPACE: &str = "groupdocs-token-operator";

/// One cold start of the whole population.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Run {
    pub processes: usize,
    /// From the first process's start until every credential is Ready.
    pub all_ready_s: f64,
    pub token_requests: u64,
    /// Per process, in shard order.
    pub peak_rss_mib: Vec<f64>,
    pub cpu_s: Vec<f64>,
}

/// The one-process baseline and the two-shard run.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Sharding {
    pub date: String,
    pub n: usize,
    pub clients: usize,
    pub one: Run,
    pub two: Run,
}

impl Sharding {
    /// Both runs, each on a fresh namespace of `n` credentials over `clients` clients of `dev`.
    pub async fn run(cluster: &Cluster, operator: &OperatorCommand, dev: &DevServer, n: usize, clients: usize) -> Self {
        cluster::register_clients(dev, clients);
        let one = cold_start(cluster, operator, dev, "shard-one", n, clients, &[None]).await;
        eprintln!("bench: sharding: one process, {n} Ready in {:.1}s", one.all_ready_s);
        let selectors: Vec<Option<&str>> = SHARDS.iter().map(|s| Some(*s)).collect();
        let two = cold_start(cluster, operator, dev, "shard-two", n, clients, &selectors).await;
        eprintln!("bench: sharding: two processes, {n} Ready in {:.1}s", two.all_ready_s);
        Sharding { date: jiff::Timestamp::now().to_string(), n, clients, one, two }
    }

    /// Its table in `latest.md`.
    pub fn markdown(&self) -> String {
        let mib = |v: &[f64]| v.iter().map(|m| format!("{m:.1} MiB")).collect::<Vec<_>>().join(" + ");
        let secs = |v: &[f64]| v.iter().map(|s| format!("{s:.1} s")).collect::<Vec<_>>().join(" + ");
        let row = |r: &Run| {
            format!(
                "| {} | {:.1} s | {} | {} | {} |\n",
                r.processes,
                r.all_ready_s,
                r.token_requests,
                mib(&r.peak_rss_mib),
                secs(&r.cpu_s)
            )
        };
        format!(
            "\nSharding ({}): {} credentials over {} clients, split by label `{SHARD_LABEL}` over two processes \
             with `--credential-selector` and a Lease each, against one process:\n\n\
             | processes | all Ready | token requests | peak RSS | CPU |\n|---|---|---|---|---|\n{}{}",
            self.date,
            self.n,
            self.clients,
            row(&self.one),
            row(&self.two)
        )
    }
}

/// The shard of client `c`: credentials of one client stay together.
fn shard_of(c: usize) -> &'static str {
    SHARDS[c % SHARDS.len()]
}

/// Creates the population in `ns`, starts one operator per selector (`None`: all) and waits
/// until every credential is Ready.
async fn cold_start(
    cluster: &Cluster,
    operator: &OperatorCommand,
    dev: &DevServer,
    ns: &str,
    n: usize,
    clients: usize,
    shards: &[Option<&str>],
) -> Run {
    let _ = objects::create_namespace(&cluster.admin, ns).await;
    cluster::create_client_secrets(&cluster.admin, ns, clients).await;
    create_labelled_credentials(&cluster.admin, ns, n, clients, dev).await;
    let tokens_before = dev.stats().token_requests;
    let watch = cluster::watch_ready(&cluster.admin, ns, n).await;
    let started = Instant::now();
    let mut ops: Vec<Operator> = shards.iter().map(|shard| start(cluster, operator, dev, ns, *shard)).collect();
    watch.await;
    let run = Run {
        processes: ops.len(),
        all_ready_s: started.elapsed().as_secs_f64(),
        token_requests: dev.stats().token_requests - tokens_before,
        peak_rss_mib: ops.iter().map(|op| process::peak_rss_mib(op.pid())).collect(),
        cpu_s: ops.iter().map(|op| process::cpu_seconds(op.pid())).collect(),
    };
    ops.iter_mut().for_each(Operator::stop);
    run
}

/// An operator of `ns` for `shard` (all credentials when `None`), on a Lease of its own.
fn start(cluster: &Cluster, operator: &OperatorCommand, dev: &DevServer, ns: &str, shard: Option<&str>) -> Operator {
    let name = format!("{ns}-{}", shard.unwrap_or("all"));
    let mut args = vec![
        "--leader-elect".to_string(),
        format!("--lease-name={name}"),
        format!("--leader-election-namespace={LEASE_NAMESPACE}"),
    ];
    args.extend(shard.map(|s| format!("--credential-selector={SHARD_LABEL}={s}")));
    operator.launch(&cluster.sa_kubeconfig, ns, dev, &name).args(args).envs([("POD_NAME", name.as_str())]).start()
}

/// `n` credentials (`cr-0`, ...) over `clients` clients, labelled with their client's shard.
async fn create_labelled_credentials(client: &Client, ns: &str, n: usize, clients: usize, dev: &DevServer) {
    let api: Api<groupdocs_token_operator::crd::GroupDocsCredential> = Api::namespaced(client.clone(), ns);
    let started = Instant::now();
    futures::stream::iter(0..n)
        .for_each_concurrent(CREATE_CONCURRENCY, |i| {
            let api = api.clone();
            async move {
                let c = i % clients;
                let mut cr = objects::credential(&format!("cr-{i}"), cluster::credential_spec(c, dev));
                cr.metadata.labels = Some([(SHARD_LABEL.to_string(), shard_of(c).to_string())].into());
                api.create(&PostParams::default(), &cr).await.expect("create a labelled credential");
            }
        })
        .await;
    eprintln!("bench: {n} labelled credentials created in {:.1}s", started.elapsed().as_secs_f64());
}
