//! The pages in a real headless Chromium (Debian's `chromium`, driven by its
//! `chromedriver`) against the running system: signup-web, save-prospect and
//! the mailer on a private nats-server, database and SMTP server, and the
//! analytics-indexer binary. The links a visitor follows come from the mails
//! the SMTP server received.
//! Fields are found by their accessible names as the browser computes them,
//! every page is checked for console errors, and screenshots are written to
//! `target/browser-screenshots/` for a person to look at.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use e2e_tests::System;
use e2e_tests::browser::{Browser, Control, DESKTOP, PHONE};
use e2e_tests::processes::Service;
use fantoccini::Locator;
use fantoccini::key::Key;
use test_support::{eventually, free_port};
use uuid::Uuid;

const ANALYTICS_TOKEN: &str = "browser-test-analytics-token";
/// The thank-you page's heading.
const THANKS: &str = "Thank you! Please check your inbox";

/// Where the screenshots go: `target/browser-screenshots/` beside the
/// workspace's build output (ignored by git).
fn screenshots() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    // target/debug/deps/<test> → target/
    let target = exe.ancestors().nth(3).expect("target folder");
    target.join("browser-screenshots")
}

/// The running system and a browser in front of it.
struct Site {
    system: System,
    browser: Browser,
    indexer_port: u16,
    _indexer: Service,
    _index: tempfile::TempDir,
}

impl Site {
    /// Whether signup-web counted a proof of `way` that passed its bot check.
    async fn passed_bot_check(&self, way: &str) -> bool {
        let metrics = reqwest::get(self.web("/metrics")).await.expect("metrics").text().await.expect("text");
        metrics.lines().any(|l| {
            l.starts_with("signup_bot_check_total{")
                && l.contains(&format!("way=\"{way}\""))
                && l.contains("outcome=\"passed\"")
        })
    }

    /// The system with its bot check on, as deployed (challenges quick to
    /// solve): every sign-up below is the page's script solving one.
    async fn start() -> Self {
        Self::start_with(Browser::start(&screenshots()).await.expect("Chromium")).await
    }

    async fn start_with(browser: Browser) -> Self {
        let mut system = System::start_web_with(|settings| {
            settings.web.rate_limit.per_minute = 0;
            settings.web.rate_limit.lookups_per_minute = 0;
            settings.web.bot_check.enabled = true;
            settings.web.bot_check.difficulty = 50;
            settings.web.bot_check.iterations = 100;
            settings.web.bot_check.min_fill_secs = 1;
        })
        .await
        .expect("system");
        system.start_saver().await.expect("saver");
        system.start_mailer().await.expect("mailer");
        let index = tempfile::tempdir().expect("index folder");
        let indexer_port = free_port().expect("port");
        let env: Vec<(String, String)> = vec![
            ("SIGNUP__NATS__URL".into(), system.nats.url()),
            ("SIGNUP__ANALYTICS__PORT".into(), indexer_port.to_string()),
            ("SIGNUP__ANALYTICS__INDEX_DIR".into(), index.path().join("index").display().to_string()),
            ("SIGNUP__ANALYTICS__TOKEN".into(), ANALYTICS_TOKEN.into()),
            ("SIGNUP__ANALYTICS__WRITER_MEMORY_MB".into(), "15".into()),
            ("SIGNUP__ANALYTICS__CONSUMER__IDLE_WAIT_MS".into(), "300".into()),
            ("SIGNUP__ANALYTICS__CONSUMER__LINGER_MS".into(), "20".into()),
        ];
        let indexer = Service::spawn("analytics-indexer", &["run"], &env).expect("analytics-indexer");
        let ready = format!("http://127.0.0.1:{indexer_port}/readyz");
        eventually(Duration::from_secs(30), "analytics-indexer to be ready", || async {
            (reqwest::get(&ready).await.ok()?.status() == 200).then_some(())
        })
        .await
        .expect("analytics-indexer ready");
        Self { system, browser, indexer_port, _indexer: indexer, _index: index }
    }

    fn web(&self, path: &str) -> String {
        self.system.web_url(path)
    }

