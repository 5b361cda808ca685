from pathlib import Path

import pytest
import yaml

from training.config_loader import ConfigError, load_config

EXAMPLE = Path(__file__).resolve().parents[2] / "configs" / "shuttle.yaml"


def write(tmp_path: Path, data: dict) -> Path:
    p = tmp_path / "exp.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def base() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def test_example_config_loads_with_every_section():
    cfg = load_config(EXAMPLE, environ={})
    assert cfg.name == "shuttle"
    assert cfg.dataset.features == [f"f{i}" for i in range(1, 10)]
    assert cfg.search.scheduler.type == "asha"
    assert set(cfg.search.space) == {"hidden_layers", "width", "dropout", "lr", "batch_size"}
    assert cfg.resources.cpu == 1 and cfg.resources.gpu == 0
    assert cfg.experiment_name == "handoff-shuttle"


def test_unknown_key_is_named(tmp_path):
    data = base()
    data["dataset"]["labl"] = "x"
    with pytest.raises(ConfigError, match=r"dataset\.labl: unknown key"):
        load_config(write(tmp_path, data), environ={})


def test_wrong_type_is_named(tmp_path):
    data = base()
    data["search"]["num_samples"] = "many"
    with pytest.raises(ConfigError, match=r"search\.num_samples"):
        load_config(write(tmp_path, data), environ={})


def test_missing_required_field_is_named(tmp_path):
    data = base()
    del data["dataset"]["label"]
    with pytest.raises(ConfigError, match=r"dataset\.label: Field required"):
        load_config(write(tmp_path, data), environ={})


def test_bad_distribution_is_named(tmp_path):
    data = base()
    data["search"]["space"]["lr"] = {"type": "loguniform", "low": 0.0, "high": 0.1}
    with pytest.raises(ConfigError, match=r"search\.space\.lr"):
        load_config(write(tmp_path, data), environ={})


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml", environ={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad, environ={})


def test_an_empty_file_and_a_directory_are_named_as_such(tmp_path):
    for text in ("", "# a comment only\n"):
        (tmp_path / "empty.yaml").write_text(text)
        with pytest.raises(ConfigError, match=r"empty\.yaml is empty"):
            load_config(tmp_path / "empty.yaml", environ={})
    with pytest.raises(ConfigError, match="is a directory, not a file"):
        load_config(tmp_path, environ={})
    (tmp_path / "list.yaml").write_text("- a\n")
    with pytest.raises(ConfigError, match="must hold a mapping at the top, not list"):
        load_config(tmp_path / "list.yaml", environ={})
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config(tmp_path / "binary.yaml", environ={})


def test_env_overrides_file_and_flag_overrides_env():
    env = {"HANDOFF_SEARCH__NUM_SAMPLES": "3", "HANDOFF_SEED": "11", "HANDOFF_HOME": "/elsewhere"}
    cfg = load_config(EXAMPLE, environ=env)
    assert cfg.search.num_samples == 3 and cfg.seed == 11
    cfg = load_config(EXAMPLE, ["search.num_samples=5", "search.scheduler.type=fifo"], environ=env)
    assert cfg.search.num_samples == 5 and cfg.search.scheduler.type == "fifo"


def test_override_values_keep_their_type():
    cfg = load_config(EXAMPLE, ["dataset.features=[f1, f2]", "dataset.max_rows=100", "resources.gpu=0.5"],
                      environ={})
    assert cfg.dataset.features == ["f1", "f2"] and cfg.dataset.max_rows == 100 and cfg.resources.gpu == 0.5


def test_misspelt_env_section_fails():
    with pytest.raises(ConfigError, match="HANDOFF_SERCH__NUM_SAMPLES"):
        load_config(EXAMPLE, environ={"HANDOFF_SERCH__NUM_SAMPLES": "2"})


