//! Listeners for PostgreSQL's notifications keep to connections of their own: a reconnect that
//! is cut short must not leave a subscribed connection where commands draw theirs.

use std::time::Duration;

use futures::FutureExt as _;
use keyledger_store::Database;
use keyledger_tests::postgres::{drop_database, fresh_database};
use sqlx::Connection as _;

const CHANNEL: &str = "keyledger_events.Keyring";

#[tokio::test]
async fn a_listener_reconnect_cut_short_leaves_nothing_subscribed_in_the_shared_pool() {
    let url = fresh_database().await;
    let Database::Postgres(pool) = Database::connect(&url).await.expect("connect") else {
        unreachable!("a postgres:// URL")
    };
    // A pool that has served a few requests at once, as a running server's has.
    let warm: Vec<_> =
        futures::future::join_all((0..4).map(|_| pool.acquire())).await.into_iter().collect();
    drop(warm);
    let mut listener = keyledger_store::database::listener(&pool).await.expect("listener");
    listener.listen(CHANNEL).await.expect("listen");

    let pid: i32 = sqlx::query_scalar("select pg_backend_pid()")
        .fetch_one(&mut listener)
        .await
        .expect("the listener's backend");

    // The database drops the listener's connection (a restart, a flaky network). The
    // projector's drains (`now_or_never`, before every step) then start reconnects and give
    // them up wherever they stand, as a `select!` or a timeout may too.
    sqlx::query("select pg_terminate_backend($1)").bind(pid).execute(&pool).await.expect("kill");
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..5 {
        let _ = listener.try_recv().now_or_never();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let announce = || sqlx::query("select pg_notify($1, 'committed')").bind(CHANNEL);
    for _ in 0..3 {
        announce().execute(&pool).await.expect("notify");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Every connection the pool hands out: subscribed to nothing, and its next query answers.
    let mut drawn = Vec::new();
    while pool.num_idle() > 0 {
        drawn.push(pool.acquire().await.expect("acquire"));
    }
    assert!(!drawn.is_empty(), "the pool holds connections to look at");
    for connection in &mut drawn {
        let channels: Vec<String> = sqlx::query_scalar("select pg_listening_channels()")
            .fetch_all(&mut **connection)
            .await
            .expect("a pooled connection answers after notifications");
        assert!(channels.is_empty(), "a pooled connection listens to {channels:?}");
    }
    drop(drawn);

    // And the listener, once whole again, hears what is announced.
    let mut announcer = sqlx::PgConnection::connect(&url).await.expect("connect");
    let heard = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            announce().execute(&mut announcer).await.expect("notify");
            if let Ok(Ok(Some(notification))) =
                tokio::time::timeout(Duration::from_millis(200), listener.try_recv()).await
            {
                return notification.payload().to_owned();
            }
        }
    })
    .await;
    assert_eq!(heard.as_deref(), Ok("committed"), "the listener hears again after reconnecting");
    drop(listener);
    pool.close().await;
    drop_database(&url).await;
}
