//! Outgoing mail: the outbox and its sender. SQL on `mail_outbox` lives here.
//!
//! - A message is rendered (plain text and HTML, from the askama templates `mail/message.txt`
//!   and `mail/message.html`) and written with [`enqueue`] in the transaction of the action that
//!   sends it: it leaves only if that action commits, and is announced on [`CHANNEL`].
//! - [`Sender`] runs in every process (`serve` and `worker`): it claims due messages with
//!   `FOR UPDATE SKIP LOCKED`, pushing their due time past a lease (a process that dies mid-send
//!   leaves the message to another), delivers each, and records the outcome; a failure is
//!   retried after 30 s, 1 min, 2 min … (doubling, at most an hour), [`MAX_ATTEMPTS`] times in
//!   all. Each message keeps one `Message-ID` across attempts, so a receiver can drop the
//!   duplicate that a crash between "sent" and "recorded" could cause (SMTP offers no better).
//! - Delivery is SMTP through `lettre` when `FACEOFF_SMTP_URL` is set; otherwise each message is
//!   written as `{FACEOFF_DATA_DIR}/outbox/{id}.eml` and its links are logged, so every flow works
//!   offline.
//! - Once sent, a message's bodies are blanked: the links in them carry one-time tokens, which
//!   are otherwise only kept as hashes.

use std::{path::PathBuf, sync::Arc, time::Duration};

use lettre::{
    AsyncSmtpTransport, AsyncTransport, Tokio1Executor,
    message::{Mailbox, MultiPart},
};
use sqlx::{FromRow, PgConnection, PgPool};
use time::OffsetDateTime;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::MailSettings;

/// Channel announcing new messages; the senders listen to it.
pub const CHANNEL: &str = "faceoff_mail_queued";
/// Attempts before a message is given up (about 5 hours of retries).
pub const MAX_ATTEMPTS: i32 = 10;
/// Messages claimed at once by one process.
const BATCH: i64 = 16;
/// How long a claimed message is left to its sender before another may take it.
const LEASE: Duration = Duration::from_secs(120);
const MAX_DELAY: Duration = Duration::from_secs(3600);

/// A message before it is queued: one paragraph list and at most one button, rendered into
/// both parts.
#[derive(Debug, Clone)]
pub struct Mail {
    /// What it is (`verify_email`, `reset_password` …): for logs and tests.
    pub kind: &'static str,
    pub to: String,
    pub subject: String,
    pub paragraphs: Vec<String>,
    /// The link the message is about: its label and absolute URL.
    pub action: Option<(String, String)>,
    /// A last, small line (why the reader got this).
    pub footer: String,
}

#[derive(askama::Template)]
#[template(path = "mail/message.txt")]
struct TextPart<'a> {
    mail: &'a Mail,
}

#[derive(askama::Template)]
#[template(path = "mail/message.html")]
struct HtmlPart<'a> {
    mail: &'a Mail,
}

impl Mail {
    /// The plain-text and HTML bodies.
    pub fn render(&self) -> Result<(String, String), askama::Error> {
        use askama::Template;
        Ok((TextPart { mail: self }.render()?, HtmlPart { mail: self }.render()?))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("rendering a mail: {0}")]
    Render(#[from] askama::Error),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Queues `mail` in the caller's transaction (about `user_id`, when it concerns an account) and
/// announces it when that transaction commits.
pub async fn enqueue(db: &mut PgConnection, user_id: Option<Uuid>, mail: &Mail) -> Result<Uuid, MailError> {
    let (text, html) = mail.render()?;
    let mail_id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO mail_outbox (mail_id, user_id, kind, to_address, subject, text_body, html_body)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(mail_id)
    .bind(user_id)
    .bind(mail.kind)
    .bind(&mail.to)
    .bind(&mail.subject)
    .bind(&text)
    .bind(&html)
    .execute(&mut *db)
    .await?;
    sqlx::query("SELECT pg_notify($1, '')").bind(CHANNEL).execute(&mut *db).await?;
    Ok(mail_id)
}

/// Forgets the messages about `user_id` (an account being deleted): sent ones and unsent ones.
pub async fn forget_user(db: &mut PgConnection, user_id: Uuid) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query("DELETE FROM mail_outbox WHERE user_id = $1").bind(user_id).execute(db).await?.rows_affected())
}

/// How long sent and failed messages (their addresses; their bodies are blanked once sent) and
/// finished tokens are kept.
pub const KEEP: Duration = Duration::from_secs(7 * 24 * 3600);

