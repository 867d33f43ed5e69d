import pytest

from tailorlm.config import ConfigError, load_config, to_yaml


def test_unknown_keys_name_the_path_and_the_closest_key():
    with pytest.raises(ConfigError) as e:
        load_config(raw={"data": {"train": "a.jsonl", "max_lenght": 3}, "method": {"name": "lora", "rr": 3}})
    msg = str(e.value)
    assert "data.max_lenght: unknown key; did you mean 'data.max_length'?" in msg
    assert "method.rr: unknown key; did you mean 'method.r'?" in msg


def test_wrong_types_say_what_was_expected():
    with pytest.raises(ConfigError) as e:
        load_config(raw={"data": {"train": "a.jsonl"}, "train": {"lr": "fast", "steps": 0}})
    msg = str(e.value)
    assert "train.lr: Input should be a valid number" in msg and "'fast'" in msg
    assert "train.steps: Input should be greater than or equal to 1" in msg


def test_unknown_method_suggests_the_nearest():
    with pytest.raises(ConfigError, match="unknown method 'lroa'.*Did you mean 'lora'"):
        load_config(raw={"data": {"train": "a.jsonl"}, "method": "lroa"})


def test_missing_required_key():
    with pytest.raises(ConfigError, match="data: required key is missing"):
        load_config(raw={})


def test_dotted_overrides_are_typed(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("data: {train: a.jsonl}\nmethod: {name: lora, r: 16}\n")
    cfg = load_config(p, ["train.lr=1e-4", "method.r=8", "method.targets=[q_proj, v_proj]", "model=./m",
                          "data.val=null"])
    assert cfg.train.lr == 1e-4 and cfg.method.r == 8 and cfg.method.targets == ["q_proj", "v_proj"]
    assert cfg.model.path == "./m" and cfg.data.val is None


def test_bad_override_and_bad_yaml_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="not key=value"):
        load_config(raw={"data": {"train": "a"}}, overrides=["train.lr"])
    p = tmp_path / "c.yaml"
    p.write_text("data:\n  train: a.jsonl\n   bad: [\n")
    with pytest.raises(ConfigError, match=r"c.yaml:\d+: not valid YAML"):
        load_config(p)


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(raw={"data": {"train": "a.jsonl"}, "method": {"name": "full"}})
    p = tmp_path / "c.yaml"
    p.write_text(to_yaml(cfg))
    assert load_config(p) == cfg
