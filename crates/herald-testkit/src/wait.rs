//! Waiting for a condition in a test: polled until it holds, failing the test
//! once a deadline passes (never a fixed sleep standing in for synchronisation).

use std::future::Future;
use std::time::Duration;

/// Polls `probe` until it returns `Some`, and returns that value; fails the
/// test, naming `what` it waited for, once `deadline` has passed.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = tokio::time::Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
