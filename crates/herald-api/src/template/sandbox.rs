//! Rendering tenants' templates in renderer processes with hard limits, so
//! that no template can crash, stall or bloat a node.
//!
//! Fuel bounds a render's instructions, not what one instruction costs: a
//! string of 100 MB repeated and joined asks for gigabytes, and concatenating
//! it in a loop keeps a core busy for many seconds within its fuel. So a node
//! renders in children of its own executable (`herald render-worker`): each
//! renders one job at a time, read from its standard input as a
//! [`frame`] and answered on its standard output, and runs
//! under an address space limit ([`MEMORY_LIMIT`]). An allocation past it is
//! refused and the child aborts; a render past [`TIME_LIMIT`] gets the child
//! killed. Either way the render is an error naming its part and the limit,
//! the node carries on, and the next job gets a new child.
//!
//! [`Renderer`] is the node's side: at most [`CHILDREN`] children, spawned
//! when a job finds none idle, and replaced when one dies. [`serve`] is the
//! child's loop; the `herald` binary sets the limits before it calls it.
//!
//! The children are shared fairly between tenants (`Turns`): a tenant
//! renders in at most one child at a time, its other jobs waiting for that
//! one in the order they came, so a tenant that keeps many slow renders
//! queued cannot hold up another tenant's render for longer than one job's
//! time limit.

use std::collections::HashMap;
use std::io::{self, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_core::TenantId;
use herald_store::TemplateContent;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, SemaphorePermit};

use super::{Rendered, TemplateError, frame};

/// The address space a renderer process may have. A child at rest (the
/// executable mapped, one thread, nothing rendered) has about 41 MiB of it.
/// Data of 400,000 small objects (6 MB of JSON) peaks at about 560 MiB,
/// since each object becomes a map twice (JSON, then MiniJinja's value),
/// and a template whose output is at the 1 MiB limit needs a few MiB. A
/// template that builds strings of hundreds of megabytes is stopped: three
/// copies of a 100 MB string joined need about 900 MiB.
pub const MEMORY_LIMIT: u64 = 768 * 1024 * 1024;

/// How long one render may take, wall clock, before its child is killed.
/// Real templates render in milliseconds.
pub const TIME_LIMIT: Duration = Duration::from_secs(2);

/// The most renderer processes a node runs at once: rendering is CPU work,
/// and a node's cores are for delivery; jobs beyond this wait for one.
pub const CHILDREN: usize = 2;

/// The argument that makes the `herald` binary a renderer process.
pub const SUBCOMMAND: &str = "render-worker";

/// The environment variable holding the process id of the node that
/// started a renderer process: the child exits at once when its parent is
/// another (the node died before the child asked to die with it).
pub const PARENT_ENV: &str = "HERALD_RENDER_PARENT";

/// What the node sends: the template's parts and the data.
#[derive(Serialize)]
struct JobOut<'a> {
    content: &'a TemplateContent,
    data: &'a Value,
}

/// [`JobOut`] as the child reads it.
#[derive(Deserialize)]
struct JobIn {
    content: ContentIn,
    data: Value,
}

#[derive(Deserialize)]
struct ContentIn {
    subject: String,
    text: Option<String>,
    html: Option<String>,
}

/// What the child answers: the name of each part as it begins it, then
/// the outcome.
#[derive(Serialize, Deserialize)]
enum Reply {
    Starting(String),
    Done(Result<Rendered, TemplateError>),
}

/// The renderer process's loop: reads jobs from `input` until it ends,
/// calling `before_each` before each, and answers each on `output`.
pub fn serve(
    input: impl io::Read,
    mut output: impl io::Write,
    mut before_each: impl FnMut() -> io::Result<()>,
) -> io::Result<()> {
    let mut input = BufReader::new(input);
    while let Some(job) = frame::read::<JobIn>(&mut input)? {
        before_each()?;
        let content = TemplateContent {
            subject: job.content.subject,
            text: job.content.text,
            html: job.content.html,
        };
        let mut failed_write = None;
        let result = super::render_reporting(&content, &job.data, |part| {
            if failed_write.is_none()
                && let Err(e) = frame::write(&mut output, &Reply::Starting(part.into()))
            {
                failed_write = Some(e);
            }
        });
        if let Some(e) = failed_write {
            return Err(e);
        }
        frame::write(&mut output, &Reply::Done(result))?;
    }
    Ok(())
}

/// Renders tenants' templates: in renderer processes when the node knows
/// its executable, else in this process.
///
/// Without an executable (another program embedding a node, such as
/// herald-bench, which renders no templates) a render runs on a blocking
/// thread (`spawn_blocking`), never on the async runtime's threads, taking
/// turns as children would, and its caller waits at most [`TIME_LIMIT`] for it; but nothing bounds its memory,
/// and a render that outlives the limit keeps its thread until its fuel runs
/// out. A node that serves tenants runs with its executable set.
pub struct Renderer {
    exe: Option<PathBuf>,
    idle: Mutex<Vec<Worker>>,
    turns: Turns,
}

