"""A version's environment (pure): requirements, what a cluster lacks, core versions compared, replica options."""

import json

import pytest
from pydantic import ValidationError

from cluster.jobs import runtime_env
from cluster.runtime_env import installer_failure, pip_env
from handoff.jobs import retrain_job
from serving.config import actor_options
from serving.version_environment import replica_packages
from training.config import ExperimentConfig
from training.environment import (DRIFT_ACCEPTED_TAG, Difference, RequirementError, check_requirements, describe,
                                  differences, in_words, recorded_core, unaccepted, unmet)
from training.lineage import lineage_tags, package_versions

INSTALLED = {"numpy": "2.3.1", "torch": "2.13.0", "mlflow": "3.17.2", "pandas": "2.3.0", "scikit-learn": "1.6.1"}


def config(**model) -> ExperimentConfig:
    return ExperimentConfig.model_validate({"name": "m", "dataset": {"uri": "x.parquet", "label": "y", "features": ["a"]},
                                          "model": model})


def test_requirements_are_normalised_in_order_once_and_bad_ones_refused_by_name():
    assert check_requirements(["Scikit_Learn >= 1.5", "tabulate", "scikit-learn>=1.5"]) == ["scikit-learn>=1.5",
                                                                                            "tabulate"]
    with pytest.raises(RequirementError, match="'not a requirement!!' is not a pip requirement"):
        check_requirements(["not a requirement!!"])
    with pytest.raises(RequirementError, match="names Ray, which the cluster provides"):
        check_requirements(["Ray==2.9"])
    with pytest.raises(ValidationError, match="is not a pip requirement"):
        config(requirements=["=="])
    assert config(requirements=["Tabulate==0.9.0"]).model.requirements == ["tabulate==0.9.0"]


def test_requirements_change_the_config_hash_only_when_given():
    plain = config().config_hash()
    assert config(requirements=[]).config_hash() == plain  # earlier configs keep their hash
    assert config(requirements=["tabulate"]).config_hash() != plain


def test_only_what_the_cluster_does_not_satisfy_is_installed():
    reqs = ["numpy>=2", "scikit-learn==1.5.2", "tabulate", "pandas[performance]", "torch<3",
            "local-pkg @ file:///tmp/local_pkg-0.1-py3-none-any.whl", "winonly; sys_platform == 'win32'"]
    assert unmet(reqs, INSTALLED) == ["scikit-learn==1.5.2", "tabulate", "pandas[performance]",
                                      "local-pkg @ file:///tmp/local_pkg-0.1-py3-none-any.whl"]
    assert unmet(["numpy>=2", "torch"], INSTALLED) == []  # nothing extra: no runtime environment at all
    assert unmet(["numpy>=2.4.0rc1"], {"numpy": "2.4.0rc2"}) == []  # a pre-release that satisfies counts


def test_replica_options_carry_only_the_missing_packages_and_are_the_same_for_every_caller():
    lineage = {"requirements": json.dumps(["tabulate==0.9.0", "numpy>=2"])}
    packages = replica_packages(lineage, INSTALLED)
    assert packages == ["tabulate==0.9.0"]
    options = actor_options(0.5, packages=packages)
    assert options["runtime_env"] == {"working_dir": None,
                                      "pip": {"packages": ["tabulate==0.9.0"], "pip_check": False}}
    assert actor_options(0.5, packages=packages) == options  # a repeated change: the same deployment version
    assert actor_options(0.5)["runtime_env"] == {"working_dir": None}  # nothing extra: as before
    assert replica_packages({}, INSTALLED) == []  # a version registered before requirements were kept


def test_jobs_install_their_packages_and_nothing_when_there_are_none():
    spec = retrain_job("m", "e1", pip=["tabulate==0.9.0"])
    assert runtime_env(spec, None)["pip"] == {"packages": ["tabulate==0.9.0"], "pip_check": False}
    assert "pip" not in runtime_env(retrain_job("m", "e1"), None)
    assert pip_env([]) == {}


def recorded(**over):
    core = {"python": "3.11.7", "torch": "2.13.0", "numpy": "2.3.1", "mlflow": "3.17.2", "answer_code": "abc"}
    return {**core, **over}


RAY_SETUP_REPORT = """Failed to set up runtime environment.
Traceback (most recent call last):
  File "/venv/site-packages/ray/_private/runtime_env/agent/runtime_env_agent.py", line 519, in _setup_runtime_env
    await create_for_plugin_if_needed(
ray._private.runtime_env.utils.SubprocessCalledProcessError: Run cmd[13] failed with the following details.
Command '['/tmp/ray/virtualenv/bin/python', '-m', 'pip', 'install', '-r', '/tmp/ray/reqs.txt']' returned non-zero exit status 1.
Last 50 lines of stdout:
    Looking in indexes: https://pypi.org/simple
    Processing /tmp/probe/dist/handoff_env_probe-0.1.0-py3-none-any.whl (from -r /tmp/ray/reqs.txt (line 1))
    ERROR: Could not find a version that satisfies the requirement nothing-here==9 (from versions: none)
    ERROR: No matching distribution found for nothing-here==9
"""


