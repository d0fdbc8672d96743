//! The access tokens: HS256 JWTs with the claims GroupDocs tokens carry (`nbf`, `exp`, `iss`,
//! `aud`, `client_id`, `scope`, `jti`), signed and verified with the `jsonwebtoken` crate under
//! a random key that lives as long as the server.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The issuer GroupDocs tokens name.
pub const ISSUER: &str = "https://api.groupdocs.cloud";
/// The audiences GroupDocs tokens name; the first is the API's.
pub const AUDIENCE: [&str; 2] = ["https://api.groupdocs.cloud/resources", "api.storage"];
/// The scope of a token requested without one.
pub const DEFAULT_SCOPE: &str = "api.storage";

/// A token's payload, in the order GroupDocs' own tokens list it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub nbf: i64,
    pub exp: i64,
    pub iss: String,
    pub aud: Vec<String>,
    pub client_id: String,
    pub scope: Vec<String>,
    pub jti: String,
}

impl Claims {
    /// The claims of a token for `client_id` issued now that lives `lifetime` seconds (which
    /// may be zero or negative, for tests of expired tokens). `scope` is space-separated.
    pub fn new(client_id: &str, scope: Option<&str>, lifetime: i64) -> Claims {
        let now = now();
        Claims {
            nbf: now,
            exp: now + lifetime,
            iss: ISSUER.to_string(),
            aud: AUDIENCE.map(str::to_owned).to_vec(),
            client_id: client_id.to_string(),
            scope: scope.map_or_else(|| vec![DEFAULT_SCOPE.to_string()], |s| s.split(' ').map(str::to_owned).collect()),
            jti: hex::encode(rand::random::<[u8; 8]>()),
        }
    }
}

/// The server's signing key, for both directions.
pub struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl Keys {
    /// Keys from `secret`, which must not be empty.
    pub fn new(secret: &[u8]) -> jsonwebtoken::errors::Result<Keys> {
        let mut validation = Validation::new(Algorithm::HS256);
        // A token is valid while `exp > now`, to the second, as GroupDocs' tokens: no leeway,
        // and "expiring in less than 1 s" (that is `exp <= now`) is refused.
        validation.leeway = 0;
        validation.reject_tokens_expiring_in_less_than = 1;
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE[0]]);
        Ok(Keys {
            encoding: EncodingKey::from_secret(secret)?,
            decoding: DecodingKey::from_secret(secret)?,
            validation,
        })
    }

    /// `header.payload.signature`, with the header `{"typ":"JWT","alg":"HS256"}`.
    pub fn sign(&self, claims: &Claims) -> jsonwebtoken::errors::Result<String> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
    }

    /// The claims of `token` when it is a valid, unexpired token signed with these keys.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).ok().map(|data| data.claims)
    }
}

/// Seconds since the Unix epoch, by the clock the validation uses.
fn now() -> i64 {
    i64::try_from(jsonwebtoken::get_current_timestamp()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use serde_json::Value;

    use super::*;

    impl Keys {
        fn random() -> Keys {
            Keys::new(&rand::random::<[u8; 32]>()).unwrap()
        }
    }

    fn decode_part(token: &str, index: usize) -> Value {
        let part = token.split('.').nth(index).unwrap();
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    #[test]
    fn tokens_have_the_groupdocs_shape() {
        let keys = Keys::random();
        let token = keys.sign(&Claims::new("client-a", None, 86400)).unwrap();
        assert_eq!(token.split('.').count(), 3);
        assert_eq!(decode_part(&token, 0), serde_json::json!({"alg": "HS256", "typ": "JWT"}));
        let payload = decode_part(&token, 1);
        let keys_of_payload: Vec<&str> = payload.as_object().unwrap().keys().map(String::as_str).collect();
        let mut expected = vec!["nbf", "exp", "iss", "aud", "client_id", "scope", "jti"];
        expected.sort_unstable();
        assert_eq!(keys_of_payload, expected, "serde_json sorts keys");
        assert_eq!(payload["exp"].as_i64().unwrap() - payload["nbf"].as_i64().unwrap(), 86400);
        assert_eq!(payload["iss"], "https://api.groupdocs.cloud");
        assert_eq!(payload["aud"], serde_json::json!(["https://api.groupdocs.cloud/resources", "api.storage"]));
        assert_eq!(payload["client_id"], "client-a");
        assert_eq!(payload["scope"], serde_json::json!(["api.storage"]));
        assert_eq!(payload["jti"].as_str().unwrap().len(), 16);
    }

    #[test]
    fn the_scope_is_split_on_spaces() {
        let claims = Claims::new("c", Some("api.storage api.billing"), 1);
        assert_eq!(claims.scope, ["api.storage", "api.billing"]);
    }

    #[test]
    fn verify_accepts_its_own_unexpired_tokens_only() {
        let keys = Keys::random();
        let claims = Claims::new("client-a", Some("api.storage"), 3600);
        let token = keys.sign(&claims).unwrap();
        assert_eq!(keys.verify(&token), Some(claims.clone()));
        // Another key, a changed signature, a changed payload.
        assert_eq!(Keys::random().verify(&token), None);
        let tampered = format!("{}x", &token[..token.len() - 1]);
        assert_eq!(keys.verify(&tampered), None);
        let forged = Claims { client_id: "client-b".into(), ..claims.clone() };
        let forged_payload = keys.sign(&forged).unwrap();
        let (header_and_payload, _) = forged_payload.rsplit_once('.').unwrap();
        let (_, signature) = token.rsplit_once('.').unwrap();
        assert_eq!(keys.verify(&format!("{header_and_payload}.{signature}")), None);
        assert_eq!(keys.verify("not a token"), None);
    }

    #[test]
    fn a_token_is_valid_while_exp_is_after_now() {
        let keys = Keys::random();
        let at = |exp_from_now: i64| {
            let mut claims = Claims::new("c", None, 0);
            claims.exp += exp_from_now;
            keys.verify(&keys.sign(&claims).unwrap())
        };
        assert!(at(2).is_some());
        // A second may tick between signing and verifying, so only the strict sides are certain.
        assert!(at(0).is_none(), "exp == now is expired");
        assert!(at(-1).is_none());
        assert!(at(-1000).is_none());
    }

    #[test]
    fn tokens_of_another_issuer_or_audience_are_refused() {
        let keys = Keys::random();
        let claims = Claims::new("c", None, 3600);
        let other_issuer = Claims { iss: "https://elsewhere".into(), ..claims.clone() };
        assert_eq!(keys.verify(&keys.sign(&other_issuer).unwrap()), None);
        let other_audience = Claims { aud: vec!["api.storage".into()], ..claims };
        assert_eq!(keys.verify(&keys.sign(&other_audience).unwrap()), None);
    }

    #[test]
    fn an_empty_secret_is_refused() {
        assert!(Keys::new(b"").is_err());
    }
}
