"""Start a container's command in a private mount namespace, with its volumes
bind-mounted at their real paths.

The kubelet runs this file (standard library only, `python -I mountns.py`) as

    mountns.py SPEC -- ARGV...

where SPEC is a JSON list of {"source", "target", "readOnly"}. It unshares the mount
namespace (CLONE_NEWNS), makes every mount private (so nothing propagates back to the
machine), bind-mounts each source at its target (creating a missing target directory,
or an empty file for a file source, on the machine's filesystem: the namespace has no
root filesystem of its own), remounts read-only mounts read-only, then replaces itself
with ARGV (same process id, same environment). A mount that fails is reported on
standard error (the container's log) and skipped: the kubelet also rewrites mount paths
in the command, args and env, so programs that take their paths from there still work.

`mountns.py --check` exits 0 when mount namespaces are available here (Linux, root or
CAP_SYS_ADMIN), 1 with the reason on standard error otherwise.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import sys

CLONE_NEWNS = 0x00020000
MS_RDONLY = 0x1
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.unshare.argtypes = [ctypes.c_int]
    libc.mount.argtypes = [
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_ulong,
        ctypes.c_void_p,
    ]
    return libc


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def private_namespace(libc: ctypes.CDLL) -> None:
    _check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "make / private")


def bind(libc: ctypes.CDLL, source: int, target: str, read_only: bool) -> None:
    """Bind the directory or file open as `source` (an O_PATH descriptor, opened before
    any mount, so that an earlier mount cannot change what a source path means)."""
    if os.path.isdir(f"/proc/self/fd/{source}"):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target) or "/", exist_ok=True)
        if not os.path.exists(target):
            with open(target, "a"):
                pass
    src, dst = f"/proc/self/fd/{source}".encode(), target.encode()
    _check(libc.mount(src, dst, None, MS_BIND | MS_REC, None), f"bind at {target}")
    if read_only:
        flags = MS_BIND | MS_REMOUNT | MS_RDONLY
        _check(libc.mount(None, dst, None, flags, None), f"remount {target} read-only")


def main(argv: list[str]) -> int:
    if argv[1:] == ["--check"]:
        if not sys.platform.startswith("linux"):
            print("mount namespaces need Linux", file=sys.stderr)
            return 1
        try:
            private_namespace(_libc())
        except OSError as exc:
            print(f"{exc.strerror} (needs root or CAP_SYS_ADMIN)", file=sys.stderr)
            return 1
        return 0
    if len(argv) < 4 or argv[2] != "--":
        print("usage: mountns.py SPEC -- ARGV...", file=sys.stderr)
        return 2
    spec = json.loads(argv[1])
    command = argv[3:]
    libc = _libc()
    try:
        private_namespace(libc)
    except OSError as exc:
        print(f"devcluster: no private mount namespace ({exc.strerror})", file=sys.stderr)
    else:
        sources: dict[str, int] = {}
        for mount in spec:
            try:
                sources[str(mount["source"])] = os.open(str(mount["source"]), os.O_PATH)
            except OSError as exc:
                print(f"devcluster: cannot open {mount['source']}: {exc.strerror}", file=sys.stderr)
        for mount in sorted(spec, key=lambda m: len(str(m["target"]))):
            source = sources.get(str(mount["source"]))
            if source is None:
                continue
            try:
                bind(libc, source, str(mount["target"]), bool(mount.get("readOnly")))
            except OSError as exc:
                print(
                    f"devcluster: could not mount {mount['source']} at {mount['target']} "
                    f"({exc.strerror}); use the rewritten path",
                    file=sys.stderr,
                )
        for descriptor in sources.values():
            os.close(descriptor)
    sys.stderr.flush()
    os.execv(command[0], command)
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv))
