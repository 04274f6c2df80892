//! Running one unit of work on the DNS runtime so that a panic inside it becomes an error
//! value: the caller waiting for a reply then gets one, and the runtime thread carries on.

use std::future::Future;

/// Runs `work` as its own tokio task and waits for it. A panic in `work` (a bug, never an
/// expected outcome) is returned as `Err(message)` instead of silently dropping the reply.
/// Must be awaited inside a tokio runtime.
pub async fn catch_panic<F>(work: F) -> Result<F::Output, String>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(work).await.map_err(|error| {
        if !error.is_panic() {
            return format!("the DNS task was cancelled: {error}");
        }
        let payload = error.into_panic();
        let detail = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".to_string());
        format!("internal error in the DNS task (a bug, please report it): {detail}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // One worker thread, as in the NIF: the panic must not take it down.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_panic_becomes_an_error_and_the_runtime_keeps_working() {
        let error = catch_panic(async { panic!("boom {}", 42) })
            .await
            .unwrap_err();
        assert_eq!(
            error,
            "internal error in the DNS task (a bug, please report it): boom 42"
        );
        let error = catch_panic(async { panic!("static") }).await.unwrap_err();
        assert!(error.ends_with(": static"), "{error}");
        for i in 0..100 {
            assert_eq!(catch_panic(async move { i * 2 }).await, Ok(i * 2));
        }
        let later = tokio::spawn(async {
            tokio::task::yield_now().await;
            7
        });
        assert_eq!(later.await.unwrap(), 7);
    }
}
