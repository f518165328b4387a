//! keyledger's configuration: one struct, read from the environment, each secret also from a
//! `NAME_FILE`, failing fast with a message that names the variable.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use secrecy::{ExposeSecretMut as _, SecretBox, SecretString};
use zeroize::Zeroizing;

use crate::crypto::{MasterKeyError, MasterKeyRing};
use crate::gateway::{Durability, ModelCallTimeouts};
use keyledger_domain::pricing::PriceTable;
use keyledger_domain::routing::ModelFamilies;
use keyledger_domain::{PlanCatalogue, ProviderId};

/// Everything keyledger reads from its environment. `Debug` shows no secret.
#[derive(Debug)]
pub struct Config {
    /// `postgres://…` or `sqlite://PATH`.
    pub database_url: String,
    /// Address the HTTP API binds.
    pub listen: SocketAddr,
    /// `KEYLEDGER_ENV=production`: secrets must be given, never generated.
    pub production: bool,
    /// Where dev mode keeps the secrets it generates.
    pub data_dir: PathBuf,
    /// The master key ring; the first key seals.
    pub master_keys: MasterKeyRing,
    /// `KEYLEDGER_AUDIT_SIGNING_KEY`: the Ed25519 seed that signs audit checkpoints; derived
    /// from the active master key when not given.
    pub audit_signing_seed: Option<SecretBox<[u8; 32]>>,
    /// `KEYLEDGER_JWT_SECRET`: the HS256 secret of keyledger's own bearer tokens. `None` when
    /// only the identity provider's tokens are accepted (`KEYLEDGER_JWKS_URL` without a secret).
    pub jwt_secret: Option<SecretString>,
    /// `KEYLEDGER_JWKS_URL` and its settings: tokens of the platform's identity provider.
    pub jwks: Option<JwksSettings>,
    /// `KEYLEDGER_JWT_ISSUER`: the `iss` every token must carry, when set.
    pub jwt_issuer: Option<String>,
    /// `KEYLEDGER_JWT_AUDIENCE`: the `aud` every token must carry, when set.
    pub jwt_audience: Option<String>,
    /// `KEYLEDGER_PROVIDER_<ID>_BASE_URL` overrides.
    pub provider_base_urls: BTreeMap<ProviderId, String>,
    /// The plan catalogue (`KEYLEDGER_PLANS_FILE` or the built-in one).
    pub plans: PlanCatalogue,
    /// The model price table (`KEYLEDGER_PRICES_FILE` or the built-in one).
    pub prices: PriceTable,
    /// `KEYLEDGER_PLATFORM_KEY_<ID>`: the platform's own shared key per provider.
    pub platform_keys: BTreeMap<ProviderId, SecretString>,
    /// `KEYLEDGER_ALLOW_PRIVATE_ENDPOINTS=true`: organizations may point keyledger at
    /// loopback and private addresses.
    pub allow_private_endpoints: bool,
    /// `KEYLEDGER_MODEL_CALL_TIMEOUT` and `KEYLEDGER_STREAM_IDLE_TIMEOUT`.
    pub model_call_timeouts: ModelCallTimeouts,
    /// The built-in model families plus `KEYLEDGER_MODEL_FAMILIES_FILE`'s.
    pub model_families: ModelFamilies,
    /// `KEYLEDGER_USAGE_QUEUE`: the most model calls in flight or waiting to be recorded.
    pub usage_queue: u64,
    /// `KEYLEDGER_CACHE_ORGS`: the most organizations whose Keyring states (and usage
    /// ledgers) one process keeps in memory.
    pub cache_orgs: usize,
    /// `KEYLEDGER_USAGE_DURABILITY`: `async` (default) or `sync`.
    pub usage_durability: Durability,
    /// `KEYLEDGER_USAGE_CALLS_DAYS`: how many days the list of single calls keeps a call
    /// (`None`: for ever). The daily totals keep every day whatever it says.
    pub usage_calls_days: Option<u32>,
    /// `KEYLEDGER_ACCESS_LOG`: which answered requests get a log line.
    pub access_log: AccessLog,
    /// Secrets dev mode generated or loaded from the data dir, to warn about loudly.
    pub dev_secrets: Vec<PathBuf>,
}

