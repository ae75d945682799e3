//! `er-loadgen`: a bounded, loopback-only benchmark of EventRelay's durable publish and pull
//! paths, set beside plain Postgres baselines on the same machine.
//!
//! By default it creates a fresh database `er_bench_<uuid>`, starts one node in-process on
//! 127.0.0.1:0, makes an admin key through [`eventrelay::auth::ApiKeys`] and a topic, runs the
//! scenarios below for `--seconds` each with `--concurrency` concurrent clients, prints a table
//! (or JSON), and drops the database. With `--target http://host:port --token <bearer>` it
//! measures a running server instead; the Postgres baselines and the prefill then need
//! `--database-url` of that server's database and are skipped without it.
//!
//! Scenarios:
//! - a: durable PublishEvents, 1 event per request;
//! - b: durable PublishEvents, 100 events per request;
//! - c: baseline, one INSERT transaction per event straight into Postgres;
//! - d: baseline, multi-row INSERT of 100 rows per statement;
//! - e: PullEvents walking forward in batches of 1000 after a prefill of 1,000,000 rows, and
//!   single pulls at offsets 0, 1,000 and 1,000,000 (50 each, taking turns);
//! - f: b again, now that the topic holds over 1,000,000 events.
//!
//! The in-process node runs with its defaults except the per-key rate limits, which are off:
//! everything here is sent with one admin key, and the point is capacity, not policy.

use anyhow::{Context, Result, anyhow, bail};
use chrono::{DateTime, Utc};
use clap::Parser;
use eventrelay::auth::{ApiKeys, KeyType};
use eventrelay::proto::event_relay_client::EventRelayClient;
use eventrelay::proto::{
    CreateTopicRequest, DeleteTopicRequest, NewEvent, PublishEventsRequest, PullEventsRequest,
};
use serde::Serialize;
use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, PgConnection, Postgres, QueryBuilder};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};

const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// Events per request in the batched scenarios (b, d, f).
const BATCH: usize = 100;
/// Events per PullEvents request.
const PULL_BATCH: i32 = 1000;
/// Single pulls measured at each position.
const POINT_PULLS: usize = 50;
/// Deep pull position of a full run (and prefill size).
const FULL_PREFILL: i64 = 1_000_000;
/// Prefill of a `--quick` run.
const QUICK_PREFILL: i64 = 100_000;
const MAX_MESSAGE: usize = 64 * 1024 * 1024;
/// Deadline of settling (autovacuum wait and CHECKPOINT) and of reading statistics.
const SETTLE_LIMIT: Duration = Duration::from_secs(180);
/// Deadline of the prefill (INSERT, VACUUM) and of the single pulls.
const PREFILL_LIMIT: Duration = Duration::from_secs(900);

/// Targets from the issue.
const TARGET_SINGLE_EPS: f64 = 1_500.0;
const TARGET_SINGLE_VS_BASELINE: f64 = 1.0;
const TARGET_BATCH_EPS: f64 = 15_000.0;
const TARGET_BATCH_VS_BASELINE: f64 = 0.70;

#[derive(Parser, Debug)]
#[command(
    name = "er-loadgen",
    about = "Benchmark EventRelay durable publish and pull against plain Postgres baselines"
)]
struct Args {
    /// Postgres server on which the bench database is created (and dropped at the end).
    #[arg(long, default_value = DEFAULT_ADMIN_URL)]
    admin_url: String,
    /// Measure a running server at this gRPC URL instead of starting one in-process.
    #[arg(long)]
    target: Option<String>,
    /// Bearer token (Base64 key:secret or JWT) of an admin key, with --target.
    #[arg(long, env = "ER_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// With --target: the target's database, for the baselines and the prefill.
    #[arg(long)]
    database_url: Option<String>,
    /// Measured seconds per scenario [default: 10, or 2 with --quick].
    #[arg(long)]
    seconds: Option<f64>,
    /// Unmeasured warm-up seconds before each scenario [default: 1, or 0.5 with --quick].
    #[arg(long)]
    warmup: Option<f64>,
    /// Concurrent clients (gRPC requests in flight, or Postgres connections for baselines).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// gRPC channels (HTTP/2 connections) the clients share.
    #[arg(long, default_value_t = 4)]
    channels: usize,
    /// Rows inserted straight into the topic before the pull scenario
    /// [default: 1,000,000, or 100,000 with --quick].
    #[arg(long)]
    prefill: Option<i64>,
    /// Smoke run: 2 s per scenario, prefill 100,000.
    #[arg(long)]
    quick: bool,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Diagnostic, in-process node only: set TCP_NODELAY on the node's gRPC listening socket
    /// (accepted sockets inherit it on Linux). Builds before commit 3345e51 left Nagle's
    /// algorithm on (`serve_with_incoming_shutdown` ignores tonic's `tcp_nodelay`); since then
    /// the node sets it on every connection itself and this flag changes nothing.
    #[arg(long)]
    server_nodelay: bool,
    /// Do not settle Postgres before each scenario. By default (when the database is reachable)
    /// each scenario starts after a CHECKPOINT and after running autovacuum workers finish (at
    /// most 60 s), and the prefill is followed by VACUUM (ANALYZE), so that one scenario's WAL
    /// and dead tuples are not paid for by the next.
    #[arg(long)]
    no_settle: bool,
}

/// What to run, after defaults.
#[derive(Clone, Debug, Serialize)]
struct Plan {
    mode: String,
    seconds: f64,
    warmup: f64,
    concurrency: usize,
    channels: usize,
    prefill: i64,
    server_db_pool_size: Option<u32>,
    server_nodelay: bool,
    settle: bool,
}

