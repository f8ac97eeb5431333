//! The accept phase's reference, built for the benchmark only: the least a
//! web tier that publishes can do. One actix-web handler takes the form's
//! bytes as they came, publishes them to JetStream on a subject of the
//! `PROSPECTS` stream with a message id (deduplication), awaits the PubAck
//! and answers 303. No parsing, validation, headers, templates, logging or
//! metrics: what signup-web costs beyond this is what the bench compares.
//!
//! Usage: `bare-publisher --port 8091 --nats-url nats://127.0.0.1:4222` (the
//! stream must exist; the bench makes it).

// The services' allocator (the runtime's mimalloc), for like-for-like figures.
use runtime as _;

use std::net::TcpListener;

use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::Context as _;
use bus::async_nats::{self, HeaderMap, jetstream};
use clap::Parser;
use uuid::Uuid;

#[derive(Parser)]
#[command(about = "The least a publishing web tier does, for the benchmark")]
struct Cli {
    /// Port to listen on (127.0.0.1).
    #[arg(long)]
    port: u16,
    /// The nats-server holding the `PROSPECTS` stream.
    #[arg(long)]
    nats_url: String,
}

async fn sign_up(js: web::Data<jetstream::Context>, body: web::Bytes) -> HttpResponse {
    let id = Uuid::now_v7();
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", id.to_string().as_str());
    let subject = format!("events.prospect.{id}.signedup");
    let stored = async { js.publish_with_headers(subject, headers, body).await?.await };
    match stored.await {
        Ok(_) => HttpResponse::SeeOther().insert_header(("Location", format!("/signup/thanks/{id}"))).finish(),
        Err(error) => HttpResponse::ServiceUnavailable().body(error.to_string()),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let client = async_nats::connect(&cli.nats_url).await.context("connecting to NATS")?;
    let js = web::Data::new(jetstream::new(client));
    let listener = TcpListener::bind(("127.0.0.1", cli.port)).context("binding the port")?;
    HttpServer::new(move || App::new().app_data(js.clone()).route("/signup", web::post().to(sign_up)))
        .listen(listener)?
        .run()
        .await
        .context("serving")
}
