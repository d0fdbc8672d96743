//! The renewal wave: credentials whose tokens live a short `lifetime` (a second development
//! token server), watched for [`OBSERVED_LIFETIMES`] lifetimes after they are all Ready: how
//! many renewals, how early before expiry, how the token requests spread, and whether a
//! Secret ever held an expired token.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use groupdocs_dev_token_server::{DevServer, DevServerArgs};
use groupdocs_token_operator::crd::GroupDocsCredential;
use groupdocs_token_operator::target::{MANAGED_BY, MANAGED_BY_LABEL};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use serde::{Deserialize, Serialize};
use test_support::objects;

use crate::cluster::{self, Cluster};
use crate::operator::OperatorCommand;

const NS: &str = "wave";
/// How many token lifetimes the wave is watched for.
const OBSERVED_LIFETIMES: u32 = 2;
/// How often the Secrets' expiry times are checked.
const SAMPLE: Duration = Duration::from_millis(200);
/// The window of the peak request rate.
const RATE_WINDOW: Duration = Duration::from_secs(1);

/// What the wave showed.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Wave {
    pub n: usize,
    pub clients: usize,
    pub lifetime_s: u64,
    pub observed_s: u64,
    /// Token changes seen in the Secrets, and Secrets that never changed.
    pub renewals: usize,
    pub not_renewed: usize,
    pub token_requests: u64,
    pub peak_requests_per_s: u64,
    pub mean_requests_per_s: f64,
    /// How long before expiry tokens were replaced: the least and the median.
    pub min_margin_s: f64,
    pub median_margin_s: f64,
    /// Samples in which some Secret held an expired token.
    pub expired_samples: usize,
    pub still_ready: usize,
}

impl Wave {
    /// `n` credentials over `clients` clients whose tokens live `lifetime`, on a token server
    /// started with `dev_args`.
    pub async fn run(
        cluster: &Cluster,
        operator: &OperatorCommand,
        dev_args: DevServerArgs,
        n: usize,
        clients: usize,
        lifetime: Duration,
    ) -> Wave {
        let admin = &cluster.admin;
        let dev = DevServer::start(DevServerArgs { expires_in: lifetime.as_secs() as i64, ..dev_args }).await.unwrap();
        cluster::register_clients(&dev, clients);
        let _ = objects::create_namespace(admin, NS).await;
        cluster::create_client_secrets(admin, NS, clients).await;
        cluster::create_credentials(admin, NS, n, clients, &dev).await;
        let ready = cluster::watch_ready(admin, NS, n).await;
        let mut op = operator.start(&cluster.sa_kubeconfig, NS, &dev);
        ready.await;
        let observe = lifetime * OBSERVED_LIFETIMES;
        eprintln!("bench: wave: {n} Ready; watching {} s", observe.as_secs());

        // Every token in every target Secret, as the watch shows them.
        let secrets: Api<Secret> = Api::namespaced(admin.clone(), NS);
        let held = Arc::new(Mutex::new(HashMap::<String, (String, jiff::Timestamp)>::new()));
        let margins = Arc::new(Mutex::new(Vec::<f64>::new()));
        let watch = {
            let (held, margins) = (held.clone(), margins.clone());
            tokio::spawn(async move {
                let config = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"));
                // A watch error (a 410, a dropped connection) is retried after a backoff, not
                // the end of the observation.
                let mut stream = std::pin::pin!(watcher(secrets, config).default_backoff().applied_objects());
                while let Some(item) = stream.next().await {
                    let Ok(secret) = item else { continue };
                    let read = |k: &str| {
                        secret.data.as_ref().and_then(|d| d.get(k)).map(|v| String::from_utf8_lossy(&v.0).into_owned())
                    };
                    let (Some(token), Some(expires)) = (read("access_token"), read("expires_at")) else { continue };
                    let Ok(expires) = expires.parse::<jiff::Timestamp>() else { continue };
                    let name = secret.metadata.name.clone().unwrap_or_default();
                    let mut held = held.lock().unwrap();
                    if let Some((old, old_expiry)) = held.get(&name)
                        && *old != token
                    {
                        let margin = old_expiry.duration_since(jiff::Timestamp::now()).as_secs_f64();
                        margins.lock().unwrap().push(margin);
                    }
                    held.insert(name, (token, expires));
                }
            })
        };
        let tokens_before = dev.stats().token_requests;
        let started = Instant::now();
        let (mut expired_samples, mut per_window, mut last_count, mut window) =
            (0, Vec::new(), tokens_before, Instant::now());
        while started.elapsed() < observe {
            tokio::time::sleep(SAMPLE).await;
            let now = jiff::Timestamp::now();
            if held.lock().unwrap().values().any(|(_, expires)| *expires <= now) {
                expired_samples += 1;
            }
            if window.elapsed() >= RATE_WINDOW {
                let count = dev.stats().token_requests;
                per_window.push(count - last_count);
                (last_count, window) = (count, Instant::now());
            }
        }
        watch.abort();
        let token_requests = dev.stats().token_requests - tokens_before;
        let mut margins = std::mem::take(&mut *margins.lock().unwrap());
        margins.sort_by(f64::total_cmp);
        let crs: Api<GroupDocsCredential> = Api::namespaced(admin.clone(), NS);
        let still_ready =
            crs.list(&Default::default()).await.unwrap().items.iter().filter(|cr| objects::is_ready(cr)).count();
        op.stop();
        let not_renewed = {
            // A Secret whose token never changed still holds its first token.
            let first_tokens: HashSet<String> = dev.issued_tokens().into_iter().take(clients).collect();
            held.lock().unwrap().values().filter(|(t, _)| first_tokens.contains(t)).count()
        };
        Wave {
            n,
            clients,
            lifetime_s: lifetime.as_secs(),
            observed_s: observe.as_secs(),
            renewals: margins.len(),
            not_renewed,
            token_requests,
            peak_requests_per_s: (per_window.iter().copied().max().unwrap_or(0) as f64 / RATE_WINDOW.as_secs_f64())
                as u64,
            mean_requests_per_s: token_requests as f64 / observe.as_secs_f64(),
            min_margin_s: margins.first().copied().unwrap_or(0.0),
            median_margin_s: margins.get(margins.len() / 2).copied().unwrap_or(0.0),
            expired_samples,
            still_ready,
        }
    }

    /// The wave's sentence in `latest.md`.
    pub fn markdown(&self) -> String {
        format!(
            "\nRenewal wave: {} credentials over {} clients, {} s tokens, watched {} s: {} renewals, {} Secrets never renewed, \
             {} token requests (peak {}/s, mean {:.2}/s), tokens replaced {:.0} s (least) / {:.0} s (median) before expiry, \
             {} samples with an expired token in a Secret, {} of {} Ready at the end.\n",
            self.n,
            self.clients,
            self.lifetime_s,
            self.observed_s,
            self.renewals,
            self.not_renewed,
            self.token_requests,
            self.peak_requests_per_s,
            self.mean_requests_per_s,
            self.min_margin_s,
            self.median_margin_s,
            self.expired_samples,
            self.still_ready,
            self.n
        )
    }
}
