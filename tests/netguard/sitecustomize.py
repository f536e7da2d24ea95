"""Records every name lookup, socket connection and started program of a Python process, for
tests/test_offline.py.

On `PYTHONPATH`, Python imports this module at start-up in every process, bbdeploy's and the ones it
starts (runner, converters, workers), so an audit hook sees what their libraries do, threads included.
It writes one JSON line per event to `$NETGUARD_LOG` and changes nothing else; without that variable
it does nothing. (C++ code does not pass through these hooks: the test also runs strace.)
"""

import json
import os
import sys

_LOG = os.environ.get("NETGUARD_LOG")
# audit events of the socket module (https://docs.python.org/3/library/audit_events.html): the first
# argument is the host looked up, or the socket whose address is the second
_LOOKUPS = ("socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyname_ex", "socket.gethostbyaddr",
            "socket.getnameinfo")
_CONNECTIONS = ("socket.connect", "socket.sendto", "socket.sendmsg")
# programs started: the argument list (or the shell command) is the second argument, os.system's the first
_PROCESSES = ("subprocess.Popen", "os.exec", "os.posix_spawn", "os.spawn")


def _record(event: str, args: tuple) -> None:
    if event in _LOOKUPS:
        target = args[0]
    elif event in _CONNECTIONS:
        target = args[1] if len(args) > 1 else None
    elif event in _PROCESSES:
        target = args[1]
    elif event == "os.system":
        target = args[0]
    else:
        return
    line = json.dumps({"event": event, "target": repr(target), "pid": os.getpid(), "argv": sys.argv[:2]})
    with open(_LOG, "a") as log:
        log.write(line + "\n")


if _LOG:
    sys.addaudithook(_record)
