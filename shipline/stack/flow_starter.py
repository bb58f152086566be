"""Flow-run processes forked from a warm parent: a run starts with Prefect and Shipline already imported.

A Prefect process worker starts every flow run as a new ``python -m prefect.engine``, which spends about
1.3 s of CPU importing Prefect and the flow's modules before the flow does anything — paid three times on
the way from a commit to PROD (delivery, release to PRE, release to PROD). The work pools' command is
``python -m shipline.stack.flow_starter`` instead, a launcher that imports only the standard library:

1. it connects to the host's flow starter (``serve``: one process per host, started by ``up``, that has
   imported ``prefect.engine`` and Shipline's flows once) and hands over its environment, working
   directory and standard streams (passed as file descriptors);
2. the starter forks; the child takes that environment, directory and streams and runs
   ``prefect.engine`` as ``python -m`` would; the launcher relays SIGTERM, SIGINT and SIGHUP to it, and
   exits as it exits (with its code, or killed by the same signal) — to the worker it is the flow run's
   process, cancellation included;
3. a child whose launcher dies (its worker killed with its process group) is killed at once, as a child
   process of the launcher would be.

Where there is no starter (not started, another host, an old one), or the starter's code is older than the
files on disk (Shipline upgraded under it: it starts itself again), the launcher becomes
``python -m prefect.engine`` (``exec``): slower, never different.
"""

from __future__ import annotations

import array
import contextlib
import json
import os
import signal
import socket
import struct
import sys
from pathlib import Path
from typing import NoReturn

SOCKET_VARIABLE = "SHIPLINE_FLOW_STARTER_SOCKET"
"""The launcher finds the starter's unix socket here (the worker's environment, set by ``up``)."""
RELAYED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
PRELOADED = (
    "prefect.engine",
    "prefect.flow_engine",
    "prefect.task_engine",
    "flows.delivery",
    "flows.release",
    "flows.base_images",
    "flows.gitlab_reconcile",
    "flows.housekeeping",
    "flows.log_maintenance",
)
"""What the starter imports once: Prefect's engine and every flow a deployment runs (with their tasks)."""
_HEADER = struct.Struct("!I")


def _engine(arguments: list[str]) -> NoReturn:
    """Become ``python -m prefect.engine ARGUMENTS`` (never returns)."""
    os.execv(sys.executable, [sys.executable, "-m", "prefect.engine", *arguments])  # noqa: S606 - the venv's Python


def _send_message(
    connection: socket.socket, payload: dict[str, object], fds: list[int] | None = None
) -> None:
    body = json.dumps(payload).encode()
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    connection.sendmsg([_HEADER.pack(len(body)) + body], ancillary)


