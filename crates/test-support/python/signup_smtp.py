"""The SMTP server of Signup's tests: aiosmtpd's Mailbox handler (each mail
lands in a maildir, byte for byte as it was sent), which also answers some
recipients the way real servers refuse mail, so that tests can see what the
mailer does then:

- ``refused...@`` gets ``550 5.1.1`` (no such mailbox: permanent);
- ``later-N...@`` gets ``451 4.3.0`` (try again later: transient) on its
  first N tries, then is accepted.

Both answers quote the recipient's address, as Postfix's do, so that tests
can check that no log line, span or dead letter repeats it.

``SIGNUP_SMTP_DELAY_MS`` makes it a slow relay: each mail is kept at once
and answered that many milliseconds later. It writes the most transactions it
ever held at once (data received, not yet answered) to ``<maildir>.peak``,
so a test can see whether a client sends several mails at a time, and how
many mails it kept to ``<maildir>.count`` (cheaper to poll than the maildir).

Run as ``python -m aiosmtpd -n -c signup_smtp.Maildir <maildir> ...`` with
this folder on PYTHONPATH.
"""

import asyncio
import os
import re

from aiosmtpd.handlers import Mailbox

LATER = re.compile(r"^later-(\d+)")


class Maildir(Mailbox):
    def __init__(self, mail_dir):
        super().__init__(mail_dir)
        self.tries = {}
        self.delay = int(os.environ.get("SIGNUP_SMTP_DELAY_MS", "0")) / 1000
        self.peak_file = mail_dir.rstrip("/") + ".peak"
        self.count_file = mail_dir.rstrip("/") + ".count"
        self.active = 0
        self.peak = 0
        self.received = 0

    async def handle_DATA(self, server, session, envelope):
        self.active += 1
        if self.active > self.peak:
            self.peak = self.active
            with open(self.peak_file, "w") as f:
                f.write(str(self.peak))
        try:
            # The mail exactly as it came over the wire: Mailbox would parse
            # it and write it out again, which changes bytes a DKIM signature
            # covers. Kept before the answer, as a real server queues it: a
            # client gone meanwhile has still delivered it.
            self.mailbox.add(envelope.original_content)
            self.received += 1
            with open(self.count_file, "w") as f:
                f.write(str(self.received))
            if self.delay:
                await asyncio.sleep(self.delay)
        finally:
            self.active -= 1
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
