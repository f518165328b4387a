//! Signed checkpoints and Merkle proofs over a long audit trail.
//!
//! One organization's trail is seeded with `--entries` entries and their tree (the complete
//! subtrees the audit view keeps), straight into the tables. Then, with keyledger serving:
//! - **checkpoint**: the checkpoint of the head signed and kept (`checkpoints::current`), the
//!   kept one removed before each sample (untimed) so each is signed afresh;
//! - **inclusion / consistency proof**: `GET …/audit/proof/inclusion?seq=S&tree_size=N` and
//!   `…/proof/consistency?from=M&to=N` over HTTP for random `S` and `M`, each answer checked
//!   against the signed root.
//!
//! Writes a markdown table to `bench/results/audit.md`.
//!
//! `cargo run --release -p keyledger-bench --bin audit -- --entries 1000000`

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use clap::Parser;
use sha2::{Digest, Sha256};

use keyledger_bench::{ms, on_backends, percentile, serve};
use keyledger_domain::merkle::{self, Hash, Node};
use keyledger_store::{Arg, Database};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
struct Args {
    /// Entries in the measured trail.
    #[arg(long, default_value_t = 1_000_000)]
    entries: u64,
    /// Samples of each measurement.
    #[arg(long, default_value_t = 500)]
    samples: usize,
    /// `postgres`, `sqlite` or `both`.
    #[arg(long, default_value = "both")]
    backend: String,
    #[arg(long, default_value = "bench/results/audit.md")]
    out: std::path::PathBuf,
}

const ORG: &str = "longtrail";

/// Rows one seeding transaction writes.
const SEED_CHUNK: usize = 100_000;

#[derive(Debug)]
struct Outcome {
    backend: &'static str,
    seeded: Duration,
    sign: [Duration; 2],
    inclusion: [Duration; 2],
    consistency: [Duration; 2],
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let outcomes = on_backends(&args.backend, |backend, url| run(backend, url, &args)).await;
    let report = report(&outcomes, &args);
    print!("{report}");
    std::fs::write(&args.out, report).expect("write the results");
}

async fn run(backend: &'static str, url: String, args: &Args) -> Outcome {
    let served = serve(&url, &[]).await;
    let db = served.state.views.clone();
    eprintln!("[{backend}] seeding {} entries and their tree", args.entries);
    let started = Instant::now();
    let root = seed(&db, args.entries).await;
    let seeded = started.elapsed();

    eprintln!("[{backend}] signing checkpoints");
    let mut signing = Vec::with_capacity(args.samples);
    for _ in 0..args.samples {
        db.execute("delete from audit_checkpoints where org_id = $1", &[Arg::Text(ORG.to_owned())])
            .await
            .expect("forget");
        let started = Instant::now();
        let checkpoint = keyledger_api::checkpoints::current(&db, &served.state.audit_signer, ORG)
            .await
            .expect("signed")
            .expect("a checkpoint");
        signing.push(started.elapsed());
        assert_eq!(checkpoint.root_hash, hex::encode(root), "the root of the seeded tree");
        assert_eq!(checkpoint.tree_size, args.entries as i64);
    }

    let token = served
        .state
        .tokens
        .issue(ORG, keyledger_api::Role::Auditor, "bench", Duration::from_secs(3600))
        .expect("token");
    let client = reqwest::Client::new();
    let size = args.entries;
    let get = |path: String| {
        let (client, token, base) = (client.clone(), token.clone(), served.base.clone());
        async move {
            let started = Instant::now();
            let response =
                client.get(format!("{base}{path}")).bearer_auth(&token).send().await.expect("get");
            assert!(response.status().is_success(), "{path}: {}", response.status());
            let body: serde_json::Value = response.json().await.expect("json");
            (started.elapsed(), proof_of(&body))
        }
    };

    eprintln!("[{backend}] inclusion proofs");
    let mut inclusion = Vec::with_capacity(args.samples);
    for sample in 0..args.samples as u64 {
        let seq = 1 + spread(sample) % size;
        let (took, proof) =
            get(format!("/v1/orgs/{ORG}/audit/proof/inclusion?seq={seq}&tree_size={size}")).await;
        inclusion.push(took);
        let leaf = merkle::leaf_hash(&entry_hash(seq));
        assert!(merkle::verify_inclusion(&leaf, seq - 1, size, &proof, &root), "seq {seq}");
    }

    eprintln!("[{backend}] consistency proofs");
    let mut consistency = Vec::with_capacity(args.samples);
    let old_roots = old_roots(args.entries, args.samples);
    for (from, old_root) in &old_roots {
        let (took, proof) =
            get(format!("/v1/orgs/{ORG}/audit/proof/consistency?from={from}&to={size}")).await;
        consistency.push(took);
        assert!(merkle::verify_consistency(*from, size, old_root, &root, &proof), "from {from}");
    }

    let quantiles = |mut times: Vec<Duration>| {
        times.sort();
        [percentile(&times, 50.0), percentile(&times, 99.0)]
    };
    Outcome {
        backend,
        seeded,
        sign: quantiles(signing),
        inclusion: quantiles(inclusion),
        consistency: quantiles(consistency),
    }
}