/// Which answered requests get an access-log line. At thousands of requests a second a line
/// each is gigabytes a day, so production logs only what went wrong unless asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLog {
    /// None: metrics and traces still count every request.
    Off,
    /// Requests answered 4xx or 5xx (the default in production).
    Errors,
    /// Every request (the default in development).
    All,
}

impl AccessLog {
    /// Whether a request answered with `status` is logged.
    #[must_use]
    pub const fn logs(self, status: u16) -> bool {
        match self {
            Self::Off => false,
            Self::Errors => status >= 400,
            Self::All => true,
        }
    }
}

/// Where the platform's identity provider publishes its signing keys, and how its tokens say
/// who the caller is.
#[derive(Debug, Clone)]
pub struct JwksSettings {
    /// `KEYLEDGER_JWKS_URL`: the provider's JSON Web Key Set.
    pub url: url::Url,
    /// `KEYLEDGER_JWT_ROLE_CLAIM` (default `role`): where the role is, a dotted path for a
    /// nested claim (`realm_access.roles`).
    pub role_claim: String,
    /// `KEYLEDGER_JWT_ORG_CLAIM` (default `org`): where the organization id is.
    pub org_claim: String,
    /// `KEYLEDGER_JWKS_MAX_AGE` (default 10 minutes): how long fetched keys are trusted before
    /// they are fetched again, so a key the provider withdrew stops being accepted.
    pub max_age: Duration,
    /// `KEYLEDGER_JWKS_COOLDOWN` (default 30 s): the least time between two fetches. A token
    /// naming an unknown key fetches the set again, but no more often than this, so forged
    /// key ids cannot turn keyledger against the provider.
    pub cooldown: Duration,
}

impl JwksSettings {
    /// Fetched keys are used this long, unless configured.
    pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(600);
    /// The least time between two fetches, unless configured.
    pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(30);
}

/// A configuration that cannot be used, naming the variable at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{variable}: {reason}")]
    Invalid { variable: String, reason: String },
    #[error("{0} is required when KEYLEDGER_ENV=production")]
    RequiredInProduction(&'static str),
    #[error("{path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
}

/// Model calls in flight or waiting to be recorded, at most, unless configured: what a crash
/// can lose in `async` durability is bounded by it.
pub(crate) const DEFAULT_USAGE_QUEUE: u64 = 10_000;
/// Organizations whose Keyring states (and usage ledgers) a process keeps at most, unless
/// `KEYLEDGER_CACHE_ORGS` says otherwise: a few hundred megabytes at the most.
pub(crate) const DEFAULT_CACHE_ORGS: usize = 100_000;

/// The shortest JWT secret production accepts: a guessable secret forges every role.
const MIN_PRODUCTION_SECRET: usize = 32;

fn invalid(variable: &str, reason: impl ToString) -> ConfigError {
    ConfigError::Invalid { variable: variable.to_owned(), reason: reason.to_string() }
}

impl Config {
    /// Reads the configuration from the process environment.
    ///
    /// # Errors
    /// [`ConfigError`] naming the variable that is missing or wrong.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup` (the environment, or a map in tests).
    ///
    /// # Errors
    /// [`ConfigError`] naming the variable that is missing or wrong.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let var = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let production =
            match var("KEYLEDGER_ENV").map(|v| v.trim().to_ascii_lowercase()).as_deref() {
                None | Some("development") => false,
                Some("production") => true,
                Some(_) => return Err(invalid("KEYLEDGER_ENV", "use development or production")),
            };
        let data_dir =
            PathBuf::from(var("KEYLEDGER_DATA_DIR").unwrap_or_else(|| ".keyledger".to_owned()));
        let listen = var("KEYLEDGER_LISTEN").unwrap_or_else(|| "127.0.0.1:8080".to_owned());
        let listen = listen.parse().map_err(|e| invalid("KEYLEDGER_LISTEN", e))?;
        let mut dev_secrets = Vec::new();

