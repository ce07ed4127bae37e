"""The Kubernetes Pod Security Standards, "restricted" profile (which includes "baseline"), as published
at kubernetes.io/docs/concepts/security/pod-security-standards (policy version v1.30+), written from the
standard's tables rather than from our manifests: every control, one check each. `violations()` lists
what a pod spec (and its annotations) breaks; an empty list is a pod the restricted namespace label would
admit. The annotations matter: AppArmor's, and seccomp's legacy ones, which the standard still checks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

BASELINE_CAPABILITIES = {
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
    "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
}  # fmt: skip
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}  # fmt: skip
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"  # + a container's name
SECCOMP_POD_ANNOTATION = "seccomp.security.alpha.kubernetes.io/pod"
SECCOMP_CONTAINER_ANNOTATION = "container.seccomp.security.alpha.kubernetes.io/"  # + a container's name
RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected",
    "secret",
}  # fmt: skip


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for key in ("containers", "initContainers", "ephemeralContainers") for c in spec.get(key) or ()]


def _seccomp_ok(profile: dict[str, Any] | None, allowed: set[str]) -> bool:
    return profile is None or profile.get("type") in allowed


def _annotations(annotations: Mapping[str, str]) -> list[str]:
    """AppArmor: runtime/default or localhost/<profile> (unconfined disables it). Seccomp's legacy
    annotations: runtime/default, docker/default or localhost/<profile> (not unconfined)."""
    found = []
    for key, value in annotations.items():
        if key.startswith(APPARMOR_ANNOTATION) and not (
            value in ("", "runtime/default") or value.startswith("localhost/")
        ):
            found.append(f"annotation {key}: AppArmor must be runtime/default or localhost/*, not {value!r}")
        seccomp = key == SECCOMP_POD_ANNOTATION or key.startswith(SECCOMP_CONTAINER_ANNOTATION)
        if seccomp and not (
            value in ("", "runtime/default", "docker/default") or value.startswith("localhost/")
        ):
            found.append(f"annotation {key}: seccomp must be runtime/default or localhost/*, not {value!r}")
    return found


def baseline(spec: dict[str, Any], annotations: Mapping[str, str] | None = None) -> list[str]:
    found = _annotations(annotations or {})
    found += [
        f"{key} must be unset or false" for key in ("hostNetwork", "hostPID", "hostIPC") if spec.get(key)
    ]
    pod_sc = spec.get("securityContext") or {}
    if spec.get("securityContext", {}).get("windowsOptions", {}).get("hostProcess"):
        found.append("hostProcess is forbidden")
    found += [
        f"volume {v['name']}: hostPath is forbidden" for v in spec.get("volumes") or () if "hostPath" in v
    ]
    if not _seccomp_ok(pod_sc.get("seccompProfile"), {"RuntimeDefault", "Localhost"}):
        found.append("pod seccompProfile must not be Unconfined")
    found += [
        f"sysctl {s['name']} is not a safe sysctl"
        for s in pod_sc.get("sysctls") or ()
        if s["name"] not in SAFE_SYSCTLS
    ]
    for where, sc in [("pod", pod_sc)] + [
        (c["name"], c.get("securityContext") or {}) for c in _containers(spec)
    ]:
        selinux = sc.get("seLinuxOptions") or {}
        if selinux.get("type", "") not in SELINUX_TYPES or selinux.get("user") or selinux.get("role"):
            found.append(f"{where}: seLinuxOptions outside the allowed types, or a user or role")
        apparmor = (sc.get("appArmorProfile") or {}).get("type")
        if apparmor not in (None, "RuntimeDefault", "Localhost"):
            found.append(f"{where}: appArmorProfile must be RuntimeDefault or Localhost")
    for c in _containers(spec):
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            found.append(f"{c['name']}: privileged")
        added = set((sc.get("capabilities") or {}).get("add") or ())
        if added - BASELINE_CAPABILITIES:
            found.append(f"{c['name']}: adds capabilities beyond the baseline set: {sorted(added)}")
        if any(p.get("hostPort") for p in c.get("ports") or ()):
            found.append(f"{c['name']}: hostPort must be unset or 0")
        if sc.get("procMount", "Default") != "Default":
            found.append(f"{c['name']}: procMount must be Default")
        if not _seccomp_ok(sc.get("seccompProfile"), {"RuntimeDefault", "Localhost"}):
            found.append(f"{c['name']}: seccompProfile must not be Unconfined")
    return found


def restricted(spec: dict[str, Any], annotations: Mapping[str, str] | None = None) -> list[str]:
    found = baseline(spec, annotations)
    found += [
        f"volume {v['name']}: type not allowed"
        for v in spec.get("volumes") or ()
        if not set(v) - {"name"} <= RESTRICTED_VOLUMES
    ]
    pod_sc = spec.get("securityContext") or {}
    if pod_sc.get("runAsUser") == 0:
        found.append("pod runAsUser must not be 0")
    for c in _containers(spec):
        sc = c.get("securityContext") or {}
        if sc.get("allowPrivilegeEscalation") is not False:
            found.append(f"{c['name']}: allowPrivilegeEscalation must be false")
        if not (
            sc.get("runAsNonRoot") is True
            or (pod_sc.get("runAsNonRoot") is True and sc.get("runAsNonRoot") is not False)
        ):
            found.append(f"{c['name']}: runAsNonRoot must be true (pod or container)")
        if sc.get("runAsUser") == 0:
            found.append(f"{c['name']}: runAsUser must not be 0")
        profile = sc.get("seccompProfile") or pod_sc.get("seccompProfile")
        if not profile or profile.get("type") not in {"RuntimeDefault", "Localhost"}:
            found.append(
                f"{c['name']}: seccompProfile must be RuntimeDefault or Localhost (pod or container)"
            )
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or ()):
            found.append(f"{c['name']}: capabilities must drop ALL")
        if set(caps.get("add") or ()) - {"NET_BIND_SERVICE"}:
            found.append(f"{c['name']}: may add only NET_BIND_SERVICE")
    return found


def violations(
    spec: dict[str, Any], read_only_root: bool = True, annotations: Mapping[str, str] | None = None
) -> list[str]:
    """The restricted profile, plus the read-only root filesystem that we ask of our own containers.
    `annotations`: the pod's (a template's metadata.annotations)."""
    found = restricted(spec, annotations)
    if read_only_root:
        found += [
            f"{c['name']}: readOnlyRootFilesystem must be true"
            for c in _containers(spec)
            if (c.get("securityContext") or {}).get("readOnlyRootFilesystem") is not True
        ]
    return found
