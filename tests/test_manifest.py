"""Manifest validation (errors name the field and line) and expansion into runs with shared pre-training."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.manifest import ManifestError, load_manifest
from benchmarks.plan import expand, resolve_size

REPO = Path(__file__).resolve().parents[1]

MANIFEST = """\
data:
  cache_dir: cache
profiles:
  smoke:
    model: smoke
    pretrain: {epochs: 2, cycle_period: 2}
    transfer: {epochs: 2, cycle_period: 2}
    max_train_size: 40
experiments:
  - name: gap
    source: gap_pbe
    target: gap_hse
    train_sizes: [10, 1.0]
    seeds: [0, 1]
  - name: eform
    source: e_form_pbe
    target: e_form_r2scan
    strategies: [none, full]
    pretrain_sizes: [0.5, 1.0]
  - name: eform_to_gap
    source: e_form_pbe
    target: gap_hse
    strategies: [full]
    transfer_lr_factor: 0.1
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "experiments.yaml"
    path.write_text(text)
    return path


def test_valid_manifest_loads(tmp_path: Path) -> None:
    manifest = load_manifest(write(tmp_path, MANIFEST))
    assert [e.name for e in manifest.experiments] == ["gap", "eform", "eform_to_gap"]
    assert manifest.experiment("gap").task_type == "intra"
    assert manifest.experiment("eform_to_gap").task_type == "inter"


@pytest.mark.parametrize(
    ("old", "new", "field", "line"),
    [
        ("    strategies: [none, full]\n", "    strategys: [none, full]\n", "experiments.1.strategys", 18),
        ("    strategies: [none, full]\n", "    strategies: [none, fulll]\n", "experiments.1.strategies.1", 18),
        ("    pretrain: {epochs: 2, cycle_period: 2}\n", "    pretrain: {epochs: two, cycle_period: 2}\n",
         "profiles.smoke.pretrain.epochs", 6),
        ("    train_sizes: [10, 1.0]\n", "    train_sizes: [10, 1.5]\n", "experiments.0.train_sizes", 13),
        ("    model: smoke\n", "    model: huge\n", "profiles.smoke.model", 5),
        ("  cache_dir: cache\n", "  cache_dir: cache\n  protected_targets: gap_hse\n", "data.protected_targets", 3),
    ],
)
def test_errors_name_field_and_line(tmp_path: Path, old: str, new: str, field: str, line: int) -> None:
    path = write(tmp_path, MANIFEST.replace(old, new))
    with pytest.raises(ManifestError) as raised:
        load_manifest(path)
    message = str(raised.value)
    assert f"{path}:{line}: {field}" in message, message


def test_unknown_study_experiment_and_duplicates(tmp_path: Path) -> None:
    text = MANIFEST + "studies:\n  - {name: s, experiment: nope, strategy: full, n_trials: 2}\n"
    with pytest.raises(ManifestError, match="unknown experiment 'nope'"):
        load_manifest(write(tmp_path, text))
    text = MANIFEST.replace("name: eform\n", "name: gap\n")
    with pytest.raises(ManifestError, match="unique"):
        load_manifest(write(tmp_path, text))


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="not found"):
        load_manifest(tmp_path / "nothing.yaml")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_manifest(write(tmp_path, "profiles: [unclosed\n"))


def test_expansion_shares_pretraining(tmp_path: Path) -> None:
    manifest = load_manifest(write(tmp_path, MANIFEST))
    pretrains, transfers = expand(manifest, "smoke", data_key="d")
    # gap_pbe at 1.0; e_form_pbe at 0.5 and 1.0 (the 1.0 one shared by eform and eform_to_gap).
    assert sorted((p.prop, p.size) for p in pretrains) == [("e_form_pbe", 0.5), ("e_form_pbe", 1.0), ("gap_pbe", 1.0)]
    # gap: 3 strategies x 2 sizes x 2 seeds; eform: none (1) + full x 2 pretrain sizes, x 1 size x 1 seed;
    # eform_to_gap: 1.
    assert len(transfers) == 12 + 3 + 1
    assert len({t.key for t in transfers}) == len(transfers)
    shared = [t.pretrain.key for t in transfers if t.pretrain and t.pretrain.prop == "e_form_pbe" and t.pretrain.size == 1.0]
    assert len(shared) == 2 and len(set(shared)) == 1
    assert all(t.pretrain is None for t in transfers if t.strategy == "none")
    inter = [t for t in transfers if t.experiment == "eform_to_gap"][0]
    assert inter.stage["lr"] == pytest.approx(0.1 * manifest.profiles["smoke"].transfer.lr)


