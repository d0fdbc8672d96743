//! The chart's alerts and dashboard: the PrometheusRule rendered by the real helm passes
//! `promtool check rules` and the unit tests in the chart's tests/alerts_test.yaml; thresholds
//! are values; and every metric that a rule or a dashboard panel names is one a running
//! operator exports (the control plane, the token server and the operator; one credential
//! Ready, one rate limited).

// A test crate: a panic is the failure report (the operator's own code denies these).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use groupdocs_dev_token_server::{DevServerArgs, Fault};
use serde_json::{Value, json};
use support::{Env, OPERATOR, wait_for};

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/helm/groupdocs-token-operator");
const RELEASE: &str = "groupdocs-token-operator";
/// The namespace tests/alerts_test.yaml expects in the rendered annotations.
const RELEASE_NS: &str = "gdto-system";

/// Metrics a rule may name that come from Prometheus's scrape, not from the operator.
const SCRAPE_METRICS: &[&str] = &["up"];

/// A test binary, or `None` (with a note) when it is not built; in CI a missing one fails.
fn testbin(name: &str) -> Option<PathBuf> {
    match testenv::testbin(name) {
        Ok(path) => Some(path),
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => panic!("{name} is required in CI: {e}"),
        Err(e) => {
            eprintln!("SKIPPED: {e}");
            None
        }
    }
}

fn run(bin: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(bin).args(args).output().unwrap_or_else(|e| panic!("run {}: {e}", bin.display()));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// One template of the chart rendered with `sets` (no cluster needed), as JSON.
fn render(helm: &Path, template: &str, sets: &[&str]) -> Value {
    let mut args = vec!["template", RELEASE, CHART, "--namespace", RELEASE_NS, "--show-only", template];
    for set in sets {
        args.extend(["--set", set]);
    }
    let (ok, text) = run(helm, &args);
    assert!(ok, "helm {}: {text}", args.join(" "));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{template} is not one YAML document: {e}\n{text}"))
}

/// The PrometheusRule's `spec` (a Prometheus rules file: `groups:`), rendered with `sets`.
fn rule_groups(helm: &Path, sets: &[&str]) -> Value {
    let mut all = vec!["prometheusRule.enabled=true"];
    all.extend_from_slice(sets);
    let rule = render(helm, "templates/prometheusrule.yaml", &all);
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["kind"], "PrometheusRule");
    rule["spec"].clone()
}

fn rules(groups: &Value) -> impl Iterator<Item = &Value> {
    groups["groups"].as_array().into_iter().flatten().flat_map(|g| g["rules"].as_array().into_iter().flatten())
}

fn alert_names(groups: &Value) -> BTreeSet<String> {
    rules(groups).filter_map(|r| r["alert"].as_str()).map(str::to_string).collect()
}

fn rule_exprs(groups: &Value) -> Vec<String> {
    rules(groups).map(|r| r["expr"].as_str().expect("every rule has an expr").to_string()).collect()
}

/// The Grafana dashboard as the ConfigMap carries it.
fn dashboard(helm: &Path) -> Value {
    let map = render(helm, "templates/grafana-dashboard.yaml", &["grafanaDashboard.enabled=true"]);
    assert_eq!(map["metadata"]["labels"]["grafana_dashboard"], "1", "{map}");
    let text = map["data"]["groupdocs-token-operator.json"].as_str().expect("the dashboard key");
    serde_json::from_str(text).expect("the dashboard is JSON")
}

/// Every PromQL expression of the dashboard: panel targets (rows included) and the queries of
/// its template variables (`label_values(<selector>, <label>)` reduced to the selector).
fn dashboard_exprs(dashboard: &Value) -> Vec<String> {
    fn panels(panel: &Value, out: &mut Vec<String>) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            out.push(target["expr"].as_str().expect("every target has an expr").to_string());
        }
        for inner in panel["panels"].as_array().into_iter().flatten() {
            panels(inner, out);
        }
    }
    let mut out = Vec::new();
    panels(dashboard, &mut out);
    for var in dashboard["templating"]["list"].as_array().into_iter().flatten().filter(|v| v["type"] == "query") {
        let query = var["query"]["query"].as_str().or(var["query"].as_str()).unwrap_or_default();
        let selector = query.strip_prefix("label_values(").and_then(|q| q.rsplit_once(',')).map(|(s, _)| s);
        out.push(selector.unwrap_or_else(|| panic!("variable query {query:?} is not label_values(...)")).to_string());
    }
    out
}

/// Grafana's variables replaced by values of their kind, so that Prometheus can parse the
/// expression.
fn without_grafana_variables(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m").replace("$__range", "1h").replace("$job", ".+")
}

