"""Run a built image with the Lambda Runtime Interface Emulator and invoke it over loopback.

The container shares the host's network namespace and RIE is told explicit 127.0.0.1 addresses, so
nothing listens beyond loopback (RIE's own default is 0.0.0.0).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from lambda_ml_serve.errors import LambdaMLServeError

INVOKE_PATH = "/2015-03-31/functions/function/invocations"


class ContainerError(LambdaMLServeError):
    """The container could not start, or did not answer as a Lambda function."""


class FunctionError(RuntimeError):
    """The function itself failed (RIE answered with an error payload)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RieContainer:
    """``with RieContainer(tag) as fn: fn.invoke(event)`` — one container, removed on exit.

    ``volumes`` maps host folders to container paths (mounted read-only, e.g. an unpacked zip as
    ``/var/task``); ``handler`` replaces the image's CMD; ``log_stream`` receives the container's
    output (the function's JSON log lines, RIE's own lines) while it runs, up to its last line;
    ``run_args`` are further ``docker run`` flags (e.g. ``--cpus``, ``--memory``).
    """

    def __init__(
        self,
        image: str,
        *,
        env: dict[str, str] | None = None,
        docker_host: str | None = None,
        volumes: dict[str, str] | None = None,
        handler: str | None = None,
        log_stream: TextIO | None = None,
        run_args: Sequence[str] = (),
    ) -> None:
        self.image = image
        self.env = env or {}
        self.volumes = volumes or {}
        self.handler = handler
        self.log_stream = log_stream
        self.run_args = list(run_args)
        self._follower: subprocess.Popen[bytes] | None = None
        self.port = free_port()
        self._api_port = free_port()
        self._docker = shutil.which("docker")
        if self._docker is None:
            raise ContainerError("the docker client is not on PATH; install Docker to run an image")
        self._proc_env = {**os.environ, **({"DOCKER_HOST": docker_host} if docker_host else {})}
        self.container_id: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{INVOKE_PATH}"

    def _docker_run(self, *args: str, timeout: float = 60) -> str:
        result = subprocess.run(
            [self._docker, *args], capture_output=True, text=True, env=self._proc_env, timeout=timeout
        )
        if result.returncode != 0:
            raise ContainerError(f"docker {args[0]} failed: {result.stderr.strip().splitlines()[-1:]}")
        return result.stdout.strip()

    def start(self, timeout: float = 60) -> RieContainer:
        env_args = []
        for key, value in {
            **self.env,
            "LMS_RIE_ADDRESS": f"127.0.0.1:{self.port}",
            "LMS_RIE_RUNTIME_API_ADDRESS": f"127.0.0.1:{self._api_port}",
        }.items():
            env_args += ["-e", f"{key}={value}"]
        for source, target in self.volumes.items():
            env_args += ["--volume", f"{source}:{target}:ro"]
        command = [self.handler] if self.handler else []
        self.container_id = self._docker_run(
            "run", "-d", "--network", "host", *self.run_args, *env_args, self.image, *command
        )
        if self.log_stream is not None:
            self._follower = subprocess.Popen(
                [self._docker, "logs", "--follow", self.container_id],
                stdin=subprocess.DEVNULL,
                stdout=self.log_stream,
                stderr=self.log_stream,
                env=self._proc_env,
            )
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    logs = self.logs()
                    self.stop()
                    raise ContainerError(f"{self.image} did not listen on 127.0.0.1:{self.port}: {logs}") from None
                time.sleep(0.1)

    def invoke(self, event: Any, timeout: float = 60) -> Any:
        """Invoke the function once; raises FunctionError when the function reports an error."""
        request = urllib.request.Request(self.url, data=json.dumps(event).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
            failed = response.headers.get("X-Amz-Function-Error")
        result = json.loads(body) if body else None
        if failed or (isinstance(result, dict) and {"errorMessage", "errorType"} <= set(result)):
            raise FunctionError(f"{result.get('errorType')}: {result.get('errorMessage')}")
        return result

    def logs(self) -> str:
        if self.container_id is None:
            return ""
        result = subprocess.run(
            [self._docker, "logs", self.container_id], capture_output=True, text=True, env=self._proc_env, timeout=30
        )
        return (result.stdout + result.stderr)[-2000:]

    def inspect(self) -> dict[str, Any]:
        """``docker inspect`` of the running (or exited, not yet removed) container."""
        if self.container_id is None:
            return {}
        return json.loads(self._docker_run("inspect", self.container_id))[0]

    def limits(self) -> dict[str, float]:
        """The CPU and memory limits Docker applied (vCPUs, bytes), from ``docker inspect``."""
        host = self.inspect().get("HostConfig", {})
        return {"cpus": host.get("NanoCpus", 0) / 1e9, "memory_bytes": host.get("Memory", 0)}

    def oom_killed(self) -> bool:
        """Whether the kernel killed a process of the container for exceeding its memory limit."""
        return bool(self.inspect().get("State", {}).get("OOMKilled"))

    def peak_memory(self) -> int | None:
        """The container cgroup's peak memory in bytes, when its cgroup is readable from here."""
        pid = self.inspect().get("State", {}).get("Pid")
        if not pid:
            return None
        try:
            lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        except OSError:
            return None
        for line in lines:
            _, controllers, path = line.split(":", 2)
            if controllers == "memory":  # cgroup v1
                candidate = Path("/sys/fs/cgroup/memory") / path.lstrip("/") / "memory.max_usage_in_bytes"
            elif controllers == "":  # cgroup v2
                candidate = Path("/sys/fs/cgroup") / path.lstrip("/") / "memory.peak"
            else:
                continue
            try:
                return int(candidate.read_text())
            except (OSError, ValueError):
                continue
        return None

    def stop(self) -> None:
        if self.container_id is not None:
            subprocess.run(
                [self._docker, "rm", "-f", self.container_id], capture_output=True, env=self._proc_env, timeout=60
            )
            self.container_id = None
        if self._follower is not None:
            try:  # `docker logs --follow` ends by itself once the container is gone, its last lines written
                self._follower.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._follower.terminate()
                self._follower.wait(timeout=30)
            self._follower = None

    def __enter__(self) -> RieContainer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
