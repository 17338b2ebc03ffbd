//! Authentication: bearer tokens (random, shown once, stored as SHA-256 hashes, expiring,
//! revocable), the server owner's bootstrap, service identities ([K9]) and the short-lived
//! tokens a service mints for its own agent.

use std::sync::Arc;

use keyhold_api::iam::{Binding, Policy};
use keyhold_api::wire::ProtoDuration;
use keyhold_crypto::SecretString;
use keyhold_iam::{Principal, role};

use crate::bounded_cache::BoundedCache;
use crate::call::Call;
use crate::clock::Clock;
use crate::error::KmsError;
use crate::repo::{KmsRepository, RepoError, ServiceIdentityRecord, TokenRecord};

/// Token text prefix, so a leaked token is recognisable (secret scanners, logs).
const TOKEN_PREFIX: &str = "kh1.";
/// Longest lifetime of a service agent's access token (Google's default maximum: one hour).
const MAX_AGENT_TOKEN_SECS: i64 = 3600;
/// Lifetime of the owner's bootstrap token.
const OWNER_TOKEN_SECS: i64 = 365 * 24 * 3600;

/// The token cache's budget: about 20,000 tokens in use at once.
const TOKEN_CACHE_BYTES: u64 = 8 * 1024 * 1024;
/// What a cached token costs besides its strings (an estimate, on the generous side).
const TOKEN_ENTRY_OVERHEAD: u64 = 192;

/// The weight of a cached token: its strings and a fixed overhead.
#[derive(Clone, Copy, Debug)]
struct TokenWeight;

impl quick_cache::Weighter<String, Arc<TokenRecord>> for TokenWeight {
    fn weight(&self, hash: &String, r: &Arc<TokenRecord>) -> u64 {
        let strings = hash.len() + r.id.len() + r.hash.len() + r.principal.len() + r.description.len();
        TOKEN_ENTRY_OVERHEAD + strings as u64
    }
}

/// Valid tokens looked up recently, by hash, within a byte budget. Cleared when a token is
/// revoked (on another node: through the change log), so a revocation on any node takes effect
/// within the change-poll interval.
pub(crate) struct TokenCache {
    by_hash: BoundedCache<String, Arc<TokenRecord>, TokenWeight>,
}

impl Default for TokenCache {
    fn default() -> Self {
        Self { by_hash: BoundedCache::new(TOKEN_CACHE_BYTES, TOKEN_ENTRY_OVERHEAD + 256, TokenWeight) }
    }
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (held, weight) = self.by_hash.usage();
        f.debug_struct("TokenCache").field("tokens", &held).field("weight", &weight).finish()
    }
}

impl TokenCache {
    pub(crate) fn clear(&self) {
        self.by_hash.clear();
    }

    fn usage(&self) -> (usize, u64) {
        self.by_hash.usage()
    }
}

fn token_hash(token: &str) -> String {
    keyhold_crypto::hex(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref())
}

fn random_hex(n: usize) -> Result<String, KmsError> {
    let mut b = vec![0u8; n];
    keyhold_crypto::random_bytes(&mut b).map_err(|e| KmsError::Internal(e.to_string()))?;
    Ok(keyhold_crypto::hex(&b))
}

/// A freshly created token: the secret (shown once) and its record.
#[derive(Debug)]
pub struct NewToken {
    /// The bearer token. Not stored anywhere by Keyhold.
    pub token: SecretString,
    /// What is stored.
    pub record: TokenRecord,
}

/// The service-agent email of `service` in project number `number`:
/// `service-NUMBER@gcp-sa-NAME.iam.gserviceaccount.com`, NAME being the service's first DNS
/// label (`financialservices.googleapis.com` -> `gcp-sa-financialservices`).
pub fn service_agent_email(service: &str, project_number: i64) -> String {
    let name = match service {
        "sqladmin.googleapis.com" => "cloud-sql",
        s => s.split('.').next().unwrap_or(s),
    };
    format!("service-{project_number}@gcp-sa-{name}.iam.gserviceaccount.com")
}

