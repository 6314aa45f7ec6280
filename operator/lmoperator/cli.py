"""The `elasticlm` command line and the `kubectl lm` plugin."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import yaml

import lmoperator
from lmoperator.api import InvalidResourceError, parse_resource
from lmoperator.api.common import PullPolicy
from lmoperator.api.generate import generated_drift, write_generated
from lmoperator.builders.defaults import (
    Defaults,
    InvalidDefaultError,
    PodDefaults,
    parse_pod_security_context,
    parse_resources,
)
from lmoperator.builders.trainingjob import NetworkPeers, parse_peers
from lmoperator.plugin.commands import add_commands, connection_options

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2


def _documents(source: str) -> Iterator[tuple[str, Any]]:
    """(where, document) for every YAML document of a file, or of stdin for '-'."""
    stream: TextIO
    if source == "-":
        stream, label = sys.stdin, "<stdin>"
    else:
        stream, label = open(source, encoding="utf-8"), source  # noqa: SIM115
    with stream:
        for index, doc in enumerate(yaml.safe_load_all(stream)):
            if doc is not None:
                yield f"{label}#{index}", doc


def cmd_version(args: argparse.Namespace) -> int:
    print(f"elasticlm {lmoperator.__version__}")
    return EXIT_OK


def cmd_crds(args: argparse.Namespace) -> int:
    directory, reference = Path(args.dir), Path(args.reference)
    chart = Path(args.chart) if args.chart else None
    where = f"{directory}/, {chart}/ or {reference}" if chart else f"{directory}/ or {reference}"
    if args.check:
        drift = generated_drift(directory, reference, chart)
        if drift:
            sys.stdout.write("".join(drift))
            print(
                f"error: the CRDs in {where} differ from the API models; "
                "run `elasticlm crds` and commit the result",
                file=sys.stderr,
            )
            return EXIT_INVALID
        print(f"CRDs in {where} match the API models")
        return EXIT_OK
    for path in write_generated(directory, reference, chart):
        print(f"wrote {path}")
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    failed = False
    for source in args.files:
        try:
            documents = list(_documents(source))
        except (OSError, yaml.YAMLError) as exc:
            print(f"{source}: cannot read: {exc}", file=sys.stderr)
            failed = True
            continue
        if not documents:
            print(f"{source}: no YAML documents found", file=sys.stderr)
            failed = True
        for where, doc in documents:
            try:
                resource = parse_resource(doc)
            except InvalidResourceError as exc:
                failed = True
                print(f"{where}: {exc.what} is invalid:", file=sys.stderr)
                for problem in exc.problems:
                    print(f"  - {problem}", file=sys.stderr)
                continue
            meta = resource.metadata
            name = meta.name if meta.name is not None else f"{meta.generate_name}*"
            print(f"{where}: {resource.kind}/{name} is valid")
    return EXIT_INVALID if failed else EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    examples = sorted(Path(args.examples).glob("*.yaml"))
    print("The ElasticLM demo will:")
    print("  1. start devcluster, the embedded Kubernetes stand-in, and the operator;")
    print("  2. write a synthetic corpus, apply the example LMTrainingJob, train on 2 workers;")
    print("  3. rescale the job 2 -> 3 -> 2 while it trains, printing its progress;")
    print("  4. finish the training and export the model in the Hugging Face layout;")
    print("  5. serve it with the example LMService, ask for completions, scale 1 -> 2 -> 1.")
    print()
    status = cmd_validate(argparse.Namespace(files=[str(p) for p in examples]))
    if status != EXIT_OK:
        return status
    print()
    from lmoperator.demo import run_demo

    state_dir = Path(args.state_dir) if args.state_dir else None
    return run_demo(Path(args.examples), state_dir, lambda line: print(line, flush=True))


def pod_defaults_of(args: argparse.Namespace) -> Defaults:
    """The `--worker-*` and `--server-*` flags as Defaults; InvalidDefaultError names
    the flag that is wrong."""

    def one(kind: str) -> PodDefaults:
        resources = getattr(args, f"{kind}_resources")
        security = getattr(args, f"{kind}_pod_security_context")
        policy = getattr(args, f"{kind}_image_pull_policy")
        return PodDefaults(
            image=getattr(args, f"{kind}_image") or None,
            image_pull_policy=PullPolicy(policy) if policy else None,
            resources=parse_resources(resources, f"--{kind}-resources") if resources else None,
            pod_security_context=(
                parse_pod_security_context(security, f"--{kind}-pod-security-context")
                if security
                else {}
            ),
        )

    return Defaults(worker=one("worker"), server=one("server"))


LEADER_ELECTION_OPTIONS = {
    "leader_election_namespace": "--leader-election-namespace",
    "leader_election_id": "--leader-election-id",
    "leader_election_lease_duration": "--leader-election-lease-duration",
    "leader_election_renew_deadline": "--leader-election-renew-deadline",
    "leader_election_retry_period": "--leader-election-retry-period",
}


def leader_election_config(args: argparse.Namespace) -> Any:
    """The LeaderElectionConfig of `--leader-elect` and its options (None without it);
    ValueError naming the option to fix."""
    from lmoperator.leaderelection import (
        DEFAULT_LEASE_NAME,
        LeaderElectionConfig,
        LeaderElectionError,
        default_namespace,
    )
    from lmoperator.reconcile.lease import LeaseTimings

    if not args.leader_elect:
        given = [flag for dest, flag in LEADER_ELECTION_OPTIONS.items() if getattr(args, dest)]
        if given:
            raise ValueError(f"{', '.join(given)} only apply with --leader-elect; add it")
        return None
    defaults = LeaseTimings()
    timings = LeaseTimings(
        lease_duration=args.leader_election_lease_duration or defaults.lease_duration,
        renew_deadline=args.leader_election_renew_deadline or defaults.renew_deadline,
        retry_period=args.leader_election_retry_period or defaults.retry_period,
    )
    try:
        namespace = args.leader_election_namespace or default_namespace()
    except LeaderElectionError as exc:
        raise ValueError(str(exc)) from exc
    config = LeaderElectionConfig(
        namespace=namespace,
        name=args.leader_election_id or DEFAULT_LEASE_NAME,
        timings=timings,
    )
    problems = config.problems()
    if problems:
        raise ValueError("; ".join(problems))
    return config


def cmd_operator(args: argparse.Namespace) -> int:
    try:
        defaults = pod_defaults_of(args)
        leader_election = leader_election_config(args)
        peers = network_peers_of(args)
    except (InvalidDefaultError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    # Imported here: importing the handlers registers them with kopf.
    from lmoperator.main import run

    run(
        namespaces=[] if args.all_namespaces else args.namespace or [],
        metrics_port=args.metrics_port,
        peering=args.peering,
        verbose=args.verbose,
        liveness=args.liveness,
        pod_defaults=defaults,
        metrics_address=args.metrics_address,
        leader_election=leader_election,
        network_peers=peers,
    )
    return EXIT_OK


def network_peers_of(args: argparse.Namespace) -> NetworkPeers:
    """The `--network-policy-*` flags; InvalidPeerError (a ValueError) names the flag."""
    operator, scrapers = args.network_policy_operator, args.network_policy_metrics_scrapers
    return NetworkPeers(
        operator=parse_peers(operator, "--network-policy-operator") if operator else (),
        scrapers=(parse_peers(scrapers, "--network-policy-metrics-scrapers") if scrapers else ()),
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of seconds") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} must be more than 0")
    return value


def _add_pod_default_flags(parser: argparse.ArgumentParser, kind: str, pods: str) -> None:
    group = parser.add_argument_group(
        f"{kind} defaults",
        f"what {pods} get when their spec.worker leaves it out (a cluster admin's defaults)",
    )
    group.add_argument(f"--{kind}-image", metavar="IMAGE", help="container image")
    group.add_argument(
        f"--{kind}-image-pull-policy",
        choices=[p.value for p in PullPolicy],
        help="image pull policy",
    )
    group.add_argument(
        f"--{kind}-resources",
        metavar="JSON",
        help='container resources, e.g. \'{"requests": {"cpu": "1", "memory": "2Gi"}}\'',
    )
    group.add_argument(
        f"--{kind}-pod-security-context",
        metavar="JSON",
        help="pod securityContext fields laid over the restricted defaults "
        '(runAsUser 1000, seccomp RuntimeDefault), e.g. \'{"runAsUser": 2000, "fsGroup": 2000}\'',
    )


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="ElasticLM: elastic language-model training and serving on Kubernetes.",
    )
    if prog != "elasticlm":
        # `kubectl lm -n NS get` as well as `kubectl lm get -n NS`; `elasticlm` takes
        # them after the command only (its `operator -n` means something else).
        connection_options(parser, top=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_commands(commands)

    version = commands.add_parser("version", help="print the version")
    version.set_defaults(func=cmd_version)

    validate = commands.add_parser(
        "validate", help="check LMTrainingJob/LMService manifests against the API"
    )
    validate.add_argument("files", nargs="+", metavar="FILE", help="YAML files; - for stdin")
    validate.set_defaults(func=cmd_validate)

    if prog == "elasticlm":
        crds = commands.add_parser(
            "crds", help="generate the CRDs and the API reference from the API models"
        )
        crds.add_argument("--dir", default="crds", help="CRD directory (default: crds)")
        crds.add_argument(
            "--reference",
            default="docs/api-reference.md",
            help="API reference file (default: docs/api-reference.md)",
        )
        crds.add_argument(
            "--chart",
            default="charts/elasticlm",
            help="Helm chart whose templates/crds/ gets the CRDs as templates; '' for none "
            "(default: charts/elasticlm)",
        )
        crds.add_argument(
            "--check",
            action="store_true",
            help="exit 1 if the files in --dir differ from what the models generate",
        )
        crds.set_defaults(func=cmd_crds)

        operator = commands.add_parser(
            "operator", help="run the operator (kopf) against the current cluster"
        )
        scope = operator.add_mutually_exclusive_group()
        scope.add_argument(
            "--namespace",
            "-n",
            action="append",
            metavar="NS",
            help="watch this namespace (repeatable; default: all namespaces)",
        )
        scope.add_argument(
            "--all-namespaces", "-A", action="store_true", help="watch every namespace"
        )
        operator.add_argument(
            "--metrics-port",
            type=int,
            default=8080,
            help="port of the operator's Prometheus metrics and its /healthz and /readyz "
            "probes; 0 disables them (default: 8080)",
        )
        coordination = operator.add_mutually_exclusive_group()
        coordination.add_argument(
            "--peering",
            metavar="NAME",
            help="coordinate with other operators through kopf's peering object NAME; "
            "replicas of equal priority all pause, so use --leader-elect for several "
            "replicas (default: standalone)",
        )
        coordination.add_argument(
            "--leader-elect",
            action="store_true",
            help="run the handlers only while this replica holds a coordination.k8s.io "
            "Lease, so that of several replicas exactly one acts; the others stand by and "
            "take over when it stops (graceful stop: within one retry period; crash: "
            "within the lease duration plus one retry period)",
        )
        election = operator.add_argument_group(
            "leader election (with --leader-elect; the defaults are Kubernetes')"
        )
        election.add_argument(
            "--leader-election-namespace",
            metavar="NS",
            help="namespace of the Lease (default: POD_NAMESPACE, else the pod's own "
            "namespace from its service account)",
        )
        election.add_argument(
            "--leader-election-id",
            metavar="NAME",
            help="name of the Lease; replicas that share it elect one leader "
            "(default: elasticlm-operator)",
        )
        election.add_argument(
            "--leader-election-lease-duration",
            type=_positive_int,
            metavar="SECONDS",
            help="how long a standby waits, after the leader's last renewal, before it "
            "takes over (default: 15)",
        )
        election.add_argument(
            "--leader-election-renew-deadline",
            type=_positive_seconds,
            metavar="SECONDS",
            help="how long the leader keeps acting while renewals fail; it then exits "
            "(status 1) so that its pod restarts. Must be shorter than the lease "
            "duration (default: 10)",
        )
        election.add_argument(
            "--leader-election-retry-period",
            type=_positive_seconds,
            metavar="SECONDS",
            help="how often the leader renews and a standby tries to acquire (default: 2)",
        )
        operator.add_argument(
            "--metrics-address",
            default="0.0.0.0",
            metavar="IP",
            help="address the metrics server binds (default: 0.0.0.0, every interface)",
        )
        operator.add_argument(
            "--liveness",
            metavar="URL",
            help="serve kopf's health endpoint for a liveness probe, e.g. "
            "http://0.0.0.0:8081/healthz (default: none)",
        )
        operator.add_argument("--verbose", "-v", action="store_true", help="log more")
        network = operator.add_argument_group(
            "training jobs' NetworkPolicies",
            "who may reach a job's metrics port besides its own pods (each a JSON "
            "NetworkPolicyPeer or a list of them); nobody else is admitted",
        )
        network.add_argument(
            "--network-policy-operator",
            metavar="JSON",
            help="the operator's own pods (it scrapes rank 0's metrics), e.g. "
            '\'{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": '
            '"elasticlm-system"}}, "podSelector": {"matchLabels": '
            '{"app.kubernetes.io/name": "elasticlm"}}}\'',
        )
        network.add_argument(
            "--network-policy-metrics-scrapers",
            metavar="JSON",
            help="metrics scrapers, e.g. Prometheus's pods (default: none)",
        )
        _add_pod_default_flags(operator, "worker", "training workers and rendezvous stores")
        _add_pod_default_flags(operator, "server", "model servers (LMService)")
        operator.set_defaults(func=cmd_operator)

        demo = commands.add_parser("demo", help="train, rescale and serve the example job")
        demo.add_argument(
            "--examples",
            default="manifests/examples",
            help="directory of the example manifests (default: manifests/examples)",
        )
        demo.add_argument(
            "--state-dir",
            help="where devcluster keeps logs, volumes and checkpoints (default: a new "
            "temporary directory, kept afterwards for inspection)",
        )
        demo.set_defaults(func=cmd_demo)

        local = commands.add_parser(
            "local",
            help="run devcluster, the embedded Kubernetes stand-in, on this machine "
            "(`local up|down --help`)",
            add_help=False,
        )
        local.add_argument("arguments", nargs=argparse.REMAINDER)
        local.set_defaults(func=lambda args: cmd_local(args.arguments, prog))
    return parser


def cmd_local(arguments: Sequence[str], prog: str) -> int:
    """`local up|down`: devcluster's own command line (imported only here: the operator
    itself never needs devcluster)."""
    missing = [m for m in ("celpy", "re2") if importlib.util.find_spec(m) is None]
    if missing and "--help" not in arguments and "-h" not in arguments:
        print(
            f"error: devcluster needs {', '.join(missing)} (it checks CRD rules as the API "
            "server does); install them with: pip install 'elasticlm[devcluster]'",
            file=sys.stderr,
        )
        return EXIT_USAGE
    from devcluster.cli import main as devcluster_main

    return devcluster_main(list(arguments), prog=f"{prog} local")


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["local"]:  # options after `local` are devcluster's
        return cmd_local(arguments[1:], "elasticlm")
    args = _parser("elasticlm").parse_args(arguments)
    result: int = args.func(args)
    return result


def kubectl_plugin_main(argv: Sequence[str] | None = None) -> int:
    """`kubectl lm ...`: kubectl runs the `kubectl-lm` executable found on PATH."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["local"]:
        return cmd_local(arguments[1:], "kubectl lm")
    args = _parser("kubectl lm").parse_args(arguments)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
