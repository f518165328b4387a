//! The access log of a real `keyledger serve` writing to a file, as a service manager or a
//! container runtime collects it: a line per request, per failed request or none, as
//! `KEYLEDGER_ACCESS_LOG` says; JSON lines with `KEYLEDGER_LOG_FORMAT=json`; and never a
//! terminal's colour codes.

mod harness;

use harness::Setup;

const ACCESS_LINE: &str = "finished processing request";

/// The log of a server run with `extra` that answered one 200, one 401 and one 404.
async fn log_of(extra: &[(&str, &str)]) -> String {
    let setup = Setup::new(false).await;
    let log = setup.dir.join("stderr.log");
    let mut env = vec![("RUST_LOG", "info")];
    env.extend_from_slice(extra);
    let server = setup.serve_logging(&env, &log).await;
    let client = reqwest::Client::new();
    let owner = setup.token("acme", "owner");
    let ok = client.get(format!("{}/v1/orgs/acme", server.base)).bearer_auth(owner);
    assert_eq!(ok.send().await.expect("200").status(), 200);
    let refused = client.get(format!("{}/v1/orgs/acme", server.base)).bearer_auth("nope");
    assert_eq!(refused.send().await.expect("401").status(), 401);
    let missing = client.get(format!("{}/v1/no-such-thing", server.base)).send().await;
    assert_eq!(missing.expect("404").status(), 404);
    server.stop();
    std::fs::read_to_string(&log).expect("the log")
}

fn access_lines(log: &str) -> Vec<&str> {
    log.lines().filter(|line| line.contains(ACCESS_LINE)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_logs_every_request_and_errors_only_the_failed_ones() {
    let all = log_of(&[("KEYLEDGER_ACCESS_LOG", "all")]).await;
    let lines = access_lines(&all);
    // The health checks of the harness's start-up wait are requests too.
    assert!(lines.iter().any(|l| l.contains("status=200")), "{all}");
    assert!(
        lines.iter().any(|l| l.contains("status=401"))
            && lines.iter().any(|l| l.contains("status=404"))
    );
    assert!(!all.contains('\u{1b}'), "no colour codes in a file: {all}");

    let errors = log_of(&[("KEYLEDGER_ACCESS_LOG", "errors")]).await;
    let lines = access_lines(&errors);
    assert_eq!(lines.len(), 2, "the 401 and the 404 only: {errors}");
    assert!(lines.iter().all(|l| !l.contains("status=200")));

    let production = log_of(&[("KEYLEDGER_ENV", "production")]).await;
    assert_eq!(access_lines(&production).len(), 2, "errors is production's default: {production}");

    let off = log_of(&[("KEYLEDGER_ACCESS_LOG", "off")]).await;
    assert!(access_lines(&off).is_empty(), "{off}");
    assert!(off.contains("keyledger listening"), "the rest of the log stays: {off}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_format_writes_one_json_object_a_line() {
    let log = log_of(&[("KEYLEDGER_ACCESS_LOG", "all"), ("KEYLEDGER_LOG_FORMAT", "json")]).await;
    let mut access = 0;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let entry: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(entry["level"].is_string() && entry["timestamp"].is_string(), "{line}");
        if entry["fields"]["message"] == ACCESS_LINE {
            access += 1;
            assert!(entry["span"]["path"].is_string(), "the request's span is in the line: {line}");
        }
    }
    assert!(access >= 3, "{log}");
}