impl Plan {
    fn from_args(a: &Args) -> Result<Plan> {
        let seconds = a.seconds.unwrap_or(if a.quick { 2.0 } else { 10.0 });
        let warmup = a.warmup.unwrap_or(if a.quick { 0.5 } else { 1.0 });
        let prefill = a
            .prefill
            .unwrap_or(if a.quick { QUICK_PREFILL } else { FULL_PREFILL });
        if !(0.1..=600.0).contains(&seconds) {
            bail!("--seconds must be between 0.1 and 600");
        }
        if !(0.0..=60.0).contains(&warmup) {
            bail!("--warmup must be between 0 and 60");
        }
        if !(1..=256).contains(&a.concurrency) {
            bail!("--concurrency must be between 1 and 256");
        }
        if a.channels == 0 || a.channels > a.concurrency {
            bail!("--channels must be between 1 and --concurrency");
        }
        if !(0..=10_000_000).contains(&prefill) {
            bail!("--prefill must be between 0 and 10,000,000");
        }
        if a.target.is_some() && a.server_nodelay {
            bail!("--server-nodelay applies to the in-process node only, not to --target");
        }
        for (flag, url) in [
            ("--admin-url", Some(&a.admin_url)),
            ("--target", a.target.as_ref()),
            ("--database-url", a.database_url.as_ref()),
        ] {
            if let Some(u) = url {
                ensure_loopback(flag, u)?;
            }
        }
        if a.target.is_some() && a.token.is_none() {
            bail!("--target needs --token (or ER_TOKEN): the bearer token of an admin key");
        }
        Ok(Plan {
            mode: match &a.target {
                Some(t) => format!("target {t}"),
                None => "in-process node on a fresh database".into(),
            },
            seconds,
            warmup,
            concurrency: a.concurrency,
            channels: a.channels,
            prefill,
            server_db_pool_size: None,
            server_nodelay: a.server_nodelay,
            settle: !a.no_settle,
        })
    }
}

