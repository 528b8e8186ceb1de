"""bitcpm.eval on the QAT debug run with a local multiple-choice task file: the harness's accuracy equals an
independent computation with bitcpm's forward, lands in the run's MLflow run, and the retention table
against the full-precision parent prints and is logged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import run_module
from tests.trained_runs import TrainedPair, released_parallel_state, trained_pair  # noqa: F401 - fixtures

WORDS = ["river", "mountain", "city", "forest", "king", "music", "history", "water"]

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("released_parallel_state")]


def write_task(directory: Path, name: str = "tiny_mc") -> list[dict]:
    """A local multiple-choice task (jsonl data + YAML config) and its documents."""
    directory.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(3)
    docs = []
    for i in range(16):
        picks = torch.randperm(len(WORDS), generator=g)[:4].tolist()
        docs.append(
            {"question": f"The {WORDS[i % 8]} was known for its", "choices": [WORDS[p] for p in picks], "label": i % 4}
        )
    data = directory / f"{name}.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in docs))
    (directory / f"{name}.yaml").write_text(
        f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\ntest_split: test\n"
        "output_type: multiple_choice\ndoc_to_text: '{{question}}'\ndoc_to_choice: '{{choices}}'\n"
        "doc_to_target: label\nmetric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
    )
    return docs


def independent_accuracy(run: Path, docs: list[dict]) -> float:
    """Accuracy by summed log-likelihood of ' ' + choice after the question, with bitcpm's own forward."""
    from bitcpm.data.tokenizer import load_tokenizer
    from bitcpm.export.source import open_source
    from bitcpm.export.weights import megatron_logits

    model, tok = open_source(run).model, load_tokenizer("builtin")
    correct = 0
    for doc in docs:
        context = tok.encode(doc["question"])
        scores = []
        for choice in doc["choices"]:
            whole = tok.encode(doc["question"] + " " + choice)
            logp = megatron_logits(model, torch.tensor([whole[:-1]])).log_softmax(-1)[0]
            scores.append(sum(float(logp[i - 1, whole[i]]) for i in range(len(context), len(whole))))
        correct += int(max(range(len(scores)), key=scores.__getitem__) == doc["label"])
    return correct / len(docs)


@pytest.mark.integration
def test_eval_logs_accuracy_and_retention(tmp_path: Path, trained_pair: TrainedPair) -> None:  # noqa: F811
    from mlflow.tracking import MlflowClient

    from bitcpm.export.source import open_source

    docs = write_task(tmp_path / "tasks")
    args = [str(trained_pair.qat), "tasks=tiny_mc", f"task_dir={tmp_path}/tasks", "baseline=auto"]
    proc = run_module("bitcpm.eval", args, tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(tracking_uri=trained_pair.tracking_uri)
    accuracy = {}
    for name, run in (("qat", trained_pair.qat), ("pretrain", trained_pair.pretrain)):
        run_id = open_source(run).mlflow_run_id
        assert run_id is not None
        metrics = client.get_run(run_id).data.metrics
        accuracy[name] = metrics["eval/tiny_mc/acc"]
        assert accuracy[name] == pytest.approx(independent_accuracy(run, docs), abs=1e-9)
    retention = client.get_run(open_source(trained_pair.qat).mlflow_run_id).data.metrics["eval/tiny_mc/retention"]
    assert retention == pytest.approx(accuracy["qat"] / accuracy["pretrain"])
    row = next(line for line in proc.stdout.splitlines() if line.startswith("tiny_mc "))
    assert f"{100 * retention:.1f}%" in row
    assert "average" in proc.stdout


def test_bad_arguments_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from bitcpm.eval import main

    hf = tmp_path / "hf"  # a Hugging Face directory as the target: only its config and weights header are read
    hf.mkdir()
    (hf / "config.json").write_text('{"model_type": "llama"}')
    (hf / "model.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    for args, message in (
        (["tasks=x", "colour=red"], "colour: unknown key"),
        ([], "tasks: required"),
        (["tasks=x", "limit=ten"], "limit: 'ten': expected an integer"),
        (["tasks=no_such_task", f"task_dir={tmp_path}"], "'no_such_task' is neither a registry task"),
    ):
        assert main([str(hf), *args]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, err