def test_a_run_two_experiments_ask_for_is_planned_once(tmp_path: Path) -> None:
    text = MANIFEST + """\
  - name: eform_pretrain_size
    source: e_form_pbe
    target: e_form_r2scan
    strategies: [full]
    pretrain_sizes: [0.25, 1.0]
"""
    manifest = load_manifest(write(tmp_path, text))
    transfers = expand(manifest, "smoke", data_key="d")[1]
    assert len({t.key for t in transfers}) == len(transfers)
    full = {t.pretrain.size: t for t in transfers if t.target == "e_form_r2scan" and t.strategy == "full"}
    # full transfer from the whole pool is eform's run; eform_pretrain_size asks for the same one
    assert full[1.0].experiments == ("eform", "eform_pretrain_size")
    assert full[0.5].experiments == ("eform",) and full[0.25].experiments == ("eform_pretrain_size",)
    alone = expand(manifest, "smoke", only=["eform_pretrain_size"], data_key="d")[1]
    # the key says what is trained on which data, whichever experiment asks first
    assert {t.key for t in alone} >= {full[1.0].key}
    assert [t.experiments for t in alone if t.key == full[1.0].key] == [("eform_pretrain_size",)]


def test_keys_are_stable_and_follow_settings(tmp_path: Path) -> None:
    manifest = load_manifest(write(tmp_path, MANIFEST))
    first = [t.key for t in expand(manifest, "smoke", data_key="d")[1]]
    assert first == [t.key for t in expand(manifest, "smoke", data_key="d")[1]]
    assert first != [t.key for t in expand(manifest, "smoke", data_key="other")[1]]
    changed = load_manifest(write(tmp_path, MANIFEST.replace("transfer: {epochs: 2", "transfer: {epochs: 3")))
    assert set(first).isdisjoint(t.key for t in expand(changed, "smoke", data_key="d")[1])
    with pytest.raises(KeyError, match="unknown experiments"):
        expand(manifest, "smoke", only=["gapp"])
    assert {t.experiment for t in expand(manifest, "smoke", only=["gap"])[1]} == {"gap"}


def test_keys_hold_the_results_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cgat_dgl.versions as versions

    manifest = load_manifest(write(tmp_path, MANIFEST))

    def keys() -> list[str]:
        pretrains, transfers = expand(manifest, "smoke", data_key="d")
        return [spec.key for spec in [*pretrains, *transfers]]

    before, real = keys(), versions.software_versions()
    assert before == keys()  # the same inputs and versions give the same keys
    for name, value in (("cgat_dgl", "99.0"), ("torch", "0.0.1"), ("dgl", "0.0.1")):
        monkeypatch.setattr(versions, "software_versions", lambda name=name, value=value: {**real, name: value})
        assert set(before).isdisjoint(keys()), name
    # Neither the git commit nor the other packages are part of the key.
    monkeypatch.setattr(versions, "software_versions", lambda: {**real, "cgat_dgl_commit": "0" * 40, "numpy": "0"})
    assert keys() == before


def test_keys_hold_the_numerics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cgat_dgl import kernels, numerics

    manifest = load_manifest(write(tmp_path, MANIFEST))

    def keys() -> list[str]:
        pretrains, transfers = expand(manifest, "smoke", data_key="d")
        return [spec.key for spec in [*pretrains, *transfers]]

    before = keys()
    assert {spec.numerics for spec in expand(manifest, "smoke", data_key="d")[1]} == {
        numerics.key("cpu", kernels.GROUPS)  # the smoke model runs every kernel group on CPU
    }
    # the host's own code paths (CGAT_NUMERICS=native, or a machine without AVX2) are other numbers
    monkeypatch.setattr(numerics, "portable", lambda: False)
    assert set(before).isdisjoint(keys())
    monkeypatch.undo()
    monkeypatch.setenv("CGAT_CPU_KERNELS", "0")  # torch operations sum in another order
    assert set(before).isdisjoint(keys())
    monkeypatch.setenv("CGAT_CPU_KERNELS", "attention,hypernetwork")  # and so do some kernels with torch operations
    assert set(before).isdisjoint(keys())
    monkeypatch.setenv("CGAT_CPU_KERNELS", "1")
    assert keys() == before


