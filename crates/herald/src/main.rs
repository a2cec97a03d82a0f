//! `herald`: the push-notification server and its tools.
//!
//! - `herald serve` runs the API (and, as the delivery engine lands, the workers).
//! - `herald accounts create` / `herald keys create` make accounts and API keys.
//! - `herald sandbox` runs fake APNs and FCM servers for tests and trials.

mod config;
mod import;
mod serve;

use clap::{Parser, Subcommand};
use serde_json::json;

use crate::config::StoreArgs;

#[derive(Parser)]
#[command(
    name = "herald",
    version,
    about = "Self-hosted push notifications with a Twilio-compatible API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once; ServeArgs is mostly Options
enum Command {
    /// Run the server.
    Serve(config::ServeArgs),
    /// Manage accounts.
    Accounts {
        #[command(subcommand)]
        command: AccountsCommand,
    },
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Run fake APNs and FCM servers (see `herald sandbox --help`).
    Sandbox(herald_sandbox::SandboxCli),
    /// Bulk imports (see docs/import.md).
    Import {
        #[command(subcommand)]
        command: ImportCommand,
    },
}

#[derive(Subcommand)]
enum ImportCommand {
    /// Register devices from a CSV or JSON-lines file (userId?, token, provider) in one app.
    Devices(import::ImportDevicesArgs),
}

#[derive(Subcommand)]
enum AccountsCommand {
    /// Create an account; prints `{"accountSid", "authToken"}` (the token is shown only once).
    Create {
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create an API key of an account; prints `{"sid", "secret"}` (the secret is shown only once).
    Create {
        #[arg(long)]
        account: String,
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// jemalloc rather than glibc's malloc: a fan-out allocates and frees small buffers across
/// threads all the time (HTTP/2 frames, SQL values), and glibc spent ~13 % of `herald serve`'s CPU
/// in malloc/free/consolidation; jemalloc also holds less at peak (see docs/decisions/delivery.md).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Accounts {
            command: AccountsCommand::Create { name, store },
        } => {
            use herald_store::AccountStore;
            let settings = config::Settings::load(&store, None)?;
            let store = settings.open_store().await?;
            let account = store.create_account(name.as_deref()).await?;
            println!(
                "{}",
                json!({"accountSid": account.account.sid, "authToken": account.auth_token})
            );
            Ok(())
        }
        Command::Keys {
            command:
                KeysCommand::Create {
                    account,
                    name,
                    store,
                },
        } => {
            use herald_store::AccountStore;
            let settings = config::Settings::load(&store, None)?;
            let store = settings.open_store().await?;
            let key = match store.create_api_key(&account, name.as_deref()).await {
                Err(herald_store::StoreError::NotFound) => anyhow::bail!("no account {account}"),
                other => other?,
            };
            println!("{}", json!({"sid": key.sid, "secret": key.secret}));
            Ok(())
        }
        Command::Sandbox(cli) => {
            config::init_tracing();
            herald_sandbox::run_cli(cli).await
        }
        Command::Import {
            command: ImportCommand::Devices(args),
        } => {
            let status = import::run(args).await?;
            if status != 0 {
                std::process::exit(status);
            }
            Ok(())
        }
    }
}
