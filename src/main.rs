//! The `eventrelay` binary: parse the command line, start telemetry, call the library.

use clap::{Parser, Subcommand};
use eventrelay::auth::{ApiKeys, KeyType};
use eventrelay::config::Config;
use eventrelay::topics::TopicRef;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "eventrelay",
    version,
    about = "Event streaming and storage server on Postgres"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: Config,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Manage API keys.
    ApiKey {
        #[command(subcommand)]
        command: ApiKeyCommand,
    },
    /// Manage admin UI users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a UI user (the first admin, or any other) and print it as JSON.
    Create {
        /// Email address (the sign-in name).
        #[arg(long)]
        email: String,
        /// Password, at least 8 characters.
        #[arg(long, env = "ER_USER_PASSWORD", hide_env_values = true)]
        password: String,
    },
}

#[derive(Subcommand)]
enum ApiKeyCommand {
    /// Create a key and print it as JSON (the secret is shown only here).
    Create {
        /// admin, producer or consumer.
        #[arg(long = "type", default_value = "admin")]
        key_type: String,
        /// Topics to grant (producers), comma-separated: `users,orders:42`.
        #[arg(long, value_delimiter = ',')]
        topics: Vec<String>,
        /// A human name.
        #[arg(long, default_value = "")]
        name: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _telemetry =
        eventrelay::telemetry::init(cli.config.log_format, cli.config.otlp_endpoint.as_deref());
    eventrelay::install_crypto_provider();
    let command = cli.command.unwrap_or(Command::Serve);
    // `serve` checks the configuration as it turns it into its typed sections (`run`).
    if !matches!(command, Command::Serve)
        && let Err(e) = cli.config.validate()
    {
        anyhow::bail!("invalid configuration: {e}");
    }
    match command {
        Command::Serve => serve(cli.config).await,
        Command::Migrate => {
            let pool = eventrelay::db::connect(&cli.config.database_url, 2).await?;
            eventrelay::db::migrate(&pool).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::User {
            command: UserCommand::Create { email, password },
        } => {
            // Check the arguments before touching the database.
            let email = eventrelay::users::Email::parse(&email)?;
            eventrelay::users::check_password(&password)
                .map_err(|e| anyhow::anyhow!("password: {e}"))?;
            let pool = eventrelay::db::connect(&cli.config.database_url, 2).await?;
            eventrelay::db::migrate(&pool).await?;
            let user = eventrelay::users::Users::new(pool)
                .create(&email, &password)
                .await?;
            let out = serde_json::json!({ "id": user.id, "email": user.email });
            println!("{out}");
            Ok(())
        }
        Command::ApiKey {
            command:
                ApiKeyCommand::Create {
                    key_type,
                    topics,
                    name,
                },
        } => {
            // Check the arguments before touching the database.
            let key_type = KeyType::parse(&key_type)?;
            let topics = topics
                .iter()
                .map(|t| TopicRef::parse(t))
                .collect::<Result<Vec<_>, _>>()?;
            let pool = eventrelay::db::connect(&cli.config.database_url, 2).await?;
            eventrelay::db::migrate(&pool).await?;
            let key = ApiKeys::new(pool)
                .create(key_type, &name, &topics, &[])
                .await?;
            let out = serde_json::json!({
                "id": key.id,
                "key": key.key,
                "secret": key.secret,
                "type": key.key_type.as_str(),
                "bearer_token": key.bearer_token(),
            });
            println!("{out}");
            Ok(())
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listeners = eventrelay::Listeners::bind(&config).await?;
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        signal.cancel();
    });
    eventrelay::run(config, listeners, shutdown).await
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
