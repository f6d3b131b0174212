//! `cellkvctl`: the operator CLI over the admin API. Human tables by
//! default, `--json` for scripts. Exit codes: 0 ok, 1 the operation failed,
//! 2 usage or connection problem.

use std::time::Duration;

use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use http::Method;
use serde_json::{json, Value};

use crate::http::{bearer, HttpClient, TransportError};

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_USAGE: i32 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "cellkvctl",
    version,
    about = "Operate a cellkv cluster through its control server"
)]
pub struct Cli {
    /// Control server admin API, e.g. http://127.0.0.1:7900
    #[arg(
        long,
        env = "CELLKV_CONTROL_URL",
        default_value = "http://127.0.0.1:7900",
        global = true
    )]
    pub url: String,
    /// Admin token of the control server.
    #[arg(
        long,
        env = "CELLKV_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub token: Option<String>,
    /// Print the API's JSON answers instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Cells, replicas, ownership shares and the active job.
    Status,
    /// The current cell map (JSON).
    Map,
    /// Add, drain, remove, isolate or restore a cell.
    #[command(subcommand)]
    Cell(CellCmd),
    /// Move whatever the target ring asks for (after `cell add --no-rebalance`).
    Rebalance {
        #[arg(long)]
        bandwidth: Option<u64>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// What a change would move, without doing it.
    #[command(subcommand)]
    Plan(PlanCmd),
    /// Migration jobs (default: list).
    Jobs {
        #[command(subcommand)]
        cmd: Option<JobsCmd>,
    },
    /// Replica membership of a cell.
    #[command(subcommand)]
    Replica(ReplicaCmd),
}

#[derive(Args, Debug, Clone)]
pub struct WaitArgs {
    /// Follow the started job until it ends, with a progress line.
    #[arg(long)]
    pub wait: bool,
}

