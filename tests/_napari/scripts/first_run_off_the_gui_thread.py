"""Run in a subprocess by test_gui_thread: press Run in a fresh process (torch not imported
yet) and report, as JSON, which thread imported torch and whether torch's C++ libraries were
already loaded when the import system loaded torch._C (so it did not hold the GIL for that)."""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
from pathlib import Path

seen: dict[str, object] = {}


class Watch:
    """A meta path finder that notes what it sees and finds nothing itself. The run puts its
    own finder in front of it, so it sees torch._C after that finder has had its turn."""

    def find_spec(self, fullname, path, target=None):
        if fullname == "torch":
            seen["torch imported in"] = threading.current_thread().name
        if fullname == "torch._C":
            maps = Path("/proc/self/maps").read_text()
            seen["torch._C loaded before its import"] = TORCH_C_NAME in maps
        return None


def torch_c_file_name() -> str:
    folder = Path(importlib.util.find_spec("torch").submodule_search_locations[0])
    return next(folder.glob("_C.*.so")).name  # the spec of torch._C would import torch


def main() -> None:
    from qtpy.QtWidgets import QApplication
    from tiny_widget import tiny_widget

    viewer, widget = tiny_widget(steps=2, snapshot_every=0)
    assert "torch" not in sys.modules, "torch was imported before Run"
    sys.meta_path.insert(0, Watch())
    widget.run()
    seen["torch imported at Run"] = "torch" in sys.modules
    done = threading.Event()
    while widget.running:
        QApplication.processEvents()
        done.wait(0.01)  # a pause for the event loop, not a timing
    seen["status"] = widget["status"].value
    viewer.close()
    print(json.dumps(seen), flush=True)


TORCH_C_NAME = torch_c_file_name()
main()
