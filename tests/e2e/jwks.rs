//! Tokens from the platform's identity provider: RS256, ES256 and EdDSA tokens checked against
//! the keys a local JWKS server publishes, with the provider rotating its keys, tokens naming
//! keys it never published, and tokens that try to pass a shared-secret signature off as one.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair};
use serde_json::{json, Value};

use crate::keys;
use keyledger_tests::{Backend, TestApp};

const ISSUER: &str = "https://idp.example/realms/platform";
const AUDIENCE: &str = "keyledger";
const ROLE_CLAIM: &str = "realm_access.roles";
/// Auth0-style: a namespaced claim whose name holds dots.
const ORG_CLAIM: &str = "https://platform.example/org";

/// A signing key of the identity provider's, and the public half it publishes.
struct Signer {
    kid: String,
    algorithm: Algorithm,
    key: EncodingKey,
    jwk: Value,
}

impl Signer {
    fn rsa(kid: &str, der_base64: &str) -> Self {
        let der = STANDARD.decode(der_base64.split_whitespace().collect::<String>()).expect("b64");
        let pair = RsaKeyPair::from_der(&der).expect("an RSA key");
        let public = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(pair.public());
        let jwk = json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
            "n": URL_SAFE_NO_PAD.encode(&public.n), "e": URL_SAFE_NO_PAD.encode(&public.e)});
        Self {
            kid: kid.to_owned(),
            algorithm: Algorithm::RS256,
            key: EncodingKey::from_rsa_der(&der),
            jwk,
        }
    }

    fn ec(kid: &str) -> Self {
        let rng = ring::rand::SystemRandom::new();
        let signing = &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(signing, &rng).expect("P-256 key");
        let pair = EcdsaKeyPair::from_pkcs8(signing, pkcs8.as_ref(), &rng).expect("P-256 pair");
        let point = pair.public_key().as_ref(); // 0x04 ‖ x ‖ y
        let jwk = json!({"kty": "EC", "kid": kid, "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..])});
        Self {
            kid: kid.to_owned(),
            algorithm: Algorithm::ES256,
            key: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk,
        }
    }

    fn ed(kid: &str) -> Self {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("Ed25519 key");
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("Ed25519 pair");
        let jwk = json!({"kty": "OKP", "kid": kid, "crv": "Ed25519", "alg": "EdDSA",
            "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref())});
        Self {
            kid: kid.to_owned(),
            algorithm: Algorithm::EdDSA,
            key: EncodingKey::from_ed_der(pkcs8.as_ref()),
            jwk,
        }
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.kid.clone());
        encode(&header, claims, &self.key).expect("signed")
    }
}

/// A local identity provider's JWKS endpoint that counts how often it is fetched.
struct KeySetServer {
    url: String,
    published: Arc<Mutex<Vec<Value>>>,
    fetches: Arc<AtomicUsize>,
}

impl KeySetServer {
    async fn start(keys: Vec<Value>) -> Self {
        let published = Arc::new(Mutex::new(keys));
        let fetches = Arc::new(AtomicUsize::new(0));
        let router = axum::Router::new().route(
            "/protocol/openid-connect/certs",
            axum::routing::get({
                let (published, fetches) = (Arc::clone(&published), Arc::clone(&fetches));
                move || async move {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    let keys = published.lock().expect("keys").clone();
                    axum::Json(json!({ "keys": keys }))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!(
            "http://{}/protocol/openid-connect/certs",
            listener.local_addr().expect("addr")
        );
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { url, published, fetches }
    }

    fn publish(&self, keys: Vec<Value>) {
        *self.published.lock().expect("keys") = keys;
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

/// Claims as Keycloak lays them out, with the organization in a namespaced claim.
fn claims(sub: &str, roles: Value, org: &str) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({"sub": sub, "iss": ISSUER, "aud": [AUDIENCE, "account"], "iat": now, "exp": now + 600,
        "realm_access": {"roles": roles}, ORG_CLAIM: org, "email": format!("{sub}@platform.example")})
}

fn with(mut claims: Value, field: &str, value: Value) -> Value {
    claims[field] = value;
    claims
}

async fn start(jwks: &KeySetServer, shared_secret: &str) -> TestApp {
    TestApp::start_with(
        Backend::Sqlite,
        &[
            ("KEYLEDGER_JWKS_URL", &jwks.url),
            ("KEYLEDGER_JWT_SECRET", shared_secret),
            ("KEYLEDGER_JWT_ISSUER", ISSUER),
            ("KEYLEDGER_JWT_AUDIENCE", AUDIENCE),
            ("KEYLEDGER_JWT_ROLE_CLAIM", ROLE_CLAIM),
            ("KEYLEDGER_JWT_ORG_CLAIM", ORG_CLAIM),
            ("KEYLEDGER_JWKS_COOLDOWN", "1s"),
        ],
    )
    .await
}

/// The refusal's status and detail.
async fn refused(app: &TestApp, token: &str) -> (StatusCode, String) {
    let response = app.get("/v1/whoami", token).await;
    (response.status, response.json()["detail"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_provider_tokens_of_three_algorithms_act_with_the_claims_they_carry() {
    let (rsa, ec, ed) = (
        Signer::rsa("rsa-1", include_str!("fixtures/idp-rsa-1.der.b64")),
        Signer::ec("ec-1"),
        Signer::ed("ed-1"),
    );
    let jwks = KeySetServer::start(vec![rsa.jwk.clone(), ec.jwk.clone(), ed.jwk.clone()]).await;
    let app = start(&jwks, "").await;

    let who = app
        .get("/v1/whoami", &rsa.sign(&claims("alice", json!(["offline_access", "owner"]), "acme")))
        .await;
    assert_eq!(who.status, StatusCode::OK, "{}", who.everything());
    assert_eq!(
        (who.json()["sub"].clone(), who.json()["role"].clone(), who.json()["org"].clone()),
        (json!("alice"), json!("owner"), json!("acme"))
    );

    // The platform admin (ES256) sets the plan; the owner (EdDSA) stores a key; the audit trail
    // names the identity provider's subjects.
    let admin = ec.sign(&claims("billing", json!(["platform_admin"]), "*"));
    let plan = app.put("/v1/orgs/acme/plan", &admin, json!({"plan": "pro"})).await;
    assert_eq!(plan.status, StatusCode::OK, "{}", plan.everything());
    let owner = ed.sign(&claims("alice", json!("owner"), "acme"));
    let key = keys::openai();
    let stored =
        app.post("/v1/orgs/acme/keys", &owner, json!({"provider": "openai", "key": key})).await;
    assert_eq!(stored.status, StatusCode::CREATED, "{}", stored.everything());
    let auditor = rsa.sign(&claims("carol", json!(["auditor"]), "acme"));
    let trail = app.get("/v1/orgs/acme/audit", &auditor).await.json();
    let actors: Vec<&str> = trail["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["actor"].as_str())
        .collect();
    assert!(actors.contains(&"alice") && actors.contains(&"billing"), "{trail}");

    // A member may read but not change keys; another organization's token reads nothing here.
    let member = ed.sign(&claims("dave", json!(["member"]), "acme"));
    assert_eq!(app.get("/v1/orgs/acme/keys", &member).await.status, StatusCode::OK);
    let removed = app.delete("/v1/orgs/acme/keys/openai", &member).await;
    assert_eq!(removed.status, StatusCode::FORBIDDEN);
    let globex = rsa.sign(&claims("eve", json!(["owner"]), "globex"));
    assert_eq!(app.get("/v1/orgs/acme/keys", &globex).await.status, StatusCode::FORBIDDEN);

    assert_eq!(jwks.fetches(), 1, "the key set is fetched once and kept");
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_issuer_audience_claims_or_algorithm_are_refused() {
    let rsa = Signer::rsa("rsa-1", include_str!("fixtures/idp-rsa-1.der.b64"));
    // A provider that also publishes a symmetric key: it must never verify anything.
    let oct = json!({"kty": "oct", "kid": "hs-1", "k": URL_SAFE_NO_PAD.encode(b"published-shared-secret")});
    let jwks = KeySetServer::start(vec![rsa.jwk.clone(), oct]).await;
    let app = start(&jwks, "").await;
    let good = claims("alice", json!(["owner"]), "acme");
    assert_eq!(app.get("/v1/whoami", &rsa.sign(&good)).await.status, StatusCode::OK);

    let now = chrono::Utc::now().timestamp();
    let cases = [
        (with(good.clone(), "iss", json!("https://evil.example")), "another issuer"),
        (with(good.clone(), "aud", json!(["account"])), "another audience"),
        (with(good.clone(), "exp", json!(now - 3600)), "expired"),
        (
            with(good.clone(), "realm_access", json!({"roles": ["offline_access"]})),
            "names no keyledger role",
        ),
        (
            with(good.clone(), "realm_access", json!({"roles": ["owner", "admin"]})),
            "several keyledger roles",
        ),
        (with(good.clone(), ORG_CLAIM, Value::Null), "no organization"),
    ];
    for (claims, says) in cases {
        let (status, detail) = refused(&app, &rsa.sign(&claims)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{claims}");
        assert!(detail.contains(says), "{says}: {detail}");
    }

    // HS256 with only JWKS configured: refused whatever the secret, including the oct key the
    // provider published and the RSA key's own public modulus (the classic confusion attack).
    let hs256 = |secret: &[u8], kid: &str| {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(kid.to_owned());
        encode(&header, &good, &EncodingKey::from_secret(secret)).expect("signed")
    };
    let modulus = rsa.jwk["n"].as_str().expect("n").as_bytes().to_vec();
    for token in
        [hs256(b"published-shared-secret", "hs-1"), hs256(&modulus, "rsa-1"), hs256(b"guess", "x")]
    {
        let (status, detail) = refused(&app, &token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(detail.contains("HS256 tokens are not accepted"), "{detail}");
    }
    // An RS256 token presented as ES256, and an unsigned one.
    let forged_alg = {
        let token = rsa.sign(&good);
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        parts[0] = URL_SAFE_NO_PAD.encode(br#"{"alg":"ES256","kid":"rsa-1","typ":"JWT"}"#);
        parts.join(".")
    };
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(good.to_string())
    );
    for token in [forged_alg, unsigned] {
        assert_eq!(refused(&app, &token).await.0, StatusCode::UNAUTHORIZED, "{token}");
    }
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_rotates_its_key_and_unknown_key_ids_fetch_at_most_once_per_cooldown() {
    let old = Signer::rsa("2026-11", include_str!("fixtures/idp-rsa-1.der.b64"));
    let new = Signer::rsa("2026-12", include_str!("fixtures/idp-rsa-2.der.b64"));
    let jwks = KeySetServer::start(vec![old.jwk.clone()]).await;
    let app = start(&jwks, "").await;
    let owner = claims("alice", json!(["owner"]), "acme");
    assert_eq!(app.get("/v1/whoami", &old.sign(&owner)).await.status, StatusCode::OK);
    assert_eq!(jwks.fetches(), 1);

    // A key the provider has not published: one fetch to look for it, then nothing more
    // within the cooldown however many such tokens arrive.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, detail) = refused(&app, &new.sign(&owner)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(detail.contains("does not publish"), "{detail}");
    assert_eq!(jwks.fetches(), 2);
    let flood = futures::future::join_all((0..50).map(|i| {
        let forged = Signer::ec(&format!("forged-{i}"));
        let token = forged.sign(&owner);
        let app = &app;
        async move { app.get("/v1/whoami", &token).await.status }
    }))
    .await;
    assert!(flood.iter().all(|s| *s == StatusCode::UNAUTHORIZED));
    assert_eq!(jwks.fetches(), 2, "unknown key ids fetch at most once per cooldown");

    // The provider rotates: the new key is published and the old one withdrawn. The first
    // token under the new key fetches the set; the old key is no longer accepted.
    jwks.publish(vec![new.jwk.clone()]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let rotated = app.get("/v1/whoami", &new.sign(&owner)).await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.everything());
    assert_eq!(jwks.fetches(), 3);
    let (status, detail) = refused(&app, &old.sign(&owner)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a withdrawn key verifies nothing");
    assert!(detail.contains("does not publish"), "{detail}");
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_both_configured_keyledgers_own_tokens_and_the_providers_are_accepted() {
    let ed = Signer::ed("ed-1");
    let jwks = KeySetServer::start(vec![ed.jwk.clone()]).await;
    let app = start(&jwks, "development-secret-for-keyledger-tokens").await;
    let own = app.get("/v1/whoami", &app.owner("acme")).await;
    assert_eq!((own.status, own.json()["role"].clone()), (StatusCode::OK, json!("owner")));
    let provider =
        app.get("/v1/whoami", &ed.sign(&claims("bob", json!(["auditor"]), "acme"))).await;
    assert_eq!(
        (provider.status, provider.json()["role"].clone()),
        (StatusCode::OK, json!("auditor"))
    );
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_provider_refuses_its_tokens_and_serves_everything_else() {
    let ed = Signer::ed("ed-1");
    // Nothing listens on the discard port.
    let jwks = KeySetServer {
        url: "http://127.0.0.1:9/certs".to_owned(),
        published: Arc::default(),
        fetches: Arc::default(),
    };
    let app = start(&jwks, "").await;
    let (status, detail) = refused(&app, &ed.sign(&claims("bob", json!(["owner"]), "acme"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(detail.contains("could not be fetched"), "{detail}");
    assert_eq!(app.get("/healthz", "").await.status, StatusCode::OK);
    app.finish().await;
}