def test_a_failed_install_is_told_by_pips_own_lines_not_rays_traceback():
    said = installer_failure(RAY_SETUP_REPORT)
    assert said == ("ERROR: Could not find a version that satisfies the requirement nothing-here==9 (from versions: "
                    "none) ERROR: No matching distribution found for nothing-here==9")
    assert installer_failure("Failed to set up runtime environment.\nTraceback ...\nOSError: disk full\n") == \
        "OSError: disk full"
    assert installer_failure("ERROR: " + "x" * 5000, limit=100).endswith("…")
    assert len(installer_failure("ERROR: " + "x" * 5000, limit=100)) == 100


def test_differences_that_can_change_answers_are_named_and_harmless_ones_are_not():
    lineage = lineage_tags(commit="c", dirty=False, data_fingerprint="f", data_uri="u", config_hash="h", seed=0,
                           versions={"python": "3.11.7", "torch": "2.13.0", "numpy": "2.3.1", "ray": "2.60.0",
                                     "mlflow": "3.17.2"}, experiment_path="p", trial_id="t", trial_params="{}",
                           epochs_trained=1, weights_sha256="w", threads=1, device="cpu", search_run_id="r",
                           requirements=["tabulate"], answer_code="abc")
    core = recorded_core({k[len("handoff."):]: v for k, v in lineage.items()})
    assert core == recorded()
    # a patch release of Python and a minor release of MLflow change no answer
    assert differences(core, recorded(python="3.11.9", mlflow="3.18.0")) == []
    found = differences(core, recorded(torch="2.14.1", numpy="2.3.2", mlflow="4.0.0", python="3.12.1",
                                       answer_code="def"))
    assert [d.name for d in found] == ["python", "torch", "numpy", "mlflow", "answer_code"]
    assert str(found[1]) == "torch 2.13.0 (trained) vs 2.14.1 (here)"
    assert differences({}, recorded(torch="9")) == []  # nothing recorded: nothing compared
    assert "numpy" in package_versions()


def test_an_accepted_difference_is_not_refused_again_but_a_new_one_is():
    torch = Difference("torch", "2.12.0", "2.13.0")
    lineage = {DRIFT_ACCEPTED_TAG: json.dumps([{**torch.to_dict(), "accepted_at": "2026-12-07T10:00:00Z"}])}
    assert unaccepted([torch], lineage) == []
    numpy = Difference("numpy", "2.3.1", "2.3.2")
    assert unaccepted([torch, numpy], lineage) == [numpy]
    assert unaccepted([Difference("torch", "2.12.0", "2.14.0")], lineage)  # the same name, another version


def test_handoff_models_says_what_a_version_needs_and_whether_it_matches():
    lineage = {"requirements": json.dumps(["tabulate==0.9.0"]), "python_version": "3.11.7",
               "torch_version": "2.12.0", "numpy_version": "2.3.1", "mlflow_version": "3.17.2", "answer_code": "abc"}
    here = recorded()
    described = describe(lineage, here, INSTALLED)
    assert described["installs"] == ["tabulate==0.9.0"] and described["matches"] is False
    assert described["differences"] == [{"name": "torch", "recorded": "2.12.0", "current": "2.13.0",
                                         "accepted": False}]
    assert in_words(described) == ("needs tabulate==0.9.0 (replicas install tabulate==0.9.0); "
                                   "DIFFERS: torch 2.12.0 (trained) vs 2.13.0 (here)")
    same = describe({**lineage, "torch_version": "2.13.0"}, here, {**INSTALLED, "tabulate": "0.9.0"})
    assert in_words(same) == "needs tabulate==0.9.0; matches this cluster"
    assert in_words(describe({}, here, INSTALLED)) == ("needs nothing beyond Handoff; core versions not recorded "
                                                      "(registered before they were)")


