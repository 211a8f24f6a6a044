//! Rows are structs and statuses are enums that sqlx decodes: every variant round-trips through
//! PostgreSQL and is accepted by its column's CHECK constraint (and every value the constraint
//! allows decodes), while a value the code does not know is a decode error from the query that
//! read it, never a silent default.

use std::fmt::Debug;

use faceoff::{
    accounts::{self, Role, tokens::Purpose},
    catalog,
    jobs::{self, JobStatus},
    ledger::{self, Hold, HoldStatus, Kind, LedgerError, NewTransfer, Refs, System},
    payments::{self, Pack, Status},
    providers::Mode,
    runs::create::{RunInput, create_run, validate},
};
use sqlx::{PgPool, Postgres};
use time::{Duration, OffsetDateTime};

use crate::helpers::{TestApp, migrated_db, user_with_credits};

// The lists of variants below are checked for completeness by an exhaustive `match` each
// (`*_text`): adding a variant breaks the build here until it is listed.

const JOB_STATUSES: [JobStatus; 6] = [
    JobStatus::Queued,
    JobStatus::Running,
    JobStatus::Delivered,
    JobStatus::Failed,
    JobStatus::Moderated,
    JobStatus::TimedOut,
];
const HOLD_STATUSES: [HoldStatus; 3] = [HoldStatus::Pending, HoldStatus::Posted, HoldStatus::Voided];
const KINDS: [Kind; 6] =
    [Kind::SignupBonus, Kind::Hold, Kind::HoldPost, Kind::HoldRelease, Kind::Topup, Kind::Adjustment];
const PAYMENT_STATUSES: [Status; 4] = [Status::Pending, Status::Paid, Status::Failed, Status::Canceled];
const ROLES: [Role; 2] = [Role::User, Role::Admin];
const MODES: [Mode; 2] = [Mode::TwoK, Mode::FourK];

/// The spellings the migrations use, written out here rather than taken from `as_str`, so a
/// typo in the enum's `#[sqlx(...)]` attributes or in `as_str` cannot hide behind the other.
fn job_status_text(s: JobStatus) -> &'static str {
    match s {
        JobStatus::Queued => "queued",
        JobStatus::Running => "running",
        JobStatus::Delivered => "delivered",
        JobStatus::Failed => "failed",
        JobStatus::Moderated => "moderated",
        JobStatus::TimedOut => "timed_out",
    }
}
fn hold_status_text(s: HoldStatus) -> &'static str {
    match s {
        HoldStatus::Pending => "pending",
        HoldStatus::Posted => "posted",
        HoldStatus::Voided => "voided",
    }
}
fn kind_text(k: Kind) -> &'static str {
    match k {
        Kind::SignupBonus => "signup_bonus",
        Kind::Hold => "hold",
        Kind::HoldPost => "hold_post",
        Kind::HoldRelease => "hold_release",
        Kind::Topup => "topup",
        Kind::Adjustment => "adjustment",
    }
}
fn payment_status_text(s: Status) -> &'static str {
    match s {
        Status::Pending => "pending",
        Status::Paid => "paid",
        Status::Failed => "failed",
        Status::Canceled => "canceled",
    }
}
fn role_text(r: Role) -> &'static str {
    match r {
        Role::User => "user",
        Role::Admin => "admin",
    }
}
const PURPOSES: [Purpose; 3] = [Purpose::VerifyEmail, Purpose::ResetPassword, Purpose::ChangeEmail];
fn purpose_text(p: Purpose) -> &'static str {
    match p {
        Purpose::VerifyEmail => "verify_email",
        Purpose::ResetPassword => "reset_password",
        Purpose::ChangeEmail => "change_email",
    }
}

