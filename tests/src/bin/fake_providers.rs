//! The fake providers as a process of their own, for the SDK suite (`tests/sdk`): every
//! registry provider under `http://127.0.0.1:PORT/<provider id>`, steered under `/__admin/`.
//! Prints the port it listens on, then serves until it is killed.
//!
//! `fake-providers [ADDRESS]` (default `127.0.0.1:0`, a free port).

use std::io::Write as _;

use keyledger_tests::FakeProvider;

#[tokio::main]
async fn main() {
    let address = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let fake = FakeProvider::start_on(&address).await;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{}", fake.addr().port()).expect("stdout");
    stdout.flush().expect("stdout");
    std::future::pending::<()>().await;
}
