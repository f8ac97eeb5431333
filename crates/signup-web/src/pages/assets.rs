//! The pages' scripts and style sheet, compiled in.

use actix_web::http::header::{self};
use actix_web::{HttpResponse, web};

/// `/static/…`.
pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/static/thanks.js", web::get().to(thanks_js))
        .route("/static/bot-check.js", web::get().to(bot_check_js))
        .route("/static/altcha-worker.js", web::get().to(altcha_worker_js))
        .route("/static/site.css", web::get().to(site_css));
}

/// `GET /static/bot-check.js`: the sign-up form's bot check (starts the
/// worker, fills in `altcha`).
pub async fn bot_check_js() -> HttpResponse {
    script(include_str!("../../static/bot-check.js"))
}

/// `GET /static/altcha-worker.js`: the Web Worker that solves a challenge
/// with WebCrypto.
pub async fn altcha_worker_js() -> HttpResponse {
    script(include_str!("../../static/altcha-worker.js"))
}

fn script(body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .body(body)
}

/// `GET /static/thanks.js`: the thank-you page's status updater.
pub async fn thanks_js() -> HttpResponse {
    script(include_str!("../../static/thanks.js"))
}

/// `GET /static/site.css`: the pages' stylesheet (a file, not inline, so the
/// Content-Security-Policy can refuse inline styles).
pub async fn site_css() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .body(include_str!("../../static/site.css"))
}