/// Whether `email` has the shape of a service agent (`service-N@gcp-sa-NAME.iam.gserviceaccount.com`,
/// what [`service_agent_email`] makes), whether or not the agent exists yet: refusing the shape
/// also refuses a token minted ahead of the agent's creation. Case-insensitive, so that a
/// look-alike spelling cannot stand in for the agent in the audit log.
fn is_service_agent_email(email: &str) -> bool {
    let email = email.to_ascii_lowercase();
    email.split_once('@').is_some_and(|(local, domain)| {
        local.starts_with("service-") && domain.starts_with("gcp-sa-") && domain.ends_with(".iam.gserviceaccount.com")
    })
}

/// The domain of the identities Keyhold itself acts as (`service:scheduler.keyhold.local`,
/// `service:bootstrap.keyhold.local`, see [`keyhold_iam::Caller::system`]).
const INTERNAL_SERVICE_DOMAIN: &str = ".keyhold.local";

/// The principal of `--allow-anonymous` when it names none.
const DEFAULT_ANONYMOUS: &str = "user:anonymous@keyhold.local";

/// The identities of the server: bearer tokens, the owner's bootstrap, service agents. A part
/// of the KMS that never sees the façade.
#[derive(Debug)]
pub(crate) struct Identities {
    repo: Arc<dyn KmsRepository>,
    clock: Arc<dyn Clock>,
    /// `--allow-anonymous`'s principal, if named.
    anonymous_principal: Option<Principal>,
    default_token_ttl: ProtoDuration,
    tokens: TokenCache,
}

impl Identities {
    pub(crate) fn new(
        repo: Arc<dyn KmsRepository>,
        clock: Arc<dyn Clock>,
        anonymous_principal: Option<Principal>,
        default_token_ttl: ProtoDuration,
    ) -> Self {
        Self { repo, clock, anonymous_principal, default_token_ttl, tokens: TokenCache::default() }
    }

    /// The tokens held and their weight in bytes.
    pub(crate) fn token_cache_usage(&self) -> (usize, u64) {
        self.tokens.usage()
    }

    /// Forgets cached tokens (another node may have revoked one).
    pub(crate) fn clear(&self) {
        self.tokens.clear();
    }

    /// Why no token may be minted for `principal` through `POST /v1/tokens`, if it is one the
    /// server itself acts as (finding 5: a token admin could mint a long-lived token for a
    /// service agent, the scheduler or the anonymous principal, act as it, and have the audit
    /// log blame it). Service agents get tokens only through `generateAccessToken`, asked by
    /// their own service; internal identities and the anonymous principal never get one.
    pub(crate) fn unmintable(&self, principal: &Principal) -> Option<String> {
        let p = principal.as_str();
        // Whatever the principal's kind: `user:service-N@gcp-sa-…` would carry the agent's
        // email as `principalEmail` in audit entries just as well as `serviceAccount:` does.
        if is_service_agent_email(principal.email()) {
            return Some(format!(
                "Tokens cannot be created for {p}: it is a service agent, and only its own service may act as it, \
                 with short-lived tokens from generateAccessToken (see docs/api.md, Service identities)."
            ));
        }
        if principal.service().is_some_and(|s| s.to_ascii_lowercase().ends_with(INTERNAL_SERVICE_DOMAIN)) {
            return Some(format!(
                "Tokens cannot be created for {p}: principals in {} are the identities Keyhold itself acts as \
                 (the scheduler, the bootstrap), and nobody else may act as them.",
                &INTERNAL_SERVICE_DOMAIN[1..]
            ));
        }
        let anonymous = self.anonymous_principal.as_ref().map_or(DEFAULT_ANONYMOUS, Principal::as_str);
        if p.eq_ignore_ascii_case(anonymous) || p.eq_ignore_ascii_case(DEFAULT_ANONYMOUS) {
            return Some(format!(
                "Tokens cannot be created for {p}: it is the principal of unauthenticated requests in emulator mode \
                 (--allow-anonymous), which no token may carry; create a token for a named user or service account."
            ));
        }
        None
    }