#[tokio::test]
async fn token_purposes_round_trip_and_match_the_check_constraint() {
    let (_db, pool) = migrated_db(4).await;
    assert_round_trips(&pool, &PURPOSES, purpose_text).await;
    assert_matches_check(&pool, "account_token.purpose", &PURPOSES, purpose_text).await;
    assert_unknown_is_an_error::<Purpose>(&pool, "login").await;
}

fn mode_text(m: Mode) -> &'static str {
    match m {
        Mode::TwoK => "2k",
        Mode::FourK => "4k",
    }
}

/// A status enum as sqlx sees it.
trait DbEnum:
    for<'r> sqlx::Decode<'r, Postgres>
    + for<'q> sqlx::Encode<'q, Postgres>
    + sqlx::Type<Postgres>
    + Copy
    + Unpin
    + PartialEq
    + Debug
    + Send
    + Sync
    + 'static
{
}
impl<T> DbEnum for T where
    T: for<'r> sqlx::Decode<'r, Postgres>
        + for<'q> sqlx::Encode<'q, Postgres>
        + sqlx::Type<Postgres>
        + Copy
        + Unpin
        + PartialEq
        + Debug
        + Send
        + Sync
        + 'static
{
}

/// Each variant, bound as a parameter, is stored as `text(v)` and decodes back to itself.
async fn assert_round_trips<E: DbEnum>(pool: &PgPool, variants: &[E], text: fn(E) -> &'static str) {
    for &v in variants {
        let back: E = sqlx::query_scalar("SELECT $1").bind(v).fetch_one(pool).await.expect("bind and decode");
        assert_eq!(back, v);
        let spelled: String = sqlx::query_scalar("SELECT $1::text").bind(v).fetch_one(pool).await.expect("as text");
        assert_eq!(spelled, text(v), "{v:?} is bound as {spelled:?}");
        let decoded: E =
            sqlx::query_scalar("SELECT $1::text").bind(text(v)).fetch_one(pool).await.expect("decode the text");
        assert_eq!(decoded, v);
    }
}

/// The definition of a CHECK constraint, e.g. `CHECK ((status = ANY (ARRAY['queued'::text, ...])))`.
async fn check_definition(pool: &PgPool, table: &str, constraint: &str) -> String {
    sqlx::query_scalar(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = $1::regclass AND conname = $2",
    )
    .bind(table)
    .bind(constraint)
    .fetch_one(pool)
    .await
    .unwrap_or_else(|e| panic!("constraint {table}.{constraint}: {e}"))
}

/// The quoted literals of a constraint's definition: the values it names.
fn literals(definition: &str) -> Vec<String> {
    let mut values: Vec<String> = definition.split('\'').skip(1).step_by(2).map(str::to_string).collect();
    values.sort();
    values.dedup();
    values
}

/// The CHECK constraint on `column` (`"table.column"`; the constraint has PostgreSQL's default
/// name for a column's CHECK, `table_column_check`) accepts every variant (evaluated by
/// PostgreSQL on the bound enum), and every value it names decodes into a variant: the enum and
/// the constraint list the same values.
async fn assert_matches_check<E: DbEnum>(pool: &PgPool, column: &str, variants: &[E], text: fn(E) -> &'static str) {
    let (table, column) = column.split_once('.').unwrap_or_else(|| panic!("{column}: not table.column"));
    let constraint = &format!("{table}_{column}_check");
    let definition = check_definition(pool, table, constraint).await;
    let expr = definition.strip_prefix("CHECK ").unwrap_or_else(|| panic!("not a CHECK: {definition}"));
    let sql = format!("SELECT {expr} FROM (SELECT $1::text AS {column}) AS candidate");
    for &v in variants {
        let accepted: Option<bool> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.clone()))
            .bind(v)
            .fetch_one(pool)
            .await
            .expect("evaluate the constraint");
        assert_eq!(accepted, Some(true), "{constraint} refuses {v:?}");
    }
    let allowed = literals(&definition);
    let mut ours: Vec<String> = variants.iter().map(|&v| text(v).to_string()).collect();
    ours.sort();
    assert_eq!(allowed, ours, "{constraint} ({definition}) and the enum disagree");
    for value in &allowed {
        let decoded: Result<E, _> = sqlx::query_scalar("SELECT $1::text").bind(value).fetch_one(pool).await;
        assert!(decoded.is_ok(), "{constraint} allows {value:?}, which does not decode: {decoded:?}");
    }
}