/// Deletes sent and failed messages older than [`KEEP`]; returns how many.
pub async fn purge_old(pool: &PgPool) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "DELETE FROM mail_outbox WHERE status <> 'pending' AND created_at < now() - make_interval(secs => $1)",
    )
    .bind(KEEP.as_secs_f64())
    .execute(pool)
    .await?
    .rows_affected())
}

/// The wait after failed attempt number `attempt` (1-based): `first` × 2^(attempt−1), at most
/// an hour.
pub fn next_delay(first: Duration, attempt: i32) -> Duration {
    let doublings = u32::try_from(attempt.saturating_sub(1)).unwrap_or(0).min(20);
    first.saturating_mul(1u32 << doublings).min(MAX_DELAY)
}

#[derive(Debug, Clone, FromRow)]
struct Claimed {
    mail_id: Uuid,
    to_address: String,
    subject: String,
    text_body: String,
    html_body: String,
    attempts: i32,
}

/// Where messages go.
#[derive(Clone)]
enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Files(PathBuf),
}

/// Delivers due messages (see the module docs).
#[derive(Clone)]
pub struct Sender {
    pool: PgPool,
    transport: Transport,
    from: Mailbox,
    settings: MailSettings,
}

impl Sender {
    /// A sender for `settings`; `data_dir` holds the `.eml` files when SMTP is not configured.
    pub fn new(pool: PgPool, settings: &MailSettings, data_dir: &std::path::Path) -> anyhow::Result<Self> {
        let from: Mailbox =
            settings.from.parse().map_err(|err| anyhow::anyhow!("FACEOFF_MAIL_FROM {:?}: {err}", settings.from))?;
        let transport = match &settings.smtp_url {
            Some(url) => Transport::Smtp(
                AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose())
                    .map_err(|err| anyhow::anyhow!("FACEOFF_SMTP_URL: {err}"))?
                    .timeout(Some(Duration::from_secs(30)))
                    .build(),
            ),
            None => Transport::Files(crate::config::absolute(&data_dir.join("outbox"))),
        };
        Ok(Sender { pool, transport, from, settings: settings.clone() })
    }

    /// Claims the messages due at `now` (at most a batch) and attempts each; returns how many.
    pub async fn run_due(&self, now: OffsetDateTime) -> Result<usize, sqlx::Error> {
        let claimed: Vec<Claimed> = sqlx::query_as(
            "WITH due AS (
                 SELECT mail_id FROM mail_outbox
                 WHERE status = 'pending' AND next_attempt_at <= $1
                 ORDER BY next_attempt_at, mail_id
                 LIMIT $2
                 FOR UPDATE SKIP LOCKED
             )
             UPDATE mail_outbox m
             SET attempts = m.attempts + 1, next_attempt_at = $1 + make_interval(secs => $3)
             FROM due WHERE m.mail_id = due.mail_id
             RETURNING m.mail_id, m.to_address, m.subject, m.text_body, m.html_body, m.attempts",
        )
        .bind(now)
        .bind(BATCH)
        .bind(LEASE.as_secs_f64())
        .fetch_all(&self.pool)
        .await?;
        let count = claimed.len();
        for mail in claimed {
            let outcome = self.deliver(&mail).await;
            self.record(&mail, outcome, now).await?;
        }
        Ok(count)
    }

    async fn deliver(&self, mail: &Claimed) -> Result<(), String> {
        let to: Mailbox = mail.to_address.parse().map_err(|err| format!("bad recipient: {err}"))?;
        let message = lettre::Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(&mail.subject)
            .message_id(Some(format!("<{}@faceoff.mail>", mail.mail_id)))
            .multipart(MultiPart::alternative_plain_html(mail.text_body.clone(), mail.html_body.clone()))
            .map_err(|err| format!("building the message: {err}"))?;
        match &self.transport {
            Transport::Smtp(smtp) => smtp.send(message).await.map(|_| ()).map_err(|err| format!("SMTP: {err}")),
            Transport::Files(dir) => {
                tokio::fs::create_dir_all(dir).await.map_err(|err| format!("{}: {err}", dir.display()))?;
                let path = dir.join(format!("{}.eml", mail.mail_id));
                tokio::fs::write(&path, message.formatted())
                    .await
                    .map_err(|err| format!("{}: {err}", path.display()))?;
                let links = links(&mail.text_body);
                tracing::info!(
                    to = %mail.to_address,
                    subject = %mail.subject,
                    file = %path.display(),
                    links = %links.join(" "),
                    "mail written to the outbox directory (no SMTP configured)"
                );
                Ok(())
            }
        }
    }

    async fn record(
        &self,
        mail: &Claimed,
        outcome: Result<(), String>,
        now: OffsetDateTime,
    ) -> Result<(), sqlx::Error> {
        match outcome {
            Ok(()) => {
                sqlx::query(
                    "UPDATE mail_outbox SET status = 'sent', sent_at = now(), last_error = NULL,
                            text_body = '', html_body = ''
                     WHERE mail_id = $1",
                )
                .bind(mail.mail_id)
                .execute(&self.pool)
                .await?;
                metrics::counter!("mail_attempts_total", "outcome" => "sent").increment(1);
            }
            Err(error) => {
                let give_up = mail.attempts >= MAX_ATTEMPTS;
                let next = now + next_delay(self.settings.first_retry, mail.attempts);
                tracing::warn!(mail = %mail.mail_id, attempt = mail.attempts, give_up, "mail not delivered: {error}");
                sqlx::query(
                    "UPDATE mail_outbox SET status = CASE WHEN $2 THEN 'failed' ELSE 'pending' END,
                            next_attempt_at = $3, last_error = $4
                     WHERE mail_id = $1",
                )
                .bind(mail.mail_id)
                .bind(give_up)
                .bind(next)
                .bind(error.chars().take(500).collect::<String>())
                .execute(&self.pool)
                .await?;
                let outcome = if give_up { "failed" } else { "retrying" };
                metrics::counter!("mail_attempts_total", "outcome" => outcome).increment(1);
            }
        }
        Ok(())
    }

    /// The background task: sends whatever is due, woken by [`CHANNEL`] or every `poll`, until
    /// `shutdown`.
    pub fn spawn(self, shutdown: CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
        let wake = Arc::new(Notify::new());
        let (pool, listener_wake, listener_shutdown) = (self.pool.clone(), wake.clone(), shutdown.clone());
        let listener = tokio::spawn(async move {
            crate::db::listen(&pool, CHANNEL, "mail listener", &listener_shutdown, |_| {
                listener_wake.notify_one();
                async {}
            })
            .await;
        });
        let poll = self.settings.poll;
        let worker = tokio::spawn(async move {
            loop {
                loop {
                    match self.run_due(OffsetDateTime::now_utc()).await {
                        Ok(n) if n as i64 >= BATCH && !shutdown.is_cancelled() => continue,
                        Ok(_) => break,
                        Err(err) => {
                            tracing::warn!("mail sender: {err}");
                            break;
                        }
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(poll) => {}
                }
            }
        });
        vec![listener, worker]
    }
}

