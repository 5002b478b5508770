//! Agent tokens: EdDSA-signed JWTs that name an agent and a token id, nothing more.
//!
//! Trust, tags and status are never read from the token: the gateway reads them from the store
//! (through its auth cache, which every change clears), so a revocation or a trust change applies
//! to the very next request. Validation
//! pins the algorithm to EdDSA, which rules out `alg: none` and the HS256-with-the-public-key
//! confusion.
//!
//! A verified token is remembered by its exact text, so an agent's next request costs a map
//! lookup instead of an Ed25519 verification (about a fifth of the gateway's CPU under load
//! otherwise). That is exact, not a trade-off: the signature is a function of those bytes and of a
//! key that is fixed for the life of the process; expiry is checked again on every use, and
//! revocation never relied on verification (the token id is checked against the store's state on
//! every request).

use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use quick_cache::sync::Cache;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The `iss` claim of every token this gateway issues and accepts.
pub const ISSUER: &str = "meshguard";

/// The claims of an agent token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentClaims {
    /// Always [`ISSUER`].
    pub iss: String,
    /// The agent id.
    pub sub: String,
    /// The agent name when the token was issued (informational only).
    pub name: String,
    /// The token id, checked against the store on every request.
    pub jti: String,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Expiry, Unix seconds; absent means the token lives until revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
}

/// Why a token was refused. Every variant answers 401; the variants exist for logs and metrics.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token is expired.
    #[error("token expired")]
    Expired,
    /// Malformed, wrongly signed, wrong algorithm or wrong issuer.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// Signing failed (a broken key).
    #[error("cannot sign token: {0}")]
    Signing(String),
}

/// Verified tokens remembered at most; beyond that the least useful are evicted (a busy gateway
/// serves far fewer distinct live tokens than this).
pub const VERIFIED_TOKENS: usize = 16_384;

/// Seconds of clock skew forgiven on `exp`, as at verification.
const LEEWAY_SECONDS: i64 = 5;

/// The gateway's signing and verification keys.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    /// Tokens whose signature verified, by their exact text; shared by clones.
    verified: Arc<Cache<String, Arc<AgentClaims>>>,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKeys { .. }")
    }
}

impl TokenKeys {
    /// Builds the keys from a PKCS#8 private key PEM and an SPKI public key PEM.
    pub fn from_pem(private_pem: &[u8], public_pem: &[u8]) -> Result<TokenKeys, TokenError> {
        let encoding = EncodingKey::from_ed_pem(private_pem)
            .map_err(|e| TokenError::Signing(e.to_string()))?;
        let decoding =
            DecodingKey::from_ed_pem(public_pem).map_err(|e| TokenError::Signing(e.to_string()))?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["iss", "sub"]);
        validation.validate_exp = true;
        // Clocks of one gateway agree with themselves: a few seconds absorb rounding only.
        validation.leeway = LEEWAY_SECONDS.unsigned_abs();
        Ok(TokenKeys {
            encoding,
            decoding,
            validation,
            verified: Arc::new(Cache::new(VERIFIED_TOKENS)),
        })
    }

    /// Signs `claims` with EdDSA.
    pub fn sign(&self, claims: &AgentClaims) -> Result<String, TokenError> {
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), claims, &self.encoding)
            .map_err(|e| TokenError::Signing(e.to_string()))
    }

    /// Verifies signature, algorithm, issuer and expiry; the store checks the rest. A token
    /// verified before is only checked for expiry again. Shared, so that a request served from
    /// memory copies nothing.
    pub fn verify(&self, token: &str) -> Result<Arc<AgentClaims>, TokenError> {
        if let Some(claims) = self.verified.get(token) {
            let now = OffsetDateTime::now_utc().unix_timestamp();
            if claims
                .exp
                .is_some_and(|exp| exp.saturating_add(LEEWAY_SECONDS) < now)
            {
                self.verified.remove(token);
                return Err(TokenError::Expired);
            }
            return Ok(claims);
        }
        let claims = jsonwebtoken::decode::<AgentClaims>(token, &self.decoding, &self.validation)
            .map(|data| Arc::new(data.claims))
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid(e.to_string()),
            })?;
        self.verified.insert(token.to_owned(), Arc::clone(&claims));
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;
    use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
    use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};

    use super::*;

    fn new_keys() -> TokenKeys {
        let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
        let private = key.to_pkcs8_pem(LineEnding::LF).unwrap();
        let public = key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        TokenKeys::from_pem(private.as_bytes(), public.as_bytes()).unwrap()
    }

    fn claims(exp: Option<i64>) -> AgentClaims {
        AgentClaims {
            iss: ISSUER.into(),
            sub: "agent_1".into(),
            name: "dev".into(),
            jti: "tok_1".into(),
            iat: 0,
            exp,
        }
    }

    #[test]
    fn a_remembered_token_that_has_since_expired_is_refused() {
        let keys = new_keys();
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let token = keys.sign(&claims(Some(now - 60))).unwrap();
        assert!(matches!(keys.verify(&token), Err(TokenError::Expired)));
        // As if it had been verified while it was still valid.
        keys.verified
            .insert(token.clone(), Arc::new(claims(Some(now - 60))));
        assert!(matches!(keys.verify(&token), Err(TokenError::Expired)));
        assert!(keys.verified.get(&token).is_none(), "dropped once expired");
    }

    #[test]
    fn a_remembered_token_does_not_vouch_for_an_altered_copy() {
        let keys = new_keys();
        let token = keys.sign(&claims(None)).unwrap();
        assert_eq!(*keys.verify(&token).unwrap(), claims(None));
        assert_eq!(*keys.verify(&token).unwrap(), claims(None), "served again");
        // Same header and claims, another signature.
        let (unsigned, _) = token.rsplit_once('.').unwrap();
        let forged = format!("{unsigned}.{}", "A".repeat(86));
        assert!(matches!(keys.verify(&forged), Err(TokenError::Invalid(_))));
        // Another gateway's key signs the same claims: not this gateway's token.
        let other = new_keys().sign(&claims(None)).unwrap();
        assert!(matches!(keys.verify(&other), Err(TokenError::Invalid(_))));
    }
}
