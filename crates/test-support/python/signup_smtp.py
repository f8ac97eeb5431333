"""The SMTP server of Signup's tests: aiosmtpd's Mailbox handler (each mail
lands in a maildir, byte for byte as it was sent), which also answers some
recipients the way real servers refuse mail, so that tests can see what the
mailer does then:

- ``refused...@`` gets ``550 5.1.1`` (no such mailbox: permanent);
- ``later-N...@`` gets ``451 4.3.0`` (try again later: transient) on its
  first N tries, then is accepted.

Both answers quote the recipient's address, as Postfix's do, so that tests
can check that no log line, span or dead letter repeats it.

Run as ``python -m aiosmtpd -n -c signup_smtp.Maildir <maildir> ...`` with
this folder on PYTHONPATH.
"""

import re

from aiosmtpd.handlers import Mailbox

LATER = re.compile(r"^later-(\d+)")


class Maildir(Mailbox):
    def __init__(self, mail_dir):
        super().__init__(mail_dir)
        self.tries = {}

    async def handle_DATA(self, server, session, envelope):
        # The mail exactly as it came over the wire: Mailbox would parse it
        # and write it out again, which changes bytes a DKIM signature covers.
        self.mailbox.add(envelope.original_content)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@", 1)[0].lower()
        if local.startswith("refused"):
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown in virtual mailbox table"
        later = LATER.match(local)
        if later:
            self.tries[address] = self.tries.get(address, 0) + 1
            if self.tries[address] <= int(later.group(1)):
                return f"451 4.3.0 <{address}>: Recipient address rejected: Mailbox busy, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"
