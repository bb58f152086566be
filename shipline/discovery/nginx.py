"""nginx server blocks rendered from registered instances, applied without ever breaking nginx.

One file per app and environment, ``{conf_dir}/{app}_{env}.conf``. Applying a set of files: the changed
ones are checked first in a staging copy of the conf dir, with ``nginx -t`` on the whole configuration;
only then is each swapped in atomically (temp file + rename) and nginx reloaded (SIGHUP to its master).
A rejected set never reaches the live conf dir — an nginx master still reloading from an earlier change
could otherwise read it — so the last good configuration keeps serving and the failure is reported.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Collection, Iterable
from pathlib import Path

import jinja2

from shipline.config import PROJECT_ROOT, Settings
from shipline.discovery.instances import Instance
from shipline.errors import DiscoveryError
from shipline.files import write_atomically
from shipline.names import validate_name
from shipline.programs import find_program

DEFAULT_TEMPLATE = PROJECT_ROOT / "templates" / "nginx" / "app.conf.j2"


def _template(path: Path) -> jinja2.Template:
    """The compiled template, compiled again only when its file changes (discover renders per change)."""
    return _compiled(path, path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _compiled(path: Path, mtime_ns: int) -> jinja2.Template:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(path.parent),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # noqa: S701 - renders nginx syntax from validated names and addresses
        keep_trailing_newline=True,
    )
    return environment.get_template(path.name)


def file_name(app: str, env: str) -> str:
    return f"{validate_name(app, what='app name')}_{validate_name(env, what='environment')}.conf"


def render_app(
    app: str,
    env: str,
    instances: Iterable[Instance],
    *,
    settings: Settings,
    template: Path = DEFAULT_TEMPLATE,
) -> str:
    """The server block (and upstream, when an instance is live) of one app in one environment."""
    validate_name(app, what="app name")
    validate_name(env, what="environment")
    addresses = sorted({i.address for i in instances if i.app == app and i.env == env})
    return _template(template).render(
        app=app,
        env=env,
        upstream=f"{app}_{env}",
        server_name=f"{app}.{env}.localhost",
        listen=f"{settings.edge_host}:{settings.nginx_port}",
        instances=addresses,
    )


def test_config(settings: Settings, main: Path) -> str | None:
    """``nginx -t`` of the main configuration ``main`` in the stack's prefix; nginx's complaint, or None."""
    done = subprocess.run(
        [
            find_program("nginx") or "nginx",
            "-t",
            "-q",
            "-c",
            str(main),
            "-p",
            f"{settings.nginx_dir}/",
            "-e",
            str(settings.log_dir / "nginx-error.log"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return None if done.returncode == 0 else done.stderr.strip()


class NginxConfig:
    """The discovery files of one nginx, and how to check and reload it.

    Args:
        settings: Where nginx's main config, pid file and conf dir are.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.conf_dir = settings.nginx_conf_dir
        self.reloads = 0

    def _check(self, changed: dict[str, str]) -> str | None:
        """``nginx -t`` of the whole configuration with ``changed`` in place; the problem, or None."""
        main = self.settings.nginx_dir / "nginx.conf"
        include = f"include {self.conf_dir}/*.conf;"
        text = main.read_text()
        if include not in text:
            return f"{main} does not contain '{include}': re-render it with shipline up"
        with tempfile.TemporaryDirectory(dir=self.settings.nginx_dir, prefix=".staging-") as scratch:
            staging = Path(scratch)
            for path in self.conf_dir.glob("*.conf"):
                if path.name not in changed:
                    _stage(path, staging / path.name)
            for name, content in changed.items():
                (staging / name).write_text(content)
            staged_main = staging / "nginx.main"  # not *.conf: the include below must not take it in
            staged_main.write_text(text.replace(include, f"include {staging}/*.conf;"))
            problem = test_config(self.settings, staged_main)
            return None if problem is None else problem.replace(str(staging), str(self.conf_dir))

    def _reload(self) -> None:
        try:
            pid = int((self.settings.nginx_dir / "nginx.pid").read_text())
            os.kill(pid, signal.SIGHUP)
        except (OSError, ValueError) as exc:
            raise DiscoveryError(
                f"cannot reload nginx: {exc}", hint="shipline up starts it", transient=True
            ) from exc
        self.reloads += 1

    def apply(self, files: dict[str, str], remove: Collection[str] = ()) -> bool:
        """Make the conf dir hold ``files`` (name → text), without the files named in ``remove`` (retired
        apps), and reload nginx if anything changed.

        Returns:
            True if nginx was reloaded, False if nothing changed.

        A file ``nginx -t`` rejects never reaches the conf dir, and harms only its own app: the changes are
        checked together, and when that fails each on its own, so that the good ones still apply.

        Raises:
            DiscoveryError: naming each rejected file and nginx's complaint; ``reloaded`` tells whether the
                other changes were applied.
        """
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        gone = [name for name in remove if name not in files and (self.conf_dir / name).exists()]
        for name in gone:
            (self.conf_dir / name).unlink(missing_ok=True)
        changed = {name: text for name, text in files.items() if _current(self.conf_dir / name) != text}
        if not changed:
            if gone:
                self._reload()
            return bool(gone)
        rejected: dict[str, str] = {}
        problem = self._check(changed)
        if problem is not None:
            for name, text in changed.items():
                if (alone := self._check({name: text})) is not None:
                    rejected[name] = alone
            changed = {name: text for name, text in changed.items() if name not in rejected}
            if changed and self._check(changed) is not None:
                rejected |= dict.fromkeys(changed, problem)  # fine alone, not together: apply none of them
                changed = {}
        for name, text in changed.items():
            write_atomically(self.conf_dir / name, text)  # nginx's include never sees .*.tmp
        if changed or gone:
            self._reload()
        if rejected:
            error = DiscoveryError(
                f"nginx rejects {', '.join(sorted(rejected))}; their last good files keep serving: "
                + "; ".join(sorted(set(rejected.values()))),
                hint="check the nginx template (SHIPLINE_NGINX_TEMPLATE) and the keys of those apps in etcd",
            )
            error.reloaded = bool(changed)
            raise error
        return True


def _current(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def _stage(live: Path, staged: Path) -> None:
    # A hard link costs no copy, and is safe: live files are only ever replaced by rename (a new inode),
    # never rewritten in place. A copy where links are not possible.
    try:
        os.link(live, staged)
    except OSError:
        shutil.copyfile(live, staged)