/// The `http(s)://` links of a plain-text body.
pub fn links(text: &str) -> Vec<String> {
    text.split_whitespace()
        .filter(|w| w.starts_with("http://") || w.starts_with("https://"))
        .map(|w| w.trim_end_matches(['.', ',', ')', '>']).to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_parts_carry_the_text_and_the_link() {
        let mail = Mail {
            kind: "test",
            to: "ann@example.com".into(),
            subject: "Confirm <this>".into(),
            paragraphs: vec!["Hello & welcome.".into()],
            action: Some(("Confirm".into(), "https://faceoff.example/verify-email/abc?x=1&y=2".into())),
            footer: "You signed up.".into(),
        };
        let (text, html) = mail.render().expect("render");
        assert!(text.contains("Hello & welcome.") && text.contains("https://faceoff.example/verify-email/abc?x=1&y=2"));
        // The HTML part escapes what it shows (askama writes `&` as `&#38;`).
        assert!(!html.contains("Hello & welcome.") && !html.contains("<this>"), "{html}");
        assert!(html.contains("Hello &#38; welcome."), "{html}");
        assert!(html.contains("href=\"https://faceoff.example/verify-email/abc?x=1&#38;y=2\""), "{html}");
        assert_eq!(links(&text), ["https://faceoff.example/verify-email/abc?x=1&y=2"]);
    }

    #[test]
    fn retries_back_off() {
        let first = Duration::from_secs(30);
        let delays: Vec<u64> = (1..=9).map(|n| next_delay(first, n).as_secs()).collect();
        assert_eq!(delays, [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]);
    }
}