#[derive(Subcommand, Debug)]
pub enum CellCmd {
    /// Add a cell (started and initialized already) and rebalance onto it.
    Add {
        #[arg(long)]
        id: u32,
        #[arg(long, default_value_t = 1)]
        weight: u32,
        /// Repeatable: node=<id>,api=<host:port>,control=<host:port>
        #[arg(long = "replica", required = true)]
        replicas: Vec<String>,
        /// Only add it to the map (owning nothing); rebalance later.
        #[arg(long)]
        no_rebalance: bool,
        /// Copy rate limit (bytes/s) of the rebalance job.
        #[arg(long)]
        bandwidth: Option<u64>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Move every range off a cell; it ends `empty`.
    Drain {
        id: u32,
        #[arg(long)]
        bandwidth: Option<u64>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Remove an empty cell from the map.
    Remove {
        id: u32,
        /// Remove even though it owns ranges: their keys are LOST.
        #[arg(long)]
        force: bool,
    },
    /// Routers fail the cell's requests fast; nothing moves.
    Isolate { id: u32 },
    /// Undo isolate.
    Restore { id: u32 },
}

#[derive(Subcommand, Debug)]
pub enum PlanCmd {
    Add {
        #[arg(long)]
        cell: Option<u32>,
        #[arg(long, default_value_t = 1)]
        weight: u32,
        #[arg(long)]
        bandwidth: Option<u64>,
    },
    Drain {
        cell: u32,
        #[arg(long)]
        bandwidth: Option<u64>,
    },
    Rebalance {
        /// With --weight: plan a weight change of this cell.
        #[arg(long)]
        cell: Option<u32>,
        #[arg(long)]
        weight: Option<u32>,
        #[arg(long)]
        bandwidth: Option<u64>,
    },
}

#[derive(Subcommand, Debug)]
pub enum JobsCmd {
    List,
    Show {
        id: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    Pause {
        id: String,
    },
    Resume {
        id: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    Cancel {
        id: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum ReplicaCmd {
    /// Add a replica (as learner, then voter).
    Add {
        cell: u32,
        /// node=<id>,api=<host:port>,control=<host:port>
        replica: String,
    },
    Remove {
        cell: u32,
        node: u64,
    },
    /// Replace node <node> by a new replica.
    Replace {
        cell: u32,
        node: u64,
        /// node=<id>,api=<host:port>,control=<host:port>
        replica: String,
    },
    TransferLeader {
        cell: u32,
        #[arg(long)]
        to: Option<u64>,
    },
}

/// A failure with its exit code.
#[derive(Debug)]
pub struct CliError {
    pub code: i32,
    pub message: String,
}

fn usage(m: impl Into<String>) -> CliError {
    CliError {
        code: EXIT_USAGE,
        message: m.into(),
    }
}

/// Parses `node=4,api=127.0.0.1:7004,control=127.0.0.1:7104`.
pub fn parse_replica(s: &str) -> Result<Value, CliError> {
    let (mut node, mut api, mut control) = (None, None, None);
    for part in s.split(',') {
        let (k, v) = part.split_once('=').ok_or_else(|| {
            usage(format!(
                "replica {s:?}: expected node=<id>,api=<host:port>,control=<host:port>"
            ))
        })?;
        match k.trim() {
            "node" | "node_id" => {
                node = Some(
                    v.trim()
                        .parse::<u64>()
                        .map_err(|_| usage(format!("replica {s:?}: node must be a number")))?,
                )
            }
            "api" | "api_addr" => api = Some(v.trim().to_string()),
            "control" | "control_addr" => control = Some(v.trim().to_string()),
            other => {
                return Err(usage(format!(
                    "replica {s:?}: unknown field {other:?} (use node, api, control)"
                )))
            }
        }
    }
    match (node, api, control) {
        (Some(n), Some(a), Some(c)) => Ok(json!({"node_id": n, "api_addr": a, "control_addr": c})),
        _ => Err(usage(format!(
            "replica {s:?}: node, api and control are all required"
        ))),
    }
}

/// Left-aligned columns separated by two spaces, header first.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = vec![line(headers.iter().map(|h| h.to_string()).collect())];
    out.extend(rows.iter().map(|r| line(r.clone())));
    out.join("\n") + "\n"
}

/// 1536 → "1.5 KiB".
pub fn human_bytes(b: f64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{v:.0} {}", units[i])
    } else {
        format!("{v:.1} {}", units[i])
    }
}

/// 3725 → "1h02m05s".
pub fn human_secs(s: f64) -> String {
    if !s.is_finite() {
        return "∞".into();
    }
    let s = s.round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m{:02}s", s / 3600, s % 3600 / 60, s % 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One progress line of a job view.
pub fn progress_line(j: &Value) -> String {
    let p = &j["progress"];
    let done = p["ranges_done"].as_u64().unwrap_or(0);
    let total = p["ranges_total"].as_u64().unwrap_or(0);
    let pct = if total > 0 {
        done as f64 * 100.0 / total as f64
    } else {
        0.0
    };
    let width = 24usize;
    let filled = ((pct / 100.0) * width as f64).round() as usize;
    let bar: String = "#".repeat(filled.min(width)) + &"-".repeat(width - filled.min(width));
    let eta = j["eta_secs"].as_f64().map_or("-".into(), human_secs);
    format!(
        "[{bar}] {pct:5.1}%  ranges {done}/{total}  moved {} ({} keys)  {}/s  eta {eta}  {} {}",
        human_bytes(p["bytes_copied"].as_f64().unwrap_or(0.0)),
        p["keys_copied"].as_u64().unwrap_or(0),
        human_bytes(j["rate_bytes_per_sec"].as_f64().unwrap_or(0.0)),
        s(&j["status"]),
        j["phase"].as_str().unwrap_or(""),
    )
}

pub fn format_status(v: &Value) -> String {
    let mut rows = Vec::new();
    for c in v["cells"].as_array().into_iter().flatten() {
        let reps: Vec<String> = c["replicas"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                let role =
                    r["role"]
                        .as_str()
                        .unwrap_or(if r["reachable"] == true { "?" } else { "down" });
                let lag = r["lag_entries"].as_u64().map_or(String::new(), |l| {
                    if l > 0 {
                        format!("+{l}")
                    } else {
                        String::new()
                    }
                });
                format!("{}:{role}{lag}", s(&r["node_id"]))
            })
            .collect();
        rows.push(vec![
            s(&c["id"]),
            s(&c["state"]),
            s(&c["weight"]),
            format!("{:.1}%", c["share_pct"].as_f64().unwrap_or(0.0)),
            format!("{:.1}%", c["target_share_pct"].as_f64().unwrap_or(0.0)),
            c["keys"].as_u64().map_or("-".into(), |k| k.to_string()),
            c["bytes"].as_f64().map_or("-".into(), human_bytes),
            s(&c["leader"]),
            s(&c["ownership_epoch"]),
            reps.join(" "),
        ]);
    }
    let mut out = format!(
        "map epoch {}  pending moves {}  lease {}\n",
        s(&v["epoch"]),
        s(&v["pending_moves"]),
        if v["control"]["lease_held"] == true {
            "held here".to_string()
        } else {
            format!("held by {}", s(&v["control"]["lease_holder"]))
        }
    );
    out.push_str(&table(
        &[
            "CELL",
            "STATE",
            "WEIGHT",
            "SHARE",
            "TARGET",
            "KEYS",
            "BYTES",
            "LEADER",
            "OWN-EPOCH",
            "REPLICAS",
        ],
        &rows,
    ));
    if !v["active_job"].is_null() {
        out.push_str(&format!(
            "\njob {}: {}\n",
            s(&v["active_job"]["id"]),
            progress_line(&v["active_job"])
        ));
    }
    out
}

pub fn format_jobs(v: &Value) -> String {
    let rows: Vec<Vec<String>> = v["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|j| {
            let p = &j["progress"];
            vec![
                s(&j["id"]),
                format!(
                    "{} {}",
                    s(&j["kind"]),
                    j["cell"].as_u64().map_or(String::new(), |c| c.to_string())
                )
                .trim()
                .to_string(),
                s(&j["status"]),
                s(&j["phase"]),
                format!(
                    "{}/{}",
                    p["ranges_done"].as_u64().unwrap_or(0),
                    p["ranges_total"].as_u64().unwrap_or(0)
                ),
                human_bytes(p["bytes_copied"].as_f64().unwrap_or(0.0)),
                j["pause_max_ms"]
                    .as_u64()
                    .map_or("-".into(), |m| format!("{m}ms")),
                j["message"].as_str().unwrap_or("").to_string(),
            ]
        })
        .collect();
    table(
        &[
            "JOB",
            "KIND",
            "STATUS",
            "PHASE",
            "RANGES",
            "MOVED",
            "MAX-PAUSE",
            "MESSAGE",
        ],
        &rows,
    )
}

pub fn format_job(j: &Value) -> String {
    let p = &j["progress"];
    let mut out = String::new();
    for (k, v) in [
        ("job", s(&j["id"])),
        (
            "kind",
            format!(
                "{} {}",
                s(&j["kind"]),
                j["cell"]
                    .as_u64()
                    .map_or(String::new(), |c| format!("cell {c}"))
            ),
        ),
        ("status", s(&j["status"])),
        ("phase", s(&j["phase"])),
        ("batches done", s(&p["batches_done"])),
        (
            "ranges",
            format!("{}/{}", s(&p["ranges_done"]), s(&p["ranges_total"])),
        ),
        ("keys copied", s(&p["keys_copied"])),
        ("keys deleted", s(&p["keys_deleted"])),
        (
            "bytes copied",
            human_bytes(p["bytes_copied"].as_f64().unwrap_or(0.0)),
        ),
        (
            "bytes estimated",
            human_bytes(p["bytes_estimated"].as_f64().unwrap_or(0.0)),
        ),
        (
            "rate",
            format!(
                "{}/s",
                human_bytes(j["rate_bytes_per_sec"].as_f64().unwrap_or(0.0))
            ),
        ),
        ("eta", j["eta_secs"].as_f64().map_or("-".into(), human_secs)),
        (
            "write pause max",
            j["pause_max_ms"]
                .as_u64()
                .map_or("-".into(), |m| format!("{m} ms")),
        ),
        (
            "write pause p99",
            j["pause_p99_ms"]
                .as_u64()
                .map_or("-".into(), |m| format!("{m} ms")),
        ),
        ("message", j["message"].as_str().unwrap_or("-").to_string()),
    ] {
        out.push_str(&format!("{k:<16} {v}\n"));
    }
    out
}

pub fn format_plan(v: &Value) -> String {
    let rows: Vec<Vec<String>> = v["pairs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            vec![
                s(&p["from"]),
                s(&p["to"]),
                s(&p["ranges"]),
                format!("{:.2}%", p["share_pct"].as_f64().unwrap_or(0.0)),
                s(&p["keys"]),
                human_bytes(p["bytes"].as_f64().unwrap_or(0.0)),
            ]
        })
        .collect();
    let mut out = table(&["FROM", "TO", "RANGES", "SHARE", "KEYS", "BYTES"], &rows);
    out.push_str(&format!(
        "total: {} ranges, {} keys, {}; about {} at {}/s{}\n",
        s(&v["ranges"]),
        s(&v["keys"]),
        human_bytes(v["bytes"].as_f64().unwrap_or(0.0)),
        human_secs(v["estimated_secs"].as_f64().unwrap_or(0.0)),
        human_bytes(v["bandwidth_bytes_per_sec"].as_f64().unwrap_or(0.0)),
        if v["stats_complete"] == false {
            " (some cells did not report stats: keys/bytes are lower bounds)"
        } else {
            ""
        }
    ));
    out
}

struct Client {
    http: HttpClient,
    addr: String,
    token: String,
}

impl Client {
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, CliError> {
        let bytes = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
        let headers = vec![
            bearer(&self.token),
            (
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            ),
        ];
        let r = self
            .http
            .send(method, &self.addr, path, &headers, bytes, Duration::from_secs(330))
            .await
            .map_err(|e| match e {
                TransportError::Connect { .. } => usage(format!(
                    "cannot reach the control server at {}: {e}. Is cellkv-control running? Set --url or CELLKV_CONTROL_URL.",
                    self.addr
                )),
                other => CliError { code: EXIT_FAILED, message: other.to_string() },
            })?;
        if r.status.is_success() {
            return r.json().map_err(|m| CliError {
                code: EXIT_FAILED,
                message: m,
            });
        }
        let msg = r.error().map_or_else(
            || r.describe(),
            |b| format!("{} ({})", b.error.message, b.error.code.as_str()),
        );
        let code = if r.status.as_u16() == 401 {
            EXIT_USAGE
        } else {
            EXIT_FAILED
        };
        let hint = if r.status.as_u16() == 401 {
            " — pass --token or set CELLKV_ADMIN_TOKEN"
        } else {
            ""
        };
        Err(CliError {
            code,
            message: format!("{msg}{hint}"),
        })
    }
}

/// Runs the CLI; returns the exit code.
pub async fn run(cli: Cli) -> i32 {
    match run_inner(cli).await {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("error: {}", e.message);
            e.code
        }
    }
}

