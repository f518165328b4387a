//! Signed checkpoints and Merkle proofs, worked as an auditor would: save a checkpoint, let
//! history grow, check the proof that it extends the saved one with a verifier of one's own
//! (written here from RFC 9162, not keyledger's), and catch an insider who rewrote an old
//! event and recomputed everything derived from it.

use axum::http::{Method, StatusCode};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::audit::history;
use crate::keys;
use keyledger_api::checkpoints::Finding;
use keyledger_api::Role;
use keyledger_projections::audit_tree::Checkpoint;
use keyledger_tests::{on_both_backends, Backend, TestApp};

/// The auditor's own RFC 6962 / 9162 verifier: the "inner and border" decomposition of a
/// proof, as the transparency-dev verifiers do it.
mod auditor {
    use super::{Digest, Sha256};

    pub(super) type Hash = [u8; 32];

    pub(super) fn leaf(data: &[u8]) -> Hash {
        Sha256::new().chain_update([0]).chain_update(data).finalize().into()
    }

    fn node(left: &Hash, right: &Hash) -> Hash {
        Sha256::new().chain_update([1]).chain_update(left).chain_update(right).finalize().into()
    }

    /// How many of a proof's hashes are below the point where the paths of `index` and of the
    /// last leaf part, and how many are on the tree's right border above it.
    fn decompose(index: u64, size: u64) -> (usize, usize) {
        let inner = (64 - (index ^ (size - 1)).leading_zeros()) as usize;
        let border = (index >> inner).count_ones() as usize;
        (inner, border)
    }

    fn chain_inner(mut seed: Hash, proof: &[Hash], index: u64) -> Hash {
        for (i, h) in proof.iter().enumerate() {
            seed = if (index >> i) & 1 == 0 { node(&seed, h) } else { node(h, &seed) };
        }
        seed
    }

    fn chain_inner_right(mut seed: Hash, proof: &[Hash], index: u64) -> Hash {
        for (i, h) in proof.iter().enumerate() {
            if (index >> i) & 1 == 1 {
                seed = node(h, &seed);
            }
        }
        seed
    }

    fn chain_border_right(mut seed: Hash, proof: &[Hash]) -> Hash {
        for h in proof {
            seed = node(h, &seed);
        }
        seed
    }

    pub(super) fn inclusion(
        index: u64,
        size: u64,
        leaf: &Hash,
        proof: &[Hash],
        root: &Hash,
    ) -> bool {
        if index >= size {
            return false;
        }
        let (inner, border) = decompose(index, size);
        if proof.len() != inner + border {
            return false;
        }
        let hash = chain_inner(*leaf, &proof[..inner], index);
        chain_border_right(hash, &proof[inner..]) == *root
    }

    pub(super) fn consistency(from: u64, to: u64, old: &Hash, new: &Hash, proof: &[Hash]) -> bool {
        if from == to {
            return proof.is_empty() && old == new;
        }
        if from == 0 || from > to {
            return false;
        }
        let (inner, border) = decompose(from - 1, to);
        let shift = from.trailing_zeros() as usize;
        let inner = inner - shift;
        let (seed, rest) = if from == 1 << shift {
            (*old, proof)
        } else {
            match proof.split_first() {
                Some((first, rest)) => (*first, rest),
                None => return false,
            }
        };
        if rest.len() != inner + border {
            return false;
        }
        let mask = (from - 1) >> shift;
        let old_again =
            chain_border_right(chain_inner_right(seed, &rest[..inner], mask), &rest[inner..]);
        let new_again = chain_border_right(chain_inner(seed, &rest[..inner], mask), &rest[inner..]);
        old_again == *old && new_again == *new
    }
}

fn hash(hex_text: &Value) -> auditor::Hash {
    let bytes = hex::decode(hex_text.as_str().expect("hex text")).expect("hex");
    bytes.try_into().expect("32 bytes")
}

fn proof(answer: &Value) -> Vec<auditor::Hash> {
    answer["proof"].as_array().expect("a proof").iter().map(hash).collect()
}

/// Whether `checkpoint`'s signature verifies with the published key it names.
fn signed(checkpoint: &Value, published: &Value) -> bool {
    let Some(key) = published["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["key_id"] == checkpoint["key_id"])
    else {
        return false;
    };
    assert_eq!(key["algorithm"], "ed25519");
    let public = STANDARD.decode(key["public_key"].as_str().expect("key")).expect("base64");
    let id = hex::encode(Sha256::digest(&public));
    assert_eq!(key["key_id"], id[..16], "the key id is the first 16 hex of SHA-256 of the key");
    let text = format!(
        "keyledger-checkpoint/v1\n{}\n{}\n{}\n{}\n",
        checkpoint["org"].as_str().expect("org"),
        checkpoint["tree_size"],
        checkpoint["root_hash"].as_str().expect("root"),
        checkpoint["at"].as_str().expect("at"),
    );
    let signature = STANDARD.decode(checkpoint["signature"].as_str().expect("sig")).expect("b64");
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public)
        .verify(text.as_bytes(), &signature)
        .is_ok()
}

