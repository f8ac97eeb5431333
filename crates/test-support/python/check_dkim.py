"""Verifies the DKIM signature of a raw mail with dkimpy, as a receiver
would, the public key given instead of looked up in DNS.

    python check_dkim.py <raw mail file> <selector> <domain> <public key, base64 DER>

Exits 0 when the signature verifies for <selector>._domainkey.<domain>,
1 otherwise (printing why).
"""

import sys

import dkim


def main():
    path, selector, domain, public_key = sys.argv[1:5]
    record = f"v=DKIM1; k=rsa; p={public_key}".encode()
    wanted = f"{selector}._domainkey.{domain}."

    def dns(name, timeout=5):
        name = name.decode() if isinstance(name, bytes) else name
        return record if name.rstrip(".") + "." == wanted else None

    with open(path, "rb") as f:
        message = f.read()
    verifier = dkim.DKIM(message)
    if verifier.verify(dnsfunc=dns):
        print("dkim: pass")
        return 0
    print("dkim: fail", verifier.signature_fields if hasattr(verifier, "signature_fields") else "")
    return 1


if __name__ == "__main__":
    sys.exit(main())
