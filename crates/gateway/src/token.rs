//! Agent tokens: EdDSA-signed JWTs that name an agent and a token id, nothing more.
//!
//! Trust, tags and status are never read from the token: the gateway reads them from the store
//! (through its auth cache, which every change clears), so a revocation or a trust change applies
//! to the very next request. Validation
//! pins the algorithm to EdDSA, which rules out `alg: none` and the HS256-with-the-public-key
//! confusion.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

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

/// The gateway's signing and verification keys.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
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
        validation.leeway = 5;
        Ok(TokenKeys {
            encoding,
            decoding,
            validation,
        })
    }

    /// Signs `claims` with EdDSA.
    pub fn sign(&self, claims: &AgentClaims) -> Result<String, TokenError> {
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), claims, &self.encoding)
            .map_err(|e| TokenError::Signing(e.to_string()))
    }

    /// Verifies signature, algorithm, issuer and expiry; the store checks the rest.
    pub fn verify(&self, token: &str) -> Result<AgentClaims, TokenError> {
        jsonwebtoken::decode::<AgentClaims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid(e.to_string()),
            })
    }
}