/// A value no variant spells is a decode error, not a default.
async fn assert_unknown_is_an_error<E: DbEnum>(pool: &PgPool, unknown: &str) {
    let decoded: Result<E, sqlx::Error> = sqlx::query_scalar("SELECT $1::text").bind(unknown).fetch_one(pool).await;
    assert!(matches!(decoded, Err(sqlx::Error::ColumnDecode { .. })), "{unknown:?} decoded as {decoded:?}");
    let null: Result<E, sqlx::Error> = sqlx::query_scalar("SELECT NULL::text").fetch_one(pool).await;
    assert!(null.is_err(), "NULL decoded as {null:?}");
}

#[tokio::test]
async fn job_statuses_round_trip_and_match_the_check_constraint() {
    let (_db, pool) = migrated_db(4).await;
    assert_round_trips(&pool, &JOB_STATUSES, job_status_text).await;
    assert_matches_check(&pool, "generation_job.status", &JOB_STATUSES, job_status_text).await;
    for s in JOB_STATUSES {
        assert_eq!(s.as_str(), job_status_text(s));
    }
}

#[test]
fn job_status_json_is_snake_case() {
    for s in JOB_STATUSES {
        assert_eq!(serde_json::to_value(s).expect("json"), serde_json::json!(job_status_text(s)));
    }
}

#[tokio::test]
async fn transfer_kinds_round_trip_and_match_the_check_constraint() {
    let (_db, pool) = migrated_db(4).await;
    assert_round_trips(&pool, &KINDS, kind_text).await;
    assert_matches_check(&pool, "ledger_transfer.kind", &KINDS, kind_text).await;
    for k in KINDS {
        assert_eq!(k.as_str(), kind_text(k));
    }
}

#[tokio::test]
async fn payment_statuses_round_trip_and_match_the_check_constraint() {
    let (_db, pool) = migrated_db(4).await;
    assert_round_trips(&pool, &PAYMENT_STATUSES, payment_status_text).await;
    assert_matches_check(&pool, "payment.status", &PAYMENT_STATUSES, payment_status_text).await;
    for s in PAYMENT_STATUSES {
        assert_eq!(s.as_str(), payment_status_text(s));
    }
}

#[tokio::test]
async fn roles_round_trip_and_match_the_check_constraint() {
    let (_db, pool) = migrated_db(4).await;
    assert_round_trips(&pool, &ROLES, role_text).await;
    assert_matches_check(&pool, "app_user.role", &ROLES, role_text).await;
    for r in ROLES {
        assert_eq!(r.as_str(), role_text(r));
    }
    // Through the real table: set_role binds the enum, find_by_id decodes it.
    let user = user_with_credits(&pool, 0).await;
    let email = accounts::find_by_id(&pool, user).await.expect("find").expect("user").email;
    for r in [Role::Admin, Role::User] {
        assert_eq!(accounts::set_role(&pool, &email, r).await.expect("set role"), Some(user));
        assert_eq!(accounts::find_by_id(&pool, user).await.expect("find").expect("user").role, r);
        assert_eq!(accounts::find_by_email(&pool, &email).await.expect("find").expect("user").role, r);
    }
}

