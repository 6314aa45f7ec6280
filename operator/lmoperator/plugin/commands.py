"""The plugin's commands: read the cluster through `lmoperator.kube`, print text.

`add_commands` adds `get`, `scale`, `logs` and `describe` to a command line (both
`kubectl lm` and `elasticlm` have them). The cluster is chosen as kubectl chooses it:
`--kubeconfig` (else KUBECONFIG, else ~/.kube/config), `--context` (else the current
one), `-n` (else the context's namespace, else default).

Exit codes: 0 done; 1 the cluster said no (not found, not installed, refused, not
reachable, no cluster configured); 2 the command line is wrong (an unknown kind, a bad
count); 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from lmoperator import kube
from lmoperator.api import kinds
from lmoperator.autoscale import history as autoscale_history
from lmoperator.builders.pods import INDEX_LABEL
from lmoperator.builders.service import server_selector
from lmoperator.builders.trainingjob import worker_selector
from lmoperator.plugin import describe as describe_page
from lmoperator.plugin import loglines, plot, tables
from lmoperator.plugin.resources import (
    Selection,
    Target,
    UsageError,
    known_kinds_text,
    parse_selection,
    parse_target,
)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})
# How often `logs -f` looks for new pods (a worker joining after a rescale).
FOLLOW_POLL_SECONDS = 1.0


class CommandError(Exception):
    """What went wrong, in words for the user, and the exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


class NotInstalledError(CommandError):
    """The cluster does not serve one of our kinds (its CRD is missing)."""


# --------------------------------------------------------------------------------------
# The cluster


@dataclass
class Session:
    """A connection to the chosen cluster and the namespace commands default to."""

    api: kube.Kube
    namespace: str
    host: str

    def fail(self, what: str, exc: kube.KubeError) -> CommandError:
        """A KubeError as the user should read it."""
        detail = exc.detail
        if exc.status == 0:
            return CommandError(
                f"cannot reach the cluster at {self.host} to {what}: {detail}; is it running, "
                "and is the kubeconfig's current context the one you mean?"
            )
        if exc.status in (401, 403):
            return CommandError(f"the cluster refused to {what}: {detail}")
        return CommandError(f"cannot {what}: {detail}")

    def get(self, target: Target) -> dict[str, Any]:
        """The object, or a CommandError saying it (or its kind) is not there."""
        what = f"get {target.label}"
        try:
            obj = self.api.get(target.kind, self.namespace, target.name)
            if obj is None:
                self.list(target.kind, self.namespace)  # its own error if not installed
        except kube.KubeError as exc:
            raise self.fail(what, exc) from exc
        if obj is None:
            raise CommandError(
                f'{target.kind.crd_name} "{target.name}" not found in namespace '
                f'"{self.namespace}" (`kubectl lm get {target.kind.short_name} -A` lists '
                "every namespace)"
            )
        return obj

    def list(
        self, kind: kinds.ResourceKind, namespace: str | None, selector: str = ""
    ) -> list[dict[str, Any]]:
        try:
            return self.api.list(kind, namespace, selector)
        except kube.KubeError as exc:
            if exc.status == 404 and kind in kinds.CUSTOM_KINDS:
                raise NotInstalledError(
                    f"the cluster has no {kind.kind} resource: the CRD {kind.crd_name} is "
                    "not installed (install ElasticLM with its Helm chart or "
                    "manifests/install.yaml)"
                ) from exc
            raise self.fail(f"list {kind.plural}", exc) from exc


def connect(args: argparse.Namespace) -> Session:
    # The client's connection pool logs each retry; the user gets one line in the end.
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    try:
        client, namespace = kube.client_for_user(
            getattr(args, "kubeconfig", None), getattr(args, "context", None)
        )
    except kube.NoKubeconfigError as exc:
        raise CommandError(
            f"{exc}; point --kubeconfig or KUBECONFIG at a cluster's kubeconfig, or start "
            "a local one with `elasticlm local up`"
        ) from exc
    except kube.NoClusterError as exc:
        raise CommandError(str(exc)) from exc
    chosen = getattr(args, "namespace", None) or namespace
    return Session(kube.Kube(client), chosen, client.configuration.host)