impl std::fmt::Debug for Renderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renderer").field("exe", &self.exe).finish()
    }
}

impl Renderer {
    /// A renderer running `exe render-worker` as its children, or rendering
    /// in this process when `exe` is `None`.
    pub fn new(exe: Option<PathBuf>) -> Renderer {
        Renderer {
            exe,
            idle: Mutex::new(Vec::new()),
            turns: Turns::new(CHILDREN),
        }
    }

    /// Renders `content` with `data` for `tenant`, as [`super::render`]
    /// does, within the limits, when it is the tenant's turn (`Turns`).
    pub async fn render(
        &self,
        tenant: TenantId,
        content: &TemplateContent,
        data: &Value,
    ) -> Result<Rendered, TemplateError> {
        let Some(exe) = &self.exe else {
            let _turn = self.turns.take(tenant).await;
            return in_process(content, data).await;
        };
        let job = frame::encode(&JobOut { content, data })
            .map_err(|e| TemplateError::Unavailable(format!("the job cannot be sent: {e}")))?;
        let _turn = self.turns.take(tenant).await;
        // A child taken idle may have died since its last job (killed from
        // outside); one that dies before it begins this job is replaced once.
        let mut replaced = false;
        loop {
            let idle = self.idle.lock().expect("not poisoned").pop();
            let reused = idle.is_some();
            let mut worker = match idle {
                Some(worker) => worker,
                None => Worker::spawn(exe).map_err(|e| {
                    TemplateError::Unavailable(format!(
                        "cannot start {} {SUBCOMMAND}: {e}",
                        exe.display()
                    ))
                })?,
            };
            match worker.run(&job).await {
                Ran::Done(result) => {
                    self.idle.lock().expect("not poisoned").push(worker);
                    return result;
                }
                Ran::Gone { part: None, .. } if reused && !replaced => {
                    replaced = true;
                    worker.reap().await;
                }
                Ran::Gone { part, why } => {
                    let part = part.unwrap_or("subject");
                    let status = worker.reap().await;
                    tracing::warn!(part, %why, ?status, "a template renderer stopped");
                    return Err(stopped(part, status));
                }
                Ran::TimedOut { part } => {
                    worker.kill().await;
                    return Err(TemplateError::TooSlow {
                        field: part.unwrap_or("subject"),
                        seconds: TIME_LIMIT.as_secs(),
                    });
                }
            }
        }
    }
}

/// Whose render runs next. At most `slots` renders run at once, and at
/// most one of them per tenant: a tenant's job first waits for its tenant's
/// own turn (first come, first served within the tenant), and only then
/// for a slot, so the slots' queue holds at most one job per tenant and
/// serves tenants in the order their jobs reached it. A tenant's entry
/// lives while it has a job waiting or running, no longer.
struct Turns {
    slots: Semaphore,
    tenants: Mutex<HashMap<TenantId, Lane>>,
}

/// One tenant's entry in [`Turns`].
struct Lane {
    /// One permit: the tenant's one render at a time.
    own: Arc<Semaphore>,
    /// Its jobs waiting or running.
    jobs: usize,
}

/// A job's turn to render; ending it (dropping it) lets the next one run.
struct Turn<'a> {
    turns: &'a Turns,
    tenant: TenantId,
    slot: Option<SemaphorePermit<'a>>,
    own: Option<OwnedSemaphorePermit>,
}

impl Turns {
    fn new(slots: usize) -> Turns {
        Turns {
            slots: Semaphore::new(slots),
            tenants: Mutex::new(HashMap::new()),
        }
    }

    /// Waits for `tenant`'s next turn.
    async fn take(&self, tenant: TenantId) -> Turn<'_> {
        let own = {
            let mut tenants = self.tenants.lock().expect("not poisoned");
            let lane = tenants.entry(tenant).or_insert_with(|| Lane {
                own: Arc::new(Semaphore::new(1)),
                jobs: 0,
            });
            lane.jobs += 1;
            lane.own.clone()
        };
        // Counted from here, so a job given up while it waits (its request
        // dropped) still leaves its lane through `Drop`.
        let mut turn = Turn {
            turns: self,
            tenant,
            slot: None,
            own: None,
        };
        turn.own = Some(own.acquire_owned().await.expect("never closed"));
        turn.slot = Some(self.slots.acquire().await.expect("never closed"));
        turn
    }

    /// How many jobs `tenant` has waiting or running.
    #[cfg(test)]
    fn jobs(&self, tenant: TenantId) -> usize {
        let tenants = self.tenants.lock().expect("not poisoned");
        tenants.get(&tenant).map_or(0, |lane| lane.jobs)
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.slot.take();
        self.own.take();
        let mut tenants = self.turns.tenants.lock().expect("not poisoned");
        if let Some(lane) = tenants.get_mut(&self.tenant) {
            lane.jobs -= 1;
            if lane.jobs == 0 {
                tenants.remove(&self.tenant);
            }
        }
    }
}