def test_the_model_and_the_graphs_must_count_the_same_neighbours(tmp_path: Path) -> None:
    manifest = load_manifest(write(tmp_path, MANIFEST.replace("  cache_dir: cache", "  cache_dir: cache\n  max_nbr: 12")))
    with pytest.raises(ValueError, match=r"profile 'smoke': its model \(smoke\) takes 24 neighbours .* with 12"):
        expand(manifest, "smoke")


def test_protected_targets_change_the_pretraining_keys(tmp_path: Path) -> None:
    base = expand(load_manifest(write(tmp_path, MANIFEST)), "smoke", data_key="d")[0]
    assert {p.prop: p.protected for p in base} == {
        "gap_pbe": ("e_form_expt", "e_form_r2scan", "gap_hse"),
        "e_form_pbe": ("e_form_expt", "e_form_r2scan", "gap_hse"),
    }
    text = MANIFEST.replace("  cache_dir: cache\n", "  cache_dir: cache\n  protected_targets: [volume_pbe]\n")
    extra = expand(load_manifest(write(tmp_path, text)), "smoke", data_key="d")[0]
    assert all("volume_pbe" in p.protected for p in extra)
    assert {p.key for p in base}.isdisjoint(p.key for p in extra)


def test_resolve_size() -> None:
    assert resolve_size(1.0, 100) == 100
    assert resolve_size(0.25, 100) == 25
    assert resolve_size(500, 100) == 100
    assert resolve_size(1.0, 100, cap=40) == 40
    assert resolve_size(0.5, 100, cap=40) == 20
    assert resolve_size(60, 100, cap=40) == 40


def test_default_manifest_is_valid() -> None:
    path = REPO / "experiments.yaml"
    if path.exists():
        manifest = load_manifest(path)
        assert {"smoke", "cpu", "paper"} <= set(manifest.profiles)
        for profile in manifest.profiles:
            expand(manifest, profile)


def test_profile_threads_reach_every_runs_train_config(tmp_path: Path) -> None:
    from benchmarks.runner import train_config_for

    path = tmp_path / "m.yaml"
    path.write_text(MANIFEST.replace("    model: smoke\n", "    model: smoke\n    threads: 1\n"))
    pretrain, transfer = expand(load_manifest(path), "smoke")
    assert {train_config_for(spec).threads for spec in [*pretrain, *transfer]} == {1}
    path.write_text(MANIFEST)
    unpinned, _ = expand(load_manifest(path), "smoke")
    assert "threads" not in unpinned[0].stage  # keys of runs from before the option are unchanged
    assert train_config_for(unpinned[0]).threads is None


def test_anneal_epochs_reach_the_train_config_and_only_the_keys_that_set_them(tmp_path: Path) -> None:
    from benchmarks.runner import train_config_for

    plain, _ = expand(load_manifest(write(tmp_path, MANIFEST)), "smoke")
    assert "anneal_epochs" not in plain[0].stage  # keys of runs from before the option are unchanged
    assert "epoch_structures" not in plain[0].stage
    held = MANIFEST.replace("pretrain: {epochs: 2,", "pretrain: {epochs: 3, anneal_epochs: 2, schedule: cosine,")
    assert held != MANIFEST
    pretrain, _ = expand(load_manifest(write(tmp_path, held)), "smoke")
    assert train_config_for(pretrain[0]).anneal_span == 2 and pretrain[0].key != plain[0].key


