//! The test harness: keyledger's real router over a fresh PostgreSQL database or SQLite file,
//! fake providers on loopback, tokens, and captured log output.

pub mod app;
pub mod fake_provider;
pub mod logs;
pub mod postgres;
pub mod store_proxy;

pub use logs::captured;

pub use app::{Backend, TestApp, TestResponse};
pub use fake_provider::FakeProvider;
pub use store_proxy::StoreProxy;

/// Runs an async test body against both backends, as two tests named after it.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn on_sqlite() {
                    super::$name($crate::Backend::Sqlite).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn on_postgres() {
                    super::$name($crate::Backend::Postgres).await;
                }
            }
        )*
    };
}
