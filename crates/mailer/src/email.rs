//! An e-mail of each kind, written with the project's compile-time
//! templates (askama), each as a plain-text and an HTML part. Which event
//! sends which is the handler's ([`crate::handler`]).

use askama::Template;
use lettre::Message;
use lettre::message::{Mailbox, MultiPart};

/// What a mail is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A new sign-up: "confirm your sign-up", with its confirmation and
    /// manage links.
    Confirm,
    /// A sign-up with an address another prospect holds: "someone signed up
    /// with your address; if it was you, confirm these details".
    Claim,
    /// A requested e-mail change, to the new address: "confirm this address".
    NewAddress,
    /// The same request, to the address in use: "your address is being
    /// changed".
    AddressChanging,
    /// A new manage link, asked for on the "lost your link?" page.
    ManageLink,
}

impl Kind {
    /// The name used in metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Confirm => "confirm",
            Kind::Claim => "claim",
            Kind::NewAddress => "new-address",
            Kind::AddressChanging => "address-changing",
            Kind::ManageLink => "manage-link",
        }
    }

    /// Whether it is about a sign-up (or an address typed into a change)
    /// that anyone could have made: what a suppressed address no longer
    /// gets, nor any other mail to it while nobody has confirmed it. The
    /// notice to an address in use and a manage link to a confirmed holder
    /// go to a prospect's own address, at its owner's request or to its
    /// holder.
    pub fn about_a_sign_up(self) -> bool {
        matches!(self, Kind::Confirm | Kind::Claim | Kind::NewAddress)
    }

    fn subject(self) -> &'static str {
        match self {
            Kind::Confirm => "Please confirm your sign-up",
            Kind::Claim => "Someone signed up with your address",
            Kind::NewAddress => "Please confirm your new address",
            Kind::AddressChanging => "Your sign-up's address is being changed",
            Kind::ManageLink => "Your link to change or erase your details",
        }
    }
}

/// One mail, before it is written out. It holds nothing a visitor typed but
/// the address it goes to (and, to the address in use, the one a change
/// asks for): a mail to an address that has not confirmed must not carry
/// text a stranger chose (a name reading "your account is locked, visit …").
/// The details are shown behind the mail's link.
#[derive(Debug, Clone)]
pub struct Email {
    /// What it is for.
    pub kind: Kind,
    /// The recipient's address.
    pub to: String,
    /// The link that confirms (a sign-up or a new address).
    pub confirm_url: Option<String>,
    /// The link to the manage page.
    pub manage_url: Option<String>,
    /// "It wasn't me": erases the sign-up and stops the mail about sign-ups
    /// to this address.
    pub not_me_url: Option<String>,
    /// For [`Kind::AddressChanging`]: the address asked for.
    pub new_email: Option<String>,
    /// How long a confirmation link works, in days.
    pub confirm_days: i64,
    /// How long a manage link works, in days.
    pub manage_days: i64,
}

#[derive(Template)]
#[template(path = "email.txt")]
struct Text<'a> {
    mail: &'a Email,
}

#[derive(Template)]
#[template(path = "email.html")]
struct Html<'a> {
    mail: &'a Email,
}

impl Email {
    /// The kind's name, for the templates.
    fn kind_name(&self) -> &'static str {
        self.kind.name()
    }

    /// The message `sender` sends, `Message-ID` `<id@…>`:
    /// `multipart/alternative` with the text and the HTML, with the headers
    /// every mail carries (`smtp::Sender`). Fails only for an address the
    /// mail library cannot use.
    pub fn message(&self, sender: &smtp::Sender, id: &str) -> anyhow::Result<Message> {
        let to = Mailbox::new(None, self.to.parse()?);
        let text = Text { mail: self }.render()?;
        let html = Html { mail: self }.render()?;
        let message = sender
            .message_with_id(id)
            .to(to)
            .subject(self.kind.subject())
            .multipart(MultiPart::alternative_plain_html(text, html))?;
        Ok(sender.seal(message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_mail_has_a_text_and_an_html_part_with_its_links() {
        let from: Mailbox = "Signup <signup@example.com>".parse().expect("from");
        let sender = smtp::Sender::new(from, &smtp::SmtpSettings::default(), "test.smtp").expect("sender");
        for kind in [Kind::Confirm, Kind::Claim, Kind::NewAddress, Kind::AddressChanging, Kind::ManageLink] {
            let email = Email {
                kind,
                to: "ada@example.com".into(),
                confirm_url: Some("https://signup.example/prospects/confirm/t1".into()),
                manage_url: Some("https://signup.example/prospects/manage/t2".into()),
                not_me_url: Some("https://signup.example/prospects/not-me/t3".into()),
                new_email: Some("ada@new.example".into()),
                confirm_days: 7,
                manage_days: 30,
            };
            let text = Text { mail: &email }.render().expect("text");
            let html = Html { mail: &email }.render().expect("html");
            for part in [&text, &html] {
                // The new address is not proven yet: its mail opens nothing;
                // nor does a claim's open the stranger's sign-up.
                let manage = part.contains("https://signup.example/prospects/manage/t2");
                assert_eq!(manage, !matches!(kind, Kind::NewAddress | Kind::Claim), "{kind:?}: {part}");
                if matches!(kind, Kind::Confirm | Kind::Claim | Kind::NewAddress) {
                    assert!(part.contains("https://signup.example/prospects/confirm/t1"), "{kind:?}: {part}");
                }
                // "It wasn't me" beside the confirmation of a sign-up.
                let not_me = part.contains("https://signup.example/prospects/not-me/t3");
                assert_eq!(not_me, matches!(kind, Kind::Confirm | Kind::Claim), "{kind:?}: {part}");
            }
            let message = email.message(&sender, "4f2a").expect("message");
            let raw = String::from_utf8(message.formatted()).expect("utf-8");
            assert!(raw.contains("multipart/alternative"), "{raw}");
            assert!(raw.contains("text/plain") && raw.contains("text/html"));
            assert!(raw.contains(&format!("Subject: {}", kind.subject())));
            assert!(raw.contains("To: ada@example.com\r\n"), "no display name a visitor typed: {raw}");
            assert!(raw.contains("Message-ID: <4f2a@example.com>\r\n"), "{raw}");
        }
    }
}
