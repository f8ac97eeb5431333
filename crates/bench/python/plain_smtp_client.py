"""The mail phase's reference: a plain SMTP client, Python's smtplib, with
CONNECTIONS connections to the server at PORT, each sending its share of the
mails in FOLDER one after another (each file a raw mail, named after its
recipient). Prints the seconds from the first connection to the last mail
taken.

Usage: plain_smtp_client.py PORT CONNECTIONS FOLDER
"""

import os
import smtplib
import sys
import threading
import time


def main():
    port, connections, folder = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    names = sorted(os.listdir(folder))
    mails = []
    for name in names:
        with open(os.path.join(folder, name), "rb") as f:
            mails.append((name.removesuffix(".eml"), f.read()))
    shares = [mails[i::connections] for i in range(connections)]
    failures = []

    def send(share):
        try:
            with smtplib.SMTP("127.0.0.1", port) as client:
                for recipient, raw in share:
                    client.sendmail("signup@localhost", [recipient], raw)
        except Exception as error:  # reported below, the run fails
            failures.append(error)

    start = time.monotonic()
    threads = [threading.Thread(target=send, args=(share,)) for share in shares]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    took = time.monotonic() - start
    if failures:
        sys.exit(f"{len(failures)} connections failed: {failures[0]}")
    print(f"{took:.6f}")


main()
