//! The one API error body, an RFC 9457 problem, and the 405 for a method
//! an OpenAPI document does not list.

use actix_web::http::header;
use actix_web::{HttpResponse, web};

/// An RFC 9457 problem (`application/problem+json`): the body of every API
/// error of every service, and the one schema their OpenAPI documents list
/// for it (`Problem`, with [`ProblemField`]).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// Always `about:blank`: the status says what happened.
    #[serde(rename = "type")]
    kind: &'static str,
    /// The status's reason phrase.
    title: &'static str,
    /// The HTTP status.
    status: u16,
    /// What went wrong, for a person.
    detail: String,
    /// One entry per invalid field (422 only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    errors: Vec<ProblemField>,
}

/// One invalid field of a problem.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ProblemField {
    /// The field's name, as sent.
    field: String,
    /// What is wrong with it.
    detail: String,
    /// JSON Pointer to the field in the request body.
    pointer: String,
}

impl ProblemField {
    /// The field `field` (at `/field` in the body), with what is wrong.
    pub fn new(field: &str, detail: impl Into<String>) -> Self {
        Self { field: field.to_owned(), detail: detail.into(), pointer: format!("/{field}") }
    }
}

impl Problem {
    /// A problem of `status` (its reason is the title), saying `detail`.
    pub fn new(status: actix_web::http::StatusCode, detail: impl Into<String>) -> Self {
        Self {
            kind: "about:blank",
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
        }
    }

    /// With per-field errors (`errors` in the body, left out when empty).
    pub fn with_errors(mut self, errors: Vec<ProblemField>) -> Self {
        self.errors = errors;
        self
    }

    /// The response: this body, its status, and `headers` (such as
    /// `Retry-After`).
    pub fn response(&self, headers: &[(header::HeaderName, String)]) -> HttpResponse {
        let status = actix_web::http::StatusCode::from_u16(self.status)
            .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = HttpResponse::build(status);
        response.content_type("application/problem+json");
        for (name, value) in headers {
            response.insert_header((name.clone(), value.as_str()));
        }
        response.json(self)
    }
}

/// Answers every method an OpenAPI document does not give a path with a
/// 405 problem naming the ones it does (`Allow`). Register it after the
/// documented routes: those match first (their method guards sit on their
/// resources, so without this an undeclared method would fall through to
/// the app's 404).
pub fn undeclared_methods(config: &mut web::ServiceConfig, openapi: &serde_json::Value) {
    let Some(paths) = openapi["paths"].as_object() else { return };
    for (path, operations) in paths {
        let mut allowed: Vec<String> =
            operations.as_object().into_iter().flat_map(|o| o.keys()).map(|m| m.to_ascii_uppercase()).collect();
        // A GET route answers HEAD too (head_as_get).
        if allowed.iter().any(|m| m == "GET") {
            allowed.push("HEAD".to_owned());
        }
        let allow = allowed.join(", ");
        config.service(web::resource(path.as_str()).to(move || {
            let allow = allow.clone();
            async move {
                Problem::new(
                    actix_web::http::StatusCode::METHOD_NOT_ALLOWED,
                    format!("this resource answers {allow} only"),
                )
                .response(&[(header::ALLOW, allow)])
            }
        }));
    }
}