        let master_text = match secret(&var, "KEYLEDGER_MASTER_KEY")? {
            Some(text) => text,
            None if production => {
                return Err(ConfigError::RequiredInProduction("KEYLEDGER_MASTER_KEY"))
            }
            None => {
                let path = data_dir.join("master.key");
                let text =
                    load_or_generate(&path, || MasterKeyRing::generate_encoded().to_string())?;
                dev_secrets.push(path);
                text
            }
        };
        let master_keys = MasterKeyRing::parse(&master_text)
            .map_err(|e: MasterKeyError| invalid("KEYLEDGER_MASTER_KEY", e))?;
        drop(Zeroizing::new(master_text));

        let duration = |name: &str, default: Duration| match var(name) {
            Some(text) => parse_duration(&text).ok_or_else(|| {
                invalid(
                    name,
                    "a duration such as 600, 600s, 10m or 500ms, above zero and at most 24h",
                )
            }),
            None => Ok(default),
        };

        let jwks = match var("KEYLEDGER_JWKS_URL") {
            Some(text) => Some(JwksSettings {
                url: jwks_url(&text, production)?,
                role_claim: var("KEYLEDGER_JWT_ROLE_CLAIM").unwrap_or_else(|| "role".to_owned()),
                org_claim: var("KEYLEDGER_JWT_ORG_CLAIM").unwrap_or_else(|| "org".to_owned()),
                max_age: duration("KEYLEDGER_JWKS_MAX_AGE", JwksSettings::DEFAULT_MAX_AGE)?,
                cooldown: duration("KEYLEDGER_JWKS_COOLDOWN", JwksSettings::DEFAULT_COOLDOWN)?,
            }),
            None => None,
        };

        let audit_signing_seed = match secret(&var, "KEYLEDGER_AUDIT_SIGNING_KEY")? {
            Some(text) => {
                let decoded = Zeroizing::new(STANDARD.decode(text.as_bytes()).unwrap_or_default());
                drop(Zeroizing::new(text));
                let mut seed = SecretBox::new(Box::new([0u8; 32]));
                if decoded.len() != 32 {
                    return Err(invalid(
                        "KEYLEDGER_AUDIT_SIGNING_KEY",
                        "base64 of a 32-byte Ed25519 seed (openssl rand -base64 32)",
                    ));
                }
                seed.expose_secret_mut().copy_from_slice(&decoded);
                Some(seed)
            }
            None => None,
        };

        let jwt_secret = match secret(&var, "KEYLEDGER_JWT_SECRET")? {
            Some(text) => Some(text),
            // The identity provider's tokens only: no HS256 at all, so no shared secret can be
            // guessed, leaked or confused with a public key.
            None if jwks.is_some() => None,
            None if production => {
                return Err(ConfigError::RequiredInProduction("KEYLEDGER_JWT_SECRET"))
            }
            None => {
                let path = data_dir.join("jwt.secret");
                let text =
                    load_or_generate(&path, || MasterKeyRing::generate_encoded().to_string())?;
                dev_secrets.push(path);
                Some(text)
            }
        };

        if production && jwt_secret.as_ref().is_some_and(|s| s.len() < MIN_PRODUCTION_SECRET) {
            return Err(invalid(
                "KEYLEDGER_JWT_SECRET",
                format!("at least {MIN_PRODUCTION_SECRET} bytes in production (openssl rand -base64 32)"),
            ));
        }

        let mut provider_base_urls = BTreeMap::new();
        for provider in ProviderId::ALL {
            let name = format!("KEYLEDGER_PROVIDER_{}_BASE_URL", provider.as_str().to_uppercase());
            if let Some(url) = var(&name) {
                url::Url::parse(&url).map_err(|e| invalid(&name, e))?;
                provider_base_urls.insert(provider, url.trim_end_matches('/').to_owned());
            }
        }

