"""SerialLink and open_link: URL parsing, loop:// transport, idle flush, lazy pyserial import."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from edge_anytime.errors import MissingDependencyError
from edge_anytime.serial.link import LinkError, LinkOptions, SerialLink, open_link, parse_url
from edge_anytime.serial.protocol import Frame, Ping, encode

pytest.importorskip("serial")


@pytest.mark.parametrize("url, port, options", [
    ("serial:///dev/ttyTHS1?baud=921600", "/dev/ttyTHS1", {"baudrate": 921600}),
    ("serial:///dev/ttyUSB0?baudrate=115200&timeout=0.1&parity=e&rtscts=1", "/dev/ttyUSB0",
     {"baudrate": 115200, "timeout_s": 0.1, "parity": "E", "rtscts": True}),
    ("serial://COM3?baud=9600&frame_timeout=0.5", "COM3", {"baudrate": 9600, "frame_timeout_s": 0.5}),
    ("/dev/ttyACM0", "/dev/ttyACM0", {}),
    ("loop://?logging=debug", "loop://?logging=debug", {}),
    ("socket://localhost:7777", "socket://localhost:7777", {}),
])
def test_parse_url(url, port, options):
    assert parse_url(url) == (port, options)


def test_parse_url_errors_name_the_fix():
    with pytest.raises(LinkError, match="three slashes"):
        parse_url("serial://?baud=9600")
    with pytest.raises(LinkError, match="unknown option 'speed'.*baud"):
        parse_url("serial:///dev/ttyS0?speed=9600")
    with pytest.raises(LinkError, match="bad value for 'baud'"):
        parse_url("serial:///dev/ttyS0?baud=fast")


def test_loop_round_trip_and_counters():
    with open_link("loop://", timeout_s=0.01) as link:
        assert link.options.timeout_s == 0.01
        assert link.send(Ping(1)) == 0 and link.send(Ping(2)) == 1
        assert link.recv(timeout=1.0) == Ping(1)
        assert link.read(timeout=1.0) == [Ping(2)]
        t0 = time.monotonic()
        assert link.read(timeout=0.05) == [] and time.monotonic() - t0 < 1.0
        s = link.stats
        assert (s.messages_sent, s.messages, s.bytes_sent, s.bytes_received) == (2, 2, 48, 48)
    assert link.closed
    with pytest.raises(LinkError, match="closed"):
        link.send(Ping(3))


def test_sending_more_than_max_payload_is_refused_with_the_fix():
    import numpy as np

    from edge_anytime.serial.protocol import ProtocolError

    with open_link("loop://", max_payload=1024) as link:
        with pytest.raises(ProtocolError, match="max_payload=1024.*both sides"):
            link.send(Frame.from_array(1, np.zeros((32, 32, 3), np.uint8), budget_s=0.01))
        assert link.send(Ping(1)) == 0                          # nothing was written, the sequence goes on


def test_keyword_options_override_the_url_query():
    with open_link("loop://", LinkOptions(baudrate=9600), baudrate=57600) as link:
        assert link.port.baudrate == 57600
    with pytest.raises(TypeError, match="unknown option"):
        open_link("loop://", baud=9600)


def test_idle_line_flushes_a_partial_frame():
    import numpy as np

    with open_link("loop://", frame_timeout_s=0.05, interrupt_on_header=False) as link:
        big = encode(Frame.from_array(1, np.zeros((16, 16, 3), np.uint8), budget_s=0.01))
        link.port.write(big[:300] + encode(Ping(5), seq=1))     # a sender died mid-frame, then a PING came
        assert link.read(timeout=1.0) == [Ping(5)]
        assert link.stats.truncated == 1


def test_open_errors_name_the_device():
    with pytest.raises(LinkError, match="/dev/does-not-exist.*dialout"):
        open_link("serial:///dev/does-not-exist?baud=9600")


def test_close_wakes_a_blocked_reader():
    link = open_link("loop://", timeout_s=0.05)
    got = []
    reader = threading.Thread(target=lambda: got.append(link.read(timeout=None)))
    reader.start()
    time.sleep(0.1)
    link.close()
    reader.join(2.0)
    assert not reader.is_alive() and got == [[]]


def test_link_over_any_port_like_object():
    class Pipe:
        def __init__(self):
            self.data = bytearray()

        def write(self, b):
            self.data += b

        def read(self, n):
            out, self.data[:] = bytes(self.data), b""
            return out

        def close(self):
            pass

    link = SerialLink(Pipe())
    link.send(Ping(9))
    assert link.read(timeout=0.5) == [Ping(9)]


def test_runtime_imports_without_pyserial_and_opening_names_the_install():
    code = ("import sys; sys.modules['serial'] = None\n"
            "import edge_anytime.serial as s\n"
            "assert s.FrameDecoder().feed(s.encode(s.Ping(1)))\n"
            "try:\n    s.open_link('loop://')\nexcept Exception as e:\n    print(type(e).__name__, e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "MissingDependencyError" in out.stdout and "pip install pyserial" in out.stdout
    assert issubclass(MissingDependencyError, ImportError)


def test_a_line_that_died_fails_as_a_link_error_even_in_its_byte_count():
    class DeadPort:               # pyserial on a hung-up pty: the in_waiting ioctl itself fails
        @property
        def in_waiting(self):
            raise OSError(9, "Bad file descriptor")

        def read(self, n):
            raise OSError(5, "Input/output error")

        def close(self):
            pass

    link = SerialLink(DeadPort())
    with pytest.raises(LinkError, match="read from .* failed: .*Bad file descriptor"):
        link.read(0.01)
