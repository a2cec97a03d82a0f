//! `herald serve`: open the store, bootstrap the first account, serve the API until SIGTERM/ctrl-c.

use std::sync::Arc;

use anyhow::Context;
use herald_api::AppState;
use herald_store::{AccountStore, write_private_file};
use serde_json::json;

use crate::config::{ServeArgs, Settings, init_tracing};

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_tracing();
    let settings = Settings::load(&args.store, Some(&args))?;
    let store = settings.open_store().await?;
    let master_key = settings.master_key()?;

    if let Some(account) = store.bootstrap_account().await? {
        let contents = json!({"accountSid": account.account.sid, "authToken": account.auth_token});
        let path = settings.bootstrap_file();
        write_private_file(&path, format!("{contents}\n").as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        // The one time a secret reaches the terminal: the first start, so a new user can call the API.
        eprintln!(
            "\nCreated the first account (also saved in {}, mode 0600):\n  HERALD_ACCOUNT_SID={}\n  HERALD_AUTH_TOKEN={}\n",
            path.display(),
            account.account.sid,
            account.auth_token
        );
    }

    let tls = match &settings.tls {
        Some((cert, key)) => Some(herald_api::server::tls_config(cert, key)?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("binding {}", settings.listen))?;
    let bound = listener.local_addr()?;
    let config = settings.api_config(bound);
    tracing::info!(
        listen = %bound,
        public_url = %config.public_url,
        database = %herald_store::redact_url(&settings.database_url),
        tls = settings.tls.is_some(),
        "herald serving"
    );
    let state = AppState::new(
        store.clone() as Arc<dyn herald_store::Store>,
        config,
        &master_key,
    );
    let provider_config =
        herald_providers::ProviderConfig::from_env().context("provider configuration")?;
    let providers = Arc::new(
        herald_providers::Providers::new(provider_config).context("provider configuration")?,
    );
    let engine = herald_delivery::Engine::start(
        store.clone() as Arc<dyn herald_store::Store>,
        providers,
        settings.engine.clone(),
        state.wake_delivery.clone(),
    );
    // The webhook sender: its own task and HTTP client. It finds the events the engine records
    // within `event_poll_ms` (no wake-up: the engine cannot tell whether an account subscribes).
    let (stop_events, events_stopped) = tokio::sync::oneshot::channel::<()>();
    let events = herald_delivery::events::EventSender::new(
        store.clone() as Arc<dyn herald_store::Store>,
        settings.events.clone(),
    )
    .context("event sender")?
    .spawn(async move {
        let _ = events_stopped.await;
    });
    let served =
        herald_api::server::serve(listener, herald_api::router(state), tls, shutdown_signal())
            .await;
    tracing::info!("shutting down");
    // Batches in flight are written before the store closes; anything not finished is picked
    // up after a restart (or by another node) when its lease expires. The event sender stops
    // claiming and records the deliveries in flight; waiting events stay in the outbox.
    let _ = stop_events.send(());
    let (_, events_done) = tokio::join!(engine.shutdown(), events);
    if let Err(error) = events_done {
        tracing::error!(%error, "event sender task failed");
    }
    served?;
    store.close().await;
    Ok(())
}

/// Completes on ctrl-c or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
