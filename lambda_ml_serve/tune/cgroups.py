"""Lambda's CPU share and memory limit for one memory size, applied to child processes with Linux cgroups.

Lambda allocates CPU in proportion to the configured memory: 1,769 MB is the equivalent of one vCPU
(one vCPU-second of credit per second), so 128 MB gets about 7 % of one and 3,008 MB about 1.7
(https://docs.aws.amazon.com/lambda/latest/dg/configuration-memory.html). A CFS quota reproduces
that share of *this* host's CPU, not Lambda's CPUs; the memory limit is the size itself.

cgroup v1 (the ``cpu`` and ``memory`` controllers mounted under /sys/fs/cgroup/cpu and
/sys/fs/cgroup/memory) and cgroup v2 (one unified hierarchy with ``cpu`` and ``memory`` enabled at its
root) are supported; both need root. Every group is removed on exit, its processes killed first.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from lambda_ml_serve.errors import LambdaMLServeError

#: The memory size at which Lambda gives a function one full vCPU.
MB_PER_VCPU = 1769
#: The CFS period the quota is a share of (the kernel's default).
PERIOD_US = 100_000
#: The kernel refuses quotas under 1 ms.
MIN_QUOTA_US = 1000
ROOT = Path("/sys/fs/cgroup")
PREFIX = "lambda-ml-serve-tune-"


class CgroupError(LambdaMLServeError):
    """The CPU quota or memory limit cannot be applied on this machine."""


def vcpus(memory_mb: int) -> float:
    """Lambda's CPU share at ``memory_mb``, in vCPUs (1,769 MB is one)."""
    return memory_mb / MB_PER_VCPU


@dataclass(frozen=True)
class Limits:
    """The CFS quota and memory limit that stand for one Lambda memory size."""

    memory_mb: int

    @property
    def vcpus(self) -> float:
        return vcpus(self.memory_mb)

    @property
    def quota_us(self) -> int:
        return max(MIN_QUOTA_US, round(PERIOD_US * self.vcpus))

    @property
    def memory_bytes(self) -> int:
        return self.memory_mb * 1024 * 1024


@dataclass(frozen=True)
class Usage:
    """What a group's processes used: peak memory (bytes, page cache included) and OOM kills."""

    peak_bytes: int
    oom_kills: int
    throttled_periods: int


def detect(root: Path = ROOT) -> str | None:
    """``"v1"`` or ``"v2"``: which hierarchy offers the cpu and memory controllers; None when neither."""
    if (root / "cpu" / "cpu.cfs_quota_us").is_file() and (root / "memory" / "memory.limit_in_bytes").is_file():
        return "v1"
    controllers = root / "cgroup.controllers"
    if controllers.is_file() and {"cpu", "memory"} <= set(controllers.read_text().split()):
        return "v2"
    return None