def run_command(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Errors as one line on stderr and an exit code, never a traceback."""

    def wrapped(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except UsageError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except CommandError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return exc.code
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED
        except BrokenPipeError:  # `kubectl lm logs ... | head`
            sys.stderr.close()
            return EXIT_OK

    return wrapped


def now() -> datetime:
    return datetime.now(UTC)


def api_name(kind: kinds.ResourceKind, name: str) -> str:
    """`lmtrainingjob.elasticlm.io/NAME`, as kubectl's `-o name` and `scale` print it."""
    return f"{kind.singular}.{kind.group}/{name}"


# --------------------------------------------------------------------------------------
# get


def cmd_get(args: argparse.Namespace) -> int:
    selection = parse_selection(args.names)
    if selection.names and args.all_namespaces:
        raise UsageError("objects cannot be named across all namespaces: drop -A or the names")
    session = connect(args)
    namespace = None if args.all_namespaces else session.namespace
    found: dict[kinds.ResourceKind, list[dict[str, Any]]] = {}
    missing_kinds = []
    for kind in selection.kinds:
        try:
            items = session.list(kind, namespace)
        except NotInstalledError:
            if len(selection.kinds) == 1:
                raise
            missing_kinds.append(kind)  # said below; the other kinds are still listed
            continue
        if selection.names:
            items = [i for i in items if tables.get(i, "metadata", "name") in selection.names]
        found[kind] = items
    for kind in missing_kinds:
        print(f"warning: the CRD {kind.crd_name} is not installed", file=sys.stderr)
    _print_objects(args, selection, found, session.namespace)
    return _report_missing_names(selection, found, session.namespace)


def _print_objects(
    args: argparse.Namespace,
    selection: Selection,
    found: Mapping[kinds.ResourceKind, list[dict[str, Any]]],
    namespace: str,
) -> None:
    objects = [(kind, obj) for kind, items in found.items() for obj in items]
    if args.output in ("json", "yaml"):
        if len(objects) == 1 and len(selection.names) == 1:
            document: Any = objects[0][1]
        else:
            document = {"apiVersion": "v1", "kind": "List", "items": [o for _, o in objects]}
        if args.output == "json":
            print(json.dumps(document, indent=4))
        else:
            print(yaml.safe_dump(document, sort_keys=False), end="")
        return
    if args.output == "name":
        for kind, obj in objects:
            print(api_name(kind, str(tables.get(obj, "metadata", "name"))))
        return
    if not objects:
        if not selection.names:
            where = "any namespace" if args.all_namespaces else f'namespace "{namespace}"'
            print(f"No resources found in {where}.", file=sys.stderr)
        return
    moment = now()
    printed = 0
    for kind, items in found.items():
        if not items:
            continue
        if printed:
            print()
        table = tables.get_table(
            kind,
            items,
            moment,
            wide=args.output == "wide",
            namespaces=args.all_namespaces,
            qualify=len(selection.kinds) > 1,
        )
        print("\n".join(table))
        printed += 1


def _report_missing_names(
    selection: Selection,
    found: Mapping[kinds.ResourceKind, list[dict[str, Any]]],
    namespace: str,
) -> int:
    present = {tables.get(o, "metadata", "name") for items in found.values() for o in items}
    missing = [n for n in selection.names if n not in present]
    for name in missing:
        if len(selection.kinds) == 1:
            what = f'{selection.kinds[0].crd_name} "{name}"'
        else:
            what = " or ".join(k.kind for k in selection.kinds) + f' "{name}"'
        print(f'error: {what} not found in namespace "{namespace}"', file=sys.stderr)
    return EXIT_FAILED if missing else EXIT_OK


# --------------------------------------------------------------------------------------
# scale


def cmd_scale(args: argparse.Namespace) -> int:
    words = list(args.target)
    replicas = args.replicas
    if replicas is None:
        if len(words) < 2 or not words[-1].lstrip("-").isdigit():
            raise UsageError(
                "say how many replicas: kubectl lm scale KIND/NAME N (or --replicas=N)"
            )
        replicas = int(words.pop())
    if replicas < 0:
        raise UsageError(f"replicas must be 0 or more (got {replicas})")
    target = parse_target(words, "KIND/NAME or KIND NAME")
    session = connect(args)
    obj = session.get(target)
    before = tables.get(obj, "spec", "replicas")
    try:
        session.api.patch(
            target.kind,
            session.namespace,
            target.name,
            {"spec": {"replicas": replicas}},
            subresource="scale",
        )
    except kube.KubeError as exc:
        raise session.fail(f"scale {target.label} to {replicas}", exc) from exc
    print(f"{api_name(target.kind, target.name)} scaled ({before} -> {replicas})")
    phase = tables.get(obj, "status", "phase")
    if phase in TERMINAL_PHASES:
        print(
            f"warning: {target.label} has finished ({phase}): its replicas no longer "
            "start anything",
            file=sys.stderr,
        )
    return EXIT_OK


# --------------------------------------------------------------------------------------
# logs


@dataclass(frozen=True)
class PodLog:
    """A pod whose log `logs` reads, and how its lines are labelled."""

    name: str
    source: loglines.Source
    key: tuple[str, int]  # (uid, restarts): a restarted container is a new log
    started: bool  # its container has run (so it has a log)


def _selector(target: Target, obj: Mapping[str, Any]) -> str:
    selector = tables.get(obj, "status", "selector")
    if isinstance(selector, str) and selector:
        return selector
    if target.kind == kinds.TRAINING_JOB:
        return worker_selector(target.name)
    if target.kind == kinds.SERVICE:
        return server_selector(target.name)
    raise UsageError(f"kubectl lm logs reads training jobs and services, not {target.kind.kind}")


def _pod_logs(target: Target, pods: Sequence[Mapping[str, Any]]) -> list[PodLog]:
    out = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        name = str(meta.get("name"))
        if target.kind == kinds.TRAINING_JOB:
            source = loglines.worker_source(name, (meta.get("labels") or {}).get(INDEX_LABEL))
        else:
            source = loglines.pod_source(name)
        statuses = [s for s in tables.get(pod, "status", "containerStatuses") or [] if s]
        restarts = sum(int(s.get("restartCount") or 0) for s in statuses)
        started = any(
            (s.get("state") or {}).keys() & {"running", "terminated"}
            or (s.get("lastState") or {}).get("terminated")
            for s in statuses
        )
        out.append(PodLog(name, source, (str(meta.get("uid")), restarts), bool(started)))
    return sorted(out, key=lambda p: p.source.order)


def cmd_logs(args: argparse.Namespace) -> int:
    target = parse_target(args.target, "KIND/NAME (lmtj/NAME or lms/NAME)")
    session = connect(args)
    obj = session.get(target)
    selector = _selector(target, obj)
    if args.follow:
        return Follower(session, target, selector, args.tail, args.timestamps).run()
    pods = _pod_logs(target, session.list(kinds.POD, session.namespace, selector))
    if not pods:
        phase = tables.get(obj, "status", "phase") or "Pending"
        print(f"{target.label} has no pods now (phase {phase})", file=sys.stderr)
        return EXIT_OK
    logs = []
    for pod in pods:
        try:
            lines = list(
                session.api.pod_log(
                    session.namespace, pod.name, tail_lines=args.tail, timestamps=args.timestamps
                )
            )
        except kube.KubeError as exc:
            if exc.status in (400, 404):  # not started yet, or gone since the list
                print(f"{pod.name}: {exc.detail}", file=sys.stderr)
                continue
            raise session.fail(f"read the log of pod {pod.name}", exc) from exc
        logs.append((pod.source, lines))
    for line in loglines.merge(logs):
        print(line)
    return EXIT_OK


class Follower:
    """`logs -f`: one thread per pod streams its log into a queue; the main thread
    prints, and every second looks for pods that started since (a rescale, a
    replacement). Training jobs end the command once finished and every log is read;
    services are followed until Ctrl-C or until they are deleted."""

    def __init__(
        self,
        session: Session,
        target: Target,
        selector: str,
        tail: int | None,
        timestamps: bool,
    ) -> None:
        self.session = session
        self.target = target
        self.selector = selector
        self.tail = tail
        self.timestamps = timestamps
        self.lines: queue.Queue[tuple[PodLog, str | None]] = queue.Queue()
        self.streams: dict[tuple[str, int], threading.Thread] = {}

    def _stream(self, pod: PodLog, tail: int | None) -> None:
        try:
            for line in self.session.api.pod_log(
                self.session.namespace,
                pod.name,
                follow=True,
                tail_lines=tail,
                timestamps=self.timestamps,
            ):
                self.lines.put((pod, line))
        except kube.KubeError as exc:
            if exc.status not in (400, 404):  # not started, or deleted: nothing to read
                self.lines.put((pod, f"(log stream ended: {exc})"))
        finally:
            self.lines.put((pod, None))

    def _start_new(self, first: bool) -> None:
        pods = self.session.list(kinds.POD, self.session.namespace, self.selector)
        for pod in _pod_logs(self.target, pods):
            if pod.started and pod.key not in self.streams:
                # --tail applies to the pods there at the start; later ones are new.
                thread = threading.Thread(
                    target=self._stream, args=(pod, self.tail if first else None), daemon=True
                )
                self.streams[pod.key] = thread
                thread.start()

    def _drain(self, until: float) -> None:
        while True:
            left = until - time.monotonic()
            try:
                pod, line = (
                    self.lines.get(timeout=max(left, 0.0)) if left > 0 else self.lines.get_nowait()
                )
            except queue.Empty:
                return
            if line is not None:
                sys.stdout.write(pod.source.prefix(line) + "\n")
                sys.stdout.flush()

    def run(self) -> int:
        first = True
        while True:
            try:
                obj = self.session.api.get(
                    self.target.kind, self.session.namespace, self.target.name
                )
                if obj is not None:
                    self._start_new(first)
            except kube.KubeError as exc:
                raise self.session.fail(f"follow {self.target.label}", exc) from exc
            first = False
            self._drain(time.monotonic() + FOLLOW_POLL_SECONDS)
            streaming = any(t.is_alive() for t in self.streams.values())
            if obj is None and not streaming:
                self._drain(time.monotonic())
                print(f"{self.target.label} was deleted", file=sys.stderr)
                return EXIT_OK
            finished = obj is not None and tables.get(obj, "status", "phase") in TERMINAL_PHASES
            if finished and not streaming:
                self._drain(time.monotonic())
                return EXIT_OK


# --------------------------------------------------------------------------------------
# describe


def cmd_describe(args: argparse.Namespace) -> int:
    target = parse_target(args.target, "KIND/NAME or KIND NAME")
    session = connect(args)
    obj = session.get(target)
    uid = tables.get(obj, "metadata", "uid")
    selector = f"involvedObject.kind={target.kind.kind},involvedObject.name={target.name}"
    if uid:
        selector += f",involvedObject.uid={uid}"
    try:
        events = session.api.list(kinds.EVENT, session.namespace, field_selector=selector)
    except kube.KubeError as exc:
        events = []
        print(f"warning: events not shown: {session.fail('list events', exc)}", file=sys.stderr)
    for line in describe_page.describe(target.kind, obj, events, now()):
        print(line)
    return EXIT_OK


# --------------------------------------------------------------------------------------
# plot


def plot_target(words: list[str]) -> str:
    """`NAME`, `lms/NAME` or `lms NAME`: an LMService's name."""
    if len(words) == 1 and "/" not in words[0]:
        return words[0]
    target = parse_target(words, "NAME, lms/NAME or lms NAME")
    if target.kind != kinds.SERVICE:
        raise UsageError(
            f"plot draws an LMService's autoscaling history; {target.kind.kind} has none "
            "(write NAME or lms/NAME)"
        )
    return target.name


def cmd_plot(args: argparse.Namespace) -> int:
    name = plot_target(args.target)
    try:
        plot.require_matplotlib()
    except plot.PlotUnavailableError as exc:
        raise CommandError(str(exc)) from exc
    session = connect(args)
    configmap = autoscale_history.configmap_name(name)
    try:
        found = session.api.get(kinds.CONFIG_MAP, session.namespace, configmap)
    except kube.KubeError as exc:
        raise session.fail(f"get configmaps/{configmap}", exc) from exc
    if found is None:
        raise CommandError(
            f'no autoscaling history for lmservice "{name}" in namespace "{session.namespace}": '
            f"ConfigMap {configmap} does not exist (the operator writes it when the first "
            "minute with spec.autoscaling set closes; check the name and -n)"
        )
    try:
        history = autoscale_history.MetricHistory.from_data(found.get("data"))
    except ValueError as exc:
        raise CommandError(f"ConfigMap {configmap} is not an autoscaling history: {exc}") from exc
    output = Path(args.output or f"{name}-scaling.png")
    try:
        series = plot.draw(history, f"lmservice {session.namespace}/{name}", output)
    except ValueError as exc:
        raise CommandError(f"nothing to plot for lmservice {name}: {exc}") from exc
    except OSError as exc:
        raise CommandError(f"could not write {output}: {exc}") from exc
    minutes = len(history.buckets)
    print(f"wrote {output}: {', '.join(series)} over {minutes} minute(s)")
    return EXIT_OK


# --------------------------------------------------------------------------------------
# The command line


def connection_options(parser: argparse.ArgumentParser, top: bool) -> None:
    """kubectl's own flags; on the subcommands they do not overwrite the ones given
    before the subcommand (`kubectl lm -n NS get` and `kubectl lm get -n NS` both work)."""
    default = None if top else argparse.SUPPRESS
    parser.add_argument(
        "--kubeconfig",
        default=default,
        help="kubeconfig file (default: KUBECONFIG, ~/.kube/config)",
    )
    parser.add_argument("--context", default=default, help="kubeconfig context (default: current)")
    parser.add_argument(
        "-n",
        "--namespace",
        default=default,
        help="namespace (default: the context's, else default)",
    )


def add_commands(commands: Any) -> None:
    """`get`, `scale`, `logs`, `describe`, `plot` on a parser's subcommands."""
    kinds_help = f"kinds: {known_kinds_text()}"

    get = commands.add_parser(
        "get",
        help="list training jobs and services with their progress",
        description="List LMTrainingJobs and LMServices, one table per kind. "
        f"Arguments as for kubectl get: [KIND] [NAME...], KIND/NAME..., or NAME...; {kinds_help}.",
    )
    get.add_argument("names", nargs="*", metavar="KIND|NAME")
    get.add_argument("-A", "--all-namespaces", action="store_true", help="list every namespace")
    get.add_argument(
        "-o",
        "--output",
        choices=("wide", "json", "yaml", "name"),
        help="wide (more columns), json, yaml or name",
    )
    connection_options(get, top=False)
    get.set_defaults(func=run_command(cmd_get))

    scale = commands.add_parser(
        "scale",
        help="set the replicas of a training job or service (the scale subresource)",
        description="Set spec.replicas through the scale subresource, as kubectl scale "
        f"does; {kinds_help}.",
    )
    scale.add_argument("target", nargs="+", metavar="KIND/NAME [N]")
    scale.add_argument("--replicas", type=int, help="the new number of replicas")
    connection_options(scale, top=False)
    scale.set_defaults(func=run_command(cmd_scale))

    logs = commands.add_parser(
        "logs",
        help="the logs of a job's workers ([rank N]) or a service's pods, merged",
        description="Print the logs of every worker of an LMTrainingJob (prefixed [rank N]) "
        "or every server pod of an LMService (prefixed with the pod's name), merged in time "
        "order; -f follows them all, picking up pods that start later (a rescale).",
    )
    logs.add_argument("target", nargs="+", metavar="KIND/NAME")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    logs.add_argument("--tail", type=int, help="only the last N lines of each pod")
    logs.add_argument(
        "--timestamps", action="store_true", help="put the API server's timestamp on each line"
    )
    connection_options(logs, top=False)
    logs.set_defaults(func=run_command(cmd_logs))

    describe = commands.add_parser(
        "describe",
        help="status, conditions, scaling decisions and events of one object",
        description="Show one object's status, conditions, scaling history and events; "
        f"{kinds_help}.",
    )
    describe.add_argument("target", nargs="+", metavar="KIND/NAME")
    connection_options(describe, top=False)
    describe.set_defaults(func=run_command(cmd_describe))

    plotting = commands.add_parser(
        "plot",
        help="draw an autoscaled service's replicas against its load over time (PNG)",
        description="Read an LMService's autoscaling history (the ConfigMap "
        "NAME-autoscaler-history: 1-minute buckets, the last 48 hours) and draw its replica "
        "count against each load signal as a PNG. Needs matplotlib: pip install "
        "'elasticlm[plot]'.",
    )
    plotting.add_argument("target", nargs="+", metavar="NAME|lms/NAME")
    plotting.add_argument(
        "-o", "--output", help="the PNG file to write (default: NAME-scaling.png)"
    )
    connection_options(plotting, top=False)
    plotting.set_defaults(func=run_command(cmd_plot))