/// Writes `groups` as a rules file into `dir` and returns its path.
fn write_rules(dir: &Path, groups: &Value) -> PathBuf {
    let path = dir.join("rules.yaml");
    std::fs::write(&path, serde_yaml_ng::to_string(groups).unwrap()).unwrap();
    path
}

fn promtool_check_rules(promtool: &Path, rules: &Path) {
    let (ok, text) = run(promtool, &["check", "rules", rules.to_str().unwrap()]);
    assert!(ok && text.contains("SUCCESS"), "promtool check rules:\n{text}");
}

#[test]
fn alerts_pass_promtool_check_and_unit_tests() {
    let (Some(helm), Some(promtool)) = (testbin("helm"), testbin("promtool")) else { return };
    let groups = rule_groups(&helm, &[]);
    let expected: BTreeSet<String> = [
        "GroupDocsTokenExpiringSoon",
        "GroupDocsTokenExpired",
        "GroupDocsCredentialNotReady",
        "GroupDocsTokenRequestsRateLimited",
        "GroupDocsTokenRequestsFailing",
        "GroupDocsTokenOperatorDown",
    ]
    .into_iter()
    .map(str::to_string)
    .collect();
    assert_eq!(alert_names(&groups), expected);

    let dir = tempfile::tempdir().unwrap();
    let rules = write_rules(dir.path(), &groups);
    promtool_check_rules(&promtool, &rules);
    // rule_files in the test file are relative to it: it goes beside rules.yaml.
    let tests = dir.path().join("alerts_test.yaml");
    std::fs::copy(format!("{CHART}/tests/alerts_test.yaml"), &tests).unwrap();
    let (ok, text) = run(&promtool, &["test", "rules", tests.to_str().unwrap()]);
    assert!(ok && text.contains("SUCCESS"), "promtool test rules:\n{text}");
}

#[test]
fn alert_thresholds_durations_and_labels_are_values() {
    let Some(helm) = testbin("helm") else { return };
    let groups = rule_groups(
        &helm,
        &[
            "prometheusRule.alerts.tokenExpiringSoon.thresholdSeconds=600",
            "prometheusRule.alerts.tokenExpiringSoon.for=7m",
            "prometheusRule.alerts.rateLimited.threshold=4",
            "prometheusRule.alerts.rateLimited.window=30m",
            "prometheusRule.alerts.operatorDown.severity=page",
            "prometheusRule.alerts.credentialNotReady.enabled=false",
            "prometheusRule.alertLabels.team=platform",
            "prometheusRule.selector=job=\"shard-a\"",
        ],
    );
    let rule = |name: &str| rules(&groups).find(|r| r["alert"] == name).cloned().unwrap_or(Value::Null);
    let soon = rule("GroupDocsTokenExpiringSoon");
    assert!(soon["expr"].as_str().unwrap().contains("- time() < 600"), "{soon}");
    assert_eq!(soon["for"], "7m");
    assert_eq!(soon["labels"], json!({"severity": "warning", "team": "platform"}));
    let limited = rule("GroupDocsTokenRequestsRateLimited")["expr"].as_str().unwrap().to_string();
    assert!(limited.contains("[30m]") && limited.trim_end().ends_with("> 4"), "{limited}");
    assert_eq!(rule("GroupDocsTokenOperatorDown")["labels"]["severity"], "page");
    assert_eq!(rule("GroupDocsCredentialNotReady"), Value::Null, "a disabled alert is not rendered");
    for expr in rule_exprs(&groups) {
        assert!(expr.contains("{job=\"shard-a\"") && !expr.contains("groupdocs-token-operator-metrics"), "{expr}");
    }

    // Off by default: neither the rule nor the dashboard is rendered.
    let (ok, text) = run(&helm, &["template", RELEASE, CHART]);
    assert!(ok, "{text}");
    assert!(!text.contains("kind: PrometheusRule") && !text.contains("grafana_dashboard"), "{text}");
    // A malformed duration is refused by the chart's schema.
    let (ok, _) = run(&helm, &["template", RELEASE, CHART, "--set", "prometheusRule.alerts.rateLimited.window=10"]);
    assert!(!ok, "window=10 (no unit) is refused");
}

