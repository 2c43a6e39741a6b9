"""The one redaction applied to everything the tool writes or logs: result and sweep files, job
configs, error texts, Hydra's `.hydra/` files and `multirun.yaml`, log lines (console and
files), MLflow params, tags and artifacts.

Two rules: the password of a URI (``postgresql://user:secret@host`` -> ``user:***@host``, also
``http://:token@host`` and passwords holding ``/``), and
the value of any key whose name looks like a secret (token, secret, password, credential, key),
whether it is a mapping's key or written ``name=value`` / ``name: value`` in a text.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

MASK = "***"
# names whose values are never written
_WORDS = (r"token|secret|passw(?:or)?d|passwd|credentials?|api[_-]?key|access[_-]?key"
          r"|private[_-]?key")
SECRET_NAME = re.compile(rf"(?:{_WORDS})|(?:^|[._-])key(?:$|[._-])", re.I)
# the user information of a URI as SQLAlchemy's make_url reads it (MLflow's database stores):
# a user name that may be empty and holds no ':' or '/', then a password up to the first '@'
# that may hold '/' and ':' (urllib, for http stores, accepts the same forms)
_URI_PASSWORD = re.compile(r"(?<=://)([^:/@\s'\"]*):([^@\s'\"]+)@")
_URI_USERINFO = re.compile(r"(?<=://)[^:/@\s'\"]*(?::[^@\s'\"]*)?@")
_ASSIGNMENT = re.compile(
    rf"(?P<key>[\w.+~-]*(?:{_WORDS})[\w.-]*)(?P<sep>['\"]?\s*[:=]\s*)(?P<q>['\"]?)"
    r"(?P<value>[^\s'\",}\]]+)", re.I)


# SQLAlchemy's URL grammar (sqlalchemy.engine.url._parse_url), which MLflow's database stores use
_DB_URL = re.compile(r"""(?P<scheme>[\w+]+)://(?:(?P<user>[^:/]*)(?::(?P<password>[^@]*))?@)?
    (?:(?:\[(?P<ipv6>[^/?]+)\]|(?P<host>[^/:?]+))?(?::(?P<port>[^/?]*))?)?""", re.X)


def host_port(uri: str) -> tuple[str, str, int | None] | None:
    """(scheme, host, port) of a server URI, parsed as the store's own library does: urllib for
    http(s) (MLflow's REST client), SQLAlchemy's grammar for database URIs; None when it names
    no host."""
    import urllib.parse

    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    if scheme in ("http", "https"):
        parts = urllib.parse.urlsplit(uri)
        try:
            port = parts.port
        except ValueError:
            port = None
        return (scheme, parts.hostname, port) if parts.hostname else None
    m = _DB_URL.match(uri)
    if not m or not (m["host"] or m["ipv6"]):
        return None
    port = int(m["port"]) if m["port"] and m["port"].isdigit() else None
    return scheme, m["host"] or m["ipv6"], port


def without_credentials(uri: str) -> str:
    """`uri` with its user information dropped (`http://u:p@host/x` -> `http://host/x`): a link
    to show, where even a masked password would only be clutter."""
    return _URI_USERINFO.sub("", uri)


def masked(uri: str | None) -> bool:
    """Whether `uri` is one this module masked (so it cannot be used to connect)."""
    return bool(uri) and f":{MASK}@" in uri


def is_secret_name(name: str) -> bool:
    return bool(SECRET_NAME.search(str(name).lstrip("+~")))


def redact(text: str) -> str:
    """`text` with URI passwords and the values of secret-looking `name=value` masked."""
    if not isinstance(text, str):
        return text
    text = _URI_PASSWORD.sub(lambda m: f"{m.group(1)}:{MASK}@", text)
    return _ASSIGNMENT.sub(lambda m: f"{m['key']}{m['sep']}{m['q']}{MASK}", text)


def redact_tree(obj: Any) -> Any:
    """A copy of nested dicts and lists with secret-named keys' values masked and every string
    redacted."""
    if isinstance(obj, dict):
        return {k: MASK if is_secret_name(k) and obj[k] is not None else redact_tree(v)
                for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(redact_tree(v) for v in obj)
    return redact(obj) if isinstance(obj, str) else obj


def redact_file(path: Path) -> None:
    """Rewrite a text file that something else wrote (Hydra, a worker's output) with its
    secrets masked; a file that cannot be read or written is left as it is."""
    try:
        text = Path(path).read_text()
        clean = redact(text)
        if clean != text:
            Path(path).write_text(clean)
    except (OSError, UnicodeDecodeError):
        pass


def _redacting_factory(factory: Any) -> Any:
    def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return record

    make.redacting = True
    return make


def install_log_filter() -> None:
    """Mask secrets in every log record this process makes, whoever logs it and through
    whichever handler (Hydra's override echo, MLflow's and SQLAlchemy's warnings)."""
    factory = logging.getLogRecordFactory()
    if not getattr(factory, "redacting", False):
        logging.setLogRecordFactory(_redacting_factory(factory))
