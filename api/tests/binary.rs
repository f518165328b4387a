//! The real `keyledger` binary: dev mode on the embedded default, `token`, `migrate`, and a
//! graceful stop on SIGTERM.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn keyledger(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_keyledger"));
    command
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info");
    command
}

/// A new, empty directory of this test run named after `test`.
fn fresh_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("keyledger-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

/// `keyledger serve` started in `dir` on a free loopback port, its log going to `stderr`, and
/// the base URL it will answer on.
fn serve(dir: &Path, stderr: Stdio) -> (Child, String) {
    let port = free_port();
    let server = keyledger(dir)
        .arg("serve")
        .env("KEYLEDGER_LISTEN", format!("127.0.0.1:{port}"))
        .stderr(stderr)
        .spawn()
        .expect("spawn keyledger serve");
    (server, format!("http://127.0.0.1:{port}"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

async fn wait_ready(base: &str) -> bool {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        if let Ok(response) = reqwest::get(format!("{base}/readyz")).await {
            if response.status().is_success() {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn dev_mode_serves_the_embedded_default_and_stops_gracefully_on_sigterm() {
    let dir = fresh_dir("bin");
    let (mut server, base) = serve(&dir, Stdio::piped());
    assert!(wait_ready(&base).await, "keyledger serve did not become ready");
    assert!(dir.join("keyledger.db").exists(), "the embedded database is created");
    assert!(
        dir.join(".keyledger/master.key").exists() && dir.join(".keyledger/jwt.secret").exists()
    );

    let token = keyledger(&dir)
        .args(["token", "--org", "acme", "--role", "owner", "--sub", "alice", "--ttl", "10m"])
        .output()
        .expect("keyledger token");
    assert!(token.status.success());
    let token = String::from_utf8(token.stdout).expect("utf-8").trim().to_owned();
    let status = reqwest::Client::new()
        .get(format!("{base}/v1/orgs/acme"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("request");
    assert_eq!(status.status(), 200, "a token from `keyledger token` is accepted by `serve`");
    let body: serde_json::Value = status.json().await.expect("json");
    assert_eq!(body["plan"], "starter");
    let too_long = keyledger(&dir)
        .args(["token", "--org", "acme", "--role", "owner", "--sub", "alice", "--ttl", "31d"])
        .output()
        .expect("keyledger token");
    assert!(!too_long.status.success(), "no token lives longer than 30 days");
    assert!(String::from_utf8_lossy(&too_long.stderr).contains("30d"));

    let pid = server.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
    let exit = server.wait().expect("wait");
    assert!(exit.success(), "exits cleanly on SIGTERM: {exit:?}");
    let mut log = String::new();
    std::io::Read::read_to_string(&mut server.stderr.take().expect("stderr"), &mut log)
        .expect("log");
    assert!(log.contains("DEV MODE"), "dev mode warns loudly: {log}");
    assert!(log.contains("keyledger token --org"), "and says how to get a token");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn production_refuses_to_start_without_secrets() {
    let dir = fresh_dir("prod");
    let output =
        keyledger(&dir).arg("migrate").env("KEYLEDGER_ENV", "production").output().expect("run");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("KEYLEDGER_MASTER_KEY"));
    assert!(!dir.join(".keyledger").exists(), "nothing is generated in production");
    std::fs::remove_dir_all(&dir).ok();
}

/// The served process has transparent huge pages off (`prctl(PR_SET_THP_DISABLE)`), so the
/// kernel never makes a 2 MiB range of the heap resident for the one page of it in use: without
/// it, RSS stepped up 8–14 MiB about ten minutes into every soak.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn the_served_process_keeps_its_memory_on_small_pages() {
    let dir = fresh_dir("pages");
    let (mut server, base) = serve(&dir, Stdio::null());
    let ready = wait_ready(&base).await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.id()));
    server.kill().ok();
    server.wait().ok();
    std::fs::remove_dir_all(&dir).ok();
    assert!(ready, "keyledger serve did not become ready");
    let status = status.expect("/proc/PID/status");
    let thp = status.lines().find_map(|line| line.strip_prefix("THP_enabled:")).map(str::trim);
    assert_eq!(thp, Some("0"), "transparent huge pages are off for the process");
}
