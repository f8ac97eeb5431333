//! The OpenAPI 3.1 document of the JSON API, generated with utoipa from the
//! handlers' annotations and the types below, served at
//! `GET /api/openapi.json`.
//!
//! The request body of `POST /api/prospects` is read field by field (a field
//! of the wrong type is reported against that field), so its schema is the
//! [`SignUp`] type here rather than a type the handler deserialises; the
//! limits in it are the domain's (`crate::domain`). The answers' schemas are
//! the handlers' own body types (`crate::api`); the problem body is
//! `bus::ops::Problem`'s shape, described here because `bus` stays free of
//! the OpenAPI generator.

use actix_web::HttpResponse;
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

/// The sign-up fields (`POST /api/prospects`). Unknown fields are ignored.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignUp {
    /// Given name: 1–100 characters after trimming, no control characters.
    #[schema(min_length = 1, max_length = 100)]
    first_name: String,
    /// Family name: 1–100 characters after trimming, no control characters.
    #[schema(min_length = 1, max_length = 100)]
    last_name: String,
    /// E-mail address, at most 254 characters.
    #[schema(format = Email, max_length = 254)]
    email: String,
    /// Company, optional: at most 200 characters.
    #[schema(max_length = 200)]
    company_name: Option<String>,
    /// A country code from `GET /api/countries` (`-`: not telling).
    country: String,
    /// A role code from `GET /api/roles` (`-`: not telling).
    role: String,
}

/// A country or role the form offers.
#[derive(Serialize, ToSchema)]
pub struct Reference {
    /// The code to send.
    code: String,
    /// The name to show.
    name: String,
}

/// An RFC 9457 problem (`application/problem+json`).
#[derive(Serialize, ToSchema)]
pub struct Problem {
    /// Always `about:blank`: the status says what happened.
    #[serde(rename = "type")]
    kind: String,
    /// The status's reason phrase.
    title: String,
    /// The HTTP status.
    status: u16,
    /// What went wrong, for a person.
    detail: String,
    /// One entry per invalid field (422 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    errors: Option<Vec<crate::api::ProblemField<'static>>>,
}

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Signup",
        description = "Sign up, and follow where a sign-up is. Every error is an RFC 9457 problem.",
        license(name = "MIT OR Apache-2.0")
    ),
    paths(
        crate::api::create_prospect,
        crate::api::prospect_status,
        crate::api::countries,
        crate::api::roles,
        openapi_json
    ),
    components(schemas(SignUp, Reference, Problem))
)]
pub struct ApiDoc;

/// The document as JSON.
pub fn document() -> serde_json::Value {
    serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|_| unreachable!("the document is plain JSON"))
}

/// `GET /api/openapi.json`: this API's OpenAPI 3.1 document.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json"))
)]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(document())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_with_every_api_route() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        let mut paths: Vec<&str> = doc["paths"].as_object().expect("paths").keys().map(String::as_str).collect();
        paths.sort_unstable();
        assert_eq!(
            paths,
            vec!["/api/countries", "/api/openapi.json", "/api/prospects", "/api/prospects/{id}", "/api/roles"]
        );
        let post = &doc["paths"]["/api/prospects"]["post"];
        for status in ["202", "400", "413", "415", "422", "429", "503"] {
            assert!(post["responses"][status].is_object(), "POST /api/prospects documents {status}");
        }
        assert!(post["responses"]["422"]["content"]["application/problem+json"].is_object());
        assert!(post["responses"]["503"]["headers"]["Retry-After"].is_object());
    }
}