def _receive_exactly(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the flow starter closed the connection")
        data += chunk
    return data


def _receive_message(connection: socket.socket) -> tuple[dict[str, object], list[int]]:
    """One message and the file descriptors that came with it."""
    fds = array.array("i")
    data, ancillary, _, _ = connection.recvmsg(_HEADER.size + 65536, socket.CMSG_SPACE(3 * fds.itemsize))
    for level, kind, item in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(item[: len(item) - (len(item) % fds.itemsize)])
    if not data:
        raise ConnectionError("the flow starter closed the connection")
    if len(data) < _HEADER.size:
        data += _receive_exactly(connection, _HEADER.size - len(data))
    (size,) = _HEADER.unpack(data[: _HEADER.size])
    body = data[_HEADER.size :]
    if len(body) < size:
        body += _receive_exactly(connection, size - len(body))
    return json.loads(body), list(fds)


def launch(arguments: list[str]) -> None:
    """The work pools' command: run this flow run in a child of the host's starter, or as Prefect would."""
    path = os.environ.get(SOCKET_VARIABLE)
    if not path:
        _engine(arguments)
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(path)
        _send_message(
            connection,
            {"arguments": arguments, "environment": dict(os.environ), "directory": os.getcwd()},
            [0, 1, 2],
        )
        answer, _ = _receive_message(connection)
    except (OSError, ValueError):
        connection.close()
        _engine(arguments)
    if "pid" not in answer:  # the starter's code is stale: it starts itself again; this run goes cold
        connection.close()
        _engine(arguments)
    child = int(str(answer["pid"]))

    def relay(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signum)

    for relayed in RELAYED:
        signal.signal(relayed, relay)
    try:
        ended, _ = _receive_message(connection)
    except (OSError, ValueError):
        ended = {"signal": int(signal.SIGKILL)}  # the run died without a word, and no starter saw it
    if "signal" in ended:
        signum = int(str(ended["signal"]))
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    sys.exit(int(str(ended.get("code", 1))))


# --- the starter -------------------------------------------------------------------------------------


def _source_files() -> dict[str, float]:
    """The modification time of every preloaded module of this project (to notice an upgrade)."""
    from shipline.config import PROJECT_ROOT

    times = {}
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if file and file.startswith(str(PROJECT_ROOT)) and not file.startswith(str(PROJECT_ROOT / ".venv")):
            try:
                times[file] = os.stat(file).st_mtime
            except OSError:
                times[file] = -1.0
    return times


def _changed(times: dict[str, float]) -> bool:
    for file, mtime in times.items():
        try:
            if os.stat(file).st_mtime != mtime:
                return True
        except OSError:
            return True
    return False


def _run_child(connection: socket.socket, request: dict[str, object], fds: list[int]) -> None:
    """In the forked child: become the flow run's process, as ``python -m prefect.engine`` (never returns)."""
    import atexit
    import runpy
    import threading

    code = 1
    try:
        for target, fd in zip((0, 1, 2), fds, strict=False):
            os.dup2(fd, target)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        for signum in (*RELAYED, signal.SIGCHLD, signal.SIGPIPE):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.set_wakeup_fd(-1)
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in dict(request["environment"]).items()})  # type: ignore[call-overload]
        os.chdir(str(request["directory"]))

        import prefect.context

        # Prefect read its settings from the starter's environment when it was imported: from this run's.
        prefect.context.GLOBAL_SETTINGS_CONTEXT = prefect.context.root_settings_context()

        def orphaned() -> None:  # the launcher died (its worker was killed): so does the run
            try:
                while connection.recv(1):
                    pass
            except OSError:
                pass
            os.kill(os.getpid(), signal.SIGKILL)

        threading.Thread(target=orphaned, daemon=True, name="flow-starter-launcher").start()
        sys.argv = ["prefect.engine", *[str(a) for a in list(request["arguments"])]]  # type: ignore[call-overload]
        try:
            runpy.run_module("prefect.engine", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
            if exit_.code is not None and not isinstance(exit_.code, int):
                print(exit_.code, file=sys.stderr)
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 1
        threading._shutdown()  # type: ignore[attr-defined]  # as the interpreter does at exit: join threads
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # nothing left to tell
                stream.flush()
        with contextlib.suppress(
            OSError
        ):  # told by the run itself: its launcher learns it even without a starter
            _send_message(connection, {"code": code})
        os._exit(code)


def serve(path: Path) -> None:
    """Import Prefect's engine and Shipline's flows once, then fork a flow-run process per launcher."""
    import importlib
    import selectors

    for name in PRELOADED:
        importlib.import_module(name)
    times = _source_files()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    path.chmod(0o600)
    listener.listen(64)
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    selector.register(wake_read, selectors.EVENT_READ)
    children: dict[int, socket.socket] = {}
    print(f"flow starter ready on {path} ({len(sys.modules)} modules loaded)", flush=True)
    while not stopping:
        for key, _ in selector.select(timeout=1.0):
            if key.fileobj is listener:
                connection, _ = listener.accept()
                try:
                    request, fds = _receive_message(connection)
                except (OSError, ValueError):
                    connection.close()
                    continue
                if _changed(times):
                    _send_message(connection, {"stale": True})
                    connection.close()
                    for fd in fds:
                        os.close(fd)
                    print("flow starter: Shipline's files changed; starting again", flush=True)
                    listener.close()
                    os.execv(sys.executable, [sys.executable, "-m", __name__, "serve", str(path)])  # noqa: S606
                pid = os.fork()
                if pid == 0:
                    listener.close()
                    for other in children.values():
                        other.close()
                    _run_child(connection, request, fds)
                for fd in fds:
                    os.close(fd)
                children[pid] = connection
                _send_message(connection, {"pid": pid})
            else:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_read, 512)
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid not in children:
                continue
            connection = children.pop(pid)
            ended: dict[str, object] = (
                {"signal": os.WTERMSIG(status)}
                if os.WIFSIGNALED(status)
                else {"code": os.WEXITSTATUS(status)}
            )
            with contextlib.suppress(OSError):  # the launcher may have its code (from the run) and be gone
                _send_message(connection, ended)
            connection.close()
    listener.close()
    path.unlink(missing_ok=True)


def main() -> None:
    if len(sys.argv) >= 2 and sys.argv[1] == "serve":
        if len(sys.argv) >= 3:
            serve(Path(sys.argv[2]))
        else:  # as a systemd unit: where this host's settings put it
            from shipline.config import load_settings

            serve(load_settings().flow_starter_socket)
    else:
        launch(sys.argv[1:])


if __name__ == "__main__":
    main()
