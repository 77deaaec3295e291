"""An SMTP password never crosses the network readable unless the config says it may."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session
from receivers import SmtpReceiver

from monitor.notify.base import NotifyError
from monitor.notify.messages import notify_test_message
from monitor.notify.registry import build_notifier

ROOT = Path(__file__).resolve().parent.parent
MESSAGE = notify_test_message("lab", 1_772_330_400.0, "mail")


class WatchedSmtp(SmtpReceiver):
    """A plain SMTP server (no TLS at all) that records every AUTH attempt it sees."""

    def __init__(self) -> None:
        super().__init__(users={"alice": "pw-secret"})
        self.auth_attempts: list[str] = []

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        self.auth_attempts.append(mechanism)
        return super()._authenticate(server, session, envelope, mechanism, data)


def settings(port: int, **extra: object) -> dict[str, object]:
    return {"host": "127.0.0.1", "port": port, "from": "monitor@example.org",
            "to": "ops@example.org", "username": "alice", "password": "pw-secret", **extra}


def test_validate_refuses_a_password_without_tls(tmp_path: Path) -> None:
    config = tmp_path / "monitor.yaml"
    config.write_text("""\
targets: [{name: a, url: "http://127.0.0.1:9/"}]
notifiers:
  mail:
    type: email
    host: 127.0.0.1
    security: none
    username: alice
    password: pw-secret
    from: monitor@example.org
    to: ops@example.org
""")
    done = subprocess.run([sys.executable, "-m", "monitor", "validate", str(config)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)
    assert done.returncode == 1
    assert done.stdout == (
        f"{config}:8: notifiers.mail.password: would be sent without TLS (security: none); "
        "use security: starttls or tls, or set allow_plaintext_auth: true if the network "
        "path is trusted\n1 error in the configuration\n"
    )
    assert "pw-secret" not in done.stdout + done.stderr
    config.write_text(config.read_text().replace("security: none", "security: none\n"
                                                 "    allow_plaintext_auth: true"))
    done = subprocess.run([sys.executable, "-m", "monitor", "validate", str(config)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)
    assert done.returncode == 0, done.stdout


async def test_plaintext_auth_when_allowed() -> None:
    smtp = await WatchedSmtp().start()
    try:
        notifier = build_notifier(
            "mail", "email", settings(smtp.port, security="none", allow_plaintext_auth=True)
        )
        async with aiohttp.ClientSession() as session:
            await notifier.send(MESSAGE, session)
        (mail,) = await smtp.wait_for(1)
    finally:
        await smtp.close()
    assert (mail.login, mail.tls) == ("alice", False)
    assert smtp.auth_attempts


async def test_starttls_never_falls_back_to_plaintext_auth() -> None:
    smtp = await WatchedSmtp().start()  # offers AUTH but no STARTTLS
    try:
        notifier = build_notifier("mail", "email", settings(smtp.port, security="starttls"))
        async with aiohttp.ClientSession() as session:
            with pytest.raises(NotifyError) as caught:
                await notifier.send(MESSAGE, session)
    finally:
        await smtp.close()
    assert str(caught.value) == (
        "email: SMTPException: SMTP STARTTLS extension not supported by server."
    )
    assert smtp.auth_attempts == []  # the password never left
    assert smtp.mails == []
