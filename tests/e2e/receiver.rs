//! A receiver of grantry's events for the tests: a loopback axum server that verifies every
//! delivery with the Standard Webhooks reference library (`standardwebhooks`) and answers as
//! planned.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine;
use serde_json::Value;

/// A signing secret in the `whsec_` form.
pub(crate) fn secret() -> String {
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
    )
}

/// What the receiver answers next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    Status(u16),
    /// Never answers (the sender's timeout ends the attempt).
    Hang,
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) id: String,
    pub(crate) verified: bool,
    pub(crate) body: Value,
    pub(crate) answered: Option<u16>,
}

#[derive(Clone)]
struct ReceiverState {
    verifier: Arc<standardwebhooks::Webhook>,
    plan: Arc<Mutex<VecDeque<Answer>>>,
    then: Arc<Mutex<Answer>>,
    got: Arc<Mutex<Vec<Received>>>,
}

/// A webhook receiver on a loopback port that verifies every request with the
/// `standardwebhooks` crate and answers as planned (then `then` for the rest).
pub(crate) struct Receiver {
    pub(crate) url: String,
    state: ReceiverState,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(State(s): State<ReceiverState>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let verified = s.verifier.verify(&body, &headers).is_ok();
    let answer = s
        .plan
        .lock()
        .expect("plan")
        .pop_front()
        .unwrap_or_else(|| *s.then.lock().expect("then"));
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let answered = match answer {
        Answer::Status(code) => Some(code),
        Answer::Hang => None,
    };
    s.got.lock().expect("got").push(Received {
        id,
        verified,
        body,
        answered,
    });
    match answer {
        Answer::Status(code) => StatusCode::from_u16(code).unwrap_or(StatusCode::OK),
        Answer::Hang => std::future::pending().await,
    }
}

impl Receiver {
    pub(crate) async fn start(secret: &str, plan: Vec<Answer>, then: Answer) -> Self {
        Self::start_on(secret, plan, then, 0).await
    }

    pub(crate) async fn start_on(secret: &str, plan: Vec<Answer>, then: Answer, port: u16) -> Self {
        let state = ReceiverState {
            verifier: Arc::new(standardwebhooks::Webhook::new(secret).expect("secret")),
            plan: Arc::new(Mutex::new(plan.into())),
            then: Arc::new(Mutex::new(then)),
            got: Arc::default(),
        };
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind receiver");
        let url = format!("http://{}/hooks", listener.local_addr().expect("addr"));
        let app = axum::Router::new()
            .route("/hooks", post(receive))
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, state, task }
    }

    pub(crate) fn set_then(&self, answer: Answer) {
        *self.state.then.lock().expect("then") = answer;
    }

    pub(crate) fn got(&self) -> Vec<Received> {
        self.state.got.lock().expect("got").clone()
    }

    /// The events answered 2xx, in arrival order.
    pub(crate) fn delivered(&self) -> Vec<Received> {
        self.got()
            .into_iter()
            .filter(|r| r.answered.is_some_and(|s| (200..300).contains(&s)))
            .collect()
    }

    /// Waits until `n` events were answered 2xx (at most `within`).
    pub(crate) async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let delivered = self.delivered();
            if delivered.len() >= n || Instant::now() > deadline {
                return delivered;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
