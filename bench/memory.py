"""Peak resident memory of the stack's processes, sampled in a thread of the bench process."""

import logging
import threading

import psutil  # type: ignore[import-untyped]

log = logging.getLogger(__name__)

MB = 1024 * 1024


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants (0 once it is gone)."""
    try:
        root = psutil.Process(pid)
        family = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for process in family:
        try:
            total += int(process.memory_info().rss)
        except psutil.NoSuchProcess:
            # A child that exits between the listing and the reading holds no memory.
            continue
    return total


class PeakRss:
    """Samples named process trees every `interval` seconds and keeps each one's peak.

    A sampler rather than the kernel's VmHWM, because VmHWM covers one process from its start
    and the figure wanted is a process tree's peak within one scenario.
    """

    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self._pids: dict[str, int] = {}
        self._peaks: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="peak-rss", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def watch(self, name: str, pid: int) -> None:
        """Follows `pid` under `name` from now on (a restarted process replaces its old pid)."""
        with self._lock:
            self._pids[name] = pid

    def unwatch(self, name: str) -> None:
        """Stops following `name` (a worker process not restarted: fewer workers from now on);
        its peak so far stays until the next `reset`."""
        with self._lock:
            self._pids.pop(name, None)

    def reset(self) -> None:
        """Forgets the peaks: what follows is a new scenario."""
        with self._lock:
            self._peaks.clear()
        self._sample()

    def peaks_mb(self) -> dict[str, float]:
        self._sample()
        with self._lock:
            return {name: round(value / MB, 1) for name, value in sorted(self._peaks.items())}

    def _sample(self) -> None:
        with self._lock:
            pids = dict(self._pids)
        readings = {name: tree_rss(pid) for name, pid in pids.items()}
        with self._lock:
            for name, value in readings.items():
                self._peaks[name] = max(self._peaks.get(name, 0), value)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._sample()
            except psutil.Error as error:
                log.warning("memory sample failed: %s", error)
