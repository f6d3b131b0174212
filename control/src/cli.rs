//! `cellkvctl`: the operator CLI over the admin API. Human tables by
//! default, `--json` for scripts. Exit codes: 0 ok, 1 the operation failed,
//! 2 usage or connection problem.

use std::fmt::Display;
use std::time::Duration;

use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use common::admin::{
    AddCellRequest, CellAdded, CellRemoved, CellStateChanged, JobList, JobOptions, JobStarted,
    JobStatus, JobView, PlanRequest, PlanResponse, ReplicasChanged, StatusResponse,
    TransferLeaderRequest, TransferLeaderResponse,
};
use common::{CellId, CellMap, NodeId, ReplicaSpec};
use http::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

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
pub fn parse_replica(s: &str) -> Result<ReplicaSpec, CliError> {
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
        (Some(n), Some(a), Some(c)) => Ok(ReplicaSpec {
            node_id: NodeId(n),
            api_addr: a,
            control_addr: Some(c),
        }),
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

/// `-` for nothing, else the value.
fn opt<T: Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

/// Voters as the API writes them: `[1,2,4]`.
fn node_list(nodes: &[NodeId]) -> String {
    let ids: Vec<String> = nodes.iter().map(NodeId::to_string).collect();
    format!("[{}]", ids.join(","))
}

/// One progress line of a job view.
pub fn progress_line(v: &JobView) -> String {
    let j = &v.job;
    let p = &j.progress;
    let (done, total) = (p.ranges_done, p.ranges_total);
    let pct = if total > 0 {
        done as f64 * 100.0 / total as f64
    } else {
        0.0
    };
    let width = 24usize;
    let filled = ((pct / 100.0) * width as f64).round() as usize;
    let bar: String = "#".repeat(filled.min(width)) + &"-".repeat(width - filled.min(width));
    let eta = v.eta_secs.map_or("-".into(), human_secs);
    format!(
        "[{bar}] {pct:5.1}%  ranges {done}/{total}  moved {} ({} keys)  {}/s  eta {eta}  {} {}",
        human_bytes(p.bytes_copied as f64),
        p.keys_copied,
        human_bytes(v.rate_bytes_per_sec),
        j.status,
        j.phase,
    )
}

pub fn format_status(v: &StatusResponse) -> String {
    let mut rows = Vec::new();
    for c in &v.cells {
        let reps: Vec<String> = c
            .replicas
            .iter()
            .map(|r| {
                let role = r
                    .role
                    .as_deref()
                    .unwrap_or(if r.reachable { "?" } else { "down" });
                let lag = r.lag_entries.map_or(String::new(), |l| {
                    if l > 0 {
                        format!("+{l}")
                    } else {
                        String::new()
                    }
                });
                format!("{}:{role}{lag}", r.node_id)
            })
            .collect();
        rows.push(vec![
            c.id.to_string(),
            c.state.to_string(),
            c.weight.to_string(),
            format!("{:.1}%", c.share_pct),
            format!("{:.1}%", c.target_share_pct),
            opt(c.keys),
            c.bytes.map_or("-".into(), |b| human_bytes(b as f64)),
            opt(c.leader),
            opt(c.ownership_epoch),
            reps.join(" "),
        ]);
    }
    let mut out = format!(
        "map epoch {}  pending moves {}  lease {}\n",
        v.epoch,
        v.pending_moves,
        if v.control.lease_held {
            "held here".to_string()
        } else {
            format!("held by {}", opt(v.control.lease_holder.as_deref()))
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
    if let Some(j) = &v.active_job {
        out.push_str(&format!("\njob {}: {}\n", j.job.id, progress_line(j)));
    }
    out
}

pub fn format_jobs(v: &JobList) -> String {
    let rows: Vec<Vec<String>> = v
        .jobs
        .iter()
        .map(|view| {
            let j = &view.job;
            let p = &j.progress;
            vec![
                j.id.clone(),
                format!(
                    "{} {}",
                    j.kind.name(),
                    j.kind.cell().map_or(String::new(), |c| c.to_string())
                )
                .trim()
                .to_string(),
                j.status.to_string(),
                j.phase.to_string(),
                format!("{}/{}", p.ranges_done, p.ranges_total),
                human_bytes(p.bytes_copied as f64),
                view.pause_max_ms.map_or("-".into(), |m| format!("{m}ms")),
                j.message.clone().unwrap_or_default(),
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

pub fn format_job(v: &JobView) -> String {
    let j = &v.job;
    let p = &j.progress;
    let mut out = String::new();
    for (k, val) in [
        ("job", j.id.clone()),
        (
            "kind",
            format!(
                "{} {}",
                j.kind.name(),
                j.kind.cell().map_or(String::new(), |c| format!("cell {c}"))
            ),
        ),
        ("status", j.status.to_string()),
        ("phase", j.phase.to_string()),
        ("batches done", p.batches_done.to_string()),
        ("ranges", format!("{}/{}", p.ranges_done, p.ranges_total)),
        ("keys copied", p.keys_copied.to_string()),
        ("keys deleted", p.keys_deleted.to_string()),
        ("bytes copied", human_bytes(p.bytes_copied as f64)),
        ("bytes estimated", human_bytes(p.bytes_estimated as f64)),
        ("rate", format!("{}/s", human_bytes(v.rate_bytes_per_sec))),
        ("eta", v.eta_secs.map_or("-".into(), human_secs)),
        (
            "write pause max",
            v.pause_max_ms.map_or("-".into(), |m| format!("{m} ms")),
        ),
        (
            "write pause p99",
            v.pause_p99_ms.map_or("-".into(), |m| format!("{m} ms")),
        ),
        ("message", j.message.clone().unwrap_or_else(|| "-".into())),
    ] {
        out.push_str(&format!("{k:<16} {val}\n"));
    }
    out
}

pub fn format_plan(v: &PlanResponse) -> String {
    let rows: Vec<Vec<String>> = v
        .pairs
        .iter()
        .map(|p| {
            vec![
                p.from.to_string(),
                p.to.to_string(),
                p.ranges.to_string(),
                format!("{:.2}%", p.share_pct),
                p.keys.to_string(),
                human_bytes(p.bytes as f64),
            ]
        })
        .collect();
    let mut out = table(&["FROM", "TO", "RANGES", "SHARE", "KEYS", "BYTES"], &rows);
    out.push_str(&format!(
        "total: {} ranges, {} keys, {}; about {} at {}/s{}\n",
        v.ranges,
        v.keys,
        human_bytes(v.bytes as f64),
        human_secs(v.estimated_secs),
        human_bytes(v.bandwidth_bytes_per_sec as f64),
        if v.stats_complete {
            ""
        } else {
            " (some cells did not report stats: keys/bytes are lower bounds)"
        }
    ));
    out
}

/// No request body.
const NO_BODY: Option<&()> = None;

/// A successful answer: the JSON as the server sent it (what `--json`
/// prints) and the same parsed into its admin API type.
struct Answer<T> {
    raw: Value,
    body: T,
}

impl<T> Answer<T> {
    /// Prints the JSON as the server sent it (pretty).
    fn print_json(&self) {
        println!(
            "{}",
            serde_json::to_string_pretty(&self.raw).unwrap_or_default()
        );
    }

    /// Prints the server's JSON with `--json`, else `human` of the body.
    fn print(&self, json: bool, human: impl FnOnce(&T) -> String) {
        if json {
            self.print_json();
        } else {
            print!("{}", human(&self.body));
        }
    }
}

struct Client {
    http: HttpClient,
    addr: String,
    token: String,
}

impl Client {
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<Answer<T>, CliError> {
        let bytes = match body {
            Some(b) => Bytes::from(
                serde_json::to_vec(b).map_err(|e| usage(format!("encode the request: {e}")))?,
            ),
            None => Bytes::new(),
        };
        let headers = vec![
            bearer(&self.token),
            (
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            ),
        ];
        let r = self
            .http
            .send(method.clone(), &self.addr, path, &headers, bytes, Duration::from_secs(330))
            .await
            .map_err(|e| match e {
                TransportError::Connect { .. } => usage(format!(
                    "cannot reach the control server at {}: {e}. Is cellkv-control running? Set --url or CELLKV_CONTROL_URL.",
                    self.addr
                )),
                other => CliError { code: EXIT_FAILED, message: other.to_string() },
            })?;
        if r.status.is_success() {
            let failed = |message| CliError {
                code: EXIT_FAILED,
                message,
            };
            let raw: Value = r.json().map_err(failed)?;
            let body = serde_json::from_value(raw.clone())
                .map_err(|e| failed(format!("unexpected answer to {method} {path}: {e}")))?;
            return Ok(Answer { raw, body });
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
        let a: Answer<JobView> = c
            .call(Method::GET, &format!("/v1/jobs/{id}"), NO_BODY)
            .await?;
        let line = progress_line(&a.body);
        if !json_out && line != last_line {
            eprint!("\r{line}   ");
            last_line = line;
        }
        let job = &a.body.job;
        match job.status {
            JobStatus::Running => {}
            status => {
                if !json_out {
                    eprintln!();
                }
                a.print(json_out, format_job);
                return match status {
                    JobStatus::Done => Ok(()),
                    JobStatus::Paused => Err(CliError {
                        code: EXIT_FAILED,
                        message: format!(
                            "job {id} paused: {}. Fix the cause, then: cellkvctl jobs resume {id} --wait",
                            job.message.as_deref().unwrap_or("no reason given")
                        ),
                    }),
                    other => Err(CliError { code: EXIT_FAILED, message: format!("job {id} ended {other}: {}", job.message.as_deref().unwrap_or("")) }),
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
    let json = cli.json;
    match cli.cmd {
        Cmd::Status => {
            let a: Answer<StatusResponse> = c.call(Method::GET, "/v1/status", NO_BODY).await?;
            a.print(json, format_status);
        }
        Cmd::Map => {
            let a: Answer<CellMap> = c.call(Method::GET, "/v1/map", NO_BODY).await?;
            a.print_json();
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
                let replicas = replicas
                    .iter()
                    .map(|r| parse_replica(r))
                    .collect::<Result<Vec<_>, _>>()?;
                let body = AddCellRequest {
                    id: CellId(id),
                    weight,
                    replicas,
                    rebalance: !no_rebalance,
                    bandwidth,
                };
                let a: Answer<CellAdded> = c.call(Method::POST, "/v1/cells", Some(&body)).await?;
                let job = a.body.job.as_ref().map(|j| j.job.id.clone());
                a.print(json, |v| match &job {
                    Some(j) => format!(
                        "cell {id} added (map epoch {}); rebalance job {j} started\n",
                        v.epoch
                    ),
                    None => format!(
                        "cell {id} added (map epoch {}), owning nothing yet\n",
                        v.epoch
                    ),
                });
                if let (true, Some(j)) = (wait.wait, job) {
                    follow(&c, &j, json).await?;
                }
            }
            CellCmd::Drain {
                id,
                bandwidth,
                wait,
            } => {
                let a: Answer<JobStarted> = c
                    .call(
                        Method::POST,
                        &format!("/v1/cells/{id}/drain"),
                        Some(&JobOptions { bandwidth }),
                    )
                    .await?;
                let job = &a.body.job.job.id;
                a.print(json, |_| format!("cell {id} draining; job {job} started\n"));
                if wait.wait {
                    follow(&c, job, json).await?;
                }
            }
            CellCmd::Remove { id, force } => {
                let path = if force {
                    format!("/v1/cells/{id}?force=true")
                } else {
                    format!("/v1/cells/{id}")
                };
                let a: Answer<CellRemoved> = c.call(Method::DELETE, &path, NO_BODY).await?;
                a.print(json, |v| {
                    if v.forced {
                        format!(
                            "cell {id} removed; LOST {} ranges, {} keys, {} bytes\n",
                            v.lost.ranges, v.lost.keys, v.lost.bytes
                        )
                    } else {
                        format!("cell {id} removed\n")
                    }
                });
            }
            CellCmd::Isolate { id } => {
                let a: Answer<CellStateChanged> = c
                    .call(Method::POST, &format!("/v1/cells/{id}/isolate"), NO_BODY)
                    .await?;
                a.print(json, |v| {
                    format!("cell {id} isolated (map epoch {})\n", v.epoch)
                });
            }
            CellCmd::Restore { id } => {
                let a: Answer<CellStateChanged> = c
                    .call(Method::POST, &format!("/v1/cells/{id}/restore"), NO_BODY)
                    .await?;
                a.print(json, |v| {
                    format!("cell {id} active again (map epoch {})\n", v.epoch)
                });
            }
        },
        Cmd::Rebalance { bandwidth, wait } => {
            let a: Answer<JobStarted> = c
                .call(
                    Method::POST,
                    "/v1/rebalance",
                    Some(&JobOptions { bandwidth }),
                )
                .await?;
            let job = &a.body.job.job.id;
            a.print(json, |_| format!("rebalance job {job} started\n"));
            if wait.wait {
                follow(&c, job, json).await?;
            }
        }
        Cmd::Plan(p) => {
            let (kind, cell, weight, bandwidth) = match p {
                PlanCmd::Add {
                    cell,
                    weight,
                    bandwidth,
                } => ("add", cell, Some(weight), bandwidth),
                PlanCmd::Drain { cell, bandwidth } => ("drain", Some(cell), None, bandwidth),
                PlanCmd::Rebalance {
                    cell,
                    weight,
                    bandwidth,
                } => ("rebalance", cell, weight, bandwidth),
            };
            let body = PlanRequest {
                kind: kind.into(),
                cell: cell.map(CellId),
                weight,
                bandwidth,
            };
            let a: Answer<PlanResponse> = c.call(Method::POST, "/v1/plan", Some(&body)).await?;
            a.print(json, format_plan);
        }
        Cmd::Jobs { cmd } => match cmd.unwrap_or(JobsCmd::List) {
            JobsCmd::List => {
                let a: Answer<JobList> = c.call(Method::GET, "/v1/jobs", NO_BODY).await?;
                a.print(json, format_jobs);
            }
            JobsCmd::Show { id, wait } => {
                if wait.wait {
                    follow(&c, &id, json).await?;
                } else {
                    let a: Answer<JobView> = c
                        .call(Method::GET, &format!("/v1/jobs/{id}"), NO_BODY)
                        .await?;
                    a.print(json, format_job);
                }
            }
            JobsCmd::Pause { id } => {
                let a: Answer<JobView> = c
                    .call(Method::POST, &format!("/v1/jobs/{id}/pause"), NO_BODY)
                    .await?;
                a.print(json, |_| {
                    format!("job {id}: pause requested (it stops after the current batch)\n")
                });
            }
            JobsCmd::Resume { id, wait } => {
                let a: Answer<JobView> = c
                    .call(Method::POST, &format!("/v1/jobs/{id}/resume"), NO_BODY)
                    .await?;
                a.print(json, |_| format!("job {id} resumed\n"));
                if wait.wait {
                    follow(&c, &id, json).await?;
                }
            }
            JobsCmd::Cancel { id, wait } => {
                let a: Answer<JobView> = c
                    .call(Method::POST, &format!("/v1/jobs/{id}/cancel"), NO_BODY)
                    .await?;
                a.print(json, |_| {
                    format!("job {id}: cancel requested (a batch before Own is rolled back)\n")
                });
                if wait.wait {
                    // A cancelled job ends "cancelled": that is success here.
                    match follow(&c, &id, json).await {
                        Err(e) if e.message.contains("ended cancelled") => {}
                        other => other?,
                    }
                }
            }
        },
        Cmd::Replica(r) => match r {
            ReplicaCmd::Add { cell, replica } => {
                let a: Answer<ReplicasChanged> = c
                    .call(
                        Method::POST,
                        &format!("/v1/cells/{cell}/replicas"),
                        Some(&parse_replica(&replica)?),
                    )
                    .await?;
                a.print(json, |v| {
                    format!(
                        "cell {cell}: replica added; voters {}\n",
                        node_list(&v.voters)
                    )
                });
            }
            ReplicaCmd::Remove { cell, node } => {
                let a: Answer<ReplicasChanged> = c
                    .call(
                        Method::DELETE,
                        &format!("/v1/cells/{cell}/replicas/{node}"),
                        NO_BODY,
                    )
                    .await?;
                a.print(json, |v| {
                    format!(
                        "cell {cell}: node {node} removed; voters {}\n",
                        node_list(&v.voters)
                    )
                });
            }
            ReplicaCmd::Replace {
                cell,
                node,
                replica,
            } => {
                let a: Answer<ReplicasChanged> = c
                    .call(
                        Method::POST,
                        &format!("/v1/cells/{cell}/replicas/{node}/replace"),
                        Some(&parse_replica(&replica)?),
                    )
                    .await?;
                a.print(json, |v| {
                    format!(
                        "cell {cell}: node {node} replaced; voters {}\n",
                        node_list(&v.voters)
                    )
                });
            }
            ReplicaCmd::TransferLeader { cell, to } => {
                let body = TransferLeaderRequest {
                    to: to.map(NodeId),
                    timeout_ms: None,
                };
                let a: Answer<TransferLeaderResponse> = c
                    .call(
                        Method::POST,
                        &format!("/v1/cells/{cell}/transfer-leader"),
                        Some(&body),
                    )
                    .await?;
                a.print(json, |v| {
                    let mut line = format!("cell {cell}: leader is node {}", opt(v.leader));
                    let pause = v.transfer.as_ref().and_then(|t| t.write_pause_ms);
                    if !v.changed {
                        line.push_str(" (unchanged)");
                    } else if let Some(ms) = pause {
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
    use serde_json::json;

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
        assert_eq!((opt(None::<u64>), opt(Some(3))), ("-".into(), "3".into()));
        assert_eq!(node_list(&[NodeId(1), NodeId(4)]), "[1,4]");
    }

    #[test]
    fn replica_specs_parse() {
        let r = parse_replica("node=4,api=127.0.0.1:7004,control=127.0.0.1:7104").unwrap();
        assert_eq!(r.node_id, NodeId(4));
        assert_eq!(r.control_addr.as_deref(), Some("127.0.0.1:7104"));
        assert_eq!(
            parse_replica("node=x,api=a:1,control=b:2")
                .unwrap_err()
                .code,
            EXIT_USAGE
        );
        assert!(parse_replica("node=1,api=a:1").is_err());
        assert!(parse_replica("node=1,api=a:1,control=b:2,zone=x").is_err());
    }

    /// A running add job as the server answers it.
    fn job() -> JobView {
        serde_json::from_value(json!({"id": "j1", "kind": "add", "cell": 4, "status": "running",
            "message": null, "requested": null, "created_ms": 1, "updated_ms": 2,
            "finished_ms": null, "bandwidth_bytes_per_sec": 1024, "batch_max_bytes": 1024,
            "batch_max_ranges": 8, "phase": "copy", "batch": null,
            "progress": {"ranges_done": 5, "ranges_total": 10, "bytes_copied": 2048, "keys_copied": 7},
            "pauses_ms": [12], "purges": [],
            "rate_bytes_per_sec": 1024.0, "eta_secs": 65.0, "pause_max_ms": 12, "pause_p99_ms": 12}))
        .unwrap()
    }

    #[test]
    fn job_and_status_formatting() {
        let j = job();
        let line = progress_line(&j);
        assert!(
            line.contains(" 50.0%") && line.contains("ranges 5/10") && line.contains("2.0 KiB"),
            "{line}"
        );
        assert!(
            line.contains("eta 1m05s") && line.ends_with("running copy"),
            "{line}"
        );
        let list = format_jobs(&JobList {
            jobs: vec![j.clone()],
        });
        assert!(list.starts_with("JOB"), "{list}");
        assert!(list.contains("add 4") && list.contains("12ms"), "{list}");
        let show = format_job(&j);
        assert!(show.contains("write pause max  12 ms"), "{show}");
        assert!(show.contains("kind             add cell 4\n"), "{show}");
        assert!(show.contains("message          -\n"), "{show}");
        let st: StatusResponse = serde_json::from_value(json!({"epoch": 3, "moving_ranges": 0,
            "pending_moves": 0, "control": {"lease_held": true, "instance": "c1", "lease_holder": null},
            "cells": [{"id": 1, "state": "active", "weight": 1, "share_pct": 50.0, "target_share_pct": 50.0,
              "ranges": 4, "keys": 10, "bytes": 100, "leader": 1, "ownership_epoch": 3,
              "replicas": [{"node_id": 1, "api_addr": "h:1", "control_addr": null, "role": "leader",
                            "reachable": true, "ready": true, "applied_index": 9, "lag_entries": 0},
                           {"node_id": 2, "api_addr": "h:2", "control_addr": null, "role": null,
                            "reachable": false, "ready": false, "applied_index": null, "lag_entries": null}]}],
            "active_job": null}))
        .unwrap();
        let text = format_status(&st);
        assert!(
            text.contains("map epoch 3") && text.contains("lease held here"),
            "{text}"
        );
        assert!(text.contains("1:leader 2:down"), "{text}");
        assert!(text.contains("100 B") && !text.contains("\njob "), "{text}");
        assert_eq!(addr_of("http://h:1/").unwrap(), "h:1");
        assert!(addr_of("h:1").is_err());
    }

    #[test]
    fn plan_formatting() {
        let p: PlanResponse = serde_json::from_value(json!({"kind": "drain", "epoch": 4,
            "pairs": [{"from": 3, "to": 1, "ranges": 5, "share_pct": 12.5, "keys": 10, "bytes": 2048}],
            "ranges": 5, "keys": 10, "bytes": 2048, "stats_complete": false, "batches_estimate": 1,
            "bandwidth_bytes_per_sec": 1024, "estimated_secs": 2.0}))
        .unwrap();
        let text = format_plan(&p);
        assert!(text.contains("12.50%"), "{text}");
        assert!(
            text.ends_with("total: 5 ranges, 10 keys, 2.0 KiB; about 2s at 1.0 KiB/s (some cells did not report stats: keys/bytes are lower bounds)\n"),
            "{text}"
        );
    }
}
