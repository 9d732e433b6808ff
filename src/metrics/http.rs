//! The metrics and health listener on `metrics.listen`: `GET /metrics` (the text format) and `GET /health` (200, or 503 with the reasons) over HTTP/1.1; anything else is 404 (owns the listening socket and its connections).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use super::{Metrics, Snapshot};

/// Asks the engine for its counts: sends the reply channel, false if the engine is gone.
pub type AskEngine = Arc<dyn Fn(oneshot::Sender<Snapshot>) -> bool + Send + Sync>;

/// How long a scrape waits for the engine's counts (busy loading a large list, say); past
/// it `/metrics` answers without the gauges.
const ENGINE_ANSWER: Duration = Duration::from_secs(5);

/// A client has this long to send its request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The listener running; dropping it stops it.
pub struct Listening {
    task: tokio::task::JoinHandle<()>,
    engine: Arc<OnceLock<AskEngine>>,
}

impl Listening {
    /// The engine runs: scrapes ask it for its counts from now on.
    pub fn engine_ready(&self, ask: AskEngine) {
        let _ = self.engine.set(ask);
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `addr` and serves it (at start, before login: a taken port stops hush at once,
/// naming the key, and `/health` answers 503 until hush syncs).
pub async fn start(addr: SocketAddr, metrics: Arc<Metrics>) -> Result<Listening> {
    let listener =
        TcpListener::bind(addr).await.with_context(|| format!("cannot listen on metrics.listen ({addr})"))?;
    info!(%addr, "metrics and health listener: GET /metrics, GET /health");
    let engine = Arc::new(OnceLock::new());
    let task = tokio::spawn(serve(listener, metrics, engine.clone()));
    Ok(Listening { task, engine })
}

/// Serves connections until the task is aborted.
async fn serve(listener: TcpListener, metrics: Arc<Metrics>, ask: Arc<OnceLock<AskEngine>>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors, say: the next accept may work.
                warn!("metrics listener: cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (metrics, ask) = (metrics.clone(), ask.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let (metrics, ask) = (metrics.clone(), ask.clone());
                async move { Ok::<_, Infallible>(answer(req.method(), req.uri().path(), &metrics, ask.get()).await) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                debug!(%peer, "metrics listener: connection ended: {e}");
            }
        });
    }
}

/// The answer to `method path`; `ask` is `None` until the engine runs.
pub(super) async fn answer(
    method: &Method,
    path: &str,
    metrics: &Metrics,
    ask: Option<&AskEngine>,
) -> Response<Full<Bytes>> {
    match (method, path) {
        (&Method::GET, "/metrics") => {
            let snapshot = engine_snapshot(ask).await;
            text(StatusCode::OK, super::CONTENT_TYPE, metrics.encode(snapshot.as_ref()))
        }
        (&Method::GET, "/health") => {
            let why = metrics.unhealthy();
            if why.is_empty() {
                text(StatusCode::OK, "text/plain; charset=utf-8", "ok\n".to_owned())
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "text/plain; charset=utf-8", why.join("\n") + "\n")
            }
        }
        _ => {
            text(StatusCode::NOT_FOUND, "text/plain; charset=utf-8", "not found: GET /metrics or /health\n".to_owned())
        }
    }
}

async fn engine_snapshot(ask: Option<&AskEngine>) -> Option<Snapshot> {
    let ask = ask?;
    let (tx, rx) = oneshot::channel();
    if !ask(tx) {
        return None;
    }
    match tokio::time::timeout(ENGINE_ANSWER, rx).await {
        Ok(Ok(s)) => Some(s),
        _ => {
            debug!("the engine did not answer the metrics scrape in time: gauges left out");
            None
        }
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}
