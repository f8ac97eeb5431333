//! The transport against a real SMTP server (the tests' aiosmtpd).

use std::time::Duration;

use lettre::Message;
use smtp::{SmtpSettings, SmtpTls};
use test_support::{SmtpServer, eventually};

fn mail(to: &str) -> Message {
    let settings = SmtpSettings::default();
    let sender =
        smtp::Sender::new("Signup <signup@localhost>".parse().expect("from"), &settings, "test.smtp").expect("sender");
    sender.seal(sender.message().to(to.parse().expect("to")).subject("Hello").body("Hello".to_owned()).expect("mail"))
}

/// A server that went away and came back (a restart, or one that closes a
/// connection after so many mails) has closed the connections the pool
/// keeps: the next mail goes over a new one instead of failing as if the
/// server were still away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_server_closed_is_not_used_for_the_next_mail() {
    let mut server = SmtpServer::start().await.expect("smtp server");
    let port = server.port();
    let settings = SmtpSettings { port, tls: SmtpTls::None, ..SmtpSettings::default() };
    let transport = smtp::transport(&settings, "test.smtp").expect("transport");
    transport.send(&mail("first@example.com")).await.expect("the first mail");
    server.stop().await.expect("stopped");
    let server = SmtpServer::start_on(port).await.expect("the server again");
    transport.send(&mail("second@example.com")).await.expect("the second mail, over a new connection");
    eventually(Duration::from_secs(10), "the second mail", || async {
        (server.messages_to("second@example.com").len() == 1).then_some(())
    })
    .await
    .expect("kept");
}

/// A relay that takes mail without logging in: compose passes the user and
/// password through as empty values when deploy/.env leaves them empty,
/// and empty means none (a login with nothing would be refused: the server
/// offers no AUTH).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_user_and_password_mean_no_login() {
    let server = SmtpServer::start().await.expect("smtp server");
    let settings = SmtpSettings {
        port: server.port(),
        tls: SmtpTls::None,
        user: Some(String::new()),
        password: Some(String::new().into()),
        ..SmtpSettings::default()
    };
    let transport = smtp::transport(&settings, "test.smtp").expect("transport");
    transport.send(&mail("nologin@example.com")).await.expect("sent without logging in");
    eventually(Duration::from_secs(10), "the mail", || async {
        (server.messages_to("nologin@example.com").len() == 1).then_some(())
    })
    .await
    .expect("taken");
    // Only one of them given (the other missing or empty) is still a
    // mistake, said at once: never a mail sent without the login meant.
    for password in [None, Some(String::new().into())] {
        let half = SmtpSettings { password, user: Some("someone".into()), ..settings.clone() };
        let Err(refused) = smtp::transport(&half, "test.smtp") else { panic!("refused") };
        assert!(refused.to_string().contains("test.smtp.user and test.smtp.password go together"), "{refused}");
    }
}
