"""The built-in task API (the content itself is tested in test_data.py)."""

import pytest

from sotopia_env import ConfigError, Task, builtin_tasks, get_task, parallel_env
from sotopia_env.builtin import SPLITS


def test_splits_are_tasks_and_partition_the_scenarios():
    by_split = {split: builtin_tasks(split) for split in SPLITS}
    for split, tasks in by_split.items():
        assert tasks and all(isinstance(t, Task) for t in tasks), split
    scenarios = {split: {t.scenario.pk for t in by_split[split]} for split in ("bc", "align", "test", "hard")}
    assert not scenarios["bc"] & scenarios["align"] and not scenarios["bc"] & scenarios["test"]
    assert not scenarios["align"] & scenarios["test"] and scenarios["hard"] <= scenarios["test"]
    assert [t.pk for t in by_split["all"]] == [t.pk for t in builtin_tasks("all")]
    assert {t.pk for t in by_split["all"]} == {t.pk for s in ("bc", "align", "test") for t in by_split[s]}


def test_unknown_split_lists_allowed():
    with pytest.raises(ConfigError, match="allowed: bc, align, test, hard, all"):
        builtin_tasks("train")


def test_get_task_by_pk_codename_and_close_matches():
    task = builtin_tasks("test")[0]
    assert get_task(task.pk) is task
    by_codename = get_task(task.scenario.codename)
    assert by_codename.scenario.pk == task.scenario.pk
    assert get_task(task.scenario.pk).scenario.pk == task.scenario.pk
    typo = task.pk[:-1] + "x" if not task.pk.endswith("x") else task.pk[:-1] + "y"
    with pytest.raises(
        ConfigError, match=f"unknown task or scenario {typo!r}; close matches: .*{task.pk[:-1]}"
    ):
        get_task(typo)


def test_env_takes_builtin_ids_and_defaults_to_first_test_task():
    env = parallel_env()
    assert env.task is builtin_tasks("test")[0]
    task = builtin_tasks("bc")[0]
    env.reset(task.pk)
    assert env.task is task and env.agents == task.agent_names
    with pytest.raises(ConfigError, match="close matches"):
        env.reset(options={"task": task.pk + "-zz"})
