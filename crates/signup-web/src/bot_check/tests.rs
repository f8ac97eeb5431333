//! The checks of a proof, CPU only: solved, forged, expired, too soon.

use super::*;

fn check(settings: BotCheckSettings) -> BotCheck {
    let links = links::Links::new(&links::LinkSettings {
        secret: Some(secrecy::SecretString::from("a secret of sufficient length")),
        ..Default::default()
    })
    .expect("links");
    BotCheck::new(&settings, &links)
}

fn settings() -> BotCheckSettings {
    BotCheckSettings { difficulty: 8, iterations: 10, ..BotCheckSettings::default() }
}

#[test]
fn a_solved_challenge_passes_and_names_its_challenge() {
    let check = check(settings());
    let now = Utc::now();
    let challenge = check.challenge(now).expect("challenge");
    let signature = challenge.signature.clone().expect("signed");
    let proof = test_support::bot_check::solve(challenge);
    let ticket = check.check(&Proof { altcha: Some(&proof), ..Proof::default() }, now).expect("passes");
    assert_eq!(ticket.key, format!("altcha.{signature}"));
}

#[test]
fn a_wrong_forged_or_expired_solution_is_refused() {
    let check = check(settings());
    let now = Utc::now();
    let refuse = |payload: &str| check.check(&Proof { altcha: Some(payload), ..Proof::default() }, now);
    assert_eq!(check.check(&Proof::default(), now), Err(Refused::Missing));
    assert_eq!(refuse("not base64!"), Err(Refused::Invalid));
    assert_eq!(refuse("e30="), Err(Refused::Invalid), "{{}}");
    // A wrong derived key.
    let challenge = check.challenge(now).expect("challenge");
    let mut solution =
        altcha::solve_challenge(altcha::SolveChallengeOptions::new(&challenge)).expect("solvable").expect("in time");
    solution.derived_key = "00".repeat(32);
    let wrong = test_support::bot_check::encode(challenge, solution);
    assert_eq!(refuse(&wrong), Err(Refused::Invalid));
    // A challenge of another server (another secret).
    let forged = altcha::create_challenge(altcha::CreateChallengeOptions {
        algorithm: ALGORITHM.into(),
        cost: 10,
        counter: Some(3),
        hmac_signature_secret: Some("not our secret".into()),
        hmac_key_signature_secret: Some("not our key secret".into()),
        ..Default::default()
    })
    .expect("challenge");
    assert_eq!(refuse(&test_support::bot_check::solve(forged)), Err(Refused::Invalid));
    // One of ours, expired.
    let old = check.challenge(now - chrono::Duration::hours(1)).expect("challenge");
    assert_eq!(refuse(&test_support::bot_check::solve(old)), Err(Refused::Expired));
}

#[test]
fn a_form_without_javascript_passes_after_the_fill_time_with_the_honeypot_empty() {
    let check = check(settings());
    let served = Utc::now() - chrono::Duration::seconds(10);
    let token = check.form_token(served);
    let form = |honeypot: Option<&'static str>, at: DateTime<Utc>| {
        check.check(&Proof { form_token: Some(&token), honeypot, altcha: None }, at)
    };
    let ticket = form(Some(""), Utc::now()).expect("passes");
    assert!(ticket.key.starts_with("form."));
    assert_eq!(form(Some("https://spam.example"), Utc::now()), Err(Refused::TooSoon), "a filled honeypot");
    assert_eq!(form(None, served + chrono::Duration::seconds(1)), Err(Refused::TooSoon), "too quick");
    assert_eq!(form(None, served + chrono::Duration::hours(1)), Err(Refused::Expired));
    let (claims, _) = token.rsplit_once('.').expect("parts");
    let forged = format!("{}.{}", claims.replace(&served.timestamp_millis().to_string(), "1"), "AAAA");
    assert_eq!(
        check.check(&Proof { form_token: Some(&forged), ..Proof::default() }, Utc::now()),
        Err(Refused::Invalid)
    );
    // Only where the form may go without JavaScript.
    let strict = self::check(BotCheckSettings { without_javascript: false, ..settings() });
    let token = strict.form_token(served);
    assert_eq!(
        strict.check(&Proof { form_token: Some(&token), ..Proof::default() }, Utc::now()),
        Err(Refused::Missing)
    );
}