    fn analytics(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.indexer_port)
    }

    /// Fills the sign-up form by its labels and sends it; returns the
    /// prospect id the thank-you page shows.
    async fn sign_up(&self, visitor: &Visitor<'_>) -> Uuid {
        let b = &self.browser;
        b.open(&self.web("/signup")).await.expect("form");
        visitor.fill_in(b).await;
        b.press("Sign up").await.expect("submit");
        b.wait_for_heading(THANKS).await.expect("thank-you page");
        b.text("main code").await.expect("reference").parse().expect("the reference is the prospect id")
    }

    /// The `n`th mail to `address` (waiting for it).
    async fn mail(&self, address: &str, n: usize) -> e2e_tests::Mail {
        self.system.mails_to(address, n).await.expect("mail").remove(n - 1)
    }

    async fn stop(self) {
        self.browser.close().await.expect("close the browser");
        self.system.stop().await.expect("stop");
    }
}

/// What a visitor types into the form.
struct Visitor<'a> {
    first_name: &'a str,
    last_name: &'a str,
    email: &'a str,
    company: &'a str,
    country: (&'a str, &'a str),
    role: (&'a str, &'a str),
}

impl Visitor<'_> {
    const ADA: Visitor<'static> = Visitor {
        first_name: "Ada",
        last_name: "Lovelace",
        email: "ada@example.com",
        company: "Analytical Engines",
        country: ("NL", "Netherlands"),
        role: ("EN", "Engineer"),
    };

    async fn fill_in(&self, b: &Browser) {
        b.fill("First name", self.first_name).await.expect("first name");
        b.fill("Last name", self.last_name).await.expect("last name");
        b.fill("E-mail", self.email).await.expect("e-mail");
        b.fill("Company", self.company).await.expect("company");
        b.choose("Country", self.country.1).await.expect("country");
        b.choose("Role", self.role.1).await.expect("role");
    }
}

