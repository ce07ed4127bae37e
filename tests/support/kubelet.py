"""Plays the kubelet on kube-lite, which has no controllers: every Deployment of a namespace runs as a
local process, from its pod template's first container (command, args, env), and its status follows
that container's readiness probe.

- `resonance ...` commands run as `python -m resonance_local ...` from this checkout;
- each containerPort gets a free local port, and env values naming a container port get that port
  (RESONANCE_HTTP_PORT=8080 becomes RESONANCE_HTTP_PORT=<free>);
- a listen address on a container port (RESONANCE_LISTEN=0.0.0.0:8765) becomes 127.0.0.1:<its port>:
  what a listening node's Service leads to (`port(deployment, "websocket")`);
- `hosts` maps Service addresses to local ones in env values (lexamoris-server:8766 -> 127.0.0.1:<port>);
- downward-API namespaces and Secret keys are resolved as the kubelet would; Secret volumes become
  files in the logs folder (rewritten at every pass, as the kubelet follows a Secret's updates), and
  env values under a volume's mountPath point at them;
- a process that dies is restarted, unless the test holds it down (`hold`), as with a crash loop.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resonance_local.embedded import free_port

from .kube import Cluster


@dataclass
class Pod:
    template: str  # hash of the pod template the process runs
    process: subprocess.Popen[bytes]
    ports: dict[str, int]  # container port (name and number) -> local port
    probe: dict[str, Any] | None
    starts: int = 1


@dataclass
class Kubelet:
    cluster: Cluster
    namespace: str
    logs: Path
    hosts: dict[str, str] = field(default_factory=dict)
    pods: dict[str, Pod] = field(default_factory=dict)  # by Deployment name
    held: set[str] = field(default_factory=set)
    reported: dict[str, dict[str, Any]] = field(default_factory=dict)
    _secrets: dict[str, dict[str, Any]] = field(default_factory=dict)
    _config_maps: dict[str, dict[str, Any]] = field(default_factory=dict)
    # sync() runs in a thread, which cancelling run() does not stop: stop() waits for a pass under
    # way and bars later ones, or a pass finishing after it starts bridges nobody kills.
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stopped: bool = False

    async def run(self) -> None:
        while True:
            await asyncio.to_thread(self.sync)
            await asyncio.sleep(0.5)

    def hold(self, name: str) -> None:
        """Kill the Deployment's process (SIGKILL) and keep it down until release()."""
        with self._lock:  # not restarted by a pass under way
            self.held.add(name)
            pod = self.pods.pop(name, None)
            if pod is not None:
                pod.process.send_signal(signal.SIGKILL)
                pod.process.wait()

    def release(self, name: str) -> None:
        self.held.discard(name)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            for pod in self.pods.values():
                if pod.process.poll() is None:
                    pod.process.send_signal(signal.SIGKILL)
                    pod.process.wait()
            self.pods.clear()

    def port(self, name: str, container_port: str) -> int:
        return self.pods[name].ports[container_port]

    # --- one pass ---------------------------------------------------------------------------------

    def sync(self) -> None:
        with self._lock:
            if not self._stopped:
                self._pass()

    def _pass(self) -> None:
        deployments = self.cluster.items("deployments", self.namespace)
        if any(d["spec"]["template"]["spec"].get("volumes") for d in deployments):
            self._secrets = {s["metadata"]["name"]: s for s in self.cluster.items("secrets", self.namespace)}
            self._config_maps = {
                c["metadata"]["name"]: c for c in self.cluster.items("configmaps", self.namespace)
            }
        for deployment in deployments:
            with contextlib.suppress(Exception):  # an object mid-change: the next pass sees it whole
                self._mount(deployment["metadata"]["name"], deployment["spec"]["template"])
                self._sync(deployment)

    def _mount(self, name: str, template: dict[str, Any]) -> dict[str, str]:
        """Write the template's Secret and ConfigMap volumes as files, following their changes (a key
        gone is a file gone); mountPath -> local folder."""
        volumes = {v["name"]: v for v in template["spec"].get("volumes", ())}
        folders: dict[str, str] = {}
        for mount in template["spec"]["containers"][0].get("volumeMounts", ()):
            volume = volumes[mount["name"]]
            folder = self.logs / name / mount["name"]
            folder.mkdir(parents=True, exist_ok=True)
            if "configMap" in volume:
                source = volume["configMap"]
                plain = (self._config_maps.get(source["name"]) or {}).get("data") or {}
                data = {k: base64.b64encode(v.encode()).decode() for k, v in plain.items()}
                for gone in [f for f in folder.iterdir() if f.name not in data and f.suffix != ".new"]:
                    gone.unlink()
            else:
                source = volume["secret"]
                data = (self._secrets.get(source["secretName"]) or {}).get("data") or {}
            for item in source.get("items") or [{"key": k, "path": k} for k in data]:
                if item["key"] in data:
                    target = folder / item["path"]
                    fresh = base64.b64decode(data[item["key"]])
                    if not target.exists() or target.read_bytes() != fresh:
                        target.with_suffix(".new").write_bytes(fresh)  # swapped in whole, as
                        target.with_suffix(".new").replace(target)  # the kubelet's atomic writer does
            folders[mount["mountPath"]] = str(folder)
        return folders

    def _sync(self, deployment: dict[str, Any]) -> None:
        name = deployment["metadata"]["name"]
        template = deployment["spec"]["template"]
        digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()
        wanted = deployment["spec"].get("replicas", 1) > 0 and name not in self.held
        pod = self.pods.get(name)
        if pod is not None and (not wanted or pod.template != digest):
            pod.process.terminate()  # a new template or scaled to zero: as a rollout replaces the pod
            with contextlib.suppress(subprocess.TimeoutExpired):
                pod.process.wait(20)
            if pod.process.poll() is None:
                pod.process.kill()
            del self.pods[name]
            pod = None
        if wanted and pod is None:
            self.pods[name] = self._start(name, template, digest)
        elif wanted and pod is not None and pod.process.poll() is not None:
            self.pods[name] = self._start(name, template, digest, starts=pod.starts + 1)  # crashed
        self._report(deployment, self.pods.get(name))

    def _start(self, name: str, template: dict[str, Any], digest: str, starts: int = 1) -> Pod:
        container = template["spec"]["containers"][0]
        ports: dict[str, int] = {}
        for spec in container.get("ports", []):
            local = free_port()
            ports[str(spec["containerPort"])] = local
            if "name" in spec:
                ports[spec["name"]] = local
        env = {**os.environ, "KUBECONFIG": str(self.cluster.kubeconfig)}
        folders = self._mount(name, template)
        for item in container.get("env", []):
            value = self._value(item, ports, name)
            for mount_path, folder in folders.items():
                value = (
                    value.replace(mount_path + "/", folder + "/") if value.startswith(mount_path) else value
                )
            env[item["name"]] = value
        command = [*container.get("command", []), *container.get("args", [])]
        if command and command[0] == "resonance":
            command = [sys.executable, "-m", "resonance_local", *command[1:]]
        with open(self.logs / f"{name}.log", "ab") as out:
            process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        return Pod(digest, process, ports, container.get("readinessProbe"), starts)

    def _value(self, item: dict[str, Any], ports: dict[str, int], name: str) -> str:
        if "value" in item:
            value = str(item["value"])
            if value in ports:
                return str(ports[value])
            host, colon, port = value.rpartition(":")
            if colon and port in ports and host in ("0.0.0.0", ""):  # a listen address: its local port
                return f"127.0.0.1:{ports[port]}"
            for service, local in self.hosts.items():
                value = value.replace(service, local)
            return value
        source = item["valueFrom"]
        if "fieldRef" in source:
            path = source["fieldRef"]["fieldPath"]
            assert path in ("metadata.namespace", "metadata.name"), source
            return self.namespace if path == "metadata.namespace" else f"{name}-pod"
        ref = source["secretKeyRef"]
        secret = self.cluster.get("secret", ref["name"], self.namespace) or {}
        return base64.b64decode(secret.get("data", {}).get(ref["key"], "")).decode()

    def _ready(self, pod: Pod | None) -> bool:
        if pod is None or pod.process.poll() is not None:
            return False
        if pod.probe is None:
            return True
        get = pod.probe["httpGet"]
        url = f"http://127.0.0.1:{pod.ports[str(get['port'])]}{get['path']}"
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def _report(self, deployment: dict[str, Any], pod: Pod | None) -> None:
        """The Deployment's status, as its controller and the kubelet together would write it."""
        running = int(pod is not None and pod.process.poll() is None)
        ready = int(self._ready(pod))
        status = {
            "observedGeneration": deployment["metadata"].get("generation", 1),
            "replicas": running,
            "updatedReplicas": running,
            "readyReplicas": ready,
            "availableReplicas": ready,
        }
        name = deployment["metadata"]["name"]
        if self.reported.get(name) != status:
            self.cluster.patch("deployment", name, self.namespace, {"status": status}, "status")
            self.reported[name] = status


@contextlib.asynccontextmanager
async def running(cluster: Cluster, namespace: str, logs: Path, **hosts: str) -> AsyncIterator[Kubelet]:
    """The harness at work on the namespace for the duration; every process it started killed after."""
    cluster.needs_fake_status()
    kubelet = Kubelet(cluster, namespace, logs, hosts)
    task = asyncio.create_task(kubelet.run())
    try:
        yield kubelet
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        kubelet.stop()
