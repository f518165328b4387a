//! The `keyledger` binary: serve the API, migrate the database, issue development tokens.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use keyledger_api::{build_state, telemetry, Application, Role, TokenKeys};
use keyledger_infra::Config;
use keyledger_store::Database;

/// mimalloc rather than the system allocator: a model call allocates and frees many small
/// buffers across threads, where glibc's malloc spent a tenth of the gateway's time. (The
/// binary chooses it; the library leaves the choice to whoever links it.)
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Keeps the process's memory on 4 KiB pages. mimalloc used to ask for transparent huge pages
/// on the 1 GiB it reserves (`MADV_HUGEPAGE`), so the kernel's khugepaged, which walks every
/// process that asked (4,096 pages each 10 s by default), made each 2 MiB of the heap that held
/// a page in use resident as a whole once it got there: in every 30-minute soak the RSS
/// stepped up 8–14 MiB between minutes 9 and 14 while the live heap stayed flat. mimalloc is
/// now built not to ask (`no_thp`); turning them off for the process holds also where the
/// system gives them to everyone (`transparent_hugepage/enabled = always`).
fn keep_small_pages() {
    #[cfg(target_os = "linux")]
    if let Err(error) = rustix::thread::disable_transparent_huge_pages(true) {
        tracing::warn!(%error, "transparent huge pages stay allowed: the RSS may step up later");
    }
}

/// keyledger keeps organizations' own AI-provider keys: write-only, encrypted, audited.
#[derive(Debug, Parser)]
#[command(name = "keyledger", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP API.
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Print a signed bearer token (for development and scripts).
    Token {
        #[arg(long)]
        org: String,
        #[arg(long, value_enum)]
        role: Role,
        #[arg(long)]
        sub: String,
        /// Lifetime such as 30m, 1h, 7d.
        #[arg(long, default_value = "1h", value_parser = parse_ttl)]
        ttl: Duration,
    },
    /// Work on the read models.
    Projections {
        #[command(subcommand)]
        command: ProjectionsCommand,
    },
    /// Work on the audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Copy the SQLite database, online and consistent, into a new file (PostgreSQL: pg_dump).
    Backup {
        /// The file to write; it must not exist.
        path: std::path::PathBuf,
    },
    /// Master-key rotation: move key material to the active master key, see what is where.
    MasterKey {
        #[command(subcommand)]
        command: MasterKeyCommand,
    },
}

#[derive(Debug, Subcommand)]
enum MasterKeyCommand {
    /// Re-seal every key version under the active (first) master key of KEYLEDGER_MASTER_KEY.
    /// Safe while keyledger serves; run it again after an interruption.
    Rewrap,
    /// How many key versions are sealed under each master key id.
    Status,
}

#[derive(Debug, Subcommand)]
enum ProjectionsCommand {
    /// Rebuild a projection (or all of them) from the start of the log.
    Rebuild {
        /// keys, provider_order, org_status, audit or usage; all when omitted.
        name: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Verify an organization's audit trail; exit 0 if intact, 1 if not. With `--checkpoint`,
    /// also that the trail is still the history a checkpoint saved earlier signed.
    Verify {
        #[arg(long)]
        org: String,
        /// A checkpoint saved from `GET /v1/orgs/{org}/audit/checkpoint`.
        #[arg(long)]
        checkpoint: Option<std::path::PathBuf>,
    },
}

/// A checkpoint as `GET …/audit/checkpoint` gave it.
fn read_checkpoint(
    path: &std::path::Path,
) -> Result<keyledger_projections::audit_tree::Checkpoint, Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the checkpoint {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| {
        format!("{} is not a checkpoint as GET …/audit/checkpoint gives one: {e}", path.display())
            .into()
    })
}