on_both_backends!(an_auditor_proves_later_history_extends_a_saved_checkpoint_and_catches_a_rewrite);

async fn an_auditor_proves_later_history_extends_a_saved_checkpoint_and_catches_a_rewrite(
    backend: Backend,
) {
    let app = TestApp::start(backend).await;
    history(&app).await;
    let auditor = app.token("acme", Role::Auditor, "carol");
    let published = app.send(Method::GET, "/v1/audit/keys", None, None).await;
    assert_eq!(published.status, StatusCode::OK, "{}", published.everything());
    let published = published.json();

    let saved = app.get("/v1/orgs/acme/audit/checkpoint", &auditor).await;
    assert_eq!(saved.status, StatusCode::OK, "{}", saved.everything());
    let saved = saved.json();
    assert_eq!(saved["org"], "acme");
    assert_eq!(saved["tree_size"], 6);
    assert!(signed(&saved, &published), "the checkpoint verifies with a published key: {saved}");
    let mut forged = saved.clone();
    forged["tree_size"] = json!(5);
    assert!(!signed(&forged, &published), "a changed field breaks the signature");
    let again = app.get("/v1/orgs/acme/audit/checkpoint", &auditor).await.json();
    assert_eq!(again, saved, "the same head, the checkpoint kept for it");

    // More history: a key stored again and rotated four times.
    let owner = app.owner("acme");
    app.post(
        "/v1/orgs/acme/keys",
        &owner,
        json!({"provider": "anthropic", "key": keys::anthropic()}),
    )
    .await;
    for _ in 0..4 {
        app.put("/v1/orgs/acme/keys/anthropic", &owner, json!({"key": keys::anthropic()})).await;
    }
    let head = app.get("/v1/orgs/acme/audit/checkpoint", &auditor).await.json();
    assert_eq!(head["tree_size"], 11);
    assert!(signed(&head, &published));

    let extends = app.get("/v1/orgs/acme/audit/proof/consistency?from=6&to=11", &auditor).await;
    assert_eq!(extends.status, StatusCode::OK, "{}", extends.everything());
    assert_eq!(
        (extends.json()["from"].clone(), extends.json()["to"].clone()),
        (json!(6), json!(11))
    );
    let (old, new) = (hash(&saved["root_hash"]), hash(&head["root_hash"]));
    assert!(auditor::consistency(6, 11, &old, &new, &proof(&extends.json())));
    assert!(!auditor::consistency(6, 11, &new, &new, &proof(&extends.json())));

    // Every entry is in the tree of 11, its leaf its hash.
    let entries = app.get("/v1/orgs/acme/audit", &auditor).await.json()["entries"].clone();
    for entry in entries.as_array().expect("entries") {
        let seq = entry["seq"].as_u64().expect("seq");
        let included = app
            .get(&format!("/v1/orgs/acme/audit/proof/inclusion?seq={seq}&tree_size=11"), &auditor)
            .await;
        assert_eq!(included.json()["leaf_index"], seq - 1);
        let leaf = auditor::leaf(&hash(&entry["hash"]));
        assert!(
            auditor::inclusion(seq - 1, 11, &leaf, &proof(&included.json()), &new),
            "seq {seq}"
        );
    }

    // The view kept a checkpoint each time the trail grew, each one signed.
    let kept = app.get("/v1/orgs/acme/audit/checkpoints?limit=1000", &auditor).await.json();
    let sizes: Vec<u64> = kept["checkpoints"]
        .as_array()
        .expect("checkpoints")
        .iter()
        .inspect(|c| assert!(signed(c, &published), "{c}"))
        .map(|c| c["tree_size"].as_u64().expect("size"))
        .collect();
    assert_eq!(sizes, (1..=11).collect::<Vec<u64>>());
    let page = app.get("/v1/orgs/acme/audit/checkpoints?after=6&limit=2", &auditor).await.json();
    assert_eq!(page["checkpoints"][0]["tree_size"], 7);
    assert_eq!(page["next"], 8);

    // An insider rewrites who stored the key (seq 2) in the log, then recomputes the trail,
    // its chain and its tree from the rewritten log, as the audit view does.
    rewrite_who_stored_the_key(&app, backend).await;
    app.state.projector.rebuild(Some("audit")).await.expect("rebuild");
    let entry = app.get("/v1/orgs/acme/audit?after=1&limit=1", &auditor).await.json();
    assert_eq!(entry["entries"][0]["actor"], "mallory", "the trail now says so");
    let chain = app.get("/v1/orgs/acme/audit/verify", &auditor).await.json();
    assert_eq!(chain["ok"], true, "the chain alone cannot tell: {chain}");

    let rewritten = app.get("/v1/orgs/acme/audit/proof/consistency?from=6&to=11", &auditor).await;
    assert_eq!(rewritten.status, StatusCode::OK);
    let live = app.get("/v1/orgs/acme/audit/proof/inclusion?seq=11&tree_size=11", &auditor).await;
    assert_eq!(live.status, StatusCode::OK);
    assert!(
        !auditor::consistency(6, 11, &old, &new, &proof(&rewritten.json())),
        "the proof no longer ties the saved checkpoint to the tree of 11"
    );

    let saved: Checkpoint = serde_json::from_value(saved).expect("a checkpoint");
    let keys: Vec<(String, String)> = published["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| {
            (
                k["key_id"].as_str().unwrap_or_default().to_owned(),
                k["public_key"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let finding = keyledger_api::checkpoints::check(&app.state.views, "acme", &saved, &keys)
        .await
        .expect("checked");
    assert_eq!(finding, Finding::Rewritten { first: Some(2), between: (2, 2) });
    app.finish().await;
}

/// An insider's edit of the log: acme's key (seq 2) was stored by mallory, not alice.
async fn rewrite_who_stored_the_key(app: &TestApp, backend: Backend) {
    let rewrite = match backend {
        Backend::Postgres => "update events set metadata = replace(metadata::text, '\"alice\"', '\"mallory\"')::json \
                              where aggregate_id = 'acme' and sequence = 2",
        Backend::Sqlite => "update events set metadata = replace(metadata, '\"alice\"', '\"mallory\"') \
                            where aggregate_id = 'acme' and sequence = 2",
    };
    assert_eq!(app.execute_sql(rewrite).await, 1);
}

on_both_backends!(proofs_refuse_what_does_not_exist_and_readers_are_those_of_the_trail);

async fn proofs_refuse_what_does_not_exist_and_readers_are_those_of_the_trail(backend: Backend) {
    let app = TestApp::start(backend).await;
    let auditor = app.token("acme", Role::Auditor, "carol");
    let empty = app.get("/v1/orgs/acme/audit/checkpoint", &auditor).await;
    assert_eq!(empty.status, StatusCode::NOT_FOUND, "nothing to sign yet: {}", empty.everything());
    history(&app).await;
    let cases: [(&str, StatusCode, &str); 7] = [
        (
            "/v1/orgs/acme/audit/proof/consistency?from=7&to=6",
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        ("/v1/orgs/acme/audit/proof/consistency?from=2&to=9", StatusCode::NOT_FOUND, "not_found"),
        ("/v1/orgs/acme/audit/proof/consistency?to=6", StatusCode::BAD_REQUEST, "invalid_request"),
        (
            "/v1/orgs/acme/audit/proof/inclusion?seq=7&tree_size=6",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "/v1/orgs/acme/audit/proof/inclusion?seq=3&tree_size=60",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        ("/v1/orgs/acme/audit/proof/inclusion?seq=0", StatusCode::BAD_REQUEST, "invalid_request"),
        ("/v1/orgs/acme/audit/checkpoints?limit=0", StatusCode::BAD_REQUEST, "invalid_request"),
    ];
    for (path, status, code) in cases {
        let answer = app.get(path, &auditor).await;
        assert_eq!(
            (answer.status, answer.code()),
            (status, code.to_owned()),
            "{path}: {}",
            answer.everything()
        );
        assert_eq!(answer.header("content-type"), "application/problem+json", "{path}");
    }
    let detail =
        app.get("/v1/orgs/acme/audit/proof/consistency?from=2&to=9", &auditor).await.json();
    assert!(detail["detail"].as_str().unwrap_or_default().contains("6 entries"), "{detail}");
    let whole = app.get("/v1/orgs/acme/audit/proof/consistency?from=6&to=6", &auditor).await.json();
    assert_eq!(whole["proof"], json!([]), "a tree is consistent with itself");

    for role in [Role::Owner, Role::Admin, Role::Auditor] {
        let reader = app.token("acme", role, "r");
        assert_eq!(app.get("/v1/orgs/acme/audit/checkpoint", &reader).await.status, StatusCode::OK);
    }
    let member = app.token("acme", Role::Member, "m");
    for path in ["/v1/orgs/acme/audit/checkpoint", "/v1/orgs/acme/audit/proof/inclusion?seq=1"] {
        assert_eq!(app.get(path, &member).await.status, StatusCode::FORBIDDEN, "{path}");
    }
    let stranger = app.token("globex", Role::Auditor, "g");
    let other = app.get("/v1/orgs/acme/audit/checkpoint", &stranger).await;
    assert_eq!(other.status, StatusCode::FORBIDDEN, "another organization's auditor");
    app.finish().await;
}

on_both_backends!(old_signing_keys_stay_listed_after_a_master_key_change);

/// A new active master key brings a new signing key; the old one stays listed, so a checkpoint
/// saved before the change still verifies.
async fn old_signing_keys_stay_listed_after_a_master_key_change(backend: Backend) {
    let app = TestApp::start(backend).await;
    history(&app).await;
    let auditor = app.token("acme", Role::Auditor, "carol");
    let saved = app.get("/v1/orgs/acme/audit/checkpoint", &auditor).await.json();
    let old_ring = app.setting("KEYLEDGER_MASTER_KEY").expect("a master key").to_owned();
    let new_ring = format!(
        "new:{},default:{old_ring}",
        keyledger_infra::crypto::MasterKeyRing::generate_encoded().as_str()
    );
    let changed = app.replica_with(&[("KEYLEDGER_MASTER_KEY", &new_ring)]).await;
    let published = changed.send(Method::GET, "/v1/audit/keys", None, None).await.json();
    let ids: Vec<&str> = published["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["key_id"].as_str())
        .collect();
    assert_eq!(ids.len(), 2, "the old key and the new: {published}");
    assert_eq!(ids[0], saved["key_id"], "the old key first");
    assert!(signed(&saved, &published), "the checkpoint saved before the change verifies");
    changed.finish().await;
    app.finish().await;
}

on_both_backends!(a_given_signing_key_signs_the_checkpoints);

async fn a_given_signing_key_signs_the_checkpoints(backend: Backend) {
    let seed = [42u8; 32];
    let app =
        TestApp::start_with(backend, &[("KEYLEDGER_AUDIT_SIGNING_KEY", &STANDARD.encode(seed))])
            .await;
    history(&app).await;
    let checkpoint = app
        .get("/v1/orgs/acme/audit/checkpoint", &app.token("acme", Role::Auditor, "carol"))
        .await
        .json();
    let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(&seed).expect("a seed");
    let public = ring::signature::KeyPair::public_key(&pair).as_ref().to_vec();
    assert_eq!(checkpoint["key_id"], hex::encode(Sha256::digest(&public))[..16]);
    let published = app.send(Method::GET, "/v1/audit/keys", None, None).await.json();
    assert!(signed(&checkpoint, &published));
    app.finish().await;
}

on_both_backends!(a_trail_rebuilt_by_another_process_grows_from_its_rebuilt_tree);

/// The audit view keeps each tree's frontier between steps. After another process rebuilt the
/// trail over a rewritten log (same size, other hashes), what this server's projector kept is
/// stale: the next entry must grow the tree as it now is, or its checkpoint's root would not
/// be the root the proofs lead to.
async fn a_trail_rebuilt_by_another_process_grows_from_its_rebuilt_tree(backend: Backend) {
    let app = TestApp::start(backend).await;
    history(&app).await;
    let auditor = app.token("acme", Role::Auditor, "carol");
    assert_eq!(app.get("/v1/orgs/acme/audit/checkpoint", &auditor).await.json()["tree_size"], 6);
    app.stop_projecting();

    rewrite_who_stored_the_key(&app, backend).await;
    let elsewhere = keyledger_projections::projector::Projector::new(
        app.state.db.clone(),
        keyledger_projections::views::all(None, None),
    );
    elsewhere.rebuild(Some("audit")).await.expect("rebuild elsewhere");

    keys::store_accepted(&app, &["anthropic"]).await;
    app.state.projector.catch_up().await.expect("this server's projector steps");

    let head = app.get("/v1/orgs/acme/audit/checkpoint", &auditor).await.json();
    assert_eq!(head["tree_size"], 7, "{head}");
    let root = hash(&head["root_hash"]);
    let entries = app.get("/v1/orgs/acme/audit", &auditor).await.json()["entries"].clone();
    assert_eq!(entries[1]["actor"], "mallory", "the rebuilt trail");
    for entry in entries.as_array().expect("entries") {
        let seq = entry["seq"].as_u64().expect("seq");
        let included = app
            .get(&format!("/v1/orgs/acme/audit/proof/inclusion?seq={seq}&tree_size=7"), &auditor)
            .await
            .json();
        let leaf = auditor::leaf(&hash(&entry["hash"]));
        assert!(
            auditor::inclusion(seq - 1, 7, &leaf, &proof(&included), &root),
            "entry {seq} is in the tree the checkpoint of 7 signs"
        );
    }
    app.finish().await;
}