/// Renders on a blocking thread, waiting at most [`TIME_LIMIT`] for it.
async fn in_process(content: &TemplateContent, data: &Value) -> Result<Rendered, TemplateError> {
    let (content, data) = (content.clone(), data.clone());
    let part = std::sync::Arc::new(Mutex::new("subject"));
    let starting = part.clone();
    let render = tokio::task::spawn_blocking(move || {
        super::render_reporting(&content, &data, |p| {
            *starting.lock().expect("not poisoned") = p;
        })
    });
    match tokio::time::timeout(TIME_LIMIT, render).await {
        Ok(Ok(result)) => result,
        Ok(Err(e)) => Err(TemplateError::Unavailable(format!(
            "the render failed: {e}"
        ))),
        Err(_) => Err(TemplateError::TooSlow {
            field: *part.lock().expect("not poisoned"),
            seconds: TIME_LIMIT.as_secs(),
        }),
    }
}

/// Why a child that died on `part` died, as the error a tenant reads.
fn stopped(part: &'static str, status: Option<ExitStatus>) -> TemplateError {
    match status.and_then(|s| s.signal()) {
        // An allocation refused under the address space limit aborts.
        Some(signal) if signal == libc_signal::ABRT => TemplateError::TooMuchMemory {
            field: part,
            mib: MEMORY_LIMIT / (1024 * 1024),
        },
        // The CPU limit the child sets before each job, a backstop.
        Some(signal) if signal == libc_signal::XCPU => TemplateError::TooSlow {
            field: part,
            seconds: TIME_LIMIT.as_secs(),
        },
        _ => TemplateError::Stopped {
            field: part,
            how: match status {
                Some(status) => status.to_string(),
                None => "its exit status is unknown".into(),
            },
        },
    }
}

/// The signal numbers [`stopped`] tells apart (the same on every Linux
/// architecture Herald runs on).
mod libc_signal {
    pub const ABRT: i32 = 6;
    pub const XCPU: i32 = 24;
}

/// One renderer process and its pipes.
struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: tokio::io::BufReader<ChildStdout>,
}

/// How a job went.
enum Ran {
    /// The child answered (and stays for the next job).
    Done(Result<Rendered, TemplateError>),
    /// The child's pipes failed or closed: it died, on `part` if it began one.
    Gone {
        part: Option<&'static str>,
        why: io::Error,
    },
    /// The job took longer than [`TIME_LIMIT`].
    TimedOut { part: Option<&'static str> },
}

impl Worker {
    fn spawn(exe: &std::path::Path) -> io::Result<Worker> {
        let mut child = Command::new(exe)
            .arg(SUBCOMMAND)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // Its stderr is the node's: an abort's reason lands in the node's log.
            .stderr(Stdio::inherit())
            .env_clear()
            .env(PARENT_ENV, std::process::id().to_string())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = tokio::io::BufReader::new(child.stdout.take().expect("piped"));
        Ok(Worker {
            child,
            stdin,
            stdout,
        })
    }

    /// Sends `job` and waits for its answer, at most [`TIME_LIMIT`].
    async fn run(&mut self, job: &[u8]) -> Ran {
        let mut part = None;
        let exchange = async {
            frame::write_async(&mut self.stdin, job).await?;
            loop {
                match frame::read_async::<Reply>(&mut self.stdout).await? {
                    Some(Reply::Starting(name)) => {
                        part = super::PARTS.into_iter().find(|p| *p == name);
                    }
                    Some(Reply::Done(result)) => return Ok(result),
                    None => return Err(io::ErrorKind::UnexpectedEof.into()),
                }
            }
        };
        let outcome = tokio::time::timeout(TIME_LIMIT, exchange).await;
        match outcome {
            Ok(Ok(result)) => Ran::Done(result),
            Ok(Err(why)) => Ran::Gone { part, why },
            Err(_) => Ran::TimedOut { part },
        }
    }

    /// Waits for a child whose output ended (it is exiting) and reaps it:
    /// its exit status. One that has not exited within a second is killed.
    async fn reap(mut self) -> Option<ExitStatus> {
        let exited = tokio::time::timeout(Duration::from_secs(1), self.child.wait()).await;
        match exited {
            Ok(status) => status.ok(),
            Err(_) => self.kill().await,
        }
    }