/// Checks `saved` against `org`'s live trail; an error (exit 1) that says what differs.
async fn check_checkpoint(
    state: &keyledger_api::AppState,
    org: &str,
    saved: &keyledger_projections::audit_tree::Checkpoint,
) -> Result<(), Box<dyn std::error::Error>> {
    use keyledger_api::checkpoints::Finding;
    let mut keys: Vec<(String, String)> =
        keyledger_projections::audit_tree::signing_keys(&state.views)
            .await?
            .into_iter()
            .map(|k| (k.key_id, k.public_key))
            .collect();
    keys.push((state.audit_signer.key_id().to_owned(), state.audit_signer.public_key()));
    let finding = keyledger_api::checkpoints::check(&state.views, org, saved, &keys).await?;
    let failure = match finding {
        Finding::Consistent { tree_size, live_size } => {
            println!(
                "the checkpoint of {org} at {} ({tree_size} entries, signed by {}) holds: the \
                 trail's first {tree_size} of {live_size} entries are the history it signed",
                saved.at, saved.key_id
            );
            return Ok(());
        }
        Finding::BadSignature => format!(
            "the checkpoint's signature does not verify with key {} (or no key by that id has \
             signed here)",
            saved.key_id
        ),
        Finding::OtherOrg(other) => format!("the checkpoint is of {other}, not {org}"),
        Finding::Shortened { tree_size, live_size } => format!(
            "the trail of {org} has {live_size} entries, fewer than the {tree_size} the \
             checkpoint signed: entries were removed"
        ),
        Finding::Rewritten { first: Some(seq), .. } => format!(
            "the trail of {org} is not the history the checkpoint signed: the first entry that \
             differs is seq {seq}"
        ),
        Finding::Rewritten { first: None, between: (low, high) } => format!(
            "the trail of {org} is not the history the checkpoint signed: the first entry that \
             differs is one of seq {low} to {high}"
        ),
    };
    Err(failure.into())
}

