"""No full garbage collection while a run goes on (napari's thread would wait for it).

A full collection walks every object of the process (napari's, Qt's and torch's: about
370 000) holding the GIL, in whichever thread set it off: 0.2 to 0.6 s on a 2-core machine,
during which napari cannot repaint. A first run's torch import (150 000 new objects) sets off
two or three of them. While any run goes on, the oldest generation's threshold is raised so
that Python makes none (the young generations are still collected, so the garbage of each step
goes as before); when the last run ends, the thresholds are put back. Nothing is frozen, so no
object escapes the collector: the deferred collection comes once the run is over, and frees
whatever the run left, layers removed meanwhile included.
"""

from __future__ import annotations

import gc
import threading

#: The oldest generation's threshold during a run: never reached (it counts collections of the
#: middle generation, about one per 7 000 new objects).
DEFERRED = 1 << 30

_lock = threading.Lock()
_running = 0
_saved: tuple[int, ...] | None = None


class FullCollectionsDeferred:
    """One run's hold on full collections: :meth:`begin` (any thread) stops them, :meth:`end`
    lets them go again once every run that began has ended. Each call counts once; ``end``
    without ``begin`` does nothing. The thresholds found at the first run's begin come back at
    the last one's end, unless someone else changed them meanwhile."""

    def __init__(self) -> None:
        self.held = False

    def begin(self) -> None:
        global _running, _saved
        with _lock:
            if self.held:
                return
            self.held = True
            if _running == 0:
                _saved = gc.get_threshold()
                young, middle, *_ = _saved
                gc.set_threshold(young, middle, DEFERRED)
            _running += 1

    def end(self) -> None:
        global _running, _saved
        with _lock:
            if not self.held:
                return
            self.held = False
            _running -= 1
            if _running == 0 and _saved is not None:
                if gc.get_threshold()[2:] == (DEFERRED,):  # nobody else changed them meanwhile
                    gc.set_threshold(*_saved)
                _saved = None
