//! `herald import devices --app NAME FILE`: bulk device registration straight into the store.
//!
//! The file is CSV (`userId,token,provider`, header optional, `userId` may be empty) or JSON lines
//! (`{"userId"?, "token", "provider"}`). Every line is validated like `POST /DeviceRegistrations`;
//! valid lines are registered by concurrent workers, each taking the next batch of lines. A line
//! registers exactly what the API would, so a second run of the same file changes nothing
//! (a device without `userId` that is already registered in the app keeps its registration).
//! Rejected lines are reported with their line number and reason (stderr, and in the JSON summary
//! on stdout); the exit status is 2 when any line was rejected.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, bail};
use herald_core::ids;
use herald_core::{AppName, DeviceToken, Provider};
use herald_store::devices::{RegisterChange, RegisterDevice};
use herald_store::{AppStore, DeviceStore, SqlStore, StoreError};
use serde_json::{Value, json};

use crate::config::{Settings, StoreArgs};

#[derive(clap::Args)]
pub struct ImportDevicesArgs {
    /// The app to register the devices in (it must exist: created with its first credential).
    #[arg(long = "app")]
    pub app: String,
    /// The account (`AC...`); default: the bootstrap account of the data directory.
    #[arg(long)]
    pub account: Option<String>,
    /// `csv` or `jsonl`; default: from the extension (`.csv`, `.jsonl`/`.ndjson`/`.json`), else
    /// from the first non-empty line (`{` → JSON lines).
    #[arg(long)]
    pub format: Option<String>,
    /// Lines a worker takes at a time.
    #[arg(long, default_value_t = 500)]
    pub batch_size: usize,
    /// Workers registering at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// The file (CSV or JSON lines).
    pub file: PathBuf,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// One valid line.
#[derive(Clone)]
struct Line {
    number: usize,
    user_id: Option<String>,
    token: DeviceToken,
    provider: Provider,
}

#[derive(Default)]
struct Tally {
    new_users: usize,
    added: usize,
    unchanged: usize,
    reactivated: usize,
    moved: usize,
    rejected: Vec<(usize, String)>,
}

#[derive(Clone, Copy, PartialEq)]
enum Format {
    Csv,
    JsonLines,
}

fn detect_format(path: &Path, text: &str, given: Option<&str>) -> anyhow::Result<Format> {
    match given {
        Some("csv") => return Ok(Format::Csv),
        Some("jsonl") | Some("ndjson") | Some("json") => return Ok(Format::JsonLines),
        Some(other) => bail!("--format must be csv or jsonl, not {other:?}"),
        None => {}
    }
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("csv") => Ok(Format::Csv),
        Some("jsonl" | "ndjson" | "json") => Ok(Format::JsonLines),
        _ => Ok(
            if text
                .lines()
                .find(|l| !l.trim().is_empty())
                .is_some_and(|l| l.trim_start().starts_with('{'))
            {
                Format::JsonLines
            } else {
                Format::Csv
            },
        ),
    }
}

/// Splits one CSV record (RFC 4180 quoting: `"a,b"`, `""` for a quote).
fn csv_fields(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                _ => field.push(c),
            }
        } else {
            match c {
                '"' if at_start => {
                    quoted = true;
                    at_start = false;
                    continue;
                }
                ',' => {
                    fields.push(std::mem::take(&mut field));
                    at_start = true;
                    continue;
                }
                '"' => return Err("a quote inside an unquoted field".into()),
                _ => field.push(c),
            }
        }
        at_start = false;
    }
    if quoted {
        return Err("an unterminated quoted field".into());
    }
    fields.push(field);
    Ok(fields)
}

/// Validates the three values of a line like the API does; every problem, named by field.
fn validate(
    number: usize,
    user_id: Option<&str>,
    token: Option<&str>,
    provider: Option<&str>,
) -> Result<Line, String> {
    let mut problems = Vec::new();
    let user_id = match user_id.map(str::trim).filter(|u| !u.is_empty()) {
        None => None,
        Some(u) if ids::parse_type_id(ids::USER, u).is_some() => Some(u.to_owned()),
        Some(_) => {
            problems.push(format!("userId: must be a user ID ({}_...)", ids::USER));
            None
        }
    };
    let token = match token {
        None | Some("") => {
            problems.push("token: is required".to_owned());
            None
        }
        Some(t) => DeviceToken::parse(t)
            .map_err(|e| problems.push(format!("token: {e}")))
            .ok(),
    };
    let provider = match provider {
        None | Some("") => {
            problems.push("provider: is required (APN or FCM)".to_owned());
            None
        }
        Some(p) => Provider::parse(p.trim())
            .map_err(|_| problems.push(format!("provider: must be APN or FCM, not {:?}", p.trim())))
            .ok(),
    };
    match (token, provider) {
        (Some(token), Some(provider)) if problems.is_empty() => Ok(Line {
            number,
            user_id,
            token,
            provider,
        }),
        _ => Err(problems.join("; ")),
    }
}

