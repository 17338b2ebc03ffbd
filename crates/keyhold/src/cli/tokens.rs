//! `keyhold auth tokens ...`: the bearer tokens of a Keyhold server (server admins only).

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use keyhold_api::wire::ProtoDuration;
use keyhold_crypto::SecretString;

use super::client::ListOptions;
use super::output::Kind;
use super::parse::parse_duration;
use super::{CliError, Ctx, print_stderr, print_stdout};

/// `keyhold auth`.
#[derive(Args, Debug)]
pub struct AuthArgs {
    /// The command.
    #[command(subcommand)]
    pub command: AuthCommand,
}

/// Commands under `keyhold auth`.
#[derive(Subcommand, Debug)]
pub enum AuthCommand {
    /// Create, list and revoke the server's bearer tokens (server admins only).
    Tokens(TokensArgs),
}

/// `keyhold auth tokens`.
#[derive(Args, Debug)]
pub struct TokensArgs {
    /// The command.
    #[command(subcommand)]
    pub command: TokensCommand,
}

/// Commands under `keyhold auth tokens`.
#[derive(Subcommand, Debug)]
pub enum TokensCommand {
    /// Create a token for a principal. The token is printed once, alone on standard output
    /// (`TOKEN=$(keyhold auth tokens create ...)`); Keyhold keeps only its hash.
    Create(TokenCreate),
    /// List the tokens (never their secret part).
    List,
    /// Revoke a token: requests carrying it fail with UNAUTHENTICATED from then on.
    Revoke(TokenRevoke),
}

/// `keyhold auth tokens create`.
#[derive(Args, Debug)]
pub struct TokenCreate {
    /// Who the token authenticates: user:EMAIL or serviceAccount:EMAIL.
    #[arg(long, value_name = "PRINCIPAL", value_parser = parse_principal)]
    pub principal: String,
    /// How long the token is valid, e.g. 30d, 12h, 86400s (the server's default if unset).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub ttl: Option<ProtoDuration>,
    /// A note kept with the token (shown by list).
    #[arg(long, value_name = "TEXT")]
    pub description: Option<String>,
}

/// `keyhold auth tokens revoke`.
#[derive(Args, Debug)]
pub struct TokenRevoke {
    /// The token's ID as list shows it (or tokens/ID).
    #[arg(value_name = "TOKEN_ID")]
    pub token_id: String,
}

fn parse_principal(s: &str) -> Result<String, String> {
    keyhold_iam::Principal::parse(s.trim()).map(|p| p.to_string()).map_err(|e| e.to_string())
}

impl AuthCommand {
    /// The command's path below `keyhold` (`auth.tokens.create`).
    pub fn path(&self) -> String {
        let AuthCommand::Tokens(t) = self;
        let tail = match t.command {
            TokensCommand::Create(_) => "create",
            TokensCommand::List => "list",
            TokensCommand::Revoke(_) => "revoke",
        };
        format!("auth.tokens.{tail}")
    }

    /// Runs the command.
    pub async fn run(self, ctx: &Ctx) -> Result<(), CliError> {
        let AuthCommand::Tokens(t) = self;
        match t.command {
            TokensCommand::Create(c) => create(ctx, &c).await,
            TokensCommand::List => {
                let items = ctx.client.list("tokens", "tokens", &ListOptions::default()).await?;
                ctx.show_list(Kind::Token, &items, false)
            }
            TokensCommand::Revoke(c) => {
                let id = c.token_id.trim();
                let id = id.strip_prefix("tokens/").unwrap_or(id);
                if id.is_empty() || id.contains(['/', '?', '#', ':']) {
                    return Err(CliError::Usage(format!("Invalid token ID \"{}\".", c.token_id)));
                }
                ctx.client.delete(&format!("tokens/{id}")).await?;
                print_stderr(&format!("Revoked token [tokens/{id}]."));
                Ok(())
            }
        }
    }
}

async fn create(ctx: &Ctx, c: &TokenCreate) -> Result<(), CliError> {
    let mut body = json!({ "principal": c.principal });
    if let Some(ttl) = c.ttl {
        body["ttl"] = ttl.to_string().into();
    }
    if let Some(d) = c.description.as_deref().filter(|d| !d.is_empty()) {
        body["description"] = d.into();
    }
    let mut created = ctx.client.post("tokens", &[], &body).await?;
    let token = match created.get_mut("token").map(Value::take) {
        Some(Value::String(t)) if !t.is_empty() => SecretString::new(t),
        _ => return Err(CliError::Other("the server's answer to tokens.create has no token".to_string())),
    };
    let str_field = |k: &str| created.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    print_stderr(&format!(
        "Created token {} for {}, expires {}; it is shown only once.",
        str_field("name"),
        str_field("principal"),
        str_field("expireTime")
    ));
    match &ctx.format {
        Some(f) => {
            created["token"] = token.expose().into();
            let text = super::output::render_one(f, Kind::Token, &created);
            created["token"] = Value::Null;
            print_stdout(&text)
        }
        // Written in two parts so that no unwiped copy of the token is made.
        None => print_stdout(token.expose()).and_then(|()| print_stdout("\n")),
    }
}
