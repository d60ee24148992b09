"""The walk of one commission from payment to the download mail, module by module, measured.

    python scripts/commission_walk.py            # the tree this script is in
    python scripts/commission_walk.py --tree DIR # another checkout (its src/ and tests/)

Runs the end-to-end sale test (tests/web/test_sales.py, the demo provider's commission, SQLite)
with this file as a pytest plugin. From the call that records the payment
(``payments.record_payment``) to the mail handed to the SMTP server, it records every call into
a module of ``atelier.service`` from another module, in the thread that records the payment,
the worker threads and the mail sender. Consecutive calls into one module in one thread count
as one visit; the process-wide helpers (context, i18n, metrics, lanes, errors) are left out.
It prints the visits in order, per module and with ``commission/`` counted as one package.
docs/DESIGN.md ("The walk of one commission") quotes its figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HELPERS = {"context", "i18n", "metrics", "lanes", "errors"}
_EVENTS: list[tuple[float, str, str, str]] = []
_STATE: dict[str, Any] = {"on": False, "pay_thread": None, "done": False}


def _profile(frame: Any, event: str, arg: Any) -> None:
    if _STATE["done"]:
        return
    module = frame.f_globals.get("__name__", "")
    if not module.startswith("atelier."):
        return
    name = frame.f_code.co_name
    thread = threading.current_thread().name
    paying = module == "atelier.service.payments" and name == "record_payment"
    if event == "call" and paying and not _STATE["on"]:
        _STATE.update(on=True, pay_thread=thread)
    if not _STATE["on"]:
        return
    if event == "return" and paying and thread == _STATE["pay_thread"]:
        _STATE["pay_thread"] = None  # the request thread is done with the payment
        return
    if event != "call" or not (thread == _STATE["pay_thread"] or thread.startswith(("worker", "mail"))):
        return
    if module == "atelier.service.mail" and name == "send" and type(frame.f_locals.get("self")).__name__ in ("SmtpTransport", "FolderTransport"):
        _EVENTS.append((time.monotonic(), thread, module, "transport.send"))
        _STATE["done"] = True
        return
    caller = frame.f_back
    if caller is not None and caller.f_globals.get("__name__", "") == module and not (paying and not _EVENTS):
        return
    if name.startswith(("<", "__create_fn__")):  # a lazy import, a dataclass being made
        return
    _EVENTS.append((time.monotonic(), thread, module, name))


def pytest_configure(config: Any) -> None:
    threading.setprofile(_profile)
    sys.setprofile(_profile)


def pytest_unconfigure(config: Any) -> None:
    sys.setprofile(None)
    Path(os.environ["COMMISSION_WALK_OUT"]).write_text(json.dumps(_EVENTS))


def visits(events: list[list[Any]], *, packages: bool) -> list[tuple[str, str, list[str]]]:
    """(module, thread, functions) per visit."""
    walk: list[tuple[str, str, list[str]]] = []
    for _, thread, module, name in events:
        if not module.startswith("atelier.service."):
            continue
        short = module.removeprefix("atelier.service.")
        if short in HELPERS:
            continue
        if packages:
            short = short.split(".")[0]
        if walk and walk[-1][0] == short and walk[-1][1] == thread:
            walk[-1][2].append(name)
            continue
        walk.append((short, thread, [name]))
    return walk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, default=Path(__file__).resolve().parents[1])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "walk.json"
        env = {
            **os.environ,
            "COMMISSION_WALK_OUT": str(out),
            "PYTHONPATH": os.pathsep.join([str(args.tree / "src"), str(Path(__file__).resolve().parent)]),
        }
        subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "commission_walk", "-p", "no:cacheprovider", "-q",
             "tests/web/test_sales.py", "-k", "end_to_end and sqlite"],
            cwd=args.tree, env=env, check=True, stdout=subprocess.DEVNULL,
        )
        events = json.loads(out.read_text())
    for packages in (False, True):
        walk = visits(events, packages=packages)
        label = "commission/ as one package" if packages else "per module"
        print(f"{label}: {len(walk)} visits to {len({m for m, _, _ in walk})} modules")
        print("  " + " -> ".join(m for m, _, _ in walk))
    for module, thread, names in visits(events, packages=False):
        print(f"  {module:20} {thread:22} {', '.join(dict.fromkeys(names))}")


if __name__ == "__main__":
    main()
