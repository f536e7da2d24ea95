"""Run MNN's converter or offline quantizer in this (child) process, through the compiled `_tools`
extension of the `MNN` wheel, with network and process creation refused.

    python mnn_tools.py convert ARG...            MNNConvert's command line
    python mnn_tools.py quantize SRC DST CONFIG   the offline quantizer (quantized.out)

Why a child process: MNN's converter aborts the whole process on graphs it cannot handle (measured:
`std::out_of_range` on onnxruntime's QDQ models), which must fail one artifact, not bbdeploy.

Why the guard: MNN 3.6.1's Python wrappers (`MNN.tools.mnnconvert`, `MNN.tools.mnnquant`) import
`MNN.tools.utils.log`, which runs `pip install -U aliyun-log-python-sdk` when that package is missing,
fetches credentials from a cloud endpoint and uploads the model's id and sizes. This file never imports
them; the audit hook makes sure nothing else in the process reaches a non-loopback address or starts a
process either, and the run fails loudly if the telemetry module was imported anyway.
"""

from __future__ import annotations

import sys

TELEMETRY_MODULE = "MNN.tools.utils.log"
LOOPBACK = ("127.", "::1", "localhost")
REFUSED_EVENTS = ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
                  "os.forkpty", "os.startfile", "pty.spawn")


class Refused(RuntimeError):
    """Something in the MNN tools tried to reach the network or start a process."""


def guard(event: str, args: tuple) -> None:
    """Audit hook: refuse process creation and connections to anything but this machine."""
    if event in REFUSED_EVENTS:
        raise Refused(f"refused {event} {args[:2]!r} while running MNN's tools")
    if event == "socket.connect":
        address = args[1]
        host = str(address[0]) if isinstance(address, tuple) else str(address)
        if not host.startswith(LOOPBACK) and not host.startswith("/"):
            raise Refused(f"refused a connection to {host} while running MNN's tools")


def main(argv: list[str]) -> int:
    sys.addaudithook(guard)
    import _tools  # the compiled converter and quantizer; imports no Python part of MNN

    command, arguments = argv[0], argv[1:]
    if command == "convert":
        _tools.mnnconvert(["MNNConvert", *arguments])
    elif command == "quantize":
        _tools.mnnquant(["quantized.out", *arguments])
    else:
        raise SystemExit(f"unknown command {command!r}; pass convert or quantize")
    if TELEMETRY_MODULE in sys.modules:
        raise Refused(f"{TELEMETRY_MODULE} was imported")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
