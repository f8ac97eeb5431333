//! Request-reply over NATS with typed JSON payloads: the asking side
//! ([`request`]) and helpers for the answering side of a NATS micro-service
//! ([`parse`], [`respond`], [`service_error`]).

use std::time::Duration;

use async_nats::Client;
use async_nats::service::{self, NATS_SERVICE_ERROR, NATS_SERVICE_ERROR_CODE};
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
    serde_json::from_slice(&request.message.payload).map_err(|e| service_error(400, format!("invalid request: {e}")))
}

/// Answers a service request with `result` as JSON, or with its error headers.
pub async fn respond<T: Serialize>(request: &service::Request, result: Result<T, service::error::Error>) {
    let reply = result.and_then(|value| {
        serde_json::to_vec(&value).map(Into::into).map_err(|e| service_error(500, format!("cannot encode reply: {e}")))
    });
    if let Err(error) = request.respond(reply).await {
        tracing::warn!(%error, subject = %request.message.subject, "could not send a service reply");
    }
}
