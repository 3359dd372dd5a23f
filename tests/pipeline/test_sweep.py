"""The NFE sweep: the registry's cost of a run, the pipeline's sweep rows and the report's
FID-against-NFE section and plot."""

import numpy as np
import pytest

from kdiff.samplers import registry
from pipeline import config, orchestrator
from pipeline import run as run_lib
from pipeline.stages import report, sample


def test_the_registry_knows_what_a_run_costs():
    assert registry.get("ddim").nfe(50) == 50
    assert registry.get("dpm_solver").nfe(20) == 20
    assert registry.get("heun").nfe(10) == 19  # two evaluations a step, the last step one
    assert [registry.get("heun").steps_for_nfe(n) for n in (1, 5, 10, 12)] == [1, 3, 5, 6]
    assert all(registry.get("heun").nfe(registry.get("heun").steps_for_nfe(n)) <= n for n in range(1, 40))
    assert registry.get("predictor_corrector").nfe(100) is None
    with pytest.raises(ValueError, match="predictor_corrector"):
        registry.get("predictor_corrector").steps_for_nfe(10)
    with pytest.raises(ValueError, match="at least 1"):
        registry.get("ddim").steps_for_nfe(0)


def test_the_sweep_adds_a_row_per_sampler_and_budget():
    cfg = config.RunConfig(nfe_sweep="5,10")
    assert cfg.samplers["ddim_nfe5"] == {"sampler": "ddim", "steps": 5}
    assert cfg.samplers["dpm_solver_nfe10"] == {"sampler": "dpm_solver", "steps": 10}
    assert cfg.samplers["heun_nfe10"] == {"sampler": "heun", "steps": 5}
    assert {"ddim_50_clipped_eps", "dpm_solver_10"} <= set(cfg.samplers)  # the family's rows stay
    assert config.RunConfig(**cfg.to_dict()).samplers == cfg.samplers  # read back: the same rows
    sde = config.RunConfig(family="sde", nfe_sweep="8", sweep_samplers="euler,dpm_solver")
    assert {"euler_nfe8", "dpm_solver_nfe8"} <= set(sde.samplers)
    assert "heun_nfe8" not in sde.samplers


@pytest.mark.parametrize(
    "flags, match",
    [
        (["--nfe_sweep=5,x"], "nfe_sweep"),
        (["--nfe_sweep=0"], "nfe_sweep"),
        (["--nfe_sweep=5,5"], "nfe_sweep"),
        (["--sweep_samplers=ddim"], "nfe_sweep"),
        (["--family=sde", "--nfe_sweep=10", "--sweep_samplers=predictor_corrector"], "fixed cost per step"),
        (["--nfe_sweep=10", "--sweep_samplers=dddim"], "dddim"),
    ],
)
def test_bad_sweeps_fail_naming_the_flag(tmp_path, capsys, monkeypatch, flags, match):
    monkeypatch.setattr(orchestrator, "run_stages", lambda *a, **k: pytest.fail("ran the stages"))
    with pytest.raises(SystemExit) as info:
        run_lib.run([f"--output_dir={tmp_path}", *flags])
    assert info.value.code == 2 and match in capsys.readouterr().err


def test_sample_timings_carry_the_network_evaluations():
    assert sample._network_evaluations({"sampler": "heun", "steps": 6}) == 11
    assert sample._network_evaluations({"sampler": "ddim"}) is None
    assert sample._network_evaluations({"sampler": "predictor_corrector", "steps": 10}) is None


def _summary():
    rows = {
        "ddim_50": {"sampler": "ddim", "nfe": 50, "fid": 12.0, "fid_low": 9.0, "fid_high": 16.0},
        "ddim_nfe10": {"sampler": "ddim", "nfe": 10, "fid": 30.0, "fid_low": 25.0, "fid_high": 36.0},
        "heun_nfe10": {"sampler": "heun", "nfe": 9, "fid": 20.0},
        "ddim_50_guided": {"sampler": "ddim", "nfe": 50, "fid": 9.0, "guidance_scale": 3.0},
        "ddpm_1000": {"sampler": "ddpm", "nfe": 1000, "fid": 7.0},
    }
    return {"samplers": rows}


def test_the_report_plots_fid_against_nfe_per_sampler(tmp_path):
    curves = report.nfe_curves(_summary())
    assert list(curves) == ["ddim"]  # one point is no curve; guided rows are apart
    assert [p[0] for p in curves["ddim"]] == [10, 50]
    lines = "\n".join(report._nfe_section(_summary(), report.NFE_PICTURE))
    assert "Quality against cost" in lines and report.NFE_PICTURE in lines
    assert "| `ddim` | 10 | 30 | [25, 36] | `ddim_nfe10` |" in lines
    path = tmp_path / "nfe.png"
    report._nfe_plot(curves, str(path))
    from PIL import Image

    assert np.asarray(Image.open(path)).std() > 0
    assert report._nfe_section({"samplers": {"a": {"nfe": 5, "fid": 1.0}}}, "x.png") == []
