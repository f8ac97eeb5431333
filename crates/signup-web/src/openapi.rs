//! The OpenAPI 3.1 document of the JSON API, generated with utoipa from the
//! handlers' annotations and the types below, served at
//! `GET /api/openapi.json`; the routes that serve the contract documents
//! (this one, the events' AsyncAPI document, the events' JSON Schemas).
//!
//! [`routes`] registers every `/api` route, for the app and for the document
//! alike (utoipa-actix-web collects each handler's path as it registers it),
//! so the document cannot name a route that is not served nor miss one.
//!
//! The request body of `POST /api/prospects` is read field by field (a field
//! of the wrong type is reported against that field), so its schema is the
//! [`SignUp`] type here rather than a type the handler deserialises; the
//! limits in it are the domain's (`crate::domain`). The answers' schemas are
//! the handlers' own body types (`crate::api`); the problem body is
//! `bus::ops::Problem`'s shape, described here because `bus` stays free of
//! the OpenAPI generator.

use std::sync::OnceLock;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, get, web};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};
use utoipa_actix_web::AppExt as _;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::catalog::Catalog;
use crate::state::AppState;

/// The sign-up fields (`POST /api/prospects`). Unknown fields are ignored.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignUp {
    /// Given name: 1–100 characters as sent, not blank, no control characters (stored trimmed).
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f\\ufffd]*[^\\s\\x00-\\x1f\\x7f-\\x9f\\ufffd][^\\x00-\\x1f\\x7f-\\x9f\\ufffd]*$"
    )]
    first_name: String,
    /// Family name: 1–100 characters as sent, not blank, no control characters (stored trimmed).
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f\\ufffd]*[^\\s\\x00-\\x1f\\x7f-\\x9f\\ufffd][^\\x00-\\x1f\\x7f-\\x9f\\ufffd]*$"
    )]
    last_name: String,
    /// E-mail address, at most 254 characters.
    #[schema(format = Email, max_length = 254)]
    email: String,
    /// Company, optional: at most 200 characters, no control characters.
    #[schema(max_length = 200, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f\\ufffd]*$")]
    company_name: Option<String>,
    /// A country code from `GET /api/countries` (`-`: not telling), one of
    /// the codes listed here.
    country: String,
    /// A role code from `GET /api/roles` (`-`: not telling), one of the codes
    /// listed here.
    role: String,
    /// The bot check: a challenge from `GET /api/challenge` and its
    /// solution, as base64 of the JSON `{"challenge": …, "solution":
    /// {"counter": …, "derivedKey": "…"}}` (ALTCHA's payload, protocol v2).
    /// Each counts for one sign-up. Listed only while the check is on.
    #[schema(min_length = 1, max_length = 8192)]
    altcha: Option<String>,
}

/// A challenge of the bot check (ALTCHA, protocol v2): find the counter
/// whose key, derived from `nonce` and the counter, starts with
/// `keyPrefix`, then send it back with the challenge as `altcha`.
#[derive(Serialize, ToSchema)]
pub struct Challenge {
    /// What to solve; signed.
    parameters: ChallengeParameters,
    /// HMAC-SHA-256 of the parameters, hex: the challenge is ours, unaltered.
    signature: String,
}

/// The parameters of a [`Challenge`].
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChallengeParameters {
    /// The key derivation, `PBKDF2/SHA-256`.
    algorithm: String,
    /// Its rounds per try.
    cost: u32,
    /// When the challenge expires, in Unix seconds.
    expires_at: i64,
    /// The derived key's length, in bytes.
    key_length: u32,
    /// What the derived key must start with, hex.
    key_prefix: String,
    /// The server's signature of the expected key (its fast check), hex.
    key_signature: String,
    /// Hex bytes: the password is these followed by the counter (4 bytes,
    /// big-endian).
    nonce: String,
    /// Hex bytes: the derivation's salt.
    salt: String,
}

/// The document with the codes the reference lists hold now, as the
/// fields' `enum` (the service's tables, which can differ from the built-in
/// lists): exactly what the API accepts.
fn with_current_codes(catalog: &Catalog) -> serde_json::Value {
    let mut doc = document().clone();
    let fields = &mut doc["components"]["schemas"]["SignUp"]["properties"];
    fields["country"]["enum"] = catalog.countries().iter().map(|c| c.code.as_str()).collect();
    fields["role"]["enum"] = catalog.roles().iter().map(|r| r.code.as_str()).collect();
    doc
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

/// The document's parts that are not routes: its title and the shared
/// schemas. The paths come from the routes themselves ([`routes`]).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Signup",
        description = "Sign up, and follow where a sign-up is. Every error is an RFC 9457 problem. \
                       The events a sign-up becomes are described by the AsyncAPI document at /api/asyncapi.json.",
        license(name = "MIT OR Apache-2.0")
    ),
    components(schemas(SignUp, Reference, Problem, Challenge, ChallengeParameters))
)]
pub struct ApiDoc;

/// Registers every `/api` route. The served app and the document are both
/// built from this one list, so a route is documented exactly when it is
/// served.
pub fn routes(config: &mut ServiceConfig) {
    config
        .service(crate::api::create_prospect)
        .service(crate::api::prospect_status)
        .service(crate::api::countries)
        .service(crate::api::roles)
        .service(crate::api::challenge)
        .service(openapi_json)
        .service(asyncapi_json)
        .service(event_schema);
}

