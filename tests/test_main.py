"""The main job, ``python -m ntkcore``, on a small split."""

import re

import pytest
from ntkcore.__main__ import main


def test_main_job_prints_accuracies_for_both_kernels_and_the_cntk(capsys):
    assert main(["--n-train", "120", "--cnn-subset", "30"]) == 0
    out = capsys.readouterr().out
    for line in (
        "NNGP kernel regression test accuracy",
        "NTK kernel regression test accuracy",
        "fully-connected: NNGP accuracy",
        "CNN-GAP: NNGP accuracy",
    ):
        assert line in out
    accuracies = [float(v) for v in re.findall(r"accuracy:? (0\.\d+|1\.0+)", out)]
    assert len(accuracies) == 6 and all(0.5 < a <= 1.0 for a in accuracies)  # ten classes: chance is 0.1


def test_main_job_can_skip_the_cntk(capsys):
    assert main(["--n-train", "120", "--cnn-subset", "0"]) == 0
    assert "CNN-GAP" not in capsys.readouterr().out


def test_main_job_refuses_a_negative_cntk_subset(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--cnn-subset", "-5"])
    assert exc.value.code == 2
    assert "--cnn-subset must be >= 0" in capsys.readouterr().err
