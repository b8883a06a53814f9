"""Peak memory of process trees (a server and everything it started), sampled from /proc in a
thread: summed RSS (shared pages counted once per process), the largest single process, and
summed PSS, per phase of a benchmark."""

import threading
from dataclasses import dataclass

from animalsite.processes import descendants

SAMPLE_EVERY_S = 0.5


def memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in kB; (0, 0) when it is gone."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            rss = next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)
        with open(f"/proc/{pid}/smaps_rollup") as f:
            pss = next((int(line.split()[1]) for line in f if line.startswith("Pss:")), 0)
    except (OSError, ValueError):
        pass
    return rss, pss


@dataclass
class Peak:
    rss_sum_kb: int = 0
    rss_max_single_kb: int = 0
    pss_sum_kb: int = 0
    processes: int = 0

    def update(self, sample: list[tuple[int, int]]) -> None:
        self.rss_sum_kb = max(self.rss_sum_kb, sum(r for r, _ in sample))
        self.rss_max_single_kb = max(self.rss_max_single_kb, max((r for r, _ in sample), default=0))
        self.pss_sum_kb = max(self.pss_sum_kb, sum(p for _, p in sample))
        self.processes = max(self.processes, len(sample))

    def merge(self, other: "Peak") -> None:
        for name in ("rss_sum_kb", "rss_max_single_kb", "pss_sum_kb", "processes"):
            setattr(self, name, max(getattr(self, name), getattr(other, name)))

    def mb(self) -> dict:
        return {"rss_sum_mb": round(self.rss_sum_kb / 1024, 1),
                "rss_max_single_mb": round(self.rss_max_single_kb / 1024, 1),
                "pss_sum_mb": round(self.pss_sum_kb / 1024, 1), "processes": self.processes}


class MemorySampler(threading.Thread):
    """Every 0.5 s: RSS/PSS of each tree, into the peaks of the phase now running."""

    def __init__(self, roots: dict[str, int]):
        super().__init__(daemon=True)
        self.roots, self.phase = roots, "idle"
        self.peaks: dict[str, dict[str, Peak]] = {}
        self.stopping = threading.Event()

    def sample(self) -> None:
        peaks = self.peaks.setdefault(self.phase, {name: Peak() for name in self.roots})
        for name, root in self.roots.items():
            peaks[name].update([memory_kb(pid) for pid in descendants(root)])

    def run(self):
        while not self.stopping.is_set():
            self.sample()
            self.stopping.wait(SAMPLE_EVERY_S)

    def enter(self, phase: str) -> None:
        self.phase = phase
        self.sample()