class Cgroup:
    """A new group with a size's quota and limit; ``wrap(command)`` runs a command inside it.

    ``with Cgroup(Limits(512)) as group: subprocess.run(group.wrap(cmd))``; on exit every process
    still in the group is killed and the group removed, also after an error or Ctrl-C.
    """

    def __init__(self, limits: Limits, *, root: Path = ROOT) -> None:
        self.limits = limits
        self.version = detect(root)
        if self.version is None:
            raise CgroupError(
                f"no cgroup cpu and memory controllers under {root}; tune needs Linux with cgroup v1 or v2 "
                "(and root), or --image to let Docker apply the limits"
            )
        self.name = f"{PREFIX}{limits.memory_mb}mb-{uuid.uuid4().hex[:8]}"
        if self.version == "v1":
            self.dirs = [root / "cpu" / self.name, root / "memory" / self.name]
        else:
            self.dirs = [root / self.name]
        self._created: list[Path] = []

    @property
    def _cpu(self) -> Path:
        return self.dirs[0]

    @property
    def _memory(self) -> Path:
        return self.dirs[-1]

    def create(self) -> Cgroup:
        try:
            if self.version == "v2":
                # The root group may hold processes and still delegate controllers to its children.
                _write(self.dirs[0].parent / "cgroup.subtree_control", "+cpu +memory")
            for folder in self.dirs:
                folder.mkdir()
                self._created.append(folder)
            if self.version == "v1":
                _write(self._cpu / "cpu.cfs_period_us", str(PERIOD_US))
                _write(self._cpu / "cpu.cfs_quota_us", str(self.limits.quota_us))
                _write(self._memory / "memory.limit_in_bytes", str(self.limits.memory_bytes))
                swap = self._memory / "memory.memsw.limit_in_bytes"
                if swap.exists():  # no swapping past the limit, as in Lambda
                    _write(swap, str(self.limits.memory_bytes))
            else:
                _write(self._cpu / "cpu.max", f"{self.limits.quota_us} {PERIOD_US}")
                _write(self._memory / "memory.max", str(self.limits.memory_bytes))
                swap = self._memory / "memory.swap.max"
                if swap.exists():
                    _write(swap, "0")
        except OSError as exc:
            self.remove()
            raise CgroupError(
                f"cannot create cgroup {self.name} under {self.dirs[0].parent} ({exc.strerror}); tune applies "
                "Lambda's CPU share and memory limit with cgroups, which needs root"
            ) from None
        return self

    def wrap(self, command: list[str]) -> list[str]:
        """``command`` started inside this group: a shell joins it, then execs the command."""
        procs = [str(folder / "cgroup.procs") for folder in self.dirs]
        script = 'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 125; shift; n=$((n-1)); done; exec "$@"'
        return ["sh", "-c", script, "sh", str(len(procs)), *procs, *command]

    def applied(self) -> dict[str, int]:
        """The quota, period and memory limit as the kernel holds them (read back from the group's files)."""
        if self.version == "v1":
            return {
                "quota_us": int(_read(self._cpu / "cpu.cfs_quota_us")),
                "period_us": int(_read(self._cpu / "cpu.cfs_period_us")),
                "memory_bytes": int(_read(self._memory / "memory.limit_in_bytes")),
            }
        quota, period = _read(self._cpu / "cpu.max").split()
        return {
            "quota_us": int(quota),
            "period_us": int(period),
            "memory_bytes": int(_read(self._memory / "memory.max")),
        }

    def pids(self) -> list[int]:
        pids: set[int] = set()
        for folder in self._created:
            with contextlib.suppress(OSError):
                pids.update(int(p) for p in _read(folder / "cgroup.procs").split())
        return sorted(pids)

    def usage(self) -> Usage:
        """Peak memory, OOM kills and throttled periods so far."""
        if self.version == "v1":
            peak = int(_read(self._memory / "memory.max_usage_in_bytes"))
            oom = _field(_read(self._memory / "memory.oom_control"), "oom_kill")
            throttled = _field(_read(self._cpu / "cpu.stat"), "nr_throttled")
        else:
            peak_file = self._memory / "memory.peak"  # Linux 5.19+
            peak = int(_read(peak_file)) if peak_file.exists() else int(_read(self._memory / "memory.current"))
            oom = _field(_read(self._memory / "memory.events"), "oom_kill")
            throttled = _field(_read(self._cpu / "cpu.stat"), "nr_throttled")
        return Usage(peak_bytes=peak, oom_kills=oom, throttled_periods=throttled)

    def remove(self) -> None:
        """Kill what still runs in the group, then remove it (idempotent)."""
        deadline = time.monotonic() + 10
        while self._created:
            pids = self.pids()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            for folder in list(reversed(self._created)):
                try:
                    folder.rmdir()
                    self._created.remove(folder)
                except OSError:
                    pass
            if self._created:
                if time.monotonic() > deadline:
                    raise CgroupError(f"cgroup {self.name} still holds processes {pids}; remove it with rmdir")
                time.sleep(0.05)

    def __enter__(self) -> Cgroup:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.remove()


def _write(path: Path, value: str) -> None:
    path.write_text(value)


def _read(path: Path) -> str:
    return path.read_text().strip()


def _field(text: str, name: str) -> int:
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == name:
            return int(value)
    return 0