/// The load stays on this machine: every URL must name a loopback host (or, for Postgres, a
/// local socket).
fn ensure_loopback(flag: &str, raw: &str) -> Result<()> {
    let url = url::Url::parse(raw).with_context(|| format!("{flag} is not a URL"))?;
    let host = url.host_str().unwrap_or("");
    let local = match host.trim_start_matches('[').trim_end_matches(']') {
        "" | "localhost" => true,
        h => h
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
    };
    if !local {
        bail!("{flag} must point at this machine (loopback), not {host}");
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    match main_inner() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One readable line (with its causes), not a backtrace.
            eprintln!("er-loadgen: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn main_inner() -> Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    eventrelay::install_crypto_provider();
    let plan = Plan::from_args(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(run(&args, plan))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

/// Sets up (database, node or target), benchmarks, and always cleans up.
async fn run(args: &Args, mut plan: Plan) -> Result<Report> {
    let db = match &args.target {
        Some(_) => None,
        None => Some(BenchDb::create(&args.admin_url).await?),
    };
    let result = async {
        let mut node = None;
        let (grpc_url, db_url) = match (&args.target, &db) {
            (Some(t), _) => (t.clone(), args.database_url.clone()),
            (None, Some(db)) => {
                let n = Node::start(&db.url, plan.server_nodelay).await?;
                plan.server_db_pool_size = Some(n.pool_size);
                let url = format!("http://{}", n.grpc);
                node = Some(n);
                (url, Some(db.url.clone()))
            }
            (None, None) => bail!("no database and no target"),
        };
        let outcome = async {
            let token = match (&args.target, &db) {
                (Some(_), _) => args.token.clone().unwrap_or_default(),
                (None, Some(db)) => admin_token(&db.url).await?,
                (None, None) => bail!("no database and no target"),
            };
            let target = Target::connect(&grpc_url, &token, db_url, plan.channels).await?;
            let topic = format!("bench_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
            let topic_id = target.create_topic(&topic).await?;
            let outcome = tokio::select! {
                r = bench(&plan, &target, &topic) => r,
                _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
            };
            if args.target.is_some() {
                target.cleanup(&topic_id).await;
            }
            outcome
        }
        .await;
        if let Some(n) = node {
            n.stop().await;
        }
        outcome
    }
    .await;
    if let Some(db) = db {
        db.drop_db().await;
    }
    result
}

// ---------------------------------------------------------------------------------------------
// Setup: the bench database, the in-process node, the admin key, the target.

/// A fresh database, dropped by [`BenchDb::drop_db`].
struct BenchDb {
    admin_url: String,
    name: String,
    url: String,
}

impl BenchDb {
    async fn create(admin_url: &str) -> Result<BenchDb> {
        let name = format!("er_bench_{}", uuid::Uuid::new_v4().simple());
        let mut url = url::Url::parse(admin_url).context("--admin-url is not a URL")?;
        url.set_path(&format!("/{name}"));
        let mut conn = connect(admin_url)
            .await
            .with_context(|| "connecting to --admin-url")?;
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await
            .context("creating the bench database")?;
        let _ = conn.close().await;
        eprintln!("bench database {name} created");
        Ok(BenchDb {
            admin_url: admin_url.to_owned(),
            name,
            url: url.to_string(),
        })
    }

    async fn drop_db(self) {
        let dropped = async {
            let mut conn = connect(&self.admin_url).await?;
            sqlx::raw_sql(AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            )))
            .execute(&mut conn)
            .await?;
            conn.close().await?;
            anyhow::Ok(())
        }
        .await;
        match dropped {
            Ok(()) => eprintln!("bench database {} dropped", self.name),
            Err(e) => eprintln!(
                "could not drop bench database {}: {e:#}; drop it by hand",
                self.name
            ),
        }
    }
}

/// A node running in this process.
struct Node {
    grpc: std::net::SocketAddr,
    pool_size: u32,
    shutdown: CancellationToken,
    handle: JoinHandle<Result<()>>,
}

impl Node {
    async fn start(db_url: &str, nodelay: bool) -> Result<Node> {
        let mut config = eventrelay::Config::for_database(db_url);
        config.shutdown_grace_seconds = 5;
        // Capacity is measured, not policy: the per-key rate limits are off (one admin key
        // sends everything here).
        config.rate_limit_durable_publish = 0;
        config.rate_limit_live_publish = 0;
        config.rate_limit_pull = 0;
        config.rate_limit_admin = 0;
        let pool_size = config.db_pool_size;
        let grpc = if nodelay {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.set_nodelay(true)?;
            socket.bind(([127, 0, 0, 1], 0).into())?;
            socket.listen(1024)?
        } else {
            TcpListener::bind("127.0.0.1:0").await?
        };
        let http = TcpListener::bind("127.0.0.1:0").await?;
        let (grpc_addr, http_addr) = (grpc.local_addr()?, http.local_addr()?);
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(eventrelay::run(
            config,
            eventrelay::Listeners { grpc, http },
            shutdown.clone(),
        ));
        let node = Node {
            grpc: grpc_addr,
            pool_size,
            shutdown,
            handle,
        };
        let ready = format!("http://{http_addr}/readyz");
        for _ in 0..300 {
            if node.handle.is_finished() {
                break;
            }
            if let Ok(r) = reqwest::get(&ready).await
                && r.status().is_success()
            {
                return Ok(node);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        node.shutdown.cancel();
        match node.handle.await {
            Ok(Err(e)) => Err(e.context("the in-process node failed to start")),
            _ => bail!("the in-process node did not become ready at {ready}"),
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        match tokio::time::timeout(Duration::from_secs(30), self.handle).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => eprintln!("node stopped with an error: {e:#}"),
            Ok(Err(e)) => eprintln!("node task failed: {e}"),
            Err(_) => eprintln!("node did not stop within 30 s"),
        }
    }
}

/// Creates an admin key directly in the database and returns its bearer token.
async fn admin_token(db_url: &str) -> Result<String> {
    let pool = eventrelay::db::connect(db_url, 2).await?;
    let key = ApiKeys::new(pool.clone())
        .create(KeyType::Admin, "er-loadgen", &[], &[])
        .await
        .map_err(|e| anyhow!("creating the admin key: {e}"))?;
    pool.close().await;
    key.bearer_token()
        .ok_or_else(|| anyhow!("a new key carries its secret"))
}

/// The server under test: gRPC channels, the authorization header, and (optionally) its
/// database for the baselines and the prefill.
struct Target {
    channels: Vec<Channel>,
    auth: MetadataValue<Ascii>,
    db_url: Option<String>,
}

impl Target {
    async fn connect(
        url: &str,
        token: &str,
        db_url: Option<String>,
        channels: usize,
    ) -> Result<Target> {
        let endpoint = Endpoint::from_shared(url.to_owned())
            .context("bad gRPC URL")?
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(60));
        let mut chans = Vec::with_capacity(channels);
        for _ in 0..channels {
            chans.push(
                endpoint
                    .connect()
                    .await
                    .with_context(|| format!("connecting to {url}"))?,
            );
        }
        Ok(Target {
            channels: chans,
            auth: format!("Bearer {token}")
                .parse()
                .context("the token is not a valid header value")?,
            db_url,
        })
    }

    fn client(&self, i: usize) -> EventRelayClient<Channel> {
        EventRelayClient::new(self.channels[i % self.channels.len()].clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        authed(&self.auth, msg)
    }

    async fn create_topic(&self, name: &str) -> Result<String> {
        let t = self
            .client(0)
            .create_topic(self.request(CreateTopicRequest { name: name.into() }))
            .await
            .context("CreateTopic")?
            .into_inner()
            .topic
            .ok_or_else(|| anyhow!("CreateTopic returned no topic"))?;
        Ok(t.id)
    }

    /// Highest offset of the topic (PullEvents' total_count without filters).
    async fn last_offset(&self, topic: &str) -> Result<i64> {
        let r = self
            .client(0)
            .pull_events(self.request(PullEventsRequest {
                topic: topic.into(),
                batch_size: 1,
                offset: 0,
                filters: vec![],
            }))
            .await
            .context("PullEvents")?
            .into_inner();
        Ok(i64::from(r.total_count))
    }

    async fn db(&self) -> Result<Option<PgConnection>> {
        match &self.db_url {
            Some(u) => Ok(Some(
                connect(u).await.context("connecting to the database")?,
            )),
            None => Ok(None),
        }
    }

    /// Removes what a run against a long-lived target left behind.
    async fn cleanup(&self, topic_id: &str) {
        let r = self
            .client(0)
            .delete_topic(self.request(DeleteTopicRequest {
                id: topic_id.into(),
            }))
            .await;
        if let Err(e) = r {
            eprintln!("could not delete the bench topic: {e}");
        }
        if let Ok(Some(mut c)) = self.db().await {
            let _ = sqlx::raw_sql("DROP TABLE IF EXISTS bench_baseline")
                .execute(&mut c)
                .await;
        }
    }
}

/// A connection of the load generator's own: its statements are slow on purpose (prefill,
/// DROP DATABASE), so sqlx's slow-statement warnings are off here (the node keeps its own).
async fn connect(url: &str) -> Result<PgConnection, sqlx::Error> {
    PgConnectOptions::from_str(url)?
        .application_name("er-loadgen")
        .disable_statement_logging()
        .connect()
        .await
}

fn authed<T>(auth: &MetadataValue<Ascii>, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert("authorization", auth.clone());
    r
}

// ---------------------------------------------------------------------------------------------
// Measurement: a time window shared by the workers and a simple latency recorder.

/// Requests started before `measure_from` are warm-up; none start at or after `until`.
#[derive(Clone, Copy)]
struct Window {
    measure_from: Instant,
    until: Instant,
}

impl Window {
    fn new(plan: &Plan) -> Window {
        let measure_from = Instant::now() + Duration::from_secs_f64(plan.warmup);
        Window {
            measure_from,
            until: measure_from + Duration::from_secs_f64(plan.seconds),
        }
    }

    /// The start time of the next request, or `None` when the window has closed.
    fn next(&self) -> Option<Instant> {
        let now = Instant::now();
        (now < self.until).then_some(now)
    }
}

/// One worker's figures: every latency (no histogram), counts and the first error.
#[derive(Default)]
struct Recorder {
    latencies: Vec<Duration>,
    events: u64,
    errors: u64,
    first_error: Option<String>,
    last_end: Option<Instant>,
}

impl Recorder {
    async fn record(&mut self, window: &Window, started: Instant, r: Result<u64>) {
        let end = Instant::now();
        let measured = started >= window.measure_from;
        if measured {
            self.last_end = Some(end);
        }
        match r {
            Ok(n) if measured => {
                self.latencies.push(end - started);
                self.events += n;
            }
            Ok(_) => {}
            Err(e) => {
                // Counted during warm-up too: any failure makes the figures suspect.
                self.errors += 1;
                self.first_error.get_or_insert_with(|| format!("{e:#}"));
                // Do not spin on a broken connection.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// The merged figures of one scenario.
struct Measured {
    latencies: Vec<Duration>,
    events: u64,
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
    /// CPU over the nominal measured window, and the events completed per second in it.
    cpu: Option<CpuUse>,
}

impl Measured {
    async fn collect(window: Window, workers: Vec<JoinHandle<Recorder>>) -> Result<Measured> {
        let cpu = sample_cpu(window);
        let mut m = Measured {
            latencies: Vec::new(),
            events: 0,
            errors: 0,
            first_error: None,
            elapsed: Duration::ZERO,
            cpu: None,
        };
        let mut last_end = window.until;
        for w in workers {
            let r = w.await.context("a worker panicked")?;
            m.latencies.extend(r.latencies);
            m.events += r.events;
            m.errors += r.errors;
            if m.first_error.is_none() {
                m.first_error = r.first_error;
            }
            if let Some(e) = r.last_end {
                last_end = last_end.max(e);
            }
        }
        m.latencies.sort_unstable();
        m.elapsed = last_end.saturating_duration_since(window.measure_from);
        m.cpu = cpu.await.ok().flatten();
        Ok(m)
    }

    fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn p(&self, q: f64) -> f64 {
        percentile_ms(&self.latencies, q)
    }
}

/// Nearest-rank percentile of sorted durations, in milliseconds.
fn percentile_ms(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    let i = rank.clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

// ---------------------------------------------------------------------------------------------
// The events: one generator for the gRPC scenarios and the baselines, so rows are the same.

fn new_event(worker: usize, seq: u64) -> NewEvent {
    NewEvent {
        name: "order.created".into(),
        data: format!(
            r#"{{"order_id":{seq},"customer":"c{worker}","amount_cents":1999,"currency":"EUR","items":[{{"sku":"sku-1","qty":2}}]}}"#
        ),
        source: "er-loadgen".into(),
        user_id: format!("user-{worker}"),
        trace_key: format!("w{worker}-{seq}"),
        context: HashMap::from([("ip_address".to_owned(), "127.0.0.1".to_owned())]),
        ..Default::default()
    }
}

/// The stored columns of an event, as the server writes them.
struct Row {
    offset: i64,
    id: uuid::Uuid,
    name: String,
    topic_identifier: String,
    data: String,
    source: String,
    group_key: String,
    reference_key: String,
    trace_key: String,
    user_id: String,
    anonymous_id: String,
    occurred_at: DateTime<Utc>,
    context: String,
}

impl Row {
    fn of(e: NewEvent, offset: i64) -> Row {
        Row {
            offset,
            id: uuid::Uuid::now_v7(),
            context: serde_json::to_string(&e.context).unwrap_or_else(|_| "{}".into()),
            name: e.name,
            topic_identifier: String::new(),
            data: e.data,
            source: e.source,
            group_key: e.group_key,
            reference_key: e.reference_key,
            trace_key: e.trace_key,
            user_id: e.user_id,
            anonymous_id: e.anonymous_id,
            occurred_at: Utc::now(),
        }
    }
}

const ROW_COLUMNS: &str = r#"("offset", id, name, topic_identifier, data, source, group_key,
    reference_key, trace_key, user_id, anonymous_id, occurred_at, context)"#;

// ---------------------------------------------------------------------------------------------
// Scenarios.

/// Durable PublishEvents of `per_request` events, `concurrency` requests in flight.
async fn publish(plan: &Plan, t: &Target, topic: &str, per_request: usize) -> Result<Measured> {
    let window = Window::new(plan);
    let mut workers = Vec::with_capacity(plan.concurrency);
    for w in 0..plan.concurrency {
        let mut client = t.client(w);
        let auth = t.auth.clone();
        let topic = topic.to_owned();
        workers.push(tokio::spawn(async move {
            let mut rec = Recorder::default();
            let mut seq = 0u64;
            while let Some(started) = window.next() {
                let events: Vec<NewEvent> = (0..per_request)
                    .map(|_| {
                        seq += 1;
                        new_event(w, seq)
                    })
                    .collect();
                let req = PublishEventsRequest {
                    topic: topic.clone(),
                    events,
                    durable: true,
                };
                let r = match client.publish_events(authed(&auth, req)).await {
                    Ok(resp) => {
                        let stored = resp.into_inner().events.len();
                        if stored == per_request {
                            Ok(stored as u64)
                        } else {
                            Err(anyhow!("stored {stored} of {per_request} events"))
                        }
                    }
                    Err(s) => Err(anyhow!("PublishEvents: {:?}: {}", s.code(), s.message())),
                };
                rec.record(&window, started, r).await;
            }
            rec
        }));
    }
    Measured::collect(window, workers).await
}

/// Creates `bench_baseline` shaped like the topic's events table.
async fn make_baseline_table(conn: &mut PgConnection, topic: &str) -> Result<()> {
    sqlx::raw_sql(AssertSqlSafe(format!(
        r#"DROP TABLE IF EXISTS bench_baseline;
           CREATE TABLE bench_baseline (LIKE "{topic}_events" INCLUDING ALL);"#
    )))
    .execute(conn)
    .await
    .context("creating bench_baseline")?;
    Ok(())
}

async fn baseline_connections(plan: &Plan, url: &str) -> Result<Vec<PgConnection>> {
    let conns = futures::future::try_join_all(
        (0..plan.concurrency).map(|_| async move { connect(url).await }),
    )
    .await
    .context("opening the baseline connections")?;
    Ok(conns)
}

/// Baseline: `rows_per_statement` rows per INSERT (one transaction each, autocommit), one
/// connection per client, offsets from a counter shared by all clients and both baselines (so
/// d appends after c, as b appends after a in the topic).
async fn baseline(
    plan: &Plan,
    url: &str,
    offsets: &Arc<AtomicI64>,
    rows_per_statement: usize,
) -> Result<Measured> {
    let conns = baseline_connections(plan, url).await?;
    let single_sql: Arc<str> = format!(
        "INSERT INTO bench_baseline {ROW_COLUMNS}
         VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9, $10, $11, $12, $13::jsonb)"
    )
    .into();
    let window = Window::new(plan);
    let mut workers = Vec::with_capacity(plan.concurrency);
    for (w, mut conn) in conns.into_iter().enumerate() {
        let offsets = offsets.clone();
        let single_sql = single_sql.clone();
        workers.push(tokio::spawn(async move {
            let mut rec = Recorder::default();
            let mut seq = 0u64;
            let n = rows_per_statement as i64;
            while let Some(started) = window.next() {
                let first = offsets.fetch_add(n, Ordering::Relaxed) + 1;
                let rows: Vec<Row> = (0..n)
                    .map(|i| {
                        seq += 1;
                        Row::of(new_event(w, seq), first + i)
                    })
                    .collect();
                let r = if rows_per_statement == 1 {
                    insert_one(&mut conn, &single_sql, rows).await
                } else {
                    insert_many(&mut conn, rows).await
                };
                rec.record(&window, started, r).await;
            }
            let _ = conn.close().await;
            rec
        }));
    }
    Measured::collect(window, workers).await
}

async fn insert_one(conn: &mut PgConnection, sql: &Arc<str>, rows: Vec<Row>) -> Result<u64> {
    let mut n = 0;
    for r in rows {
        n += sqlx::query(AssertSqlSafe(sql.clone()))
            .bind(r.offset)
            .bind(r.id)
            .bind(r.name)
            .bind(r.topic_identifier)
            .bind(r.data)
            .bind(r.source)
            .bind(r.group_key)
            .bind(r.reference_key)
            .bind(r.trace_key)
            .bind(r.user_id)
            .bind(r.anonymous_id)
            .bind(r.occurred_at)
            .bind(r.context)
            .execute(&mut *conn)
            .await?
            .rows_affected();
    }
    Ok(n)
}

async fn insert_many(conn: &mut PgConnection, rows: Vec<Row>) -> Result<u64> {
    let mut qb: QueryBuilder<Postgres> =
        QueryBuilder::new(format!("INSERT INTO bench_baseline {ROW_COLUMNS} "));
    qb.push_values(rows, |mut b, r| {
        b.push_bind(r.offset)
            .push_bind(r.id)
            .push_bind(r.name)
            .push_bind(r.topic_identifier)
            .push_bind(r.data)
            .push_unseparated("::jsonb")
            .push_bind(r.source)
            .push_bind(r.group_key)
            .push_bind(r.reference_key)
            .push_bind(r.trace_key)
            .push_bind(r.user_id)
            .push_bind(r.anonymous_id)
            .push_bind(r.occurred_at)
            .push_bind(r.context)
            .push_unseparated("::jsonb");
    });
    Ok(qb.build().execute(conn).await?.rows_affected())
}

/// Appends `n` rows to the topic with one INSERT ... SELECT generate_series, after the current
/// last offset, moving `topics.last_offset` in the same transaction (which row-locks the topic
/// exactly as publishers do), so offsets stay contiguous. Then ANALYZE, as autovacuum would
/// (VACUUM (ANALYZE) when settling).
async fn prefill(conn: &mut PgConnection, topic: &str, n: i64, vacuum: bool) -> Result<i64> {
    let mut tx = conn.begin().await?;
    let last: i64 = sqlx::query_scalar(
        "UPDATE topics SET last_offset = last_offset + $1 WHERE name = $2 RETURNING last_offset",
    )
    .bind(n)
    .bind(topic)
    .fetch_one(&mut *tx)
    .await
    .context("moving topics.last_offset")?;
    let before = last - n;
    sqlx::query(AssertSqlSafe(format!(
        r#"INSERT INTO "{topic}_events"
               ("offset", id, name, data, source, trace_key, user_id, occurred_at, context)
           SELECT $1 + g, gen_random_uuid(), 'order.created',
                  jsonb_build_object('order_id', g, 'customer', 'c' || (g % 32),
                                     'amount_cents', 1999, 'currency', 'EUR',
                                     'items', jsonb_build_array(
                                         jsonb_build_object('sku', 'sku-1', 'qty', 2))),
                  'er-loadgen', 'prefill-' || g, 'user-' || (g % 32), now(),
                  '{{"ip_address": "127.0.0.1"}}'::jsonb
           FROM generate_series(1::bigint, $2::bigint) AS g"#
    )))
    .bind(before)
    .bind(n)
    .execute(&mut *tx)
    .await
    .context("prefill INSERT ... SELECT generate_series")?;
    tx.commit().await?;
    let maintenance = if vacuum {
        "VACUUM (ANALYZE)"
    } else {
        "ANALYZE"
    };
    sqlx::raw_sql(AssertSqlSafe(format!(r#"{maintenance} "{topic}_events""#)))
        .execute(&mut *conn)
        .await?;
    Ok(last)
}

/// PullEvents in batches of 1000, each client walking forward from its own starting point and
/// wrapping around at the end.
async fn pull_walk(plan: &Plan, t: &Target, topic: &str, last: i64) -> Result<Measured> {
    let window = Window::new(plan);
    let mut workers = Vec::with_capacity(plan.concurrency);
    for w in 0..plan.concurrency {
        let mut client = t.client(w);
        let auth = t.auth.clone();
        let topic = topic.to_owned();
        let start = last * w as i64 / plan.concurrency as i64;
        workers.push(tokio::spawn(async move {
            let mut rec = Recorder::default();
            let mut offset = i32::try_from(start).unwrap_or(0);
            while let Some(started) = window.next() {
                let req = PullEventsRequest {
                    topic: topic.clone(),
                    batch_size: PULL_BATCH,
                    offset,
                    filters: vec![],
                };
                let r = match client.pull_events(authed(&auth, req)).await {
                    Ok(resp) => {
                        let b = resp.into_inner();
                        offset = b.next_offset; // 0 at the end: wrap around
                        Ok(b.events.len() as u64)
                    }
                    Err(s) => Err(anyhow!("PullEvents: {:?}: {}", s.code(), s.message())),
                };
                rec.record(&window, started, r).await;
            }
            rec
        }));
    }
    Measured::collect(window, workers).await
}

/// Latencies of single pulls (one at a time) at each position, taking turns.
async fn point_pulls(t: &Target, topic: &str, positions: &[i64]) -> Result<Vec<Vec<Duration>>> {
    let mut client = t.client(0);
    let positions = positions
        .iter()
        .map(|&p| i32::try_from(p).context("offset beyond the wire's int32"))
        .collect::<Result<Vec<_>>>()?;
    let mut lat = vec![Vec::new(); positions.len()];
    for i in 0..(POINT_PULLS + 5) {
        for (&offset, out) in positions.iter().zip(lat.iter_mut()) {
            let req = PullEventsRequest {
                topic: topic.into(),
                batch_size: PULL_BATCH,
                offset,
                filters: vec![],
            };
            let started = Instant::now();
            let b = client
                .pull_events(t.request(req))
                .await
                .context("PullEvents")?
                .into_inner();
            let took = started.elapsed();
            if b.events.len() != PULL_BATCH as usize {
                bail!(
                    "pull at offset {offset} returned {} events, expected {PULL_BATCH}",
                    b.events.len()
                );
            }
            if i >= 5 {
                out.push(took); // the first five of each are warm-up
            }
        }
    }
    for l in &mut lat {
        l.sort_unstable();
    }
    Ok(lat)
}

// ---------------------------------------------------------------------------------------------
// Postgres background work around each scenario.

/// Cluster checkpoints and this database's autovacuum/autoanalyze runs so far.
#[derive(Clone, Copy)]
struct Background {
    checkpoints: i64,
    autovacuums: i64,
}

async fn background(conn: &mut PgConnection) -> Option<Background> {
    // pg_stat_bgwriter up to Postgres 16, pg_stat_checkpointer from 17.
    let checkpoints = match sqlx::query_scalar::<_, i64>(
        "SELECT (checkpoints_timed + checkpoints_req)::int8 FROM pg_stat_bgwriter",
    )
    .fetch_one(&mut *conn)
    .await
    {
        Ok(c) => c,
        Err(_) => sqlx::query_scalar::<_, i64>(
            "SELECT (num_timed + num_requested)::int8 FROM pg_stat_checkpointer",
        )
        .fetch_one(&mut *conn)
        .await
        .ok()?,
    };
    let autovacuums = sqlx::query_scalar::<_, i64>(
        "SELECT coalesce(sum(autovacuum_count + autoanalyze_count), 0)::int8
         FROM pg_stat_user_tables",
    )
    .fetch_one(&mut *conn)
    .await
    .ok()?;
    Some(Background {
        checkpoints,
        autovacuums,
    })
}

async fn autovacuum_workers(conn: &mut PgConnection) -> i64 {
    sqlx::query_scalar::<_, i64>(
        "SELECT count(*) FROM pg_stat_activity
         WHERE backend_type = 'autovacuum worker' AND datname = current_database()",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap_or(0)
}

/// CPU counters in clock ticks (USER_HZ, 100 on Linux): the whole machine's busy and idle time,
/// and this process's (the load generator, plus the node when it runs in-process).
#[derive(Clone, Copy)]
struct Cpu {
    busy: u64,
    idle: u64,
    own: u64,
}

const TICKS_PER_SECOND: f64 = 100.0;

/// Reads the counters from /proc; `None` where there is no /proc.
fn cpu_now() -> Option<Cpu> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let t: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal
    let at = |i: usize| t.get(i).copied().unwrap_or(0);
    let own_stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces): utime and stime are the 12th and
    // 13th after the closing parenthesis.
    let fields: Vec<&str> = own_stat.rsplit_once(')')?.1.split_whitespace().collect();
    let own = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Cpu {
        busy: at(0) + at(1) + at(2) + at(5) + at(6) + at(7),
        idle: at(3) + at(4),
        own,
    })
}

/// CPU spent during a scenario.
#[derive(Clone, Copy, Serialize)]
struct CpuUse {
    /// This process: the load generator, plus the node when it runs in-process.
    own_s: f64,
    /// The rest of the machine: Postgres, and anything else that ran meanwhile.
    others_s: f64,
    /// Share of the machine's CPU time that was busy.
    machine_busy_pct: f64,
}

fn cpu_use(before: Cpu, after: Cpu) -> CpuUse {
    let busy = after.busy.saturating_sub(before.busy) as f64;
    let idle = after.idle.saturating_sub(before.idle) as f64;
    let own = after.own.saturating_sub(before.own) as f64;
    CpuUse {
        own_s: own / TICKS_PER_SECOND,
        others_s: (busy - own).max(0.0) / TICKS_PER_SECOND,
        machine_busy_pct: 100.0 * busy / (busy + idle).max(1.0),
    }
}

/// Samples the CPU counters at the start and at the end of the measured window.
fn sample_cpu(window: Window) -> JoinHandle<Option<CpuUse>> {
    tokio::spawn(async move {
        tokio::time::sleep_until(window.measure_from.into()).await;
        let start = cpu_now()?;
        tokio::time::sleep_until(window.until.into()).await;
        Some(cpu_use(start, cpu_now()?))
    })
}

/// The bench's own connection to the server's database, when it has one.
struct Admin {
    conn: Option<PgConnection>,
    settle: bool,
}

impl Admin {
    /// Settles (if asked) and snapshots the background counters.
    async fn before(&mut self) -> Option<Background> {
        let conn = self.conn.as_mut()?;
        if self.settle {
            let deadline = Instant::now() + Duration::from_secs(60);
            while autovacuum_workers(conn).await > 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            if let Err(e) = sqlx::raw_sql("CHECKPOINT").execute(&mut *conn).await {
                say(&format!("   CHECKPOINT failed ({e}); not settling"));
                self.settle = false;
            }
        }
        background(conn).await
    }

    /// Average events per stored transaction over an offset range of the topic: every row of
    /// one writer transaction has the same `inserted_at` (`now()` is the transaction's start).
    async fn events_per_commit(&mut self, topic: &str, after: i64, upto: i64) -> Option<f64> {
        let conn = self.conn.as_mut()?;
        sqlx::query_scalar::<_, f64>(AssertSqlSafe(format!(
            r#"SELECT count(*)::float8 / greatest(count(DISTINCT inserted_at), 1)
               FROM "{topic}_events" WHERE "offset" > $1 AND "offset" <= $2"#
        )))
        .bind(after)
        .bind(upto)
        .fetch_one(conn)
        .await
        .ok()
    }

    /// What ran in the background since `before`.
    async fn after(&mut self, before: Option<Background>) -> Option<String> {
        let (conn, before) = (self.conn.as_mut()?, before?);
        let now = background(conn).await?;
        let running = autovacuum_workers(conn).await;
        let (c, v) = (
            now.checkpoints - before.checkpoints,
            now.autovacuums - before.autovacuums,
        );
        if c == 0 && v == 0 && running == 0 {
            return None;
        }
        Some(format!(
            "{c} checkpoint(s), {v} autovacuum/autoanalyze run(s) finished, {running} autovacuum \
             worker(s) still running at the end"
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// The run and its report.

#[derive(Serialize)]
struct Report {
    settings: Plan,
    topic: String,
    topic_events_before_f: Option<i64>,
    rows: Vec<ResultRow>,
}

#[derive(Serialize)]
struct ResultRow {
    id: &'static str,
    scenario: String,
    events_per_sec: Option<f64>,
    p50_ms: f64,
    p99_ms: f64,
    requests: u64,
    events: u64,
    errors: u64,
    first_error: Option<String>,
    seconds: f64,
    /// This row over its reference (throughput; for the deep pull, latency).
    ratio: Option<f64>,
    ratio_to: Option<&'static str>,
    target: Option<String>,
    target_met: Option<bool>,
    /// Checkpoints and autovacuum work seen during the scenario, if any.
    background: Option<String>,
    /// CPU spent during the scenario.
    cpu: Option<CpuUse>,
    /// Publish scenarios: average events per writer transaction (warm-up included).
    events_per_commit: Option<f64>,
}

impl ResultRow {
    fn measured(id: &'static str, scenario: &str, m: &Measured) -> ResultRow {
        ResultRow {
            id,
            scenario: scenario.into(),
            events_per_sec: Some(m.events_per_sec()),
            p50_ms: m.p(0.50),
            p99_ms: m.p(0.99),
            requests: m.latencies.len() as u64,
            events: m.events,
            errors: m.errors,
            first_error: m.first_error.clone(),
            seconds: m.elapsed.as_secs_f64(),
            ratio: None,
            ratio_to: None,
            target: None,
            target_met: None,
            background: None,
            cpu: m.cpu,
            events_per_commit: None,
        }
    }

    fn point(id: &'static str, scenario: String, lat: &[Duration]) -> ResultRow {
        ResultRow {
            id,
            scenario,
            events_per_sec: None,
            p50_ms: percentile_ms(lat, 0.50),
            p99_ms: percentile_ms(lat, 0.99),
            requests: lat.len() as u64,
            events: lat.len() as u64 * PULL_BATCH as u64,
            errors: 0,
            first_error: None,
            seconds: lat.iter().map(Duration::as_secs_f64).sum(),
            ratio: None,
            ratio_to: None,
            target: None,
            target_met: None,
            background: None,
            cpu: None,
            events_per_commit: None,
        }
    }
}

/// Runs one stage of the benchmark with a deadline, so a stuck server or database ends the run
/// with the name of the stage instead of hanging.
async fn bounded<T>(
    what: &str,
    limit: Duration,
    stage: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    tokio::time::timeout(limit, stage)
        .await
        .map_err(|_| anyhow!("{what} did not finish within {} s", limit.as_secs()))?
}

fn say(msg: &str) {
    eprintln!("[{}] {msg}", Utc::now().format("%H:%M:%S"));
}

fn eps(r: &ResultRow) -> f64 {
    r.events_per_sec.unwrap_or(f64::NAN)
}

async fn bench(plan: &Plan, t: &Target, topic: &str) -> Result<Report> {
    let mut admin = Admin {
        conn: t.db().await?,
        settle: plan.settle,
    };
    if admin.conn.is_none() {
        say("no database for this target: baselines c, d, the prefill and settling are skipped");
    }
    let secs = plan.seconds;
    let c = plan.concurrency;
    // A measured stage: warm-up, window, and the 60 s request timeout of the last requests.
    let stage = Duration::from_secs_f64(plan.warmup + plan.seconds + 90.0);

    say(&format!(
        "a: durable publish, 1 event/request, {c} clients, {secs} s"
    ));
    let bg = bounded("settling", SETTLE_LIMIT, async { Ok(admin.before().await) }).await?;
    let start = t.last_offset(topic).await?;
    let mut a = ResultRow::measured(
        "a",
        "publish durable, 1 event/request",
        &bounded("a", stage, publish(plan, t, topic, 1)).await?,
    );
    a.background = bounded("reading pg_stat", SETTLE_LIMIT, async {
        Ok(admin.after(bg).await)
    })
    .await?;
    let end = t.last_offset(topic).await?;
    a.events_per_commit = admin.events_per_commit(topic, start, end).await;

    say(&format!(
        "b: durable publish, {BATCH} events/request, {c} clients, {secs} s"
    ));
    let bg = bounded("settling", SETTLE_LIMIT, async { Ok(admin.before().await) }).await?;
    let start = t.last_offset(topic).await?;
    let mut b = ResultRow::measured(
        "b",
        "publish durable, 100 events/request",
        &bounded("b/f", stage, publish(plan, t, topic, BATCH)).await?,
    );
    b.background = bounded("reading pg_stat", SETTLE_LIMIT, async {
        Ok(admin.after(bg).await)
    })
    .await?;
    let end = t.last_offset(topic).await?;
    b.events_per_commit = admin.events_per_commit(topic, start, end).await;

    let (mut base_c, mut base_d) = (None, None);
    if let (Some(conn), Some(url)) = (admin.conn.as_mut(), t.db_url.as_deref()) {
        make_baseline_table(conn, topic).await?;
        let offsets = Arc::new(AtomicI64::new(0));
        say(&format!(
            "c: baseline, one INSERT transaction per event, {c} connections, {secs} s"
        ));
        let bg = bounded("settling", SETTLE_LIMIT, async { Ok(admin.before().await) }).await?;
        let mut row = ResultRow::measured(
            "c",
            "baseline: INSERT 1 row/transaction",
            &bounded("c", stage, baseline(plan, url, &offsets, 1)).await?,
        );
        row.background = bounded("reading pg_stat", SETTLE_LIMIT, async {
            Ok(admin.after(bg).await)
        })
        .await?;
        base_c = Some(row);

        say(&format!(
            "d: baseline, {BATCH}-row INSERT per statement, {c} connections, {secs} s"
        ));
        let bg = bounded("settling", SETTLE_LIMIT, async { Ok(admin.before().await) }).await?;
        let mut row = ResultRow::measured(
            "d",
            "baseline: INSERT 100 rows/statement",
            &bounded("d", stage, baseline(plan, url, &offsets, BATCH)).await?,
        );
        row.background = bounded("reading pg_stat", SETTLE_LIMIT, async {
            Ok(admin.after(bg).await)
        })
        .await?;
        base_d = Some(row);
    }

    if let Some(conn) = admin.conn.as_mut()
        && plan.prefill > 0
    {
        say(&format!(
            "e: prefilling {} rows with INSERT ... SELECT generate_series",
            plan.prefill
        ));
        let started = Instant::now();
        let last = bounded(
            "prefill",
            PREFILL_LIMIT,
            prefill(conn, topic, plan.prefill, plan.settle),
        )
        .await?;
        say(&format!(
            "   prefilled in {:.1} s; last offset now {last}",
            started.elapsed().as_secs_f64()
        ));
    }
    let last = t.last_offset(topic).await?;
    say(&format!(
        "e: pull walk, batch {PULL_BATCH}, {c} clients, {secs} s over {last} events"
    ));
    let bg = bounded("settling", SETTLE_LIMIT, async { Ok(admin.before().await) }).await?;
    let mut walk = ResultRow::measured(
        "e",
        "pull, batch 1000, walking forward",
        &bounded("e", stage, pull_walk(plan, t, topic, last)).await?,
    );
    walk.background = bounded("reading pg_stat", SETTLE_LIMIT, async {
        Ok(admin.after(bg).await)
    })
    .await?;

    let want = if plan.prefill > 0 {
        plan.prefill
    } else {
        FULL_PREFILL
    };
    let deep = want.min(last - i64::from(PULL_BATCH)).max(0);
    let second = i64::from(PULL_BATCH).min(deep);
    say(&format!(
        "e: {POINT_PULLS} single pulls each at offsets 0, {second} and {deep}, taking turns"
    ));
    let bg = bounded("settling", SETTLE_LIMIT, async { Ok(admin.before().await) }).await?;
    let lat = bounded(
        "single pulls",
        PREFILL_LIMIT,
        point_pulls(t, topic, &[0, second, deep]),
    )
    .await?;
    let p0 = ResultRow::point("e0", "single pull at offset 0".into(), &lat[0]);
    let mut p1 = ResultRow::point(
        "e1",
        format!("single pull at offset {}", thousands(second as f64)),
        &lat[1],
    );
    let mut p2 = ResultRow::point(
        "e2",
        format!("single pull at offset {}", thousands(deep as f64)),
        &lat[2],
    );
    p2.background = bounded("reading pg_stat", SETTLE_LIMIT, async {
        Ok(admin.after(bg).await)
    })
    .await?;

    let topic_events_before_f = t.last_offset(topic).await?;
    say(&format!(
        "f: durable publish, {BATCH} events/request, topic holds {topic_events_before_f} events"
    ));
    let bg = bounded("settling", SETTLE_LIMIT, async { Ok(admin.before().await) }).await?;
    let mut f = ResultRow::measured(
        "f",
        &format!(
            "publish durable, 100 ev/req, topic at {}",
            thousands(topic_events_before_f as f64)
        ),
        &bounded("b/f", stage, publish(plan, t, topic, BATCH)).await?,
    );
    f.background = bounded("reading pg_stat", SETTLE_LIMIT, async {
        Ok(admin.after(bg).await)
    })
    .await?;
    let end = t.last_offset(topic).await?;
    f.events_per_commit = admin
        .events_per_commit(topic, topic_events_before_f, end)
        .await;
    if let Some(conn) = admin.conn {
        let _ = conn.close().await;
    }

    // Ratios and targets.
    a.target = Some(format!(
        ">= {} ev/s and >= {:.0}% of c",
        thousands(TARGET_SINGLE_EPS),
        TARGET_SINGLE_VS_BASELINE * 100.0
    ));
    let a_abs = eps(&a) >= TARGET_SINGLE_EPS && a.errors == 0;
    a.target_met = Some(a_abs);
    if let Some(cr) = &base_c {
        a.ratio = Some(eps(&a) / eps(cr));
        a.ratio_to = Some("c");
        a.target_met = Some(a_abs && a.ratio.unwrap_or(0.0) >= TARGET_SINGLE_VS_BASELINE);
    }
    b.target = Some(format!(
        ">= {} ev/s and >= {:.0}% of d",
        thousands(TARGET_BATCH_EPS),
        TARGET_BATCH_VS_BASELINE * 100.0
    ));
    let b_abs = eps(&b) >= TARGET_BATCH_EPS && b.errors == 0;
    b.target_met = Some(b_abs);
    if let Some(dr) = &base_d {
        b.ratio = Some(eps(&b) / eps(dr));
        b.ratio_to = Some("d");
        b.target_met = Some(b_abs && b.ratio.unwrap_or(0.0) >= TARGET_BATCH_VS_BASELINE);
    }
    f.ratio = Some(eps(&f) / eps(&b));
    f.ratio_to = Some("b");
    f.target = Some("info: ~1.0 x b expected".into());
    for p in [&mut p1, &mut p2] {
        p.ratio = Some(p.p50_ms / p0.p50_ms);
        p.ratio_to = Some("e0");
        p.target = Some("info: p50 latency ratio, ~1.0".into());
    }

    let mut rows = vec![a, b];
    rows.extend(base_c);
    rows.extend(base_d);
    rows.extend([walk, p0, p1, p2, f]);
    Ok(Report {
        settings: plan.clone(),
        topic: topic.to_owned(),
        topic_events_before_f: Some(topic_events_before_f),
        rows,
    })
}

fn thousands(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    let s = format!("{:.0}", v.round());
    let (sign, digits) = s.strip_prefix('-').map_or(("", s.as_str()), |d| ("-", d));
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    format!("{sign}{out}")
}

fn ms(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.2}")
    } else {
        "-".into()
    }
}

fn print_report(r: &Report) {
    let s = &r.settings;
    println!();
    println!(
        "er-loadgen: {}; {} clients over {} gRPC channels; {} s per scenario after {} s warm-up; prefill {}{}{}",
        s.mode,
        s.concurrency,
        s.channels,
        s.seconds,
        s.warmup,
        thousands(s.prefill as f64),
        s.server_db_pool_size
            .map(|p| format!("; server pool {p} connections"))
            .unwrap_or_default(),
        if s.server_nodelay {
            "; DIAGNOSTIC: TCP_NODELAY forced on the server's listener"
        } else {
            ""
        },
    );
    println!(
        "Postgres {} before each scenario",
        if s.settle {
            "settled (CHECKPOINT, autovacuum idle)"
        } else {
            "not settled"
        }
    );
    println!();
    println!(
        "{:<3} {:<46} {:>10} {:>9} {:>9} {:>12}  {:<34} {:<4}",
        "", "scenario", "events/s", "p50 ms", "p99 ms", "ratio", "target", "met"
    );
    println!("{}", "-".repeat(136));
    for row in &r.rows {
        let ratio = match (row.ratio, row.ratio_to) {
            (Some(x), Some(to)) => format!("{x:.2} x {to}"),
            _ => String::new(),
        };
        let met = match row.target_met {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "",
        };
        println!(
            "{:<3} {:<46} {:>10} {:>9} {:>9} {:>12}  {:<34} {:<4}",
            row.id,
            row.scenario,
            row.events_per_sec.map_or_else(|| "-".into(), thousands),
            ms(row.p50_ms),
            ms(row.p99_ms),
            ratio,
            row.target.as_deref().unwrap_or(""),
            met
        );
    }
    println!();
    for row in &r.rows {
        if let Some(c) = &row.cpu
            && row.events_per_sec.is_some()
        {
            // The CPU figures cover the nominal window of `seconds`.
            let window_events = row.events_per_sec.unwrap_or(0.0) * r.settings.seconds;
            let per_k = |s: f64| 1e6 * s / window_events.max(1.0);
            println!(
                "{}: CPU: this process {:.1} s, rest of the machine {:.1} s ({:.2} + {:.2} ms per \
                 1,000 events); machine {:.0}% busy",
                row.id,
                c.own_s,
                c.others_s,
                per_k(c.own_s),
                per_k(c.others_s),
                c.machine_busy_pct
            );
        }
        if let Some(n) = row.events_per_commit {
            println!(
                "{}: {n:.1} events per writer transaction on average (group commit)",
                row.id
            );
        }
        if let Some(bg) = &row.background {
            println!("{}: background during the scenario: {bg}", row.id);
        }
    }
    for row in &r.rows {
        if row.errors > 0 {
            println!(
                "{}: {} failed requests; first: {}",
                row.id,
                row.errors,
                row.first_error.as_deref().unwrap_or("?")
            );
        }
    }
}
