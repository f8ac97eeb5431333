//! A real headless Chromium, driven over WebDriver by Debian's
//! `chromedriver`, for the browser tests: find controls by their accessible
//! names as the browser computes them, walk a page with the Tab key, read the
//! console, take screenshots.
//!
//! `scripts/test` installs the `chromium` and `chromium-driver` packages when
//! they are missing; `SIGNUP_CHROMEDRIVER` and `SIGNUP_CHROMIUM` point at other
//! binaries.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use fantoccini::actions::{InputSource as _, KeyAction, KeyActions};
use fantoccini::elements::Element;
use fantoccini::key::Key;
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use test_support::{eventually, free_port};
use tokio::process::{Child, Command};

/// The flags Chromium needs here: no sandbox (tests may run as root), no GPU,
/// and no network traffic of its own (only the pages under test).
const CHROMIUM_FLAGS: [&str; 8] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

/// A desktop window; [`Browser::resize`] makes it a phone.
pub const DESKTOP: (u32, u32) = (1280, 900);
/// A phone-sized window (CSS pixels).
pub const PHONE: (u32, u32) = (390, 844);

fn binary(variable: &str, default: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os(variable).map_or_else(|| PathBuf::from(default), PathBuf::from);
    anyhow::ensure!(
        path.is_file(),
        "{} is missing: install the Debian packages chromium and chromium-driver (scripts/test does), or set {variable}",
        path.display()
    );
    Ok(path)
}

/// A control of the page that can take keyboard focus.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Control {
    /// How the test names it: tag, id or link target.
    pub describe: String,
    /// The accessible name the browser computes (what a screen reader says).
    pub label: String,
    /// The accessible role the browser computes.
    pub role: String,
    /// The WebDriver reference of the element (stable within a page).
    pub reference: String,
}

/// One headless Chromium with its own profile, behind its own chromedriver.
pub struct Browser {
    client: Client,
    driver: Child,
    screenshots: PathBuf,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a free port and a fresh Chromium session at
    /// desktop size; screenshots go to `screenshots`.
    pub async fn start(screenshots: &Path) -> anyhow::Result<Self> {
        Self::start_with(screenshots, true).await
    }

    /// Like [`Browser::start`], with JavaScript turned off: a visitor whose
    /// browser runs no scripts.
    pub async fn start_without_javascript(screenshots: &Path) -> anyhow::Result<Self> {
        Self::start_with(screenshots, false).await
    }