#[tokio::test]
async fn modes_round_trip_and_match_both_check_constraints() {
    let (_db, pool) = migrated_db(4).await;
    assert_round_trips(&pool, &MODES, mode_text).await;
    assert_matches_check(&pool, "variant_price.mode", &MODES, mode_text).await;
    assert_matches_check(&pool, "generation_run.mode", &MODES, mode_text).await;
    for m in MODES {
        assert_eq!(m.as_str(), mode_text(m));
    }
    // The catalog loaded by prepare_database reads its prices back with decoded modes.
    let catalog = catalog::db::fetch(&pool).await.expect("fetch the catalog");
    let modes: Vec<Mode> = catalog
        .models()
        .iter()
        .flat_map(|m| &m.variants)
        .flat_map(|v| v.prices.iter().map(|(mode, _)| *mode))
        .collect();
    assert!(MODES.iter().all(|m| modes.contains(m)), "the catalog prices every mode: {modes:?}");
}

#[tokio::test]
async fn hold_statuses_round_trip_and_every_one_is_written_by_the_ledger() {
    let (_db, pool) = migrated_db(4).await;
    assert_round_trips(&pool, &HOLD_STATUSES, hold_status_text).await;
    for s in HOLD_STATUSES {
        assert_eq!(s.as_str(), hold_status_text(s));
    }
    // ledger_hold_resolution_check spans several columns: write every status the real way.
    let user = user_with_credits(&pool, 100).await;
    let deadline = OffsetDateTime::now_utc() + Duration::minutes(10);
    let mut conn = pool.acquire().await.expect("conn");
    let pending =
        ledger::reserve(&mut conn, user, 10, "rows:pending", deadline, "r", Refs::default()).await.expect("a");
    let posted = ledger::reserve(&mut conn, user, 10, "rows:posted", deadline, "r", Refs::default()).await.expect("b");
    let voided = ledger::reserve(&mut conn, user, 10, "rows:voided", deadline, "r", Refs::default()).await.expect("c");
    ledger::post(&mut conn, posted.hold_id, 4, "charged", Refs::default()).await.expect("post");
    ledger::void(&mut conn, voided.hold_id, "refunded", Refs::default()).await.expect("void");
    for (hold, status) in
        [(&pending, HoldStatus::Pending), (&posted, HoldStatus::Posted), (&voided, HoldStatus::Voided)]
    {
        assert_eq!(ledger::get_hold(&pool, hold.hold_id).await.expect("get").status, status);
    }
    // The constraint names exactly these statuses.
    let definition = check_definition(&pool, "ledger_hold", "ledger_hold_resolution_check").await;
    let mut ours: Vec<String> = HOLD_STATUSES.iter().map(|&s| hold_status_text(s).to_string()).collect();
    ours.sort();
    assert_eq!(literals(&definition), ours, "{definition}");
    // A second resolution reports the hold's status as the enum.
    match ledger::post(&mut conn, voided.hold_id, 4, "late", Refs::default()).await {
        Err(LedgerError::AlreadyResolved { status: HoldStatus::Voided, .. }) => {}
        other => panic!("expected AlreadyResolved(voided), got {other:?}"),
    }
    // History reads the kinds and the reserved holds' statuses as enums.
    let history = ledger::history(&pool, user, 50, 0).await.expect("history");
    let holds: Vec<Option<HoldStatus>> =
        history.iter().filter(|l| l.kind == Kind::Hold).map(|l| l.hold_status).collect();
    assert_eq!(holds.len(), 3);
    for s in HOLD_STATUSES {
        assert!(holds.contains(&Some(s)), "{s:?} in {holds:?}");
    }
    assert!(history.iter().any(|l| l.kind == Kind::SignupBonus && l.hold_status.is_none()));
    assert!(history.iter().any(|l| l.kind == Kind::HoldRelease));
}