#[test]
fn dashboard_is_the_charts_file_and_its_queries_parse() {
    let (Some(helm), Some(promtool)) = (testbin("helm"), testbin("promtool")) else { return };
    let dashboard = dashboard(&helm);
    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{CHART}/files/dashboard.json")).unwrap()).unwrap();
    assert_eq!(dashboard, file, "the ConfigMap carries files/dashboard.json unchanged");
    let exprs = dashboard_exprs(&dashboard);
    assert!(exprs.len() >= 10, "{exprs:?}");
    // promtool parses the queries as recording rules (it has no command to parse one query).
    let rules: Vec<Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| json!({"record": format!("dashboard:query_{i}"), "expr": without_grafana_variables(e)}))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = write_rules(dir.path(), &json!({"groups": [{"name": "dashboard", "rules": rules}]}));
    promtool_check_rules(&promtool, &path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_in_alerts_and_dashboard_is_exported_by_a_running_operator() {
    let Some(helm) = testbin("helm") else { return };
    let mut used = BTreeSet::new();
    for expr in rule_exprs(&rule_groups(&helm, &[])).iter().chain(&dashboard_exprs(&dashboard(&helm))) {
        used.extend(promql::metric_names(expr).unwrap_or_else(|e| panic!("{e}: {expr}")));
    }
    assert!(used.contains("groupdocs_token_operator_credential_ready"), "the extraction found names: {used:?}");

    let mut env = Env::new(OPERATOR, "alerts", DevServerArgs::default()).await;
    env.put_client_secret("gd-client", "demo-client-id", "demo-client-secret", true).await;
    env.start_operator(&[]);
    env.create_credential("viewer", "gd-client", json!({})).await;
    env.wait_ready("viewer").await;
    // A family without series is not exposed at all: a second client, answered 429, gives the
    // rate limit gauge (and a not-Ready credential) a series.
    env.dev.set_fault(Fault::TooManyRequests { retry_after: Some("600".into()) });
    env.put_client_secret("other-client", "other-client-id", "other-client-secret", true).await;
    env.create_credential("limited", "other-client", json!({})).await;
    env.wait_condition("limited", "Reconciling", "True", "RateLimited", Duration::from_secs(30)).await;
    let operator = env.operator.as_ref().unwrap();
    // Gauges are computed at scrape time from the watch cache, which may lag the status.
    let scraped = wait_for("the credentials' gauges", Duration::from_secs(30), || async {
        let text = operator.metrics().await;
        let gauge = |name: &str, credential: &str| {
            support::metrics::sum(&text, name, |s| {
                s.label("namespace") == Some(env.ns.as_str()) && s.label("name") == Some(credential)
            })
        };
        let ready = gauge("groupdocs_token_operator_credential_ready", "viewer") == 1.0;
        let limited = gauge("groupdocs_token_operator_rate_limited_until_timestamp_seconds", "limited") > 0.0;
        (ready && limited).then_some(text)
    })
    .await;
    let exported = exported_names(&scraped);
    let unknown = unknown_names(&used, &exported);
    assert!(unknown.is_empty(), "names no running operator exports: {unknown:?}\nexported: {exported:?}");
    env.cleanup().await;
}

/// The names of the samples an exposition holds or declares: every sample line's name, and
/// for each `# TYPE` the names its samples take (a family with no series yet, such as the
/// rate limit gauge while nothing is rate limited, still declares them).
fn exported_names(text: &str) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = support::metrics::samples(text).map(|s| s.name.to_string()).collect();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if let (Some("#"), Some("TYPE"), Some(name), Some(kind)) =
            (words.next(), words.next(), words.next(), words.next())
        {
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                "summary" => &["", "_sum", "_count"],
                "info" => &["_info"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        }
    }
    names
}

/// Names in `used` that are neither exported nor one of [`SCRAPE_METRICS`].
fn unknown_names(used: &BTreeSet<String>, exported: &BTreeSet<String>) -> Vec<String> {
    used.iter().filter(|n| !exported.contains(*n) && !SCRAPE_METRICS.contains(&n.as_str())).cloned().collect()
}

/// The metric names a PromQL expression selects, by a tokenizer rather than a parser (promtool
/// prints no selectors): label matchers, ranges, strings, numbers and durations, Grafana
/// variables, function and aggregation names, keywords and the label lists of `by`, `without`,
/// `on`, `ignoring`, `group_left` and `group_right` are skipped; every other identifier is a
/// metric name.
mod promql {
    use std::collections::BTreeSet;