        let plans = match var("KEYLEDGER_PLANS_FILE") {
            Some(path) => {
                load_table(Path::new(&path)).map_err(|e| invalid("KEYLEDGER_PLANS_FILE", e))?
            }
            None => PlanCatalogue::default(),
        };
        let prices = match var("KEYLEDGER_PRICES_FILE") {
            Some(path) => {
                let own: PriceTable = load_table(Path::new(&path))
                    .map_err(|e| invalid("KEYLEDGER_PRICES_FILE", e))?;
                own.check().map_err(|e| invalid("KEYLEDGER_PRICES_FILE", e))?;
                PriceTable::default().extended(own)
            }
            None => PriceTable::default(),
        };
        let model_families = match var("KEYLEDGER_MODEL_FAMILIES_FILE") {
            Some(path) => {
                let extra: BTreeMap<String, String> = load_table(Path::new(&path))
                    .map_err(|e| invalid("KEYLEDGER_MODEL_FAMILIES_FILE", e))?;
                ModelFamilies::with_extra(&extra)
                    .map_err(|e| invalid("KEYLEDGER_MODEL_FAMILIES_FILE", e))?
            }
            None => ModelFamilies::default(),
        };
        let defaults = ModelCallTimeouts::default();
        let usage_queue = match var("KEYLEDGER_USAGE_QUEUE") {
            Some(text) => count(&text, "KEYLEDGER_USAGE_QUEUE", "calls")?,
            None => DEFAULT_USAGE_QUEUE,
        };
        let cache_orgs = match var("KEYLEDGER_CACHE_ORGS") {
            Some(text) => count(&text, "KEYLEDGER_CACHE_ORGS", "organizations")?,
            None => DEFAULT_CACHE_ORGS,
        };
        let usage_calls_days = match var("KEYLEDGER_USAGE_CALLS_DAYS") {
            Some(text) => Some(count(&text, "KEYLEDGER_USAGE_CALLS_DAYS", "days")?),
            None => None,
        };
        let usage_durability = match var("KEYLEDGER_USAGE_DURABILITY")
            .map(|v| v.trim().to_ascii_lowercase())
            .as_deref()
        {
            None | Some("async") => Durability::Async,
            Some("sync") => Durability::Sync,
            Some(_) => return Err(invalid("KEYLEDGER_USAGE_DURABILITY", "use async or sync")),
        };
        let model_call_timeouts = ModelCallTimeouts {
            call: duration("KEYLEDGER_MODEL_CALL_TIMEOUT", defaults.call)?,
            stream_idle: duration("KEYLEDGER_STREAM_IDLE_TIMEOUT", defaults.stream_idle)?,
        };
        let mut platform_keys = BTreeMap::new();
        for provider in ProviderId::ALL {
            let name = format!("KEYLEDGER_PLATFORM_KEY_{}", provider.as_str().to_uppercase());
            if let Some(key) = secret(&var, &name)? {
                platform_keys.insert(provider, SecretString::from(key));
            }
        }
        let allow_private_endpoints = match var("KEYLEDGER_ALLOW_PRIVATE_ENDPOINTS").as_deref() {
            None | Some("false" | "0") => false,
            Some("true" | "1") => true,
            Some(_) => {
                return Err(invalid("KEYLEDGER_ALLOW_PRIVATE_ENDPOINTS", "use true or false"))
            }
        };

        let access_log =
            match var("KEYLEDGER_ACCESS_LOG").map(|v| v.trim().to_ascii_lowercase()).as_deref() {
                None if production => AccessLog::Errors,
                None => AccessLog::All,
                Some("off") => AccessLog::Off,
                Some("errors") => AccessLog::Errors,
                Some("all") => AccessLog::All,
                Some(_) => return Err(invalid("KEYLEDGER_ACCESS_LOG", "use off, errors or all")),
            };