/// The document as JSON, built once from [`routes`].
pub fn document() -> &'static serde_json::Value {
    static DOCUMENT: OnceLock<serde_json::Value> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let (_, api) =
            actix_web::App::new().into_utoipa_app().openapi(ApiDoc::openapi()).configure(routes).split_for_parts();
        serde_json::to_value(api).unwrap_or_else(|_| unreachable!("the document is plain JSON"))
    })
}

/// `GET /api/openapi.json`: this API's OpenAPI 3.1 document.
#[utoipa::path(
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json",
        body = Object))
)]
#[get("/api/openapi.json")]
pub async fn openapi_json(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(with_bot_check(with_current_codes(&state.catalog()), state.bot_check.enabled()))
}

/// The document as this server checks sign-ups: while the bot check is on,
/// `altcha` is required; while it is off, it is no field of the API.
fn with_bot_check(mut doc: serde_json::Value, enabled: bool) -> serde_json::Value {
    let sign_up = &mut doc["components"]["schemas"]["SignUp"];
    if enabled {
        if let Some(required) = sign_up["required"].as_array_mut() {
            required.push("altcha".into());
        }
    } else if let Some(fields) = sign_up["properties"].as_object_mut() {
        fields.remove("altcha");
    }
    doc
}

/// `GET /api/asyncapi.json`: the AsyncAPI 3.0 document of the events,
/// generated from the `messages` crate.
#[utoipa::path(
    responses((status = 200, description = "The AsyncAPI 3.0 document of the events, their dead letters and the \
        prospects request-reply service", content_type = "application/json", body = Object))
)]
#[get("/api/asyncapi.json")]
pub async fn asyncapi_json() -> HttpResponse {
    static DOCUMENT: OnceLock<serde_json::Value> = OnceLock::new();
    HttpResponse::Ok().json(DOCUMENT.get_or_init(messages::asyncapi::document))
}

/// `GET /api/schemas/{ce_type}.json`: the JSON Schema of an event type's
/// payload: where the events' `ce-dataschema` points.
#[utoipa::path(
    params(("ce_type" = String, Path, description = "An event type (its ce-type)",
        example = "io.signup.prospect.signedup.v2")),
    responses(
        (status = 200, description = "The payload's JSON Schema (draft 2020-12)", content_type = "application/schema+json",
            body = Object),
        (status = 404, description = "No event has this type", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/api/schemas/{ce_type}.json")]
pub async fn event_schema(ce_type: web::Path<String>) -> HttpResponse {
    match messages::schemas::of(&ce_type) {
        Some(schema) => HttpResponse::Ok().content_type("application/schema+json").body(schema),
        None => bus::ops::Problem::<()>::new(StatusCode::NOT_FOUND, "no event has this type").response(&[]),
    }
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
            vec![
                "/api/asyncapi.json",
                "/api/challenge",
                "/api/countries",
                "/api/openapi.json",
                "/api/prospects",
                "/api/prospects/{id}",
                "/api/roles",
                "/api/schemas/{ce_type}.json"
            ]
        );
        assert!(doc["paths"]["/api/prospects"]["post"].is_object(), "the method comes from the route");
        let post = &doc["paths"]["/api/prospects"]["post"];
        for status in ["202", "400", "413", "415", "422", "429", "503"] {
            assert!(post["responses"][status].is_object(), "POST /api/prospects documents {status}");
        }
        assert!(post["responses"]["422"]["content"]["application/problem+json"].is_object());
        assert!(post["responses"]["503"]["headers"]["Retry-After"].is_object());
    }

    #[test]
    fn the_served_document_lists_the_codes_the_lists_hold_now() {
        let served = with_current_codes(&Catalog::builtin());
        let fields = &served["components"]["schemas"]["SignUp"]["properties"];
        assert!(fields["country"]["enum"].as_array().is_some_and(|codes| codes.contains(&"GB".into())));
        let catalog = Catalog::new(
            vec![messages::Country { code: "XK".into(), name: "Kosovo".into() }],
            vec![messages::Role { code: "-".into(), name: "Not telling".into() }],
        );
        let served = with_current_codes(&catalog);
        let fields = &served["components"]["schemas"]["SignUp"]["properties"];
        assert_eq!(fields["country"]["enum"], serde_json::json!(["XK"]));
        assert_eq!(fields["role"]["enum"], serde_json::json!(["-"]));
    }

    #[test]
    fn the_served_document_requires_altcha_exactly_while_the_bot_check_is_on() {
        let on = with_bot_check(document().clone(), true);
        let sign_up = &on["components"]["schemas"]["SignUp"];
        assert!(sign_up["required"].as_array().is_some_and(|r| r.contains(&"altcha".into())), "{sign_up}");
        assert!(sign_up["properties"]["altcha"].is_object());
        let off = with_bot_check(document().clone(), false);
        let sign_up = &off["components"]["schemas"]["SignUp"];
        assert!(sign_up["properties"].get("altcha").is_none(), "{sign_up}");
        assert!(!sign_up["required"].as_array().is_some_and(|r| r.contains(&"altcha".into())));
        assert!(on["paths"]["/api/challenge"]["get"]["responses"]["200"].is_object());
    }
}