    const AGGREGATIONS: &[&str] = &[
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    ];
    /// Keywords followed by a parenthesised list of label names.
    const LABEL_LIST_KEYWORDS: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];
    const KEYWORDS: &[&str] = &["and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"];

    pub fn metric_names(expr: &str) -> Result<BTreeSet<String>, String> {
        let chars: Vec<char> = expr.chars().collect();
        let mut names = BTreeSet::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            i = match c {
                '"' | '\'' | '`' => skip_string(&chars, i)?,
                '{' => {
                    let end = skip_group(&chars, i, '{', '}')?;
                    let matchers: String = chars[i..end].iter().collect();
                    if matchers.contains("__name__") {
                        return Err("a __name__ matcher hides the metric name from this check".into());
                    }
                    end
                }
                '[' => skip_group(&chars, i, '[', ']')?,
                '#' => chars[i..].iter().position(|&c| c == '\n').map_or(chars.len(), |p| i + p),
                '$' => skip_while(&chars, i + 1, |c| c.is_ascii_alphanumeric() || "_{}:".contains(c)),
                c if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) => {
                    skip_while(&chars, i, |c| c.is_ascii_alphanumeric() || c == '.' || c == '_')
                }
                c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                    let end = skip_while(&chars, i, |c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
                    let word: String = chars[i..end].iter().collect();
                    identifier(&chars, end, &word, &mut names)?
                }
                _ => i + 1,
            };
        }
        Ok(names)
    }

    /// Records `word` (ending at `end`) when it is a metric name; returns where to go on.
    fn identifier(chars: &[char], end: usize, word: &str, names: &mut BTreeSet<String>) -> Result<usize, String> {
        let next = skip_while(chars, end, char::is_whitespace);
        let next_char = chars.get(next).copied();
        if LABEL_LIST_KEYWORDS.contains(&word) {
            return if next_char == Some('(') { skip_group(chars, next, '(', ')') } else { Ok(end) };
        }
        let next_word: String = chars[next..].iter().take_while(|c| c.is_ascii_alphanumeric() || **c == '_').collect();
        let is_function = next_char == Some('(');
        let is_aggregation = AGGREGATIONS.contains(&word) && (next_word == "by" || next_word == "without");
        if !(is_function || is_aggregation || KEYWORDS.contains(&word.to_ascii_lowercase().as_str())) {
            names.insert(word.to_string());
        }
        Ok(end)
    }

    fn skip_while(chars: &[char], from: usize, keep: impl Fn(char) -> bool) -> usize {
        chars[from.min(chars.len())..].iter().position(|&c| !keep(c)).map_or(chars.len(), |p| from + p)
    }

    /// The index after the string literal that starts at `start`.
    fn skip_string(chars: &[char], start: usize) -> Result<usize, String> {
        let quote = chars[start];
        let mut i = start + 1;
        while i < chars.len() {
            match chars[i] {
                '\\' if quote != '`' => i += 2,
                c if c == quote => return Ok(i + 1),
                _ => i += 1,
            }
        }
        Err("an unterminated string".into())
    }

    /// The index after the `close` that matches the `open` at `start`, strings skipped.
    fn skip_group(chars: &[char], start: usize, open: char, close: char) -> Result<usize, String> {
        let mut depth = 0;
        let mut i = start;
        while i < chars.len() {
            match chars[i] {
                '"' | '\'' | '`' => {
                    i = skip_string(chars, i)?;
                    continue;
                }
                c if c == open => depth += 1,
                c if c == close => {
                    depth -= 1;
                    if depth == 0 {
                        return Ok(i + 1);
                    }
                }
                _ => {}
            }
            i += 1;
        }
        Err(format!("an unclosed {open}"))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn names(expr: &str) -> Vec<String> {
            metric_names(expr).unwrap().into_iter().collect()
        }

        #[test]
        fn finds_metrics_and_skips_everything_else() {
            let expr = r#"label_replace(
                sum by (job, le) (rate(a_bucket{job=~"x|y", result!="b_total"}[$__rate_interval] offset 5m))
                  / on (job) group_left (version) b_info  # c_comment
                or max(c:recorded) without (pod) > bool 1.5e3
                or absent(up{job="j"}) unless count_values("value", d) and sum without (x) (e)
              , "namespace", "$1", "exported_namespace", "(.+)")"#;
            assert_eq!(names(expr), ["a_bucket", "b_info", "c:recorded", "d", "e", "up"]);
            assert_eq!(names("histogram_quantile(0.99, sum(rate(h_bucket[5m])) by (le))"), ["h_bucket"]);
            assert_eq!(names("x - time() < 900 and x - time() >= 0"), ["x"]);
        }

        #[test]
        fn an_unknown_name_is_reported() {
            let used = metric_names(
                "groupdocs_token_operator_credential_ready == 0 or groupdocs_token_operator_not_a_metric > 1",
            )
            .unwrap();
            let exported = super::super::exported_names(
                "# TYPE groupdocs_token_operator_credential_ready gauge\n\
                 # TYPE groupdocs_token_operator_not_a_metric_total counter\n",
            );
            assert_eq!(super::super::unknown_names(&used, &exported), ["groupdocs_token_operator_not_a_metric"]);
        }

        #[test]
        fn exposition_names_follow_openmetrics_suffixes() {
            let exported = super::super::exported_names(
                "# TYPE r counter\n# TYPE h histogram\n# TYPE b info\n# TYPE g gauge\ng{a=\"1\"} 2\n",
            );
            let want = ["b_info", "g", "h_bucket", "h_count", "h_sum", "r_total"];
            assert_eq!(exported.into_iter().collect::<Vec<_>>(), want);
        }

        #[test]
        fn refuses_what_it_cannot_read() {
            assert!(metric_names(r#"{__name__="x"}"#).is_err());
            assert!(metric_names(r#"x{a="b}"#).is_err());
        }
    }
}
