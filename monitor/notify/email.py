"""Email over SMTP (aiosmtplib): STARTTLS, implicit TLS or plain, optional authentication.

Settings: `host` (required), `port` (default 587 for starttls, 465 for tls, 25 for none),
`security` (starttls, tls, none; default starttls), `username` + `password` (optional,
the password is secret), `allow_plaintext_auth` (default false: with `security: none` a
password would cross the network readable, so that is refused unless this says it is
fine, e.g. a relay on localhost), `from` (required), `to` (required: one address or a
list), `ca_file` (optional: trust this CA bundle instead of the system's), `timeout`,
`templates`. The subject is the title (one line), the body the text, as plain text only.
With starttls a server that does not offer STARTTLS is an error, never a fallback to
plain text.

Errors: 5xx replies (bad credentials, refused recipients) are permanent; 4xx replies,
timeouts, lost connections and TLS failures are temporary.

Imports: stdlib, aiohttp (for the interface), aiosmtplib, monitor.notify.
"""

from __future__ import annotations

import ssl
from email.message import EmailMessage

import aiohttp
import aiosmtplib

from monitor.notify.base import Message, Settings
from monitor.notify.channel import Channel, short

PORTS = {"starttls": 587, "tls": 465, "none": 25}


class EmailNotifier(Channel):
    type = "email"

    def __init__(self, name: str, settings: Settings):
        super().__init__(name, settings)
        self.host: str = settings.text("host")
        self.security = settings.choice("security", PORTS, "starttls")
        port = settings.get("port", PORTS[self.security])
        if isinstance(port, str) and port.isdigit():  # from a ${VAR}
            port = int(port)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise settings.error("port", "must be a port number")
        self.port: int = port
        self.username: str | None = settings.text("username", None)
        self.password: str | None = settings.text("password", None)
        if (self.username is None) != (self.password is None):
            raise settings.error("password", "username and password go together")
        allow_plaintext = settings.get("allow_plaintext_auth", False)
        if not isinstance(allow_plaintext, bool):
            raise settings.error("allow_plaintext_auth", "must be true or false")
        if self.password is not None and self.security == "none" and not allow_plaintext:
            raise settings.error(
                "password",
                "would be sent without TLS (security: none); use security: starttls or tls, "
                "or set allow_plaintext_auth: true if the network path is trusted",
            )
        self.sender: str = settings.text("from")
        self.recipients: tuple[str, ...] = settings.text_list("to")
        for key, address in [("from", self.sender), *(("to", a) for a in self.recipients)]:
            if "@" not in address or any(c in address for c in "\r\n"):
                raise settings.error(key, "must be an email address")
        ca_file: str | None = settings.text("ca_file", None)
        self.tls_context: ssl.SSLContext | None = None
        if ca_file:
            try:
                self.tls_context = ssl.create_default_context(cafile=ca_file)
            except (OSError, ssl.SSLError) as e:
                raise settings.error("ca_file", f"cannot load: {e}") from None
        self.add_secrets(self.password)

    def compose(self, message: Message) -> EmailMessage:
        rendered = self.render(message)
        mail = EmailMessage()
        mail["Subject"] = " ".join(rendered.title.split())  # no header injection via newlines
        mail["From"] = self.sender
        mail["To"] = ", ".join(self.recipients)
        mail["X-Monitor-Key"] = message.key
        mail.set_content(rendered.text)
        return mail

    async def send(self, message: Message, session: aiohttp.ClientSession) -> None:
        try:
            await aiosmtplib.send(
                self.compose(message),
                hostname=self.host,
                port=self.port,
                username=self.username,
                password=self.password,
                use_tls=self.security == "tls",
                start_tls=self.security == "starttls",
                tls_context=self.tls_context,
                timeout=self.timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as e:
            codes = [r.code for r in e.recipients]
            raise self.fail(
                f"recipients refused ({', '.join(map(str, codes))})",
                permanent=all(code >= 500 for code in codes),
            ) from None
        except aiosmtplib.SMTPResponseException as e:
            what = (
                "authentication failed"
                if isinstance(e, aiosmtplib.SMTPAuthenticationError)
                else "server replied"
            )
            raise self.fail(
                f"{what}: {e.code} {short(e.message)}", permanent=e.code >= 500
            ) from None
        except aiosmtplib.SMTPTimeoutError:
            raise self.fail(f"timed out after {self.timeout:g}s", permanent=False) from None
        except aiosmtplib.SMTPNotSupported as e:
            # e.g. STARTTLS or AUTH not offered: the server is not configured as we are told
            raise self.fail(
                f"not supported by the server: {short(str(e))}", permanent=True
            ) from None
        except (aiosmtplib.SMTPException, OSError) as e:
            raise self.fail(f"{type(e).__name__}: {short(str(e))}", permanent=False) from None
