//! What the target Secret's data holds for a token: the keys of a format preset
//! (`spec.target.format`) plus the keys rendered from tenant templates (`spec.target.template`),
//! and how a token is read back from them. Plain functions over plain data; the Secret's
//! metadata and ownership are [`crate::target`]'s.
//!
//! Templates are MiniJinja, sandboxed by construction: no loader (so no `include`, `import` or
//! `extends`, no file access), no environment access, strict undefined variables (a typo is an
//! error, not an empty string) and a fuel budget per template that bounds both the work and the
//! memory a template can make the operator spend.

use std::collections::BTreeMap;
use std::fmt;

use jiff::Timestamp;
use k8s_openapi::ByteString;
use minijinja::syntax::SyntaxConfig;
use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value, context};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::crd::TargetSecret;
use crate::error::Error;
use crate::redact::Sensitive;
use crate::token::Token;

pub const ACCESS_TOKEN_KEY: &str = "access_token";
pub const TOKEN_TYPE_KEY: &str = "token_type";
pub const EXPIRES_AT_KEY: &str = "expires_at";
pub const AUTHORIZATION_KEY: &str = "authorization";
/// The one key of the `env` format.
pub const ENV_KEY: &str = "groupdocs.env";
/// The one key of the `json` format.
pub const JSON_KEY: &str = "token.json";

const ENV_ACCESS_TOKEN: &str = "GROUPDOCS_ACCESS_TOKEN";
const ENV_TOKEN_TYPE: &str = "GROUPDOCS_TOKEN_TYPE";
const ENV_EXPIRES_AT: &str = "GROUPDOCS_EXPIRES_AT";

/// Most templates per credential (the CRD's `maxProperties`).
pub const MAX_TEMPLATES: usize = 16;
/// Longest template, in characters (the CRD's `maxLength`).
pub const MAX_TEMPLATE_LEN: usize = 8 * 1024;
/// Longest rendered value, in bytes: sixteen of them stay well inside a Secret's 1 MiB.
pub const MAX_RENDERED_LEN: usize = 32 * 1024;
/// Work and memory one template may cost: an instruction is one fuel, and every 64 bytes a
/// template produces (output, concatenations, filter results) another. A template that puts
/// the token into a config file spends well under a hundred.
pub const TEMPLATE_FUEL: u64 = 20_000;
const TEMPLATE_RECURSION_LIMIT: usize = 32;

/// How the token is laid out in the target Secret.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TokenFormat {
    /// Keys `access_token`, `token_type`, `expires_at` (RFC 3339) and `authorization`
    /// (`Bearer <token>`).
    #[default]
    Default,
    /// One key `groupdocs.env`: `GROUPDOCS_ACCESS_TOKEN=...`, `GROUPDOCS_TOKEN_TYPE=...` and
    /// `GROUPDOCS_EXPIRES_AT=...`, one per line.
    Env,
    /// One key `token.json`: `{"access_token", "token_type", "expires_at", "expires_in"}`.
    Json,
}

impl TokenFormat {
    pub const ALL: [TokenFormat; 3] = [TokenFormat::Default, TokenFormat::Env, TokenFormat::Json];

    pub fn is_default(&self) -> bool {
        *self == TokenFormat::Default
    }

    /// The name used in the spec and in the Secret's format annotation.
    pub fn name(self) -> &'static str {
        match self {
            TokenFormat::Default => "default",
            TokenFormat::Env => "env",
            TokenFormat::Json => "json",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The Secret keys the format writes.
    pub fn keys(self) -> &'static [&'static str] {
        match self {
            TokenFormat::Default => &[ACCESS_TOKEN_KEY, TOKEN_TYPE_KEY, EXPIRES_AT_KEY, AUTHORIZATION_KEY],
            TokenFormat::Env => &[ENV_KEY],
            TokenFormat::Json => &[JSON_KEY],
        }
    }
}

/// The token as the formats and templates see it.
struct Fields {
    access_token: String,
    token_type: String,
    /// RFC 3339.
    expires_at: String,
    /// The token's lifetime in seconds (`expires_at - issued_at`), as the endpoint's own
    /// `expires_in` means it: a fixed number, so the Secret does not change as time passes.
    expires_in: i64,
    authorization: String,
}

