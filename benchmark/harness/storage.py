"""The sweep storage check: an Optuna storage URL must be usable before any long work starts (a sqlite file must
be creatable, a database server must accept a connection), or the user gets one line saying what to fix."""
from __future__ import annotations

import os
import re
from pathlib import Path

import sqlalchemy  # a dependency: Optuna's RDB storages are built on it

from benchmark.errors import ConfigError


def _mask_url(url: str) -> str:
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL has no password we could find either
        return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


def check_storage_url(url: str, timeout_s: float = 5.0) -> None:
    """Fail now, in one line, if Optuna could not use ``url``: a sqlite file must be creatable, a database server
    must accept a connection within ``timeout_s`` seconds."""
    scheme = url.split(":", 1)[0].lower()
    dialect = scheme.split("+", 1)[0]
    if dialect == "sqlite":
        if not url.startswith("sqlite:///"):
            raise ConfigError(f"sweep.storage={url!r} is not a sqlite file URL; write sqlite:///relative.db or sqlite:////abs/path.db")
        file = url[len("sqlite:///"):].split("?", 1)[0]
        if file in ("", ":memory:"):
            return
        target = Path(file)
        existing = target if target.exists() else next(p for p in [target.parent, *target.parent.parents] if p.exists() or p == Path("."))
        if target.exists() and (target.is_dir() or not os.access(target, os.W_OK)):
            raise ConfigError(f"sweep.storage file {target} is not a writable file; fix its permissions or pick another path")
        if not target.exists() and (not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK)):
            raise ConfigError(f"sweep.storage: cannot create {target} ({existing} is not a writable directory); pick a writable path")
        return
    if dialect == "postgres":
        raise ConfigError("sweep.storage scheme 'postgres://' is not understood by SQLAlchemy; write postgresql://...")
    if dialect not in ("postgresql", "mysql", "mariadb"):
        raise ConfigError(f"sweep.storage={_mask_url(url)!r}: unsupported scheme {scheme!r}; use sqlite:///FILE, "
                          f"postgresql://USER@HOST/DB or mysql://USER@HOST/DB (or null for a local sqlite file)")
    try:
        engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": max(1, int(timeout_s))})
    except ModuleNotFoundError as e:
        package = {"psycopg": "'psycopg[binary]'", "psycopg2": "psycopg2-binary", "MySQLdb": "mysqlclient"}.get(e.name, e.name)
        raise ConfigError(f"sweep.storage {dialect} URL needs the database driver {e.name!r}: pip install {package}, "
                          f"or name an installed driver in the URL ({dialect}+DRIVER://...)") from None
    except Exception as e:
        raise ConfigError(f"sweep.storage={_mask_url(url)!r} is not a valid URL ({str(e).splitlines()[0]})") from None
    try:
        with engine.connect():
            pass
    except Exception as e:
        reason = str(getattr(e, "orig", None) or e).strip().splitlines()
        raise ConfigError(f"cannot connect to sweep.storage {_mask_url(url)} ({reason[0] if reason else type(e).__name__}); "
                          f"start the database, fix the URL, or set sweep.storage=null for a local sqlite file") from None
    finally:
        engine.dispose()
