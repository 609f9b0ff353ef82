"""Running hostile cases in a child process under an address-space limit (``RLIMIT_AS``), so that a
defect that allocates by an attacker's size fails its test with a MemoryError instead of taking
the test process, or the machine, down.

The child imports :mod:`structures` (torch and numpy map hundreds of MB) before the limit is set,
then allows ``headroom`` bytes more than it has mapped: enough for any case that checks its sizes
first, far less than one that allocates by them. All the cases share one child, so the import is
paid once.
"""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
#: Bytes a case may map above the child's footprint after the import.
HEADROOM = 768 << 20

_CHILD = """
import json, resource, sys
import structures  # noqa: F401
mapped = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
limit = mapped + int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
results = {}
for name, code in json.loads(sys.argv[1]).items():
    try:
        exec(code, {})
        results[name] = ["ok", ""]
    except BaseException as err:  # the parent asserts on the type and the message
        results[name] = [type(err).__name__, str(err)[:2000]]
print("RESULTS" + json.dumps(results))
"""


def run_limited(cases: dict[str, str], headroom: int = HEADROOM, timeout: float = 120) -> dict[str, tuple[str, str]]:
    """``{case: (exception type name or "ok", message)}`` of each code snippet, run in order in one
    child process whose address space is limited to its import footprint plus ``headroom``."""
    proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(cases), str(headroom)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULTS")]
    assert proc.returncode == 0 and lines, f"the child failed (rc {proc.returncode}): {proc.stderr[-2000:]}"
    return {name: tuple(result) for name, result in json.loads(lines[-1][len("RESULTS"):]).items()}
