"""Configuration: composition, the paper's aliases, and bad values failing early."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from common.run.points import point_key
from common.run.settings import ConfigError, RunSettings, settings_from_config
from conf import compose, settings_from_overrides

ROOT = Path(__file__).resolve().parents[1]


def settings(*overrides: str) -> RunSettings:
    return settings_from_config(compose(list(overrides)))


def test_default_config_is_the_papers_default_run():
    s = settings()
    assert (s.data.name, s.users.zoo, s.strategy.name, s.experiment.rounds) == (
        "mnist5k",
        "embedded",
        "federated",
        30,
    )
    assert (s.link.antennas_tx, s.link.antennas_rx, s.link.channel_uses, s.link.snr_db) == (
        4,
        4,
        4,
        20.0,
    )
    assert s.num_users == 8 and s.data.pilot_fraction == 1.0 and s.strategy.rho == 1.0
    assert s.experiment.cpus_per_user == 1.0


def test_groups_and_counts_select_users():
    assert settings("users=heterogeneous").num_users == 4
    assert settings("users=homogeneous", "users.count=2").users.models == (
        "rexnet_100",
        "mobilenetv3_small_075",
    )
    assert settings("users.models=[levit_128s,resnet10t]").users.models == (
        "levit_128s",
        "resnet10t",
    )
    assert settings("users=paper10", "data=cifar10").num_users == 10


def test_paper_keys_translate_one_to_one():
    assert settings("base_station.status=multi-link").strategy.name == "multi_link"
    assert settings("base_station.status=shared").strategy.name == "federated"
    assert settings("base_station.strategy=Top-K").strategy.name == "top_k"
    assert (
        settings("base_station.status=shared", "base_station.strategy=First-K").strategy.name
        == "first_k"
    )
    s = settings(
        "communication.channel_usage=8",
        "communication.antennas_transmitter=2",
        "communication.antennas_receiver=2",
        "communication.snr=-10",
        "seed=27",
    )
    link = s.link
    assert (link.channel_uses, link.antennas_tx, link.antennas_rx, link.snr_db, s.seed) == (
        8,
        2,
        2,
        -10,
        27,
    )


def test_settings_survive_json_and_the_flwr_run_config_path():
    s = settings("strategy=top_k", "communication.channel_usage=2")
    assert RunSettings.from_json(s.to_json()) == s
    assert settings_from_overrides("strategy=top_k communication.channel_usage=2") == s


@pytest.mark.parametrize(
    ("override", "key", "allowed"),
    [
        ("strategy.name=fedavg", "strategy.name", "federated, first_k, multi_link, top_k"),
        ("base_station.strategy=Best-K", "base_station.strategy", "First-K"),
        ("data.name=imagenet", "data.name", "cifar10, mnist5k"),
        ("users.zoo=huge", "users.zoo", "embedded"),
        ("users.group=tiny", "users.group", "heterogeneous"),
        ("users.models=[resnet10t,resnet99]", "users.models", "levit_128s"),
        ("users.count=1000001", "users.count", "at most 1,000,000"),
        ("users.assignment=bogus", "users.assignment", "round_robin, random"),
        ("users.models=[]", "users.models", "at least one model"),
        ("users.count=0", "users.count", ">= 1"),
        ("communication.antennas_transmitter=0", "communication.antennas_transmitter", ">= 1"),
        ("communication.antennas_receiver=-2", "communication.antennas_receiver", ">= 1"),
        ("communication.channel_usage=0", "communication.channel_usage", ">= 1"),
        ("communication.snr=nan", "communication.snr", "number in dB"),
        ("communication.power=0", "communication.power", "> 0"),
        ("data.pilot_fraction=0", "data.pilot_fraction", "(0, 1]"),
        ("data.pilot_fraction=1.5", "data.pilot_fraction", "(0, 1]"),
        ("experiment.rounds=0", "experiment.rounds", ">= 1"),
        ("strategy.rho=0", "strategy.rho", "in [1e-12, 1e12]"),
        ("seed=-3", "seed", "0..9223372036854775807"),
        ("seed=18446744073709551616", "seed", "0..9223372036854775807"),
        ("communication.snr=150", "communication.snr", "[-50, 100] dB"),
        ("communication.snr=-80", "communication.snr", "[-50, 100] dB"),
        ("experiment.rounds=100000000", "experiment.rounds", "at most 100,000"),
        ("consensus.aggregator=nope", "consensus.aggregator", "median"),
        ("consensus.trim_fraction=0.5", "consensus.trim_fraction", "[0, 0.5)"),
        ("consensus.participation=0", "consensus.participation", "(0, 1]"),
        ("consensus.participation=1.2", "consensus.participation", "(0, 1]"),
        ("faults.users=9", "faults.users", "at most the number of users (8)"),
        ("faults.users=-1", "faults.users", ">= 0"),
        ("faults.kind=boom", "faults.kind", "scaled, random, nan"),
        ("faults.scale=0", "faults.scale", "> 0"),
        ("communication.model=nakagami", "communication.model", "rayleigh, correlated, rician"),
        ("communication.correlation=1.0", "communication.correlation", "[0, 1)"),
        ("communication.k_factor=-3", "communication.k_factor", ">= 0"),
        ("communication.coherence_uses=-1", "communication.coherence_uses", ">= 0"),
        ("csi.estimation=oracle", "csi.estimation", "perfect, ls, lmmse"),
        ("csi.snr=nan", "csi.snr", "number in dB"),
        ("csi.ageing=-0.1", "csi.ageing", "[0, 1]"),
        ("sweep_in_flight=0", "sweep_in_flight", ">= 1"),
        ("sweep_in_flight=-3", "sweep_in_flight", ">= 1"),
    ],
)
def test_bad_values_name_key_value_and_what_is_allowed(override, key, allowed):
    value = override.split("=", 1)[1]
    with pytest.raises(ConfigError) as info:
        settings(override)
    message = str(info.value)
    assert f"'{key}'" in message
    assert allowed in message
    assert value.strip("[]").split(",")[-1] in message


def test_cli_rejects_bad_config_before_starting_ray(tmp_path):
    env = {**os.environ, "RAY_ADDRESS": "ray://127.0.0.1:1"}  # any Ray start would fail loudly
    proc = subprocess.run(
        [
            sys.executable,
            "run_simulation.py",
            "communication.antennas_transmitter=0",
            f"hydra.run.dir={tmp_path}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "error: config key 'communication.antennas_transmitter' = 0 is invalid" in proc.stderr
    assert "ray" not in (proc.stdout + proc.stderr).lower().replace("array", "")
    assert not (tmp_path / "results.parquet").exists()


@pytest.mark.parametrize(
    ("overrides", "key", "needs"),
    [
        (["communication.correlation=0.9"], "communication.correlation", "channel=correlated"),
        (
            ["channel=rician", "communication.correlation=0.9"],
            "communication.correlation",
            "channel=correlated",
        ),
        (["communication.k_factor=3"], "communication.k_factor", "channel=rician"),
        (["csi.snr=5"], "csi.snr", "csi.estimation=ls or csi.estimation=lmmse"),
        (
            ["consensus.trim_fraction=0.1"],
            "consensus.trim_fraction",
            "consensus.aggregator=trimmed_mean",
        ),
        (
            ["strategy=multi_link", "consensus.aggregator=median"],
            "consensus.aggregator",
            "a consensus method (strategy=federated)",
        ),
        (["strategy=first_k", "strategy.rho=2"], "strategy.rho", "an ADMM method"),
        (["faults.kind=random"], "faults.kind", "faults.users=1 or more"),
        (["faults.scale=3"], "faults.scale", "faults.users=1 or more"),
        (
            ["faults.users=1", "faults.kind=nan", "faults.scale=3"],
            "faults.scale",
            "faults.kind=scaled or random",
        ),
    ],
)
def test_a_setting_given_where_the_run_does_not_read_it_is_refused(overrides, key, needs):
    """communication.correlation=0.9 without channel=correlated gave the i.i.d. result while
    results.csv said 0.9: an option-specific key given without its option is refused."""
    with pytest.raises(ConfigError) as info:
        settings_from_overrides(" ".join(overrides))
    message = str(info.value)
    assert f"config key '{key}'" in message and "has no effect" in message
    assert f"read only with {needs}" in message
    assert settings(*overrides) is not None  # the values themselves are valid


def test_with_its_option_a_setting_is_read_and_a_sweep_may_cross_options():
    from conf import sweep_points

    s = settings_from_overrides("channel=correlated communication.correlation=0.9")
    assert s.communication.correlation == 0.9
    s = settings_from_overrides("csi.estimation=ls csi.snr=5 faults.users=1 faults.scale=3")
    assert (s.csi.csi_snr_db, s.faults.scale) == (5.0, 3.0)
    crossing = "users.count=5 consensus.aggregator=mean,trimmed_mean consensus.trim_fraction=0.4"
    assert [p.consensus.aggregator for _, p in sweep_points(crossing)] == ["mean", "trimmed_mean"]
    with pytest.raises(ConfigError, match="has no effect in any point of the sweep"):
        sweep_points("consensus.aggregator=mean,median consensus.trim_fraction=0.4")


def test_a_trimming_rule_that_would_cut_nobody_is_refused():
    """Three users at β = 0.2 trimmed ⌊0.6⌋ = 0: exactly the plain mean, with no word."""
    with pytest.raises(ConfigError) as info:
        settings("users.count=3", "consensus.aggregator=trimmed_mean")
    assert "'consensus.trim_fraction' = 0.2" in str(info.value)
    assert "cuts no user of the 3" in str(info.value) and "allowed with 3: [0.334, 0.5)" in str(
        info.value
    )
    with pytest.raises(ConfigError, match="trimming needs at least 3 users in a round"):
        settings(
            "users.count=8", "consensus.aggregator=trimmed_mean", "consensus.participation=0.2"
        )
    assert settings(
        "users.count=3", "consensus.aggregator=trimmed_mean", "consensus.trim_fraction=0.34"
    )


def test_a_trimming_rule_of_ones_own_is_built_as_the_run_builds_it():
    """Its constructor may take any consensus setting (aggregator() passes them by name);
    the check of how many it cuts built it with trim_fraction alone (a TypeError)."""
    s = settings(
        "users.count=20",
        "consensus.aggregator=tests.rules:TakesParticipation",
        "consensus.trim_fraction=0.1",
    )
    assert s.consensus.aggregator == "tests.rules:TakesParticipation"
    with pytest.raises(ConfigError, match="cuts no user of the 5"):
        settings(
            "users.count=5",
            "consensus.aggregator=tests.rules:TakesParticipation",
            "consensus.trim_fraction=0.1",
        )


def test_the_cli_refuses_an_unread_setting_before_ray_in_a_run_and_in_a_sweep(tmp_path):
    env = {**os.environ, "RAY_ADDRESS": "ray://127.0.0.1:1"}  # any Ray start would fail loudly
    for args in (
        ["communication.k_factor=3", f"hydra.run.dir={tmp_path / 'run'}"],
        ["communication.k_factor=3", "seed=1,2", f"hydra.sweep.dir={tmp_path / 'sweep'}", "-m"],
    ):
        proc = subprocess.run(
            [sys.executable, "run_simulation.py", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 1, proc.stderr
        assert "error: config key 'communication.k_factor' = 3.0 has no effect" in proc.stderr
        assert "read only with channel=rician" in proc.stderr
        assert "Traceback" not in proc.stderr
    assert not list(tmp_path.rglob("results.parquet"))


def test_every_default_lives_in_the_config_files():
    """Settings hold no defaults of their own: a key missing from the config is an error."""
    cfg = compose([])
    del cfg["communication"]["snr"]
    with pytest.raises(ConfigError, match="'communication.snr' is missing"):
        settings_from_config(cfg)
    with pytest.raises(ConfigError, match="'strategy.name' is missing"):
        settings_from_config({})
    with pytest.raises(ValidationError):
        RunSettings()  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("override", "key", "allowed"),
    [
        ("users.models=resnet10t", "users.models", "give a list"),
        ("experiment.progress=no_thanks", "experiment.progress", "true or false"),
        ("users.head_seed=-1", "users.head_seed", "0..9223372036854775807"),
        ("data.split_seed=1.5", "data.split_seed", "0..9223372036854775807"),
        (
            "experiment.messages_in_flight=-4",
            "experiment.messages_in_flight",
            "a whole number >= 0 (0: all at once) or null",
        ),
        ("experiment.supernodes=0", "experiment.supernodes", "from 1 to 1,048,576 or null"),
        ("experiment.supernodes=2.5", "experiment.supernodes", "from 1 to 1,048,576 or null"),
        ("experiment.supernodes=2000000", "experiment.supernodes", "from 1 to 1,048,576"),
    ],
)
def test_values_of_the_wrong_kind_are_refused(override, key, allowed):
    with pytest.raises(ConfigError) as info:
        settings(override)
    assert f"'{key}'" in str(info.value) and allowed in str(info.value)


def test_settings_replace_routes_link_fields_and_validates_them():
    s = settings()
    changed = s.replace(channel_uses=8, seed=3)
    assert changed.link.channel_uses == 8 and changed.seed == 3 and s.link.channel_uses == 4
    with pytest.raises(ValueError, match="channel_uses"):
        s.replace(channel_uses=0)


def test_the_settings_module_imports_no_domain_module():
    """Names are validated through registries; the method and zoo modules load on first use."""
    code = (
        "import sys; import common.run.settings; "
        "bad = [m for m in ('common.parties.consensus', 'common.assets.zoo', 'torch', "
        "'common.assets.data') if m in sys.modules]; print(bad)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.stdout.strip() == "[]", proc.stdout + proc.stderr


def test_partial_participation_needs_an_iterative_method():
    assert settings("consensus.participation=0.5").consensus.participation == 0.5
    with pytest.raises(
        ConfigError,
        match="'consensus.participation' = 0.5 is invalid: "
        "participation below 1 needs an iterative method; top_k trains in one",
    ):
        settings("strategy=top_k", "consensus.participation=0.5")


def test_channel_groups_select_a_model_and_keep_the_link():
    correlated = settings("channel=correlated", "communication.channel_usage=2")
    channel = correlated.communication
    assert (channel.model, channel.correlation) == ("correlated", 0.5)
    assert correlated.link.channel_uses == 2 and correlated.link.antennas_tx == 4
    rician = settings("channel=rician", "communication.k_factor=10", "csi.estimation=lmmse")
    assert (rician.communication.model, rician.communication.k_factor) == ("rician", 10.0)
    assert rician.csi.estimation == "lmmse" and rician.csi.csi_snr_db == 20.0
    assert settings().csi.perfect


def test_every_setting_is_declared_once_with_its_scope_and_doc_and_has_one_yaml_default():
    """The schema and the YAML agree key for key: a setting has one declaration (type, check,
    doc, scope) and one default."""
    from common.schema import undeclared

    assert undeclared(RunSettings) == []

    def leaves(node, prefix=""):
        if not isinstance(node, dict):
            return {prefix}
        return (
            set().union(*(leaves(v, f"{prefix}{k}.") for k, v in node.items())) if node else set()
        )

    yaml_keys = {key.rstrip(".") for key in leaves(compose([]))}
    assert yaml_keys == set(RunSettings.keys())


def test_scopes_decide_what_names_a_sweep_point_and_a_users_data():
    base = settings()
    point = base.identity()
    assert "experiment" in point and set(point["experiment"]) == {"rounds"}
    assert "cache_dir" not in point and "sweep_store" not in point and "simulation" not in point
    assert base.replace(round_timeout=5.0).identity() == point  # execution: same point
    assert base.replace(cache_dir="/elsewhere").identity() == point  # location: same numbers
    assert base.replace(rho=2.0).identity() != point
    assert set(RunSettings.keys(lambda scope: scope.names_assets)) == {
        "data.name",
        "data.root",
        "data.split_seed",
        "users.zoo",
        "users.head_seed",
        "cache_dir",
        "weights_dir",
        "latents.precision",
    }


def test_a_setting_at_its_neutral_value_leaves_stored_point_names_as_they_were():
    base = settings()
    assert "latents" not in base.identity()  # fp32: what every run did before the setting
    assert "device" not in base.identity()  # where it runs changes no number
    bf16 = settings("latents.precision=bf16")
    assert bf16.identity()["latents"] == {"precision": "bf16"}
    assert point_key(bf16) != point_key(base)
    assert point_key(settings("device=cpu")) == point_key(base)


def test_unknown_keys_are_refused_by_the_schema_naming_the_nearest_setting():
    with pytest.raises(
        ConfigError,
        match=r"'communicaton' are not read by any part of the "
        r"program .*did you mean 'communication.*'",
    ):
        settings("+communicaton.snr=5")
    with pytest.raises(ConfigError, match=r"'csi.snrr' are not read .*did you mean 'csi.snr'"):
        settings("+csi.snrr=5")


def test_replace_takes_config_keys_or_unique_field_names_and_refuses_ambiguous_ones():
    s = settings()
    assert s.replace(**{"communication.channel_usage": 2}) == s.replace(channel_uses=2)
    assert s.replace(channel_usage=2).link.channel_uses == 2
    with pytest.raises(
        ConfigError,
        match="'name' is ambiguous: name one of conventions.name, data.name, logger.name, "
        "strategy.name",
    ):
        s.replace(name="x")
    with pytest.raises(ConfigError, match="'nope' is not a setting"):
        s.replace(nope=1)


# Settings as the flat layout before the sections wrote them (sweep stores, checkpoints).
FLAT = (
    '{"aggregator": "mean", "allow_partial": false, "cache_dir": null, "channel": {"ageing": '
    '1.0, "coherence_uses": 0, "correlation": 0.0, "csi_snr_db": 20.0, "estimation": '
    '"perfect", "k_factor": 0.0, "model": "rayleigh"}, "conventions": "corrected", '
    '"cpus_per_user": 1.0, "data_root": null, "dataset": "mnist5k", "fault": "scaled", '
    '"fault_scale": 100.0, "faulty_users": 0, "group": "all", "head_seed": 0, "link": '
    '{"antennas_rx": 4, "antennas_tx": 4, "channel_uses": 2, "power": 1.0, "snr_db": 20.0}, '
    '"max_failed_fraction": 0.5, "method": "federated", "models": ["vit_small_p16", '
    '"resnet10t"], "node_timeout": 120.0, "node_timeout_per_user": 2.0, "participation": 1.0, '
    '"pilot_fraction": 1.0, "progress": true, "ray_address": null, "resume": false, "rho": '
    '1.0, "round_timeout": 600.0, "round_timeout_factor": 10.0, "rounds": 2, "seed": 42, '
    '"split_seed": 0, "trim_fraction": 0.2, "weights_dir": null, "zoo": "embedded"}'
)


def test_settings_stored_in_the_flat_layout_still_name_the_same_point():
    from common.run.points import point_key
    from common.run.settings import stored_identity

    new = settings("users.count=2", "experiment.rounds=2", "communication.channel_usage=2")
    assert stored_identity(FLAT) == new.identity()
    assert stored_identity(new.to_json()) == new.identity()
    assert point_key(new) == "4a106fe66216c222"  # a point's key is stable across versions
    newer = json.loads(new.to_json())
    del newer["csi"]["ageing"]  # stored before a setting existed: it is left out
    assert "ageing" not in stored_identity(json.dumps(newer))["csi"]


def test_a_point_store_of_an_earlier_version_is_found_under_todays_names(tmp_path):
    """Points and journals named by the flat layout's keys, in the default folder's earlier
    name (``cells``), are renamed once to today's keys and found."""
    import numpy as np

    from common.run.checkpoint import Checkpoint
    from common.run.points import PointStore

    new = settings("users.count=2", "experiment.rounds=2", "communication.channel_usage=2")
    other = new.replace(seed=7)
    old = tmp_path / "cells"
    (old / "93e30cb05d9de4d9").mkdir(parents=True)  # the flat layout's key of ``new``
    (old / "93e30cb05d9de4d9" / "settings.json").write_text(FLAT)
    (old / "93e30cb05d9de4d9" / "results.csv").write_text("kept\n")
    Checkpoint(1, other.to_json(), {"F": np.ones((2, 2), complex)}, [], [], [], {}).write(
        old / ".journal" / "0123456789abcdef"
    )
    store = PointStore(tmp_path / "points")
    assert store.finished(new) and not store.finished(other)
    assert (store.path(new) / "results.csv").read_text() == "kept\n"
    assert Checkpoint.read(store.journal(other)).round == 1
    assert not old.exists()
    assert PointStore(store.root).finished(new)  # a second opening finds the same


