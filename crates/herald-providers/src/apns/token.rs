//! APNs provider authentication tokens (ES256 JWTs), minted once and reused.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::HeaderValue;
use serde_json::json;

use crate::error::ProviderError;
use crate::jwt::Es256Key;

/// A provider token is reused this long, then re-minted (Apple accepts one for an hour).
pub const PROVIDER_TOKEN_REUSE: Duration = Duration::from_secs(50 * 60);
/// Apple refuses token updates more often than this (`TooManyProviderTokenUpdates`): after a forced
/// re-mint on `ExpiredProviderToken`, the next forced one waits this long.
pub const PROVIDER_TOKEN_MIN_REMINT: Duration = Duration::from_secs(20 * 60);

/// One minted token.
#[derive(Debug)]
pub(crate) struct ProviderToken {
    /// `bearer <jwt>`.
    pub(crate) header: HeaderValue,
    pub(crate) minted_at: Instant,
    pub(crate) generation: u64,
}

pub(crate) struct ProviderTokens {
    key: Es256Key,
    key_id: String,
    team_id: String,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    current: Option<Arc<ProviderToken>>,
    last_forced: Option<Instant>,
    generation: u64,
}

impl ProviderTokens {
    pub(crate) fn new(key_id: &str, team_id: &str, pem: &str) -> Result<Self, ProviderError> {
        let key_id = key_id.trim();
        let team_id = team_id.trim();
        for (name, value) in [("keyId", key_id), ("teamId", team_id)] {
            if value.is_empty() || value.chars().any(char::is_control) {
                return Err(ProviderError::InvalidCredential(format!(
                    "APNs {name} must be a non-empty string"
                )));
            }
        }
        Ok(ProviderTokens {
            key: Es256Key::from_pem(pem)?,
            key_id: key_id.to_string(),
            team_id: team_id.to_string(),
            state: Mutex::new(State::default()),
        })
    }

    /// How many tokens were minted so far.
    pub(crate) fn minted(&self) -> u64 {
        self.state.lock().expect("token lock").generation
    }

    /// The token to send with now (minted when there is none or it is 50 minutes old).
    pub(crate) fn current(&self) -> Arc<ProviderToken> {
        self.current_at(Instant::now(), SystemTime::now())
    }

    pub(crate) fn current_at(&self, now: Instant, wall: SystemTime) -> Arc<ProviderToken> {
        let mut state = self.state.lock().expect("token lock");
        if let Some(token) = &state.current
            && now.saturating_duration_since(token.minted_at) < PROVIDER_TOKEN_REUSE
        {
            return token.clone();
        }
        self.mint(&mut state, now, wall)
    }

    /// APNs answered `ExpiredProviderToken` to a request sent with `used`: the token to retry with,
    /// or `None` when we may not re-mint (a forced re-mint happened less than 20 minutes ago and
    /// its token is the one being refused).
    pub(crate) fn after_expired(&self, used: &ProviderToken) -> Option<Arc<ProviderToken>> {
        self.after_expired_at(used, Instant::now(), SystemTime::now())
    }

    pub(crate) fn after_expired_at(
        &self,
        used: &ProviderToken,
        now: Instant,
        wall: SystemTime,
    ) -> Option<Arc<ProviderToken>> {
        let mut state = self.state.lock().expect("token lock");
        if let Some(current) = &state.current
            && current.generation != used.generation
        {
            // Another request re-minted already: retry with that one.
            return Some(current.clone());
        }
        if let Some(last) = state.last_forced
            && now.saturating_duration_since(last) < PROVIDER_TOKEN_MIN_REMINT
        {
            return None;
        }
        state.last_forced = Some(now);
        Some(self.mint(&mut state, now, wall))
    }

    fn mint(&self, state: &mut State, now: Instant, wall: SystemTime) -> Arc<ProviderToken> {
        let iat = wall
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let jwt = self.key.sign(
            &json!({"alg": "ES256", "kid": self.key_id}),
            &json!({"iss": self.team_id, "iat": iat}),
        );
        state.generation += 1;
        let token = Arc::new(ProviderToken {
            header: HeaderValue::try_from(format!("bearer {jwt}"))
                .expect("a JWT is a valid header value"),
            minted_at: now,
            generation: state.generation,
        });
        tracing::debug!(key_id = %self.key_id, generation = token.generation, "minted APNs provider token");
        state.current = Some(token.clone());
        token
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::tests::{APNS_KEY_PEM, decode};
    use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};

    fn tokens() -> ProviderTokens {
        ProviderTokens::new("ABC123DEFG", "TEAM123456", APNS_KEY_PEM).unwrap()
    }

    fn jwt(token: &ProviderToken) -> String {
        let value = token.header.to_str().unwrap();
        let (scheme, jwt) = value.split_once(' ').unwrap();
        assert!(scheme.eq_ignore_ascii_case("bearer"));
        jwt.to_string()
    }

    #[test]
    fn jwt_contents_and_signature() {
        let t = tokens();
        let wall = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let token = t.current_at(Instant::now(), wall);
        let (header, claims, input, signature) = decode(&jwt(&token));
        assert_eq!(header, json!({"alg": "ES256", "kid": "ABC123DEFG"}));
        assert_eq!(
            claims,
            json!({"iss": "TEAM123456", "iat": 1_700_000_000u64})
        );
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, t.key.public_key())
            .verify(input.as_bytes(), &signature)
            .unwrap();
    }

    #[test]
    fn reused_for_50_minutes() {
        let t = tokens();
        let start = Instant::now();
        let wall = SystemTime::now();
        let first = t.current_at(start, wall);
        let again = t.current_at(start + Duration::from_secs(49 * 60), wall);
        assert!(Arc::ptr_eq(&first, &again));
        let later = t.current_at(start + Duration::from_secs(50 * 60), wall);
        assert!(!Arc::ptr_eq(&first, &later));
        assert_eq!(later.generation, first.generation + 1);
    }

    #[test]
    fn one_forced_remint_per_20_minutes() {
        let t = tokens();
        let start = Instant::now();
        let wall = SystemTime::now();
        let first = t.current_at(start, wall);
        // ExpiredProviderToken: re-mint once.
        let second = t.after_expired_at(&first, start, wall).unwrap();
        assert_eq!(second.generation, first.generation + 1);
        assert_ne!(jwt(&first), jwt(&second));
        // Other requests that had used the first token get the second one, no new mint.
        let third = t.after_expired_at(&first, start, wall).unwrap();
        assert!(Arc::ptr_eq(&second, &third));
        // The new token refused too, within 20 minutes: no more re-minting.
        assert!(
            t.after_expired_at(&second, start + Duration::from_secs(19 * 60), wall)
                .is_none()
        );
        assert!(Arc::ptr_eq(
            &t.current_at(start + Duration::from_secs(19 * 60), wall),
            &second
        ));
        // After 20 minutes a forced re-mint is allowed again.
        let fourth = t
            .after_expired_at(&second, start + Duration::from_secs(20 * 60), wall)
            .unwrap();
        assert_eq!(fourth.generation, second.generation + 1);
    }

    #[test]
    fn rejects_bad_ids() {
        assert!(ProviderTokens::new("", "TEAM123456", APNS_KEY_PEM).is_err());
        assert!(ProviderTokens::new("ABC", " \n", APNS_KEY_PEM).is_err());
        assert!(ProviderTokens::new("ABC", "T", "not a key").is_err());
    }
}
