//! `onboard console [users add|list|remove|passwd]`.

use std::io::BufRead;

use clap::{Args, Subcommand, ValueEnum};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

use crate::configuration::Settings;
use crate::store::{self, console as db};

/// `onboard console`: serve the console; `onboard console users ...`: its users.
#[derive(Debug, Args)]
pub struct ConsoleArgs {
    #[command(subcommand)]
    pub command: Option<ConsoleCommand>,
}

#[derive(Debug, Subcommand)]
pub enum ConsoleCommand {
    /// The console's users.
    #[command(subcommand)]
    Users(UsersCommand),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Role {
    /// Sees everything, changes nothing.
    Viewer,
    /// Sees everything and acts (replay, purge, ...).
    Operator,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Add a user; the password is read from standard input (its first line).
    Add {
        name: String,
        #[arg(long, value_enum)]
        role: Role,
    },
    /// List the users (never their passwords).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a user and end its sessions.
    Remove { name: String },
    /// Set a user's password from standard input and end its sessions.
    Passwd { name: String },
}

/// The first line of standard input, without its line end; refused when empty.
fn password_from_stdin() -> anyhow::Result<SecretString> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let password = line.trim_end_matches(['\n', '\r']).to_string();
    if password.is_empty() {
        anyhow::bail!(
            "give the password on standard input, e.g. printf 'secret\\n' | onboard console users add NAME --role operator"
        );
    }
    Ok(SecretString::from(password))
}

fn hash(password: &SecretString) -> anyhow::Result<String> {
    Ok(crate::email::secret::hash_password(
        password,
        &mut rand::rng(),
    )?)
}

pub async fn run(
    settings: Settings,
    args: ConsoleArgs,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let Some(ConsoleCommand::Users(command)) = args.command else {
        let token = CancellationToken::new();
        let cancel = token.clone();
        tokio::spawn(async move {
            stop.await;
            cancel.cancel();
        });
        return super::server::run(settings, token).await;
    };
    let pool = store::pool(&settings.database)?;
    store::migrate(&pool).await?;
    let name_ok = |name: &str| -> anyhow::Result<String> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 64 {
            anyhow::bail!("a user name is 1 to 64 characters");
        }
        Ok(name.to_string())
    };
    match command {
        UsersCommand::Add { name, role } => {
            let name = name_ok(&name)?;
            let phc = hash(&password_from_stdin()?)?;
            if !db::add_user(&pool, &name, role.as_str(), &phc).await? {
                anyhow::bail!(
                    "a user named {name} exists already (users passwd to change its password)"
                );
            }
            println!("user {name} added ({})", role.as_str());
        }
        UsersCommand::List { json } => {
            let users = db::users(&pool).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&users)?);
            } else {
                for u in users {
                    println!(
                        "{:<24} {:<9} since {}",
                        u.name,
                        u.role,
                        u.created_at.format("%Y-%m-%d")
                    );
                }
            }
        }
        UsersCommand::Remove { name } => {
            if !db::remove_user(&pool, &name).await? {
                anyhow::bail!("no user named {name}");
            }
            println!("user {name} removed");
        }
        UsersCommand::Passwd { name } => {
            let phc = hash(&password_from_stdin()?)?;
            if !db::set_password(&pool, &name, &phc).await? {
                anyhow::bail!("no user named {name}");
            }
            println!("password of {name} changed; its sessions ended");
        }
    }
    pool.close().await;
    Ok(())
}