#[tokio::test]
async fn an_unknown_value_is_a_decode_error_for_every_enum() {
    let (_db, pool) = migrated_db(4).await;
    assert_unknown_is_an_error::<JobStatus>(&pool, "nonsense").await;
    // The old parser read anything unknown as `queued`; a differently cased value is unknown too.
    assert_unknown_is_an_error::<JobStatus>(&pool, "Queued").await;
    assert_unknown_is_an_error::<HoldStatus>(&pool, "frozen").await;
    assert_unknown_is_an_error::<Kind>(&pool, "gift").await;
    assert_unknown_is_an_error::<Status>(&pool, "refunded").await;
    assert_unknown_is_an_error::<Role>(&pool, "superuser").await;
    assert_unknown_is_an_error::<Mode>(&pool, "8k").await;

    // In a row struct: an unknown status fails the row, and so does a renamed column.
    let hold_sql = |status: &str| {
        format!(
            "SELECT 1::bigint AS hold_id, 2::bigint AS account_id, 3::bigint AS amount, {status},
                    NULL::bigint AS posted_amount, now() AS deadline"
        )
    };
    let known: Hold =
        sqlx::query_as(sqlx::AssertSqlSafe(hold_sql("'posted'::text AS status"))).fetch_one(&pool).await.expect("row");
    assert_eq!(known.status, HoldStatus::Posted);
    let unknown: Result<Hold, _> =
        sqlx::query_as(sqlx::AssertSqlSafe(hold_sql("'frozen'::text AS status"))).fetch_one(&pool).await;
    assert!(matches!(unknown, Err(sqlx::Error::ColumnDecode { .. })), "{unknown:?}");
    let renamed: Result<Hold, _> =
        sqlx::query_as(sqlx::AssertSqlSafe(hold_sql("'posted'::text AS state"))).fetch_one(&pool).await;
    assert!(matches!(renamed, Err(sqlx::Error::ColumnNotFound(_))), "{renamed:?}");
}

#[tokio::test]
async fn an_unknown_role_fails_the_user_lookups_instead_of_reading_as_user() {
    let (_db, pool) = migrated_db(4).await;
    let user = user_with_credits(&pool, 0).await;
    let email = accounts::find_by_id(&pool, user).await.expect("find").expect("user").email;
    sqlx::raw_sql("ALTER TABLE app_user DROP CONSTRAINT app_user_role_check; UPDATE app_user SET role = 'superuser'")
        .execute(&pool)
        .await
        .expect("corrupt the role");
    let by_id = accounts::find_by_id(&pool, user).await;
    assert!(matches!(by_id, Err(sqlx::Error::ColumnDecode { .. })), "{by_id:?}");
    let by_email = accounts::find_by_email(&pool, &email).await;
    assert!(matches!(by_email, Err(sqlx::Error::ColumnDecode { .. })), "{by_email:?}");
}