impl Fields {
    fn of(token: &Token) -> Self {
        Fields {
            access_token: token.access_token.expose().to_string(),
            token_type: token.token_type.clone(),
            expires_at: token.expires_at.to_string(),
            expires_in: token.lifetime().as_secs(),
            authorization: token.authorization().expose().to_string(),
        }
    }

    /// Stand-ins shaped like a real answer, for checking templates before any token exists.
    fn dummy() -> Self {
        let issued_at = Timestamp::UNIX_EPOCH;
        let token = Token {
            // A JWT is about a kilobyte; twice that leaves room for a bigger real one.
            access_token: Sensitive::new(format!("eyJhbGciOiJSUzI1NiJ9.{}.c2lnbmF0dXJl", "x".repeat(2000))),
            token_type: "Bearer".to_string(),
            issued_at,
            expires_at: issued_at + jiff::SignedDuration::from_hours(24),
        };
        Fields::of(&token)
    }

    fn context(&self) -> Value {
        context! {
            access_token => self.access_token.as_str(),
            token_type => self.token_type.as_str(),
            expires_at => self.expires_at.as_str(),
            expires_in => self.expires_in,
            authorization => self.authorization.as_str(),
        }
    }
}

/// What the Secret's data holds for one token.
#[derive(Clone, PartialEq)]
pub struct Rendered {
    pub data: BTreeMap<String, ByteString>,
    /// For the templates annotation: the templates' digest and the digest of what they
    /// rendered, so a cache that holds neither can tell a hand edit (see [`is_exact`]).
    pub templates_digest: Option<String>,
}

/// Keys only: the values hold the token.
impl fmt::Debug for Rendered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rendered")
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .field("templates_digest", &self.templates_digest)
            .finish()
    }
}

/// The data for `token` as `spec` asks: the format's keys and the templates' keys. A template
/// that fails here passed [`check`] with stand-in values, so its failure depends on the real
/// token (its length, say); the message never contains the token.
pub fn render(spec: &TargetSecret, token: &Token) -> Result<Rendered, Error> {
    let fields = Fields::of(token);
    let mut data = preset(spec.format, &fields);
    let templates_digest = if spec.template.is_empty() {
        None
    } else {
        let outputs = Templates::compile(spec)?.render(&fields).map_err(|e| scrub(e, token))?;
        let digest = templates_digest(&spec.template, &outputs);
        data.extend(outputs.into_iter().map(|(k, v)| (k, ByteString(v.into_bytes()))));
        Some(digest)
    };
    Ok(Rendered { data, templates_digest })
}

fn scrub(error: Error, token: &Token) -> Error {
    match error {
        Error::InvalidSpec(msg) => Error::InvalidSpec(token.access_token.scrub(&token.authorization().scrub(&msg))),
        other => other,
    }
}

/// Checks the format and templates of `spec` before any token is requested: key names, sizes,
/// syntax, and a render with stand-in values (so an undefined variable fails here).
pub fn check(spec: &TargetSecret) -> Result<(), Error> {
    if spec.template.is_empty() {
        return Ok(());
    }
    Templates::compile(spec)?.render(&Fields::dummy()).map(drop)
}

fn preset(format: TokenFormat, f: &Fields) -> BTreeMap<String, ByteString> {
    let text = |s: &str| ByteString(s.as_bytes().to_vec());
    match format {
        TokenFormat::Default => BTreeMap::from([
            (ACCESS_TOKEN_KEY.to_string(), text(&f.access_token)),
            (TOKEN_TYPE_KEY.to_string(), text(&f.token_type)),
            (EXPIRES_AT_KEY.to_string(), text(&f.expires_at)),
            (AUTHORIZATION_KEY.to_string(), text(&f.authorization)),
        ]),
        TokenFormat::Env => BTreeMap::from([(ENV_KEY.to_string(), text(&env_file(f)))]),
        TokenFormat::Json => BTreeMap::from([(JSON_KEY.to_string(), text(&json_file(f)))]),
    }
}

/// Unquoted `KEY=value` lines. None of the values needs quoting in any dotenv dialect: the
/// token is printable ASCII without spaces (the token client refuses anything else; a JWT is
/// base64url and dots), the type is `Bearer` and the time is RFC 3339.
fn env_file(f: &Fields) -> String {
    format!(
        "{ENV_ACCESS_TOKEN}={}\n{ENV_TOKEN_TYPE}={}\n{ENV_EXPIRES_AT}={}\n",
        f.access_token, f.token_type, f.expires_at
    )
}