/// A spread of numbers over the trail (a multiplicative hash), so samples are not neighbours.
fn spread(sample: u64) -> u64 {
    sample.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20
}

/// The made-up hash of entry `seq`.
fn entry_hash(seq: u64) -> [u8; 32] {
    Sha256::digest(seq.to_be_bytes()).into()
}

fn proof_of(body: &serde_json::Value) -> Vec<Hash> {
    body["proof"]
        .as_array()
        .expect("a proof")
        .iter()
        .map(|h| {
            let mut hash = [0u8; 32];
            hex::decode_to_slice(h.as_str().expect("hex"), &mut hash).expect("32 bytes");
            hash
        })
        .collect()
}

/// Sizes to prove consistency from, with their roots (from a tree built in memory, as an
/// auditor who saved those checkpoints would hold them).
fn old_roots(entries: u64, samples: usize) -> Vec<(u64, Hash)> {
    let mut tree = merkle::MemoryTree::default();
    let mut sizes: Vec<u64> = (0..samples as u64).map(|s| 1 + spread(s) % entries).collect();
    sizes.sort_unstable();
    let mut roots = Vec::with_capacity(samples);
    let mut wanted = sizes.iter().peekable();
    for seq in 1..=entries {
        tree.push(merkle::leaf_hash(&entry_hash(seq)));
        while wanted.peek() == Some(&&seq) {
            roots.push((seq, merkle::root(&tree, seq)));
            wanted.next();
        }
    }
    roots
}

/// Writes the trail's entries and every complete subtree of its tree, as the audit view would
/// have; the root.
async fn seed(db: &Database, entries: u64) -> Hash {
    let at = Utc::now();
    let mut known: HashMap<Node, Hash> = HashMap::new();
    let mut seq = 1;
    let mut prev = keyledger_projections::audit::GENESIS.to_owned();
    while seq <= entries {
        let last = (seq + SEED_CHUNK as u64 - 1).min(entries);
        let mut trail = Vec::with_capacity(SEED_CHUNK);
        let mut nodes = Vec::with_capacity(SEED_CHUNK * 2);
        for s in seq..=last {
            let hash = entry_hash(s);
            let hash_hex = hex::encode(hash);
            trail.push(vec![
                Arg::Text(ORG.to_owned()),
                Arg::Int(s as i64),
                Arg::Time(at),
                Arg::Text("bench".to_owned()),
                Arg::Text("key.rotated".to_owned()),
                Arg::Text("AI key rotated".to_owned()),
                Arg::OptText(Some("openai".to_owned())),
                Arg::Text("{}".to_owned()),
                Arg::Text(std::mem::replace(&mut prev, hash_hex.clone())),
                Arg::Text(hash_hex),
                Arg::Int(s as i64),
            ]);
            for (node, node_hash) in merkle::append(&mut known, s - 1, merkle::leaf_hash(&hash)) {
                nodes.push(vec![
                    Arg::Text(ORG.to_owned()),
                    Arg::Int(i64::from(node.level)),
                    Arg::Int(node.index as i64),
                    Arg::Text(hex::encode(node_hash)),
                ]);
            }
        }
        // Only the frontier is needed to go on appending.
        let frontier = merkle::frontier(last);
        known.retain(|node, _| frontier.contains(node));
        let mut tx = db.begin().await.expect("begin");
        tx.insert_rows("audit_log", &keyledger_projections::audit::LOG_COLUMNS, &trail)
            .await
            .expect("trail");
        tx.insert_rows("audit_tree", &["org_id", "level", "idx", "hash"], &nodes)
            .await
            .expect("tree");
        tx.commit().await.expect("commit");
        seq = last + 1;
    }
    merkle::root(&|node| known[&node], entries)
}

fn report(outcomes: &[Outcome], args: &Args) -> String {
    let mut out = String::from("# Audit checkpoints and proofs\n\n");
    out.push_str(&format!(
        "Command: `cargo run --release -p keyledger-bench --bin audit -- --entries {} --samples {}`  \n",
        args.entries, args.samples
    ));
    out.push_str(&format!(
        "Run: {} on this 2-core machine, keyledger and the load in one process.\n\n",
        Utc::now().format("%Y-%m-%d %H:%M UTC")
    ));
    out.push_str("| backend | entries | seeding (trail and tree) | checkpoint signed p50 / p99 (ms) | inclusion proof p50 / p99 (ms) | consistency proof p50 / p99 (ms) |\n");
    out.push_str("|---|---|---|---|---|---|\n");
    for o in outcomes {
        out.push_str(&format!(
            "| {} | {} | {:.1} s | {} / {} | {} / {} | {} / {} |\n",
            o.backend,
            args.entries,
            o.seeded.as_secs_f64(),
            ms(o.sign[0]),
            ms(o.sign[1]),
            ms(o.inclusion[0]),
            ms(o.inclusion[1]),
            ms(o.consistency[0]),
            ms(o.consistency[1]),
        ));
    }
    out.push_str("\nCheckpoint: the root of the whole trail from the kept complete subtrees it needs (one statement), signed with Ed25519 and kept (one insert), the kept one removed before each sample so each is signed afresh. Proofs: over HTTP as an auditor, the answer checked against the signed root (inclusion) or against the root of the older tree, computed apart (consistency).\n");
    out
}
