//! Request-reply over NATS with typed JSON payloads: the asking side
//! ([`ask`] for an [`Endpoint`] of the contract, [`request`] for any
//! subject) and the answering side of a NATS micro-service ([`serve`] for an
//! [`Endpoint`]; [`parse`], [`respond`], [`service_error`]).

use std::time::Duration;

use std::future::Future;

use async_nats::Client;
use async_nats::service::{self, NATS_SERVICE_ERROR, NATS_SERVICE_ERROR_CODE};
use futures::StreamExt as _;
use messages::service::Endpoint;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::connection::is_connected;

/// Why a request got no usable reply.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The client is not connected to NATS right now.
    #[error("not connected to NATS")]
    NotConnected,
    /// Nobody answered in time.
    #[error("no reply in time")]
    Timeout,
    /// No service listens on the subject.
    #[error("no service answers this request")]
    NoResponders,
    /// The service answered with an error (its `Nats-Service-Error-Code` and
    /// `Nats-Service-Error`).
    #[error("service error {code}: {description}")]
    Service {
        /// The error code, HTTP-like (400, 404, 503, …).
        code: usize,
        /// What the service said.
        description: String,
    },
    /// The reply is not the JSON we expected.
    #[error("unexpected reply: {0}")]
    Decode(#[from] serde_json::Error),
    /// Anything else the client reported.
    #[error("request failed: {0}")]
    Other(String),
}

impl RequestError {
    /// Whether asking again later may succeed (as opposed to a definite
    /// answer such as "not found").
    pub fn is_unavailable(&self) -> bool {
        !matches!(self, RequestError::Service { code, .. } if *code < 500)
    }
}

/// Asks endpoint `E`, waiting at most `timeout` for its reply.
pub async fn ask<E: Endpoint>(client: &Client, body: &E::Request, timeout: Duration) -> Result<E::Reply, RequestError> {
    request(client, E::SUBJECT, body, timeout).await
}

/// Adds endpoint `E` to `service` and answers its requests with `answer`,
/// up to `concurrency` at once, until the service stops. A request that is
/// not `E::Request` gets a 400 naming what is wrong.
pub async fn serve<E, F, Fut>(service: &service::Service, concurrency: usize, answer: F) -> anyhow::Result<()>
where
    E: Endpoint,
    F: Fn(E::Request) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<E::Reply, service::error::Error>> + Send,
{
    let endpoint = service
        .endpoint_builder()
        .name(E::NAME)
        .add(E::SUBJECT)
        .await
        .map_err(|e| anyhow::anyhow!(e).context(format!("adding endpoint {}", E::SUBJECT)))?;
    tokio::spawn(endpoint.for_each_concurrent(concurrency, move |request| {
        let answer = answer.clone();
        async move {
            if !answers_an_inbox(request.message.reply.as_deref()) {
                // The requester chooses the reply subject: answering anywhere
                // else would publish the answer with this service's rights.
                tracing::warn!(endpoint = E::SUBJECT, "request refused: its reply subject is not an inbox");
                metrics::counter!("signup_service_requests_refused_total", "endpoint" => E::NAME).increment(1);
                return;
            }
            let result = match parse::<E::Request>(&request) {
                Ok(body) => answer(body).await,
                Err(error) => Err(error),
            };
            respond(&request, result).await;
        }
    }));
    Ok(())
}

/// Whether a request's reply subject is a requester's inbox (`_INBOX.…`, or
/// `_INBOX_<user>.…` as the services name theirs): the only place a service
/// answers. Nothing the system stores or acts on lives there.
pub fn answers_an_inbox(reply: Option<&str>) -> bool {
    reply
        .and_then(|r| r.split('.').next())
        .is_some_and(|first| first == "_INBOX" || first.strip_prefix("_INBOX_").is_some_and(|user| !user.is_empty()))
}

/// Sends `body` as JSON to `subject` and decodes the JSON reply, waiting at
/// most `timeout`. Service errors come back as [`RequestError::Service`].
pub async fn request<Req: Serialize + ?Sized, Rep: DeserializeOwned>(
    client: &Client,
    subject: &str,
    body: &Req,
    timeout: Duration,
) -> Result<Rep, RequestError> {
    use async_nats::RequestErrorKind;

    if !is_connected(client) {
        return Err(RequestError::NotConnected);
    }
    let payload = serde_json::to_vec(body)?;
    let reply = match tokio::time::timeout(timeout, client.request(subject.to_owned(), payload.into())).await {
        Err(_elapsed) => return Err(RequestError::Timeout),
        Ok(Err(error)) => {
            return Err(match error.kind() {
                RequestErrorKind::TimedOut => RequestError::Timeout,
                RequestErrorKind::NoResponders => RequestError::NoResponders,
                _ => RequestError::Other(error.to_string()),
            });
        }
        Ok(Ok(reply)) => reply,
    };
    if let Some(headers) = &reply.headers
        && let Some(code) = headers.get(NATS_SERVICE_ERROR_CODE)
    {
        return Err(RequestError::Service {
            code: code.as_str().parse().unwrap_or(500),
            description: headers.get(NATS_SERVICE_ERROR).map(|v| v.as_str().to_owned()).unwrap_or_default(),
        });
    }
    Ok(serde_json::from_slice(&reply.payload)?)
}

/// A service error reply: `code` (HTTP-like) and a description.
pub fn service_error(code: usize, description: impl Into<String>) -> service::error::Error {
    service::error::Error { code, status: description.into() }
}

/// Decodes a service request's JSON payload; a bad payload is a 400 error
/// naming what is wrong.
pub fn parse<T: DeserializeOwned>(request: &service::Request) -> Result<T, service::error::Error> {
    // No payload at all is JSON `null`: what an empty request (`()`) is.
    let payload: &[u8] = if request.message.payload.is_empty() { b"null" } else { &request.message.payload };
    serde_json::from_slice(payload).map_err(|e| service_error(400, format!("invalid request: {e}")))
}

/// Answers a service request with `result` as JSON, or with its error headers.
pub async fn respond<T: Serialize>(request: &service::Request, result: Result<T, service::error::Error>) {
    let reply = result.and_then(|value| {
        serde_json::to_vec(&value)
            .map(Into::into)
            .map_err(|e| service_error(messages::service::INTERNAL, format!("cannot encode reply: {e}")))
    });
    if let Err(error) = request.respond(reply).await {
        tracing::warn!(%error, subject = %request.message.subject, "could not send a service reply");
    }
}

#[cfg(test)]
mod tests {
    use super::answers_an_inbox;

    #[test]
    fn a_service_answers_inboxes_only() {
        for inbox in ["_INBOX.abc.def", "_INBOX_web.abc", "_INBOX_mailer.x.y"] {
            assert!(answers_an_inbox(Some(inbox)), "{inbox}");
        }
        for other in [
            None,
            Some(""),
            Some("events.prospect.0192f0c1-7a3b-7cde-8f01-23456789abcd.deleted"),
            Some("$JS.API.STREAM.PURGE.PROSPECTS"),
            Some("_INBOX_"),
            Some("_INBOX_.x"),
            Some("_INBOXES.x"),
            Some("dlq.prospect.save-prospect.x"),
        ] {
            assert!(!answers_an_inbox(other), "{other:?}");
        }
    }
}
