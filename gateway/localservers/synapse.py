"""A throw-away Synapse (Matrix homeserver) on loopback, for the end-to-end tests.

`Synapse(workdir)` writes a ``homeserver.yaml`` under `workdir` that keeps everything
there (SQLite database, media store, signing key, log), listens on 127.0.0.1 only, over
plain HTTP, and never reaches outside: no federation, no trusted key servers, no URL
previews, no stats reporting. Rate limits are raised so that tests and benchmarks are not
throttled, except those given as ``rate_limits`` (the tests of a homeserver's 429
answers): each ``rc_*`` setting given there is merged over the raised one, so
``{"rc_login": {"address": {"per_second": 0.003, "burst_count": 1}}}`` leaves the
other login limits raised. Presence is off unless asked for (``presence=True``): it costs
a little on every request. Accounts are created through the shared-secret admin API
(`register_user`), the way ``register_new_matrix_user`` does it.

The config is written as JSON, which YAML reads as it is, and the signing key is
generated here (an ed25519 seed is 32 random bytes), so starting needs one Synapse
process and no ``--generate-config`` run: on a busy 2-core machine that halves start-up.
Synapse runs from the Python interpreter given as `python` (default: this one), which
must have ``matrix-synapse`` installed (it is a dev dependency of Passerelle).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.localservers._process import ManagedServer
from gateway.localservers.errors import ServerCommandError
from gateway.localservers.ports import LOOPBACK, free_port

log = logging.getLogger(__name__)

_UNLIMITED = {"per_second": 10_000, "burst_count": 100_000}


@dataclass(frozen=True, slots=True)
class MatrixAccount:
    """An account created on the test homeserver, logged in on one device."""

    user_id: str
    """The full Matrix ID, e.g. ``@bob:localhost``."""
    password: str
    access_token: str
    device_id: str


def _unpadded_b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _merged(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `over`'s values in its place, mappings merged key by key."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged


class Synapse(ManagedServer):
    """One Synapse process on 127.0.0.1, configured and owned by this object.

    Use as a context manager, or call `start()` and `stop()`; `restart()` keeps the port,
    the database and the accounts.
    """

    name = "Synapse"

    def __init__(
        self,
        workdir: Path,
        server_name: str = "localhost",
        *,
        port: int | None = None,
        python: str | None = None,
        log_level: str = "WARNING",
        max_upload_size: str = "50M",
        presence: bool = False,
        rate_limits: Mapping[str, Any] | None = None,
        start_timeout: float = 90.0,
    ) -> None:
        super().__init__(workdir, start_timeout)
        unknown = [key for key in rate_limits or {} if not key.startswith("rc_")]
        if unknown:
            raise ValueError(f"rate_limits takes Synapse's rc_* settings, not {unknown}")
        self.rate_limits = dict(rate_limits or {})
        self.server_name = server_name
        self._port = port
        self.python = python or sys.executable
        self.log_level = log_level
        self.max_upload_size = max_upload_size
        self.presence = presence
        self._shared_secret: str | None = None

    # -- paths and ports ------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("Synapse.port is chosen at start(); start the server first")
        return self._port

    @property
    def url(self) -> str:
        """The client-server API base URL, e.g. ``http://127.0.0.1:8008``."""
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.workdir / "homeserver.yaml"

    @property
    def log_config_path(self) -> Path:
        return self.workdir / "log.config.yaml"

    @property
    def signing_key_path(self) -> Path:
        return self.workdir / "signing.key"

    @property
    def secrets_path(self) -> Path:
        return self.workdir / "secrets.json"

    @property
    def log_path(self) -> Path:
        return self.workdir / "homeserver.log"

    @property
    def shared_secret(self) -> str:
        """The registration shared secret (for the admin registration API)."""
        if self._shared_secret is None:
            self._shared_secret = self._secrets()["registration_shared_secret"]
        return self._shared_secret

    # -- configuration --------------------------------------------------------------

    def _secrets(self) -> dict[str, str]:
        """Secrets kept across restarts, so tokens and accounts stay valid."""
        if self.secrets_path.exists():
            loaded: dict[str, str] = json.loads(self.secrets_path.read_text(encoding="utf-8"))
            return loaded
        values = {
            key: secrets.token_urlsafe(32)
            for key in ("registration_shared_secret", "macaroon_secret_key", "form_secret")
        }
        self.secrets_path.write_text(json.dumps(values), encoding="utf-8")
        self.secrets_path.chmod(0o600)
        return values

    def render_config(self) -> dict[str, Any]:
        """The whole homeserver configuration; the port must have been given or chosen."""
        return _merged(self._base_config(), self.rate_limits)

    def _base_config(self) -> dict[str, Any]:
        return {
            "server_name": self.server_name,
            "public_baseurl": f"{self.url}/",
            "pid_file": str(self.workdir / "homeserver.pid"),
            "listeners": [
                {
                    "port": self.port,
                    "bind_addresses": [LOOPBACK],
                    "type": "http",
                    "tls": False,
                    "x_forwarded": False,
                    "resources": [{"names": ["client"], "compress": False}],
                }
            ],
            "database": {
                "name": "sqlite3",
                "args": {"database": str(self.workdir / "homeserver.db")},
            },
            "log_config": str(self.log_config_path),
            "media_store_path": str(self.workdir / "media_store"),
            "signing_key_path": str(self.signing_key_path),
            "max_upload_size": self.max_upload_size,
            **self._secrets(),
            "report_stats": False,
            "enable_metrics": False,
            # Nothing leaves loopback: no federation, no key servers, no previews.
            "federation_domain_whitelist": [],
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "url_preview_enabled": False,
            "enable_registration": False,
            "enable_registration_without_verification": True,
            "allow_guest_access": False,
            "presence": {"enabled": self.presence},
            "user_directory": {"enabled": True, "search_all_users": True},
            # Tests and benchmarks send bursts; nothing here may throttle them.
            "rc_message": _UNLIMITED,
            "rc_registration": _UNLIMITED,
            "rc_login": {
                "address": _UNLIMITED,
                "account": _UNLIMITED,
                "failed_attempts": _UNLIMITED,
            },
            "rc_joins": {"local": _UNLIMITED, "remote": _UNLIMITED},
            "rc_joins_per_room": _UNLIMITED,
            "rc_invites": {
                "per_room": _UNLIMITED,
                "per_user": _UNLIMITED,
                "per_issuer": _UNLIMITED,
            },
            "rc_admin_redaction": _UNLIMITED,
            "rc_media_create": _UNLIMITED,
            "rc_room_creation": _UNLIMITED,
            "rc_profile": _UNLIMITED,
            "rc_key_requests": _UNLIMITED,
            "rc_delayed_event_mgmt": _UNLIMITED,
            "rc_presence": {"per_user": _UNLIMITED},
        }

    def render_log_config(self) -> dict[str, Any]:
        return {
            "version": 1,
            "formatters": {
                "precise": {
                    "format": "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - "
                    "%(request)s - %(message)s"
                }
            },
            "handlers": {
                "file": {
                    "class": "logging.FileHandler",
                    "formatter": "precise",
                    "filename": str(self.log_path),
                    "encoding": "utf8",
                }
            },
            "loggers": {"synapse.storage.SQL": {"level": "WARNING"}},
            "root": {"level": self.log_level, "handlers": ["file"]},
            "disable_existing_loggers": False,
        }

    def prepare(self) -> None:
        """Choose the port if needed; write the config, log config and signing key."""
        if self._port is None:
            self._port = free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "media_store").mkdir(exist_ok=True)
        if not self.signing_key_path.exists():
            key_id = "a_" + secrets.token_hex(2)
            seed = _unpadded_b64(secrets.token_bytes(32))
            self.signing_key_path.write_text(f"ed25519 {key_id} {seed}\n", encoding="ascii")
            self.signing_key_path.chmod(0o600)
        self.log_config_path.write_text(json.dumps(self.render_log_config()), encoding="utf-8")
        self.config_path.write_text(json.dumps(self.render_config(), indent=1), encoding="utf-8")

    def command(self) -> list[str]:
        return [self.python, "-m", "synapse.app.homeserver", "--config-path", str(self.config_path)]

    def listen_ports(self) -> tuple[int, ...]:
        return (self.port,)

    # -- accounts -------------------------------------------------------------------

    def register_user(self, localpart: str, password: str, *, admin: bool = False) -> MatrixAccount:
        """Create ``@localpart:server_name`` through the shared-secret admin API.

        Returns the account, logged in on a fresh device. Raises `ServerCommandError` if
        Synapse refuses (for instance because the user already exists).
        """
        path = "/_synapse/admin/v1/register"
        nonce = self._request("GET", path)["nonce"]
        # The MAC covers the parts joined by NUL bytes (Synapse's admin API docs).
        mac = hmac.new(self.shared_secret.encode(), digestmod=hashlib.sha1)
        mac.update(b"\x00".join(p.encode("utf-8") for p in (nonce, localpart, password)))
        mac.update(b"\x00" + (b"admin" if admin else b"notadmin"))
        digest = mac.hexdigest()
        body = {
            "nonce": nonce,
            "username": localpart,
            "password": password,
            "admin": admin,
            "mac": digest,
        }
        answer = self._request("POST", path, body)
        log.info("Registered %s", answer["user_id"])
        return MatrixAccount(
            user_id=answer["user_id"],
            password=password,
            access_token=answer["access_token"],
            device_id=answer["device_id"],
        )

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - our own loopback URL
            self.url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            detail = e.read().decode("utf-8", "replace")
            raise ServerCommandError(
                f"Synapse refused {method} {path}: HTTP {e.code} {detail}"
            ) from None