#[derive(Serialize, Deserialize)]
struct JsonToken {
    access_token: String,
    #[serde(default)]
    token_type: Option<String>,
    expires_at: String,
    #[serde(default)]
    expires_in: Option<i64>,
}

fn json_file(f: &Fields) -> String {
    let doc = JsonToken {
        access_token: f.access_token.clone(),
        token_type: Some(f.token_type.clone()),
        expires_at: f.expires_at.clone(),
        expires_in: Some(f.expires_in),
    };
    // Serializing four plain fields cannot fail.
    serde_json::to_string(&doc).unwrap_or_default() + "\n"
}

/// A token as a Secret's data stores it, before the reader bounds it by its JWT `exp`.
pub struct Stored {
    pub access_token: Sensitive,
    pub token_type: Option<String>,
    pub expires_at: Timestamp,
}

/// The token stored in `data` in `format`, if complete and readable.
pub fn read(format: TokenFormat, data: &BTreeMap<String, ByteString>) -> Option<Stored> {
    let text = |key: &str| data.get(key).and_then(|b| std::str::from_utf8(&b.0).ok());
    let (access_token, token_type, expires_at) = match format {
        TokenFormat::Default => {
            (text(ACCESS_TOKEN_KEY)?.to_string(), text(TOKEN_TYPE_KEY).map(str::to_string), text(EXPIRES_AT_KEY)?)
        }
        TokenFormat::Env => {
            let vars = parse_env(text(ENV_KEY)?);
            let var = |name: &str| vars.iter().rev().find(|(k, _)| *k == name).map(|(_, v)| *v);
            let token_type = var(ENV_TOKEN_TYPE).map(str::to_string);
            (var(ENV_ACCESS_TOKEN)?.to_string(), token_type, var(ENV_EXPIRES_AT)?)
        }
        TokenFormat::Json => {
            let doc: JsonToken = serde_json::from_str(text(JSON_KEY)?).ok()?;
            let expires_at: Timestamp = doc.expires_at.parse().ok()?;
            return stored(doc.access_token, doc.token_type, expires_at);
        }
    };
    stored(access_token, token_type, expires_at.parse().ok()?)
}

fn stored(access_token: String, token_type: Option<String>, expires_at: Timestamp) -> Option<Stored> {
    (!access_token.is_empty()).then(|| Stored { access_token: Sensitive::new(access_token), token_type, expires_at })
}

/// `KEY=value` pairs of a dotenv text; blank lines and `#` comments skipped, values verbatim.
fn parse_env(text: &str) -> Vec<(&str, &str)> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.trim().trim_start_matches("export ").trim(), v.trim()))
        .collect()
}

/// The token stored in `data`, and the format it was found in: `annotated` first (the format
/// the operator recorded), then each format by its keys. A Secret whose annotation was edited
/// or stripped is still read, so a restarted operator reuses its token rather than request one.
pub fn read_any(annotated: Option<TokenFormat>, data: &BTreeMap<String, ByteString>) -> Option<(TokenFormat, Stored)> {
    annotated.into_iter().chain(TokenFormat::ALL).find_map(|format| read(format, data).map(|stored| (format, stored)))
}

/// True when `data` is exactly what [`render`] writes for `token` in `format`, with templates
/// whose annotation is `templates_annotation`: the format's keys are rendered again, the
/// other keys are compared with the output digest the annotation recorded (the templates
/// themselves are not at hand here).
pub fn is_exact(
    format: TokenFormat,
    token: &Token,
    data: &BTreeMap<String, ByteString>,
    templates_annotation: Option<&str>,
) -> bool {
    let preset = preset(format, &Fields::of(token));
    if !preset.iter().all(|(k, v)| data.get(k) == Some(v)) {
        return false;
    }
    let rest = data.iter().filter(|(k, _)| !preset.contains_key(*k)).map(|(k, v)| (k.as_str(), v.0.as_slice()));
    match templates_annotation.and_then(|a| a.split_once('.')) {
        None => rest.count() == 0 && templates_annotation.is_none(),
        Some((_, output)) => digest(rest) == output,
    }
}

/// The templates' part of the templates annotation: changes when any template changes.
pub fn templates_spec_digest(templates: &BTreeMap<String, String>) -> Option<String> {
    (!templates.is_empty()).then(|| digest(templates.iter().map(|(k, v)| (k.as_str(), v.as_bytes()))))
}

