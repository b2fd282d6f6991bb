"""Method registry and CLI options generated from the config models (every option written once)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pytest
import typer.main
import yaml
from pydantic import Field
from typer.testing import CliRunner

from cryowedge.cli import app
from cryowedge.config import (
    DemoConfig,
    ReconstructConfig,
    SimulateConfig,
    SirtConfig,
    StetReconstructConfig,
    StetSimulateConfig,
    TvConfig,
    get_method,
    method_names,
    methods,
    register_method,
    unregister_method,
)
from cryowedge.io.mrc import read_mrc, write_mrc
from cryowedge.io.tilt_files import write_tilt_angles

runner = CliRunner()
WIDE = {"COLUMNS": "250", "TERMINAL_WIDTH": "250"}


def _help(*command: str) -> str:
    result = runner.invoke(app, [*command, "--help"], env=WIDE)
    assert result.exit_code == 0, result.output
    return " ".join(result.output.replace("│", " ").split())


def _flags(*path: str) -> set[str]:
    """Every option string of a (sub)command of the click app."""
    cmd = typer.main.get_command(app)
    ctx = None
    for name in path:
        cmd = cmd.get_command(ctx, name)
    return {flag for p in cmd.params for flag in (*p.opts, *p.secondary_opts)}


def _expected_flags(model) -> set[str]:
    """The flag each field should have: its ``cli`` entry or ``--field-name``."""
    flags = set()
    for name, info in model.model_fields.items():
        extra = info.json_schema_extra or {}
        flags.add(extra["cli"][0] if "cli" in extra else f"--{name.replace('_', '-')}")
    return flags


@pytest.mark.parametrize(
    ("path", "models"),
    [
        (("reconstruct",), [spec.config for spec in methods()]),
        (("simulate",), [SimulateConfig]),
        (("stet", "simulate"), [StetSimulateConfig]),
        (("stet", "reconstruct"), [StetReconstructConfig]),
    ],
)
def test_every_config_field_has_a_cli_option(path, models):
    flags = _flags(*path)
    for model in models:
        missing = _expected_flags(model) - flags
        assert not missing, f"{model.__name__}: no CLI option for {missing}"


def test_reconstruct_help_shows_methods_defaults_and_groups():
    text = _help("reconstruct")
    assert "<fbp|wbp|sirt|sart|art|cgls|tv|inr>" in text  # choices from the registry
    for spec in methods():
        assert f"{spec.name}: {spec.summary}" in text
    assert "[default: fbp]" in text and "[default: ram-lak]" in text
    assert "[default: sirt 20, sart 10, art 3, cgls 10, tv 30]" in text  # per-method defaults
    assert "[default: sirt 1.0, sart 0.2, art 0.5, tv 1.0]" in text
    assert "<tv|tv-aniso|l1>" in text and "<random|sequential>" in text
    assert "Options of --method tv" in text and "Options of --method fbp, wbp" in text
    sim = _help("simulate")
    assert "<cell|shepp-logan|spheres>" in sim and "[default: -60.0 60.0]" in sim
    assert "--even-odd" in sim and "[default: 64 128 128]" in sim


def _stack(tmp_path, shape=(7, 12, 12)):
    data = np.random.default_rng(0).random(shape).astype(np.float32)
    path = tmp_path / "ts.mrc"
    write_mrc(path, data, voxel_size_angstrom=2.0, image_stack=True)
    write_tilt_angles(tmp_path / "ts.tlt", np.linspace(-45, 45, shape[0]))
    return path


def test_reconstruct_run_record_equals_the_model_of_the_same_options(tmp_path):
    stack = _stack(tmp_path)
    out = tmp_path / "tv.mrc"
    args = [
        "--method",
        "tv",
        "--tv-lambda",
        "2",
        "--n-iter",
        "2",
        "--cg-iter",
        "2",
        "--thickness",
        "6",
        "--regularizer",
        "tv-aniso",
        "--halo",
        "3",
        "--slab",
        "4",
        "--no-normalize",
        "--seed",
        "5",
        "--relaxation",
        "1.5",
        "--tilt-axis-angle",
        "0",
        "--device",
        "cpu",
        "--positivity",
    ]
    result = runner.invoke(app, ["reconstruct", str(stack), str(out), *args])
    assert result.exit_code == 0, result.output
    expected = TvConfig(
        tv_lambda=2,
        n_iter=2,
        cg_iter=2,
        thickness=6,
        regularizer="tv-aniso",
        halo_rows=3,
        slab_rows=4,
        normalize=False,
        seed=5,
        relaxation=1.5,
        tilt_axis_angle_deg=0.0,
        device="cpu",
        positivity=True,
    ).model_dump(mode="json")
    recorded = yaml.safe_load((tmp_path / "tv.run.yaml").read_text())["parameters"]
    assert {k: recorded[k] for k in expected} == expected
    # nothing else, and --slab 4 really streamed the run in slabs of 4 rows
    assert set(recorded) - set(expected) == {"input", "angles", "alignment", "geometry",
                                             "streamed_slab_rows"}
    assert recorded["streamed_slab_rows"] == 4


def test_simulate_run_record_equals_the_model_of_the_same_options(tmp_path):
    args = [
        "--phantom",
        "shepp-logan",
        "--shape",
        "8",
        "12",
        "12",
        "--tilt-range",
        "-30",
        "40",
        "--tilt-step",
        "10",
        "--dose",
        "20",
        "--no-even-odd",
        "--oversample",
        "1",
        "--seed",
        "2",
        "--device",
        "cpu",
        "--pixel-size",
        "3",
    ]
    result = runner.invoke(app, ["simulate", str(tmp_path), *args])
    assert result.exit_code == 0, result.output
    expected = SimulateConfig(
        phantom="shepp-logan",
        shape=(8, 12, 12),
        tilt_min_deg=-30,
        tilt_max_deg=40,
        tilt_step_deg=10,
        dose_e_per_angstrom2=20,
        even_odd=False,
        oversample=1,
        seed=2,
        device="cpu",
        pixel_size_angstrom=3,
    ).model_dump(mode="json")
    assert expected["snr"] is None  # --dose replaces the default snr
    assert yaml.safe_load((tmp_path / "run.yaml").read_text())["parameters"] == expected
    assert not (tmp_path / "tilt_series_even.mrc").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--method", "sirt", "--tv-lambda", "1"], "--tv-lambda applies to --method tv, not sirt"),
        (
            ["--filter", "hann", "--n-iter", "3"],
            "--n-iter applies to --method sirt, sart, art, cgls, tv, not fbp",
        ),
        (
            ["--method", "cgls", "--relaxation", "1.2"],
            "--relaxation applies to --method sirt, sart, art, tv",
        ),
        (["--method", "tv", "--slab", "0"], "slab_rows: Input should be greater than 0"),
        (["--method", "tv", "--halo", "0"], "halo_rows: Input should be greater than 0"),
        (["--tilt-axis-angle", "nan"], "tilt_axis_angle_deg: Input should be a finite number"),
        (["--method", "nope"], "'nope' is not one of"),
    ],
)
def test_options_of_another_method_and_bad_values_are_refused(tmp_path, extra, message):
    stack = _stack(tmp_path)
    out = tmp_path / "out.mrc"
    result = runner.invoke(app, ["reconstruct", str(stack), str(out), *extra], env=WIDE)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.replace("│", " ").split())
    assert not out.exists()


def test_config_file_then_options(tmp_path):
    """The YAML file picks the method; options given override it; a new --method keeps the
    shared fields."""
    stack = _stack(tmp_path)
    cfg = tmp_path / "rec.yaml"
    cfg.write_text("method: sart\nn_iter: 2\nthickness: 6\norder: sequential\n")
    out = tmp_path / "sart.mrc"
    result = runner.invoke(
        app, ["reconstruct", str(stack), str(out), "--config", str(cfg), "--relaxation", "0.5"]
    )
    assert result.exit_code == 0, result.output
    rec = yaml.safe_load((tmp_path / "sart.run.yaml").read_text())["parameters"]
    assert (rec["method"], rec["n_iter"], rec["order"], rec["relaxation"], rec["thickness"]) == (
        "sart",
        2,
        "sequential",
        0.5,
        6,
    )
    out = tmp_path / "sirt.mrc"
    result = runner.invoke(
        app,
        [
            "reconstruct",
            str(stack),
            str(out),
            "--config",
            str(cfg),
            "--method",
            "sirt",
            "--n-iter",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    rec = yaml.safe_load((tmp_path / "sirt.run.yaml").read_text())["parameters"]
    assert (rec["method"], rec["n_iter"], rec["relaxation"], rec["thickness"]) == (
        "sirt",
        3,
        1.0,
        6,
    )


def test_base_class_builds_the_method_model_and_defaults_are_per_method():
    assert type(ReconstructConfig()).__name__ == "FbpConfig"
    cfg = ReconstructConfig(method="sirt", n_iter=5)
    assert isinstance(cfg, SirtConfig) and cfg.relaxation == 1.0
    assert (
        ReconstructConfig(method="sart").relaxation == 0.2
        and ReconstructConfig(method="art").n_iter == 3
    )
    assert ReconstructConfig.model_validate({"method": "tv"}) == TvConfig()
    with pytest.raises(
        ValueError, match="unknown option 'filter_name' \\(applies to method fbp, wbp, not sirt\\)"
    ):
        ReconstructConfig(method="sirt", filter_name="hann")
    with pytest.raises(ValueError, match="unknown method 'mystery'; choose one of fbp, wbp"):
        ReconstructConfig(method="mystery")
    assert cfg.updated(method="tv", tv_lambda=1.0) == TvConfig(tv_lambda=1.0)


def test_flat_yaml_of_earlier_versions_still_loads(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text(
        "method: sirt\nfilter_name: ram-lak\ncutoff: 1.0\nn_iter: null\nrelaxation: null\n"
        "tv_lambda: 5.0\norder: random\npositivity: true\n"
    )
    assert ReconstructConfig.from_yaml(path) == SirtConfig(
        positivity=True
    )  # other methods' defaults dropped
    path.write_text("method: sirt\ntv_lambda: 2.0\n")
    with pytest.raises(ValueError, match="'tv_lambda' \\(applies to method tv, not sirt\\)"):
        ReconstructConfig.from_yaml(path)


def test_discriminated_union_of_the_registered_models():
    from pydantic import TypeAdapter

    from cryowedge.config import config_union

    adapter = TypeAdapter(config_union())
    assert adapter.validate_python({"method": "tv", "tv_lambda": 2}) == TvConfig(tv_lambda=2)
    assert isinstance(adapter.validate_python({"method": "sirt"}), SirtConfig)
    with pytest.raises(ValueError, match="tag 'nope'"):
        adapter.validate_python({"method": "nope"})


def test_solvers_agree_with_the_registry():
    from cryowedge.solvers import SOLVERS

    iterative = {spec.name: spec.load_solver() for spec in methods() if spec.solver is not None}
    assert iterative == SOLVERS


def test_demo_reads_its_methods_from_the_registry():
    presets = {
        name: (spec.name, changes) for spec in methods() for name, changes in spec.demo.items()
    }
    demo = DemoConfig()
    assert list(demo.methods) == list(presets)
    for name, (method, changes) in presets.items():
        assert demo.methods[name] == get_method(method).config(**changes)
    again = DemoConfig(**yaml.safe_load(demo.to_yaml()))  # YAML round trip through the union
    assert again == demo


class ToyConfig(ReconstructConfig):
    """A made-up method: the tomogram is ``gain`` everywhere."""

    method: Literal["toy"] = "toy"
    gain: float = Field(2.0, gt=0, description="value of every voxel")


def _run_toy(tilt_series, geometry, config, context):
    return np.full(context.volume_shape, config.gain, np.float32)


@pytest.fixture
def toy_method():
    register_method(
        ToyConfig, runner=_run_toy, summary="constant tomogram", demo={"toy": {"gain": 4.0}}
    )
    try:
        yield
    finally:
        unregister_method("toy")


def test_a_new_method_is_a_config_model_plus_a_runner(toy_method, tmp_path):
    assert "toy" in method_names()
    text = _help("reconstruct")
    assert "<fbp|wbp|sirt|sart|art|cgls|tv|inr|toy>" in text and "toy: constant tomogram" in text
    assert "Options of --method toy" in text and "--gain" in text and "[default: 2.0]" in text
    yaml_path = tmp_path / "toy.yaml"
    yaml_path.write_text("method: toy\ngain: 3.5\n")
    assert ReconstructConfig.from_yaml(yaml_path) == ToyConfig(gain=3.5)
    assert DemoConfig().methods["toy"] == ToyConfig(gain=4.0)
    stack = _stack(tmp_path)
    out = tmp_path / "toy.mrc"
    result = runner.invoke(
        app,
        ["reconstruct", str(stack), str(out), "--method", "toy", "--gain", "3", "--thickness", "5"],
    )
    assert result.exit_code == 0, result.output
    vol = read_mrc(out).data
    assert vol.shape == (5, 12, 12) and np.all(vol == 3.0)
    assert yaml.safe_load((tmp_path / "toy.run.yaml").read_text())["parameters"]["gain"] == 3.0
    result = runner.invoke(
        app, ["reconstruct", str(stack), str(out), "--method", "sirt", "--gain", "3"]
    )
    assert result.exit_code == 2 and "--gain applies to --method toy, not sirt" in result.output


def test_unregistered_method_is_gone(toy_method):
    unregister_method("toy")
    register_method(ToyConfig, runner=_run_toy)  # the fixture unregisters it again
    with pytest.raises(ValueError, match="already registered"):
        register_method(ToyConfig, runner=_run_toy)
    unregister_method("toy")
    assert "toy" not in method_names()
    assert "toy" not in _help("reconstruct")
    register_method(ToyConfig, runner=_run_toy)


def test_register_refuses_a_model_without_a_method_literal():
    class NoName(ReconstructConfig):
        pass

    with pytest.raises(TypeError, match="must declare `method: Literal"):
        register_method(NoName, runner=_run_toy)
