//! Cancellation safety of the database layer: a caller dropped while its transaction begins — a
//! daemon whose connection drops during a claim, a client gone mid-request — leaves no transaction
//! open on the pooled connection the next caller gets (sqlx 0.8.6 would: transact-rs/sqlx#4393).

mod common;

use std::task::Poll;

#[tokio::test]
async fn a_transaction_cancelled_while_it_begins_leaves_no_transaction_behind() {
    let url = common::fresh_database().await;
    // One connection, so every call below gets the one a cancelled begin used.
    let pool = paddock::db::connect(&url, 1).await.expect("connect");
    let mut cancelled = 0;
    for i in 0..300u32 {
        // Dropped after 1–3 polls: the first sends BEGIN and waits for its answer.
        let mut begin = Box::pin(paddock::db::begin_hot(&pool));
        let mut begun = None;
        for _ in 0..=(i % 3) {
            if let Poll::Ready(r) = futures::poll!(begin.as_mut()) {
                begun = Some(r);
                break;
            }
            tokio::task::yield_now().await;
        }
        drop(begin);
        match begun {
            None => cancelled += 1,
            Some(tx) => tx.expect("begin").rollback().await.expect("rollback"),
        }
        // Inside a leftover transaction of `begin_hot`, its `SET LOCAL` still holds.
        let leftover: bool =
            sqlx::query_scalar("SELECT current_setting('plan_cache_mode') = 'force_generic_plan'")
                .fetch_one(&pool)
                .await
                .expect("check");
        assert!(
            !leftover,
            "after {cancelled} cancelled begins, the pooled connection was left inside a transaction"
        );
    }
    assert!(
        cancelled > 0,
        "no begin was cancelled: the test proves nothing"
    );
}
