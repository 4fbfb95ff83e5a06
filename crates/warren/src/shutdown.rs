//! The stop signal: SIGTERM (what `docker compose stop` and supervisors send) or Ctrl-C.

/// Completes on SIGTERM or SIGINT. Pass it to [`crate::Worker::run`].
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = int.recv() => tracing::info!("SIGINT received"),
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Completes on SIGTERM or SIGINT, or when the process that started this one (a `warren up`
/// fleet, which sets `WARREN_FLEET_PID`) is gone, so a fleet that dies cannot leave its workers
/// running unsupervised.
pub async fn shutdown_signal_or_orphaned() {
    #[cfg(unix)]
    {
        let fleet: Option<u32> = std::env::var("WARREN_FLEET_PID").ok().and_then(|p| p.parse().ok());
        if let Some(fleet) = fleet {
            let orphaned = async move {
                loop {
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    if std::os::unix::process::parent_id() != fleet {
                        tracing::warn!(fleet, "the fleet that started this worker is gone; stopping");
                        return;
                    }
                }
            };
            tokio::select! {
                _ = shutdown_signal() => {}
                _ = orphaned => {}
            }
            return;
        }
    }
    shutdown_signal().await
}
