//! The dashboard page: server-rendered HTML with inline SVG charts, no
//! scripts, no external resources.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::ContentType;
use askama::Template;

use crate::query::{Group, SearchPage, Summary};

const CHART_WIDTH: u32 = 600;
const CHART_HEIGHT: u32 = 160;
const ROW_HEIGHT: u32 = 24;
const LABEL_WIDTH: u32 = 200;
const BAR_SPACE: u32 = 340;
const TOP_GROUPS: usize = 12;

/// The filter values to show in the dashboard's form.
pub struct FilterView {
    /// `q`
    pub q: String,
    /// `country`
    pub country: String,
    /// `role`
    pub role: String,
    /// `from`
    pub from: String,
    /// `to`
    pub to: String,
}

/// One day's bar in the per-day chart.
struct DayBar {
    x: u32,
    y: u32,
    width: u32,
    height: u32,
    date: String,
    count: u64,
}

/// One row of a horizontal bar chart.
struct GroupBar {
    x: u32,
    y: u32,
    text_y: u32,
    width: u32,
    count_x: u32,
    code: String,
    name: String,
    count: u64,
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardPage<'a> {
    filter: &'a FilterView,
    total: u64,
    confirmed: u64,
    unconfirmed: u64,
    before_consent_records: u64,
    chart_width: u32,
    chart_height: u32,
    days: Vec<DayBar>,
    first_day: &'a str,
    last_day: &'a str,
    countries: Vec<GroupBar>,
    countries_height: u32,
    roles: Vec<GroupBar>,
    roles_height: u32,
    country_options: &'a [Group],
    role_options: &'a [Group],
    results: &'a SearchPage,
    previous_page: Option<String>,
    next_page: Option<String>,
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    message: &'a str,
}

fn day_bars(summary: &Summary) -> Vec<DayBar> {
    let n = u32::try_from(summary.by_day.len()).unwrap_or(u32::MAX).max(1);
    let max = summary.by_day.iter().map(|d| d.count).max().unwrap_or(0).max(1);
    // A few days must not turn into a few slabs: at most 60 units a day.
    let slot = (CHART_WIDTH / n).clamp(1, 60);
    summary
        .by_day
        .iter()
        .enumerate()
        .map(|(i, day)| {
            let height = u32::try_from(day.count * u64::from(CHART_HEIGHT - 20) / max).unwrap_or(0);
            DayBar {
                x: u32::try_from(i).unwrap_or(0) * slot,
                y: CHART_HEIGHT - height,
                width: slot.saturating_sub(1).max(1),
                height,
                date: day.date.clone(),
                count: day.count,
            }
        })
        .collect()
}

fn group_bars(groups: &[Group]) -> Vec<GroupBar> {
    let max = groups.iter().map(|g| g.count).max().unwrap_or(0).max(1);
    groups
        .iter()
        .take(TOP_GROUPS)
        .enumerate()
        .map(|(i, group)| {
            let width = u32::try_from(group.count * u64::from(BAR_SPACE) / max).unwrap_or(0).max(1);
            let y = u32::try_from(i).unwrap_or(0) * ROW_HEIGHT;
            GroupBar {
                x: LABEL_WIDTH,
                y: y + 4,
                text_y: y + 17,
                width,
                count_x: LABEL_WIDTH + width + 6,
                code: group.code.clone(),
                name: group.name.clone(),
                count: group.count,
            }
        })
        .collect()
}

fn page_link(filter: &FilterView, page: usize) -> String {
    let query = serde_urlencoded::to_string([
        ("q", filter.q.as_str()),
        ("country", filter.country.as_str()),
        ("role", filter.role.as_str()),
        ("from", filter.from.as_str()),
        ("to", filter.to.as_str()),
        ("page", &page.to_string()),
    ])
    .unwrap_or_default();
    format!("/analytics?{query}")
}

/// Renders the dashboard.
pub fn render(filter: &FilterView, summary: &Summary, results: &SearchPage) -> HttpResponse {
    let countries = group_bars(&summary.by_country);
    let roles = group_bars(&summary.by_role);
    let pages = results.total.div_ceil(results.page_size).max(1);
    let page = DashboardPage {
        filter,
        total: summary.total,
        confirmed: summary.confirmed,
        unconfirmed: summary.unconfirmed,
        before_consent_records: summary.before_consent_records,
        chart_width: CHART_WIDTH,
        chart_height: CHART_HEIGHT,
        days: day_bars(summary),
        first_day: summary.by_day.first().map_or("", |d| d.date.as_str()),
        last_day: summary.by_day.last().map_or("", |d| d.date.as_str()),
        countries_height: u32::try_from(countries.len()).unwrap_or(0).max(1) * ROW_HEIGHT,
        countries,
        roles_height: u32::try_from(roles.len()).unwrap_or(0).max(1) * ROW_HEIGHT,
        roles,
        country_options: &summary.by_country,
        role_options: &summary.by_role,
        results,
        previous_page: (results.page > 1).then(|| page_link(filter, results.page - 1)),
        next_page: (results.page < pages).then(|| page_link(filter, results.page + 1)),
    };
    html(StatusCode::OK, &page)
}

/// A page that only says what went wrong.
pub fn error_page(status: StatusCode, message: &str) -> HttpResponse {
    html(status, &ErrorPage { message })
}

/// Renders a page with a status (500 if the template fails).
pub(crate) fn html(status: StatusCode, page: &impl Template) -> HttpResponse {
    match page.render() {
        Ok(body) => HttpResponse::build(status).content_type(ContentType::html()).body(body),
        Err(error) => {
            tracing::error!(%error, "template rendering failed");
            HttpResponse::InternalServerError().finish()
        }
    }
}