    async fn start_with(screenshots: &Path, javascript: bool) -> anyhow::Result<Self> {
        let chromium = binary("SIGNUP_CHROMIUM", "/usr/bin/chromium")?;
        let chromedriver = binary("SIGNUP_CHROMEDRIVER", "/usr/bin/chromedriver")?;
        let port = free_port()?;
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting chromedriver")?;
        let url = format!("http://127.0.0.1:{port}");
        eventually(Duration::from_secs(20), "chromedriver to answer", || async {
            let status: Value = reqwest::get(format!("{url}/status")).await.ok()?.json().await.ok()?;
            status["value"]["ready"].as_bool().filter(|ready| *ready)
        })
        .await?;
        let profile = tempfile::tempdir()?;
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|flag| (*flag).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        args.push(format!("--window-size={},{}", DESKTOP.0, DESKTOP.1));
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": args,
                // 2: blocked, as a visitor's setting would have it.
                "prefs": { "profile.managed_default_content_settings.javascript": if javascript { 1 } else { 2 } },
            },
            // Console messages and failed loads, for `console_errors`.
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let Value::Object(capabilities) = capabilities else { unreachable!("an object literal") };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&url)
            .await
            .context("starting a Chromium session")?;
        std::fs::create_dir_all(screenshots)?;
        Ok(Self { client, driver, screenshots: screenshots.to_owned(), _profile: profile })
    }

    /// The WebDriver client, for anything not wrapped here.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Opens `url` and waits for it to load.
    pub async fn open(&self, url: &str) -> anyhow::Result<()> {
        self.client.goto(url).await.with_context(|| format!("opening {url}"))
    }

    /// The current page's path and query.
    pub async fn path(&self) -> anyhow::Result<String> {
        let url = self.client.current_url().await?;
        Ok(match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        })
    }

    /// The text of the first element matching `css`.
    pub async fn text(&self, css: &str) -> anyhow::Result<String> {
        Ok(self.client.find(Locator::Css(css)).await.with_context(|| format!("no {css}"))?.text().await?)
    }

    /// Waits until the page's `<h1>` reads `heading` (after a navigation).
    pub async fn wait_for_heading(&self, heading: &str) -> anyhow::Result<()> {
        eventually(Duration::from_secs(10), &format!("a page headed {heading:?}"), || async {
            (self.text("h1").await.ok()?.trim() == heading).then_some(())
        })
        .await
    }

    /// Resizes the window (CSS pixels).
    pub async fn resize(&self, (width, height): (u32, u32)) -> anyhow::Result<()> {
        Ok(self.client.set_window_size(width, height).await?)
    }

    /// Writes a PNG of the window to `<screenshots>/<name>.png`.
    pub async fn screenshot(&self, name: &str) -> anyhow::Result<PathBuf> {
        let path = self.screenshots.join(format!("{name}.png"));
        std::fs::write(&path, self.client.screenshot().await?)?;
        Ok(path)
    }

    /// Every control a keyboard can reach on the page: links, fields, lists
    /// and buttons that are shown and enabled.
    pub async fn controls(&self) -> anyhow::Result<Vec<Control>> {
        let mut controls = Vec::new();
        for element in self.client.find_all(Locator::Css("a[href], input, select, textarea, button")).await? {
            if element.is_displayed().await? && element.is_enabled().await? {
                controls.push(self.describe(&element).await?);
            }
        }
        Ok(controls)
    }

    /// The control labelled `label` (its accessible name, as computed by the
    /// browser, starts with `label`): how a visitor finds a field.
    pub async fn labelled(&self, label: &str) -> anyhow::Result<Element> {
        for element in self.client.find_all(Locator::Css("input, select, textarea, button")).await? {
            if self.computed(&element, "computedlabel").await?.starts_with(label) {
                return Ok(element);
            }
        }
        anyhow::bail!("no control labelled {label:?} on {}", self.path().await?)
    }

    /// Types `value` into the field labelled `label`, replacing what it held.
    pub async fn fill(&self, label: &str, value: &str) -> anyhow::Result<()> {
        let field = self.labelled(label).await?;
        field.clear().await?;
        Ok(field.send_keys(value).await?)
    }

    /// Chooses the option shown as `option` in the list labelled `label`.
    pub async fn choose(&self, label: &str, option: &str) -> anyhow::Result<()> {
        Ok(self.labelled(label).await?.select_by_label(option).await?)
    }

    /// The current value of the field labelled `label`.
    pub async fn value(&self, label: &str) -> anyhow::Result<String> {
        Ok(self.labelled(label).await?.prop("value").await?.unwrap_or_default())
    }

    /// Clicks the button labelled `label`.
    pub async fn press(&self, label: &str) -> anyhow::Result<()> {
        Ok(self.labelled(label).await?.click().await?)
    }

    /// Presses `keys` on the keyboard, one after the other, wherever the focus is.
    pub async fn keys(&self, keys: &str) -> anyhow::Result<()> {
        let mut actions = KeyActions::new("keyboard".to_owned());
        for key in keys.chars() {
            actions = actions.then(KeyAction::Down { value: key }).then(KeyAction::Up { value: key });
        }
        self.client.perform_actions(actions).await?;
        Ok(())
    }

    /// Presses Tab once.
    pub async fn tab(&self) -> anyhow::Result<()> {
        self.keys(&char::from(Key::Tab).to_string()).await
    }

    /// The control that has the keyboard focus, if any.
    pub async fn focused(&self) -> anyhow::Result<Option<Control>> {
        let element = self.client.active_element().await?;
        if matches!(element.tag_name().await?.as_str(), "body" | "html") {
            return Ok(None);
        }
        Ok(Some(self.describe(&element).await?))
    }

    /// Presses Tab from the top of the page until the focus leaves it, and
    /// returns the controls in the order they got the focus.
    pub async fn tab_order(&self) -> anyhow::Result<Vec<Control>> {
        let limit = self.controls().await?.len() * 4 + 4;
        let mut order: Vec<Control> = Vec::new();
        for _ in 0..limit {
            self.tab().await?;
            match self.focused().await? {
                None if !order.is_empty() => return Ok(order),
                None => {}
                // A date field keeps the focus over its day, month and year parts.
                Some(control) if order.last() == Some(&control) => {}
                Some(control) if order.first() == Some(&control) => return Ok(order),
                Some(control) => order.push(control),
            }
        }
        anyhow::bail!("the Tab key did not leave {} after {limit} presses: {order:?}", self.path().await?)
    }

    /// The console's errors (and failed loads) since the last call.
    pub async fn console_errors(&self) -> anyhow::Result<Vec<String>> {
        let entries = self.client.issue_cmd(BrowserLog).await?;
        Ok(entries
            .as_array()
            .into_iter()
            .flatten()
            .filter(|entry| entry["level"] == "SEVERE")
            .map(|entry| entry["message"].as_str().unwrap_or_default().to_owned())
            .collect())
    }

    /// Fails with the console's errors since the last look, if there are any.
    pub async fn assert_clean_console(&self, page: &str) -> anyhow::Result<()> {
        let errors = self.console_errors().await?;
        anyhow::ensure!(errors.is_empty(), "console errors on {page}: {errors:#?}");
        Ok(())
    }

    /// Like [`Browser::assert_clean_console`] for a page answered with an
    /// error status on purpose (422 for a form with errors, 401 for a login
    /// page, 404 for a link that no longer works): Chromium reports that
    /// status as a failed load of the page itself, which is allowed; any
    /// other error is not.
    pub async fn assert_console_only_reports_status(&self, page: &str, status: u16) -> anyhow::Result<()> {
        let url = self.client.current_url().await?;
        let expected =
            format!("{} - Failed to load resource: the server responded with a status of {status}", url.as_str());
        let (reported, others): (Vec<String>, Vec<String>) =
            self.console_errors().await?.into_iter().partition(|error| error.starts_with(&expected));
        anyhow::ensure!(others.is_empty(), "console errors on {page}: {others:#?}");
        anyhow::ensure!(reported.len() == 1, "Chromium did not report the {status} of {page}: {reported:?}");
        Ok(())
    }

    async fn describe(&self, element: &Element) -> anyhow::Result<Control> {
        let tag = element.tag_name().await?;
        let describe = match (element.attr("id").await?, element.attr("href").await?) {
            (Some(id), _) => format!("{tag}#{id}"),
            (None, Some(href)) => format!("{tag}[href={href}]"),
            (None, None) => format!("{tag} {:?}", element.text().await?),
        };
        Ok(Control {
            describe,
            label: self.computed(element, "computedlabel").await?,
            role: self.computed(element, "computedrole").await?,
            reference: element.element_id().to_string(),
        })
    }

    /// WebDriver's "Get Computed Label" / "Get Computed Role" (not wrapped
    /// by fantoccini).
    async fn computed(&self, element: &Element, what: &'static str) -> anyhow::Result<String> {
        let value = self.client.issue_cmd(ElementGet { element: element.element_id().to_string(), what }).await?;
        Ok(value.as_str().unwrap_or_default().trim().to_owned())
    }

    /// Ends the session and stops chromedriver.
    pub async fn close(mut self) -> anyhow::Result<()> {
        self.client.close().await?;
        self.driver.kill().await?;
        Ok(())
    }
}

/// `GET /session/{id}/element/{element}/{what}`.
#[derive(Debug)]
struct ElementGet {
    element: String,
    what: &'static str,
}

impl WebDriverCompatibleCommand for ElementGet {
    fn endpoint(&self, base: &url::Url, session: Option<&str>) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/element/{}/{}", session.unwrap_or_default(), self.element, self.what))
    }

    fn method_and_body(&self, _: &url::Url) -> (reqwest::Method, Option<String>) {
        (reqwest::Method::GET, None)
    }
}

/// chromedriver's `POST /session/{id}/se/log` for the browser's console.
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(&self, base: &url::Url, session: Option<&str>) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (reqwest::Method, Option<String>) {
        (reqwest::Method::POST, Some(json!({ "type": "browser" }).to_string()))
    }
}