fn parse_ttl(text: &str) -> Result<Duration, String> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 =
        number.parse().map_err(|_| format!("{text:?} is not a duration like 30m or 1h"))?;
    let seconds = match unit {
        "s" | "" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: use s, m, h or d")),
    };
    let ttl = number
        .checked_mul(seconds)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is too long"))?;
    if ttl > keyledger_api::auth::MAX_TOKEN_LIFETIME || ttl.is_zero() {
        return Err(format!("{text:?}: a token lives from 1s to 30d"));
    }
    Ok(ttl)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let telemetry = match telemetry::init() {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("keyledger: configuration: {error}");
            return ExitCode::from(2);
        }
    };
    keep_small_pages();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("keyledger: configuration: {error}");
            return ExitCode::from(2);
        }
    };
    let outcome = run(cli.command, config).await;
    telemetry.shutdown().await;
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("keyledger: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: Config) -> Result<(), Box<dyn std::error::Error>> {
    match command {
        Command::Serve => serve(config).await,
        Command::Migrate => {
            let db = Database::connect(&config.database_url).await?;
            db.migrate().await?;
            println!("migrations applied ({})", db.backend());
            Ok(())
        }
        Command::Projections { command: ProjectionsCommand::Rebuild { name } } => {
            let state = build_state(config).await?;
            let started = std::time::Instant::now();
            let events = state.projector.rebuild(name.as_deref()).await?;
            let seconds = started.elapsed().as_secs_f64();
            println!(
                "rebuilt {} from {events} events in {seconds:.2}s ({:.0} events/s)",
                name.as_deref().unwrap_or("all projections"),
                events as f64 / seconds.max(f64::EPSILON)
            );
            Ok(())
        }
        Command::Audit { command: AuditCommand::Verify { org, checkpoint } } => {
            let org = keyledger_domain::OrgId::parse(&org)?;
            let saved = match &checkpoint {
                Some(path) => Some(read_checkpoint(path)?),
                None => None,
            };
            let state = build_state(config).await?;
            state.projector.catch_up().await?;
            if let Some(saved) = saved {
                check_checkpoint(&state, org.as_str(), &saved).await?;
            }
            let report = keyledger_projections::audit::verify(&state.views, org.as_str()).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            if report.ok {
                Ok(())
            } else {
                Err(format!(
                    "the audit trail of {org} is broken at seq {}",
                    report.first_bad_seq.unwrap_or_default()
                )
                .into())
            }
        }
        Command::Backup { path } => {
            let db = Database::connect(&config.database_url).await?;
            let started = std::time::Instant::now();
            db.backup_into(&path).await?;
            println!(
                "backed up into {} in {:.2}s; it holds sealed key material: keep it as safe as \
                 the master key, which it needs",
                path.display(),
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Command::MasterKey { command: MasterKeyCommand::Status } => {
            let state = build_state(config).await?;
            for (id, versions, active) in state.keyrings.material_versions().await? {
                let note = if active { " (active)" } else { "" };
                println!("{id}{note}: {versions} key version(s)");
            }
            Ok(())
        }
        Command::MasterKey { command: MasterKeyCommand::Rewrap } => rewrap(config).await,
        Command::Token { org, role, sub, ttl } => {
            if org != "*" {
                keyledger_domain::OrgId::parse(&org)?;
            }
            let keys = TokenKeys::configured(
                config.jwt_secret.as_ref(),
                None,
                config.jwt_issuer.clone(),
                config.jwt_audience.clone(),
            );
            println!("{}", keys.issue(&org, role, &sub, ttl)?);
            Ok(())
        }
    }
}

/// `keyledger master-key rewrap`: re-seals organization by organization, with a progress line
/// on a terminal and a summary at the end.
async fn rewrap(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    use std::io::{IsTerminal, Write};

    let state = build_state(config).await?;
    // Each re-seal, like any command, is done once no replica can still call with the material
    // it replaced. Joining the replicas' watch lets them say so at once; without it (PostgreSQL)
    // every organization would wait out the replicas' lease.
    state.keyrings.calls().start_watching();
    let operator = std::env::var("USER").unwrap_or_else(|_| "operator".to_owned());
    let actor = keyledger_infra::Actor {
        sub: format!("{operator} (keyledger master-key rewrap)"),
        role: "operator".to_owned(),
        request_id: uuid::Uuid::new_v4().to_string(),
    };
    let terminal = std::io::stderr().is_terminal();
    let report = state
        .keyrings
        .reseal_all(&actor, |so_far| {
            if terminal {
                let mut err = std::io::stderr();
                let _ = write!(
                    err,
                    "\rre-sealing: {} key version(s) in {} organization(s), {:.1}s",
                    so_far.resealed,
                    so_far.organizations,
                    so_far.took.as_secs_f64()
                );
                let _ = err.flush();
            }
        })
        .await;
    if terminal {
        eprintln!();
    }
    let report = report?;
    println!(
        "re-sealed {} key version(s) in {} organization(s); {} already under the active master key; took {:.2}s",
        report.resealed,
        report.organizations,
        report.already_current,
        report.took.as_secs_f64()
    );
    Ok(())
}

async fn serve(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    let dev_mode = !config.production;
    if !config.dev_secrets.is_empty() {
        for path in &config.dev_secrets {
            tracing::warn!(path = %path.display(), "DEV MODE: using a secret generated into the data dir");
        }
        tracing::warn!(
            "DEV MODE: not for production (set KEYLEDGER_MASTER_KEY and KEYLEDGER_JWT_SECRET, \
             or KEYLEDGER_ENV=production to refuse to start without them). Get a token with: \
             keyledger token --org acme --role owner --sub you"
        );
    }
    let backend = if config.database_url.starts_with("sqlite") { "sqlite" } else { "postgres" };
    let app = Application::build(config).await?;
    let addr = app.local_addr()?;
    tracing::info!(%addr, backend, "keyledger listening");
    if dev_mode {
        tracing::info!(
            "console: http://{addr}/console/ (sign in with a token from `keyledger token`)"
        );
    }
    app.run_until(keyledger_api::app::shutdown_signal()).await?;
    Ok(())
}