/// The templates part of a templates annotation.
pub fn spec_part(templates_annotation: &str) -> &str {
    templates_annotation.split_once('.').map_or(templates_annotation, |(spec, _)| spec)
}

fn templates_digest(templates: &BTreeMap<String, String>, outputs: &BTreeMap<String, String>) -> String {
    let spec = templates_spec_digest(templates).unwrap_or_default();
    let output = digest(outputs.iter().map(|(k, v)| (k.as_str(), v.as_bytes())));
    format!("{spec}.{output}")
}

/// 16 hex digits of SHA-256 over length-prefixed pairs: enough to notice an edit.
fn digest<'a>(pairs: impl Iterator<Item = (&'a str, &'a [u8])>) -> String {
    let mut hasher = Sha256::new();
    for (k, v) in pairs {
        for part in [k.as_bytes(), v] {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
    }
    hex::encode(&hasher.finalize()[..8])
}

/// The templates of a spec, compiled into a sandboxed environment.
struct Templates<'s> {
    env: Environment<'s>,
    keys: Vec<&'s str>,
}

impl<'s> Templates<'s> {
    fn compile(spec: &'s TargetSecret) -> Result<Self, Error> {
        let templates = &spec.template;
        if templates.len() > MAX_TEMPLATES {
            return Err(invalid_template(None, format!("at most {MAX_TEMPLATES} templates, not {}", templates.len())));
        }
        let mut env = sandbox().map_err(|e| invalid_template(None, e))?;
        for (key, text) in templates {
            check_key(key, spec.format)?;
            if text.chars().count() > MAX_TEMPLATE_LEN {
                return Err(invalid_template(Some(key), format!("longer than {MAX_TEMPLATE_LEN} characters")));
            }
            env.add_template(key, text).map_err(|e| invalid_template(Some(key), e))?;
        }
        Ok(Templates { env, keys: templates.keys().map(String::as_str).collect() })
    }

    fn render(&self, fields: &Fields) -> Result<BTreeMap<String, String>, Error> {
        let ctx = fields.context();
        self.keys
            .iter()
            .map(|&key| {
                let out = self
                    .env
                    .get_template(key)
                    .and_then(|t| t.render(&ctx))
                    .map_err(|e| invalid_template(Some(key), e))?;
                if out.len() > MAX_RENDERED_LEN {
                    return Err(invalid_template(Some(key), format!("renders more than {MAX_RENDERED_LEN} bytes")));
                }
                Ok((key.to_string(), out))
            })
            .collect()
    }
}

/// An environment with the builtin filters and tests, and nothing that reaches outside.
fn sandbox<'s>() -> Result<Environment<'s>, minijinja::Error> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    // Never guess an escaping from the key's extension (`.json` would quote every value):
    // the output is what the template says; `tojson` is there to quote.
    env.set_auto_escape_callback(|_| AutoEscape::None);
    // A config file's last newline is part of it (Jinja would drop it).
    env.set_syntax(SyntaxConfig::builder().keep_trailing_newline(true).build()?);
    env.set_fuel(Some(TEMPLATE_FUEL));
    env.set_recursion_limit(TEMPLATE_RECURSION_LIMIT);
    // Errors name the undefined variable in release builds too. Their plain `Display` (the
    // only form used) shows no variable's value.
    env.set_debug(true);
    Ok(env)
}

fn check_key(key: &str, format: TokenFormat) -> Result<(), Error> {
    if !crate::crd::rules::is_secret_key(key) || key == "." || key.starts_with("..") {
        return Err(invalid_template(
            Some(key),
            "not a Secret key: letters, digits, '-', '_' and '.', at most 253 characters, not '.' or starting with '..'",
        ));
    }
    if format.keys().contains(&key) {
        return Err(invalid_template(
            Some(key),
            format!("the {} format writes this key itself; choose another name", format.name()),
        ));
    }
    Ok(())
}

fn invalid_template(key: Option<&str>, message: impl fmt::Display) -> Error {
    match key {
        Some(key) => Error::InvalidSpec(format!("spec.target.template[{key:?}]: {message}")),
        None => Error::InvalidSpec(format!("spec.target.template: {message}")),
    }
}

#[cfg(test)]
mod tests;