def test_override_must_be_key_value_and_not_descend_into_a_value():
    with pytest.raises(ConfigError, match="section.field=value"):
        load_config(EXAMPLE, ["search.num_samples"], environ={})
    with pytest.raises(ConfigError, match="seed is a value"):
        load_config(EXAMPLE, ["seed.x=1"], environ={})


def test_metric_and_mode_must_agree():
    with pytest.raises(ConfigError, match="mode 'min'"):
        load_config(EXAMPLE, ["search.mode=max"], environ={})


def test_a_parameter_cannot_be_fixed_and_searched():
    with pytest.raises(ConfigError, match="both set"):
        load_config(EXAMPLE, ["model.params.width=8"], environ={})


def test_config_hash_is_stable_and_sensitive():
    a = load_config(EXAMPLE, environ={})
    assert a.config_hash() == load_config(EXAMPLE, environ={}).config_hash()
    assert a.config_hash() != load_config(EXAMPLE, ["seed=8"], environ={}).config_hash()


def test_monitoring_config_layers_and_its_variables_stay_out_of_the_experiment_config():
    from monitoring.config import load_monitoring_config

    env = {"HANDOFF_MONITORING__PERSISTENCE": "5", "HANDOFF_SEARCH__NUM_SAMPLES": "4"}
    cfg = load_monitoring_config(Path("configs/monitoring.yaml"), ["window_rows=1000"], environ=env)
    assert cfg.persistence == 5 and cfg.window_rows == 1000 and cfg.correction == "benjamini-hochberg"
    assert load_config(EXAMPLE, [], environ=env).search.num_samples == 4  # not "monitoring is no section"
    with pytest.raises(ConfigError, match="min_rows"):
        load_monitoring_config(None, ["window_rows=100", "min_rows=500"], environ={})
    with pytest.raises(ConfigError, match="correction"):
        load_monitoring_config(None, ["correction=holm"], environ={})
    with pytest.raises(ConfigError, match="not a config section"):
        load_monitoring_config(None, [], environ={"HANDOFF_MONITORING__WINDOW__ROWS": "1"})


def test_a_registry_apart_from_the_tracking_server_is_refused_naming_why():
    with pytest.raises(ConfigError, match="a model registry apart from the tracking server is not supported"):
        load_config(EXAMPLE, ["mlflow.registry_uri=databricks-uc"], environ={})
    same = load_config(EXAMPLE, ["mlflow.tracking_uri=http://127.0.0.1:5000", "mlflow.registry_uri=http://127.0.0.1:5000"],
                       environ={})
    assert same.mlflow.registry_uri == same.mlflow.tracking_uri


def test_column_names_yaml_reads_as_numbers_are_taken_as_written_and_booleans_refused():
    """`features: [2019]` is the column "2019" (a Parquet column name is text); `yes` (YAML 1.1: a boolean)
    and `1.5` cannot be told back from what was written: refused, asking for quotes."""
    from pathlib import Path

    from cluster.config_layers import ConfigError
    from training.config_loader import load_config

    shuttle = Path(__file__).resolve().parents[2] / "configs" / "shuttle.yaml"
    cfg = load_config(shuttle, ["dataset.features={2019: numeric, f2: categorical}", "dataset.label=7"], environ={})
    assert cfg.dataset.features == ["2019", "f2"] and cfg.dataset.label == "7"
    assert cfg.dataset.kinds == {"2019": "numeric", "f2": "categorical"}
    cfg = load_config(shuttle, ["dataset.features=[2019, f2]", "dataset.kinds={2019: categorical}"], environ={})
    assert cfg.dataset.kinds == {"2019": "categorical"}
    for bad, said in (("dataset.features=[yes, f2]", "dataset.features[0]: True is not a column name"),
                      ("dataset.label=1.5", "dataset.label: 1.5 is not a column name")):
        with pytest.raises(ConfigError, match="quote the column's name") as exc:
            load_config(shuttle, [bad], environ={})
        assert said in str(exc.value)
