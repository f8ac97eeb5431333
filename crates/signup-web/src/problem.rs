//! The JSON API's errors: each refusal with its status, answered as an RFC
//! 9457 problem (`runtime::ops::Problem`) naming the fields at fault. A leaf:
//! the rate limiter answers with it too.

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpResponse, ResponseError};
use runtime::ops::{Problem, ProblemField};

use crate::domain::FieldError;

/// Everything the API answers besides success, each with its status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON.
    #[error("the request body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    /// The body is larger than the configured limit.
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// The body is not a JSON object.
    #[error("{0}")]
    BadRequest(String),
    /// Some fields are invalid.
    #[error("the sign-up has invalid fields")]
    Invalid(Vec<FieldError>),
    /// No prospect has this id (it is not a UUID).
    #[error("there is no prospect at this address")]
    NotFound,
    /// The event could not be stored now.
    #[error("sign-ups cannot be accepted right now; nothing was saved, please retry")]
    Unavailable,
    /// The client sent more requests than its rate limit allows; retry
    /// after this many seconds.
    #[error("too many requests from your address; try again in {0} s")]
    TooManyRequests(u64),
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let errors = match self {
            ApiError::Invalid(errors) => {
                errors.iter().map(|e| ProblemField::new(e.field.name(), e.message.as_str())).collect()
            }
            _ => Vec::new(),
        };
        let headers = match self {
            ApiError::Unavailable => vec![(header::RETRY_AFTER, "5".to_owned())],
            ApiError::TooManyRequests(seconds) => vec![(header::RETRY_AFTER, seconds.to_string())],
            _ => Vec::new(),
        };
        Problem::new(status, self.to_string()).with_errors(errors).response(&headers)
    }
}
