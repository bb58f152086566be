import os
import socket
from pathlib import Path

from shipline.stack.sockets import find_listener, listening_ports


def _listening_socket() -> socket.socket:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    return server


def test_listener_is_this_process() -> None:
    with _listening_socket() as server:
        port = server.getsockname()[1]
        listener = find_listener(port)
        assert listener is not None
        assert listener.pid == os.getpid()
        assert str(os.getpid()) in listener.describe()


def test_free_port_has_no_listener() -> None:
    with _listening_socket() as server:
        port = server.getsockname()[1]
    assert find_listener(port) is None


def test_listener_found_in_a_fake_proc_tree(tmp_path: Path) -> None:
    # /proc/net/tcp: port 0x1F90 = 8080 in state 0A (LISTEN), inode 4242, held by pid 77 ("nginx").
    (tmp_path / "net").mkdir()
    header = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    )
    row = "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242\n"
    (tmp_path / "net" / "tcp").write_text(header + row)
    (tmp_path / "77" / "fd").mkdir(parents=True)
    (tmp_path / "77" / "comm").write_text("nginx\n")
    (tmp_path / "77" / "fd" / "3").symlink_to("socket:[4242]")
    listener = find_listener(8080, proc=tmp_path)
    assert listener is not None
    assert (listener.pid, listener.program) == (77, "nginx")
    assert find_listener(8081, proc=tmp_path) is None


def test_a_port_taken_on_one_loopback_address_is_free_on_another() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.2", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert port in listening_ports("127.0.0.2") and port in listening_ports()
        assert port not in listening_ports("127.0.0.3")  # another host's instance may use the same port
    with socket.socket() as everywhere:
        everywhere.bind(("0.0.0.0", 0))  # noqa: S104 - a socket on every address clashes with each
        everywhere.listen()
        assert everywhere.getsockname()[1] in listening_ports("127.0.0.3")