/// Parses the file: valid lines and rejected (line number, reason).
fn parse(text: &str, format: Format) -> (Vec<Line>, Vec<(usize, String)>) {
    let mut lines = Vec::new();
    let mut rejected = Vec::new();
    // CSV columns: from a header when the first record is one, else userId,token,provider (or
    // token,provider with two columns).
    let mut columns: Option<(Option<usize>, usize, usize)> = None;
    let mut first = true;
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        if raw.trim().is_empty() {
            continue;
        }
        let result = match format {
            Format::JsonLines => match serde_json::from_str::<Value>(raw) {
                Err(e) => Err(format!("not valid JSON: {e}")),
                Ok(Value::Object(map)) => {
                    let unknown: Vec<&str> = map
                        .keys()
                        .map(String::as_str)
                        .filter(|k| !["userId", "token", "provider"].contains(k))
                        .collect();
                    let not_string: Vec<&str> = ["userId", "token", "provider"]
                        .into_iter()
                        .filter(|k| {
                            map.get(*k).is_some_and(|v| {
                                !(v.is_string() || (*k == "userId" && v.is_null()))
                            })
                        })
                        .collect();
                    if !unknown.is_empty() {
                        Err(format!("unknown field(s) {}", unknown.join(", ")))
                    } else if !not_string.is_empty() {
                        Err(not_string
                            .iter()
                            .map(|k| format!("{k}: must be a string"))
                            .collect::<Vec<_>>()
                            .join("; "))
                    } else {
                        let s = |k: &str| map.get(k).and_then(Value::as_str);
                        validate(number, s("userId"), s("token"), s("provider"))
                    }
                }
                Ok(_) => Err("not a JSON object".into()),
            },
            Format::Csv => match csv_fields(raw) {
                Err(e) => Err(format!("malformed CSV: {e}")),
                Ok(fields) => {
                    let is_header = first
                        && fields.iter().any(|f| f.trim() == "token")
                        && fields.iter().any(|f| f.trim() == "provider");
                    first = false;
                    if is_header {
                        let find = |name: &str| fields.iter().position(|f| f.trim() == name);
                        let unknown: Vec<&String> = fields
                            .iter()
                            .filter(|f| !["userId", "token", "provider"].contains(&f.trim()))
                            .collect();
                        if !unknown.is_empty() {
                            rejected
                                .push((number, format!("header: unknown column(s) {unknown:?}")));
                            return (Vec::new(), rejected);
                        }
                        columns = Some((
                            find("userId"),
                            find("token").unwrap(),
                            find("provider").unwrap(),
                        ));
                        continue;
                    }
                    let (user, token, provider) = *columns.get_or_insert(if fields.len() == 2 {
                        (None, 0, 1)
                    } else {
                        (Some(0), 1, 2)
                    });
                    let width = user.map_or(0, |u| u + 1).max(token + 1).max(provider + 1);
                    if fields.len() != width {
                        Err(format!("expected {width} columns, found {}", fields.len()))
                    } else {
                        validate(
                            number,
                            user.map(|u| fields[u].as_str()),
                            Some(fields[token].as_str()),
                            Some(fields[provider].as_str()),
                        )
                    }
                }
            },
        };
        match result {
            Ok(line) => lines.push(line),
            Err(reason) => rejected.push((number, reason)),
        }
    }
    // A (token, provider) on two lines would race between workers: the first line wins and the
    // others are rejected, so every run of a file does the same.
    let mut seen: HashMap<(Provider, String), usize> = HashMap::new();
    let mut unique = Vec::with_capacity(lines.len());
    for line in lines {
        let key = (line.provider, line.token.as_str().to_owned());
        if let Some(first) = seen.get(&key) {
            rejected.push((
                line.number,
                format!("token: the same token and provider as line {first}"),
            ));
        } else {
            seen.insert(key, line.number);
            unique.push(line);
        }
    }
    (unique, rejected)
}

/// A progress bar on stderr: redrawn in place on a terminal, a line every 10% otherwise.
struct Progress {
    total: usize,
    done: AtomicUsize,
    started: Instant,
    tty: bool,
    quiet: bool,
    last_tenth: AtomicUsize,
}

impl Progress {
    fn tick(&self, n: usize) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        if self.quiet || self.total == 0 {
            return;
        }
        let rate = done as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
        if self.tty {
            let width = 30;
            let filled = done * width / self.total;
            eprint!(
                "\r[{}{}] {done}/{} lines, {rate:.0}/s ",
                "#".repeat(filled),
                "-".repeat(width - filled),
                self.total
            );
            let _ = std::io::stderr().flush();
        } else {
            let tenth = done * 10 / self.total;
            if self.last_tenth.fetch_max(tenth, Ordering::Relaxed) < tenth {
                eprintln!(
                    "import: {done}/{} lines ({}%), {rate:.0}/s",
                    self.total,
                    tenth * 10
                );
            }
        }
    }
}

fn account_of(settings: &Settings, given: Option<String>) -> anyhow::Result<String> {
    if let Some(account) = given {
        return Ok(account);
    }
    let path = settings.bootstrap_file();
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "no --account given and no bootstrap account file {}",
            path.display()
        )
    })?;
    let v: Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    Ok(v["accountSid"]
        .as_str()
        .context("bootstrap file without accountSid")?
        .to_owned())
}