def test_another_split_gives_other_runs_and_keeps_the_manifest_folder(tmp_path: Path) -> None:
    from benchmarks.cli import with_split_seed

    manifest = load_manifest(write(tmp_path, MANIFEST))
    other = with_split_seed(manifest, 7)
    assert other.data.split_seed == 7 and manifest.data.split_seed == 0
    assert other.resolve("cache") == manifest.resolve("cache")  # relative paths still from the manifest
    assert with_split_seed(manifest, None) is manifest
    pretrains, transfers = expand(manifest, "smoke", data_key="d")
    pretrains7, transfers7 = expand(other, "smoke", data_key="d")
    assert {t.split_seed for t in transfers7} == {7}
    assert {p.key for p in pretrains}.isdisjoint(p.key for p in pretrains7)
    assert {t.key for t in transfers}.isdisjoint(t.key for t in transfers7)


def test_an_experiment_can_refit_the_normalisation_of_its_transfers(tmp_path: Path) -> None:
    text = MANIFEST.replace("    transfer_lr_factor: 0.1\n", "    transfer_lr_factor: 0.1\n    transfer_normalization: refit\n")
    manifest = load_manifest(write(tmp_path, text))
    _, transfers = expand(manifest, "smoke", data_key="d")
    by_experiment = {t.experiment: t for t in transfers if t.strategy == "full"}
    assert by_experiment["eform_to_gap"].stage["normalization"] == "refit"
    assert by_experiment["gap"].stage["normalization"] == "keep"  # the profile's default elsewhere
    # experiments without the field keep their keys
    _, plain = expand(load_manifest(write(tmp_path, MANIFEST)), "smoke", data_key="d")
    keys = {t.key for t in plain}
    assert {t.key for t in transfers if t.experiment != "eform_to_gap"} <= keys
    assert {t.key for t in transfers if t.experiment == "eform_to_gap"}.isdisjoint(keys)
    with pytest.raises(ManifestError, match="transfer_normalization"):
        load_manifest(write(tmp_path, text.replace("transfer_normalization: refit", "transfer_normalization: relearn")))


def test_a_stage_that_cannot_train_is_refused_with_its_line(tmp_path) -> None:
    from benchmarks.manifest import ManifestError, load_manifest

    path = tmp_path / "experiments.yaml"
    path.write_text(
        "profiles:\n"
        "  p:\n"
        "    model: smoke\n"
        "    pretrain: {epochs: 3, schedule: plateau, lr_patience: 4, patience: 4}\n"
        "    transfer: {epochs: 3}\n"
        "experiments:\n"
        "  - {name: e, source: gap_pbe, target: gap_hse}\n"
    )
    with pytest.raises(ManifestError, match=r"experiments.yaml:4.*lr_patience"):
        load_manifest(path)


def test_another_pretraining_seed_gives_new_models_and_the_runs_that_start_from_them(tmp_path: Path) -> None:
    from benchmarks.cli import with_pretrain_seed

    manifest = load_manifest(write(tmp_path, MANIFEST))
    pretrains, transfers = expand(manifest, "smoke", data_key="d")
    again, again_transfers = expand(with_pretrain_seed(manifest, "smoke", 1), "smoke", data_key="d")
    assert {p.seed for p in again} == {1} and set(p.key for p in pretrains).isdisjoint(p.key for p in again)
    keys = {t.key: t.strategy for t in transfers}
    for run in again_transfers:
        # no transfer starts from no pre-trained model: the same run serves both
        assert (run.key in keys) == (run.strategy == "none"), run.label
    assert with_pretrain_seed(manifest, "smoke", None) is manifest


def test_uncapped_and_above_threshold_experiments_change_only_their_own_keys(tmp_path: Path) -> None:
    base = expand(load_manifest(write(tmp_path, MANIFEST)), "smoke", data_key="d")[1]
    text = MANIFEST.replace("    transfer_lr_factor: 0.1\n", "    transfer_lr_factor: 0.1\n    uncapped: true\n    target_above: 0.1\n")
    changed = expand(load_manifest(write(tmp_path, text)), "smoke", data_key="d")[1]
    inter = [t for t in changed if t.experiment == "eform_to_gap"]
    assert [(t.cap, t.target_above) for t in inter] == [(None, 0.1)] and "above 0.1" in inter[0].label
    # the other experiments keep their keys
    assert {t.key for t in base if t.experiment != "eform_to_gap"} == {t.key for t in changed if t.experiment != "eform_to_gap"}
    assert {t.key for t in base if t.experiment == "eform_to_gap"}.isdisjoint(t.key for t in inter)
