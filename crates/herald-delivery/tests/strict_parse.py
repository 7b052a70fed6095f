"""Parses rendered messages with Python's email package under policy.strict.

Usage: strict_parse.py DIR. DIR holds NAME.eml (a rendered message) and
NAME.json (what its headers must decode to). Every defect the parser finds in
the message, its parts or any header field is reported, and so is every
decoded value that differs from the expected one. Exits 1 when anything was
reported, so the Rust test that runs this script fails.
"""

import email
import email.policy
import json
import pathlib
import re
import sys

# Encoded words with only whitespace between them (after unfolding).
ADJACENT_WORDS = re.compile(r"\?=[ \t]+=\?")


def without_whitespace(mailboxes):
    return [
        {"name": m["name"] and "".join(m["name"].split()), "address": m["address"]}
        for m in mailboxes
    ]


ADDRESS_FIELDS = {"from": "From", "sender": "Sender", "to": "To", "cc": "Cc", "reply_to": "Reply-To"}


def raw_header(message, name):
    """The field's source text as it was in the message, folds removed."""
    return ["".join(str(value).splitlines()) for key, value in message.raw_items() if key.lower() == name.lower()]


def check(path, expected):
    problems = []
    raw = path.read_bytes()
    policy = email.policy.strict
    try:
        if expected["international"]:
            # RFC 6532: the header section is UTF-8; the parser reads str.
            message = email.message_from_string(raw.decode("utf-8"), policy=policy)
        else:
            message = email.message_from_bytes(raw, policy=policy)
    except Exception as error:  # policy.strict raises on message defects
        return [f"parse failed: {error!r}"]

    for part in message.walk():
        problems += [f"message defect: {defect!r}" for defect in part.defects]
        for name, value in part.items():
            for defect in value.defects:
                # RFC 6532 allows UTF-8 local parts; Python flags them always.
                if expected["international"] and type(defect).__name__ == "NonASCIILocalPartDefect":
                    continue
                problems.append(f"{name}: defect {defect!r} in {value!r}")

    for key, field in ADDRESS_FIELDS.items():
        want = expected.get(key, [])
        header = message[field]
        got = []
        if header is not None:
            got = [{"name": a.display_name or None, "address": a.addr_spec} for a in header.addresses]
        if got != want:
            # Python before gh-128110 (fixed in 3.14) keeps the whitespace
            # between adjacent encoded words of a display name, which RFC 2047
            # 6.2 says to drop; a name that needs several words then decodes
            # with extra spaces. mail-parser checks those names exactly.
            raw = " ".join(raw_header(message, field))
            if ADJACENT_WORDS.search(raw) and without_whitespace(got) == without_whitespace(want):
                continue
            problems.append(f"{field}: decoded {got!r}, expected {want!r}")

    if str(message["Subject"]) != expected["subject"]:
        problems.append(f"Subject: decoded {str(message['Subject'])!r}, expected {expected['subject']!r}")

    for name, want in expected["headers"]:
        got = [str(value) for value in message.get_all(name, [])]
        if got != [want]:
            problems.append(f"{name}: decoded {got!r}, expected {[want]!r}")

    text = message.get_body(("plain",))
    got = text.get_content() if text is not None else None
    if got is not None:
        got = got.replace("\r\n", "\n")
    if got != expected["text"]:
        problems.append(f"text body: decoded {got!r}, expected {expected['text']!r}")
    return problems


def main():
    directory = pathlib.Path(sys.argv[1])
    failed = False
    for path in sorted(directory.glob("*.eml")):
        expected = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        for problem in check(path, expected):
            failed = True
            print(f"{path.stem}: {problem}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