/// Runs the import; returns the process exit status (0, or 2 when lines were rejected).
pub async fn run(args: ImportDevicesArgs) -> anyhow::Result<i32> {
    let app = AppName::parse(&args.app).map_err(|e| anyhow::anyhow!("--app: {e}"))?;
    anyhow::ensure!(args.batch_size > 0, "--batch-size must be at least 1");
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let format = detect_format(&args.file, &text, args.format.as_deref())?;
    let settings = Settings::load(&args.store, None)?;
    let account = account_of(&settings, args.account.clone())?;
    let store: Arc<SqlStore> = settings.open_store().await?;
    match store.get_app(&account, &app).await {
        Ok(_) => {}
        Err(StoreError::NotFound) => {
            bail!("no app {app} in account {account} (an app is created with its first credential)")
        }
        Err(e) => return Err(e.into()),
    }

    let (lines, mut rejected) = parse(&text, format);
    let line_count = lines.len() + rejected.len();
    let lines = Arc::new(lines);
    let progress = Arc::new(Progress {
        total: lines.len(),
        done: AtomicUsize::new(0),
        started: Instant::now(),
        tty: std::io::stderr().is_terminal(),
        quiet: args.quiet,
        last_tenth: AtomicUsize::new(0),
    });
    let next = Arc::new(AtomicUsize::new(0));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (lines, next, tally, store, progress, account, app) = (
            lines.clone(),
            next.clone(),
            tally.clone(),
            store.clone(),
            progress.clone(),
            account.clone(),
            app.clone(),
        );
        let batch = args.batch_size;
        workers.push(tokio::spawn(async move {
            loop {
                let start = next.fetch_add(batch, Ordering::Relaxed);
                if start >= lines.len() {
                    return anyhow::Ok(());
                }
                let mut local = Tally::default();
                for line in &lines[start..(start + batch).min(lines.len())] {
                    let request = RegisterDevice {
                        app_name: &app,
                        provider: line.provider,
                        token: &line.token,
                        user_id: line.user_id.as_deref(),
                    };
                    // A database error that is not the line's fault (PostgreSQL out of lock
                    // memory under load, a dropped connection) is retried a few times.
                    let mut attempt = 0u32;
                    let result = loop {
                        match store.register_device(&account, &request).await {
                            Err(e @ (StoreError::Database(_) | StoreError::Sqlite(_)))
                                if attempt < 5 =>
                            {
                                attempt += 1;
                                tracing::debug!(line = line.number, error = %e, "retrying");
                                tokio::time::sleep(std::time::Duration::from_millis(50 << attempt))
                                    .await;
                            }
                            other => break other,
                        }
                    };
                    match result {
                        Ok(registered) => match registered.change {
                            RegisterChange::NewUser => local.new_users += 1,
                            RegisterChange::Added => local.added += 1,
                            RegisterChange::Unchanged => local.unchanged += 1,
                            RegisterChange::Reactivated => local.reactivated += 1,
                            RegisterChange::Moved { .. } => local.moved += 1,
                        },
                        Err(StoreError::Invalid { field, message }) => local.rejected.push((
                            line.number,
                            match field {
                                Some(f) => format!("{f}: {message}"),
                                None => message,
                            },
                        )),
                        Err(StoreError::NotFound) => local
                            .rejected
                            .push((line.number, "userId: no such user".into())),
                        Err(e) => {
                            return Err(
                                anyhow::Error::from(e).context(format!("line {}", line.number))
                            );
                        }
                    }
                }
                progress.tick((start + batch).min(lines.len()) - start);
                let mut t = tally.lock().unwrap();
                t.new_users += local.new_users;
                t.added += local.added;
                t.unchanged += local.unchanged;
                t.reactivated += local.reactivated;
                t.moved += local.moved;
                t.rejected.extend(local.rejected);
            }
        }));
    }
    let mut failure = None;
    for worker in workers {
        match worker.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failure = Some(e),
            Err(e) => failure = Some(anyhow::anyhow!("import worker panicked: {e}")),
        }
    }
    if progress.tty && !args.quiet && !lines.is_empty() {
        eprintln!();
    }
    if let Some(e) = failure {
        return Err(e.context("import stopped; lines already registered stay registered, and running the same file again is safe"));
    }
    let tally = std::mem::take(&mut *tally.lock().unwrap());
    rejected.extend(tally.rejected);
    rejected.sort();
    for (number, reason) in &rejected {
        eprintln!("{}:{number}: rejected: {reason}", args.file.display());
    }
    let elapsed = progress.started.elapsed();
    let summary = json!({
        "app": app.as_str(),
        "lines": line_count,
        "registered": tally.new_users + tally.added,
        "newUsers": tally.new_users,
        "added": tally.added,
        "unchanged": tally.unchanged,
        "reactivated": tally.reactivated,
        "moved": tally.moved,
        "rejectedCount": rejected.len(),
        "rejected": rejected.iter().map(|(n, r)| json!({"line": n, "reason": r})).collect::<Vec<_>>(),
        "seconds": (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
    });
    println!("{summary}");
    Ok(if rejected.is_empty() { 0 } else { 2 })
}
