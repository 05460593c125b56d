"""Prints the CPU quota, period and memory limit of the cgroups this process runs in, as the kernel holds them."""

import json
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
found = {}
for line in Path("/proc/self/cgroup").read_text().splitlines():
    _, controllers, path = line.split(":", 2)
    if controllers == "cpu":
        group = ROOT / "cpu" / path.lstrip("/")
        found["quota_us"] = int((group / "cpu.cfs_quota_us").read_text())
        found["period_us"] = int((group / "cpu.cfs_period_us").read_text())
        found["group"] = path
    elif controllers == "memory":
        found["memory_bytes"] = int((ROOT / "memory" / path.lstrip("/") / "memory.limit_in_bytes").read_text())
    elif controllers == "" and (ROOT / path.lstrip("/") / "cpu.max").exists():
        group = ROOT / path.lstrip("/")
        quota, period = (group / "cpu.max").read_text().split()
        found.update(quota_us=int(quota), period_us=int(period), group=path)
        found["memory_bytes"] = int((group / "memory.max").read_text())
print(json.dumps(found))
