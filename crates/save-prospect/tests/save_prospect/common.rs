//! What the handler tests share: a migrated database of the test's own, and
//! deliveries made by hand.

use bus::{Delivery, EventMeta};
use messages::{Country, ProspectDetails, ProspectEvent, Role};
use save_prospect::{SaveProspect, db};
use test_support::TestDatabase;
use uuid::Uuid;

/// A handler on `database`, created and migrated.
pub async fn handler(database: &TestDatabase) -> SaveProspect {
    db::create_database_if_missing(&database.url(), &db::Connector::plain()).await.expect("create");
    let pool = db::pool(&database.url(), 4, &db::Connector::plain()).expect("pool");
    db::migrate(&pool).await.expect("migrate");
    SaveProspect::new(pool)
}

/// Ada's details, with this company.
pub fn details(company: &str) -> ProspectDetails {
    ProspectDetails {
        first_name: "Ada".into(),
        last_name: "Lovelace".into(),
        email: "ada@example.com".into(),
        company_name: Some(company.into()),
        country: Country { code: "GB".into(), name: "United Kingdom".into() },
        role: Role { code: "EN".into(), name: "Engineer".into() },
    }
}

/// `event` as delivered at `stream_sequence`, with a fresh event id.
pub fn delivery(event: ProspectEvent, stream_sequence: u64) -> Delivery<ProspectEvent> {
    Delivery {
        meta: EventMeta {
            event_id: Uuid::now_v7(),
            ce_type: event.ce_type().to_owned(),
            source: "/test".into(),
            time: None,
            traceparent: None,
            stream_sequence,
            delivered: 1,
        },
        event,
    }
}