fn addr_of(url: &str) -> Result<String, CliError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| usage(format!("--url {url:?}: expected http://host:port")))?;
    Ok(rest.trim_end_matches('/').to_string())
}

async fn follow(c: &Client, id: &str, json_out: bool) -> Result<(), CliError> {
    let mut last_line = String::new();
    loop {
        let j = c.call(Method::GET, &format!("/v1/jobs/{id}"), None).await?;
        let line = progress_line(&j);
        if !json_out && line != last_line {
            eprint!("\r{line}   ");
            last_line = line;
        }
        let status = j["status"].as_str().unwrap_or("");
        match status {
            "running" => {}
            _ => {
                if !json_out {
                    eprintln!();
                }
                if json_out {
                    println!("{}", serde_json::to_string_pretty(&j).unwrap_or_default());
                } else {
                    print!("{}", format_job(&j));
                }
                return match status {
                    "done" => Ok(()),
                    "paused" => Err(CliError {
                        code: EXIT_FAILED,
                        message: format!(
                            "job {id} paused: {}. Fix the cause, then: cellkvctl jobs resume {id} --wait",
                            j["message"].as_str().unwrap_or("no reason given")
                        ),
                    }),
                    other => Err(CliError { code: EXIT_FAILED, message: format!("job {id} ended {other}: {}", j["message"].as_str().unwrap_or("")) }),
                };
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn run_inner(cli: Cli) -> Result<(), CliError> {
    let token = cli
        .token
        .clone()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| usage("no admin token: pass --token or set CELLKV_ADMIN_TOKEN"))?;
    let c = Client {
        http: HttpClient::new(Duration::from_secs(3)),
        addr: addr_of(&cli.url)?,
        token,
    };
    let out = |v: &Value, human: &dyn Fn(&Value) -> String| {
        if cli.json {
            println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        } else {
            print!("{}", human(v));
        }
    };
    let job_id = |v: &Value| v["job"]["id"].as_str().map(str::to_string);
    match cli.cmd {
        Cmd::Status => {
            let v = c.call(Method::GET, "/v1/status", None).await?;
            out(&v, &format_status);
        }
        Cmd::Map => {
            let v = c.call(Method::GET, "/v1/map", None).await?;
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        }
        Cmd::Cell(cmd) => match cmd {
            CellCmd::Add {
                id,
                weight,
                replicas,
                no_rebalance,
                bandwidth,
                wait,
            } => {
                let reps = replicas
                    .iter()
                    .map(|r| parse_replica(r))
                    .collect::<Result<Vec<_>, _>>()?;
                let body = json!({"id": id, "weight": weight, "replicas": reps, "rebalance": !no_rebalance, "bandwidth": bandwidth});
                let v = c.call(Method::POST, "/v1/cells", Some(body)).await?;
                out(&v, &|v| match job_id(v) {
                    Some(j) => format!(
                        "cell {id} added (map epoch {}); rebalance job {j} started\n",
                        s(&v["epoch"])
                    ),
                    None => format!(
                        "cell {id} added (map epoch {}), owning nothing yet\n",
                        s(&v["epoch"])
                    ),
                });
                if let (true, Some(j)) = (wait.wait, job_id(&v)) {
                    follow(&c, &j, cli.json).await?;
                }
            }
            CellCmd::Drain {
                id,
                bandwidth,
                wait,
            } => {
                let v = c
                    .call(
                        Method::POST,
                        &format!("/v1/cells/{id}/drain"),
                        Some(json!({"bandwidth": bandwidth})),
                    )
                    .await?;
                out(&v, &|v| {
                    format!(
                        "cell {id} draining; job {} started\n",
                        job_id(v).unwrap_or_default()
                    )
                });
                if let (true, Some(j)) = (wait.wait, job_id(&v)) {
                    follow(&c, &j, cli.json).await?;
                }
            }
            CellCmd::Remove { id, force } => {
                let path = if force {
                    format!("/v1/cells/{id}?force=true")
                } else {
                    format!("/v1/cells/{id}")
                };
                let v = c.call(Method::DELETE, &path, None).await?;
                out(&v, &|v| {
                    if v["forced"] == true {
                        format!(
                            "cell {id} removed; LOST {} ranges, {} keys, {} bytes\n",
                            s(&v["lost"]["ranges"]),
                            s(&v["lost"]["keys"]),
                            s(&v["lost"]["bytes"])
                        )
                    } else {
                        format!("cell {id} removed\n")
                    }
                });
            }
            CellCmd::Isolate { id } => {
                let v = c
                    .call(Method::POST, &format!("/v1/cells/{id}/isolate"), None)
                    .await?;
                out(&v, &|v| {
                    format!("cell {id} isolated (map epoch {})\n", s(&v["epoch"]))
                });
            }
            CellCmd::Restore { id } => {
                let v = c
                    .call(Method::POST, &format!("/v1/cells/{id}/restore"), None)
                    .await?;
                out(&v, &|v| {
                    format!("cell {id} active again (map epoch {})\n", s(&v["epoch"]))
                });
            }
        },
        Cmd::Rebalance { bandwidth, wait } => {
            let v = c
                .call(
                    Method::POST,
                    "/v1/rebalance",
                    Some(json!({"bandwidth": bandwidth})),
                )
                .await?;
            out(&v, &|v| {
                format!("rebalance job {} started\n", job_id(v).unwrap_or_default())
            });
            if let (true, Some(j)) = (wait.wait, job_id(&v)) {
                follow(&c, &j, cli.json).await?;
            }
        }
        Cmd::Plan(p) => {
            let body = match p {
                PlanCmd::Add {
                    cell,
                    weight,
                    bandwidth,
                } => json!({"kind": "add", "cell": cell, "weight": weight, "bandwidth": bandwidth}),
                PlanCmd::Drain { cell, bandwidth } => {
                    json!({"kind": "drain", "cell": cell, "bandwidth": bandwidth})
                }
                PlanCmd::Rebalance {
                    cell,
                    weight,
                    bandwidth,
                } => {
                    json!({"kind": "rebalance", "cell": cell, "weight": weight, "bandwidth": bandwidth})
                }
            };
            let v = c.call(Method::POST, "/v1/plan", Some(body)).await?;
            out(&v, &format_plan);
        }
        Cmd::Jobs { cmd } => match cmd.unwrap_or(JobsCmd::List) {
            JobsCmd::List => {
                let v = c.call(Method::GET, "/v1/jobs", None).await?;
                out(&v, &format_jobs);
            }
            JobsCmd::Show { id, wait } => {
                if wait.wait {
                    follow(&c, &id, cli.json).await?;
                } else {
                    let v = c.call(Method::GET, &format!("/v1/jobs/{id}"), None).await?;
                    out(&v, &format_job);
                }
            }
            JobsCmd::Pause { id } => {
                let v = c
                    .call(Method::POST, &format!("/v1/jobs/{id}/pause"), None)
                    .await?;
                out(&v, &|_| {
                    format!("job {id}: pause requested (it stops after the current batch)\n")
                });
            }
            JobsCmd::Resume { id, wait } => {
                let v = c
                    .call(Method::POST, &format!("/v1/jobs/{id}/resume"), None)
                    .await?;
                out(&v, &|_| format!("job {id} resumed\n"));
                if wait.wait {
                    follow(&c, &id, cli.json).await?;
                }
            }
            JobsCmd::Cancel { id, wait } => {
                let v = c
                    .call(Method::POST, &format!("/v1/jobs/{id}/cancel"), None)
                    .await?;
                out(&v, &|_| {
                    format!("job {id}: cancel requested (a batch before Own is rolled back)\n")
                });
                if wait.wait {
                    // A cancelled job ends "cancelled": that is success here.
                    match follow(&c, &id, cli.json).await {
                        Err(e) if e.message.contains("ended cancelled") => {}
                        other => other?,
                    }
                }
            }
        },
        Cmd::Replica(r) => match r {
            ReplicaCmd::Add { cell, replica } => {
                let v = c
                    .call(
                        Method::POST,
                        &format!("/v1/cells/{cell}/replicas"),
                        Some(parse_replica(&replica)?),
                    )
                    .await?;
                out(&v, &|v| {
                    format!("cell {cell}: replica added; voters {}\n", s(&v["voters"]))
                });
            }
            ReplicaCmd::Remove { cell, node } => {
                let v = c
                    .call(
                        Method::DELETE,
                        &format!("/v1/cells/{cell}/replicas/{node}"),
                        None,
                    )
                    .await?;
                out(&v, &|v| {
                    format!(
                        "cell {cell}: node {node} removed; voters {}\n",
                        s(&v["voters"])
                    )
                });
            }
            ReplicaCmd::Replace {
                cell,
                node,
                replica,
            } => {
                let v = c
                    .call(
                        Method::POST,
                        &format!("/v1/cells/{cell}/replicas/{node}/replace"),
                        Some(parse_replica(&replica)?),
                    )
                    .await?;
                out(&v, &|v| {
                    format!(
                        "cell {cell}: node {node} replaced; voters {}\n",
                        s(&v["voters"])
                    )
                });
            }
            ReplicaCmd::TransferLeader { cell, to } => {
                let v = c
                    .call(
                        Method::POST,
                        &format!("/v1/cells/{cell}/transfer-leader"),
                        Some(json!({"to": to})),
                    )
                    .await?;
                out(&v, &|v| {
                    let mut line = format!("cell {cell}: leader is node {}", s(&v["leader"]));
                    if v["changed"] == false {
                        line.push_str(" (unchanged)");
                    } else if let Some(ms) = v["write_pause_ms"].as_u64() {
                        line.push_str(&format!(" (writes paused {ms} ms)"));
                    }
                    line + "\n"
                });
            }
        },
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = table(
            &["CELL", "STATE"],
            &[
                vec!["1".into(), "active".into()],
                vec!["12".into(), "draining".into()],
            ],
        );
        assert_eq!(t, "CELL  STATE\n1     active\n12    draining\n");
        assert_eq!(table(&["A"], &[]), "A\n");
    }

    #[test]
    fn humans() {
        assert_eq!(human_bytes(0.0), "0 B");
        assert_eq!(human_bytes(1536.0), "1.5 KiB");
        assert_eq!(human_bytes(64.0 * 1024.0 * 1024.0), "64.0 MiB");
        assert_eq!(human_secs(5.0), "5s");
        assert_eq!(human_secs(125.0), "2m05s");
        assert_eq!(human_secs(3725.0), "1h02m05s");
        assert_eq!(human_secs(f64::INFINITY), "∞");
    }

    #[test]
    fn replica_specs_parse() {
        let v = parse_replica("node=4,api=127.0.0.1:7004,control=127.0.0.1:7104").unwrap();
        assert_eq!(v["node_id"], 4);
        assert_eq!(v["control_addr"], "127.0.0.1:7104");
        assert_eq!(
            parse_replica("node=x,api=a:1,control=b:2")
                .unwrap_err()
                .code,
            EXIT_USAGE
        );
        assert!(parse_replica("node=1,api=a:1").is_err());
        assert!(parse_replica("node=1,api=a:1,control=b:2,zone=x").is_err());
    }

    #[test]
    fn job_and_status_formatting() {
        let j = json!({"id": "j1", "kind": "add", "cell": 4, "status": "running", "phase": "copy",
            "progress": {"ranges_done": 5, "ranges_total": 10, "bytes_copied": 2048, "keys_copied": 7},
            "rate_bytes_per_sec": 1024.0, "eta_secs": 65.0, "pause_max_ms": 12, "message": null});
        let line = progress_line(&j);
        assert!(
            line.contains(" 50.0%") && line.contains("ranges 5/10") && line.contains("2.0 KiB"),
            "{line}"
        );
        assert!(line.contains("eta 1m05s"), "{line}");
        let list = format_jobs(&json!({"jobs": [j.clone()]}));
        assert!(list.starts_with("JOB"), "{list}");
        assert!(list.contains("add 4") && list.contains("12ms"), "{list}");
        let show = format_job(&j);
        assert!(show.contains("write pause max  12 ms"), "{show}");
        let st = format_status(
            &json!({"epoch": 3, "pending_moves": 0, "control": {"lease_held": true},
            "cells": [{"id": 1, "state": "active", "weight": 1, "share_pct": 50.0, "target_share_pct": 50.0,
              "keys": 10, "bytes": 100, "leader": 1, "ownership_epoch": 3,
              "replicas": [{"node_id": 1, "role": "leader", "reachable": true, "lag_entries": 0},
                           {"node_id": 2, "role": null, "reachable": false}]}],
            "active_job": null}),
        );
        assert!(st.contains("map epoch 3"), "{st}");
        assert!(st.contains("1:leader 2:down"), "{st}");
        assert_eq!(addr_of("http://h:1/").unwrap(), "h:1");
        assert!(addr_of("h:1").is_err());
    }
}