#[tokio::test]
async fn unknown_ledger_values_fail_the_ledger_reads() {
    let (_db, pool) = migrated_db(4).await;
    let mut conn = pool.acquire().await.expect("conn");

    // A hold status the code does not know (on one user's hold).
    let holder = user_with_credits(&pool, 50).await;
    let deadline = OffsetDateTime::now_utc() + Duration::minutes(10);
    let hold = ledger::reserve(&mut conn, holder, 10, "rows:hold", deadline, "r", Refs::default()).await.expect("hold");
    sqlx::raw_sql("ALTER TABLE ledger_hold DROP CONSTRAINT ledger_hold_resolution_check")
        .execute(&pool)
        .await
        .expect("drop the check");
    sqlx::query("UPDATE ledger_hold SET status = 'frozen' WHERE hold_id = $1")
        .bind(hold.hold_id)
        .execute(&pool)
        .await
        .expect("corrupt the hold");
    let got = ledger::get_hold(&pool, hold.hold_id).await;
    assert!(matches!(got, Err(LedgerError::Db(sqlx::Error::ColumnDecode { .. }))), "{got:?}");
    let resolved = ledger::void(&mut conn, hold.hold_id, "refund", Refs::default()).await;
    assert!(matches!(resolved, Err(LedgerError::Db(sqlx::Error::ColumnDecode { .. }))), "{resolved:?}");
    let history = ledger::history(&pool, holder, 50, 0).await;
    assert!(matches!(history, Err(LedgerError::Db(sqlx::Error::ColumnDecode { .. }))), "{history:?}");

    // A transfer kind the code does not know (on another user's sign-up grant): their history
    // and an idempotent replay of that grant both refuse it.
    let granted = user_with_credits(&pool, 50).await;
    assert_eq!(ledger::history(&pool, granted, 50, 0).await.expect("history")[0].kind, Kind::SignupBonus);
    let key = format!("signup:{granted}");
    sqlx::raw_sql(
        "ALTER TABLE ledger_transfer DROP CONSTRAINT ledger_transfer_kind_check;
         ALTER TABLE ledger_transfer DISABLE TRIGGER ledger_transfer_append_only",
    )
    .execute(&pool)
    .await
    .expect("allow the change");
    sqlx::query("UPDATE ledger_transfer SET kind = 'gift' WHERE idempotency_key = $1")
        .bind(&key)
        .execute(&pool)
        .await
        .expect("corrupt the transfer");
    let history = ledger::history(&pool, granted, 50, 0).await;
    assert!(matches!(history, Err(LedgerError::Db(sqlx::Error::ColumnDecode { .. }))), "{history:?}");
    let grants = ledger::system_account(&pool, System::SignupGrants).await.expect("grants");
    let wallet = ledger::wallet(&pool, granted).await.expect("wallet");
    let replay = ledger::transfer(
        &mut conn,
        NewTransfer {
            key: &key,
            debit: grants,
            credit: wallet,
            amount: 50,
            kind: Kind::SignupBonus,
            memo: "Sign-up bonus",
            refs: Refs::default(),
        },
    )
    .await;
    assert!(matches!(replay, Err(LedgerError::Db(sqlx::Error::ColumnDecode { .. }))), "{replay:?}");
    // Balances compare statuses in SQL and are unaffected.
    assert_eq!(ledger::balance(&pool, granted).await.expect("balance").available, 50);
}

#[tokio::test]
async fn an_unknown_payment_status_fails_the_payment_reads() {
    let (_db, pool) = migrated_db(4).await;
    let user = user_with_credits(&pool, 0).await;
    let pack =
        Pack { slug: "starter".into(), name: "Starter".into(), credits: 100, price_cents: 500, description: "".into() };
    let payment =
        payments::create_payment(&pool, user, &pack, "usd", payments::ProviderKind::Sandbox).await.expect("create");
    assert_eq!(payment.status, Status::Pending);
    let failed =
        payments::create_payment(&pool, user, &pack, "usd", payments::ProviderKind::Sandbox).await.expect("create");
    assert!(payments::mark_failed(&pool, failed.payment_id, "declined").await.expect("fail"));
    let canceled =
        payments::create_payment(&pool, user, &pack, "usd", payments::ProviderKind::Sandbox).await.expect("create");
    assert!(payments::mark_canceled(&pool, user, canceled.payment_id).await.expect("cancel"));
    for (id, status) in [(failed.payment_id, Status::Failed), (canceled.payment_id, Status::Canceled)] {
        let read = payments::get_payment(&pool, id).await.expect("get").expect("payment");
        assert_eq!(read.status, status);
    }

    sqlx::raw_sql("ALTER TABLE payment DROP CONSTRAINT payment_status_check")
        .execute(&pool)
        .await
        .expect("drop the check");
    sqlx::query("UPDATE payment SET status = 'refunded' WHERE payment_id = $1")
        .bind(payment.payment_id)
        .execute(&pool)
        .await
        .expect("corrupt the payment");
    let got = payments::get_payment(&pool, payment.payment_id).await;
    assert!(matches!(got, Err(sqlx::Error::ColumnDecode { .. })), "{got:?}");
    let listed = payments::user_payments(&pool, user, 10).await;
    assert!(matches!(listed, Err(sqlx::Error::ColumnDecode { .. })), "{listed:?}");
}