        Ok(Self {
            database_url: var("DATABASE_URL").unwrap_or_else(|| "sqlite://keyledger.db".to_owned()),
            listen,
            production,
            data_dir,
            master_keys,
            audit_signing_seed,
            jwt_secret: jwt_secret.map(SecretString::from),
            jwks,
            jwt_issuer: var("KEYLEDGER_JWT_ISSUER"),
            jwt_audience: var("KEYLEDGER_JWT_AUDIENCE"),
            provider_base_urls,
            plans,
            prices,
            platform_keys,
            allow_private_endpoints,
            model_call_timeouts,
            model_families,
            usage_queue,
            cache_orgs,
            usage_calls_days,
            usage_durability,
            access_log,
            dev_secrets,
        })
    }
}

/// The JWKS address: HTTPS in production, where a key set fetched in the clear could be
/// replaced by anyone on the path and every role forged.
fn jwks_url(text: &str, production: bool) -> Result<url::Url, ConfigError> {
    let url = url::Url::parse(text.trim()).map_err(|e| invalid("KEYLEDGER_JWKS_URL", e))?;
    match url.scheme() {
        "https" => Ok(url),
        "http" if !production => Ok(url),
        "http" => Err(invalid("KEYLEDGER_JWKS_URL", "use https in production")),
        _ => {
            Err(invalid("KEYLEDGER_JWKS_URL", "an http(s) URL of the identity provider's key set"))
        }
    }
}

/// The longest a model-call limit may be set to.
const LONGEST_LIMIT: Duration = Duration::from_secs(24 * 3600);

/// A duration in seconds (`600`), or with a unit (`500ms`, `90s`, `10m`, `1h`); above zero
/// and at most a day.
/// A count of `things`, 1 or more, read from `variable`'s `text`.
fn count<N: std::str::FromStr + PartialOrd + From<u8>>(
    text: &str,
    variable: &str,
    things: &str,
) -> Result<N, ConfigError> {
    text.trim()
        .parse::<N>()
        .ok()
        .filter(|n| *n >= N::from(1))
        .ok_or_else(|| invalid(variable, format!("a number of {things}, 1 or more")))
}

fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let duration = match unit.trim() {
        "ms" => Duration::from_millis(number),
        "" | "s" => Duration::from_secs(number),
        "m" => Duration::from_secs(number.checked_mul(60)?),
        "h" => Duration::from_secs(number.checked_mul(3600)?),
        _ => return None,
    };
    (!duration.is_zero() && duration <= LONGEST_LIMIT).then_some(duration)
}

/// `NAME`, else the contents of the file `NAME_FILE` names.
fn secret(
    var: &impl Fn(&str) -> Option<String>,
    name: &str,
) -> Result<Option<String>, ConfigError> {
    // The untrimmed copies are wiped; the trimmed one goes into a secret type.
    if let Some(value) = var(name).map(Zeroizing::new) {
        return Ok(Some(value.trim().to_owned()));
    }
    let file_var = format!("{name}_FILE");
    match var(&file_var) {
        Some(path) => std::fs::read_to_string(&path)
            .map(|text| Some(Zeroizing::new(text).trim().to_owned()))
            .map_err(|e| invalid(&file_var, format!("cannot read {path}: {e}"))),
        None => Ok(None),
    }
}

/// Reads a dev-mode secret, generating it (readable by the owner only) the first time.
fn load_or_generate(path: &Path, generate: impl FnOnce() -> String) -> Result<String, ConfigError> {
    let data_dir_error = |source| ConfigError::DataDir { path: path.to_owned(), source };
    if path.exists() {
        return std::fs::read_to_string(path).map(|t| t.trim().to_owned()).map_err(data_dir_error);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(data_dir_error)?;
    }
    let text = generate();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(data_dir_error)?;
    file.write_all(text.as_bytes()).map_err(data_dir_error)?;
    Ok(text)
}