    /// Maps a bearer token to its principal. Fails with `UNAUTHENTICATED` for unknown, expired
    /// or revoked tokens.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, KmsError> {
        let invalid = || KmsError::Unauthenticated { missing: false };
        if !token.starts_with(TOKEN_PREFIX) || token.len() > 256 {
            return Err(invalid());
        }
        let hash = token_hash(token);
        // Unknown tokens are not cached (anyone can send random ones): their load fails. A load
        // that raced with a revocation is used once but not cached.
        let record = self
            .tokens
            .by_hash
            .get_or_load(hash.as_str(), || async {
                Ok::<_, KmsError>(Arc::new(self.repo.token_by_hash(&hash).await?.ok_or_else(invalid)?))
            })
            .await?;
        if record.revoke_time.is_some() || record.expire_time <= self.clock.now() {
            return Err(invalid());
        }
        let principal = Principal::parse(&record.principal).map_err(|_| invalid())?;
        if self.minted_by_mistake(&principal, &record) {
            return Err(invalid());
        }
        Ok(principal)
    }

    /// Whether `record` is a token `POST /v1/tokens` could mint before finding 5 was fixed and
    /// may no longer: for an internal identity or the anonymous principal (never legitimate),
    /// or for a service agent with a longer life than `generateAccessToken` gives. Such tokens
    /// stop working at once on upgrade instead of living out their 90 days.
    fn minted_by_mistake(&self, principal: &Principal, record: &TokenRecord) -> bool {
        let p = principal.as_str();
        if is_service_agent_email(principal.email()) {
            // generateAccessToken mints only `serviceAccount:` tokens for agents; any other
            // kind with an agent's email was minted by mistake.
            if !p.starts_with("serviceAccount:") {
                return true;
            }
            let life = record.expire_time.unix_nanos() - record.create_time.unix_nanos();
            return life > i128::from(MAX_AGENT_TOKEN_SECS) * 1_000_000_000;
        }
        principal.service().is_some_and(|s| s.to_ascii_lowercase().ends_with(INTERNAL_SERVICE_DOMAIN))
            || self.anonymous_principal.as_ref().is_some_and(|a| p.eq_ignore_ascii_case(a.as_str()))
    }

    async fn mint_token(
        &self,
        call: &Call<'_>,
        principal: &Principal,
        ttl: ProtoDuration,
        description: &str,
    ) -> Result<NewToken, KmsError> {
        let id = random_hex(8)?;
        let mut secret = [0u8; 32];
        keyhold_crypto::random_bytes(&mut secret).map_err(|e| KmsError::Internal(e.to_string()))?;
        use base64::Engine;
        let token = SecretString::new(format!(
            "{TOKEN_PREFIX}{id}.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
        ));
        zeroize::Zeroize::zeroize(&mut secret);
        let now = self.clock.now();
        let record = TokenRecord {
            id,
            hash: token_hash(token.expose()),
            principal: principal.to_string(),
            description: description.to_string(),
            create_time: now,
            expire_time: now.add(ttl),
            revoke_time: None,
        };
        self.repo.insert_token(&record, &call.success_entry()).await?;
        Ok(NewToken { token, record })
    }

    /// Creates a token for `principal` (the caller holds `keyhold.tokens.create`).
    pub(crate) async fn create_token(
        &self,
        call: &Call<'_>,
        principal: &str,
        ttl: Option<ProtoDuration>,
        description: &str,
    ) -> Result<NewToken, KmsError> {
        let principal = Principal::parse(principal).map_err(|e| KmsError::InvalidArgument(e.to_string()))?;
        if let Some(why) = self.unmintable(&principal) {
            return Err(KmsError::InvalidArgument(why));
        }
        let ttl = ttl.unwrap_or(self.default_token_ttl);
        if ttl.as_nanos() <= 0 {
            return Err(KmsError::InvalidArgument("ttl must be positive, e.g. 86400s.".into()));
        }
        if description.len() > 256 {
            return Err(KmsError::InvalidArgument("description is limited to 256 bytes.".into()));
        }
        self.mint_token(call, &principal, ttl, description).await
    }

    /// All tokens (never their secrets).
    pub(crate) async fn list_tokens(&self) -> Result<Vec<TokenRecord>, KmsError> {
        Ok(self.repo.list_tokens().await?)
    }

    /// Revokes a token; effective on the next request on this node, within the change-poll
    /// interval on the others.
    pub(crate) async fn revoke_token(&self, call: &Call<'_>, id: &str) -> Result<(), KmsError> {
        if !self.repo.revoke_token(id, self.clock.now(), &call.success_entry()).await? {
            return Err(KmsError::TokenNotFound(id.to_string()));
        }
        self.tokens.clear();
        Ok(())
    }

    /// The server-wide policy of the first start: `owner` is owner and token admin.
    pub(crate) fn owner_policy(owner: &Principal) -> Policy {
        Policy {
            version: 1,
            bindings: ["roles/keyhold.tokenAdmin", "roles/orgpolicy.policyAdmin", "roles/owner"]
                .into_iter()
                .map(|r| Binding { role: r.into(), members: vec![owner.to_string()], condition: None })
                .collect(),
            ..Default::default()
        }
    }

    /// Mints the owner's bootstrap token.
    pub(crate) async fn owner_token(&self, call: &Call<'_>, owner: &Principal) -> Result<NewToken, KmsError> {
        self.mint_token(call, owner, ProtoDuration::from_secs(OWNER_TOKEN_SECS), "owner token (bootstrap)").await
    }

    /// Checks a service's name (its DNS name) for `generateServiceIdentity`.
    pub(crate) fn check_service_name(service: &str) -> Result<(), KmsError> {
        if service.is_empty()
            || service.len() > 253
            || !service.contains('.')
            || !service.split('.').all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        {
            return Err(KmsError::InvalidArgument(format!(
                "Service name \"{service}\" is not valid; use a service's DNS name, e.g. store.keyhold.dev."
            )));
        }
        Ok(())
    }

    /// The agent through which `service` acts for `project`, created on first call (the
    /// caller is authorized, the project exists).
    pub(crate) async fn service_identity(
        &self,
        call: &Call<'_>,
        project_id: &str,
        service: &str,
        project_number: impl AsyncFnOnce() -> Result<i64, KmsError>,
    ) -> Result<ServiceIdentityRecord, KmsError> {
        if let Some(existing) = self.repo.service_identity(project_id, service).await? {
            return Ok(existing);
        }
        let project_number = project_number().await?;
        let mut uid = [0u8; 8];
        keyhold_crypto::random_bytes(&mut uid).map_err(|e| KmsError::Internal(e.to_string()))?;
        let identity = ServiceIdentityRecord {
            project_id: project_id.to_string(),
            service: service.to_string(),
            email: service_agent_email(service, project_number),
            unique_id: format!("1{:020}", u64::from_be_bytes(uid)),
            create_time: self.clock.now(),
        };
        match self.repo.insert_service_identity(&identity, &call.success_entry()).await {
            Ok(()) => Ok(identity),
            Err(RepoError::AlreadyExists) => {
                call.entry_rolled_back();
                if let Some(existing) = self.repo.service_identity(project_id, service).await? {
                    // Created by a concurrent request.
                    return Ok(existing);
                }
                // The agent name (first DNS label) is taken by another service.
                Err(KmsError::FailedPrecondition(format!(
                    "The service agent name gcp-sa-{} in project {project_id} is already used by another service; Keyhold names agents after the first label of the service name.",
                    service.split('.').next().unwrap_or(service)
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// IAM Credentials `generateAccessToken` for a service agent: only the service the agent
    /// belongs to (authenticated as `service:NAME`) may mint its tokens; lifetime at most 1 h.
    pub(crate) async fn agent_token(
        &self,
        call: &Call<'_>,
        principal: &Principal,
        agent_email: &str,
        lifetime: Option<ProtoDuration>,
    ) -> Result<NewToken, KmsError> {
        if call.caller.anonymous {
            return Err(KmsError::Unauthenticated { missing: true });
        }
        let denied = || KmsError::PermissionDenied {
            permission: role::SERVICE_ACCOUNTS_GET_ACCESS_TOKEN,
            resource: format!("projects/-/serviceAccounts/{agent_email}"),
        };
        let identity = self.repo.service_identity_by_email(agent_email).await?.ok_or_else(denied)?;
        let allowed = principal.service() == Some(identity.service.as_str());
        call.set_permission(role::SERVICE_ACCOUNTS_GET_ACCESS_TOKEN, allowed);
        if !allowed {
            return Err(denied());
        }
        let lifetime = lifetime.unwrap_or(ProtoDuration::from_secs(MAX_AGENT_TOKEN_SECS));
        if lifetime.as_nanos() <= 0 || lifetime.as_nanos() > i128::from(MAX_AGENT_TOKEN_SECS) * 1_000_000_000 {
            return Err(KmsError::InvalidArgument("lifetime must be between 1s and 3600s.".into()));
        }
        let agent = Principal::parse(&format!("serviceAccount:{agent_email}"))
            .map_err(|e| KmsError::Internal(e.to_string()))?;
        self.mint_token(call, &agent, lifetime, &format!("access token minted by {principal}")).await
    }
}