#[tokio::test]
async fn an_unknown_price_mode_fails_the_catalog_read_instead_of_dropping_the_price() {
    let (_db, pool) = migrated_db(4).await;
    catalog::db::fetch(&pool).await.expect("the loaded catalog reads back");
    sqlx::raw_sql(
        "ALTER TABLE variant_price DROP CONSTRAINT variant_price_mode_check;
         UPDATE variant_price SET mode = '8k'
         WHERE (model_slug, variant_slug, mode) IN (SELECT model_slug, variant_slug, mode FROM variant_price LIMIT 1)",
    )
    .execute(&pool)
    .await
    .expect("corrupt a price");
    let fetched = catalog::db::fetch(&pool).await;
    let err = fetched.expect_err("an unknown mode must not be skipped");
    assert!(matches!(err.downcast_ref::<sqlx::Error>(), Some(sqlx::Error::ColumnDecode { .. })), "{err:?}");
}

#[tokio::test]
async fn unknown_job_values_fail_claim_and_the_run_reads() {
    let app = TestApp::spawn().await;
    let user = app.create_user("rows@example.com", 100).await;
    let catalog = app.state.catalog.current();
    let input = RunInput {
        prompt: "typed rows".into(),
        models: vec!["flux-2".into(), "flux-2-max".into()],
        mode: "4k".into(),
        aspect_ratio: "1:1".into(),
        seed: "1".into(),
        ..RunInput::default()
    };
    let valid = validate(&catalog, &input, None).expect("valid");
    let run_id = create_run(&app.pool, &app.state.store, &app.state.config.queue, user.id, &valid, "rows-1")
        .await
        .expect("created")
        .run_id;
    let jobs = jobs::for_run(&app.pool, run_id).await.expect("jobs");
    assert_eq!(jobs.len(), 2);
    assert!(jobs.iter().all(|j| j.status == JobStatus::Queued && j.status() == JobStatus::Queued));

    // The run's mode decodes as `Mode` when a worker claims a job.
    let claimed = jobs::claim(&app.pool, std::time::Duration::from_secs(30), &[]).await.expect("claim").expect("job");
    assert_eq!(claimed.mode(), Mode::FourK);
    let jobs = jobs::for_run(&app.pool, run_id).await.expect("jobs");
    assert!(jobs.iter().any(|j| j.job_id == claimed.job_id && j.status == JobStatus::Running));

    // A run mode the code does not know: claiming fails instead of running the job as 2k.
    sqlx::raw_sql(
        "ALTER TABLE generation_run DROP CONSTRAINT generation_run_mode_check; UPDATE generation_run SET mode = '8k'",
    )
    .execute(&app.pool)
    .await
    .expect("corrupt the mode");
    let claim = jobs::claim(&app.pool, std::time::Duration::from_secs(30), &[]).await;
    assert!(matches!(claim, Err(sqlx::Error::ColumnDecode { .. })), "{claim:?}");

    // A job status the code does not know: the run's jobs fail to read instead of showing `queued`.
    sqlx::raw_sql(
        "ALTER TABLE generation_job DROP CONSTRAINT generation_job_status_check;
         ALTER TABLE generation_job DROP CONSTRAINT generation_job_settled_check",
    )
    .execute(&app.pool)
    .await
    .expect("drop the checks");
    sqlx::query("UPDATE generation_job SET status = 'paused' WHERE job_id = $1")
        .bind(claimed.job_id)
        .execute(&app.pool)
        .await
        .expect("corrupt the status");
    let read = jobs::for_run(&app.pool, run_id).await;
    assert!(matches!(read, Err(sqlx::Error::ColumnDecode { .. })), "{read:?}");
    let read = jobs::for_runs(&app.pool, &[run_id]).await;
    assert!(matches!(read, Err(sqlx::Error::ColumnDecode { .. })), "{read:?}");
}
