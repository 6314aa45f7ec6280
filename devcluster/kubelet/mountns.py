"""Start a container's command in a private mount namespace, with its volumes
bind-mounted at their real paths, without touching the machine's filesystem.

The kubelet runs this file (standard library only, `python -I mountns.py`) as

    mountns.py SPEC -- ARGV...

where SPEC is JSON: {"root": DIR, "cwd": DIR, "mounts": [{"source", "target",
"readOnly"}]}. It unshares the mount namespace (CLONE_NEWNS) and makes every mount
private, so that nothing propagates back to the machine. When every mount target
already exists, each source is bind-mounted over it. When some do not (the usual case
for /var/run/secrets/kubernetes.io/serviceaccount), creating them on the machine is
avoided: a tmpfs at `root` (an empty directory of the pod's) becomes a copy of the
machine's `/` made of bind mounts of its entries; the nearest existing directory above a
missing target is shadowed the same way (a tmpfs with bind mounts of its entries), the
mount point is made inside that tmpfs, and the process chroots into `root`. Read-only
mounts are remounted read-only. Then the process is replaced by ARGV (same process id,
same environment) in `cwd`. Sources are opened before anything is mounted, so that a
mount cannot change what a source path means. A mount that fails is reported on standard
error (the container's log) and skipped: the kubelet also rewrites mount paths in the
command, args and env, so programs that take their paths from there still work.

`mountns.py --check` exits 0 when mount namespaces are available here (Linux, root or
CAP_SYS_ADMIN), 1 with the reason on standard error otherwise.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import stat
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


class Namespace:
    def __init__(self) -> None:
        self.libc = _libc()

    def mount(self, source: str | None, target: str, fstype: str | None, flags: int) -> None:
        _check(
            self.libc.mount(
                source.encode() if source is not None else None,
                target.encode(),
                fstype.encode() if fstype is not None else None,
                flags,
                None,
            ),
            f"mount at {target}",
        )

    def unshare(self) -> None:
        _check(self.libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
        self.mount("none", "/", None, MS_REC | MS_PRIVATE)

    def placeholder(self, path: str, directory: bool) -> None:
        if directory:
            os.makedirs(path, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if not os.path.lexists(path):
                with open(path, "a"):
                    pass

    def mirror(self, host_dir: str, copy_dir: str) -> None:
        """Make `copy_dir` (a fresh tmpfs) show `host_dir`'s entries, by bind mounts."""
        for entry in os.listdir(host_dir):
            source = os.path.join(host_dir, entry)
            target = os.path.join(copy_dir, entry)
            try:
                mode = os.lstat(source).st_mode
                if stat.S_ISLNK(mode):
                    os.symlink(os.readlink(source), target)
                    continue
                self.placeholder(target, stat.S_ISDIR(mode))
                self.mount(source, target, None, MS_BIND | MS_REC)
            except OSError as exc:
                print(f"devcluster: cannot show {source} ({exc.strerror})", file=sys.stderr)

    def shadow(self, host_dir: str, copy_dir: str) -> None:
        """Put a tmpfs over `copy_dir` that shows `host_dir`'s entries, so that new
        entries can be made in it without writing to `host_dir`."""
        self.mount("tmpfs", copy_dir, "tmpfs", 0)
        os.chmod(copy_dir, os.stat(host_dir).st_mode & 0o7777)
        self.mirror(host_dir, copy_dir)

    def bind(self, source_fd: int, target: str, read_only: bool) -> None:
        source = f"/proc/self/fd/{source_fd}"
        self.placeholder(target, os.path.isdir(source))
        self.mount(source, target, None, MS_BIND | MS_REC)
        if read_only:
            self.mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY)


def _existing_ancestor(path: str) -> str:
    while not os.path.lexists(path):
        path = os.path.dirname(path)
    return path


def setup(spec: dict[str, object]) -> None:
    ns = Namespace()
    ns.unshare()
    raw = spec.get("mounts")
    mounts = [m for m in raw if isinstance(m, dict)] if isinstance(raw, list) else []
    sources: dict[str, int] = {}
    for m in mounts:
        try:
            sources[str(m["source"])] = os.open(str(m["source"]), os.O_PATH)
        except OSError as exc:
            print(f"devcluster: cannot open {m['source']}: {exc.strerror}", file=sys.stderr)
    targets = [(os.path.realpath(str(m["target"])), m) for m in mounts]
    missing = [t for t, _ in targets if not os.path.lexists(t)]
    prefix = ""
    if missing:
        root = str(spec["root"])
        os.makedirs(root, exist_ok=True)
        ns.mount("tmpfs", root, "tmpfs", 0)
        os.chmod(root, 0o755)
        ns.mirror("/", root)
        shadowed: set[str] = {"/"}
        for target in sorted(missing, key=len):
            ancestor = _existing_ancestor(target)
            if ancestor not in shadowed and os.path.isdir(ancestor):
                ns.shadow(ancestor, root + ancestor)
                shadowed.add(ancestor)
        prefix = root
    for target, m in sorted(targets, key=lambda t: len(t[0])):
        fd = sources.get(str(m["source"]))
        if fd is None:
            continue
        try:
            ns.bind(fd, prefix + target, bool(m.get("readOnly")))
        except OSError as exc:
            print(
                f"devcluster: could not mount {m['source']} at {m['target']} "
                f"({exc.strerror}); use the rewritten path",
                file=sys.stderr,
            )
    for fd in sources.values():
        os.close(fd)
    if prefix:
        os.chroot(prefix)
    os.chdir(str(spec.get("cwd") or "/"))


def main(argv: list[str]) -> int:
    if argv[1:] == ["--check"]:
        if not sys.platform.startswith("linux"):
            print("mount namespaces need Linux", file=sys.stderr)
            return 1
        try:
            Namespace().unshare()
        except OSError as exc:
            print(f"{exc.strerror} (needs root or CAP_SYS_ADMIN)", file=sys.stderr)
            return 1
        return 0
    if len(argv) < 4 or argv[2] != "--":
        print("usage: mountns.py SPEC -- ARGV...", file=sys.stderr)
        return 2
    command = argv[3:]
    try:
        setup(json.loads(argv[1]))
    except OSError as exc:
        print(f"devcluster: no private mount namespace ({exc})", file=sys.stderr)
    sys.stderr.flush()
    os.execv(command[0], command)
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv))
