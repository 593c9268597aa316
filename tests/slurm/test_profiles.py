"""Profiles, SLURM times, sweeps and the submitit parameters they become (no cluster needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.launch import executor_parameters, parse_sweep, resolve_configs
from launcher.profiles import available_profiles, load_profile, parse_slurm_time, profile_from_dict, with_overrides
from vsyn.errors import VsynError


def test_shipped_profiles_load() -> None:
    assert {"local", "a100", "h100"} <= set(available_profiles())
    for name in available_profiles():
        load_profile(name)


@pytest.mark.parametrize(
    "text, seconds",
    [("30", 1800), ("5:30", 330), ("1:00:00", 3600), ("2-00:00:00", 172800), ("1-12", 129600), ("0-0:1", 60)],
)
def test_slurm_time_formats(text: str, seconds: int) -> None:
    assert parse_slurm_time(text) == seconds


def test_bad_values_are_one_line_errors() -> None:
    with pytest.raises(VsynError, match="quote the time"):
        profile_from_dict({"time": 3600})  # what YAML makes of an unquoted 1:00:00
    with pytest.raises(VsynError, match="unknown key"):
        profile_from_dict({"gpus": 4})
    with pytest.raises(VsynError, match="one task per GPU"):
        profile_from_dict({"gpus_per_node": 4, "tasks_per_node": 2})
    with pytest.raises(VsynError, match="not a SLURM time"):
        with_overrides(load_profile("local"), time="an hour")
    with pytest.raises(VsynError, match="no profile 'nope'"):
        load_profile("nope")


def test_one_task_per_gpu_and_slurm_parameters() -> None:
    p = with_overrides(load_profile("a100"), nodes=2, gpus_per_node=8, partition="big", qos="low", account="acct")
    params = executor_parameters(p, name="vsyn-x", local=False)
    assert params["nodes"] == 2 and params["tasks_per_node"] == 8 and params["gpus_per_node"] == 8
    assert params["slurm_partition"] == "big" and params["slurm_qos"] == "low" and params["slurm_account"] == "acct"
    assert params["mem_gb"] == 8 * p.mem_per_task_gb and params["timeout_min"] == 24 * 60
    assert "module purge" in params["slurm_setup"] and "export OMP_NUM_THREADS=8" in params["slurm_setup"]
    h100 = executor_parameters(load_profile("h100"), name="x", local=False)
    assert h100["slurm_gres"] == "gpu:h100:8" and "gpus_per_node" not in h100  # typed gres instead
    local = executor_parameters(load_profile("local"), name="x", local=True)
    assert local["tasks_per_node"] == 2 and not any(k.startswith("slurm_") for k in local)


def test_sweep_is_a_product_of_runs_with_their_own_dirs(tmp_path: Path) -> None:
    assert parse_sweep(["optim.lr_g=1e-4,3e-4", "train.seed=0,1,2"])[-1] == {"optim.lr_g": "3e-4", "train.seed": "2"}
    cfgs = resolve_configs("tiny-cpu", [f"train.run_dir={tmp_path}/{{name}}"], ["train.seed=0,1,2"])
    assert [c.train.seed for c in cfgs] == [0, 1, 2]
    assert [Path(c.train.run_dir).name for c in cfgs] == ["tiny-cpu-seed0", "tiny-cpu-seed1", "tiny-cpu-seed2"]
    with pytest.raises(VsynError, match="share a run dir"):
        resolve_configs("tiny-cpu", [f"train.run_dir={tmp_path}/fixed"], ["train.seed=0,1"])
    with pytest.raises(VsynError, match="key=v1,v2"):
        parse_sweep(["train.seed"])