    /// Kills the child and reaps it: its exit status.
    async fn kill(mut self) -> Option<ExitStatus> {
        let _ = self.child.start_kill();
        self.child.wait().await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn content(text: &str) -> TemplateContent {
        TemplateContent {
            subject: "Hi {{ name }}".into(),
            text: Some(text.into()),
            html: None,
        }
    }

    /// What `serve` answers to `jobs`, frame by frame.
    fn served(jobs: &[(TemplateContent, Value)]) -> Vec<Reply> {
        let mut input = Vec::new();
        for (content, data) in jobs {
            input.extend(frame::encode(&JobOut { content, data }).unwrap());
        }
        let mut output = Vec::new();
        let mut calls = 0;
        serve(input.as_slice(), &mut output, || {
            calls += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(calls, jobs.len(), "the hook runs before each job");
        let mut r = output.as_slice();
        std::iter::from_fn(|| frame::read::<Reply>(&mut r).unwrap()).collect()
    }

    #[test]
    fn the_child_names_each_part_as_it_begins_it_then_answers() {
        let replies = served(&[
            (content("Dear {{ name }}"), json!({"name": "Ada"})),
            (content("{{ missing }}"), json!({"name": "Ada"})),
        ]);
        let [
            Reply::Starting(s1),
            Reply::Starting(t1),
            Reply::Done(Ok(rendered)),
            Reply::Starting(s2),
            Reply::Starting(t2),
            Reply::Done(Err(e)),
        ] = replies.as_slice()
        else {
            panic!("unexpected replies");
        };
        assert_eq!([s1, t1, s2, t2], ["subject", "text", "subject", "text"]);
        assert_eq!(rendered.text.as_deref(), Some("Dear Ada"));
        assert_eq!(
            *e,
            TemplateError::Undefined {
                field: "text",
                name: "missing".into()
            }
        );
    }

    #[tokio::test]
    async fn without_an_executable_it_renders_on_a_blocking_thread() {
        let renderer = Renderer::new(None);
        let tenant = TenantId::new();
        let rendered = renderer
            .render(tenant, &content("Dear {{ name }}"), &json!({"name": "Ada"}))
            .await
            .unwrap();
        assert_eq!(rendered.subject, "Hi Ada");
        let err = renderer
            .render(tenant, &content("{{ nope }}"), &json!({"name": "Ada"}))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "text: undefined variable nope (the data has no such key)"
        );
    }

    #[tokio::test]
    async fn a_tenant_with_jobs_queued_leaves_the_other_slot_to_another() {
        let turns = Arc::new(Turns::new(2));
        let (a, b) = (TenantId::new(), TenantId::new());
        let (log, mut events) = tokio::sync::mpsc::unbounded_channel();
        // Tenant a's three jobs, each running until it is told to finish.
        let mut finish = Vec::new();
        for i in 0..3 {
            let (done, finished) = tokio::sync::oneshot::channel::<()>();
            finish.push(done);
            let (turns, log) = (turns.clone(), log.clone());
            tokio::spawn(async move {
                let _turn = turns.take(a).await;
                log.send(format!("a{i} runs")).unwrap();
                let _ = finished.await;
            });
        }
        assert_eq!(events.recv().await.unwrap(), "a0 runs");
        while turns.jobs(a) < 3 {
            tokio::task::yield_now().await;
        }
        // Tenant b's job, which came after all of a's, runs while a's first
        // runs and its other two wait, though a slot was free for them.
        let (turns_b, log_b) = (turns.clone(), log.clone());
        tokio::spawn(async move {
            let _turn = turns_b.take(b).await;
            log_b.send("b runs".to_string()).unwrap();
        });
        assert_eq!(events.recv().await.unwrap(), "b runs");
        assert_eq!(turns.jobs(a), 3);
        // a's other jobs then run one at a time, in the order they came.
        for (i, done) in finish.into_iter().enumerate() {
            if i > 0 {
                assert_eq!(events.recv().await.unwrap(), format!("a{i} runs"));
            }
            done.send(()).unwrap();
        }
        // Nothing is kept for a tenant with no job.
        while turns.jobs(a) > 0 {
            tokio::task::yield_now().await;
        }
        assert!(turns.tenants.lock().unwrap().is_empty());
    }

    #[test]
    fn a_death_is_told_by_its_signal() {
        let by = |signal: i32| Some(ExitStatus::from_raw(signal));
        assert_eq!(
            stopped("html", by(libc_signal::ABRT)).to_string(),
            format!(
                "html: the template needs more than {} MiB to render",
                MEMORY_LIMIT >> 20
            )
        );
        assert_eq!(
            stopped("text", by(libc_signal::XCPU)).to_string(),
            "text: the template took longer than 2 s to render"
        );
        let other = stopped("text", by(9)).to_string();
        assert!(
            other.starts_with("text: the renderer stopped while rendering it ("),
            "{other}"
        );
    }
}