def test_any_number_of_users_is_drawn_from_the_models_reproducibly():
    """``users.count=N``: user ``k`` runs model ``k mod M`` (round robin, the default) or a
    seeded draw (random); an explicit list is the models drawn from."""
    group = settings().users.models
    many = settings("users.count=24")
    assert many.num_users == 24 and many.users.models == group * 3
    assert settings("users.count=3").users.models == group[:3]  # the first N, as before
    listed = settings("users.models=[resnet10t,levit_128s]", "users.count=5").users.models
    assert listed == ("resnet10t", "levit_128s", "resnet10t", "levit_128s", "resnet10t")
    drawn = settings("users.count=50", "users.assignment=random").users.models
    assert drawn == settings("users.count=50", "users.assignment=random").users.models
    assert drawn != settings("users.count=50", "users.assignment=random", "seed=7").users.models
    assert set(drawn) <= set(group) and len(set(drawn)) > 1
    # resolved settings name their users: they validate to themselves, and equal users
    # named either way are the same point
    explicit = settings("users.models=[" + ",".join(group * 3) + "]")
    assert explicit.identity() == many.identity()
    assert RunSettings.from_json(many.to_json()) == many


def test_a_checkpoint_without_a_newer_setting_is_not_resumed(tmp_path):
    """A setting the stored settings lack cannot be compared: resuming is refused, naming it
    (rather than accepting any value of it)."""
    import numpy as np

    from common.run.checkpoint import Checkpoint, CheckpointError

    run = settings()
    older = json.loads(run.to_json())
    del older["csi"]["ageing"]
    Checkpoint(1, json.dumps(older), {"F": np.ones((2, 2), complex)}, [], [], [], {}).write(
        tmp_path
    )
    with pytest.raises(CheckpointError, match=r"csi\.ageing \(not in the checkpoint, 1\.0 now\)"):
        Checkpoint.read(tmp_path).check_settings(run, tmp_path)
    Checkpoint(1, "{}", {"F": np.ones((2, 2), complex)}, [], [], [], {}).write(tmp_path)
    with pytest.raises(CheckpointError, match="holds no settings"):
        Checkpoint.read(tmp_path).check_settings(run, tmp_path)


def test_a_store_upgrade_leaves_alone_what_is_not_a_point(tmp_path):
    from common.run.points import PointStore

    root = tmp_path / "points"
    for name, text in [
        ("results", "{}"),
        ("0123456789abcdef", "not json"),
        ("fedcba9876543210", '{"note": 1}'),
    ]:
        (root / name).mkdir(parents=True)
        (root / name / "settings.json").write_text(text)
    store = PointStore(root)
    assert not store.finished(settings())
    assert sorted(p.name for p in root.iterdir()) == [
        "0123456789abcdef",
        "fedcba9876543210",
        "results",
    ]
    assert not PointStore(tmp_path / "cells" / "points").finished(settings())
