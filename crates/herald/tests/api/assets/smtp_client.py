"""Python's smtplib as a third-party SMTP client for Herald's ingress tests.

Runs one session described by the JSON in argv[1] and prints, as JSON, every
reply the server gave, so that the Rust test asserts on them:

  {"port": 2525,                       # on 127.0.0.1
   "ca": "/path/ca.pem",               # STARTTLS, verifying with this CA (optional)
   "implicit_tls": true,               # TLS from the start, with "ca" (optional)
   "auth": ["PLAIN", "user", "pw"],    # AUTH with this mechanism (optional)
   "messages": [{"from": "a@x", "to": ["b@x"], "options": ["SMTPUTF8"],
                 "file": "/path/message.eml"}]}   # or "text": "..."

Output: {"features": [...], "tls_features": [...], "auth": [code, text],
         "messages": [{"mail": [code, text], "rcpt": [[code, text], ...],
                       "data": [code, text]}]}
A reply that does not come (the server closed the connection) is null.
"""

import json
import smtplib
import ssl
import sys


def reply(code, text):
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return [code, text]


def main():
    spec = json.loads(sys.argv[1])
    out = {"messages": []}
    if spec.get("implicit_tls"):
        context = ssl.create_default_context(cafile=spec["ca"])
        smtp = smtplib.SMTP_SSL("127.0.0.1", spec["port"], local_hostname="client.test",
                                timeout=120, context=context)
    else:
        smtp = smtplib.SMTP("127.0.0.1", spec["port"], local_hostname="client.test", timeout=120)
    smtp.ehlo()
    out["features"] = sorted(smtp.esmtp_features)
    if "ca" in spec and not spec.get("implicit_tls"):
        smtp.starttls(context=ssl.create_default_context(cafile=spec["ca"]))
        smtp.ehlo()
        out["tls_features"] = sorted(smtp.esmtp_features)
    if "auth" in spec:
        mechanism, smtp.user, smtp.password = spec["auth"]
        answer = {"PLAIN": smtp.auth_plain, "LOGIN": smtp.auth_login}[mechanism]
        try:
            out["auth"] = reply(*smtp.auth(mechanism, answer, initial_response_ok=True))
        except smtplib.SMTPAuthenticationError as e:
            out["auth"] = reply(e.smtp_code, e.smtp_error)
    for message in spec.get("messages", []):
        outcome = {"rcpt": []}
        out["messages"].append(outcome)
        try:
            outcome["mail"] = reply(*smtp.mail(message["from"], message.get("options", [])))
            if outcome["mail"][0] != 250:
                smtp.rset()
                continue
            for to in message["to"]:
                outcome["rcpt"].append(reply(*smtp.rcpt(to)))
            if not any(code == 250 for code, _ in outcome["rcpt"]):
                smtp.rset()
                continue
            if "file" in message:
                with open(message["file"], "rb") as f:
                    data = f.read()
            else:
                data = message["text"].encode("utf-8")
            try:
                outcome["data"] = reply(*smtp.data(data))
            except smtplib.SMTPDataError as e:
                outcome["data"] = reply(e.smtp_code, e.smtp_error)
        except smtplib.SMTPServerDisconnected:
            break
    try:
        smtp.quit()
    except smtplib.SMTPServerDisconnected:
        pass
    print(json.dumps(out))


main()