/// A TOML or JSON file (JSON by extension or by its first character).
fn load_table<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let is_json =
        path.extension().is_some_and(|ext| ext == "json") || text.trim_start().starts_with('{');
    if is_json {
        serde_json::from_str(&text).map_err(|e| e.to_string())
    } else {
        toml::from_str(&text).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> =
            vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn debug_shows_no_secret() {
        let master = MasterKeyRing::generate_encoded();
        let jwt = "a-jwt-secret-that-must-not-show-up";
        let config = config(&[("KEYLEDGER_MASTER_KEY", &master), ("KEYLEDGER_JWT_SECRET", jwt)])
            .expect("valid");
        let shown = format!("{config:?}");
        assert!(!shown.contains(master.as_str()) && !shown.contains(jwt), "{shown}");
    }

    #[test]
    fn an_audit_signing_key_is_a_32_byte_seed_and_never_shown() {
        let master = MasterKeyRing::generate_encoded();
        let seed = MasterKeyRing::generate_encoded();
        let base = [("KEYLEDGER_MASTER_KEY", master.as_str()), ("KEYLEDGER_JWT_SECRET", "x")];
        let given =
            config(&[base[0], base[1], ("KEYLEDGER_AUDIT_SIGNING_KEY", &seed)]).expect("valid");
        assert!(given.audit_signing_seed.is_some());
        assert!(!format!("{given:?}").contains(seed.as_str()));
        assert!(
            config(&base).expect("valid").audit_signing_seed.is_none(),
            "derived when not given"
        );
        let short = config(&[base[0], base[1], ("KEYLEDGER_AUDIT_SIGNING_KEY", "c2hvcnQ=")]);
        let error = short.expect_err("16 bytes are no seed").to_string();
        assert!(
            error.contains("KEYLEDGER_AUDIT_SIGNING_KEY") && error.contains("32-byte"),
            "{error}"
        );
    }

    #[test]
    fn platform_keys_and_a_prices_file_are_read() {
        let dir = std::env::temp_dir().join(format!("keyledger-prices-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let prices = dir.join("prices.toml");
        std::fs::write(
            &prices,
            "[\"openai/gpt-4o\"]\ninput_per_million_usd = 1.0\noutput_per_million_usd = 2.0\n",
        )
        .expect("write");
        let config = config(&[
            ("KEYLEDGER_MASTER_KEY", &MasterKeyRing::generate_encoded()),
            ("KEYLEDGER_JWT_SECRET", "x"),
            ("KEYLEDGER_PLATFORM_KEY_OPENAI", "sk-platform-key-that-stays-secret"),
            ("KEYLEDGER_PRICES_FILE", &prices.to_string_lossy()),
        ])
        .expect("valid");
        assert!(config.platform_keys.contains_key(&ProviderId::Openai));
        assert!(
            (config.prices.cost(ProviderId::Openai, "gpt-4o", 1_000_000, 1_000_000) - 3.0).abs()
                < 1e-9
        );
        assert!(!format!("{config:?}").contains("sk-platform-key-that-stays-secret"));
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn model_call_timeouts_take_a_unit_and_refuse_nonsense() {
        let base = [("KEYLEDGER_MASTER_KEY", MasterKeyRing::generate_encoded().to_string())];
        let with = |name: &'static str, value: &'static str| {
            let mut vars: Vec<(&str, &str)> = base.iter().map(|(k, v)| (*k, v.as_str())).collect();
            vars.push(("KEYLEDGER_JWT_SECRET", "x"));
            vars.push((name, value));
            config(&vars)
        };
        let defaults = with("KEYLEDGER_LISTEN", "127.0.0.1:0").expect("valid").model_call_timeouts;
        assert_eq!(defaults, ModelCallTimeouts::default());
        let set = with("KEYLEDGER_STREAM_IDLE_TIMEOUT", "500ms").expect("valid");
        assert_eq!(set.model_call_timeouts.stream_idle, Duration::from_millis(500));
        let set = with("KEYLEDGER_MODEL_CALL_TIMEOUT", "15m").expect("valid");
        assert_eq!(set.model_call_timeouts.call, Duration::from_secs(900));
        for bad in ["0", "soon", "10 years", "-5", "25h", "18446744073709551615s"] {
            let err = with("KEYLEDGER_MODEL_CALL_TIMEOUT", bad).expect_err(bad);
            assert!(err.to_string().starts_with("KEYLEDGER_MODEL_CALL_TIMEOUT"), "{err}");
        }
    }

    #[test]
    fn the_calls_list_keeps_every_call_unless_told_a_number_of_days() {
        let key = MasterKeyRing::generate_encoded().to_string();
        let with = |value: Option<&str>| {
            let mut vars =
                vec![("KEYLEDGER_MASTER_KEY", key.as_str()), ("KEYLEDGER_JWT_SECRET", "x")];
            vars.extend(value.map(|v| ("KEYLEDGER_USAGE_CALLS_DAYS", v)));
            config(&vars)
        };
        assert_eq!(with(None).expect("valid").usage_calls_days, None);
        assert_eq!(with(Some(" 90 ")).expect("valid").usage_calls_days, Some(90));
        for bad in ["0", "-1", "ninety", "1.5", "99999999999"] {
            let err = with(Some(bad)).expect_err(bad);
            assert!(err.to_string().starts_with("KEYLEDGER_USAGE_CALLS_DAYS"), "{err}");
        }
    }

    #[test]
    fn production_refuses_a_short_jwt_secret_and_the_mode_is_read_strictly() {
        let master = MasterKeyRing::generate_encoded();
        let short = config(&[
            ("KEYLEDGER_ENV", "production"),
            ("KEYLEDGER_MASTER_KEY", &master),
            ("KEYLEDGER_JWT_SECRET", "x"),
        ]);
        assert!(short.expect_err("refused").to_string().starts_with("KEYLEDGER_JWT_SECRET"));
        let long = "s".repeat(32);
        for mode in ["production", "Production", " PRODUCTION "] {
            let set = config(&[
                ("KEYLEDGER_ENV", mode),
                ("KEYLEDGER_MASTER_KEY", &master),
                ("KEYLEDGER_JWT_SECRET", &long),
            ]);
            assert!(set.expect("valid").production, "{mode:?} means production");
        }
        let unknown = config(&[("KEYLEDGER_ENV", "prod"), ("KEYLEDGER_MASTER_KEY", &master)]);
        assert!(unknown.expect_err("refused").to_string().starts_with("KEYLEDGER_ENV"));
    }

    #[test]
    fn the_access_log_logs_errors_in_production_and_everything_in_development() {
        let master = MasterKeyRing::generate_encoded();
        let secret = "s".repeat(32);
        let base = [("KEYLEDGER_MASTER_KEY", master.as_str()), ("KEYLEDGER_JWT_SECRET", &secret)];
        let with = |extra: &[(&str, &str)]| {
            let mut vars = base.to_vec();
            vars.extend_from_slice(extra);
            config(&vars)
        };
        assert_eq!(with(&[]).expect("dev").access_log, AccessLog::All);
        let production = with(&[("KEYLEDGER_ENV", "production")]).expect("production");
        assert_eq!(production.access_log, AccessLog::Errors);
        assert_eq!(
            with(&[("KEYLEDGER_ACCESS_LOG", " OFF ")]).expect("off").access_log,
            AccessLog::Off
        );
        let err = with(&[("KEYLEDGER_ACCESS_LOG", "some")]).expect_err("refused").to_string();
        assert!(err.starts_with("KEYLEDGER_ACCESS_LOG"), "{err}");
        assert!(
            !AccessLog::Errors.logs(204)
                && AccessLog::Errors.logs(404)
                && AccessLog::Errors.logs(503)
        );
        assert!(AccessLog::All.logs(200) && !AccessLog::Off.logs(500));
    }

    #[test]
    fn with_an_identity_provider_the_shared_secret_is_optional_and_never_generated() {
        let master = MasterKeyRing::generate_encoded();
        let dir = std::env::temp_dir().join(format!("keyledger-config-{}", std::process::id()));
        let data_dir = dir.to_string_lossy().into_owned();
        let idp_only = config(&[
            ("KEYLEDGER_ENV", "production"),
            ("KEYLEDGER_MASTER_KEY", &master),
            ("KEYLEDGER_JWKS_URL", "https://idp.example/.well-known/jwks.json"),
            ("KEYLEDGER_JWT_ROLE_CLAIM", "realm_access.roles"),
        ])
        .expect("valid without a secret");
        assert!(idp_only.jwt_secret.is_none(), "no HS256 when only the provider's keys are set");
        let jwks = idp_only.jwks.expect("jwks");
        assert_eq!(
            (jwks.role_claim.as_str(), jwks.org_claim.as_str()),
            ("realm_access.roles", "org")
        );
        assert_eq!(
            (jwks.max_age, jwks.cooldown),
            (Duration::from_secs(600), Duration::from_secs(30))
        );

        let dev = config(&[
            ("KEYLEDGER_DATA_DIR", &data_dir),
            ("KEYLEDGER_MASTER_KEY", &master),
            ("KEYLEDGER_JWKS_URL", "http://127.0.0.1:9/jwks.json"),
        ])
        .expect("dev mode takes http");
        assert!(dev.jwt_secret.is_none() && !dir.join("jwt.secret").exists());

        for (url, production) in
            [("http://idp.example/jwks.json", "production"), ("file:///etc/jwks", "development")]
        {
            let err = config(&[
                ("KEYLEDGER_ENV", production),
                ("KEYLEDGER_DATA_DIR", &data_dir),
                ("KEYLEDGER_MASTER_KEY", &master),
                ("KEYLEDGER_JWKS_URL", url),
            ])
            .expect_err(url);
            assert!(err.to_string().starts_with("KEYLEDGER_JWKS_URL"), "{err}");
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    proptest::proptest! {
        #[test]
        fn any_duration_text_is_read_or_refused(text in "[0-9a-z ]{0,24}") {
            if let Some(duration) = parse_duration(&text) {
                proptest::prop_assert!(!duration.is_zero() && duration <= LONGEST_LIMIT);
            }
        }
    }

    #[test]
    fn production_refuses_to_start_without_a_master_key() {
        let err = config(&[("KEYLEDGER_ENV", "production"), ("KEYLEDGER_JWT_SECRET", "x")]).err();
        assert!(matches!(err, Some(ConfigError::RequiredInProduction("KEYLEDGER_MASTER_KEY"))));
    }

    #[test]
    fn dev_mode_generates_secrets_once_and_keeps_them() {
        let dir = std::env::temp_dir().join(format!("keyledger-config-{}", uuid::Uuid::new_v4()));
        let dir_text = dir.to_string_lossy().to_string();
        let first = config(&[("KEYLEDGER_DATA_DIR", &dir_text)]).expect("generated");
        let second = config(&[("KEYLEDGER_DATA_DIR", &dir_text)]).expect("loaded");
        assert_eq!(first.dev_secrets.len(), 2);
        assert_eq!(first.master_keys.active().id(), second.master_keys.active().id());
        let mode = std::fs::metadata(dir.join("master.key")).expect("exists");
        #[cfg(unix)]
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777, 0o600);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn a_bad_variable_is_named() {
        let err = config(&[("KEYLEDGER_MASTER_KEY", "not-base64!")]).expect_err("refused");
        assert!(err.to_string().starts_with("KEYLEDGER_MASTER_KEY"), "{err}");
        let err = config(&[
            ("KEYLEDGER_MASTER_KEY", &MasterKeyRing::generate_encoded()),
            ("KEYLEDGER_JWT_SECRET", "x"),
            ("KEYLEDGER_LISTEN", "nope"),
        ])
        .expect_err("refused");
        assert!(err.to_string().starts_with("KEYLEDGER_LISTEN"), "{err}");
    }
}