/// Every control on the page has an accessible name, and Tab reaches each
/// of them.
async fn assert_keyboard_reaches_everything(b: &Browser, page: &str) -> Vec<Control> {
    let controls = b.controls().await.expect("controls");
    assert!(!controls.is_empty(), "{page} has no controls");
    for control in &controls {
        assert!(!control.label.is_empty(), "{} on {page} has no accessible name ({control:?})", control.describe);
        assert!(!control.role.is_empty() && control.role != "generic", "{} on {page} has no role", control.describe);
    }
    let order = b.tab_order().await.expect("tab order");
    let reached: BTreeSet<&str> = order.iter().map(|c| c.reference.as_str()).collect();
    let missed: Vec<&Control> = controls.iter().filter(|c| !reached.contains(c.reference.as_str())).collect();
    assert!(missed.is_empty(), "Tab does not reach these on {page}: {missed:#?}\norder: {order:#?}");
    order
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_signs_up_in_a_browser_and_the_dashboard_counts_it() {
    let site = Site::start().await;
    let b = &site.browser;

    b.open(&site.web("/signup")).await.expect("form");
    b.assert_clean_console("the sign-up form").await.expect("console");
    b.screenshot("1-signup-form").await.expect("screenshot");
    // Responsive: on a desktop the names share a row, on a phone they stack,
    // and nothing is wider than the phone.
    assert!(names_side_by_side(b).await, "first and last name share a row on a desktop");
    b.resize(PHONE).await.expect("phone size");
    assert!(!names_side_by_side(b).await, "first and last name stack on a phone");
    let widths = b.client().execute("return [document.documentElement.scrollWidth, window.innerWidth]", vec![]).await;
    let widths: Vec<u64> = serde_json::from_value(widths.expect("widths")).expect("two numbers");
    assert!(widths[0] <= widths[1], "the form scrolls sideways on a phone: {widths:?}");
    b.screenshot("2-signup-form-phone").await.expect("screenshot");
    b.resize(DESKTOP).await.expect("desktop size");

    // The page's script solves the bot check's challenge in a Web Worker
    // and says so; the sign-up carries the solution.
    b.open(&site.web("/signup")).await.expect("form");
    eventually(Duration::from_secs(60), "the browser to solve the challenge", || async {
        b.text("#bot-check").await.ok().filter(|text| text.starts_with("Checked"))
    })
    .await
    .expect("solved in the browser");
    let solution = b.client().find(Locator::Css("input[name=altcha]")).await.expect("the field");
    assert!(
        !solution.prop("value").await.expect("value").unwrap_or_default().is_empty(),
        "the solution is in the form"
    );
    let visitor = Visitor::ADA;
    let id = site.sign_up(&visitor).await;
    let thanks = b.path().await.expect("path");
    assert!(site.passed_bot_check("altcha").await, "the sign-up passed the check with the browser's solution");
    assert_eq!(thanks, format!("/signup/thanks/{id}"));
    assert_eq!(b.text("#status").await.expect("status"), "Waiting for you to confirm it from your inbox.");
    assert!(b.client().find(Locator::LinkText("change or erase your details")).await.is_err(), "no access from here");
    b.assert_clean_console("the thank-you page").await.expect("console");
    b.screenshot("3-thank-you").await.expect("screenshot");

    // The mail: its confirmation link, a button, "confirmed".
    let mail = site.mail(visitor.email, 1).await;
    assert_eq!(mail.subject, "Please confirm your sign-up");
    b.open(&site.web(mail.link("/prospects/confirm/").expect("confirmation link"))).await.expect("link");
    b.wait_for_heading("Confirm your sign-up").await.expect("confirmation page");
    b.assert_clean_console("the confirmation page").await.expect("console");
    b.screenshot("6-confirm").await.expect("screenshot");
    b.press("Confirm my sign-up").await.expect("confirm");
    b.wait_for_heading("Your sign-up is confirmed").await.expect("confirmed");
    b.assert_clean_console("the confirmed page").await.expect("console");
    b.screenshot("7-confirmed").await.expect("screenshot");
    // The thank-you page follows the status by itself.
    b.open(&site.web(&thanks)).await.expect("thank-you page again");
    assert_eq!(wait_until_confirmed(b).await, "Your sign-up is confirmed. Thank you!");
    // The manage link from the same mail opens the record.
    b.open(&site.web(mail.link("/prospects/manage/").expect("manage link"))).await.expect("manage link");
    b.wait_for_heading("Your sign-up").await.expect("manage page");
    assert_eq!(b.text("#status").await.expect("status"), "Status: confirmed.");
    assert_eq!(b.value("E-mail").await.expect("value"), visitor.email);
    b.assert_clean_console("the manage page").await.expect("console");

    let row = site.system.saved(id).await.expect("row");
    assert!(row.confirmed_at.is_some(), "confirmed in Postgres");
    assert_eq!(row.first_name.as_deref(), Some(visitor.first_name));
    assert_eq!(row.last_name.as_deref(), Some(visitor.last_name));
    assert_eq!(row.email.as_deref(), Some(visitor.email));
    assert_eq!(row.company_name.as_deref(), Some(visitor.company));
    assert_eq!(row.country_code.as_deref(), Some(visitor.country.0));
    assert_eq!(row.role_code.as_deref(), Some(visitor.role.0));

    // The dashboard asks for its token, then counts the sign-up.
    b.open(&site.analytics("/analytics")).await.expect("dashboard");
    b.wait_for_heading("Sign in").await.expect("login page");
    b.assert_console_only_reports_status("the analytics login page", 401).await.expect("console");
    b.fill("Access token", ANALYTICS_TOKEN).await.expect("token");
    b.press("Sign in").await.expect("sign in");
    wait_for_dashboard_total(b, 1).await;
    let row = b.client().find(Locator::Css(&format!("tr[data-prospect='{id}']"))).await.expect("listed");
    assert!(row.text().await.expect("row text").contains("Ada Lovelace"));
    let netherlands = b.client().find(Locator::Css("#countries-title + svg .group[data-code='NL']")).await;
    assert_eq!(netherlands.expect("NL bar").attr("data-count").await.expect("count").as_deref(), Some("1"));
    b.assert_clean_console("the analytics dashboard").await.expect("console");
    b.screenshot("4-analytics-dashboard").await.expect("screenshot");
    // Signing in with the link scripts/run prints puts the token in a URL.
    b.open(&site.analytics(&format!("/analytics?token={ANALYTICS_TOKEN}"))).await.expect("dashboard by link");
    wait_for_dashboard_total(b, 1).await;

    // No log line of any service holds a token used here.
    let tokens: Vec<&str> = ["/prospects/confirm/", "/prospects/manage/"]
        .iter()
        .map(|prefix| mail.link(prefix).expect("link").rsplit('/').next().expect("token"))
        .chain([ANALYTICS_TOKEN])
        .collect();
    e2e_tests::logs::assert_free_of(&e2e_tests::logs::captured(), &tokens, "the in-process services' logs");
    e2e_tests::logs::assert_free_of(&e2e_tests::processes::logs(), &tokens, "analytics-indexer's logs");

    site.stop().await;
}

/// Whether the first and last name fields share a row (their tops line up).
async fn names_side_by_side(b: &Browser) -> bool {
    let first = b.labelled("First name").await.expect("first name").rectangle().await.expect("box");
    let last = b.labelled("Last name").await.expect("last name").rectangle().await.expect("box");
    (first.1 - last.1).abs() < 1.0
}

/// After signing in: waits for the dashboard itself (a reload before the
/// sign-in's answer arrived would cancel it), then reloads it until it
/// counts `total` prospects.
async fn wait_for_dashboard_total(b: &Browser, total: u64) {
    eventually(Duration::from_secs(20), "the dashboard after signing in", || async {
        b.client().find(Locator::Id("total")).await.ok()
    })
    .await
    .expect("the dashboard");
    eventually(Duration::from_secs(20), "the dashboard to count the sign-up", || async {
        dashboard_total_is(b, total).await
    })
    .await
    .expect("counted");
}

/// Reloads the dashboard; `Some` once its total is `total`.
async fn dashboard_total_is(b: &Browser, total: u64) -> Option<()> {
    b.client().refresh().await.ok()?;
    let shown = b.client().find(Locator::Id("total")).await.ok()?.attr("data-total").await.ok()??;
    (shown == total.to_string()).then_some(())
}

/// Waits until the thank-you page's script shows the sign-up as confirmed
/// (it then hides the refresh link); returns the status text.
async fn wait_until_confirmed(b: &Browser) -> String {
    let text = eventually(Duration::from_secs(20), "the thank-you page to say confirmed", || async {
        let status = b.client().find(Locator::Id("status")).await.ok()?;
        let confirmed = status.attr("data-status").await.ok()?.as_deref() == Some("confirmed");
        if confirmed { status.text().await.ok() } else { None }
    })
    .await
    .expect("confirmed");
    if let Ok(refresh) = b.client().find(Locator::Id("refresh")).await {
        assert!(!refresh.is_displayed().await.expect("shown?"), "no refresh link once confirmed");
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_email_is_shown_beside_its_field_and_the_other_answers_are_kept() {
    let site = Site::start().await;
    let b = &site.browser;
    b.open(&site.web("/signup")).await.expect("form");
    let visitor = Visitor { email: "ada.example.com", ..Visitor::ADA };
    visitor.fill_in(b).await;
    b.press("Sign up").await.expect("submit");
    eventually(Duration::from_secs(10), "the form to come back with its errors", || async {
        b.client().find(Locator::Css("[role=alert]")).await.ok()
    })
    .await
    .expect("the form again");
    assert_eq!(b.path().await.expect("path"), "/signup");
    b.assert_console_only_reports_status("the form with an error", 422).await.expect("console");

    // The error sits in the e-mail field's own box, right under it, and the
    // field points at it for screen readers.
    let email = b.labelled("E-mail").await.expect("e-mail field");
    assert_eq!(email.attr("aria-invalid").await.expect("attr").as_deref(), Some("true"));
    let described_by = email.attr("aria-describedby").await.expect("attr").expect("aria-describedby");
    let error = b.client().find(Locator::Id(&described_by)).await.expect("the error");
    let text = error.text().await.expect("error text");
    assert!(text.starts_with("E-mail") && text.len() > "E-mail".len(), "the error names the field: {text:?}");
    let field_box = email.rectangle().await.expect("box");
    let error_box = error.rectangle().await.expect("box");
    assert!((field_box.0 - error_box.0).abs() < 1.0, "the error lines up with its field");
    let gap = error_box.1 - (field_box.1 + field_box.3);
    assert!((0.0..24.0).contains(&gap), "the error is right under its field ({gap}px)");
    let errors = b.client().find_all(Locator::Css("p.error")).await.expect("errors");
    assert_eq!(errors.len(), 1, "only the e-mail is wrong");

    // Everything else is as the visitor typed it.
    assert_eq!(b.value("First name").await.expect("value"), visitor.first_name);
    assert_eq!(b.value("Last name").await.expect("value"), visitor.last_name);
    assert_eq!(b.value("E-mail").await.expect("value"), visitor.email);
    assert_eq!(b.value("Company").await.expect("value"), visitor.company);
    assert_eq!(b.value("Country").await.expect("value"), visitor.country.0);
    assert_eq!(b.value("Role").await.expect("value"), visitor.role.0);
    b.screenshot("5-signup-form-with-error").await.expect("screenshot");

    // Corrected, it goes through.
    b.fill("E-mail", "ada@example.com").await.expect("e-mail");
    b.press("Sign up").await.expect("submit");
    b.wait_for_heading(THANKS).await.expect("thank-you page");
    b.assert_clean_console("the thank-you page").await.expect("console");
    let id: Uuid = b.text("main code").await.expect("reference").parse().expect("id");
    assert_eq!(site.system.saved(id).await.expect("row").email.as_deref(), Some("ada@example.com"));
    assert_eq!(site.system.prospect_count().await.expect("count"), 1, "the refused attempt saved nothing");

    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manage_page_changes_then_erases_and_postgres_agrees() {
    let site = Site::start().await;
    let b = &site.browser;
    let id = site.sign_up(&Visitor::ADA).await;
    site.system.saved(id).await.expect("saved");

    let mail = site.mail(Visitor::ADA.email, 1).await;
    b.open(&site.web(mail.link("/prospects/manage/").expect("manage link"))).await.expect("manage link");
    b.wait_for_heading("Your sign-up").await.expect("manage page");
    b.assert_clean_console("the manage page").await.expect("console");
    let manage = b.path().await.expect("path");
    assert_eq!(b.value("Company").await.expect("value"), "Analytical Engines");

    b.fill("Company", "Difference Engines Ltd").await.expect("company");
    b.press("Save changes").await.expect("save");
    eventually(Duration::from_secs(10), "the change to be confirmed", || async {
        b.text("[role=status]").await.ok().filter(|text| text.contains("Your changes were received"))
    })
    .await
    .expect("notice");
    b.assert_clean_console("the manage page after a change").await.expect("console");
    eventually(Duration::from_secs(20), "Postgres to hold the new company", || async {
        let row = site.system.prospect(id).await.ok()??;
        (row.company_name.as_deref() == Some("Difference Engines Ltd")).then_some(())
    })
    .await
    .expect("updated row");
    // Opened again, the page shows what Postgres holds.
    b.open(&site.web(&manage)).await.expect("manage page again");
    let row = site.system.prospect(id).await.expect("row").expect("a row");
    assert_eq!(b.value("Company").await.expect("value"), row.company_name.clone().expect("company"));
    assert_eq!(b.value("E-mail").await.expect("value"), row.email.clone().expect("e-mail"));
    assert_eq!(b.value("Country").await.expect("value"), row.country_code.clone().expect("country"));

    b.press("Erase my details").await.expect("erase");
    b.wait_for_heading("Your details are being erased").await.expect("confirmation");
    b.assert_clean_console("the erase confirmation").await.expect("console");
    let erased = eventually(Duration::from_secs(20), "Postgres to erase the row", || async {
        site.system.prospect(id).await.ok()?.filter(|row| row.deleted_at.is_some())
    })
    .await
    .expect("erased row");
    assert_eq!(
        (erased.first_name, erased.last_name, erased.email, erased.company_name),
        (None, None, None, None),
        "personal data is gone"
    );
    // And the manage page no longer shows anything.
    b.open(&site.web(&manage)).await.expect("manage page after erasure");
    b.wait_for_heading("Page not found").await.expect("nothing there");
    b.assert_console_only_reports_status("the manage link after erasure", 404).await.expect("console");
    assert!(b.client().find_all(Locator::Css("input")).await.expect("inputs").is_empty());

    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_works_with_the_keyboard_alone() {
    let site = Site::start().await;
    let b = &site.browser;

    b.open(&site.web("/")).await.expect("home");
    assert_keyboard_reaches_everything(b, "the home page").await;
    b.assert_clean_console("the home page").await.expect("console");

    // Sign up without a mouse: Tab to each field, type, Enter on the button.
    b.open(&site.web("/signup")).await.expect("form");
    let order = assert_keyboard_reaches_everything(b, "the sign-up form").await;
    let labels: Vec<&str> = order.iter().map(|c| c.label.as_str()).collect();
    let first = labels.iter().position(|l| *l == "First name").expect("first name in the tab order");
    assert_eq!(
        labels[first..],
        ["First name", "Last name", "E-mail", "Company (optional)", "Country", "Role", "Sign up"],
        "the fields come in reading order"
    );
    b.open(&site.web("/signup")).await.expect("form again");
    for _ in 0..=first {
        b.tab().await.expect("tab");
    }
    let enter = char::from(Key::Enter).to_string();
    let tab = char::from(Key::Tab).to_string();
    for (label, keys) in [
        ("First name", "Grace"),
        ("Last name", "Hopper"),
        ("E-mail", "grace@example.com"),
        ("Company (optional)", "Navy"),
        ("Country", "Canada"),
        ("Role", "Researcher"),
    ] {
        let focused = b.focused().await.expect("focus").expect("a focused control");
        assert_eq!(focused.label, label, "Tab moved to {}", focused.describe);
        b.keys(keys).await.expect("type");
        b.keys(&tab).await.expect("tab");
    }
    assert_eq!(b.focused().await.expect("focus").expect("the button").label, "Sign up");
    b.keys(&enter).await.expect("enter");
    b.wait_for_heading(THANKS).await.expect("thank-you page");
    let id: Uuid = b.text("main code").await.expect("reference").parse().expect("id");
    let row = site.system.saved(id).await.expect("row");
    assert_eq!(
        (row.first_name.as_deref(), row.country_code.as_deref(), row.role_code.as_deref()),
        (Some("Grace"), Some("CA"), Some("RS")),
        "typed and chosen with the keyboard"
    );
    assert_keyboard_reaches_everything(b, "the thank-you page").await;
    b.assert_clean_console("the thank-you page").await.expect("console");

    let mail = site.mail("grace@example.com", 1).await;
    b.open(&site.web(mail.link("/prospects/manage/").expect("manage link"))).await.expect("manage link");
    b.wait_for_heading("Your sign-up").await.expect("manage page");
    assert_keyboard_reaches_everything(b, "the manage page").await;
    b.assert_clean_console("the manage page").await.expect("console");

    // Confirmed with the keyboard: Tab to the button, Enter.
    b.open(&site.web(mail.link("/prospects/confirm/").expect("confirmation link"))).await.expect("link");
    b.wait_for_heading("Confirm your sign-up").await.expect("confirmation page");
    let order = assert_keyboard_reaches_everything(b, "the confirmation page").await;
    let button = order.iter().position(|c| c.label == "Confirm my sign-up").expect("the button in the tab order");
    for _ in 0..=button {
        b.tab().await.expect("tab");
    }
    b.keys(&enter).await.expect("enter");
    b.wait_for_heading("Your sign-up is confirmed").await.expect("confirmed");
    assert_keyboard_reaches_everything(b, "the confirmed page").await;
    b.open(&site.web("/prospects/new-link")).await.expect("lost link page");
    assert_keyboard_reaches_everything(b, "the lost-link page").await;
    b.assert_clean_console("the lost-link page").await.expect("console");

    b.open(&site.analytics("/analytics")).await.expect("login");
    b.wait_for_heading("Sign in").await.expect("login page");
    assert_keyboard_reaches_everything(b, "the analytics login page").await;
    b.assert_console_only_reports_status("the analytics login page", 401).await.expect("console");
    b.fill("Access token", ANALYTICS_TOKEN).await.expect("token");
    b.keys(&enter).await.expect("enter");
    wait_for_dashboard_total(b, 1).await;
    assert_keyboard_reaches_everything(b, "the analytics dashboard").await;
    b.assert_clean_console("the analytics dashboard").await.expect("console");

    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_javascript_a_visitor_signs_up_after_taking_a_few_seconds() {
    let site = Site::start_with(Browser::start_without_javascript(&screenshots()).await.expect("Chromium")).await;
    let b = &site.browser;
    b.open(&site.web("/signup")).await.expect("form");
    let opened = tokio::time::Instant::now();
    // The page says what the visitor needs to do instead.
    let note = b.text("noscript p").await.expect("the page explains it");
    assert!(note.contains("Your browser runs no JavaScript") && note.contains("at least 1 seconds"), "{note}");
    b.screenshot("8-signup-without-javascript").await.expect("screenshot");
    let visitor = Visitor { email: "no.script@example.com", ..Visitor::ADA };
    visitor.fill_in(b).await;
    // A person takes this long anyway; the form asks for it (min_fill_secs).
    tokio::time::sleep_until(opened + Duration::from_secs(1)).await;
    b.press("Sign up").await.expect("submit");
    b.wait_for_heading(THANKS).await.expect("thank-you page");
    let id: Uuid = b.text("main code").await.expect("reference").parse().expect("the prospect id");
    let row = site.system.saved(id).await.expect("saved");
    assert_eq!(row.email.as_deref(), Some(visitor.email));
    assert!(site.passed_bot_check("form").await, "the sign-up passed with the form's token");
    let mail = site.mail(visitor.email, 1).await;
    assert_eq!(mail.subject, "Please confirm your sign-up");
    site.stop().await;
}
