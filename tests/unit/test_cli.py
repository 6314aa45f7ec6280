"""The `elasticlm` command line and the `kubectl lm` plugin."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

import lmoperator
from lmoperator.cli import EXIT_INVALID, EXIT_OK, kubectl_plugin_main, main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "manifests" / "examples"
TRAINING_JOB = EXAMPLES / "training-job.yaml"
SERVICE = EXAMPLES / "service.yaml"
BIN = Path(sys.executable).parent

Capsys = pytest.CaptureFixture[str]


def _write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def _bad_training_job() -> str:
    doc = yaml.safe_load(TRAINING_JOB.read_text())
    doc["spec"]["replicas"] = 9  # above elastic.maxReplicas (3)
    doc["spec"]["training"]["warmupSteps"] = 300  # not below steps (300)
    return yaml.safe_dump(doc)


def test_version(capsys: Capsys) -> None:
    assert main(["version"]) == EXIT_OK
    out, err = capsys.readouterr()
    assert out == f"elasticlm {lmoperator.__version__}\n"
    assert lmoperator.__version__ == version("elasticlm")
    assert err == ""


def test_validate_examples(capsys: Capsys) -> None:
    assert main(["validate", str(TRAINING_JOB), str(SERVICE)]) == EXIT_OK
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        f"{TRAINING_JOB}#0: LMTrainingJob/tiny-lm is valid",
        f"{SERVICE}#0: LMService/tiny-lm is valid",
    ]
    assert err == ""


def test_validate_reports_every_problem_of_a_bad_manifest(tmp_path: Path, capsys: Capsys) -> None:
    path = _write(tmp_path / "bad.yaml", _bad_training_job())
    assert main(["validate", path]) == EXIT_INVALID
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"{path}#0: LMTrainingJob/tiny-lm is invalid:",
        "  - spec.elastic.maxReplicas (3) must be >= spec.replicas (9)",
        "  - spec.training.warmupSteps (300) must be < spec.training.steps (300)",
    ]


def test_validate_reports_unknown_fields(tmp_path: Path, capsys: Capsys) -> None:
    doc = yaml.safe_load(TRAINING_JOB.read_text())
    doc["spec"]["data"]["pathh"] = "typo"
    path = _write(tmp_path / "typo.yaml", yaml.safe_dump(doc))
    assert main(["validate", path]) == EXIT_INVALID
    err = capsys.readouterr().err
    assert (
        "  - spec.data.pathh: unknown field, check its spelling; "
        "`kubectl explain lmtj.spec.data` lists the fields"
    ) in err.splitlines()
    assert "Traceback" not in err


def test_validate_field_errors_name_the_field_and_the_value(tmp_path: Path, capsys: Capsys) -> None:
    doc = yaml.safe_load(SERVICE.read_text())
    doc["spec"]["serving"]["port"] = 80
    path = _write(tmp_path / "svc.yaml", yaml.safe_dump(doc))
    assert main(["validate", path]) == EXIT_INVALID
    assert "  - spec.serving.port: must be >= 1024 (got 80)" in capsys.readouterr().err


def test_validate_malformed_yaml(tmp_path: Path, capsys: Capsys) -> None:
    path = _write(tmp_path / "broken.yaml", "apiVersion: elasticlm.io/v1alpha1\nspec: [unclosed\n")
    assert main(["validate", path]) == EXIT_INVALID
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"{path}: cannot read: ")
    assert "line 3" in err or "line 2" in err  # says where
    assert "Traceback" not in err


def test_validate_missing_file(tmp_path: Path, capsys: Capsys) -> None:
    path = str(tmp_path / "nowhere.yaml")
    assert main(["validate", path]) == EXIT_INVALID
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"{path}: cannot read: ")
    assert "No such file or directory" in err
    assert "Traceback" not in err


def test_validate_goes_on_after_a_missing_file(tmp_path: Path, capsys: Capsys) -> None:
    missing = str(tmp_path / "nowhere.yaml")
    assert main(["validate", missing, str(SERVICE)]) == EXIT_INVALID
    out, err = capsys.readouterr()
    assert out == f"{SERVICE}#0: LMService/tiny-lm is valid\n"
    assert missing in err


def test_validate_multi_document_files(tmp_path: Path, capsys: Capsys) -> None:
    text = TRAINING_JOB.read_text() + "\n---\n# nothing here\n---\n" + SERVICE.read_text()
    path = _write(tmp_path / "all.yaml", text)
    assert main(["validate", path]) == EXIT_OK
    out = capsys.readouterr().out
    assert out.splitlines() == [
        f"{path}#0: LMTrainingJob/tiny-lm is valid",
        f"{path}#2: LMService/tiny-lm is valid",
    ]


def test_validate_multi_document_file_with_one_bad_document(tmp_path: Path, capsys: Capsys) -> None:
    path = _write(tmp_path / "mixed.yaml", SERVICE.read_text() + "---\n" + _bad_training_job())
    assert main(["validate", path]) == EXIT_INVALID
    out, err = capsys.readouterr()
    assert out == f"{path}#0: LMService/tiny-lm is valid\n"
    assert err.startswith(f"{path}#1: LMTrainingJob/tiny-lm is invalid:\n")


def test_validate_empty_file(tmp_path: Path, capsys: Capsys) -> None:
    path = _write(tmp_path / "empty.yaml", "# only a comment\n")
    assert main(["validate", path]) == EXIT_INVALID
    assert capsys.readouterr().err == f"{path}: no YAML documents found\n"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "- a\n- b\n",
            "  - must be a mapping with apiVersion, kind, metadata and spec, got a list",
        ),
        (
            "apiVersion: v1\nkind: Pod\n",
            "  - kind: must be one of LMTrainingJob, LMService, LMTuningJob (got 'Pod')",
        ),
        (
            "apiVersion: elasticlm.io/v2\nkind: LMService\nmetadata: {name: x}\n",
            "  - apiVersion: must be elasticlm.io/v1alpha1 (got 'elasticlm.io/v2')",
        ),
    ],
)
def test_validate_documents_that_are_not_our_resources(
    tmp_path: Path, capsys: Capsys, text: str, problem: str
) -> None:
    path = _write(tmp_path / "other.yaml", text)
    assert main(["validate", path]) == EXIT_INVALID
    err = capsys.readouterr().err
    assert problem in err.splitlines()
    assert "Traceback" not in err


def test_validate_reads_stdin(monkeypatch: pytest.MonkeyPatch, capsys: Capsys) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(SERVICE.read_text()))
    assert main(["validate", "-"]) == EXIT_OK
    assert capsys.readouterr().out == "<stdin>#0: LMService/tiny-lm is valid\n"


def test_validate_reads_a_bad_manifest_from_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: Capsys
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(_bad_training_job()))
    assert main(["validate", "-"]) == EXIT_INVALID
    err = capsys.readouterr().err
    assert err.startswith("<stdin>#0: LMTrainingJob/tiny-lm is invalid:\n")
    assert "  - spec.training.warmupSteps (300) must be < spec.training.steps (300)\n" in err


def test_validate_needs_a_file(capsys: Capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["validate"])
    assert exc.value.code == 2
    assert "FILE" in capsys.readouterr().err


def test_a_command_is_required(capsys: Capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2
    assert "usage: elasticlm" in capsys.readouterr().err


def test_demo_with_an_examples_directory(tmp_path: Path, capsys: Capsys) -> None:
    (tmp_path / "job.yaml").write_text(_bad_training_job())
    assert main(["demo", "--examples", str(tmp_path)]) == EXIT_INVALID
    assert "is invalid" in capsys.readouterr().err


def test_kubectl_plugin_version(capsys: Capsys) -> None:
    assert kubectl_plugin_main(["version"]) == EXIT_OK
    assert capsys.readouterr().out == f"elasticlm {lmoperator.__version__}\n"


def test_kubectl_plugin_validate(capsys: Capsys) -> None:
    assert kubectl_plugin_main(["validate", str(SERVICE)]) == EXIT_OK
    assert "is valid" in capsys.readouterr().out


def test_kubectl_plugin_has_no_developer_commands(capsys: Capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        kubectl_plugin_main(["crds"])
    assert exc.value.code == 2
    assert "usage: kubectl lm" in capsys.readouterr().err


@pytest.mark.parametrize("script", ["elasticlm", "kubectl-lm"])
def test_console_scripts_are_installed(script: str) -> None:
    path = BIN / script
    assert path.is_file()
    assert os.access(path, os.X_OK)


def test_kubectl_lm_runs_as_a_subprocess() -> None:
    result = subprocess.run(
        [str(BIN / "kubectl-lm"), "version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"elasticlm {lmoperator.__version__}\n"


def test_elasticlm_validate_runs_as_a_subprocess(tmp_path: Path) -> None:
    bad = _write(tmp_path / "bad.yaml", _bad_training_job())
    result = subprocess.run(
        [str(BIN / "elasticlm"), "validate", str(TRAINING_JOB), bad],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert f"{TRAINING_JOB}#0: LMTrainingJob/tiny-lm is valid" in result.stdout
    assert f"{bad}#0: LMTrainingJob/tiny-lm is invalid:" in result.stderr
    assert "Traceback" not in result.stderr
