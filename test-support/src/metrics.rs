//! Prometheus text exposition (the operator's `/metrics`, the API server's): samples with
//! their labels, and sums over them.
//!
//! A small parser of its own: the crates for this either split labels on `,` and `=` and
//! read OpenMetrics counters as untyped (`prometheus-parse`, last released in 2023, with
//! `regex` and `chrono` behind it), are LGPL-3.0 (`openmetrics-parser`), or have had a single
//! release. What the tests need is sample lines, which this reads fully (escaped label
//! values, `NaN`, `+Inf`, timestamps).

/// One sample line: `name{label="value",...} value [timestamp]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample<'a> {
    pub name: &'a str,
    pub labels: Vec<(&'a str, String)>,
    pub value: f64,
}

impl Sample<'_> {
    /// The value of label `key`, if the sample has it.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| *k == key).map(|(_, v)| v.as_str())
    }
}

/// Every sample of `text`; comments (`# HELP`, `# TYPE`, `# EOF`), blank and malformed lines
/// are skipped.
pub fn samples(text: &str) -> impl Iterator<Item = Sample<'_>> {
    text.lines().filter_map(sample)
}

/// The sum of the samples named `name` that `include` accepts; 0 when there are none.
pub fn sum(text: &str, name: &str, include: impl Fn(&Sample) -> bool) -> f64 {
    // A fold from +0.0: an empty float sum is -0.0.
    samples(text).filter(|s| s.name == name && include(s)).fold(0.0, |sum, s| sum + s.value)
}

/// One line as a sample, or `None` for a comment, a blank or a malformed line.
fn sample(line: &str) -> Option<Sample<'_>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')).unwrap_or(line.len());
    let (name, mut rest) = line.split_at(name_end);
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        rest = inner;
        loop {
            rest = rest.trim_start();
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after) = rest.split_once('=')?;
            let (value, after) = quoted(after.trim_start())?;
            labels.push((key.trim(), value));
            rest = after.trim_start();
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
    }
    let value = rest.split_whitespace().next()?.parse::<f64>().ok()?;
    Some(Sample { name, labels, value })
}

/// A label value in double quotes, unescaped, and what follows it.
fn quoted(s: &str) -> Option<(String, &str)> {
    let mut chars = s.strip_prefix('"')?.char_indices();
    let mut value = String::new();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, &s[i + 2..])),
            '\\' => match chars.next()?.1 {
                'n' => value.push('\n'),
                other => value.push(other),
            },
            c => value.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPERATOR: &str = "# HELP groupdocs_token_operator_reconciles Reconciles by outcome.
# TYPE groupdocs_token_operator_reconciles counter
groupdocs_token_operator_reconciles_total{result=\"Ok\"} 7
groupdocs_token_operator_reconciles_total{result=\"RateLimited\"} 2
groupdocs_token_operator_reconciles_total{result=\"KubernetesApiError\"} 1.0e0
groupdocs_token_operator_reconcile_panics_total 3
groupdocs_token_operator_token_expiry_seconds{namespace=\"a\",name=\"b\"} 1.7e9
# EOF
";

    #[test]
    fn sums_a_counter_by_label() {
        let result = |s: &Sample| s.label("result").unwrap_or_default().to_string();
        let total = "groupdocs_token_operator_reconciles_total";
        assert_eq!(sum(OPERATOR, total, |_| true), 10.0);
        assert_eq!(sum(OPERATOR, total, |s| result(s) == "Ok"), 7.0);
        assert_eq!(sum(OPERATOR, total, |s| result(s) != "Ok"), 3.0);
        assert_eq!(sum(OPERATOR, "groupdocs_token_operator_reconcile_panics_total", |_| true), 3.0);
        // A name is matched whole, never as a prefix.
        assert_eq!(sum(OPERATOR, "groupdocs_token_operator_reconciles", |_| true), 0.0);
        assert!(sum("", total, |_| true).is_sign_positive(), "0, not -0");
    }

    #[test]
    fn reads_labels_with_escapes_commas_and_timestamps() {
        let s = sample(r#"apiserver_request_total{verb="GET",resource="secrets",subresource="",x="a,b=\"c\"\\d\n"} 12 1700000000000"#)
            .unwrap();
        assert_eq!(s.name, "apiserver_request_total");
        assert_eq!(s.label("verb"), Some("GET"));
        assert_eq!(s.label("subresource"), Some(""));
        assert_eq!(s.label("x"), Some("a,b=\"c\"\\d\n"));
        assert_eq!(s.label("missing"), None);
        assert_eq!(s.value, 12.0);
        let trailing = sample(r#"m{a="1",} 2"#).unwrap();
        assert_eq!((trailing.label("a"), trailing.value), (Some("1"), 2.0));
        assert_eq!(sample("m{} +Inf").unwrap().value, f64::INFINITY);
        assert!(sample("m NaN").unwrap().value.is_nan());
    }

    #[test]
    fn skips_comments_blanks_and_garbage() {
        for line in
            ["# TYPE m counter", "", "   ", "m", "m{a=\"1\" 2", "m{a=1} 2", "m notanumber", "9m 1", "{a=\"1\"} 1"]
        {
            assert_eq!(sample(line), None, "{line:?}");
        }
        assert_eq!(samples(OPERATOR).count(), 5);
    }
}
