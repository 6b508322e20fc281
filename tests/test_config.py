"""The run config: every key checked, the options beside the template's."""
import pytest

from tune_cvae.lab.config import ConfigError, make_config


def test_config_knows_precision_and_compile():
    assert make_config({"precision": "bf16", "compile": True})["precision"] == "bf16"
    with pytest.raises(ConfigError, match="precision"):
        make_config({"precision": "fp16"})


@pytest.mark.parametrize("bad, key", [({"kl_anneal_type": "Linear"}, "kl_anneal_type"), ({"lr": -1}, "lr"),
                                      ({"partial": 1.5}, "partial"), ({"no_such": 1}, "no_such"),
                                      ({"batch_size": 0}, "batch_size")])
def test_bad_config_names_the_key(bad, key):
    with pytest.raises(ConfigError, match=key):
        make_config(bad)