def test_a_command_whose_model_lacks_packages_is_sent_to_a_cluster_or_refused_naming_them(monkeypatch):
    from cluster.settings import JOB_DRIVER_ENV
    from handoff.model_environment import RequirementsUnmet, run_where_met
    from training.environment import absent

    monkeypatch.delenv(JOB_DRIVER_ENV, raising=False)
    assert run_where_met(["numpy>=2"], None, "the model 'm'") is None  # met here: runs here
    with pytest.raises(RequirementsUnmet, match="needs handoff-surely-absent==1.0, not installed here.*handoff up"):
        run_where_met(["handoff-surely-absent==1.0"], None, "the model 'm'")
    # inside a job: installed (any version) is enough, a package the job's environment lacks is named
    monkeypatch.setenv(JOB_DRIVER_ENV, "1")
    assert run_where_met(["numpy==0.0.1", "local @ file:///x.whl ; sys_platform == 'win32'"], None, "m") is None
    with pytest.raises(RequirementsUnmet, match="needs handoff-surely-absent==1.0, which this Ray job's environment lacks"):
        run_where_met(["handoff-surely-absent==1.0"], None, "m")
    assert absent(["numpy==0.0.1", "nope"], {"numpy": "2.3.1"}) == ["nope"]


def test_the_answer_code_covers_every_training_module_an_answer_imports():
    """A module that the answer modules import is an answer module too (else a change to it would
    change answers unnoticed)."""
    import ast
    from pathlib import Path

    from training.environment import ANSWER_MODULES, answer_code

    root = Path(__file__).resolve().parents[2] / "training"
    for name in ANSWER_MODULES:
        for node in ast.walk(ast.parse((root / f"{name}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("training."):
                assert node.module.split(".")[1] in ANSWER_MODULES, (name, node.module)
    assert len(answer_code()) == 16 and answer_code() == answer_code()


def test_a_command_sent_as_a_job_keeps_its_paths_and_settings(tmp_path, monkeypatch):
    from handoff.model_environment import forwarded, with_absolute_paths

    monkeypatch.chdir(tmp_path)
    argv = ["tune", "my.yaml", "--set", "seed=3", "--home", "h", "--json"]
    assert with_absolute_paths(argv) == ["tune", str(tmp_path / "my.yaml"), "--set", "seed=3", "--home",
                                         str(tmp_path / "h"), "--json"]
    assert with_absolute_paths(["predict", "m", "--input=in.parquet", "--output", "s3://b/out"]) == \
        ["predict", "m", f"--input={tmp_path / 'in.parquet'}", "--output", "s3://b/out"]
    assert with_absolute_paths(["reproduce", "m", "3"]) == ["reproduce", "m", "3"]
    env = {"HANDOFF_SEARCH__NUM_SAMPLES": "4", "HANDOFF_HOME": "/mine", "HANDOFF_MLFLOW__TRACKING_URI": "x",
           "PATH": "/bin"}
    assert forwarded(env) == {"HANDOFF_SEARCH__NUM_SAMPLES": "4"}  # the head publishes its own home and MLflow


def test_a_job_with_packages_runs_the_python_ray_made_for_them():
    from cluster.jobs import PYTHON
    from handoff.jobs import cli_job

    assert cli_job("tune", ["tune", "c.yaml"], pip=["x==1"]).entrypoint.startswith("python -m handoff tune")
    assert cli_job("tune", ["tune", "c.yaml"]).entrypoint.startswith(f"{PYTHON} -m handoff")
    assert retrain_job("m", "e", pip=["x==1"]).entrypoint.startswith("python -m handoff retrain")


def test_code_paths_are_importable_as_mlflow_will_import_them_also_from_a_trials_own_directory(tmp_path,
                                                                                                  monkeypatch):
    import sys

    from training.models import import_code_paths

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "my_factory_mod.py").write_text("VALUE = 7\n")
    trial_dir = tmp_path / "trial"
    trial_dir.mkdir()
    monkeypatch.chdir(trial_dir)  # Tune runs a trial in a directory of its own
    monkeypatch.setenv("TUNE_ORIG_WORKING_DIR", str(tmp_path))
    monkeypatch.setattr(sys, "path", list(sys.path))
    import_code_paths(["src/my_factory_mod.py"])
    import_code_paths(["src/my_factory_mod.py"])  # once on the path
    assert sys.path.count(str(tmp_path / "src")) == 1
    import my_factory_mod

    assert my_factory_mod.VALUE == 7


def test_a_search_sent_to_a_cluster_installs_its_configs_requirements(tmp_path):
    from handoff.model_environment import requirements_of

    config = tmp_path / "c.yaml"
    config.write_text("name: m\ndataset: {uri: x.parquet, label: y, features: [a]}\n"
                      "model: {requirements: ['tabulate==0.9.0']}\n")
    assert requirements_of(["tune", str(config), "--set", "seed=3"]) == ["tabulate==0.9.0"]
    assert requirements_of(["tune", str(config), "--set=model.requirements=[]"]) == []
    assert requirements_of(["models", "m"]) == [] and requirements_of(["tune", str(tmp_path / "none.yaml")]) == []
