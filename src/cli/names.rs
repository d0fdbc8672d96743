//! Syntax checks of the names and label selectors that flags carry, so that a typo ends
//! start-up with a message naming the flag instead of failing every watch request later.

// The same predicates the CRD's rules and the operator's spec checks use.
pub use crate::crd::rules::{is_dns_label, is_dns_subdomain};

/// The name part of a label key, or a non-empty label value.
fn is_label_name(s: &str) -> bool {
    !s.is_empty() && crate::crd::rules::is_label_value(s)
}

/// A label key: `name` or `prefix/name`, the prefix a DNS subdomain.
fn check_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix
        && !is_dns_subdomain(prefix)
    {
        return Err(format!("label key {key:?}: the prefix {prefix:?} is not a DNS subdomain"));
    }
    if !is_label_name(name) {
        return Err(format!(
            "label key {key:?}: the name must be 1 to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// A label value: empty, or like a key's name.
fn check_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_label_name(value) {
        Ok(())
    } else {
        Err(format!(
            "label value {value:?}: at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ))
    }
}

/// Checks a Kubernetes label selector and returns it trimmed. Accepted, comma-separated:
/// `key=value`, `key==value`, `key!=value`, `key in (v1,v2)`, `key notin (v1)`, `key` (the
/// label exists) and `!key` (it does not). Every message says what was wrong with which part.
/// Blank is accepted and returned empty: it selects everything, as an unset variable would.
pub fn parse_label_selector(selector: &str) -> Result<String, String> {
    let trimmed = selector.trim();
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    for requirement in split_requirements(trimmed)? {
        check_requirement(requirement.trim()).map_err(|e| {
            format!(
                "{e} (in {:?}; forms: key=value, key!=value, key in (a,b), key notin (a), key, !key)",
                requirement.trim()
            )
        })?;
    }
    Ok(trimmed.to_string())
}

/// The requirements of a selector: split on the commas outside parentheses.
fn split_requirements(selector: &str) -> Result<Vec<&str>, String> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0u32, 0);
    for (i, c) in selector.char_indices() {
        match c {
            '(' if depth > 0 => return Err(format!("nested '(' in {selector:?}")),
            '(' => depth = 1,
            ')' if depth == 0 => return Err(format!("')' without '(' in {selector:?}")),
            ')' => depth = 0,
            ',' if depth == 0 => {
                parts.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth > 0 {
        return Err(format!("'(' without ')' in {selector:?}"));
    }
    parts.push(&selector[start..]);
    Ok(parts)
}

/// One requirement, already trimmed.
fn check_requirement(requirement: &str) -> Result<(), String> {
    if requirement.is_empty() {
        return Err("an empty requirement (a stray comma?)".to_string());
    }
    if let Some(key) = requirement.strip_prefix('!') {
        return check_key(key.trim());
    }
    let key_end = requirement
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')))
        .unwrap_or(requirement.len());
    let (key, rest) = requirement.split_at(key_end);
    check_key(key)?;
    let rest = rest.trim_start();
    if rest.is_empty() {
        return Ok(());
    }
    for op in ["!=", "==", "="] {
        if let Some(value) = rest.strip_prefix(op) {
            return check_value(value.trim());
        }
    }
    // `in` and `notin` are words: the key ended at white space, and a list follows.
    let list = rest.strip_prefix("notin").or_else(|| rest.strip_prefix("in"));
    match list.map(str::trim_start) {
        Some(list) if list.starts_with('(') => check_value_list(list),
        _ => Err(format!("unknown operator after {key:?}; expected =, ==, !=, in or notin")),
    }
}

/// `(v1, v2)`: the list closes the requirement and holds at least one value.
fn check_value_list(list: &str) -> Result<(), String> {
    let inner = list
        .strip_prefix('(')
        .and_then(|l| l.strip_suffix(')'))
        .ok_or_else(|| format!("{list:?}: nothing may follow the closing ')'"))?;
    if inner.trim().is_empty() {
        return Err("an empty value list; in and notin need at least one value".to_string());
    }
    inner.split(',').try_for_each(|value| check_value(value.trim()))
}
